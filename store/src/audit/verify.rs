//! Checks an audit bundle offline, with the genesis as the only trusted input: no key, no
//! score, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;

use bankmesh_protocol::evidence::{self, Judgement};
use bankmesh_protocol::genesis::{Consortium, Genesis};
use bankmesh_protocol::record::{Body, Hash, Payload, UncheckedRecord};
use bankmesh_protocol::MemberIndex;
use rayon::prelude::*;

use bankmesh_protocol::epoch::decrypt;
use bankmesh_protocol::epoch::submit::verify_submission;
use bankmesh_protocol::epoch::values::FinalSet;
use bankmesh_protocol::setup::SetupKeys;

use super::{order_key, view, CheckpointLine, Index, KeyIndex, Line, RecordLine, FORMAT};

/// One thing in the bundle that does not hold: where, what, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// 1-based line number (0: the bundle as a whole).
    pub line: u64,
    pub hash: Option<String>,
    pub kind: Option<String>,
    pub why: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(kind) = &self.kind {
            write!(f, " ({kind}")?;
            if let Some(hash) = &self.hash {
                write!(f, " {}", hash.get(..16).unwrap_or(hash))?;
            }
            write!(f, ")")?;
        }
        write!(f, ": {}", self.why)
    }
}

/// What one epoch holds, for `bankmesh audit show`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EpochSummary {
    pub authors: BTreeSet<MemberIndex>,
    pub kinds: BTreeMap<String, u64>,
    pub submissions: u64,
    /// From the checkpoint: sealed submissions, left out, and submissions per tag (hex).
    pub sealed: Option<u64>,
    pub excluded: u64,
    pub tags: BTreeMap<String, u32>,
    /// Fault records: (culprit, kind) each.
    pub faults: Vec<(MemberIndex, String)>,
}

/// What a verification found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Verified {
    pub records: u64,
    pub evidence: u64,
    pub checkpoints: u64,
    pub epochs: BTreeMap<u64, EpochSummary>,
    pub failures: Vec<Failure>,
    /// Records the log cannot judge, which members keep unjudged too (decryption shares and
    /// their fault evidence for an epoch whose seal never completed): reported, not failures.
    pub unjudged: Vec<Failure>,
}

impl Verified {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A record line as read: where it is, and what it decoded to.
struct Read {
    line: u64,
    hash: Hash,
    record: UncheckedRecord,
}

/// Checks the bundle read from `input` against `consortium` (the genesis the auditor holds).
/// `progress(done, total)` is called as records are checked. Every failure is collected; the
/// bundle holds only if there is none.
pub fn verify(
    input: impl BufRead,
    consortium: &Consortium,
    progress: impl Fn(u64, u64) + Sync,
) -> Verified {
    let mut v = Verified::default();
    let mut fail = |line: u64, hash: Option<String>, kind: Option<String>, why: String| {
        v.failures.push(Failure {
            line,
            hash,
            kind,
            why,
        })
    };

    // 1. Parse every line (each of bounded length) and check the sections' order.
    let mut lines: Vec<(u64, Line)> = Vec::new();
    let mut input = input;
    let mut n = 0u64;
    loop {
        n += 1;
        let text = match read_line(&mut input) {
            Ok(None) => break,
            Ok(Some(Ok(text))) => text,
            Ok(Some(Err(why))) => {
                fail(n, None, None, why);
                continue;
            }
            Err(e) => {
                fail(n, None, None, format!("unreadable: {e}"));
                break;
            }
        };
        match serde_json::from_str::<Line>(&text) {
            Ok(line) => lines.push((n, line)),
            Err(e) => fail(n, None, None, format!("not a bundle line: {e}")),
        }
    }
    let rank = |l: &Line| match l {
        Line::Header { .. } => 0,
        Line::Genesis { .. } => 1,
        Line::Record(_) => 2,
        Line::Evidence(_) => 3,
        Line::Checkpoint(_) => 4,
        Line::End { .. } => 5,
    };
    let mut last_rank = None;
    for (n, line) in &lines {
        let r = rank(line);
        let repeatable = matches!(r, 2..=4);
        if last_rank.is_some_and(|l| r < l || (r == l && !repeatable)) {
            fail(*n, None, None, "line out of order".into());
        }
        last_rank = Some(r);
    }

    // 2. Header, genesis, end.
    let mut records = Vec::new();
    let mut evidence_lines = Vec::new();
    let mut checkpoint_lines = Vec::new();
    let mut header = None;
    let (mut genesis_seen, mut end_seen) = (false, false);
    let total_lines = lines.len() as u64;
    for (n, line) in lines {
        match line {
            Line::Header {
                format,
                consortium: id,
                records,
                evidence,
                checkpoints,
            } => {
                if format != FORMAT {
                    fail(n, None, None, format!("format {format:?}, not {FORMAT:?}"));
                }
                if id != hex::encode(consortium.id) {
                    fail(n, None, None, "the bundle is of another consortium".into());
                }
                header = Some((n, records, evidence, checkpoints));
            }
            Line::Genesis { toml } => {
                genesis_seen = true;
                match Genesis::from_toml(&toml) {
                    Ok(g) if g.id() == consortium.id => {}
                    Ok(_) => fail(
                        n,
                        None,
                        None,
                        "the bundle's genesis is not the one given".into(),
                    ),
                    Err(e) => fail(n, None, None, format!("the bundle's genesis: {e}")),
                }
            }
            Line::Record(r) => records.push((n, r)),
            Line::Evidence(r) => evidence_lines.push((n, r)),
            Line::Checkpoint(c) => checkpoint_lines.push((n, c)),
            Line::End { lines: count } => {
                end_seen = true;
                if count.checked_add(1) != Some(total_lines) || count.checked_add(1) != Some(n) {
                    fail(
                        n,
                        None,
                        None,
                        format!("the end line counts {count} lines before it"),
                    );
                }
            }
        }
    }
    if !genesis_seen {
        fail(0, None, None, "no genesis line".into());
    }
    if !end_seen {
        fail(0, None, None, "no end line: the bundle is cut short".into());
    }
    match header {
        Some((n, r, e, c)) => {
            let counted = (
                records.len() as u64,
                evidence_lines.len() as u64,
                checkpoint_lines.len() as u64,
            );
            if (r, e, c) != counted {
                fail(
                    n,
                    None,
                    None,
                    format!("the header counts {r} records, {e} evidence, {c} checkpoints; the bundle has {counted:?}"),
                );
            }
        }
        None => fail(0, None, None, "no header line".into()),
    }

    // 3. Every record on its own, on every core: bytes, hash, encoding, signature, view.
    let total = records.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let checked: Vec<Result<Read, Failure>> = records
        .par_iter()
        .map(|(n, line)| {
            let r = check_line(consortium, *n, line);
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if d.is_multiple_of(1024) || d == total {
                progress(d, total);
            }
            r
        })
        .collect();
    let mut read = Vec::new();
    for c in checked {
        match c {
            Ok(r) => read.push(r),
            Err(f) => v.failures.push(f),
        }
    }
    v.records = read.len() as u64;

    // 4. Order, chains, summaries.
    let mut previous: Option<(u8, u64, u64, Hash)> = None;
    let mut chains: BTreeMap<MemberIndex, (u64, Hash)> = BTreeMap::new();
    let mut at: BTreeMap<(MemberIndex, u64), Hash> = BTreeMap::new();
    for r in &read {
        let key = order_key(r.record.envelope(), &r.hash);
        if previous.is_some_and(|p| p >= key) {
            v.failures.push(at_record(
                r.line,
                &r.record,
                "record out of order, or repeated".into(),
            ));
        }
        previous = Some(key);
        if let Payload::Identified(i) = &r.record.envelope().payload {
            let (seq, prev) = chains.get(&i.author).copied().unwrap_or((0, [0; 32]));
            if Some(i.seq) != seq.checked_add(1) {
                v.failures.push(at_record(
                    r.line,
                    &r.record,
                    format!("member {}'s chain jumps from {seq} to {}", i.author, i.seq),
                ));
            } else if i.prev != prev {
                v.failures.push(at_record(
                    r.line,
                    &r.record,
                    format!("does not chain to member {}'s record {seq}", i.author),
                ));
            }
            chains.insert(i.author, (i.seq, r.hash));
            at.insert((i.author, i.seq), r.hash);
        }
        summarize(&mut v.epochs, &r.record);
    }

    // 5. Evidence: a second record, signed, where the chain holds another, or continuing such
    //    a fork (its `prev` is the record before it on the fork: a member keeps what follows
    //    the other side of a fork as evidence too).
    let mut previous = None;
    let mut evidence_read = Vec::new();
    for (n, line) in &evidence_lines {
        match check_line(consortium, *n, line) {
            Err(f) => v.failures.push(f),
            Ok(r) => {
                if previous.is_some_and(|p| p >= r.hash) {
                    v.failures.push(at_record(
                        r.line,
                        &r.record,
                        "evidence out of order, or repeated".into(),
                    ));
                }
                previous = Some(r.hash);
                evidence_read.push(r);
            }
        }
    }
    let mut forks: BTreeSet<(MemberIndex, u64, Hash)> = BTreeSet::new();
    for r in &evidence_read {
        if let Some((a, seq, _)) = r.record.claimed_chain() {
            forks.insert((a, seq, r.hash));
        }
    }
    for r in &evidence_read {
        let placed = r.record.claimed_chain().is_some_and(|(a, seq, prev)| {
            let beside = at.get(&(a, seq)).is_some_and(|h| *h != r.hash);
            let before = seq.saturating_sub(1);
            let follows = at.get(&(a, before)) == Some(&prev) || forks.contains(&(a, before, prev));
            beside || (follows && at.get(&(a, seq)) != Some(&r.hash))
        });
        if !placed {
            v.failures.push(at_record(
                r.line,
                &r.record,
                "neither beside its author's record at its sequence number nor continuing a fork"
                    .into(),
            ));
        }
        v.evidence += 1;
    }

    // 6. Rules of one record that need no epoch state: report parts (bounded, strictly
    //    ascending).
    for r in &read {
        let Payload::Identified(i) = &r.record.envelope().payload else {
            continue;
        };
        let broken = match &i.body {
            Body::Report { part, hashes, .. } => {
                bankmesh_protocol::epoch::seal::check_report(consortium, *part, hashes).err()
            }
            _ => None,
        };
        if let Some(why) = broken {
            v.failures.push(at_record(r.line, &r.record, why));
        }
    }

    // 7. Checkpoints: derived again from the records, and compared line by line.
    // Votes and report parts kept as evidence count as members count them.
    let mut index = Index::default();
    for r in read.iter().chain(&evidence_read) {
        index.add(r.hash, &r.record.envelope().payload);
    }
    let mut sets = BTreeMap::new();
    let (sealed, unproven) = index.sealed(consortium);
    for u in unproven {
        let f = Failure {
            line: 0,
            hash: None,
            kind: Some("checkpoint".into()),
            why: u.why,
        };
        // A log that lacks a record (its node was catching up) proves less, not something
        // wrong: that epoch is noted, and has no checkpoint line.
        if u.wrong {
            v.failures.push(f);
        } else {
            v.unjudged.push(f);
        }
    }
    let mut derived = Vec::new();
    for (checkpoint, set) in sealed {
        sets.insert(checkpoint.epoch, set);
        derived.push(checkpoint);
    }
    let mut given = checkpoint_lines.iter();
    for c in &derived {
        let expected = CheckpointLine::from(c);
        match given.next() {
            Some((_, line)) if *line == expected => {}
            Some((n, line)) => v.failures.push(Failure {
                line: *n,
                hash: None,
                kind: Some("checkpoint".into()),
                why: format!(
                    "epoch {}: not what the log proves ({})",
                    line.epoch,
                    differing(line, &expected)
                ),
            }),
            None => v.failures.push(Failure {
                line: 0,
                hash: None,
                kind: Some("checkpoint".into()),
                why: format!("epoch {}'s checkpoint is missing", c.epoch),
            }),
        }
        let e = v.epochs.entry(c.epoch).or_default();
        e.sealed = Some(c.submissions);
        e.excluded = c.excluded.len() as u64;
        e.tags = c.tags.iter().map(|(t, n)| (hex::encode(t), *n)).collect();
    }
    for (n, line) in given {
        v.failures.push(Failure {
            line: *n,
            hash: None,
            kind: Some("checkpoint".into()),
            why: format!("epoch {}: no certificate in the log", line.epoch),
        });
    }
    v.checkpoints = derived.len() as u64;

    // 8. Every submission's proofs (validity, holder, ring) under its epoch's keys, derived
    //    from the log, on every core.
    let mut keys = KeyIndex::default();
    for r in read.iter().chain(&evidence_read) {
        keys.add(r.hash, &r.record.envelope().payload);
    }
    let (keys, wrong) = keys.keys(consortium);
    for why in wrong {
        v.failures.push(Failure {
            line: 0,
            hash: None,
            kind: Some("setup".into()),
            why,
        });
    }
    let judged: Vec<(Proofs, Failure)> = read
        .par_iter()
        .filter_map(|r| {
            let (proofs, why) = proofs_fail(consortium, &keys, &sets, &r.record)?;
            Some((proofs, at_record(r.line, &r.record, why)))
        })
        .collect();
    for (proofs, f) in judged {
        match proofs {
            Proofs::Fail => v.failures.push(f),
            Proofs::Unjudged => v.unjudged.push(f),
        }
    }
    v
}

/// Why a record's proofs fail under its epoch's keys and final set, if they do: a
/// submission's validity, holder and ring proofs; a decryption shares record's root, bounds and
/// every key-switch proof against its author's verifying share; a fault record's evidence,
/// judged as members judge it.
fn proofs_fail(
    c: &Consortium,
    keys: &BTreeMap<u64, SetupKeys>,
    sets: &BTreeMap<u64, FinalSet>,
    record: &UncheckedRecord,
) -> Option<(Proofs, String)> {
    proofs_why(c, keys, sets, record).map(|why| {
        // Members keep shares of an epoch that never sealed unchecked (its deadline passed),
        // and evidence about them as unverifiable: so does the auditor.
        if why.ends_with(UNSEALED) {
            (Proofs::Unjudged, why)
        } else {
            (Proofs::Fail, why)
        }
    })
}

/// How a record's proofs came out, where they did not hold.
enum Proofs {
    Fail,
    Unjudged,
}

const UNSEALED: &str = "is not sealed in the log";

fn proofs_why(
    c: &Consortium,
    keys: &BTreeMap<u64, SetupKeys>,
    sets: &BTreeMap<u64, FinalSet>,
    record: &UncheckedRecord,
) -> Option<String> {
    let no_keys = |epoch| format!("no setup of epoch {epoch} is decided in the log");
    match &record.envelope().payload {
        Payload::Submission(s) => match keys.get(&s.epoch) {
            None => Some(no_keys(s.epoch)),
            Some(k) => verify_submission(c, k, s).err().map(|e| e.to_string()),
        },
        Payload::Identified(i) => {
            if let Body::Fault { epoch, evidence } = &i.body {
                let (k, set) = (keys.get(epoch), sets.get(epoch));
                return match evidence::judge(c, *epoch, evidence, k, set) {
                    Judgement::Proven(_) => None,
                    Judgement::False(why) => Some(format!("false accusation: {why}")),
                    Judgement::NeedsKeys => Some(no_keys(*epoch)),
                    Judgement::NeedsFinalSet(_) => Some(format!("epoch {epoch} {UNSEALED}")),
                };
            }
            let Body::DecryptionShares {
                epoch,
                root,
                shares,
            } = &i.body
            else {
                return None;
            };
            let Some(k) = keys.get(epoch) else {
                return Some(no_keys(*epoch));
            };
            let Some(set) = sets.get(epoch) else {
                return Some(format!("epoch {epoch} {UNSEALED}"));
            };
            let Some(verifying) = k.x.verifying.get(&i.author) else {
                return Some(format!(
                    "member {} holds no share of epoch {epoch}'s key",
                    i.author
                ));
            };
            decrypt::check_record(c, *epoch, set, i.author, verifying, root, shares, |_| false)
                .err()
        }
    }
}

fn at_record(line: u64, r: &UncheckedRecord, why: String) -> Failure {
    Failure {
        line,
        hash: Some(hex::encode(r.hash())),
        kind: Some(r_kind(r)),
        why,
    }
}

/// One record line on its own.
fn check_line(c: &Consortium, n: u64, line: &RecordLine) -> Result<Read, Failure> {
    let fail = |kind: Option<String>, why: String| Failure {
        line: n,
        hash: Some(line.hash.clone()),
        kind,
        why,
    };
    let bytes = hex::decode(&line.bytes).map_err(|e| fail(None, format!("bytes: {e}")))?;
    let record =
        UncheckedRecord::decode(&bytes).map_err(|e| fail(None, format!("does not decode: {e}")))?;
    let kind = Some(r_kind(&record));
    if hex::encode(record.hash()) != line.hash {
        return Err(fail(
            kind,
            "its hash is not the SHA-256 of its bytes".into(),
        ));
    }
    record
        .check_envelope(c)
        .map_err(|e| fail(kind.clone(), e.to_string()))?;
    if view(record.envelope()) != line.view {
        return Err(fail(kind, "its view is not what its bytes say".into()));
    }
    Ok(Read {
        line: n,
        hash: record.hash(),
        record,
    })
}

fn r_kind(r: &UncheckedRecord) -> String {
    bankmesh_protocol::record::kind_of(&r.envelope().payload).to_string()
}

fn summarize(epochs: &mut BTreeMap<u64, EpochSummary>, r: &UncheckedRecord) {
    let payload = &r.envelope().payload;
    let Some(epoch) = bankmesh_protocol::record::epoch_of(payload) else {
        return;
    };
    let e = epochs.entry(epoch).or_default();
    *e.kinds.entry(r_kind(r)).or_default() += 1;
    match payload {
        Payload::Submission(_) => e.submissions += 1,
        Payload::Identified(i) => {
            e.authors.insert(i.author);
            if let Body::Fault { evidence: ev, .. } = &i.body {
                if let Some(culprit) = evidence::claimed_culprit(ev) {
                    e.faults.push((culprit, ev.kind().to_string()));
                }
            }
        }
    }
}

/// The fields of a checkpoint line that differ from the derived one.
fn differing(given: &CheckpointLine, derived: &CheckpointLine) -> String {
    let mut fields = Vec::new();
    let mut check = |name: &str, same: bool| {
        if !same {
            fields.push(name.to_string());
        }
    };
    check("epoch", given.epoch == derived.epoch);
    check("round", given.round == derived.round);
    check("value", given.value == derived.value);
    check("precommits", given.precommits == derived.precommits);
    check("root", given.root == derived.root);
    check("submissions", given.submissions == derived.submissions);
    check("excluded", given.excluded == derived.excluded);
    check("log_size", given.log_size == derived.log_size);
    check("log_root", given.log_root == derived.log_root);
    fields.join(", ")
}

/// Whether the bundle `newer` extends `older`: the checkpoint log of `newer` (rebuilt from its
/// checkpoint lines, each of which `verify` checks against its records) has the last log of
/// `older` as a prefix, shown by an RFC 6962 consistency proof. An auditor keeps only the
/// older bundle's last log size and root.
pub fn extends(older: impl BufRead, newer: impl BufRead) -> Result<(), String> {
    let last = |input: &mut dyn Iterator<Item = std::io::Result<String>>| -> Result<Vec<CheckpointLine>, String> {
        let mut out = Vec::new();
        for line in input {
            let line = line.map_err(|e| e.to_string())?;
            if let Ok(Line::Checkpoint(c)) = serde_json::from_str::<Line>(&line) {
                out.push(c);
            }
        }
        Ok(out)
    };
    let old = last(&mut older.lines())?;
    let new = last(&mut newer.lines())?;
    let Some(old_last) = old.last() else {
        return Ok(()); // an empty log is a prefix of any
    };
    let mut log = bankmesh_protocol::merkle::CheckpointLog::default();
    for c in &new {
        let root = parse_hash(&c.root)?;
        log.push(bankmesh_protocol::merkle::checkpoint_leaf(
            c.epoch,
            &root,
            c.submissions,
        ));
        if log.len() != c.log_size || hex::encode(log.root()) != c.log_root {
            return Err(format!(
                "the newer bundle's log at epoch {} is not its lines'",
                c.epoch
            ));
        }
    }
    let old_root = parse_hash(&old_last.log_root)?;
    let proof = log.prove_consistency(old_last.log_size).ok_or_else(|| {
        format!(
            "the newer bundle's log ({} epochs) is shorter than the older one's ({})",
            log.len(),
            old_last.log_size
        )
    })?;
    if bankmesh_protocol::merkle::verify_consistency(
        &old_root,
        old_last.log_size,
        &log.root(),
        log.len(),
        &proof,
    ) {
        Ok(())
    } else {
        Err(format!(
            "the newer bundle does not extend the older one: its first {} epochs differ",
            old_last.log_size
        ))
    }
}

fn parse_hash(text: &str) -> Result<Hash, String> {
    hex::decode(text)
        .ok()
        .and_then(|b| Hash::try_from(b.as_slice()).ok())
        .ok_or_else(|| format!("not a hash: {text:?}"))
}

/// The longest line read: a record at the size limit in hex, with its view (every byte as a
/// number of up to three digits and a comma), and room to spare.
const LINE_MAX: usize = 16 * bankmesh_protocol::record::MAX_RECORD_BYTES;

/// Reads one line of at most [`LINE_MAX`] bytes: `None` at the end; a line too long is
/// skipped to its end and named.
fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Result<String, String>>> {
    let mut buf = Vec::new();
    let read = std::io::Read::take(&mut *input, LINE_MAX as u64 + 1).read_until(b'\n', &mut buf)?;
    if read == 0 {
        return Ok(None);
    }
    if buf.len() > LINE_MAX {
        // Skip the rest of the line.
        loop {
            let available = input.fill_buf()?;
            if available.is_empty() {
                break;
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    input.consume(i + 1);
                    break;
                }
                None => {
                    let len = available.len();
                    input.consume(len);
                }
            }
        }
        return Ok(Some(Err(format!("a line longer than {LINE_MAX} bytes"))));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Some(
        String::from_utf8(buf).map_err(|_| "a line that is not UTF-8".to_string()),
    ))
}
