//! The audit bundle (issue 9, `docs/audit.md`): the log as evidence a regulator checks offline.
//!
//! A bundle is JSON Lines. Its lines come in this order, and the verifier checks the order:
//!
//! 1. `header`: format, consortium id, and how many lines of each kind follow;
//! 2. `genesis`: the genesis TOML the consortium id is computed from;
//! 3. `record`: every record of the log: identified records by author then sequence number
//!    (each author's whole chain from 1), then submissions by epoch then hash;
//! 4. `evidence`: second records at a taken (author, sequence number), by hash;
//! 5. `checkpoint`: per sealed epoch, ascending: its certificate, final set and root, and the
//!    checkpoint log's size and root after it;
//! 6. `end`: the number of lines before it, so a cut bundle fails.
//!
//! Every record line holds the canonical bytes (hex), their SHA-256, and a decoded view; the
//! view is derived from the bytes alone and checked field by field against them.

mod checkpoint;
mod export;
mod keys;
mod verify;

pub use checkpoint::{Checkpoint, Index, Unproven};
pub use export::{export, record_line, ExportSummary};
pub use keys::KeyIndex;
pub use verify::{extends, verify, Failure, Verified};

use bankmesh_protocol::record::{self, Envelope, Hash, Payload};
use serde::{Deserialize, Serialize};

/// The format this code writes and reads.
pub const FORMAT: &str = "bankmesh-audit/1";

/// One line of a bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Line {
    Header {
        format: String,
        consortium: String,
        records: u64,
        evidence: u64,
        checkpoints: u64,
    },
    Genesis {
        toml: String,
    },
    Record(RecordLine),
    Evidence(RecordLine),
    Checkpoint(CheckpointLine),
    End {
        lines: u64,
    },
}

/// A record as the bundle carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLine {
    /// SHA-256 of `bytes` (hex).
    pub hash: String,
    /// The canonical encoding (hex).
    pub bytes: String,
    /// What the bytes say, for reading with jq: see [`view`].
    pub view: serde_json::Value,
}

/// A checkpoint as the bundle carries it (hashes in hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLine {
    pub epoch: u64,
    pub round: u32,
    pub value: String,
    pub precommits: Vec<String>,
    pub root: String,
    pub submissions: u64,
    pub excluded: Vec<String>,
    pub log_size: u64,
    pub log_root: String,
}

impl From<&Checkpoint> for CheckpointLine {
    fn from(c: &Checkpoint) -> Self {
        CheckpointLine {
            epoch: c.epoch,
            round: c.round,
            value: hex::encode(c.value),
            precommits: c.precommits.iter().map(hex::encode).collect(),
            root: hex::encode(c.root),
            submissions: c.submissions,
            excluded: c.excluded.iter().map(hex::encode).collect(),
            log_size: c.log_size,
            log_root: hex::encode(c.log_root),
        }
    }
}

/// The decoded view of a record: its kind, epoch, author and sequence number (identified
/// records), and the whole envelope as serde renders it (byte strings and points as arrays of
/// numbers).
pub fn view(envelope: &Envelope) -> serde_json::Value {
    let (author, seq) = match &envelope.payload {
        Payload::Identified(i) => (Some(i.author), Some(i.seq)),
        Payload::Submission(_) => (None, None),
    };
    serde_json::json!({
        "kind": record::kind_of(&envelope.payload),
        "epoch": record::epoch_of(&envelope.payload),
        "author": author,
        "seq": seq,
        "envelope": envelope,
    })
}

/// Where a record goes in a bundle: identified records by (author, seq), then submissions by
/// (epoch, hash).
pub fn order_key(envelope: &Envelope, hash: &Hash) -> (u8, u64, u64, Hash) {
    match &envelope.payload {
        Payload::Identified(i) => (0, u64::from(i.author), i.seq, *hash),
        Payload::Submission(s) => (1, s.epoch, 0, *hash),
    }
}
