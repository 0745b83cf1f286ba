//! The seal (DESIGN 4.4): single-shot Byzantine agreement on the epoch's final set, as
//! `docs/seal.md` describes. Each member reports once the submissions it holds; the members
//! then run Tendermint ([`crate::agreement`]) on a value that pins `m = n - f` reports of
//! distinct members; the final set is every submission listed in at least `f + 1` of them.
//!
//! This module knows reports, values and votes only: no submission, share or result.

use std::collections::BTreeMap;

use crate::agreement::Agreement;
use crate::consensus::{Action, Receipt, Validity};
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

/// One member's report as its parts arrive (in its chain's order).
#[derive(Default)]
struct Report {
    parts: u32,
    hashes: Vec<Hash>,
    /// The record hash of the last part, once the report is complete.
    complete: Option<Hash>,
    /// The parts broke a rule: this report can never be pinned.
    broken: bool,
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
    epoch: u64,
    me: MemberIndex,
    faulty: usize,
    pinned: usize,
    agreement: Agreement,
    reports: BTreeMap<MemberIndex, Report>,
    /// The decision (stored before it is acted on), and whether it was handed on.
    decision: Option<(u32, Value)>,
    handed_on: bool,
    asked: BTreeMap<MemberIndex, Time>,
}

impl Seal {
    pub fn new(consortium: &Consortium, me: MemberIndex, epoch: u64) -> Seal {
        Seal {
            epoch,
            me,
            faulty: consortium.faulty(),
            pinned: consortium.reports_pinned(),
            agreement: Agreement::new(consortium, me, Instance::Seal { epoch }),
            reports: BTreeMap::new(),
            decision: None,
            handed_on: false,
            asked: BTreeMap::new(),
        }
    }

    /// Whether our own report is complete in the log.
    pub fn reported(&self) -> bool {
        self.reports
            .get(&self.me)
            .is_some_and(|r| r.complete.is_some())
    }
    pub fn decision(&self) -> Option<(u32, &Value)> {
        self.decision.as_ref().map(|(r, v)| (*r, v))
    }
    pub fn round(&self) -> u32 {
        self.agreement.engine().round()
    }
    pub fn exhausted(&self) -> bool {
        self.agreement.engine().exhausted()
    }
    pub fn next_timeout(&self) -> Option<Time> {
        if self.decision.is_some() {
            return None;
        }
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

    /// Applies a report part (in its author's chain order); the rules across parts are checked
    /// here, so a report that breaks one is never pinned and its author is named.
    pub fn report_part(
        &mut self,
        now: Time,
        author: MemberIndex,
        part: u32,
        last: bool,
        hashes: &[Hash],
        record: Hash,
    ) -> SealOut {
        let mut out = SealOut::default();
        let r = self.reports.entry(author).or_default();
        let in_order = part == r.parts
            && r.complete.is_none()
            && hashes
                .first()
                .is_none_or(|h| r.hashes.last().is_none_or(|l| l < h));
        if r.broken {
            return out;
        }
        if !in_order {
            r.broken = true;
            out.faults.push(Fault::member(
                author,
                FaultKind::BadAgreementMessage,
                Some(record),
                format!("report part {part} out of order (a second report?)"),
            ));
            return out;
        }
        r.parts += 1;
        r.hashes.extend_from_slice(hashes);
        if last {
            r.complete = Some(record);
            self.judge(now, &mut out);
            self.offer(now, &mut out);
            self.hand_on(&mut out);
        }
        out
    }

    /// Starts the agreement once our report is out.
    pub fn start(&mut self, now: Time) -> SealOut {
        let mut out = SealOut::default();
        let actions = self.agreement.start(now);
        self.act(now, actions, &mut out);
        self.judge(now, &mut out);
        out
    }

    pub fn on_timeout(&mut self, now: Time) -> SealOut {
        let mut out = SealOut::default();
        if self.decision.is_none() {
            let actions = self.agreement.on_timeout(now);
            self.act(now, actions, &mut out);
        }
        out
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
        self.act(now, taken.actions, &mut out);
        self.judge(now, &mut out);
        // Pinned reports we lack: ask the member that showed us the value.
        if self.missing_pins() && self.ask(now, author) {
            out.requests.push((author, Request::Heads));
        }
        out
    }

    /// The decision read back after a restart.
    pub fn restore(&mut self, round: u32, value: Value) {
        self.decision = Some((round, value));
    }

    /// Own messages decided on but never stored (after a restart).
    pub fn unrecorded(&self) -> Vec<Body> {
        self.agreement
            .unrecorded()
            .iter()
            .filter_map(|a| self.agreement.body(a))
            .collect()
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

    fn missing_pins(&self) -> bool {
        self.agreement.values().any(|(_, v, validity)| {
            validity == Validity::Unknown
                && matches!(v, Value::Seal { reports } if reports.iter().any(|(m, h)| {
                    self.reports.get(m).and_then(|r| r.complete) != Some(*h)
                }))
        })
    }

    /// What we say of a value: `valid(v)` of SEAL.md.
    fn validity(&self, value: &Value) -> Validity {
        let Value::Seal { reports } = value else {
            return Validity::Invalid;
        };
        let distinct = reports.windows(2).all(|w| match (w.first(), w.get(1)) {
            (Some(a), Some(b)) => a.0 < b.0,
            _ => true,
        });
        if reports.len() != self.pinned || !distinct {
            return Validity::Invalid;
        }
        let mut verdict = Validity::Valid;
        for (m, h) in reports {
            match self.reports.get(m) {
                Some(r) if r.broken => return Validity::Invalid,
                Some(r) if r.complete == Some(*h) => {}
                _ => verdict = Validity::Unknown,
            }
        }
        verdict
    }

    fn judge(&mut self, now: Time, out: &mut SealOut) {
        let verdicts: Vec<_> = self
            .agreement
            .values()
            .filter(|(_, _, old)| *old != Validity::Valid && *old != Validity::Invalid)
            .map(|(id, v, old)| (*id, self.validity(v), old))
            .filter(|(_, new, old)| new != old)
            .map(|(id, new, _)| (id, new))
            .collect();
        for (id, v) in verdicts {
            let actions = self.agreement.set_validity(now, id, v);
            self.act(now, actions, out);
        }
    }

    /// Proposes, when we owe a value: our report and the other complete ones, by index.
    fn offer(&mut self, now: Time, out: &mut SealOut) {
        if self.agreement.engine().awaiting_value().is_none() {
            return;
        }
        let Some(own) = self.reports.get(&self.me).and_then(|r| r.complete) else {
            return;
        };
        let mut pins: Vec<(MemberIndex, Hash)> = vec![(self.me, own)];
        for (&m, r) in &self.reports {
            if pins.len() >= self.pinned {
                break;
            }
            if let (false, Some(h)) = (m == self.me, r.complete) {
                pins.push((m, h));
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
        let mut all = Vec::new();
        for (m, h) in reports {
            match self.reports.get(m) {
                Some(r) if r.complete == Some(*h) => all.extend_from_slice(&r.hashes),
                _ => return,
            }
        }
        all.sort_unstable();
        let mut hashes = Vec::new();
        let mut i = 0;
        while let Some(h) = all.get(i) {
            let run = all.iter().skip(i).take_while(|x| *x == h).count();
            if run > self.faulty {
                hashes.push(*h);
            }
            i += run.max(1);
        }
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
            .filter(|(m, _)| {
                self.reports
                    .get(m)
                    .is_some_and(|r| r.hashes.binary_search(hash).is_ok())
            })
            .map(|(m, _)| *m)
            .collect()
    }

    /// Drops the reports' hash lists once the final set is built.
    pub fn release(&mut self) {
        self.reports.clear();
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
        let out = seal.report_part(Time(0), m, 0, true, hashes, record);
        assert!(out.faults.is_empty());
        (m, record)
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
            seal.validity(&Value::Seal {
                reports: vec![a, b, cc]
            }),
            Validity::Valid
        );
        assert_eq!(
            seal.validity(&Value::Seal {
                reports: vec![a, b]
            }),
            Validity::Invalid,
            "m - 1 reports"
        );
        assert_eq!(
            seal.validity(&Value::Seal {
                reports: vec![b, a, cc]
            }),
            Validity::Invalid,
            "not by member"
        );
        assert_eq!(
            seal.validity(&Value::Seal {
                reports: vec![a, a, cc]
            }),
            Validity::Invalid,
            "one member twice"
        );
        assert_eq!(
            seal.validity(&Value::Seal {
                reports: vec![a, b, (4, [7; 32])]
            }),
            Validity::Unknown,
            "member 4's report is not here"
        );
        assert_eq!(
            seal.validity(&Value::SetupRetry {
                next: vec![1, 2, 3]
            }),
            Validity::Invalid
        );
    }

    #[test]
    fn a_second_report_or_parts_out_of_order_break_the_report() {
        let c = consortium();
        let mut seal = Seal::new(&c, 2, 1);
        assert!(check_report(&c, 0, &[h(2), h(1)]).is_err());
        assert!(check_report(&c, 0, &[h(1), h(1)]).is_err());
        assert!(check_report(&c, max_parts(&c), &[]).is_err());
        let out = seal.report_part(Time(0), 1, 0, false, &[h(1), h(5)], [1; 32]);
        assert!(out.faults.is_empty());
        let out = seal.report_part(Time(0), 1, 1, false, &[h(3)], [2; 32]);
        assert_eq!(out.faults.len(), 1, "part 1 must continue above part 0");
        let pin = (1, [3; 32]);
        seal.report_part(Time(0), 1, 2, true, &[h(7)], pin.1);
        let b = report(&mut seal, 2, &[]);
        let cc = report(&mut seal, 3, &[]);
        assert_eq!(
            seal.validity(&Value::Seal {
                reports: vec![pin, b, cc]
            }),
            Validity::Invalid
        );
        // Complete, then another part: a second report.
        let out = seal.report_part(Time(0), 2, 1, true, &[h(8)], [9; 32]);
        assert_eq!(out.faults.len(), 1);
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
        let out = seal.report_part(Time(0), 2, 0, true, &[h(1)], [102; 32]);
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
