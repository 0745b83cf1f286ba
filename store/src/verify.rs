//! Verification (and tail repair) of the log tree at open.
//!
//! 1. Walk the arrival order `0..claimed_len` (`claimed_len` is the larger of
//!    the length counter and one past the last arrival entry) and check every
//!    position: arrival entry present, record bytes hash to their key, meta
//!    names this position, the author chain is contiguous (seq = previous + 1,
//!    prev = previous hash, chain entry present) and the epoch entry exists.
//!    The first failing position `f` starts the *tail*.
//! 2. The tail is only truncatable if no later position is intact on its own
//!    (arrival entry, record hashing to its key, meta naming the position);
//!    otherwise the damage is in the middle: `Corrupt`.
//! 3. Every other key in the tree must be explained either by a live record
//!    (position `< f`) or by the tail (then it is removed); anything else is
//!    `Corrupt`. Heads must equal the heads recomputed from the live records
//!    unless they point into the tail (then they are rolled back).
//! 4. The repairs are applied as one batch.

use std::collections::{BTreeMap, HashSet};

use sled::{Batch, Tree};

use crate::keys::{self, Meta};
use crate::{record_hash, Hash, StoreError, ZERO_HASH};

pub(crate) struct Verified {
    pub len: u64,
    pub truncated: u64,
    pub heads: BTreeMap<u16, (u64, Hash)>,
}

fn corrupt(msg: impl Into<String>) -> StoreError {
    StoreError::Corrupt(msg.into())
}

fn h(hash: &Hash) -> String {
    hex::encode(hash)
}

struct Checker<'t> {
    tree: &'t Tree,
}

impl Checker<'_> {
    fn arrival(&self, pos: u64) -> Result<Result<Hash, String>, StoreError> {
        Ok(match self.tree.get(keys::arrival(pos))? {
            None => Err("arrival entry missing".into()),
            Some(v) => keys::hash(&v).ok_or_else(|| "arrival entry malformed".to_string()),
        })
    }

    fn meta(&self, hash: &Hash) -> Result<Option<Meta>, StoreError> {
        Ok(self
            .tree
            .get(keys::meta(hash))?
            .and_then(|v| Meta::decode(&v)))
    }

    /// Arrival entry, record bytes and meta agree for `pos`.
    fn intact(&self, pos: u64) -> Result<Result<(Hash, Meta), String>, StoreError> {
        let hash = match self.arrival(pos)? {
            Ok(hash) => hash,
            Err(e) => return Ok(Err(e)),
        };
        match self.tree.get(keys::record(&hash))? {
            None => return Ok(Err("record bytes missing".into())),
            Some(bytes) if record_hash(&bytes) != hash => {
                return Ok(Err("record bytes do not hash to their key".into()))
            }
            Some(_) => {}
        }
        Ok(match self.meta(&hash)? {
            None => Err("record meta missing or malformed".into()),
            Some(m) if m.position != pos => {
                Err(format!("record meta names position {} instead", m.position))
            }
            Some(m) => Ok((hash, m)),
        })
    }

    /// Full check of `pos` against the running heads; updates them on success.
    fn check(
        &self,
        pos: u64,
        counter: u64,
        heads: &mut BTreeMap<u16, (u64, Hash)>,
    ) -> Result<Result<(), (Option<Hash>, String)>, StoreError> {
        let (hash, meta) = match self.intact(pos)? {
            Ok(x) => x,
            Err(e) => {
                let hash = self.arrival(pos)?.ok();
                return Ok(Err((hash, e)));
            }
        };
        let fail = |msg: String| Ok(Err((Some(hash), msg)));
        if pos >= counter {
            return fail(format!("beyond the length counter {counter}"));
        }
        if let Some(a) = meta.author {
            let (head_seq, head_hash) = heads.get(&a.author).copied().unwrap_or((0, ZERO_HASH));
            if a.seq != head_seq.saturating_add(1) {
                return fail(format!(
                    "author {} seq {} does not follow seq {head_seq}",
                    a.author, a.seq
                ));
            }
            if a.prev != head_hash {
                return fail(format!(
                    "author {} seq {}: prev does not match the previous record",
                    a.author, a.seq
                ));
            }
            match self.tree.get(keys::chain(a.author, a.seq))? {
                Some(v) if v.as_ref() == hash.as_slice() => {}
                _ => {
                    return fail(format!(
                        "chain entry for author {} seq {} missing or different",
                        a.author, a.seq
                    ))
                }
            }
        }
        if let Some(e) = meta.epoch {
            match self.tree.get(keys::epoch(e, &hash))? {
                Some(v) if v.is_empty() => {}
                _ => return fail(format!("epoch {e} index entry missing or malformed")),
            }
        }
        if let Some(a) = meta.author {
            heads.insert(a.author, (a.seq, hash));
        }
        Ok(Ok(()))
    }

    /// `hash` is a record at a live position (`< live_len`).
    fn live(&self, hash: &Hash, live_len: u64) -> Result<Option<Meta>, StoreError> {
        let Some(meta) = self.meta(hash)? else {
            return Ok(None);
        };
        if meta.position >= live_len {
            return Ok(None);
        }
        let at = self.tree.get(keys::arrival(meta.position))?;
        Ok(match at {
            Some(v) if v.as_ref() == hash.as_slice() => Some(meta),
            _ => None,
        })
    }
}

struct Tail {
    /// First position of the tail (= live length).
    start: u64,
    /// One past the last claimed position.
    end: u64,
    /// Hashes named by the tail's arrival entries.
    hashes: HashSet<Hash>,
}

impl Tail {
    /// Key material for `hash` may be removed as part of the tail.
    fn owns(&self, c: &Checker<'_>, hash: &Hash) -> Result<bool, StoreError> {
        if self.start >= self.end {
            return Ok(false);
        }
        if self.hashes.contains(hash) {
            return Ok(true);
        }
        Ok(c.meta(hash)?.is_some_and(|m| m.position >= self.start))
    }
}

pub(crate) fn verify_and_repair(tree: &Tree) -> Result<Verified, StoreError> {
    let c = Checker { tree };
    if tree.is_empty() {
        tree.insert(keys::K_FORMAT, keys::FORMAT)?;
        return Ok(Verified {
            len: 0,
            truncated: 0,
            heads: BTreeMap::new(),
        });
    }
    match tree.get(keys::K_FORMAT)? {
        Some(v) if v.as_ref() == keys::FORMAT => {}
        Some(v) => {
            return Err(corrupt(format!(
                "unknown format tag {:?}",
                String::from_utf8_lossy(&v)
            )))
        }
        None => return Err(corrupt("format tag missing")),
    }

    let last_arrival = match tree.scan_prefix([keys::P_ARRIVAL]).next_back() {
        None => None,
        Some(kv) => {
            let (k, _) = kv?;
            let pos = k
                .get(1..)
                .and_then(keys::be_u64)
                .ok_or_else(|| corrupt(format!("malformed arrival key {}", hex::encode(&k))))?;
            Some(pos)
        }
    };
    let counter = match tree.get(keys::K_LEN)? {
        Some(v) => keys::be_u64(&v).ok_or_else(|| corrupt("length counter malformed"))?,
        None if last_arrival.is_some() => return Err(corrupt("length counter missing")),
        None => 0,
    };
    let claimed = match last_arrival {
        Some(p) => counter.max(p.saturating_add(1)),
        None => counter,
    };

    // 1. Walk the arrival order.
    let mut heads = BTreeMap::new();
    let mut failure = None;
    for pos in 0..claimed {
        if let Err((hash, why)) = c.check(pos, counter, &mut heads)? {
            failure = Some((pos, hash, why));
            break;
        }
    }

    // 2. A failure must be followed by nothing intact.
    let mut tail = Tail {
        start: claimed,
        end: claimed,
        hashes: HashSet::new(),
    };
    if let Some((f, hash, why)) = failure {
        let name = match hash {
            Some(hash) => format!("position {f} (record {})", h(&hash)),
            None => format!("position {f}"),
        };
        for pos in f.saturating_add(1)..claimed {
            if c.intact(pos)?.is_ok() {
                return Err(corrupt(format!(
                    "{name}: {why}; later position {pos} is intact, so the damage is not at the tail"
                )));
            }
        }
        tail.start = f;
        for pos in f..claimed {
            if let Ok(hash) = c.arrival(pos)? {
                tail.hashes.insert(hash);
            }
        }
        tracing::warn!("store verification: {name}: {why}; truncating from there");
    }
    let live_len = tail.start;

    // 3. Every key must be explained by a live record or by the tail.
    let mut batch = Batch::default();
    let mut stored_heads: BTreeMap<u16, (u64, Hash)> = BTreeMap::new();
    for kv in tree.iter() {
        let (k, v) = kv?;
        let bad_key = || corrupt(format!("malformed key {}", hex::encode(&k)));
        let Some((&prefix, rest)) = k.split_first() else {
            return Err(bad_key());
        };
        match prefix {
            keys::P_ARRIVAL => {
                let pos = keys::be_u64(rest).ok_or_else(bad_key)?;
                if pos >= live_len {
                    batch.remove(k);
                }
            }
            keys::P_RECORD | keys::P_META => {
                let hash = keys::hash(rest).ok_or_else(bad_key)?;
                if c.live(&hash, live_len)?.is_none() {
                    if tail.owns(&c, &hash)? {
                        batch.remove(k);
                    } else {
                        let what = if prefix == keys::P_RECORD {
                            "record"
                        } else {
                            "meta"
                        };
                        return Err(corrupt(format!(
                            "orphan {what} {} is not in the arrival order",
                            h(&hash)
                        )));
                    }
                }
            }
            keys::P_CHAIN => {
                let author = rest.get(0..2).and_then(keys::be_u16).ok_or_else(bad_key)?;
                let seq = rest.get(2..).and_then(keys::be_u64).ok_or_else(bad_key)?;
                let hash = keys::hash(&v).ok_or_else(|| {
                    corrupt(format!("chain entry author {author} seq {seq} malformed"))
                })?;
                let ok = c
                    .live(&hash, live_len)?
                    .is_some_and(|m| m.author.is_some_and(|a| a.author == author && a.seq == seq));
                if !ok {
                    if tail.owns(&c, &hash)? {
                        batch.remove(k);
                    } else {
                        return Err(corrupt(format!(
                            "chain entry author {author} seq {seq} -> {} disagrees with the records",
                            h(&hash)
                        )));
                    }
                }
            }
            keys::P_EPOCH => {
                let epoch = rest.get(0..8).and_then(keys::be_u64).ok_or_else(bad_key)?;
                let hash = rest.get(8..).and_then(keys::hash).ok_or_else(bad_key)?;
                let ok = v.is_empty()
                    && c.live(&hash, live_len)?
                        .is_some_and(|m| m.epoch == Some(epoch));
                if !ok {
                    if tail.owns(&c, &hash)? {
                        batch.remove(k);
                    } else {
                        return Err(corrupt(format!(
                            "epoch {epoch} entry {} disagrees with the records",
                            h(&hash)
                        )));
                    }
                }
            }
            keys::P_HEAD => {
                let author = keys::be_u16(rest).ok_or_else(bad_key)?;
                let head = keys::decode_head(&v)
                    .ok_or_else(|| corrupt(format!("head of author {author} malformed")))?;
                stored_heads.insert(author, head);
            }
            keys::P_EVIDENCE => {
                let hash = keys::hash(rest).ok_or_else(bad_key)?;
                if record_hash(&v) != hash {
                    return Err(corrupt(format!(
                        "evidence {} does not hash to its key",
                        h(&hash)
                    )));
                }
            }
            keys::P_EVIDENCE_AT => {
                let hash = rest.get(10..).and_then(keys::hash).ok_or_else(bad_key)?;
                if !v.is_empty() || !tree.contains_key(keys::evidence(&hash))? {
                    // An index entry without its evidence (a torn write): drop it.
                    batch.remove(k);
                }
            }
            keys::P_EVIDENCE_USED => {
                keys::be_u16(rest).ok_or_else(bad_key)?;
                keys::decode_used(&v).ok_or_else(|| corrupt("evidence counter malformed"))?;
            }
            _ if k.as_ref() == keys::K_LEN || k.as_ref() == keys::K_FORMAT => {}
            _ => return Err(bad_key()),
        }
    }

    // Heads must match the recomputed ones, or point into the tail.
    let authors: HashSet<u16> = stored_heads.keys().chain(heads.keys()).copied().collect();
    for author in authors {
        let stored = stored_heads.get(&author);
        let computed = heads.get(&author);
        if stored == computed {
            continue;
        }
        let explained = match stored {
            Some((_, hash)) => tail.owns(&c, hash)?,
            None => false,
        };
        if !explained {
            return Err(corrupt(format!(
                "head of author {author} is {} but the records say {}",
                fmt_head(stored),
                fmt_head(computed)
            )));
        }
        match computed {
            Some((seq, hash)) => batch.insert(keys::head(author), keys::encode_head(*seq, hash)),
            None => batch.remove(keys::head(author)),
        }
    }

    let truncated = claimed - live_len;
    if counter != live_len {
        batch.insert(keys::K_LEN, &live_len.to_be_bytes()[..]);
    }
    if truncated > 0 {
        tree.apply_batch(batch)?;
    }
    Ok(Verified {
        len: live_len,
        truncated,
        heads,
    })
}

fn fmt_head(head: Option<&(u64, Hash)>) -> String {
    match head {
        Some((seq, hash)) => format!("seq {seq} {}", h(hash)),
        None => "absent".into(),
    }
}
