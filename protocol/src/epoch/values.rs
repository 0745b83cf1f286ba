//! Values that cross the phases of an epoch: the submissions held, our clients and their
//! per-epoch keys, and the final set once the seal decided it.

use std::collections::{BTreeMap, HashMap};

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroizing;

use crate::crypto::elgamal::Ciphertext;
use crate::crypto::schnorr::TagKey;
use crate::record::{Hash, Submission};

/// One of our clients this epoch, as the operator gave it.
pub struct Client {
    pub id: String,
    pub score: u16,
}

/// What the aggregation needs of a submission.
#[derive(Clone)]
pub struct Entry {
    pub tag: [u8; 32],
    pub ciphertext: Ciphertext,
    pub one_time: RistrettoPoint,
}

/// The epoch's valid submissions held here, by hash, with an index by tag so that finding our
/// own is a lookup, not a scan.
#[derive(Default)]
pub struct Pool {
    entries: BTreeMap<Hash, Entry>,
    by_tag: HashMap<[u8; 32], Vec<Hash>>,
}

impl Pool {
    /// Adds a checked submission; false if it was already here.
    pub fn insert(&mut self, hash: Hash, s: &Submission) -> bool {
        if self.entries.contains_key(&hash) {
            return false;
        }
        let tag = s.tag.compress().to_bytes();
        self.by_tag.entry(tag).or_default().push(hash);
        self.entries.insert(
            hash,
            Entry {
                tag,
                ciphertext: s.ciphertext,
                one_time: s.one_time,
            },
        );
        true
    }
    pub fn contains(&self, hash: &Hash) -> bool {
        self.entries.contains_key(hash)
    }
    pub fn get(&self, hash: &Hash) -> Option<&Entry> {
        self.entries.get(hash)
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Every hash, in ascending order.
    pub fn hashes(&self) -> Vec<Hash> {
        self.entries.keys().copied().collect()
    }
    /// Up to `limit` hashes after `after`, in order, and whether more follow.
    pub fn page(&self, after: Option<Hash>, limit: usize) -> (Vec<Hash>, bool) {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut iter = self.entries.range::<Hash, _>((lower, Bound::Unbounded));
        let page: Vec<Hash> = iter.by_ref().take(limit).map(|(h, _)| *h).collect();
        (page, iter.next().is_some())
    }
    /// Our submission with this tag and one-time key, if it is here (posted before a restart).
    pub fn find(&self, tag: &[u8; 32], one_time: &RistrettoPoint) -> Option<Hash> {
        self.by_tag
            .get(tag)?
            .iter()
            .copied()
            .find(|h| self.entries.get(h).is_some_and(|e| &e.one_time == one_time))
    }
    /// Takes the entries of `hashes` out (all present), releasing the rest.
    pub fn take(&mut self, hashes: &[Hash]) -> Option<BTreeMap<Hash, Entry>> {
        let mut out = BTreeMap::new();
        for h in hashes {
            out.insert(*h, self.entries.remove(h)?);
        }
        self.entries.clear();
        self.by_tag.clear();
        Some(out)
    }
}

/// A client's keys for this epoch (DESIGN 3): its tag key and tag, and the one-time key its
/// result is switched to.
pub struct ClientKeys {
    pub client: usize,
    pub tag_key: TagKey,
    pub tag: RistrettoPoint,
    pub one_time: Zeroizing<Scalar>,
    pub one_time_public: RistrettoPoint,
}

/// One of our submissions in the pool.
pub struct Mine {
    pub client: usize,
    pub one_time: Zeroizing<Scalar>,
    pub tag: [u8; 32],
}

/// The epoch's final record set as the seal decided it (DESIGN 4.4), with the aggregates per
/// tag (DESIGN 4.5). Identical at every member that decided.
pub struct FinalSet {
    /// RFC 6962 root of the sorted hashes: what decryption shares name.
    pub root: Hash,
    pub round: u32,
    pub entries: BTreeMap<Hash, Entry>,
    /// Per tag: the sum of the ciphertexts and the number of submissions.
    pub aggregates: BTreeMap<[u8; 32], (Ciphertext, u32)>,
}

impl FinalSet {
    pub fn new(round: u32, entries: BTreeMap<Hash, Entry>) -> FinalSet {
        let mut aggregates: BTreeMap<[u8; 32], (Ciphertext, u32)> = BTreeMap::new();
        for e in entries.values() {
            let slot = aggregates.entry(e.tag).or_insert((Ciphertext::zero(), 0));
            slot.0 += e.ciphertext;
            slot.1 += 1;
        }
        FinalSet {
            root: crate::merkle::set_root(entries.keys()),
            round,
            entries,
            aggregates,
        }
    }
    /// The entry and its tag's aggregate for a submission of the set.
    pub fn lookup(&self, hash: &Hash) -> Option<(&Entry, &Ciphertext, u32)> {
        let e = self.entries.get(hash)?;
        let (aggregate, count) = self.aggregates.get(&e.tag)?;
        Some((e, aggregate, *count))
    }
}
