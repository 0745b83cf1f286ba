//! The node's event loop (STYLE 10: a thin driver). It feeds the replica with gossip messages,
//! direct messages, commands and time, and executes the steps it returns. All protocol
//! decisions live in `bankmesh-protocol`; check, persist and apply live in the replica.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::messages::Request;
use bankmesh_protocol::record::kind_of;
use bankmesh_protocol::UncheckedRecord;
use bankmesh_protocol::{ClientResult, Event, Fault, MemberIndex, Origin, Status, Step, Time};
use bankmesh_store::replica::{Acceptance, Replica};
use futures::{FutureExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use rand_core::OsRng;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Metrics, Verdict};
use crate::net::{topic, Behaviour, BehaviourEvent, Members};

/// Most gossip messages checked and persisted as one durable batch.
const INGEST_BATCH: usize = 256;
/// Most records waiting to be published while no peer is subscribed yet.
const OUTBOX_MAX: usize = 65_536;
/// How often a node asks a peer for its chain heads (anti-entropy).
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// How often unpublished records are retried (lost peers are dialled again at the sync pace).
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// What a node reports to whoever runs it.
#[derive(Debug)]
pub enum NodeEvent {
    Protocol(Event),
    Result(ClientResult),
    Fault(Fault),
    /// The node stopped on an error it cannot recover from.
    Fatal(String),
}

/// Commands from whoever runs the node.
pub enum Command {
    Submit {
        epoch: u64,
        scores: Vec<(String, u16)>,
        reply: oneshot::Sender<Result<(), bankmesh_protocol::Error>>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Results {
        epoch: u64,
        reply: oneshot::Sender<Vec<ClientResult>>,
    },
    Shutdown,
}

/// The protocol's status and the node's own.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub protocol: Status,
    /// Members connected now.
    pub peers: Vec<MemberIndex>,
    pub outbox: usize,
    pub pending: usize,
    pub store_records: u64,
}

/// Wall-clock time for the protocol. The node is the one place that reads the clock.
pub fn now() -> Time {
    let ms = wall_clock()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Time(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The wall clock (the node's commands read it here and nowhere else).
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// A monotonic instant, for measuring and waiting.
#[allow(clippy::disallowed_methods)]
pub fn instant() -> std::time::Instant {
    std::time::Instant::now()
}

pub struct Peer {
    swarm: Swarm<Behaviour>,
    replica: Replica,
    consortium: Arc<Consortium>,
    members: Members,
    topic: IdentTopic,
    outbox: VecDeque<Vec<u8>>,
    pending_requests: HashMap<OutboundRequestId, MemberIndex>,
    events: mpsc::Sender<(MemberIndex, NodeEvent)>,
    dropped_events: u64,
    metrics: Arc<Metrics>,
}

impl Peer {
    pub fn new(
        mut swarm: Swarm<Behaviour>,
        replica: Replica,
        consortium: Arc<Consortium>,
        events: mpsc::Sender<(MemberIndex, NodeEvent)>,
        metrics: Arc<Metrics>,
    ) -> Result<Peer> {
        let members = Members::new(&consortium)?;
        for (_, peer) in members.all() {
            swarm.behaviour_mut().allow.allow_peer(peer);
        }
        let topic = topic(&consortium.id);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| anyhow!("subscribe: {e}"))?;
        Ok(Peer {
            swarm,
            replica,
            consortium,
            members,
            topic,
            outbox: VecDeque::new(),
            pending_requests: HashMap::new(),
            events,
            dropped_events: 0,
            metrics,
        })
    }

    fn report(&mut self, event: NodeEvent) {
        // Bounded: a slow observer loses progress events, never protocol state.
        if self
            .events
            .try_send((self.replica.bank().me(), event))
            .is_err()
        {
            self.dropped_events += 1;
        }
    }

    /// Dials every other member at its genesis addresses.
    fn dial_missing(&mut self) {
        let me = self.replica.bank().me();
        for m in &self.consortium.genesis.members {
            let Some(peer) = self.members.peer(m.index) else {
                continue;
            };
            if m.index == me || self.swarm.is_connected(&peer) {
                continue;
            }
            for addr in &m.addrs {
                if let Ok(mut addr) = addr.parse::<Multiaddr>() {
                    if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                        addr.push(Protocol::P2p(peer));
                    }
                    let _ = self.swarm.dial(addr);
                }
            }
        }
    }

    /// Runs until shut down.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        if let Err(e) = self.run_inner(&mut commands).await {
            let me = self.replica.bank().me();
            let _ = self
                .events
                .send((me, NodeEvent::Fatal(format!("{e:#}"))))
                .await;
        }
    }

    async fn run_inner(&mut self, commands: &mut mpsc::Receiver<Command>) -> Result<()> {
        // After a restart, take back what the local store says we were doing.
        let step = self.replica.resume(now(), &mut OsRng)?;
        self.execute(step);
        self.dial_missing();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        let mut sync = tokio::time::interval(SYNC_EVERY);
        loop {
            let wake = self
                .replica
                .poll_timeout()
                .map(|t| t.0.saturating_sub(now().0))
                .unwrap_or(1000);
            let sleep = tokio::time::sleep(Duration::from_millis(wake.min(1000)));
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    let mut gossip = Vec::new();
                    self.on_swarm_event(event, &mut gossip)?;
                    // Drain what is already waiting, so gossip is persisted in batches.
                    while gossip.len() < INGEST_BATCH {
                        match self.swarm.next().now_or_never() {
                            Some(Some(event)) => self.on_swarm_event(event, &mut gossip)?,
                            _ => break,
                        }
                    }
                    self.ingest_gossip(gossip)?;
                }
                command = commands.recv() => match command {
                    None | Some(Command::Shutdown) => return Ok(()),
                    Some(command) => self.on_command(command)?,
                },
                _ = sleep => {
                    let step = self.replica.handle_timeout(now(), &mut OsRng)?;
                    self.execute(step);
                }
                _ = retry.tick() => {
                    self.flush_outbox();
                    let step = self.replica.handle_timeout(now(), &mut OsRng)?;
                    self.execute(step);
                }
                _ = sync.tick() => {
                    self.dial_missing();
                    self.anti_entropy();
                    self.update_gauges();
                }
            }
        }
    }

    fn on_command(&mut self, command: Command) -> Result<()> {
        match command {
            Command::Submit {
                epoch,
                scores,
                reply,
            } => match self.replica.submit(now(), epoch, scores, &mut OsRng)? {
                Ok(step) => {
                    self.execute(step);
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Status { reply } => {
                let _ = reply.send(self.node_status());
            }
            Command::Results { epoch, reply } => {
                let _ = reply.send(self.replica.bank().results(epoch));
            }
            Command::Shutdown => {}
        }
        Ok(())
    }

    fn connected(&self) -> Vec<MemberIndex> {
        self.members
            .all()
            .filter(|(_, p)| self.swarm.is_connected(p))
            .map(|(i, _)| i)
            .collect()
    }

    fn node_status(&self) -> NodeStatus {
        NodeStatus {
            protocol: self.replica.bank().status(),
            peers: self.connected(),
            outbox: self.outbox.len(),
            pending: self.replica.pending_len(),
            store_records: self.replica.store().len(),
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.peers_connected
            .set(i64::try_from(self.connected().len()).unwrap_or(0));
        m.queue("outbox", self.outbox.len());
        m.queue("pending", self.replica.pending_len());
        m.queue("requests", self.pending_requests.len());
        let store = self.replica.store();
        m.store_bytes
            .set(i64::try_from(store.size_on_disk()).unwrap_or(i64::MAX));
        m.store_records
            .set(i64::try_from(store.len()).unwrap_or(i64::MAX));
        m.current_epoch
            .set(i64::try_from(self.consortium.epoch_at(now())).unwrap_or(0));
    }

    /// Phase durations from the schedule's start of the phase to the event that ends it here.
    fn observe_phase(&self, event: &Event) {
        let c = &self.consortium;
        let (phase, started) = match event {
            Event::SetupDecided { .. } => ("setup", c.start()),
            Event::Sealed { epoch, .. } => ("seal", c.submit_end(*epoch)),
            Event::EpochDone { epoch, .. } => ("decrypt", c.seal_end(*epoch)),
            _ => return,
        };
        let seconds = now().0.saturating_sub(started.0) as f64 / 1000.0;
        self.metrics.phase(phase, seconds);
    }

    fn on_swarm_event(
        &mut self,
        event: SwarmEvent<crate::net::BehaviourEvent>,
        gossip: &mut Vec<(MessageId, PeerId, MemberIndex, Vec<u8>)>,
    ) -> Result<()> {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // The signed source must be a member; anything else is dropped unforwarded.
                match message.source.as_ref().and_then(|s| self.members.index(s)) {
                    Some(from) => gossip.push((message_id, propagation_source, from, message.data)),
                    None => {
                        let gs = &mut self.swarm.behaviour_mut().gossipsub;
                        gs.report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(request_response::Event::Message {
                peer,
                message,
                ..
            })) => {
                let Some(from) = self.members.index(&peer) else {
                    return Ok(());
                };
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let response =
                            self.replica
                                .handle_request(now(), from, request, &mut OsRng)?;
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .direct
                            .send_response(channel, response);
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        self.pending_requests.remove(&request_id);
                        let step =
                            self.replica
                                .handle_response(now(), from, response, &mut OsRng)?;
                        self.execute(step);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(
                request_response::Event::OutboundFailure { request_id, .. },
            )) => {
                // Anti-entropy and the protocol's own retries repair what a lost request missed.
                self.pending_requests.remove(&request_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => {
                self.flush_outbox();
            }
            _ => {}
        }
        Ok(())
    }

    fn ingest_gossip(
        &mut self,
        gossip: Vec<(MessageId, PeerId, MemberIndex, Vec<u8>)>,
    ) -> Result<()> {
        if gossip.is_empty() {
            return Ok(());
        }
        let started = instant();
        let mut ids = Vec::with_capacity(gossip.len());
        let mut items = Vec::with_capacity(gossip.len());
        for (id, source, from, data) in gossip {
            let kind = UncheckedRecord::decode(&data)
                .map_or("malformed", |r| kind_of(&r.envelope().payload));
            ids.push((id, source, from, kind));
            items.push((Origin::Gossip { from }, data));
        }
        let (verdicts, step) = self.replica.ingest(now(), items, &mut OsRng)?;
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        for ((id, source, from, kind), verdict) in ids.iter().zip(verdicts) {
            let (acceptance, counted) = match verdict {
                Acceptance::Accept => (MessageAcceptance::Accept, Verdict::Accepted),
                Acceptance::Reject => (MessageAcceptance::Reject, Verdict::Rejected),
                Acceptance::Ignore => (MessageAcceptance::Ignore, Verdict::Ignored),
            };
            self.metrics.record(kind, *from, counted);
            let gs = &mut self.swarm.behaviour_mut().gossipsub;
            gs.report_message_validation_result(id, source, acceptance);
        }
        self.execute(step);
        Ok(())
    }

    /// Sends what a step asks for. Its records are already durable (the replica persisted them).
    fn execute(&mut self, step: Step) {
        for record in step.publish {
            if self.outbox.len() >= OUTBOX_MAX {
                self.outbox.pop_front();
            }
            self.outbox.push_back(record.bytes().to_vec());
        }
        self.flush_outbox();
        for (to, request) in step.requests {
            self.send_request(to, request);
        }
        for result in step.results {
            self.report(NodeEvent::Result(result));
        }
        for fault in step.faults {
            tracing::warn!(member = self.replica.bank().me(), %fault, "peer fault");
            self.metrics.faults.inc();
            self.report(NodeEvent::Fault(fault));
        }
        for event in step.events {
            self.observe_phase(&event);
            self.report(NodeEvent::Protocol(event));
        }
    }

    fn send_request(&mut self, to: MemberIndex, request: Request) {
        if let Some(peer) = self.members.peer(to) {
            let id = self
                .swarm
                .behaviour_mut()
                .direct
                .send_request(&peer, request);
            self.pending_requests.insert(id, to);
        }
    }

    /// Publishes queued records in order; stops at the first that cannot go out yet.
    fn flush_outbox(&mut self) {
        while let Some(bytes) = self.outbox.front() {
            let topic = self.topic.clone();
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic, bytes.clone())
            {
                Ok(_) | Err(gossipsub::PublishError::Duplicate) => {
                    self.outbox.pop_front();
                }
                // Transient: nobody subscribed yet, or queues full. Try again later, in order.
                Err(
                    gossipsub::PublishError::NoPeersSubscribedToTopic
                    | gossipsub::PublishError::AllQueuesFull(_),
                ) => break,
                // Cannot ever be published: skip it (it is durable here; peers fetch it by sync).
                Err(e) => {
                    tracing::error!(member = self.replica.bank().me(), error = %e, "record not published");
                    self.outbox.pop_front();
                }
            }
        }
    }

    /// Anti-entropy: asks the next member for its heads, if connected.
    fn anti_entropy(&mut self) {
        if let Some((to, request)) = self.replica.sync_request() {
            if self
                .members
                .peer(to)
                .is_some_and(|p| self.swarm.is_connected(&p))
            {
                self.send_request(to, request);
            }
        }
    }
}
