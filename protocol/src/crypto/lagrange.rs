//! Lagrange interpolation at zero over member indices (DESIGN 3: threshold combination).

use curve25519_dalek::scalar::Scalar;

use super::error::CryptoError;

/// The Lagrange coefficient of `index` for interpolating at zero over exactly `indices`.
///
/// `indices` must be the set of shares being combined (DESIGN 3 pitfall: coefficients over any
/// other set give a wrong result). Fails on a zero or repeated index, or if `index` is absent.
pub fn lagrange_at_zero(index: u16, indices: &[u16]) -> Result<Scalar, CryptoError> {
    check_indices(indices)?;
    if !indices.contains(&index) {
        return Err(CryptoError::BadShareIndex(index));
    }
    let xi = Scalar::from(u64::from(index));
    let mut num = Scalar::ONE;
    let mut den = Scalar::ONE;
    for &j in indices.iter().filter(|&&j| j != index) {
        let xj = Scalar::from(u64::from(j));
        num *= xj;
        den *= xj - xi;
    }
    Ok(num * den.invert())
}

/// Rejects zero and repeated indices.
pub fn check_indices(indices: &[u16]) -> Result<(), CryptoError> {
    for (pos, &i) in indices.iter().enumerate() {
        if i == 0 || indices.iter().take(pos).any(|&j| j == i) {
            return Err(CryptoError::BadShareIndex(i));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_a_line_at_zero() {
        // f(x) = 7 + 3x: f(1) = 10, f(2) = 13, f(0) = 7.
        let l1 = lagrange_at_zero(1, &[1, 2]).unwrap();
        let l2 = lagrange_at_zero(2, &[1, 2]).unwrap();
        assert_eq!(
            l1 * Scalar::from(10u64) + l2 * Scalar::from(13u64),
            Scalar::from(7u64)
        );
    }

    #[test]
    fn rejects_zero_repeated_or_missing_index() {
        assert_eq!(
            lagrange_at_zero(0, &[0, 1]),
            Err(CryptoError::BadShareIndex(0))
        );
        assert_eq!(
            lagrange_at_zero(1, &[1, 1]),
            Err(CryptoError::BadShareIndex(1))
        );
        assert_eq!(
            lagrange_at_zero(3, &[1, 2]),
            Err(CryptoError::BadShareIndex(3))
        );
    }
}
