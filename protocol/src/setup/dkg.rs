//! One FROST DKG run (DESIGN 3, 4.1) over the log: round-1 packages are broadcast records,
//! round-2 packages are sealed to each recipient and posted as one record per dealer.
//!
//! The dealer's polynomial comes from a seed derived from the member's fresh secret of the
//! epoch ([`super::epoch_keys`]), run and attempt, so a member that crashes mid-DKG recomputes
//! exactly what it already posted (resuming from the log never equivocates). Round-2 shares
//! are sealed to the keys the recipients announced in their round-1 records for the epoch. Which attempt's keys are used is not decided
//! here but by the setup's agreement (`super`), on the transcript this run computes.

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use frost::keys::dkg::{round1, round2};
use frost_ristretto255 as frost;
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::schnorr;
use crate::crypto::sealed::{self, ShareContext, SharedProof};
use crate::genesis::Consortium;
use crate::keys::EpochSecret;
use crate::record::{Body, Hash, RingKeyAnnouncement, Run, SealedShare};

use super::epoch_keys;
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

/// The fields of a round-1 record that its check needs.
#[derive(Clone, Copy)]
pub struct Round1<'a> {
    pub epoch: u64,
    pub attempt: u32,
    pub package: &'a [u8],
    pub seal_key: &'a [u8; 32],
    pub ring: Option<&'a RingKeyAnnouncement>,
}

/// Longest sealed share: a serialized round-2 package (a header and one scalar) and the AEAD
/// tag, with room to spare. Anything longer is refused (it would only bloat the log).
const SEALED_SHARE_MAX: usize = 256;

/// Whom a DKG complaint proves at fault, judged by opening the disputed share from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The share does not open, or does not match the dealer's commitment.
    Dealer,
    /// The share is good: the complaint is false.
    Complainer,
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
    epoch: u64,
    run: Run,
    attempt: u32,
    participants: Vec<MemberIndex>,
    threshold: u16,
    round1: BTreeMap<MemberIndex, round1::Package>,
    /// Each participant's key for sealing its round-2 shares, from its round-1 record.
    seal_keys: BTreeMap<MemberIndex, [u8; 32]>,
    /// Each participant's ring key for the epoch (decryption run only).
    ring_keys: BTreeMap<MemberIndex, RistrettoPoint>,
    round2_from: BTreeSet<MemberIndex>,
    /// Each dealer's round-2 record as posted (ephemeral key and sealed shares), so that a
    /// complaint against it can be judged.
    dealt: BTreeMap<MemberIndex, ([u8; 32], Vec<SealedShare>)>,
    /// Dealers whose share to us did not open or verify: we complain about each.
    bad_to_me: BTreeSet<MemberIndex>,
    /// Complaints on the log, by (complainer, dealer), with whom each proves at fault.
    complaints: BTreeMap<(MemberIndex, MemberIndex), Blame>,
    /// Dealers we complained about in this process (our complaint may not be applied yet).
    complained: BTreeSet<MemberIndex>,
    /// Participants whose done record is in.
    done_from: BTreeSet<MemberIndex>,
    my_round2: BTreeMap<frost::Identifier, round2::Package>,
    secret1: Option<round1::SecretPackage>,
    secret2: Option<round2::SecretPackage>,
    posted1: bool,
    posted2: bool,
    /// Hashes of each participant's round-1, round-2 and done records: the run's transcript.
    record_hashes: BTreeMap<MemberIndex, [Option<Hash>; 3]>,
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

/// A round-1 package as posted (its proof of knowledge is checked by [`DkgRun::check_round1`]).
pub fn parse_round1(package: &[u8]) -> Result<round1::Package, String> {
    round1::Package::deserialize(package).map_err(|e| e.to_string())
}

/// A run's public keys from its participants' round-1 commitments: the group key and each
/// participant's verifying share. Members compute them so, and auditors from the log alone.
pub fn public_keys<'a>(
    round1: impl IntoIterator<Item = (MemberIndex, &'a round1::Package)>,
) -> Result<(RistrettoPoint, BTreeMap<MemberIndex, RistrettoPoint>), String> {
    let mut members = Vec::new();
    let mut commitments = BTreeMap::new();
    for (i, p) in round1 {
        commitments.insert(identifier(i).ok_or("identifier")?, p.commitment());
        members.push(i);
    }
    let public = frost::keys::PublicKeyPackage::from_dkg_commitments(&commitments)
        .map_err(|e| e.to_string())?;
    let group = public
        .verifying_key()
        .serialize()
        .ok()
        .and_then(|b| point(&b))
        .ok_or("group key")?;
    let mut verifying = BTreeMap::new();
    for i in members {
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
    Ok((group, verifying))
}

/// The transcript a setup agreement decides on: the hashes of each participant's round-1,
/// round-2 and done records of one run and attempt, in member order.
pub fn transcript_hash(
    consortium_id: &[u8; 32],
    epoch: u64,
    run: Run,
    attempt: u32,
    records: &BTreeMap<MemberIndex, [Hash; 3]>,
) -> Hash {
    let mut h = Sha256::new();
    h.update(b"bankmesh.dkg-transcript.v2");
    h.update(consortium_id);
    h.update(epoch.to_be_bytes());
    h.update(run.label());
    h.update(attempt.to_be_bytes());
    for (p, [r1, r2, done]) in records {
        h.update(p.to_be_bytes());
        h.update(r1);
        h.update(r2);
        h.update(done);
    }
    h.finalize().into()
}

impl DkgRun {
    pub fn new(
        consortium: &Consortium,
        epoch: u64,
        run: Run,
        attempt: u32,
        participants: Vec<MemberIndex>,
    ) -> Self {
        DkgRun {
            epoch,
            run,
            attempt,
            participants,
            threshold: consortium.genesis.threshold,
            round1: BTreeMap::new(),
            seal_keys: BTreeMap::new(),
            ring_keys: BTreeMap::new(),
            round2_from: BTreeSet::new(),
            dealt: BTreeMap::new(),
            bad_to_me: BTreeSet::new(),
            complaints: BTreeMap::new(),
            complained: BTreeSet::new(),
            done_from: BTreeSet::new(),
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

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Drops every secret of the run: the FROST secret packages, the shares sealed to us as
    /// opened, and our computed key share (the public keys stay).
    pub fn forget_secrets(&mut self) {
        self.secret1 = None;
        self.secret2 = None;
        self.my_round2.clear();
        if let Some((keys, _)) = &mut self.computed {
            keys.share = None;
        }
    }

    /// Whether the run still holds a secret (see [`DkgRun::forget_secrets`]).
    pub fn holds_secrets(&self) -> bool {
        self.secret1.is_some()
            || self.secret2.is_some()
            || !self.my_round2.is_empty()
            || self
                .computed
                .as_ref()
                .is_some_and(|(k, _)| k.share.is_some())
    }

    /// The ring keys the participants announced for the epoch (decryption run).
    pub fn ring_keys(&self) -> &BTreeMap<MemberIndex, RistrettoPoint> {
        &self.ring_keys
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

    /// Notes the hash of a participant's round-1 (`round` 0), round-2 (1) or done (2) record.
    pub fn note_record(&mut self, author: MemberIndex, round: usize, hash: Hash) {
        let slot = self.record_hashes.entry(author).or_default();
        if let Some(h) = slot.get_mut(round) {
            h.get_or_insert(hash);
        }
    }

    /// SHA-256 over every participant's round-1, round-2 and done record hash, in index
    /// order.
    fn transcript(&self, consortium_id: &[u8; 32]) -> Option<Hash> {
        let mut records = BTreeMap::new();
        for p in &self.participants {
            let [r1, r2, done] = self.record_hashes.get(p)?;
            records.insert(*p, [(*r1)?, (*r2)?, (*done)?]);
        }
        Some(transcript_hash(
            consortium_id,
            self.epoch,
            self.run,
            self.attempt,
            &records,
        ))
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

    fn max_signers(&self) -> u16 {
        u16::try_from(self.participants.len()).unwrap_or(u16::MAX)
    }

    /// Round 1: our package, if we are a participant and have not posted it.
    pub fn round1_body(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secret: &EpochSecret,
    ) -> Option<Body> {
        if self.posted1 || self.failed.is_some() || !self.participants.contains(&me) {
            return None;
        }
        let (epoch, run, attempt) = (self.epoch, self.run, self.attempt);
        let seed = epoch_keys::polynomial_seed(secret, consortium, epoch, run, attempt);
        let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
        let id = identifier(me)?;
        match frost::keys::dkg::part1(id, self.max_signers(), self.threshold, &mut rng) {
            Ok((secret1, package)) => {
                self.secret1 = Some(secret1);
                self.posted1 = true;
                let package = package.serialize().ok()?;
                let seal = epoch_keys::seal_secret(secret, consortium, epoch, run, attempt);
                let ring = (run == Run::Decryption)
                    .then(|| Box::new(epoch_keys::announce_ring(secret, consortium, epoch, me)));
                Some(Body::DkgRound1 {
                    epoch,
                    run,
                    attempt,
                    package,
                    seal_key: epoch_keys::seal_public(&seal),
                    ring,
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
        secret: &EpochSecret,
    ) {
        if !self.posted1 {
            let _ = self.round1_body(consortium, me, secret);
        }
    }

    /// Our own round-2 record, replayed: recompute the round-2 secret package behind it.
    pub fn resume_round2(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secret: &EpochSecret,
    ) {
        if !self.posted2 {
            let _ = self.round2_body(consortium, me, secret);
        }
    }

    /// Verifies a round-1 record: epoch, attempt, participant, proof of knowledge, threshold,
    /// and the author's keys for the epoch (a seal key of full order; a proven ring key in the
    /// decryption run, none in the other).
    pub fn check_round1(
        &self,
        consortium: &Consortium,
        author: MemberIndex,
        round1: Round1<'_>,
    ) -> Result<round1::Package, DkgReject> {
        let Round1 {
            epoch,
            attempt,
            package,
            seal_key,
            ring,
        } = round1;
        if epoch != self.epoch || attempt != self.attempt || !self.participants.contains(&author) {
            return Err(DkgReject::NotExpected);
        }
        epoch_keys::check_seal_key(seal_key).map_err(DkgReject::Invalid)?;
        match (self.run, ring) {
            (Run::Decryption, Some(a)) => {
                epoch_keys::check_ring(consortium, epoch, author, a).map_err(DkgReject::Invalid)?
            }
            (Run::Pseudonym, None) => {}
            _ => {
                return Err(DkgReject::Invalid(
                    "a ring key belongs in the decryption run's round 1, and only there".into(),
                ))
            }
        }
        let pkg =
            round1::Package::deserialize(package).map_err(|e| DkgReject::Invalid(e.to_string()))?;
        if let Some(existing) = self.round1.get(&author) {
            let same_keys = self.seal_keys.get(&author) == Some(seal_key)
                && self.ring_keys.get(&author) == ring.map(|a| &a.key);
            return if existing == &pkg && same_keys {
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

    pub fn apply_round1(
        &mut self,
        author: MemberIndex,
        package: round1::Package,
        seal_key: [u8; 32],
        ring: Option<&RingKeyAnnouncement>,
    ) {
        if self.round1.contains_key(&author) {
            return;
        }
        self.round1.insert(author, package);
        self.seal_keys.insert(author, seal_key);
        if let Some(a) = ring {
            self.ring_keys.insert(author, a.key);
        }
    }

    /// Round 2: once every participant's round-1 package is in, our sealed shares.
    pub fn round2_body(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secret: &EpochSecret,
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
        let ephemeral =
            epoch_keys::ephemeral(secret, consortium, self.epoch, self.run, self.attempt);
        let mut shares = Vec::new();
        for &recipient in self.participants.iter().filter(|&&i| i != me) {
            let package = packages.get(&identifier(recipient)?)?;
            let plain = Zeroizing::new(package.serialize().ok()?);
            let ctx = ShareContext {
                consortium: &consortium.id,
                epoch: self.epoch,
                run: self.run.label(),
                attempt: self.attempt,
                sender: me,
                recipient,
            };
            let key = sealed::peer_point(self.seal_keys.get(&recipient)?).ok()?;
            let ciphertext = sealed::seal(&ctx, &ephemeral, &key, &plain).ok()?;
            shares.push(SealedShare {
                recipient,
                ciphertext,
            });
        }
        self.secret2 = Some(secret2);
        self.posted2 = true;
        let (key, proof) =
            epoch_keys::prove_ephemeral(secret, consortium, self.epoch, self.run, self.attempt, me);
        Some(Body::DkgRound2 {
            epoch: self.epoch,
            run: self.run,
            attempt: self.attempt,
            ephemeral: key,
            ephemeral_proof: proof,
            shares,
        })
    }

    /// Structural check of a round-2 record: one sealed share for every other participant.
    #[allow(clippy::too_many_arguments)]
    pub fn check_round2(
        &self,
        consortium: &Consortium,
        author: MemberIndex,
        epoch: u64,
        attempt: u32,
        ephemeral: &[u8; 32],
        ephemeral_proof: &schnorr::Signature,
        shares: &[SealedShare],
    ) -> Result<(), DkgReject> {
        if epoch != self.epoch || attempt != self.attempt || !self.participants.contains(&author) {
            return Err(DkgReject::NotExpected);
        }
        if self.round2_from.contains(&author) {
            return Err(DkgReject::Duplicate);
        }
        let e = sealed::peer_point(ephemeral).map_err(|_| {
            DkgReject::Invalid(
                "round-2 ephemeral key is not a canonical point other than the identity".into(),
            )
        })?;
        epoch_keys::check_ephemeral(
            consortium,
            epoch,
            self.run,
            attempt,
            author,
            &e,
            ephemeral_proof,
        )
        .map_err(DkgReject::Invalid)?;
        if shares.iter().any(|s| s.ciphertext.len() > SEALED_SHARE_MAX) {
            return Err(DkgReject::Invalid(format!(
                "a sealed share longer than {SEALED_SHARE_MAX} bytes"
            )));
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

    /// Records a round-2 record; opens the share addressed to us, if we still hold the
    /// epoch's secret (after it is erased, nothing opens it), and checks it against the
    /// dealer's commitment. A share that fails is complained about ([`DkgRun::complaints_to_post`]).
    pub fn apply_round2(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secret: Option<&EpochSecret>,
        author: MemberIndex,
        ephemeral: &[u8; 32],
        shares: &[SealedShare],
    ) -> Result<(), String> {
        // The first one counts (two can pass their checks side by side in one batch).
        if !self.round2_from.insert(author) {
            return Ok(());
        }
        self.dealt.insert(author, (*ephemeral, shares.to_vec()));
        let Some(mine) = shares.iter().find(|s| s.recipient == me) else {
            return Ok(());
        };
        let Some(secret) = secret else {
            return Ok(());
        };
        let seal = epoch_keys::seal_secret(secret, consortium, self.epoch, self.run, self.attempt);
        let ctx = self.share_context(consortium, author, me);
        let opened = sealed::open(&ctx, ephemeral, &seal, &mine.ciphertext)
            .map_err(|_| format!("member {author}'s sealed share to us does not open"))
            .and_then(|plain| self.verify_share(author, me, &plain));
        match opened {
            Ok(package) => {
                let id = identifier(author).ok_or("bad author")?;
                self.my_round2.insert(id, package);
                Ok(())
            }
            Err(why) => {
                self.bad_to_me.insert(author);
                Err(why)
            }
        }
    }

    fn share_context<'a>(
        &self,
        consortium: &'a Consortium,
        dealer: MemberIndex,
        recipient: MemberIndex,
    ) -> ShareContext<'a> {
        ShareContext {
            consortium: &consortium.id,
            epoch: self.epoch,
            run: self.run.label(),
            attempt: self.attempt,
            sender: dealer,
            recipient,
        }
    }

    /// Decodes a share `dealer` sent `recipient` and checks it against the dealer's commitment.
    fn verify_share(
        &self,
        dealer: MemberIndex,
        recipient: MemberIndex,
        plain: &[u8],
    ) -> Result<round2::Package, String> {
        let package = round2::Package::deserialize(plain)
            .map_err(|e| format!("member {dealer}'s share: {e}"))?;
        let commitment = self
            .round1
            .get(&dealer)
            .ok_or("the dealer's round-1 package is missing")?
            .commitment()
            .clone();
        let id = identifier(recipient).ok_or("bad recipient")?;
        frost::keys::SecretShare::new(id, *package.signing_share(), commitment)
            .verify()
            .map_err(|_| format!("member {dealer}'s share does not match its commitment"))?;
        Ok(package)
    }

    /// Our complaints not yet on the log: one per dealer whose share to us failed, revealing
    /// the shared point of that share only.
    pub fn complaints_to_post(
        &mut self,
        consortium: &Consortium,
        me: MemberIndex,
        secret: &EpochSecret,
    ) -> Vec<Body> {
        let seal = epoch_keys::seal_secret(secret, consortium, self.epoch, self.run, self.attempt);
        let due: Vec<MemberIndex> = self
            .bad_to_me
            .iter()
            .copied()
            .filter(|d| !self.complaints.contains_key(&(me, *d)) && !self.complained.contains(d))
            .collect();
        self.complained.extend(due.iter().copied());
        due.into_iter()
            .filter_map(|dealer| {
                let (ephemeral, _) = self.dealt.get(&dealer)?;
                let e = sealed::peer_point(ephemeral).ok()?;
                let ctx = self.share_context(consortium, dealer, me);
                let (shared, proof) = sealed::reveal(&ctx, &seal, &e);
                Some(Body::DkgComplaint {
                    epoch: self.epoch,
                    run: self.run,
                    attempt: self.attempt,
                    dealer,
                    shared: shared.compress().to_bytes(),
                    proof,
                })
            })
            .collect()
    }

    /// Checks a complaint's proof: the revealed point is the complainer's seal key times the
    /// dealer's ephemeral. `Ok(None)` if the dealer's round-2 record is not here yet.
    pub fn check_complaint(
        &self,
        consortium: &Consortium,
        complainer: MemberIndex,
        dealer: MemberIndex,
        shared: &[u8; 32],
        proof: &SharedProof,
    ) -> Result<Option<()>, DkgReject> {
        if complainer == dealer
            || !self.participants.contains(&complainer)
            || !self.participants.contains(&dealer)
        {
            return Err(DkgReject::NotExpected);
        }
        if self.complaints.contains_key(&(complainer, dealer)) {
            return Err(DkgReject::Duplicate);
        }
        if self.done_from.contains(&complainer) {
            return Err(DkgReject::Invalid(
                "a complaint after its author's done record".into(),
            ));
        }
        // The complainer's round 1 precedes this in its chain.
        let key = self
            .seal_keys
            .get(&complainer)
            .ok_or(DkgReject::NotExpected)?;
        let Some((ephemeral, _)) = self.dealt.get(&dealer) else {
            return Ok(None);
        };
        let invalid = |why: &str| DkgReject::Invalid(format!("complaint: {why}"));
        let key = sealed::peer_point(key).map_err(|_| invalid("seal key"))?;
        let e = sealed::peer_point(ephemeral).map_err(|_| invalid("ephemeral"))?;
        let s = sealed::peer_point(shared).map_err(|_| invalid("revealed point"))?;
        let ctx = self.share_context(consortium, dealer, complainer);
        sealed::check_reveal(&ctx, &key, &e, &s, proof).map_err(|e| invalid(&e.to_string()))?;
        Ok(Some(()))
    }

    /// Whether a complaint can be judged here yet (the dealer's round-2 record is in).
    pub fn can_judge(&self, complainer: MemberIndex, dealer: MemberIndex) -> bool {
        self.seal_keys.contains_key(&complainer) && self.dealt.contains_key(&dealer)
    }

    /// Judges a checked complaint by opening the disputed share with the revealed point.
    pub fn apply_complaint(
        &mut self,
        consortium: &Consortium,
        complainer: MemberIndex,
        dealer: MemberIndex,
        shared: &[u8; 32],
    ) -> Option<Blame> {
        if let Some(b) = self.complaints.get(&(complainer, dealer)) {
            return Some(*b);
        }
        let key = self.seal_keys.get(&complainer)?;
        let (ephemeral, shares) = self.dealt.get(&dealer)?;
        let s = sealed::peer_point(shared).ok()?;
        let ctx = self.share_context(consortium, dealer, complainer);
        let good = shares
            .iter()
            .find(|x| x.recipient == complainer)
            .and_then(|x| sealed::open_shared(&ctx, ephemeral, key, &s, &x.ciphertext).ok())
            .is_some_and(|plain| self.verify_share(dealer, complainer, &plain).is_ok());
        let blame = if good {
            Blame::Complainer
        } else {
            Blame::Dealer
        };
        self.complaints.insert((complainer, dealer), blame);
        Some(blame)
    }

    /// Members this run's complaints prove at fault: dealers of bad shares and false
    /// complainers.
    pub fn convicted(&self) -> BTreeSet<MemberIndex> {
        self.complaints
            .iter()
            .map(|(&(complainer, dealer), &b)| match b {
                Blame::Dealer => dealer,
                Blame::Complainer => complainer,
            })
            .collect()
    }

    /// Whether a dealer of a bad share is proven, or one dealt us a share that failed.
    pub fn has_bad_dealer(&self) -> bool {
        !self.bad_to_me.is_empty() || self.complaints.values().any(|b| *b == Blame::Dealer)
    }

    /// Our done record, once every round-2 record is applied and our complaints are out.
    pub fn done_body(&mut self, me: MemberIndex) -> Option<Body> {
        let all = self.participants.len();
        let complained = self
            .bad_to_me
            .iter()
            .all(|d| self.complained.contains(d) || self.complaints.contains_key(&(me, *d)));
        if !self.participants.contains(&me)
            || self.done_from.contains(&me)
            || self.round2_from.len() != all
            || !complained
        {
            return None;
        }
        // Marked now; the record itself is applied when it is signed.
        self.done_from.insert(me);
        Some(Body::DkgDone {
            epoch: self.epoch,
            run: self.run,
            attempt: self.attempt,
        })
    }

    /// Checks a done record: a participant's, once, after its round-2 record.
    pub fn check_done(&self, author: MemberIndex, attempt: u32) -> Result<Option<()>, DkgReject> {
        if attempt != self.attempt || !self.participants.contains(&author) {
            return Err(DkgReject::NotExpected);
        }
        if self.done_from.contains(&author) {
            return Err(DkgReject::Duplicate);
        }
        Ok(self.round2_from.contains(&author).then_some(()))
    }

    pub fn apply_done(&mut self, author: MemberIndex) {
        self.done_from.insert(author);
    }

    /// Whether `member` posted its done record.
    pub fn has_done(&self, member: MemberIndex) -> bool {
        self.done_from.contains(&member)
    }
    /// Whether every participant's round-2 record is in.
    pub fn round2_complete(&self) -> bool {
        self.round2_from.len() == self.participants.len()
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
        if self.round1.len() != all.len() || self.round2_from != all || self.done_from != all {
            return Ok(false);
        }
        let (group, verifying) = public_keys(self.round1.iter().map(|(&i, p)| (i, p)))?;
        let share = match self.secret2.take() {
            // A dealer's share to us failed: we hold no share of this run (the complaint shows
            // why), but its public keys are the same as everyone's.
            Some(_) if !self.bad_to_me.is_empty() => None,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    fn consortium() -> Consortium {
        crate::genesis::test_consortium(4)
    }

    fn run(c: &Consortium, run: Run) -> DkgRun {
        DkgRun::new(c, 2, run, 0, vec![1, 2, 3, 4])
    }

    struct Fields {
        epoch: u64,
        attempt: u32,
        package: Vec<u8>,
        seal_key: [u8; 32],
        ring: Option<Box<RingKeyAnnouncement>>,
    }

    fn round1(c: &Consortium, which: Run, secret: &EpochSecret) -> Fields {
        match run(c, which).round1_body(c, 1, secret) {
            Some(Body::DkgRound1 {
                epoch,
                attempt,
                package,
                seal_key,
                ring,
                ..
            }) => Fields {
                epoch,
                attempt,
                package,
                seal_key,
                ring,
            },
            other => panic!("not a round-1 body: {other:?}"),
        }
    }

    fn check(c: &Consortium, which: Run, author: MemberIndex, f: &Fields) -> bool {
        let r = Round1 {
            epoch: f.epoch,
            attempt: f.attempt,
            package: &f.package,
            seal_key: &f.seal_key,
            ring: f.ring.as_deref(),
        };
        run(c, which).check_round1(c, author, r).is_ok()
    }

    #[test]
    fn round1_keys_of_the_epoch_are_checked_and_tampering_fails() {
        let c = consortium();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let secret = EpochSecret::generate(&mut rng);
        let x = round1(&c, Run::Decryption, &secret);
        let k = round1(&c, Run::Pseudonym, &secret);
        assert!(check(&c, Run::Decryption, 1, &x) && check(&c, Run::Pseudonym, 1, &k));
        assert!(x.ring.is_some() && k.ring.is_none());
        assert_ne!(x.seal_key, k.seal_key, "a seal key per run");
        // Another author claiming it.
        assert!(!check(&c, Run::Decryption, 2, &x));
        // A ring key proven for another epoch, or another member's.
        let mut other_epoch = round1(&c, Run::Decryption, &secret);
        other_epoch.ring = Some(Box::new(epoch_keys::announce_ring(&secret, &c, 3, 1)));
        assert!(!check(&c, Run::Decryption, 1, &other_epoch));
        let mut stolen = round1(&c, Run::Decryption, &secret);
        stolen.ring = Some(Box::new(epoch_keys::announce_ring(&secret, &c, 2, 2)));
        assert!(!check(&c, Run::Decryption, 1, &stolen));
        // A ring key missing from the decryption run, or present in the pseudonym run.
        let mut missing = round1(&c, Run::Decryption, &secret);
        missing.ring = None;
        assert!(!check(&c, Run::Decryption, 1, &missing));
        let mut extra = round1(&c, Run::Pseudonym, &secret);
        extra.ring = x.ring.clone();
        assert!(!check(&c, Run::Pseudonym, 1, &extra));
        // A seal key of low order, and a record of another epoch.
        let mut weak = round1(&c, Run::Decryption, &secret);
        weak.seal_key = [0; 32];
        assert!(!check(&c, Run::Decryption, 1, &weak));
        let mut late = round1(&c, Run::Decryption, &secret);
        late.epoch = 3;
        assert!(!check(&c, Run::Decryption, 1, &late));
    }

    #[test]
    fn a_restart_rebuilds_the_same_round1_and_a_new_secret_another() {
        let c = consortium();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([2; 32]);
        let secret = EpochSecret::generate(&mut rng);
        let a = run(&c, Run::Decryption).round1_body(&c, 1, &secret);
        let b = run(&c, Run::Decryption).round1_body(&c, 1, &secret);
        assert_eq!(a, b, "the same secret gives the same record");
        let other = EpochSecret::generate(&mut rng);
        assert_ne!(a, run(&c, Run::Decryption).round1_body(&c, 1, &other));
    }

    #[test]
    fn a_round2_for_another_epoch_is_not_expected() {
        let c = consortium();
        let dkg = run(&c, Run::Decryption);
        let shares: Vec<SealedShare> = [2, 3, 4]
            .iter()
            .map(|&recipient| SealedShare {
                recipient,
                ciphertext: vec![0; 8],
            })
            .collect();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([6; 32]);
        let secret = EpochSecret::generate(&mut rng);
        let (e, proof) = epoch_keys::prove_ephemeral(&secret, &c, 2, Run::Decryption, 0, 1);
        assert!(dkg.check_round2(&c, 1, 2, 0, &e, &proof, &shares).is_ok());
        assert_eq!(
            dkg.check_round2(&c, 1, 3, 0, &e, &proof, &shares),
            Err(DkgReject::NotExpected)
        );
        // Another dealer's ephemeral (its proof is bound to member 1), or a forged proof.
        assert!(dkg.check_round2(&c, 2, 2, 0, &e, &proof, &shares).is_err());
        let (e2, _) = epoch_keys::prove_ephemeral(&secret, &c, 2, Run::Decryption, 1, 1);
        assert!(dkg.check_round2(&c, 1, 2, 0, &e2, &proof, &shares).is_err());
        let long = vec![SealedShare {
            recipient: 2,
            ciphertext: vec![0; 300],
        }];
        assert!(dkg.check_round2(&c, 1, 2, 0, &e, &proof, &long).is_err());
    }

    /// Four members' runs of one attempt, every round-1 package applied everywhere.
    fn four_after_round1(c: &Consortium) -> Vec<(EpochSecret, DkgRun)> {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
        let mut members: Vec<(EpochSecret, DkgRun)> = (1..=4)
            .map(|_| (EpochSecret::generate(&mut rng), run(c, Run::Decryption)))
            .collect();
        for author in 1..=4u16 {
            let (secret, dkg) = &mut members[usize::from(author) - 1];
            let Some(Body::DkgRound1 {
                package,
                seal_key,
                ring,
                ..
            }) = dkg.round1_body(c, author, secret)
            else {
                panic!("no round 1")
            };
            for (_, d) in members.iter_mut() {
                let r = Round1 {
                    epoch: 2,
                    attempt: 0,
                    package: &package,
                    seal_key: &seal_key,
                    ring: ring.as_deref(),
                };
                let pkg = d.check_round1(c, author, r).unwrap();
                d.apply_round1(author, pkg, seal_key, ring.as_deref());
            }
        }
        members
    }

    /// Every member's round-2 record, member 4's share to member 1 replaced by `bad`.
    fn deal_round2(
        c: &Consortium,
        members: &mut [(EpochSecret, DkgRun)],
        bad: Option<Vec<u8>>,
    ) -> Vec<Result<(), String>> {
        let mut outcomes = vec![Ok(()); 4];
        for author in 1..=4u16 {
            let (secret, dkg) = &mut members[usize::from(author) - 1];
            let Some(Body::DkgRound2 {
                ephemeral,
                ephemeral_proof,
                mut shares,
                ..
            }) = dkg.round2_body(c, author, secret)
            else {
                panic!("no round 2")
            };
            if let (4, Some(bad)) = (author, &bad) {
                shares[0].ciphertext = bad.clone();
            }
            for (i, (secret, d)) in members.iter_mut().enumerate() {
                let me = i as u16 + 1;
                d.check_round2(c, author, 2, 0, &ephemeral, &ephemeral_proof, &shares)
                    .unwrap();
                if let Err(e) = d.apply_round2(c, me, Some(secret), author, &ephemeral, &shares) {
                    outcomes[i] = Err(e);
                }
            }
        }
        outcomes
    }

    fn fields(body: Body) -> (MemberIndex, [u8; 32], SharedProof) {
        match body {
            Body::DkgComplaint {
                dealer,
                shared,
                proof,
                ..
            } => (dealer, shared, proof),
            other => panic!("not a complaint: {other:?}"),
        }
    }

    #[test]
    fn a_bad_share_is_complained_about_and_the_log_names_its_dealer() {
        let c = consortium();
        let mut members = four_after_round1(&c);
        let outcomes = deal_round2(&c, &mut members, Some(vec![7; 60]));
        assert!(outcomes[0].is_err() && outcomes[1..].iter().all(Result::is_ok));
        let (secret, dkg) = &mut members[0];
        let complaints = dkg.complaints_to_post(&c, 1, secret);
        assert_eq!(complaints.len(), 1, "one complaint, against member 4");
        let (dealer, shared, proof) = fields(complaints[0].clone());
        assert_eq!(dealer, 4);
        // Member 2 judges it from what the log holds.
        let judge = &mut members[1].1;
        assert_eq!(
            judge.check_complaint(&c, 1, 4, &shared, &proof),
            Ok(Some(()))
        );
        // Tampered: another point, proof, dealer or complainer.
        let mut other = shared;
        other[0] ^= 1;
        assert!(judge.check_complaint(&c, 1, 4, &other, &proof).is_err());
        let bad_proof = SharedProof {
            z: proof.z + Scalar::ONE,
            ..proof.clone()
        };
        assert!(judge
            .check_complaint(&c, 1, 4, &shared, &bad_proof)
            .is_err());
        assert!(judge.check_complaint(&c, 1, 3, &shared, &proof).is_err());
        assert!(judge.check_complaint(&c, 2, 4, &shared, &proof).is_err());
        assert_eq!(
            judge.check_complaint(&c, 1, 1, &shared, &proof),
            Err(DkgReject::NotExpected)
        );
        assert_eq!(
            judge.apply_complaint(&c, 1, 4, &shared),
            Some(Blame::Dealer)
        );
        assert!(judge.convicted().contains(&4) && judge.has_bad_dealer());
        assert_eq!(
            judge.check_complaint(&c, 1, 4, &shared, &proof),
            Err(DkgReject::Duplicate)
        );
        // The complainer still computes the run's public keys, without a share of its own.
        for (me, (_, d)) in (1..).zip(members.iter_mut().take(2)) {
            assert_eq!(
                d.try_finish(&c.id, me),
                Ok(false),
                "not before the done records"
            );
            for m in 1..=4 {
                d.note_record(m, 0, [1; 32]);
                d.note_record(m, 1, [2; 32]);
                d.note_record(m, 2, [3; 32]);
                d.apply_done(m);
            }
            d.try_finish(&c.id, me).unwrap();
        }
        let (k1, t1) = members[0].1.computed().cloned().unwrap();
        let (k2, t2) = members[1].1.computed().cloned().unwrap();
        assert_eq!((k1.group, &k1.verifying, t1), (k2.group, &k2.verifying, t2));
        assert!(k2.share.is_some(), "the others hold their shares");
        assert!(k1.share.is_none(), "no share from a run with a bad share");
    }

    #[test]
    fn a_complaint_about_a_good_share_names_the_complainer() {
        let c = consortium();
        let mut members = four_after_round1(&c);
        let outcomes = deal_round2(&c, &mut members, None);
        assert!(outcomes.iter().all(Result::is_ok));
        let (secret, dkg) = &mut members[0];
        assert!(dkg.complaints_to_post(&c, 1, secret).is_empty());
        // Member 3 reveals the key of member 2's good share to it, and complains.
        let seal = epoch_keys::seal_secret(&members[2].0, &c, 2, Run::Decryption, 0);
        let (ephemeral, _) = members[0].1.dealt.get(&2).cloned().unwrap();
        let ctx = members[0].1.share_context(&c, 2, 3);
        let (shared, proof) = sealed::reveal(&ctx, &seal, &sealed::peer_point(&ephemeral).unwrap());
        let shared = shared.compress().to_bytes();
        let judge = &mut members[0].1;
        assert_eq!(
            judge.check_complaint(&c, 3, 2, &shared, &proof),
            Ok(Some(()))
        );
        assert_eq!(
            judge.apply_complaint(&c, 3, 2, &shared),
            Some(Blame::Complainer)
        );
        assert!(judge.convicted().contains(&3) && !judge.has_bad_dealer());
    }
}
