//! A consortium whose members start seconds apart, the last after the setup deadline, still
//! sets up without it and runs its epoch, the late member included.

use std::time::Duration;

use bankmesh_tests::{scores, Consortium, Schedule};

#[test]
fn members_starting_apart_still_set_up_and_run() {
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
    let epoch1 = scores(5, 30, 3);
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
    std::thread::sleep(Duration::from_secs(1));
    c.submit(4, 1, &epoch1[4]);
    for i in 0..5 {
        c.assert_exact(i, 1, &epoch1, Duration::from_secs(180));
    }
}
