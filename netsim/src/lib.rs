//! A deterministic discrete-event simulator for bankmesh (DESIGN 7, STYLE 7-8).
//!
//! It cranks the real protocol state machines over real (temporary) sled stores through the
//! same [`Replica`] the libp2p node uses, on a virtual clock, with seeded latency, reordering
//! and gossip loss. Everything random comes from one seed, so a run is reproducible: a
//! failure prints its seed, and [`Sim::event_digest`] fingerprints the whole run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use bankmesh_protocol::genesis::{Consortium, Genesis, Timing};
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::Phase;
use bankmesh_protocol::{
    Bank, ClientResult, MemberIndex, MemberSecrets, Origin, Step, Time, SCORE_MAX,
};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub banks: usize,
    pub threshold: usize,
    pub clients_per_bank: usize,
    /// One-way latency is uniform in this range (ms); different latencies reorder messages.
    pub latency_ms: (u64, u64),
    /// Probability (per mille) that one gossip delivery is lost; sync must repair it.
    pub gossip_loss_permille: u32,
    /// Upper bound on processed events before the run is declared stuck.
    pub max_events: u64,
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            banks: 5,
            threshold: 3,
            clients_per_bank: 12,
            latency_ms: (5, 80),
            gossip_loss_permille: 0,
            max_events: 2_000_000,
        }
    }
}

#[derive(Debug)]
enum Delivery {
    Gossip {
        from: MemberIndex,
        bytes: Vec<u8>,
    },
    Request {
        from: MemberIndex,
        request: Request,
    },
    Response {
        from: MemberIndex,
        response: Response,
    },
    Timer,
    Sync,
}

struct Scheduled {
    at: Time,
    seq: u64,
    to: MemberIndex,
    delivery: Delivery,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Node {
    replica: Replica,
    rng: ChaCha20Rng,
    timer_at: Option<Time>,
}

/// What a member needs to come back after a crash: its key bytes and its store's path.
struct Durable {
    secrets: zeroize::Zeroizing<[u8; 96]>,
    path: std::path::PathBuf,
}

/// Why a run did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("seed {seed}: {reason}")]
    Failed { seed: u64, reason: String },
}

pub struct Sim {
    config: SimConfig,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: BTreeMap<MemberIndex, Node>,
    durable: BTreeMap<MemberIndex, Durable>,
    consortium: Arc<Consortium>,
    /// Holds every member's on-disk store; removed when the simulation ends.
    _dir: tempfile::TempDir,
    net_rng: ChaCha20Rng,
    digest: Sha256,
    events: u64,
    /// Print every event, fault and published record (set `NETSIM_TRACE=1`).
    trace: bool,
    pub scores: Vec<Vec<(String, u16)>>,
}

const SYNC_EVERY_MS: u64 = 2_000;

impl Sim {
    /// Builds a consortium of `config.banks` members with seeded keys and scores.
    pub fn new(config: SimConfig) -> Result<Sim, SimError> {
        let seed = config.seed;
        let fail = |reason: String| SimError::Failed { seed, reason };
        let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
        let secrets: Vec<MemberSecrets> = (0..config.banks)
            .map(|_| MemberSecrets::generate(&mut rng))
            .collect();
        let start = 1_000_000;
        let genesis = Genesis::new(
            "netsim",
            u16::try_from(config.threshold).map_err(|e| fail(e.to_string()))?,
            Timing::new(start, 60_000, 600_000, 300_000, 60_000, 120_000),
            secrets
                .iter()
                .enumerate()
                .map(|(i, s)| s.member_info(i as u16 + 1, &format!("bank-{}", i + 1), vec![]))
                .collect(),
        );
        let consortium = Arc::new(Consortium::new(genesis).map_err(|e| fail(e.to_string()))?);
        let scores = plaintext_scores(&mut rng, config.banks, config.clients_per_bank);
        let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
        let mut nodes = BTreeMap::new();
        let mut durable = BTreeMap::new();
        for (i, s) in secrets.into_iter().enumerate() {
            let me = i as u16 + 1;
            let path = dir.path().join(format!("bank-{me}"));
            durable.insert(
                me,
                Durable {
                    secrets: s.to_bytes(),
                    path: path.clone(),
                },
            );
            let (store, _) = Store::open(&path).map_err(|e| fail(e.to_string()))?;
            let bank = Bank::new(Arc::clone(&consortium), me, s);
            let replica = Replica::open(bank, store).map_err(|e| fail(e.to_string()))?;
            let node_rng = ChaCha20Rng::seed_from_u64(
                config
                    .seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add(u64::from(me)),
            );
            nodes.insert(
                me,
                Node {
                    replica,
                    rng: node_rng,
                    timer_at: None,
                },
            );
        }
        let net_rng = ChaCha20Rng::seed_from_u64(config.seed ^ 0x6e65_7473_696d);
        let mut sim = Sim {
            config,
            now: Time(start - 1),
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            durable,
            consortium,
            _dir: dir,
            net_rng,
            digest: Sha256::new(),
            events: 0,
            trace: std::env::var_os("NETSIM_TRACE").is_some(),
            scores,
        };
        let members: Vec<MemberIndex> = sim.nodes.keys().copied().collect();
        for &me in &members {
            sim.start(me)?;
        }
        for me in members {
            sim.submit_scores(me)?;
            sim.schedule(me, Time(start + SYNC_EVERY_MS), Delivery::Sync);
        }
        Ok(sim)
    }

    /// Gives member `me` its epoch-1 scores, as its operator would.
    pub fn submit_scores(&mut self, me: MemberIndex) -> Result<(), SimError> {
        let seed = self.config.seed;
        let fail = |reason: String| SimError::Failed { seed, reason };
        let rows = self
            .scores
            .get(usize::from(me) - 1)
            .cloned()
            .unwrap_or_default();
        let now = self.now;
        let node = self
            .nodes
            .get_mut(&me)
            .ok_or_else(|| fail(format!("member {me} is down")))?;
        let step = node
            .replica
            .submit(now, 1, rows, &mut node.rng)
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        self.execute(me, step);
        self.rearm(me);
        Ok(())
    }

    /// Crashes member `me`: its process state and every message in flight to it are lost;
    /// only its store survives.
    pub fn crash(&mut self, me: MemberIndex) {
        self.nodes.remove(&me);
        let kept: Vec<Reverse<Scheduled>> = self
            .queue
            .drain()
            .filter(|Reverse(s)| s.to != me || matches!(s.delivery, Delivery::Sync))
            .collect();
        self.queue.extend(kept);
    }

    /// Restarts a crashed member from its store: the log is verified and replayed, and the
    /// member resumes its epochs from its local state.
    pub fn restart(&mut self, me: MemberIndex) -> Result<(), SimError> {
        let seed = self.config.seed;
        let fail = |reason: String| SimError::Failed { seed, reason };
        let d = self
            .durable
            .get(&me)
            .ok_or_else(|| fail(format!("no member {me}")))?;
        let secrets =
            MemberSecrets::from_bytes(&d.secrets).ok_or_else(|| fail("member key bytes".into()))?;
        let (store, _) = Store::open(&d.path).map_err(|e| fail(e.to_string()))?;
        let bank = Bank::new(Arc::clone(&self.consortium), me, secrets);
        let replica = Replica::open(bank, store).map_err(|e| fail(e.to_string()))?;
        let rng =
            ChaCha20Rng::seed_from_u64(seed.wrapping_mul(7_000_003).wrapping_add(u64::from(me)));
        self.nodes.insert(
            me,
            Node {
                replica,
                rng,
                timer_at: None,
            },
        );
        self.start(me)
    }

    /// Starts member `me`'s replica: it publishes again what it must and checks its head.
    fn start(&mut self, me: MemberIndex) -> Result<(), SimError> {
        let seed = self.config.seed;
        let now = self.now;
        if let Some(node) = self.nodes.get_mut(&me) {
            let step = node
                .replica
                .resume(now, &mut node.rng)
                .map_err(|e| SimError::Failed {
                    seed,
                    reason: e.to_string(),
                })?;
            self.execute(me, step);
        }
        self.rearm(me);
        Ok(())
    }

    /// Runs until `done` holds, failing after `max_events`.
    pub fn run_until(&mut self, done: impl Fn(&Sim) -> bool) -> Result<(), SimError> {
        let seed = self.config.seed;
        while !done(self) {
            if self.events >= self.config.max_events {
                return Err(SimError::Failed {
                    seed,
                    reason: format!("stuck after {} events at {}", self.events, self.now),
                });
            }
            if !self.step()? {
                return Err(SimError::Failed {
                    seed,
                    reason: "event queue ran dry".into(),
                });
            }
        }
        Ok(())
    }

    /// Member `me`'s status, if it is up.
    pub fn status(&self, me: MemberIndex) -> Option<bankmesh_protocol::Status> {
        self.nodes.get(&me).map(|n| n.replica.bank().status())
    }

    /// The kinds of the records `author` wrote, in order, as member `me`'s log holds them.
    pub fn kinds_by(&self, me: MemberIndex, author: MemberIndex) -> Vec<&'static str> {
        let Some(node) = self.nodes.get(&me) else {
            return Vec::new();
        };
        let store = node.replica.store();
        let mut kinds = Vec::new();
        let mut seq = 1;
        while let Ok(batch) = store.author_range(author, seq, 1_000) {
            if batch.is_empty() {
                break;
            }
            seq += batch.len() as u64;
            kinds.extend(
                batch
                    .iter()
                    .filter_map(|b| bankmesh_protocol::Record::from_trusted_bytes(b).ok())
                    .map(|r| r.kind()),
            );
        }
        kinds
    }

    /// Records in member `me`'s log, if it is up.
    pub fn log_len(&self, me: MemberIndex) -> Option<u64> {
        self.nodes.get(&me).map(|n| n.replica.store().len())
    }

    fn schedule(&mut self, to: MemberIndex, at: Time, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            to,
            delivery,
        }));
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.config.latency_ms;
        lo + self.net_rng.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// Sends what a node's step asks for over the simulated network.
    fn execute(&mut self, from: MemberIndex, step: Step) {
        let members: Vec<MemberIndex> = self.nodes.keys().copied().collect();
        for record in step.publish {
            for &to in members.iter().filter(|&&m| m != from) {
                let lost = self.net_rng.next_u32() % 1000 < self.config.gossip_loss_permille;
                if !lost {
                    let at = self.now.plus(self.latency());
                    self.schedule(
                        to,
                        at,
                        Delivery::Gossip {
                            from,
                            bytes: record.bytes().to_vec(),
                        },
                    );
                }
            }
        }
        for (to, request) in step.requests {
            let at = self.now.plus(self.latency());
            self.schedule(to, at, Delivery::Request { from, request });
        }
    }

    /// Makes sure the node's next protocol timer is scheduled.
    fn rearm(&mut self, me: MemberIndex) {
        let Some(node) = self.nodes.get(&me) else {
            return;
        };
        let Some(at) = node.replica.poll_timeout() else {
            return;
        };
        let at = at.max(self.now.plus(1));
        if node.timer_at.is_some_and(|t| t <= at && t > self.now) {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&me) {
            node.timer_at = Some(at);
        }
        self.schedule(me, at, Delivery::Timer);
    }

    /// Processes the next event. Returns false when nothing is left.
    pub fn step(&mut self) -> Result<bool, SimError> {
        let Some(Reverse(ev)) = self.queue.pop() else {
            return Ok(false);
        };
        self.events += 1;
        self.now = self.now.max(ev.at);
        let seed = self.config.seed;
        let fail = |reason: String| SimError::Failed { seed, reason };
        self.digest.update(ev.at.0.to_be_bytes());
        self.digest.update(ev.to.to_be_bytes());
        let now = self.now;
        let to = ev.to;
        let Some(node) = self.nodes.get_mut(&to) else {
            // A crashed member keeps its anti-entropy turn for when it is back.
            if matches!(ev.delivery, Delivery::Sync) {
                self.schedule(to, now.plus(SYNC_EVERY_MS), Delivery::Sync);
            }
            return Ok(true);
        };
        let step = match ev.delivery {
            Delivery::Gossip { from, bytes } => {
                self.digest.update(Sha256::digest(&bytes));
                let (_, step) = node
                    .replica
                    .ingest(now, vec![(Origin::Gossip { from }, bytes)], &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?;
                step
            }
            Delivery::Request { from, request } => {
                let response = node
                    .replica
                    .handle_request(now, from, request, &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?;
                let at = now.plus(self.latency());
                self.schedule(from, at, Delivery::Response { from: to, response });
                Step::default()
            }
            Delivery::Response { from, response } => node
                .replica
                .handle_response(now, from, response, &mut node.rng)
                .map_err(|e| fail(e.to_string()))?,
            Delivery::Timer => {
                node.timer_at = None;
                node.replica
                    .handle_timeout(now, &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?
            }
            Delivery::Sync => {
                let request = node.replica.sync_request();
                self.schedule(to, now.plus(SYNC_EVERY_MS), Delivery::Sync);
                let mut step = Step::default();
                step.requests.extend(request);
                step
            }
        };
        if self.trace {
            for e in &step.events {
                eprintln!("[{}] member {to}: {e:?}", self.now.0);
            }
            for f in &step.faults {
                eprintln!("[{}] member {to}: fault {f}", self.now.0);
            }
            for r in &step.publish {
                eprintln!(
                    "[{}] member {to}: publishes {} {:?}",
                    self.now.0,
                    r.kind(),
                    r.chain_position().map(|(a, s, _)| (a, s))
                );
            }
        }
        for e in &step.events {
            if let bankmesh_protocol::Event::Failed { phase, reason, .. } = e {
                return Err(fail(format!("member {to} failed in {phase:?}: {reason}")));
            }
        }
        self.digest
            .update((step.publish.len() as u64).to_be_bytes());
        self.execute(to, step);
        self.rearm(to);
        Ok(true)
    }

    /// Runs until every bank has its epoch-1 results, failing after `max_events`.
    pub fn run_epoch(&mut self) -> Result<(), SimError> {
        self.run_until(Sim::all_done)
    }

    fn all_done(&self) -> bool {
        self.nodes.len() == self.durable.len()
            && self.nodes.values().all(|n| {
                n.replica
                    .bank()
                    .status()
                    .epochs
                    .iter()
                    .any(|e| e.epoch == 1 && e.phase == Phase::Done)
            })
    }

    pub fn results(&self, me: MemberIndex) -> Vec<ClientResult> {
        self.nodes
            .get(&me)
            .map(|n| n.replica.bank().results(1))
            .unwrap_or_default()
    }

    /// Compares every bank's results with the plaintext truth; describes the first mismatch.
    pub fn check_against_truth(&self) -> Result<usize, SimError> {
        let mut truth: BTreeMap<&str, (u64, u32)> = BTreeMap::new();
        for rows in &self.scores {
            for (id, score) in rows {
                let e = truth.entry(id.as_str()).or_default();
                e.0 += u64::from(*score);
                e.1 += 1;
            }
        }
        let mut checked = 0;
        for (i, rows) in self.scores.iter().enumerate() {
            let me = i as u16 + 1;
            let results = self.results(me);
            for (id, _) in rows {
                let got = results
                    .iter()
                    .find(|r| &r.client_id == id)
                    .map(|r| (r.sum, r.count));
                if got != truth.get(id.as_str()).copied() {
                    let reason = format!(
                        "bank {me} client {id}: got {got:?}, expected {:?}",
                        truth.get(id.as_str())
                    );
                    return Err(SimError::Failed {
                        seed: self.config.seed,
                        reason,
                    });
                }
                checked += 1;
            }
            if results.len() != rows.len() {
                let reason = format!(
                    "bank {me} has {} results for {} clients",
                    results.len(),
                    rows.len()
                );
                return Err(SimError::Failed {
                    seed: self.config.seed,
                    reason,
                });
            }
        }
        Ok(checked)
    }

    /// A fingerprint of every event processed so far (STYLE 8: determinism check).
    pub fn event_digest(&self) -> [u8; 32] {
        self.digest.clone().finalize().into()
    }
    pub fn events(&self) -> u64 {
        self.events
    }
    pub fn now(&self) -> Time {
        self.now
    }
}

/// Seeded scores: clients held by 1..=n banks, with 0 and 1023 among them.
fn plaintext_scores(
    rng: &mut ChaCha20Rng,
    banks: usize,
    per_bank: usize,
) -> Vec<Vec<(String, u16)>> {
    let mut out = vec![Vec::new(); banks];
    let pool = (banks * per_bank / 2).max(1);
    for c in 0..pool {
        let holders = 1 + (rng.next_u64() % banks as u64) as usize;
        let mut order: Vec<usize> = (0..banks).collect();
        for i in 0..holders {
            let j = i + (rng.next_u64() % (banks - i) as u64) as usize;
            order.swap(i, j);
        }
        for &b in order.iter().take(holders) {
            let score = match c % 7 {
                0 => 0,
                1 => SCORE_MAX,
                _ => (rng.next_u64() % (u64::from(SCORE_MAX) + 1)) as u16,
            };
            if let Some(bank) = out.get_mut(b) {
                bank.push((format!("client-{c}"), score));
            }
        }
    }
    out
}
