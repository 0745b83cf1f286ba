//! bankmesh store: a sled-backed, append-only replica of the consortium log.
//!
//! Records are opaque canonical bytes identified by `SHA-256(bytes)` (computed
//! here, never taken from the caller). The caller, which has already verified
//! signatures and proofs, passes per-record metadata: an optional author chain
//! position ([`AuthorPos`]) and an optional epoch.
//!
//! Durability and atomicity: every log keyspace lives in one sled tree (see
//! the `keys` module for the layout), each [`Store::append_batch`] call is
//! applied as one sled `Batch` (atomic, also across crashes) and the database
//! is flushed before the call returns. [`Store::open`] verifies the whole store
//! and truncates an inconsistent tail (see [`OpenReport`]).
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod audit;
mod keys;
pub use keys::check_entry;
pub mod replica;
mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use keys::Meta;

/// A record id: SHA-256 of its canonical bytes.
pub type Hash = [u8; 32];

/// The all-zero hash, used as `prev` of an author's first record.
pub const ZERO_HASH: Hash = [0u8; 32];

/// Largest accepted record, in bytes (4 MiB).
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// Conflicting records kept as evidence per author and sequence number.
pub const EVIDENCE_PER_POSITION: usize = 4;
/// Most evidence kept per author, in records and in bytes: a faulty member's forks, however
/// long, cannot fill the disk (what is past the bound still counts until a restart).
pub const EVIDENCE_RECORDS_PER_AUTHOR: u64 = 4096;
pub const EVIDENCE_BYTES_PER_AUTHOR: u64 = 16 * 1024 * 1024;

/// Keeps `bytes` as evidence at `author`'s position `seq`, with its index entry and the
/// author's counters after it (`used`).
fn evidence_writes(
    batch: &mut sled::Batch,
    bytes: &[u8],
    author: u16,
    seq: u64,
    hash: &Hash,
    used: (u64, u64),
) {
    batch.insert(keys::evidence(hash), bytes);
    batch.insert(keys::evidence_at(author, seq, hash), &[][..]);
    batch.insert(
        keys::evidence_used(author),
        keys::encode_used(used.0, used.1),
    );
}

/// Largest `limit` honoured by the range readers; larger values are clamped.
pub const MAX_LIMIT: usize = 10_000;

/// Most records accepted in one [`Store::append_batch`] call.
pub const MAX_BATCH_RECORDS: usize = 10_000;

/// Most record bytes (summed) accepted in one [`Store::append_batch`] call.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// Longest key of the node-local area, in bytes.
pub const MAX_LOCAL_KEY: usize = 1024;

/// Largest value of the node-local area, in bytes.
pub const MAX_LOCAL_VALUE: usize = 4 * 1024 * 1024;

/// How long and how often [`Store::open`] retries sled's file lock (about 5 s in all).
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(10);
const LOCK_ATTEMPTS: u32 = 500;

const LOG_TREE: &str = "log";
const LOCAL_TREE: &str = "local";

/// SHA-256 of a record's canonical bytes.
pub fn record_hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Position of a record in its author's chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthorPos {
    pub author: u16,
    /// Starts at 1.
    pub seq: u64,
    /// Hash of the author's record `seq - 1`; [`ZERO_HASH`] for `seq == 1`.
    pub prev: Hash,
}

/// A record to append, with the metadata the caller extracted and verified.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    pub bytes: &'a [u8],
    pub author: Option<AuthorPos>,
    pub epoch: Option<u64>,
}

/// Outcome of an accepted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Newly added at arrival `position`.
    Stored { hash: Hash, position: u64 },
    /// The same bytes are already in the log (nothing was changed).
    AlreadyPresent { hash: Hash },
}

impl Appended {
    pub fn hash(&self) -> Hash {
        match *self {
            Appended::Stored { hash, .. } | Appended::AlreadyPresent { hash } => hash,
        }
    }
}

/// Per-record refusal (the batch goes on without it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `seq > head + 1`: the caller must fetch the missing records first.
    #[error("author {author}: gap, head is at seq {head_seq}, record has seq {seq}")]
    Gap {
        author: u16,
        head_seq: u64,
        seq: u64,
    },
    /// `seq == head + 1` but `prev` is not the head's hash.
    #[error("author {author}: seq {seq} does not chain on the current head")]
    PrevMismatch { author: u16, seq: u64 },
    /// `seq <= head` with different bytes: kept as evidence, not logged.
    #[error("author {author}: equivocation at seq {seq}")]
    Equivocation {
        author: u16,
        seq: u64,
        existing: Hash,
        conflicting: Hash,
    },
    /// `seq == 0` (sequences start at 1).
    #[error("author {author}: seq 0 is invalid (sequences start at 1)")]
    ZeroSeq { author: u16 },
    #[error("empty record")]
    Empty,
    #[error("record larger than {MAX_RECORD_BYTES} bytes")]
    TooLarge,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// The store is inconsistent somewhere other than its tail.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    /// The batch exceeds [`MAX_BATCH_RECORDS`] or [`MAX_BATCH_BYTES`]; nothing was written.
    #[error("batch too large: {records} records, {bytes} bytes")]
    BatchTooLarge { records: usize, bytes: usize },
    /// A node-local key or value exceeds [`MAX_LOCAL_KEY`] / [`MAX_LOCAL_VALUE`].
    #[error("local entry too large: key {key} bytes, value {value} bytes")]
    LocalTooLarge { key: usize, value: usize },
}

/// What [`Store::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Records in the log after verification.
    pub records: u64,
    /// Records removed from the end of the arrival order because they failed
    /// verification; they must be fetched again from peers.
    pub truncated: u64,
}

/// In-memory cache of the writer state, rebuilt at open.
#[derive(Debug, Default)]
struct State {
    len: u64,
    heads: BTreeMap<u16, (u64, Hash)>,
}

/// The replicated log of one node.
pub struct Store {
    db: sled::Db,
    log: sled::Tree,
    local: sled::Tree,
    state: Mutex<State>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("len", &self.len()).finish()
    }
}

fn clamp(limit: usize) -> usize {
    limit.min(MAX_LIMIT)
}

impl Store {
    /// Opens (creating if absent) and verifies the store.
    ///
    /// Checks that every stored record's bytes hash to its key, that the
    /// arrival order is contiguous `0..len`, and that every index entry
    /// (author chains, heads, epoch index, length counter) agrees with the
    /// records. An inconsistent tail of the arrival order is truncated and
    /// counted in [`OpenReport::truncated`]; any other inconsistency is
    /// `Err(StoreError::Corrupt)` naming what failed.
    pub fn open(path: &Path) -> Result<(Store, OpenReport), StoreError> {
        let config = sled::Config::new().path(path);
        // sled 0.34 releases its file lock only when its last background
        // thread lets go of the database, which can be shortly after the
        // previous `Store` (same process) was dropped. Retry the lock for a
        // bounded time; a lock held by another process still fails.
        let mut attempts = 0;
        let db = loop {
            attempts += 1;
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && attempts < LOCK_ATTEMPTS =>
                {
                    std::thread::sleep(LOCK_RETRY);
                }
                other => break other?,
            }
        };
        Self::from_db(db)
    }

    /// A store in a sled temporary database (deleted on drop).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(Self::from_db(db)?.0)
    }

    fn from_db(db: sled::Db) -> Result<(Store, OpenReport), StoreError> {
        let log = db.open_tree(LOG_TREE)?;
        let local = db.open_tree(LOCAL_TREE)?;
        let verified = verify::verify_and_repair(&log)?;
        db.flush()?;
        let report = OpenReport {
            records: verified.len,
            truncated: verified.truncated,
        };
        if report.truncated > 0 {
            tracing::warn!(
                truncated = report.truncated,
                records = report.records,
                "store: truncated inconsistent tail; those records must be refetched"
            );
        }
        let store = Store {
            db,
            log,
            local,
            state: Mutex::new(State {
                len: verified.len,
                heads: verified.heads,
            }),
        };
        Ok((store, report))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is only assigned after a successful write, so it is
        // consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one record; see [`Store::append_batch`].
    pub fn append(&self, record: NewRecord<'_>) -> Result<Result<Appended, Refused>, StoreError> {
        let mut out = self.append_batch(std::slice::from_ref(&record))?;
        out.pop()
            .ok_or_else(|| StoreError::Corrupt("append_batch returned no outcome".into()))
    }

    /// Appends records in order (later ones may chain on earlier ones in the
    /// same batch) as one atomic write, and returns once it is flushed to
    /// disk. Each record gets its own outcome; refused records are skipped.
    ///
    /// On `Err` from the flush the batch has been applied in memory but may
    /// not be durable; retrying is safe (records then report
    /// `AlreadyPresent`).
    pub fn append_batch(
        &self,
        records: &[NewRecord<'_>],
    ) -> Result<Vec<Result<Appended, Refused>>, StoreError> {
        let total: usize = records.iter().map(|r| r.bytes.len()).sum();
        if records.len() > MAX_BATCH_RECORDS || total > MAX_BATCH_BYTES {
            return Err(StoreError::BatchTooLarge {
                records: records.len(),
                bytes: total,
            });
        }
        let mut state = self.state();
        let mut len = state.len;
        // Overlays for records earlier in this batch.
        let mut heads: HashMap<u16, (u64, Hash)> = HashMap::new();
        let mut pending_chain: HashMap<(u16, u64), Hash> = HashMap::new();
        let mut evidence_pending: HashMap<u16, (u64, u64)> = HashMap::new();
        let mut pending: HashSet<Hash> = HashSet::new();
        let mut batch = sled::Batch::default();
        let mut outcomes = Vec::with_capacity(records.len());
        let mut changed = false;

        for rec in records {
            if rec.bytes.is_empty() {
                outcomes.push(Err(Refused::Empty));
                continue;
            }
            if rec.bytes.len() > MAX_RECORD_BYTES {
                outcomes.push(Err(Refused::TooLarge));
                continue;
            }
            let hash = record_hash(rec.bytes);
            if pending.contains(&hash) || self.log.contains_key(keys::record(&hash))? {
                outcomes.push(Ok(Appended::AlreadyPresent { hash }));
                continue;
            }
            if let Some(pos) = rec.author {
                let (head_seq, head_hash) = heads
                    .get(&pos.author)
                    .or_else(|| state.heads.get(&pos.author))
                    .copied()
                    .unwrap_or((0, ZERO_HASH));
                let refusal = if pos.seq == 0 {
                    Some(Refused::ZeroSeq { author: pos.author })
                } else if pos.seq <= head_seq {
                    let existing = match pending_chain.get(&(pos.author, pos.seq)) {
                        Some(h) => *h,
                        None => self.chain_hash(pos.author, pos.seq)?,
                    };
                    // Kept, indexed and counted like any evidence, within the author's bound.
                    let before = evidence_pending.get(&pos.author).copied().unwrap_or((0, 0));
                    let room = if self.log.contains_key(keys::evidence(&hash))? {
                        None
                    } else {
                        self.evidence_room(pos.author, rec.bytes.len(), before)?
                    };
                    if let Some(used) = room {
                        evidence_writes(&mut batch, rec.bytes, pos.author, pos.seq, &hash, used);
                        evidence_pending.insert(
                            pos.author,
                            (before.0 + 1, before.1 + rec.bytes.len() as u64),
                        );
                        changed = true;
                    }
                    Some(Refused::Equivocation {
                        author: pos.author,
                        seq: pos.seq,
                        existing,
                        conflicting: hash,
                    })
                } else if pos.seq > head_seq.saturating_add(1) {
                    Some(Refused::Gap {
                        author: pos.author,
                        head_seq,
                        seq: pos.seq,
                    })
                } else if pos.prev != head_hash {
                    Some(Refused::PrevMismatch {
                        author: pos.author,
                        seq: pos.seq,
                    })
                } else {
                    None
                };
                if let Some(r) = refusal {
                    outcomes.push(Err(r));
                    continue;
                }
                heads.insert(pos.author, (pos.seq, hash));
                pending_chain.insert((pos.author, pos.seq), hash);
                batch.insert(keys::chain(pos.author, pos.seq), &hash[..]);
                batch.insert(keys::head(pos.author), keys::encode_head(pos.seq, &hash));
            }
            let position = len;
            let meta = Meta {
                position,
                author: rec.author,
                epoch: rec.epoch,
            };
            batch.insert(keys::record(&hash), rec.bytes);
            batch.insert(keys::arrival(position), &hash[..]);
            batch.insert(keys::meta(&hash), &meta.encode()[..]);
            if let Some(e) = rec.epoch {
                batch.insert(keys::epoch(e, &hash), &[][..]);
            }
            pending.insert(hash);
            len += 1;
            changed = true;
            outcomes.push(Ok(Appended::Stored { hash, position }));
        }

        if !changed {
            return Ok(outcomes);
        }
        if len != state.len {
            batch.insert(keys::K_LEN, &len.to_be_bytes()[..]);
        }
        self.log.apply_batch(batch)?;
        // The batch is in the tree: the cache must follow it even if the
        // flush below fails.
        state.len = len;
        state.heads.extend(heads);
        drop(state);
        self.db.flush()?;
        Ok(outcomes)
    }

    /// Hash stored at `author`/`seq` of a chain known to reach `seq`.
    fn chain_hash(&self, author: u16, seq: u64) -> Result<Hash, StoreError> {
        let v = self.log.get(keys::chain(author, seq))?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "author {author}: chain entry for seq {seq} missing"
            ))
        })?;
        keys::hash(&v).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "author {author}: chain entry for seq {seq} malformed"
            ))
        })
    }

    pub fn contains(&self, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self.log.contains_key(keys::record(hash))?)
    }

    pub fn get(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.log.get(keys::record(hash))?.map(|v| v.to_vec()))
    }

    /// Bytes the store takes on disk (for metrics).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Number of records in the log.
    pub fn len(&self) -> u64 {
        self.state().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(seq, hash)` of the author's latest record.
    pub fn head(&self, author: u16) -> Result<Option<(u64, Hash)>, StoreError> {
        Ok(self.state().heads.get(&author).copied())
    }

    /// `(author, seq, hash)` of every author's latest record, by author.
    pub fn heads(&self) -> Result<Vec<(u16, u64, Hash)>, StoreError> {
        Ok(self
            .state()
            .heads
            .iter()
            .map(|(a, (s, h))| (*a, *s, *h))
            .collect())
    }

    /// Records of one author with `seq >= from_seq`, in seq order, at most
    /// `limit` (clamped to [`MAX_LIMIT`]).
    pub fn author_range(
        &self,
        author: u16,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let limit = clamp(limit);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let prefix = keys::chain_prefix(author);
        let iter = self
            .log
            .range(keys::chain(author, from_seq)..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)));
        for kv in iter.take(limit) {
            let (k, v) = kv?;
            let hash = keys::hash(&v).ok_or_else(|| {
                StoreError::Corrupt(format!("malformed chain entry {}", hex::encode(&k)))
            })?;
            let bytes = self.get(&hash)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "author {author}: chain entry points to missing record {}",
                    hex::encode(hash)
                ))
            })?;
            out.push(bytes);
        }
        Ok(out)
    }

    /// Hashes of the records of one epoch, sorted.
    pub fn epoch_hashes(&self, epoch: u64) -> Result<Vec<Hash>, StoreError> {
        let mut out = Vec::new();
        for kv in self.log.scan_prefix(keys::epoch_prefix(epoch)) {
            let (k, _) = kv?;
            let hash = k.get(9..).and_then(keys::hash).ok_or_else(|| {
                StoreError::Corrupt(format!("malformed epoch entry {}", hex::encode(&k)))
            })?;
            out.push(hash);
        }
        Ok(out)
    }

    /// Records in arrival order from `position`, at most `limit` (clamped to
    /// [`MAX_LIMIT`]): `(position, hash, bytes)`.
    pub fn read_from(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Hash, Vec<u8>)>, StoreError> {
        let len = self.len();
        let limit = clamp(limit) as u64;
        let end = len.min(position.saturating_add(limit));
        let mut out = Vec::new();
        for pos in position..end {
            let v = self
                .log
                .get(keys::arrival(pos))?
                .ok_or_else(|| StoreError::Corrupt(format!("arrival position {pos} missing")))?;
            let hash = keys::hash(&v)
                .ok_or_else(|| StoreError::Corrupt(format!("arrival position {pos} malformed")))?;
            let bytes = self.get(&hash)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "arrival position {pos} points to missing record {}",
                    hex::encode(hash)
                ))
            })?;
            out.push((pos, hash, bytes));
        }
        Ok(out)
    }

    /// Conflicting records kept as equivocation evidence, by hash.
    pub fn evidence(&self) -> Result<Vec<(Hash, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.log.scan_prefix([keys::P_EVIDENCE]) {
            let (k, v) = kv?;
            let hash = k.get(1..).and_then(keys::hash).ok_or_else(|| {
                StoreError::Corrupt(format!("malformed evidence key {}", hex::encode(&k)))
            })?;
            out.push((hash, v.to_vec()));
        }
        Ok(out)
    }

    /// Stores a node-local value (not part of the replicated log); durable on
    /// return.
    pub fn local_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        if key.len() > MAX_LOCAL_KEY || value.len() > MAX_LOCAL_VALUE {
            return Err(StoreError::LocalTooLarge {
                key: key.len(),
                value: value.len(),
            });
        }
        self.local.insert(key.as_bytes(), value)?;
        self.db.flush()?;
        Ok(())
    }

    pub fn local_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.local.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Stores several node-local values in one atomic, durable write.
    pub fn local_put_batch(&self, entries: &[(&str, &[u8])]) -> Result<(), StoreError> {
        self.local_apply(entries, &[])
    }

    /// Writes `entries`, then erases every key under the prefixes `erase` (written just now
    /// or before), in one durable batch: a write that replaces what is erased lands with the
    /// erasure, or neither does. Erased values are unreachable at once; sled reclaims their
    /// bytes as it rewrites its segments.
    pub fn local_apply(
        &self,
        entries: &[(&str, &[u8])],
        erase: &[String],
    ) -> Result<(), StoreError> {
        if entries.is_empty() && erase.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for prefix in erase {
            for kv in self.local.scan_prefix(prefix.as_bytes()) {
                let (k, _) = kv?;
                batch.remove(k);
            }
        }
        for (key, value) in entries {
            if key.len() > MAX_LOCAL_KEY || value.len() > MAX_LOCAL_VALUE {
                return Err(StoreError::LocalTooLarge {
                    key: key.len(),
                    value: value.len(),
                });
            }
            if !erase.iter().any(|p| key.starts_with(p.as_str())) {
                batch.insert(key.as_bytes(), *value);
            }
        }
        self.local.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Every node-local entry, by key. Values may be secret: they come zeroizing.
    pub fn local_scan(&self) -> Result<Vec<bankmesh_protocol::local::LocalEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.local.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8(k.to_vec())
                .map_err(|_| StoreError::Corrupt("a local key is not UTF-8".into()))?;
            out.push((key, zeroize::Zeroizing::new(v.to_vec())));
        }
        Ok(out)
    }

    /// Keeps a signed record that conflicts with `author`'s chain at `seq` (a second record at
    /// that position, or one continuing another fork) as evidence, at most
    /// [`EVIDENCE_PER_POSITION`] per position so that an equivocator cannot fill the disk.
    /// Returns whether it was kept now (false if already kept or past the bound).
    ///
    /// `wanted`: a fork record already here names it as its `prev`, so it is kept even past
    /// the per-position bound (an equivocator cannot hide the side others follow behind junk
    /// variants); the per-author bound holds always.
    pub fn keep_evidence(
        &self,
        bytes: &[u8],
        author: u16,
        seq: u64,
        wanted: bool,
    ) -> Result<bool, StoreError> {
        let hash = record_hash(bytes);
        if self.log.contains_key(keys::evidence(&hash))? {
            return Ok(false);
        }
        let kept = self
            .log
            .scan_prefix(keys::evidence_at_prefix(author, seq))
            .take(EVIDENCE_PER_POSITION)
            .count();
        if kept >= EVIDENCE_PER_POSITION && !wanted {
            return Ok(false);
        }
        let Some(used) = self.evidence_room(author, bytes.len(), (0, 0))? else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        evidence_writes(&mut batch, bytes, author, seq, &hash, used);
        self.log.apply_batch(batch)?;
        self.db.flush()?;
        Ok(true)
    }

    /// The hash of `author`'s record at `seq` in the chain, if the chain reaches it.
    pub fn chain_at(&self, author: u16, seq: u64) -> Result<Option<Hash>, StoreError> {
        let head = self.state().heads.get(&author).map_or(0, |(s, _)| *s);
        if seq == 0 || seq > head {
            return Ok(None);
        }
        self.chain_hash(author, seq).map(Some)
    }

    /// The evidence counters of `author` after adding `len` bytes (with `pending` not yet
    /// written), or `None` past the per-author bound.
    fn evidence_room(
        &self,
        author: u16,
        len: usize,
        pending: (u64, u64),
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let (records, bytes) = match self.log.get(keys::evidence_used(author))? {
            Some(v) => keys::decode_used(&v)
                .ok_or_else(|| StoreError::Corrupt("evidence counter malformed".into()))?,
            None => (0, 0),
        };
        let records = records + pending.0 + 1;
        let bytes = bytes + pending.1 + len as u64;
        Ok(
            (records <= EVIDENCE_RECORDS_PER_AUTHOR && bytes <= EVIDENCE_BYTES_PER_AUTHOR)
                .then_some((records, bytes)),
        )
    }

    /// Whether `hash` is kept as evidence at `author`'s position `seq`: a record that names it
    /// as `prev` continues that fork of the chain.
    pub fn evidence_is_at(&self, author: u16, seq: u64, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self
            .log
            .contains_key(keys::evidence_at(author, seq, hash))?)
    }

    /// The authors of whom evidence is kept.
    pub fn evidence_authors(&self) -> Result<std::collections::BTreeSet<u16>, StoreError> {
        let mut out = std::collections::BTreeSet::new();
        for kv in self.log.scan_prefix([keys::P_EVIDENCE_USED]) {
            let (k, _) = kv?;
            let author = k
                .get(1..)
                .and_then(keys::be_u16)
                .ok_or_else(|| StoreError::Corrupt("malformed evidence counter key".into()))?;
            out.insert(author);
        }
        Ok(out)
    }

    /// The highest position of `author` at which evidence is kept, if any.
    pub fn evidence_tip(&self, author: u16) -> Result<Option<u64>, StoreError> {
        let Some(kv) = self
            .log
            .scan_prefix(keys::evidence_author_prefix(author))
            .next_back()
        else {
            return Ok(None);
        };
        let (k, _) = kv?;
        let seq = k.get(3..11).and_then(keys::be_u64).ok_or_else(|| {
            StoreError::Corrupt(format!("malformed evidence key {}", hex::encode(&k)))
        })?;
        Ok(Some(seq))
    }

    /// Whether `hash` is kept as equivocation evidence.
    pub fn contains_evidence(&self, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self.log.contains_key(keys::evidence(hash))?)
    }

    /// A record of the log, or else a record kept as evidence, by hash (sync serves both, so
    /// that every member can see what an equivocator showed others).
    pub fn get_any(&self, hash: &Hash) -> Result<Option<Vec<u8>>, StoreError> {
        match self.get(hash)? {
            Some(bytes) => Ok(Some(bytes)),
            None => Ok(self.log.get(keys::evidence(hash))?.map(|v| v.to_vec())),
        }
    }

    /// The raw log tree, for corruption tests only.
    #[doc(hidden)]
    pub fn raw_tree_for_tests(&self) -> sled::Tree {
        self.log.clone()
    }

    /// The raw key under which a record's bytes are stored, for corruption
    /// tests only.
    #[doc(hidden)]
    pub fn raw_record_key_for_tests(hash: &Hash) -> Vec<u8> {
        keys::record(hash)
    }
}
