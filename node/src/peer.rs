//! The node's network task (STYLE 10: a thin driver). It moves gossip, direct messages and
//! commands between the swarm and the protocol thread ([`crate::protocol_thread`]), which checks,
//! persists and applies; this task never waits on cryptography, so handshakes, pings and
//! gossip keep flowing while the bank computes. All protocol decisions live in
//! `bankmesh-protocol`.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::{ClientResult, Event, Fault, MemberIndex, Status, Time};
use bankmesh_store::replica::{Acceptance, Replica};
use futures::{FutureExt, StreamExt};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::net::{topic, Behaviour, BehaviourEvent, Members};
use crate::protocol_thread::{Core, FromCore, Gossip, NetView, ToCore, INGEST_BATCH};
use crate::throttle::{Class, Throttle};

/// Most records waiting to be published while no peer is subscribed yet.
const OUTBOX_MAX: usize = 65_536;
/// Inputs waiting for the protocol thread; beyond this, gossip is left unvalidated (peers'
/// anti-entropy repairs it) and requests go unanswered (the requester retries).
const CORE_QUEUE: usize = 4096;
/// How often a node asks a peer for its chain heads (anti-entropy).
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// How often unpublished records are retried (lost peers are dialled again at the sync pace).
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// Redial backoff for an unreachable member: doubles from the first to the last.
const REDIAL_FIRST: Duration = Duration::from_secs(1);
const REDIAL_MAX: Duration = Duration::from_secs(30);
/// How long a connected member may show no gossip subscription before we reconnect to it.
const UNSUBSCRIBED_GRACE: Duration = Duration::from_secs(3);
/// Most inbound requests awaiting the protocol thread's answer.
const OPEN_CHANNELS_MAX: usize = 4096;

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
        reply: oneshot::Sender<EpochResults>,
    },
    Shutdown,
}

/// Our results of one epoch, or that they were erased at the end of their retention.
#[derive(Clone, Debug, Default)]
pub struct EpochResults {
    pub rows: Vec<ClientResult>,
    pub expired: bool,
}

/// The protocol's status and the node's own.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub protocol: Status,
    /// Members connected now.
    pub peers: Vec<MemberIndex>,
    /// Their gossipsub scores here (negative after invalid messages).
    pub peer_scores: Vec<(MemberIndex, f64)>,
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
    consortium: Arc<Consortium>,
    me: MemberIndex,
    members: Members,
    topic: IdentTopic,
    outbox: VecDeque<Vec<u8>>,
    pending_requests: HashMap<OutboundRequestId, MemberIndex>,
    /// Inbound requests waiting for the protocol thread's answer, with who asked.
    channels: HashMap<u64, (MemberIndex, ResponseChannel<Response>)>,
    throttle: Throttle,
    next_channel: u64,
    /// Per unreachable member: when to dial it next, and the wait after that.
    redial: HashMap<MemberIndex, (std::time::Instant, Duration)>,
    /// Connected members that gossipsub does not know to be subscribed, since when.
    unsubscribed: HashMap<MemberIndex, std::time::Instant>,
    metrics: Arc<Metrics>,
    to_core: SyncSender<ToCore>,
    from_core: mpsc::Receiver<FromCore>,
    /// The protocol thread, started by `run`.
    core: Option<(Core, std::sync::mpsc::Receiver<ToCore>)>,
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
        crate::net::enable_scoring(&mut swarm.behaviour_mut().gossipsub, &topic)?;
        let me = replica.bank().me();
        let (to_core, core_inbox) = sync_channel(CORE_QUEUE);
        let (core_tx, from_core) = mpsc::channel(CORE_QUEUE);
        let core = Core::new(
            replica,
            Arc::clone(&consortium),
            core_tx,
            events,
            Arc::clone(&metrics),
        );
        let throttle = Throttle::new(
            consortium.genesis.privacy.relay_rate,
            consortium.genesis.members.len(),
            OPEN_CHANNELS_MAX,
        );
        Ok(Peer {
            swarm,
            consortium,
            me,
            members,
            topic,
            outbox: VecDeque::new(),
            pending_requests: HashMap::new(),
            channels: HashMap::new(),
            throttle,
            next_channel: 0,
            redial: HashMap::new(),
            unsubscribed: HashMap::new(),
            metrics,
            to_core,
            from_core,
            core: Some((core, core_inbox)),
        })
    }

    /// Dials every other member that is not connected at its genesis addresses, with
    /// exponential backoff per member (reset once it is connected).
    fn dial_missing(&mut self) {
        let now = instant();
        for m in &self.consortium.genesis.members {
            let Some(peer) = self.members.peer(m.index) else {
                continue;
            };
            if m.index == self.me {
                continue;
            }
            if self.swarm.is_connected(&peer) {
                self.redial.remove(&m.index);
                continue;
            }
            let (due, wait) = self
                .redial
                .get(&m.index)
                .copied()
                .unwrap_or((now, REDIAL_FIRST));
            if now < due {
                continue;
            }
            self.redial
                .insert(m.index, (now + wait, (wait * 2).min(REDIAL_MAX)));
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

    /// A member that restarted can come back on a new connection before its peer has seen
    /// the old one close; gossipsub then never sends it the peer's subscription (it does so
    /// only for a peer's first connection), and our records reach that peer only by sync. A
    /// connected member that shows no subscription for a while is disconnected, so that both
    /// sides meet afresh when it is dialled again.
    fn reconnect_unsubscribed(&mut self) {
        let now = instant();
        let subscribed: Vec<libp2p::PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| !topics.is_empty())
            .map(|(p, _)| *p)
            .collect();
        let mut stale = Vec::new();
        for (m, peer) in self.members.all() {
            if m == self.me || !self.swarm.is_connected(&peer) || subscribed.contains(&peer) {
                self.unsubscribed.remove(&m);
                continue;
            }
            let since = *self.unsubscribed.entry(m).or_insert(now);
            if now.duration_since(since) >= UNSUBSCRIBED_GRACE {
                stale.push((m, peer));
            }
        }
        for (m, peer) in stale {
            tracing::warn!(
                member = self.me,
                peer = m,
                "no gossip subscription from a connected member: reconnecting"
            );
            self.unsubscribed.remove(&m);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Runs until shut down, or until the protocol thread stops on an error.
    pub async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let Some((core, inbox)) = self.core.take() else {
            return;
        };
        let Ok(thread) = std::thread::Builder::new()
            .name(format!("bankmesh-protocol-{}", self.me))
            .spawn(move || core.run(inbox))
        else {
            return;
        };
        self.dial_missing();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        let mut sync = tokio::time::interval(SYNC_EVERY);
        let mut redial = tokio::time::interval(REDIAL_FIRST);
        let mut stopping = false;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    let mut gossip = Vec::new();
                    self.on_swarm_event(event, &mut gossip);
                    // Drain what is already waiting, so gossip reaches the core in batches.
                    while gossip.len() < INGEST_BATCH {
                        match self.swarm.next().now_or_never() {
                            Some(Some(event)) => self.on_swarm_event(event, &mut gossip),
                            _ => break,
                        }
                    }
                    self.forward_gossip(gossip);
                }
                message = self.from_core.recv() => match message {
                    None | Some(FromCore::Stopped(_)) => break,
                    Some(message) => self.on_core(message),
                },
                command = commands.recv(), if !stopping => {
                    let command = command.unwrap_or(Command::Shutdown);
                    stopping = matches!(command, Command::Shutdown);
                    let view = NetView {
                        peers: self.connected(),
                        scores: self.scores(),
                        outbox: self.outbox.len(),
                    };
                    // A full queue drops the command; its caller sees the reply channel close.
                    let _ = self.to_core.try_send(ToCore::Command(command, view));
                }
                _ = retry.tick() => self.flush_outbox(),
                _ = redial.tick() => self.dial_missing(),
                _ = sync.tick() => {
                    self.reconnect_unsubscribed();
                    let _ = self.to_core.try_send(ToCore::Sync);
                    self.update_gauges();
                }
            }
        }
        // Let the protocol thread finish with its store before the node is reported stopped.
        drop(self.to_core);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    fn forward_gossip(&mut self, gossip: Vec<Gossip>) {
        if gossip.is_empty() {
            return;
        }
        if let Err(TrySendError::Full(ToCore::Gossip(gossip))) =
            self.to_core.try_send(ToCore::Gossip(gossip))
        {
            // Overloaded: not validated, so not forwarded; anti-entropy brings it back later.
            self.metrics.queue_dropped.inc_by(gossip.len() as u64);
            for g in gossip {
                let gs = &mut self.swarm.behaviour_mut().gossipsub;
                gs.report_message_validation_result(&g.id, &g.source, MessageAcceptance::Ignore);
            }
        }
    }

    fn on_core(&mut self, message: FromCore) {
        match message {
            FromCore::Verdicts(verdicts) => {
                for (id, source, verdict) in verdicts {
                    let acceptance = match verdict {
                        Acceptance::Accept => MessageAcceptance::Accept,
                        Acceptance::Reject => MessageAcceptance::Reject,
                        Acceptance::Ignore => MessageAcceptance::Ignore,
                    };
                    let gs = &mut self.swarm.behaviour_mut().gossipsub;
                    gs.report_message_validation_result(&id, &source, acceptance);
                }
            }
            FromCore::Send { publish, requests } => {
                for bytes in publish {
                    if self.outbox.len() >= OUTBOX_MAX {
                        self.outbox.pop_front();
                    }
                    self.outbox.push_back(bytes);
                }
                self.flush_outbox();
                for (to, request) in requests {
                    self.send_request(to, request);
                }
            }
            FromCore::Respond { channel, response } => {
                if let Some((from, ch)) = self.channels.remove(&channel) {
                    self.throttle.closed(from);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .direct
                        .send_response(ch, response);
                }
            }
            FromCore::Stopped(_) => {}
        }
    }

    fn connected(&self) -> Vec<MemberIndex> {
        self.members
            .all()
            .filter(|(_, p)| self.swarm.is_connected(p))
            .map(|(i, _)| i)
            .collect()
    }

    /// Each connected member's gossipsub score here.
    fn scores(&self) -> Vec<(MemberIndex, f64)> {
        let gs = &self.swarm.behaviour().gossipsub;
        self.members
            .all()
            .filter_map(|(i, p)| gs.peer_score(&p).map(|s| (i, s)))
            .collect()
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.peers_connected
            .set(i64::try_from(self.connected().len()).unwrap_or(0));
        m.queue("outbox", self.outbox.len());
        m.queue("requests", self.pending_requests.len());
        m.queue("inbound_requests", self.channels.len());
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>, gossip: &mut Vec<Gossip>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // The signed source must be a member; anything else is dropped unforwarded.
                match message.source.as_ref().and_then(|s| self.members.index(s)) {
                    Some(from) => gossip.push(Gossip {
                        id: message_id,
                        source: propagation_source,
                        from,
                        data: message.data,
                    }),
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
                    return;
                };
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        // Dropping the channel closes the stream: the requester sees the
                        // request fail and asks again later.
                        if !self.admit(from, &request) {
                            return;
                        }
                        let id = self.next_channel;
                        self.next_channel += 1;
                        let input = ToCore::Request {
                            from,
                            request,
                            channel: id,
                        };
                        if self.to_core.try_send(input).is_ok() {
                            self.channels.insert(id, (from, channel));
                        } else {
                            self.throttle.closed(from);
                        }
                    }
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        self.pending_requests.remove(&request_id);
                        let _ = self.to_core.try_send(ToCore::Response { from, response });
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(
                request_response::Event::OutboundFailure { request_id, .. },
            )) => {
                // Anti-entropy and the protocol's own retries repair what a lost request missed.
                self.pending_requests.remove(&request_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(
                request_response::Event::InboundFailure { .. },
            )) => {
                // The answer could not be sent (timeout, closed stream): forget its channel.
                let throttle = &mut self.throttle;
                self.channels.retain(|_, (from, ch)| {
                    let open = ch.is_open();
                    if !open {
                        throttle.closed(*from);
                    }
                    open
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => {
                self.flush_outbox();
            }
            _ => {}
        }
    }

    /// Whether a request of `from` goes to the protocol thread: within its member's rate for
    /// its class, and its member's share of open answers (see [`crate::throttle`]).
    fn admit(&mut self, from: MemberIndex, request: &Request) -> bool {
        let class = Class::of(request);
        let admitted = self.throttle.admit(from, class);
        if !admitted {
            self.metrics.throttled(from, class.name());
        }
        admitted
    }

    fn send_request(&mut self, to: MemberIndex, request: Request) {
        if let Some(peer) = self.members.peer(to) {
            if !self.swarm.is_connected(&peer) {
                return;
            }
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
                    tracing::error!(member = self.me, error = %e, "record not published");
                    self.outbox.pop_front();
                }
            }
        }
    }
}
