//! Model test in the style of sled's tests/tree/mod.rs: random operations run
//! against the store and a plain in-memory model, compared after every step,
//! with restarts (drop and reopen from the same path) in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::{BTreeMap, HashMap};

use bankmesh_store::*;
use common::*;
use proptest::prelude::*;

const AUTHORS: u16 = 4;
const EPOCHS: u64 = 3;

#[derive(Clone, Debug)]
enum BadKind {
    /// seq = head + 1 + k (k >= 1)
    Gap(u8),
    /// seq = head + 1 with a wrong prev
    WrongPrev,
    /// seq <= head with different bytes (falls back to a gap with no head)
    Equivocate(u8),
}

#[derive(Clone, Debug)]
enum Op {
    AppendAnon {
        epoch: Option<u64>,
        payload: u8,
    },
    AppendChained {
        author: u16,
        epoch: Option<u64>,
        payload: u8,
    },
    /// Several records of one author chaining on each other in one batch,
    /// mixed with an anonymous record.
    AppendChainedBatch {
        author: u16,
        n: u8,
        epoch: Option<u64>,
        payload: u8,
    },
    AppendBadChain {
        author: u16,
        kind: BadKind,
        payload: u8,
    },
    AppendDuplicate(usize),
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let epoch = proptest::option::of(0..EPOCHS);
    let author = 0..AUTHORS;
    let kind = prop_oneof![
        (1u8..4).prop_map(BadKind::Gap),
        Just(BadKind::WrongPrev),
        any::<u8>().prop_map(BadKind::Equivocate),
    ];
    prop_oneof![
        3 => (epoch.clone(), 0u8..8).prop_map(|(epoch, payload)| Op::AppendAnon { epoch, payload }),
        5 => (author.clone(), epoch.clone(), any::<u8>())
            .prop_map(|(author, epoch, payload)| Op::AppendChained { author, epoch, payload }),
        2 => (author.clone(), 1u8..4, epoch, any::<u8>()).prop_map(|(author, n, epoch, payload)| {
            Op::AppendChainedBatch { author, n, epoch, payload }
        }),
        2 => (author, kind, 0u8..4)
            .prop_map(|(author, kind, payload)| Op::AppendBadChain { author, kind, payload }),
        2 => any::<usize>().prop_map(Op::AppendDuplicate),
        1 => Just(Op::Restart),
    ]
}

#[derive(Clone, Debug)]
struct Rec {
    hash: Hash,
    bytes: Vec<u8>,
    author: Option<AuthorPos>,
    epoch: Option<u64>,
}

#[derive(Default)]
struct Model {
    log: Vec<Rec>,
    by_hash: HashMap<Hash, usize>,
    chains: BTreeMap<u16, Vec<Hash>>,
    evidence: BTreeMap<Hash, Vec<u8>>,
}

impl Model {
    fn head(&self, author: u16) -> (u64, Hash) {
        match self.chains.get(&author) {
            Some(c) if !c.is_empty() => (c.len() as u64, *c.last().unwrap()),
            _ => (0, ZERO_HASH),
        }
    }

    /// The specification of one append, applied to the model.
    fn apply(
        &mut self,
        bytes: &[u8],
        author: Option<AuthorPos>,
        epoch: Option<u64>,
    ) -> Result<Appended, Refused> {
        if bytes.is_empty() {
            return Err(Refused::Empty);
        }
        let hash = record_hash(bytes);
        if self.by_hash.contains_key(&hash) {
            return Ok(Appended::AlreadyPresent { hash });
        }
        if let Some(a) = author {
            let (head_seq, head_hash) = self.head(a.author);
            if a.seq == 0 {
                return Err(Refused::ZeroSeq { author: a.author });
            }
            if a.seq <= head_seq {
                let existing = self.chains[&a.author][(a.seq - 1) as usize];
                self.evidence.insert(hash, bytes.to_vec());
                return Err(Refused::Equivocation {
                    author: a.author,
                    seq: a.seq,
                    existing,
                    conflicting: hash,
                });
            }
            if a.seq > head_seq + 1 {
                return Err(Refused::Gap {
                    author: a.author,
                    head_seq,
                    seq: a.seq,
                });
            }
            if a.prev != head_hash {
                return Err(Refused::PrevMismatch {
                    author: a.author,
                    seq: a.seq,
                });
            }
            self.chains.entry(a.author).or_default().push(hash);
        }
        let position = self.log.len() as u64;
        self.by_hash.insert(hash, self.log.len());
        self.log.push(Rec {
            hash,
            bytes: bytes.to_vec(),
            author,
            epoch,
        });
        Ok(Appended::Stored { hash, position })
    }
}

fn check(store: &Store, model: &Model) {
    assert_eq!(store.len(), model.log.len() as u64);
    assert_eq!(store.is_empty(), model.log.is_empty());
    let heads: Vec<(u16, u64, Hash)> = model
        .chains
        .iter()
        .map(|(a, c)| (*a, c.len() as u64, *c.last().unwrap()))
        .collect();
    assert_eq!(store.heads().unwrap(), heads);
    for a in 0..AUTHORS {
        let (s, h) = model.head(a);
        assert_eq!(store.head(a).unwrap(), (s > 0).then_some((s, h)));
        let chain = model.chains.get(&a).cloned().unwrap_or_default();
        let all: Vec<Vec<u8>> = chain
            .iter()
            .map(|h| model.log[model.by_hash[h]].bytes.clone())
            .collect();
        assert_eq!(store.author_range(a, 0, usize::MAX).unwrap(), all);
        assert_eq!(store.author_range(a, 1, 100).unwrap(), all);
        let from2: Vec<Vec<u8>> = all.iter().skip(1).take(2).cloned().collect();
        assert_eq!(store.author_range(a, 2, 2).unwrap(), from2);
    }
    for r in &model.log {
        assert_eq!(store.get(&r.hash).unwrap().as_deref(), Some(&r.bytes[..]));
        assert!(store.contains(&r.hash).unwrap());
    }
    for (h, _) in model.evidence.iter() {
        if !model.by_hash.contains_key(h) {
            assert!(!store.contains(h).unwrap());
        }
    }
    assert_eq!(store.get(&[0xEE; 32]).unwrap(), None);
    for e in 0..EPOCHS {
        let mut hs: Vec<Hash> = model
            .log
            .iter()
            .filter(|r| r.epoch == Some(e))
            .map(|r| r.hash)
            .collect();
        hs.sort();
        assert_eq!(store.epoch_hashes(e).unwrap(), hs);
    }
    let full: Vec<(u64, Hash, Vec<u8>)> = model
        .log
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64, r.hash, r.bytes.clone()))
        .collect();
    assert_eq!(store.read_from(0, usize::MAX).unwrap(), full);
    let mid = full.len() / 2;
    let part: Vec<_> = full.iter().skip(mid).take(3).cloned().collect();
    assert_eq!(store.read_from(mid as u64, 3).unwrap(), part);
    let ev: Vec<(Hash, Vec<u8>)> = model
        .evidence
        .iter()
        .map(|(h, b)| (*h, b.clone()))
        .collect();
    assert_eq!(store.evidence().unwrap(), ev);
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, rep) = Store::open(dir.path()).unwrap();
    assert_eq!(
        rep,
        OpenReport {
            records: 0,
            truncated: 0
        }
    );
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::AppendAnon { epoch, payload } => {
                let b = anon_bytes(&[payload]);
                let want = model.apply(&b, None, epoch);
                assert_eq!(store.append(anon(&b, epoch)).unwrap(), want);
            }
            Op::AppendChained {
                author,
                epoch,
                payload,
            } => {
                let (head_seq, prev) = model.head(author);
                let b = chained_bytes(author, head_seq + 1, &[payload]);
                let rec = chained(&b, author, head_seq + 1, prev, epoch);
                let want = model.apply(&b, rec.author, epoch);
                assert!(want.is_ok());
                assert_eq!(store.append(rec).unwrap(), want);
            }
            Op::AppendChainedBatch {
                author,
                n,
                epoch,
                payload,
            } => {
                let (mut seq, mut prev) = model.head(author);
                let mut owned = Vec::new();
                for i in 0..n {
                    seq += 1;
                    let b = chained_bytes(author, seq, &[b'B', payload, i]);
                    let pos = AuthorPos { author, seq, prev };
                    prev = record_hash(&b);
                    owned.push((b, Some(pos), epoch));
                    if i == 0 {
                        owned.push((anon_bytes(&[b'B', payload]), None, epoch));
                    }
                }
                let want: Vec<_> = owned
                    .iter()
                    .map(|(b, a, e)| model.apply(b, *a, *e))
                    .collect();
                let recs: Vec<NewRecord<'_>> = owned
                    .iter()
                    .map(|(b, a, e)| NewRecord {
                        bytes: b,
                        author: *a,
                        epoch: *e,
                    })
                    .collect();
                assert_eq!(store.append_batch(&recs).unwrap(), want);
            }
            Op::AppendBadChain {
                author,
                kind,
                payload,
            } => {
                let (head_seq, head_hash) = model.head(author);
                let (seq, prev) = match kind {
                    BadKind::Equivocate(i) if head_seq > 0 => {
                        let seq = u64::from(i) % head_seq + 1;
                        let prev = if seq == 1 {
                            ZERO_HASH
                        } else {
                            model.chains[&author][(seq - 2) as usize]
                        };
                        (seq, prev)
                    }
                    BadKind::Equivocate(_) => (head_seq + 2, head_hash),
                    BadKind::Gap(k) => (head_seq + 1 + u64::from(k), head_hash),
                    BadKind::WrongPrev => (head_seq + 1, [0xAB; 32]),
                };
                let b = chained_bytes(author, seq, &[0xEE, payload]);
                let rec = chained(&b, author, seq, prev, None);
                let want = model.apply(&b, rec.author, None);
                assert!(want.is_err() || matches!(want, Ok(Appended::AlreadyPresent { .. })));
                assert_eq!(store.append(rec).unwrap(), want);
            }
            Op::AppendDuplicate(i) => {
                if model.log.is_empty() {
                    continue;
                }
                let r = model.log[i % model.log.len()].clone();
                let want = model.apply(&r.bytes, r.author, r.epoch);
                assert_eq!(want, Ok(Appended::AlreadyPresent { hash: r.hash }));
                let rec = NewRecord {
                    bytes: &r.bytes,
                    author: r.author,
                    epoch: r.epoch,
                };
                assert_eq!(store.append(rec).unwrap(), want);
            }
            Op::Restart => {
                drop(store);
                let (s, rep) = Store::open(dir.path()).unwrap();
                assert_eq!(
                    rep,
                    OpenReport {
                        records: model.log.len() as u64,
                        truncated: 0
                    }
                );
                store = s;
            }
        }
        check(&store, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}

#[test]
fn model_regression_restart_after_equivocation() {
    run(vec![
        Op::AppendChained {
            author: 1,
            epoch: Some(0),
            payload: 1,
        },
        Op::AppendChained {
            author: 1,
            epoch: None,
            payload: 2,
        },
        Op::AppendBadChain {
            author: 1,
            kind: BadKind::Equivocate(1),
            payload: 0,
        },
        Op::Restart,
        Op::AppendChainedBatch {
            author: 1,
            n: 3,
            epoch: Some(2),
            payload: 0,
        },
        Op::AppendDuplicate(0),
        Op::AppendBadChain {
            author: 2,
            kind: BadKind::WrongPrev,
            payload: 0,
        },
        Op::AppendBadChain {
            author: 2,
            kind: BadKind::Gap(2),
            payload: 0,
        },
        Op::Restart,
    ]);
}
