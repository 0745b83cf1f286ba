//! Values that cross the phases of an epoch: the submissions held, our clients and their
//! per-epoch keys, and the final set once the seal decided it.

use std::collections::{BTreeMap, HashMap};

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroizing;

use crate::crypto::elgamal::Ciphertext;
use crate::crypto::schnorr::TagKey;
use crate::record::{Hash, Submission};

/// One of our clients this epoch, as the operator gave it (zeroized when it drops).
#[derive(zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
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
    /// The ring signature's key images (verified when the submission was checked).
    pub link: [u8; 32],
    pub slot_tag: [u8; 32],
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
                link: s.ring.link.to_bytes(),
                slot_tag: s.ring.slot_tag.to_bytes(),
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
    /// Submissions of the decided set left out, ascending: their link tag or slot tag occurs
    /// twice in it.
    pub excluded: Vec<Hash>,
    /// Fewest submissions a tag needs for its result to be disclosed (genesis `min_count`).
    pub min_count: u32,
}

impl FinalSet {
    /// The final set from the decided submissions' entries, in a consortium of `n` members.
    ///
    /// Every submission whose link tag or slot tag occurs more than once in the decided set is
    /// left out, all of them: a function of the set alone, so every member aggregates the same
    /// records whatever arrived first. Then each tag has at most one submission per member, so
    /// at most `n`, and its sum stays within the lookup table; a tag with more (impossible
    /// unless ring keys repeat, which the genesis refuses) is left out too.
    pub fn new(round: u32, entries: BTreeMap<Hash, Entry>, n: usize, min_count: u32) -> FinalSet {
        let mut links: HashMap<[u8; 32], u32> = HashMap::new();
        let mut slots: HashMap<[u8; 32], u32> = HashMap::new();
        for e in entries.values() {
            *links.entry(e.link).or_default() += 1;
            *slots.entry(e.slot_tag).or_default() += 1;
        }
        let repeated =
            |e: &Entry| links.get(&e.link) > Some(&1) || slots.get(&e.slot_tag) > Some(&1);
        let (repeats, kept): (BTreeMap<Hash, Entry>, BTreeMap<Hash, Entry>) =
            entries.into_iter().partition(|(_, e)| repeated(e));
        let mut per_tag: HashMap<[u8; 32], usize> = HashMap::new();
        for e in kept.values() {
            *per_tag.entry(e.tag).or_default() += 1;
        }
        let (over, kept): (BTreeMap<Hash, Entry>, BTreeMap<Hash, Entry>) = kept
            .into_iter()
            .partition(|(_, e)| per_tag.get(&e.tag).is_some_and(|&c| c > n));
        let entries = kept;
        let mut excluded: Vec<Hash> = repeats.into_keys().chain(over.into_keys()).collect();
        excluded.sort_unstable();
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
            excluded,
            min_count,
        }
    }
    /// Whether the result of a submission's tag may be decrypted: its tag has at least
    /// `min_count` submissions (DESIGN 6, output control). False outside the set.
    pub fn disclosed(&self, hash: &Hash) -> bool {
        self.lookup(hash)
            .is_some_and(|(_, _, count)| count >= self.min_count)
    }
    /// The submissions whose results are withheld (their tag is below `min_count`), ascending.
    pub fn withheld(&self) -> Vec<Hash> {
        self.entries
            .keys()
            .filter(|h| !self.disclosed(h))
            .copied()
            .collect()
    }
    /// The entry and its tag's aggregate for a submission of the set.
    pub fn lookup(&self, hash: &Hash) -> Option<(&Entry, &Ciphertext, u32)> {
        let e = self.entries.get(hash)?;
        let (aggregate, count) = self.aggregates.get(&e.tag)?;
        Some((e, aggregate, *count))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(tag: u8, link: u8, slot: u8) -> Entry {
        Entry {
            tag: [tag; 32],
            ciphertext: Ciphertext::zero(),
            one_time: RistrettoPoint::default(),
            link: [link; 32],
            slot_tag: [slot; 32],
        }
    }

    #[test]
    fn a_repeated_link_or_slot_tag_leaves_every_carrier_out() {
        let entries: BTreeMap<Hash, Entry> = [
            ([1; 32], entry(1, 1, 1)),
            ([2; 32], entry(1, 2, 2)),
            // Member 3 posts twice for tag 1: both go.
            ([3; 32], entry(1, 3, 3)),
            ([4; 32], entry(1, 3, 4)),
            // A slot used twice (past the quota): both go, whatever their tags.
            ([5; 32], entry(2, 5, 9)),
            ([6; 32], entry(3, 6, 9)),
            ([7; 32], entry(4, 7, 7)),
        ]
        .into_iter()
        .collect();
        let set = FinalSet::new(0, entries, 5, 1);
        assert_eq!(set.excluded, vec![[3; 32], [4; 32], [5; 32], [6; 32]]);
        assert_eq!(set.entries.len(), 3);
        assert_eq!(set.aggregates.get(&[1; 32]).map(|a| a.1), Some(2));
        assert!(!set.aggregates.contains_key(&[2; 32]));
        assert_eq!(set.root, crate::merkle::set_root(set.entries.keys()));
    }

    #[test]
    fn a_tag_with_more_submissions_than_members_is_left_out() {
        let entries: BTreeMap<Hash, Entry> = (0..4u8).map(|i| ([i; 32], entry(1, i, i))).collect();
        let set = FinalSet::new(0, entries.clone(), 4, 1);
        assert!(set.excluded.is_empty());
        let set = FinalSet::new(0, entries, 3, 1);
        assert_eq!(set.excluded.len(), 4);
        assert!(set.aggregates.is_empty());
    }

    #[test]
    fn a_tag_below_min_count_is_withheld() {
        // Tag 1 has three submissions, tag 2 two, tag 3 one.
        let entries: BTreeMap<Hash, Entry> = [
            ([1; 32], entry(1, 1, 1)),
            ([2; 32], entry(1, 2, 2)),
            ([3; 32], entry(1, 3, 3)),
            ([4; 32], entry(2, 4, 4)),
            ([5; 32], entry(2, 5, 5)),
            ([6; 32], entry(3, 6, 6)),
        ]
        .into_iter()
        .collect();
        let set = FinalSet::new(0, entries.clone(), 5, 3);
        assert_eq!(set.withheld(), vec![[4; 32], [5; 32], [6; 32]]);
        assert!(set.disclosed(&[1; 32]) && !set.disclosed(&[4; 32]));
        assert!(!set.disclosed(&[9; 32]), "outside the set");
        // The limits: 1 discloses everything, n = 5 withholds every tag here.
        assert!(FinalSet::new(0, entries.clone(), 5, 1)
            .withheld()
            .is_empty());
        assert_eq!(FinalSet::new(0, entries, 5, 5).withheld().len(), 6);
    }
}
