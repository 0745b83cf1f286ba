//! End to end: `bankmesh demo` over real libp2p on loopback, checked against a plaintext
//! computation made here from the inputs; and bad input refused before any network work.

use bankmesh_tests::{expected, run, scores, write_csv};

/// Five banks, clients held by 1 to 5 banks, scores at the range limits, awkward ids.
fn inputs() -> Vec<Vec<(String, u16)>> {
    scores(5, 60, 1)
}

#[test]
fn demo_over_loopback_gives_exact_results() {
    let dir = tempfile::tempdir().unwrap();
    let input_dir = dir.path().join("in");
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&input_dir).unwrap();
    let banks = inputs();
    for (i, rows) in banks.iter().enumerate() {
        write_csv(&input_dir.join(format!("bank-{}.csv", i + 1)), rows);
    }
    let out = run(&[
        "demo",
        "--banks",
        "5",
        "--threshold",
        "3",
        "--inputs",
        input_dir.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out_dir.join("consortium.toml").is_file());

    // The auditors' bundle verifies against the genesis; with one byte of a record changed
    // it does not, and the failure names the line.
    let bundle = out_dir.join("audit.jsonl");
    let consortium = out_dir.join("consortium.toml");
    let verify = |bundle: &std::path::Path| {
        run(&[
            "audit",
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--consortium",
            consortium.to_str().unwrap(),
        ])
    };
    let ok = verify(&bundle);
    assert!(
        ok.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"submission\""))
        .unwrap();
    lines[at] = lines[at].replacen("\"bytes\":\"02", "\"bytes\":\"03", 1);
    let tampered = out_dir.join("tampered.jsonl");
    std::fs::write(&tampered, lines.join("\n")).unwrap();
    let bad = verify(&tampered);
    let report = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "a tampered bundle was accepted");
    assert!(
        report.contains(&format!("FAIL line {} (", at + 1))
            || report.contains(&format!("FAIL line {}:", at + 1)),
        "{report}"
    );

    let truth = expected(&banks);
    for (i, rows) in banks.iter().enumerate() {
        let path = out_dir.join(format!("bank-{}-results.csv", i + 1));
        let mut r = csv::Reader::from_path(&path).unwrap();
        assert_eq!(r.headers().unwrap(), vec!["client_id", "average", "count"]);
        let got: Vec<(String, String, u32)> = r
            .records()
            .map(|rec| {
                let rec = rec.unwrap();
                (
                    rec[0].to_string(),
                    rec[1].to_string(),
                    rec[2].parse().unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), rows.len(), "bank {} has a row per client", i + 1);
        for ((id, _), (gid, avg, count)) in rows.iter().zip(&got) {
            assert_eq!(id, gid);
            assert_eq!(
                Some(&(avg.clone(), *count)),
                truth.get(id),
                "bank {} client {id}",
                i + 1
            );
        }
    }
}

#[test]
fn bad_input_is_refused_with_file_and_line_before_network_work() {
    let dir = tempfile::tempdir().unwrap();
    let input_dir = dir.path().join("in");
    std::fs::create_dir_all(&input_dir).unwrap();
    for i in 1..=3 {
        write_csv(
            &input_dir.join(format!("bank-{i}.csv")),
            &[("a".into(), 1), ("b".into(), 2)],
        );
    }
    std::fs::write(
        input_dir.join("bank-2.csv"),
        "client_id,score\na,5\nb,1024\n",
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let (input, output) = (input_dir.to_str().unwrap(), out_dir.to_str().unwrap());
    let demo = |extra: &[&str]| {
        let mut args = vec!["demo", "--banks", "3", "--out", output];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = demo(&["--inputs", input]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bank-2.csv:3") && err.contains("1024"),
        "{err}"
    );
    assert!(
        !out_dir.join("consortium.toml").exists(),
        "no network work on bad input"
    );

    std::fs::remove_file(input_dir.join("bank-2.csv")).unwrap();
    let out = demo(&["--inputs", input]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bank-2.csv: file not found"));

    let out = demo(&["--threshold", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threshold"));
}
