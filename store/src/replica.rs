//! A member's replica: its bank state machine over its durable log (DESIGN 5, 8).
//!
//! This is the one place that sequences check, persist and apply, and answers record sync
//! requests from the store, so that the libp2p node and the simulator drive the protocol
//! identically. It also makes sure, at every start, that the member's own chain head is
//! confirmed by peers before the bank signs anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bankmesh_protocol::gossip::{self, Stamp};
use bankmesh_protocol::messages::{Request, Response, SYNC_BATCH_MAX};
use bankmesh_protocol::record::{DecodeError, Evidence, Payload, Record, UncheckedRecord};
use bankmesh_protocol::{
    Bank, Checked, Culprit, Fault, FaultKind, MemberIndex, Origin, Step, Time, Verdict, Wait,
};
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;

use crate::{AuthorPos, Hash, NewRecord, Refused, Store, StoreError};

/// Records held back because their prerequisites are missing (bounded; the oldest go first).
const PENDING_MAX: usize = 8_192;
/// Most bytes held back.
const PENDING_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most records returned for one author-range request.
const AUTHOR_RANGE_MAX: usize = 256;
/// Most bytes in one sync reply.
/// (Sync replies travel CBOR-encoded, which can double byte strings; the codec allows 10 MiB.)
const REPLY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most forks asked about (and records wanted by hash) remembered at once.
const ASKED_MAX: usize = 4096;
/// How often unanswered head checks are asked again.
const HEAD_ASK_EVERY_MS: u64 = 1_000;
/// How long the head check waits for every peer before a quorum of answers is enough.
const HEAD_ALL_WAIT_MS: u64 = 10_000;

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
    pub evidence: u64,
}

/// The check of our own chain head at start: peers' view of it, before we sign anything.
#[derive(Default)]
struct HeadCheck {
    /// Peers that answered.
    answered: BTreeSet<MemberIndex>,
    /// Peers that say our chain goes further than we hold, and how far: we fetch the records
    /// from them. A claim goes away only when its peer, asked for those records, has none.
    claims: BTreeMap<MemberIndex, u64>,
    first_ask: Option<Time>,
    asked_at: Option<Time>,
    done: bool,
}

pub struct Replica {
    bank: Bank,
    store: Store,
    pending: Pending,
    stats: ReplicaStats,
    sync_turn: usize,
    /// Per author, the head at which we last asked a peer to fill a gap.
    gap_requested: BTreeMap<MemberIndex, BTreeSet<u64>>,
    /// Chain forks we asked the other side of, by (author, seq).
    forks_asked: BTreeSet<(MemberIndex, u64)>,
    /// Authors of whom evidence is kept: only their records can continue a fork, so the
    /// records of everyone else cost no fork lookups.
    forked: BTreeSet<MemberIndex>,
    /// Records asked for by hash because a fork record names them as `prev`: kept as evidence
    /// even past the per-position bound when they come (bounded).
    wanted: BTreeSet<Hash>,
    /// Authors whose chain grew since held records were last looked at: only their gapped
    /// records can have become next in line.
    advanced: BTreeSet<MemberIndex>,
    /// Positions at which a fork record was just kept as evidence: a held record right after
    /// one may continue that fork.
    fork_advanced: BTreeSet<(MemberIndex, u64)>,
    head_check: HeadCheck,
    /// How long results are kept after an epoch's decryption window closed, if not forever.
    results_retention_ms: Option<u64>,
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
    /// Opens a replica over `store`: gives the bank back its local state (scores, pseudonyms,
    /// decisions, results), then replays every stored record into it (state only: nothing is
    /// re-published and no request re-sent until [`Replica::resume`]).
    pub fn open(mut bank: Bank, store: Store) -> Result<Replica, StoreError> {
        let local = store.local_scan()?;
        bank.restore(&local).map_err(StoreError::Corrupt)?;
        let forked = store.evidence_authors()?;
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
        // What equivocators showed others still counts in the agreement after a restart.
        for (_, bytes) in store.evidence()? {
            if let Ok(record) = Record::from_trusted_bytes(&bytes) {
                bank.replay_evidence(&record);
            }
        }
        Ok(Replica {
            bank,
            store,
            pending: Pending::default(),
            stats: ReplicaStats::default(),
            sync_turn: 0,
            gap_requested: BTreeMap::new(),
            forks_asked: BTreeSet::new(),
            forked,
            wanted: BTreeSet::new(),
            advanced: BTreeSet::new(),
            fork_advanced: BTreeSet::new(),
            head_check: HeadCheck::default(),
            results_retention_ms: None,
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
    /// Records held back for now.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Persists what the bank produced: local state first, then its records; then loads the
    /// records to publish again. Returns the step for the driver to send.
    pub fn persist(&mut self, mut step: Step) -> Result<Step, StoreError> {
        // Local state first: nothing that depends on it may leave before it is durable.
        let writes = std::mem::take(&mut step.local);
        let entries: Vec<(&str, &[u8])> = writes
            .iter()
            .map(|w| (w.key.as_str(), w.value.as_slice()))
            .collect();
        self.store.local_apply(&entries, &step.erase_local)?;
        step.erase_local.clear();
        if !step.publish.is_empty() {
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
        }
        for hash in std::mem::take(&mut step.republish) {
            if let Some(bytes) = self.store.get(&hash)? {
                let record = Record::from_trusted_bytes(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("own record: {e}")))?;
                step.publish.push(record);
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
        let (mut verdicts, accepted) = self.check_all(now, items, &mut step)?;
        for (idx, acceptance) in self.commit(now, accepted, rng, &mut step)? {
            if let Some(v) = verdicts.get_mut(idx) {
                *v = acceptance;
            }
        }
        self.retry_pending(now, rng, &mut step)?;
        self.accuse(now, rng, &mut step);
        let step = self.persist(step)?;
        Ok((verdicts, step))
    }

    /// Checks a batch: the cheap checks in order, then the signatures and proofs of what is
    /// left on every core (a check reads only the bank's state), then the verdicts in order.
    /// Returns one acceptance per input and the records that passed, with their input index.
    #[allow(clippy::type_complexity)]
    fn check_all(
        &mut self,
        now: Time,
        items: Vec<(Origin, Vec<u8>)>,
        step: &mut Step,
    ) -> Result<(Vec<Acceptance>, Vec<(usize, Origin, Checked)>), StoreError> {
        let mut verdicts = vec![Acceptance::Ignore; items.len()];
        let mut chains = BatchChains::default();
        let mut candidates = Vec::new();
        // Submissions from gossip with their exits' stamps: if one is invalid, the stamp and
        // the record are the exit's own evidence.
        let mut stamped: HashMap<Hash, Stamp> = HashMap::new();
        for (idx, (origin, bytes)) in items.into_iter().enumerate() {
            match self.precheck(origin, &bytes, &mut chains, step)? {
                Ok((unchecked, stamp)) => {
                    if let Some(stamp) = stamp {
                        stamped.insert(unchecked.hash(), stamp);
                    }
                    candidates.push((idx, origin, unchecked));
                }
                Err(acceptance) => {
                    if let Some(v) = verdicts.get_mut(idx) {
                        *v = acceptance;
                    }
                }
            }
        }
        let bank = &self.bank;
        let judged: Vec<(usize, Origin, Verdict, Vec<u8>)> = candidates
            .into_par_iter()
            .map(|(idx, origin, unchecked)| {
                let bytes = if stamped.contains_key(&unchecked.hash()) {
                    unchecked.bytes().to_vec()
                } else {
                    Vec::new()
                };
                (idx, origin, bank.check(now, origin, unchecked), bytes)
            })
            .collect();
        let mut accepted = Vec::new();
        for (idx, origin, mut verdict, bytes) in judged {
            if let Verdict::Reject(f) = &mut verdict {
                if let (Culprit::Submission(h), FaultKind::InvalidSubmission) = (f.culprit, f.kind)
                {
                    if let Some(stamp) = stamped.remove(&h) {
                        f.culprit = Culprit::Member(stamp.exit);
                        f.detail = format!("published an invalid submission: {}", f.detail);
                        f.evidence = Some(Evidence::InvalidPublication {
                            record: bytes,
                            exit: stamp.exit,
                            signature: stamp.signature,
                        });
                    }
                }
            }
            let (acceptance, checked) = self.take_verdict(origin, verdict, step);
            if let Some(v) = verdicts.get_mut(idx) {
                *v = acceptance;
            }
            if let Some(checked) = checked {
                accepted.push((idx, origin, checked));
            }
        }
        Ok((verdicts, accepted))
    }

    /// The checks that need no cryptography: a duplicate costs one hash, a malformed record a
    /// decode, a record ahead of its chain is held back. `Ok` if the record is to be checked.
    fn precheck(
        &mut self,
        origin: Origin,
        bytes: &[u8],
        chains: &mut BatchChains,
        step: &mut Step,
    ) -> Result<Result<(UncheckedRecord, Option<Stamp>), Acceptance>, StoreError> {
        let hash = crate::record_hash(bytes);
        if self.known(&hash)? {
            return Ok(Err(Acceptance::Ignore));
        }
        // Gossip from a peer: a submission must carry the stamp of the exit that published it.
        let from_peer = match origin {
            Origin::Gossip { from } if from != self.bank.me() => Some(from),
            _ => None,
        };
        let frame = match UncheckedRecord::decode(bytes) {
            Ok(u) => match (from_peer, &u.envelope().payload) {
                (Some(_), Payload::Submission(_)) => Err(gossip::FrameError::Unstamped.to_string()),
                _ => Ok((u, None)),
            },
            Err(e) => match from_peer
                .and_then(|from| gossip::split_stamped(self.bank.consortium(), from, bytes))
            {
                Some(Ok((u, stamp))) => Ok((u, Some(stamp))),
                Some(Err(frame)) => Err(frame.to_string()),
                None => Err(e.to_string()),
            },
        };
        let (unchecked, stamp) = match frame {
            Ok(v) => v,
            Err(detail) => {
                self.stats.rejected += 1;
                step.faults.push(Fault {
                    culprit: Culprit::Member(origin.peer()),
                    kind: FaultKind::Malformed,
                    record: None,
                    detail,
                    evidence: None,
                });
                return Ok(Err(Acceptance::Reject));
            }
        };
        if stamp.is_some() && self.known(&unchecked.hash())? {
            return Ok(Err(Acceptance::Ignore));
        }
        if self.gap(&unchecked, chains)? {
            self.request_gap(origin, &unchecked, step)?;
            self.defer(origin, unchecked, None);
            return Ok(Err(Acceptance::Ignore));
        }
        // Taken as the new head (or fork tip) for the rest of the batch; should its check
        // fail, what follows it is a gap, and that is held back then.
        if let Some((author, seq, prev)) = unchecked.claimed_chain() {
            if self.continues_fork(author, seq, &prev, chains)? {
                chains.forks.insert((author, seq, unchecked.hash()));
            } else {
                let head = chains.heads.entry(author).or_insert(seq);
                *head = (*head).max(seq);
            }
        }
        Ok(Ok((unchecked, stamp)))
    }

    /// A record already held (in the log or as evidence): ignored without a decode.
    fn known(&mut self, hash: &Hash) -> Result<bool, StoreError> {
        let known = self.store.contains(hash)? || self.store.contains_evidence(hash)?;
        if known {
            self.stats.ignored += 1;
        }
        Ok(known)
    }

    /// Whether a record at `seq` names as `prev` a record kept as evidence at `seq - 1` (here
    /// or earlier in the batch): it continues a fork of its author's chain, and is evidence too.
    /// Without this, an honest member that met the other side of a fork first could never
    /// read what the equivocator posted later (its reports, say) on the side others follow.
    fn continues_fork(
        &self,
        author: MemberIndex,
        seq: u64,
        prev: &Hash,
        chains: &BatchChains,
    ) -> Result<bool, StoreError> {
        let Some(before) = seq.checked_sub(1).filter(|&s| s > 0) else {
            return Ok(false);
        };
        if !self.forked.contains(&author) {
            return Ok(false);
        }
        Ok(chains.forks.contains(&(author, before, *prev))
            || self.store.evidence_is_at(author, before, prev)?)
    }

    /// Whether an identified record is ahead of its author's chain here (its predecessors
    /// are missing, in the store and earlier in the batch), so checking it now would be wasted.
    fn gap(&self, unchecked: &UncheckedRecord, chains: &BatchChains) -> Result<bool, StoreError> {
        let Some((author, seq, prev)) = unchecked.claimed_chain() else {
            return Ok(false);
        };
        let stored = self.store.head(author)?.map_or(0, |(s, _)| s);
        let head = chains.heads.get(&author).copied().unwrap_or(0).max(stored);
        Ok(seq > head + 1 && !self.continues_fork(author, seq, &prev, chains)?)
    }

    /// Asks `origin` for the records between our head and a gapped record, once per head.
    /// For an author whose chain forked here, from the tip of the fork kept as evidence if the
    /// record lies beyond it, and also for the record's `prev` by hash, once: walking back
    /// reaches a fork we know whatever its shape.
    fn request_gap(
        &mut self,
        origin: Origin,
        unchecked: &UncheckedRecord,
        step: &mut Step,
    ) -> Result<(), StoreError> {
        let Some((author, seq, prev)) = unchecked.claimed_chain() else {
            return Ok(());
        };
        let head = self.store.head(author)?.map_or(0, |(s, _)| s);
        let tip = self.fork_tip(author, head)?;
        // From our head (the side we follow), and from the fork's tip if the record is past it.
        let mut bases = vec![head];
        bases.extend(tip.filter(|&t| t < seq));
        for base in bases {
            if self.gap_asked_once(author, head, base) {
                step.requests.push((
                    origin.peer(),
                    Request::AuthorRange {
                        author,
                        from_seq: base + 1,
                    },
                ));
            }
        }
        if tip.is_some() && self.ask_fork(author, seq, prev) {
            step.requests
                .push((origin.peer(), Request::Records { hashes: vec![prev] }));
        }
        Ok(())
    }

    /// The tip of `author`'s fork kept as evidence, if it is past our `head`.
    fn fork_tip(&self, author: MemberIndex, head: u64) -> Result<Option<u64>, StoreError> {
        if !self.forked.contains(&author) {
            return Ok(None);
        }
        Ok(self.store.evidence_tip(author)?.filter(|&t| t > head))
    }

    /// Whether to ask for `author`'s records after `base` now (once per base while our head
    /// is `head`; bases below the head are forgotten).
    fn gap_asked_once(&mut self, author: MemberIndex, head: u64, base: u64) -> bool {
        let asked = self.gap_requested.entry(author).or_default();
        asked.retain(|&b| b >= head);
        asked.insert(base)
    }

    /// Whether to ask for the `prev` of `author`'s record at `seq` (once, bounded: these come
    /// from records not yet checked).
    fn ask_fork(&mut self, author: MemberIndex, seq: u64, prev: Hash) -> bool {
        if self.forks_asked.len() >= ASKED_MAX {
            self.forks_asked.clear();
        }
        if self.wanted.len() >= ASKED_MAX {
            self.wanted.clear();
        }
        let first = self.forks_asked.insert((author, seq));
        if first {
            self.wanted.insert(prev);
        }
        first
    }

    fn take_verdict(
        &mut self,
        origin: Origin,
        verdict: Verdict,
        step: &mut Step,
    ) -> (Acceptance, Option<Checked>) {
        match verdict {
            Verdict::Accept(checked) => (Acceptance::Accept, Some(checked)),
            Verdict::Reject(fault) => {
                self.stats.rejected += 1;
                step.faults.push(fault);
                (Acceptance::Reject, None)
            }
            Verdict::Ignore(_) => {
                self.stats.ignored += 1;
                (Acceptance::Ignore, None)
            }
            Verdict::Defer(unchecked, wait) => {
                self.defer(origin, unchecked, Some(wait));
                (Acceptance::Ignore, None)
            }
        }
    }

    fn defer(&mut self, origin: Origin, unchecked: UncheckedRecord, wait: Option<Wait>) {
        self.stats.deferred += 1;
        self.stats.pending_dropped += self.pending.push(origin, unchecked, wait);
    }

    /// Persists accepted records in one durable batch, then applies them in order. Returns
    /// the inputs whose acceptance changed, with what gossip should be told about them.
    fn commit(
        &mut self,
        now: Time,
        accepted: Vec<(usize, Origin, Checked)>,
        rng: &mut (impl RngCore + CryptoRng),
        step: &mut Step,
    ) -> Result<Vec<(usize, Acceptance)>, StoreError> {
        let mut changed = Vec::new();
        // A second record at a position the chain already holds is evidence, not a log entry.
        let mut fresh = Vec::with_capacity(accepted.len());
        for (idx, origin, checked) in accepted {
            let forked = match checked.record().chain_position() {
                Some((author, seq, prev)) => {
                    let conflicts = self
                        .store
                        .chain_at(author, seq)?
                        .is_some_and(|h| h != checked.record().hash());
                    let on_fork = seq > 1
                        && self.forked.contains(&author)
                        && self.store.evidence_is_at(author, seq - 1, &prev)?;
                    (conflicts || on_fork).then_some((author, seq))
                }
                None => None,
            };
            match forked {
                Some((author, seq)) => {
                    let acceptance = self.evidence(now, author, seq, checked, rng, step)?;
                    changed.push((idx, acceptance));
                }
                None => fresh.push((idx, origin, checked)),
            }
        }
        let accepted = fresh;
        if accepted.is_empty() {
            return Ok(changed);
        }
        let news: Vec<NewRecord<'_>> = accepted
            .iter()
            .map(|(_, _, c)| new_record(c.record()))
            .collect();
        let outcomes = self.store.append_batch(&news)?;
        for ((idx, origin, checked), outcome) in accepted.into_iter().zip(outcomes) {
            let hash = checked.record().hash();
            match outcome {
                Ok(_) => {
                    self.stats.accepted += 1;
                    if let Some(author) = checked.record().author() {
                        self.advanced.insert(author);
                    }
                    step.extend(self.bank.apply(now, checked, rng));
                }
                Err(Refused::Gap {
                    author, head_seq, ..
                }) => {
                    // Fetch what we miss from the peer that has it (once per head), then try
                    // again.
                    if self.gap_asked_once(author, head_seq, head_seq) {
                        step.requests.push((
                            origin.peer(),
                            Request::AuthorRange {
                                author,
                                from_seq: head_seq + 1,
                            },
                        ));
                    }
                    if let Ok(u) = UncheckedRecord::decode(checked.record().bytes()) {
                        self.defer(origin, u, None);
                    }
                    changed.push((idx, Acceptance::Ignore));
                }
                Err(Refused::Equivocation { author, seq, .. }) => {
                    // Two variants in one batch: the store kept the second as evidence.
                    self.fault_equivocation(author, seq, checked.record().bytes(), step)?;
                    step.extend(self.bank.apply_evidence(now, checked, rng));
                    changed.push((idx, Acceptance::Accept));
                }
                Err(Refused::PrevMismatch { author, seq }) => {
                    // The author forked its chain before this record: keep this one as evidence
                    // and fetch the other side of the fork.
                    let prev = checked.record().chain_position().map(|(_, _, p)| p);
                    if prev.is_some_and(|p| self.ask_fork(author, seq, p)) {
                        if let Some(prev) = prev {
                            step.requests
                                .push((origin.peer(), Request::Records { hashes: vec![prev] }));
                        }
                    }
                    let acceptance = self.evidence(now, author, seq, checked, rng, step)?;
                    changed.push((idx, acceptance));
                }
                Err(other) => {
                    self.stats.rejected += 1;
                    let culprit = checked.record().author().unwrap_or(origin.peer());
                    step.faults.push(Fault {
                        culprit: Culprit::Member(culprit),
                        kind: FaultKind::Malformed,
                        record: Some(hash),
                        detail: other.to_string(),
                        evidence: None,
                    });
                    changed.push((idx, Acceptance::Reject));
                }
            }
        }
        Ok(changed)
    }

    /// Keeps a record that conflicts with its author's chain as evidence (bounded per
    /// position), names the author, and lets what it says count; it is passed on.
    fn evidence(
        &mut self,
        now: Time,
        author: MemberIndex,
        seq: u64,
        checked: Checked,
        rng: &mut (impl RngCore + CryptoRng),
        step: &mut Step,
    ) -> Result<Acceptance, StoreError> {
        let wanted = self.wanted.remove(&checked.record().hash());
        if !self
            .store
            .keep_evidence(checked.record().bytes(), author, seq, wanted)?
        {
            self.stats.ignored += 1;
            return Ok(Acceptance::Ignore);
        }
        self.fork_advanced.insert((author, seq));
        self.fault_equivocation(author, seq, checked.record().bytes(), step)?;
        step.extend(self.bank.apply_evidence(now, checked, rng));
        Ok(Acceptance::Accept)
    }

    /// Names an author whose chain forked; with the record its chain holds at `seq`, the two
    /// signed records are evidence anyone can check, and go on the log in a fault record.
    fn fault_equivocation(
        &mut self,
        author: MemberIndex,
        seq: u64,
        bytes: &[u8],
        step: &mut Step,
    ) -> Result<(), StoreError> {
        self.stats.evidence += 1;
        self.forked.insert(author);
        let hash = crate::record_hash(bytes);
        let first = match self.store.chain_at(author, seq)? {
            Some(h) if h != hash => self.store.get(&h)?,
            _ => None,
        };
        step.faults.push(Fault {
            culprit: Culprit::Member(author),
            kind: FaultKind::Duplicate,
            record: Some(hash),
            detail: format!(
                "a record that conflicts with its chain at sequence number {seq} (equivocation; kept as evidence)"
            ),
            evidence: first.map(|first| Evidence::Equivocation {
                first,
                second: bytes.to_vec(),
            }),
        });
        Ok(())
    }

    /// Faults proven by signed bytes go on the log as fault records (the bank posts each
    /// culprit's fault of a kind once per epoch).
    fn accuse(&mut self, now: Time, rng: &mut (impl RngCore + CryptoRng), step: &mut Step) {
        let evidence: Vec<Evidence> = step
            .faults
            .iter()
            .filter_map(|f| f.evidence.clone())
            .collect();
        if !evidence.is_empty() {
            step.extend(self.bank.accuse(now, evidence, rng));
        }
    }

    /// Checks held-back records again whose wait is over (bounded; no rescans of the rest).
    fn retry_pending(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
        step: &mut Step,
    ) -> Result<(), StoreError> {
        for _ in 0..16 {
            let mut ready = Vec::new();
            for wait in self.pending.waits() {
                if !self.bank.still_waiting(wait) {
                    ready.extend(self.pending.take_waiting(wait));
                }
            }
            // Records ahead of their author's chain whose predecessors are now here.
            for author in std::mem::take(&mut self.advanced) {
                let head = self.store.head(author)?.map_or(0, |(s, _)| s);
                ready.extend(self.pending.take_run(author, head));
            }
            // Held records right after a fork record just kept: they may continue that fork.
            for (author, seq) in std::mem::take(&mut self.fork_advanced) {
                ready.extend(self.pending.take_at(author, seq + 1));
            }
            if ready.is_empty() {
                return Ok(());
            }
            let items = ready
                .into_iter()
                .map(|(origin, unchecked)| (origin, unchecked.bytes().to_vec()))
                .collect();
            let (_, accepted) = self.check_all(now, items, step)?;
            if accepted.is_empty() {
                return Ok(());
            }
            self.commit(now, accepted, rng, step)?;
        }
        Ok(())
    }

    /// After a restart (or at first start): the bank publishes again what it must, and we ask
    /// every peer for our own chain head before the bank signs anything.
    pub fn resume(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, StoreError> {
        let mut step = self.bank.resume(now, rng);
        self.head_check_step(now, rng, &mut step)?;
        self.persist(step)
    }

    /// Commands the bank to submit scores, persisting what it publishes.
    pub fn submit(
        &mut self,
        now: Time,
        epoch: u64,
        scores: Vec<(String, u16)>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Result<Step, bankmesh_protocol::Error>, StoreError> {
        match self.bank.submit(now, epoch, scores, rng) {
            Ok(step) => Ok(Ok(self.persist(step)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Erases our results of an epoch once `ms` have passed since its decryption window closed
    /// (checked on every timeout).
    pub fn set_results_retention(&mut self, ms: u64) {
        self.results_retention_ms = Some(ms);
    }

    pub fn handle_timeout(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, StoreError> {
        let mut step = self.bank.handle_timeout(now, rng);
        if let Some(ms) = self.results_retention_ms {
            step.extend(self.bank.expire_results(now, ms));
        }
        self.head_check_step(now, rng, &mut step)?;
        self.retry_pending(now, rng, &mut step)?;
        let exits = std::mem::take(&mut step.exits);
        let mut step = self.persist(step)?;
        if !exits.is_empty() {
            step.extend(self.exit(now, exits, rng)?);
        }
        Ok(step)
    }

    /// Records we are the exit of (DESIGN 6): each is checked and stored as a received record
    /// would be, and only those accepted are published, so that an invalid one goes no further
    /// than here. Only submissions travel the relay; anything else is dropped.
    fn exit(
        &mut self,
        now: Time,
        records: Vec<Vec<u8>>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, StoreError> {
        let me = self.bank.me();
        let items: Vec<(Origin, Vec<u8>)> = records
            .into_iter()
            .filter(|bytes| {
                UncheckedRecord::decode(bytes)
                    .is_ok_and(|u| matches!(u.envelope().payload, Payload::Submission(_)))
            })
            .map(|bytes| (Origin::Gossip { from: me }, bytes))
            .collect();
        let bytes: Vec<Vec<u8>> = items.iter().map(|(_, b)| b.clone()).collect();
        let (verdicts, mut step) = self.ingest(now, items, rng)?;
        for (verdict, b) in verdicts.into_iter().zip(bytes) {
            if verdict == Acceptance::Accept {
                let record = Record::from_trusted_bytes(&b)
                    .map_err(|e| StoreError::Corrupt(format!("relayed record: {e}")))?;
                step.publish.push(record);
            }
        }
        Ok(step)
    }

    /// Asks the peers that have not answered for our head, and those that claim our chain goes
    /// further for the records; confirms the head to the bank once every peer answered (or a
    /// quorum of members, us included, after a while) and no claim stands above what we hold.
    fn head_check_step(
        &mut self,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
        step: &mut Step,
    ) -> Result<(), StoreError> {
        if self.head_check.done {
            return Ok(());
        }
        let me = self.bank.me();
        let consortium = std::sync::Arc::clone(self.bank.consortium());
        let mine = self.store.head(me)?.map_or(0, |(s, _)| s);
        let hc = &mut self.head_check;
        hc.claims.retain(|_, claim| *claim > mine);
        let first = *hc.first_ask.get_or_insert(now);
        let all = hc.answered.len() + 1 >= consortium.n();
        let quorum =
            hc.answered.len() + 1 >= consortium.quorum() && now.0 >= first.0 + HEAD_ALL_WAIT_MS;
        if (all || quorum) && hc.claims.is_empty() {
            hc.done = true;
            step.extend(self.bank.confirm_head(now, rng));
            return Ok(());
        }
        if hc.asked_at.is_none_or(|t| now.0 >= t.0 + HEAD_ASK_EVERY_MS) {
            hc.asked_at = Some(now);
            for peer in consortium.indices().filter(|&m| m != me) {
                if !hc.answered.contains(&peer) {
                    step.requests.push((peer, Request::Heads));
                }
            }
            for &peer in hc.claims.keys() {
                step.requests.push((
                    peer,
                    Request::AuthorRange {
                        author: me,
                        from_seq: mine + 1,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Whether the bank may sign (its head was confirmed since this start).
    pub fn head_confirmed(&self) -> bool {
        self.head_check.done
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
        let next = self.bank.poll_timeout();
        if self.head_check.done {
            return next;
        }
        let ask = self
            .head_check
            .asked_at
            .map(|t| t.plus(HEAD_ASK_EVERY_MS))
            .unwrap_or(Time(0));
        Some(next.map_or(ask, |n| n.min(ask)))
    }

    /// Answers a peer's request: records from the store, the rest from the bank (what the bank
    /// must store first, such as OPRF counts served, is stored before the answer leaves).
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
                    if let Some(r) = self.store.get_any(h)? {
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
            other => {
                let (response, step) = self.bank.handle_request(now, from, other, rng);
                let step = self.persist(step)?;
                debug_assert!(step.publish.is_empty());
                response
            }
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
                let empty = records.is_empty();
                let items = records
                    .into_iter()
                    .map(|r| (Origin::Sync { from }, r))
                    .collect();
                let (_, mut step) = self.ingest(now, items, rng)?;
                if !self.head_check.done {
                    // A peer that claimed more of our chain but, asked for it, sends nothing: its
                    // claim goes. (Other answers it gives before then are not empty.)
                    if empty {
                        self.head_check.claims.remove(&from);
                    }
                    self.head_check_step(now, rng, &mut step)?;
                    step = self.persist(step)?;
                }
                Ok(step)
            }
            Response::Heads { heads } => {
                let mut step = Step::default();
                let me = self.bank.me();
                for &(author, seq, _) in &heads {
                    // Past the fork tip, for an author whose chain forked here: the side we
                    // follow ends at the head, the other side at the tip.
                    let head = self.store.head(author)?.map_or(0, |(s, _)| s);
                    let tip = self.fork_tip(author, head)?;
                    for base in std::iter::once(head).chain(tip) {
                        if seq > base {
                            step.requests.push((
                                from,
                                Request::AuthorRange {
                                    author,
                                    from_seq: base + 1,
                                },
                            ));
                        }
                    }
                }
                if !self.head_check.done && from != me {
                    let ours = heads
                        .iter()
                        .find(|(a, _, _)| *a == me)
                        .map_or(0, |(_, s, _)| *s);
                    let mine = self.store.head(me)?.map_or(0, |(s, _)| s);
                    if ours > mine {
                        self.head_check.claims.insert(from, ours);
                    }
                    self.head_check.answered.insert(from);
                    self.head_check_step(now, rng, &mut step)?;
                }
                self.persist(step)
            }
            other => {
                let step = self.bank.handle_response(now, from, other, rng);
                self.persist(step)
            }
        }
    }
}

/// How chains advance within one batch: a record may follow one just before it, on its
/// author's chain or on a fork kept as evidence.
#[derive(Default)]
struct BatchChains {
    heads: BTreeMap<MemberIndex, u64>,
    /// Records of the batch that continue a fork: author, position, hash.
    forks: BTreeSet<(MemberIndex, u64, Hash)>,
}

/// Records held back until their prerequisites arrive: deduplicated, bounded in count and
/// bytes, the oldest dropped first (sync fetches them again later). They are kept by what
/// they wait for, so that a record is checked again only when its wait may be over: a state
/// condition, or the records before it in its author's chain.
#[derive(Default)]
struct Pending {
    waiting: BTreeMap<Wait, BTreeMap<Hash, (Origin, UncheckedRecord)>>,
    /// By author and sequence number (the first record met at each position).
    gapped: BTreeMap<(MemberIndex, u64), (Origin, UncheckedRecord)>,
    /// Arrival order, for dropping the oldest.
    order: VecDeque<Hash>,
    where_: std::collections::HashMap<Hash, Slot>,
    bytes: usize,
}

#[derive(Clone, Copy)]
enum Slot {
    Waiting(Wait),
    Gapped(MemberIndex, u64),
}

impl Pending {
    /// Holds a record (`wait: None` for a gap in its chain); returns how many older ones were
    /// dropped to make room.
    fn push(&mut self, origin: Origin, unchecked: UncheckedRecord, wait: Option<Wait>) -> u64 {
        let hash = unchecked.hash();
        if self.where_.contains_key(&hash) {
            return 0;
        }
        let slot = match (wait, unchecked.claimed_position()) {
            (Some(w), _) => Slot::Waiting(w),
            (None, Some((a, seq))) => Slot::Gapped(a, seq),
            (None, None) => return 0,
        };
        let size = unchecked.bytes().len();
        match slot {
            Slot::Waiting(w) => {
                self.waiting
                    .entry(w)
                    .or_default()
                    .insert(hash, (origin, unchecked));
            }
            Slot::Gapped(a, seq) => {
                if self.gapped.contains_key(&(a, seq)) {
                    return 0;
                }
                self.gapped.insert((a, seq), (origin, unchecked));
            }
        }
        self.bytes += size;
        self.where_.insert(hash, slot);
        self.order.push_back(hash);
        if self.order.len() > 2 * PENDING_MAX {
            let live = &self.where_;
            self.order.retain(|h| live.contains_key(h));
        }
        let mut dropped = 0;
        while self.where_.len() > PENDING_MAX || self.bytes > PENDING_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if self.remove(&old).is_some() {
                dropped += 1;
            }
        }
        dropped
    }

    fn remove(&mut self, hash: &Hash) -> Option<(Origin, UncheckedRecord)> {
        let slot = self.where_.remove(hash)?;
        let item = match slot {
            Slot::Waiting(w) => {
                let q = self.waiting.get_mut(&w)?;
                let item = q.remove(hash);
                if q.is_empty() {
                    self.waiting.remove(&w);
                }
                item
            }
            Slot::Gapped(a, seq) => self.gapped.remove(&(a, seq)),
        }?;
        self.bytes -= item.1.bytes().len();
        Some(item)
    }

    /// The state conditions some record waits for.
    fn waits(&self) -> Vec<Wait> {
        self.waiting.keys().copied().collect()
    }

    fn take_waiting(&mut self, wait: Wait) -> Vec<(Origin, UncheckedRecord)> {
        let hashes: Vec<Hash> = self
            .waiting
            .get(&wait)
            .map(|q| q.keys().copied().collect())
            .unwrap_or_default();
        hashes.iter().filter_map(|h| self.remove(h)).collect()
    }

    /// The held record at `author`'s position `seq`, if any.
    fn take_at(&mut self, author: MemberIndex, seq: u64) -> Option<(Origin, UncheckedRecord)> {
        let hash = self.gapped.get(&(author, seq)).map(|(_, u)| u.hash())?;
        self.remove(&hash)
    }

    /// The held records of `author` that continue its chain from `head`, in order.
    fn take_run(&mut self, author: MemberIndex, head: u64) -> Vec<(Origin, UncheckedRecord)> {
        let mut out = Vec::new();
        let mut next = head + 1;
        while let Some(hash) = self.gapped.get(&(author, next)).map(|(_, u)| u.hash()) {
            out.extend(self.remove(&hash));
            next += 1;
        }
        // Positions at or below the head are stale (the record came by another path).
        let stale: Vec<Hash> = self
            .gapped
            .range((author, 0)..=(author, head))
            .map(|(_, (_, u))| u.hash())
            .collect();
        for h in stale {
            self.remove(&h);
        }
        out
    }

    fn len(&self) -> usize {
        self.where_.len()
    }
}
