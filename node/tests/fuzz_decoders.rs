//! The stable stand-in for `cargo fuzz` (issue 6): every decoder of bytes from peers or files
//! (`bankmesh_node::decoders`, the same entry points the targets under `fuzz/` drive) takes
//! random and mutated inputs without a panic. Seeds are real encodings: the log of a simulated
//! epoch, direct messages, onion packets, the genesis, store entries and score files.
//!
//! `BANKMESH_FUZZ_INPUTS` sets the inputs per decoder (default 100000); a failure prints the
//! decoder, the input's index and its bytes, and `BANKMESH_FUZZ_SEED` replays the run.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bankmesh_netsim::scenario::{self, Size};
use bankmesh_netsim::Sim;
use bankmesh_node::decoders::{Harness, Target};
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::relay::packet::{self, Hop, Message};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).unwrap()
}

/// Seed inputs per decoder, by name.
type Seeds = BTreeMap<&'static str, (Target, Vec<Vec<u8>>)>;

/// A simulated epoch and seeds for every decoder from it.
fn corpus() -> (Harness, Seeds) {
    let size = Size {
        clients: 4,
        ..Size::default()
    };
    let (config, _) = scenario::build("happy", 1, size).unwrap();
    let mut sim = Sim::new(config).unwrap();
    sim.run().unwrap();
    let consortium = (**sim.consortium()).clone();
    let secrets = sim
        .members()
        .into_iter()
        .map(|m| sim.member_secrets(m).unwrap())
        .collect();
    let store = sim.store(1).unwrap();
    let records: Vec<Vec<u8>> = store
        .read_from(0, 10_000)
        .unwrap()
        .into_iter()
        .map(|(_, _, b)| b)
        .collect();
    let mut entries: Vec<Vec<u8>> = store
        .raw_tree_for_tests()
        .iter()
        .take(2_000)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            [&[k.len() as u8][..], &k, &v].concat()
        })
        .collect();
    for (k, v) in store.local_scan().unwrap() {
        entries.push([&[k.len() as u8][..], k.as_bytes(), &v].concat());
    }
    let hashes: Vec<[u8; 32]> = records
        .iter()
        .take(8)
        .map(|b| bankmesh_store::record_hash(b))
        .collect();
    let point = curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
    let direct = vec![
        cbor(&Request::Heads),
        cbor(&Request::Records {
            hashes: hashes.clone(),
        }),
        cbor(&Request::AuthorRange {
            author: 2,
            from_seq: 1,
        }),
        cbor(&Request::Submissions {
            epoch: 1,
            after: hashes.first().copied(),
        }),
        cbor(&Request::OprfEvaluate {
            epoch: 1,
            batch: 0,
            blinded: vec![point; 3],
        }),
        cbor(&Response::Records {
            records: records.iter().take(4).cloned().collect(),
        }),
        cbor(&Response::Heads {
            heads: store.heads().unwrap(),
        }),
        cbor(&Response::Submissions {
            epoch: 1,
            after: None,
            hashes,
            more: true,
        }),
        cbor(&Response::Refused {
            reason: "quota".into(),
        }),
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let hop = |m| Hop {
        member: m,
        key: consortium.x25519(m).unwrap().to_bytes(),
    };
    let mut onion = Vec::new();
    for (path, message) in [
        (vec![hop(1), hop(3)], Message::Cover),
        (
            vec![hop(1)],
            Message::Record(
                records
                    .iter()
                    .find(|b| {
                        bankmesh_protocol::Record::from_trusted_bytes(b)
                            .is_ok_and(|r| r.kind() == "submission")
                    })
                    .cloned()
                    .unwrap(),
            ),
        ),
        (vec![hop(1), hop(2), hop(4)], Message::Cover),
    ] {
        let delays = vec![0; path.len()];
        onion.push(packet::build(&path, &delays, &message, &mut rng).unwrap());
    }
    let genesis = vec![consortium.genesis.to_toml().into_bytes()];
    let scores = vec![
        b"client_id,score\r\nalice,10\r\nbob,1023\r\n".to_vec(),
        "\u{feff}client_id,score\n\"a,b\",0\n\"q\"\"uote\",7\n"
            .as_bytes()
            .to_vec(),
        "client_id,score\nd\u{e9}j\u{e0},512\n  spaced  ,3\n"
            .as_bytes()
            .to_vec(),
    ];
    let seeds = BTreeMap::from([
        ("records", (Target::Record, records)),
        ("direct messages", (Target::Direct, direct)),
        ("onion packets", (Target::Onion, onion)),
        ("genesis", (Target::Genesis, genesis)),
        ("store entries", (Target::StoreEntry, entries)),
        ("score files", (Target::Scores, scores)),
    ]);
    (Harness::new(consortium, secrets).unwrap(), seeds)
}

/// One mutation of `seed` (or a splice with `other`), as a fuzzer's mutators make them.
fn mutate(rng: &mut ChaCha20Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    let rounds = 1 + rng.next_u32() % 4;
    for _ in 0..rounds {
        let len = out.len().max(1);
        let at = rng.next_u32() as usize % len;
        match rng.next_u32() % 7 {
            0 if !out.is_empty() => out[at] ^= 1 << (rng.next_u32() % 8),
            1 if !out.is_empty() => out[at] = rng.next_u32() as u8,
            2 => {
                let mut extra = vec![0u8; 1 + rng.next_u32() as usize % 16];
                rng.fill_bytes(&mut extra);
                let at = at.min(out.len());
                out.splice(at..at, extra);
            }
            3 if !out.is_empty() => {
                let end = (at + 1 + rng.next_u32() as usize % 32).min(out.len());
                out.drain(at..end);
            }
            4 => out.truncate(at),
            5 if !other.is_empty() => {
                let from = rng.next_u32() as usize % other.len();
                out.truncate(at.min(out.len()));
                out.extend_from_slice(&other[from..]);
            }
            _ if !out.is_empty() => {
                // Interesting values at a random place (lengths and varints live there).
                let v = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.next_u32() as usize % 5];
                out[at] = v;
            }
            _ => {}
        }
    }
    out
}

#[test]
fn no_decoder_panics_on_random_or_mutated_input() {
    let inputs = env_number("BANKMESH_FUZZ_INPUTS", 100_000) as usize;
    let run_seed = env_number("BANKMESH_FUZZ_SEED", 0xb4_4b);
    let (mut harness, seeds) = corpus();
    for (name, (target, corpus)) in &seeds {
        assert!(!corpus.is_empty(), "no seeds for {name}");
        let mut rng = ChaCha20Rng::seed_from_u64(run_seed ^ *target as u64);
        for i in 0..inputs {
            let input = if i % 4 == 0 {
                let mut random = vec![0u8; rng.next_u32() as usize % 1024];
                rng.fill_bytes(&mut random);
                random
            } else {
                let seed = &corpus[rng.next_u32() as usize % corpus.len()];
                let other = &corpus[rng.next_u32() as usize % corpus.len()];
                mutate(&mut rng, seed, other)
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| harness.feed(*target, &input)));
            assert!(
                outcome.is_ok(),
                "{name}: input {i} panicked (BANKMESH_FUZZ_SEED={run_seed}): {}",
                hex::encode(&input)
            );
        }
    }
}

/// Every seed decodes as what it is (so the mutations start from real encodings).
#[test]
fn the_seeds_are_valid_encodings() {
    let (_, seeds) = corpus();
    let (_, records) = &seeds["records"];
    for r in records {
        bankmesh_protocol::UncheckedRecord::decode(r).unwrap();
    }
    let (_, entries) = &seeds["store entries"];
    let log_entries = entries
        .iter()
        .filter(|e| {
            let (key, value) = e[1..].split_at(usize::from(e[0]));
            bankmesh_store::check_entry(key, value).is_ok()
        })
        .count();
    assert!(log_entries > 100, "only {log_entries} store entries decode");
    let (_, genesis) = &seeds["genesis"];
    let text = std::str::from_utf8(&genesis[0]).unwrap();
    bankmesh_protocol::Genesis::from_toml(text).unwrap();
}
