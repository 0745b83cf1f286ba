//! One epoch at one member (DESIGN 4.2-4.7): pseudonyms, submissions, the seal, aggregation,
//! key-switched decryption and results.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT as G;
use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::bank::{
    ClientResult, Ctx, Culprit, EpochStatus, Event, Fault, FaultKind, Origin, Out, Phase,
};
use crate::crypto::elgamal::Ciphertext;
use crate::crypto::keyswitch::KeySwitchShare;
use crate::crypto::oprf::{self, Blind, DleqProof};
use crate::crypto::{dlog, keyswitch, schnorr, tag, transcript, validity, CryptoError};
use crate::genesis::Consortium;
use crate::merkle::set_root;
use crate::messages::{Request, Response, OPRF_BATCH_MAX, SYNC_BATCH_MAX};
use crate::record::{Body, Hash, ShareEntry, Submission};
use crate::time::Time;
use crate::MemberIndex;

/// Outcome of checking a decryption-share record.
#[derive(Debug, PartialEq, Eq)]
pub enum ShareCheck {
    /// Every share verifies against our sealed set.
    Valid,
    /// Names a set we did not seal, or the epoch failed here: keep, do not use.
    Unusable,
    /// Not sealed yet: judge later.
    Wait,
}

/// What the epoch wants published, in order.
pub enum Outgoing {
    Body(Body),
    Submission(Box<Submission>),
}

/// Units of expensive work per input (one unit is about one range proof, ~5 ms): long work is
/// cut into slices that keep the driver responsive and let it show progress.
const WORK_PER_CALL: usize = 16;
/// Work units of one decryption-share record.
const WORK_PER_SHARE_RECORD: usize = 8;
/// Decryption shares per record (about 160 bytes each, well under the gossip limit).
const SHARES_PER_RECORD: usize = 128;
/// Wait before asking members that have not answered an OPRF batch again.
const OPRF_RETRY_MS: u64 = 500;
/// Least time between two checkpoints of one epoch by one member.
const COSIGN_EVERY_MS: u64 = 250;
/// Wait before asking the same peer for the same set again.
const SYNC_RETRY_MS: u64 = 1_000;

struct Client {
    id: String,
    score: u16,
}

struct OprfBatch {
    clients: Vec<usize>,
    blinds: Vec<Blind>,
    blinded: Vec<RistrettoPoint>,
    partials: BTreeMap<MemberIndex, Vec<RistrettoPoint>>,
    done: bool,
    asked_at: Time,
}

struct Mine {
    client: usize,
    one_time: Zeroizing<Scalar>,
    tag: [u8; 32],
}

struct ClientKeys {
    tag_key: schnorr::TagKey,
    tag: RistrettoPoint,
    one_time: Zeroizing<Scalar>,
    one_time_public: RistrettoPoint,
}

struct Entry {
    tag: [u8; 32],
    ciphertext: Ciphertext,
    one_time: RistrettoPoint,
}

struct Sealed {
    root: Hash,
    hashes: BTreeSet<Hash>,
    aggregates: BTreeMap<[u8; 32], (Ciphertext, u32)>,
}

pub struct EpochState {
    epoch: u64,
    clients: Vec<Client>,
    oprf_started: bool,
    oprf: Vec<OprfBatch>,
    to_submit: VecDeque<(usize, Zeroizing<[u8; 64]>)>,
    submitted: usize,
    ready_posted: bool,
    mine: BTreeMap<Hash, Mine>,
    served: BTreeMap<MemberIndex, u32>,
    usage: BTreeMap<MemberIndex, Vec<(MemberIndex, u32)>>,
    set: BTreeMap<Hash, Entry>,
    ready: BTreeSet<MemberIndex>,
    closed: bool,
    checkpoints: BTreeMap<MemberIndex, Vec<(Hash, u64)>>,
    cosigned: Vec<(Hash, Vec<Hash>)>,
    last_cosign: Time,
    asked: BTreeMap<(MemberIndex, Hash), Time>,
    target: Option<(Hash, Option<BTreeSet<Hash>>)>,
    sealed: Option<Sealed>,
    share_queue: VecDeque<Hash>,
    shares_seen: BTreeSet<(MemberIndex, Hash)>,
    /// Verified decryption shares of every sealed submission, kept until our own submissions
    /// are known (after a restart they are recognized only once pseudonyms are back).
    received: BTreeMap<Hash, BTreeMap<MemberIndex, (Hash, KeySwitchShare)>>,
    /// OPRF outputs of our clients, by client position; persisted locally.
    pseudonyms: BTreeMap<usize, Zeroizing<[u8; 64]>>,
    results: BTreeMap<usize, (u64, u32)>,
    dropped_reported: bool,
    done_reported: bool,
    failed: Option<(Phase, String)>,
    own_failure: Option<(Phase, String)>,
}

/// Transcript for a submission's validity proof, bound to its tag and one-time key.
fn validity_transcript(
    c: &Consortium,
    epoch: u64,
    tag: &RistrettoPoint,
    one_time: &RistrettoPoint,
) -> Transcript {
    let mut t = transcript(&c.id, epoch, b"submission-validity");
    t.append_message(b"tag", tag.compress().as_bytes());
    t.append_message(b"one-time", one_time.compress().as_bytes());
    t
}

fn share_transcript(c: &Consortium, epoch: u64, root: &Hash, submission: &Hash) -> Transcript {
    let mut t = transcript(&c.id, epoch, b"key-switch");
    t.append_message(b"root", root);
    t.append_message(b"submission", submission);
    t
}

/// Verifies a submission's validity proof and holder signature (DESIGN 3).
pub fn verify_submission(
    c: &Consortium,
    x: &RistrettoPoint,
    s: &Submission,
) -> Result<(), CryptoError> {
    let mut t = validity_transcript(c, s.epoch, &s.tag, &s.one_time);
    validity::verify(&mut t, x, &s.ciphertext, &s.validity)?;
    let mut t = transcript(&c.id, s.epoch, b"holder");
    schnorr::verify(&mut t, &s.tag, &s.signed_bytes(), &s.holder)
}

impl EpochState {
    pub fn new(epoch: u64) -> Self {
        EpochState {
            epoch,
            clients: Vec::new(),
            oprf_started: false,
            oprf: Vec::new(),
            to_submit: VecDeque::new(),
            submitted: 0,
            ready_posted: false,
            mine: BTreeMap::new(),
            served: BTreeMap::new(),
            usage: BTreeMap::new(),
            set: BTreeMap::new(),
            ready: BTreeSet::new(),
            closed: false,
            checkpoints: BTreeMap::new(),
            cosigned: Vec::new(),
            last_cosign: Time(0),
            asked: BTreeMap::new(),
            target: None,
            sealed: None,
            share_queue: VecDeque::new(),
            shares_seen: BTreeSet::new(),
            received: BTreeMap::new(),
            pseudonyms: BTreeMap::new(),
            results: BTreeMap::new(),
            dropped_reported: false,
            done_reported: false,
            failed: None,
            own_failure: None,
        }
    }

    pub fn has_clients(&self) -> bool {
        !self.clients.is_empty() || self.oprf_started
    }
    pub fn is_closed(&self) -> bool {
        self.closed
    }
    /// Takes our clients for this epoch, with the OPRF outputs already known for some of them
    /// (after a restart); the others still need pseudonyms.
    pub fn set_clients(&mut self, scores: Vec<(String, u16)>, known: Vec<(usize, [u8; 64])>) {
        self.clients = scores
            .into_iter()
            .map(|(id, score)| Client { id, score })
            .collect();
        for (client, y) in known {
            if client < self.clients.len() && !self.pseudonyms.contains_key(&client) {
                self.pseudonyms.insert(client, Zeroizing::new(y));
                self.to_submit.push_back((client, Zeroizing::new(y)));
            }
        }
        // Nothing left to look up (no clients, or all pseudonyms known): ready at once.
        self.oprf_started = self.pseudonyms.len() == self.clients.len();
    }

    /// Whether every one of our submissions for this epoch is known (made or recognized).
    fn mine_complete(&self) -> bool {
        self.oprf_started && self.oprf.iter().all(|b| b.done) && self.to_submit.is_empty()
    }

    /// The OPRF outputs known so far, for the node's local store.
    fn pseudonyms_record(&self) -> Vec<(usize, [u8; 64])> {
        self.pseudonyms.iter().map(|(&c, y)| (c, **y)).collect()
    }

    /// Whether expensive work is queued that can be done now (submissions need the key `X`).
    pub fn has_work(&self, x_ready: bool) -> bool {
        self.failed.is_none()
            && ((x_ready && !self.to_submit.is_empty()) || !self.share_queue.is_empty())
    }
    /// Whether some OPRF batch still waits for answers.
    pub fn awaits_oprf(&self) -> bool {
        self.failed.is_none() && !self.closed && self.oprf.iter().any(|b| !b.done)
    }
    pub fn is_sealing(&self) -> bool {
        self.closed && self.sealed.is_none() && self.failed.is_none()
    }

    pub fn next_deadline(&self, c: &Consortium) -> Option<Time> {
        if self.failed.is_some() {
            return None;
        }
        if !self.closed {
            Some(c.submit_end(self.epoch))
        } else if self.sealed.is_none() {
            Some(c.seal_end(self.epoch))
        } else if self.results.len() < self.mine.len() {
            Some(c.decrypt_end(self.epoch))
        } else {
            None
        }
    }

    pub fn ready(&mut self, author: MemberIndex) {
        self.ready.insert(author);
    }
    pub fn record_usage(&mut self, author: MemberIndex, served: &[(MemberIndex, u32)]) {
        self.usage.insert(author, served.to_vec());
    }

    pub fn add_submission(&mut self, hash: Hash, s: &Submission) {
        self.set.insert(
            hash,
            Entry {
                tag: s.tag.compress().to_bytes(),
                ciphertext: s.ciphertext,
                one_time: s.one_time,
            },
        );
    }

    /// Why a submission is not wanted now, if it is not (DESIGN 4.4).
    pub fn refuses_submission(&self, origin: Origin, hash: &Hash) -> Option<&'static str> {
        if let Some(sealed) = &self.sealed {
            return (!sealed.hashes.contains(hash)).then_some("submission outside the sealed set");
        }
        if self.closed && matches!(origin, Origin::Gossip { .. }) {
            return Some("submission arrived after the window closed");
        }
        None
    }

    fn current_root(&self) -> Hash {
        set_root(self.set.keys())
    }

    pub fn cosigned_set(&self, root: &Hash) -> Option<Vec<Hash>> {
        if let Some(s) = self.sealed.as_ref().filter(|s| &s.root == root) {
            return Some(s.hashes.iter().copied().collect());
        }
        self.cosigned
            .iter()
            .find(|(r, _)| r == root)
            .map(|(_, h)| h.clone())
    }

    /// Serves an OPRF evaluation for `from` within its per-epoch quota (DESIGN 4.2).
    pub fn evaluate_oprf(
        &mut self,
        from: MemberIndex,
        batch: u32,
        blinded: &[RistrettoPoint],
        share: &Scalar,
        quota: u32,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Response {
        if self.closed {
            return Response::Refused {
                reason: "epoch window closed".into(),
            };
        }
        if blinded.is_empty() || blinded.len() > OPRF_BATCH_MAX {
            return Response::Refused {
                reason: format!("batch must hold 1..={OPRF_BATCH_MAX} elements"),
            };
        }
        let used = self.served.get(&from).copied().unwrap_or(0);
        let asked = u32::try_from(blinded.len()).unwrap_or(u32::MAX);
        if used.saturating_add(asked) > quota {
            return Response::Refused {
                reason: format!("OPRF quota of {quota} per epoch exhausted"),
            };
        }
        match oprf::evaluate(share, blinded, rng) {
            Ok((evaluated, proof)) => {
                self.served.insert(from, used + asked);
                Response::OprfEvaluated {
                    epoch: self.epoch,
                    batch,
                    evaluated,
                    proof,
                }
            }
            Err(e) => Response::Refused {
                reason: e.to_string(),
            },
        }
    }

    fn start_oprf(
        &mut self,
        ctx: &Ctx<'_>,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
        out: &mut Out,
    ) {
        let Some(k) = ctx.k else { return };
        let Some(share) = k.share.as_ref() else {
            self.fail_own(
                Phase::Pseudonyms,
                "this member holds no pseudonym key share".into(),
                out,
            );
            return;
        };
        self.oprf_started = true;
        let indices: Vec<usize> = (0..self.clients.len())
            .filter(|c| !self.pseudonyms.contains_key(c))
            .collect();
        for (b, chunk) in indices.chunks(OPRF_BATCH_MAX).enumerate() {
            let mut blinds = Vec::new();
            let mut blinded = Vec::new();
            for &i in chunk {
                let blind = Blind::random(rng);
                let Some(client) = self.clients.get(i) else {
                    continue;
                };
                match oprf::blind(client.id.as_bytes(), &blind) {
                    Ok(p) => {
                        blinds.push(blind);
                        blinded.push(p);
                    }
                    Err(e) => {
                        self.fail_own(Phase::Pseudonyms, format!("blinding a client id: {e}"), out);
                        return;
                    }
                }
            }
            let mut partials = BTreeMap::new();
            match oprf::evaluate(share, &blinded, rng) {
                Ok((own, _)) => {
                    partials.insert(ctx.me, own);
                }
                Err(e) => {
                    self.fail_own(Phase::Pseudonyms, format!("own OPRF evaluation: {e}"), out);
                    return;
                }
            }
            let batch = u32::try_from(b).unwrap_or(u32::MAX);
            for peer in ctx.consortium.indices().filter(|&i| i != ctx.me) {
                out.requests.push((
                    peer,
                    Request::OprfEvaluate {
                        epoch: self.epoch,
                        batch,
                        blinded: blinded.clone(),
                    },
                ));
            }
            self.oprf.push(OprfBatch {
                clients: chunk.to_vec(),
                blinds,
                blinded,
                partials,
                done: false,
                asked_at: now,
            });
        }
        self.finish_batches(ctx, out);
    }

    /// Asks again the members that have not answered a batch yet (a peer may have refused
    /// because its own key was not ready, or the request was lost).
    fn retry_oprf(&mut self, ctx: &Ctx<'_>, now: Time, out: &mut Out) {
        if self.closed {
            return;
        }
        for (b, batch) in self.oprf.iter_mut().enumerate().filter(|(_, b)| !b.done) {
            if now.0 < batch.asked_at.0 + OPRF_RETRY_MS {
                continue;
            }
            batch.asked_at = now;
            let batch_id = u32::try_from(b).unwrap_or(u32::MAX);
            for peer in ctx
                .consortium
                .indices()
                .filter(|i| !batch.partials.contains_key(i))
            {
                let request = Request::OprfEvaluate {
                    epoch: self.epoch,
                    batch: batch_id,
                    blinded: batch.blinded.clone(),
                };
                out.requests.push((peer, request));
            }
        }
    }

    pub fn oprf_response(
        &mut self,
        ctx: &Ctx<'_>,
        from: MemberIndex,
        batch: u32,
        evaluated: Vec<RistrettoPoint>,
        proof: DleqProof,
        out: &mut Out,
    ) {
        let Some(k) = ctx.k else { return };
        let Some(b) = self.oprf.get_mut(batch as usize) else {
            return;
        };
        if b.done || b.partials.contains_key(&from) {
            return;
        }
        let verified = k
            .verifying
            .get(&from)
            .ok_or(CryptoError::BadShareIndex(from))
            .and_then(|ki| oprf::verify_evaluation(ki, &b.blinded, &evaluated, &proof));
        if let Err(e) = verified {
            out.faults.push(Fault {
                culprit: Culprit::Member(from),
                kind: FaultKind::BadOprfResponse,
                record: None,
                detail: e.to_string(),
            });
            return;
        }
        b.partials.insert(from, evaluated);
        self.finish_batches(ctx, out);
    }

    /// Combines batches that have `t` proven partial evaluations into OPRF outputs.
    fn finish_batches(&mut self, ctx: &Ctx<'_>, out: &mut Out) {
        let t = ctx.consortium.threshold();
        let mut ready = Vec::new();
        for b in self
            .oprf
            .iter_mut()
            .filter(|b| !b.done && b.partials.len() >= t)
        {
            b.done = true;
            let chosen: Vec<(&MemberIndex, &Vec<RistrettoPoint>)> =
                b.partials.iter().take(t).collect();
            for (pos, &client) in b.clients.iter().enumerate() {
                let parts: Vec<(u16, RistrettoPoint)> = chosen
                    .iter()
                    .filter_map(|(&i, ev)| ev.get(pos).map(|p| (i, *p)))
                    .collect();
                let (Some(c), Some(blind)) = (self.clients.get(client), b.blinds.get(pos)) else {
                    continue;
                };
                match oprf::combine(&parts) {
                    Ok(combined) => {
                        let y = oprf::finalize(c.id.as_bytes(), blind, &combined);
                        ready.push((client, Zeroizing::new(y)));
                    }
                    Err(e) => out.events.push(Event::Failed {
                        epoch: Some(self.epoch),
                        phase: Phase::Pseudonyms,
                        reason: format!("combining OPRF shares: {e}"),
                    }),
                }
            }
        }
        if !ready.is_empty() {
            let all_done = self.oprf.iter().all(|b| b.done);
            for (client, y) in &ready {
                self.pseudonyms.insert(*client, y.clone());
            }
            // Durable before any submission built from them goes out (DESIGN 8).
            out.local.push(crate::local::pseudonyms(
                self.epoch,
                &self.pseudonyms_record(),
            ));
            self.to_submit.extend(ready);
            if all_done {
                out.events.push(Event::PseudonymsReady {
                    epoch: self.epoch,
                    clients: self.clients.len(),
                });
            }
        }
    }

    /// The per-epoch keys of client `client`: its tag key, tag and one-time key. The one-time
    /// key is derived, not drawn, so a restarted bank can still recognize and open its results.
    fn client_keys(&self, ctx: &Ctx<'_>, client: usize, y: &[u8; 64]) -> Option<ClientKeys> {
        let c = self.clients.get(client)?;
        let c_id = ctx.consortium.id;
        let tag_key = tag::tag_key(&c_id, self.epoch, c.id.as_bytes(), y);
        let tag = tag_key.public();
        let mut context = c_id.to_vec();
        context.extend_from_slice(&self.epoch.to_be_bytes());
        context.extend_from_slice(tag.compress().as_bytes());
        let seed = ctx.secrets.derive(b"bankmesh.one-time-key.v1", &context);
        let o = Zeroizing::new(Scalar::from_bytes_mod_order(*seed));
        Some(ClientKeys {
            tag_key,
            tag,
            one_time_public: *o * G,
            one_time: o,
        })
    }

    /// Our submission for these keys if it is already in the set (posted before a restart).
    fn find_own(&self, keys: &ClientKeys) -> Option<Hash> {
        let tag = keys.tag.compress().to_bytes();
        self.set
            .iter()
            .find(|(_, e)| e.tag == tag && e.one_time == keys.one_time_public)
            .map(|(h, _)| *h)
    }

    fn build_submission(
        &self,
        ctx: &Ctx<'_>,
        x: &RistrettoPoint,
        client: usize,
        keys: &ClientKeys,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Submission, CryptoError> {
        let c = self.clients.get(client).ok_or(CryptoError::BadInput)?;
        let mut t =
            validity_transcript(ctx.consortium, self.epoch, &keys.tag, &keys.one_time_public);
        let (ciphertext, proof) = validity::encrypt_with_proof(&mut t, x, u64::from(c.score), rng)?;
        let mut s = Submission {
            epoch: self.epoch,
            tag: keys.tag,
            ciphertext,
            one_time: keys.one_time_public,
            validity: proof,
            holder: schnorr::Signature {
                r: curve25519_dalek::ristretto::CompressedRistretto::default(),
                s: Scalar::ZERO,
            },
        };
        let mut t = transcript(&ctx.consortium.id, self.epoch, b"holder");
        s.holder = schnorr::sign(&mut t, &keys.tag_key, &s.signed_bytes(), rng);
        Ok(s)
    }

    /// Our own clients cannot complete this epoch. We still take part for everyone else
    /// (cosigning, decryption shares), so the epoch itself goes on.
    fn fail_own(&mut self, phase: Phase, reason: String, out: &mut Out) {
        self.to_submit.clear();
        if self.own_failure.is_none() {
            out.events.push(Event::Failed {
                epoch: Some(self.epoch),
                phase,
                reason: reason.clone(),
            });
            self.own_failure = Some((phase, reason));
        }
    }

    /// The epoch cannot complete at this member at all.
    fn fail(&mut self, phase: Phase, reason: String, out: &mut Out) {
        if self.failed.is_none() {
            out.events.push(Event::Failed {
                epoch: Some(self.epoch),
                phase,
                reason: reason.clone(),
            });
            self.failed = Some((phase, reason));
        }
    }

    /// Moves the epoch along: OPRF start, submissions, window close, seal, shares, deadlines.
    pub fn advance(
        &mut self,
        ctx: &Ctx<'_>,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
        out: &mut Out,
    ) {
        if self.failed.is_some() {
            return;
        }
        let c = ctx.consortium;
        if !self.oprf_started && !self.clients.is_empty() && ctx.k.is_some() && !self.closed {
            self.start_oprf(ctx, now, rng, out);
        }
        self.retry_oprf(ctx, now, out);
        self.submit_slice(ctx, rng, out);
        if !self.closed {
            let everyone_ready = self.ready.len() == c.n();
            if now >= c.submit_end(self.epoch) || everyone_ready {
                if ctx.x.is_none() {
                    self.fail(
                        Phase::Setup,
                        "the decryption key was not ready when the window closed".into(),
                        out,
                    );
                    return;
                }
                self.close_window(now, out);
            }
        }
        if self.closed && self.pseudonyms.len() < self.clients.len() && self.own_failure.is_none() {
            let missing = self.clients.len() - self.pseudonyms.len();
            let reason = format!("{missing} clients had no pseudonym when the window closed");
            self.fail_own(Phase::Pseudonyms, reason, out);
        }
        if self.closed && self.sealed.is_none() {
            self.seal_step(ctx, now, out);
        }
        self.share_slice(ctx, rng, out);
        if self.sealed.is_some() && !self.done_reported && self.results.len() == self.mine.len() {
            self.done_reported = true;
            out.events.push(Event::EpochDone {
                epoch: self.epoch,
                results: self.results.len(),
            });
        }
        if !self.done_reported && now >= c.decrypt_end(self.epoch) {
            let (phase, reason) = match self.sealed {
                None => (
                    Phase::Seal,
                    "no record set reached the seal quorum by the decryption deadline".to_string(),
                ),
                Some(_) => (
                    Phase::Decrypt,
                    format!(
                        "{} of {} results at the decryption deadline",
                        self.results.len(),
                        self.mine.len()
                    ),
                ),
            };
            self.fail(phase, reason, out);
        }
    }

    fn note_mine(&mut self, hash: Hash, client: usize, one_time: Zeroizing<Scalar>, tag: [u8; 32]) {
        self.mine.insert(
            hash,
            Mine {
                client,
                one_time,
                tag,
            },
        );
        self.submitted += 1;
    }

    fn submit_slice(&mut self, ctx: &Ctx<'_>, rng: &mut (impl RngCore + CryptoRng), out: &mut Out) {
        let Some(x) = ctx.x else { return };
        while let Some((client, y)) = self.to_submit.pop_front() {
            let Some(keys) = self.client_keys(ctx, client, &y) else {
                continue;
            };
            let tag = keys.tag.compress().to_bytes();
            if let Some(hash) = self.find_own(&keys) {
                // Posted before a restart: take it back, do not post it twice.
                self.note_mine(hash, client, keys.one_time, tag);
                continue;
            }
            if self.closed {
                self.fail_own(
                    Phase::Submit,
                    "the window closed before all submissions were posted".into(),
                    out,
                );
                return;
            }
            if out.work_done >= WORK_PER_CALL {
                self.to_submit.push_front((client, y));
                break;
            }
            out.work_done += 1;
            match self.build_submission(ctx, &x.group, client, &keys, rng) {
                Ok(s) => {
                    let hash =
                        crate::record::Record::submission(&ctx.consortium.id, s.clone()).hash();
                    self.note_mine(hash, client, keys.one_time, tag);
                    out.outgoing.push(Outgoing::Submission(Box::new(s)));
                }
                Err(e) => {
                    self.fail_own(Phase::Submit, format!("building a submission: {e}"), out);
                    return;
                }
            }
        }
        self.try_results(ctx, out);
        if self.mine_complete() && !self.ready_posted && !self.closed {
            self.ready_posted = true;
            out.events.push(Event::Submitted {
                epoch: self.epoch,
                count: self.submitted,
            });
            out.outgoing
                .push(Outgoing::Body(Body::Ready { epoch: self.epoch }));
        }
    }

    fn close_window(&mut self, now: Time, out: &mut Out) {
        self.closed = true;
        let served: Vec<(MemberIndex, u32)> = self.served.iter().map(|(&m, &n)| (m, n)).collect();
        out.outgoing.push(Outgoing::Body(Body::OprfUsage {
            epoch: self.epoch,
            served,
        }));
        self.cosign(now, out);
        out.events.push(Event::WindowClosed {
            epoch: self.epoch,
            submissions: self.set.len(),
        });
    }

    /// Cosigns our current set if it changed, at most once per [`COSIGN_EVERY_MS`] so that a
    /// set growing record by record during sync gets one checkpoint, not one per record.
    fn cosign(&mut self, now: Time, out: &mut Out) {
        if self.cosigned.last().is_some() && now.0 < self.last_cosign.0 + COSIGN_EVERY_MS {
            return;
        }
        let root = self.current_root();
        if self.cosigned.last().is_some_and(|(r, _)| *r == root) {
            return;
        }
        self.last_cosign = now;
        let hashes: Vec<Hash> = self.set.keys().copied().collect();
        let count = hashes.len() as u64;
        self.cosigned.push((root, hashes));
        out.outgoing.push(Outgoing::Body(Body::Checkpoint {
            epoch: self.epoch,
            count,
            root,
        }));
    }

    pub fn apply_checkpoint(&mut self, author: MemberIndex, count: u64, root: Hash) {
        let list = self.checkpoints.entry(author).or_default();
        if !list.iter().any(|(r, _)| *r == root) {
            list.push((root, count));
        }
    }

    /// Asks each member whose latest cosigned set differs from ours for that set.
    fn sync_differing(&mut self, me: MemberIndex, now: Time, out: &mut Out) {
        let mine = self.current_root();
        let differing: Vec<(MemberIndex, Hash)> = self
            .checkpoints
            .iter()
            .filter(|(&m, _)| m != me)
            .filter_map(|(&m, l)| l.last().map(|&(r, _)| (m, r)))
            .filter(|&(_, r)| r != mine)
            .collect();
        for (peer, root) in differing {
            self.ask_set(peer, root, now, out);
        }
    }

    /// Asks `peer` for its set with `root`, unless we did less than [`SYNC_RETRY_MS`] ago (a
    /// request may be lost, so we ask again after a pause). Returns whether it asked.
    fn ask_set(&mut self, peer: MemberIndex, root: Hash, now: Time, out: &mut Out) -> bool {
        if self
            .asked
            .get(&(peer, root))
            .is_some_and(|t| now.0 < t.0 + SYNC_RETRY_MS)
        {
            return false;
        }
        out.requests.push((
            peer,
            Request::EpochSet {
                epoch: self.epoch,
                root,
            },
        ));
        self.asked.insert((peer, root), now);
        true
    }

    pub fn epoch_set_response(
        &mut self,
        from: MemberIndex,
        root: Hash,
        hashes: Vec<Hash>,
        out: &mut Out,
    ) {
        if set_root(&hashes) != root {
            out.faults.push(Fault {
                culprit: Culprit::Member(from),
                kind: FaultKind::Malformed,
                record: None,
                detail: "epoch set does not match its root".into(),
            });
            return;
        }
        if let Some((target, list)) = &mut self.target {
            if *target == root && list.is_none() {
                *list = Some(hashes.iter().copied().collect());
            }
        }
        let missing: Vec<Hash> = hashes
            .into_iter()
            .filter(|h| !self.set.contains_key(h))
            .collect();
        for chunk in missing.chunks(SYNC_BATCH_MAX) {
            out.requests.push((
                from,
                Request::Records {
                    hashes: chunk.to_vec(),
                },
            ));
        }
    }

    /// Cosigns a grown set, and decides finality (DESIGN 4.4).
    fn seal_step(&mut self, ctx: &Ctx<'_>, now: Time, out: &mut Out) {
        let c = ctx.consortium;
        self.cosign(now, out);
        self.sync_differing(ctx.me, now, out);
        let mine = self.current_root();
        let unanimous = self.checkpoints.len() == c.n()
            && self
                .checkpoints
                .values()
                .all(|l| l.last().is_some_and(|(r, _)| *r == mine));
        if unanimous {
            let hashes = self.set.keys().copied().collect();
            self.seal(ctx, mine, hashes, out);
            return;
        }
        if now < c.seal_end(self.epoch) {
            return;
        }
        // The seal window is over: the largest certified set is final.
        let mut cosigners: BTreeMap<(u64, Hash), BTreeSet<MemberIndex>> = BTreeMap::new();
        for (&m, list) in &self.checkpoints {
            for &(root, count) in list {
                cosigners.entry((count, root)).or_default().insert(m);
            }
        }
        let best = cosigners
            .iter()
            .rev()
            .find(|(_, who)| who.len() >= c.quorum())
            .map(|(&(_, root), who)| (root, who.clone()));
        let Some((root, who)) = best else {
            // Not yet: a node that was away is still fetching the others' checkpoints. It
            // keeps syncing; the decryption deadline turns a lasting stall into a failure.
            return;
        };
        if root == mine {
            let hashes = self.set.keys().copied().collect();
            self.seal(ctx, root, hashes, out);
            return;
        }
        if self.target.as_ref().map(|(r, _)| *r) != Some(root) {
            self.target = Some((root, None));
        }
        let have_list = self.target.as_ref().and_then(|(_, l)| l.clone());
        match have_list {
            Some(list) if list.iter().all(|h| self.set.contains_key(h)) => {
                self.seal(ctx, root, list, out)
            }
            _ => {
                // Ask a cosigner for the final set, then fetch what we lack.
                for &peer in who.iter().filter(|&&m| m != ctx.me) {
                    if self.ask_set(peer, root, now, out) {
                        break;
                    }
                }
            }
        }
    }

    fn seal(&mut self, ctx: &Ctx<'_>, root: Hash, hashes: BTreeSet<Hash>, out: &mut Out) {
        let mut aggregates: BTreeMap<[u8; 32], (Ciphertext, u32)> = BTreeMap::new();
        for h in &hashes {
            if let Some(e) = self.set.get(h) {
                let slot = aggregates.entry(e.tag).or_insert((Ciphertext::zero(), 0));
                slot.0 += e.ciphertext;
                slot.1 += 1;
            }
        }
        // Records outside the final set are dropped (DESIGN 4.4).
        self.set.retain(|h, _| hashes.contains(h));
        out.events.push(Event::Sealed {
            epoch: self.epoch,
            submissions: hashes.len(),
            root,
        });
        let dropped: Vec<String> = self
            .mine
            .iter()
            .filter(|(h, _)| !hashes.contains(*h))
            .filter_map(|(_, m)| self.clients.get(m.client).map(|c| c.id.clone()))
            .collect();
        if !dropped.is_empty() && !self.dropped_reported {
            self.dropped_reported = true;
            for client_id in dropped {
                out.events.push(Event::SubmissionDropped {
                    epoch: self.epoch,
                    client_id,
                });
            }
        }
        self.mine.retain(|h, _| hashes.contains(h));
        if ctx.x.is_some_and(|x| x.share.is_some()) {
            // Shares we already posted (seen again when replaying after a restart) are not repeated.
            self.share_queue = hashes
                .iter()
                .copied()
                .filter(|h| !self.shares_seen.contains(&(ctx.me, *h)))
                .collect();
        }
        self.received.retain(|h, _| hashes.contains(h));
        self.sealed = Some(Sealed {
            root,
            hashes,
            aggregates,
        });
        // Shares met before the seal (replayed after a restart) can be opened now.
        self.try_results(ctx, out);
    }

    fn share_slice(&mut self, ctx: &Ctx<'_>, rng: &mut (impl RngCore + CryptoRng), out: &mut Out) {
        let (Some(sealed), Some(x)) = (&self.sealed, ctx.x) else {
            return;
        };
        let (Some(share), Some(verifying)) = (x.share.as_ref(), x.verifying.get(&ctx.me)) else {
            return;
        };
        if self.share_queue.is_empty() || out.work_done >= WORK_PER_CALL {
            return;
        }
        out.work_done += WORK_PER_SHARE_RECORD;
        let mut entries = Vec::new();
        while entries.len() < SHARES_PER_RECORD {
            let Some(h) = self.share_queue.pop_front() else {
                break;
            };
            let Some(e) = self.set.get(&h) else { continue };
            let Some((aggregate, _)) = sealed.aggregates.get(&e.tag) else {
                continue;
            };
            let mut t = share_transcript(ctx.consortium, self.epoch, &sealed.root, &h);
            let share =
                keyswitch::key_switch(&mut t, share, verifying, aggregate, &e.one_time, rng);
            entries.push(ShareEntry {
                submission: h,
                share,
            });
        }
        if !entries.is_empty() {
            out.outgoing.push(Outgoing::Body(Body::DecryptionShares {
                epoch: self.epoch,
                root: sealed.root,
                shares: entries,
            }));
        }
    }

    /// Verifies decryption shares against our sealed set. Shares for another set, or for an
    /// epoch that failed here, cannot be judged; they are kept in the log (so the author's chain
    /// goes on) but not used.
    pub fn check_shares(
        &self,
        ctx: &Ctx<'_>,
        author: MemberIndex,
        root: &Hash,
        shares: &[ShareEntry],
    ) -> Result<ShareCheck, String> {
        let Some(sealed) = &self.sealed else {
            return Ok(if self.failed.is_some() {
                ShareCheck::Unusable
            } else {
                ShareCheck::Wait
            });
        };
        if &sealed.root != root {
            return Ok(ShareCheck::Unusable);
        }
        let x = ctx.x.ok_or("no decryption key")?;
        let verifying = x
            .verifying
            .get(&author)
            .ok_or("author holds no decryption key share")?;
        if shares.is_empty() || shares.len() > SHARES_PER_RECORD * 4 {
            return Err("share batch size out of bounds".into());
        }
        let mut seen = BTreeSet::new();
        for entry in shares {
            if !seen.insert(entry.submission)
                || self.shares_seen.contains(&(author, entry.submission))
            {
                return Err("repeated share for one submission".into());
            }
            let e = self
                .set
                .get(&entry.submission)
                .ok_or("share for a submission outside the sealed set")?;
            let (aggregate, _) = sealed
                .aggregates
                .get(&e.tag)
                .ok_or("no aggregate for the tag")?;
            let mut t = share_transcript(ctx.consortium, self.epoch, root, &entry.submission);
            keyswitch::verify(&mut t, verifying, aggregate, &e.one_time, &entry.share).map_err(
                |err| format!("share for {}: {err}", hex::encode(&entry.submission[..8])),
            )?;
        }
        Ok(ShareCheck::Valid)
    }

    /// Whether decryption shares for this epoch can be judged now.
    pub fn can_judge_shares(&self) -> bool {
        self.sealed.is_some() || self.failed.is_some()
    }

    /// Takes verified shares (DESIGN 4.6) and opens what it can of ours (DESIGN 4.7).
    pub fn apply_shares(
        &mut self,
        ctx: &Ctx<'_>,
        author: MemberIndex,
        root: &Hash,
        shares: &[ShareEntry],
        out: &mut Out,
    ) {
        if self.sealed.as_ref().is_some_and(|s| &s.root != root) {
            return;
        }
        for entry in shares {
            self.shares_seen.insert((author, entry.submission));
            // Until we know all our own submissions, any share may turn out to be ours.
            let wanted = match self.mine.get(&entry.submission) {
                Some(m) => !self.results.contains_key(&m.client),
                None => !self.mine_complete(),
            };
            if wanted {
                let slot = self.received.entry(entry.submission).or_default();
                slot.insert(author, (*root, entry.share.clone()));
            }
        }
        self.try_results(ctx, out);
    }

    /// Combines `t` shares for each of our sealed submissions that has them and no result yet.
    fn try_results(&mut self, ctx: &Ctx<'_>, out: &mut Out) {
        let Some(sealed) = &self.sealed else { return };
        let t = ctx.consortium.threshold();
        let mut opened = Vec::new();
        for (hash, m) in &self.mine {
            if self.results.contains_key(&m.client) {
                continue;
            }
            let Some(shares) = self.received.get(hash) else {
                continue;
            };
            // Count before computing: each submission is opened once, when it reaches `t`.
            let usable = shares.iter().filter(|(_, (root, _))| *root == sealed.root);
            if usable.clone().count() < t {
                continue;
            }
            let parts: Vec<(u16, RistrettoPoint)> = usable
                .take(t)
                .map(|(&i, (_, share))| (i, keyswitch::strip(share, &m.one_time)))
                .collect();
            let Some((aggregate, count)) = sealed.aggregates.get(&m.tag) else {
                continue;
            };
            match keyswitch::combine(aggregate, &parts, t).and_then(|p| dlog::small_dlog(&p)) {
                Ok(sum) => opened.push((*hash, m.client, u64::from(sum), *count)),
                Err(e) => out.events.push(Event::Failed {
                    epoch: Some(self.epoch),
                    phase: Phase::Decrypt,
                    reason: format!("decrypting a result: {e}"),
                }),
            }
        }
        for (hash, client, sum, count) in opened {
            self.results.insert(client, (sum, count));
            self.received.remove(&hash);
            if let Some(c) = self.clients.get(client) {
                out.results.push(ClientResult {
                    epoch: self.epoch,
                    client_id: c.id.clone(),
                    sum,
                    count,
                });
            }
        }
    }

    /// Our own records, met again when replaying the log after a restart: what they say we did.
    pub fn replay_own(&mut self, body: &Body) {
        match body {
            Body::Ready { .. } => self.ready_posted = true,
            Body::OprfUsage { .. } => self.closed = true,
            // Our set when we cosigned is the set replayed so far (when the log kept our order).
            Body::Checkpoint { root, .. }
                if !self.cosigned.iter().any(|(r, _)| r == root)
                    && *root == self.current_root() =>
            {
                self.cosigned
                    .push((*root, self.set.keys().copied().collect()));
            }
            _ => {}
        }
    }

    pub fn results(&self) -> Vec<ClientResult> {
        self.results
            .iter()
            .filter_map(|(&i, &(sum, count))| {
                let c = self.clients.get(i)?;
                Some(ClientResult {
                    epoch: self.epoch,
                    client_id: c.id.clone(),
                    sum,
                    count,
                })
            })
            .collect()
    }

    pub fn status(&self) -> EpochStatus {
        let phase = if self.done_reported {
            Phase::Done
        } else if self.sealed.is_some() {
            Phase::Decrypt
        } else if self.closed {
            Phase::Seal
        } else if self.oprf.iter().all(|b| b.done) && self.oprf_started {
            Phase::Submit
        } else {
            Phase::Pseudonyms
        };
        EpochStatus {
            epoch: self.epoch,
            phase,
            submissions: self.set.len(),
            mine: self.mine.len(),
            results: self.results.len(),
            failed: self
                .failed
                .as_ref()
                .or(self.own_failure.as_ref())
                .map(|(p, r)| format!("{p:?}: {r}")),
        }
    }
}
