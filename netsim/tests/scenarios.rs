//! `netsim sweep --seeds 3` as tests: every scenario over three seeds shows no violation, and a
//! run is a function of its seed.

use bankmesh_netsim::scenario::{self, Size};

fn sweep(name: &str) {
    for seed in 1..=3 {
        let run = scenario::run(name, seed, Size::default()).unwrap_or_else(|e| {
            panic!(
                "{name} seed {seed}: {e}; replay with: netsim run --scenario {name} --seed {seed}"
            )
        });
        assert!(
            run.outcome.violations.is_empty(),
            "{name} seed {seed}: {:?}; replay with: netsim run --scenario {name} --seed {seed}",
            run.outcome.violations
        );
        assert!(
            run.outcome.results_checked > 0,
            "{name} seed {seed}: no result checked"
        );
    }
}

macro_rules! scenarios {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { sweep($name); })*

        #[test]
        fn every_scenario_has_a_test() {
            let tested = [$($name),*];
            for name in scenario::ALL {
                assert!(tested.contains(name), "scenario {name} is not swept in CI");
            }
        }
    };
}

scenarios! {
    happy => "happy",
    lossy => "lossy",
    partition_heal => "partition-heal",
    minority_partition => "minority-partition",
    skew => "skew",
    skew_beyond => "skew-beyond",
    crash_restart => "crash-restart",
    offline_minority => "offline-minority",
    late_start => "late-start",
    late_cosigner => "late-cosigner",
    equivocation => "equivocation",
    censoring_proposer => "censoring-proposer",
    withholding_dealer => "withholding-dealer",
    silent_dealer => "silent-dealer",
    bad_dkg_share => "bad-dkg-share",
    false_complaint => "false-complaint",
    bad_decryption_share => "bad-decryption-share",
    bad_oprf_eval => "bad-oprf-eval",
    invalid_submission => "invalid-submission",
    spam => "spam",
    double_submission => "double-submission",
    relay_offline => "relay-offline",
    multi_epoch => "multi-epoch",
}

#[test]
fn the_same_seed_gives_the_same_run() {
    for name in ["lossy", "equivocation", "crash-restart"] {
        let a = scenario::run(name, 2, Size::default()).unwrap();
        let b = scenario::run(name, 2, Size::default()).unwrap();
        assert_eq!(a.digest, b.digest, "{name} seed 2 is not deterministic");
        let c = scenario::run(name, 3, Size::default()).unwrap();
        assert_ne!(a.digest, c.digest, "{name}: seeds 2 and 3 ran the same");
    }
}

/// Seeds the long sweep found where member 2's equivocation left an honest member holding the
/// other side of its chain's fork: it could not read member 2's later records (its report), so
/// it never sealed. They continue the fork as evidence now.
#[test]
fn an_honest_member_on_the_other_side_of_a_fork_still_seals() {
    let size = Size {
        clients: 6,
        ..Size::default()
    };
    for seed in [751, 797, 801] {
        let run = scenario::run("equivocation", seed, size).unwrap();
        assert!(
            run.outcome.violations.is_empty(),
            "seed {seed}: {:?}; replay with: netsim run --scenario equivocation --seed {seed} --clients 6",
            run.outcome.violations
        );
    }
}

/// A member posting twice for one tag and reusing a slot: every honest member leaves every
/// such post out (the checks above find the same final set everywhere, and no repeated link or
/// slot tag in it).
#[test]
fn double_submissions_are_left_out_everywhere() {
    for seed in 1..=3 {
        let run = scenario::run("double-submission", seed, Size::default()).unwrap();
        assert!(
            run.outcome.violations.is_empty(),
            "seed {seed}: {:?}",
            run.outcome.violations
        );
        // Its first submission and the copy; its second and the third moved into the second's
        // slot; and the real third, which sync fetches from its store and which shares a link
        // tag with the moved one.
        assert_eq!(
            run.outcome.excluded, 5,
            "seed {seed}: replay with: netsim run --scenario double-submission --seed {seed}"
        );
    }
}
