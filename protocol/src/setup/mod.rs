//! Setup (DESIGN 4.1): the two FROST DKG runs (`x` for decryption, `k` for pseudonyms), in
//! numbered attempts that do not wait for every member.
//!
//! Attempt 0 runs with every member. Each attempt ends with an agreement instance
//! ([`crate::agreement`]) that decides either `SetupKeys` (the transcripts of both runs: their
//! keys are used from then on, by every member alike) or `SetupRetry` (the participants of the
//! next attempt: the members that posted, by the attempt's deadline, everything they could
//! on the proposer's log; at least `q` of them). A member enters the instance once it computed
//! both runs' keys, or at the attempt's deadline. It votes for `SetupKeys` only with the very
//! transcripts it computed itself, and for `SetupRetry` only past the deadline, when it could
//! not compute the keys, and when every member named posted in this attempt; it adopts
//! whatever a quorum precommitted.

pub mod dkg;

use std::collections::{BTreeMap, BTreeSet};

use crate::agreement::Agreement;
use crate::consensus::{Action, Receipt, Validity};
use crate::genesis::Consortium;
use crate::keys::MemberSecrets;
use crate::local::{self, LocalWrite};
use crate::record::{Body, Hash, Instance, Run, Value};
use crate::step::{Event, Fault, FaultKind, Phase, Wait};
use crate::time::Time;
use crate::MemberIndex;

use dkg::DkgRun;
pub use dkg::{DkgReject, RunKeys};

/// Attempts before setup gives up (each is bounded by the agreement's rounds too).
pub const MAX_ATTEMPTS: u32 = 8;

/// The consortium keys in use: both runs of the decided attempt.
#[derive(Clone, Debug)]
pub struct SetupKeys {
    pub attempt: u32,
    /// Decryption key `X`, its verifying shares and our share of `x`.
    pub x: RunKeys,
    /// Pseudonym key `K`, its verifying shares and our share of `k`.
    pub k: RunKeys,
}

struct Attempt {
    number: u32,
    participants: Vec<MemberIndex>,
    runs: [DkgRun; 2],
    agreement: Agreement,
    /// When this member learned of the attempt (attempt 0: the genesis start).
    began: Time,
}

impl Attempt {
    fn run(&self, run: Run) -> &DkgRun {
        match run {
            Run::Decryption => &self.runs[0],
            Run::Pseudonym => &self.runs[1],
        }
    }
    fn run_mut(&mut self, run: Run) -> &mut DkgRun {
        match run {
            Run::Decryption => &mut self.runs[0],
            Run::Pseudonym => &mut self.runs[1],
        }
    }
    fn transcripts(&self) -> Option<[Hash; 2]> {
        let [x, k] = &self.runs;
        Some([x.computed()?.1, k.computed()?.1])
    }
}

/// What setup hands the bank after an input.
#[derive(Default)]
pub struct SetupOut {
    pub bodies: Vec<Body>,
    pub local: Vec<LocalWrite>,
    pub events: Vec<Event>,
    pub faults: Vec<Fault>,
}

pub struct Setup {
    me: MemberIndex,
    attempts: Vec<Attempt>,
    keys: Option<SetupKeys>,
    /// Each attempt's decision, stored before it is acted on (or read back after a restart).
    decisions: BTreeMap<u32, Value>,
    failed: Option<String>,
}

impl Setup {
    pub fn new(consortium: &Consortium, me: MemberIndex) -> Setup {
        let mut setup = Setup {
            me,
            attempts: Vec::new(),
            keys: None,
            decisions: BTreeMap::new(),
            failed: None,
        };
        setup.begin(
            consortium,
            0,
            consortium.indices().collect(),
            consortium.start(),
        );
        setup
    }

    fn begin(
        &mut self,
        consortium: &Consortium,
        number: u32,
        participants: Vec<MemberIndex>,
        began: Time,
    ) {
        let runs = [Run::Decryption, Run::Pseudonym]
            .map(|run| DkgRun::new(consortium, run, number, participants.clone()));
        self.attempts.push(Attempt {
            number,
            participants,
            runs,
            agreement: Agreement::new(consortium, self.me, Instance::Setup { attempt: number }),
            began,
        });
    }

    pub fn keys(&self) -> Option<&SetupKeys> {
        self.keys.as_ref()
    }
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }
    /// The attempt under way (or decided) and its participants.
    pub fn current(&self) -> (u32, Vec<MemberIndex>) {
        self.attempts
            .last()
            .map(|a| (a.number, a.participants.clone()))
            .unwrap_or_default()
    }

    fn attempt(&self, number: u32) -> Option<&Attempt> {
        self.attempts.get(number as usize)
    }
    fn attempt_mut(&mut self, number: u32) -> Option<&mut Attempt> {
        self.attempts.get_mut(number as usize)
    }

    /// A decision read back from the local store: acted on again, never re-derived.
    pub fn restore(&mut self, attempt: u32, value: Value) {
        self.decisions.insert(attempt, value);
    }

    /// Whether a setup `Proposal` or `Vote` by `author` would be counted.
    pub fn accepts(&self, author: MemberIndex, body: &Body) -> bool {
        match Agreement::message_of(body) {
            Some((Instance::Setup { attempt }, _, _)) => self
                .attempt(attempt)
                .is_some_and(|a| a.agreement.accepts(author, body)),
            _ => false,
        }
    }

    /// Whether records of `attempt` can be judged yet.
    pub fn knows_attempt(&self, attempt: u32) -> bool {
        (attempt as usize) < self.attempts.len()
    }

    /// The deadline of an attempt at this member: its slot in the absolute schedule, and never
    /// less than one attempt's length after the member learned of it.
    fn deadline(consortium: &Consortium, a: &Attempt) -> Time {
        let slot = consortium.start().plus(
            consortium
                .attempt_ms()
                .saturating_mul(u64::from(a.number) + 1),
        );
        slot.max(a.began.plus(consortium.attempt_ms()))
    }

    /// Checks a DKG record that needs no other record (STYLE 5): attempt, participant, package.
    pub fn check_dkg(&self, author: MemberIndex, body: &Body) -> Result<(), CheckDkg> {
        match body {
            Body::DkgRound1 {
                run,
                attempt,
                package,
            } => {
                let a = self
                    .attempt(*attempt)
                    .ok_or(CheckDkg::Wait(Wait::Attempt(*attempt)))?;
                a.run(*run)
                    .check_round1(author, *attempt, package)
                    .map(|_| ())
                    .map_err(CheckDkg::Reject)
            }
            Body::DkgRound2 {
                run,
                attempt,
                shares,
                ..
            } => {
                let a = self
                    .attempt(*attempt)
                    .ok_or(CheckDkg::Wait(Wait::Attempt(*attempt)))?;
                a.run(*run)
                    .check_round2(author, *attempt, shares)
                    .map_err(CheckDkg::Reject)
            }
            _ => Ok(()),
        }
    }

    /// Applies a DKG record (checked, durable).
    pub fn apply_dkg(
        &mut self,
        consortium: &Consortium,
        secrets: &MemberSecrets,
        author: MemberIndex,
        hash: Hash,
        body: &Body,
        out: &mut SetupOut,
    ) {
        let me = self.me;
        match body {
            Body::DkgRound1 {
                run,
                attempt,
                package,
            } => {
                let Some(a) = self.attempt_mut(*attempt) else {
                    return;
                };
                let dkg = a.run_mut(*run);
                match dkg.check_round1(author, *attempt, package) {
                    Ok(pkg) => dkg.apply_round1(author, pkg),
                    Err(DkgReject::Duplicate) => out.faults.push(Fault::member(
                        author,
                        FaultKind::Duplicate,
                        Some(hash),
                        "second round-1 package",
                    )),
                    Err(_) => {}
                }
                dkg.note_record(author, 0, hash);
                if author == me {
                    // Replaying our own record after a restart: recompute its secret.
                    dkg.resume_round1(consortium, me, secrets);
                }
            }
            Body::DkgRound2 {
                run,
                attempt,
                ephemeral,
                shares,
            } => {
                let Some(a) = self.attempt_mut(*attempt) else {
                    return;
                };
                let dkg = a.run_mut(*run);
                dkg.note_record(author, 1, hash);
                if let Err(why) =
                    dkg.apply_round2(consortium, me, secrets, author, ephemeral, shares)
                {
                    out.faults.push(Fault::member(
                        author,
                        FaultKind::BadDkgPackage,
                        Some(hash),
                        why,
                    ));
                }
                if author == me {
                    dkg.resume_round2(consortium, me, secrets);
                }
            }
            _ => {}
        }
    }

    /// Applies a setup `Proposal` or `Vote` record.
    pub fn apply_agreement(
        &mut self,
        consortium: &Consortium,
        now: Time,
        author: MemberIndex,
        hash: Hash,
        body: &Body,
        out: &mut SetupOut,
    ) {
        let Some((Instance::Setup { attempt }, _, _)) = Agreement::message_of(body) else {
            return;
        };
        let Some(a) = self.attempt_mut(attempt) else {
            return;
        };
        let Some(taken) = a.agreement.on_record(now, author, body) else {
            return;
        };
        match taken.receipt {
            Receipt::New | Receipt::Duplicate => {}
            other => out.faults.push(Fault::member(
                author,
                FaultKind::BadAgreementMessage,
                Some(hash),
                format!("setup attempt {attempt}: {other:?}"),
            )),
        }
        self.judge(consortium, now, attempt, out);
        self.act(consortium, now, attempt, taken.actions, out);
    }

    /// Runs everything time or new records made possible.
    pub fn progress(
        &mut self,
        consortium: &Consortium,
        secrets: &MemberSecrets,
        now: Time,
        out: &mut SetupOut,
    ) {
        if now < consortium.start() || self.keys.is_some() || self.failed.is_some() {
            return;
        }
        let me = self.me;
        let Some(number) = self.attempts.last().map(|a| a.number) else {
            return;
        };
        if let Some(a) = self.attempt_mut(number) {
            for run in Run::ALL {
                let dkg = a.run_mut(run);
                if let Some(body) = dkg.round1_body(consortium, me, secrets) {
                    out.bodies.push(body);
                }
                if let Some(body) = dkg.round2_body(consortium, me, secrets) {
                    out.bodies.push(body);
                }
                if let Err(why) = dkg.try_finish(&consortium.id, me) {
                    dkg.fail(why);
                }
            }
        }
        let Some(a) = self.attempt(number) else {
            return;
        };
        let computed = a.transcripts().is_some();
        let due = now >= Self::deadline(consortium, a);
        let mut actions = Vec::new();
        if let Some(a) = self.attempt_mut(number) {
            if (computed || due) && !a.agreement.engine().is_started() {
                actions.extend(a.agreement.start(now));
            }
            actions.extend(a.agreement.on_timeout(now));
        }
        self.judge(consortium, now, number, out);
        self.act(consortium, now, number, actions, out);
        // A value owed as proposer may have become available (keys computed, deadline passed).
        self.offer_value(consortium, now, number, out);
        if let Some(a) = self.attempt(number) {
            if a.agreement.engine().exhausted() && self.keys.is_none() {
                let reason = format!(
                    "setup attempt {number}: no agreement in {} rounds ({}; {})",
                    a.agreement.engine().max_rounds(),
                    a.run(Run::Decryption).waiting_for(),
                    a.run(Run::Pseudonym).waiting_for()
                );
                self.fail(reason, out);
            }
        }
    }

    fn fail(&mut self, reason: String, out: &mut SetupOut) {
        if self.failed.is_none() {
            out.events.push(Event::Failed {
                epoch: None,
                phase: Phase::Setup,
                reason: reason.clone(),
            });
            self.failed = Some(reason);
        }
    }

    /// What we say of each value of an attempt's instance (see the module doc).
    fn judge(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some(a) = self.attempt(number) else {
            return;
        };
        let mine = a.transcripts();
        let due = now >= Self::deadline(consortium, a);
        let mut verdicts = Vec::new();
        for (id, value, old) in a.agreement.values() {
            // A verdict once given stands (a value valid past the deadline stays valid when our
            // keys come in later, so a member locked on it can still be followed).
            if matches!(old, Validity::Invalid | Validity::Valid) {
                continue;
            }
            let verdict = match value {
                Value::SetupKeys { transcripts } => match mine {
                    Some(t) if t == *transcripts => Validity::Valid,
                    Some(_) => Validity::Invalid,
                    None => Validity::Unknown,
                },
                Value::SetupRetry { next } => {
                    let sorted = next.windows(2).all(|w| w.first() < w.get(1));
                    let within = next.iter().all(|m| a.participants.contains(m));
                    if !sorted || !within || next.len() < consortium.quorum() {
                        Validity::Invalid
                    } else if mine.is_none() && due && next.iter().all(|&m| Self::posted(a, m)) {
                        Validity::Valid
                    } else {
                        Validity::Available
                    }
                }
                Value::Seal { .. } => Validity::Invalid,
            };
            if verdict != old {
                verdicts.push((*id, verdict));
            }
        }
        let mut actions = Vec::new();
        if let Some(a) = self.attempt_mut(number) {
            for (id, v) in verdicts {
                actions.extend(a.agreement.set_validity(now, id, v));
            }
        }
        self.act(consortium, now, number, actions, out);
    }

    /// Whether `member` posted both its round-1 packages in the attempt.
    fn posted(a: &Attempt, member: MemberIndex) -> bool {
        Run::ALL.iter().all(|&run| a.run(run).has_round1(member))
    }

    /// Whether `member` posted everything it could in the attempt: its round-2 records too
    /// once every round-1 package was in.
    fn posted_all(a: &Attempt, member: MemberIndex) -> bool {
        Run::ALL.iter().all(|&run| {
            let dkg = a.run(run);
            dkg.has_round1(member) && (!dkg.round1_complete() || dkg.has_round2(member))
        })
    }

    /// The value this member proposes, if it has one yet.
    fn value_for(&self, consortium: &Consortium, now: Time, a: &Attempt) -> Option<Value> {
        if let Some(transcripts) = a.transcripts() {
            return Some(Value::SetupKeys { transcripts });
        }
        if now < Self::deadline(consortium, a) || a.number + 1 >= MAX_ATTEMPTS {
            return None;
        }
        let next: Vec<MemberIndex> = a
            .participants
            .iter()
            .copied()
            .filter(|&m| Self::posted_all(a, m))
            .collect();
        (next.len() >= consortium.quorum()).then_some(Value::SetupRetry { next })
    }

    fn offer_value(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some(a) = self.attempt(number) else {
            return;
        };
        if a.agreement.engine().awaiting_value().is_none() {
            return;
        }
        let Some(value) = self.value_for(consortium, now, a) else {
            return;
        };
        let mut actions = Vec::new();
        if let Some(a) = self.attempt_mut(number) {
            actions = a.agreement.propose(now, value);
        }
        self.act(consortium, now, number, actions, out);
    }

    fn act(
        &mut self,
        consortium: &Consortium,
        now: Time,
        number: u32,
        actions: Vec<Action>,
        out: &mut SetupOut,
    ) {
        for action in actions {
            match action {
                Action::Decide { .. } => self.decided(consortium, now, number, out),
                Action::NeedValue { .. } => self.offer_value(consortium, now, number, out),
                other => {
                    if let Some(body) = self.attempt(number).and_then(|a| a.agreement.body(&other))
                    {
                        out.bodies.push(body);
                    }
                }
            }
        }
        self.adopt(consortium, now, number, out);
    }

    /// Acts on an attempt's decision: stored first, then keys used or the next attempt begun.
    fn decided(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some((_, value)) = self.attempt(number).and_then(|a| a.agreement.decision()) else {
            return;
        };
        let value = value.clone();
        if self.decisions.contains_key(&number) {
            return;
        }
        out.local.push(local::setup_decision(number, &value));
        self.decisions.insert(number, value);
        self.adopt(consortium, now, number, out);
    }

    /// Follows the stored decision of attempt `number`, once what it needs is here.
    fn adopt(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some(value) = self.decisions.get(&number).cloned() else {
            return;
        };
        match value {
            Value::SetupRetry { next } => {
                if self.knows_attempt(number + 1) {
                    return;
                }
                out.events.push(Event::SetupRetry {
                    attempt: number,
                    next: next.clone(),
                });
                self.begin(consortium, number + 1, next, now);
            }
            Value::SetupKeys { transcripts } => {
                if self.keys.is_some() {
                    return;
                }
                let Some(a) = self.attempt(number) else {
                    return;
                };
                if a.transcripts() != Some(transcripts) {
                    return; // not computed yet here (records still arriving)
                }
                let [x, k] = &a.runs;
                let (Some((x, _)), Some((k, _))) = (x.computed(), k.computed()) else {
                    return;
                };
                let keys = SetupKeys {
                    attempt: number,
                    x: x.clone(),
                    k: k.clone(),
                };
                out.events.push(Event::SetupDecided {
                    attempt: number,
                    participants: a.participants.clone(),
                });
                self.keys = Some(keys);
            }
            Value::Seal { .. } => {}
        }
    }

    /// After records were applied or time passed: decisions that were waiting for keys to be
    /// computed (or for a restored decision) take effect.
    pub fn settle(&mut self, consortium: &Consortium, now: Time, out: &mut SetupOut) {
        let numbers: Vec<u32> = self.attempts.iter().map(|a| a.number).collect();
        for number in numbers {
            self.judge(consortium, now, number, out);
            self.adopt(consortium, now, number, out);
        }
    }

    pub fn next_timeout(&self, consortium: &Consortium) -> Option<Time> {
        if self.keys.is_some() || self.failed.is_some() {
            return None;
        }
        let a = self.attempts.last()?;
        let deadline = Self::deadline(consortium, a);
        [Some(deadline), a.agreement.next_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Members with a decided attempt's key shares (for OPRF evaluation and decryption).
    pub fn participants(&self) -> BTreeSet<MemberIndex> {
        self.keys
            .as_ref()
            .map(|k| k.x.verifying.keys().copied().collect())
            .unwrap_or_default()
    }

    /// `(round-1, round-2, participants)` of both runs of the current attempt, for status.
    pub fn progress_counts(&self) -> Vec<(Run, usize, usize, usize)> {
        let Some(a) = self.attempts.last() else {
            return Vec::new();
        };
        Run::ALL
            .iter()
            .map(|&run| {
                let (r1, r2, n) = a.run(run).progress();
                (run, r1, r2, n)
            })
            .collect()
    }

    /// Whether a deferred record waiting for `wait` still has to wait.
    pub fn still_waiting(&self, wait: Wait) -> bool {
        match wait {
            Wait::Keys => self.keys.is_none(),
            Wait::Attempt(a) => !self.knows_attempt(a),
            Wait::FinalSet(_) => false,
        }
    }
}

/// Why a DKG record cannot be accepted now.
pub enum CheckDkg {
    Reject(DkgReject),
    Wait(Wait),
}
