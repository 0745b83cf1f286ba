//! The seal (DESIGN 4.4): single-shot Byzantine agreement on the epoch's final set, as
//! `docs/seal.md` describes. Each member reports once the submissions it holds; the members
//! then run Tendermint ([`crate::agreement`]) on a value that pins `m = n - f` reports of
//! distinct members; the final set is every submission listed in at least `f + 1` of them.
//!
//! This module knows reports, values and votes only: no submission, share or result.

use std::collections::{BTreeMap, BTreeSet};

use crate::agreement::Agreement;
use crate::consensus::{Action, Receipt, Validity, ValueId};
use crate::genesis::Consortium;
use crate::messages::Request;
use crate::record::{Body, Hash, Instance, Value};
use crate::step::{Fault, FaultKind};
use crate::time::Time;
use crate::MemberIndex;

/// Hashes in one report part (256 KiB, well under the record limit).
pub const REPORT_PART_MAX: usize = 8192;
/// Wait before asking the same peer again for reports we lack.
const ASK_EVERY_MS: u64 = 1_000;

/// Most parts of one report: enough for every submission the OPRF quotas allow.
pub fn max_parts(c: &Consortium) -> u32 {
    let most =
        (c.n() as u64).saturating_mul(u64::from(c.genesis.oprf_quota)) / REPORT_PART_MAX as u64 + 1;
    u32::try_from(most).unwrap_or(u32::MAX)
}

/// The checks of a report part that need no other record.
pub fn check_report(c: &Consortium, part: u32, hashes: &[Hash]) -> Result<(), String> {
    let most = max_parts(c);
    if part >= most {
        return Err(format!("report part {part} beyond the bound {most}"));
    }
    if hashes.len() > REPORT_PART_MAX {
        return Err(format!("report part of {} hashes", hashes.len()));
    }
    if !hashes.windows(2).all(|w| w.first() < w.get(1)) {
        return Err("report hashes are not strictly ascending".into());
    }
    Ok(())
}

/// A report part as met, in its author's chain or as evidence of a fork.
pub struct Part {
    pub author: MemberIndex,
    pub part: u32,
    pub last: bool,
    pub hashes: Vec<Hash>,
    /// The author's record before this one: the previous part, unless this is part 0.
    pub prev: Hash,
}

/// A pinned report, walked back from its last part.
pub enum Walk {
    /// Its submissions, ascending.
    Complete(Vec<Hash>),
    /// This part (by record hash) is not here yet.
    Missing(Hash),
    /// It breaks a rule (parts out of order, another author): never valid.
    Broken,
}

/// Walks the report whose last part is the record `last` back to its part 0, through `parts`
/// (report parts by record hash): the same walk for members and auditors.
pub fn walk(parts: &BTreeMap<Hash, Part>, last: &Hash) -> Walk {
    let Some(first) = parts.get(last) else {
        return Walk::Missing(*last);
    };
    if !first.last {
        return Walk::Broken;
    }
    let mut chunks: Vec<&[Hash]> = Vec::new();
    let mut current = first;
    loop {
        chunks.push(&current.hashes);
        if current.part == 0 {
            break;
        }
        let Some(prev) = parts.get(&current.prev) else {
            return Walk::Missing(current.prev);
        };
        let ordered = match (prev.hashes.last(), current.hashes.first()) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        };
        if prev.author != current.author || prev.last || prev.part + 1 != current.part || !ordered {
            return Walk::Broken;
        }
        current = prev;
    }
    chunks.reverse();
    let list = chunks.concat();
    // Strictly ascending as a whole, so no report lists a hash twice (an empty part between
    // two others must not let the same hash through twice: each listing counts towards the
    // `f + 1` that seal a submission).
    if !list.windows(2).all(|w| w.first() < w.get(1)) {
        return Walk::Broken;
    }
    Walk::Complete(list)
}

/// The final set the pinned reports imply: every submission listed in more than `faulty` of
/// them, ascending.
pub fn final_hashes<'a>(lists: impl IntoIterator<Item = &'a [Hash]>, faulty: usize) -> Vec<Hash> {
    let mut all: Vec<Hash> = lists.into_iter().flatten().copied().collect();
    all.sort_unstable();
    let mut hashes = Vec::new();
    for run in all.chunk_by(|a, b| a == b) {
        if let Some(h) = run.first().filter(|_| run.len() > faulty) {
            hashes.push(*h);
        }
    }
    hashes
}

/// The seal's decision: the decided value and the final set it implies.
pub struct Decided {
    pub round: u32,
    pub value: Value,
    /// Every submission in at least `f + 1` pinned reports, ascending.
    pub hashes: Vec<Hash>,
}

/// What one input produced.
#[derive(Default)]
pub struct SealOut {
    pub bodies: Vec<Body>,
    pub requests: Vec<(MemberIndex, Request)>,
    pub faults: Vec<Fault>,
    /// Set once, when the decision and all its pinned reports are here.
    pub decided: Option<Decided>,
}

pub struct Seal {
    me: MemberIndex,
    faulty: usize,
    pinned: usize,
    epoch: u64,
    agreement: Agreement,
    /// Every report part met, by record hash: a report is named by its last part and read by
    /// walking back, so parts posted after it, or another fork of the chain, change nothing.
    parts: BTreeMap<Hash, Part>,
    /// Parts met per author (bounded by [`max_parts`] at check time).
    parts_by: BTreeMap<MemberIndex, u32>,
    /// Each author's complete reports by last part, in the order met.
    complete: BTreeMap<MemberIndex, Vec<Hash>>,
    /// The submissions of each complete report, by its last part.
    lists: BTreeMap<Hash, Vec<Hash>>,
    others: Vec<MemberIndex>,
    turn: usize,
    /// Values whose validity waits for a part, by that part's hash.
    waiting: BTreeMap<Hash, BTreeSet<ValueId>>,
    judged: BTreeSet<ValueId>,
    /// The decision (stored before it is acted on), and whether it was handed on.
    decision: Option<(u32, Value)>,
    handed_on: bool,
    released: bool,
    asked: BTreeMap<MemberIndex, Time>,
}

impl Seal {
    pub fn new(consortium: &Consortium, me: MemberIndex, epoch: u64) -> Seal {
        Seal {
            me,
            faulty: consortium.faulty(),
            pinned: consortium.reports_pinned(),
            epoch,
            agreement: Agreement::new(consortium, me, Instance::Seal { epoch }),
            parts: BTreeMap::new(),
            parts_by: BTreeMap::new(),
            complete: BTreeMap::new(),
            lists: BTreeMap::new(),
            others: consortium.indices().filter(|&m| m != me).collect(),
            turn: 0,
            waiting: BTreeMap::new(),
            judged: BTreeSet::new(),
            decision: None,
            handed_on: false,
            released: false,
            asked: BTreeMap::new(),
        }
    }

    /// Whether our own report is complete in the log.
    pub fn reported(&self) -> bool {
        self.complete.contains_key(&self.me)
    }
    /// Whether a seal `Proposal` or `Vote` by `author` would be counted.
    pub fn accepts(&self, author: MemberIndex, body: &Body) -> bool {
        self.agreement.accepts(author, body)
    }
    /// Report parts met from `author` (for the per-member bound).
    pub fn parts_of(&self, author: MemberIndex) -> u32 {
        self.parts_by.get(&author).copied().unwrap_or(0)
    }
    pub fn decision(&self) -> Option<(u32, &Value)> {
        self.decision.as_ref().map(|(r, v)| (*r, v))
    }
    pub fn round(&self) -> u32 {
        self.agreement.engine().round()
    }
    pub fn started(&self) -> bool {
        self.agreement.engine().is_started()
    }
    /// Whether the agreement itself decided here (a decision read back from the local store
    /// leaves the engine running until the log backs it, so our own votes still go out).
    pub fn engine_decided(&self) -> bool {
        self.agreement.engine().decision().is_some()
    }
    pub fn exhausted(&self) -> bool {
        self.agreement.engine().exhausted()
    }
    pub fn next_timeout(&self) -> Option<Time> {
        self.agreement.next_timeout()
    }

    /// Our report: the sorted hashes we hold, in parts.
    pub fn report_bodies(&self, mut hashes: Vec<Hash>) -> Vec<Body> {
        hashes.sort_unstable();
        hashes.dedup();
        let chunks: Vec<&[Hash]> = if hashes.is_empty() {
            vec![&[]]
        } else {
            hashes.chunks(REPORT_PART_MAX).collect()
        };
        let last = chunks.len().saturating_sub(1);
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| Body::Report {
                epoch: self.epoch,
                part: u32::try_from(i).unwrap_or(u32::MAX),
                last: i == last,
                hashes: chunk.to_vec(),
            })
            .collect()
    }

    /// Walks a report back from its last part.
    fn walk(&self, last: &Hash) -> Walk {
        if let Some(list) = self.lists.get(last) {
            return Walk::Complete(list.clone());
        }
        walk(&self.parts, last)
    }

    /// Takes a report part met in its author's chain or as evidence.
    #[allow(clippy::too_many_arguments)]
    pub fn report_part(
        &mut self,
        now: Time,
        author: MemberIndex,
        part: u32,
        last: bool,
        hashes: &[Hash],
        record: Hash,
        prev: Hash,
    ) -> SealOut {
        let mut out = SealOut::default();
        if self.released || self.parts.contains_key(&record) {
            return out;
        }
        *self.parts_by.entry(author).or_default() += 1;
        self.parts.insert(
            record,
            Part {
                author,
                part,
                last,
                hashes: hashes.to_vec(),
                prev,
            },
        );
        self.part_arrived(now, record, &mut out);
        out
    }

    /// A part is here: reports it completes, and values that waited for it.
    fn part_arrived(&mut self, now: Time, record: Hash, out: &mut SealOut) {
        // Reports it completes: itself if it is a last part, or later parts already here.
        let mut lasts = vec![record];
        lasts.extend(
            self.parts
                .iter()
                .filter(|(_, p)| p.last && p.prev == record)
                .map(|(h, _)| *h),
        );
        for last in lasts {
            let Some(author) = self.parts.get(&last).map(|p| p.author) else {
                continue;
            };
            if self.lists.contains_key(&last) {
                continue;
            }
            if let Walk::Complete(hashes) = self.walk(&last) {
                self.lists.insert(last, hashes);
                let list = self.complete.entry(author).or_default();
                if !list.contains(&last) {
                    list.push(last);
                    if list.len() == 2 {
                        out.faults.push(Fault::member(
                            author,
                            FaultKind::BadAgreementMessage,
                            Some(last),
                            format!("a second report for epoch {}", self.epoch),
                        ));
                    }
                }
            }
        }
        if let Some(ids) = self.waiting.remove(&record) {
            for id in ids {
                self.judge_one(now, id, None, out);
            }
        }
        self.offer(now, out);
        self.hand_on(out);
    }

    /// Starts the agreement once our report is out (or, after a restart, again).
    pub fn start(&mut self, now: Time) -> SealOut {
        let mut out = SealOut::default();
        let actions = self.agreement.start(now);
        self.act(now, actions, &mut out);
        self.judge_new(now, None, &mut out);
        self.offer(now, &mut out);
        out
    }

    pub fn on_timeout(&mut self, now: Time) -> SealOut {
        let mut out = SealOut::default();
        let actions = self.agreement.on_timeout(now);
        self.act(now, actions, &mut out);
        // Decided (perhaps read back after a restart) but a pinned report is not here: ask the
        // others in turn for the part that is missing.
        if let (Some(part), false) = (self.missing_pin(), self.handed_on) {
            self.turn += 1;
            if let Some(&peer) = self.others.get(self.turn % self.others.len().max(1)) {
                if self.ask(now, peer) {
                    out.requests
                        .push((peer, Request::Records { hashes: vec![part] }));
                }
            }
        }
        out
    }

    /// The first missing part of a report the decision pins.
    fn missing_pin(&self) -> Option<Hash> {
        let Some((_, Value::Seal { reports })) = &self.decision else {
            return None;
        };
        reports.iter().find_map(|(_, h)| match self.walk(h) {
            Walk::Missing(part) => Some(part),
            _ => None,
        })
    }

    /// Applies a seal `Proposal` or `Vote` record.
    pub fn on_record(
        &mut self,
        now: Time,
        author: MemberIndex,
        hash: Hash,
        body: &Body,
    ) -> SealOut {
        let mut out = SealOut::default();
        let Some(taken) = self.agreement.on_record(now, author, body) else {
            return out;
        };
        match taken.receipt {
            Receipt::New | Receipt::Duplicate => {}
            other => out.faults.push(Fault::member(
                author,
                FaultKind::BadAgreementMessage,
                Some(hash),
                format!("seal of epoch {}: {other:?}", self.epoch),
            )),
        }
        self.judge_new(now, Some(author), &mut out);
        self.act(now, taken.actions, &mut out);
        out
    }

    /// The decision read back after a restart.
    pub fn restore(&mut self, round: u32, value: Value) {
        self.decision = Some((round, value));
    }

    fn ask(&mut self, now: Time, peer: MemberIndex) -> bool {
        if peer == self.me
            || self
                .asked
                .get(&peer)
                .is_some_and(|t| now.0 < t.0 + ASK_EVERY_MS)
        {
            return false;
        }
        self.asked.insert(peer, now);
        true
    }

    /// Judges the values met for the first time.
    fn judge_new(&mut self, now: Time, from: Option<MemberIndex>, out: &mut SealOut) {
        let fresh: Vec<ValueId> = self
            .agreement
            .values()
            .filter(|(id, _, _)| !self.judged.contains(*id))
            .map(|(id, _, _)| *id)
            .collect();
        for id in fresh {
            self.judged.insert(id);
            self.judge_one(now, id, from, out);
        }
    }

    /// What we say of a value: `valid(v)` of `docs/seal.md`, with the parts it waits for.
    fn assess(&self, value: &Value) -> (Validity, Vec<Hash>) {
        let Value::Seal { reports } = value else {
            return (Validity::Invalid, Vec::new());
        };
        let shape = reports.len() == self.pinned
            && reports.windows(2).all(|w| match (w.first(), w.get(1)) {
                (Some(a), Some(b)) => a.0 < b.0,
                _ => true,
            });
        if !shape {
            return (Validity::Invalid, Vec::new());
        }
        let mut missing = Vec::new();
        for (m, h) in reports {
            match self.walk(h) {
                Walk::Complete(_) if self.parts.get(h).is_some_and(|p| p.author == *m) => {}
                Walk::Complete(_) | Walk::Broken => return (Validity::Invalid, Vec::new()),
                Walk::Missing(part) => missing.push(part),
            }
        }
        if missing.is_empty() {
            (Validity::Valid, missing)
        } else {
            (Validity::Unknown, missing)
        }
    }

    /// Judges one value. A pinned report that is not here yet makes it unknown until the part
    /// arrives; we ask `from`, who showed us the value.
    fn judge_one(&mut self, now: Time, id: ValueId, from: Option<MemberIndex>, out: &mut SealOut) {
        let Some(value) = self.agreement.value(&id).cloned() else {
            return;
        };
        let (verdict, missing) = self.assess(&value);
        for part in missing {
            self.waiting.entry(part).or_default().insert(id);
            if let Some(peer) = from {
                if self.ask(now, peer) {
                    out.requests
                        .push((peer, Request::Records { hashes: vec![part] }));
                }
            }
        }
        if verdict != Validity::Unknown {
            let actions = self.agreement.set_validity(now, id, verdict);
            self.act(now, actions, out);
        }
    }

    /// Proposes, when we owe a value: our report and the other complete ones, by index.
    fn offer(&mut self, now: Time, out: &mut SealOut) {
        if self.agreement.engine().awaiting_value().is_none() {
            return;
        }
        let Some(own) = self.complete.get(&self.me).and_then(|l| l.first()).copied() else {
            return;
        };
        let mut pins: Vec<(MemberIndex, Hash)> = vec![(self.me, own)];
        for (&m, list) in &self.complete {
            if pins.len() >= self.pinned {
                break;
            }
            if let (false, Some(h)) = (m == self.me, list.first()) {
                pins.push((m, *h));
            }
        }
        if pins.len() < self.pinned {
            return;
        }
        pins.sort_unstable();
        let actions = self.agreement.propose(now, Value::Seal { reports: pins });
        self.act(now, actions, out);
    }

    fn act(&mut self, now: Time, actions: Vec<Action>, out: &mut SealOut) {
        for action in actions {
            match action {
                Action::Decide { .. } => {
                    if self.decision.is_none() {
                        if let Some((round, v)) = self.agreement.decision() {
                            self.decision = Some((round, v.clone()));
                        }
                    }
                    self.hand_on(out);
                }
                Action::NeedValue { .. } => self.offer(now, out),
                other => out.bodies.extend(self.agreement.body(&other)),
            }
        }
    }

    /// Hands the decision on once every pinned report is here.
    fn hand_on(&mut self, out: &mut SealOut) {
        if self.handed_on {
            return;
        }
        let Some((round, value)) = &self.decision else {
            return;
        };
        let Value::Seal { reports } = value else {
            return;
        };
        let mut lists = Vec::new();
        for (_, h) in reports {
            match self.lists.get(h) {
                Some(list) => lists.push(list.as_slice()),
                None => return,
            }
        }
        let hashes = final_hashes(lists, self.faulty);
        self.handed_on = true;
        out.decided = Some(Decided {
            round: *round,
            value: value.clone(),
            hashes,
        });
    }

    /// Members whose pinned reports list `hash` (they hold it and can serve it).
    pub fn holders(&self, hash: &Hash) -> Vec<MemberIndex> {
        let Some((_, Value::Seal { reports })) = &self.decision else {
            return Vec::new();
        };
        reports
            .iter()
            .filter(|(_, h)| {
                self.lists
                    .get(h)
                    .is_some_and(|list| list.binary_search(hash).is_ok())
            })
            .map(|(m, _)| *m)
            .collect()
    }

    /// Drops the reports once the final set is built.
    pub fn release(&mut self) {
        self.parts.clear();
        self.complete.clear();
        self.lists.clear();
        self.waiting.clear();
        self.released = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::{Genesis, Timing};
    use crate::keys::MemberSecrets;
    use rand_core::SeedableRng;

    fn consortium() -> Consortium {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
        let members = (1..=4u16)
            .map(|i| MemberSecrets::generate(&mut rng).member_info(i, &format!("m{i}"), vec![]))
            .collect();
        let timing = Timing {
            round_ms: 100,
            clock_skew_ms: 10,
            ..Timing::new(0, 1_000, 10_000, 1_000, 1_000, 1_000)
        };
        Consortium::new(Genesis::new("seal", 2, timing, members)).unwrap()
    }

    fn h(b: u8) -> Hash {
        [b; 32]
    }

    /// Applies member `m`'s report of `hashes` as one part; returns its pin.
    fn report(seal: &mut Seal, m: MemberIndex, hashes: &[Hash]) -> (MemberIndex, Hash) {
        let record = [100 + m as u8; 32];
        let out = seal.report_part(Time(0), m, 0, true, hashes, record, [0; 32]);
        assert!(out.faults.is_empty());
        (m, record)
    }

    /// A report whose parts list one hash twice, around an empty part, is broken: counted
    /// twice it would seal a submission on one member's word.
    #[test]
    fn a_report_listing_a_hash_twice_is_broken() {
        let part = |part, last, hashes: Vec<Hash>, prev| Part {
            author: 2,
            part,
            last,
            hashes,
            prev,
        };
        let mut parts = BTreeMap::new();
        parts.insert(h(10), part(0, false, vec![h(1)], [0; 32]));
        parts.insert(h(11), part(1, false, vec![], h(10)));
        parts.insert(h(12), part(2, true, vec![h(1)], h(11)));
        assert!(matches!(walk(&parts, &h(12)), Walk::Broken));
        parts.insert(h(13), part(2, true, vec![h(2)], h(11)));
        assert!(matches!(walk(&parts, &h(13)), Walk::Complete(l) if l == vec![h(1), h(2)]));
        assert_eq!(final_hashes([&[h(1), h(2)][..], &[h(2)]], 1), vec![h(2)]);
    }

    fn validity(seal: &Seal, v: &Value) -> Validity {
        seal.assess(v).0
    }

    fn vote(
        seal: &mut Seal,
        from: MemberIndex,
        kind: crate::consensus::VoteKind,
        v: &Value,
    ) -> SealOut {
        let body = Body::Vote {
            instance: Instance::Seal { epoch: 1 },
            kind,
            round: 0,
            value: Some(v.clone()),
        };
        seal.on_record(Time(0), from, [from as u8; 32], &body)
    }

    #[test]
    fn the_final_set_is_what_f_plus_one_pinned_reports_hold() {
        let c = consortium();
        let mut seal = Seal::new(&c, 2, 1);
        // f = 1, m = 3. Member 1 holds a, b; member 2 a, c; member 3 a, b, d; member 4 x.
        let pins = vec![
            report(&mut seal, 1, &[h(1), h(2)]),
            report(&mut seal, 2, &[h(1), h(3)]),
            report(&mut seal, 3, &[h(1), h(2), h(4)]),
        ];
        report(&mut seal, 4, &[h(9)]);
        let value = Value::Seal { reports: pins };
        let mut decided = None;
        for m in [1, 3, 4] {
            let out = vote(&mut seal, m, crate::consensus::VoteKind::Precommit, &value);
            decided = decided.or(out.decided);
        }
        let d = decided.expect("three precommits decide");
        assert_eq!(
            d.hashes,
            vec![h(1), h(2)],
            "a in 3 reports, b in 2; c and d in 1"
        );
        assert_eq!(seal.holders(&h(2)), vec![1, 3]);
        assert!(
            seal.holders(&h(9)).is_empty(),
            "member 4's report is not pinned"
        );
    }

    #[test]
    fn values_that_pin_wrongly_are_invalid_and_missing_reports_unknown() {
        let c = consortium();
        let mut seal = Seal::new(&c, 2, 1);
        let a = report(&mut seal, 1, &[h(1)]);
        let b = report(&mut seal, 2, &[h(1)]);
        let cc = report(&mut seal, 3, &[h(1)]);
        assert_eq!(
            validity(
                &seal,
                &Value::Seal {
                    reports: vec![a, b, cc]
                }
            ),
            Validity::Valid
        );
        assert_eq!(
            validity(
                &seal,
                &Value::Seal {
                    reports: vec![a, b]
                }
            ),
            Validity::Invalid,
            "m - 1 reports"
        );
        assert_eq!(
            validity(
                &seal,
                &Value::Seal {
                    reports: vec![b, a, cc]
                }
            ),
            Validity::Invalid,
            "not by member"
        );
        assert_eq!(
            validity(
                &seal,
                &Value::Seal {
                    reports: vec![a, a, cc]
                }
            ),
            Validity::Invalid,
            "one member twice"
        );
        assert_eq!(
            validity(
                &seal,
                &Value::Seal {
                    reports: vec![a, b, (4, [7; 32])]
                }
            ),
            Validity::Unknown,
            "member 4's report is not here"
        );
        assert_eq!(
            validity(
                &seal,
                &Value::SetupRetry {
                    next: vec![1, 2, 3]
                }
            ),
            Validity::Invalid
        );
    }

    #[test]
    fn a_report_is_read_back_from_its_pinned_last_part() {
        let c = consortium();
        let mut seal = Seal::new(&c, 2, 1);
        assert!(check_report(&c, 0, &[h(2), h(1)]).is_err());
        assert!(check_report(&c, 0, &[h(1), h(1)]).is_err());
        assert!(check_report(&c, max_parts(&c), &[]).is_err());
        // Member 1's report in three parts, each continuing the one before.
        let (p0, p1, p2) = ([1; 32], [2; 32], [3; 32]);
        seal.report_part(Time(0), 1, 0, false, &[h(1), h(5)], p0, [0; 32]);
        seal.report_part(Time(0), 1, 1, false, &[h(6)], p1, p0);
        seal.report_part(Time(0), 1, 2, true, &[h(7)], p2, p1);
        let b = report(&mut seal, 2, &[]);
        let cc = report(&mut seal, 3, &[]);
        let v = Value::Seal {
            reports: vec![(1, p2), b, cc],
        };
        assert_eq!(validity(&seal, &v), Validity::Valid);
        // A part posted after the report ends changes nothing; a second report is a fault.
        let out = seal.report_part(Time(0), 1, 0, true, &[h(9)], [4; 32], p2);
        assert_eq!(out.faults.len(), 1, "a second report");
        assert_eq!(validity(&seal, &v), Validity::Valid);
        // Pinning another member's report, or a part that is not a last one, is invalid.
        let wrong = Value::Seal {
            reports: vec![(1, b.1), b, cc],
        };
        assert_eq!(validity(&seal, &wrong), Validity::Invalid);
        let not_last = Value::Seal {
            reports: vec![(1, p1), b, cc],
        };
        assert_eq!(validity(&seal, &not_last), Validity::Invalid);
        // Parts that do not continue each other (hashes not ascending) make a broken report.
        seal.report_part(Time(0), 4, 0, false, &[h(8)], [10; 32], [0; 32]);
        seal.report_part(Time(0), 4, 1, true, &[h(2)], [11; 32], [10; 32]);
        let broken = Value::Seal {
            reports: vec![b, cc, (4, [11; 32])],
        };
        assert_eq!(validity(&seal, &broken), Validity::Invalid);
        // A fork's report, met only by its last part: unknown until its earlier part is here.
        seal.report_part(Time(0), 4, 1, true, &[h(9)], [13; 32], [12; 32]);
        let fork = Value::Seal {
            reports: vec![b, cc, (4, [13; 32])],
        };
        assert_eq!(seal.assess(&fork), (Validity::Unknown, vec![[12; 32]]));
        seal.report_part(Time(0), 4, 0, false, &[h(3)], [12; 32], [0; 32]);
        assert_eq!(validity(&seal, &fork), Validity::Valid);
    }

    #[test]
    fn large_reports_are_cut_into_parts_under_the_record_limit() {
        let c = consortium();
        let seal = Seal::new(&c, 1, 1);
        // 100k submissions per member of 4: 400k hashes, the most the quotas allow.
        let hashes: Vec<Hash> = (0u32..400_000)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..4].copy_from_slice(&i.to_be_bytes());
                h
            })
            .collect();
        let bodies = seal.report_bodies(hashes);
        assert_eq!(bodies.len(), 400_000usize.div_ceil(REPORT_PART_MAX));
        for (i, b) in bodies.iter().enumerate() {
            let Body::Report {
                part, last, hashes, ..
            } = b
            else {
                panic!("not a report")
            };
            assert_eq!(*part as usize, i);
            assert_eq!(*last, i + 1 == bodies.len());
            assert!(check_report(&c, *part, hashes).is_ok());
            let size = postcard::to_stdvec(b).unwrap().len();
            assert!(
                size + 1024 < crate::record::MAX_RECORD_BYTES,
                "part of {size} bytes"
            );
        }
        let empty = seal.report_bodies(Vec::new());
        assert_eq!(empty.len(), 1, "an empty report is one empty last part");
    }

    #[test]
    fn the_proposer_pins_its_own_report_and_waits_for_m() {
        let c = consortium();
        // Epoch 1: round 0 is proposed by members[1 % 4] = member 2.
        let mut seal = Seal::new(&c, 2, 1);
        let out = seal.start(Time(0));
        assert!(out.bodies.is_empty(), "no report yet, nothing to propose");
        report(&mut seal, 4, &[h(1)]);
        report(&mut seal, 1, &[h(1)]);
        let out = seal.report_part(Time(0), 2, 0, true, &[h(1)], [102; 32], [0; 32]);
        let proposal = out
            .bodies
            .iter()
            .find_map(|b| match b {
                Body::Proposal { value, .. } => Some(value.clone()),
                _ => None,
            })
            .expect("proposes once m reports are complete");
        assert_eq!(
            proposal,
            Value::Seal {
                reports: vec![(1, [101; 32]), (2, [102; 32]), (4, [104; 32])]
            }
        );
    }
}
