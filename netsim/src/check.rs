//! The properties checked after every run (DESIGN 4.4; `docs/seal.md`):
//!
//! - agreement: all honest members that finalized an epoch hold the same final set;
//! - validity: every submission in the report of every honest member that reported is in the
//!   final set, and every submission in the final set is in some honest member's report;
//! - exact results: every honest submitter's result equals the plaintext sum and count over
//!   the final set (a combined share that was not verified would shift it);
//! - anonymous posting: no honest member's own submission first reached gossip from itself;
//! - termination, where the scenario's network was timely: every honest member finalized
//!   every epoch and has a result for each of its submissions in the final set.

use std::collections::{BTreeMap, BTreeSet};

use bankmesh_protocol::record::{Body, Payload};
use bankmesh_protocol::{Event, Hash, MemberIndex, Phase};

use crate::Sim;

/// What a scenario expects beyond safety.
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect {
    /// Every honest member finalizes every epoch and gets all its results.
    pub termination: bool,
    /// The log proves the faulty member at fault for this, at every honest member.
    pub named: Option<&'static str>,
    /// The faulty member is left out of epoch 1's keys (its setup retried without it).
    pub left_out: bool,
    /// Every honest member named the faulty member in a fault of its own whose detail holds
    /// this ("" for any fault): what it sent cannot be proven to others (junk carries no
    /// signature; a submission without its exit's stamp names only the member that sent it).
    pub faulted: Option<&'static str>,
}

/// What a run showed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub violations: Vec<String>,
    /// Results compared with the plaintext truth.
    pub results_checked: usize,
    /// Honest submissions left out of a final set (allowed: they were not held by all).
    pub dropped: usize,
    /// Decisions taken in a round after 0 (the adversary or the network delayed them).
    pub late_rounds: usize,
    /// Local failures that a later certified decision superseded, or that were allowed.
    pub failures: usize,
    /// Submissions of decided sets left out for a repeated link or slot tag.
    pub excluded: usize,
}

/// The faulty member is named as the scenario expects at every honest member that is up: by a
/// record on the log for what it did, and left out of the epoch's keys.
fn culprit_named(sim: &Sim, culprit: MemberIndex, expect: Expect, out: &mut Outcome) {
    for m in sim.members().into_iter().filter(|&m| m != culprit) {
        let Some(bank) = sim.bank(m) else { continue };
        if let Some(kind) = expect.named {
            let named = bank
                .convictions()
                .get(&culprit)
                .is_some_and(|c| c.iter().any(|(k, _)| *k == kind));
            if !named {
                out.violations.push(format!(
                    "member {m}: no record on its log proves member {culprit} at fault for {kind}"
                ));
            }
        }
        if let Some(what) = expect.faulted {
            let details = sim.named.get(&(m, culprit)).map_or(&[][..], Vec::as_slice);
            if !details.iter().any(|d| d.contains(what)) {
                out.violations.push(format!(
                    "member {m} named no fault of member {culprit} for {what:?}: {details:?}"
                ));
            }
        }
        if expect.left_out && bank.ring_members(1).is_some_and(|r| r.contains(&culprit)) {
            out.violations.push(format!(
                "member {m}: member {culprit} holds epoch 1's keys (its setup was not retried without it)"
            ));
        }
    }
}

/// One post per member per tag, and per slot: no link tag or slot tag repeats in a final set.
fn unique_link_and_slot_tags(
    sim: &Sim,
    member: Option<MemberIndex>,
    epoch: u64,
    set: &BTreeSet<Hash>,
    out: &mut Outcome,
) {
    let Some(store) = member.and_then(|m| sim.store(m)) else {
        return;
    };
    let mut links = BTreeSet::new();
    let mut slots = BTreeSet::new();
    for h in set {
        let Some(record) = store
            .get(h)
            .ok()
            .flatten()
            .and_then(|b| bankmesh_protocol::record::Record::from_trusted_bytes(&b).ok())
        else {
            continue;
        };
        if let Payload::Submission(s) = record.payload() {
            if !links.insert(s.ring.link.to_bytes()) || !slots.insert(s.ring.slot_tag.to_bytes()) {
                out.violations.push(format!(
                    "epoch {epoch}: a link tag or slot tag repeats in the final set"
                ));
                return;
            }
        }
    }
}

/// The hashes in `member`'s own report for `epoch`, as its own log holds them.
fn own_report(sim: &Sim, member: MemberIndex, epoch: u64) -> Option<BTreeSet<Hash>> {
    let mut hashes = BTreeSet::new();
    let mut complete = false;
    for r in sim.records_by(member, member) {
        if let Payload::Identified(i) = r.payload() {
            if let Body::Report {
                epoch: e,
                last,
                hashes: h,
                ..
            } = &i.body
            {
                if *e == epoch {
                    hashes.extend(h.iter().copied());
                    complete |= *last;
                }
            }
        }
    }
    complete.then_some(hashes)
}

pub fn check(sim: &Sim, expect: Expect) -> Outcome {
    let mut out = Outcome::default();
    let faulty = sim.faulty();
    let honest: Vec<MemberIndex> = sim
        .members()
        .into_iter()
        .filter(|m| Some(*m) != faulty)
        .collect();
    for m in &honest {
        if !sim.is_up(*m) {
            out.violations
                .push(format!("member {m} is down at the end of the run"));
        }
    }
    for epoch in 1..=sim.config().epochs {
        // Agreement.
        let mut sets: BTreeMap<Vec<Hash>, Vec<MemberIndex>> = BTreeMap::new();
        for &m in &honest {
            if let Some(h) = sim.bank(m).and_then(|b| b.final_hashes(epoch)) {
                sets.entry(h).or_default().push(m);
            }
        }
        if sets.len() > 1 {
            let summary: Vec<String> = sets
                .iter()
                .map(|(h, who)| format!("{} submissions at members {who:?}", h.len()))
                .collect();
            out.violations.push(format!(
                "epoch {epoch}: honest members finalized different sets: {}",
                summary.join("; ")
            ));
            continue;
        }
        let Some((final_set, finalized)) = sets.into_iter().next() else {
            if expect.termination {
                out.violations
                    .push(format!("epoch {epoch}: no honest member finalized"));
            }
            continue;
        };
        let f: BTreeSet<Hash> = final_set.iter().copied().collect();
        // What the seal decided: the final set and what it left out (repeated link or slot
        // tags). Validity is about the decided set.
        let excluded: BTreeSet<Hash> = finalized
            .first()
            .and_then(|&m| sim.bank(m)?.excluded(epoch))
            .unwrap_or_default()
            .into_iter()
            .collect();
        out.excluded += excluded.len();
        let decided: BTreeSet<Hash> = f.union(&excluded).copied().collect();
        unique_link_and_slot_tags(sim, finalized.first().copied(), epoch, &f, &mut out);
        if expect.termination && finalized.len() < honest.len() {
            out.violations.push(format!(
                "epoch {epoch}: only members {finalized:?} of the honest {honest:?} finalized"
            ));
        }
        // Validity.
        let reports: Vec<BTreeSet<Hash>> = honest
            .iter()
            .filter_map(|&m| own_report(sim, m, epoch))
            .collect();
        if let Some(first) = reports.first() {
            let common: Vec<&Hash> = first
                .iter()
                .filter(|h| reports.iter().all(|r| r.contains(*h)))
                .collect();
            let left_out = common.iter().filter(|h| !decided.contains(**h)).count();
            if left_out > 0 {
                out.violations.push(format!(
                    "epoch {epoch}: {left_out} submissions held by every honest member that reported are not in the final set"
                ));
            }
        }
        let anywhere: BTreeSet<&Hash> = reports.iter().flatten().collect();
        let unheld = decided.iter().filter(|h| !anywhere.contains(h)).count();
        if unheld > 0 && reports.len() == honest.len() {
            out.violations.push(format!(
                "epoch {epoch}: {unheld} submissions of the final set are in no honest member's report"
            ));
        }
        // Exact results over the final set.
        let scores = sim.scores.get(&epoch).cloned().unwrap_or_default();
        let mut truth: BTreeMap<String, (Option<u64>, u32)> = BTreeMap::new();
        for m in sim.members() {
            let Some(bank) = sim.bank(m) else { continue };
            let rows = scores.get(usize::from(m) - 1).cloned().unwrap_or_default();
            for (client, hash) in bank.own_submissions(epoch) {
                if !f.contains(&hash) {
                    continue;
                }
                let score = rows
                    .iter()
                    .find(|(id, _)| *id == client)
                    .map_or(0, |(_, s)| u64::from(*s));
                let t = truth.entry(client).or_insert((Some(0), 0));
                t.0 = t.0.map(|sum| sum + score);
                t.1 += 1;
            }
        }
        // Output control: below the genesis min_count a result is withheld.
        let min_count = sim.consortium().min_count();
        for t in truth.values_mut() {
            if t.1 < min_count {
                t.0 = None;
            }
        }
        for &m in &honest {
            let Some(bank) = sim.bank(m) else { continue };
            let results: BTreeMap<String, (Option<u64>, u32)> = bank
                .results(epoch)
                .into_iter()
                .map(|r| (r.client_id, (r.sum, r.count)))
                .collect();
            let own = bank.own_submissions(epoch);
            // A member outside the epoch's ring (it missed the epoch's setup) posts nothing in
            // it: it takes part again from the next epoch's setup. Every honest member knows
            // the ring (from the log) once the run is over.
            let ring = bank.ring_members(epoch);
            if expect.termination && ring.is_none() {
                out.violations.push(format!(
                    "epoch {epoch}: member {m} does not know the epoch's keys"
                ));
            }
            let in_ring = ring.is_some_and(|r| r.contains(&m));
            let rows = if in_ring {
                scores.get(usize::from(m) - 1).map_or(0, Vec::len)
            } else {
                0
            };
            if expect.termination && own.len() != rows {
                out.violations.push(format!(
                    "epoch {epoch}: member {m} submitted {} of its {rows} clients",
                    own.len()
                ));
            }
            for (client, hash) in own {
                // Anonymity of posting: an honest member's submission reaches gossip from an
                // exit, never from the member itself.
                if sim.first_publisher.get(&hash) == Some(&m) {
                    out.violations.push(format!(
                        "epoch {epoch}: member {m} published its own submission for {client}"
                    ));
                }
                if !f.contains(&hash) {
                    out.dropped += 1;
                    continue;
                }
                match results.get(&client) {
                    Some(got) => {
                        let want = truth.get(&client).copied().unwrap_or_default();
                        if *got != want {
                            out.violations.push(format!(
                                "epoch {epoch}: member {m} client {client}: result {got:?}, plaintext over the final set {want:?}"
                            ));
                        }
                        out.results_checked += 1;
                    }
                    None if expect.termination => out.violations.push(format!(
                        "epoch {epoch}: member {m} has no result for client {client}"
                    )),
                    None => {}
                }
            }
            if expect.termination {
                let done = sim.status(m).is_some_and(|s| {
                    s.epochs
                        .iter()
                        .any(|e| e.epoch == epoch && e.phase == Phase::Done)
                });
                if !done {
                    out.violations
                        .push(format!("epoch {epoch}: member {m} is not done"));
                }
            }
        }
    }
    if let Some(culprit) = faulty {
        culprit_named(sim, culprit, expect, &mut out);
    }
    for n in &sim.noted {
        match &n.event {
            Event::Sealed { round, .. } if *round > 0 && Some(n.member) != faulty => {
                out.late_rounds += 1
            }
            Event::Failed { phase, reason, .. } if Some(n.member) != faulty => {
                out.failures += 1;
                // A setup or own-client failure in a run that should terminate is a violation;
                // a seal failure is allowed only if a decision superseded it (checked above).
                if expect.termination && *phase == Phase::Setup {
                    out.violations
                        .push(format!("member {} failed in setup: {reason}", n.member));
                }
            }
            _ => {}
        }
    }
    out
}
