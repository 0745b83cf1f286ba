//! Linkable ring signatures (bLSAG) over the members' ring keys, with two key images
//! (DESIGN 3, table row "one submission per bank per tag").
//!
//! The scheme is the back-linkable spontaneous anonymous group signature of Liu, Wei and Wong
//! ("Linkable Spontaneous Anonymous Group Signature for Ad Hoc Groups", ACISP 2004), in the
//! form of *Zero to Monero* 2.0, section 3.4, with a second key image. The signer `x` (public
//! `P = x*G`, one of the ring) proves, without saying which ring member it is, that the same `x`
//! gives
//!
//! - the **link tag** `L = x * H3(consortium, epoch, T)`: one per member and tag, so a second
//!   submission by one member for one tag shows as a repeated `L`, while tags or epochs that
//!   differ give unrelated link tags (the base differs; linking them is a DDH problem);
//! - the **slot tag** `S = x * H4(consortium, epoch, j)` for a public slot `j < quota`: a member
//!   has `quota` slots per epoch, so it posts at most `quota` submissions before a slot tag
//!   repeats. Members pick their slots at random among those they have not used, so the slots
//!   seen on the log say nothing about who has how many clients beyond the total.
//!
//! Unlike crates whose key image is `x * Hp(P)` (nazgul, for instance), the bases here are set
//! per tag and per slot; a key image from the key alone would link all of one member's posts.
//!
//! Signing, with `alpha` and `r_i` random: `c_{s+1} = H(alpha*G, alpha*H3, alpha*H4)`; for
//! each `i` after `s` around the ring, `c_{i+1} = H(r_i*G + c_i*P_i, r_i*H3 + c_i*L,
//! r_i*H4 + c_i*S)`; then `r_s = alpha - c_s*x`. The signature is `(j, L, S, c_0, r_0..r_{n-1})`;
//! it verifies if recomputing the chain from `c_0` closes at `c_n = c_0`. Every challenge is
//! a transcript over the consortium, epoch, tag, slot, ring, both key images and the message.

use core::fmt;

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::CryptoError;
use crate::genesis::ConsortiumId;

/// Most ring members (DESIGN: at most 64 members).
pub const RING_MAX: usize = 64;
const PROTOCOL: &[u8] = b"bankmesh.blsag.v1";

/// A member's ring secret key. Zeroized on drop and never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RingKey {
    secret: Scalar,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RingKey(<redacted>)")
    }
}

impl RingKey {
    pub fn from_scalar(secret: Scalar) -> RingKey {
        RingKey { secret }
    }
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> RingKey {
        RingKey {
            secret: Scalar::random(rng),
        }
    }
    /// The public ring key `x * G`.
    pub fn public(&self) -> RistrettoPoint {
        RistrettoPoint::mul_base(&self.secret)
    }
}

/// What a signature is bound to besides its message.
#[derive(Clone, Copy, Debug)]
pub struct RingContext<'a> {
    pub consortium: &'a ConsortiumId,
    pub epoch: u64,
    /// The submission's tag `T`.
    pub tag: &'a [u8; 32],
}

fn hash_to_point(label: &[u8], parts: &[&[u8]]) -> RistrettoPoint {
    let mut h = Sha512::new();
    h.update((label.len() as u64).to_be_bytes());
    h.update(label);
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    RistrettoPoint::from_uniform_bytes(&h.finalize().into())
}

/// `H3(consortium, epoch, T)`: the base of the link tag.
pub fn link_base(consortium: &ConsortiumId, epoch: u64, tag: &[u8; 32]) -> RistrettoPoint {
    hash_to_point(
        b"bankmesh.ring.link.v1",
        &[consortium, &epoch.to_be_bytes(), tag],
    )
}

/// `H4(consortium, epoch, j)`: the base of the slot tag.
pub fn slot_base(consortium: &ConsortiumId, epoch: u64, slot: u32) -> RistrettoPoint {
    hash_to_point(
        b"bankmesh.ring.slot.v1",
        &[consortium, &epoch.to_be_bytes(), &slot.to_be_bytes()],
    )
}

/// A linkable ring signature. It travels inside records in their encoding (postcard: the
/// slot as a varint, then 32 bytes for each point and scalar, the responses length-prefixed);
/// a scalar that is not canonical does not decode, and points are checked by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSignature {
    pub slot: u32,
    pub link: CompressedRistretto,
    pub slot_tag: CompressedRistretto,
    pub c0: Scalar,
    pub responses: Vec<Scalar>,
}

/// The key images of a verified signature, for the final-set rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linked {
    pub link: [u8; 32],
    pub slot: u32,
    pub slot_tag: [u8; 32],
}

/// The transcript every challenge of one signature starts from.
fn base_transcript(
    ctx: &RingContext<'_>,
    slot: u32,
    ring: &[CompressedRistretto],
    link: &CompressedRistretto,
    slot_tag: &CompressedRistretto,
    message: &[u8],
) -> Transcript {
    let mut t = super::transcript(ctx.consortium, ctx.epoch, b"ring-signature");
    t.append_message(b"proto", PROTOCOL);
    t.append_message(b"tag", ctx.tag);
    t.append_u64(b"slot", u64::from(slot));
    t.append_u64(b"n", ring.len() as u64);
    for p in ring {
        t.append_message(b"P", p.as_bytes());
    }
    t.append_message(b"L", link.as_bytes());
    t.append_message(b"S", slot_tag.as_bytes());
    t.append_message(b"msg", message);
    t
}

fn challenge(
    base: &Transcript,
    a: &RistrettoPoint,
    b: &RistrettoPoint,
    c: &RistrettoPoint,
) -> Scalar {
    let mut t = base.clone();
    t.append_message(b"a", a.compress().as_bytes());
    t.append_message(b"b", b.compress().as_bytes());
    t.append_message(b"c", c.compress().as_bytes());
    let mut wide = [0u8; 64];
    t.challenge_bytes(b"challenge", &mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

fn check_ring(ring: &[RistrettoPoint]) -> Result<Vec<CompressedRistretto>, CryptoError> {
    if ring.len() < 2 || ring.len() > RING_MAX {
        return Err(CryptoError::BadInput);
    }
    if ring.iter().any(IsIdentity::is_identity) {
        return Err(CryptoError::InvalidPoint);
    }
    Ok(ring.iter().map(RistrettoPoint::compress).collect())
}

/// Signs `message` as ring member `signer` (whose key is `key`), in slot `slot`.
///
/// The nonces are hedged: drawn from `rng` rekeyed with the transcript and the secret key,
/// so a weak `rng` alone does not leak the key.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    ctx: &RingContext<'_>,
    slot: u32,
    ring: &[RistrettoPoint],
    signer: usize,
    key: &RingKey,
    message: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<RingSignature, CryptoError> {
    let compressed = check_ring(ring)?;
    let n = ring.len();
    if ring.get(signer) != Some(&key.public()) {
        return Err(CryptoError::BadInput);
    }
    let h_link = link_base(ctx.consortium, ctx.epoch, ctx.tag);
    let h_slot = slot_base(ctx.consortium, ctx.epoch, slot);
    let link = key.secret * h_link;
    let slot_tag = key.secret * h_slot;
    let (link_c, slot_c) = (link.compress(), slot_tag.compress());
    let base = base_transcript(ctx, slot, &compressed, &link_c, &slot_c, message);
    let mut nonce_rng = base
        .build_rng()
        .rekey_with_witness_bytes(b"x", key.secret.as_bytes())
        .finalize(rng);
    let alpha = Zeroizing::new(Scalar::random(&mut nonce_rng));
    let g = curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    // `c` runs along the ring: `c_{s+1}` first, `c_s` last; `c_0` is kept on the way.
    let mut c = challenge(
        &base,
        &RistrettoPoint::mul_base(&alpha),
        &(*alpha * h_link),
        &(*alpha * h_slot),
    );
    let mut c0 = (signer + 1 == n).then_some(c);
    let mut responses = vec![Scalar::ZERO; n];
    for i in (1..n).map(|k| (signer + k) % n) {
        let (Some(p), Some(slot)) = (ring.get(i), responses.get_mut(i)) else {
            return Err(CryptoError::BadInput);
        };
        let r = Scalar::random(&mut nonce_rng);
        *slot = r;
        let a = RistrettoPoint::vartime_multiscalar_mul([r, c], [g, *p]);
        let b = RistrettoPoint::vartime_multiscalar_mul([r, c], [h_link, link]);
        let d = RistrettoPoint::vartime_multiscalar_mul([r, c], [h_slot, slot_tag]);
        c = challenge(&base, &a, &b, &d);
        if i + 1 == n {
            c0 = Some(c);
        }
    }
    let (Some(own), Some(c0)) = (responses.get_mut(signer), c0) else {
        return Err(CryptoError::BadInput);
    };
    *own = *alpha - c * key.secret;
    Ok(RingSignature {
        slot,
        link: link_c,
        slot_tag: slot_c,
        c0,
        responses,
    })
}

/// Verifies a signature over `ring` for `ctx` and `message`, with its slot below `quota`.
/// Returns its key images for the final-set rules (a link tag or slot tag seen twice).
pub fn verify(
    ctx: &RingContext<'_>,
    quota: u32,
    ring: &[RistrettoPoint],
    message: &[u8],
    sig: &RingSignature,
) -> Result<Linked, CryptoError> {
    let compressed = check_ring(ring)?;
    if sig.responses.len() != ring.len() {
        return Err(CryptoError::BadInput);
    }
    if sig.slot >= quota {
        return Err(CryptoError::Proof("a slot below the quota"));
    }
    let decode = |p: &CompressedRistretto| {
        p.decompress()
            .filter(|q| !q.is_identity())
            .ok_or(CryptoError::InvalidPoint)
    };
    let link = decode(&sig.link)?;
    let slot_tag = decode(&sig.slot_tag)?;
    let h_link = link_base(ctx.consortium, ctx.epoch, ctx.tag);
    let h_slot = slot_base(ctx.consortium, ctx.epoch, sig.slot);
    let base = base_transcript(
        ctx,
        sig.slot,
        &compressed,
        &sig.link,
        &sig.slot_tag,
        message,
    );
    let mut c = sig.c0;
    for (p, r) in ring.iter().zip(&sig.responses) {
        let a = RistrettoPoint::vartime_multiscalar_mul(
            [*r, c],
            [curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT, *p],
        );
        let b = RistrettoPoint::vartime_multiscalar_mul([*r, c], [h_link, link]);
        let d = RistrettoPoint::vartime_multiscalar_mul([*r, c], [h_slot, slot_tag]);
        c = challenge(&base, &a, &b, &d);
    }
    if c != sig.c0 {
        return Err(CryptoError::Signature);
    }
    Ok(Linked {
        link: sig.link.to_bytes(),
        slot: sig.slot,
        slot_tag: sig.slot_tag.to_bytes(),
    })
}

#[cfg(test)]
mod tests;
