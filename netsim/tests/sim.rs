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
