//! A node's local, non-replicated state (DESIGN 8: every decision a member acts on is stored
//! before it acts on it, and read back after a restart, never re-derived): the operator's
//! scores, our clients' OPRF outputs, the OPRF evaluations served to each member, the setup's
//! and each seal's decision, a failure, and our results.
//!
//! The bank emits [`LocalWrite`]s in its `Step`; the driver stores them before anything else
//! in the step and, after a restart, hands every entry back to [`crate::Bank::restore`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::record::Value;
use crate::step::Phase;
use crate::MemberIndex;

/// One durable write to the node's local area. The value may be secret: it is zeroized and
/// never printed.
#[derive(PartialEq, Eq)]
pub struct LocalWrite {
    pub key: String,
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for LocalWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalWrite({}, <{} bytes redacted>)",
            self.key,
            self.value.len()
        )
    }
}

/// One stored local entry, as the driver reads it back: key and (possibly secret) value.
pub type LocalEntry = (String, Zeroizing<Vec<u8>>);

fn write(key: String, value: &impl Serialize) -> LocalWrite {
    LocalWrite {
        key,
        value: Zeroizing::new(postcard::to_stdvec(value).unwrap_or_default()),
    }
}

#[derive(Serialize, Deserialize)]
struct Pseudonym {
    client: u32,
    output: Vec<u8>,
}

/// Rows of scores per local entry (about 1.3 MB at the longest ids, under the entry limit).
const SCORES_PER_ENTRY: usize = 10_000;

/// The operator's scores, in entries of [`SCORES_PER_ENTRY`] rows.
pub(crate) fn scores(epoch: u64, scores: &[(String, u16)]) -> Vec<LocalWrite> {
    let chunks: Vec<&[(String, u16)]> = if scores.is_empty() {
        vec![&[]]
    } else {
        scores.chunks(SCORES_PER_ENTRY).collect()
    };
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| write(format!("epoch/{epoch:020}/scores/{i:010}"), &chunk))
        .collect()
}

/// The epoch's fresh secret from which our submissions' one-time keys, encryption randomness
/// and ring slots are derived; written with the scores, erased with them.
pub(crate) fn submission_secret(epoch: u64, secret: &[u8; 32]) -> LocalWrite {
    write(format!("epoch/{epoch:020}/secrets/submissions"), secret)
}

/// OPRF outputs that became known together (one batch), as entry `part`.
pub(crate) fn pseudonyms(epoch: u64, part: u32, list: &[(usize, [u8; 64])]) -> LocalWrite {
    let list: Vec<Pseudonym> = list
        .iter()
        .map(|(c, y)| Pseudonym {
            client: u32::try_from(*c).unwrap_or(u32::MAX),
            output: y.to_vec(),
        })
        .collect();
    write(format!("epoch/{epoch:020}/pseudonyms/{part:010}"), &list)
}

/// What we served each member: how many evaluations, and a digest of each batch (a batch asked
/// again is answered again without being charged again).
pub type Served = BTreeMap<MemberIndex, (u32, BTreeSet<[u8; 32]>)>;

pub(crate) fn served(epoch: u64, served: &Served) -> LocalWrite {
    write(format!("epoch/{epoch:020}/served"), served)
}

pub(crate) fn seal_decision(epoch: u64, round: u32, value: &Value) -> LocalWrite {
    write(format!("epoch/{epoch:020}/decision"), &(round, value))
}

pub(crate) fn failed(epoch: u64, phase: Phase, reason: &str) -> LocalWrite {
    write(format!("epoch/{epoch:020}/failed"), &(phase, reason))
}

/// One result (`sum` is `None` when it is withheld below the genesis `min_count`).
pub(crate) fn result(epoch: u64, client: usize, sum: Option<u64>, count: u32) -> LocalWrite {
    write(
        format!("epoch/{epoch:020}/result/{client:010}"),
        &(sum, count),
    )
}

/// What remains of an epoch here once its results are stored: the results with their client
/// ids and our submissions' record hashes (for reconciliation), no score, pseudonym or key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Whether the operator gave scores for the epoch.
    pub given: bool,
    /// Our submissions: client id and record hash.
    pub submissions: Vec<(String, [u8; 32])>,
    /// Our results: client id, sum (`None`: withheld), count.
    pub results: Vec<(String, Option<u64>, u32)>,
}

/// Rows per entry of a finished epoch (ids of 128 bytes and a hash: about 1.8 MB).
const FINISHED_PER_ENTRY: usize = 10_000;

/// A finished epoch's entries, and the prefixes of its working state to erase in the same
/// durable batch: its scores, pseudonyms and per-client results.
pub(crate) fn finished(epoch: u64, f: &Finished) -> (Vec<LocalWrite>, Vec<String>) {
    let mut writes = vec![write(format!("epoch/{epoch:020}/finished"), &f.given)];
    for (i, chunk) in f.submissions.chunks(FINISHED_PER_ENTRY).enumerate() {
        writes.push(write(format!("epoch/{epoch:020}/own/{i:010}"), &chunk));
    }
    for (i, chunk) in f.results.chunks(FINISHED_PER_ENTRY).enumerate() {
        writes.push(write(format!("epoch/{epoch:020}/final/{i:010}"), &chunk));
    }
    let erase = ["scores", "secrets", "pseudonyms", "result"]
        .iter()
        .map(|what| format!("epoch/{epoch:020}/{what}/"))
        .collect();
    (writes, erase)
}

/// An epoch past the results' retention: a marker, and the prefixes to erase (its results and
/// submissions, and the working state of an epoch that never finished).
pub(crate) fn expired(epoch: u64) -> (LocalWrite, Vec<String>) {
    let erase = ["scores", "secrets", "pseudonyms", "result", "own", "final"]
        .iter()
        .map(|what| format!("epoch/{epoch:020}/{what}/"))
        .collect();
    (write(format!("epoch/{epoch:020}/expired"), &true), erase)
}

pub(crate) fn setup_decision(epoch: u64, attempt: u32, value: &Value) -> LocalWrite {
    write(format!("setup/{epoch:020}/decision/{attempt:010}"), value)
}

/// Our fresh secret of an epoch's setup (its DKG polynomials, seal keys and ring key derive
/// from it), stored before anything derived from it is posted.
pub(crate) fn setup_secret(epoch: u64, secret: &[u8; 32]) -> LocalWrite {
    write(format!("setup/{epoch:020}/secret"), secret)
}

/// The mark that an epoch's setup secret was erased, and the prefix to erase, in one batch (a
/// restart must never draw a new secret for an epoch whose records are out).
pub(crate) fn setup_erased(epoch: u64) -> (LocalWrite, Vec<String>) {
    (
        write(format!("setup/{epoch:020}/erased"), &true),
        vec![format!("setup/{epoch:020}/secret")],
    )
}

/// Everything read back from the local area.
#[derive(Default)]
pub struct Restored {
    pub setup: BTreeMap<u64, RestoredSetup>,
    pub epochs: BTreeMap<u64, RestoredEpoch>,
}

/// What the local area held of one epoch's setup.
#[derive(Default)]
pub struct RestoredSetup {
    pub decisions: BTreeMap<u32, Value>,
    pub secret: Option<Zeroizing<[u8; 32]>>,
    pub erased: bool,
}

#[derive(Default)]
pub struct RestoredEpoch {
    pub scores: Option<Vec<(String, u16)>>,
    /// The secret our submissions derive from (present whenever `scores` is).
    pub submission_secret: Option<Zeroizing<[u8; 32]>>,
    pub pseudonyms: Vec<(usize, [u8; 64])>,
    /// How many pseudonym entries were stored (the next one gets this number).
    pub pseudonym_parts: u32,
    pub served: Served,
    pub decision: Option<(u32, Value)>,
    pub failed: Option<(Phase, String)>,
    pub results: BTreeMap<usize, (Option<u64>, u32)>,
    /// Set once the results are stored and the working state erased.
    pub finished: Option<Finished>,
    /// The results' retention is over: they are erased.
    pub expired: bool,
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("local entry {key} does not decode: {e}"))
}

impl Restored {
    /// Parses every local entry; an entry that does not decode is an error naming it (a
    /// corrupt local store is never silently ignored).
    pub fn parse(entries: &[LocalEntry]) -> Result<Restored, String> {
        let mut out = Restored::default();
        for (key, bytes) in entries {
            let parts: Vec<&str> = key.split('/').collect();
            match parts.as_slice() {
                ["setup", e, rest @ ..] => {
                    let e: u64 = e.parse().map_err(|_| format!("bad local key {key}"))?;
                    let slot = out.setup.entry(e).or_default();
                    match rest {
                        ["decision", a] => {
                            let a: u32 = a.parse().map_err(|_| format!("bad local key {key}"))?;
                            slot.decisions.insert(a, decode(key, bytes)?);
                        }
                        ["secret"] => slot.secret = Some(Zeroizing::new(decode(key, bytes)?)),
                        ["erased"] => slot.erased = decode(key, bytes)?,
                        _ => return Err(format!("unknown local key {key}")),
                    }
                }
                ["epoch", e, rest @ ..] => {
                    let e: u64 = e.parse().map_err(|_| format!("bad local key {key}"))?;
                    let slot = out.epochs.entry(e).or_default();
                    match rest {
                        ["scores", _] => {
                            // Entries come in key order, so the chunks in order.
                            let rows: Vec<(String, u16)> = decode(key, bytes)?;
                            slot.scores.get_or_insert_with(Vec::new).extend(rows);
                        }
                        ["pseudonyms", _] => {
                            let list: Vec<Pseudonym> = decode(key, bytes)?;
                            let list: Vec<(usize, [u8; 64])> = list
                                .into_iter()
                                .map(|p| {
                                    Some((
                                        usize::try_from(p.client).ok()?,
                                        p.output.as_slice().try_into().ok()?,
                                    ))
                                })
                                .collect::<Option<_>>()
                                .ok_or_else(|| format!("local entry {key} is malformed"))?;
                            slot.pseudonyms.extend(list);
                            slot.pseudonym_parts += 1;
                        }
                        ["secrets", "submissions"] => {
                            slot.submission_secret = Some(Zeroizing::new(decode(key, bytes)?));
                        }
                        ["served"] => slot.served = decode(key, bytes)?,
                        ["decision"] => slot.decision = Some(decode(key, bytes)?),
                        ["failed"] => slot.failed = Some(decode(key, bytes)?),
                        ["finished"] => {
                            slot.finished.get_or_insert_with(Finished::default).given =
                                decode(key, bytes)?;
                        }
                        ["own", _] => {
                            let rows: Vec<(String, [u8; 32])> = decode(key, bytes)?;
                            slot.finished
                                .get_or_insert_with(Finished::default)
                                .submissions
                                .extend(rows);
                        }
                        ["final", _] => {
                            let rows: Vec<(String, Option<u64>, u32)> = decode(key, bytes)?;
                            slot.finished
                                .get_or_insert_with(Finished::default)
                                .results
                                .extend(rows);
                        }
                        ["expired"] => slot.expired = decode(key, bytes)?,
                        ["result", c] => {
                            let c: usize = c.parse().map_err(|_| format!("bad local key {key}"))?;
                            slot.results.insert(c, decode(key, bytes)?);
                        }
                        _ => return Err(format!("unknown local key {key}")),
                    }
                }
                _ => return Err(format!("unknown local key {key}")),
            }
        }
        for (e, slot) in &out.epochs {
            if slot.scores.is_some() && slot.submission_secret.is_none() {
                return Err(format!(
                    "local store: epoch {e} has scores but no submission secret"
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(w: LocalWrite) -> (String, Zeroizing<Vec<u8>>) {
        (w.key, w.value)
    }

    #[test]
    fn every_entry_round_trips() {
        let s = vec![("a".to_string(), 3u16)];
        let value = Value::SetupRetry {
            next: vec![1, 2, 3],
        };
        let mut counts = Served::new();
        counts.insert(2, (40, BTreeSet::from([[9; 32]])));
        let mut entries: Vec<_> = scores(7, &s).into_iter().map(entry).collect();
        entries.extend([
            entry(submission_secret(7, &[3; 32])),
            entry(pseudonyms(7, 0, &[(4, [7u8; 64])])),
            entry(pseudonyms(7, 1, &[(5, [8u8; 64])])),
            entry(served(7, &counts)),
            entry(seal_decision(7, 2, &value)),
            entry(failed(7, Phase::Seal, "late")),
            entry(result(7, 11, Some(900), 2)),
            entry(result(7, 12, None, 2)),
            entry(setup_decision(7, 1, &value)),
            entry(setup_secret(7, &[5; 32])),
            entry(setup_erased(8).0),
        ]);
        let r = Restored::parse(&entries).unwrap();
        let setup = r.setup.get(&7).unwrap();
        assert_eq!(setup.decisions.get(&1), Some(&value));
        assert_eq!(setup.secret.as_deref(), Some(&[5u8; 32]));
        assert!(!setup.erased && r.setup.get(&8).unwrap().erased);
        let secret = setup_secret(7, &[5; 32]);
        assert!(setup_erased(7)
            .1
            .iter()
            .any(|p| secret.key.starts_with(p.as_str())));
        let e = r.epochs.get(&7).unwrap();
        assert_eq!(e.scores.as_ref(), Some(&s));
        assert_eq!(e.submission_secret.as_deref(), Some(&[3u8; 32]));
        assert_eq!(e.pseudonyms, vec![(4, [7u8; 64]), (5, [8u8; 64])]);
        assert_eq!(e.pseudonym_parts, 2);
        assert_eq!(e.served.get(&2).map(|s| s.0), Some(40));
        assert_eq!(e.decision, Some((2, value)));
        assert_eq!(e.failed, Some((Phase::Seal, "late".to_string())));
        assert_eq!(e.results.get(&11), Some(&(Some(900), 2)));
        assert_eq!(e.results.get(&12), Some(&(None, 2)));
    }

    #[test]
    fn scores_at_the_largest_sizes_fit_the_entry_limit() {
        let rows: Vec<(String, u16)> = (0..100_000).map(|i| (format!("{i:0128}"), 1023)).collect();
        let writes = scores(1, &rows);
        assert_eq!(writes.len(), 10);
        assert!(writes.iter().all(|w| w.value.len() < 4 * 1024 * 1024));
        let mut entries: Vec<_> = writes.into_iter().map(entry).collect();
        let without_secret = Restored::parse(&entries).err().unwrap();
        assert!(
            without_secret.contains("no submission secret"),
            "{without_secret}"
        );
        entries.push(entry(submission_secret(1, &[1; 32])));
        let back = Restored::parse(&entries).unwrap();
        assert_eq!(
            back.epochs.get(&1).and_then(|e| e.scores.clone()),
            Some(rows)
        );
    }

    #[test]
    fn finishing_an_epoch_erases_its_secrets_with_its_scores() {
        let (_, erase) = finished(4, &Finished::default());
        let secret = submission_secret(4, &[9; 32]);
        assert!(erase.iter().any(|p| secret.key.starts_with(p.as_str())));
        let (_, erase) = expired(4);
        assert!(erase.iter().any(|p| secret.key.starts_with(p.as_str())));
        for w in scores(4, &[("a".into(), 1)]) {
            assert!(erase.iter().any(|p| w.key.starts_with(p.as_str())));
        }
    }

    #[test]
    fn a_corrupt_or_unknown_entry_is_an_error_naming_it() {
        let bad = vec![(
            "epoch/00000000000000000007/scores/0000000000".to_string(),
            Zeroizing::new(vec![0xff]),
        )];
        let err = Restored::parse(&bad).err().unwrap();
        assert!(err.contains("epoch/00000000000000000007/scores/"), "{err}");
        let unknown = vec![("elsewhere".to_string(), Zeroizing::new(vec![]))];
        assert!(Restored::parse(&unknown).is_err());
        let short = vec![(
            "epoch/00000000000000000001/pseudonyms/0000000000".to_string(),
            Zeroizing::new(
                postcard::to_stdvec(&vec![Pseudonym {
                    client: 1,
                    output: vec![1, 2],
                }])
                .unwrap(),
            ),
        )];
        assert!(
            Restored::parse(&short).is_err(),
            "a 2-byte OPRF output is refused"
        );
    }
}
