//! Forward secrecy of what a bank keeps (issue 7): once an epoch is over, its one-time keys,
//! encryption randomness, ring slots, ring key, key shares and the keys its DKG shares were
//! sealed to cannot be recomputed from anything the bank still holds, its long-term keys
//! included, nor from what `t` banks hold together.

use std::collections::BTreeSet;

use bankmesh_netsim::{Sim, SimConfig};
use bankmesh_protocol::keys::EpochSecret;
use bankmesh_protocol::record::{Body, Payload, Run};
use bankmesh_protocol::setup::epoch_keys;
use bankmesh_protocol::Record;
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::scalar::Scalar;
use zeroize::Zeroizing;

/// Everything member `m` keeps: each local entry (key and value) and its key file.
fn stored(sim: &Sim, m: u16) -> Vec<Vec<u8>> {
    let mut blobs: Vec<Vec<u8>> = sim
        .store(m)
        .unwrap()
        .local_scan()
        .unwrap()
        .into_iter()
        .map(|(key, value)| [key.as_bytes(), value.as_slice()].concat())
        .collect();
    blobs.push(sim.member_secrets(m).unwrap().to_bytes().to_vec());
    blobs
}

/// Every candidate secret scalar a thief of member `m` holds: every 32-byte window of every
/// local entry and of its key file, taken as a scalar and as a seed from which a one-time key
/// is derived for each tag of the epoch (the labels are public; the identity key's seed is one
/// of the windows, so this covers one-time keys derived from it, as they once were).
fn candidate_scalars(sim: &Sim, m: u16, epoch: u64, tags: &[[u8; 32]]) -> Vec<Scalar> {
    let blobs = stored(sim, m);
    let mut base = sim.consortium().id.to_vec();
    base.extend_from_slice(&epoch.to_be_bytes());
    let contexts: Vec<Vec<u8>> = tags.iter().map(|t| [&base[..], t].concat()).collect();
    let mut out = Vec::new();
    for blob in blobs {
        for window in blob.windows(32) {
            let bytes: [u8; 32] = window.try_into().unwrap();
            out.push(Scalar::from_bytes_mod_order(bytes));
            let seed = EpochSecret::from_bytes(Zeroizing::new(bytes));
            for context in &contexts {
                let o = seed.derive(b"bankmesh.one-time-key.v1", context);
                out.push(Scalar::from_bytes_mod_order(*o));
            }
        }
    }
    out
}

#[test]
fn after_an_epoch_nothing_a_bank_keeps_recomputes_its_one_time_keys() {
    let seed = 9;
    let mut sim = Sim::new(SimConfig::new(seed)).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    let m = 2;
    let store = sim.store(m).unwrap();
    let keys: Vec<String> = store
        .local_scan()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for gone in ["/secrets/", "/scores/", "/pseudonyms/"] {
        assert!(
            keys.iter().all(|k| !k.contains(gone)),
            "seed {seed}: {gone} still in the local store: {keys:?}"
        );
    }
    // The one-time keys of every submission on the log (ours among them).
    let mut one_time = BTreeSet::new();
    let mut tags = BTreeSet::new();
    for hash in store.epoch_hashes(1).unwrap() {
        let bytes = store.get(&hash).unwrap().unwrap();
        if let Payload::Submission(s) = Record::from_trusted_bytes(&bytes).unwrap().payload() {
            one_time.insert(s.one_time.compress().to_bytes());
            tags.insert(s.tag.compress().to_bytes());
        }
    }
    let tags: Vec<[u8; 32]> = tags.into_iter().collect();
    let ours = sim.bank(m).unwrap().own_submissions(1);
    assert!(!ours.is_empty() && one_time.len() >= ours.len());
    let candidates = candidate_scalars(&sim, m, 1, &tags);
    assert!(
        candidates.len() > 1_000,
        "the local store still holds the results"
    );
    for o in candidates {
        assert!(
            !one_time.contains((o * G).compress().as_bytes()),
            "seed {seed}: member {m}'s stored state opens a one-time key"
        );
    }
}

/// The public keys of epoch `epoch` on member `m`'s log: the ring keys and seal keys its
/// setup's round-1 records announced.
fn announced_keys(sim: &Sim, m: u16, epoch: u64) -> (BTreeSet<[u8; 32]>, BTreeSet<[u8; 32]>) {
    let (mut ring, mut seal) = (BTreeSet::new(), BTreeSet::new());
    for author in sim.members() {
        for r in sim.records_by(m, author) {
            if let Payload::Identified(i) = r.payload() {
                if let Body::DkgRound1 {
                    epoch: e,
                    seal_key,
                    ring: announced,
                    ..
                } = &i.body
                {
                    if *e == epoch {
                        seal.insert(*seal_key);
                        if let Some(a) = announced {
                            ring.insert(a.key.compress().to_bytes());
                        }
                    }
                }
            }
        }
    }
    (ring, seal)
}

#[test]
fn after_an_epoch_t_banks_stored_secrets_open_no_key_share_seal_key_or_ring_key() {
    let seed = 10;
    let mut sim = Sim::new(SimConfig::new(seed)).unwrap_or_else(|e| panic!("{e}"));
    sim.run_epoch().unwrap_or_else(|e| panic!("{e}"));
    sim.check_against_truth().unwrap_or_else(|e| panic!("{e}"));
    // The keys go in the step after the one that finished the epoch (its records durable).
    sim.run_until(|s| {
        s.members()
            .iter()
            .all(|&m| s.bank(m).is_some_and(|b| b.epoch_keys_erased(1)))
    })
    .unwrap_or_else(|e| panic!("seed {seed}: the epoch's keys were never erased: {e}"));
    let c = sim.consortium().clone();
    let (ring, seal) = announced_keys(&sim, 1, 1);
    assert_eq!(
        (ring.len(), seal.len()),
        (5, 10),
        "seed {seed}: every member announced"
    );
    let verifying: BTreeSet<[u8; 32]> = sim
        .bank(1)
        .unwrap()
        .verifying_shares(1)
        .unwrap()
        .iter()
        .map(|p| p.compress().to_bytes())
        .collect();
    // Any t = 3 banks: pool everything they keep.
    for m in [1u16, 2, 3] {
        assert!(sim.bank(m).unwrap().epoch_keys_erased(1), "member {m}");
        let keys: Vec<String> = sim
            .store(m)
            .unwrap()
            .local_scan()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(
            keys.iter().all(|k| !k.ends_with("/secret")),
            "seed {seed}: member {m} still stores a setup secret: {keys:?}"
        );
        for blob in stored(&sim, m) {
            for window in blob.windows(32) {
                let bytes: [u8; 32] = window.try_into().unwrap();
                let seed_secret = EpochSecret::from_bytes(Zeroizing::new(bytes));
                // Seal keys are per run and attempt; the simulated setups decide in attempt
                // 0 or 1.
                let mut scalars = vec![
                    Scalar::from_bytes_mod_order(bytes),
                    *epoch_keys::ring_secret(&seed_secret, &c, 1),
                ];
                for run in [Run::Decryption, Run::Pseudonym] {
                    for attempt in 0..2 {
                        scalars.push(*epoch_keys::seal_secret(&seed_secret, &c, 1, run, attempt));
                    }
                }
                for s in scalars {
                    let p = (s * G).compress().to_bytes();
                    assert!(
                        !verifying.contains(&p) && !ring.contains(&p),
                        "seed {seed}: member {m}'s stored state holds a key share or ring key of epoch 1"
                    );
                    assert!(
                        !seal.contains(&p),
                        "seed {seed}: member {m}'s stored state opens shares sealed to it"
                    );
                }
            }
        }
    }
}
