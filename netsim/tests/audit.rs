//! The audit bundle (issue 9): an honest bundle verifies; every kind of tampering fails and
//! names the line.

use std::sync::OnceLock;

use bankmesh_netsim::{Sim, SimConfig};
use bankmesh_store::audit::{self, Verified};
use serde_json::Value;

type Honest = (
    Vec<String>,
    bankmesh_protocol::genesis::Consortium,
    Vec<ed25519_dalek::SigningKey>,
);

/// The bundle of member 1's log after one honest epoch, the consortium, and the members'
/// identity keys (index 0 is member 1), to forge records that only proofs can refute. Made
/// once.
fn honest() -> &'static Honest {
    static BUNDLE: OnceLock<Honest> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let mut sim = Sim::new(SimConfig::new(21)).unwrap_or_else(|e| panic!("{e}"));
        sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
        let c = (**sim.consortium()).clone();
        let toml = c.genesis.to_toml();
        let mut out = Vec::new();
        let summary = audit::export(sim.store(1).unwrap(), &c, &toml, &mut out).unwrap();
        assert_eq!(summary.checkpoints, 1, "epoch 1 is sealed");
        let text = String::from_utf8(out).unwrap();
        let keys = sim
            .members()
            .into_iter()
            .map(|m| sim.member_secrets(m).unwrap().identity().clone())
            .collect();
        (text.lines().map(str::to_string).collect(), c, keys)
    })
}

fn verify(lines: &[String]) -> Verified {
    let (_, c, _) = honest();
    let text = lines.join("\n");
    audit::verify(text.as_bytes(), c, |_, _| {})
}

/// Fails, and some failure names line `line` (1-based; 0 for the bundle as a whole).
fn fails_at(lines: &[String], line: u64, what: &str) {
    let v = verify(lines);
    assert!(!v.ok(), "{what}: accepted");
    assert!(
        v.failures.iter().any(|f| f.line == line),
        "{what}: no failure names line {line}: {:?}",
        v.failures
    );
}

/// The record line of `bytes`, as the export writes it (hash and view agreeing with them).
fn line_of(bytes: &[u8]) -> String {
    let r = bankmesh_protocol::record::UncheckedRecord::decode(bytes).unwrap();
    serde_json::to_string(&audit::Line::Record(audit::record_line(&r))).unwrap()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// Line numbers (1-based) of records of `kind`.
fn records_of(lines: &[String], kind: &str) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let v = json(l);
            v["type"] == "record" && v["view"]["kind"] == kind
        })
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn an_honest_bundle_verifies_and_summarizes() {
    let (lines, _, _) = honest();
    let v = verify(lines);
    assert!(v.ok(), "{:?}", v.failures);
    assert_eq!(v.checkpoints, 1);
    assert!(v.records > 50);
    let e = &v.epochs[&1];
    assert_eq!(e.sealed, Some(e.submissions), "every submission sealed");
    assert_eq!(e.authors.len(), 5);
    assert!(e.faults.is_empty());
}

/// Changes one hex digit of a record's bytes at `pos`, and makes its hash and view agree with
/// the new bytes (where they still decode), so that only a signature, proof or chain check can
/// catch it.
fn tamper(line: &str, pos: usize) -> String {
    let mut v = json(line);
    let mut b = v["bytes"].as_str().unwrap().to_string().into_bytes();
    b[pos] = if b[pos] == b'0' { b'1' } else { b'0' };
    let bytes = String::from_utf8(b).unwrap();
    let raw = hex::decode(&bytes).unwrap();
    if let Ok(r) = bankmesh_protocol::record::UncheckedRecord::decode(&raw) {
        v["hash"] = Value::String(hex::encode(r.hash()));
        v["view"] = audit::view(r.envelope());
    }
    v["bytes"] = Value::String(bytes);
    v.to_string()
}

#[test]
fn a_changed_byte_in_any_record_kind_fails_at_that_line() {
    let (lines, _, _) = honest();
    for kind in [
        "dkg-round1",
        "dkg-round2",
        "dkg-done",
        "oprf-usage",
        "report",
        "proposal",
        "prevote",
        "precommit",
        "decryption-shares",
        "submission",
    ] {
        let at = *records_of(lines, kind)
            .first()
            .unwrap_or_else(|| panic!("no {kind}"));
        let len = json(&lines[at - 1])["bytes"].as_str().unwrap().len();
        // A byte near the end (a signature or proof), and one in the middle.
        for pos in [len - 10, len / 2] {
            let mut tampered = lines.clone();
            tampered[at - 1] = tamper(&lines[at - 1], pos);
            let v = verify(&tampered);
            assert!(
                v.failures
                    .iter()
                    .any(|f| f.line == at as u64 && !f.why.contains("out of order")),
                "{kind} at {pos}: {:?}",
                v.failures
            );
        }
    }
}

/// A submission whose range proof was made for another score, re-encoded consistently, is
/// refused for its proof.
#[test]
fn a_submission_with_a_broken_proof_is_named() {
    let (lines, _, _) = honest();
    let at = records_of(lines, "submission")[0];
    let raw = hex::decode(json(&lines[at - 1])["bytes"].as_str().unwrap()).unwrap();
    let r = bankmesh_protocol::record::UncheckedRecord::decode(&raw).unwrap();
    let bankmesh_protocol::record::Payload::Submission(mut s) = r.envelope().payload.clone() else {
        panic!("not a submission")
    };
    // The ciphertext moved by G: the validity proof no longer holds.
    s.ciphertext.c2 += curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    let forged = bankmesh_protocol::Record::submission(&r.envelope().consortium, *s);
    let mut t = lines.clone();
    t[at - 1] = line_of(forged.bytes());
    let result = verify(&t);
    assert!(
        result
            .failures
            .iter()
            .any(|f| f.kind.as_deref() == Some("submission") && f.why.contains("proof")),
        "{:?}",
        result.failures
    );
}

#[test]
fn removed_duplicated_or_reordered_records_fail() {
    let (lines, _, _) = honest();
    let dkg = records_of(lines, "dkg-done")[0];
    let sub = records_of(lines, "submission")[0];
    // Removed: the header's count, and the author's chain (or the final set) break.
    for at in [dkg, sub] {
        let mut t = lines.clone();
        t.remove(at - 1);
        fails_at(&t, 1, "removed record");
    }
    // Duplicated.
    let mut t = lines.clone();
    t.insert(dkg, lines[dkg - 1].clone());
    fails_at(&t, dkg as u64 + 1, "duplicated record");
    // Two records swapped.
    let mut t = lines.clone();
    t.swap(sub - 1, sub);
    fails_at(&t, sub as u64 + 1, "reordered records");
}

#[test]
fn checkpoints_certificates_genesis_and_end_are_checked() {
    let (lines, _, _) = honest();
    let cp = lines
        .iter()
        .position(|l| json(l)["type"] == "checkpoint")
        .unwrap()
        + 1;
    // Dropped checkpoint.
    let mut t = lines.clone();
    t.remove(cp - 1);
    fails_at(&t, 0, "dropped checkpoint");
    // A certificate below its quorum, a changed root, another log root.
    for (field, edit) in [
        ("precommits", 0),
        ("root", 1),
        ("log_root", 2),
        ("submissions", 3),
    ] {
        let mut v = json(&lines[cp - 1]);
        match edit {
            0 => {
                let kept: Vec<Value> = v[field].as_array().unwrap()[1..].to_vec();
                v[field] = Value::Array(kept);
            }
            3 => v[field] = Value::from(v[field].as_u64().unwrap() + 1),
            _ => v[field] = Value::String("00".repeat(32)),
        }
        let mut t = lines.clone();
        t[cp - 1] = v.to_string();
        fails_at(&t, cp as u64, field);
    }
    // Precommit records gone below the quorum: no certificate, so the checkpoint is refuted.
    let precommits = records_of(lines, "precommit");
    let mut t = lines.clone();
    for at in precommits.iter().rev() {
        t.remove(at - 1);
    }
    assert!(!verify(&t).ok());
    // Another genesis.
    let mut v = json(&lines[1]);
    let toml = v["toml"]
        .as_str()
        .unwrap()
        .replacen("name = \"", "name = \"forged-", 1);
    v["toml"] = Value::String(toml);
    let mut t = lines.clone();
    t[1] = v.to_string();
    fails_at(&t, 2, "replaced genesis");
    // Cut short: no end line.
    let mut t = lines.clone();
    t.pop();
    fails_at(&t, 0, "no end");
}

#[test]
fn any_edited_field_of_a_view_fails() {
    let (lines, _, _) = honest();
    for kind in ["report", "submission", "precommit"] {
        let at = records_of(lines, kind)[0];
        let v = json(&lines[at - 1]);
        for field in ["kind", "epoch", "author", "seq"] {
            let mut e = v.clone();
            e["view"][field] = Value::from(99);
            let mut t = lines.clone();
            t[at - 1] = e.to_string();
            fails_at(&t, at as u64, field);
        }
        // Deep in the envelope: the first number found.
        let mut e = v.clone();
        let text = e["view"]["envelope"].to_string();
        let pos = text.find(|c: char| c.is_ascii_digit()).unwrap();
        let digit = text.as_bytes()[pos];
        let mut edited = text.into_bytes();
        edited[pos] = if digit == b'9' { b'8' } else { digit + 1 };
        e["view"]["envelope"] = serde_json::from_slice(&edited).unwrap();
        let mut t = lines.clone();
        t[at - 1] = e.to_string();
        fails_at(&t, at as u64, "envelope");
    }
}

/// A decryption shares record re-signed by its author with one share moved: its signature
/// and chain hold, its key-switch proof does not.
#[test]
fn a_decryption_share_with_a_broken_proof_is_named() {
    use bankmesh_protocol::record::{Body, Payload, Record, UncheckedRecord};
    let (lines, c, keys) = honest();
    let at = records_of(lines, "decryption-shares")[0];
    let raw = hex::decode(json(&lines[at - 1])["bytes"].as_str().unwrap()).unwrap();
    let r = UncheckedRecord::decode(&raw).unwrap();
    let Payload::Identified(i) = r.envelope().payload.clone() else {
        panic!("not identified")
    };
    let Body::DecryptionShares {
        epoch,
        root,
        mut shares,
    } = i.body
    else {
        panic!("not shares")
    };
    shares[0].share.e += curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    let key = &keys[usize::from(i.author) - 1];
    let body = Body::DecryptionShares {
        epoch,
        root,
        shares,
    };
    let forged = Record::identified(&c.id, key, i.author, i.seq, i.prev, body);
    let mut t = lines.clone();
    t[at - 1] = line_of(forged.bytes());
    let result = verify(&t);
    assert!(
        result
            .failures
            .iter()
            .any(|f| f.line == at as u64 && f.why.contains("share for")),
        "{:?}",
        result.failures
    );
}

/// A member's bundle after a run of scenario `name` (seed 1), with its consortium and keys.
fn bundle_of(name: &str, member: u16) -> Honest {
    use bankmesh_netsim::scenario::{self, Size};
    let (config, _) = scenario::build(name, 1, Size::default()).unwrap();
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run().unwrap_or_else(|e| panic!("{e}"));
    let c = (**sim.consortium()).clone();
    let mut out = Vec::new();
    audit::export(
        sim.store(member).unwrap(),
        &c,
        &c.genesis.to_toml(),
        &mut out,
    )
    .unwrap();
    let keys = sim
        .members()
        .into_iter()
        .map(|m| sim.member_secrets(m).unwrap().identity().clone())
        .collect();
    let text = String::from_utf8(out).unwrap();
    (text.lines().map(str::to_string).collect(), c, keys)
}

/// Fault records are judged as members judge them: the evidence of each Byzantine scenario
/// holds in an honest member's bundle; evidence swapped for a valid record is a false
/// accusation, named.
#[test]
fn fault_evidence_in_a_bundle_is_judged() {
    use bankmesh_protocol::record::{Body, Evidence, Payload, Record, UncheckedRecord};
    for (name, kind) in [
        ("bad-decryption-share", "bad-decryption-share"),
        ("invalid-submission", "invalid-submission"),
        ("bad-oprf-eval", "bad-oprf-eval"),
    ] {
        let (lines, c, keys) = bundle_of(name, 1);
        let v = audit::verify(lines.join("\n").as_bytes(), &c, |_, _| {});
        assert!(v.ok(), "{name}: {:?}", v.failures);
        let faults: Vec<_> = v.epochs.values().flat_map(|e| e.faults.clone()).collect();
        assert!(
            faults.contains(&(2, kind.to_string())),
            "{name}: faults {faults:?}"
        );
        if name != "bad-decryption-share" {
            continue;
        }
        // Swap the evidence for an honest member's valid shares record, and re-sign.
        let honest_shares = records_of(&lines, "decryption-shares")
            .into_iter()
            .map(|at| hex::decode(json(&lines[at - 1])["bytes"].as_str().unwrap()).unwrap())
            .find(|b| UncheckedRecord::decode(b).unwrap().claimed_author() == Some(3))
            .unwrap();
        let at = records_of(&lines, "fault")[0];
        let raw = hex::decode(json(&lines[at - 1])["bytes"].as_str().unwrap()).unwrap();
        let r = UncheckedRecord::decode(&raw).unwrap();
        let Payload::Identified(i) = r.envelope().payload.clone() else {
            panic!()
        };
        let Body::Fault { epoch, .. } = i.body else {
            panic!()
        };
        let body = Body::Fault {
            epoch,
            evidence: Evidence::BadDecryptionShares {
                record: honest_shares,
            },
        };
        let key = &keys[usize::from(i.author) - 1];
        let forged = Record::identified(&c.id, key, i.author, i.seq, i.prev, body);
        let mut t = lines.clone();
        t[at - 1] = line_of(forged.bytes());
        let v = audit::verify(t.join("\n").as_bytes(), &c, |_, _| {});
        assert!(
            v.failures
                .iter()
                .any(|f| f.line == at as u64 && f.why.contains("false accusation")),
            "{:?}",
            v.failures
        );
    }
}

/// An auditor holding the bundle of epoch 1 checks that the bundle of epoch 2 extends it (an
/// RFC 6962 consistency proof over the checkpoint log); a rewritten history does not.
#[test]
fn a_later_bundle_extends_an_earlier_one() {
    let mut config = SimConfig::new(23);
    config.epochs = 2;
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run_until(|s| s.bank(1).and_then(|b| b.final_set(1)).is_some())
        .unwrap_or_else(|e| panic!("{e}"));
    let c = (**sim.consortium()).clone();
    let export = |sim: &Sim| {
        let mut out = Vec::new();
        audit::export(sim.store(1).unwrap(), &c, &c.genesis.to_toml(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let first = export(&sim);
    sim.run().unwrap_or_else(|e| panic!("{e}"));
    let second = export(&sim);
    let v = audit::verify(second.as_bytes(), &c, |_, _| {});
    assert!(v.ok(), "{:?}", v.failures);
    assert_eq!(v.checkpoints, 2);
    audit::extends(first.as_bytes(), second.as_bytes()).unwrap();
    assert!(audit::extends(second.as_bytes(), first.as_bytes()).is_err());
    // An older bundle whose epoch 1 had another root is not a prefix of the newer one.
    let rewritten: Vec<String> = first
        .lines()
        .map(|l| {
            let mut v = json(l);
            if v["type"] == "checkpoint" {
                let other = bankmesh_protocol::merkle::CheckpointLog::default();
                let mut log = other;
                log.push(bankmesh_protocol::merkle::checkpoint_leaf(1, &[7; 32], 1));
                v["log_root"] = Value::String(hex::encode(log.root()));
            }
            v.to_string()
        })
        .collect();
    let err = audit::extends(rewritten.join("\n").as_bytes(), second.as_bytes()).unwrap_err();
    assert!(err.contains("does not extend"), "{err}");
}

/// Under an equivocating member, every honest member's bundle verifies: its forks are kept as
/// evidence (beside the chain, or continuing the other side), and votes and report parts kept
/// as evidence count towards the checkpoint as members count them.
#[test]
fn every_honest_bundle_verifies_under_an_equivocator() {
    use bankmesh_netsim::scenario::{self, Size};
    let (config, _) = scenario::build("equivocation", 1, Size::default()).unwrap();
    let mut sim = Sim::new(config).unwrap_or_else(|e| panic!("{e}"));
    sim.run().unwrap_or_else(|e| panic!("{e}"));
    let c = (**sim.consortium()).clone();
    let mut evidence = 0;
    for m in sim
        .members()
        .into_iter()
        .filter(|m| Some(*m) != sim.faulty())
    {
        let mut out = Vec::new();
        audit::export(sim.store(m).unwrap(), &c, &c.genesis.to_toml(), &mut out).unwrap();
        let v = audit::verify(out.as_slice(), &c, |_, _| {});
        assert!(v.ok(), "member {m}: {:?}", v.failures);
        assert_eq!(v.checkpoints, 1, "member {m}");
        evidence += v.evidence;
    }
    assert!(evidence > 0, "the equivocation left evidence");
}

/// A line past the length bound is refused unread, named, and the lines after it still read;
/// counts at the limits of u64 fail without overflow.
#[test]
fn hostile_lines_are_refused() {
    let (lines, _, _) = honest();
    let mut t = lines.clone();
    t.insert(2, "x".repeat(9 << 20));
    let v = verify(&t);
    assert!(v
        .failures
        .iter()
        .any(|f| f.line == 3 && f.why.contains("longer than")));
    assert!(v.records > 0, "the lines after it are read");
    let mut t = lines.clone();
    let last = t.len() - 1;
    t[last] = r#"{"type":"end","lines":18446744073709551615}"#.into();
    fails_at(&t, last as u64 + 1, "end count at u64::MAX");
}
