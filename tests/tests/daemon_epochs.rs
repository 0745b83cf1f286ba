//! Five `bankmesh run` processes set up only through `init` and `consortium assemble` run two
//! epochs with different scores; one member is killed (SIGKILL) during the seal and another
//! during decryption, the others still get exact results, and both catch up after a restart.
//! The admin API refuses a missing or wrong token, a malformed file and a closed epoch.

use std::time::Duration;

use bankmesh_tests::{http, scores, token, Consortium, Schedule};

const WAIT: Duration = Duration::from_secs(180);

#[test]
fn five_daemons_two_epochs_survive_kills_and_stay_exact() {
    let mut c = Consortium::new(
        5,
        &Schedule {
            threshold: 3,
            // Long enough on a loaded 2-core machine for the two killed members to be back
            // before epoch 2's submission window closes, and for a member restarted as epoch
            // 2's setup begins to catch up and post its three DKG rounds within one attempt
            // (a third of the setup).
            epoch_seconds: 45,
            setup_seconds: 30,
            start_in: Duration::from_secs(6),
        },
    );
    for i in 0..5 {
        c.start(i);
    }
    let epoch1 = scores(5, 40, 1);
    let epoch2 = scores(5, 40, 2);
    // Both epochs' scores are queued at once, as an operator may; epoch 2's wait for its window.
    for (i, rows) in epoch1.iter().enumerate() {
        c.submit(i, 1, rows);
    }
    for (i, rows) in epoch2.iter().enumerate() {
        c.submit(i, 2, rows);
    }
    admin_api_refuses_bad_requests(&c);

    // Member 4 dies during the seal, member 5 during decryption.
    let seen4 = c.wait_phase(3, 1, &["seal", "decrypt", "done"], WAIT);
    c.kill(3);
    let seen5 = c.wait_phase(4, 1, &["decrypt", "done"], WAIT);
    c.kill(4);
    eprintln!("killed member 4 in {seen4}, member 5 in {seen5}");
    for i in 0..3 {
        c.assert_exact(i, 1, &epoch1, WAIT);
    }
    c.start(3);
    c.start(4);
    for i in 3..5 {
        c.assert_exact(i, 1, &epoch1, WAIT);
    }

    // The closed epoch is refused clearly; the next one runs with all five.
    let (code, body) = http(
        c.nodes[0].admin,
        "POST",
        "/v1/submit?epoch=1",
        Some(&token(&c.nodes[0])),
        b"client_id,score\nx,1\n",
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("epoch 1 is not open"), "{body}");
    for i in 0..5 {
        c.assert_exact(i, 2, &epoch2, WAIT);
    }
    for i in 0..5 {
        assert!(c.stop(i), "member {} stops cleanly on SIGTERM", i + 1);
    }
    for (i, node) in c.nodes.iter().enumerate() {
        scores_are_erased_once_results_are_stored(i, &node.dir.join("store"));
    }
}

/// On disk, epochs 1 and 2 keep their results and nothing of the scores or pseudonyms; member
/// 1's epoch 3, queued but not run, keeps its scores.
fn scores_are_erased_once_results_are_stored(i: usize, store: &std::path::Path) {
    let (store, _) = bankmesh_store::Store::open(store).unwrap();
    let keys: Vec<String> = store
        .local_scan()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let member = i + 1;
    for epoch in [1u64, 2] {
        let prefix = format!("epoch/{epoch:020}/");
        let of_epoch: Vec<&String> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
        for secret in ["scores/", "pseudonyms/", "result/"] {
            assert!(
                !of_epoch
                    .iter()
                    .any(|k| k[prefix.len()..].starts_with(secret)),
                "member {member} epoch {epoch} keeps {secret}: {of_epoch:?}"
            );
        }
        assert!(
            of_epoch.iter().any(|k| k.ends_with("/finished")),
            "member {member} epoch {epoch} stored its results: {of_epoch:?}"
        );
    }
    if i == 0 {
        let epoch3 = format!("epoch/{:020}/", 3);
        let finished = keys.contains(&format!("{epoch3}finished"));
        let scores = keys
            .iter()
            .any(|k| k.starts_with(&format!("{epoch3}scores/")));
        assert!(
            finished != scores,
            "member 1's epoch 3 keeps its scores until its results are stored: {keys:?}"
        );
    }
}

fn admin_api_refuses_bad_requests(c: &Consortium) {
    let node = &c.nodes[0];
    let good = token(node);
    for (path, method) in [
        ("/v1/status", "GET"),
        ("/v1/submit?epoch=3", "POST"),
        ("/metrics", "GET"),
    ] {
        let (code, body) = http(node.admin, method, path, None, b"");
        assert_eq!(code, 401, "{path} without a token: {body}");
        assert!(body.contains("missing admin token"), "{body}");
        let (code, body) = http(node.admin, method, path, Some("0000"), b"");
        assert_eq!(code, 401, "{path} with a wrong token: {body}");
        assert!(body.contains("wrong admin token"), "{body}");
    }
    let (code, _) = http(node.admin, "GET", "/v1/health", None, b"");
    assert_eq!(code, 200);

    // A malformed file names its line (physical, CRLF and a quoted line break counted) and
    // queues nothing: the same epoch takes a good file afterwards.
    let bad = "\u{feff}client_id,score\r\n\"a\r\nb\",5\r\nc,1024\r\n";
    let (code, body) = http(
        node.admin,
        "POST",
        "/v1/submit?epoch=3",
        Some(&good),
        bad.as_bytes(),
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("request body:4:") && body.contains("1024"),
        "{body}"
    );
    let (code, body) = http(
        node.admin,
        "POST",
        "/v1/submit?epoch=3",
        Some(&good),
        b"client_id,score\nonly,7\n",
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"epoch\":3"), "{body}");
    let (code, body) = http(node.admin, "GET", "/metrics", Some(&good), b"");
    assert_eq!(code, 200);
    assert!(body.contains("bankmesh_peers_connected"), "{body}");
}
