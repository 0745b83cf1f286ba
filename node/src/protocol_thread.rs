//! The protocol thread. It owns the replica (check, persist, apply) and so runs every proof and
//! every verification, away from the swarm's task: handshakes, pings and gossip keep flowing
//! while the bank computes. The swarm's task ([`crate::peer`]) only moves bytes.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::messages::{Request, Response};
use bankmesh_protocol::record::kind_of;
use bankmesh_protocol::{Event, MemberIndex, Origin, Step, UncheckedRecord};
use bankmesh_store::replica::{Acceptance, Replica};
use libp2p::gossipsub::MessageId;
use libp2p::PeerId;
use rand_core::OsRng;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, Verdict};
use crate::peer::{instant, now, Command, EpochResults, NodeEvent, NodeStatus};

/// Most gossip messages checked and persisted as one durable batch.
pub const INGEST_BATCH: usize = 256;
/// How often held records and lost publications are retried.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// A gossip message waiting for its verdict.
pub struct Gossip {
    pub id: MessageId,
    pub source: PeerId,
    pub from: MemberIndex,
    pub data: Vec<u8>,
}

/// What the network side sees, for status.
#[derive(Clone, Debug, Default)]
pub struct NetView {
    pub peers: Vec<MemberIndex>,
    pub scores: Vec<(MemberIndex, f64)>,
    pub outbox: usize,
}

pub enum ToCore {
    Gossip(Vec<Gossip>),
    Request {
        from: MemberIndex,
        request: Request,
        channel: u64,
    },
    Response {
        from: MemberIndex,
        response: Response,
    },
    /// Time for anti-entropy and for the gauges.
    Sync,
    Command(Command, NetView),
}

pub enum FromCore {
    Verdicts(Vec<(MessageId, PeerId, Acceptance)>),
    /// Records to publish (already durable) and requests to send.
    Send {
        publish: Vec<Vec<u8>>,
        requests: Vec<(MemberIndex, Request)>,
    },
    Respond {
        channel: u64,
        response: Response,
    },
    /// The thread ended: cleanly, or on an error it cannot recover from.
    Stopped(Option<String>),
}

pub struct Core {
    replica: Replica,
    consortium: Arc<Consortium>,
    to_net: mpsc::Sender<FromCore>,
    events: mpsc::Sender<(MemberIndex, NodeEvent)>,
    metrics: Arc<Metrics>,
    dropped_events: u64,
}

impl Core {
    pub fn new(
        replica: Replica,
        consortium: Arc<Consortium>,
        to_net: mpsc::Sender<FromCore>,
        events: mpsc::Sender<(MemberIndex, NodeEvent)>,
        metrics: Arc<Metrics>,
    ) -> Core {
        Core {
            replica,
            consortium,
            to_net,
            events,
            metrics,
            dropped_events: 0,
        }
    }

    /// Runs until the network side hangs up or asks it to stop.
    pub fn run(mut self, inbox: Receiver<ToCore>) {
        let outcome = self.run_inner(&inbox);
        let error = outcome.err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            let me = self.replica.bank().me();
            let _ = self.events.blocking_send((me, NodeEvent::Fatal(e.clone())));
        }
        let _ = self.to_net.blocking_send(FromCore::Stopped(error));
    }

    fn run_inner(&mut self, inbox: &Receiver<ToCore>) -> Result<()> {
        // After a restart, take back what the local store says we were doing.
        let step = self.replica.resume(now(), &mut OsRng)?;
        self.execute(step)?;
        let mut next_tick = instant() + RETRY_EVERY;
        loop {
            // Wake for the protocol's next deadline, and at least at the retry pace.
            let due = self.replica.poll_timeout().map_or(RETRY_EVERY, |t| {
                Duration::from_millis(t.0.saturating_sub(now().0))
            });
            let deadline = next_tick.min(instant() + due);
            let wait = deadline.saturating_duration_since(instant());
            match inbox.recv_timeout(wait) {
                Ok(ToCore::Gossip(mut batch)) => {
                    // Take what else is waiting, so gossip is persisted in batches.
                    let mut other = None;
                    while batch.len() < INGEST_BATCH {
                        match inbox.try_recv() {
                            Ok(ToCore::Gossip(more)) => batch.extend(more),
                            Ok(input) => {
                                other = Some(input);
                                break;
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => return Ok(()),
                        }
                    }
                    self.ingest(batch)?;
                    if let Some(input) = other {
                        if !self.handle(input)? {
                            return Ok(());
                        }
                    }
                }
                Ok(input) => {
                    if !self.handle(input)? {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if instant() >= deadline {
                next_tick = instant() + RETRY_EVERY;
                let step = self.replica.handle_timeout(now(), &mut OsRng)?;
                self.execute(step)?;
            }
        }
    }

    /// Handles one input; `false` once asked to stop.
    fn handle(&mut self, input: ToCore) -> Result<bool> {
        match input {
            ToCore::Gossip(batch) => self.ingest(batch)?,
            ToCore::Request {
                from,
                request,
                channel,
            } => {
                let response = self
                    .replica
                    .handle_request(now(), from, request, &mut OsRng)?;
                self.send(FromCore::Respond { channel, response })?;
            }
            ToCore::Response { from, response } => {
                let step = self
                    .replica
                    .handle_response(now(), from, response, &mut OsRng)?;
                self.execute(step)?;
            }
            ToCore::Sync => {
                if let Some(request) = self.replica.sync_request() {
                    self.send(FromCore::Send {
                        publish: Vec::new(),
                        requests: vec![request],
                    })?;
                }
                self.update_gauges();
            }
            ToCore::Command(command, net) => return self.on_command(command, net),
        }
        Ok(true)
    }

    fn on_command(&mut self, command: Command, net: NetView) -> Result<bool> {
        match command {
            Command::Submit {
                epoch,
                scores,
                reply,
            } => match self.replica.submit(now(), epoch, scores, &mut OsRng)? {
                Ok(step) => {
                    self.execute(step)?;
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Status { reply } => {
                let _ = reply.send(NodeStatus {
                    protocol: self.replica.bank().status(),
                    peers: net.peers,
                    peer_scores: net.scores,
                    outbox: net.outbox,
                    pending: self.replica.pending_len(),
                    store_records: self.replica.store().len(),
                });
            }
            Command::Results { epoch, reply } => {
                let bank = self.replica.bank();
                let _ = reply.send(EpochResults {
                    rows: bank.results(epoch),
                    expired: bank.results_expired(epoch),
                });
            }
            Command::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    fn ingest(&mut self, batch: Vec<Gossip>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = instant();
        let mut ids = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for g in batch {
            let kind = UncheckedRecord::decode(bankmesh_protocol::gossip::record_part(&g.data))
                .map_or("malformed", |r| kind_of(&r.envelope().payload));
            ids.push((g.id, g.source, g.from, kind));
            items.push((Origin::Gossip { from: g.from }, g.data));
        }
        let (verdicts, step) = self.replica.ingest(now(), items, &mut OsRng)?;
        self.metrics
            .check_seconds
            .observe(started.elapsed().as_secs_f64());
        let mut told = Vec::with_capacity(ids.len());
        for ((id, source, from, kind), verdict) in ids.into_iter().zip(verdicts) {
            let counted = match verdict {
                Acceptance::Accept => Verdict::Accepted,
                Acceptance::Reject => Verdict::Rejected,
                Acceptance::Ignore => Verdict::Ignored,
            };
            self.metrics.record(kind, from, counted);
            told.push((id, source, verdict));
        }
        self.send(FromCore::Verdicts(told))?;
        self.execute(step)
    }

    fn send(&self, message: FromCore) -> Result<()> {
        self.to_net
            .blocking_send(message)
            .map_err(|_| anyhow::anyhow!("the network task stopped"))
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

    /// Hands the network side what a step sends. Its records are already durable (the
    /// replica persisted them).
    fn execute(&mut self, step: Step) -> Result<()> {
        if !step.publish.is_empty() || !step.requests.is_empty() {
            self.send(FromCore::Send {
                publish: step
                    .publish
                    .iter()
                    .map(|r| self.replica.bank().gossip_frame(r))
                    .collect(),
                requests: step.requests,
            })?;
        }
        for result in step.results {
            self.report(NodeEvent::Result(result));
        }
        for fault in step.faults {
            tracing::warn!(member = self.replica.bank().me(), %fault, "peer fault");
            let member = match fault.culprit {
                bankmesh_protocol::Culprit::Member(m) => m.to_string(),
                bankmesh_protocol::Culprit::Submission(_) => "anonymous".into(),
            };
            self.metrics
                .faults
                .get_or_create(&crate::metrics::FaultLabels {
                    member,
                    kind: format!("{:?}", fault.kind),
                })
                .inc();
            self.report(NodeEvent::Fault(fault));
        }
        for event in step.events {
            if let Event::Convicted { member, kind, .. } = &event {
                self.metrics
                    .convictions
                    .get_or_create(&crate::metrics::FaultLabels {
                        member: member.to_string(),
                        kind: kind.to_string(),
                    })
                    .inc();
            }
            self.observe_phase(&event);
            self.report(NodeEvent::Protocol(event));
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.queue("pending", self.replica.pending_len());
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
            Event::SetupDecided { epoch, .. } => ("setup", c.setup_start(*epoch)),
            Event::Sealed { epoch, .. } => ("seal", c.submit_end(*epoch)),
            Event::EpochDone { epoch, .. } => ("decrypt", c.seal_end(*epoch)),
            _ => return,
        };
        let seconds = now().0.saturating_sub(started.0) as f64 / 1000.0;
        self.metrics.phase(phase, seconds);
    }
}
