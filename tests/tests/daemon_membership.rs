//! Membership at the process level: `init` never overwrites keys, `run` refuses a genesis that
//! does not list it, and a node whose key is not in the members' genesis can neither connect to
//! them nor get a record to them.

#![allow(clippy::disallowed_methods)] // waits on real processes

use std::time::{Duration, Instant};

use bankmesh_tests::{assemble, init, run, Consortium, Schedule};

#[test]
fn outsiders_are_refused() {
    let schedule = Schedule {
        threshold: 2,
        epoch_seconds: 30,
        setup_seconds: 20,
        start_in: Duration::from_secs(5),
    };
    let mut c = Consortium::new(4, &schedule);

    // init refuses to overwrite an existing member directory.
    let key = std::fs::read(c.nodes[0].dir.join("member.key")).unwrap();
    let out = run(&[
        "init",
        "--name",
        "bank-1",
        "--dir",
        c.dir(0),
        "--listen",
        "/ip4/127.0.0.1/tcp/9",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(c.nodes[0].dir.join("member.key")).unwrap(),
        key
    );

    // An outsider with the members' genesis is refused by its own node.
    let outsider = init(&c.root, "outsider");
    let out = run(&[
        "run",
        "--dir",
        outsider.dir(),
        "--consortium",
        c.genesis.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a member of consortium"), "{err}");

    // With a genesis of its own that names the members and itself, it runs and dials them,
    // but the members refuse its connections, so nothing it posts reaches them.
    for i in 0..4 {
        c.start(i);
    }
    let forged = c.root.join("forged.toml");
    let nodes: Vec<_> = c.nodes.iter().take(3).chain([&outsider]).collect();
    assemble(&nodes, &schedule, &forged);
    let mut child = std::process::Command::new(bankmesh_tests::bankmesh())
        .args(["run", "--dir", outsider.dir(), "--consortium"])
        .arg(&forged)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut answered = false;
    while Instant::now() < deadline {
        let out = run(&["status", "--dir", outsider.dir(), "--json"]);
        if out.status.success() {
            answered = true;
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(s["peers"], serde_json::json!([]), "outsider connected: {s}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the outsider's node ran");
    // The members set up among themselves, unaffected.
    for i in 0..4 {
        let s = c.status(i).expect("member answers");
        assert_eq!(s["peers"].as_array().unwrap().len(), 3, "{s}");
    }
}
