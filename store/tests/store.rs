#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use bankmesh_store::*;
use common::*;

fn stored(r: &Result<Appended, Refused>) -> (Hash, u64) {
    match r {
        Ok(Appended::Stored { hash, position }) => (*hash, *position),
        other => panic!("expected Stored, got {other:?}"),
    }
}

/// Opens a fresh store in a temp dir with: author 1 chain of 3 (epoch 7),
/// one anonymous record (epoch 7), author 2 chain of 2 (no epoch).
/// Arrival order: a1s1, a1s2, a1s3, anon, a2s1, a2s2.
fn populated() -> (tempfile::TempDir, Vec<Hash>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 0,
            truncated: 0
        }
    );
    let c1 = chain_of(1, 3, Some(7));
    let c2 = chain_of(2, 2, None);
    let a = anon_bytes(b"hello");
    let mut recs = as_new(&c1);
    recs.push(anon(&a, Some(7)));
    recs.extend(as_new(&c2));
    let out = store.append_batch(&recs).unwrap();
    let hashes: Vec<Hash> = out.iter().map(|r| stored(r).0).collect();
    assert_eq!(store.len(), 6);
    (dir, hashes)
}

#[test]
fn record_hash_is_sha256() {
    // SHA-256("abc")
    assert_eq!(
        hex::encode(record_hash(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn reopen_preserves_everything() {
    let (dir, hashes) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        store.local_put("sealed", b"secret").unwrap();
        let ev = chained_bytes(1, 2, b"other");
        let r = store.append(chained(&ev, 1, 2, hashes[0], None)).unwrap();
        assert!(matches!(r, Err(Refused::Equivocation { .. })));
    }
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 6,
            truncated: 0
        }
    );
    assert_eq!(store.len(), 6);
    assert!(!store.is_empty());
    assert_eq!(
        store.heads().unwrap(),
        vec![(1, 3, hashes[2]), (2, 2, hashes[5])]
    );
    assert_eq!(store.head(1).unwrap(), Some((3, hashes[2])));
    assert_eq!(store.head(9).unwrap(), None);
    let log = store.read_from(0, 100).unwrap();
    assert_eq!(log.len(), 6);
    for (i, (pos, h, bytes)) in log.iter().enumerate() {
        assert_eq!(*pos, i as u64);
        assert_eq!(*h, hashes[i]);
        assert_eq!(record_hash(bytes), *h);
        assert_eq!(store.get(h).unwrap().as_ref(), Some(bytes));
        assert!(store.contains(h).unwrap());
    }
    let mut e7 = vec![hashes[0], hashes[1], hashes[2], hashes[3]];
    e7.sort();
    assert_eq!(store.epoch_hashes(7).unwrap(), e7);
    assert!(store.epoch_hashes(8).unwrap().is_empty());
    let a1 = store.author_range(1, 2, 10).unwrap();
    assert_eq!(a1.len(), 2);
    assert_eq!(record_hash(&a1[0]), hashes[1]);
    assert_eq!(store.author_range(1, 1, 1).unwrap().len(), 1);
    assert_eq!(store.author_range(2, 1, 10).unwrap().len(), 2);
    assert!(store.author_range(3, 1, 10).unwrap().is_empty());
    assert_eq!(store.evidence().unwrap().len(), 1);
    assert_eq!(
        store.local_get("sealed").unwrap().as_deref(),
        Some(&b"secret"[..])
    );
    assert_eq!(store.local_get("other").unwrap(), None);
    // The chain continues after reopen.
    let b = chained_bytes(1, 4, b"x");
    let (_, pos) = stored(&store.append(chained(&b, 1, 4, hashes[2], None)).unwrap());
    assert_eq!(pos, 6);
}

#[test]
fn author_range_for_max_author() {
    let store = Store::temporary().unwrap();
    let c = chain_of(u16::MAX, 3, None);
    store.append_batch(&as_new(&c)).unwrap();
    let c0 = chain_of(0, 2, None);
    store.append_batch(&as_new(&c0)).unwrap();
    assert_eq!(store.author_range(u16::MAX, 0, 100).unwrap().len(), 3);
    assert_eq!(store.author_range(u16::MAX, 3, 100).unwrap().len(), 1);
    assert_eq!(store.author_range(0, 0, 100).unwrap().len(), 2);
    assert_eq!(store.author_range(0, 0, 0).unwrap().len(), 0);
}

#[test]
fn tail_corruption_is_truncated() {
    let (dir, hashes) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let tree = store.raw_tree_for_tests();
        tree.insert(
            Store::raw_record_key_for_tests(&hashes[5]),
            &b"tampered"[..],
        )
        .unwrap();
        tree.flush().unwrap();
    }
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 5,
            truncated: 1
        }
    );
    assert_eq!(store.len(), 5);
    assert!(!store.contains(&hashes[5]).unwrap());
    assert_eq!(store.get(&hashes[5]).unwrap(), None);
    assert_eq!(store.head(2).unwrap(), Some((1, hashes[4])));
    assert_eq!(store.author_range(2, 1, 10).unwrap().len(), 1);
    assert_eq!(store.read_from(0, 100).unwrap().len(), 5);
    // Refetching the record restores it at the same position.
    let c2 = chain_of(2, 2, None);
    let r = store.append(as_new(&c2)[1]).unwrap();
    assert_eq!(stored(&r), (hashes[5], 5));
    drop(store);
    let (_, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 6,
            truncated: 0
        }
    );
}

#[test]
fn tail_of_two_truncated_and_epoch_index_rolled_back() {
    let (dir, hashes) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let tree = store.raw_tree_for_tests();
        // Damage positions 4 and 5 differently: bytes of 4, meta of 5.
        tree.insert(Store::raw_record_key_for_tests(&hashes[4]), &b"zz"[..])
            .unwrap();
        let mut mk = vec![b'm'];
        mk.extend_from_slice(&hashes[5]);
        tree.insert(mk, &b"garbage"[..]).unwrap();
        tree.flush().unwrap();
    }
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 4,
            truncated: 2
        }
    );
    assert_eq!(store.head(2).unwrap(), None);
    assert_eq!(store.heads().unwrap(), vec![(1, 3, hashes[2])]);
    drop(store);
    let (_, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 4,
            truncated: 0
        }
    );

    // Same with an epoch record at the tail.
    let dir = tempfile::tempdir().unwrap();
    let h = {
        let (store, _) = Store::open(dir.path()).unwrap();
        let a = anon_bytes(b"1");
        let b = anon_bytes(b"2");
        let out = store
            .append_batch(&[anon(&a, Some(3)), anon(&b, Some(3))])
            .unwrap();
        let h = stored(&out[1]).0;
        let tree = store.raw_tree_for_tests();
        tree.remove(Store::raw_record_key_for_tests(&h)).unwrap();
        tree.flush().unwrap();
        h
    };
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 1,
            truncated: 1
        }
    );
    assert_eq!(store.epoch_hashes(3).unwrap().len(), 1);
    assert!(!store.epoch_hashes(3).unwrap().contains(&h));
}

#[test]
fn middle_corruption_is_an_error() {
    let (dir, hashes) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let tree = store.raw_tree_for_tests();
        tree.insert(
            Store::raw_record_key_for_tests(&hashes[2]),
            &b"tampered"[..],
        )
        .unwrap();
        tree.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains("position 2"), "{msg}");
            assert!(msg.contains(&hex::encode(hashes[2])), "{msg}");
            assert!(msg.contains("do not hash"), "{msg}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn corrupt_with(f: impl FnOnce(&sled::Tree, &[Hash])) -> String {
    let (dir, hashes) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let tree = store.raw_tree_for_tests();
        f(&tree, &hashes);
        tree.flush().unwrap();
    }
    match Store::open(dir.path()) {
        Err(StoreError::Corrupt(msg)) => msg,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

#[test]
fn index_corruption_is_detected() {
    // Missing chain entry of a middle record.
    let msg = corrupt_with(|t, _| {
        t.remove(key(b'c', &[&1u16.to_be_bytes(), &2u64.to_be_bytes()]))
            .unwrap();
    });
    assert!(msg.contains("position 1"), "{msg}");
    // Missing epoch entry of a middle record.
    let msg = corrupt_with(|t, h| {
        t.remove(key(b'e', &[&7u64.to_be_bytes(), &h[0]])).unwrap();
    });
    assert!(
        msg.contains("position 0") && msg.contains("epoch 7"),
        "{msg}"
    );
    // Extra epoch entry for a record that is not in that epoch.
    let msg = corrupt_with(|t, h| {
        t.insert(key(b'e', &[&8u64.to_be_bytes(), &h[1]]), &[][..])
            .unwrap();
    });
    assert!(msg.contains("epoch 8"), "{msg}");
    // Head disagreeing with the chain.
    let msg = corrupt_with(|t, h| {
        let mut v = 2u64.to_be_bytes().to_vec();
        v.extend_from_slice(&h[1]);
        t.insert(key(b'h', &[&1u16.to_be_bytes()]), v).unwrap();
    });
    assert!(msg.contains("head of author 1"), "{msg}");
    // Missing head.
    let msg = corrupt_with(|t, _| {
        t.remove(key(b'h', &[&2u16.to_be_bytes()])).unwrap();
    });
    assert!(msg.contains("head of author 2"), "{msg}");
    // Orphan record not in the arrival order.
    let msg = corrupt_with(|t, _| {
        let b = b"orphan".to_vec();
        t.insert(key(b'r', &[&record_hash(&b)]), b).unwrap();
    });
    assert!(msg.contains("orphan record"), "{msg}");
    // Arrival hole in the middle.
    let msg = corrupt_with(|t, _| {
        t.remove(key(b'a', &[&3u64.to_be_bytes()])).unwrap();
    });
    assert!(
        msg.contains("position 3") && msg.contains("arrival entry missing"),
        "{msg}"
    );
    // Unknown key.
    let msg = corrupt_with(|t, _| {
        t.insert(&b"qqq"[..], &b"1"[..]).unwrap();
    });
    assert!(msg.contains("malformed key"), "{msg}");
    // An evidence counter that does not decode.
    let msg = corrupt_with(|t, _| {
        t.insert(key(b'z', &[&1u16.to_be_bytes()]), &b"1"[..])
            .unwrap();
    });
    assert!(msg.contains("evidence counter"), "{msg}");
    // Length counter missing.
    let msg = corrupt_with(|t, _| {
        t.remove(&b"n"[..]).unwrap();
    });
    assert!(msg.contains("length counter"), "{msg}");
    // Length counter too small by several: later positions intact.
    let msg = corrupt_with(|t, _| {
        t.insert(&b"n"[..], &3u64.to_be_bytes()[..]).unwrap();
    });
    assert!(msg.contains("beyond the length counter"), "{msg}");
    // Corrupt evidence.
    let msg = corrupt_with(|t, _| {
        t.insert(key(b'x', &[&[5u8; 32]]), &b"nope"[..]).unwrap();
    });
    assert!(msg.contains("evidence"), "{msg}");
}

#[test]
fn length_counter_beyond_records_is_truncated() {
    let (dir, _) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let tree = store.raw_tree_for_tests();
        tree.insert(&b"n"[..], &8u64.to_be_bytes()[..]).unwrap();
        tree.flush().unwrap();
    }
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 6,
            truncated: 2
        }
    );
    assert_eq!(store.len(), 6);
    drop(store);
    let (_, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 6,
            truncated: 0
        }
    );
}

#[test]
fn equivocation_is_kept_as_evidence() {
    let store = Store::temporary().unwrap();
    let c = chain_of(4, 2, Some(1));
    let out = store.append_batch(&as_new(&c)).unwrap();
    let h1 = stored(&out[0]).0;
    let other = chained_bytes(4, 1, b"fork");
    let r = store
        .append(chained(&other, 4, 1, ZERO_HASH, Some(1)))
        .unwrap();
    assert_eq!(
        r,
        Err(Refused::Equivocation {
            author: 4,
            seq: 1,
            existing: h1,
            conflicting: record_hash(&other)
        })
    );
    assert_eq!(store.len(), 2);
    assert!(!store.contains(&record_hash(&other)).unwrap());
    assert_eq!(store.epoch_hashes(1).unwrap().len(), 2);
    assert_eq!(store.head(4).unwrap().map(|h| h.0), Some(2));
    assert_eq!(
        store.evidence().unwrap(),
        vec![(record_hash(&other), other.clone())]
    );
    // Receiving it again is still refused and the evidence is not duplicated.
    let r = store
        .append(chained(&other, 4, 1, ZERO_HASH, Some(1)))
        .unwrap();
    assert!(matches!(r, Err(Refused::Equivocation { .. })));
    assert_eq!(store.evidence().unwrap().len(), 1);

    // Equivocation inside one batch: the second seq-1 record conflicts with the first.
    let a = chained_bytes(5, 1, b"a");
    let b = chained_bytes(5, 1, b"b");
    let out = store
        .append_batch(&[
            chained(&a, 5, 1, ZERO_HASH, None),
            chained(&b, 5, 1, ZERO_HASH, None),
        ])
        .unwrap();
    assert_eq!(stored(&out[0]).0, record_hash(&a));
    assert_eq!(
        out[1],
        Err(Refused::Equivocation {
            author: 5,
            seq: 1,
            existing: record_hash(&a),
            conflicting: record_hash(&b)
        })
    );
    assert_eq!(store.evidence().unwrap().len(), 2);
}

#[test]
fn gap_prev_mismatch_and_zero_seq_are_refused() {
    let store = Store::temporary().unwrap();
    let c = chain_of(3, 3, None);
    // Gap: seq 2 before seq 1.
    let r = store.append(as_new(&c)[1]).unwrap();
    assert_eq!(
        r,
        Err(Refused::Gap {
            author: 3,
            head_seq: 0,
            seq: 2
        })
    );
    // First record with non-zero prev.
    let bad = chained_bytes(3, 1, b"bad");
    let r = store.append(chained(&bad, 3, 1, [1; 32], None)).unwrap();
    assert_eq!(r, Err(Refused::PrevMismatch { author: 3, seq: 1 }));
    store.append(as_new(&c)[0]).unwrap().unwrap();
    // Wrong prev for seq 2.
    let bad = chained_bytes(3, 2, b"bad");
    let r = store.append(chained(&bad, 3, 2, [9; 32], None)).unwrap();
    assert_eq!(r, Err(Refused::PrevMismatch { author: 3, seq: 2 }));
    // Gap of more than one.
    let r = store.append(as_new(&c)[2]).unwrap();
    assert_eq!(
        r,
        Err(Refused::Gap {
            author: 3,
            head_seq: 1,
            seq: 3
        })
    );
    let z = chained_bytes(3, 0, b"z");
    let r = store.append(chained(&z, 3, 0, ZERO_HASH, None)).unwrap();
    assert_eq!(r, Err(Refused::ZeroSeq { author: 3 }));
    assert_eq!(store.len(), 1);
    assert!(store.evidence().unwrap().is_empty());
    // Refused records do not stop the rest of the batch.
    let out = store.append_batch(&as_new(&c)).unwrap();
    assert!(matches!(out[0], Ok(Appended::AlreadyPresent { .. })));
    assert_eq!(stored(&out[1]).1, 1);
    assert_eq!(stored(&out[2]).1, 2);
    assert_eq!(store.len(), 3);
}

#[test]
fn duplicates_are_reported_not_counted() {
    let store = Store::temporary().unwrap();
    let a = anon_bytes(b"dup");
    let r = store.append(anon(&a, Some(2))).unwrap();
    let (h, _) = stored(&r);
    assert_eq!(
        store.append(anon(&a, Some(2))).unwrap(),
        Ok(Appended::AlreadyPresent { hash: h })
    );
    // Twice in one batch.
    let b = anon_bytes(b"dup2");
    let out = store
        .append_batch(&[anon(&b, None), anon(&b, None), anon(&a, None)])
        .unwrap();
    assert_eq!(stored(&out[0]).1, 1);
    assert_eq!(
        out[1],
        Ok(Appended::AlreadyPresent {
            hash: record_hash(&b)
        })
    );
    assert_eq!(out[2], Ok(Appended::AlreadyPresent { hash: h }));
    assert_eq!(store.len(), 2);
    assert_eq!(store.epoch_hashes(2).unwrap(), vec![h]);
    assert_eq!(store.read_from(0, 10).unwrap().len(), 2);
    // A batch of only duplicates writes nothing.
    let out = store.append_batch(&[anon(&a, None)]).unwrap();
    assert_eq!(out, vec![Ok(Appended::AlreadyPresent { hash: h })]);
    assert!(store.append_batch(&[]).unwrap().is_empty());
}

#[test]
fn batch_may_chain_on_its_own_records() {
    let store = Store::temporary().unwrap();
    let c = chain_of(7, 2, Some(9));
    let out = store.append_batch(&as_new(&c)).unwrap();
    let (h1, p1) = stored(&out[0]);
    let (h2, p2) = stored(&out[1]);
    assert_eq!((p1, p2), (0, 1));
    assert_eq!(store.head(7).unwrap(), Some((2, h2)));
    assert_eq!(c[1].1.prev, h1);
    let r = store.author_range(7, 1, 10).unwrap();
    assert_eq!(r, vec![c[0].0.clone(), c[1].0.clone()]);
}

#[test]
fn empty_and_too_large_are_refused() {
    let store = Store::temporary().unwrap();
    assert_eq!(store.append(anon(&[], None)).unwrap(), Err(Refused::Empty));
    let big = vec![1u8; MAX_RECORD_BYTES + 1];
    assert_eq!(
        store.append(anon(&big, None)).unwrap(),
        Err(Refused::TooLarge)
    );
    let max = vec![2u8; MAX_RECORD_BYTES];
    assert!(matches!(
        store.append(anon(&max, None)).unwrap(),
        Ok(Appended::Stored { position: 0, .. })
    ));
    assert_eq!(store.len(), 1);
}

#[test]
fn oversized_batch_is_rejected_whole() {
    let store = Store::temporary().unwrap();
    let one = [1u8];
    let recs = vec![anon(&one, None); MAX_BATCH_RECORDS + 1];
    assert!(matches!(
        store.append_batch(&recs),
        Err(StoreError::BatchTooLarge { .. })
    ));
    assert_eq!(store.len(), 0);
}

#[test]
fn limits_are_clamped() {
    let store = Store::temporary().unwrap();
    let bytes: Vec<Vec<u8>> = (0..(MAX_LIMIT as u32 + 5))
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    for chunk in bytes.chunks(MAX_BATCH_RECORDS) {
        let recs: Vec<_> = chunk.iter().map(|b| anon(b, None)).collect();
        store.append_batch(&recs).unwrap();
    }
    assert_eq!(store.len(), MAX_LIMIT as u64 + 5);
    assert_eq!(store.read_from(0, usize::MAX).unwrap().len(), MAX_LIMIT);
    assert_eq!(
        store.read_from(MAX_LIMIT as u64, usize::MAX).unwrap().len(),
        5
    );
    assert!(store.read_from(u64::MAX, 10).unwrap().is_empty());
}

#[test]
fn local_area_is_separate_and_bounded() {
    let store = Store::temporary().unwrap();
    store.local_put("k", b"v1").unwrap();
    store.local_put("k", b"v2").unwrap();
    assert_eq!(store.local_get("k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.len(), 0);
    let long = "k".repeat(MAX_LOCAL_KEY + 1);
    assert!(matches!(
        store.local_put(&long, b"v"),
        Err(StoreError::LocalTooLarge { .. })
    ));
}

#[test]
fn concurrent_appends_are_serialised() {
    let store = std::sync::Arc::new(Store::temporary().unwrap());
    let threads: Vec<_> = (0..4u16)
        .map(|author| {
            let store = store.clone();
            std::thread::spawn(move || {
                let c = chain_of(author, 20, None);
                for rec in as_new(&c) {
                    stored(&store.append(rec).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.len(), 80);
    let positions: Vec<u64> = store
        .read_from(0, 100)
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(positions, (0..80).collect::<Vec<_>>());
    assert_eq!(store.heads().unwrap().len(), 4);
}

#[test]
fn missing_tail_arrival_entry_is_truncated_with_its_indexes() {
    let (dir, hashes) = populated();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        let tree = store.raw_tree_for_tests();
        tree.remove(key(b'a', &[&5u64.to_be_bytes()])).unwrap();
        tree.flush().unwrap();
    }
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 5,
            truncated: 1
        }
    );
    assert!(!store.contains(&hashes[5]).unwrap());
    assert_eq!(store.head(2).unwrap(), Some((1, hashes[4])));
    assert_eq!(store.author_range(2, 2, 10).unwrap().len(), 0);
    drop(store);
    let (_, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 5,
            truncated: 0
        }
    );
}

#[test]
fn whole_log_corrupt_tail_truncates_to_empty() {
    let dir = tempfile::tempdir().unwrap();
    let h = {
        let (store, _) = Store::open(dir.path()).unwrap();
        let c = chain_of(1, 1, Some(0));
        let out = store.append_batch(&as_new(&c)).unwrap();
        let h = stored(&out[0]).0;
        let tree = store.raw_tree_for_tests();
        tree.insert(Store::raw_record_key_for_tests(&h), &b"x"[..])
            .unwrap();
        tree.flush().unwrap();
        h
    };
    let (store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 0,
            truncated: 1
        }
    );
    assert!(store.is_empty());
    assert!(store.heads().unwrap().is_empty());
    assert!(store.epoch_hashes(0).unwrap().is_empty());
    assert!(!store.contains(&h).unwrap());
}

#[test]
fn evidence_positions_and_fork_tip() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    assert_eq!(store.evidence_tip(3).unwrap(), None);
    let a = anon_bytes(b"fork at 5");
    let b = anon_bytes(b"fork at 6");
    let c = anon_bytes(b"other author");
    assert!(store.keep_evidence(&a, 3, 5, false).unwrap());
    assert!(store.keep_evidence(&b, 3, 6, false).unwrap());
    assert!(store.keep_evidence(&c, 4, 9, false).unwrap());
    // Kept once only.
    assert!(!store.keep_evidence(&b, 3, 6, false).unwrap());
    assert_eq!(store.evidence_tip(3).unwrap(), Some(6));
    assert_eq!(store.evidence_tip(4).unwrap(), Some(9));
    assert_eq!(store.evidence_tip(2).unwrap(), None);
    let ha = record_hash(&a);
    assert!(store.evidence_is_at(3, 5, &ha).unwrap());
    assert!(!store.evidence_is_at(3, 6, &ha).unwrap());
    assert!(!store.evidence_is_at(4, 5, &ha).unwrap());
    // The largest author and position are read back exactly.
    let d = anon_bytes(b"max");
    assert!(store.keep_evidence(&d, u16::MAX, u64::MAX, false).unwrap());
    assert_eq!(store.evidence_tip(u16::MAX).unwrap(), Some(u64::MAX));
}

#[test]
fn local_writes_and_erasures_land_together_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path()).unwrap();
        store
            .local_put_batch(&[
                ("epoch/1/scores/0", b"secret".as_slice()),
                ("epoch/1/scores/1", b"secret".as_slice()),
                ("epoch/1/decision", b"kept".as_slice()),
                ("epoch/10/scores/0", b"other epoch".as_slice()),
            ])
            .unwrap();
        store
            .local_apply(
                &[
                    ("epoch/1/final/0", b"results".as_slice()),
                    ("epoch/1/scores/2", b"written and erased at once".as_slice()),
                ],
                &["epoch/1/scores/".to_string(), "epoch/9/absent/".to_string()],
            )
            .unwrap();
    }
    let (store, _) = Store::open(dir.path()).unwrap();
    let keys: Vec<String> = store
        .local_scan()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        ["epoch/1/decision", "epoch/1/final/0", "epoch/10/scores/0"]
    );
}

#[test]
fn evidence_is_bounded_per_position_unless_wanted_and_always_per_author() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path()).unwrap();
    for i in 0..EVIDENCE_PER_POSITION {
        assert!(store
            .keep_evidence(&anon_bytes(format!("v{i}").as_bytes()), 2, 7, false)
            .unwrap());
    }
    let real = anon_bytes(b"the side others follow");
    assert!(
        !store.keep_evidence(&real, 2, 7, false).unwrap(),
        "position full"
    );
    assert!(
        store.keep_evidence(&real, 2, 7, true).unwrap(),
        "wanted as a fork's prev"
    );
    // The per-author bound holds whatever the positions: a fork of any length cannot fill
    // the disk.
    let big = vec![7u8; 1024 * 1024];
    let mut kept = 0u64;
    for seq in 100..200u64 {
        let mut b = big.clone();
        b.extend_from_slice(&seq.to_be_bytes());
        if store.keep_evidence(&anon_bytes(&b), 3, seq, true).unwrap() {
            kept += 1;
        }
    }
    assert!(kept * 1024 * 1024 <= EVIDENCE_BYTES_PER_AUTHOR, "{kept}");
    assert!(
        store
            .keep_evidence(&anon_bytes(b"small"), 4, 1, false)
            .unwrap(),
        "other authors unaffected"
    );
    drop(store);
    // The counters survive reopening (and the store verifies with them).
    let (store, _) = Store::open(dir.path()).unwrap();
    let mut again = big.clone();
    again.extend_from_slice(b"after reopening");
    assert!(!store
        .keep_evidence(&anon_bytes(&again), 3, 500, true)
        .unwrap());
    assert_eq!(kept, 15);
}
