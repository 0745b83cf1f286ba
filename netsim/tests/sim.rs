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
    config.net.gossip_loss_permille = 100;
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
    // key (no new, conflicting packages), takes back its scores from its local state, catches
    // up by sync, and the epoch completes.
    sim.restart(2).unwrap_or_else(|e| panic!("{e}"));
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

/// Crashes member 2 when `at` holds, restarts it after `down_ms`, and checks the epoch still
/// ends with every bank's exact results, the same final set at every member, and nothing
/// signed twice (no equivocation evidence against member 2 anywhere).
fn crash_and_resume(seed: u64, down_ms: u64, at: impl Fn(&Sim) -> bool) {
    let mut config = SimConfig::new(seed);
    // Enough clients that member 2 posts its submissions and shares over several slices.
    config.clients_per_bank = 40;
    config.max_events = 300_000;
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run_until(|s| at(s)).unwrap_or_else(|e| panic!("{e}"));
    let before = sim.kinds_by(2, 2);
    sim.crash(2);
    let until = sim.now().0 + down_ms;
    sim.run_until(|s| s.now().0 >= until)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.restart(2).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch()
        .unwrap_or_else(|e| panic!("seed {seed} after a crash with log {before:?}: {e}"));
    sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    let roots: std::collections::BTreeSet<_> = (1..=5)
        .map(|m| sim.bank(m).and_then(|b| b.final_set(1)))
        .collect();
    assert_eq!(roots.len(), 1, "final sets differ: {roots:?}");
    for m in 1..=5 {
        let evidence = sim.store(m).unwrap().evidence().unwrap();
        assert!(
            evidence.is_empty(),
            "member {m} holds equivocation evidence after member 2's restart (log before: {before:?})"
        );
    }
    // Epoch 1's records (epoch 2's setup may have begun by the end of the run).
    let kinds: Vec<&str> = sim
        .records_by(1, 2)
        .iter()
        .filter(|r| r.epoch() == Some(1))
        .map(|r| r.kind())
        .collect();
    for kind in ["dkg-round1", "dkg-round2"] {
        assert_eq!(
            kinds.iter().filter(|k| **k == kind).count(),
            2,
            "{kind} twice in {kinds:?}"
        );
    }
    for kind in ["oprf-usage", "report"] {
        assert!(
            kinds.iter().filter(|k| **k == kind).count() <= 1,
            "{kind} repeated in {kinds:?}"
        );
    }
}

fn own_kinds(s: &Sim) -> Vec<&'static str> {
    s.kinds_by(2, 2)
}

/// Member 2 built all its submissions and queued them for the relay (most are still on their
/// way: a crash now loses the queue, which is rebuilt, the same records, after the restart).
fn submitted(s: &Sim) -> bool {
    s.noted
        .iter()
        .any(|n| n.member == 2 && matches!(n.event, bankmesh_protocol::Event::Submitted { .. }))
}

/// Member 2's submissions are out: built, and every one back on its log from its exit.
fn submissions_out(s: &Sim) -> bool {
    submitted(s) && s.bank(2).is_some_and(|b| b.submissions_unconfirmed() == 0)
}

fn epoch1(s: &Sim) -> Option<bankmesh_protocol::step::EpochStatus> {
    s.status(2)?.epochs.into_iter().find(|e| e.epoch == 1)
}

#[test]
fn crash_mid_submission_resumes_without_double_posting() {
    crash_and_resume(31, 1_000, |s| {
        epoch1(s).is_some_and(|e| e.mine >= 1 && e.mine < s.scores[&1][1].len())
    });
}

#[test]
fn crash_after_submitting_resumes() {
    crash_and_resume(32, 1_000, submitted);
}

// A crash at every step of the seal: after the report, after the first prevote, after the first
// precommit, and once the decision is taken (stored, acted on or not).

#[test]
fn crash_after_reporting_resumes() {
    crash_and_resume(33, 500, |s| own_kinds(s).contains(&"report"));
}

#[test]
fn crash_after_prevoting_resumes() {
    crash_and_resume(36, 700, |s| {
        own_kinds(s).iter().filter(|k| **k == "prevote").count() >= 2
    });
}

#[test]
fn crash_after_precommitting_resumes() {
    crash_and_resume(37, 300, |s| {
        own_kinds(s).iter().filter(|k| **k == "precommit").count() >= 2
    });
}

#[test]
fn crash_once_sealed_resumes() {
    crash_and_resume(38, 300, |s| {
        s.bank(2).is_some_and(|b| b.final_set(1).is_some())
    });
}

// And of decryption: after the first share record, and with some results opened.

#[test]
fn crash_after_posting_shares_resumes() {
    crash_and_resume(34, 500, |s| own_kinds(s).contains(&"decryption-shares"));
}

#[test]
fn crash_with_results_half_open_resumes() {
    crash_and_resume(39, 300, |s| {
        epoch1(s).is_some_and(|e| e.results >= 1 && e.results < e.mine)
    });
}

#[test]
fn member_away_past_the_seal_deadline_catches_up() {
    // Member 2 is down from just after its submissions are out until after the seal window:
    // the others seal without it (q of n), and when it is back it syncs, adopts the decision it
    // finds on the log and gets its results (those of its submissions that left in time).
    crash_and_resume(35, 480_000, submissions_out);
}

#[test]
fn a_member_restored_from_an_old_backup_never_reuses_a_sequence_number() {
    // Member 2 is backed up once its submissions are out (its pseudonyms are in the backup),
    // goes on through the seal, then loses everything since the backup. Back up, it must fetch
    // its own chain from the others before it signs, so that nothing it signs forks its chain.
    let mut config = SimConfig::new(41);
    config.clients_per_bank = 20;
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run_until(submissions_out)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.crash(2);
    let backup = tempfile::tempdir().unwrap();
    sim.copy_store(2, &backup.path().join("bank-2")).unwrap();
    let head_at_backup = sim.bank(1).map(|_| sim.kinds_by(1, 2).len()).unwrap();
    sim.restart(2).unwrap_or_else(|e| panic!("{e}"));
    sim.run_until(|s| own_kinds(s).iter().filter(|k| **k == "precommit").count() >= 2)
        .unwrap_or_else(|e| panic!("{e}"));
    let signed = sim.kinds_by(2, 2).len();
    assert!(
        signed > head_at_backup + 3,
        "member 2 signed more after the backup"
    );
    sim.crash(2);
    sim.restore_store(2, &backup.path().join("bank-2")).unwrap();
    let until = sim.now().0 + 200;
    sim.run_until(|s| s.now().0 >= until)
        .unwrap_or_else(|e| panic!("{e}"));
    sim.restart(2).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sim.kinds_by(2, 2).len() < signed,
        "the restored store has lost member 2's recent records"
    );
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    for m in 1..=5 {
        let evidence = sim.store(m).unwrap().evidence().unwrap();
        assert!(
            evidence.is_empty(),
            "member {m} holds evidence of a forked chain"
        );
    }
    assert!(
        sim.kinds_by(2, 2).len() >= signed,
        "member 2 got its chain back"
    );
}

/// Keys are per epoch: a member down through epoch 2's setup is outside its ring (it posts
/// nothing in it), comes back with epoch 1's keys erased but their public part rebuilt from the
/// log, and takes part in epoch 3 with exact results.
#[test]
fn a_member_down_through_a_setup_sits_that_epoch_out_and_rejoins_the_next() {
    use bankmesh_netsim::check::{check, Expect};
    use bankmesh_netsim::Plan;
    let seed = 12;
    let mut config = SimConfig::new(seed);
    config.epochs = 3;
    let (dkg, epoch) = (config.timing.dkg_ms, config.timing.epoch_ms);
    // Epoch 2's setup starts at `epoch` after the start; epoch 2 itself at `dkg + epoch`.
    config.plan.push(Plan::Crash {
        member: 4,
        at_ms: epoch - 1_000,
    });
    config.plan.push(Plan::Restart {
        member: 4,
        at_ms: dkg + epoch + 60_000,
    });
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run().unwrap_or_else(|e| panic!("{e}"));
    let outcome = check(
        &sim,
        Expect {
            termination: true,
            ..Default::default()
        },
    );
    assert!(
        outcome.violations.is_empty(),
        "seed {seed}: {:?}",
        outcome.violations
    );
    let ring = |m: u16, e: u64| sim.bank(m).unwrap().ring_members(e).unwrap();
    assert_eq!(ring(1, 2), vec![1, 2, 3, 5], "seed {seed}");
    assert_eq!(ring(1, 3), vec![1, 2, 3, 4, 5], "seed {seed}");
    assert_eq!(
        ring(4, 1),
        ring(1, 1),
        "epoch 1's ring rebuilt after the restart"
    );
    assert!(sim.bank(4).unwrap().own_submissions(2).is_empty());
    assert!(!sim.results_of(4, 3).is_empty());
    // Every epoch's keys go, the last one's in the step after it finished.
    let erased = |s: &Sim| {
        s.members()
            .iter()
            .all(|&m| (1..=3).all(|e| s.bank(m).is_some_and(|b| b.epoch_keys_erased(e))))
    };
    sim.run_until(erased)
        .unwrap_or_else(|e| panic!("seed {seed}: some epoch's secrets are still held: {e}"));
}
