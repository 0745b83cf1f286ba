//! A member's replica: its bank state machine over its durable log (DESIGN 5, 8).
//!
//! This is the one place that sequences check, persist and apply, and answers sync requests
//! from the store, so that the libp2p node and the simulator drive the protocol identically.

use std::collections::{BTreeMap, VecDeque};

use bankmesh_protocol::bank::{Culprit, FaultKind};
use bankmesh_protocol::local;
use bankmesh_protocol::messages::{Request, Response, SYNC_BATCH_MAX};
use bankmesh_protocol::record::{DecodeError, Record, UncheckedRecord};
use bankmesh_protocol::{Bank, Fault, MemberIndex, Origin, Step, Time, Verdict};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::{AuthorPos, NewRecord, Refused, Store, StoreError};

/// Records held back because their prerequisites are missing (bounded; the oldest go first).
const PENDING_MAX: usize = 8_192;
/// Most bytes held back.
const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most records returned for one author-range request.
const AUTHOR_RANGE_MAX: usize = 256;
/// Most bytes in one sync reply.
/// (Sync replies travel CBOR-encoded, which can double byte strings; the codec allows 10 MiB.)
const REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What the driver tells gossip about a received message (DESIGN 8: validate before relaying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acceptance {
    Accept,
    Reject,
    Ignore,
}

/// Counters for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    pub accepted: u64,
    pub rejected: u64,
    pub ignored: u64,
    pub deferred: u64,
    pub pending_dropped: u64,
}

pub struct Replica {
    bank: Bank,
    store: Store,
    pending: Pending,
    stats: ReplicaStats,
    sync_turn: usize,
    /// Per author, the head at which we last asked a peer to fill a gap.
    gap_requested: BTreeMap<MemberIndex, u64>,
}

fn new_record(record: &Record) -> NewRecord<'_> {
    NewRecord {
        bytes: record.bytes(),
        author: record
            .chain_position()
            .map(|(author, seq, prev)| AuthorPos { author, seq, prev }),
        epoch: record.epoch(),
    }
}

impl Replica {
    /// Opens a replica over `store`, replaying every stored record into `bank` (state only: no
    /// record is re-published and no request re-sent).
    pub fn open(mut bank: Bank, store: Store) -> Result<Replica, StoreError> {
        let mut position = 0;
        loop {
            let batch = store.read_from(position, 1024)?;
            let Some(last) = batch.last().map(|(p, _, _)| *p) else {
                break;
            };
            for (_, _, bytes) in &batch {
                let record = Record::from_trusted_bytes(bytes).map_err(|e: DecodeError| {
                    StoreError::Corrupt(format!("stored record does not decode: {e}"))
                })?;
                bank.replay(&record);
            }
            position = last + 1;
        }
        Ok(Replica {
            bank,
            store,
            pending: Pending::default(),
            stats: ReplicaStats::default(),
            sync_turn: 0,
            gap_requested: BTreeMap::new(),
        })
    }

    pub fn bank(&self) -> &Bank {
        &self.bank
    }
    pub fn bank_mut(&mut self) -> &mut Bank {
        &mut self.bank
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn stats(&self) -> ReplicaStats {
        self.stats
    }

    /// Persists the records the bank made; returns the step for the driver to send.
    pub fn persist(&mut self, mut step: Step) -> Result<Step, StoreError> {
        // Local state first: nothing that depends on it may leave before it is durable.
        for write in std::mem::take(&mut step.local) {
            self.store.local_put(&write.key, &write.value)?;
        }
        if step.publish.is_empty() {
            return Ok(step);
        }
        let news: Vec<NewRecord<'_>> = step.publish.iter().map(new_record).collect();
        for (outcome, record) in self
            .store
            .append_batch(&news)?
            .into_iter()
            .zip(&step.publish)
        {
            if let Err(refused) = outcome {
                return Err(StoreError::Corrupt(format!(
                    "own {} record refused by the log: {refused}",
                    record.kind()
                )));
            }
        }
        Ok(step)
    }

    /// Receives records from `origin`: check, persist all accepted in one durable batch, apply.
    /// Returns one acceptance per input, in order, and the step to execute.
    pub fn ingest(
        &mut self,
        now: Time,
        items: Vec<(Origin, Vec<u8>)>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Vec<Acceptance>, Step), StoreError> {
        let mut step = Step::default();
        let mut verdicts = Vec::with_capacity(items.len());
        let mut accepted = Vec::new();
        for (origin, bytes) in items {
            let verdict = self.check_bytes(now, origin, &bytes, &mut step)?;
            verdicts.push(verdict.0);
            if let Some(record) = verdict.1 {
                accepted.push((origin, record));
            }
        }
        let refused = self.commit(now, accepted, rng, &mut step)?;
        for (idx, acceptance) in refused {
            if let Some(v) = verdicts.get_mut(idx) {
                *v = acceptance;
            }
        }
        self.retry_pending(now, rng, &mut step)?;
        let step = self.persist(step)?;
        Ok((verdicts, step))
    }

    fn check_bytes(
        &mut self,
        now: Time,
        origin: Origin,
        bytes: &[u8],
        step: &mut Step,
    ) -> Result<(Acceptance, Option<Record>), StoreError> {
        // Cheap checks first: a duplicate costs one hash, not a decode and a verification.
        if self.store.contains(&crate::record_hash(bytes))? {
            self.stats.ignored += 1;
            return Ok((Acceptance::Ignore, None));
        }
        let unchecked = match UncheckedRecord::decode(bytes) {
            Ok(u) => u,
            Err(e) => {
                self.stats.rejected += 1;
                step.faults.push(Fault {
                    culprit: Culprit::Member(origin.peer()),
                    kind: FaultKind::Malformed,
                    record: None,
                    detail: e.to_string(),
                });
                return Ok((Acceptance::Reject, None));
            }
        };
        if self.gap(&unchecked)? {
            self.request_gap(origin, &unchecked, step)?;
            self.defer(origin, unchecked);
            return Ok((Acceptance::Ignore, None));
        }
        Ok(self.judge(now, origin, unchecked, step))
    }

    /// Whether an identified record is ahead of its author's chain here (its predecessors
    /// are missing), so checking it now would be wasted work.
    fn gap(&self, unchecked: &UncheckedRecord) -> Result<bool, StoreError> {
        let Some((author, seq)) = unchecked.claimed_position() else {
            return Ok(false);
        };
        let head = self.store.head(author)?.map_or(0, |(s, _)| s);
        Ok(seq > head + 1)
    }

    /// Asks `origin` for the records between our head and a gapped record, once per head.
    fn request_gap(
        &mut self,
        origin: Origin,
        unchecked: &UncheckedRecord,
        step: &mut Step,
    ) -> Result<(), StoreError> {
        let Some((author, _)) = unchecked.claimed_position() else {
            return Ok(());
        };
        let head = self.store.head(author)?.map_or(0, |(s, _)| s);
        if self.gap_requested.get(&author) != Some(&head) {
            self.gap_requested.insert(author, head);
            step.requests.push((
                origin.peer(),
                Request::AuthorRange {
                    author,
                    from_seq: head + 1,
                },
            ));
        }
        Ok(())
    }

    fn judge(
        &mut self,
        now: Time,
        origin: Origin,
        unchecked: UncheckedRecord,
        step: &mut Step,
    ) -> (Acceptance, Option<Record>) {
        match self.bank.check(now, origin, unchecked) {
            Verdict::Accept(record) => (Acceptance::Accept, Some(record)),
            Verdict::Reject(fault) => {
                self.stats.rejected += 1;
                step.faults.push(fault);
                (Acceptance::Reject, None)
            }
            Verdict::Ignore(_) => {
                self.stats.ignored += 1;
                (Acceptance::Ignore, None)
            }
            Verdict::Defer(unchecked) => {
                self.defer(origin, unchecked);
                (Acceptance::Ignore, None)
            }
        }
    }

    fn defer(&mut self, origin: Origin, unchecked: UncheckedRecord) {
        self.stats.deferred += 1;
        self.stats.pending_dropped += self.pending.push(origin, unchecked);
    }

    /// Persists accepted records in one durable batch, then applies them in order. Returns
    /// the inputs the log refused, with what gossip should be told about them.
    fn commit(
        &mut self,
        now: Time,
        accepted: Vec<(Origin, Record)>,
        rng: &mut (impl RngCore + CryptoRng),
        step: &mut Step,
    ) -> Result<Vec<(usize, Acceptance)>, StoreError> {
        if accepted.is_empty() {
            return Ok(Vec::new());
        }
        let news: Vec<NewRecord<'_>> = accepted.iter().map(|(_, r)| new_record(r)).collect();
        let outcomes = self.store.append_batch(&news)?;
        let mut refused = Vec::new();
        for (idx, ((origin, record), outcome)) in accepted.into_iter().zip(outcomes).enumerate() {
            match outcome {
                Ok(_) => {
                    self.stats.accepted += 1;
                    step.extend(self.bank.apply(now, &record, rng));
                }
                Err(Refused::Gap {
                    author, head_seq, ..
                }) => {
                    // Fetch what we miss from the peer that has it, then try again.
                    step.requests.push((
                        origin.peer(),
                        Request::AuthorRange {
                            author,
                            from_seq: head_seq + 1,
                        },
                    ));
                    if let Ok(u) = UncheckedRecord::decode(record.bytes()) {
                        self.defer(origin, u);
                    }
                    refused.push((idx, Acceptance::Ignore));
                }
                Err(Refused::Equivocation { author, seq, .. }) => {
                    self.stats.rejected += 1;
                    step.faults.push(Fault {
                        culprit: Culprit::Member(author),
                        kind: FaultKind::Duplicate,
                        record: Some(record.hash()),
                        detail: format!("two different records with sequence number {seq} (equivocation; kept as evidence)"),
                    });
                    refused.push((idx, Acceptance::Reject));
                }
                Err(other) => {
                    self.stats.rejected += 1;
                    let culprit = record.author().unwrap_or(origin.peer());
                    step.faults.push(Fault {
                        culprit: Culprit::Member(culprit),
                        kind: FaultKind::Malformed,
                        record: Some(record.hash()),
                        detail: other.to_string(),
                    });
                    refused.push((idx, Acceptance::Reject));
                }
            }
        }
        Ok(refused)
    }

    /// Checks held-back records again while that makes progress (bounded).
    fn retry_pending(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
        step: &mut Step,
    ) -> Result<(), StoreError> {
        for _ in 0..16 {
            if self.pending.is_empty() {
                return Ok(());
            }
            let held = self.pending.take();
            let before = held.len();
            let mut accepted = Vec::new();
            for (origin, unchecked) in held {
                if self.store.contains(&unchecked.hash())? {
                    continue;
                }
                if self.gap(&unchecked)? || self.bank.must_wait(&unchecked) {
                    self.pending.push(origin, unchecked);
                    continue;
                }
                if let (_, Some(record)) = self.judge(now, origin, unchecked, step) {
                    accepted.push((origin, record));
                }
            }
            let progressed = !accepted.is_empty();
            self.commit(now, accepted, rng, step)?;
            if !progressed || self.pending.len() >= before {
                return Ok(());
            }
        }
        Ok(())
    }

    /// After a restart: gives the bank back the scores and pseudonyms of every epoch it had
    /// (from the local area), so that it recognizes its own submissions in the replayed log,
    /// posts what is missing while the window is open, and opens its results.
    pub fn resume(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("local {what} do not decode"));
        let Some(bytes) = self.store.local_get(local::EPOCHS)? else {
            return Ok(Step::default());
        };
        let epochs = local::decode_epochs(&bytes).ok_or_else(|| corrupt("epochs"))?;
        let mut step = Step::default();
        for epoch in epochs {
            let Some(bytes) = self.store.local_get(&local::scores_key(epoch))? else {
                continue;
            };
            let scores = local::decode_scores(&bytes).ok_or_else(|| corrupt("scores"))?;
            let pseudonyms = match self.store.local_get(&local::pseudonyms_key(epoch))? {
                Some(bytes) => local::decode_pseudonyms(&Zeroizing::new(bytes))
                    .ok_or_else(|| corrupt("pseudonyms"))?,
                None => Vec::new(),
            };
            step.extend(self.bank.resume(now, epoch, scores, pseudonyms, rng));
        }
        self.persist(step)
    }

    /// Commands the bank to submit scores, persisting what it publishes.
    pub fn submit(
        &mut self,
        now: Time,
        epoch: u64,
        scores: Vec<(String, u16)>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Result<Step, bankmesh_protocol::bank::Error>, StoreError> {
        match self.bank.submit(now, epoch, scores, rng) {
            Ok(step) => Ok(Ok(self.persist(step)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    pub fn handle_timeout(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, StoreError> {
        let mut step = self.bank.handle_timeout(now, rng);
        self.retry_pending(now, rng, &mut step)?;
        self.persist(step)
    }

    /// The next anti-entropy request: heads from each other member in turn. Drivers call this
    /// every couple of seconds; missing records then follow by author range.
    pub fn sync_request(&mut self) -> Option<(MemberIndex, Request)> {
        let me = self.bank.me();
        let others: Vec<MemberIndex> = self
            .bank
            .consortium()
            .indices()
            .filter(|&i| i != me)
            .collect();
        self.sync_turn = self.sync_turn.wrapping_add(1);
        let to = *others.get(self.sync_turn % others.len().max(1))?;
        Some((to, Request::Heads))
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        self.bank.poll_timeout()
    }

    /// Answers a peer's request: sync from the store, the rest from the bank.
    pub fn handle_request(
        &mut self,
        now: Time,
        from: MemberIndex,
        request: Request,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Response, StoreError> {
        Ok(match request {
            Request::Records { hashes } => {
                let mut records = Vec::new();
                let mut bytes = 0;
                for h in hashes.iter().take(SYNC_BATCH_MAX) {
                    if let Some(r) = self.store.get(h)? {
                        bytes += r.len();
                        if bytes > REPLY_BYTES_MAX {
                            break;
                        }
                        records.push(r);
                    }
                }
                Response::Records { records }
            }
            Request::Heads => Response::Heads {
                heads: self.store.heads()?,
            },
            Request::AuthorRange { author, from_seq } => {
                let mut records = Vec::new();
                let mut bytes = 0;
                for r in self
                    .store
                    .author_range(author, from_seq, AUTHOR_RANGE_MAX)?
                {
                    bytes += r.len();
                    if bytes > REPLY_BYTES_MAX {
                        break;
                    }
                    records.push(r);
                }
                Response::Records { records }
            }
            other => self.bank.handle_request(now, from, other, rng),
        })
    }

    /// Takes a peer's response: fetched records are ingested as sync, heads start catch-up.
    pub fn handle_response(
        &mut self,
        now: Time,
        from: MemberIndex,
        response: Response,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, StoreError> {
        match response {
            Response::Records { records } => {
                let items = records
                    .into_iter()
                    .map(|r| (Origin::Sync { from }, r))
                    .collect();
                let (_, step) = self.ingest(now, items, rng)?;
                Ok(step)
            }
            Response::Heads { heads } => {
                let mut step = Step::default();
                for (author, seq, _) in heads {
                    let mine = self.store.head(author)?.map_or(0, |(s, _)| s);
                    if seq > mine {
                        step.requests.push((
                            from,
                            Request::AuthorRange {
                                author,
                                from_seq: mine + 1,
                            },
                        ));
                    }
                }
                Ok(step)
            }
            other => {
                let step = self.bank.handle_response(now, from, other, rng);
                self.persist(step)
            }
        }
    }
}

/// Records held back until their prerequisites arrive: deduplicated, bounded in count and
/// bytes, the oldest dropped first (sync fetches them again later).
#[derive(Default)]
struct Pending {
    queue: VecDeque<(Origin, UncheckedRecord)>,
    hashes: std::collections::HashSet<bankmesh_protocol::Hash>,
    bytes: usize,
}

impl Pending {
    /// Holds a record; returns how many older ones were dropped to make room.
    fn push(&mut self, origin: Origin, unchecked: UncheckedRecord) -> u64 {
        if !self.hashes.insert(unchecked.hash()) {
            return 0;
        }
        self.bytes += unchecked.bytes().len();
        self.queue.push_back((origin, unchecked));
        let mut dropped = 0;
        while self.queue.len() > PENDING_MAX || self.bytes > PENDING_BYTES_MAX {
            let Some((_, old)) = self.queue.pop_front() else {
                break;
            };
            self.hashes.remove(&old.hash());
            self.bytes -= old.bytes().len();
            dropped += 1;
        }
        dropped
    }

    fn take(&mut self) -> Vec<(Origin, UncheckedRecord)> {
        self.hashes.clear();
        self.bytes = 0;
        self.queue.drain(..).collect()
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
