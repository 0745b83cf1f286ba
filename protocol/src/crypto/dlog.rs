//! Small discrete logarithms by table lookup.
//!
//! Decrypted aggregates are `sum*G` with `sum < 2^16`, so a table of all 65536 candidates,
//! built once, opens them in a hash lookup instead of a baby-step/giant-step search.

use std::collections::HashMap;
use std::sync::OnceLock;

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity;

use super::error::CryptoError;

/// Number of table entries: every `m` in `0..2^16`.
const TABLE_SIZE: usize = 1 << 16;

/// Points compressed per `double_and_compress_batch` call (amortizes the field inversion).
const BATCH: usize = 1024;

static TABLE: OnceLock<HashMap<u64, u16>> = OnceLock::new();

/// First 8 bytes of a compressed encoding: 64 bits are enough to index 2^16 entries; a hit is
/// confirmed by recomputing `m*G`, so a prefix collision cannot return a wrong value.
fn prefix(bytes: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(bytes.split_at(8).0);
    u64::from_le_bytes(head)
}

/// Builds the map `prefix(compress(m*G)) -> m`.
///
/// Points are `m * (G/2)`, reached by repeated addition; `double_and_compress_batch` then
/// yields `compress(m*G)` with one inversion per batch instead of one per point.
fn build() -> HashMap<u64, u16> {
    let half_g = RISTRETTO_BASEPOINT_POINT * Scalar::from(2u64).invert();
    let mut table = HashMap::with_capacity(TABLE_SIZE);
    let mut current = RistrettoPoint::identity();
    let mut batch: Vec<RistrettoPoint> = Vec::with_capacity(BATCH);
    let mut m: u16 = 0;
    for chunk_start in (0..TABLE_SIZE).step_by(BATCH) {
        batch.clear();
        for _ in chunk_start..(chunk_start + BATCH).min(TABLE_SIZE) {
            batch.push(current);
            current += half_g;
        }
        for compressed in RistrettoPoint::double_and_compress_batch(&batch) {
            table.insert(prefix(compressed.as_bytes()), m);
            m = m.wrapping_add(1);
        }
    }
    table
}

fn table() -> &'static HashMap<u64, u16> {
    TABLE.get_or_init(build)
}

/// Builds the table now, so the first decryption is not slow.
pub fn warm_up() {
    let _ = table();
}

/// Returns `m < 2^16` with `point == m*G`, or `NotInTable`.
pub fn small_dlog(point: &RistrettoPoint) -> Result<u16, CryptoError> {
    let compressed = point.compress();
    let m = *table()
        .get(&prefix(compressed.as_bytes()))
        .ok_or(CryptoError::NotInTable)?;
    if RistrettoPoint::mul_base(&Scalar::from(m)) == *point {
        Ok(m)
    } else {
        Err(CryptoError::NotInTable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn mul_g(m: u64) -> RistrettoPoint {
        RistrettoPoint::mul_base(&Scalar::from(m))
    }

    #[test]
    fn table_has_no_prefix_collisions() {
        // The table is deterministic, so this pins that every entry is reachable.
        assert_eq!(table().len(), TABLE_SIZE);
    }

    #[test]
    fn round_trips_edges_and_random_values() {
        warm_up();
        for m in [0u16, 1, 2, 1023, 1024, 65534, 65535] {
            assert_eq!(small_dlog(&mul_g(u64::from(m))), Ok(m));
        }
        let mut rng = ChaCha20Rng::from_seed([3u8; 32]);
        for _ in 0..200 {
            let m = (rng.next_u32() & 0xffff) as u16;
            assert_eq!(small_dlog(&mul_g(u64::from(m))), Ok(m));
        }
    }

    #[test]
    fn out_of_table_values_are_refused() {
        assert_eq!(small_dlog(&mul_g(65536)), Err(CryptoError::NotInTable));
        assert_eq!(small_dlog(&(-mul_g(1))), Err(CryptoError::NotInTable));
        let mut rng = ChaCha20Rng::from_seed([4u8; 32]);
        assert_eq!(
            small_dlog(&RistrettoPoint::random(&mut rng)),
            Err(CryptoError::NotInTable)
        );
    }
}
