//! Checkpoint roots (DESIGN 3, 4.4): an RFC 6962 Merkle tree over an epoch's record hashes in
//! ascending order, so that equal sets have equal roots whatever their arrival order.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use sha2::{Digest, Sha256};

use crate::record::Hash;

/// The RFC 6962 root of the sorted, de-duplicated `hashes` (SHA-256 of nothing when empty).
pub fn set_root<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut sorted: Vec<Hash> = hashes.into_iter().copied().collect();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Sha256::digest([]).into();
    }
    let mut tree = MemoryBackedTree::<Sha256, Hash>::new();
    for h in sorted {
        tree.push(h);
    }
    (*tree.root().as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_pinned() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(set_root(&[a, b]), set_root(&[b, a, b]));
        assert_ne!(set_root(&[a]), set_root(&[a, b]));
        // RFC 6962: root of one leaf is SHA-256(0x00 || leaf).
        let mut leaf = vec![0u8];
        leaf.extend_from_slice(&a);
        let expected: Hash = Sha256::digest(&leaf).into();
        assert_eq!(set_root(&[a]), expected);
        assert_eq!(
            hex::encode(set_root(std::iter::empty())),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
