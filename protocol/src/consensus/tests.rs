//! The engine alone: every rule, each way a faulty voter can misbehave, restarts, and a
//! randomized adversarial run over many seeds checking agreement and termination.

use std::collections::{BTreeMap, BTreeSet};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;

const ROUND_MS: u64 = 100;

fn config(n: usize, me: MemberIndex) -> Config {
    let faulty = (n - 1) / 3;
    Config {
        members: (1..=n as u16).collect(),
        me,
        faulty,
        quorum: 2 * n / 3 + 1,
        first_proposer: 0,
        round_ms: ROUND_MS,
        max_rounds: 16,
    }
}

fn value(tag: u8) -> ValueId {
    [tag; 32]
}

fn prevote(round: u32, v: Option<ValueId>) -> Message {
    Message::Vote {
        kind: VoteKind::Prevote,
        round,
        value: v,
    }
}

fn precommit(round: u32, v: Option<ValueId>) -> Message {
    Message::Vote {
        kind: VoteKind::Precommit,
        round,
        value: v,
    }
}

fn proposal(round: u32, v: ValueId, valid_round: Option<u32>) -> Message {
    Message::Proposal {
        round,
        value: v,
        valid_round,
    }
}

/// The message an action asks to publish.
fn as_message(a: &Action) -> Option<Message> {
    match *a {
        Action::Propose {
            round,
            value,
            valid_round,
        } => Some(proposal(round, value, valid_round)),
        Action::Vote { kind, round, value } => Some(Message::Vote { kind, round, value }),
        _ => None,
    }
}

fn votes_of(actions: &[Action]) -> Vec<Message> {
    actions.iter().filter_map(as_message).collect()
}

#[test]
fn proposer_rotates_from_the_first() {
    let mut cfg = config(4, 1);
    cfg.first_proposer = 2;
    let t = Tendermint::new(cfg);
    assert_eq!(
        (0..5).map(|r| t.proposer(r)).collect::<Vec<_>>(),
        vec![3, 4, 1, 2, 3]
    );
}

#[test]
fn line_22_prevotes_a_valid_proposal_and_nil_for_an_invalid_one() {
    let now = Time(0);
    let mut t = Tendermint::new(config(4, 2));
    assert!(votes_of(&t.start(now)).is_empty(), "not the proposer");
    t.set_validity(now, value(1), Validity::Valid);
    let (r, out) = t.on_message(now, 1, proposal(0, value(1), None));
    assert_eq!(r, Receipt::New);
    assert_eq!(votes_of(&out), vec![prevote(0, Some(value(1)))]);

    let mut t = Tendermint::new(config(4, 2));
    t.start(now);
    t.set_validity(now, value(1), Validity::Invalid);
    let (_, out) = t.on_message(now, 1, proposal(0, value(1), None));
    assert_eq!(votes_of(&out), vec![prevote(0, None)]);

    // Available is decidable, but not something this member endorses.
    let mut t = Tendermint::new(config(4, 2));
    t.start(now);
    t.set_validity(now, value(1), Validity::Available);
    let (_, out) = t.on_message(now, 1, proposal(0, value(1), None));
    assert_eq!(votes_of(&out), vec![prevote(0, None)]);
}

#[test]
fn unknown_validity_waits_and_the_propose_timeout_prevotes_nil() {
    let mut t = Tendermint::new(config(4, 2));
    t.start(Time(0));
    let (_, out) = t.on_message(Time(1), 1, proposal(0, value(1), None));
    assert!(
        votes_of(&out).is_empty(),
        "waits for the value to be judged"
    );
    // Judged in time: the prevote follows.
    let out = t.set_validity(Time(2), value(1), Validity::Valid);
    assert_eq!(votes_of(&out), vec![prevote(0, Some(value(1)))]);

    let mut t = Tendermint::new(config(4, 2));
    t.start(Time(0));
    t.on_message(Time(1), 1, proposal(0, value(1), None));
    assert_eq!(t.next_timeout(), Some(Time(ROUND_MS)));
    assert!(votes_of(&t.on_timeout(Time(ROUND_MS - 1))).is_empty());
    let out = t.on_timeout(Time(ROUND_MS));
    assert_eq!(votes_of(&out), vec![prevote(0, None)]);
    // Judging it later changes nothing: the prevote is cast.
    let out = t.set_validity(Time(ROUND_MS + 1), value(1), Validity::Valid);
    assert!(votes_of(&out).is_empty());
}

#[test]
fn proposals_from_anyone_but_the_proposer_are_refused() {
    let mut t = Tendermint::new(config(4, 2));
    t.start(Time(0));
    let (r, _) = t.on_message(Time(0), 3, proposal(0, value(3), None));
    assert_eq!(r, Receipt::NotProposer);
    let (r, _) = t.on_message(Time(0), 2, proposal(1, value(3), None));
    assert_eq!(r, Receipt::New, "member 2 proposes round 1");
}

#[test]
fn equivocation_is_reported_and_the_first_message_stays_counted() {
    let now = Time(0);
    let mut t = Tendermint::new(config(4, 4));
    t.start(now);
    for v in [1, 2] {
        t.set_validity(now, value(v), Validity::Valid);
    }
    assert_eq!(
        t.on_message(now, 1, proposal(0, value(1), None)).0,
        Receipt::New
    );
    assert_eq!(
        t.on_message(now, 1, proposal(0, value(1), None)).0,
        Receipt::Duplicate,
        "the same record republished"
    );
    assert_eq!(
        t.on_message(now, 1, proposal(0, value(2), None)).0,
        Receipt::Equivocation
    );
    assert_eq!(
        t.on_message(now, 3, prevote(0, Some(value(1)))).0,
        Receipt::New
    );
    assert_eq!(
        t.on_message(now, 3, prevote(0, Some(value(2)))).0,
        Receipt::Equivocation
    );
    assert_eq!(
        t.on_message(now, 3, prevote(0, None)).0,
        Receipt::Equivocation
    );
    // Member 3's equivocating prevotes count for each value it named: with our own and
    // member 1's, a quorum of 3 for value 1.
    let (_, out) = t.on_message(now, 1, prevote(0, Some(value(1))));
    assert!(votes_of(&out).is_empty(), "our prevote is not back yet");
    let (_, out) = t.on_message(now, 4, prevote(0, Some(value(1))));
    assert_eq!(votes_of(&out), vec![precommit(0, Some(value(1)))]);
    assert_eq!(t.locked(), Some((0, value(1))));
}

#[test]
fn a_quorum_of_nil_prevotes_precommits_nil_and_a_precommit_timeout_starts_the_next_round() {
    let now = Time(0);
    let mut t = Tendermint::new(config(4, 2));
    t.start(now);
    t.on_timeout(Time(ROUND_MS)); // prevote nil
    for m in [1, 2, 3] {
        let (_, out) = t.on_message(Time(ROUND_MS), m, prevote(0, None));
        if m == 3 {
            assert_eq!(votes_of(&out), vec![precommit(0, None)]);
        }
    }
    for m in [1, 2, 3] {
        t.on_message(Time(ROUND_MS), m, precommit(0, None));
    }
    assert_eq!(t.round(), 0);
    let out = t.on_timeout(Time(2 * ROUND_MS));
    assert_eq!(t.round(), 1);
    // Member 2 proposes round 1 and has nothing to re-propose.
    assert_eq!(out, vec![Action::NeedValue { round: 1 }]);
    t.set_validity(Time(2 * ROUND_MS), value(2), Validity::Valid);
    let out = t.propose(Time(2 * ROUND_MS), value(2));
    assert_eq!(votes_of(&out), vec![proposal(1, value(2), None)]);
}

#[test]
fn the_prevote_timeout_precommits_nil_after_a_split_quorum() {
    let mut t = Tendermint::new(config(4, 4));
    t.start(Time(0));
    t.set_validity(Time(0), value(1), Validity::Valid);
    t.on_message(Time(0), 1, proposal(0, value(1), None));
    t.on_message(Time(0), 4, prevote(0, Some(value(1))));
    t.on_message(Time(0), 2, prevote(0, None));
    let (_, out) = t.on_message(Time(0), 3, prevote(0, Some(value(9))));
    assert!(
        votes_of(&out).is_empty(),
        "three prevotes, no quorum for anything"
    );
    let out = t.on_timeout(Time(ROUND_MS));
    assert_eq!(votes_of(&out), vec![precommit(0, None)]);
}

#[test]
fn a_locked_member_prevotes_nil_for_another_value_and_its_valid_value_is_reproposed() {
    let now = Time(0);
    // Member 2 locks on value 1 in round 0.
    let mut t = Tendermint::new(config(4, 2));
    t.start(now);
    for v in [1, 2] {
        t.set_validity(now, value(v), Validity::Valid);
    }
    t.on_message(now, 1, proposal(0, value(1), None));
    for m in [1, 2, 3] {
        t.on_message(now, m, prevote(0, Some(value(1))));
    }
    assert_eq!(t.locked(), Some((0, value(1))));
    // Round 1 (proposer 2 = us) re-proposes the valid value with its round.
    for m in [1, 3, 4] {
        t.on_message(now, m, precommit(0, None));
    }
    let out = t.on_timeout(Time(ROUND_MS));
    assert_eq!(votes_of(&out), vec![proposal(1, value(1), Some(0))]);

    // A member locked on value 1 in round 0 gets a round-1 proposal of value 2.
    let mut t = Tendermint::new(config(4, 3));
    t.start(now);
    for v in [1, 2] {
        t.set_validity(now, value(v), Validity::Valid);
    }
    t.on_message(now, 1, proposal(0, value(1), None));
    for m in [1, 2, 3] {
        t.on_message(now, m, prevote(0, Some(value(1))));
    }
    assert_eq!(t.locked(), Some((0, value(1))));
    for m in [1, 4] {
        t.on_message(now, m, precommit(1, None));
    }
    assert_eq!(t.round(), 1, "f + 1 members in round 1 (line 55)");
    let (_, out) = t.on_message(now, 2, proposal(1, value(2), None));
    assert_eq!(
        votes_of(&out),
        vec![prevote(1, None)],
        "locked on another value"
    );
}

#[test]
fn line_28_accepts_a_reproposal_backed_by_a_quorum_of_prevotes_in_its_round() {
    let now = Time(0);
    let mut t = Tendermint::new(config(4, 4));
    t.start(now);
    for v in [1, 2] {
        t.set_validity(now, value(v), Validity::Valid);
    }
    // Locked on value 2 in round 0 ...
    t.on_message(now, 1, proposal(0, value(2), None));
    for m in [1, 2, 3] {
        t.on_message(now, m, prevote(0, Some(value(2))));
    }
    assert_eq!(t.locked(), Some((0, value(2))));
    // ... then round 2 re-proposes value 1 with valid round 1, where it had a quorum: our lock
    // round 0 <= 1, so we prevote it.
    for m in [1, 2, 3] {
        t.on_message(now, m, prevote(1, Some(value(1))));
    }
    for m in [1, 2] {
        t.on_message(now, m, precommit(2, None));
    }
    assert_eq!(t.round(), 2);
    let (_, out) = t.on_message(now, 3, proposal(2, value(1), Some(1)));
    assert_eq!(votes_of(&out), vec![prevote(2, Some(value(1)))]);

    // Without the quorum in its valid round the re-proposal waits.
    let mut t = Tendermint::new(config(4, 4));
    t.start(now);
    for m in [1, 2] {
        t.on_message(now, m, precommit(2, None));
    }
    let (_, out) = t.on_message(now, 3, proposal(2, value(1), Some(1)));
    assert!(votes_of(&out).is_empty());
    for m in [1, 2, 3] {
        let (_, out) = t.on_message(now, m, prevote(1, Some(value(1))));
        assert!(votes_of(&out).is_empty(), "value 1 is not judged yet");
    }
    let votes = votes_of(&t.set_validity(now, value(1), Validity::Valid));
    assert_eq!(votes, vec![prevote(2, Some(value(1)))]);
    // A valid round that is not below the round is never acted on.
    let mut t = Tendermint::new(config(4, 4));
    t.start(now);
    t.set_validity(now, value(1), Validity::Valid);
    for m in [1, 2, 3] {
        t.on_message(now, m, prevote(0, Some(value(1))));
    }
    let (_, out) = t.on_message(now, 1, proposal(0, value(1), Some(0)));
    assert!(votes_of(&out).is_empty());
}

#[test]
fn f_plus_one_messages_of_a_higher_round_move_a_member_there() {
    let mut t = Tendermint::new(config(4, 4));
    t.start(Time(0));
    t.on_message(Time(0), 1, prevote(3, None));
    assert_eq!(t.round(), 0, "one member could be lying");
    t.on_message(Time(0), 2, precommit(3, None));
    assert_eq!(t.round(), 3);
}

#[test]
fn a_member_that_never_started_decides_from_the_precommits_in_its_log() {
    let mut t = Tendermint::new(config(4, 4));
    for m in [1, 2, 3] {
        let (_, out) = t.on_message(Time(0), m, precommit(5, Some(value(7))));
        assert!(out.is_empty(), "value 7 not judged yet");
    }
    assert!(!t.is_started());
    let out = t.set_validity(Time(0), value(7), Validity::Available);
    assert_eq!(
        out,
        vec![Action::Decide {
            round: 5,
            value: value(7)
        }]
    );
    assert_eq!(t.precommitters(5, &value(7)), vec![1, 2, 3]);
    assert!(t.start(Time(0)).is_empty(), "decided: nothing more to do");
    assert_eq!(t.next_timeout(), None);
}

#[test]
fn an_invalid_value_is_never_decided() {
    let mut t = Tendermint::new(config(4, 4));
    t.set_validity(Time(0), value(7), Validity::Invalid);
    for m in [1, 2, 3] {
        t.on_message(Time(0), m, precommit(0, Some(value(7))));
    }
    assert_eq!(t.decision(), None);
}

#[test]
fn rounds_are_bounded() {
    let mut cfg = config(4, 2);
    cfg.max_rounds = 2;
    let mut t = Tendermint::new(cfg);
    assert_eq!(
        t.on_message(Time(0), 1, prevote(2, None)).0,
        Receipt::RoundOutOfRange
    );
    t.start(Time(0));
    let mut now = Time(0);
    for _ in 0..20 {
        now = now.plus(10 * ROUND_MS);
        t.on_timeout(now);
        for m in [1, 3, 4] {
            t.on_message(now, m, prevote(t.round(), None));
            t.on_message(now, m, precommit(t.round(), None));
        }
    }
    assert_eq!(t.round(), 1);
    t.on_timeout(now.plus(100 * ROUND_MS));
    assert!(t.exhausted());
}

#[test]
fn after_a_restart_the_lock_comes_back_from_own_votes_and_nothing_is_signed_twice() {
    let now = Time(0);
    let mut live = Tendermint::new(config(4, 2));
    live.start(now);
    live.set_validity(now, value(1), Validity::Valid);
    let mut own = Vec::new();
    let mut log: Vec<(MemberIndex, Message)> = vec![(1, proposal(0, value(1), None))];
    for (from, m) in log.clone() {
        own.extend(votes_of(&live.on_message(now, from, m).1));
    }
    assert_eq!(own, vec![prevote(0, Some(value(1)))]);
    log.push((2, own[0]));
    for m in [1, 3] {
        log.push((m, prevote(0, Some(value(1)))));
    }
    for (from, m) in log.iter().skip(1) {
        own.extend(votes_of(&live.on_message(now, *from, *m).1));
    }
    assert_eq!(own.last(), Some(&precommit(0, Some(value(1)))));
    // The precommit was signed but the process stopped before it was stored: after the
    // restart, replay restores the prevote, and the rules cast the precommit at start.
    let mut back = Tendermint::new(config(4, 2));
    back.set_validity(now, value(1), Validity::Valid);
    for (from, m) in &log {
        back.on_message(now, *from, *m);
    }
    let resumed = back.start(now);
    assert_eq!(votes_of(&resumed), vec![precommit(0, Some(value(1)))]);
    assert_eq!(back.locked(), Some((0, value(1))));

    // Stored: replaying it restores the lock, and nothing is cast again.
    log.push((2, precommit(0, Some(value(1)))));
    let mut back = Tendermint::new(config(4, 2));
    back.set_validity(now, value(1), Validity::Valid);
    for (from, m) in &log {
        let (_, out) = back.on_message(now, *from, *m);
        assert!(
            votes_of(&out).is_empty(),
            "replay casts nothing new: {out:?}"
        );
    }
    assert!(votes_of(&back.start(now)).is_empty());
    assert_eq!(back.locked(), Some((0, value(1))));
    // In round 1 (ours to propose) it re-proposes its valid value, and in round 2 it keeps
    // to its lock.
    back.set_validity(now, value(2), Validity::Valid);
    for m in [1, 3, 4] {
        back.on_message(now, m, precommit(0, None));
    }
    let out = back.on_timeout(Time(10 * ROUND_MS));
    assert_eq!(votes_of(&out), vec![proposal(1, value(1), Some(0))]);
    for m in [1, 4] {
        back.on_message(Time(10 * ROUND_MS), m, precommit(2, None));
    }
    let (_, out) = back.on_message(Time(10 * ROUND_MS), 3, proposal(2, value(2), None));
    assert_eq!(votes_of(&out), vec![prevote(2, None)]);
    assert_eq!(back.locked(), Some((0, value(1))));
}

// --- A randomized network of engines with Byzantine members -------------------------------

/// What a faulty member does with its turn.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Says nothing at all.
    Silent,
    /// Sends every peer a different random proposal, prevote and precommit each round.
    Equivocate,
    /// Votes honestly but delivers its precommits only to half the members, late.
    LateHalf,
    /// Tries to split the honest members: proposes a new value in each of its rounds, and
    /// sends its proposals and prevotes to the lower half of the members only and its
    /// precommits to the lowest one only, so that one member decides while the others move on.
    Split,
}

struct Node {
    engine: Tendermint,
    faulty: Option<Fault>,
    /// Every message received, as a store keeps every record once.
    seen: BTreeSet<(MemberIndex, Message)>,
}

struct Net {
    nodes: Vec<Node>,
    rng: ChaCha20Rng,
    /// (deliver at, sequence, to, from, message)
    queue: BTreeSet<(u64, u64, MemberIndex, MemberIndex, Message)>,
    seq: u64,
    now: u64,
    /// Messages are late, reordered or held until this time; from then on every message is
    /// delivered within `delay` (the network has become timely).
    gst: u64,
    delay: u64,
    decided: BTreeMap<MemberIndex, ValueId>,
    /// Values each member judges valid late (to exercise Unknown).
    slow_judges: BTreeSet<MemberIndex>,
}

impl Net {
    fn new(seed: u64, n: usize, faults: &[Option<Fault>]) -> Net {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut nodes = Vec::new();
        for i in 1..=n as u16 {
            let mut cfg = config(n, i);
            cfg.max_rounds = 64;
            cfg.first_proposer = (seed % n as u64) as usize;
            let faulty = faults.get(usize::from(i) - 1).copied().flatten();
            nodes.push(Node {
                engine: Tendermint::new(cfg),
                faulty,
                seen: BTreeSet::new(),
            });
        }
        let slow_judges = (1..=n as u16).filter(|_| rng.next_u32() % 3 == 0).collect();
        Net {
            nodes,
            gst: 200 + rng.next_u64() % 2_000,
            delay: 5 + rng.next_u64() % 60,
            rng,
            queue: BTreeSet::new(),
            seq: 0,
            now: 0,
            decided: BTreeMap::new(),
            slow_judges,
        }
    }

    fn n(&self) -> usize {
        self.nodes.len()
    }

    fn send(&mut self, from: MemberIndex, to: MemberIndex, msg: Message, extra: u64) {
        // Before the network becomes timely a message may take until then and more (gossip
        // loss repaired by sync, in the real system); after, at most `delay`.
        let d = if self.now < self.gst {
            // An adversarial scheduler: the members are split into two sides that change
            // every 300 ms; messages across are slow, within a side fast.
            let epoch = self.now / 300;
            let side = |m: MemberIndex| {
                (u64::from(m).wrapping_mul(0x9e37) ^ epoch.wrapping_mul(0x85eb)) % 2
            };
            if side(from) != side(to) {
                200 + self.rng.next_u64() % 1_500
            } else if self.rng.next_u32().is_multiple_of(10) {
                self.gst - self.now + self.rng.next_u64() % self.delay
            } else {
                self.rng.next_u64() % 20
            }
        } else {
            self.rng.next_u64() % self.delay
        };
        self.seq += 1;
        self.queue
            .insert((self.now + d + extra, self.seq, to, from, msg));
    }

    fn broadcast(&mut self, from: MemberIndex, msg: Message) {
        for to in 1..=self.n() as u16 {
            self.send(from, to, msg, 0);
        }
    }

    /// Each member's own value.
    fn own_value(m: MemberIndex) -> ValueId {
        value(m as u8)
    }

    fn handle(&mut self, me: MemberIndex, actions: Vec<Action>) {
        let mut work = actions;
        while let Some(a) = work.pop() {
            let idx = usize::from(me) - 1;
            let faulty = self.nodes[idx].faulty;
            match a {
                Action::NeedValue { .. } => {
                    let now = Time(self.now);
                    let e = &mut self.nodes[idx].engine;
                    e.set_validity(now, Self::own_value(me), Validity::Valid);
                    work.extend(e.propose(now, Self::own_value(me)));
                }
                Action::Decide { value, .. } => {
                    if faulty.is_none() {
                        self.decided.insert(me, value);
                    }
                }
                a => {
                    let Some(msg) = as_message(&a) else { continue };
                    match faulty {
                        None => self.broadcast(me, msg),
                        Some(Fault::Silent) => {}
                        Some(Fault::Equivocate) => {
                            for to in 1..=self.n() as u16 {
                                let v = value((self.rng.next_u32() % 3 + 1) as u8);
                                let lie = match msg {
                                    Message::Proposal { round, .. } => proposal(round, v, None),
                                    Message::Vote { kind, round, .. } => Message::Vote {
                                        kind,
                                        round,
                                        value: (!self.rng.next_u32().is_multiple_of(4))
                                            .then_some(v),
                                    },
                                };
                                self.send(me, to, lie, 0);
                            }
                        }
                        Some(Fault::Split) => {
                            let n = self.n() as u16;
                            let (msg, to_max) = match msg {
                                Message::Proposal { round, .. } => {
                                    (proposal(round, value(100 + round as u8), None), n / 2)
                                }
                                Message::Vote {
                                    kind: VoteKind::Prevote,
                                    ..
                                } => (msg, n / 2),
                                Message::Vote { .. } => (msg, 1),
                            };
                            for to in 1..=to_max {
                                self.send(me, to, msg, 0);
                            }
                        }
                        Some(Fault::LateHalf) => {
                            let late = matches!(
                                msg,
                                Message::Vote {
                                    kind: VoteKind::Precommit,
                                    ..
                                }
                            );
                            for to in 1..=self.n() as u16 {
                                if !late {
                                    self.send(me, to, msg, 0);
                                } else if to % 2 == 0 {
                                    self.send(me, to, msg, 3 * ROUND_MS);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Runs to quiescence or `until`; returns whether every honest member decided.
    fn run(&mut self, until: u64) -> bool {
        for i in 1..=self.n() as u16 {
            let out = self.nodes[usize::from(i) - 1].engine.start(Time(0));
            self.handle(i, out);
        }
        let honest = self.nodes.iter().filter(|n| n.faulty.is_none()).count();
        while self.decided.len() < honest && self.now < until {
            let next_msg = self.queue.iter().next().map(|e| e.0);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.next_timeout())
                .map(|t| t.0)
                .min();
            let Some(at) = [next_msg, next_timer].into_iter().flatten().min() else {
                return false;
            };
            self.now = self.now.max(at);
            let now = Time(self.now);
            if next_msg == Some(at) {
                let Some(first) = self.queue.iter().next().copied() else {
                    break;
                };
                self.queue.remove(&first);
                let (_, _, to, from, msg) = first;
                let idx = usize::from(to) - 1;
                let mut out = Vec::new();
                // Every value is valid; slow judges learn so only a while after first seeing it.
                let ids: Vec<ValueId> = match msg {
                    Message::Proposal { value, .. } => vec![value],
                    Message::Vote { value, .. } => value.into_iter().collect(),
                };
                let slow = self.slow_judges.contains(&to) && self.now < self.gst;
                for id in ids {
                    if !slow {
                        out.extend(
                            self.nodes[idx]
                                .engine
                                .set_validity(now, id, Validity::Valid),
                        );
                    }
                }
                if !slow {
                    let known = self.nodes[idx].engine.known_values();
                    for id in known {
                        out.extend(
                            self.nodes[idx]
                                .engine
                                .set_validity(now, id, Validity::Valid),
                        );
                    }
                }
                let (_, actions) = self.nodes[idx].engine.on_message(now, from, msg);
                out.extend(actions);
                // The gossip property the paper assumes, as our log's sync provides it: what
                // an honest member received, every honest member eventually receives.
                if self.nodes[idx].seen.insert((from, msg)) && self.nodes[idx].faulty.is_none() {
                    for other in (1..=self.n() as u16).filter(|&m| m != to && m != from) {
                        self.send(from, other, msg, 0);
                    }
                }
                self.handle(to, out);
            } else {
                for i in 1..=self.n() as u16 {
                    let idx = usize::from(i) - 1;
                    let mut out = Vec::new();
                    if !self.slow_judges.contains(&i) || self.now >= self.gst {
                        for id in self.nodes[idx].engine.known_values() {
                            out.extend(self.nodes[idx].engine.set_validity(
                                now,
                                id,
                                Validity::Valid,
                            ));
                        }
                    }
                    out.extend(self.nodes[idx].engine.on_timeout(now));
                    self.handle(i, out);
                }
            }
        }
        self.decided.len() == honest
    }
}

/// Runs one network; returns the highest round in which an honest member decided.
fn adversarial_run(seed: u64, n: usize, faults: &[Option<Fault>]) -> u32 {
    let mut net = Net::new(seed, n, faults);
    let all = net.run(2_000_000);
    let values: BTreeSet<ValueId> = net.decided.values().copied().collect();
    assert!(
        values.len() <= 1,
        "seed {seed}, n {n}, {faults:?}: honest members decided {values:?}"
    );
    assert!(
        all,
        "seed {seed}, n {n}, {faults:?}: only {:?} decided (gst {}, delay {})",
        net.decided.keys().collect::<Vec<_>>(),
        net.gst,
        net.delay
    );
    net.nodes
        .iter()
        .filter_map(|n| n.engine.decision())
        .map(|(r, _)| r)
        .max()
        .unwrap_or(0)
}

#[test]
fn honest_members_agree_and_terminate_whatever_f_faulty_members_do() {
    let strategies = [
        Fault::Silent,
        Fault::Equivocate,
        Fault::LateHalf,
        Fault::Split,
    ];
    let mut late_decisions = 0;
    for seed in 0..2_000u64 {
        let n = [4, 5, 7][(seed % 3) as usize];
        let f = (n - 1) / 3;
        let mut faults = vec![None; n];
        for k in 0..f {
            // Spread the faulty members over the positions, including round 0's proposer.
            let pos = ((seed as usize) + k * 2) % n;
            faults[pos] = Some(strategies[((seed as usize) + k) % strategies.len()]);
        }
        if adversarial_run(seed, n, &faults) > 0 {
            late_decisions += 1;
        }
    }
    assert!(
        late_decisions > 200,
        "the adversary forced only {late_decisions} runs past round 0"
    );
    // And with everybody honest.
    for seed in 0..20 {
        adversarial_run(seed, 4, &[]);
    }
}

#[test]
fn an_equivocators_junk_cannot_crowd_out_a_vote_that_helps_a_quorum() {
    let now = Time(0);
    let mut t = Tendermint::new(config(4, 4));
    t.set_validity(now, value(1), Validity::Valid);
    // Member 3 signs eight junk precommits in round 0 first ...
    for junk in 10..18 {
        t.set_validity(now, value(junk), Validity::Valid);
        let (r, _) = t.on_message(now, 3, precommit(0, Some(value(junk))));
        assert!(matches!(r, Receipt::New | Receipt::Equivocation));
    }
    let (r, _) = t.on_message(now, 3, precommit(0, Some(value(19))));
    assert_eq!(
        r,
        Receipt::Dropped,
        "past the number kept, for a value no one else voted"
    );
    assert!(!t.accepts(3, &precommit(0, Some(value(20)))));
    // ... then the others precommit value 1, and member 3's precommit for it still counts.
    t.on_message(now, 1, precommit(0, Some(value(1))));
    t.on_message(now, 2, precommit(0, Some(value(1))));
    assert!(t.accepts(3, &precommit(0, Some(value(1)))));
    let (r, out) = t.on_message(now, 3, precommit(0, Some(value(1))));
    assert_eq!(r, Receipt::Equivocation);
    assert_eq!(
        out,
        vec![Action::Decide {
            round: 0,
            value: value(1)
        }]
    );
}
