//! The onion relay under the simulator (DESIGN 6): every submission reaches gossip from an exit
//! other than its origin, the exit is uniform over the other members whatever the origin, and
//! what a bank sends under its identity does not follow its number of clients.

use std::collections::BTreeMap;

use bankmesh_netsim::scenario::{self, Size};
use bankmesh_netsim::{Sim, SimConfig};
use bankmesh_protocol::MemberIndex;

/// Chi-square statistic of `counts` against the uniform distribution.
fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn onion_exit_is_uniform_over_the_other_members_whatever_the_origin() {
    let seed = 21;
    let mut config = SimConfig::new(seed);
    config.clients_per_bank = 80;
    config.privacy.client_bucket = 128;
    let mut sim = Sim::new(config).unwrap();
    sim.run().unwrap();
    let mut statistic = 0.0;
    let mut degrees = 0;
    for origin in sim.members() {
        let mut exits: BTreeMap<MemberIndex, u64> =
            sim.members().into_iter().map(|m| (m, 0)).collect();
        for (_, hash) in sim.bank(origin).unwrap().own_submissions(1) {
            let exit = sim.first_publisher[&hash];
            *exits.get_mut(&exit).unwrap() += 1;
        }
        assert_eq!(
            exits[&origin], 0,
            "member {origin} published its own submission"
        );
        let others: Vec<u64> = exits
            .iter()
            .filter(|(m, _)| **m != origin)
            .map(|(_, c)| *c)
            .collect();
        assert!(others.iter().sum::<u64>() >= 60, "seed {seed}: {others:?}");
        statistic += chi_square(&others);
        degrees += others.len() - 1;
    }
    // 15 degrees of freedom: the 0.001 critical value is 37.70.
    assert_eq!(degrees, 15);
    assert!(
        statistic < 37.70,
        "seed {seed}: exits are not uniform (chi-square {statistic:.1} on {degrees} df)"
    );
}

/// What member 1 sent under its identity in one epoch, with `clients` clients of its own.
fn traffic_of_member_1(clients: usize) -> (u64, u64, u64) {
    let mut config = SimConfig::new(5);
    config.clients_per_bank = 14;
    config.clients_of.insert(1, clients);
    let mut sim = Sim::new(config).unwrap();
    assert_eq!(sim.scores[&1][0].len(), clients);
    sim.run().unwrap();
    assert!(sim.check_against_truth().unwrap() > 0);
    let stats = sim.bank(1).unwrap().relay_stats();
    let sent = sim.sent[&1];
    (
        stats.sent_real + stats.sent_cover,
        sent.oprf_requests,
        sent.oprf_elements,
    )
}

#[test]
fn onion_packets_and_oprf_requests_do_not_depend_on_the_number_of_clients() {
    // 2 and 14 clients are in one bucket of 16: the same packets and OPRF elements go out.
    let few = traffic_of_member_1(2);
    let many = traffic_of_member_1(14);
    assert_eq!(
        few, many,
        "packets, OPRF requests and elements: {few:?} vs {many:?}"
    );
    assert!(
        few.0 >= 250,
        "one packet a second over the 300 s window: {few:?}"
    );
    assert_eq!(few.2, few.1 * 16, "every request is padded to the bucket");
}

#[test]
fn an_epoch_completes_exactly_while_one_relay_member_is_offline() {
    let run = scenario::run("relay-offline", 4, Size::default()).unwrap();
    assert!(
        run.outcome.violations.is_empty(),
        "{:?}",
        run.outcome.violations
    );
    assert!(run.outcome.results_checked > 0);
    assert_eq!(run.outcome.dropped, 0, "every submission got through");
}

/// No submission on the log carries or points at its poster: it has no author, and none of its
/// bytes is a member's public key (long-term or of the epoch) or the hash of an identified
/// record; and no honest member published its own submission (checked by the run's checker).
#[test]
fn no_submission_carries_or_points_at_its_poster() {
    use bankmesh_protocol::record::{Body, Payload};
    use std::collections::BTreeSet;
    let seed = 23;
    let mut sim = Sim::new(SimConfig::new(seed)).unwrap();
    sim.run().unwrap();
    let outcome = bankmesh_netsim::check::check(
        &sim,
        bankmesh_netsim::check::Expect {
            termination: true,
            ..Default::default()
        },
    );
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
    let mut marks: BTreeSet<[u8; 32]> = BTreeSet::new();
    for m in &sim.consortium().genesis.members {
        marks.extend([m.identity, m.x25519, m.ring]);
    }
    let store = sim.store(1).unwrap();
    let mut submissions = Vec::new();
    for author in sim.members() {
        for r in sim.records_by(1, author) {
            marks.insert(r.hash());
            if let Payload::Identified(i) = r.payload() {
                if let Body::DkgRound1 { seal_key, ring, .. } = &i.body {
                    marks.insert(*seal_key);
                    if let Some(a) = ring {
                        marks.insert(a.key.compress().to_bytes());
                    }
                }
            }
        }
    }
    for hash in store.epoch_hashes(1).unwrap() {
        let bytes = store.get(&hash).unwrap().unwrap();
        let record = bankmesh_protocol::Record::from_trusted_bytes(&bytes).unwrap();
        if matches!(record.payload(), Payload::Submission(_)) {
            assert_eq!(record.author(), None);
            submissions.push(bytes);
        }
    }
    assert!(
        submissions.len() >= 20,
        "seed {seed}: {}",
        submissions.len()
    );
    for bytes in &submissions {
        for w in bytes.windows(32) {
            let w: [u8; 32] = w.try_into().unwrap();
            assert!(
                !marks.contains(&w),
                "seed {seed}: a submission holds a member's key or an identified record's hash"
            );
        }
    }
}
