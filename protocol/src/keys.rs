//! A member's long-term secret keys (DESIGN 2: ed25519 identity, x25519, and the ristretto255
//! key the genesis lists), and the fresh secret of one epoch that its per-epoch keys derive from.

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::genesis::MemberInfo;
use crate::MemberIndex;

/// A member's secret keys. Zeroized on drop; `Debug` prints nothing secret.
pub struct MemberSecrets {
    identity: SigningKey,
    x25519: x25519_dalek::StaticSecret,
    ring: Zeroizing<Scalar>,
}

impl std::fmt::Debug for MemberSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberSecrets")
            .field(
                "identity",
                &hex::encode(self.identity.verifying_key().as_bytes()),
            )
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl MemberSecrets {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut id = Zeroizing::new([0u8; 32]);
        let mut xs = Zeroizing::new([0u8; 32]);
        let mut wide = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(id.as_mut());
        rng.fill_bytes(xs.as_mut());
        rng.fill_bytes(wide.as_mut());
        MemberSecrets {
            identity: SigningKey::from_bytes(&id),
            x25519: x25519_dalek::StaticSecret::from(*xs),
            ring: Zeroizing::new(Scalar::from_bytes_mod_order_wide(&wide)),
        }
    }

    /// Rebuilds the keys from their 96-byte encoding (identity seed, x25519 secret, ring
    /// scalar); `None` if the ring scalar is not canonical.
    pub fn from_bytes(bytes: &[u8; 96]) -> Option<Self> {
        let (id, rest) = bytes.split_at(32);
        let (xs, ring) = rest.split_at(32);
        let id: Zeroizing<[u8; 32]> = Zeroizing::new(id.try_into().ok()?);
        let xs: Zeroizing<[u8; 32]> = Zeroizing::new(xs.try_into().ok()?);
        let ring: Zeroizing<[u8; 32]> = Zeroizing::new(ring.try_into().ok()?);
        let ring = Option::<Scalar>::from(Scalar::from_canonical_bytes(*ring))?;
        Some(MemberSecrets {
            identity: SigningKey::from_bytes(&id),
            x25519: x25519_dalek::StaticSecret::from(*xs),
            ring: Zeroizing::new(ring),
        })
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 96]> {
        let mut out = Zeroizing::new([0u8; 96]);
        let parts = [
            self.identity.to_bytes(),
            self.x25519.to_bytes(),
            self.ring.to_bytes(),
        ];
        for (dst, src) in out.iter_mut().zip(parts.iter().flatten()) {
            *dst = *src;
        }
        out
    }

    pub fn identity(&self) -> &SigningKey {
        &self.identity
    }
    pub fn x25519(&self) -> &x25519_dalek::StaticSecret {
        &self.x25519
    }
    pub fn ring(&self) -> &Scalar {
        &self.ring
    }

    /// The public part, as it appears in the genesis.
    pub fn member_info(&self, index: MemberIndex, name: &str, addrs: Vec<String>) -> MemberInfo {
        MemberInfo {
            index,
            name: name.to_string(),
            identity: self.identity.verifying_key().to_bytes(),
            x25519: x25519_dalek::PublicKey::from(&self.x25519).to_bytes(),
            ring: (*self.ring * RISTRETTO_BASEPOINT_POINT)
                .compress()
                .to_bytes(),
            addrs,
        }
    }
}

/// A fresh secret of one epoch, drawn from the caller's randomness, stored in the local area and
/// erased with the epoch's working state once its results are stored (forward secrecy: nothing
/// that survives the epoch can recompute what was derived from it). Zeroized on drop.
pub struct EpochSecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EpochSecret(<redacted>)")
    }
}

impl EpochSecret {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        EpochSecret(bytes)
    }
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        EpochSecret(bytes)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// A 32-byte secret for one purpose (HKDF-SHA256), recomputable after a crash for as long
    /// as the epoch secret is kept.
    pub fn derive(&self, label: &[u8], context: &[u8]) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(label), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(context, out.as_mut());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn bytes_round_trip_and_debug_redacts() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let s = MemberSecrets::generate(&mut rng);
        let back = MemberSecrets::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(
            s.member_info(1, "a", vec![]),
            back.member_info(1, "a", vec![])
        );
        let dbg = format!("{s:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains(&hex::encode(s.identity().to_bytes())));
    }

    #[test]
    fn epoch_secrets_are_fresh_and_derive_by_purpose() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([2; 32]);
        let s = EpochSecret::generate(&mut rng);
        assert_ne!(*s.derive(b"a", b"1"), *s.derive(b"a", b"2"));
        assert_ne!(*s.derive(b"a", b"1"), *s.derive(b"b", b"1"));
        assert_eq!(*s.derive(b"a", b"1"), *s.derive(b"a", b"1"));
        let other = EpochSecret::generate(&mut rng);
        assert_ne!(*s.derive(b"a", b"1"), *other.derive(b"a", b"1"));
        assert_eq!(format!("{s:?}"), "EpochSecret(<redacted>)");
    }
}
