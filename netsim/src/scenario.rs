//! Named scenarios: a network, clocks, a plan of crashes and late starts, maybe an adversary,
//! and what is expected beyond safety. `netsim run --scenario NAME` runs one; `netsim sweep`
//! runs them all over many seeds.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use bankmesh_protocol::Event;

use crate::adversary::{
    BadDealer, BadOprfEvaluator, BadShareDecryptor, CensoringProposer, DoubleSubmitter,
    EquivocatingVoter, FalseComplainer, Forging, InvalidPublisher, LateCosigner, SilentDealer,
    Spammer, WithholdingDealer,
};
use crate::check::{self, Expect, Outcome};
use crate::network::Partition;
use crate::{Plan, Sim, SimConfig, START};

/// Every scenario, in sweep order.
pub const ALL: &[&str] = &[
    "happy",
    "lossy",
    "partition-heal",
    "minority-partition",
    "skew",
    "skew-beyond",
    "crash-restart",
    "offline-minority",
    "late-start",
    "late-cosigner",
    "equivocation",
    "censoring-proposer",
    "withholding-dealer",
    "silent-dealer",
    "bad-dkg-share",
    "false-complaint",
    "bad-decryption-share",
    "bad-oprf-eval",
    "invalid-submission",
    "spam",
    "double-submission",
    "relay-offline",
    "multi-epoch",
];

/// The scenarios whose point is a faulty member or a broken network (the long sweeps).
pub const ADVERSARIAL: &[&str] = &[
    "late-cosigner",
    "equivocation",
    "censoring-proposer",
    "partition-heal",
    "crash-restart",
    "double-submission",
    "silent-dealer",
    "bad-dkg-share",
    "false-complaint",
    "bad-decryption-share",
    "bad-oprf-eval",
    "invalid-submission",
    "spam",
];

/// Size parameters a command line may change.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    pub banks: usize,
    pub clients: usize,
    /// `None`: the scenario's own number of epochs.
    pub epochs: Option<u64>,
}

impl Default for Size {
    fn default() -> Self {
        Size {
            banks: 5,
            clients: 12,
            epochs: None,
        }
    }
}

/// Builds scenario `name` for `seed`.
pub fn build(name: &str, seed: u64, size: Size) -> Option<(SimConfig, Expect)> {
    let mut c = SimConfig::new(seed);
    c.banks = size.banks;
    c.threshold = size.banks / 2 + 1;
    c.clients_per_bank = size.clients;
    let n = size.banks as u16;
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x7363_656e);
    let submit_end = 60_000 + c.timing.submit_ms;
    let seal_end = submit_end + c.timing.seal_ms;
    let mut expect = Expect {
        termination: true,
        ..Expect::default()
    };
    match name {
        "happy" => {}
        "lossy" => {
            c.net.gossip_loss_permille = 200;
            c.net.direct_loss_permille = 200;
        }
        "partition-heal" => {
            // The last member gives no scores, so the window runs to its deadline; two
            // members are cut off across it, and the cut heals within the seal window.
            c.silent.insert(n);
            let from = submit_end - 10_000 - rng.next_u64() % 20_000;
            let until = submit_end + 5_000 + rng.next_u64() % 25_000;
            c.net.partitions.push(Partition {
                from_ms: from + crate::START,
                until_ms: Some(until + crate::START),
                side_a: vec![1, 2],
                one_way: rng.next_u32() % 3 == 0,
            });
        }
        "minority-partition" => {
            c.silent.insert(n);
            let cut = 1 + (rng.next_u64() % u64::from(n - 1)) as u16;
            c.net.partitions.push(Partition {
                from_ms: crate::START + submit_end - 30_000,
                until_ms: Some(crate::START + seal_end + 20_000),
                side_a: vec![cut],
                one_way: false,
            });
        }
        "skew" | "skew-beyond" => {
            c.silent.insert(n);
            let bound = c.timing.clock_skew_ms as i64;
            let spread = if name == "skew" {
                bound / 2 - 1
            } else {
                3 * bound
            };
            for m in 1..=n {
                let s = (rng.next_u64() % (2 * spread as u64 + 1)) as i64 - spread;
                c.skew_ms.insert(m, s);
            }
            // Beyond the bound, a submission may miss a report; agreement must still hold.
            expect.termination = name == "skew";
        }
        "crash-restart" => {
            for _ in 0..3 {
                let member = 1 + (rng.next_u64() % u64::from(n)) as u16;
                let at = 200 + rng.next_u64() % 4_000;
                let down = 300 + rng.next_u64() % 5_000;
                c.plan.push(Plan::Crash { member, at_ms: at });
                c.plan.push(Plan::Restart {
                    member,
                    at_ms: at + down,
                });
            }
        }
        "offline-minority" => {
            // n - t members go down when they seal, before their shares leave, and come back
            // well after: the others decrypt with the t left.
            for member in (c.threshold as u16 + 1)..=n {
                c.plan.push(Plan::CrashWhenSealed {
                    member,
                    down_ms: 60_000,
                });
            }
        }
        "relay-offline" => {
            // A member that gives no scores goes down just after the setup, while the others'
            // submissions are on their way, for most of the submission window: the packets
            // routed through it are lost, and their senders resend them by other paths.
            c.silent.insert(n);
            c.plan.push(Plan::Crash {
                member: n,
                at_ms: 1_000 + rng.next_u64() % 2_000,
            });
            c.plan.push(Plan::Restart {
                member: n,
                at_ms: submit_end + 20_000,
            });
        }
        "late-start" => {
            c.plan.push(Plan::StartLate {
                member: n,
                at_ms: c.timing.dkg_ms + 5_000,
            });
        }
        "late-cosigner" => {
            // One honest member is slow, so quorums need the faulty member's votes, which it
            // times to reach half the members early and the rest around their timeouts.
            let round = c.timing.round_ms;
            c.net.slow.insert(n, (round / 2, 3 * round / 2));
            c.adversary = Some((3, Box::new(LateCosigner { round_ms: round })));
        }
        "equivocation" => {
            // Two votes (and proposals) at one sequence number: the two signed records go on
            // the log as a fault record.
            c.adversary = Some((2, Box::new(EquivocatingVoter::default())));
            expect.named = Some("equivocation");
        }
        "silent-dealer" => {
            // Posts nothing in the setup: left out of the retry by timeout (no evidence).
            c.adversary = Some((n, Box::new(SilentDealer)));
            expect.left_out = true;
        }
        "bad-dkg-share" => {
            c.adversary = Some((n, Box::new(Forging::<BadDealer>::default())));
            expect.named = Some("bad-dkg-share");
            expect.left_out = true;
        }
        "false-complaint" => {
            c.adversary = Some((3, Box::new(Forging::<FalseComplainer>::default())));
            expect.named = Some("false-complaint");
            expect.left_out = true;
        }
        "spam" => {
            // Three bursts, each with half again the relay's per-hop rate of onion packets.
            let per_burst = c.privacy.relay_rate as usize * 3 / 2;
            c.adversary = Some((2, Box::new(Spammer::new(3, per_burst))));
            expect.faulted = Some("");
        }
        "invalid-submission" => {
            c.adversary = Some((2, Box::new(InvalidPublisher::default())));
            expect.named = Some("invalid-submission");
            // Its bare copy, sent without a stamp, is refused by every member that gets it.
            expect.faulted = Some("without its publisher's stamp");
        }
        "bad-oprf-eval" => {
            c.adversary = Some((2, Box::new(BadOprfEvaluator::default())));
            expect.named = Some("bad-oprf-eval");
        }
        "bad-decryption-share" => {
            c.adversary = Some((2, Box::new(Forging::<BadShareDecryptor>::default())));
            expect.named = Some("bad-decryption-share");
        }
        "double-submission" => {
            c.adversary = Some((2, Box::new(DoubleSubmitter::default())));
        }
        "censoring-proposer" => {
            // Member 2 proposes round 0 of epoch 1.
            c.adversary = Some((2, Box::new(CensoringProposer::default())));
        }
        "withholding-dealer" => {
            // Member 5 deals round 1 and withholds round 2: attempt 0 cannot complete, and the
            // retry must leave it out.
            c.adversary = Some((n, Box::new(WithholdingDealer)));
        }
        "multi-epoch" => c.epochs = 3,
        _ => return None,
    }
    if let Some(e) = size.epochs {
        c.epochs = e;
    }
    Some((c, expect))
}

/// One finished run of a scenario.
pub struct Run {
    pub outcome: Outcome,
    pub digest: [u8; 32],
    pub events: u64,
    pub virtual_ms: u64,
    /// A few lines on what happened, for `netsim run`.
    pub summary: Vec<String>,
}

/// Runs scenario `name` for `seed` and checks it. `Err` if the run could not go on at all
/// (an unknown scenario, a store error, a stuck run).
pub fn run(name: &str, seed: u64, size: Size) -> Result<Run, String> {
    let (config, expect) =
        build(name, seed, size).ok_or_else(|| format!("unknown scenario {name}"))?;
    let epochs = config.epochs;
    let mut sim = Sim::new(config).map_err(|e| e.to_string())?;
    sim.run().map_err(|e| e.to_string())?;
    let outcome = check::check(&sim, expect);
    let faulty = sim.faulty();
    let mut summary = Vec::new();
    for e in 1..=epochs {
        let sealed: Vec<_> = sim
            .noted
            .iter()
            .filter(|n| Some(n.member) != faulty)
            .filter_map(|n| match &n.event {
                Event::Sealed {
                    epoch,
                    submissions,
                    root,
                    round,
                } if *epoch == e => Some((n.at, *submissions, *root, *round)),
                _ => None,
            })
            .collect();
        let last = sealed.iter().map(|s| s.0).max();
        match (sealed.first(), last) {
            (Some((_, subs, root, round)), Some(at)) => summary.push(format!(
                "epoch {e}: {} honest members sealed by {:.1} s in round {round}: {subs} submissions, root {}",
                sealed.len(),
                (at.0 - START) as f64 / 1000.0,
                hex::encode(&root[..4])
            )),
            _ => summary.push(format!("epoch {e}: not sealed")),
        }
    }
    let net = sim.network();
    summary.push(format!(
        "results: {} exact; {} submissions left out; {} excluded for a repeated link or slot tag; {} seals after round 0; {} local failures; {} faults seen",
        outcome.results_checked,
        outcome.dropped,
        outcome.excluded,
        outcome.late_rounds,
        outcome.failures,
        sim.faults_seen
    ));
    summary.push(format!(
        "network: {} messages lost, {} duplicated, {} cut by partitions",
        net.dropped, net.duplicated, net.cut
    ));
    let mut relay = bankmesh_protocol::relay::RelayStats::default();
    for m in sim.members() {
        if let Some(s) = sim.bank(m).map(|b| b.relay_stats()) {
            relay.sent_real += s.sent_real;
            relay.sent_cover += s.sent_cover;
            relay.resent += s.resent;
            relay.dropped_replay += s.dropped_replay;
            relay.dropped_rate += s.dropped_rate;
            relay.dropped_pool += s.dropped_pool;
            relay.dropped_invalid += s.dropped_invalid;
        }
    }
    summary.push(format!(
        "relay: {} real and {} cover packets sent, {} resent; dropped {} replayed, {} over rate, {} pool full, {} invalid",
        relay.sent_real,
        relay.sent_cover,
        relay.resent,
        relay.dropped_replay,
        relay.dropped_rate,
        relay.dropped_pool,
        relay.dropped_invalid
    ));
    summary.push(log_bytes(&sim));
    summary.extend(convictions(&sim));
    Ok(Run {
        outcome,
        digest: sim.event_digest(),
        events: sim.events(),
        virtual_ms: sim.now().0.saturating_sub(START),
        summary,
    })
}

/// One line per member the log proves at fault, as the first honest member saw it: who, for
/// what, and by which record.
fn convictions(sim: &Sim) -> Vec<String> {
    let faulty = sim.faulty();
    let Some(first) = sim.members().into_iter().find(|&m| Some(m) != faulty) else {
        return Vec::new();
    };
    sim.noted
        .iter()
        .filter(|n| n.member == first)
        .filter_map(|n| match &n.event {
            Event::Convicted {
                epoch,
                member,
                kind,
                detail,
                record,
            } => Some(format!(
                "fault: member {member} named for {kind} in epoch {epoch} by record {} ({detail})",
                hex::encode(&record[..8])
            )),
            _ => None,
        })
        .collect()
}

/// What the first member's log holds, by record kind: records and bytes (what each kind costs
/// every member to store and sync).
fn log_bytes(sim: &Sim) -> String {
    let Some(store) = sim.members().first().and_then(|&m| sim.store(m)) else {
        return "log: no member up".into();
    };
    let mut kinds: std::collections::BTreeMap<&'static str, (u64, u64)> = Default::default();
    let mut from = 0;
    while let Ok(batch) = store.read_from(from, 1_000) {
        if batch.is_empty() {
            break;
        }
        from += batch.len() as u64;
        for (_, _, bytes) in batch {
            if let Ok(r) = bankmesh_protocol::Record::from_trusted_bytes(&bytes) {
                let slot = kinds.entry(r.kind()).or_default();
                slot.0 += 1;
                slot.1 += bytes.len() as u64;
            }
        }
    }
    let parts: Vec<String> = kinds
        .iter()
        .map(|(k, (n, b))| format!("{k} {n} ({b} B)"))
        .collect();
    format!("log: {}", parts.join(", "))
}
