//! Prometheus metrics of a node (prometheus-client), served by the admin API at `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Verdict {
    Accepted,
    Rejected,
    Ignored,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub kind: String,
    /// The member index of the peer it came from.
    pub peer: String,
    pub verdict: Verdict,
}

/// A member at fault, and what for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub member: String,
    pub kind: String,
}

/// A member's requests dropped by class (see [`crate::throttle`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThrottleLabels {
    pub member: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub records: Family<RecordLabels, Counter>,
    /// Faults seen here, by the member (or "anonymous" poster) they name.
    pub faults: Family<FaultLabels, Counter>,
    /// Faults the log proves, by member: fault records and judged DKG complaints.
    pub convictions: Family<FaultLabels, Counter>,
    /// Requests dropped because their member was over its rate or its share of open answers.
    pub throttled: Family<ThrottleLabels, Counter>,
    pub phase_seconds: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    pub check_seconds: Histogram,
    pub peers_connected: Gauge,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub queue_dropped: Counter,
    pub store_bytes: Gauge,
    pub store_records: Gauge,
    pub current_epoch: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bankmesh");
        let records = Family::<RecordLabels, Counter>::default();
        registry.register(
            "records",
            "Records received from peers, by kind, peer and verdict",
            records.clone(),
        );
        let faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "faults",
            "Faults found in peers' records and answers, by culprit and kind",
            faults.clone(),
        );
        let convictions = Family::<FaultLabels, Counter>::default();
        registry.register(
            "convictions",
            "Faults the log proves, by member and kind",
            convictions.clone(),
        );
        let throttled = Family::<ThrottleLabels, Counter>::default();
        registry.register(
            "throttled",
            "Direct requests dropped because their member was over its rate, by member and class",
            throttled.clone(),
        );
        let phase_seconds =
            Family::<PhaseLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                seconds_buckets,
            );
        registry.register(
            "phase_seconds",
            "Time from a phase's scheduled start to its end here (setup, seal, decrypt)",
            phase_seconds.clone(),
        );
        let check_seconds = seconds_buckets();
        registry.register(
            "check_batch_seconds",
            "Time to check, store and apply one batch of received records",
            check_seconds.clone(),
        );
        let peers_connected = Gauge::default();
        registry.register(
            "peers_connected",
            "Members connected now",
            peers_connected.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Items waiting in the node's queues",
            queue_depth.clone(),
        );
        let queue_dropped = Counter::default();
        registry.register(
            "queue_dropped",
            "Messages left unprocessed because the protocol thread's queue was full",
            queue_dropped.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "Size of the store on disk",
            store_bytes.clone(),
        );
        let store_records = Gauge::default();
        registry.register(
            "store_records",
            "Records in the replicated log",
            store_records.clone(),
        );
        let current_epoch = Gauge::default();
        registry.register(
            "current_epoch",
            "The epoch under way by the schedule",
            current_epoch.clone(),
        );
        Metrics {
            registry,
            records,
            faults,
            convictions,
            throttled,
            phase_seconds,
            check_seconds,
            peers_connected,
            queue_depth,
            queue_dropped,
            store_bytes,
            store_records,
            current_epoch,
        }
    }

    pub fn record(&self, kind: &str, peer: u16, verdict: Verdict) {
        self.records
            .get_or_create(&RecordLabels {
                kind: kind.to_string(),
                peer: peer.to_string(),
                verdict,
            })
            .inc();
    }

    pub fn throttled(&self, member: u16, class: &str) {
        self.throttled
            .get_or_create(&ThrottleLabels {
                member: member.to_string(),
                class: class.to_string(),
            })
            .inc();
    }

    pub fn queue(&self, queue: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&QueueLabels {
                queue: queue.to_string(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn phase(&self, phase: &str, seconds: f64) {
        self.phase_seconds
            .get_or_create(&PhaseLabels {
                phase: phase.to_string(),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_what_was_counted() {
        let m = Metrics::new();
        m.record("submission", 3, Verdict::Rejected);
        m.queue("outbox", 7);
        m.phase("seal", 1.5);
        let text = m.encode();
        assert!(text.contains(
            "bankmesh_records_total{kind=\"submission\",peer=\"3\",verdict=\"Rejected\"} 1"
        ));
        assert!(text.contains("bankmesh_queue_depth{queue=\"outbox\"} 7"));
        assert!(text.contains("bankmesh_phase_seconds_count{phase=\"seal\"} 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
