//! Decryption shares (DESIGN 4.6): our key-switched share for every submission of the final
//! set, and the verification of everyone else's against the final set's aggregates.
//!
//! A [`VerifiedShare`] can only be made here, after its proof verified against the final set
//! (STYLE 5, "unchecked until checked"): results are combined from nothing else, on every path
//! (live, after replay, after a restart).

use std::collections::{BTreeSet, VecDeque};

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};

use crate::crypto::keyswitch::{self, KeySwitchShare};
use crate::crypto::transcript;
use crate::genesis::Consortium;
use crate::record::{Body, Hash, ShareEntry};
use crate::MemberIndex;

use super::values::FinalSet;

/// Decryption shares per record (about 160 bytes each, well under the gossip limit).
pub const SHARES_PER_RECORD: usize = 128;

/// A decryption share whose proof verified against the final set's aggregate for its
/// submission.
#[derive(Clone, Debug)]
pub struct VerifiedShare {
    author: MemberIndex,
    submission: Hash,
    share: KeySwitchShare,
}

impl VerifiedShare {
    pub fn author(&self) -> MemberIndex {
        self.author
    }
    pub fn submission(&self) -> Hash {
        self.submission
    }
    pub fn share(&self) -> &KeySwitchShare {
        &self.share
    }
}

/// The verified shares of one record that concern our own submissions.
#[derive(Debug, Default)]
pub struct VerifiedShares(pub(super) Vec<VerifiedShare>);

impl VerifiedShares {
    pub fn into_inner(self) -> Vec<VerifiedShare> {
        self.0
    }
}

fn share_transcript(c: &Consortium, epoch: u64, root: &Hash, submission: &Hash) -> Transcript {
    let mut t = transcript(&c.id, epoch, b"key-switch");
    t.append_message(b"root", root);
    t.append_message(b"submission", submission);
    t
}

/// Verifies one share of `author` (verifying share `verifying`) for a submission of the set.
pub fn verify(
    c: &Consortium,
    epoch: u64,
    set: &FinalSet,
    author: MemberIndex,
    verifying: &RistrettoPoint,
    submission: &Hash,
    share: &KeySwitchShare,
) -> Result<VerifiedShare, String> {
    let (entry, aggregate, count) = set
        .lookup(submission)
        .ok_or("share for a submission outside the final set")?;
    if count < set.min_count {
        return Err(format!(
            "share for {}, whose tag has {count} submissions, below min_count {}: its result is withheld",
            hex::encode(&submission[..8]),
            set.min_count
        ));
    }
    let mut t = share_transcript(c, epoch, &set.root, submission);
    keyswitch::verify(&mut t, verifying, aggregate, &entry.one_time, share)
        .map_err(|e| format!("share for {}: {e}", hex::encode(&submission[..8])))?;
    Ok(VerifiedShare {
        author,
        submission: *submission,
        share: share.clone(),
    })
}

/// Checks a whole share record against the final set: it names the set's root, holds at most
/// one share per submission, and every proof verifies. Returns the shares that concern
/// `wanted` submissions (ours), verified.
#[allow(clippy::too_many_arguments)]
pub fn check_record(
    c: &Consortium,
    epoch: u64,
    set: &FinalSet,
    author: MemberIndex,
    verifying: &RistrettoPoint,
    root: &Hash,
    shares: &[ShareEntry],
    wanted: impl Fn(&Hash) -> bool,
) -> Result<VerifiedShares, String> {
    if root != &set.root {
        return Err(format!(
            "shares name root {} but the final set's is {}",
            hex::encode(&root[..8]),
            hex::encode(&set.root[..8])
        ));
    }
    if shares.is_empty() || shares.len() > SHARES_PER_RECORD {
        return Err("share batch size out of bounds".into());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for entry in shares {
        if !seen.insert(entry.submission) {
            return Err("repeated share for one submission".into());
        }
        let v = verify(
            c,
            epoch,
            set,
            author,
            verifying,
            &entry.submission,
            &entry.share,
        )?;
        if wanted(&entry.submission) {
            out.push(v);
        }
    }
    Ok(VerifiedShares(out))
}

/// Our own shares still to post, in final-set order.
pub struct Producer {
    queue: VecDeque<Hash>,
}

impl Producer {
    /// Every submission of the set whose result is disclosed, except those we already posted
    /// shares for (met in the log after a restart). A tag below `min_count` gets no share.
    pub fn new(set: &FinalSet, posted: &BTreeSet<Hash>) -> Producer {
        Producer {
            queue: set
                .entries
                .keys()
                .filter(|h| !posted.contains(*h) && set.disclosed(h))
                .copied()
                .collect(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.queue.is_empty()
    }

    /// The next record of shares (DESIGN 4.6): `R_i = rho_i G`, `E_i = x_i A1 + rho_i O`, with
    /// a proof against our verifying share.
    pub fn next_record(
        &mut self,
        c: &Consortium,
        epoch: u64,
        set: &FinalSet,
        share: &Scalar,
        verifying: &RistrettoPoint,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<Body> {
        let mut entries = Vec::new();
        while entries.len() < SHARES_PER_RECORD {
            let Some(h) = self.queue.pop_front() else {
                break;
            };
            let Some((e, aggregate, _)) = set.lookup(&h) else {
                continue;
            };
            let mut t = share_transcript(c, epoch, &set.root, &h);
            let share =
                keyswitch::key_switch(&mut t, share, verifying, aggregate, &e.one_time, rng);
            entries.push(ShareEntry {
                submission: h,
                share,
            });
        }
        (!entries.is_empty()).then_some(Body::DecryptionShares {
            epoch,
            root: set.root,
            shares: entries,
        })
    }
}
