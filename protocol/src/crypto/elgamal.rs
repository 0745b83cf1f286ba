//! Exponential ElGamal under the group key X (DESIGN: scores are encrypted so that only the
//! threshold of decryptors, jointly, can open sums of them).
//!
//! A ciphertext of `m` with randomness `r` is `(rG, mG + rX)`. Adding ciphertexts adds the
//! plaintexts, which is what lets the consortium aggregate scores without opening them.

use core::ops::{Add, AddAssign};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;
use serde::{Deserialize, Serialize};

/// An exponential-ElGamal ciphertext `(c1, c2) = (rG, mG + rX)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ciphertext {
    pub c1: RistrettoPoint,
    pub c2: RistrettoPoint,
}

impl Ciphertext {
    /// The encryption of 0 with randomness 0: the neutral element for homomorphic addition.
    pub fn zero() -> Self {
        Ciphertext {
            c1: RistrettoPoint::identity(),
            c2: RistrettoPoint::identity(),
        }
    }
}

impl Add for Ciphertext {
    type Output = Ciphertext;

    /// Componentwise addition: encrypts the sum of the plaintexts under the sum of randomness.
    fn add(self, rhs: Ciphertext) -> Ciphertext {
        Ciphertext {
            c1: self.c1 + rhs.c1,
            c2: self.c2 + rhs.c2,
        }
    }
}

impl AddAssign for Ciphertext {
    fn add_assign(&mut self, rhs: Ciphertext) {
        self.c1 += rhs.c1;
        self.c2 += rhs.c2;
    }
}

impl core::iter::Sum for Ciphertext {
    fn sum<I: Iterator<Item = Ciphertext>>(iter: I) -> Ciphertext {
        iter.fold(Ciphertext::zero(), |acc, ct| acc + ct)
    }
}

impl<'a> core::iter::Sum<&'a Ciphertext> for Ciphertext {
    fn sum<I: Iterator<Item = &'a Ciphertext>>(iter: I) -> Ciphertext {
        iter.fold(Ciphertext::zero(), |acc, ct| acc + *ct)
    }
}

/// Encrypts `m` under `public` with randomness `r`.
///
/// The caller supplies `r` so that it can also prove statements about it (see `validity`)
/// and is responsible for zeroizing it.
pub fn encrypt(public: &RistrettoPoint, m: u64, r: &Scalar) -> Ciphertext {
    Ciphertext {
        c1: RistrettoPoint::mul_base(r),
        c2: RISTRETTO_BASEPOINT_POINT * Scalar::from(m) + public * r,
    }
}

#[cfg(test)]
mod tests {
    use super::super::dlog::small_dlog;
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// Decrypts with the full key; only tests ever hold it.
    fn decrypt(x: &Scalar, ct: &Ciphertext) -> u16 {
        small_dlog(&(ct.c2 - ct.c1 * x)).unwrap()
    }

    #[test]
    fn encryption_adds_homomorphically() {
        let mut rng = ChaCha20Rng::from_seed([1u8; 32]);
        let x = Scalar::random(&mut rng);
        let public = RistrettoPoint::mul_base(&x);
        let scores = [0u64, 1, 512, 1023, 700, 3];
        let cts: Vec<Ciphertext> = scores
            .iter()
            .map(|&m| encrypt(&public, m, &Scalar::random(&mut rng)))
            .collect();
        for (ct, &m) in cts.iter().zip(scores.iter()) {
            assert_eq!(u64::from(decrypt(&x, ct)), m);
        }
        let total: Ciphertext = cts.iter().sum();
        assert_eq!(u64::from(decrypt(&x, &total)), scores.iter().sum::<u64>());
        let mut acc = Ciphertext::zero();
        for ct in &cts {
            acc += *ct;
        }
        assert_eq!(acc, total);
        assert_eq!(cts[0] + cts[1], cts[1] + cts[0]);
        assert_eq!(decrypt(&x, &Ciphertext::zero()), 0);
    }

    #[test]
    fn ciphertext_encoding_is_pinned() {
        let mut rng = ChaCha20Rng::from_seed([7u8; 32]);
        let x = Scalar::from(123_456_789u64);
        let public = RistrettoPoint::mul_base(&x);
        let r = Scalar::random(&mut rng);
        let ct = encrypt(&public, 42, &r);
        let bytes = postcard::to_stdvec(&ct).unwrap();
        assert_eq!(hex::encode(&bytes), PINNED_CIPHERTEXT);
        let back: Ciphertext = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ct);
    }

    const PINNED_CIPHERTEXT: &str = "ca3f9db3b7808bdd87faac3639b0da197e9b9daddd37973e2984586a24018e2acccd49134d7d72a04b18af6e94418ffa1ac9d3a31f5fd90f5c47b0f30798b608";
}
