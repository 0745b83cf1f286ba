//! A consortium whose members start seconds apart, the last after the setup deadline, still
//! sets up without it and runs its first epoch. The late member is not in that epoch's ring
//! (keys are per epoch), so its scores for it are refused with the reason; it takes part in the
//! next epoch's setup, and in that epoch everyone's results are exact, its own included.

use std::time::Duration;

use bankmesh_tests::{run, scores, write_csv, Consortium, Schedule};

#[test]
fn members_starting_apart_still_set_up_and_the_late_one_joins_the_next_epoch() {
    let setup = 15;
    let mut c = Consortium::new(
        5,
        &Schedule {
            threshold: 3,
            epoch_seconds: 40,
            setup_seconds: setup,
            start_in: Duration::from_secs(2),
        },
    );
    let mut epoch1 = scores(5, 30, 3);
    for (i, rows) in epoch1.iter().enumerate().take(4) {
        c.start(i);
        c.submit(i, 1, rows);
        std::thread::sleep(Duration::from_secs(1));
    }
    // The last member comes up after the setup deadline.
    std::thread::sleep(Duration::from_secs(setup + 2));
    let s = c.status(0).expect("member 1 answers");
    assert_eq!(
        s["keys_ready"], true,
        "setup decided without the late member: {s}"
    );
    assert_eq!(
        s["setup"]["participants"].as_array().unwrap().len(),
        4,
        "{s}"
    );
    c.start(4);
    // Once it has read epoch 1's setup decision from its peers, it refuses scores for epoch 1.
    let caught_up = (0..150).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        c.status(4).is_some_and(|s| s["keys_ready"] == true)
    });
    assert!(caught_up, "member 5 never read epoch 1's setup decision");
    let file = std::env::temp_dir().join(format!("late-{}.csv", std::process::id()));
    write_csv(&file, &epoch1[4]);
    let out = run(&[
        "submit",
        "--dir",
        c.dir(4),
        file.to_str().unwrap(),
        "--epoch",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not in epoch 1's ring"),
        "{stderr}"
    );
    epoch1[4].clear();
    let epoch2 = scores(5, 30, 4);
    for (i, rows) in epoch2.iter().enumerate() {
        c.submit(i, 2, rows);
    }
    for i in 0..4 {
        c.assert_exact(i, 1, &epoch1, Duration::from_secs(120));
    }
    for i in 0..5 {
        c.assert_exact(i, 2, &epoch2, Duration::from_secs(180));
    }
}
