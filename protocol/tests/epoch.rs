//! n bank state machines, driven by a small in-test harness with no network and no store,
//! complete an epoch: every bank gets the exact sum and count for each of its clients.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::record::{Body, Payload, Record, UncheckedRecord};
use bankmesh_protocol::{Bank, MemberSecrets, Origin, Step, Time, Verdict};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const START: u64 = 10_000;

fn consortium(n: usize, t: u16, rng: &mut ChaCha20Rng) -> (Arc<Consortium>, Vec<MemberSecrets>) {
    let secrets: Vec<MemberSecrets> = (0..n).map(|_| MemberSecrets::generate(rng)).collect();
    let mut genesis = Genesis::new(
        "harness",
        t,
        Timing::new(START, 10_000, 100_000, 50_000, 20_000, 20_000),
        secrets
            .iter()
            .enumerate()
            .map(|(i, s)| s.member_info(i as u16 + 1, &format!("b{i}"), vec![]))
            .collect(),
    );
    // A packet every half second: 100 per member over the 50 s window.
    genesis.privacy.packet_ms = 500;
    (Arc::new(Consortium::new(genesis).unwrap()), secrets)
}

enum Msg {
    Record {
        from: u16,
        bytes: Vec<u8>,
    },
    /// A record that reached `at` as the exit of its onion path: checked there, then published.
    Exit {
        at: u16,
        bytes: Vec<u8>,
    },
    Request {
        from: u16,
        to: u16,
        request: Request,
    },
    Response {
        from: u16,
        to: u16,
        response: Response,
    },
}

/// Delivers every message in FIFO order; records go to every other bank through `check`.
/// It answers record fetches itself from everything published (a store stands in for that in
/// a real node).
struct Harness {
    banks: Vec<Bank>,
    rng: ChaCha20Rng,
    queue: VecDeque<Msg>,
    now: Time,
    published: HashMap<[u8; 32], Vec<u8>>,
    /// What each bank applied (a store keeps every record once).
    applied: HashSet<(u16, [u8; 32])>,
    /// Each bank's log in the order it applied the records, and its local writes: what a
    /// store would hold for it.
    logs: BTreeMap<u16, Vec<Vec<u8>>>,
    /// Each bank's local store, as a driver keeps it (erasures applied).
    locals: BTreeMap<u16, BTreeMap<String, Vec<u8>>>,
    /// Every local write ever made, erased or not.
    written: BTreeMap<u16, BTreeMap<String, Vec<u8>>>,
}

impl Harness {
    fn bank(&mut self, i: u16) -> &mut Bank {
        &mut self.banks[usize::from(i) - 1]
    }

    fn enqueue(&mut self, from: u16, step: Step) {
        for f in &step.events {
            if let bankmesh_protocol::Event::Failed { reason, .. } = f {
                panic!("bank {from} failed: {reason}");
            }
        }
        assert!(step.faults.is_empty(), "faults: {:?}", step.faults);
        let locals = self.locals.entry(from).or_default();
        for w in step.local {
            locals.insert(w.key.clone(), w.value.to_vec());
            self.written
                .entry(from)
                .or_default()
                .insert(w.key.clone(), w.value.to_vec());
        }
        for prefix in &step.erase_local {
            locals.retain(|k, _| !k.starts_with(prefix.as_str()));
        }
        for r in step.publish {
            self.logs.entry(from).or_default().push(r.bytes().to_vec());
            self.published.insert(r.hash(), r.bytes().to_vec());
            self.queue.push_back(Msg::Record {
                from,
                bytes: r.bytes().to_vec(),
            });
        }
        for (to, request) in step.requests {
            self.queue.push_back(Msg::Request { from, to, request });
        }
        for bytes in step.exits {
            self.queue.push_back(Msg::Exit { at: from, bytes });
        }
    }

    fn deliver_all(&mut self) {
        let mut held: Vec<(u16, u16, Vec<u8>)> = Vec::new();
        while let Some(msg) = self.queue.pop_front() {
            let now = self.now;
            match msg {
                Msg::Record { from, bytes } => {
                    let n = self.banks.len() as u16;
                    for to in (1..=n).filter(|&i| i != from) {
                        held.push((from, to, bytes.clone()));
                    }
                }
                Msg::Exit { at, bytes } => {
                    let unchecked = UncheckedRecord::decode(&bytes).unwrap();
                    if self.applied.contains(&(at, unchecked.hash())) {
                        continue;
                    }
                    match self
                        .bank(at)
                        .check(now, Origin::Gossip { from: at }, unchecked)
                    {
                        Verdict::Accept(record) => {
                            self.applied.insert((at, record.record().hash()));
                            self.logs.entry(at).or_default().push(bytes.clone());
                            self.published.insert(record.record().hash(), bytes.clone());
                            let mut rng = self.rng.clone();
                            let step = self.bank(at).apply(now, record, &mut rng);
                            self.rng = rng;
                            self.enqueue(at, step);
                            self.queue.push_back(Msg::Record { from: at, bytes });
                        }
                        Verdict::Ignore(_) => {}
                        other => panic!("exit {at} did not accept a relayed record: {other:?}"),
                    }
                }
                Msg::Request { from, to, request } => {
                    let response = match request {
                        Request::Records { hashes } => Response::Records {
                            records: hashes
                                .iter()
                                .filter_map(|h| self.published.get(h).cloned())
                                .collect(),
                        },
                        request => {
                            let mut rng = self.rng.clone();
                            let (response, step) =
                                self.bank(to).handle_request(now, from, request, &mut rng);
                            assert!(step.publish.is_empty());
                            self.rng = rng;
                            response
                        }
                    };
                    self.queue.push_back(Msg::Response {
                        from: to,
                        to: from,
                        response,
                    });
                }
                Msg::Response {
                    from,
                    to,
                    response: Response::Records { records },
                } => {
                    for bytes in records {
                        held.push((from, to, bytes));
                    }
                }
                Msg::Response { from, to, response } => {
                    let mut rng = self.rng.clone();
                    let step = self.bank(to).handle_response(now, from, response, &mut rng);
                    self.rng = rng;
                    self.enqueue(to, step);
                }
            }
            // Check and apply held records; those that must wait stay held.
            let mut still = Vec::new();
            for (from, to, bytes) in held.drain(..) {
                let unchecked = UncheckedRecord::decode(&bytes).unwrap();
                if self.applied.contains(&(to, unchecked.hash())) {
                    continue;
                }
                match self.bank(to).check(now, Origin::Gossip { from }, unchecked) {
                    Verdict::Accept(record) => {
                        self.applied.insert((to, record.record().hash()));
                        self.logs.entry(to).or_default().push(bytes.clone());
                        let mut rng = self.rng.clone();
                        let step = self.bank(to).apply(now, record, &mut rng);
                        self.rng = rng;
                        self.enqueue(to, step);
                    }
                    Verdict::Defer(..) => still.push((from, to, bytes)),
                    // A record fetched twice (by sync and gossip) is simply dropped.
                    Verdict::Ignore(_) => {}
                    Verdict::Reject(f) => panic!("bank {to} rejected a record: {f}"),
                }
            }
            held = still;
        }
        assert!(
            held.is_empty(),
            "{} records never became checkable",
            held.len()
        );
    }

    fn tick(&mut self, now: Time) {
        self.now = now;
        for i in 1..=self.banks.len() as u16 {
            let mut rng = self.rng.clone();
            let step = self.bank(i).handle_timeout(now, &mut rng);
            self.rng = rng;
            self.enqueue(i, step);
        }
        self.deliver_all();
    }
}

type Scores = Vec<Vec<(String, u16)>>;

/// Runs five banks through an epoch: the harness, the inputs, the consortium, the key bytes.
fn run_epoch() -> (Harness, Scores, Arc<Consortium>, Vec<[u8; 96]>) {
    let mut rng = ChaCha20Rng::from_seed([42; 32]);
    let (consortium, secrets) = consortium(5, 3, &mut rng);
    let keys: Vec<[u8; 96]> = secrets.iter().map(|s| *s.to_bytes()).collect();
    let banks: Vec<Bank> = secrets
        .into_iter()
        .enumerate()
        .map(|(i, s)| Bank::new(Arc::clone(&consortium), i as u16 + 1, s))
        .collect();
    let mut h = Harness {
        banks,
        rng,
        queue: VecDeque::new(),
        now: Time(START - 1),
        published: HashMap::new(),
        applied: HashSet::new(),
        logs: BTreeMap::new(),
        locals: BTreeMap::new(),
        written: BTreeMap::new(),
    };
    // No store, no restart: every chain head is what the bank holds.
    for i in 1..=5u16 {
        let mut rng = h.rng.clone();
        let step = h.bank(i).confirm_head(Time(START - 1), &mut rng);
        h.enqueue(i, step);
    }

    // Client "shared" is held by all five (scores at both range limits), "pair" by two, others by one.
    let mut inputs: Vec<Vec<(String, u16)>> = vec![Vec::new(); 5];
    for (i, rows) in inputs.iter_mut().enumerate() {
        rows.push(("shared".into(), if i == 0 { 0 } else { 1023 }));
        rows.push((format!("own-{i}"), 100 + i as u16));
    }
    inputs[1].push(("pair".into(), 10));
    inputs[3].push(("pair".into(), 21));
    for (i, rows) in inputs.iter().enumerate() {
        let now = h.now;
        let mut rng = h.rng.clone();
        let step = h
            .bank(i as u16 + 1)
            .submit(now, 1, rows.clone(), &mut rng)
            .unwrap();
        h.rng = rng;
        h.enqueue(i as u16 + 1, step);
    }
    let mut now = START;
    for _ in 0..2_000 {
        h.tick(Time(now));
        now += 100;
        if h.banks
            .iter()
            .all(|b| b.results(1).len() == inputs[usize::from(b.me()) - 1].len())
        {
            break;
        }
    }
    (h, inputs, consortium, keys)
}

fn truth(inputs: &Scores) -> BTreeMap<String, (u64, u32)> {
    let mut truth: BTreeMap<String, (u64, u32)> = BTreeMap::new();
    for rows in inputs {
        for (id, s) in rows {
            let e = truth.entry(id.clone()).or_default();
            e.0 += u64::from(*s);
            e.1 += 1;
        }
    }
    truth
}

#[test]
fn five_banks_complete_an_epoch_with_exact_results() {
    let (h, inputs, _, _) = run_epoch();
    let truth = truth(&inputs);
    for (i, rows) in inputs.iter().enumerate() {
        let results = h.banks[i].results(1);
        assert_eq!(results.len(), rows.len(), "bank {} results", i + 1);
        for r in results {
            assert_eq!(
                r.sum.map(|s| (s, r.count)).as_ref(),
                truth.get(r.client_id.as_str()),
                "bank {} {}",
                i + 1,
                r.client_id
            );
        }
    }
    let shared = h.banks[2]
        .results(1)
        .into_iter()
        .find(|r| r.client_id == "shared")
        .unwrap();
    assert_eq!(
        (shared.sum, shared.count, shared.average_2dp().as_str()),
        (Some(4092), 5, "818.40")
    );
}

/// Replays bank 2's log into a fresh bank, as after a restart, with member 1's decryption
/// shares tampered with (re-signed by member 1, so only their proofs are wrong) and bank 2's
/// stored results left out: the results must come out exact anyway, and member 1 be named.
/// If any path combined a replayed share without verifying it, a result would be wrong.
#[test]
fn a_replayed_share_is_verified_before_it_is_combined() {
    let (h, inputs, consortium, keys) = run_epoch();
    let member1 = MemberSecrets::from_bytes(&keys[0]).unwrap();
    let mut tampered = 0;
    let log: Vec<Record> = h.logs[&2]
        .iter()
        .map(|bytes| {
            let r = Record::from_trusted_bytes(bytes).unwrap();
            let Payload::Identified(i) = r.payload() else {
                return r;
            };
            let Body::DecryptionShares {
                epoch,
                root,
                shares,
            } = &i.body
            else {
                return r;
            };
            if i.author != 1 {
                return r;
            }
            tampered += 1;
            let mut shares = shares.clone();
            for e in &mut shares {
                e.share.e += curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT;
            }
            Record::identified(
                &consortium.id,
                member1.identity(),
                1,
                i.seq,
                i.prev,
                Body::DecryptionShares {
                    epoch: *epoch,
                    root: *root,
                    shares,
                },
            )
        })
        .collect();
    assert!(tampered > 0, "member 1's shares are in bank 2's log");
    // The local store as it was before the results were stored (and the scores erased).
    let entries: Vec<_> = h.written[&2]
        .iter()
        .filter(|(k, _)| {
            !["/result/", "/finished", "/own/", "/final/", "/erased"]
                .iter()
                .any(|p| k.contains(p))
        })
        .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone())))
        .collect();
    let secrets = MemberSecrets::from_bytes(&keys[1]).unwrap();
    let mut bank = Bank::new(Arc::clone(&consortium), 2, secrets);
    bank.restore(&entries).unwrap();
    for r in &log {
        bank.replay(r);
    }
    assert!(
        bank.results(1).is_empty(),
        "results were left out of the local store"
    );
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let mut now = h.now;
    let mut faults = bank.resume(now, &mut rng).faults;
    faults.extend(bank.confirm_head(now, &mut rng).faults);
    for _ in 0..20 {
        now = now.plus(100);
        faults.extend(bank.handle_timeout(now, &mut rng).faults);
    }
    let truth = truth(&inputs);
    let results = bank.results(1);
    assert_eq!(
        results.len(),
        inputs[1].len(),
        "{:?} {faults:?}",
        bank.status()
    );
    for r in results {
        assert_eq!(
            r.sum.map(|s| (s, r.count)).as_ref(),
            truth.get(r.client_id.as_str()),
            "{}",
            r.client_id
        );
    }
    assert!(
        faults
            .iter()
            .any(|f| f.culprit == bankmesh_protocol::Culprit::Member(1)
                && f.kind == bankmesh_protocol::FaultKind::InvalidDecryptionShare),
        "member 1's bad shares are named: {faults:?}"
    );
}

#[test]
fn bad_scores_are_refused_before_any_work() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let (consortium, mut secrets) = consortium(3, 2, &mut rng);
    let mut bank = Bank::new(consortium, 1, secrets.remove(0));
    let cases: Vec<Vec<(String, u16)>> = vec![
        vec![("a".into(), 1024)],
        vec![(String::new(), 1)],
        vec![("x".repeat(129), 1)],
        vec![("a".into(), 1), ("a".into(), 2)],
    ];
    for scores in cases {
        assert!(bank.submit(Time(START), 1, scores, &mut rng).is_err());
    }
    assert!(
        bank.submit(Time(START), 0, vec![("a".into(), 1)], &mut rng)
            .is_err(),
        "epoch 0 does not exist"
    );
}

/// Once its results are stored, a bank's local store holds no score, pseudonym or per-client
/// working entry of the epoch; a bank restored from that store and its log serves the same
/// results; once the retention is over they are erased too, and the bank says so.
#[test]
fn scores_and_pseudonyms_are_erased_once_results_are_stored_and_results_expire() {
    let (h, inputs, consortium, keys) = run_epoch();
    let truth = truth(&inputs);
    let locals = &h.locals[&2];
    let epoch1 = "epoch/00000000000000000001/";
    for erased in ["scores/", "pseudonyms/", "result/"] {
        assert!(
            !locals
                .keys()
                .any(|k| k.starts_with(&format!("{epoch1}{erased}"))),
            "{erased} entries are left: {:?}",
            locals.keys().collect::<Vec<_>>()
        );
    }
    assert!(
        h.written[&2]
            .keys()
            .any(|k| k.starts_with(&format!("{epoch1}scores/"))),
        "the scores were stored before they were erased"
    );
    let entries: Vec<_> = locals
        .iter()
        .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone())))
        .collect();
    let secrets = MemberSecrets::from_bytes(&keys[1]).unwrap();
    let mut bank = Bank::new(Arc::clone(&consortium), 2, secrets);
    bank.restore(&entries).unwrap();
    for bytes in &h.logs[&2] {
        bank.replay(&Record::from_trusted_bytes(bytes).unwrap());
    }
    let mut results = bank.results(1);
    results.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    assert_eq!(results.len(), inputs[1].len());
    for r in &results {
        assert_eq!(
            r.sum.map(|s| (s, r.count)).as_ref(),
            truth.get(r.client_id.as_str())
        );
    }
    assert_eq!(bank.own_submissions(1).len(), inputs[1].len());
    assert!(bank.has_scores(1), "the epoch still counts as submitted");
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let step = bank.resume(h.now, &mut rng);
    assert!(
        step.local.iter().all(|w| !w.key.contains("/finished")),
        "a restored bank does not store its results again"
    );

    // Retention: nothing expires before the decryption window closed plus the retention.
    let end = consortium.decrypt_end(1);
    let day = 86_400_000;
    let early = bank.expire_results(end.plus(day - 1), day);
    assert!(early.local.is_empty() && early.erase_local.is_empty());
    assert!(!bank.results_expired(1));
    let step = bank.expire_results(end.plus(day), day);
    assert!(bank.results_expired(1));
    assert!(bank.results(1).is_empty());
    assert!(bank.own_submissions(1).is_empty());
    let mut after: BTreeMap<String, Vec<u8>> = locals.clone();
    for w in &step.local {
        after.insert(w.key.clone(), w.value.to_vec());
    }
    for prefix in &step.erase_local {
        after.retain(|k, _| !k.starts_with(prefix.as_str()));
    }
    assert!(!after
        .keys()
        .any(|k| k.starts_with(&format!("{epoch1}final/"))));
    assert!(!after
        .keys()
        .any(|k| k.starts_with(&format!("{epoch1}own/"))));
    // Restored from that store, the bank knows the results are gone, not merely missing.
    let entries: Vec<_> = after
        .iter()
        .map(|(k, v)| (k.clone(), zeroize::Zeroizing::new(v.clone())))
        .collect();
    let secrets = MemberSecrets::from_bytes(&keys[1]).unwrap();
    let mut again = Bank::new(Arc::clone(&consortium), 2, secrets);
    again.restore(&entries).unwrap();
    assert!(again.results_expired(1));
    assert!(again.results(1).is_empty());
    // Expiring twice changes nothing.
    let twice = bank.expire_results(end.plus(2 * day), day);
    assert!(twice.local.is_empty() && twice.erase_local.is_empty());
}

#[test]
fn the_oprf_is_served_only_while_an_epoch_window_is_open_by_the_clock() {
    let (mut h, _, consortium, _) = run_epoch();
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    let point = bankmesh_protocol::crypto::oprf::hash_to_group(b"probe");
    let ask = |epoch| Request::OprfEvaluate {
        epoch,
        batch: 9,
        blinded: vec![point; 4],
    };
    // Epoch 1 is over: its window closed, whatever the bank still holds of it.
    let now = h.now.max(consortium.submit_end(1));
    let (r, _) = h.bank(1).handle_request(now, 2, ask(1), &mut rng);
    assert!(
        matches!(&r, Response::Refused { reason } if reason.contains("window")),
        "{r:?}"
    );
    // Epoch 2 is not open yet (nor epoch 3), whatever keys exist for it.
    let (r, _) = h.bank(1).handle_request(now, 2, ask(2), &mut rng);
    assert!(
        matches!(&r, Response::Refused { reason } if reason.contains("window")),
        "{r:?}"
    );
    // Within epoch 2's window the same request is judged further (no key share of epoch 2
    // here: its setup never ran in this harness).
    let inside = consortium.epoch_start(2).plus(1);
    let (r, _) = h.bank(1).handle_request(inside, 2, ask(2), &mut rng);
    assert!(
        matches!(&r, Response::Refused { reason } if !reason.contains("window")),
        "{r:?}"
    );
}
