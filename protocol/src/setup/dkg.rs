//! One FROST DKG run (DESIGN 3, 4.1) over the log: round-1 packages are broadcast records,
//! round-2 packages are sealed to each recipient and posted as one record per dealer.
//!
//! The dealer's polynomial comes from a seed derived from the member's identity key, run and
//! attempt, so a member that crashes mid-DKG recomputes exactly what it already posted
//! (resuming from the log never equivocates). Which attempt's keys are used is not decided
//! here but by the setup's agreement (`super`), on the transcript this run computes.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use frost::keys::dkg::{round1, round2};
use frost_ristretto255 as frost;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::sealed::{self, ShareContext};
use crate::genesis::Consortium;
use crate::keys::MemberSecrets;
use crate::record::{Body, Hash, Run, SealedShare};
use crate::MemberIndex;

/// The public outcome of a run, and this member's share if it took part.
#[derive(Clone)]
pub struct RunKeys {
    /// Group public key (`X` or `K`).
    pub group: RistrettoPoint,
    /// Verifying share of each participant (`X_i` or `K_i`).
    pub verifying: BTreeMap<MemberIndex, RistrettoPoint>,
    /// This member's secret share, if it was a participant.
    pub share: Option<Zeroizing<Scalar>>,
}

/// Why a DKG record is refused; names the fault for the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkgReject {
    /// Not for the current attempt, or the author is not a participant.
    NotExpected,
    /// Second, different package from the same dealer.
    Duplicate,
    /// The package does not decode or does not verify.
    Invalid(String),
}

pub struct DkgRun {
    run: Run,
    attempt: u32,
    participants: Vec<MemberIndex>,
    threshold: u16,
    round1: BTreeMap<MemberIndex, round1::Package>,
    round2_from: BTreeSet<MemberIndex>,
    my_round2: BTreeMap<frost::Identifier, round2::Package>,
    secret1: Option<round1::SecretPackage>,
    secret2: Option<round2::SecretPackage>,
    posted1: bool,
    posted2: bool,
    /// Hashes of each participant's round-1 and round-2 records: the run's transcript.
    record_hashes: BTreeMap<MemberIndex, [Option<Hash>; 2]>,
    /// Keys computed here, with the transcript they come from; used once the setup's
    /// agreement decides that transcript.
    computed: Option<(RunKeys, Hash)>,
    failed: Option<String>,
}

impl std::fmt::Debug for RunKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunKeys")
            .field("participants", &self.verifying.keys().collect::<Vec<_>>())
            .field("share", &self.share.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn identifier(index: MemberIndex) -> Option<frost::Identifier> {
    frost::Identifier::try_from(index).ok()
}

fn point(bytes: &[u8]) -> Option<RistrettoPoint> {
    CompressedRistretto::from_slice(bytes).ok()?.decompress()
}

impl DkgRun {
    pub fn new(
        consortium: &Consortium,
        run: Run,
        attempt: u32,
        participants: Vec<MemberIndex>,
    ) -> Self {
        DkgRun {
            run,
            attempt,
            participants,
            threshold: consortium.genesis.threshold,
            round1: BTreeMap::new(),
            round2_from: BTreeSet::new(),
            my_round2: BTreeMap::new(),
            secret1: None,
            secret2: None,
            posted1: false,
            posted2: false,
            record_hashes: BTreeMap::new(),
            computed: None,
            failed: None,
        }
    }

    /// The keys and transcript computed here, if every participant's records are in.
    pub fn computed(&self) -> Option<&(RunKeys, Hash)> {
        self.computed.as_ref()
    }

    /// Whether `member` posted its round-1 package in this run.
    pub fn has_round1(&self, member: MemberIndex) -> bool {
        self.round1.contains_key(&member)
    }
    /// Whether `member` posted its round-2 record in this run.
    pub fn has_round2(&self, member: MemberIndex) -> bool {
        self.round2_from.contains(&member)
    }
    /// Whether every participant's round-1 package is in (so round 2 could be posted).
    pub fn round1_complete(&self) -> bool {
        self.round1.len() == self.participants.len()
    }

    /// Why the run is not complete, for a deadline failure.
    pub fn waiting_for(&self) -> String {
        let (r1, r2, n) = self.progress();
        format!("{r1}/{n} round-1, {r2}/{n} round-2 records")
    }

    /// Notes the hash of a participant's round-1 (`round` 0) or round-2 (`round` 1) record.
    pub fn note_record(&mut self, author: MemberIndex, round: usize, hash: Hash) {
        let slot = self.record_hashes.entry(author).or_default();
        if let Some(h) = slot.get_mut(round) {
            h.get_or_insert(hash);
        }
    }

    /// SHA-256 over every participant's round-1 and round-2 record hash, in index order.
    fn transcript(&self, consortium_id: &[u8; 32]) -> Option<Hash> {
        let mut h = Sha256::new();
        h.update(b"bankmesh.dkg-transcript.v1");
        h.update(consortium_id);
        h.update(self.run.label());
        h.update(self.attempt.to_be_bytes());
        for p in &self.participants {
            let [r1, r2] = self.record_hashes.get(p)?;
            h.update(p.to_be_bytes());
            h.update(r1.as_ref()?);
            h.update(r2.as_ref()?);
        }
        Some(h.finalize().into())
    }
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }
    pub fn fail(&mut self, reason: String) {
        if self.computed.is_none() && self.failed.is_none() {
            self.failed = Some(reason);
        }
    }
    /// `(round-1 packages seen, round-2 records seen, participants)`, for status.
    pub fn progress(&self) -> (usize, usize, usize) {
        (
            self.round1.len(),
            self.round2_from.len(),
            self.participants.len(),
        )
    }

    fn context(&self, consortium: &Consortium) -> Vec<u8> {
        let mut c = consortium.id.to_vec();
        c.extend_from_slice(self.run.label());
        c.extend_from_slice(&self.attempt.to_be_bytes());
        c
    }

    fn max_signers(&self) -> u16 {
        u16::try_from(self.participants.len()).unwrap_or(u16::MAX)
    }

    /// Round 1: our package, if we are a participant and have not posted it.
    pub fn round1_body(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secrets: &MemberSecrets,
    ) -> Option<Body> {
        if self.posted1 || self.failed.is_some() || !self.participants.contains(&me) {
            return None;
        }
        let seed = secrets.derive(b"bankmesh.dkg-polynomial.v1", &self.context(consortium));
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        let id = identifier(me)?;
        match frost::keys::dkg::part1(id, self.max_signers(), self.threshold, &mut rng) {
            Ok((secret, package)) => {
                self.secret1 = Some(secret);
                self.posted1 = true;
                let package = package.serialize().ok()?;
                Some(Body::DkgRound1 {
                    run: self.run,
                    attempt: self.attempt,
                    package,
                })
            }
            Err(e) => {
                self.fail(format!("dkg part1: {e}"));
                None
            }
        }
    }

    /// Our own round-1 record, replayed from the log after a restart: recompute the secret
    /// package behind it (the polynomial is derived, so it is the same one).
    pub fn resume_round1(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secrets: &MemberSecrets,
    ) {
        if !self.posted1 {
            let _ = self.round1_body(consortium, me, secrets);
        }
    }

    /// Our own round-2 record, replayed: recompute the round-2 secret package behind it.
    pub fn resume_round2(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secrets: &MemberSecrets,
    ) {
        if !self.posted2 {
            let _ = self.round2_body(consortium, me, secrets);
        }
    }

    /// Verifies a round-1 record: attempt, participant, proof of knowledge, threshold.
    pub fn check_round1(
        &self,
        author: MemberIndex,
        attempt: u32,
        package: &[u8],
    ) -> Result<round1::Package, DkgReject> {
        if attempt != self.attempt || !self.participants.contains(&author) {
            return Err(DkgReject::NotExpected);
        }
        let pkg =
            round1::Package::deserialize(package).map_err(|e| DkgReject::Invalid(e.to_string()))?;
        if let Some(existing) = self.round1.get(&author) {
            return if existing == &pkg {
                Ok(pkg)
            } else {
                Err(DkgReject::Duplicate)
            };
        }
        if pkg.commitment().coefficients().len() != usize::from(self.threshold) {
            return Err(DkgReject::Invalid(
                "commitment degree does not match the threshold".into(),
            ));
        }
        let id = identifier(author).ok_or(DkgReject::NotExpected)?;
        frost_core::keys::dkg::verify_proof_of_knowledge(
            id,
            pkg.commitment(),
            pkg.proof_of_knowledge(),
        )
        .map_err(|e| DkgReject::Invalid(e.to_string()))?;
        Ok(pkg)
    }

    pub fn apply_round1(&mut self, author: MemberIndex, package: round1::Package) {
        self.round1.entry(author).or_insert(package);
    }

    /// Round 2: once every participant's round-1 package is in, our sealed shares.
    pub fn round2_body(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secrets: &MemberSecrets,
    ) -> Option<Body> {
        if self.posted2 || self.failed.is_some() || self.round1.len() != self.participants.len() {
            return None;
        }
        let secret1 = self.secret1.take()?;
        let others: BTreeMap<frost::Identifier, round1::Package> = self
            .round1
            .iter()
            .filter(|(&i, _)| i != me)
            .filter_map(|(&i, p)| Some((identifier(i)?, p.clone())))
            .collect();
        let (secret2, packages) = match frost::keys::dkg::part2(secret1, &others) {
            Ok(v) => v,
            Err(e) => {
                self.fail(format!("dkg part2: {e}"));
                return None;
            }
        };
        let eph_seed = secrets.derive(b"bankmesh.dkg-ephemeral.v1", &self.context(consortium));
        let ephemeral = x25519_dalek::StaticSecret::from(*eph_seed);
        let mut shares = Vec::new();
        for &recipient in self.participants.iter().filter(|&&i| i != me) {
            let package = packages.get(&identifier(recipient)?)?;
            let plain = Zeroizing::new(package.serialize().ok()?);
            let ctx = ShareContext {
                consortium: &consortium.id,
                run: self.run.label(),
                attempt: self.attempt,
                sender: me,
                recipient,
            };
            let key = consortium.x25519(recipient)?;
            let ciphertext = sealed::seal(&ctx, &ephemeral, key, &plain).ok()?;
            shares.push(SealedShare {
                recipient,
                ciphertext,
            });
        }
        self.secret2 = Some(secret2);
        self.posted2 = true;
        let ephemeral = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
        Some(Body::DkgRound2 {
            run: self.run,
            attempt: self.attempt,
            ephemeral,
            shares,
        })
    }

    /// Structural check of a round-2 record: one sealed share for every other participant.
    pub fn check_round2(
        &self,
        author: MemberIndex,
        attempt: u32,
        shares: &[SealedShare],
    ) -> Result<(), DkgReject> {
        if attempt != self.attempt || !self.participants.contains(&author) {
            return Err(DkgReject::NotExpected);
        }
        if self.round2_from.contains(&author) {
            return Err(DkgReject::Duplicate);
        }
        let recipients: Vec<MemberIndex> = shares.iter().map(|s| s.recipient).collect();
        let expected: Vec<MemberIndex> = self
            .participants
            .iter()
            .copied()
            .filter(|&i| i != author)
            .collect();
        if recipients != expected {
            return Err(DkgReject::Invalid(
                "round-2 recipients are not the other participants in order".into(),
            ));
        }
        Ok(())
    }

    /// Records a round-2 record; opens the share addressed to us.
    pub fn apply_round2(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secrets: &MemberSecrets,
        author: MemberIndex,
        ephemeral: &[u8; 32],
        shares: &[SealedShare],
    ) -> Result<(), String> {
        self.round2_from.insert(author);
        let Some(mine) = shares.iter().find(|s| s.recipient == me) else {
            return Ok(());
        };
        let ctx = ShareContext {
            consortium: &consortium.id,
            run: self.run.label(),
            attempt: self.attempt,
            sender: author,
            recipient: me,
        };
        let plain = sealed::open(&ctx, ephemeral, secrets.x25519(), &mine.ciphertext)
            .map_err(|_| format!("member {author}'s sealed share to us does not open"))?;
        let package = round2::Package::deserialize(&plain)
            .map_err(|e| format!("member {author}'s share: {e}"))?;
        let id = identifier(author).ok_or("bad author")?;
        self.my_round2.insert(id, package);
        Ok(())
    }

    /// Computes the run's keys once every participant's round-2 record is in; they are used
    /// only once the setup's agreement decides their transcript.
    pub fn try_finish(
        &mut self,
        consortium_id: &[u8; 32],
        me: MemberIndex,
    ) -> Result<bool, String> {
        if self.computed.is_some() {
            return Ok(false);
        }
        let all: BTreeSet<MemberIndex> = self.participants.iter().copied().collect();
        if self.round1.len() != all.len() || self.round2_from != all {
            return Ok(false);
        }
        let commitments: BTreeMap<
            frost::Identifier,
            &frost::keys::VerifiableSecretSharingCommitment,
        > = self
            .round1
            .iter()
            .filter_map(|(&i, p)| Some((identifier(i)?, p.commitment())))
            .collect();
        let public = frost::keys::PublicKeyPackage::from_dkg_commitments(&commitments)
            .map_err(|e| e.to_string())?;
        let group = public
            .verifying_key()
            .serialize()
            .ok()
            .and_then(|b| point(&b))
            .ok_or("group key")?;
        let mut verifying = BTreeMap::new();
        for &i in &self.participants {
            let id = identifier(i).ok_or("identifier")?;
            let share = public
                .verifying_shares()
                .get(&id)
                .ok_or("missing verifying share")?;
            let p = share
                .serialize()
                .ok()
                .and_then(|b| point(&b))
                .ok_or("verifying share")?;
            verifying.insert(i, p);
        }
        let share = match self.secret2.take() {
            Some(secret2) => {
                let others: BTreeMap<frost::Identifier, round1::Package> = self
                    .round1
                    .iter()
                    .filter(|(&i, _)| i != me)
                    .filter_map(|(&i, p)| Some((identifier(i)?, p.clone())))
                    .collect();
                let (key_package, _) = frost::keys::dkg::part3(&secret2, &others, &self.my_round2)
                    .map_err(|e| format!("dkg part3: {e}"))?;
                let bytes = Zeroizing::new(key_package.signing_share().serialize());
                let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| "share length")?;
                let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(arr))
                    .ok_or("share scalar")?;
                if Some(&(scalar * curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT))
                    != verifying.get(&me)
                {
                    return Err("our share does not match our verifying share".into());
                }
                Some(Zeroizing::new(scalar))
            }
            None => None,
        };
        self.my_round2.clear();
        let transcript = self
            .transcript(consortium_id)
            .ok_or("a DKG record hash is missing")?;
        self.computed = Some((
            RunKeys {
                group,
                verifying,
                share,
            },
            transcript,
        ));
        Ok(true)
    }
}
