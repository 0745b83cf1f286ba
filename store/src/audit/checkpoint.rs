//! Each sealed epoch's checkpoint, derived from the log alone: the seal's certificate (a
//! quorum of precommits for one value in one round), the reports it pins, the final set they
//! imply, and its root. Exporter and verifier run this same derivation.

use std::collections::{BTreeMap, BTreeSet};

use bankmesh_protocol::consensus::VoteKind;
use bankmesh_protocol::epoch::seal::{self, Part, Walk};
use bankmesh_protocol::epoch::values::{FinalSet, Pool};
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::merkle::{checkpoint_leaf, CheckpointLog};
use bankmesh_protocol::record::{Body, Hash, Instance, Payload, Submission, Value};
use bankmesh_protocol::MemberIndex;

/// One sealed epoch, as the log proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub epoch: u64,
    /// The round the certificate is of, and the decided value's id.
    pub round: u32,
    pub value: Hash,
    /// The precommit records of the certificate, by author.
    pub precommits: Vec<Hash>,
    /// The final set's root (RFC 6962 over its submission hashes, ascending).
    pub root: Hash,
    /// Submissions in the final set, and those left out (a repeated link or slot tag, or a
    /// tag with more than `n` submissions).
    pub submissions: u64,
    pub excluded: Vec<Hash>,
    /// Submissions per tag (hex of the tag), for the summary.
    pub tags: BTreeMap<[u8; 32], u32>,
    /// The checkpoint log after this epoch: its size and root.
    pub log_size: u64,
    pub log_root: Hash,
}

/// A certified epoch whose checkpoint the log does not give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unproven {
    /// The log proves something wrong (two certified values, a certified value no member
    /// could have accepted); otherwise it only lacks a record (a node still catching up).
    pub wrong: bool,
    pub why: String,
}

/// The precommits of one (epoch, round, value id): each author's first, with its value.
type Votes<'a> = BTreeMap<MemberIndex, (Hash, &'a Value)>;

/// The records a checkpoint is derived from, indexed once.
#[derive(Default)]
pub struct Index<'a> {
    /// Seal precommits with a value: (epoch, round, value id) -> author -> (record, value).
    precommits: BTreeMap<(u64, u32, Hash), Votes<'a>>,
    /// Report parts by record hash, per epoch.
    parts: BTreeMap<u64, BTreeMap<Hash, Part>>,
    /// Submissions by hash.
    submissions: BTreeMap<Hash, &'a Submission>,
}

impl<'a> Index<'a> {
    /// Takes one record of the log (identified or a submission).
    pub fn add(&mut self, hash: Hash, payload: &'a Payload) {
        match payload {
            Payload::Submission(s) => {
                self.submissions.insert(hash, s);
            }
            Payload::Identified(i) => match &i.body {
                Body::Vote {
                    instance: Instance::Seal { epoch },
                    kind: VoteKind::Precommit,
                    round,
                    value: Some(value),
                } => {
                    self.precommits
                        .entry((*epoch, *round, value.id()))
                        .or_default()
                        .entry(i.author)
                        .or_insert((hash, value));
                }
                Body::Report {
                    epoch,
                    part,
                    last,
                    hashes,
                } => {
                    self.parts.entry(*epoch).or_default().insert(
                        hash,
                        Part {
                            author: i.author,
                            part: *part,
                            last: *last,
                            hashes: hashes.clone(),
                            prev: i.prev,
                        },
                    );
                }
                _ => {}
            },
        }
    }

    /// Every epoch with a certificate, its checkpoint; or why one cannot be derived.
    pub fn checkpoints(&self, c: &Consortium) -> (Vec<Checkpoint>, Vec<Unproven>) {
        let (sealed, problems) = self.sealed(c);
        (sealed.into_iter().map(|(cp, _)| cp).collect(), problems)
    }

    /// Every epoch with a certificate: its checkpoint and final set; and, per epoch whose
    /// checkpoint cannot be derived, why (that epoch has no leaf in the checkpoint log; the
    /// others are derived all the same).
    pub fn sealed(&self, c: &Consortium) -> (Vec<(Checkpoint, FinalSet)>, Vec<Unproven>) {
        let mut problems = Vec::new();
        let mut violated = std::collections::BTreeSet::new();
        let mut certified: BTreeMap<u64, (u32, Hash, &Votes)> = BTreeMap::new();
        for ((epoch, round, id), votes) in &self.precommits {
            if votes.len() < c.quorum() {
                continue;
            }
            match certified.get(epoch) {
                // Tendermint decides one value per instance: two certified values are a
                // safety violation the log proves.
                Some((r, other, _)) if other != id => {
                    if violated.insert(*epoch) {
                        problems.push(Unproven {
                            wrong: true,
                            why: format!(
                                "epoch {epoch}: two values certified (rounds {r} and {round})"
                            ),
                        });
                    }
                }
                Some(_) => {}
                None => {
                    certified.insert(*epoch, (*round, *id, votes));
                }
            }
        }
        let mut log = CheckpointLog::default();
        let mut out = Vec::new();
        for (epoch, (round, id, votes)) in certified {
            if violated.contains(&epoch) {
                continue;
            }
            let Some(value) = votes.values().next().map(|(_, v)| *v) else {
                continue;
            };
            let set = match self.final_set(c, epoch, round, value) {
                Ok(set) => set,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            };
            let submissions = set.entries.len() as u64;
            log.push(checkpoint_leaf(epoch, &set.root, submissions));
            let checkpoint = Checkpoint {
                epoch,
                round,
                value: id,
                precommits: votes.values().map(|(h, _)| *h).collect(),
                root: set.root,
                submissions,
                excluded: set.excluded.clone(),
                tags: set.aggregates.iter().map(|(t, (_, n))| (*t, *n)).collect(),
                log_size: log.len(),
                log_root: log.root(),
            };
            out.push((checkpoint, set));
        }
        (out, problems)
    }

    /// The final set a certified seal value implies (the same rules as the members').
    fn final_set(
        &self,
        c: &Consortium,
        epoch: u64,
        round: u32,
        value: &Value,
    ) -> Result<FinalSet, Unproven> {
        let wrong = |why| Unproven { wrong: true, why };
        let missing = |why| Unproven { wrong: false, why };
        let Value::Seal { reports } = value else {
            return Err(wrong(format!(
                "epoch {epoch}: the certified value is no seal"
            )));
        };
        let members: BTreeSet<MemberIndex> = reports.iter().map(|(m, _)| *m).collect();
        if reports.len() != c.reports_pinned() || members.len() != reports.len() {
            return Err(wrong(format!(
                "epoch {epoch}: the seal pins {} reports of {} members, not {}",
                reports.len(),
                members.len(),
                c.reports_pinned()
            )));
        }
        let empty = BTreeMap::new();
        let parts = self.parts.get(&epoch).unwrap_or(&empty);
        let mut lists = Vec::new();
        for (member, last) in reports {
            match seal::walk(parts, last) {
                Walk::Complete(list) if parts.get(last).is_some_and(|p| p.author == *member) => {
                    lists.push(list)
                }
                Walk::Missing(h) => {
                    return Err(missing(format!(
                        "epoch {epoch}: report part {} of member {member} is missing",
                        hex::encode(h)
                    )))
                }
                _ => {
                    return Err(wrong(format!(
                        "epoch {epoch}: member {member}'s report is broken"
                    )))
                }
            }
        }
        let hashes = seal::final_hashes(lists.iter().map(Vec::as_slice), c.faulty());
        let mut pool = Pool::default();
        for h in &hashes {
            let s = self
                .submissions
                .get(h)
                .filter(|s| s.epoch == epoch)
                .ok_or_else(|| {
                    missing(format!(
                        "epoch {epoch}: sealed submission {} is not in the log",
                        hex::encode(h)
                    ))
                })?;
            pool.insert(*h, s);
        }
        let entries = pool
            .take(&hashes)
            .ok_or_else(|| wrong(format!("epoch {epoch}: the final set could not be taken")))?;
        Ok(FinalSet::new(round, entries, c.n(), c.min_count()))
    }
}
