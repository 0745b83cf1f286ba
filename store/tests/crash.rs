//! A writer process killed with SIGKILL at random moments (issue 9): after reopening, every
//! record the store acknowledged is present and the store verifies.
//!
//! The test runs itself as the writer (`BANKMESH_CRASH_WRITER` names its store): it appends
//! batches of chained records and prints each acknowledged hash; the parent kills it after a
//! random pause, reopens the store, checks, and starts the next writer on the same store.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bankmesh_store::{AuthorPos, NewRecord, Store};
use rand_core::{RngCore, SeedableRng};

const WRITER_ENV: &str = "BANKMESH_CRASH_WRITER";
const ROUNDS: u64 = 12;

/// The writer: appends until killed.
fn write_until_killed(dir: &str) {
    let (store, _) = Store::open(std::path::Path::new(dir)).unwrap();
    let (mut seq, mut prev) = store.head(1).unwrap().unwrap_or((0, [0; 32]));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seq);
    loop {
        let n = 1 + rng.next_u32() as usize % 16;
        let mut batch = Vec::new();
        for _ in 0..n {
            seq += 1;
            let bytes = common::chained_bytes(1, seq, &rng.next_u64().to_be_bytes());
            let hash = bankmesh_store::record_hash(&bytes);
            batch.push((
                bytes,
                AuthorPos {
                    author: 1,
                    seq,
                    prev,
                },
            ));
            prev = hash;
        }
        let records: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|(bytes, pos)| common::chained(bytes, pos.author, pos.seq, pos.prev, Some(1)))
            .collect();
        for outcome in store.append_batch(&records).unwrap() {
            let appended = outcome.unwrap();
            println!("acked {}", hex::encode(appended.hash()));
        }
    }
}

#[test]
fn a_writer_killed_at_random_moments_loses_no_acknowledged_record() {
    if let Ok(dir) = std::env::var(WRITER_ENV) {
        write_until_killed(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("BANKMESH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7u64);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_writer_killed_at_random_moments_loses_no_acknowledged_record",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut hashes = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(h) = line.strip_prefix("acked ") {
                    hashes.push(h.to_string());
                }
            }
            hashes
        });
        // Let it open the store and write a while: 50 to 550 ms.
        std::thread::sleep(Duration::from_millis(50 + rng.next_u64() % 500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let got = reader.join().unwrap();
        acked.extend(got);
        let (store, report) = Store::open(dir.path()).unwrap_or_else(|e| {
            panic!(
                "round {round} (replay: BANKMESH_CRASH_SEED={seed}): the store does not open: {e}"
            )
        });
        for h in &acked {
            let hash: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
            assert!(
                store.contains(&hash).unwrap(),
                "round {round} (replay: BANKMESH_CRASH_SEED={seed}): acknowledged record {h} lost ({report:?})"
            );
        }
        assert!(store.len() >= acked.len() as u64);
        drop(store);
    }
    eprintln!("{} records acknowledged across {ROUNDS} kills", acked.len());
    assert!(
        acked.len() > 100,
        "the writers acknowledged only {} records",
        acked.len()
    );
}
