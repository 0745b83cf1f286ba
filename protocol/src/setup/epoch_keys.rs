//! A member's fresh keys for one epoch (DESIGN 4.1, forward secrecy): one 32-byte secret per
//! epoch, drawn from the caller's randomness, stored in the local area before anything derived
//! from it is posted, and erased once the epoch is over. From it come the DKG polynomials and
//! round-2 ephemerals (so a member that crashes mid-DKG recomputes what it posted), the x25519
//! keys the round-2 shares are sealed to, and the epoch's ring key. Once it is erased, neither
//! the member's long-term keys nor the log open its shares or link its submissions.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand_core::SeedableRng;
use zeroize::Zeroizing;

use crate::crypto::schnorr::{self, TagKey};
use crate::crypto::transcript;
use crate::genesis::Consortium;
use crate::keys::EpochSecret;
use crate::record::{RingKeyAnnouncement, Run};
use crate::MemberIndex;

fn context(c: &Consortium, epoch: u64, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = c.id.to_vec();
    out.extend_from_slice(&epoch.to_be_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u64).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Seed of our FROST polynomial for one run and attempt.
pub fn polynomial_seed(
    secret: &EpochSecret,
    c: &Consortium,
    epoch: u64,
    run: Run,
    attempt: u32,
) -> Zeroizing<[u8; 32]> {
    let ctx = context(c, epoch, &[run.label(), &attempt.to_be_bytes()]);
    secret.derive(b"bankmesh.dkg-polynomial.v2", &ctx)
}

/// Our round-2 ephemeral secret for one run and attempt.
pub fn ephemeral(
    secret: &EpochSecret,
    c: &Consortium,
    epoch: u64,
    run: Run,
    attempt: u32,
) -> Zeroizing<Scalar> {
    let ctx = context(c, epoch, &[run.label(), &attempt.to_be_bytes()]);
    scalar(&secret.derive(b"bankmesh.dkg-ephemeral.v3", &ctx))
}

fn ephemeral_transcript(
    c: &Consortium,
    epoch: u64,
    run: Run,
    attempt: u32,
    dealer: MemberIndex,
) -> merlin::Transcript {
    let mut t = transcript(&c.id, epoch, b"dkg-ephemeral");
    t.append_message(b"run", run.label());
    t.append_u64(b"attempt", u64::from(attempt));
    t.append_u64(b"dealer", u64::from(dealer));
    t
}

/// Our round-2 ephemeral key for one run and attempt, with a proof that we know its secret,
/// bound to the run, the attempt and us.
pub fn prove_ephemeral(
    secret: &EpochSecret,
    c: &Consortium,
    epoch: u64,
    run: Run,
    attempt: u32,
    me: MemberIndex,
) -> ([u8; 32], schnorr::Signature) {
    let e = TagKey::from_scalar(*ephemeral(secret, c, epoch, run, attempt));
    let ctx = context(c, epoch, &[run.label(), &attempt.to_be_bytes()]);
    // Deterministic, so the record rebuilt after a crash is the same.
    let seed = secret.derive(b"bankmesh.dkg-ephemeral-proof.v1", &ctx);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let mut t = ephemeral_transcript(c, epoch, run, attempt, me);
    let proof = schnorr::sign(&mut t, &e, b"ephemeral", &mut rng);
    (e.public().compress().to_bytes(), proof)
}

/// Checks a dealer's proof that it knows its round-2 ephemeral's secret.
pub fn check_ephemeral(
    c: &Consortium,
    epoch: u64,
    run: Run,
    attempt: u32,
    dealer: MemberIndex,
    ephemeral: &RistrettoPoint,
    proof: &schnorr::Signature,
) -> Result<(), String> {
    let mut t = ephemeral_transcript(c, epoch, run, attempt, dealer);
    schnorr::verify(&mut t, ephemeral, b"ephemeral", proof)
        .map_err(|e| format!("round-2 ephemeral proof: {e}"))
}

/// The secret our round-2 shares of one run and attempt are sealed to. Per attempt, so that a
/// complaint, which reveals what one dealer sealed to us, opens nothing of another attempt.
pub fn seal_secret(
    secret: &EpochSecret,
    c: &Consortium,
    epoch: u64,
    run: Run,
    attempt: u32,
) -> Zeroizing<Scalar> {
    let ctx = context(c, epoch, &[run.label(), &attempt.to_be_bytes()]);
    scalar(&secret.derive(b"bankmesh.dkg-seal-key.v2", &ctx))
}

/// The seal key announced for a seal secret.
pub fn seal_public(secret: &Scalar) -> [u8; 32] {
    (secret * G).compress().to_bytes()
}

fn scalar(bytes: &[u8; 32]) -> Zeroizing<Scalar> {
    Zeroizing::new(Scalar::from_bytes_mod_order(*bytes))
}

/// Our ring key for the epoch's submissions.
pub fn ring_secret(secret: &EpochSecret, c: &Consortium, epoch: u64) -> Zeroizing<Scalar> {
    let ctx = context(c, epoch, &[]);
    scalar(&secret.derive(b"bankmesh.ring-key.v1", &ctx))
}

fn ring_transcript(c: &Consortium, epoch: u64, author: MemberIndex) -> merlin::Transcript {
    let mut t = transcript(&c.id, epoch, b"ring-key");
    t.append_u64(b"author", u64::from(author));
    t
}

/// Our ring key for the epoch with a proof of knowledge, bound to the consortium, the epoch and
/// us (so nobody can announce another member's key as its own).
pub fn announce_ring(
    secret: &EpochSecret,
    c: &Consortium,
    epoch: u64,
    me: MemberIndex,
) -> RingKeyAnnouncement {
    let key = TagKey::from_scalar(*ring_secret(secret, c, epoch));
    // Deterministic, so the announcement rebuilt after a crash is the same.
    let seed = secret.derive(b"bankmesh.ring-key-proof.v1", &context(c, epoch, &[]));
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let mut t = ring_transcript(c, epoch, me);
    RingKeyAnnouncement {
        key: key.public(),
        proof: schnorr::sign(&mut t, &key, b"ring key", &mut rng),
    }
}

/// Checks a member's ring key announcement: not the identity, and proven by its author.
pub fn check_ring(
    c: &Consortium,
    epoch: u64,
    author: MemberIndex,
    announcement: &RingKeyAnnouncement,
) -> Result<(), String> {
    if announcement.key.is_identity() {
        return Err("ring key is the identity".into());
    }
    let mut t = ring_transcript(c, epoch, author);
    schnorr::verify(&mut t, &announcement.key, b"ring key", &announcement.proof)
        .map_err(|e| format!("ring key proof: {e}"))
}

/// Checks a seal key a dealer will seal shares to: a canonical point, not the identity (to
/// which every share sealed would be readable by anyone).
pub fn check_seal_key(key: &[u8; 32]) -> Result<(), String> {
    crate::crypto::sealed::peer_point(key)
        .map(|_| ())
        .map_err(|_| "seal key is not a canonical point other than the identity".into())
}

/// The public ring key of a ring secret.
pub fn ring_public(secret: &Scalar) -> RistrettoPoint {
    secret * G
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::SeedableRng;

    fn consortium() -> Consortium {
        crate::genesis::test_consortium(4)
    }

    #[test]
    fn a_ring_announcement_verifies_only_for_its_author_epoch_and_key() {
        let c = consortium();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let secret = EpochSecret::generate(&mut rng);
        let a = announce_ring(&secret, &c, 3, 2);
        assert_eq!(a, announce_ring(&secret, &c, 3, 2), "deterministic");
        assert!(check_ring(&c, 3, 2, &a).is_ok());
        assert!(check_ring(&c, 3, 1, &a).is_err(), "another author");
        assert!(check_ring(&c, 4, 2, &a).is_err(), "another epoch");
        let mut other = a.clone();
        other.key = announce_ring(&secret, &c, 4, 2).key;
        assert!(check_ring(&c, 3, 2, &other).is_err(), "another key");
        let mut tampered = a.clone();
        tampered.proof.s += Scalar::ONE;
        assert!(
            check_ring(&c, 3, 2, &tampered).is_err(),
            "tampered response"
        );
        let mut identity = a;
        identity.key = RistrettoPoint::default();
        assert!(check_ring(&c, 3, 2, &identity).is_err(), "identity key");
    }

    #[test]
    fn epoch_keys_differ_by_epoch_run_and_attempt_and_bad_seal_keys_are_refused() {
        let c = consortium();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([2; 32]);
        let secret = EpochSecret::generate(&mut rng);
        assert_ne!(*ring_secret(&secret, &c, 1), *ring_secret(&secret, &c, 2));
        let seal = |run, attempt| seal_public(&seal_secret(&secret, &c, 1, run, attempt));
        let x = seal(Run::Decryption, 0);
        assert_ne!(x, seal(Run::Pseudonym, 0));
        assert_ne!(x, seal(Run::Decryption, 1), "a seal key per attempt");
        assert!(check_seal_key(&x).is_ok());
        assert!(check_seal_key(&[0; 32]).is_err(), "identity");
        let mut not_canonical = [0xff; 32];
        not_canonical[31] = 0x7f;
        assert!(check_seal_key(&not_canonical).is_err());
        let other = EpochSecret::generate(&mut rng);
        assert_ne!(
            *polynomial_seed(&secret, &c, 1, Run::Decryption, 0),
            *polynomial_seed(&other, &c, 1, Run::Decryption, 0),
            "fresh per epoch secret, not from a long-term key"
        );
    }
}
