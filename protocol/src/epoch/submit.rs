//! Submissions (DESIGN 3, 4.3): from a client's OPRF output to its per-epoch keys, and from
//! those and its score to a `Submission` with its validity proof and holder signature.
//! Submissions this bank posted before a restart are recognized in the pool, never posted
//! twice.

use std::collections::{BTreeMap, VecDeque};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::crypto::{schnorr, tag, transcript, validity, CryptoError};
use crate::genesis::Consortium;
use crate::keys::MemberSecrets;
use crate::record::{Hash, Record, Submission};

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

/// Verifies a submission's validity proof and holder signature (DESIGN 3).
pub fn verify_submission(
    c: &Consortium,
    x: &RistrettoPoint,
    s: &Submission,
) -> Result<(), CryptoError> {
    let mut t = validity_transcript(c, s.epoch, &s.tag, &s.one_time);
    validity::verify(&mut t, x, &s.ciphertext, &s.validity)?;
    let mut t = transcript(&c.id, s.epoch, b"holder");
    schnorr::verify(&mut t, &s.tag, &s.signed_bytes(), &s.holder)
}

/// A client's keys for `epoch`: its tag key `sk_T = H2(consortium, epoch, id, y)` and tag, and
/// its one-time key. The one-time key is derived, not drawn, so a restarted bank can still
/// recognize and open its results.
pub fn client_keys(
    c: &Consortium,
    secrets: &MemberSecrets,
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
    let seed = secrets.derive(b"bankmesh.one-time-key.v1", &context);
    let o = Zeroizing::new(Scalar::from_bytes_mod_order(*seed));
    ClientKeys {
        client,
        tag_key,
        tag,
        one_time_public: *o * G,
        one_time: o,
    }
}

/// Encrypts and proves a client's score, and signs it with the client's tag key.
pub fn build_submission(
    c: &Consortium,
    x: &RistrettoPoint,
    epoch: u64,
    score: u16,
    keys: &ClientKeys,
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
    };
    let mut t = transcript(&c.id, epoch, b"holder");
    s.holder = schnorr::sign(&mut t, &keys.tag_key, &s.signed_bytes(), rng);
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
    /// encryption and proof randomness is derived from our key, the epoch and the tag (like the
    /// one-time key), so that a submission built again is the same record.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        c: &Consortium,
        secrets: &MemberSecrets,
        x: &RistrettoPoint,
        clients: &[Client],
        pool: &Pool,
        open: bool,
        budget: &mut usize,
    ) -> Submitted {
        let mut out = Submitted::default();
        while let Some((client, y)) = self.queue.pop_front() {
            let Some(cl) = clients.get(client) else {
                continue;
            };
            let keys = client_keys(c, secrets, self.epoch, client, &cl.id, &y);
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
            // Randomness derived from our key, the epoch and the tag: built again (after a
            // restore from a backup that lost the record), it is the same record, never a
            // second submission for the client.
            let mut context = c.id.to_vec();
            context.extend_from_slice(&self.epoch.to_be_bytes());
            context.extend_from_slice(&tag);
            let seed = secrets.derive(b"bankmesh.submission-randomness.v1", &context);
            let mut derived = rand_chacha::ChaCha20Rng::from_seed(*seed);
            match build_submission(c, x, self.epoch, cl.score, &keys, &mut derived) {
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
