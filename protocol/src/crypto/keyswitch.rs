//! Key-switched decryption shares: threshold decryption of an aggregate to a one-time key.
//!
//! Decryptor `i` (share `x_i`, verifying share `X_i = x_i G`) publishes, for aggregate
//! `(A1, A2)` and a submission's one-time key `O = oG`, the pair `R_i = rho_i G`,
//! `E_i = x_i A1 + rho_i O`. Published shares are useless without `o`: only the submitter can
//! strip `D_i = E_i - o R_i = x_i A1`, combine `t` of them to `x A1` and open `A2 - x A1`.
//! A sigma proof shows each share was formed with the decryptor's real `x_i`.

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::elgamal::Ciphertext;
use super::error::CryptoError;
use super::lagrange::{check_indices, lagrange_at_zero};

const PROTOCOL: &[u8] = b"bankmesh.keyswitch.v1";
const PROOF_NAME: &str = "key switch";

/// One decryptor's key-switched share of an aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySwitchShare {
    /// `R_i = rho_i G`.
    pub r: RistrettoPoint,
    /// `E_i = x_i A1 + rho_i O`.
    pub e: RistrettoPoint,
    pub proof: KeySwitchProof,
}

/// Proof of knowledge of `(x_i, rho_i)` with `X_i = x_i G`, `R_i = rho_i G`,
/// `E_i = x_i A1 + rho_i O`, in challenge/response form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySwitchProof {
    pub c: Scalar,
    pub z_x: Scalar,
    pub z_rho: Scalar,
}

fn append_point(transcript: &mut Transcript, label: &'static [u8], point: &RistrettoPoint) {
    transcript.append_message(label, point.compress().as_bytes());
}

fn challenge(transcript: &mut Transcript) -> Scalar {
    let mut wide = [0u8; 64];
    transcript.challenge_bytes(b"c", &mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Binds the protocol label and the public inputs known before the share is made.
fn bind_context(
    transcript: &mut Transcript,
    verifying_share: &RistrettoPoint,
    aggregate: &Ciphertext,
    one_time: &RistrettoPoint,
) {
    transcript.append_message(b"proto", PROTOCOL);
    append_point(transcript, b"X_i", verifying_share);
    append_point(transcript, b"A1", &aggregate.c1);
    append_point(transcript, b"A2", &aggregate.c2);
    append_point(transcript, b"O", one_time);
}

/// Binds the share itself and the three proof commitments, then derives the challenge.
fn bind_share_and_challenge(
    transcript: &mut Transcript,
    r: &RistrettoPoint,
    e: &RistrettoPoint,
    t: [&RistrettoPoint; 3],
) -> Scalar {
    append_point(transcript, b"R_i", r);
    append_point(transcript, b"E_i", e);
    let [t_x, t_rho, t_e] = t;
    append_point(transcript, b"T_x", t_x);
    append_point(transcript, b"T_rho", t_rho);
    append_point(transcript, b"T_e", t_e);
    challenge(transcript)
}

/// Produces decryptor `i`'s share of `aggregate` switched to `one_time`, with its proof.
pub fn key_switch(
    transcript: &mut Transcript,
    x_i: &Scalar,
    verifying_share: &RistrettoPoint,
    aggregate: &Ciphertext,
    one_time: &RistrettoPoint,
    rng: &mut (impl RngCore + CryptoRng),
) -> KeySwitchShare {
    bind_context(transcript, verifying_share, aggregate, one_time);
    // Hedged: rho_i and the nonces depend on the statement, x_i and rng.
    let mut secret_rng = transcript
        .build_rng()
        .rekey_with_witness_bytes(b"x_i", x_i.as_bytes())
        .finalize(rng);
    let rho = Zeroizing::new(Scalar::random(&mut secret_rng));
    let k_x = Zeroizing::new(Scalar::random(&mut secret_rng));
    let k_rho = Zeroizing::new(Scalar::random(&mut secret_rng));

    let r = RistrettoPoint::mul_base(&rho);
    let e = aggregate.c1 * x_i + one_time * *rho;
    let t_x = RistrettoPoint::mul_base(&k_x);
    let t_rho = RistrettoPoint::mul_base(&k_rho);
    let t_e = aggregate.c1 * *k_x + one_time * *k_rho;
    let c = bind_share_and_challenge(transcript, &r, &e, [&t_x, &t_rho, &t_e]);

    KeySwitchShare {
        r,
        e,
        proof: KeySwitchProof {
            c,
            z_x: *k_x + c * x_i,
            z_rho: *k_rho + c * *rho,
        },
    }
}

/// Checks that `share` was made with the secret behind `verifying_share`, for exactly this
/// aggregate and one-time key.
pub fn verify(
    transcript: &mut Transcript,
    verifying_share: &RistrettoPoint,
    aggregate: &Ciphertext,
    one_time: &RistrettoPoint,
    share: &KeySwitchShare,
) -> Result<(), CryptoError> {
    bind_context(transcript, verifying_share, aggregate, one_time);
    let p = &share.proof;
    // Recompute the commitments the honest prover must have used.
    let t_x =
        RistrettoPoint::vartime_double_scalar_mul_basepoint(&p.c, &(-verifying_share), &p.z_x);
    let t_rho = RistrettoPoint::vartime_double_scalar_mul_basepoint(&p.c, &(-share.r), &p.z_rho);
    let t_e = aggregate.c1 * p.z_x + one_time * p.z_rho - share.e * p.c;
    let c = bind_share_and_challenge(transcript, &share.r, &share.e, [&t_x, &t_rho, &t_e]);
    if c == p.c {
        Ok(())
    } else {
        Err(CryptoError::Proof(PROOF_NAME))
    }
}

/// Removes the one-time mask: `D_i = E_i - o R_i = x_i A1`.
pub fn strip(share: &KeySwitchShare, one_time_secret: &Scalar) -> RistrettoPoint {
    share.e - share.r * one_time_secret
}

/// Combines stripped shares `(index, D_i)` into `sum*G = A2 - x A1`.
///
/// Uses exactly the first `threshold` shares, with Lagrange coefficients over exactly their
/// indices (coefficients over any other set would give a wrong point).
pub fn combine(
    aggregate: &Ciphertext,
    stripped: &[(u16, RistrettoPoint)],
    threshold: usize,
) -> Result<RistrettoPoint, CryptoError> {
    if threshold == 0 {
        return Err(CryptoError::BadInput);
    }
    let used = stripped
        .get(..threshold)
        .ok_or(CryptoError::NotEnoughShares {
            need: threshold,
            got: stripped.len(),
        })?;
    let indices: Vec<u16> = used.iter().map(|&(i, _)| i).collect();
    check_indices(&indices)?;
    let mut x_a1 = RistrettoPoint::default();
    for &(i, d) in used {
        x_a1 += d * lagrange_at_zero(i, &indices)?;
    }
    Ok(aggregate.c2 - x_a1)
}

#[cfg(test)]
mod tests {
    use super::super::dlog::small_dlog;
    use super::super::elgamal::encrypt;
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const N: u16 = 5;
    const T: usize = 3;

    struct Setup {
        shares: Vec<(u16, Scalar)>,
        verifying: Vec<RistrettoPoint>,
        aggregate: Ciphertext,
        sum: u16,
        o: Scalar,
        one_time: RistrettoPoint,
        ks: Vec<KeySwitchShare>,
        rng: ChaCha20Rng,
    }

    fn transcript() -> Transcript {
        let mut t = Transcript::new(b"bankmesh.test");
        t.append_message(b"epoch", b"3");
        t
    }

    /// Shamir-shares `x` with a degree-(t-1) polynomial evaluated at 1..=n.
    fn shamir(x: Scalar, t: usize, n: u16, rng: &mut ChaCha20Rng) -> Vec<(u16, Scalar)> {
        let mut coeffs = vec![x];
        coeffs.extend((1..t).map(|_| Scalar::random(rng)));
        (1..=n)
            .map(|i| {
                let xi = Scalar::from(u64::from(i));
                let y = coeffs
                    .iter()
                    .rev()
                    .fold(Scalar::ZERO, |acc, c| acc * xi + c);
                (i, y)
            })
            .collect()
    }

    fn setup() -> Setup {
        let mut rng = ChaCha20Rng::from_seed([9u8; 32]);
        let x = Scalar::random(&mut rng);
        let public = RistrettoPoint::mul_base(&x);
        let shares = shamir(x, T, N, &mut rng);
        let verifying = shares
            .iter()
            .map(|(_, s)| RistrettoPoint::mul_base(s))
            .collect();
        let scores = [1023u64, 0, 17, 512, 999];
        let aggregate: Ciphertext = scores
            .iter()
            .map(|&m| encrypt(&public, m, &Scalar::random(&mut rng)))
            .sum();
        let o = Scalar::random(&mut rng);
        let one_time = RistrettoPoint::mul_base(&o);
        let ks = shares
            .iter()
            .zip(&verifying)
            .map(|((_, s), xi)| {
                key_switch(&mut transcript(), s, xi, &aggregate, &one_time, &mut rng)
            })
            .collect();
        Setup {
            shares,
            verifying,
            aggregate,
            sum: scores.iter().sum::<u64>() as u16,
            o,
            one_time,
            ks,
            rng,
        }
    }

    fn stripped(s: &Setup, which: &[usize]) -> Vec<(u16, RistrettoPoint)> {
        which
            .iter()
            .map(|&j| (s.shares[j].0, strip(&s.ks[j], &s.o)))
            .collect()
    }

    #[test]
    fn honest_shares_verify() {
        let s = setup();
        for (share, xi) in s.ks.iter().zip(&s.verifying) {
            assert_eq!(
                verify(&mut transcript(), xi, &s.aggregate, &s.one_time, share),
                Ok(())
            );
        }
    }

    #[test]
    fn any_three_of_five_recover_the_sum() {
        let s = setup();
        let mut subsets = 0;
        for a in 0..5 {
            for b in (a + 1)..5 {
                for c in (b + 1)..5 {
                    for order in [[a, b, c], [c, a, b]] {
                        let d = stripped(&s, &order);
                        let point = combine(&s.aggregate, &d, T).unwrap();
                        assert_eq!(small_dlog(&point), Ok(s.sum));
                    }
                    subsets += 1;
                }
            }
        }
        assert_eq!(subsets, 10);
        // Extra shares beyond the threshold are ignored.
        let d = stripped(&s, &[4, 2, 0, 1, 3]);
        assert_eq!(
            small_dlog(&combine(&s.aggregate, &d, T).unwrap()),
            Ok(s.sum)
        );
    }

    #[test]
    fn two_shares_are_not_enough() {
        let s = setup();
        let d = stripped(&s, &[0, 3]);
        assert_eq!(
            combine(&s.aggregate, &d, T),
            Err(CryptoError::NotEnoughShares { need: 3, got: 2 })
        );
        // Forcing a 2-of-n combination interpolates the wrong polynomial.
        let forced = combine(&s.aggregate, &d, 2).unwrap();
        assert_ne!(forced, RistrettoPoint::mul_base(&Scalar::from(s.sum)));
        assert_ne!(small_dlog(&forced), Ok(s.sum));
        assert_eq!(combine(&s.aggregate, &d, 0), Err(CryptoError::BadInput));
    }

    #[test]
    fn bad_indices_are_refused() {
        let s = setup();
        let mut d = stripped(&s, &[0, 1, 2]);
        d[2].0 = d[0].0;
        assert_eq!(
            combine(&s.aggregate, &d, T),
            Err(CryptoError::BadShareIndex(d[0].0))
        );
        d[2].0 = 0;
        assert_eq!(
            combine(&s.aggregate, &d, T),
            Err(CryptoError::BadShareIndex(0))
        );
    }

    #[test]
    fn every_tampered_field_fails() {
        let mut s = setup();
        let share = s.ks[1].clone();
        let xi = s.verifying[1];
        let junk = RistrettoPoint::random(&mut s.rng);
        let mut cases = Vec::new();
        let mut t = share.clone();
        t.r += junk;
        cases.push(("r", t));
        let mut t = share.clone();
        t.e += junk;
        cases.push(("e", t));
        let mut t = share.clone();
        t.proof.c += Scalar::ONE;
        cases.push(("c", t));
        let mut t = share.clone();
        t.proof.z_x += Scalar::ONE;
        cases.push(("z_x", t));
        let mut t = share.clone();
        t.proof.z_rho += Scalar::ONE;
        cases.push(("z_rho", t));
        for (name, bad) in cases {
            assert_eq!(
                verify(&mut transcript(), &xi, &s.aggregate, &s.one_time, &bad),
                Err(CryptoError::Proof(PROOF_NAME)),
                "tampered {name} verified"
            );
        }
        // Wrong statement: aggregate, one-time key, transcript context.
        let mut agg = s.aggregate;
        agg.c1 += junk;
        assert!(verify(&mut transcript(), &xi, &agg, &s.one_time, &share).is_err());
        let mut agg = s.aggregate;
        agg.c2 += junk;
        assert!(verify(&mut transcript(), &xi, &agg, &s.one_time, &share).is_err());
        assert!(verify(&mut transcript(), &xi, &s.aggregate, &junk, &share).is_err());
        let mut other = Transcript::new(b"bankmesh.other");
        assert!(verify(&mut other, &xi, &s.aggregate, &s.one_time, &share).is_err());
    }

    #[test]
    fn share_against_another_members_key_fails() {
        let s = setup();
        for j in 0..s.ks.len() {
            for k in 0..s.verifying.len() {
                let result = verify(
                    &mut transcript(),
                    &s.verifying[k],
                    &s.aggregate,
                    &s.one_time,
                    &s.ks[j],
                );
                assert_eq!(result.is_ok(), j == k);
            }
        }
    }

    #[test]
    fn stripping_with_the_wrong_one_time_key_learns_nothing() {
        let mut s = setup();
        let wrong_o = Scalar::random(&mut s.rng);
        let d: Vec<_> = [0usize, 1, 2]
            .iter()
            .map(|&j| (s.shares[j].0, strip(&s.ks[j], &wrong_o)))
            .collect();
        let point = combine(&s.aggregate, &d, T).unwrap();
        assert_ne!(point, RistrettoPoint::mul_base(&Scalar::from(s.sum)));
        assert_eq!(small_dlog(&point), Err(CryptoError::NotInTable));
        // Unstripped shares are equally useless.
        let raw: Vec<_> = [0usize, 1, 2]
            .iter()
            .map(|&j| (s.shares[j].0, s.ks[j].e))
            .collect();
        assert_eq!(
            small_dlog(&combine(&s.aggregate, &raw, T).unwrap()),
            Err(CryptoError::NotInTable)
        );
    }

    #[test]
    fn share_encoding_is_pinned() {
        let mut rng = ChaCha20Rng::from_seed([7u8; 32]);
        let x_i = Scalar::from(123_456_789u64);
        let xi_pub = RistrettoPoint::mul_base(&x_i);
        let public = RistrettoPoint::mul_base(&Scalar::from(987_654_321u64));
        let aggregate = encrypt(&public, 42, &Scalar::random(&mut rng));
        let one_time = RistrettoPoint::mul_base(&Scalar::random(&mut rng));
        let share = key_switch(
            &mut transcript(),
            &x_i,
            &xi_pub,
            &aggregate,
            &one_time,
            &mut rng,
        );
        let bytes = postcard::to_stdvec(&share).unwrap();
        assert_eq!(hex::encode(&bytes), PINNED_SHARE);
        let back: KeySwitchShare = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, share);
        assert_eq!(
            verify(&mut transcript(), &xi_pub, &aggregate, &one_time, &back),
            Ok(())
        );
    }

    const PINNED_SHARE: &str = "26b082497bc782e02422d0f3bb211e7b13d21719f647627f764587772eb8db49c8a9efa8546c40ef85775e0a54e72edc5011501419771b5cf7d27957c8789a7267e986ad219fc56a8ed9cfdcc21e9dbe08c37ab72efed8732411893b8922070b8a565289f4334f90559052bccebe6d95f918a0aab2a6478fd4754c54a5e9b90696bdc3f635328b732d4925e0b82ee2fb6c14afc6aa1a50d73f5effab10ee4907";
}
