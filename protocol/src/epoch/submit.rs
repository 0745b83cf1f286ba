//! Submissions (DESIGN 3, 4.3): from a client's OPRF output to its per-epoch keys, and from
//! those and its score to a `Submission` with its validity proof and holder signature.
//! Submissions this bank posted before a restart are recognized in the pool, never posted
//! twice.

use std::collections::{BTreeMap, VecDeque};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::crypto::ring::{self, Linked, RingContext, RingKey};
use crate::crypto::{schnorr, tag, transcript, validity, CryptoError};
use crate::genesis::Consortium;
use crate::keys::EpochSecret;
use crate::record::{Hash, Record, Submission};
use crate::setup::SetupKeys;

use super::values::{Client, ClientKeys, Mine, Pool};

/// Transcript for a submission's validity proof, bound to its tag and one-time key.
fn validity_transcript(
    c: &Consortium,
    epoch: u64,
    tag: &RistrettoPoint,
    one_time: &RistrettoPoint,
) -> Transcript {
    let mut t = transcript(&c.id, epoch, b"submission-validity");
    t.append_message(b"tag", tag.compress().as_bytes());
    t.append_message(b"one-time", one_time.compress().as_bytes());
    t
}

/// Verifies a submission's validity proof, holder signature and ring signature (DESIGN 3)
/// against its epoch's keys and ring; returns its link and slot tags.
pub fn verify_submission(
    c: &Consortium,
    keys: &SetupKeys,
    s: &Submission,
) -> Result<Linked, CryptoError> {
    // A one-time key at the identity would make every key-switched share `x_i * C1` in the
    // clear, so that anyone could read the tag's sum; a tag at the identity has no holder.
    if s.one_time.is_identity() || s.tag.is_identity() {
        return Err(CryptoError::InvalidPoint);
    }
    let mut t = validity_transcript(c, s.epoch, &s.tag, &s.one_time);
    validity::verify(&mut t, &keys.x.group, &s.ciphertext, &s.validity)?;
    let mut t = transcript(&c.id, s.epoch, b"holder");
    schnorr::verify(&mut t, &s.tag, &s.signed_bytes(), &s.holder)?;
    let tag = s.tag.compress().to_bytes();
    ring::verify(
        &ring_context(c, s.epoch, &tag),
        c.genesis.oprf_quota,
        &keys.ring,
        &s.ring_signed_bytes(),
        &s.ring,
    )
}

fn ring_context<'a>(c: &'a Consortium, epoch: u64, tag: &'a [u8; 32]) -> RingContext<'a> {
    RingContext {
        consortium: &c.id,
        epoch,
        tag,
    }
}

/// Rounds of the slot permutation (Luby-Rackoff: four make a strong pseudo-random permutation).
const SLOT_ROUNDS: u8 = 4;

/// Our slot for the `index`-th client of an epoch: a keyed pseudo-random permutation of
/// `0..quota` (a Feistel network over the smallest even bit width that covers `quota`,
/// cycling back into range), so a member's slots never repeat and the slots seen on the log
/// show no pattern that groups one member's posts. `None` if `index >= quota`.
pub fn slot_for(key: &[u8; 32], quota: u32, index: u32) -> Option<u32> {
    use sha2::{Digest, Sha256};
    if index >= quota {
        return None;
    }
    let bits = (32 - (quota - 1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let mut x = u64::from(index);
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for round in 0..SLOT_ROUNDS {
            let digest = Sha256::new()
                .chain_update(b"bankmesh.slot-permutation.v1")
                .chain_update(key)
                .chain_update([round])
                .chain_update(r.to_be_bytes())
                .finalize();
            let mut f = [0u8; 8];
            f.copy_from_slice(digest.get(..8)?);
            (l, r) = (r, l ^ (u64::from_be_bytes(f) & mask));
        }
        x = (l << half) | r;
        if x < u64::from(quota) {
            return u32::try_from(x).ok();
        }
    }
}

/// The key of our slot permutation for `epoch` (from the epoch's fresh secret: whoever could
/// recompute it would know which slots, and so which submissions, were ours).
fn slot_key(c: &Consortium, secret: &EpochSecret, epoch: u64) -> Zeroizing<[u8; 32]> {
    let mut context = c.id.to_vec();
    context.extend_from_slice(&epoch.to_be_bytes());
    secret.derive(b"bankmesh.ring-slots.v1", &context)
}

/// A client's keys for `epoch`: its tag key `sk_T = H2(consortium, epoch, id, y)` and tag, and
/// its one-time key. The one-time key is derived from the epoch's fresh secret (kept until our
/// results are stored, then erased), so a restarted bank can still recognize and open its
/// results, and nobody can once the secret is gone.
pub fn client_keys(
    c: &Consortium,
    secret: &EpochSecret,
    epoch: u64,
    client: usize,
    id: &str,
    y: &[u8; 64],
) -> ClientKeys {
    let tag_key = tag::tag_key(&c.id, epoch, id.as_bytes(), y);
    let tag = tag_key.public();
    let mut context = c.id.to_vec();
    context.extend_from_slice(&epoch.to_be_bytes());
    context.extend_from_slice(tag.compress().as_bytes());
    let seed = secret.derive(b"bankmesh.one-time-key.v1", &context);
    let o = Zeroizing::new(Scalar::from_bytes_mod_order(*seed));
    ClientKeys {
        client,
        tag_key,
        tag,
        one_time_public: *o * G,
        one_time: o,
    }
}

/// Who signs a submission in the epoch's ring, and in which slot.
pub struct Poster<'a> {
    pub ring: &'a [RistrettoPoint],
    /// Our position in the ring and our ring key for the epoch.
    pub position: usize,
    pub key: &'a Scalar,
    pub slot: u32,
}

/// Encrypts and proves a client's score, signs it with the client's tag key, and ring-signs
/// it as one of the members.
pub fn build_submission(
    c: &Consortium,
    x: &RistrettoPoint,
    epoch: u64,
    score: u16,
    keys: &ClientKeys,
    poster: &Poster<'_>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Submission, CryptoError> {
    let mut t = validity_transcript(c, epoch, &keys.tag, &keys.one_time_public);
    let (ciphertext, proof) = validity::encrypt_with_proof(&mut t, x, u64::from(score), rng)?;
    let mut s = Submission {
        epoch,
        tag: keys.tag,
        ciphertext,
        one_time: keys.one_time_public,
        validity: proof,
        holder: schnorr::Signature {
            r: CompressedRistretto::default(),
            s: Scalar::ZERO,
        },
        ring: ring::RingSignature {
            slot: 0,
            link: CompressedRistretto::default(),
            slot_tag: CompressedRistretto::default(),
            c0: Scalar::ZERO,
            responses: Vec::new(),
        },
    };
    let mut t = transcript(&c.id, epoch, b"holder");
    s.holder = schnorr::sign(&mut t, &keys.tag_key, &s.signed_bytes(), rng);
    let tag = keys.tag.compress().to_bytes();
    s.ring = ring::sign(
        &ring_context(c, epoch, &tag),
        poster.slot,
        poster.ring,
        poster.position,
        &RingKey::from_scalar(*poster.key),
        &s.ring_signed_bytes(),
        rng,
    )?;
    Ok(s)
}

/// What one call to [`Submitter::step`] produced.
#[derive(Default)]
pub struct Submitted {
    pub submissions: Vec<Submission>,
    pub error: Option<String>,
}

/// Our clients waiting for their submission, and our submissions (made or recognized).
pub struct Submitter {
    epoch: u64,
    queue: VecDeque<(usize, Zeroizing<[u8; 64]>)>,
    mine: BTreeMap<Hash, Mine>,
}

impl Submitter {
    pub fn new(epoch: u64) -> Submitter {
        Submitter {
            epoch,
            queue: VecDeque::new(),
            mine: BTreeMap::new(),
        }
    }

    /// A client whose OPRF output is known.
    pub fn enqueue(&mut self, client: usize, y: Zeroizing<[u8; 64]>) {
        self.queue.push_back((client, y));
    }
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
    pub fn mine(&self) -> &BTreeMap<Hash, Mine> {
        &self.mine
    }
    pub fn into_mine(self) -> BTreeMap<Hash, Mine> {
        self.mine
    }

    /// Builds up to `budget` submissions (each costs a range proof), recognizing those already
    /// in the pool. While `open` is false nothing new is built: what is left fails. The
    /// encryption and proof randomness is derived from the epoch's secret and the tag (like the
    /// one-time key), so that a submission built again is the same record.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        c: &Consortium,
        secret: &EpochSecret,
        epoch_keys: &SetupKeys,
        clients: &[Client],
        pool: &Pool,
        open: bool,
        budget: &mut usize,
    ) -> Submitted {
        let mut out = Submitted::default();
        let slots = slot_key(c, secret, self.epoch);
        let x = &epoch_keys.x.group;
        while let Some((client, y)) = self.queue.pop_front() {
            let Some(cl) = clients.get(client) else {
                continue;
            };
            let keys = client_keys(c, secret, self.epoch, client, &cl.id, &y);
            let tag = keys.tag.compress().to_bytes();
            if let Some(hash) = pool.find(&tag, &keys.one_time_public) {
                // Posted before a restart: take it back, do not post it twice.
                self.note(hash, keys, tag);
                continue;
            }
            if !open {
                self.queue.clear();
                out.error = Some("the window closed before all submissions were posted".into());
                return out;
            }
            if *budget == 0 {
                self.queue.push_front((client, y));
                break;
            }
            *budget -= 1;
            // Randomness derived from the epoch's secret and the tag: built again (after a
            // crash, or a restore from a backup that lost the record), it is the same record,
            // never a second submission for the client.
            let mut context = c.id.to_vec();
            context.extend_from_slice(&self.epoch.to_be_bytes());
            context.extend_from_slice(&tag);
            let seed = secret.derive(b"bankmesh.submission-randomness.v1", &context);
            let mut derived = rand_chacha::ChaCha20Rng::from_seed(*seed);
            let Some(slot) = u32::try_from(client)
                .ok()
                .and_then(|i| slot_for(&slots, c.genesis.oprf_quota, i))
            else {
                self.queue.clear();
                out.error = Some("more clients than the submission quota".into());
                return out;
            };
            let Some((position, key)) = &epoch_keys.ring_secret else {
                self.queue.clear();
                out.error = Some(
                    "we are not in this epoch's ring (not a participant of its decided setup)"
                        .into(),
                );
                return out;
            };
            let poster = Poster {
                ring: &epoch_keys.ring,
                position: *position,
                key,
                slot,
            };
            match build_submission(c, x, self.epoch, cl.score, &keys, &poster, &mut derived) {
                Ok(s) => {
                    let hash = Record::submission(&c.id, s.clone()).hash();
                    self.note(hash, keys, tag);
                    out.submissions.push(s);
                }
                Err(e) => {
                    self.queue.clear();
                    out.error = Some(format!("building a submission: {e}"));
                    return out;
                }
            }
        }
        out
    }

    fn note(&mut self, hash: Hash, keys: ClientKeys, tag: [u8; 32]) {
        self.mine.insert(
            hash,
            Mine {
                client: keys.client,
                one_time: keys.one_time,
                tag,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_submission_whose_one_time_key_is_the_identity_is_refused_though_its_proofs_hold() {
        use crate::setup::RunKeys;
        use curve25519_dalek::traits::Identity;
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([9; 32]);
        let c = crate::genesis::test_consortium(3);
        let ring_secrets: Vec<Scalar> = (0..3).map(|_| Scalar::random(&mut rng)).collect();
        let run = || RunKeys {
            group: Scalar::from(5u64) * G,
            verifying: BTreeMap::new(),
            share: None,
        };
        let keys = SetupKeys {
            attempt: 0,
            x: run(),
            k: run(),
            ring_members: vec![1, 2, 3],
            ring: ring_secrets.iter().map(|s| s * G).collect(),
            ring_secret: None,
        };
        let tag_key = schnorr::TagKey::from_scalar(Scalar::from(11u64));
        let mut client = ClientKeys {
            client: 0,
            tag: tag_key.public(),
            tag_key,
            one_time: Zeroizing::new(Scalar::from(13u64)),
            one_time_public: Scalar::from(13u64) * G,
        };
        let poster = Poster {
            ring: &keys.ring,
            position: 1,
            key: &ring_secrets[1],
            slot: 0,
        };
        let good = build_submission(&c, &keys.x.group, 1, 700, &client, &poster, &mut rng).unwrap();
        assert!(verify_submission(&c, &keys, &good).is_ok());
        client.one_time_public = RistrettoPoint::identity();
        let bad = build_submission(&c, &keys.x.group, 1, 700, &client, &poster, &mut rng).unwrap();
        assert_eq!(
            verify_submission(&c, &keys, &bad).err(),
            Some(CryptoError::InvalidPoint)
        );
    }

    #[test]
    fn slots_are_a_permutation_of_the_quota() {
        for quota in [1u32, 2, 3, 7, 64, 100, 1000, 4097] {
            let slots: std::collections::BTreeSet<u32> = (0..quota)
                .map(|i| slot_for(&[5; 32], quota, i).unwrap())
                .collect();
            assert_eq!(slots.len(), quota as usize, "quota {quota}");
            assert!(slots.iter().all(|&s| s < quota));
            assert_eq!(slot_for(&[5; 32], quota, quota), None);
        }
        let a: Vec<u32> = (0..10)
            .map(|i| slot_for(&[1; 32], 100_000, i).unwrap())
            .collect();
        let b: Vec<u32> = (0..10)
            .map(|i| slot_for(&[2; 32], 100_000, i).unwrap())
            .collect();
        assert_ne!(a, b, "another key, another order");
        assert_eq!(
            slot_for(&[1; 32], u32::MAX, u32::MAX - 1).map(|s| s < u32::MAX),
            Some(true)
        );
    }
}
