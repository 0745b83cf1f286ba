//! Results (DESIGN 4.7): for each of our submissions in the final set, `t` verified shares
//! stripped with its one-time key, combined, and the sum looked up; the count is the tag's
//! number of submissions. Each submission is opened once. A submission whose tag is below the
//! genesis `min_count` gets no shares: its result is withheld, with its count.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;

use crate::crypto::dlog;
use crate::crypto::keyswitch::{self, KeySwitchShare};
use crate::record::{Hash, ShareEntry};
use crate::MemberIndex;

use super::decrypt::{VerifiedShare, VerifiedShares};
use super::values::{FinalSet, Mine};

/// One of our results: client position, sum (`None`: withheld below `min_count`), count.
pub type Opened = (usize, Option<u64>, u32);

#[derive(Default)]
pub struct Results {
    verified: BTreeMap<Hash, BTreeMap<MemberIndex, VerifiedShare>>,
    /// Shares met in the log without a check (replayed after a restart, or accepted while the
    /// epoch could not be judged): verified before they are used.
    unverified: BTreeMap<Hash, BTreeMap<MemberIndex, KeySwitchShare>>,
    opened: BTreeMap<usize, (Option<u64>, u32)>,
    /// Submissions whose shares changed since they were last looked at: only these are
    /// looked at again (the work per share record stays constant).
    dirty: BTreeSet<Hash>,
}

impl Results {
    /// Results read back after a restart.
    pub fn restore(opened: BTreeMap<usize, (Option<u64>, u32)>) -> Results {
        Results {
            opened,
            ..Results::default()
        }
    }

    pub fn opened(&self) -> &BTreeMap<usize, (Option<u64>, u32)> {
        &self.opened
    }

    pub fn add_verified(&mut self, shares: VerifiedShares) {
        for v in shares.into_inner() {
            self.dirty.insert(v.submission());
            if let Some(slot) = self.unverified.get_mut(&v.submission()) {
                slot.remove(&v.author());
            }
            self.verified
                .entry(v.submission())
                .or_default()
                .entry(v.author())
                .or_insert(v);
        }
    }

    /// Shares to verify before use; `wanted` says which submissions may be ours.
    pub fn add_unverified(
        &mut self,
        author: MemberIndex,
        entries: &[ShareEntry],
        wanted: impl Fn(&Hash) -> bool,
    ) {
        for e in entries.iter().filter(|e| wanted(&e.submission)) {
            let known = self
                .verified
                .get(&e.submission)
                .is_some_and(|m| m.contains_key(&author));
            if !known {
                self.dirty.insert(e.submission);
                self.unverified
                    .entry(e.submission)
                    .or_default()
                    .entry(author)
                    .or_insert_with(|| e.share.clone());
            }
        }
    }

    /// Unverified shares that one of our unopened submissions needs to reach `t`.
    pub fn to_verify(
        &self,
        mine: &BTreeMap<Hash, Mine>,
        t: usize,
    ) -> Vec<(Hash, MemberIndex, KeySwitchShare)> {
        let mut out = Vec::new();
        for (hash, m) in self.dirty.iter().filter_map(|h| Some((h, mine.get(h)?))) {
            if self.opened.contains_key(&m.client) {
                continue;
            }
            let have = self.verified.get(hash).map_or(0, BTreeMap::len);
            if have >= t {
                continue;
            }
            if let Some(pending) = self.unverified.get(hash) {
                for (&author, share) in pending.iter().take(t - have) {
                    out.push((*hash, author, share.clone()));
                }
            }
        }
        out
    }

    /// A share that failed its check is dropped (its author is named by the caller).
    pub fn drop_unverified(&mut self, hash: &Hash, author: MemberIndex) {
        if let Some(slot) = self.unverified.get_mut(hash) {
            slot.remove(&author);
        }
    }

    /// Forgets shares of submissions that are not ours, once ours are all known.
    pub fn keep_only(&mut self, mine: &BTreeMap<Hash, Mine>) {
        self.verified.retain(|h, _| mine.contains_key(h));
        self.unverified.retain(|h, _| mine.contains_key(h));
        self.dirty.retain(|h| mine.contains_key(h));
    }

    /// Marks every submission of ours with shares to be looked at again (once our
    /// submissions are all known, after a restart).
    pub fn touch_all(&mut self, mine: &BTreeMap<Hash, Mine>) {
        let touched: Vec<Hash> = mine
            .keys()
            .filter(|h| self.verified.contains_key(*h) || self.unverified.contains_key(*h))
            .copied()
            .collect();
        self.dirty.extend(touched);
    }

    /// Our submissions of the set whose tag is below `min_count` and that have no result yet:
    /// their results are withheld (no member posts shares for them), with their count.
    pub fn withhold(&mut self, set: &FinalSet, mine: &BTreeMap<Hash, Mine>) -> Vec<Opened> {
        let mut out = Vec::new();
        for (hash, m) in mine {
            let Some((_, _, count)) = set.lookup(hash) else {
                continue;
            };
            if count < set.min_count && !self.opened.contains_key(&m.client) {
                self.opened.insert(m.client, (None, count));
                out.push((m.client, None, count));
            }
        }
        out
    }

    /// Opens every submission of ours that has `t` verified shares and no result yet.
    pub fn open(
        &mut self,
        set: &FinalSet,
        mine: &BTreeMap<Hash, Mine>,
        t: usize,
    ) -> (Vec<Opened>, Vec<String>) {
        let mut opened = Vec::new();
        let mut errors = Vec::new();
        let mut looked = Vec::new();
        for (hash, m) in self.dirty.iter().filter_map(|h| Some((h, mine.get(h)?))) {
            looked.push(*hash);
            if self.opened.contains_key(&m.client) {
                continue;
            }
            let Some(shares) = self.verified.get(hash) else {
                continue;
            };
            if shares.len() < t {
                continue;
            }
            let Some((_, aggregate, count)) = set.lookup(hash) else {
                continue;
            };
            let parts: Vec<(u16, RistrettoPoint)> = shares
                .values()
                .take(t)
                .map(|v| (v.author(), keyswitch::strip(v.share(), &m.one_time)))
                .collect();
            match keyswitch::combine(aggregate, &parts, t).and_then(|p| dlog::small_dlog(&p)) {
                Ok(sum) => opened.push((m.client, Some(u64::from(sum)), count)),
                Err(e) => errors.push(format!("decrypting a result: {e}")),
            }
        }
        for &(client, sum, count) in &opened {
            self.opened.insert(client, (sum, count));
        }
        for h in looked {
            if mine
                .get(&h)
                .is_some_and(|m| self.opened.contains_key(&m.client))
            {
                self.dirty.remove(&h);
                self.verified.remove(&h);
                self.unverified.remove(&h);
            } else if self.unverified.get(&h).is_none_or(BTreeMap::is_empty) {
                // Nothing left to verify: looked at again when a share comes.
                self.dirty.remove(&h);
            }
        }
        (opened, errors)
    }
}
