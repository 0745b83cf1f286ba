//! A deterministic discrete-event simulator for bankmesh (DESIGN 7, STYLE 7-8).
//!
//! It cranks the real protocol state machines over real (temporary) sled stores through the
//! same [`Replica`] the libp2p node uses, on a virtual clock. The network ([`network`]) has
//! per-link latency distributions, loss and duplication of gossip and direct messages, and
//! partitions; each member's clock may be skewed; members crash, restart and start late on a
//! plan; and an [`adversary`] may control everything one member sends. Everything random comes
//! from one seed, so a run is reproducible: a failure prints its seed and the command that
//! replays it, and [`Sim::event_digest`] fingerprints the whole run. [`check`] verifies the
//! properties of the seal and the results after a run; [`scenario`] names the runs CI sweeps.

pub mod adversary;
pub mod check;
pub mod network;
pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use bankmesh_protocol::genesis::{Consortium, Genesis, Privacy, Timing};
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::record::{Payload, Record};
use bankmesh_protocol::{
    Bank, ClientResult, Event, MemberIndex, MemberSecrets, Origin, Phase, Step, Time, SCORE_MAX,
};
use bankmesh_store::replica::Replica;
use bankmesh_store::Store;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use adversary::Adversary;
use network::{NetConfig, Network, Traffic};

/// Virtual Unix time (ms) of the genesis start.
pub const START: u64 = 1_000_000;
/// How long a run goes on after every member is done: records still in flight land.
pub const SETTLE_MS: u64 = 10_000;

/// Something planned for a member, at a time after the genesis start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Crash {
        member: MemberIndex,
        at_ms: u64,
    },
    Restart {
        member: MemberIndex,
        at_ms: u64,
    },
    /// The member's process first starts at this time (it is absent before).
    StartLate {
        member: MemberIndex,
        at_ms: u64,
    },
    /// The member crashes as it seals (its first epoch's final set is built), before what it
    /// then produced leaves (it is durable), and restarts `down_ms` later.
    CrashWhenSealed {
        member: MemberIndex,
        down_ms: u64,
    },
}

/// Simulation parameters.
pub struct SimConfig {
    pub seed: u64,
    pub banks: usize,
    pub threshold: usize,
    pub clients_per_bank: usize,
    /// Consecutive epochs, each with its own scores.
    pub epochs: u64,
    pub net: NetConfig,
    /// Each member's clock offset from true time (ms).
    pub skew_ms: BTreeMap<MemberIndex, i64>,
    /// Members that give no scores: the others cannot close their windows early.
    pub silent: BTreeSet<MemberIndex>,
    pub plan: Vec<Plan>,
    /// One member whose outgoing messages a strategy controls.
    pub adversary: Option<(MemberIndex, Box<dyn Adversary + Send>)>,
    /// Upper bound on processed events before the run is declared stuck.
    pub max_events: u64,
    pub timing: Timing,
    pub privacy: Privacy,
    /// Members that give at most this many clients' scores (the others as generated).
    pub clients_of: BTreeMap<MemberIndex, usize>,
}

impl SimConfig {
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            banks: 5,
            threshold: 3,
            clients_per_bank: 12,
            epochs: 1,
            net: NetConfig::default(),
            skew_ms: BTreeMap::new(),
            silent: BTreeSet::new(),
            plan: Vec::new(),
            adversary: None,
            clients_of: BTreeMap::new(),
            max_events: 2_000_000,
            timing: Timing {
                dkg_attempt_ms: 20_000,
                ..Timing::new(START, 60_000, 600_000, 300_000, 60_000, 120_000)
            },
            // One packet a second over the 300 s window: 300 per member, whatever its clients.
            privacy: Privacy {
                packet_ms: 1_000,
                mix_delay_ms: 200,
                client_bucket: 16,
                ..Privacy::default()
            },
        }
    }
    pub fn faulty(&self) -> Option<MemberIndex> {
        self.adversary.as_ref().map(|(m, _)| *m)
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
    Plan(Plan),
    Scores(u64),
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

/// Why a run could not go on (distinct from a property violation, which [`check`] reports).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("seed {seed}: {reason}")]
    Failed { seed: u64, reason: String },
}

/// Something a member reported, for the checks and the summary.
#[derive(Clone, Debug)]
pub struct Noted {
    pub at: Time,
    pub member: MemberIndex,
    pub event: Event,
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
    net: Network,
    digest: Sha256,
    events: u64,
    /// Print every event, fault and published record (set `NETSIM_TRACE=1`).
    trace: bool,
    /// Scores per epoch per member (index 0 is member 1).
    pub scores: BTreeMap<u64, Vec<Vec<(String, u16)>>>,
    given: BTreeSet<(MemberIndex, u64)>,
    adversary: Option<(MemberIndex, Box<dyn Adversary + Send>)>,
    adv_rng: ChaCha20Rng,
    pub noted: Vec<Noted>,
    pub faults_seen: u64,
    /// Faults each member saw, by (member, culprit): the details of the first few.
    pub named: BTreeMap<(MemberIndex, MemberIndex), Vec<String>>,
    /// The member that first published each submission on gossip (its exit).
    pub first_publisher: BTreeMap<bankmesh_protocol::Hash, MemberIndex>,
    /// Packets and OPRF requests each member sent, by epoch window (the traffic an observer of
    /// that member sees).
    pub sent: BTreeMap<MemberIndex, SentCounts>,
}

/// What one member sent under its own identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentCounts {
    pub onion_packets: u64,
    pub oprf_requests: u64,
    pub oprf_elements: u64,
}

const SYNC_EVERY_MS: u64 = 2_000;
/// Fault details kept per (member, culprit): enough to check what a member was named for.
const NAMED_DETAILS_MAX: usize = 64;

impl Sim {
    /// Builds a consortium of `config.banks` members with seeded keys and scores.
    pub fn new(mut config: SimConfig) -> Result<Sim, SimError> {
        let seed = config.seed;
        let fail = |reason: String| SimError::Failed { seed, reason };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let secrets: Vec<MemberSecrets> = (0..config.banks)
            .map(|_| MemberSecrets::generate(&mut rng))
            .collect();
        let mut genesis = Genesis::new(
            "netsim",
            u16::try_from(config.threshold).map_err(|e| fail(e.to_string()))?,
            config.timing,
            secrets
                .iter()
                .enumerate()
                .map(|(i, s)| s.member_info(i as u16 + 1, &format!("bank-{}", i + 1), vec![]))
                .collect(),
        );
        genesis.privacy = config.privacy;
        let consortium = Arc::new(Consortium::new(genesis).map_err(|e| fail(e.to_string()))?);
        let mut scores = BTreeMap::new();
        for e in 1..=config.epochs {
            let mut s = plaintext_scores(&mut rng, config.banks, config.clients_per_bank);
            for m in &config.silent {
                if let Some(rows) = s.get_mut(usize::from(*m) - 1) {
                    rows.clear();
                }
            }
            for (m, most) in &config.clients_of {
                if let Some(rows) = s.get_mut(usize::from(*m) - 1) {
                    rows.truncate(*most);
                }
            }
            scores.insert(e, s);
        }
        let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
        let members: Vec<MemberIndex> = consortium.indices().collect();
        let net = Network::new(
            config.net.clone(),
            &members,
            ChaCha20Rng::seed_from_u64(seed ^ 0x6e65_7473_696d),
        );
        let adversary = config.adversary.take();
        let mut sim = Sim {
            now: Time(START - 1),
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: BTreeMap::new(),
            durable: BTreeMap::new(),
            consortium,
            _dir: dir,
            net,
            digest: Sha256::new(),
            events: 0,
            trace: std::env::var_os("NETSIM_TRACE").is_some(),
            scores,
            given: BTreeSet::new(),
            adversary,
            adv_rng: ChaCha20Rng::seed_from_u64(seed ^ 0x6164_7665_7273),
            noted: Vec::new(),
            faults_seen: 0,
            named: BTreeMap::new(),
            first_publisher: BTreeMap::new(),
            sent: BTreeMap::new(),
            config,
        };
        let late: BTreeSet<MemberIndex> = sim
            .config
            .plan
            .iter()
            .filter_map(|p| match p {
                Plan::StartLate { member, .. } => Some(*member),
                _ => None,
            })
            .collect();
        for (i, s) in secrets.into_iter().enumerate() {
            let me = i as u16 + 1;
            let path = sim._dir.path().join(format!("bank-{me}"));
            sim.durable.insert(
                me,
                Durable {
                    secrets: s.to_bytes(),
                    path,
                },
            );
            sim.schedule(me, Time(START + SYNC_EVERY_MS), Delivery::Sync);
            if !late.contains(&me) {
                sim.boot(me)?;
            }
        }
        for plan in sim.config.plan.clone() {
            let (member, at) = match plan {
                Plan::Crash { member, at_ms }
                | Plan::Restart { member, at_ms }
                | Plan::StartLate { member, at_ms } => (member, at_ms),
                Plan::CrashWhenSealed { .. } => continue,
            };
            sim.schedule(member, Time(START + at), Delivery::Plan(plan));
        }
        for e in 2..=sim.config.epochs {
            // Each later epoch's scores arrive during the epoch before it.
            let at = sim.consortium.epoch_start(e - 1).plus(30_000);
            for &m in &members {
                sim.schedule(m, at, Delivery::Scores(e));
            }
        }
        for &m in &members {
            sim.give_scores(m, 1)?;
        }
        Ok(sim)
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }
    pub fn consortium(&self) -> &Arc<Consortium> {
        &self.consortium
    }
    pub fn faulty(&self) -> Option<MemberIndex> {
        self.adversary.as_ref().map(|(m, _)| *m)
    }
    pub fn members(&self) -> Vec<MemberIndex> {
        self.durable.keys().copied().collect()
    }
    pub fn is_up(&self, me: MemberIndex) -> bool {
        self.nodes.contains_key(&me)
    }
    pub fn network(&self) -> &Network {
        &self.net
    }

    fn fail(&self, reason: impl Into<String>) -> SimError {
        SimError::Failed {
            seed: self.config.seed,
            reason: reason.into(),
        }
    }

    /// The member's own clock.
    fn node_time(&self, me: MemberIndex) -> Time {
        let skew = self.config.skew_ms.get(&me).copied().unwrap_or(0);
        Time(self.now.0.saturating_add_signed(skew))
    }
    fn sim_time(&self, me: MemberIndex, node: Time) -> Time {
        let skew = self.config.skew_ms.get(&me).copied().unwrap_or(0);
        Time(node.0.saturating_add_signed(-skew))
    }

    /// Starts member `me`'s process from its store (created empty the first time): the log is
    /// verified and replayed, local state read back, own records published again, and its
    /// chain head checked with the peers.
    fn boot(&mut self, me: MemberIndex) -> Result<(), SimError> {
        let d = self
            .durable
            .get(&me)
            .ok_or_else(|| self.fail(format!("no member {me}")))?;
        let secrets =
            MemberSecrets::from_bytes(&d.secrets).ok_or_else(|| self.fail("member key bytes"))?;
        let (store, _) = Store::open(&d.path).map_err(|e| self.fail(e.to_string()))?;
        let bank = Bank::new(Arc::clone(&self.consortium), me, secrets);
        let replica = Replica::open(bank, store).map_err(|e| self.fail(e.to_string()))?;
        let boots = self.events;
        let rng = ChaCha20Rng::seed_from_u64(
            self.config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(u64::from(me))
                .wrapping_add(boots.wrapping_mul(7_919)),
        );
        self.nodes.insert(
            me,
            Node {
                replica,
                rng,
                timer_at: None,
            },
        );
        let now = self.node_time(me);
        let seed = self.config.seed;
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

    /// Gives member `me` its scores for `epoch`, as its operator would, once.
    fn give_scores(&mut self, me: MemberIndex, epoch: u64) -> Result<(), SimError> {
        if self.given.contains(&(me, epoch)) || !self.nodes.contains_key(&me) {
            return Ok(());
        }
        let rows = self
            .scores
            .get(&epoch)
            .and_then(|s| s.get(usize::from(me) - 1))
            .cloned()
            .unwrap_or_default();
        self.given.insert((me, epoch));
        if rows.is_empty() {
            return Ok(());
        }
        let now = self.node_time(me);
        let seed = self.config.seed;
        let Some(node) = self.nodes.get_mut(&me) else {
            return Ok(());
        };
        let step = node
            .replica
            .submit(now, epoch, rows, &mut node.rng)
            .map_err(|e| SimError::Failed {
                seed,
                reason: e.to_string(),
            })?
            .map_err(|e| SimError::Failed {
                seed,
                reason: format!("member {me} refused its scores for epoch {epoch}: {e}"),
            })?;
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
            .filter(|Reverse(s)| {
                s.to != me
                    || matches!(
                        s.delivery,
                        Delivery::Sync | Delivery::Plan(_) | Delivery::Scores(_)
                    )
            })
            .collect();
        self.queue.extend(kept);
    }

    /// Restarts a crashed member from its store.
    pub fn restart(&mut self, me: MemberIndex) -> Result<(), SimError> {
        if self.nodes.contains_key(&me) {
            return Ok(());
        }
        self.boot(me)?;
        // Scores the operator gave before are in the local store; later ones are given now.
        let due: Vec<u64> = (1..=self.config.epochs)
            .filter(|&e| e == 1 || self.now >= self.consortium.epoch_start(e - 1).plus(30_000))
            .collect();
        for e in due {
            self.given.remove(&(me, e));
            if self.bank(me).is_some_and(|b| b.has_scores(e)) {
                self.given.insert((me, e));
            } else {
                self.give_scores(me, e)?;
            }
        }
        Ok(())
    }

    /// Copies member `me`'s store (while it is down) to `to`: a backup.
    pub fn copy_store(&self, me: MemberIndex, to: &std::path::Path) -> Result<(), SimError> {
        let d = self
            .durable
            .get(&me)
            .ok_or_else(|| self.fail(format!("no member {me}")))?;
        copy_dir(&d.path, to).map_err(|e| self.fail(format!("copying a store: {e}")))
    }

    /// Replaces member `me`'s store (while it is down) with the copy at `from`: the member is
    /// restored from a backup and has lost whatever it wrote since.
    pub fn restore_store(&self, me: MemberIndex, from: &std::path::Path) -> Result<(), SimError> {
        let d = self
            .durable
            .get(&me)
            .ok_or_else(|| self.fail(format!("no member {me}")))?;
        std::fs::remove_dir_all(&d.path).map_err(|e| self.fail(e.to_string()))?;
        copy_dir(from, &d.path).map_err(|e| self.fail(format!("restoring a store: {e}")))
    }

    /// Runs until `done` holds, failing after `max_events`.
    pub fn run_until(&mut self, done: impl Fn(&Sim) -> bool) -> Result<(), SimError> {
        while !done(self) {
            if self.events >= self.config.max_events {
                return Err(self.fail(format!(
                    "stuck after {} events at {}",
                    self.events, self.now
                )));
            }
            if !self.step()? {
                return Err(self.fail("event queue ran dry"));
            }
        }
        Ok(())
    }

    /// Member `me`'s status, if it is up.
    pub fn status(&self, me: MemberIndex) -> Option<bankmesh_protocol::Status> {
        self.nodes.get(&me).map(|n| n.replica.bank().status())
    }
    pub fn bank(&self, me: MemberIndex) -> Option<&Bank> {
        self.nodes.get(&me).map(|n| n.replica.bank())
    }
    pub fn store(&self, me: MemberIndex) -> Option<&Store> {
        self.nodes.get(&me).map(|n| n.replica.store())
    }

    /// Member `me`'s long-term secret keys, as its key file holds them (for the tests of what
    /// a thief of them could open).
    pub fn member_secrets(&self, me: MemberIndex) -> Option<MemberSecrets> {
        MemberSecrets::from_bytes(&self.durable.get(&me)?.secrets)
    }

    /// The records `author` wrote, in order, as member `me`'s log holds them.
    pub fn records_by(&self, me: MemberIndex, author: MemberIndex) -> Vec<Record> {
        let Some(store) = self.store(me) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(batch) = store.author_range(author, seq, 1_000) {
            if batch.is_empty() {
                break;
            }
            seq += batch.len() as u64;
            out.extend(
                batch
                    .iter()
                    .filter_map(|b| Record::from_trusted_bytes(b).ok()),
            );
        }
        out
    }

    /// The kinds of the records `author` wrote, in order, as member `me`'s log holds them.
    pub fn kinds_by(&self, me: MemberIndex, author: MemberIndex) -> Vec<&'static str> {
        self.records_by(me, author)
            .iter()
            .map(Record::kind)
            .collect()
    }

    /// Records in member `me`'s log, if it is up.
    pub fn log_len(&self, me: MemberIndex) -> Option<u64> {
        self.store(me).map(Store::len)
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

    fn send(
        &mut self,
        from: MemberIndex,
        to: MemberIndex,
        traffic: Traffic,
        extra: u64,
        delivery: Delivery,
    ) {
        let delays = self.net.deliveries(self.now.0, from, to, traffic);
        let n = delays.len();
        let mut delivery = Some(delivery);
        for (i, d) in delays.into_iter().enumerate() {
            let copy = if i + 1 == n {
                delivery.take()
            } else {
                delivery.as_ref().map(clone_delivery)
            };
            if let Some(copy) = copy {
                let at = self.now.plus(d + extra);
                self.schedule(to, at, copy);
            }
        }
    }

    /// Sends what a node's step asks for over the simulated network (through the adversary
    /// when the node is the faulty member).
    fn execute(&mut self, from: MemberIndex, step: Step) {
        if self.crash_when_sealed(from, &step) {
            return;
        }
        let members = self.members();
        let peers: Vec<MemberIndex> = members.iter().copied().filter(|&m| m != from).collect();
        for record in &step.publish {
            if matches!(record.payload(), Payload::Submission(_)) {
                self.first_publisher.entry(record.hash()).or_insert(from);
            }
            let sends = match self.with_adversary(from, |adv, ctx| adv.on_publish(ctx, record)) {
                Some(sends) => sends,
                None => {
                    let Some(bytes) = self
                        .nodes
                        .get(&from)
                        .map(|n| n.replica.bank().gossip_frame(record))
                    else {
                        continue;
                    };
                    peers
                        .iter()
                        .map(|&to| adversary::Send {
                            to,
                            bytes: bytes.clone(),
                            delay_ms: 0,
                            via: adversary::Via::Gossip,
                        })
                        .collect()
                }
            };
            self.send_all(from, sends);
        }
        if let Some(sends) = self.with_adversary(from, |adv, ctx| adv.on_tick(ctx)) {
            self.send_all(from, sends);
        }
        for (to, request) in step.requests {
            let counts = self.sent.entry(from).or_default();
            match &request {
                Request::Onion { .. } => counts.onion_packets += 1,
                Request::OprfEvaluate { blinded, .. } => {
                    counts.oprf_requests += 1;
                    counts.oprf_elements += blinded.len() as u64;
                }
                _ => {}
            }
            if self.trace {
                eprintln!(
                    "[{}] member {from}: asks {to} for {}",
                    self.now.0,
                    request.kind()
                );
            }
            self.send(
                from,
                to,
                Traffic::Direct,
                0,
                Delivery::Request { from, request },
            );
        }
        for event in step.events {
            if self.trace {
                eprintln!("[{}] member {from}: {event:?}", self.now.0);
            }
            self.noted.push(Noted {
                at: self.now,
                member: from,
                event,
            });
        }
        self.faults_seen += step.faults.len() as u64;
        for f in &step.faults {
            if let bankmesh_protocol::Culprit::Member(culprit) = f.culprit {
                let details = self.named.entry((from, culprit)).or_default();
                if details.len() < NAMED_DETAILS_MAX {
                    details.push(f.detail.clone());
                }
            }
        }
        if self.trace {
            for f in &step.faults {
                eprintln!("[{}] member {from}: fault {f}", self.now.0);
            }
        }
    }

    /// Runs `f` on the adversary if `from` is the faulty member (and up).
    fn with_adversary(
        &mut self,
        from: MemberIndex,
        f: impl FnOnce(&mut (dyn Adversary + Send), &mut adversary::Ctx<'_>) -> Vec<adversary::Send>,
    ) -> Option<Vec<adversary::Send>> {
        let peers: Vec<MemberIndex> = self.members().into_iter().filter(|&m| m != from).collect();
        let (faulty, adv) = self.adversary.as_mut()?;
        if *faulty != from {
            return None;
        }
        let node = self.nodes.get(&from)?;
        let secrets = MemberSecrets::from_bytes(&self.durable.get(&from)?.secrets)?;
        let mut ctx = adversary::Ctx {
            me: from,
            peers,
            now: self.now,
            consortium: &self.consortium,
            secrets: &secrets,
            store: node.replica.store(),
            bank: node.replica.bank(),
            rng: &mut self.adv_rng,
        };
        Some(f(adv.as_mut(), &mut ctx))
    }

    fn send_all(&mut self, from: MemberIndex, sends: Vec<adversary::Send>) {
        for s in sends {
            let (traffic, delivery) = match s.via {
                adversary::Via::Gossip => (
                    Traffic::Gossip,
                    Delivery::Gossip {
                        from,
                        bytes: s.bytes,
                    },
                ),
                adversary::Via::Onion => (
                    Traffic::Direct,
                    Delivery::Request {
                        from,
                        request: Request::Onion { packet: s.bytes },
                    },
                ),
            };
            self.send(from, s.to, traffic, s.delay_ms, delivery);
        }
    }

    /// Carries out a planned crash at the member's first seal; true if it crashed (what the
    /// step would have sent is lost; it is durable and goes out again after the restart).
    fn crash_when_sealed(&mut self, from: MemberIndex, step: &Step) -> bool {
        let sealed = step
            .events
            .iter()
            .any(|e| matches!(e, Event::Sealed { .. }));
        if !sealed {
            return false;
        }
        let plan = self
            .config
            .plan
            .iter()
            .position(|p| matches!(p, Plan::CrashWhenSealed { member, .. } if *member == from));
        let Some(pos) = plan else {
            return false;
        };
        let Plan::CrashWhenSealed { down_ms, .. } = self.config.plan.remove(pos) else {
            return false;
        };
        for event in &step.events {
            self.noted.push(Noted {
                at: self.now,
                member: from,
                event: event.clone(),
            });
        }
        self.crash(from);
        let back = Plan::Restart {
            member: from,
            at_ms: 0,
        };
        self.schedule(from, self.now.plus(down_ms), Delivery::Plan(back));
        true
    }

    /// Makes sure the node's next protocol timer is scheduled.
    fn rearm(&mut self, me: MemberIndex) {
        let Some(node) = self.nodes.get(&me) else {
            return;
        };
        let Some(at) = node.replica.poll_timeout() else {
            return;
        };
        let at = self.sim_time(me, at).max(self.now.plus(1));
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
        self.digest.update(ev.at.0.to_be_bytes());
        self.digest.update(ev.to.to_be_bytes());
        let to = ev.to;
        match ev.delivery {
            Delivery::Plan(plan) => {
                match plan {
                    Plan::Crash { member, .. } => self.crash(member),
                    Plan::Restart { member, .. } | Plan::StartLate { member, .. } => {
                        self.restart(member)?
                    }
                    Plan::CrashWhenSealed { .. } => {}
                }
                return Ok(true);
            }
            Delivery::Scores(epoch) => {
                self.give_scores(to, epoch)?;
                return Ok(true);
            }
            Delivery::Sync => {
                self.schedule(to, self.now.plus(SYNC_EVERY_MS), Delivery::Sync);
                let Some(node) = self.nodes.get_mut(&to) else {
                    return Ok(true);
                };
                if let Some((peer, request)) = node.replica.sync_request() {
                    self.send(
                        to,
                        peer,
                        Traffic::Direct,
                        0,
                        Delivery::Request { from: to, request },
                    );
                }
                return Ok(true);
            }
            _ => {}
        }
        let now = self.node_time(to);
        let seed = self.config.seed;
        let fail = |reason: String| SimError::Failed { seed, reason };
        if !self.nodes.contains_key(&to) {
            return Ok(true);
        }
        let step = match ev.delivery {
            Delivery::Gossip { from, bytes } => {
                self.digest.update(Sha256::digest(&bytes));
                let Some(node) = self.nodes.get_mut(&to) else {
                    return Ok(true);
                };
                let (_, step) = node
                    .replica
                    .ingest(now, vec![(Origin::Gossip { from }, bytes)], &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?;
                step
            }
            Delivery::Request { from, request } => {
                let asked = self.adversary_is(to).then(|| request.clone());
                let Some(node) = self.nodes.get_mut(&to) else {
                    return Ok(true);
                };
                let response = node
                    .replica
                    .handle_request(now, from, request, &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?;
                let response = match asked {
                    Some(request) => self.adversary_response(to, from, &request, response),
                    None => response,
                };
                self.send(
                    to,
                    from,
                    Traffic::Direct,
                    0,
                    Delivery::Response { from: to, response },
                );
                Step::default()
            }
            Delivery::Response { from, response } => {
                let Some(node) = self.nodes.get_mut(&to) else {
                    return Ok(true);
                };
                node.replica
                    .handle_response(now, from, response, &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?
            }
            Delivery::Timer => {
                let Some(node) = self.nodes.get_mut(&to) else {
                    return Ok(true);
                };
                // A timer that an earlier one replaced: the node's timer is another.
                if node.timer_at != Some(ev.at) {
                    return Ok(true);
                }
                node.timer_at = None;
                node.replica
                    .handle_timeout(now, &mut node.rng)
                    .map_err(|e| fail(e.to_string()))?
            }
            Delivery::Sync | Delivery::Plan(_) | Delivery::Scores(_) => Step::default(),
        };
        if self.trace {
            for r in &step.publish {
                eprintln!(
                    "[{}] member {to}: publishes {} {:?}",
                    self.now.0,
                    r.kind(),
                    r.chain_position().map(|(a, s, _)| (a, s))
                );
            }
        }
        self.digest
            .update((step.publish.len() as u64).to_be_bytes());
        self.execute(to, step);
        self.rearm(to);
        Ok(true)
    }

    /// The faulty member's answers go through its strategy too.
    fn adversary_response(
        &mut self,
        me: MemberIndex,
        to: MemberIndex,
        request: &Request,
        response: Response,
    ) -> Response {
        let Some((faulty, adv)) = self.adversary.as_mut() else {
            return response;
        };
        if *faulty != me {
            return response;
        }
        let (Some(node), Some(d)) = (self.nodes.get(&me), self.durable.get(&me)) else {
            return response;
        };
        let Some(secrets) = MemberSecrets::from_bytes(&d.secrets) else {
            return response;
        };
        let peers = self.durable.keys().copied().filter(|&m| m != me).collect();
        let mut ctx = adversary::Ctx {
            me,
            peers,
            now: self.now,
            consortium: &self.consortium,
            secrets: &secrets,
            store: node.replica.store(),
            bank: node.replica.bank(),
            rng: &mut self.adv_rng,
        };
        adv.on_response(&mut ctx, to, request, response)
    }

    /// Whether `member` is the faulty one.
    fn adversary_is(&self, member: MemberIndex) -> bool {
        self.faulty() == Some(member)
    }

    /// Whether every honest member that is up is done with every epoch.
    pub fn all_done(&self) -> bool {
        let faulty = self.faulty();
        self.durable
            .keys()
            .filter(|m| Some(**m) != faulty)
            .all(|m| {
                self.status(*m).is_some_and(|s| {
                    (1..=self.config.epochs).all(|e| {
                        s.epochs
                            .iter()
                            .any(|st| st.epoch == e && st.phase == Phase::Done)
                    })
                })
            })
    }

    /// Runs until every honest member is done with every epoch, or the last epoch's decryption
    /// window has long passed (the checks then judge what happened).
    pub fn run(&mut self) -> Result<(), SimError> {
        let end = self
            .consortium
            .decrypt_end(self.config.epochs)
            .plus(120_000);
        self.run_until(|s| s.all_done() || s.now >= end)?;
        // Records still in flight land (evidence of a fault found at the very end, say).
        let settled = self.now.plus(SETTLE_MS);
        while self.now < settled {
            if !self.step()? {
                break;
            }
        }
        Ok(())
    }

    /// Runs until every bank has its epoch-1 results, failing after `max_events`.
    pub fn run_epoch(&mut self) -> Result<(), SimError> {
        self.run_until(Sim::all_done)
    }

    pub fn results(&self, me: MemberIndex) -> Vec<ClientResult> {
        self.results_of(me, 1)
    }
    pub fn results_of(&self, me: MemberIndex, epoch: u64) -> Vec<ClientResult> {
        self.bank(me).map(|b| b.results(epoch)).unwrap_or_default()
    }

    /// Compares every bank's epoch-1 results with the plaintext truth over all submissions;
    /// describes the first mismatch. (Where submissions may be left out of the final set, use
    /// [`check::check`], which compares with the truth over the final set.)
    pub fn check_against_truth(&self) -> Result<usize, SimError> {
        let rows = self.scores.get(&1).cloned().unwrap_or_default();
        let mut truth: BTreeMap<&str, (Option<u64>, u32)> = BTreeMap::new();
        for bank in &rows {
            for (id, score) in bank {
                let e = truth.entry(id.as_str()).or_insert((Some(0), 0));
                e.0 = e.0.map(|sum| sum + u64::from(*score));
                e.1 += 1;
            }
        }
        let min_count = self.consortium.min_count();
        for t in truth.values_mut() {
            if t.1 < min_count {
                t.0 = None;
            }
        }
        let mut checked = 0;
        for (i, bank) in rows.iter().enumerate() {
            let me = i as u16 + 1;
            let results = self.results(me);
            for (id, _) in bank {
                let got = results
                    .iter()
                    .find(|r| &r.client_id == id)
                    .map(|r| (r.sum, r.count));
                if got != truth.get(id.as_str()).copied() {
                    return Err(self.fail(format!(
                        "bank {me} client {id}: got {got:?}, expected {:?}",
                        truth.get(id.as_str())
                    )));
                }
                checked += 1;
            }
            if results.len() != bank.len() {
                return Err(self.fail(format!(
                    "bank {me} has {} results for {} clients",
                    results.len(),
                    bank.len()
                )));
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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

fn clone_delivery(d: &Delivery) -> Delivery {
    match d {
        Delivery::Gossip { from, bytes } => Delivery::Gossip {
            from: *from,
            bytes: bytes.clone(),
        },
        Delivery::Request { from, request } => Delivery::Request {
            from: *from,
            request: request.clone(),
        },
        Delivery::Response { from, response } => Delivery::Response {
            from: *from,
            response: response.clone(),
        },
        Delivery::Timer => Delivery::Timer,
        Delivery::Sync => Delivery::Sync,
        Delivery::Plan(p) => Delivery::Plan(*p),
        Delivery::Scores(e) => Delivery::Scores(*e),
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
