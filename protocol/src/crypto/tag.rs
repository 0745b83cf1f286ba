//! Per-epoch client tags (DESIGN 3): `sk_T = H2(consortium, epoch, id, y)` as a scalar, where
//! `y` is the client's OPRF output, and `T = sk_T * G`.

use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

use super::schnorr::TagKey;

/// Derives the tag key of `client_id` for `epoch` from its OPRF output `y`.
pub fn tag_key(
    consortium: &[u8; 32],
    epoch: u64,
    client_id: &[u8],
    oprf_output: &[u8; 64],
) -> TagKey {
    let mut h = Sha512::new();
    h.update(b"bankmesh.tag-key.v1");
    h.update(consortium);
    h.update(epoch.to_be_bytes());
    h.update((client_id.len() as u64).to_be_bytes());
    h.update(client_id);
    h.update(oprf_output);
    TagKey::from_scalar(Scalar::from_hash(h))
}
