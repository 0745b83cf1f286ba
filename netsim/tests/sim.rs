//! netsim runs in CI: several seeds, 5 banks, results equal to the plaintext truth.

use bankmesh_netsim::{Sim, SimConfig};

fn run(config: SimConfig) -> (usize, [u8; 32]) {
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    let checked = sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    (checked, sim.event_digest())
}

#[test]
fn five_banks_several_seeds_match_plaintext() {
    for seed in [1, 2, 3] {
        let (checked, _) = run(SimConfig::new(seed));
        assert!(checked > 0, "seed {seed}: no results");
    }
}

#[test]
fn lossy_gossip_is_repaired_by_sync() {
    let mut config = SimConfig::new(11);
    config.gossip_loss_permille = 100;
    let (checked, _) = run(config);
    assert!(checked > 0);
}

#[test]
fn same_seed_same_run() {
    let (_, a) = run(SimConfig::new(5));
    let (_, b) = run(SimConfig::new(5));
    assert_eq!(a, b, "seed 5 is not deterministic");
}

#[test]
fn member_crashing_mid_dkg_resumes_from_its_log() {
    let mut sim = Sim::new(SimConfig::new(21)).unwrap();
    // Crash member 2 once its round-1 packages are durable, before either DKG run completes.
    sim.run_until(|s| {
        s.log_len(2).unwrap_or(0) >= 2 && s.status(2).is_some_and(|st| !st.keys_ready)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    sim.crash(2);
    let down_until = sim.now().0 + 3_000;
    sim.run_until(|s| s.now().0 >= down_until)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sim.status(1).is_some_and(|st| !st.keys_ready),
        "the DKG cannot finish without member 2"
    );

    // Back from its store: it replays its own round-1 records, recomputes their secrets from its
    // key (no new, conflicting packages), catches up by sync, and the epoch completes.
    sim.restart(2).unwrap_or_else(|e| panic!("{e}"));
    sim.submit_scores(2).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    let checked = sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    assert!(checked > 0);
    let kinds = sim.kinds_by(1, 2);
    let round1 = kinds.iter().filter(|k| **k == "dkg-round1").count();
    assert_eq!(
        round1, 2,
        "member 2 posted one round-1 package per run, not again after restarting: {kinds:?}"
    );
}
