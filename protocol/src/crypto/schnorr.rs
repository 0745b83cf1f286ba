//! Schnorr signatures by a holder's per-epoch tag key.
//!
//! The challenge comes from the caller's transcript (already labelled with consortium, epoch
//! and record kind), so a signature cannot be replayed into another context.

use core::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::CryptoError;

const PROTOCOL: &[u8] = b"bankmesh.schnorr.v1";

/// A per-epoch signing key. Zeroized on drop and never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TagKey {
    secret: Scalar,
}

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TagKey(<redacted>)")
    }
}

impl TagKey {
    /// Wraps a secret scalar (e.g. one derived for the epoch).
    pub fn from_scalar(s: Scalar) -> Self {
        TagKey { secret: s }
    }

    /// The public key `sk * G`.
    pub fn public(&self) -> RistrettoPoint {
        RistrettoPoint::mul_base(&self.secret)
    }
}

/// A Schnorr signature `(R, s)` with `s*G = R + c*P`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub r: CompressedRistretto,
    pub s: Scalar,
}

fn challenge(transcript: &mut Transcript) -> Scalar {
    let mut wide = [0u8; 64];
    transcript.challenge_bytes(b"c", &mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Signs `message` under `key`, binding the signature to the caller's transcript.
///
/// The nonce is hedged: derived from the transcript, the secret key, the message and `rng`,
/// so a weak `rng` alone does not leak the key.
pub fn sign(
    transcript: &mut Transcript,
    key: &TagKey,
    message: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Signature {
    let public = key.public().compress();
    transcript.append_message(b"proto", PROTOCOL);
    transcript.append_message(b"P", public.as_bytes());
    let mut nonce_rng = transcript
        .build_rng()
        .rekey_with_witness_bytes(b"sk", key.secret.as_bytes())
        .rekey_with_witness_bytes(b"msg", message)
        .finalize(rng);
    let k = Zeroizing::new(Scalar::random(&mut nonce_rng));
    let r = RistrettoPoint::mul_base(&k).compress();
    transcript.append_message(b"R", r.as_bytes());
    transcript.append_message(b"msg", message);
    let c = challenge(transcript);
    Signature {
        r,
        s: *k + c * key.secret,
    }
}

/// Verifies `sig` on `message` under `public` with the caller's transcript.
///
/// Rejects the identity public key, for which anyone could sign.
pub fn verify(
    transcript: &mut Transcript,
    public: &RistrettoPoint,
    message: &[u8],
    sig: &Signature,
) -> Result<(), CryptoError> {
    if public.is_identity() {
        return Err(CryptoError::Signature);
    }
    let r = sig.r.decompress().ok_or(CryptoError::InvalidPoint)?;
    transcript.append_message(b"proto", PROTOCOL);
    transcript.append_message(b"P", public.compress().as_bytes());
    transcript.append_message(b"R", sig.r.as_bytes());
    transcript.append_message(b"msg", message);
    let c = challenge(transcript);
    // s*G - c*P == R
    let expected = RistrettoPoint::vartime_double_scalar_mul_basepoint(&c, &(-public), &sig.s);
    if expected == r {
        Ok(())
    } else {
        Err(CryptoError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn transcript() -> Transcript {
        let mut t = Transcript::new(b"bankmesh.test");
        t.append_message(b"epoch", b"7");
        t
    }

    fn setup() -> (TagKey, Signature, ChaCha20Rng) {
        let mut rng = ChaCha20Rng::from_seed([5u8; 32]);
        let key = TagKey::from_scalar(Scalar::random(&mut rng));
        let sig = sign(&mut transcript(), &key, b"hello", &mut rng);
        (key, sig, rng)
    }

    #[test]
    fn signs_and_verifies() {
        let (key, sig, _) = setup();
        assert_eq!(
            verify(&mut transcript(), &key.public(), b"hello", &sig),
            Ok(())
        );
    }

    #[test]
    fn tampering_fails() {
        let (key, sig, mut rng) = setup();
        let p = key.public();
        assert!(verify(&mut transcript(), &p, b"hellp", &sig).is_err());
        assert!(verify(&mut transcript(), &p, b"", &sig).is_err());

        let mut bad = sig.clone();
        bad.s += Scalar::ONE;
        assert_eq!(
            verify(&mut transcript(), &p, b"hello", &bad),
            Err(CryptoError::Signature)
        );

        let mut bad = sig.clone();
        bad.r = RistrettoPoint::random(&mut rng).compress();
        assert_eq!(
            verify(&mut transcript(), &p, b"hello", &bad),
            Err(CryptoError::Signature)
        );

        let mut bad = sig.clone();
        bad.r = CompressedRistretto([0xff; 32]);
        assert_eq!(
            verify(&mut transcript(), &p, b"hello", &bad),
            Err(CryptoError::InvalidPoint)
        );

        let other = TagKey::from_scalar(Scalar::random(&mut rng));
        assert!(verify(&mut transcript(), &other.public(), b"hello", &sig).is_err());

        let mut other_context = Transcript::new(b"bankmesh.other");
        assert!(verify(&mut other_context, &p, b"hello", &sig).is_err());
    }

    #[test]
    fn identity_key_is_refused() {
        let mut rng = ChaCha20Rng::from_seed([6u8; 32]);
        let zero = TagKey::from_scalar(Scalar::ZERO);
        let sig = sign(&mut transcript(), &zero, b"m", &mut rng);
        assert_eq!(
            verify(&mut transcript(), &zero.public(), b"m", &sig),
            Err(CryptoError::Signature)
        );
    }

    #[test]
    fn debug_is_redacted() {
        let key = TagKey::from_scalar(Scalar::from(42u64));
        assert_eq!(format!("{key:?}"), "TagKey(<redacted>)");
    }

    #[test]
    fn signature_encoding_is_pinned() {
        let mut rng = ChaCha20Rng::from_seed([7u8; 32]);
        let key = TagKey::from_scalar(Scalar::from(123_456_789u64));
        let sig = sign(&mut transcript(), &key, b"pinned message", &mut rng);
        let bytes = postcard::to_stdvec(&sig).unwrap();
        assert_eq!(hex::encode(&bytes), PINNED_SIGNATURE);
        let back: Signature = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, sig);
        assert_eq!(
            verify(&mut transcript(), &key.public(), b"pinned message", &back),
            Ok(())
        );
    }

    const PINNED_SIGNATURE: &str = "24aeaad95c5e26883561eac00e3435fbfe24ddd25ce8ac69b562cfb5fd9d2c0e66e6377db0c42c72871c657814fa21e69302020515289e3eda459f9a4d5b930d";
}
