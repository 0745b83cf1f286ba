//! Threshold 2HashDH OPRF: RFC 9497 VOPRF mode, ciphersuite ristretto255-SHA512.
//!
//! A single-key evaluation is byte-for-byte RFC 9497, so outputs match any conforming
//! implementation. In the threshold setting each member evaluates with its Shamir share
//! `k_i` and proves it against its verifying share `K_i = k_i*G`; the bank Lagrange-combines
//! the verified partials into `k*B` before finalizing.
//!
//! The threshold partial evaluations use batch weights of their own ([`BatchContext`]): RFC
//! 9497's per-element weights hash only `pk`, `i`, `C_i` and `D_i`, so an evaluator that
//! answers `D_i = k_i*C_i + a_i*P` passes whenever `sum(d_i * a_i) = 0`, a k-sum problem that
//! Wagner's algorithm solves for large batches. Here every weight comes from one seed over the
//! whole batch and its context, so changing any element changes every weight.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::CryptoError;
use super::lagrange::lagrange_at_zero;

/// RFC 9497 contextString for VOPRF mode (0x01) with ristretto255-SHA512.
pub const SUITE_CONTEXT: &[u8] = b"OPRFV1-\x01-ristretto255-SHA512";

/// Largest batch one evaluation or proof covers; bounds the work a peer can demand.
pub const MAX_BATCH: usize = 4096;

const DST_HASH_TO_GROUP: &[u8] = b"HashToGroup-";
const DST_HASH_TO_SCALAR: &[u8] = b"HashToScalar-";
const DST_SEED: &[u8] = b"Seed-";
const LABEL_COMPOSITE: &[u8] = b"Composite";
const LABEL_CHALLENGE: &[u8] = b"Challenge";
const LABEL_FINALIZE: &[u8] = b"Finalize";
/// I2OSP(Ne, 2): serialized ristretto255 elements are 32 bytes.
const ELEM_LEN: [u8; 2] = 32u16.to_be_bytes();
/// I2OSP(Nh, 2): SHA-512 digests are 64 bytes.
const SEED_LEN: [u8; 2] = 64u16.to_be_bytes();

/// RFC 9380 expand_message_xmd with SHA-512 and len_in_bytes = 64 (one block, so ell = 1).
///
/// `msg` and `dst` are given in parts so that callers need not concatenate; the DSTs used
/// here are fixed and shorter than 256 bytes.
fn expand_message_xmd_64(msg: &[&[u8]], dst: &[&[u8]]) -> [u8; 64] {
    let dst_len: usize = dst.iter().map(|d| d.len()).sum();
    debug_assert!(dst_len <= 255);
    let dst_len_byte = [dst_len as u8];

    // b_0 = H(Z_pad || msg || I2OSP(64, 2) || I2OSP(0, 1) || DST_prime)
    let mut h = Sha512::new();
    h.update([0u8; 128]);
    for m in msg {
        h.update(m);
    }
    h.update(64u16.to_be_bytes());
    h.update([0u8]);
    for d in dst {
        h.update(d);
    }
    h.update(dst_len_byte);
    let mut b0 = h.finalize();

    // b_1 = H(b_0 || I2OSP(1, 1) || DST_prime)
    let mut h = Sha512::new();
    h.update(b0);
    h.update([1u8]);
    for d in dst {
        h.update(d);
    }
    h.update(dst_len_byte);
    let mut b1 = h.finalize();

    let mut out = [0u8; 64];
    out.copy_from_slice(&b1);
    b0.as_mut_slice().zeroize();
    b1.as_mut_slice().zeroize();
    out
}

/// RFC 9497 HashToGroup: hash_to_ristretto255 with DST "HashToGroup-" || contextString.
pub fn hash_to_group(input: &[u8]) -> RistrettoPoint {
    // The uniform bytes derive from the (private) input, so they are wiped.
    let mut uniform = expand_message_xmd_64(&[input], &[DST_HASH_TO_GROUP, SUITE_CONTEXT]);
    let point = RistrettoPoint::from_uniform_bytes(&uniform);
    uniform.zeroize();
    point
}

/// RFC 9497 HashToScalar: 64 expanded bytes reduced mod l, DST "HashToScalar-" || contextString.
pub fn hash_to_scalar(input: &[u8]) -> Scalar {
    hash_to_scalar_parts(&[input])
}

fn hash_to_scalar_parts(parts: &[&[u8]]) -> Scalar {
    let mut uniform = expand_message_xmd_64(parts, &[DST_HASH_TO_SCALAR, SUITE_CONTEXT]);
    let scalar = Scalar::from_bytes_mod_order_wide(&uniform);
    uniform.zeroize();
    scalar
}

/// A uniformly random nonzero scalar (zero would make a blind or proof degenerate).
fn random_nonzero_scalar(rng: &mut (impl RngCore + CryptoRng)) -> Scalar {
    loop {
        let s = Scalar::random(rng);
        if s != Scalar::ZERO {
            return s;
        }
    }
}

/// Client blind for one input; it unlinks the bank's input from what evaluators see.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Blind(Scalar);

impl Blind {
    /// A fresh random nonzero blind.
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Blind(random_nonzero_scalar(rng))
    }

    /// A fixed blind, only for reproducing published test vectors.
    #[doc(hidden)]
    pub fn from_scalar_for_tests(s: Scalar) -> Self {
        Blind(s)
    }
}

impl core::fmt::Debug for Blind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// RFC 9497 Blind: `r * HashToGroup(input)`.
///
/// Fails with `BadInput` if the input is longer than RFC 9497 allows (2^16 - 1 bytes), or
/// if the blinded element would be the identity (identity hash or zero blind), since
/// evaluators must reject it anyway.
pub fn blind(input: &[u8], blind: &Blind) -> Result<RistrettoPoint, CryptoError> {
    if input.len() > usize::from(u16::MAX) {
        return Err(CryptoError::BadInput);
    }
    let hashed = hash_to_group(input);
    if hashed.is_identity() {
        return Err(CryptoError::BadInput);
    }
    let blinded = hashed * blind.0;
    if blinded.is_identity() {
        return Err(CryptoError::BadInput);
    }
    Ok(blinded)
}

/// Batched DLEQ proof that `log_G(pk) == log_B(D)` for every (blinded B, evaluated D) pair.
///
/// Public data (c, s), so it may be printed and serialized; serde rejects non-canonical
/// scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DleqProof {
    pub c: Scalar,
    pub s: Scalar,
}

impl DleqProof {
    /// RFC 9497 encoding: SerializeScalar(c) || SerializeScalar(s).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(self.c.as_bytes());
        out[32..].copy_from_slice(self.s.as_bytes());
        out
    }

    /// Parses `c || s`; only canonical scalars are accepted, so each proof has one encoding.
    pub fn from_bytes(bytes: &[u8; 64]) -> Result<Self, CryptoError> {
        let mut c = [0u8; 32];
        let mut s = [0u8; 32];
        c.copy_from_slice(&bytes[..32]);
        s.copy_from_slice(&bytes[32..]);
        let c = Option::<Scalar>::from(Scalar::from_canonical_bytes(c))
            .ok_or(CryptoError::InvalidScalar)?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))
            .ok_or(CryptoError::InvalidScalar)?;
        Ok(DleqProof { c, s })
    }
}

/// Rejects empty, oversized and mismatched batches, and identity elements (which RFC 9497
/// DeserializeElement would never produce).
fn check_batch(
    blinded: &[RistrettoPoint],
    evaluated: Option<&[RistrettoPoint]>,
) -> Result<(), CryptoError> {
    if blinded.is_empty() || blinded.len() > MAX_BATCH {
        return Err(CryptoError::BadInput);
    }
    if let Some(evaluated) = evaluated {
        if evaluated.len() != blinded.len() {
            return Err(CryptoError::BadInput);
        }
        if evaluated.iter().any(|p| p.is_identity()) {
            return Err(CryptoError::InvalidPoint);
        }
    }
    if blinded.iter().any(|p| p.is_identity()) {
        return Err(CryptoError::InvalidPoint);
    }
    Ok(())
}

/// RFC 9497 ComputeComposites weights d_i, bound to `pk` and to every pair with its position.
fn composite_weights(
    pk: &RistrettoPoint,
    blinded: &[RistrettoPoint],
    evaluated: &[RistrettoPoint],
) -> Vec<Scalar> {
    let seed_dst_len = u16::try_from(DST_SEED.len() + SUITE_CONTEXT.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    let seed = Sha512::new()
        .chain_update(ELEM_LEN)
        .chain_update(pk.compress().as_bytes())
        .chain_update(seed_dst_len)
        .chain_update(DST_SEED)
        .chain_update(SUITE_CONTEXT)
        .finalize();
    blinded
        .iter()
        .zip(evaluated)
        .zip(0u16..)
        .map(|((c, d), i)| {
            let ci = c.compress();
            let di = d.compress();
            hash_to_scalar_parts(&[
                &SEED_LEN,
                &seed,
                &i.to_be_bytes(),
                &ELEM_LEN,
                ci.as_bytes(),
                &ELEM_LEN,
                di.as_bytes(),
                LABEL_COMPOSITE,
            ])
        })
        .collect()
}

/// Who evaluates for whom, and when: what a threshold partial evaluation's proof is bound to.
#[derive(Clone, Copy, Debug)]
pub struct BatchContext<'a> {
    pub consortium: &'a [u8; 32],
    pub epoch: u64,
    pub requester: u16,
    pub evaluator: u16,
}

/// Batch weights bound to the whole batch: a seed over the context, the evaluator's verifying
/// share and every `C_i` and `D_i` (length-prefixed), then `d_i = H(seed, i)`. Public for the
/// simulator's forging evaluator, which must use the weights as verifiers compute them.
pub fn bound_weights(
    ctx: &BatchContext<'_>,
    pk: &RistrettoPoint,
    blinded: &[RistrettoPoint],
    evaluated: &[RistrettoPoint],
) -> Vec<Scalar> {
    let mut h = Sha512::new()
        .chain_update(b"bankmesh.oprf-batch-seed.v1")
        .chain_update(ctx.consortium)
        .chain_update(ctx.epoch.to_be_bytes())
        .chain_update(ctx.requester.to_be_bytes())
        .chain_update(ctx.evaluator.to_be_bytes())
        .chain_update(pk.compress().as_bytes())
        .chain_update((blinded.len() as u64).to_be_bytes());
    for (c, d) in blinded.iter().zip(evaluated) {
        h.update(c.compress().as_bytes());
        h.update(d.compress().as_bytes());
    }
    let seed = h.finalize();
    (0u32..)
        .take(blinded.len())
        .map(|i| hash_to_scalar_parts(&[&SEED_LEN, &seed, &i.to_be_bytes(), LABEL_COMPOSITE]))
        .collect()
}

/// The DLEQ challenge over (pk, M, Z, t2, t3) with the "Challenge" label.
fn challenge(
    pk: &RistrettoPoint,
    m: &RistrettoPoint,
    z: &RistrettoPoint,
    t2: &RistrettoPoint,
    t3: &RistrettoPoint,
) -> Scalar {
    let (bm, a0, a1, a2, a3) = (
        pk.compress(),
        m.compress(),
        z.compress(),
        t2.compress(),
        t3.compress(),
    );
    hash_to_scalar_parts(&[
        &ELEM_LEN,
        bm.as_bytes(),
        &ELEM_LEN,
        a0.as_bytes(),
        &ELEM_LEN,
        a1.as_bytes(),
        &ELEM_LEN,
        a2.as_bytes(),
        &ELEM_LEN,
        a3.as_bytes(),
        LABEL_CHALLENGE,
    ])
}

/// RFC 9497 BlindEvaluate on a batch with key (or key share) `k`, with one batched proof.
pub fn evaluate(
    k: &Scalar,
    blinded: &[RistrettoPoint],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Vec<RistrettoPoint>, DleqProof), CryptoError> {
    let mut r = random_nonzero_scalar(rng);
    let result = evaluate_with_proof_randomness(k, blinded, &r);
    r.zeroize();
    result
}

/// As [`evaluate`] with explicit proof randomness `r`, so RFC vectors can be reproduced.
///
/// `r` must be secret, uniform and never reused: reuse across two proofs reveals `k`.
pub fn evaluate_with_proof_randomness(
    k: &Scalar,
    blinded: &[RistrettoPoint],
    r: &Scalar,
) -> Result<(Vec<RistrettoPoint>, DleqProof), CryptoError> {
    prove(k, blinded, r, composite_weights)
}

/// A threshold partial evaluation with key share `k_i`: the elements and a proof against
/// `K_i` whose batch weights are bound to the whole batch and to `ctx` (see the module doc).
pub fn evaluate_partial(
    k: &Scalar,
    blinded: &[RistrettoPoint],
    ctx: &BatchContext<'_>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Vec<RistrettoPoint>, DleqProof), CryptoError> {
    let mut r = random_nonzero_scalar(rng);
    let result = prove(k, blinded, &r, |pk, c, d| bound_weights(ctx, pk, c, d));
    r.zeroize();
    result
}

/// Verifies a threshold partial evaluation of `ctx.evaluator` against its verifying share.
pub fn verify_partial(
    pk: &RistrettoPoint,
    blinded: &[RistrettoPoint],
    evaluated: &[RistrettoPoint],
    proof: &DleqProof,
    ctx: &BatchContext<'_>,
) -> Result<(), CryptoError> {
    verify_with(pk, blinded, evaluated, proof, |pk, c, d| {
        bound_weights(ctx, pk, c, d)
    })
}

/// Evaluates and proves with the given batch weights.
fn prove(
    k: &Scalar,
    blinded: &[RistrettoPoint],
    r: &Scalar,
    weights_of: impl Fn(&RistrettoPoint, &[RistrettoPoint], &[RistrettoPoint]) -> Vec<Scalar>,
) -> Result<(Vec<RistrettoPoint>, DleqProof), CryptoError> {
    check_batch(blinded, None)?;
    if *k == Scalar::ZERO || *r == Scalar::ZERO {
        return Err(CryptoError::InvalidScalar);
    }
    let pk = RistrettoPoint::mul_base(k);
    let evaluated: Vec<RistrettoPoint> = blinded.iter().map(|b| b * k).collect();

    // ComputeCompositesFast: the prover knows k, so Z = k*M.
    let weights = weights_of(&pk, blinded, &evaluated);
    let m = RistrettoPoint::vartime_multiscalar_mul(&weights, blinded);
    let z = m * k;
    let t2 = RistrettoPoint::mul_base(r);
    let t3 = m * r;
    let c = challenge(&pk, &m, &z, &t2, &t3);
    let mut ck = c * k;
    let s = r - ck;
    ck.zeroize();
    Ok((evaluated, DleqProof { c, s }))
}

/// Verifies a batched evaluation against `pk` (the key, or a member's verifying share).
///
/// Fails with `BadInput` on an empty, oversized or mismatched batch, `InvalidPoint` on an
/// identity element, and `Proof("oprf evaluation")` if the proof does not verify.
pub fn verify_evaluation(
    pk: &RistrettoPoint,
    blinded: &[RistrettoPoint],
    evaluated: &[RistrettoPoint],
    proof: &DleqProof,
) -> Result<(), CryptoError> {
    verify_with(pk, blinded, evaluated, proof, composite_weights)
}

/// Verifies a batched proof with the given batch weights.
fn verify_with(
    pk: &RistrettoPoint,
    blinded: &[RistrettoPoint],
    evaluated: &[RistrettoPoint],
    proof: &DleqProof,
    weights_of: impl Fn(&RistrettoPoint, &[RistrettoPoint], &[RistrettoPoint]) -> Vec<Scalar>,
) -> Result<(), CryptoError> {
    check_batch(blinded, Some(evaluated))?;
    if pk.is_identity() {
        return Err(CryptoError::InvalidPoint);
    }
    // ComputeComposites: everything is public here, so variable-time arithmetic is fine.
    let weights = weights_of(pk, blinded, evaluated);
    let m = RistrettoPoint::vartime_multiscalar_mul(&weights, blinded);
    let z = RistrettoPoint::vartime_multiscalar_mul(&weights, evaluated);
    let t2 = RistrettoPoint::vartime_double_scalar_mul_basepoint(&proof.c, pk, &proof.s);
    let t3 = RistrettoPoint::vartime_multiscalar_mul([proof.s, proof.c], [m, z]);
    if challenge(pk, &m, &z, &t2, &t3) == proof.c {
        Ok(())
    } else {
        Err(CryptoError::Proof("oprf evaluation"))
    }
}

/// Lagrange-combines partial evaluations `k_i*B` over exactly the given indices into `k*B`.
///
/// Partials must be verified first: one bad partial silently corrupts the result.
pub fn combine(partials: &[(u16, RistrettoPoint)]) -> Result<RistrettoPoint, CryptoError> {
    if partials.is_empty() {
        return Err(CryptoError::NotEnoughShares { need: 1, got: 0 });
    }
    let indices: Vec<u16> = partials.iter().map(|&(i, _)| i).collect();
    let coefficients = indices
        .iter()
        .map(|&i| lagrange_at_zero(i, &indices))
        .collect::<Result<Vec<Scalar>, CryptoError>>()?;
    let combined =
        RistrettoPoint::vartime_multiscalar_mul(&coefficients, partials.iter().map(|(_, p)| p));
    if combined.is_identity() {
        return Err(CryptoError::InvalidPoint);
    }
    Ok(combined)
}

/// RFC 9497 Finalize: `Hash(len || input || len || r^-1 * evaluated || "Finalize")`.
///
/// Inputs longer than 2^16 - 1 bytes are outside RFC 9497 and already refused by [`blind`];
/// for them the length prefix saturates, which stays unambiguous because everything after
/// the input has a fixed length.
pub fn finalize(input: &[u8], blind: &Blind, evaluated: &RistrettoPoint) -> [u8; 64] {
    let mut inverse = blind.0.invert();
    let unblinded = evaluated * inverse;
    inverse.zeroize();
    let input_len = u16::try_from(input.len()).unwrap_or(u16::MAX);
    let mut digest = Sha512::new()
        .chain_update(input_len.to_be_bytes())
        .chain_update(input)
        .chain_update(ELEM_LEN)
        .chain_update(unblinded.compress().as_bytes())
        .chain_update(LABEL_FINALIZE)
        .finalize();
    let mut out = [0u8; 64];
    out.copy_from_slice(&digest);
    digest.as_mut_slice().zeroize();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    use curve25519_dalek::ristretto::CompressedRistretto;
    use curve25519_dalek::traits::Identity;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn scalar(h: &str) -> Scalar {
        let bytes: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
        Option::from(Scalar::from_canonical_bytes(bytes)).unwrap()
    }

    fn point(h: &str) -> RistrettoPoint {
        let bytes: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
        CompressedRistretto(bytes).decompress().unwrap()
    }

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    // RFC 9497 Appendix A.1.2 (ristretto255-SHA512, VOPRF mode).
    const SK_SM: &str = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909";
    const PK_SM: &str = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e";
    const BLIND_1: &str = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706";
    const BLIND_2: &str = "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e";
    const INPUT_2: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    const BLINDED_1: &str = "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945";
    const EVALUATED_1: &str = "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e";
    const OUTPUT_1: &str = "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7da4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c";
    const OUTPUT_2: &str = "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6";

    struct Vector {
        inputs: Vec<&'static str>,
        blinds: Vec<&'static str>,
        blinded: Vec<&'static str>,
        evaluated: Vec<&'static str>,
        proof: &'static str,
        proof_randomness: &'static str,
        outputs: Vec<&'static str>,
    }

    fn rfc_vectors() -> Vec<Vector> {
        vec![
            Vector {
                inputs: vec!["00"],
                blinds: vec![BLIND_1],
                blinded: vec![BLINDED_1],
                evaluated: vec![EVALUATED_1],
                proof: "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd066d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
                proof_randomness: BLIND_2,
                outputs: vec![OUTPUT_1],
            },
            Vector {
                inputs: vec![INPUT_2],
                blinds: vec![BLIND_1],
                blinded: vec!["cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c"],
                evaluated: vec!["60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468"],
                proof: "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
                proof_randomness: BLIND_2,
                outputs: vec![OUTPUT_2],
            },
            Vector {
                inputs: vec!["00", INPUT_2],
                blinds: vec![BLIND_1, BLIND_2],
                blinded: vec![
                    BLINDED_1,
                    "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
                ],
                evaluated: vec![
                    EVALUATED_1,
                    "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a",
                ],
                proof: "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
                proof_randomness: "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
                outputs: vec![OUTPUT_1, OUTPUT_2],
            },
        ]
    }

    #[test]
    fn suite_context_is_rfc_voprf_ristretto() {
        assert_eq!(SUITE_CONTEXT, b"OPRFV1-\x01-ristretto255-SHA512");
    }

    #[test]
    fn rfc9497_voprf_vectors() {
        let sk = scalar(SK_SM);
        assert_eq!(RistrettoPoint::mul_base(&sk), point(PK_SM));
        let pk = point(PK_SM);
        for (n, v) in rfc_vectors().into_iter().enumerate() {
            let inputs: Vec<Vec<u8>> = v.inputs.iter().map(|i| hex::decode(i).unwrap()).collect();
            let blinds: Vec<Blind> = v
                .blinds
                .iter()
                .map(|b| Blind::from_scalar_for_tests(scalar(b)))
                .collect();
            let blinded: Vec<RistrettoPoint> = inputs
                .iter()
                .zip(&blinds)
                .map(|(i, b)| blind(i, b).unwrap())
                .collect();
            let blinded_hex: Vec<String> = blinded
                .iter()
                .map(|p| hex::encode(p.compress().as_bytes()))
                .collect();
            assert_eq!(blinded_hex, v.blinded, "blinded elements, vector {n}");

            let (evaluated, proof) =
                evaluate_with_proof_randomness(&sk, &blinded, &scalar(v.proof_randomness)).unwrap();
            let evaluated_hex: Vec<String> = evaluated
                .iter()
                .map(|p| hex::encode(p.compress().as_bytes()))
                .collect();
            assert_eq!(
                evaluated_hex, v.evaluated,
                "evaluation elements, vector {n}"
            );
            assert_eq!(hex::encode(proof.to_bytes()), v.proof, "proof, vector {n}");

            let parsed =
                DleqProof::from_bytes(&hex::decode(v.proof).unwrap().try_into().unwrap()).unwrap();
            assert_eq!(parsed, proof);
            verify_evaluation(&pk, &blinded, &evaluated, &parsed).unwrap();

            for (j, expected) in v.outputs.iter().enumerate() {
                let out = finalize(&inputs[j], &blinds[j], &evaluated[j]);
                assert_eq!(hex::encode(out), *expected, "output {j}, vector {n}");
            }
        }
    }

    type Suite = voprf::Ristretto255;

    #[test]
    fn matches_voprf_crate_both_directions() {
        let mut rng = rng(1);
        let k = Scalar::random(&mut rng);
        let pk = RistrettoPoint::mul_base(&k);
        let server = voprf::VoprfServer::<Suite>::new_with_key(&k.to_bytes()).unwrap();
        assert_eq!(server.get_public_key(), pk);

        for len in [0usize, 1, 17, 100] {
            let mut input = vec![0u8; len];
            rng.fill_bytes(&mut input);

            // Their client and server; we check their proof and reproduce their output.
            let their_blind = voprf::VoprfClient::<Suite>::blind(&input, &mut rng).unwrap();
            let state_bytes = their_blind.state.serialize();
            let r = scalar(&hex::encode(&state_bytes[..32]));
            let our_blind = Blind::from_scalar_for_tests(r);
            let blinded = blind(&input, &our_blind).unwrap();
            assert_eq!(
                blinded.compress().as_bytes()[..],
                their_blind.message.serialize()[..]
            );
            let their_eval = server.blind_evaluate(&mut rng, &their_blind.message);
            let their_output = their_blind
                .state
                .finalize(&input, &their_eval.message, &their_eval.proof, pk)
                .unwrap();
            let their_evaluated = point(&hex::encode(their_eval.message.serialize()));
            let their_proof =
                DleqProof::from_bytes(&their_eval.proof.serialize()[..].try_into().unwrap())
                    .unwrap();
            verify_evaluation(&pk, &[blinded], &[their_evaluated], &their_proof).unwrap();
            assert_eq!(
                finalize(&input, &our_blind, &their_evaluated)[..],
                their_output[..]
            );
            assert_eq!(server.evaluate(&input).unwrap()[..], their_output[..]);

            // Our evaluation: their client accepts our proof and gets the same output.
            let (evaluated, proof) = evaluate(&k, &[blinded], &mut rng).unwrap();
            let their_message =
                voprf::EvaluationElement::<Suite>::deserialize(evaluated[0].compress().as_bytes())
                    .unwrap();
            let their_view_of_proof =
                voprf::Proof::<Suite>::deserialize(&proof.to_bytes()).unwrap();
            let output = their_blind
                .state
                .finalize(&input, &their_message, &their_view_of_proof, pk)
                .unwrap();
            assert_eq!(finalize(&input, &our_blind, &evaluated[0])[..], output[..]);
        }
    }

    #[test]
    fn voprf_crate_accepts_our_batched_proof() {
        let mut rng = rng(2);
        let k = Scalar::random(&mut rng);
        let pk = RistrettoPoint::mul_base(&k);
        let inputs: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i; 3 + usize::from(i)]).collect();
        let clients: Vec<_> = inputs
            .iter()
            .map(|i| voprf::VoprfClient::<Suite>::blind(i, &mut rng).unwrap())
            .collect();
        let blinded: Vec<RistrettoPoint> = clients
            .iter()
            .map(|c| point(&hex::encode(c.message.serialize())))
            .collect();
        let (evaluated, proof) = evaluate(&k, &blinded, &mut rng).unwrap();
        let states: Vec<_> = clients.iter().map(|c| c.state.clone()).collect();
        let messages: Vec<_> = evaluated
            .iter()
            .map(|e| {
                voprf::EvaluationElement::<Suite>::deserialize(e.compress().as_bytes()).unwrap()
            })
            .collect();
        let their_proof = voprf::Proof::<Suite>::deserialize(&proof.to_bytes()).unwrap();
        let outputs: Vec<_> =
            voprf::VoprfClient::batch_finalize(&inputs, &states, &messages, &their_proof, pk)
                .unwrap()
                .map(|o| o.unwrap())
                .collect();
        let server = voprf::VoprfServer::<Suite>::new_with_key(&k.to_bytes()).unwrap();
        for (input, output) in inputs.iter().zip(&outputs) {
            assert_eq!(server.evaluate(input).unwrap()[..], output[..]);
        }
    }

    /// Shamir shares k_i = f(i) of k = f(0) for a random polynomial of degree t-1.
    fn share(k: Scalar, t: usize, n: u16, rng: &mut ChaCha20Rng) -> Vec<(u16, Scalar)> {
        let mut coefficients = vec![k];
        coefficients.extend((1..t).map(|_| Scalar::random(rng)));
        (1..=n)
            .map(|i| {
                let x = Scalar::from(u64::from(i));
                let y = coefficients
                    .iter()
                    .rev()
                    .fold(Scalar::ZERO, |acc, a| acc * x + a);
                (i, y)
            })
            .collect()
    }

    fn subsets_of_three(n: u16) -> Vec<[u16; 3]> {
        let mut out = Vec::new();
        for a in 1..=n {
            for b in a + 1..=n {
                for c in b + 1..=n {
                    out.push([a, b, c]);
                }
            }
        }
        out
    }

    #[test]
    fn threshold_any_three_of_five_match_single_key() {
        let mut rng = rng(3);
        let k = Scalar::random(&mut rng);
        let shares = share(k, 3, 5, &mut rng);
        let verifying: Vec<RistrettoPoint> = shares
            .iter()
            .map(|(_, s)| RistrettoPoint::mul_base(s))
            .collect();

        let inputs: [&[u8]; 2] = [b"customer-1", b"customer-2"];
        let blinds: Vec<Blind> = inputs.iter().map(|_| Blind::random(&mut rng)).collect();
        let blinded: Vec<RistrettoPoint> = inputs
            .iter()
            .zip(&blinds)
            .map(|(i, b)| blind(i, b).unwrap())
            .collect();

        let partials: Vec<Vec<RistrettoPoint>> = shares
            .iter()
            .zip(&verifying)
            .map(|((_, s), vk)| {
                let (evaluated, proof) = evaluate(s, &blinded, &mut rng).unwrap();
                verify_evaluation(vk, &blinded, &evaluated, &proof).unwrap();
                evaluated
            })
            .collect();

        let (single, _) = evaluate(&k, &blinded, &mut rng).unwrap();
        let expected: Vec<[u8; 64]> = (0..inputs.len())
            .map(|j| finalize(inputs[j], &blinds[j], &single[j]))
            .collect();

        for subset in subsets_of_three(5) {
            for j in 0..inputs.len() {
                let chosen: Vec<(u16, RistrettoPoint)> = subset
                    .iter()
                    .map(|&i| (i, partials[usize::from(i - 1)][j]))
                    .collect();
                let combined = combine(&chosen).unwrap();
                assert_eq!(combined, single[j], "subset {subset:?}");
                assert_eq!(finalize(inputs[j], &blinds[j], &combined), expected[j]);
            }
        }

        // Two partials interpolate a different (wrong) value.
        for pair in [[1u16, 2], [3, 5]] {
            let chosen: Vec<(u16, RistrettoPoint)> = pair
                .iter()
                .map(|&i| (i, partials[usize::from(i - 1)][0]))
                .collect();
            let combined = combine(&chosen).unwrap();
            assert_ne!(combined, single[0]);
            assert_ne!(finalize(inputs[0], &blinds[0], &combined), expected[0]);
        }

        // Combining over a set with the wrong labels gives a wrong result too.
        let mislabelled = [
            (1u16, partials[1][0]),
            (2, partials[0][0]),
            (3, partials[2][0]),
        ];
        assert_ne!(combine(&mislabelled).unwrap(), single[0]);
    }

    #[test]
    fn threshold_bad_partials_fail_verification() {
        let mut rng = rng(4);
        let k = Scalar::random(&mut rng);
        let shares = share(k, 3, 5, &mut rng);
        let verifying: Vec<RistrettoPoint> = shares
            .iter()
            .map(|(_, s)| RistrettoPoint::mul_base(s))
            .collect();
        let b = Blind::random(&mut rng);
        let blinded = vec![blind(b"input", &b).unwrap(), blind(b"other", &b).unwrap()];
        let (evaluated, proof) = evaluate(&shares[1].1, &blinded, &mut rng).unwrap();
        let vk = &verifying[1];
        verify_evaluation(vk, &blinded, &evaluated, &proof).unwrap();
        let bad = Err(CryptoError::Proof("oprf evaluation"));

        let mut tampered = evaluated.clone();
        tampered[1] += RISTRETTO_BASEPOINT_POINT;
        assert_eq!(verify_evaluation(vk, &blinded, &tampered, &proof), bad);

        // An honest evaluation under a different member's share does not pass as this one.
        let (other, other_proof) = evaluate(&shares[2].1, &blinded, &mut rng).unwrap();
        assert_eq!(verify_evaluation(vk, &blinded, &other, &other_proof), bad);

        let c_bad = DleqProof {
            c: proof.c + Scalar::ONE,
            ..proof
        };
        assert_eq!(verify_evaluation(vk, &blinded, &evaluated, &c_bad), bad);
        let s_bad = DleqProof {
            s: proof.s + Scalar::ONE,
            ..proof
        };
        assert_eq!(verify_evaluation(vk, &blinded, &evaluated, &s_bad), bad);

        for (i, wrong) in verifying.iter().enumerate().filter(|&(i, _)| i != 1) {
            assert_eq!(
                verify_evaluation(wrong, &blinded, &evaluated, &proof),
                bad,
                "share {i}"
            );
        }
    }

    #[test]
    fn combine_rejects_bad_index_sets() {
        let p = RISTRETTO_BASEPOINT_POINT;
        assert_eq!(
            combine(&[]),
            Err(CryptoError::NotEnoughShares { need: 1, got: 0 })
        );
        assert_eq!(
            combine(&[(0, p), (1, p)]),
            Err(CryptoError::BadShareIndex(0))
        );
        assert_eq!(
            combine(&[(2, p), (2, p)]),
            Err(CryptoError::BadShareIndex(2))
        );
    }

    fn batch(n: usize, rng: &mut ChaCha20Rng) -> Vec<RistrettoPoint> {
        (0..n)
            .map(|i| blind(&[i as u8; 8], &Blind::random(rng)).unwrap())
            .collect()
    }

    #[test]
    fn a_partial_proof_is_bound_to_its_batch_and_context() {
        let mut rng = rng(31);
        let k = Scalar::random(&mut rng);
        let pk = RistrettoPoint::mul_base(&k);
        let blinded = batch(8, &mut rng);
        let id = [3u8; 32];
        let ctx = BatchContext {
            consortium: &id,
            epoch: 4,
            requester: 2,
            evaluator: 5,
        };
        let (evaluated, proof) = evaluate_partial(&k, &blinded, &ctx, &mut rng).unwrap();
        assert!(verify_partial(&pk, &blinded, &evaluated, &proof, &ctx).is_ok());
        let other_id = [4u8; 32];
        let others = [
            BatchContext { epoch: 5, ..ctx },
            BatchContext {
                requester: 3,
                ..ctx
            },
            BatchContext {
                evaluator: 1,
                ..ctx
            },
            BatchContext {
                consortium: &other_id,
                ..ctx
            },
        ];
        for other in &others {
            assert!(verify_partial(&pk, &blinded, &evaluated, &proof, other).is_err());
        }
        // Any element changed, or two swapped, fails.
        for i in 0..evaluated.len() {
            let mut bad = evaluated.clone();
            bad[i] += RISTRETTO_BASEPOINT_POINT;
            assert!(
                verify_partial(&pk, &blinded, &bad, &proof, &ctx).is_err(),
                "D_{i}"
            );
            let mut bad = blinded.clone();
            bad[i] += RISTRETTO_BASEPOINT_POINT;
            assert!(
                verify_partial(&pk, &bad, &evaluated, &proof, &ctx).is_err(),
                "C_{i}"
            );
        }
        let mut swapped = evaluated.clone();
        swapped.swap(0, 1);
        assert!(verify_partial(&pk, &blinded, &swapped, &proof, &ctx).is_err());
        // The RFC's weights and ours never accept each other's proofs.
        assert!(verify_evaluation(&pk, &blinded, &evaluated, &proof).is_err());
        let (rfc_evaluated, rfc_proof) = evaluate(&k, &blinded, &mut rng).unwrap();
        assert!(verify_partial(&pk, &blinded, &rfc_evaluated, &rfc_proof, &ctx).is_err());
    }

    #[test]
    fn one_changed_element_changes_every_bound_weight_but_not_every_rfc_weight() {
        // What defeats the k-sum forgery: with the RFC's weights, changing D_2 leaves d_1 as it
        // was, so an evaluator can tune each error term separately; with ours it cannot.
        let mut rng = rng(32);
        let k = Scalar::random(&mut rng);
        let pk = RistrettoPoint::mul_base(&k);
        let blinded = batch(4, &mut rng);
        let evaluated: Vec<RistrettoPoint> = blinded.iter().map(|b| b * k).collect();
        let mut forged = evaluated.clone();
        forged[2] += RISTRETTO_BASEPOINT_POINT;
        let id = [0u8; 32];
        let ctx = BatchContext {
            consortium: &id,
            epoch: 1,
            requester: 1,
            evaluator: 2,
        };
        let rfc = (
            composite_weights(&pk, &blinded, &evaluated),
            composite_weights(&pk, &blinded, &forged),
        );
        assert_eq!(rfc.0[0], rfc.1[0]);
        assert_ne!(rfc.0[2], rfc.1[2]);
        let ours = (
            bound_weights(&ctx, &pk, &blinded, &evaluated),
            bound_weights(&ctx, &pk, &blinded, &forged),
        );
        for i in 0..4 {
            assert_ne!(ours.0[i], ours.1[i], "weight {i}");
        }
    }

    #[test]
    fn tampering_with_proof_or_order_fails() {
        let mut rng = rng(5);
        let k = Scalar::random(&mut rng);
        let pk = RistrettoPoint::mul_base(&k);
        let blinds: Vec<Blind> = (0..3).map(|_| Blind::random(&mut rng)).collect();
        let blinded: Vec<RistrettoPoint> = blinds
            .iter()
            .enumerate()
            .map(|(i, b)| blind(&[i as u8], b).unwrap())
            .collect();
        let (evaluated, proof) = evaluate(&k, &blinded, &mut rng).unwrap();
        verify_evaluation(&pk, &blinded, &evaluated, &proof).unwrap();
        let bad = Err(CryptoError::Proof("oprf evaluation"));

        // Every bit of the encoded proof matters.
        let bytes = proof.to_bytes();
        for byte in 0..64 {
            for bit in 0..8 {
                let mut t = bytes;
                t[byte] ^= 1 << bit;
                if let Ok(t) = DleqProof::from_bytes(&t) {
                    assert_eq!(verify_evaluation(&pk, &blinded, &evaluated, &t), bad);
                }
            }
        }
        assert_eq!(
            verify_evaluation(
                &pk,
                &blinded,
                &evaluated,
                &DleqProof {
                    c: proof.s,
                    s: proof.c
                }
            ),
            bad
        );

        let mut swapped = evaluated.clone();
        swapped.swap(0, 2);
        assert_eq!(verify_evaluation(&pk, &blinded, &swapped, &proof), bad);
        let mut swapped_blinded = blinded.clone();
        swapped_blinded.swap(0, 1);
        assert_eq!(
            verify_evaluation(&pk, &swapped_blinded, &evaluated, &proof),
            bad
        );
        // Swapping both lists consistently still changes the per-position weights.
        let mut both_e = evaluated.clone();
        both_e.swap(0, 1);
        assert_eq!(
            verify_evaluation(&pk, &swapped_blinded, &both_e, &proof),
            bad
        );

        // A sub-batch is not covered by the batch proof.
        assert_eq!(
            verify_evaluation(&pk, &blinded[..2], &evaluated[..2], &proof),
            bad
        );
        assert_eq!(
            verify_evaluation(&pk, &blinded, &evaluated[..2], &proof),
            Err(CryptoError::BadInput)
        );
        assert_eq!(
            verify_evaluation(&pk, &blinded[..2], &evaluated, &proof),
            Err(CryptoError::BadInput)
        );
        assert_eq!(
            verify_evaluation(&pk, &[], &[], &proof),
            Err(CryptoError::BadInput)
        );

        let mut with_identity = evaluated.clone();
        with_identity[0] = RistrettoPoint::identity();
        assert_eq!(
            verify_evaluation(&pk, &blinded, &with_identity, &proof),
            Err(CryptoError::InvalidPoint)
        );
    }

    #[test]
    fn proof_encoding_roundtrips_and_rejects_non_canonical() {
        let mut rng = rng(6);
        let k = Scalar::random(&mut rng);
        let b = Blind::random(&mut rng);
        let (_, proof) = evaluate(&k, &[blind(b"x", &b).unwrap()], &mut rng).unwrap();
        assert_eq!(DleqProof::from_bytes(&proof.to_bytes()), Ok(proof));
        let mut c_high = proof.to_bytes();
        c_high[31] |= 0x80;
        assert_eq!(
            DleqProof::from_bytes(&c_high),
            Err(CryptoError::InvalidScalar)
        );
        let mut s_high = proof.to_bytes();
        s_high[63] = 0xff;
        assert_eq!(
            DleqProof::from_bytes(&s_high),
            Err(CryptoError::InvalidScalar)
        );
    }

    #[test]
    fn batch_limits_are_enforced() {
        let mut rng = rng(7);
        let k = Scalar::random(&mut rng);
        assert_eq!(
            evaluate(&k, &[], &mut rng).map(|_| ()),
            Err(CryptoError::BadInput)
        );
        let p = RistrettoPoint::mul_base(&Scalar::from(5u64));
        let too_many = vec![p; MAX_BATCH + 1];
        assert_eq!(
            evaluate(&k, &too_many, &mut rng).map(|_| ()),
            Err(CryptoError::BadInput)
        );
        assert_eq!(
            verify_evaluation(
                &p,
                &too_many,
                &too_many,
                &DleqProof {
                    c: Scalar::ONE,
                    s: Scalar::ONE
                }
            ),
            Err(CryptoError::BadInput)
        );
        assert_eq!(
            evaluate(&k, &[RistrettoPoint::identity()], &mut rng).map(|_| ()),
            Err(CryptoError::InvalidPoint)
        );
        assert_eq!(
            evaluate(&Scalar::ZERO, &[p], &mut rng).map(|_| ()),
            Err(CryptoError::InvalidScalar)
        );
        let b = Blind::random(&mut rng);
        assert_eq!(blind(&vec![0u8; 65_536], &b), Err(CryptoError::BadInput));
        assert!(blind(&vec![0u8; 65_535], &b).is_ok());
        assert_eq!(
            blind(b"x", &Blind::from_scalar_for_tests(Scalar::ZERO)),
            Err(CryptoError::BadInput)
        );
    }

    #[test]
    fn outputs_are_deterministic_and_input_dependent() {
        let mut rng = rng(8);
        let k = Scalar::random(&mut rng);
        let run = |input: &[u8], rng: &mut ChaCha20Rng| {
            let b = Blind::random(rng);
            let blinded = blind(input, &b).unwrap();
            let (evaluated, _) = evaluate(&k, &[blinded], rng).unwrap();
            finalize(input, &b, &evaluated[0])
        };
        let a1 = run(b"alice", &mut rng);
        let a2 = run(b"alice", &mut rng);
        let b1 = run(b"bob", &mut rng);
        let e1 = run(b"", &mut rng);
        assert_eq!(a1, a2);
        assert_ne!(a1, b1);
        assert_ne!(a1, e1);
        assert_ne!(b1, e1);

        // Same input, different key: different output.
        let k2 = Scalar::random(&mut rng);
        let b = Blind::random(&mut rng);
        let blinded = blind(b"alice", &b).unwrap();
        let (evaluated, _) = evaluate(&k2, &[blinded], &mut rng).unwrap();
        assert_ne!(finalize(b"alice", &b, &evaluated[0]), a1);
    }

    #[test]
    fn blind_debug_is_redacted() {
        let b = Blind::from_scalar_for_tests(Scalar::from(42u64));
        assert_eq!(format!("{b:?}"), "<redacted>");
    }

    #[test]
    fn hash_to_scalar_is_domain_separated_from_group() {
        // The same bytes under the two DSTs must not coincide.
        let s = hash_to_scalar(b"x");
        let p = hash_to_group(b"x");
        assert_ne!(RistrettoPoint::mul_base(&s), p);
        assert_eq!(hash_to_scalar(b"x"), s);
        assert_ne!(hash_to_scalar(b"y"), s);
    }
}
