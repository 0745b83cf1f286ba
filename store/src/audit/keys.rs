//! Each epoch's public keys, derived from the log: the setup attempt a quorum of precommits
//! decided, its DKG transcripts recomputed from the records and compared with the decided
//! ones, the group keys and verifying shares from the round-1 commitments, and the ring from
//! the participants' announced ring keys. No secret is needed, and none is learnt.

use std::collections::{BTreeMap, BTreeSet};

use bankmesh_protocol::consensus::VoteKind;
use bankmesh_protocol::genesis::Consortium;
use bankmesh_protocol::record::{Body, Hash, Instance, Payload, Run, Value};
use bankmesh_protocol::setup::{dkg, RunKeys, SetupKeys};
use bankmesh_protocol::MemberIndex;

/// One participant's records of one run and attempt.
#[derive(Default)]
struct Posted<'a> {
    round1: Option<(Hash, &'a [u8])>,
    ring: Option<curve25519_dalek::ristretto::RistrettoPoint>,
    round2: Option<Hash>,
    done: Option<Hash>,
}

/// Who precommitted one setup value, and the transcripts it decides.
type Certificate = (BTreeSet<MemberIndex>, [Hash; 2]);

/// The records the keys are derived from.
#[derive(Default)]
pub struct KeyIndex<'a> {
    /// Setup precommits for a SetupKeys value: (epoch, attempt, round, value id) -> authors
    /// and the decided transcripts. A certificate is `q` precommits of one round.
    precommits: BTreeMap<(u64, u32, u32, Hash), Certificate>,
    /// DKG records: (epoch, run, attempt) -> author -> what it posted.
    dkg: BTreeMap<(u64, Run, u32), BTreeMap<MemberIndex, Posted<'a>>>,
}

impl<'a> KeyIndex<'a> {
    pub fn add(&mut self, hash: Hash, payload: &'a Payload) {
        let Payload::Identified(i) = payload else {
            return;
        };
        match &i.body {
            Body::Vote {
                instance: Instance::Setup { epoch, attempt },
                kind: VoteKind::Precommit,
                round,
                value: Some(value @ Value::SetupKeys { transcripts }),
            } => {
                self.precommits
                    .entry((*epoch, *attempt, *round, value.id()))
                    .or_insert_with(|| (BTreeSet::new(), *transcripts))
                    .0
                    .insert(i.author);
            }
            Body::DkgRound1 {
                epoch,
                run,
                attempt,
                package,
                ring,
                ..
            } => {
                // The first is the one members keep (an identical copy later is no news).
                let p = self.posted(*epoch, *run, *attempt, i.author);
                if p.round1.is_none() {
                    p.round1 = Some((hash, package));
                    p.ring = ring.as_ref().map(|r| r.key);
                }
            }
            Body::DkgRound2 {
                epoch,
                run,
                attempt,
                ..
            } => {
                let p = self.posted(*epoch, *run, *attempt, i.author);
                p.round2 = p.round2.or(Some(hash));
            }
            Body::DkgDone {
                epoch,
                run,
                attempt,
            } => {
                let p = self.posted(*epoch, *run, *attempt, i.author);
                p.done = p.done.or(Some(hash));
            }
            _ => {}
        }
    }

    fn posted(
        &mut self,
        epoch: u64,
        run: Run,
        attempt: u32,
        author: MemberIndex,
    ) -> &mut Posted<'a> {
        self.dkg
            .entry((epoch, run, attempt))
            .or_default()
            .entry(author)
            .or_default()
    }

    /// Each epoch whose setup a quorum decided: its public keys; and, per epoch whose decided
    /// keys do not follow from the log, why (that epoch has none; the others are derived all
    /// the same).
    pub fn keys(&self, c: &Consortium) -> (BTreeMap<u64, SetupKeys>, Vec<String>) {
        let mut out = BTreeMap::new();
        let mut wrong: BTreeMap<u64, String> = BTreeMap::new();
        for ((epoch, attempt, _, _), (authors, transcripts)) in &self.precommits {
            if authors.len() < c.quorum() || wrong.contains_key(epoch) {
                continue;
            }
            match out.get(epoch).map(|k: &SetupKeys| k.attempt) {
                // Certified in two rounds of one attempt: the same value (Tendermint).
                Some(other) if other == *attempt => continue,
                Some(other) => {
                    out.remove(epoch);
                    wrong.insert(
                        *epoch,
                        format!("epoch {epoch}: keys decided in attempts {other} and {attempt}"),
                    );
                    continue;
                }
                None => {}
            }
            match self.epoch_keys(c, *epoch, *attempt, transcripts) {
                Ok(keys) => {
                    out.insert(*epoch, keys);
                }
                Err(why) => {
                    wrong.insert(*epoch, why);
                }
            }
        }
        (out, wrong.into_values().collect())
    }

    /// The keys of `attempt` of `epoch`, if its records give the decided transcripts.
    fn epoch_keys(
        &self,
        c: &Consortium,
        epoch: u64,
        attempt: u32,
        transcripts: &[Hash; 2],
    ) -> Result<SetupKeys, String> {
        let mut runs = Vec::new();
        for (run, transcript) in Run::ALL.iter().zip(transcripts) {
            runs.push(self.run_keys(c, epoch, *run, attempt, transcript)?);
        }
        let [(x, participants), (k, _)]: [_; 2] = runs
            .try_into()
            .map_err(|_| format!("epoch {epoch}: two runs expected"))?;
        let posted = self.dkg.get(&(epoch, Run::Decryption, attempt));
        let ring = participants
            .iter()
            .map(|m| posted.and_then(|p| p.get(m)).and_then(|p| p.ring))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("epoch {epoch}: a participant announced no ring key"))?;
        Ok(SetupKeys {
            attempt,
            x,
            k,
            ring_members: participants,
            ring,
            ring_secret: None,
        })
    }

    /// One run's public keys and participants, if its records give the decided transcript.
    fn run_keys(
        &self,
        c: &Consortium,
        epoch: u64,
        run: Run,
        attempt: u32,
        transcript: &Hash,
    ) -> Result<(RunKeys, Vec<MemberIndex>), String> {
        let none = BTreeMap::new();
        let posted = self.dkg.get(&(epoch, run, attempt)).unwrap_or(&none);
        let mut records = BTreeMap::new();
        let mut packages = Vec::new();
        for (m, p) in posted {
            if let (Some((r1, package)), Some(r2), Some(done)) = (p.round1, p.round2, p.done) {
                records.insert(*m, [r1, r2, done]);
                packages.push((*m, dkg::parse_round1(package)?));
            }
        }
        if dkg::transcript_hash(&c.id, epoch, run, attempt, &records) != *transcript {
            return Err(format!(
                "epoch {epoch}: the decided {run:?} transcript of attempt {attempt} does not follow from the log"
            ));
        }
        let (group, verifying) = dkg::public_keys(packages.iter().map(|(m, p)| (*m, p)))?;
        Ok((
            RunKeys {
                group,
                verifying,
                share: None,
            },
            records.into_keys().collect(),
        ))
    }
}
