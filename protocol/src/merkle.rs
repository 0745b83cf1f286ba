//! Checkpoints (DESIGN 3, 4.4, 5): RFC 6962 Merkle trees (ct-merkle) with inclusion and
//! consistency proofs.
//!
//! - An epoch's set tree has the hashes of its final set's records as leaves, in ascending
//!   order, so that equal sets have equal roots whatever their arrival order. Its root is the
//!   final set's root, which the seal's certificate pins; an inclusion proof shows one record
//!   in it.
//! - The checkpoint log is an append-only tree with one leaf per epoch, in epoch order
//!   ([`checkpoint_leaf`]): an auditor holding an older bundle checks with a consistency proof
//!   that a newer one extends it, changing no earlier epoch.
//!
//! Conventions (RFC 6962 section 2.1): SHA-256; a leaf hashes as `SHA-256(0x00 || data)`, a node
//! as `SHA-256(0x01 || left || right)`; the empty tree's root is `SHA-256("")`.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use sha2::{Digest, Sha256};

use crate::record::Hash;

/// The root of the empty tree.
fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// An epoch's set tree: the sorted, de-duplicated record hashes as leaves.
pub struct SetTree {
    tree: MemoryBackedTree<Sha256, Hash>,
}

impl SetTree {
    pub fn new<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> SetTree {
        let mut sorted: Vec<Hash> = hashes.into_iter().copied().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut tree = MemoryBackedTree::new();
        for h in sorted {
            tree.push(h);
        }
        SetTree { tree }
    }

    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn root(&self) -> Hash {
        if self.tree.is_empty() {
            return empty_root();
        }
        (*self.tree.root().as_bytes()).into()
    }

    /// The leaf index of `hash` and its inclusion proof (the audit path, leaf to root), if
    /// `hash` is in the set.
    pub fn prove(&self, hash: &Hash) -> Option<(u64, Vec<Hash>)> {
        let index = self.tree.items().binary_search(hash).ok()?;
        let proof = self.tree.prove_inclusion(index);
        Some((u64::try_from(index).ok()?, split_digests(proof.as_bytes())))
    }
}

/// The root of the sorted, de-duplicated `hashes` (SHA-256 of nothing when empty).
pub fn set_root<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
    SetTree::new(hashes).root()
}

/// Whether `proof` shows `leaf` at `index` in the tree of `size` leaves with root `root`.
pub fn verify_inclusion(root: &Hash, size: u64, leaf: &Hash, index: u64, proof: &[Hash]) -> bool {
    let root = RootHash::<Sha256>::new((*root).into(), size);
    let proof = InclusionProof::<Sha256>::from_digests(digests(proof).iter());
    root.verify_inclusion(leaf, index, &proof).is_ok()
}

/// The checkpoint log's leaf for one epoch: its number, its set root and its record count.
pub fn checkpoint_leaf(epoch: u64, root: &Hash, records: u64) -> Vec<u8> {
    let mut leaf = b"bankmesh.checkpoint.v1".to_vec();
    leaf.extend_from_slice(&epoch.to_be_bytes());
    leaf.extend_from_slice(root);
    leaf.extend_from_slice(&records.to_be_bytes());
    leaf
}

/// The append-only tree over the epochs' checkpoint leaves, in epoch order.
#[derive(Default)]
pub struct CheckpointLog {
    tree: MemoryBackedTree<Sha256, Vec<u8>>,
}

impl CheckpointLog {
    pub fn push(&mut self, leaf: Vec<u8>) {
        self.tree.push(leaf);
    }

    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    pub fn root(&self) -> Hash {
        if self.tree.is_empty() {
            return empty_root();
        }
        (*self.tree.root().as_bytes()).into()
    }

    /// A proof that the first `old_size` leaves are a prefix of this log; `None` for an empty
    /// prefix or one longer than the log (nothing to prove).
    pub fn prove_consistency(&self, old_size: u64) -> Option<Vec<Hash>> {
        if old_size == 0 || old_size > self.len() {
            return None;
        }
        if old_size == self.len() {
            return Some(Vec::new());
        }
        let additions = usize::try_from(self.len() - old_size).ok()?;
        Some(split_digests(
            self.tree.prove_consistency(additions).as_bytes(),
        ))
    }
}

/// Whether `proof` shows that the log of `old_size` leaves with root `old_root` is a prefix of
/// the log of `new_size` leaves with root `new_root`.
pub fn verify_consistency(
    old_root: &Hash,
    old_size: u64,
    new_root: &Hash,
    new_size: u64,
    proof: &[Hash],
) -> bool {
    if old_size == new_size {
        return old_root == new_root && proof.is_empty();
    }
    let old = RootHash::<Sha256>::new((*old_root).into(), old_size);
    let new = RootHash::<Sha256>::new((*new_root).into(), new_size);
    let proof = ConsistencyProof::<Sha256>::from_digests(digests(proof).iter());
    new.verify_consistency(&old, &proof).is_ok()
}

fn digests(hashes: &[Hash]) -> Vec<ct_merkle::digest::Output<Sha256>> {
    hashes.iter().map(|h| (*h).into()).collect()
}

fn split_digests(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .filter_map(|c| Hash::try_from(c).ok())
        .collect()
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

    #[test]
    fn every_record_of_a_set_is_proven_in_it_and_nothing_else() {
        for n in [1u8, 2, 3, 5, 8, 13, 64, 100] {
            let hashes: Vec<Hash> = (0..n).map(|i| Sha256::digest([i]).into()).collect();
            let tree = SetTree::new(&hashes);
            let root = tree.root();
            for h in &hashes {
                let (index, proof) = tree.prove(h).unwrap();
                assert!(verify_inclusion(&root, tree.len(), h, index, &proof));
                // A tampered leaf, index, size or path fails.
                let mut other = *h;
                other[0] ^= 1;
                assert!(!verify_inclusion(&root, tree.len(), &other, index, &proof));
                if tree.len() > 1 {
                    let wrong = (index + 1) % tree.len();
                    assert!(!verify_inclusion(&root, tree.len(), h, wrong, &proof));
                    let mut bent = proof.clone();
                    bent[0][31] ^= 1;
                    assert!(!verify_inclusion(&root, tree.len(), h, index, &bent));
                }
            }
            assert!(tree.prove(&[0xff; 32]).is_none());
        }
    }

    #[test]
    fn a_longer_checkpoint_log_proves_it_extends_a_shorter_one() {
        let mut log = CheckpointLog::default();
        let mut roots = Vec::new();
        for epoch in 1..=9u64 {
            log.push(checkpoint_leaf(epoch, &[epoch as u8; 32], epoch * 10));
            roots.push(log.root());
        }
        for old in 1..=9u64 {
            let proof = log.prove_consistency(old).unwrap();
            let old_root = roots[old as usize - 1];
            assert!(verify_consistency(&old_root, old, &log.root(), 9, &proof));
            // Another history of the same length is not a prefix.
            let mut forged = old_root;
            forged[0] ^= 1;
            assert!(!verify_consistency(&forged, old, &log.root(), 9, &proof));
        }
        assert!(log.prove_consistency(0).is_none() && log.prove_consistency(10).is_none());
        // A log whose epoch 3 changed does not extend the old one.
        let mut rewritten = CheckpointLog::default();
        for epoch in 1..=9u64 {
            let root = if epoch == 3 {
                [0; 32]
            } else {
                [epoch as u8; 32]
            };
            rewritten.push(checkpoint_leaf(epoch, &root, epoch * 10));
        }
        let proof = rewritten.prove_consistency(5).unwrap();
        assert!(!verify_consistency(
            &roots[4],
            5,
            &rewritten.root(),
            9,
            &proof
        ));
    }

    /// The RFC 6962 reference vectors (transparency-dev/merkle, testonly/reference_test.go):
    /// roots of the first 1..8 leaves, an inclusion and a consistency proof.
    #[test]
    fn rfc6962_known_answers() {
        let leaves: Vec<Vec<u8>> = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|l| hex::decode(l).unwrap())
        .collect();
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut log = CheckpointLog::default();
        let mut got = Vec::new();
        for leaf in &leaves {
            log.push(leaf.clone());
            got.push(hex::encode(log.root()));
        }
        assert_eq!(got, roots);
        let hex_path = |p: &[Hash]| p.iter().map(hex::encode).collect::<String>();
        // Consistency of 6 leaves with 8 (reference_test.go).
        let proof = log.prove_consistency(6).unwrap();
        assert_eq!(
            hex_path(&proof),
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
        );
        let root6: Hash = hex::decode(roots[5]).unwrap().try_into().unwrap();
        assert!(verify_consistency(&root6, 6, &log.root(), 8, &proof));
        // Inclusion of leaf 5 in the tree of 8 (reference_test.go).
        let path = log.tree.prove_inclusion(5);
        assert_eq!(
            hex::encode(path.as_bytes()),
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b\
             ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0\
             d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
        );
    }
}
