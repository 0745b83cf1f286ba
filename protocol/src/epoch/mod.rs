//! One epoch at one member (DESIGN 4.2-4.7), as phases that hand each other values.
//!
//! The membership's part moves through [`Stage`]s in order: submissions are open; a sync round
//! gathers what the others hold; the member reports and the seal's agreement runs; the final
//! set is fetched; decryption shares are posted and combined; done. Alongside runs our own
//! clients' part (pseudonyms, then submissions, then results) and OPRF serving for others.
//! This module is the one place that knows that order; the phases are
//! [`pseudonyms`], [`oprf_serve`], [`submit`], [`seal`], [`decrypt`] and [`results`].

pub mod decrypt;
pub mod oprf_serve;
pub mod pseudonyms;
pub mod results;
pub mod seal;
pub mod submit;
pub mod values;

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::crypto::oprf::{BatchContext, DleqProof};
use crate::genesis::Consortium;
use crate::keys::{EpochSecret, MemberSecrets};
use crate::local::{self, Finished, LocalWrite, RestoredEpoch};
use crate::messages::{Request, Response, SUBMISSIONS_PAGE, SYNC_BATCH_MAX};
use crate::record::{Body, Evidence, Hash, ShareEntry, SignedEvaluation, Submission};
use crate::setup::SetupKeys;
use crate::step::{ClientResult, Culprit, EpochStatus, Event, Fault, FaultKind, Phase, Wait};
use crate::time::Time;
use crate::MemberIndex;

use decrypt::{Producer, VerifiedShares};
use oprf_serve::OprfServer;
use pseudonyms::{OprfKeys, Pseudonyms};
use results::Results;
use seal::{Seal, SealOut};
use submit::Submitter;
use values::{Client, FinalSet, Pool};

/// Units of expensive work per input (one unit is about one range proof, ~5 ms): long work is
/// cut into slices that keep the driver responsive and let it show progress.
pub const WORK_PER_CALL: usize = 16;
/// Work units of one decryption-share record.
const WORK_PER_SHARE_RECORD: usize = 8;
/// Wait before asking a peer again (sync pages, records of the final set).
const RETRY_MS: u64 = 1_000;

/// What the epoch needs from the bank for one input.
pub struct Ctx<'a> {
    pub consortium: &'a Consortium,
    pub me: MemberIndex,
    pub secrets: &'a MemberSecrets,
    pub keys: Option<&'a SetupKeys>,
    pub now: Time,
}

/// Effects of one input.
#[derive(Default)]
pub struct Out {
    pub bodies: Vec<Body>,
    pub submissions: Vec<Submission>,
    pub local: Vec<LocalWrite>,
    /// Prefixes of local keys to erase with `local`.
    pub erase: Vec<String>,
    pub requests: Vec<(MemberIndex, Request)>,
    pub results: Vec<ClientResult>,
    pub faults: Vec<Fault>,
    pub events: Vec<Event>,
    /// Expensive work done in this input, shared by every epoch.
    pub work: usize,
}

/// How a decryption-share record is judged.
pub enum ShareCheck {
    /// Every share verified; those for our submissions come along.
    Verified(VerifiedShares),
    /// Accepted without a check: the epoch is over or failed here, so nothing uses them now
    /// (they are verified before any use).
    Unchecked,
    Wait(Wait),
    Reject(String),
}

/// The pre-report sync round with one peer.
#[derive(Default)]
struct PeerSync {
    after: Option<Hash>,
    listed: bool,
    asked_at: Option<Time>,
}

/// The membership's part of the epoch, in order.
enum Stage {
    /// Submissions are accepted.
    Open,
    /// The sync round before the report: every peer's list, and what we lack of it.
    Syncing {
        peers: BTreeMap<MemberIndex, PeerSync>,
        /// Submissions a peer listed that we asked it for, by the peer.
        awaiting: BTreeMap<Hash, MemberIndex>,
        asked_at: Option<Time>,
    },
    /// Our report is out; the agreement runs.
    Sealing,
    /// Decided: fetching the records of the final set we lack.
    Fetching {
        round: u32,
        hashes: Vec<Hash>,
        missing: BTreeSet<Hash>,
        asked_at: Option<Time>,
        turn: usize,
    },
    /// The final set is here: shares are posted and combined.
    Decrypting {
        set: Box<FinalSet>,
        producer: Option<Producer>,
    },
    /// Our part is done; the working state is released but for the final set, against which
    /// late shares are still checked (a bad one is evidence, whenever it comes).
    Done { set: Box<FinalSet> },
}

/// Our own clients' part of the epoch.
struct Own {
    clients: Vec<Client>,
    /// Fresh for the epoch: our one-time keys, encryption randomness and ring slots derive
    /// from it, and it is erased with the scores (DESIGN 3: never from a long-term key).
    secret: EpochSecret,
    pseudonyms: Pseudonyms,
    known: BTreeMap<usize, Zeroizing<[u8; 64]>>,
    submitter: Submitter,
    results: Results,
    /// The `Submitted` event went out (every submission built and queued for the relay).
    submitted_reported: bool,
    dropped_reported: bool,
    /// Our submissions in the final set, once all are known.
    in_set: Option<usize>,
    /// Pseudonym entries stored so far.
    pseudonym_parts: u32,
}

impl Own {
    /// Whether every one of our submissions is known (made or recognized).
    fn complete(&self) -> bool {
        self.known.len() == self.clients.len()
            && !self.pseudonyms.pending()
            && self.submitter.queued() == 0
    }
}

pub struct Epoch {
    number: u64,
    stage: Stage,
    pool: Pool,
    server: OprfServer,
    own: Option<Own>,
    seal: Seal,
    usage: BTreeMap<MemberIndex, Vec<(MemberIndex, u32)>>,
    usage_posted: bool,
    /// Submissions we posted shares for (met in the log).
    posted_shares: BTreeSet<Hash>,
    /// Per author, the submissions it posted shares for (until done) and how many: a member
    /// posts one share per submission of the final set, no more.
    shared: BTreeMap<MemberIndex, (BTreeSet<Hash>, usize)>,
    failed: Option<(Phase, String)>,
    own_failure: Option<(Phase, String)>,
    /// Our results once stored, when scores, pseudonyms and one-time keys are gone.
    finished: Option<Finished>,
    /// The results' retention is over: they are erased too.
    expired: bool,
}

impl Epoch {
    pub fn new(consortium: &Consortium, me: MemberIndex, number: u64) -> Epoch {
        Epoch {
            number,
            stage: Stage::Open,
            pool: Pool::default(),
            server: OprfServer::default(),
            own: None,
            seal: Seal::new(consortium, me, number),
            usage: BTreeMap::new(),
            usage_posted: false,
            posted_shares: BTreeSet::new(),
            shared: BTreeMap::new(),
            failed: None,
            own_failure: None,
            finished: None,
            expired: false,
        }
    }

    fn own_from(number: u64, scores: Vec<(String, u16)>, secret: EpochSecret) -> Own {
        Own {
            clients: scores
                .into_iter()
                .map(|(id, score)| Client { id, score })
                .collect(),
            secret,
            pseudonyms: Pseudonyms::new(number),
            known: BTreeMap::new(),
            submitter: Submitter::new(number),
            results: Results::default(),
            submitted_reported: false,
            dropped_reported: false,
            in_set: None,
            pseudonym_parts: 0,
        }
    }

    /// What the local store held for this epoch (before the log is replayed).
    pub fn restore(&mut self, r: RestoredEpoch) {
        self.expired = r.expired;
        if let Some(f) = r.finished {
            self.finished = Some(f);
        } else if let (Some(scores), Some(secret)) = (r.scores, r.submission_secret) {
            let mut own = Self::own_from(self.number, scores, EpochSecret::from_bytes(secret));
            for (client, y) in r.pseudonyms {
                if client < own.clients.len() {
                    own.known.insert(client, Zeroizing::new(y));
                    own.submitter.enqueue(client, Zeroizing::new(y));
                }
            }
            own.results = Results::restore(r.results);
            own.pseudonym_parts = r.pseudonym_parts;
            self.own = Some(own);
        }
        self.server = OprfServer::restore(r.served);
        if let Some((round, value)) = r.decision {
            self.seal.restore(round, value);
        } else if let Some(f) = r.failed {
            self.failed = Some(f);
        }
    }

    pub fn has_scores(&self) -> bool {
        self.own.is_some() || self.finished.as_ref().is_some_and(|f| f.given)
    }
    /// Whether submissions are still accepted from the operator.
    pub fn is_open(&self) -> bool {
        matches!(self.stage, Stage::Open) && !self.seal.reported()
    }

    /// The operator's scores (checked by the bank) and a fresh secret for our submissions;
    /// both stored before anything uses them.
    pub fn set_scores(&mut self, scores: Vec<(String, u16)>, secret: EpochSecret, out: &mut Out) {
        out.local.extend(local::scores(self.number, &scores));
        out.local
            .push(local::submission_secret(self.number, secret.as_bytes()));
        self.own = Some(Self::own_from(self.number, scores, secret));
    }

    // --- Checks: functions of the record and read-only state --------------------------------

    /// Why a valid submission is not wanted now, if it is not.
    pub fn refuses_submission(&self, hash: &Hash) -> Option<&'static str> {
        match &self.stage {
            Stage::Done { .. } => Some("submission for a finished epoch"),
            Stage::Decrypting { .. } => Some("the final set is complete"),
            Stage::Fetching { hashes, .. } => {
                (hashes.binary_search(hash).is_err()).then_some("submission outside the final set")
            }
            _ => None,
        }
    }

    /// Checks a decryption share record on its own against the final set, with nothing of
    /// what else its author posted: how a share record offered as evidence is judged, the same
    /// at every member and for an auditor. `None` while the final set is not built here.
    pub fn shares_fail_alone(
        &self,
        ctx: &Ctx<'_>,
        author: MemberIndex,
        root: &Hash,
        shares: &[ShareEntry],
    ) -> Option<Result<(), String>> {
        let (Stage::Decrypting { set, .. } | Stage::Done { set }) = &self.stage else {
            return None;
        };
        let Some(verifying) = ctx.keys.and_then(|k| k.x.verifying.get(&author)) else {
            return Some(Err("author holds no decryption key share".into()));
        };
        Some(
            decrypt::check_record(
                ctx.consortium,
                self.number,
                set,
                author,
                verifying,
                root,
                shares,
                |_| false,
            )
            .map(|_| ()),
        )
    }

    pub fn check_shares(
        &self,
        ctx: &Ctx<'_>,
        author: MemberIndex,
        root: &Hash,
        shares: &[ShareEntry],
    ) -> ShareCheck {
        let (seen, count) = self
            .shared
            .get(&author)
            .map_or((None, 0), |(s, n)| (Some(s), *n));
        if shares
            .iter()
            .any(|e| seen.is_some_and(|s| s.contains(&e.submission)))
        {
            return ShareCheck::Reject("a second share for a submission".into());
        }
        // One share per submission: of the final set, or, while it is not known here, of as
        // many submissions as the OPRF quotas allow.
        let bound = self.final_set().map_or_else(
            || ctx.consortium.n() * ctx.consortium.genesis.oprf_quota as usize,
            |(_, size)| size,
        );
        if count + shares.len() > bound {
            return ShareCheck::Reject("more shares than the final set has submissions".into());
        }
        match &self.stage {
            Stage::Decrypting { set, .. } => {
                let Some(verifying) = ctx.keys.and_then(|k| k.x.verifying.get(&author)) else {
                    return ShareCheck::Reject("author holds no decryption key share".into());
                };
                let mine = self.own.as_ref().map(|o| o.submitter.mine());
                let wanted = |h: &Hash| mine.is_some_and(|m| m.contains_key(h));
                match decrypt::check_record(
                    ctx.consortium,
                    self.number,
                    set,
                    author,
                    verifying,
                    root,
                    shares,
                    wanted,
                ) {
                    Ok(v) => ShareCheck::Verified(v),
                    Err(why) => ShareCheck::Reject(why),
                }
            }
            // Nothing uses them any more (our results are stored), but a bad one is still named.
            Stage::Done { .. } => match self.shares_fail_alone(ctx, author, root, shares) {
                Some(Err(why)) => ShareCheck::Reject(why),
                _ => ShareCheck::Unchecked,
            },
            _ if self.failed.is_some() || ctx.now >= ctx.consortium.decrypt_end(self.number) => {
                ShareCheck::Unchecked
            }
            _ => ShareCheck::Wait(Wait::FinalSet(self.number)),
        }
    }

    /// Whether a record waiting for this epoch's final set still has to wait.
    pub fn awaits_final_set(&self, consortium: &Consortium, now: Time) -> bool {
        !matches!(self.stage, Stage::Decrypting { .. } | Stage::Done { .. })
            && self.failed.is_none()
            && now < consortium.decrypt_end(self.number)
    }

    /// Whether a seal `Proposal` or `Vote` by `author` would be counted.
    pub fn accepts(&self, author: MemberIndex, body: &Body) -> bool {
        self.seal.accepts(author, body)
    }

    /// Whether `author` already posted its one `OprfUsage` of this epoch.
    pub fn has_posted(&self, author: MemberIndex, body: &Body) -> bool {
        match body {
            Body::OprfUsage { .. } => self.usage.contains_key(&author),
            _ => false,
        }
    }

    /// Report parts met from `author`.
    pub fn report_parts_of(&self, author: MemberIndex) -> u32 {
        self.seal.parts_of(author)
    }

    // --- Applying checked records -------------------------------------------------------------

    pub fn apply_submission(&mut self, hash: Hash, s: &Submission) {
        match &mut self.stage {
            Stage::Open | Stage::Sealing => {
                self.pool.insert(hash, s);
            }
            Stage::Syncing { awaiting, .. } => {
                awaiting.remove(&hash);
                self.pool.insert(hash, s);
            }
            Stage::Fetching { missing, .. } => {
                if missing.remove(&hash) {
                    self.pool.insert(hash, s);
                }
            }
            Stage::Decrypting { .. } | Stage::Done { .. } => {}
        }
    }

    /// Applies an identified record of this epoch (checked and durable, or replayed).
    #[allow(clippy::too_many_arguments)]
    pub fn apply_record(
        &mut self,
        ctx: &Ctx<'_>,
        author: MemberIndex,
        hash: Hash,
        prev: Hash,
        body: &Body,
        verified: Option<VerifiedShares>,
        out: &mut Out,
    ) {
        let own_record = author == ctx.me;
        match body {
            Body::OprfUsage { served, .. } => {
                if self.usage.insert(author, served.clone()).is_some() {
                    out.faults.push(Fault::member(
                        author,
                        FaultKind::Duplicate,
                        Some(hash),
                        "second OPRF usage record",
                    ));
                }
                if own_record {
                    self.usage_posted = true;
                }
            }
            Body::Report {
                part, last, hashes, ..
            } => {
                let s = self
                    .seal
                    .report_part(ctx.now, author, *part, *last, hashes, hash, prev);
                self.take_seal(s, out);
            }
            Body::Proposal { .. } | Body::Vote { .. } => {
                let s = self.seal.on_record(ctx.now, author, hash, body);
                self.take_seal(s, out);
            }
            Body::DecryptionShares { shares, .. } => {
                let (seen, count) = self.shared.entry(author).or_default();
                *count += shares.len();
                let repeated = shares.iter().filter(|e| !seen.insert(e.submission)).count();
                if repeated > 0 {
                    out.faults.push(Fault::member(
                        author,
                        FaultKind::Duplicate,
                        Some(hash),
                        format!("{repeated} shares for submissions it already shared"),
                    ));
                }
                if own_record {
                    self.posted_shares
                        .extend(shares.iter().map(|e| e.submission));
                }
                if let Some(own) = &mut self.own {
                    match verified {
                        Some(v) => own.results.add_verified(v),
                        None => {
                            let complete = own.complete();
                            let mine = own.submitter.mine();
                            let wanted = |h: &Hash| !complete || mine.contains_key(h);
                            let known: Vec<ShareEntry> = shares.to_vec();
                            own.results.add_unverified(author, &known, wanted);
                        }
                    }
                }
            }
            Body::DkgRound1 { .. }
            | Body::DkgRound2 { .. }
            | Body::DkgComplaint { .. }
            | Body::DkgDone { .. }
            | Body::Fault { .. } => {}
        }
    }

    /// Handles what the seal produced: records to post, requests, faults, the decision.
    fn take_seal(&mut self, s: SealOut, out: &mut Out) {
        out.bodies.extend(s.bodies);
        out.requests.extend(s.requests);
        out.faults.extend(s.faults);
        if let Some(d) = s.decided {
            out.local
                .push(local::seal_decision(self.number, d.round, &d.value));
            // A certified decision supersedes a local failure of the seal.
            if matches!(self.failed, Some((Phase::Seal, _))) {
                self.failed = None;
            }
            let missing = d
                .hashes
                .iter()
                .filter(|h| !self.pool.contains(h))
                .copied()
                .collect();
            self.stage = Stage::Fetching {
                round: d.round,
                hashes: d.hashes,
                missing,
                asked_at: None,
                turn: 0,
            };
        }
    }

    // --- Requests and responses ----------------------------------------------------------------

    /// A page of the submissions we hold (the pre-report sync round).
    pub fn serve_submissions(&self, after: Option<Hash>) -> Response {
        let (hashes, more) = match &self.stage {
            Stage::Decrypting { set, .. } => {
                use std::ops::Bound;
                let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                let all: Vec<Hash> = set
                    .entries
                    .range::<Hash, _>((lower, Bound::Unbounded))
                    .map(|(h, _)| *h)
                    .take(SUBMISSIONS_PAGE + 1)
                    .collect();
                let more = all.len() > SUBMISSIONS_PAGE;
                (all.into_iter().take(SUBMISSIONS_PAGE).collect(), more)
            }
            Stage::Done { .. } => (Vec::new(), false),
            _ => self.pool.page(after, SUBMISSIONS_PAGE),
        };
        Response::Submissions {
            epoch: self.number,
            after,
            hashes,
            more,
        }
    }

    /// Serves an OPRF evaluation while the epoch's submissions are open (DESIGN 4.2).
    pub fn serve_oprf(
        &mut self,
        ctx: &Ctx<'_>,
        from: MemberIndex,
        batch: u32,
        blinded: &[RistrettoPoint],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Response, Option<LocalWrite>) {
        let refused = |r: &str| {
            (
                Response::Refused {
                    reason: r.to_string(),
                },
                None,
            )
        };
        // Only while the epoch's submission window is open by our clock (an idle past epoch
        // or a future one is not served: the quota is per epoch).
        let c = ctx.consortium;
        if ctx.now < c.epoch_start(self.number) || ctx.now >= c.submit_end(self.number) {
            return refused("the epoch's submission window is not open here");
        }
        if !self.is_open() {
            return refused("epoch window closed");
        }
        let Some(share) = ctx.keys.and_then(|k| k.k.share.as_ref()) else {
            return refused("no pseudonym key share here");
        };
        let quota = ctx.consortium.genesis.oprf_quota;
        let batch_ctx = BatchContext {
            consortium: &ctx.consortium.id,
            epoch: self.number,
            requester: from,
            evaluator: ctx.me,
        };
        let identity = ctx.secrets.identity();
        self.server
            .evaluate(&batch_ctx, batch, blinded, share, quota, identity, rng)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn oprf_response(
        &mut self,
        ctx: &Ctx<'_>,
        from: MemberIndex,
        batch: u32,
        evaluated: Vec<RistrettoPoint>,
        proof: DleqProof,
        signature: ed25519_dalek::Signature,
        out: &mut Out,
    ) {
        let (Some(own), Some(keys)) = (&mut self.own, ctx.keys) else {
            return;
        };
        let Some(blinded) = own.pseudonyms.blinded(batch) else {
            return;
        };
        // The answer as the evaluator signed it: if its proof fails, this is the evidence.
        let signed = SignedEvaluation {
            epoch: self.number,
            requester: ctx.me,
            evaluator: from,
            batch,
            blinded: blinded.to_vec(),
            evaluated: evaluated.clone(),
            proof,
            signature,
        };
        if let Err(why) = signed.check_signature(ctx.consortium) {
            out.faults
                .push(Fault::member(from, FaultKind::BadOprfResponse, None, why));
            return;
        }
        let oprf_keys = OprfKeys {
            consortium: &ctx.consortium.id,
            me: ctx.me,
            share: keys.k.share.as_deref(),
            verifying: &keys.k.verifying,
            threshold: ctx.consortium.threshold(),
        };
        let mut lookup =
            own.pseudonyms
                .response(&oprf_keys, &own.clients, from, batch, evaluated, proof);
        let holder = keys.k.verifying.contains_key(&from);
        for f in &mut lookup.faults {
            if holder && f.kind == FaultKind::BadOprfResponse && f.culprit == Culprit::Member(from)
            {
                f.evidence = Some(Evidence::BadOprfEvaluation(Box::new(signed.clone())));
            }
        }
        self.take_lookup(lookup, out);
    }

    fn take_lookup(&mut self, lookup: pseudonyms::Lookup, out: &mut Out) {
        out.requests.extend(lookup.requests);
        out.faults.extend(lookup.faults);
        if let Some(e) = lookup.error {
            self.fail_own(Phase::Submit, e, out);
        }
        let Some(own) = &mut self.own else { return };
        if lookup.ready.is_empty() {
            return;
        }
        // Durable before any submission built from them goes out (DESIGN 8), one entry per
        // batch so nothing is written twice.
        let list: Vec<(usize, [u8; 64])> = lookup.ready.iter().map(|(c, y)| (*c, **y)).collect();
        out.local
            .push(local::pseudonyms(self.number, own.pseudonym_parts, &list));
        own.pseudonym_parts += 1;
        for (client, y) in lookup.ready {
            own.known.insert(client, y.clone());
            own.submitter.enqueue(client, y);
        }
        if own.known.len() == own.clients.len() {
            out.events.push(Event::PseudonymsReady {
                epoch: self.number,
                clients: own.clients.len(),
            });
        }
    }

    /// A page of a peer's submission list in the sync round: fetch what we lack, ask for more.
    pub fn submissions_response(
        &mut self,
        consortium: &Consortium,
        from: MemberIndex,
        after: Option<Hash>,
        hashes: Vec<Hash>,
        more: bool,
        out: &mut Out,
    ) {
        let most = consortium.n() * consortium.genesis.oprf_quota as usize;
        let number = self.number;
        let Stage::Syncing {
            peers, awaiting, ..
        } = &mut self.stage
        else {
            return;
        };
        // Only the page we asked for counts (a peer cannot grow our list by sending more).
        let Some(peer) = peers
            .get_mut(&from)
            .filter(|p| !p.listed && p.after == after)
        else {
            return;
        };
        if awaiting.len() >= most {
            return;
        }
        let sorted = hashes.windows(2).all(|w| w.first() < w.get(1))
            && hashes.first().is_none_or(|h| after.is_none_or(|a| a < *h));
        if !sorted || hashes.len() > SUBMISSIONS_PAGE {
            out.faults.push(Fault::member(
                from,
                FaultKind::Malformed,
                None,
                "submission list not in order or too long",
            ));
            return;
        }
        let missing: Vec<Hash> = hashes
            .iter()
            .filter(|h| !self.pool.contains(h) && !awaiting.contains_key(*h))
            .copied()
            .collect();
        for chunk in missing.chunks(SYNC_BATCH_MAX) {
            out.requests.push((
                from,
                Request::Records {
                    hashes: chunk.to_vec(),
                },
            ));
        }
        awaiting.extend(missing.into_iter().map(|h| (h, from)));
        peer.after = hashes.last().copied().or(peer.after);
        if more && !hashes.is_empty() {
            out.requests.push((
                from,
                Request::Submissions {
                    epoch: number,
                    after: peer.after,
                },
            ));
        } else {
            peer.listed = true;
        }
    }

    // --- Time -------------------------------------------------------------------------------------

    fn fail(&mut self, phase: Phase, reason: String, out: &mut Out) {
        if self.failed.is_none() {
            out.local.push(local::failed(self.number, phase, &reason));
            out.events.push(Event::Failed {
                epoch: Some(self.number),
                phase,
                reason: reason.clone(),
            });
            self.failed = Some((phase, reason));
        }
    }

    /// Our own clients cannot complete this epoch. We still take part for everyone else
    /// (OPRF serving, the seal, decryption shares), so the epoch itself goes on.
    fn fail_own(&mut self, phase: Phase, reason: String, out: &mut Out) {
        if self.own_failure.is_none() {
            out.events.push(Event::Failed {
                epoch: Some(self.number),
                phase,
                reason: reason.clone(),
            });
            self.own_failure = Some((phase, reason));
        }
    }

    /// Moves the epoch along as far as it can go now.
    pub fn advance(&mut self, ctx: &Ctx<'_>, rng: &mut (impl RngCore + CryptoRng), out: &mut Out) {
        self.own_part(ctx, rng, out);
        let c = ctx.consortium;
        let now = ctx.now;
        // Replayed after a restart: our report is out already.
        if matches!(self.stage, Stage::Open | Stage::Syncing { .. }) && self.seal.reported() {
            self.stage = Stage::Sealing;
        }
        // The agreement runs from our report until it decides here (even when the decision was
        // read back from the local store: our own votes may not be on the log yet).
        let done = matches!(self.stage, Stage::Done { .. });
        if !done && self.seal.reported() && !self.seal.engine_decided() {
            let s = if self.seal.started() {
                self.seal.on_timeout(now)
            } else {
                self.seal.start(now)
            };
            self.take_seal(s, out);
        }
        match &mut self.stage {
            // At the deadline only: an early close would come when the last member's own
            // submissions are done, a time that depends on its number of clients.
            Stage::Open if now >= c.submit_end(self.number) => {
                let peers = c
                    .indices()
                    .filter(|&m| m != ctx.me)
                    .map(|m| (m, PeerSync::default()))
                    .collect();
                self.stage = Stage::Syncing {
                    peers,
                    awaiting: BTreeMap::new(),
                    asked_at: None,
                };
                self.advance_sync(ctx, out);
            }
            Stage::Syncing { .. } => self.advance_sync(ctx, out),
            Stage::Sealing if self.seal.decision().is_none() && now >= c.seal_end(self.number) => {
                let reason = format!(
                    "no decision on the final set by the seal deadline (round {})",
                    self.seal.round()
                );
                self.fail(Phase::Seal, reason, out);
            }
            _ => {}
        }
        if matches!(self.stage, Stage::Fetching { .. }) {
            self.advance_fetch(ctx, out);
        }
        if matches!(self.stage, Stage::Decrypting { .. }) {
            self.advance_decrypt(ctx, rng, out);
        }
        let done = matches!(self.stage, Stage::Done { .. });
        if !done && self.failed.is_none() && now >= c.decrypt_end(self.number) {
            let (phase, reason) = match &self.stage {
                Stage::Decrypting { .. } => (
                    Phase::Decrypt,
                    "our results are incomplete at the decryption deadline".to_string(),
                ),
                Stage::Fetching { missing, .. } => (
                    Phase::Decrypt,
                    format!(
                        "{} records of the final set are still missing",
                        missing.len()
                    ),
                ),
                _ => (
                    Phase::Seal,
                    "no decision on the final set by the decryption deadline".to_string(),
                ),
            };
            self.fail(phase, reason, out);
        }
    }

    /// Our clients: pseudonyms, then submissions, queued for the relay (DESIGN 4.2, 4.3).
    fn own_part(&mut self, ctx: &Ctx<'_>, rng: &mut (impl RngCore + CryptoRng), out: &mut Out) {
        let open = self.is_open();
        // Evaluators serve an epoch only while its window is open by their clocks: ask then.
        let window = open && ctx.now >= ctx.consortium.epoch_start(self.number);
        let (Some(keys), Some(own)) = (ctx.keys, &mut self.own) else {
            return;
        };
        if self.own_failure.is_some() {
            return;
        }
        let oprf_keys = OprfKeys {
            consortium: &ctx.consortium.id,
            me: ctx.me,
            share: keys.k.share.as_deref(),
            verifying: &keys.k.verifying,
            threshold: ctx.consortium.threshold(),
        };
        let mut lookups = Vec::new();
        if window && !own.pseudonyms.started() {
            let missing: Vec<usize> = (0..own.clients.len())
                .filter(|c| !own.known.contains_key(c))
                .collect();
            if !missing.is_empty() {
                lookups.push(own.pseudonyms.start(
                    &oprf_keys,
                    &own.clients,
                    &missing,
                    ctx.consortium.genesis.privacy.client_bucket as usize,
                    ctx.now,
                    rng,
                ));
            }
        }
        if window {
            out.requests
                .extend(own.pseudonyms.retry(&oprf_keys, ctx.now));
        }
        for l in lookups {
            self.take_lookup(l, out);
        }
        let Some(own) = &mut self.own else { return };
        let mut budget = WORK_PER_CALL.saturating_sub(out.work);
        let before = budget;
        let made = own.submitter.step(
            ctx.consortium,
            &own.secret,
            keys,
            &own.clients,
            &self.pool,
            open,
            &mut budget,
        );
        out.work += before - budget;
        out.submissions.extend(made.submissions);
        if let Some(e) = made.error {
            self.fail_own(Phase::Submit, e, out);
            return;
        }
        let Some(own) = &mut self.own else { return };
        if !open && own.known.len() < own.clients.len() {
            let missing = own.clients.len() - own.known.len();
            let reason = format!("{missing} clients had no pseudonym when the window closed");
            self.fail_own(Phase::Submit, reason, out);
            return;
        }
        if open && own.complete() && !own.submitted_reported {
            own.submitted_reported = true;
            out.events.push(Event::Submitted {
                epoch: self.number,
                count: own.submitter.mine().len(),
            });
        }
    }

    /// The sync round before the report, and the report (DESIGN 4.4).
    fn advance_sync(&mut self, ctx: &Ctx<'_>, out: &mut Out) {
        let c = ctx.consortium;
        let now = ctx.now;
        let number = self.number;
        let Stage::Syncing {
            peers,
            awaiting,
            asked_at,
        } = &mut self.stage
        else {
            return;
        };
        // Records asked for but not here after a while: ask again (a request may be lost).
        if asked_at.is_none_or(|t| now.0 >= t.0 + RETRY_MS) {
            if asked_at.is_some() {
                let mut by_peer: BTreeMap<MemberIndex, Vec<Hash>> = BTreeMap::new();
                for (h, m) in awaiting.iter() {
                    by_peer.entry(*m).or_default().push(*h);
                }
                for (m, list) in by_peer {
                    for chunk in list.chunks(SYNC_BATCH_MAX) {
                        out.requests.push((
                            m,
                            Request::Records {
                                hashes: chunk.to_vec(),
                            },
                        ));
                    }
                }
            }
            *asked_at = Some(now);
        }
        for (&m, p) in peers.iter_mut().filter(|(_, p)| !p.listed) {
            if p.asked_at.is_none_or(|t| now.0 >= t.0 + RETRY_MS) {
                p.asked_at = Some(now);
                out.requests.push((
                    m,
                    Request::Submissions {
                        epoch: number,
                        after: p.after,
                    },
                ));
            }
        }
        // At the deadline plus the clock-skew allowance, never earlier (see the submission window).
        if now < c.report_at(number) {
            return;
        }
        if ctx.keys.is_none() {
            let reason = "the consortium keys were not ready when submissions closed".into();
            self.fail(Phase::Setup, reason, out);
            return;
        }
        if !self.usage_posted {
            self.usage_posted = true;
            out.bodies.push(self.server.usage(number));
        }
        let held = self.pool.hashes();
        out.events.push(Event::Reported {
            epoch: number,
            submissions: held.len(),
        });
        out.bodies.extend(self.seal.report_bodies(held));
        // The agreement starts once our report is back as applied records.
        self.stage = Stage::Sealing;
    }

    /// Fetches the records of the final set we lack from members that reported them.
    fn advance_fetch(&mut self, ctx: &Ctx<'_>, out: &mut Out) {
        let now = ctx.now;
        let Stage::Fetching {
            round,
            hashes,
            missing,
            asked_at,
            turn,
        } = &mut self.stage
        else {
            return;
        };
        if !missing.is_empty() {
            if asked_at.is_some_and(|t| now.0 < t.0 + RETRY_MS) {
                return;
            }
            *asked_at = Some(now);
            *turn += 1;
            let mut by_peer: BTreeMap<MemberIndex, Vec<Hash>> = BTreeMap::new();
            for h in missing.iter() {
                let holders: Vec<MemberIndex> = self
                    .seal
                    .holders(h)
                    .into_iter()
                    .filter(|&m| m != ctx.me)
                    .collect();
                if let Some(&m) = holders.get(*turn % holders.len().max(1)) {
                    by_peer.entry(m).or_default().push(*h);
                }
            }
            for (m, list) in by_peer {
                for chunk in list.chunks(SYNC_BATCH_MAX) {
                    out.requests.push((
                        m,
                        Request::Records {
                            hashes: chunk.to_vec(),
                        },
                    ));
                }
            }
            return;
        }
        let round = *round;
        let Some(entries) = self.pool.take(hashes) else {
            return;
        };
        let set = FinalSet::new(
            round,
            entries,
            ctx.consortium.n(),
            ctx.consortium.min_count(),
        );
        for &hash in &set.excluded {
            out.faults.push(Fault {
                culprit: Culprit::Submission(hash),
                kind: FaultKind::Duplicate,
                record: Some(hash),
                detail: "its link tag or slot tag occurs twice in the final set (a second post for one tag, or past the quota): every submission carrying it is left out".into(),
                evidence: None,
            });
        }
        self.seal.release();
        out.events.push(Event::Sealed {
            epoch: self.number,
            submissions: set.entries.len(),
            root: set.root,
            round,
        });
        if let Some(own) = &mut self.own {
            let dropped: Vec<String> = own
                .submitter
                .mine()
                .iter()
                .filter(|(h, _)| !set.entries.contains_key(*h))
                .filter_map(|(_, m)| own.clients.get(m.client).map(|c| c.id.clone()))
                .collect();
            if !own.dropped_reported {
                own.dropped_reported = true;
                for client_id in dropped {
                    out.events.push(Event::SubmissionDropped {
                        epoch: self.number,
                        client_id,
                    });
                }
            }
        }
        let producer = ctx
            .keys
            .filter(|k| k.x.share.is_some())
            .map(|_| Producer::new(&set, &self.posted_shares));
        self.stage = Stage::Decrypting {
            set: Box::new(set),
            producer,
        };
    }

    /// Posts our shares and opens our results (DESIGN 4.6, 4.7).
    fn advance_decrypt(
        &mut self,
        ctx: &Ctx<'_>,
        rng: &mut (impl RngCore + CryptoRng),
        out: &mut Out,
    ) {
        let c = ctx.consortium;
        let number = self.number;
        let Stage::Decrypting { set, producer } = &mut self.stage else {
            return;
        };
        if let (Some(p), Some(keys)) = (producer.as_mut(), ctx.keys) {
            let verifying = keys.x.verifying.get(&ctx.me);
            if let (Some(share), Some(verifying)) = (keys.x.share.as_ref(), verifying) {
                while !p.is_done() && out.work < WORK_PER_CALL {
                    out.work += WORK_PER_SHARE_RECORD;
                    if let Some(body) = p.next_record(c, number, set, share, verifying, rng) {
                        out.bodies.push(body);
                    }
                }
            }
        }
        let shares_done = producer.as_ref().is_none_or(Producer::is_done);
        let mut results_done = true;
        let mut failure = None;
        if let (Some(own), Some(keys)) = (&mut self.own, ctx.keys) {
            let t = c.threshold();
            if own.in_set.is_none() && own.complete() {
                // Our submissions are all known: only their shares matter from now on, and we
                // know how many results to expect.
                own.results.keep_only(own.submitter.mine());
                own.results.touch_all(own.submitter.mine());
                own.in_set = Some(
                    own.submitter
                        .mine()
                        .keys()
                        .filter(|h| set.entries.contains_key(*h))
                        .count(),
                );
                let withheld = own.results.withhold(set, own.submitter.mine());
                record_results(number, &own.clients, withheld, out);
            }
            // Shares met without a check are verified before use (on every path).
            for (hash, author, share) in own.results.to_verify(own.submitter.mine(), t) {
                match keys
                    .x
                    .verifying
                    .get(&author)
                    .ok_or("no verifying share".to_string())
                    .and_then(|v| decrypt::verify(c, number, set, author, v, &hash, &share))
                {
                    Ok(v) => own.results.add_verified(VerifiedShares(vec![v])),
                    Err(why) => {
                        own.results.drop_unverified(&hash, author);
                        out.faults.push(Fault::member(
                            author,
                            FaultKind::InvalidDecryptionShare,
                            None,
                            why,
                        ));
                    }
                }
            }
            let (opened, errors) = own.results.open(set, own.submitter.mine(), t);
            record_results(number, &own.clients, opened, out);
            failure = errors.into_iter().next();
            results_done = self.own_failure.is_some()
                || failure.is_some()
                || own.in_set.is_some_and(|n| own.results.opened().len() >= n);
        }
        if let (Some(reason), None) = (failure, &self.own_failure) {
            out.events.push(Event::Failed {
                epoch: Some(number),
                phase: Phase::Decrypt,
                reason: reason.clone(),
            });
            self.own_failure = Some((Phase::Decrypt, reason));
        }
        if shares_done && results_done {
            let results = self.own.as_ref().map_or(0, |o| o.results.opened().len());
            out.events.push(Event::EpochDone {
                epoch: number,
                results,
            });
            if let Stage::Decrypting { set, .. } = std::mem::replace(&mut self.stage, Stage::Open) {
                self.stage = Stage::Done { set };
            }
            self.finish(out);
            self.posted_shares.clear();
        }
    }

    /// Whether expensive work can be done right now.
    pub fn has_work(&self, keys_ready: bool) -> bool {
        let own_work = keys_ready
            && self.is_open()
            && self.own_failure.is_none()
            && self.own.as_ref().is_some_and(|o| o.submitter.queued() > 0);
        let decrypt_work = match &self.stage {
            Stage::Decrypting { producer, .. } => producer.as_ref().is_some_and(|p| !p.is_done()),
            _ => false,
        };
        own_work || decrypt_work
    }

    /// The next time this epoch has something to do.
    pub fn next_deadline(&self, c: &Consortium, now: Time) -> Option<Time> {
        // Failed here: nothing to do on our own any more, but the seal's agreement goes on (a
        // certified decision supersedes a seal failure).
        if self.failed.is_some() {
            return (!self.seal.engine_decided())
                .then(|| self.seal.next_timeout())
                .flatten()
                .filter(|t| *t > now);
        }
        let tick = now.plus(100);
        let mut next = Vec::new();
        match &self.stage {
            Stage::Open => next.push(c.submit_end(self.number)),
            Stage::Syncing { .. } => {
                next.push(c.report_at(self.number));
                next.push(tick);
            }
            Stage::Sealing => next.push(c.seal_end(self.number)),
            Stage::Fetching { .. } => next.push(tick),
            Stage::Decrypting { .. } => next.push(tick),
            Stage::Done { .. } => return None,
        }
        if !self.seal.engine_decided() {
            next.extend(self.seal.next_timeout());
        }
        if self.own.as_ref().is_some_and(|o| o.pseudonyms.pending()) && self.is_open() {
            next.push(tick);
        }
        if self.failed.is_none() {
            next.push(c.decrypt_end(self.number));
        }
        next.into_iter().filter(|t| *t > now).min()
    }

    /// Our results are stored: from now on only they are kept, and the scores, pseudonyms and
    /// one-time keys of the epoch are erased, on disk in the same batch (DESIGN 8) and in
    /// memory (zeroized as they drop). Once only; after a restart the stored results stand.
    fn finish(&mut self, out: &mut Out) {
        if self.finished.is_some() {
            return;
        }
        let f = Finished {
            given: self.own.is_some(),
            submissions: self.own_submissions(),
            results: self
                .results()
                .into_iter()
                .map(|r| (r.client_id, r.sum, r.count))
                .collect(),
        };
        self.own = None;
        let (writes, erase) = local::finished(self.number, &f);
        out.local.extend(writes);
        out.erase.extend(erase);
        self.finished = Some(f);
    }

    /// Erases the results (and whatever else of ours is left) once the retention is over.
    /// Returns whether anything changed.
    pub fn expire(&mut self, out: &mut Out) -> bool {
        if self.expired {
            return false;
        }
        let (marker, erase) = local::expired(self.number);
        out.local.push(marker);
        out.erase.extend(erase);
        self.expired = true;
        self.own = None;
        if let Some(f) = &mut self.finished {
            f.submissions.clear();
            f.results.clear();
        }
        true
    }

    /// Whether the results' retention is over (they were erased).
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    pub fn is_done(&self) -> bool {
        matches!(self.stage, Stage::Done { .. })
    }

    pub fn results(&self) -> Vec<ClientResult> {
        if let Some(f) = &self.finished {
            return f
                .results
                .iter()
                .map(|(id, sum, count)| ClientResult {
                    epoch: self.number,
                    client_id: id.clone(),
                    sum: *sum,
                    count: *count,
                })
                .collect();
        }
        let Some(own) = &self.own else {
            return Vec::new();
        };
        own.results
            .opened()
            .iter()
            .filter_map(|(&i, &(sum, count))| {
                Some(ClientResult {
                    epoch: self.number,
                    client_id: own.clients.get(i)?.id.clone(),
                    sum,
                    count,
                })
            })
            .collect()
    }

    /// The final set, once decided and built.
    pub fn set(&self) -> Option<&FinalSet> {
        match &self.stage {
            Stage::Decrypting { set, .. } | Stage::Done { set } => Some(set),
            _ => None,
        }
    }

    /// The final set's root and size, once decided and built.
    pub fn final_set(&self) -> Option<(Hash, usize)> {
        match &self.stage {
            Stage::Decrypting { set, .. } => Some((set.root, set.entries.len())),
            Stage::Done { set } => Some((set.root, set.entries.len())),
            _ => None,
        }
    }

    /// The final set's hashes, ascending, once decided and built.
    pub fn final_hashes(&self) -> Option<Vec<Hash>> {
        match &self.stage {
            Stage::Decrypting { set, .. } => Some(set.entries.keys().copied().collect()),
            Stage::Done { set } => Some(set.entries.keys().copied().collect()),
            _ => None,
        }
    }

    /// The submissions of the decided set that the final set left out (a repeated link or
    /// slot tag), once built.
    pub fn excluded(&self) -> Option<Vec<Hash>> {
        match &self.stage {
            Stage::Decrypting { set, .. } => Some(set.excluded.clone()),
            Stage::Done { set } => Some(set.excluded.clone()),
            _ => None,
        }
    }

    /// Our submissions: client id and record hash.
    pub fn own_submissions(&self) -> Vec<(String, Hash)> {
        if let Some(f) = &self.finished {
            return f.submissions.clone();
        }
        let Some(own) = &self.own else {
            return Vec::new();
        };
        own.submitter
            .mine()
            .iter()
            .filter_map(|(h, m)| Some((own.clients.get(m.client)?.id.clone(), *h)))
            .collect()
    }

    pub fn status(&self) -> EpochStatus {
        let phase = match self.stage {
            Stage::Open => Phase::Submit,
            Stage::Syncing { .. } | Stage::Sealing => Phase::Seal,
            Stage::Fetching { .. } | Stage::Decrypting { .. } => Phase::Decrypt,
            Stage::Done { .. } => Phase::Done,
        };
        let (root, submissions) = match self.final_set() {
            Some((root, n)) => (Some(root), n),
            None => (None, self.pool.len()),
        };
        EpochStatus {
            epoch: self.number,
            phase,
            submissions,
            mine: self.finished.as_ref().map_or_else(
                || self.own.as_ref().map_or(0, |o| o.submitter.mine().len()),
                |f| f.submissions.len(),
            ),
            results: self.finished.as_ref().map_or_else(
                || self.own.as_ref().map_or(0, |o| o.results.opened().len()),
                |f| f.results.len(),
            ),
            root,
            failed: self
                .failed
                .as_ref()
                .or(self.own_failure.as_ref())
                .map(|(p, r)| format!("{p:?}: {r}")),
        }
    }
}

/// Stores our new results before they are reported (DESIGN 8) and reports them.
fn record_results(epoch: u64, clients: &[Client], results: Vec<results::Opened>, out: &mut Out) {
    for (client, sum, count) in results {
        out.local.push(local::result(epoch, client, sum, count));
        if let Some(cl) = clients.get(client) {
            out.results.push(ClientResult {
                epoch,
                client_id: cl.id.clone(),
                sum,
                count,
            });
        }
    }
}
