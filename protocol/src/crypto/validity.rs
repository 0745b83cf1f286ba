//! Input validity proofs (DESIGN: input validity): a submitted ciphertext encrypts a score in
//! `0..=1023`, so that one bank cannot skew an aggregate with an out-of-range value.
//!
//! Statement for `(C1, C2)` under `X`: the prover knows `m, r, s` with `C1 = rG`,
//! `C2 = mG + rX`, `V = mG + sH`, and `m in 0..=1023`. The proof carries the fresh Pedersen
//! commitment `V`, one aggregated 16-bit bulletproof for `V` and `1023G - V` (blindings `s`,
//! `-s`), and a sigma proof that `V` and the ciphertext hide the same `m`.
//!
//! Why two 16-bit ranges: if `a = m` and `b = 1023 - m` are both in `[0, 2^16)` then
//! `a + b = 1023` holds over the integers (no wrap mod the group order), so `m <= 1023`.

use std::sync::OnceLock;

use bulletproofs::{BulletproofGens, PedersenGens, RangeProof};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use merlin::Transcript;
use rand_core::{CryptoRng, OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::elgamal::{encrypt, Ciphertext};
use super::error::CryptoError;

/// Largest valid score.
pub const SCORE_MAX: u64 = 1023;

const PROTOCOL: &[u8] = b"bankmesh.validity.v1";
const PROOF_NAME: &str = "same value";
/// Bit size of each range: enough for `0..=1023` on both sides without wrap-around.
const RANGE_BITS: usize = 16;
/// Number of aggregated commitments (`V` and `1023G - V`).
const PARTIES: usize = 2;

/// Proof that a ciphertext encrypts a score in `0..=SCORE_MAX`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidityProof {
    /// `V = mG + sH`.
    pub commitment: CompressedRistretto,
    /// Aggregated range proof for `V` and `1023G - V`, serialized as its byte encoding.
    #[serde(with = "range_proof_bytes")]
    pub range: RangeProof,
    pub same_value: SameValueProof,
}

impl PartialEq for ValidityProof {
    /// `RangeProof` has no `PartialEq`; its canonical byte encoding stands in.
    fn eq(&self, other: &Self) -> bool {
        self.commitment == other.commitment
            && self.same_value == other.same_value
            && self.range.to_bytes() == other.range.to_bytes()
    }
}

impl Eq for ValidityProof {}

/// Proof of knowledge of `(m, r, s)` with `C1 = rG`, `C2 = mG + rX`, `V = mG + sH`,
/// in challenge/response form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SameValueProof {
    pub c: Scalar,
    pub z_m: Scalar,
    pub z_r: Scalar,
    pub z_s: Scalar,
}

/// Serializes a `RangeProof` as a plain `Vec<u8>`, which every serde format round-trips
/// (the crate's own impl only accepts `visit_bytes`, which e.g. JSON never calls).
mod range_proof_bytes {
    use bulletproofs::RangeProof;
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(proof: &RangeProof, serializer: S) -> Result<S::Ok, S::Error> {
        proof.to_bytes().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<RangeProof, D::Error> {
        let bytes = Vec::<u8>::deserialize(deserializer)?;
        RangeProof::from_bytes(&bytes).map_err(|_| D::Error::custom("malformed range proof"))
    }
}

/// Generators are expensive to build, so they are made once and shared.
fn gens() -> &'static (BulletproofGens, PedersenGens) {
    static GENS: OnceLock<(BulletproofGens, PedersenGens)> = OnceLock::new();
    GENS.get_or_init(|| {
        (
            BulletproofGens::new(RANGE_BITS, PARTIES),
            PedersenGens::default(),
        )
    })
}

fn append_point(transcript: &mut Transcript, label: &'static [u8], point: &CompressedRistretto) {
    transcript.append_message(label, point.as_bytes());
}

fn challenge(transcript: &mut Transcript) -> Scalar {
    let mut wide = [0u8; 64];
    transcript.challenge_bytes(b"c", &mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Binds the protocol label and the whole statement `(X, C1, C2, V)` before either proof.
fn bind_statement(
    transcript: &mut Transcript,
    public: &RistrettoPoint,
    ct: &Ciphertext,
    commitment: &CompressedRistretto,
) {
    transcript.append_message(b"proto", PROTOCOL);
    append_point(transcript, b"X", &public.compress());
    append_point(transcript, b"C1", &ct.c1.compress());
    append_point(transcript, b"C2", &ct.c2.compress());
    append_point(transcript, b"V", commitment);
}

/// The two range commitments, always rebuilt from `V` (never taken from the prover).
fn range_commitments(v: &RistrettoPoint) -> [CompressedRistretto; 2] {
    let complement = RISTRETTO_BASEPOINT_POINT * Scalar::from(SCORE_MAX) - v;
    [v.compress(), complement.compress()]
}

/// Binds the sigma commitments and derives the sigma challenge.
fn sigma_challenge(transcript: &mut Transcript, t: [&RistrettoPoint; 3]) -> Scalar {
    transcript.append_message(b"dom-sep", b"same-value");
    let [t_c1, t_c2, t_v] = t;
    append_point(transcript, b"T_C1", &t_c1.compress());
    append_point(transcript, b"T_C2", &t_c2.compress());
    append_point(transcript, b"T_V", &t_v.compress());
    challenge(transcript)
}

/// Encrypts `score` under `public` and proves that it is in `0..=SCORE_MAX`.
pub fn encrypt_with_proof(
    transcript: &mut Transcript,
    public: &RistrettoPoint,
    score: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Ciphertext, ValidityProof), CryptoError> {
    if score > SCORE_MAX {
        return Err(CryptoError::ScoreOutOfRange(score));
    }
    encrypt_with_proof_unchecked(transcript, public, score, rng)
}

/// Like [`encrypt_with_proof`] but does not refuse out-of-range scores: tests use it to show
/// that such a proof does not verify. Returns `RangeProof` if the bulletproofs prover refuses.
#[doc(hidden)]
pub fn encrypt_with_proof_unchecked(
    transcript: &mut Transcript,
    public: &RistrettoPoint,
    score: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Ciphertext, ValidityProof), CryptoError> {
    let (bp_gens, pc_gens) = gens();
    let m = Zeroizing::new(Scalar::from(score));
    let r = Zeroizing::new(Scalar::random(rng));
    let s = Zeroizing::new(Scalar::random(rng));
    let ct = encrypt(public, score, &r);
    let v = pc_gens.commit(*m, *s);
    let commitment = v.compress();

    bind_statement(transcript, public, &ct, &commitment);

    // Hedged randomness for the bulletproof: transcript, witness and rng.
    let mut range_rng = transcript
        .build_rng()
        .rekey_with_witness_bytes(b"m", m.as_bytes())
        .rekey_with_witness_bytes(b"s", s.as_bytes())
        .finalize(rng);
    // An out-of-range score wraps here; the resulting proof then cannot verify.
    let values = Zeroizing::new([score, SCORE_MAX.wrapping_sub(score)]);
    let blindings = Zeroizing::new([*s, -*s]);
    let (range, _prover_commitments) = RangeProof::prove_multiple_with_rng(
        bp_gens,
        pc_gens,
        transcript,
        values.as_slice(),
        blindings.as_slice(),
        RANGE_BITS,
        &mut range_rng,
    )
    .map_err(|_| CryptoError::RangeProof)?;

    let mut nonce_rng = transcript
        .build_rng()
        .rekey_with_witness_bytes(b"m", m.as_bytes())
        .rekey_with_witness_bytes(b"r", r.as_bytes())
        .rekey_with_witness_bytes(b"s", s.as_bytes())
        .finalize(rng);
    let k_m = Zeroizing::new(Scalar::random(&mut nonce_rng));
    let k_r = Zeroizing::new(Scalar::random(&mut nonce_rng));
    let k_s = Zeroizing::new(Scalar::random(&mut nonce_rng));
    let t_c1 = RistrettoPoint::mul_base(&k_r);
    let t_c2 = RistrettoPoint::mul_base(&k_m) + public * *k_r;
    let t_v = pc_gens.commit(*k_m, *k_s);
    let c = sigma_challenge(transcript, [&t_c1, &t_c2, &t_v]);

    let proof = ValidityProof {
        commitment,
        range,
        same_value: SameValueProof {
            c,
            z_m: *k_m + c * *m,
            z_r: *k_r + c * *r,
            z_s: *k_s + c * *s,
        },
    };
    Ok((ct, proof))
}

/// Verifies that `ct` under `public` encrypts a score in `0..=SCORE_MAX`.
pub fn verify(
    transcript: &mut Transcript,
    public: &RistrettoPoint,
    ct: &Ciphertext,
    proof: &ValidityProof,
) -> Result<(), CryptoError> {
    let (bp_gens, pc_gens) = gens();
    let v = proof
        .commitment
        .decompress()
        .ok_or(CryptoError::InvalidPoint)?;

    bind_statement(transcript, public, ct, &proof.commitment);

    // Verifier randomness only batches the checks; it need not come from the transcript.
    proof
        .range
        .verify_multiple_with_rng(
            bp_gens,
            pc_gens,
            transcript,
            &range_commitments(&v),
            RANGE_BITS,
            &mut OsRng,
        )
        .map_err(|_| CryptoError::RangeProof)?;

    let p = &proof.same_value;
    // Recompute the commitments the honest prover must have used.
    let t_c1 = RistrettoPoint::vartime_double_scalar_mul_basepoint(&p.c, &(-ct.c1), &p.z_r);
    let t_c2 = RistrettoPoint::mul_base(&p.z_m) + public * p.z_r - ct.c2 * p.c;
    let t_v = pc_gens.commit(p.z_m, p.z_s) - v * p.c;
    let c = sigma_challenge(transcript, [&t_c1, &t_c2, &t_v]);
    if c == p.c {
        Ok(())
    } else {
        Err(CryptoError::Proof(PROOF_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::super::dlog::small_dlog;
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn transcript() -> Transcript {
        let mut t = Transcript::new(b"bankmesh.test");
        t.append_message(b"consortium", b"c1");
        t.append_message(b"epoch", b"5");
        t.append_message(b"kind", b"score");
        t
    }

    fn keypair(rng: &mut ChaCha20Rng) -> (Scalar, RistrettoPoint) {
        let x = Scalar::random(rng);
        (x, RistrettoPoint::mul_base(&x))
    }

    fn check(
        public: &RistrettoPoint,
        ct: &Ciphertext,
        proof: &ValidityProof,
    ) -> Result<(), CryptoError> {
        verify(&mut transcript(), public, ct, proof)
    }

    #[test]
    fn honest_proofs_verify() {
        let mut rng = ChaCha20Rng::from_seed([11u8; 32]);
        let (x, public) = keypair(&mut rng);
        for score in [0u64, 1, 512, 1023] {
            let (ct, proof) =
                encrypt_with_proof(&mut transcript(), &public, score, &mut rng).unwrap();
            assert_eq!(check(&public, &ct, &proof), Ok(()), "score {score}");
            assert_eq!(small_dlog(&(ct.c2 - ct.c1 * x)), Ok(score as u16));
        }
    }

    #[test]
    fn out_of_range_is_refused() {
        let mut rng = ChaCha20Rng::from_seed([12u8; 32]);
        let (_, public) = keypair(&mut rng);
        for score in [1024u64, 65535, u64::MAX] {
            assert_eq!(
                encrypt_with_proof(&mut transcript(), &public, score, &mut rng).map(|_| ()),
                Err(CryptoError::ScoreOutOfRange(score))
            );
        }
    }

    #[test]
    fn out_of_range_cannot_be_proven() {
        let mut rng = ChaCha20Rng::from_seed([13u8; 32]);
        let (_, public) = keypair(&mut rng);
        for score in [1024u64, 1025, 2047, 65535, 65535 + 1024, 1 << 16, u64::MAX] {
            match encrypt_with_proof_unchecked(&mut transcript(), &public, score, &mut rng) {
                // The prover may refuse outright ...
                Err(e) => assert_eq!(e, CryptoError::RangeProof),
                // ... or produce a proof that must not verify.
                Ok((ct, proof)) => assert_eq!(
                    check(&public, &ct, &proof),
                    Err(CryptoError::RangeProof),
                    "score {score} verified"
                ),
            }
        }
        // Sanity: the unchecked prover is honest in range.
        let (ct, proof) =
            encrypt_with_proof_unchecked(&mut transcript(), &public, 1023, &mut rng).unwrap();
        assert_eq!(check(&public, &ct, &proof), Ok(()));
    }

    #[test]
    fn every_tampered_field_fails() {
        let mut rng = ChaCha20Rng::from_seed([14u8; 32]);
        let (_, public) = keypair(&mut rng);
        let (ct, proof) = encrypt_with_proof(&mut transcript(), &public, 700, &mut rng).unwrap();
        assert_eq!(check(&public, &ct, &proof), Ok(()));
        let junk = RistrettoPoint::random(&mut rng);

        // Commitment: another valid point, and an invalid encoding.
        let mut bad = proof.clone();
        bad.commitment = (proof.commitment.decompress().unwrap() + junk).compress();
        assert!(check(&public, &ct, &bad).is_err());
        let mut bad = proof.clone();
        bad.commitment = RistrettoPoint::mul_base(&Scalar::from(700u64)).compress();
        assert!(check(&public, &ct, &bad).is_err());
        let mut bad = proof.clone();
        bad.commitment = CompressedRistretto([0xff; 32]);
        assert_eq!(check(&public, &ct, &bad), Err(CryptoError::InvalidPoint));

        // Range proof: flip bits in every 32-byte element (points, scalars, IPP L/R, a, b).
        let bytes = proof.range.to_bytes();
        assert_eq!(bytes.len() % 32, 0);
        let mut regions = 0;
        for region in 0..bytes.len() / 32 {
            for (offset, mask) in [(0usize, 0x02u8), (17, 0x10), (30, 0x01)] {
                let mut tampered = bytes.clone();
                tampered[region * 32 + offset] ^= mask;
                match RangeProof::from_bytes(&tampered) {
                    Err(_) => {}
                    Ok(range) => {
                        let mut bad = proof.clone();
                        bad.range = range;
                        assert!(
                            check(&public, &ct, &bad).is_err(),
                            "range region {region} offset {offset} verified"
                        );
                    }
                }
            }
            regions += 1;
        }
        assert_eq!(regions, 19);
        // Truncated / extended range proofs.
        assert!(RangeProof::from_bytes(&bytes[..bytes.len() - 32])
            .map(|range| {
                let mut bad = proof.clone();
                bad.range = range;
                check(&public, &ct, &bad).is_err()
            })
            .unwrap_or(true));
        // A range proof from another statement.
        let (_, other) = encrypt_with_proof(&mut transcript(), &public, 700, &mut rng).unwrap();
        let mut bad = proof.clone();
        bad.range = other.range.clone();
        assert!(check(&public, &ct, &bad).is_err());

        // Sigma proof fields.
        for field in 0..4 {
            let mut bad = proof.clone();
            let p = &mut bad.same_value;
            match field {
                0 => p.c += Scalar::ONE,
                1 => p.z_m += Scalar::ONE,
                2 => p.z_r += Scalar::ONE,
                _ => p.z_s += Scalar::ONE,
            }
            assert_eq!(
                check(&public, &ct, &bad),
                Err(CryptoError::Proof(PROOF_NAME)),
                "sigma field {field} verified"
            );
        }

        // Ciphertext components, public key, transcript context.
        let mut bad_ct = ct;
        bad_ct.c1 += junk;
        assert!(check(&public, &bad_ct, &proof).is_err());
        let mut bad_ct = ct;
        bad_ct.c2 += RistrettoPoint::mul_base(&Scalar::ONE);
        assert!(check(&public, &bad_ct, &proof).is_err());
        let (_, other_public) = keypair(&mut rng);
        assert!(check(&other_public, &ct, &proof).is_err());
        let mut other_context = Transcript::new(b"bankmesh.test");
        other_context.append_message(b"consortium", b"c1");
        other_context.append_message(b"epoch", b"6");
        other_context.append_message(b"kind", b"score");
        assert!(verify(&mut other_context, &public, &ct, &proof).is_err());
    }

    #[test]
    fn proof_does_not_transfer_to_another_ciphertext() {
        let mut rng = ChaCha20Rng::from_seed([15u8; 32]);
        let (_, public) = keypair(&mut rng);
        let (ct_a, proof_a) = encrypt_with_proof(&mut transcript(), &public, 5, &mut rng).unwrap();
        let (ct_b, proof_b) = encrypt_with_proof(&mut transcript(), &public, 5, &mut rng).unwrap();
        assert!(check(&public, &ct_b, &proof_a).is_err());
        assert!(check(&public, &ct_a, &proof_b).is_err());
        // Nor to a homomorphic combination.
        assert!(check(&public, &(ct_a + ct_b), &proof_a).is_err());
    }

    #[test]
    fn proof_round_trips_through_postcard() {
        let mut rng = ChaCha20Rng::from_seed([16u8; 32]);
        let (_, public) = keypair(&mut rng);
        let (ct, proof) = encrypt_with_proof(&mut transcript(), &public, 321, &mut rng).unwrap();
        let bytes = postcard::to_stdvec(&proof).unwrap();
        let back: ValidityProof = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, proof);
        assert_eq!(check(&public, &ct, &back), Ok(()));
        // Deterministic given the seeded rng.
        let mut rng2 = ChaCha20Rng::from_seed([16u8; 32]);
        let _ = keypair(&mut rng2);
        let (ct2, proof2) = encrypt_with_proof(&mut transcript(), &public, 321, &mut rng2).unwrap();
        assert_eq!((ct2, proof2), (ct, proof));
    }

    #[test]
    fn proof_encoding_is_pinned() {
        use sha2::{Digest, Sha256};
        let mut rng = ChaCha20Rng::from_seed([7u8; 32]);
        let public = RistrettoPoint::mul_base(&Scalar::from(123_456_789u64));
        let (ct, proof) = encrypt_with_proof(&mut transcript(), &public, 42, &mut rng).unwrap();
        let bytes = postcard::to_stdvec(&(ct, &proof)).unwrap();
        // 64 (ciphertext) + 32 (V) + 2 (varint length) + 608 (range) + 128 (sigma).
        assert_eq!(bytes.len(), 834);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), PINNED_PROOF_SHA256);
        assert_eq!(check(&public, &ct, &proof), Ok(()));
    }

    const PINNED_PROOF_SHA256: &str =
        "ceb22ce219b5521b549f1ea1146bf370e7a74db75a99684c94c347b73600d2a1";
}
