//! The bank state machine (DESIGN 4, STYLE 1): one member's view of the consortium.
//!
//! Inputs: records (checked with [`Bank::check`], then persisted by the driver, then applied
//! with [`Bank::apply`]), direct requests and responses, commands and time. Outputs: a [`Step`]
//! with records to persist and publish, requests to send, results, faults and events. The bank
//! signs its own records and applies them to itself before returning them, so the driver must
//! persist every record in `Step::publish` before sending it anywhere.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};

use crate::dkg::{DkgReject, DkgRun, RunKeys};
use crate::epoch::{EpochState, Outgoing, ShareCheck};
use crate::genesis::Consortium;
use crate::keys::MemberSecrets;
use crate::local::{self, LocalWrite};
use crate::messages::{Request, Response};
use crate::record::{Body, Hash, Payload, Record, Run, UncheckedRecord};
use crate::time::Time;
use crate::{MemberIndex, CLIENT_ID_MAX, SCORE_MAX};

/// Where a record came from; decides how late records are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Published on gossip by `from` (the message's signed source, not the relaying peer).
    Gossip { from: MemberIndex },
    /// Fetched from `from` by anti-entropy sync.
    Sync { from: MemberIndex },
}

impl Origin {
    pub fn peer(self) -> MemberIndex {
        match self {
            Origin::Gossip { from } | Origin::Sync { from } => from,
        }
    }
}

/// Outcome of [`Bank::check`].
#[derive(Debug)]
pub enum Verdict {
    /// Valid: persist, then [`Bank::apply`]; forward on gossip.
    Accept(Record),
    /// Invalid: never forward; the fault names the culprit.
    Reject(Fault),
    /// Not wanted (late, outside the sealed set, duplicate): drop without blame.
    Ignore(&'static str),
    /// Cannot be judged yet (its prerequisites are not in): hold and check again later.
    Defer(UncheckedRecord),
}

/// Who a fault blames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Culprit {
    Member(MemberIndex),
    /// The anonymous poster of a submission, known only by the record hash.
    Submission(Hash),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Malformed,
    WrongConsortium,
    BadSignature,
    BadDkgPackage,
    UnexpectedRecord,
    Duplicate,
    InvalidSubmission,
    InvalidDecryptionShare,
    BadOprfResponse,
}

/// A peer's misbehaviour, with enough to name it (STYLE 4: faults, not errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub culprit: Culprit,
    pub kind: FaultKind,
    pub record: Option<Hash>,
    pub detail: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.culprit {
            Culprit::Member(m) => write!(f, "member {m}")?,
            Culprit::Submission(h) => write!(f, "poster of submission {}", hex::encode(&h[..8]))?,
        }
        write!(f, ": {:?}: {}", self.kind, self.detail)
    }
}

/// Phases of setup and of an epoch, for status and failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Setup,
    Pseudonyms,
    Submit,
    Seal,
    Decrypt,
    Done,
}

/// Something that happened, for progress reporting and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    DkgComplete {
        run: Run,
    },
    PseudonymsReady {
        epoch: u64,
        clients: usize,
    },
    Submitted {
        epoch: u64,
        count: usize,
    },
    WindowClosed {
        epoch: u64,
        submissions: usize,
    },
    Sealed {
        epoch: u64,
        submissions: usize,
        root: Hash,
    },
    /// One of our submissions is not in the sealed set; its client gets no result this epoch.
    SubmissionDropped {
        epoch: u64,
        client_id: String,
    },
    EpochDone {
        epoch: u64,
        results: usize,
    },
    /// A phase cannot complete (DESIGN 8: an explicit failure, never a silent hang).
    Failed {
        epoch: Option<u64>,
        phase: Phase,
        reason: String,
    },
}

/// One of this bank's clients' results (DESIGN 4.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientResult {
    pub epoch: u64,
    pub client_id: String,
    /// Sum of the scores of every bank that holds the client.
    pub sum: u64,
    /// Number of banks that hold the client.
    pub count: u32,
}

impl ClientResult {
    /// The average with two decimals, rounded half up, computed exactly in integers.
    pub fn average_2dp(&self) -> String {
        let count = u64::from(self.count.max(1));
        let hundredths = (self.sum * 200 + count) / (2 * count);
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// What the driver must do.
#[must_use]
#[derive(Debug, Default)]
pub struct Step {
    /// Local state to make durable before anything else in this step is done.
    pub local: Vec<LocalWrite>,
    /// Records this bank made, in order: persist each, then publish it.
    pub publish: Vec<Record>,
    /// Direct requests to send.
    pub requests: Vec<(MemberIndex, Request)>,
    pub results: Vec<ClientResult>,
    pub faults: Vec<Fault>,
    pub events: Vec<Event>,
}

impl Step {
    pub fn extend(&mut self, other: Step) {
        self.local.extend(other.local);
        self.publish.extend(other.publish);
        self.requests.extend(other.requests);
        self.results.extend(other.results);
        self.faults.extend(other.faults);
        self.events.extend(other.events);
    }
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
            && self.publish.is_empty()
            && self.requests.is_empty()
            && self.results.is_empty()
            && self.faults.is_empty()
            && self.events.is_empty()
    }
}

/// Local misuse (STYLE 4): bad operator input, never a peer's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("client #{line}: {reason}")]
    BadClient { line: usize, reason: String },
    #[error("epoch {0} is not open for submissions")]
    EpochClosed(u64),
    #[error("{clients} clients exceed the consortium's OPRF quota of {quota} per bank and epoch")]
    TooManyClients { clients: usize, quota: u32 },
    #[error("scores for epoch {0} were already given")]
    AlreadySubmitted(u64),
}

/// A status snapshot (DESIGN 8: readiness separate from liveness).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub me: MemberIndex,
    pub keys_ready: bool,
    pub dkg: Vec<(Run, usize, usize, usize)>,
    pub epochs: Vec<EpochStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochStatus {
    pub epoch: u64,
    pub phase: Phase,
    pub submissions: usize,
    pub mine: usize,
    pub results: usize,
    pub failed: Option<String>,
}

/// Internal context handed to the epoch logic.
pub(crate) struct Ctx<'a> {
    pub consortium: &'a Consortium,
    pub me: MemberIndex,
    pub secrets: &'a MemberSecrets,
    pub x: Option<&'a RunKeys>,
    pub k: Option<&'a RunKeys>,
}

/// Effects collected while handling one input.
#[derive(Default)]
pub(crate) struct Out {
    pub local: Vec<LocalWrite>,
    pub outgoing: Vec<Outgoing>,
    pub requests: Vec<(MemberIndex, Request)>,
    pub results: Vec<ClientResult>,
    pub faults: Vec<Fault>,
    pub events: Vec<Event>,
    /// Expensive operations done in this call; bounds how long one input can take.
    pub work_done: usize,
}

/// One member's protocol state machine.
pub struct Bank {
    consortium: Arc<Consortium>,
    me: MemberIndex,
    secrets: MemberSecrets,
    head: (u64, Hash),
    decryption: DkgRun,
    pseudonym: DkgRun,
    epochs: BTreeMap<u64, EpochState>,
    now: Time,
}

/// The fault for a DKG record the run refused.
fn dkg_fault(author: MemberIndex, hash: Hash, what: &str, reject: DkgReject) -> Fault {
    let (kind, detail) = match reject {
        DkgReject::Duplicate => (FaultKind::Duplicate, format!("second {what}")),
        DkgReject::NotExpected => (FaultKind::UnexpectedRecord, format!("{what} not expected")),
        DkgReject::Invalid(why) => (FaultKind::BadDkgPackage, format!("{what}: {why}")),
    };
    Fault {
        culprit: Culprit::Member(author),
        kind,
        record: Some(hash),
        detail,
    }
}

/// Bound on how many rounds of self-triggered work one input may cause.
const MAX_PROGRESS_ROUNDS: usize = 64;

impl Bank {
    pub fn new(consortium: Arc<Consortium>, me: MemberIndex, secrets: MemberSecrets) -> Bank {
        let decryption = DkgRun::new(&consortium, Run::Decryption);
        let pseudonym = DkgRun::new(&consortium, Run::Pseudonym);
        Bank {
            consortium,
            me,
            secrets,
            head: (0, [0; 32]),
            decryption,
            pseudonym,
            epochs: BTreeMap::new(),
            now: Time(0),
        }
    }

    pub fn me(&self) -> MemberIndex {
        self.me
    }
    pub fn consortium(&self) -> &Arc<Consortium> {
        &self.consortium
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            consortium: &self.consortium,
            me: self.me,
            secrets: &self.secrets,
            x: self.decryption.keys(),
            k: self.pseudonym.keys(),
        }
    }

    /// Group decryption key `X`, once the DKG is done.
    pub fn group_key(&self) -> Option<curve25519_dalek::ristretto::RistrettoPoint> {
        self.decryption.keys().map(|k| k.group)
    }

    /// Epochs whose records are still accepted: up to the one after the current.
    fn epoch_acceptable(&self, epoch: u64) -> bool {
        let c = &self.consortium;
        let current = if self.now < c.dkg_deadline() {
            1
        } else {
            1 + (self.now.0 - c.dkg_deadline().0) / c.genesis.timing.epoch_ms.max(1)
        };
        epoch >= 1 && epoch <= current + 1
    }

    fn fault(
        culprit: Culprit,
        kind: FaultKind,
        record: Option<Hash>,
        detail: impl Into<String>,
    ) -> Fault {
        Fault {
            culprit,
            kind,
            record,
            detail: detail.into(),
        }
    }

    /// Verifies a record against the current state (STYLE 5: the only way to a [`Record`]).
    pub fn check(&mut self, now: Time, origin: Origin, unchecked: UncheckedRecord) -> Verdict {
        self.now = self.now.max(now);
        let hash = unchecked.hash();
        if let Err(e) = unchecked.check_envelope(&self.consortium) {
            // An unverifiable identified record blames the peer that handed it to us.
            let kind = match e {
                crate::record::EnvelopeError::WrongConsortium => FaultKind::WrongConsortium,
                _ => FaultKind::BadSignature,
            };
            return Verdict::Reject(Self::fault(
                Culprit::Member(origin.peer()),
                kind,
                Some(hash),
                e.to_string(),
            ));
        }
        if self.must_wait(&unchecked) {
            return Verdict::Defer(unchecked);
        }
        let payload = unchecked.envelope().payload.clone();
        match payload {
            Payload::Identified(i) => {
                let author = i.author;
                // DESIGN 8: an identified record on gossip must come from its author.
                if let Origin::Gossip { from } = origin {
                    if from != author {
                        let detail = format!("published a record signed by member {author}");
                        return Verdict::Reject(Self::fault(
                            Culprit::Member(from),
                            FaultKind::UnexpectedRecord,
                            Some(hash),
                            detail,
                        ));
                    }
                }
                let blame = |kind, detail: String| {
                    Verdict::Reject(Self::fault(
                        Culprit::Member(author),
                        kind,
                        Some(hash),
                        detail,
                    ))
                };
                match &i.body {
                    Body::DkgRound1 {
                        run,
                        attempt,
                        package,
                    } => match self.dkg(*run).check_round1(author, *attempt, package) {
                        Ok(_) => Verdict::Accept(unchecked.into_checked()),
                        Err(reject) => {
                            Verdict::Reject(dkg_fault(author, hash, "round-1 package", reject))
                        }
                    },
                    Body::DkgRound2 {
                        run,
                        attempt,
                        shares,
                        ..
                    } => match self.dkg(*run).check_round2(author, *attempt, shares) {
                        Ok(()) => Verdict::Accept(unchecked.into_checked()),
                        Err(reject) => {
                            Verdict::Reject(dkg_fault(author, hash, "round-2 record", reject))
                        }
                    },
                    Body::DkgConfirm { run, attempt, .. } => {
                        match self.dkg(*run).check_confirm(author, *attempt) {
                            Ok(()) => Verdict::Accept(unchecked.into_checked()),
                            Err(reject) => {
                                Verdict::Reject(dkg_fault(author, hash, "DKG confirmation", reject))
                            }
                        }
                    }
                    Body::Ready { epoch }
                    | Body::OprfUsage { epoch, .. }
                    | Body::Checkpoint { epoch, .. } => {
                        if self.epoch_acceptable(*epoch) {
                            Verdict::Accept(unchecked.into_checked())
                        } else {
                            blame(
                                FaultKind::UnexpectedRecord,
                                format!("record for epoch {epoch}"),
                            )
                        }
                    }
                    Body::DecryptionShares {
                        epoch,
                        root,
                        shares,
                    } => {
                        let Some(state) = self.epochs.get(epoch) else {
                            return Verdict::Defer(unchecked);
                        };
                        match state.check_shares(&self.ctx(), author, root, shares) {
                            Ok(ShareCheck::Valid | ShareCheck::Unusable) => {
                                Verdict::Accept(unchecked.into_checked())
                            }
                            Ok(ShareCheck::Wait) => Verdict::Defer(unchecked),
                            Err(why) => blame(FaultKind::InvalidDecryptionShare, why),
                        }
                    }
                }
            }
            Payload::Submission(s) => {
                if !self.epoch_acceptable(s.epoch) {
                    return Verdict::Ignore("submission for an epoch that is not open");
                }
                let Some(x) = self.decryption.keys() else {
                    return Verdict::Defer(unchecked);
                };
                if let Some(state) = self.epochs.get(&s.epoch) {
                    if let Some(reason) = state.refuses_submission(origin, &hash) {
                        return Verdict::Ignore(reason);
                    }
                }
                match crate::epoch::verify_submission(&self.consortium, &x.group, &s) {
                    Ok(()) => Verdict::Accept(unchecked.into_checked()),
                    Err(e) => Verdict::Reject(Self::fault(
                        Culprit::Submission(hash),
                        FaultKind::InvalidSubmission,
                        Some(hash),
                        e.to_string(),
                    )),
                }
            }
        }
    }

    /// Whether a record cannot be judged before some other record arrives (cheap; no crypto):
    /// drivers holding records back call this before checking them again.
    pub fn must_wait(&self, unchecked: &UncheckedRecord) -> bool {
        match &unchecked.envelope().payload {
            Payload::Submission(_) => self.decryption.keys().is_none(),
            Payload::Identified(i) => match &i.body {
                Body::DecryptionShares { epoch, .. } => !self
                    .epochs
                    .get(epoch)
                    .is_some_and(EpochState::can_judge_shares),
                _ => false,
            },
        }
    }

    fn dkg(&self, run: Run) -> &DkgRun {
        match run {
            Run::Decryption => &self.decryption,
            Run::Pseudonym => &self.pseudonym,
        }
    }

    /// Applies a checked record that is now durable in the store (or being replayed from it).
    pub fn apply(
        &mut self,
        now: Time,
        record: &Record,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Step {
        self.now = self.now.max(now);
        let mut out = Out::default();
        self.apply_record(record, &mut out);
        self.progress(rng, out)
    }

    /// Replays a stored record after a restart: state only, no side effects.
    pub fn replay(&mut self, record: &Record) {
        let mut out = Out::default();
        self.apply_record(record, &mut out);
    }

    fn apply_record(&mut self, record: &Record, out: &mut Out) {
        match record.payload() {
            Payload::Identified(i) => {
                if i.author == self.me && i.seq > self.head.0 {
                    self.head = (i.seq, record.hash());
                }
                let (me, author) = (self.me, i.author);
                match &i.body {
                    Body::DkgRound1 {
                        run,
                        attempt,
                        package,
                    } => {
                        let run = *run;
                        if let Ok(pkg) = self.dkg(run).check_round1(author, *attempt, package) {
                            self.dkg_mut(run).apply_round1(author, pkg);
                        }
                        self.dkg_mut(run).note_record(author, 0, record.hash());
                        if author == me {
                            // Replaying our own record after a restart: recompute its secret.
                            let (dkg, consortium, secrets) = self.dkg_parts(run);
                            dkg.resume_round1(consortium, me, secrets);
                        }
                    }
                    Body::DkgRound2 {
                        run,
                        ephemeral,
                        shares,
                        ..
                    } => {
                        let run = *run;
                        let (consortium, secrets) = (&self.consortium, &self.secrets);
                        let dkg = match run {
                            Run::Decryption => &mut self.decryption,
                            Run::Pseudonym => &mut self.pseudonym,
                        };
                        dkg.note_record(author, 1, record.hash());
                        if let Err(why) =
                            dkg.apply_round2(consortium, me, secrets, author, ephemeral, shares)
                        {
                            out.faults.push(Self::fault(
                                Culprit::Member(author),
                                FaultKind::BadDkgPackage,
                                Some(record.hash()),
                                why,
                            ));
                        }
                        if author == me {
                            dkg.resume_round2(consortium, me, secrets);
                        }
                    }
                    Body::DkgConfirm {
                        run, transcript, ..
                    } => {
                        self.dkg_mut(*run).apply_confirm(me, author, *transcript);
                    }
                    Body::Ready { epoch } => self.epoch_mut(*epoch).ready(author),
                    Body::OprfUsage { epoch, served } => {
                        self.epoch_mut(*epoch).record_usage(author, served)
                    }
                    Body::Checkpoint { epoch, count, root } => self
                        .epoch_mut(*epoch)
                        .apply_checkpoint(author, *count, *root),
                    Body::DecryptionShares {
                        epoch,
                        root,
                        shares,
                    } => {
                        let epoch = *epoch;
                        self.epoch_mut(epoch);
                        let ctx = Ctx {
                            consortium: &self.consortium,
                            me,
                            secrets: &self.secrets,
                            x: self.decryption.keys(),
                            k: self.pseudonym.keys(),
                        };
                        if let Some(state) = self.epochs.get_mut(&epoch) {
                            state.apply_shares(&ctx, author, root, shares, out);
                        }
                    }
                }
                if author == me {
                    // What our own records say we did (met again when replaying after a restart).
                    if let Some(epoch) = record.epoch() {
                        self.epoch_mut(epoch).replay_own(&i.body);
                    }
                }
            }
            Payload::Submission(s) => self.epoch_mut(s.epoch).add_submission(record.hash(), s),
        }
    }

    fn dkg_parts(&mut self, run: Run) -> (&mut DkgRun, &Consortium, &MemberSecrets) {
        let dkg = match run {
            Run::Decryption => &mut self.decryption,
            Run::Pseudonym => &mut self.pseudonym,
        };
        (dkg, &self.consortium, &self.secrets)
    }

    fn dkg_mut(&mut self, run: Run) -> &mut DkgRun {
        match run {
            Run::Decryption => &mut self.decryption,
            Run::Pseudonym => &mut self.pseudonym,
        }
    }

    fn epoch_mut(&mut self, epoch: u64) -> &mut EpochState {
        self.epochs
            .entry(epoch)
            .or_insert_with(|| EpochState::new(epoch))
    }

    /// Gives this bank's scores for `epoch` (client id, score). Checks them all first.
    pub fn submit(
        &mut self,
        now: Time,
        epoch: u64,
        scores: Vec<(String, u16)>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, Error> {
        self.now = self.now.max(now);
        let mut seen = std::collections::BTreeSet::new();
        for (pos, (id, score)) in scores.iter().enumerate() {
            let line = pos + 1;
            if id.is_empty() || id.len() > CLIENT_ID_MAX {
                return Err(Error::BadClient {
                    line,
                    reason: format!("client id must be 1..={CLIENT_ID_MAX} bytes"),
                });
            }
            if *score > SCORE_MAX {
                return Err(Error::BadClient {
                    line,
                    reason: format!("score {score} is above {SCORE_MAX}"),
                });
            }
            if !seen.insert(id.as_str()) {
                return Err(Error::BadClient {
                    line,
                    reason: format!("duplicate client id {id:?}"),
                });
            }
        }
        if epoch == 0 || now >= self.consortium.submit_end(epoch) {
            return Err(Error::EpochClosed(epoch));
        }
        let quota = self.consortium.genesis.oprf_quota;
        if scores.len() > quota as usize {
            return Err(Error::TooManyClients {
                clients: scores.len(),
                quota,
            });
        }
        let state = self.epoch_mut(epoch);
        if state.has_clients() {
            return Err(Error::AlreadySubmitted(epoch));
        }
        if state.is_closed() {
            return Err(Error::EpochClosed(epoch));
        }
        // The operator's input is made durable before anything is done with it (DESIGN 8).
        let mut out = Out::default();
        out.local.push(local::scores(epoch, &scores));
        state.set_clients(scores, Vec::new());
        let epochs: Vec<u64> = self
            .epochs
            .iter()
            .filter(|(_, s)| s.has_clients())
            .map(|(&e, _)| e)
            .collect();
        out.local.push(local::epochs(&epochs));
        Ok(self.progress(rng, out))
    }

    /// Takes back an epoch's scores and known OPRF outputs from the node's local store after a
    /// restart (after the log was replayed). Own submissions already in the log are recognized,
    /// not posted again; those missing are posted if the window is still open.
    pub fn resume(
        &mut self,
        now: Time,
        epoch: u64,
        scores: Vec<(String, u16)>,
        pseudonyms: Vec<(usize, [u8; 64])>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Step {
        self.now = self.now.max(now);
        let state = self.epoch_mut(epoch);
        if !state.has_clients() {
            state.set_clients(scores, pseudonyms);
        }
        self.progress(rng, Out::default())
    }

    /// Answers a direct request from member `from`.
    pub fn handle_request(
        &mut self,
        now: Time,
        from: MemberIndex,
        request: Request,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Response {
        self.now = self.now.max(now);
        let refused = |reason: &str| Response::Refused {
            reason: reason.to_string(),
        };
        if !self.consortium.is_member(from) || from == self.me {
            return refused("not a peer member");
        }
        match request {
            Request::OprfEvaluate {
                epoch,
                batch,
                blinded,
            } => {
                if !self.epoch_acceptable(epoch) {
                    return refused("epoch not open");
                }
                let quota = self.consortium.genesis.oprf_quota;
                let Some(k) = self.pseudonym.keys() else {
                    return refused("pseudonym key not ready");
                };
                let Some(share) = k.share.as_ref() else {
                    return refused("no pseudonym key share");
                };
                let share = share.clone();
                let state = self
                    .epochs
                    .entry(epoch)
                    .or_insert_with(|| EpochState::new(epoch));
                state.evaluate_oprf(from, batch, &blinded, &share, quota, rng)
            }
            Request::EpochSet { epoch, root } => {
                match self.epochs.get(&epoch).and_then(|s| s.cosigned_set(&root)) {
                    Some(hashes) => Response::EpochSet {
                        epoch,
                        root,
                        hashes,
                    },
                    None => refused("no cosigned set with that root"),
                }
            }
            Request::Records { .. } | Request::Heads | Request::AuthorRange { .. } => {
                refused("served by the store")
            }
        }
    }

    /// Handles a response to a request this bank made.
    pub fn handle_response(
        &mut self,
        now: Time,
        from: MemberIndex,
        response: Response,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Step {
        self.now = self.now.max(now);
        let mut out = Out::default();
        let me = self.me;
        match response {
            Response::OprfEvaluated {
                epoch,
                batch,
                evaluated,
                proof,
            } => {
                let ctx = Ctx {
                    consortium: &self.consortium,
                    me,
                    secrets: &self.secrets,
                    x: self.decryption.keys(),
                    k: self.pseudonym.keys(),
                };
                if let Some(state) = self.epochs.get_mut(&epoch) {
                    state.oprf_response(&ctx, from, batch, evaluated, proof, &mut out);
                }
            }
            Response::EpochSet {
                epoch,
                root,
                hashes,
            } => {
                if let Some(state) = self.epochs.get_mut(&epoch) {
                    state.epoch_set_response(from, root, hashes, &mut out);
                }
            }
            Response::Refused { .. } | Response::Records { .. } | Response::Heads { .. } => {}
        }
        self.progress(rng, out)
    }

    /// Advances timers: DKG start and deadlines, window closes, seal, decryption.
    pub fn handle_timeout(&mut self, now: Time, rng: &mut (impl RngCore + CryptoRng)) -> Step {
        self.now = self.now.max(now);
        self.progress(rng, Out::default())
    }

    /// When [`Bank::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let c = &self.consortium;
        if self.now < c.start() {
            return Some(c.start());
        }
        let x_ready = self.decryption.keys().is_some();
        let busy = self.epochs.values().any(|e| e.has_work(x_ready));
        if busy {
            return Some(self.now);
        }
        let mut next: Option<Time> = None;
        let mut consider = |t: Time| {
            if t > self.now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.decryption.keys().is_none() || self.pseudonym.keys().is_none() {
            consider(c.dkg_deadline());
        }
        for state in self.epochs.values() {
            if let Some(t) = state.next_deadline(c) {
                consider(t);
            }
        }
        // Seal re-cosigning, sync and OPRF retries are driven by a short tick while needed.
        if self
            .epochs
            .values()
            .any(|e| e.is_sealing() || e.awaits_oprf())
        {
            consider(self.now.plus(100));
        }
        next
    }

    /// Runs everything that became possible, then signs and applies what we produced.
    fn progress(&mut self, rng: &mut (impl RngCore + CryptoRng), mut out: Out) -> Step {
        let mut step = Step::default();
        for _ in 0..MAX_PROGRESS_ROUNDS {
            self.progress_once(rng, &mut out);
            let produced = !out.outgoing.is_empty();
            self.flush(&mut out, &mut step);
            if !produced {
                break;
            }
        }
        step
    }

    fn flush(&mut self, out: &mut Out, step: &mut Step) {
        for item in std::mem::take(&mut out.outgoing) {
            let record = match item {
                Outgoing::Body(body) => {
                    let seq = self.head.0 + 1;
                    Record::identified(
                        &self.consortium.id,
                        self.secrets.identity(),
                        self.me,
                        seq,
                        self.head.1,
                        body,
                    )
                }
                Outgoing::Submission(s) => Record::submission(&self.consortium.id, *s),
            };
            self.apply_record(&record, out);
            step.publish.push(record);
        }
        step.local.append(&mut out.local);
        step.requests.append(&mut out.requests);
        step.results.append(&mut out.results);
        step.faults.append(&mut out.faults);
        step.events.append(&mut out.events);
    }

    fn progress_once(&mut self, rng: &mut (impl RngCore + CryptoRng), out: &mut Out) {
        let now = self.now;
        let c = Arc::clone(&self.consortium);
        if now >= c.start() {
            for run in Run::ALL {
                let (me, secrets) = (self.me, &self.secrets);
                let dkg = match run {
                    Run::Decryption => &mut self.decryption,
                    Run::Pseudonym => &mut self.pseudonym,
                };
                if let Some(body) = dkg.round1_body(&c, me, secrets) {
                    out.outgoing.push(Outgoing::Body(body));
                }
                if let Some(body) = dkg.round2_body(&c, me, secrets) {
                    out.outgoing.push(Outgoing::Body(body));
                }
                match dkg.try_finish(&c.id, me) {
                    Ok(_) => {
                        if let Some(body) = dkg.confirm_body() {
                            out.outgoing.push(Outgoing::Body(body));
                        }
                        if dkg.try_confirm() {
                            out.events.push(Event::DkgComplete { run });
                        }
                    }
                    Err(why) => {
                        dkg.fail(why.clone());
                        out.events.push(Event::Failed {
                            epoch: None,
                            phase: Phase::Setup,
                            reason: why,
                        });
                    }
                }
                if now >= c.dkg_deadline() && dkg.keys().is_none() && dkg.failed().is_none() {
                    let reason = format!(
                        "DKG {run:?} incomplete at its deadline ({})",
                        dkg.waiting_for()
                    );
                    dkg.fail(reason.clone());
                    out.events.push(Event::Failed {
                        epoch: None,
                        phase: Phase::Setup,
                        reason,
                    });
                }
            }
        }
        let ctx = Ctx {
            consortium: &c,
            me: self.me,
            secrets: &self.secrets,
            x: self.decryption.keys(),
            k: self.pseudonym.keys(),
        };
        for state in self.epochs.values_mut() {
            state.advance(&ctx, now, rng, out);
        }
    }

    pub fn status(&self) -> Status {
        let dkg = [&self.decryption, &self.pseudonym]
            .iter()
            .zip(Run::ALL)
            .map(|(d, run)| {
                let (a, b, n) = d.progress();
                (run, a, b, n)
            })
            .collect();
        Status {
            me: self.me,
            keys_ready: self.decryption.keys().is_some() && self.pseudonym.keys().is_some(),
            dkg,
            epochs: self.epochs.values().map(EpochState::status).collect(),
        }
    }

    /// Results so far for `epoch`.
    pub fn results(&self, epoch: u64) -> Vec<ClientResult> {
        self.epochs
            .get(&epoch)
            .map(EpochState::results)
            .unwrap_or_default()
    }
}
