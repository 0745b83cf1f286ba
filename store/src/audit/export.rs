//! Writes a store's log as an audit bundle.

use std::io::Write;

use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::record::UncheckedRecord;

use super::{order_key, view, CheckpointLine, Index, Line, RecordLine, FORMAT};
use crate::{Store, StoreError};

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Certified epochs whose checkpoint the log cannot prove, and why.
    pub unproven: Vec<super::Unproven>,
    pub records: u64,
    pub evidence: u64,
    pub checkpoints: u64,
    pub lines: u64,
}

/// Records read from the store at a time.
const PAGE: usize = 4096;

/// Writes the bundle of `store`'s whole log to `out`. `genesis_toml` must be the text the
/// consortium was made from (its id is checked). Nothing secret is in the log, so nothing
/// secret is in the bundle: node-local entries (scores, one-time keys) are never read.
pub fn export(
    store: &Store,
    consortium: &Consortium,
    genesis_toml: &str,
    out: &mut impl Write,
) -> Result<ExportSummary, StoreError> {
    let genesis = bankmesh_protocol::genesis::Genesis::from_toml(genesis_toml)
        .map_err(|e| StoreError::Corrupt(format!("the genesis does not parse: {e}")))?;
    if genesis.id() != consortium.id {
        return Err(StoreError::Corrupt(
            "the genesis text is not the consortium's".into(),
        ));
    }
    let mut records = Vec::new();
    let mut position = 0;
    loop {
        let page = store.read_from(position, PAGE)?;
        let Some((last, _, _)) = page.last() else {
            break;
        };
        position = last + 1;
        for (pos, _, bytes) in page {
            records.push(decode(pos, &bytes)?);
        }
    }
    records.sort_by_cached_key(|r| order_key(r.envelope(), &r.hash()));
    let mut evidence = Vec::new();
    for (i, (_, bytes)) in store.evidence()?.into_iter().enumerate() {
        evidence.push(decode(i as u64, &bytes)?);
    }
    evidence.sort_by_key(UncheckedRecord::hash);
    // Votes and report parts kept as evidence count as members count them.
    let mut index = Index::default();
    for r in records.iter().chain(&evidence) {
        index.add(r.hash(), &r.envelope().payload);
    }
    // An epoch whose checkpoint this log cannot prove (a pinned report part not here yet) is
    // left out and said; the verifier finds the same.
    let (checkpoints, unproven) = index.checkpoints(consortium);

    let before_end = 2 + records.len() as u64 + evidence.len() as u64 + checkpoints.len() as u64;
    let mut write = |line: &Line| -> Result<(), StoreError> {
        let text = serde_json::to_string(line)
            .map_err(|e| StoreError::Corrupt(format!("encoding a bundle line: {e}")))?;
        writeln!(out, "{text}").map_err(|e| StoreError::Corrupt(format!("writing: {e}")))
    };
    write(&Line::Header {
        format: FORMAT.into(),
        consortium: hex::encode(consortium.id),
        records: records.len() as u64,
        evidence: evidence.len() as u64,
        checkpoints: checkpoints.len() as u64,
    })?;
    write(&Line::Genesis {
        toml: genesis_toml.to_string(),
    })?;
    for r in &records {
        write(&Line::Record(record_line(r)))?;
    }
    for r in &evidence {
        write(&Line::Evidence(record_line(r)))?;
    }
    for c in &checkpoints {
        write(&Line::Checkpoint(CheckpointLine::from(c)))?;
    }
    write(&Line::End { lines: before_end })?;
    out.flush()
        .map_err(|e| StoreError::Corrupt(format!("writing: {e}")))?;
    Ok(ExportSummary {
        unproven,
        records: records.len() as u64,
        evidence: evidence.len() as u64,
        checkpoints: checkpoints.len() as u64,
        lines: before_end + 1,
    })
}

fn decode(position: u64, bytes: &[u8]) -> Result<UncheckedRecord, StoreError> {
    UncheckedRecord::decode(bytes).map_err(|e| {
        StoreError::Corrupt(format!(
            "the record at position {position} does not decode: {e}"
        ))
    })
}

/// A record's line: its hash, bytes and view.
pub fn record_line(r: &UncheckedRecord) -> RecordLine {
    RecordLine {
        hash: hex::encode(r.hash()),
        bytes: hex::encode(r.bytes()),
        view: view(r.envelope()),
    }
}
