//! Single-shot Byzantine agreement: Tendermint for one height (DESIGN 4.4), following
//! Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus" (arXiv:1807.04938),
//! Algorithm 1. Comments cite its line numbers.
//!
//! Sans-IO: the engine takes messages, validity verdicts and time, and returns [`Action`]s
//! (propose, vote, decide). It knows values only by their id; the caller keeps the values,
//! judges them and tells the engine with [`Tendermint::set_validity`]. Messages travel as signed
//! records on the log, so the caller feeds the engine its own messages too (when its own
//! records are applied), exactly like everyone else's.
//!
//! Deviations from the paper, each safe for the reason given:
//! - Votes carry the value they vote for (values are small), so the rules that need `v`
//!   (lines 36 and 49) take it from the votes instead of requiring the proposal: a member that
//!   missed or was lied to about a proposal still locks and decides from `Q` votes.
//! - Validity has two levels. `Valid` is what a member would vote for (line 22's `valid(v)`);
//!   `Available` is enough to *decide* a value `Q` members precommitted (line 49): at least
//!   `Q - f > f` of them are honest and found it valid, so a member whose local view differs
//!   (it holds more than they did, say) still adopts the decision.
//! - Every member, proposer included, arms the propose timeout when it enters a round, so a
//!   proposer that cannot get a value in time prevotes nil like everyone else.
//! - Rounds are bounded (`max_rounds`): what one member can sign per instance is bounded.
//! - A member that leaves a round (by its precommit timeout, line 65, or by following `f + 1`
//!   members to a higher round, line 55) first casts nil for any prevote or precommit it has not
//!   cast in that round. Algorithm 1 as written can stall otherwise: a faulty member sends its
//!   precommit to one honest member only, which times out into the next round before its own
//!   precommit; the others then wait for a third precommit of the old round, or `f + 1`
//!   messages of the new one, forever (found by this module's randomized test). Nil votes never
//!   help a value, so safety is untouched; with them, every honest member that left a round has
//!   both votes in it, and the honest members still there reach their timeouts.
//! - A vote this member already cast is never cast again, whatever the rules say, and after a
//!   restart its own recorded votes give back its round, step and lock (line 38 sets the lock
//!   exactly when it precommits a value), so it never signs a second, different vote. The
//!   driver replays them before it starts the engine again; the rules then cast whatever is
//!   still due.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::time::Time;
use crate::MemberIndex;

/// The id of a value: a hash of its canonical encoding, computed by the caller.
pub type ValueId = [u8; 32];

/// Distinct votes kept per member, round and kind (more than one only from an equivocator).
/// A member that has not decided may need any of an equivocator's votes to see a quorum that
/// others saw, so this is a bound against memory exhaustion, not a filter: it is far above the
/// number of values (and nil) an instance ever has in play.
const EQUIVOCATIONS_KEPT: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteKind {
    Prevote,
    Precommit,
}

/// What the caller knows about a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Validity {
    /// Not judged yet (what it refers to is still missing).
    #[default]
    Unknown,
    /// Well-formed and everything it refers to is here, but this member would not vote for it.
    Available,
    /// This member would vote for it.
    Valid,
    /// Never acceptable.
    Invalid,
}

impl Validity {
    fn decidable(self) -> bool {
        matches!(self, Validity::Available | Validity::Valid)
    }
}

/// A consensus message, as carried by a signed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Message {
    Proposal {
        round: u32,
        value: ValueId,
        valid_round: Option<u32>,
    },
    Vote {
        kind: VoteKind,
        round: u32,
        value: Option<ValueId>,
    },
}

impl Message {
    pub fn round(&self) -> u32 {
        match *self {
            Message::Proposal { round, .. } | Message::Vote { round, .. } => round,
        }
    }
}

/// What the caller must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sign and publish this proposal.
    Propose {
        round: u32,
        value: ValueId,
        valid_round: Option<u32>,
    },
    /// We propose in `round` and have no value to re-propose: call [`Tendermint::propose`]
    /// with a fresh value as soon as there is one.
    NeedValue { round: u32 },
    /// Sign and publish this vote.
    Vote {
        kind: VoteKind,
        round: u32,
        value: Option<ValueId>,
    },
    /// `value` is decided: `Q` members precommitted it in `round`.
    Decide { round: u32, value: ValueId },
}

/// How a received message was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    New,
    /// The same message again (a republished record): nothing changes.
    Duplicate,
    /// A second, different message for the same round and kind: the sender is faulty. A vote
    /// is counted for each value it names (the first few); only a proposal's first version is.
    Equivocation,
    /// A proposal from a member that is not the round's proposer.
    NotProposer,
    /// A round at or past `max_rounds`.
    RoundOutOfRange,
    /// An equivocator's vote past the number kept, for a value no one else voted: not counted.
    Dropped,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Every voter, in proposer order.
    pub members: Vec<MemberIndex>,
    pub me: MemberIndex,
    /// Faulty members tolerated: `f`, with `n >= 3f + 1`.
    pub faulty: usize,
    /// Votes that make a quorum: `Q`, with `2Q - n > f` (any two quorums share an honest member).
    pub quorum: usize,
    /// Position in `members` of round 0's proposer; round `r` is proposed by the next `r`.
    pub first_proposer: usize,
    /// Base timeout; the timeouts of round `r` are `round_ms * (1 + r / 2)`.
    pub round_ms: u64,
    pub max_rounds: u32,
}

/// Each member's votes (nil as `None`) in one round and kind.
type Tally = BTreeMap<MemberIndex, Vec<Option<ValueId>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// In the round, no prevote cast yet.
    Propose,
    /// Prevoted, not precommitted.
    Prevote,
    /// Precommitted.
    Precommit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Propose,
    Prevote,
    Precommit,
}

/// One member's instance of Tendermint for one height.
#[derive(Clone, Debug)]
pub struct Tendermint {
    cfg: Config,
    started: bool,
    round: u32,
    step: Step,
    locked: Option<(u32, ValueId)>,
    valid: Option<(u32, ValueId)>,
    decision: Option<(u32, ValueId)>,
    /// The first proposal of each round's proposer.
    proposals: BTreeMap<u32, (ValueId, Option<u32>)>,
    /// The votes of each member per round and kind: one, or a few if it equivocated.
    votes: BTreeMap<(u32, VoteKind), Tally>,
    /// Members with any message in a round (line 55).
    senders: BTreeMap<u32, BTreeSet<MemberIndex>>,
    validity: BTreeMap<ValueId, Validity>,
    /// Votes and proposals this member emitted (or, after a restart, found in its log).
    cast: BTreeMap<(u32, VoteKind), Option<ValueId>>,
    proposed: BTreeMap<u32, (ValueId, Option<u32>)>,
    awaiting_value: Option<u32>,
    /// "For the first time" guards of lines 34, 36 and 47.
    fired: BTreeSet<(u32, u8)>,
    timers: BTreeSet<(Time, Timer, u32)>,
    ran_out: bool,
}

impl Tendermint {
    pub fn new(cfg: Config) -> Self {
        Tendermint {
            cfg,
            started: false,
            round: 0,
            step: Step::Propose,
            locked: None,
            valid: None,
            decision: None,
            proposals: BTreeMap::new(),
            votes: BTreeMap::new(),
            senders: BTreeMap::new(),
            validity: BTreeMap::new(),
            cast: BTreeMap::new(),
            proposed: BTreeMap::new(),
            awaiting_value: None,
            fired: BTreeSet::new(),
            timers: BTreeSet::new(),
            ran_out: false,
        }
    }

    pub fn proposer(&self, round: u32) -> MemberIndex {
        let n = self.cfg.members.len().max(1);
        let pos = (self.cfg.first_proposer + round as usize) % n;
        self.cfg.members.get(pos).copied().unwrap_or(0)
    }
    pub fn decision(&self) -> Option<(u32, ValueId)> {
        self.decision
    }
    pub fn round(&self) -> u32 {
        self.round
    }
    pub fn is_started(&self) -> bool {
        self.started
    }
    /// Whether the instance ran out of rounds without a decision (its last round's precommit
    /// timeout fired). A decision may still come from the log.
    pub fn exhausted(&self) -> bool {
        self.decision.is_none() && self.ran_out
    }
    pub fn max_rounds(&self) -> u32 {
        self.cfg.max_rounds
    }
    /// Our lock, for status and tests.
    pub fn locked(&self) -> Option<(u32, ValueId)> {
        self.locked
    }
    /// Members whose precommits for `value` in `round` were counted: the decision's certificate.
    pub fn precommitters(&self, round: u32, value: &ValueId) -> Vec<MemberIndex> {
        self.votes
            .get(&(round, VoteKind::Precommit))
            .map(|m| {
                m.iter()
                    .filter(|(_, v)| v.contains(&Some(*value)))
                    .map(|(&who, _)| who)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn timeout(&self, round: u32) -> u64 {
        let r = u64::from(round);
        self.cfg
            .round_ms
            .saturating_add(self.cfg.round_ms.saturating_mul(r) / 2)
    }

    /// Starts the instance (line 10), once: at round 0, or after a restart at the round our
    /// own recorded votes reached.
    pub fn start(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            self.start_round(now, self.round, &mut out);
        }
        self.evaluate(now, &mut out);
        out
    }

    /// Takes a message from `from` (our own included).
    pub fn on_message(
        &mut self,
        now: Time,
        from: MemberIndex,
        msg: Message,
    ) -> (Receipt, Vec<Action>) {
        let round = msg.round();
        if round >= self.cfg.max_rounds {
            return (Receipt::RoundOutOfRange, Vec::new());
        }
        let receipt = match msg {
            Message::Proposal {
                value, valid_round, ..
            } => {
                if from != self.proposer(round) {
                    return (Receipt::NotProposer, Vec::new());
                }
                let receipt = match self.proposals.get(&round) {
                    Some(&p) if p == (value, valid_round) => Receipt::Duplicate,
                    Some(_) => Receipt::Equivocation,
                    None => {
                        self.proposals.insert(round, (value, valid_round));
                        Receipt::New
                    }
                };
                if from == self.cfg.me && receipt == Receipt::New {
                    self.proposed.entry(round).or_insert((value, valid_round));
                }
                receipt
            }
            Message::Vote { kind, round, value } => {
                let others = self.others_voted(round, kind, from, value);
                let cast = self
                    .votes
                    .entry((round, kind))
                    .or_default()
                    .entry(from)
                    .or_default();
                let receipt = if cast.contains(&value) {
                    Receipt::Duplicate
                } else if cast.len() >= EQUIVOCATIONS_KEPT && !others {
                    return (Receipt::Dropped, Vec::new());
                } else {
                    cast.push(value);
                    if cast.len() == 1 {
                        Receipt::New
                    } else {
                        Receipt::Equivocation
                    }
                };
                if from == self.cfg.me && receipt != Receipt::Duplicate {
                    self.adopt_own_vote(kind, round, value);
                }
                receipt
            }
        };
        let mut out = Vec::new();
        if matches!(receipt, Receipt::New | Receipt::Equivocation) {
            self.senders.entry(round).or_default().insert(from);
            self.evaluate(now, &mut out);
        }
        (receipt, out)
    }

    /// Whether `msg` from `from` would be counted (a driver refuses a record whose message
    /// would not: a second proposal, a round out of range, an equivocator's vote past the
    /// number kept). Reads state only.
    pub fn accepts(&self, from: MemberIndex, msg: &Message) -> bool {
        let round = msg.round();
        if round >= self.cfg.max_rounds {
            return false;
        }
        match *msg {
            Message::Proposal {
                value, valid_round, ..
            } => {
                from == self.proposer(round)
                    && self
                        .proposals
                        .get(&round)
                        .is_none_or(|p| *p == (value, valid_round))
            }
            Message::Vote { kind, value, .. } => {
                let cast = self.votes.get(&(round, kind)).and_then(|m| m.get(&from));
                cast.is_none_or(|c| c.contains(&value) || c.len() < EQUIVOCATIONS_KEPT)
                    || self.others_voted(round, kind, from, value)
            }
        }
    }

    /// Records what the caller now knows about a value and acts on it.
    pub fn set_validity(&mut self, now: Time, value: ValueId, validity: Validity) -> Vec<Action> {
        let mut out = Vec::new();
        if self.validity.get(&value) != Some(&validity) {
            self.validity.insert(value, validity);
            self.evaluate(now, &mut out);
        }
        out
    }

    pub fn validity(&self, value: &ValueId) -> Validity {
        self.validity.get(value).copied().unwrap_or_default()
    }

    /// Value ids seen in any message so far (the caller judges each).
    pub fn known_values(&self) -> BTreeSet<ValueId> {
        let mut ids: BTreeSet<ValueId> = self.proposals.values().map(|(v, _)| *v).collect();
        for tally in self.votes.values() {
            ids.extend(tally.values().flatten().flatten().copied());
        }
        ids
    }

    /// A fresh value for the round in which we were asked for one ([`Action::NeedValue`]).
    /// The caller marks it valid first.
    pub fn propose(&mut self, now: Time, value: ValueId) -> Vec<Action> {
        let mut out = Vec::new();
        if self.decision.is_some() {
            return out;
        }
        if let Some(round) = self.awaiting_value {
            if round == self.round && self.step == Step::Propose {
                self.awaiting_value = None;
                self.proposed.insert(round, (value, None));
                out.push(Action::Propose {
                    round,
                    value,
                    valid_round: None,
                });
            }
        }
        self.evaluate(now, &mut out);
        out
    }

    /// Whether we are the proposer of the current round and still owe it a value.
    pub fn awaiting_value(&self) -> Option<u32> {
        self.awaiting_value
            .filter(|&r| r == self.round && self.decision.is_none())
    }

    pub fn next_timeout(&self) -> Option<Time> {
        if self.decision.is_some() {
            return None;
        }
        self.timers.iter().next().map(|(t, _, _)| *t)
    }

    /// Fires every timeout that is due (lines 57-65).
    pub fn on_timeout(&mut self, now: Time) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(&first) = self.timers.iter().next() {
            let (at, timer, round) = first;
            if at > now || self.decision.is_some() {
                break;
            }
            self.timers.remove(&first);
            if round != self.round {
                continue;
            }
            match timer {
                Timer::Propose if self.step == Step::Propose => {
                    self.vote(VoteKind::Prevote, round, None, &mut out);
                }
                Timer::Prevote if self.step == Step::Prevote => {
                    self.vote(VoteKind::Precommit, round, None, &mut out);
                }
                Timer::Precommit => self.start_round(now, round + 1, &mut out),
                _ => {}
            }
        }
        self.evaluate(now, &mut out);
        out
    }

    /// Our own vote, found in the log: after a restart this is what we did, so the state
    /// follows it (line 38: a precommit for a value is exactly when the lock is set).
    fn adopt_own_vote(&mut self, kind: VoteKind, round: u32, value: Option<ValueId>) {
        self.cast.entry((round, kind)).or_insert(value);
        if round > self.round {
            self.round = round;
            self.step = Step::Propose;
            self.awaiting_value = None;
        }
        if round == self.round {
            let after = match kind {
                VoteKind::Prevote => Step::Prevote,
                VoteKind::Precommit => Step::Precommit,
            };
            self.step = self.step.max(after);
        }
        if let (VoteKind::Precommit, Some(v)) = (kind, value) {
            if self.locked.is_none_or(|(r, _)| r < round) {
                self.locked = Some((round, v));
            }
        }
    }

    /// Casts a vote unless we already cast one for this round and kind.
    fn vote(&mut self, kind: VoteKind, round: u32, value: Option<ValueId>, out: &mut Vec<Action>) {
        if self.cast.contains_key(&(round, kind)) {
            return;
        }
        self.cast.insert((round, kind), value);
        if round == self.round {
            self.step = match kind {
                VoteKind::Prevote => Step::Prevote,
                VoteKind::Precommit => Step::Precommit,
            };
        }
        out.push(Action::Vote { kind, round, value });
    }

    /// StartRound (line 11). Leaving a round, we first cast nil for whatever we did not vote
    /// in it (see the module doc).
    fn start_round(&mut self, now: Time, round: u32, out: &mut Vec<Action>) {
        if round >= self.cfg.max_rounds {
            self.ran_out = true;
            return;
        }
        if round > self.round {
            let old = self.round;
            self.vote(VoteKind::Prevote, old, None, out);
            self.vote(VoteKind::Precommit, old, None, out);
        }
        self.round = round;
        self.step = Step::Propose;
        self.awaiting_value = None;
        if self.proposer(round) == self.cfg.me && !self.proposed.contains_key(&round) {
            match self.valid {
                Some((vr, v)) => {
                    self.proposed.insert(round, (v, Some(vr)));
                    out.push(Action::Propose {
                        round,
                        value: v,
                        valid_round: Some(vr),
                    });
                }
                None => {
                    self.awaiting_value = Some(round);
                    out.push(Action::NeedValue { round });
                }
            }
        }
        // After a restart, the step follows the votes we already cast in this round.
        if self.cast.contains_key(&(round, VoteKind::Precommit)) {
            self.step = Step::Precommit;
        } else if self.cast.contains_key(&(round, VoteKind::Prevote)) {
            self.step = Step::Prevote;
        }
        let at = now.plus(self.timeout(round));
        self.timers.insert((at, Timer::Propose, round));
    }

    /// Whether a member other than `from` voted `value` in this round and kind: an
    /// equivocator's vote for such a value is always counted, so that no junk it signed can
    /// crowd out a vote that helps make a quorum.
    fn others_voted(
        &self,
        round: u32,
        kind: VoteKind,
        from: MemberIndex,
        value: Option<ValueId>,
    ) -> bool {
        self.votes
            .get(&(round, kind))
            .is_some_and(|m| m.iter().any(|(who, v)| *who != from && v.contains(&value)))
    }

    fn count(&self, round: u32, kind: VoteKind) -> usize {
        self.votes.get(&(round, kind)).map_or(0, BTreeMap::len)
    }

    /// Members that voted `value` (an equivocator counts for each value it voted: two quorums
    /// for different values would still need an honest member in both).
    fn count_for(&self, round: u32, kind: VoteKind, value: Option<ValueId>) -> usize {
        self.votes
            .get(&(round, kind))
            .map_or(0, |m| m.values().filter(|v| v.contains(&value)).count())
    }

    /// The value with a quorum of `kind` votes in `round`, if any.
    fn quorum_value(&self, round: u32, kind: VoteKind) -> Option<ValueId> {
        let tally = self.votes.get(&(round, kind))?;
        let mut counts: BTreeMap<ValueId, usize> = BTreeMap::new();
        for v in tally.values().flatten().flatten() {
            *counts.entry(*v).or_default() += 1;
        }
        counts
            .into_iter()
            .find(|(_, c)| *c >= self.cfg.quorum)
            .map(|(v, _)| v)
    }

    fn first_time(&mut self, round: u32, rule: u8) -> bool {
        self.fired.insert((round, rule))
    }

    /// Applies every rule that holds until none does.
    fn evaluate(&mut self, now: Time, out: &mut Vec<Action>) {
        // Bounded: every pass either changes the round or step, or stops.
        for _ in 0..(4 * self.cfg.max_rounds as usize + 8) {
            if self.decide(out) || !self.started {
                return;
            }
            if !self.step_once(now, out) {
                return;
            }
        }
    }

    /// Line 49: a quorum of precommits for a value we can decide, in any round.
    fn decide(&mut self, out: &mut Vec<Action>) -> bool {
        if self.decision.is_some() {
            return true;
        }
        let rounds: Vec<u32> = self
            .votes
            .keys()
            .filter(|(_, k)| *k == VoteKind::Precommit)
            .map(|(r, _)| *r)
            .collect();
        for round in rounds {
            if let Some(v) = self.quorum_value(round, VoteKind::Precommit) {
                if self.validity(&v).decidable() {
                    self.decision = Some((round, v));
                    self.timers.clear();
                    self.awaiting_value = None;
                    out.push(Action::Decide { round, value: v });
                    return true;
                }
            }
        }
        false
    }

    /// One pass over lines 22-55 for the current round; returns whether anything changed.
    fn step_once(&mut self, now: Time, out: &mut Vec<Action>) -> bool {
        // Line 55: f + 1 members are in a higher round.
        let higher = self
            .senders
            .iter()
            .filter(|(&r, who)| r > self.round && who.len() > self.cfg.faulty)
            .map(|(&r, _)| r)
            .max();
        if let Some(r) = higher {
            self.start_round(now, r, out);
            return true;
        }
        let r = self.round;
        let q = self.cfg.quorum;
        if self.step == Step::Propose {
            if let Some(&(v, vr)) = self.proposals.get(&r) {
                let validity = self.validity(&v);
                match vr {
                    // Line 22.
                    None => {
                        if validity != Validity::Unknown {
                            let ok = validity == Validity::Valid
                                && self.locked.is_none_or(|(_, lv)| lv == v);
                            self.vote(VoteKind::Prevote, r, ok.then_some(v), out);
                            return true;
                        }
                    }
                    // Line 28.
                    Some(vr) if vr < r => {
                        if self.count_for(vr, VoteKind::Prevote, Some(v)) >= q
                            && validity != Validity::Unknown
                        {
                            let ok = validity == Validity::Valid
                                && self.locked.is_none_or(|(lr, lv)| lr <= vr || lv == v);
                            self.vote(VoteKind::Prevote, r, ok.then_some(v), out);
                            return true;
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        // Line 34.
        if self.step == Step::Prevote
            && self.count(r, VoteKind::Prevote) >= q
            && self.first_time(r, 34)
        {
            let at = now.plus(self.timeout(r));
            self.timers.insert((at, Timer::Prevote, r));
        }
        // Line 36 (the value comes from the prevotes themselves).
        if self.step >= Step::Prevote {
            if let Some(v) = self.quorum_value(r, VoteKind::Prevote) {
                if self.validity(&v) == Validity::Valid && self.first_time(r, 36) {
                    self.valid = Some((r, v));
                    if self.step == Step::Prevote {
                        self.locked = Some((r, v));
                        self.vote(VoteKind::Precommit, r, Some(v), out);
                    }
                    return true;
                }
            }
        }
        // Line 44.
        if self.step == Step::Prevote && self.count_for(r, VoteKind::Prevote, None) >= q {
            self.vote(VoteKind::Precommit, r, None, out);
            return true;
        }
        // Line 47.
        if self.count(r, VoteKind::Precommit) >= q && self.first_time(r, 47) {
            let at = now.plus(self.timeout(r));
            self.timers.insert((at, Timer::Precommit, r));
        }
        false
    }
}

#[cfg(test)]
mod tests;
