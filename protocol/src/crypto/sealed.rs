//! Encryption of DKG round-2 shares to each recipient's per-epoch seal key (DESIGN 3), on
//! ristretto255: an ephemeral key `E = e*G` per record, the shared point `S = e*P = p*E` with
//! the recipient's seal key `P = p*G`, HKDF-SHA256 to a per-recipient key, ChaCha20-Poly1305
//! with the context as associated data.
//!
//! Diffie-Hellman on the same group as everything else lets a recipient prove which shared
//! point it holds: a DKG complaint reveals `S` for one dealer with a DLEQ proof that
//! `log_G P = log_E S` ([`reveal`]), so anyone can open the disputed share from the log and see
//! who lied, while every other share sealed to `P` stays closed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use hkdf::Hkdf;
use merlin::Transcript;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::error::CryptoError;

/// Everything a sealed share is bound to: consortium, epoch, run, attempt, sender and
/// recipient.
pub struct ShareContext<'a> {
    pub consortium: &'a [u8; 32],
    pub epoch: u64,
    pub run: &'a [u8],
    pub attempt: u32,
    pub sender: u16,
    pub recipient: u16,
}

impl ShareContext<'_> {
    fn info(&self, ephemeral: &[u8; 32], recipient_key: &[u8; 32]) -> Vec<u8> {
        let mut info = b"bankmesh.dkg-share.v3".to_vec();
        info.extend_from_slice(self.consortium);
        info.extend_from_slice(&self.epoch.to_be_bytes());
        info.extend_from_slice(&(self.run.len() as u64).to_be_bytes());
        info.extend_from_slice(self.run);
        info.extend_from_slice(&self.attempt.to_be_bytes());
        info.extend_from_slice(&self.sender.to_be_bytes());
        info.extend_from_slice(&self.recipient.to_be_bytes());
        info.extend_from_slice(ephemeral);
        info.extend_from_slice(recipient_key);
        info
    }

    fn transcript(&self) -> Transcript {
        let mut t = super::transcript(self.consortium, self.epoch, b"dkg-complaint");
        t.append_message(b"run", self.run);
        t.append_u64(b"attempt", u64::from(self.attempt));
        t.append_u64(b"sender", u64::from(self.sender));
        t.append_u64(b"recipient", u64::from(self.recipient));
        t
    }
}

/// A point from a peer: canonical and not the identity.
pub fn peer_point(bytes: &[u8; 32]) -> Result<RistrettoPoint, CryptoError> {
    let p = CompressedRistretto(*bytes)
        .decompress()
        .ok_or(CryptoError::InvalidPoint)?;
    if p.is_identity() {
        return Err(CryptoError::InvalidPoint);
    }
    Ok(p)
}

fn cipher(shared: &RistrettoPoint, info: &[u8]) -> ChaCha20Poly1305 {
    let shared = Zeroizing::new(shared.compress().to_bytes());
    let hk = Hkdf::<Sha256>::new(None, shared.as_ref());
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is a valid HKDF-SHA256 output length.
    let _ = hk.expand(info, key.as_mut());
    ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
}

/// Encrypts `plaintext` for the holder of `recipient` (a seal key checked with
/// [`peer_point`]). The key is unique per (ephemeral, recipient), so a zero nonce is safe.
pub fn seal(
    ctx: &ShareContext<'_>,
    ephemeral: &Scalar,
    recipient: &RistrettoPoint,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let eph_pub = RistrettoPoint::mul_base(ephemeral).compress().to_bytes();
    let shared = ephemeral * recipient;
    let info = ctx.info(&eph_pub, recipient.compress().as_bytes());
    cipher(&shared, &info)
        .encrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: plaintext,
                aad: &info,
            },
        )
        .map_err(|_| CryptoError::BadInput)
}

/// Decrypts with the shared point (ours, or one revealed in a complaint and proven).
pub fn open_shared(
    ctx: &ShareContext<'_>,
    ephemeral: &[u8; 32],
    recipient_key: &[u8; 32],
    shared: &RistrettoPoint,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let info = ctx.info(ephemeral, recipient_key);
    cipher(shared, &info)
        .decrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: ciphertext,
                aad: &info,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Proof("sealed DKG share"))
}

/// Decrypts a share sealed to us; fails if anything in the context or ciphertext was changed.
pub fn open(
    ctx: &ShareContext<'_>,
    ephemeral: &[u8; 32],
    recipient: &Scalar,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let e = peer_point(ephemeral)?;
    let key = RistrettoPoint::mul_base(recipient).compress().to_bytes();
    open_shared(ctx, ephemeral, &key, &(recipient * e), ciphertext)
}

/// A proof that a revealed shared point `S` is `p*E` for the recipient's seal key `P = p*G`:
/// a Chaum-Pedersen DLEQ proof `(c, z)` bound to the share's context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedProof {
    pub c: Scalar,
    pub z: Scalar,
}

fn challenge(t: &mut Transcript, points: [&RistrettoPoint; 5]) -> Scalar {
    for (label, p) in [b"P", b"E", b"S", b"A", b"B"].into_iter().zip(points) {
        t.append_message(label, p.compress().as_bytes());
    }
    let mut wide = [0u8; 64];
    t.challenge_bytes(b"c", &mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Reveals the shared point of one sealed share with its proof. The nonce is derived from the
/// secret and the statement, so the same complaint is rebuilt after a restart.
pub fn reveal(
    ctx: &ShareContext<'_>,
    recipient: &Scalar,
    ephemeral: &RistrettoPoint,
) -> (RistrettoPoint, SharedProof) {
    let p = RistrettoPoint::mul_base(recipient);
    let s = recipient * ephemeral;
    let mut t = ctx.transcript();
    let mut nonce_rng = t
        .build_rng()
        .rekey_with_witness_bytes(b"p", recipient.as_bytes())
        .rekey_with_witness_bytes(b"E", ephemeral.compress().as_bytes())
        // The witness and the statement carry the entropy: the nonce is the same for the same
        // complaint, and unknown to anyone without `p`.
        .finalize(&mut rand_chacha::ChaCha20Rng::from_seed([0; 32]));
    let r = Zeroizing::new(Scalar::random(&mut nonce_rng));
    let a = RistrettoPoint::mul_base(&r);
    let b = *r * ephemeral;
    let c = challenge(&mut t, [&p, ephemeral, &s, &a, &b]);
    (
        s,
        SharedProof {
            c,
            z: *r + c * recipient,
        },
    )
}

/// Checks a revealed shared point against the recipient's seal key and the dealer's ephemeral.
pub fn check_reveal(
    ctx: &ShareContext<'_>,
    recipient_key: &RistrettoPoint,
    ephemeral: &RistrettoPoint,
    shared: &RistrettoPoint,
    proof: &SharedProof,
) -> Result<(), CryptoError> {
    if shared.is_identity() || recipient_key.is_identity() || ephemeral.is_identity() {
        return Err(CryptoError::InvalidPoint);
    }
    let a = RistrettoPoint::mul_base(&proof.z) - proof.c * recipient_key;
    let b = proof.z * ephemeral - proof.c * shared;
    let c = challenge(
        &mut ctx.transcript(),
        [recipient_key, ephemeral, shared, &a, &b],
    );
    if c == proof.c {
        Ok(())
    } else {
        Err(CryptoError::Proof("revealed DKG share key"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand_core::SeedableRng;

    fn ctx(recipient: u16) -> ShareContext<'static> {
        ShareContext {
            consortium: &[9; 32],
            epoch: 4,
            run: b"x",
            attempt: 0,
            sender: 1,
            recipient,
        }
    }

    fn keys() -> (Scalar, Scalar, Scalar) {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
        (
            Scalar::random(&mut rng),
            Scalar::random(&mut rng),
            Scalar::random(&mut rng),
        )
    }

    #[test]
    fn opens_only_for_the_recipient_and_context() {
        let (eph, bob, eve) = keys();
        let bob_pub = RistrettoPoint::mul_base(&bob);
        let sealed = seal(&ctx(2), &eph, &bob_pub, b"share").unwrap();
        let eph_pub = RistrettoPoint::mul_base(&eph).compress().to_bytes();
        assert_eq!(
            open(&ctx(2), &eph_pub, &bob, &sealed).unwrap().as_slice(),
            b"share"
        );
        assert!(open(&ctx(2), &eph_pub, &eve, &sealed).is_err());
        assert!(open(&ctx(3), &eph_pub, &bob, &sealed).is_err());
        let other_epoch = ShareContext { epoch: 5, ..ctx(2) };
        assert!(open(&other_epoch, &eph_pub, &bob, &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert!(open(&ctx(2), &eph_pub, &bob, &tampered).is_err());
        assert!(open(&ctx(2), &[0; 32], &bob, &sealed).is_err(), "identity");
    }

    #[test]
    fn a_revealed_shared_point_opens_the_share_and_tampering_fails() {
        let (eph, bob, eve) = keys();
        let bob_pub = RistrettoPoint::mul_base(&bob);
        let e = RistrettoPoint::mul_base(&eph);
        let sealed = seal(&ctx(2), &eph, &bob_pub, b"share").unwrap();
        let (s, proof) = reveal(&ctx(2), &bob, &e);
        assert_eq!(
            (s, proof.clone()),
            reveal(&ctx(2), &bob, &e),
            "deterministic"
        );
        check_reveal(&ctx(2), &bob_pub, &e, &s, &proof).unwrap();
        let opened = open_shared(
            &ctx(2),
            e.compress().as_bytes(),
            bob_pub.compress().as_bytes(),
            &s,
            &sealed,
        )
        .unwrap();
        assert_eq!(opened.as_slice(), b"share");
        // Another point, key, ephemeral, context or proof field: refused.
        let g = RistrettoPoint::mul_base(&Scalar::ONE);
        let eve_pub = RistrettoPoint::mul_base(&eve);
        assert!(check_reveal(&ctx(2), &bob_pub, &e, &(s + g), &proof).is_err());
        assert!(check_reveal(&ctx(2), &eve_pub, &e, &s, &proof).is_err());
        assert!(check_reveal(&ctx(2), &bob_pub, &(e + g), &s, &proof).is_err());
        assert!(check_reveal(&ctx(3), &bob_pub, &e, &s, &proof).is_err());
        let other = ShareContext {
            attempt: 1,
            ..ctx(2)
        };
        assert!(check_reveal(&other, &bob_pub, &e, &s, &proof).is_err());
        let bad_c = SharedProof {
            c: proof.c + Scalar::ONE,
            ..proof.clone()
        };
        assert!(check_reveal(&ctx(2), &bob_pub, &e, &s, &bad_c).is_err());
        let bad_z = SharedProof {
            z: proof.z + Scalar::ONE,
            ..proof.clone()
        };
        assert!(check_reveal(&ctx(2), &bob_pub, &e, &s, &bad_z).is_err());
        // Eve's own key and shared point prove nothing about Bob's share.
        let (s_eve, proof_eve) = reveal(&ctx(2), &eve, &e);
        assert!(check_reveal(&ctx(2), &bob_pub, &e, &s_eve, &proof_eve).is_err());
        use curve25519_dalek::traits::Identity;
        let id = RistrettoPoint::identity();
        assert!(check_reveal(&ctx(2), &bob_pub, &e, &id, &proof).is_err());
    }
}
