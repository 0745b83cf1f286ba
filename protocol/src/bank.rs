//! The bank state machine (DESIGN 4, STYLE 1): one member's view of the consortium. It routes
//! records, requests and time to the setup and to each epoch, and signs what they produce.
//!
//! Inputs: records (checked with [`Bank::check`], a function of the record and read-only
//! state; then persisted by the driver; then applied with [`Bank::apply`]), direct requests
//! and responses, commands and time. Outputs: a [`Step`]. The bank signs its own records and
//! applies them to itself before returning them, so the driver must persist every record in
//! `Step::publish` before sending it anywhere. It signs nothing until the driver confirmed its
//! own chain's head with peers ([`Bank::confirm_head`]): a node restored from a backup, or
//! whose tail was lost, never reuses a sequence number.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use curve25519_dalek::ristretto::RistrettoPoint;
use rand_core::{CryptoRng, RngCore};

use crate::agreement::{well_formed, Agreement, MAX_ROUNDS};
use crate::epoch::decrypt::VerifiedShares;
use crate::epoch::submit::verify_submission;
use crate::epoch::{Ctx, Epoch, Out, ShareCheck};
use crate::evidence::{self, Judgement};
use crate::genesis::Consortium;
use crate::keys::{EpochSecret, MemberSecrets};
use crate::local::{LocalEntry, LocalWrite, Restored};
use crate::messages::{Request, Response};
use crate::record::{
    kind_of_body, Body, EnvelopeError, Evidence, Hash, Instance, Payload, Record, UncheckedRecord,
};
use crate::relay::{self, Relay, RelayStats};
use crate::setup::{CheckDkg, DkgReject, Setup, SetupKeys, SetupOut, MAX_ATTEMPTS};
use crate::step::{
    ClientResult, Culprit, Error, Event, Fault, FaultKind, Origin, Status, Step, Wait,
};
use crate::time::Time;
use crate::{MemberIndex, CLIENT_ID_MAX, SCORE_MAX};

/// Outcome of [`Bank::check`].
#[derive(Debug)]
pub enum Verdict {
    /// Valid: persist, then [`Bank::apply`]; forward on gossip.
    Accept(Checked),
    /// Invalid: never forward; the fault names the culprit.
    Reject(Fault),
    /// Not wanted (late, outside the final set): drop without blame.
    Ignore(&'static str),
    /// Cannot be judged yet: hold it and check it again once `Wait` is over
    /// ([`Bank::still_waiting`]).
    Defer(UncheckedRecord, Wait),
}

/// A record that passed [`Bank::check`], with what its check established.
#[derive(Debug)]
pub struct Checked {
    record: Record,
    /// The verified decryption shares of the record that concern our own submissions.
    shares: Option<VerifiedShares>,
}

impl Checked {
    pub fn record(&self) -> &Record {
        &self.record
    }
}

/// Bound on how many rounds of self-triggered work one input may cause.
const MAX_PROGRESS_ROUNDS: usize = 64;
/// How often our latest votes of undecided instances go out again (gossip loses messages;
/// Tendermint assumes eventual delivery). They are the same records, not new ones.
const REPUBLISH_MS: u64 = 5_000;

/// One member's protocol state machine.
pub struct Bank {
    consortium: Arc<Consortium>,
    me: MemberIndex,
    secrets: MemberSecrets,
    head: (u64, Hash),
    head_confirmed: bool,
    /// Each epoch's setup (its own DKG runs and fresh keys), by epoch.
    setups: BTreeMap<u64, Setup>,
    epochs: BTreeMap<u64, Epoch>,
    now: Time,
    /// Replaying the log after a restart: state only, effects are not sent.
    replaying: bool,
    /// Local writes made while replaying (a decision re-derived from the log), stored at resume.
    replay_local: Vec<LocalWrite>,
    /// Epochs seen over here whose setup secret is still to be erased, with the step that saw
    /// them over (they are erased in a later one).
    over_seen: BTreeMap<u64, u64>,
    /// Steps taken (inputs that ran the protocol), to tell one step from the next.
    steps: u64,
    /// Our own records per epoch, to publish again after a restart.
    own_records: BTreeMap<Option<u64>, Vec<Hash>>,
    /// Our latest vote of each instance.
    latest_vote: BTreeMap<Instance, Hash>,
    last_republish: Time,
    /// Our submissions leave through the onion relay; we relay others' (DESIGN 6).
    relay: Relay,
    onion_key: x25519_sphinx::StaticSecret,
    /// Fault records on the log: (poster, culprit, kind, epoch). A member posts one per
    /// culprit, kind and epoch.
    fault_records: BTreeSet<(MemberIndex, MemberIndex, &'static str, u64)>,
    /// What the log proves of each member: (kind, epoch) of each conviction.
    convictions: BTreeMap<MemberIndex, BTreeSet<(&'static str, u64)>>,
}

/// How evidence in a fault record is judged here.
enum EvidenceVerdict {
    /// It holds: the member is at fault.
    Proven(MemberIndex),
    /// It cannot be checked here any more (the final set it needs is gone); the record is kept
    /// for auditors, who check it from the log, and convicts nobody here.
    Unverifiable(MemberIndex),
    Wait(Wait),
    /// It does not hold: the member who posted it accused falsely.
    False(String),
}

impl Bank {
    pub fn new(consortium: Arc<Consortium>, me: MemberIndex, secrets: MemberSecrets) -> Bank {
        let onion_key = relay::packet::onion_secret(secrets.x25519());
        Bank {
            consortium,
            me,
            secrets,
            head: (0, [0; 32]),
            head_confirmed: false,
            setups: BTreeMap::new(),
            epochs: BTreeMap::new(),
            now: Time(0),
            replaying: false,
            replay_local: Vec::new(),
            over_seen: BTreeMap::new(),
            steps: 0,
            own_records: BTreeMap::new(),
            latest_vote: BTreeMap::new(),
            last_republish: Time(0),
            relay: Relay::new(me),
            onion_key,
            fault_records: BTreeSet::new(),
            convictions: BTreeMap::new(),
        }
    }

    /// The relay's counters.
    pub fn relay_stats(&self) -> RelayStats {
        self.relay.stats()
    }
    /// Our submissions queued or in flight that are not on our log yet.
    pub fn submissions_unconfirmed(&self) -> usize {
        self.relay.unconfirmed()
    }

    /// Whether we send onion packets now: the current epoch's submission window is open here
    /// and the keys are ready. Every member sends then, with or without clients of its own.
    fn sending(&self) -> bool {
        let c = &self.consortium;
        let e = c.epoch_at(self.now);
        self.head_confirmed
            && self.keys(e).is_some()
            && self.now < c.submit_end(e)
            && self.epochs.get(&e).is_some_and(Epoch::is_open)
    }

    pub fn me(&self) -> MemberIndex {
        self.me
    }
    pub fn consortium(&self) -> &Arc<Consortium> {
        &self.consortium
    }
    /// Our own chain's head as this bank knows it.
    pub fn head(&self) -> (u64, Hash) {
        self.head
    }
    /// Epoch `epoch`'s group decryption key `X`, once its setup is decided.
    pub fn group_key(&self, epoch: u64) -> Option<curve25519_dalek::ristretto::RistrettoPoint> {
        self.keys(epoch).map(|k| k.x.group)
    }

    /// Epoch `epoch`'s keys, once its setup is decided here.
    fn keys(&self, epoch: u64) -> Option<&SetupKeys> {
        self.setups.get(&epoch).and_then(Setup::keys)
    }
    /// Epoch `epoch`'s keys as this member holds them (its shares and ring key until the
    /// epoch is over), once its setup is decided here.
    pub fn epoch_keys(&self, epoch: u64) -> Option<&SetupKeys> {
        self.keys(epoch)
    }

    fn ctx(&self, now: Time, epoch: u64) -> Ctx<'_> {
        Ctx {
            consortium: &self.consortium,
            me: self.me,
            secrets: &self.secrets,
            keys: self.keys(epoch),
            now,
        }
    }

    fn setup_mut(&mut self, epoch: u64) -> &mut Setup {
        let (c, me) = (&self.consortium, self.me);
        self.setups
            .entry(epoch)
            .or_insert_with(|| Setup::new(c, me, epoch))
    }

    /// Epochs whose records are accepted: up to two after the current (a member whose clock
    /// is a little ahead is not blamed), and any we have.
    fn epoch_acceptable(&self, now: Time, epoch: u64) -> bool {
        epoch >= 1
            && (epoch <= self.consortium.epoch_at(now.max(self.now)) + 2
                || self.epochs.contains_key(&epoch))
    }

    fn epoch_mut(&mut self, epoch: u64) -> &mut Epoch {
        let (c, me) = (&self.consortium, self.me);
        self.epochs
            .entry(epoch)
            .or_insert_with(|| Epoch::new(c, me, epoch))
    }

    // --- Checking -----------------------------------------------------------------------------

    /// Verifies a record (STYLE 5: the only way to a [`Record`]). Reads state, changes none, so
    /// a driver may check many records at once.
    pub fn check(&self, now: Time, origin: Origin, unchecked: UncheckedRecord) -> Verdict {
        let hash = unchecked.hash();
        if let Err(e) = unchecked.check_envelope(&self.consortium) {
            // An unverifiable identified record blames the peer that handed it to us.
            let kind = match e {
                EnvelopeError::WrongConsortium => FaultKind::WrongConsortium,
                _ => FaultKind::BadSignature,
            };
            let fault = Fault::member(origin.peer(), kind, Some(hash), e.to_string());
            return Verdict::Reject(fault);
        }
        let payload = unchecked.envelope().payload.clone();
        let verdict = match &payload {
            Payload::Identified(i) => {
                // DESIGN 8: an identified record on gossip must come from its author.
                if let Origin::Gossip { from } = origin {
                    if from != i.author {
                        let detail = format!("published a record signed by member {}", i.author);
                        let fault =
                            Fault::member(from, FaultKind::UnexpectedRecord, Some(hash), detail);
                        return Verdict::Reject(fault);
                    }
                }
                self.check_body(now, i.author, hash, &i.body)
            }
            Payload::Submission(s) => self.check_submission(now, hash, s),
        };
        match verdict {
            Judged::Accept(shares) => Verdict::Accept(Checked {
                record: unchecked.into_checked(),
                shares,
            }),
            Judged::Reject(mut f) => {
                // A share record that fails on its own against the final set is its author's
                // signed proof of its fault (one that fails only beside the author's other
                // records is not: nobody could check that from it alone).
                if let (FaultKind::InvalidDecryptionShare, Payload::Identified(i)) =
                    (f.kind, &payload)
                {
                    if let Body::DecryptionShares {
                        epoch,
                        root,
                        shares,
                    } = &i.body
                    {
                        let alone = self.epochs.get(epoch).and_then(|e| {
                            e.shares_fail_alone(&self.ctx(now, *epoch), i.author, root, shares)
                        });
                        if matches!(alone, Some(Err(_))) {
                            f.evidence = Some(Evidence::BadDecryptionShares {
                                record: unchecked.bytes().to_vec(),
                            });
                        }
                    }
                }
                Verdict::Reject(f)
            }
            Judged::Ignore(why) => Verdict::Ignore(why),
            Judged::Wait(w) => Verdict::Defer(unchecked, w),
        }
    }

    fn check_body(&self, now: Time, author: MemberIndex, hash: Hash, body: &Body) -> Judged {
        let blame =
            |kind, detail: String| Judged::Reject(Fault::member(author, kind, Some(hash), detail));
        match body {
            Body::DkgRound1 { epoch, attempt, .. }
            | Body::DkgRound2 { epoch, attempt, .. }
            | Body::DkgComplaint { epoch, attempt, .. }
            | Body::DkgDone { epoch, attempt, .. } => {
                if let Judged::Reject(f) = self.epoch_record(now, author, *epoch) {
                    return Judged::Reject(f);
                }
                let fresh;
                let setup = match self.setups.get(epoch) {
                    Some(s) => s,
                    // A setup that started but that this member has not met yet (it was down,
                    // or catches up from an empty store): judged as it begins, with attempt 0.
                    None if now.max(self.now) >= self.consortium.setup_start(*epoch) => {
                        fresh = Setup::new(&self.consortium, self.me, *epoch);
                        &fresh
                    }
                    None => return Judged::Wait(Wait::Attempt(*epoch, *attempt)),
                };
                match setup.check_dkg(&self.consortium, author, body) {
                    Ok(()) => Judged::Accept(None),
                    Err(CheckDkg::Wait(w)) => Judged::Wait(w),
                    Err(CheckDkg::Reject(r)) => {
                        let (kind, detail) = match r {
                            DkgReject::Duplicate => (
                                FaultKind::Duplicate,
                                format!("a second {}", kind_of_body(body)),
                            ),
                            DkgReject::NotExpected => (
                                FaultKind::UnexpectedRecord,
                                "DKG package from a non-participant or for another attempt".into(),
                            ),
                            DkgReject::Invalid(why) => (FaultKind::BadDkgPackage, why),
                        };
                        blame(kind, detail)
                    }
                }
            }
            Body::Proposal { .. } | Body::Vote { .. } => {
                let Some((instance, msg, value)) = Agreement::message_of(body) else {
                    return Judged::Ignore("not an agreement message");
                };
                if msg.round() >= MAX_ROUNDS {
                    return blame(
                        FaultKind::BadAgreementMessage,
                        format!("round {} beyond the bound", msg.round()),
                    );
                }
                if value.is_some_and(|v| !v.fits(&instance) || !well_formed(&self.consortium, v)) {
                    return blame(
                        FaultKind::BadAgreementMessage,
                        "a malformed value, or one of the wrong kind for its instance".into(),
                    );
                }
                let counted = match instance {
                    Instance::Setup { attempt, .. } if attempt >= MAX_ATTEMPTS => {
                        return blame(
                            FaultKind::BadAgreementMessage,
                            format!("setup attempt {attempt} beyond the bound"),
                        );
                    }
                    Instance::Setup { epoch, attempt } => {
                        if let Judged::Reject(f) = self.epoch_record(now, author, epoch) {
                            return Judged::Reject(f);
                        }
                        let started = now.max(self.now) >= self.consortium.setup_start(epoch);
                        match self.setups.get(&epoch) {
                            Some(s) if s.knows_attempt(attempt) => s.accepts(author, body),
                            None if started && attempt == 0 => {
                                Setup::new(&self.consortium, self.me, epoch).accepts(author, body)
                            }
                            _ => return Judged::Wait(Wait::Attempt(epoch, attempt)),
                        }
                    }
                    Instance::Seal { epoch } => match self.epoch_record(now, author, epoch) {
                        Judged::Accept(_) => self
                            .epochs
                            .get(&epoch)
                            .is_none_or(|e| e.accepts(author, body)),
                        other => return other,
                    },
                };
                if counted {
                    Judged::Accept(None)
                } else {
                    blame(
                        FaultKind::BadAgreementMessage,
                        "a second proposal, or more votes than a member may sign".into(),
                    )
                }
            }
            Body::OprfUsage { epoch, .. } => match self.epoch_record(now, author, *epoch) {
                Judged::Accept(_)
                    if self
                        .epochs
                        .get(epoch)
                        .is_some_and(|e| e.has_posted(author, body)) =>
                {
                    blame(
                        FaultKind::Duplicate,
                        format!("a second {}", kind_of_body(body)),
                    )
                }
                other => other,
            },
            Body::Report {
                epoch,
                part,
                hashes,
                ..
            } => match self.epoch_record(now, author, *epoch) {
                Judged::Accept(_) => {
                    let most = crate::epoch::seal::max_parts(&self.consortium);
                    let met = self
                        .epochs
                        .get(epoch)
                        .map_or(0, |e| e.report_parts_of(author));
                    if met >= most {
                        return blame(
                            FaultKind::Duplicate,
                            format!("more than {most} report parts in epoch {epoch}"),
                        );
                    }
                    match crate::epoch::seal::check_report(&self.consortium, *part, hashes) {
                        Ok(()) => Judged::Accept(None),
                        Err(why) => blame(FaultKind::BadAgreementMessage, why),
                    }
                }
                other => other,
            },
            Body::Fault { epoch, evidence } => {
                if let Judged::Reject(f) = self.epoch_record(now, author, *epoch) {
                    return Judged::Reject(f);
                }
                let culprit = match self.judge_evidence(now, *epoch, evidence) {
                    EvidenceVerdict::Proven(m) | EvidenceVerdict::Unverifiable(m) => m,
                    EvidenceVerdict::Wait(w) => return Judged::Wait(w),
                    EvidenceVerdict::False(why) => return blame(FaultKind::FalseAccusation, why),
                };
                if self
                    .fault_records
                    .contains(&(author, culprit, evidence.kind(), *epoch))
                {
                    return blame(
                        FaultKind::Duplicate,
                        format!(
                            "a second {} record against member {culprit}",
                            evidence.kind()
                        ),
                    );
                }
                Judged::Accept(None)
            }
            Body::DecryptionShares {
                epoch,
                root,
                shares,
            } => {
                if let Judged::Reject(f) = self.epoch_record(now, author, *epoch) {
                    return Judged::Reject(f);
                }
                let Some(e) = self.epochs.get(epoch) else {
                    return Judged::Wait(Wait::FinalSet(*epoch));
                };
                match e.check_shares(&self.ctx(now, *epoch), author, root, shares) {
                    ShareCheck::Verified(v) => Judged::Accept(Some(v)),
                    ShareCheck::Unchecked => Judged::Accept(None),
                    ShareCheck::Wait(w) => Judged::Wait(w),
                    ShareCheck::Reject(why) => blame(FaultKind::InvalidDecryptionShare, why),
                }
            }
        }
    }

    /// Judges a fault record's evidence against the genesis and what the log holds here.
    fn judge_evidence(&self, now: Time, epoch: u64, evidence: &Evidence) -> EvidenceVerdict {
        let e = self.epochs.get(&epoch);
        let set = e.and_then(Epoch::set);
        match evidence::judge(&self.consortium, epoch, evidence, self.keys(epoch), set) {
            Judgement::Proven(m) => EvidenceVerdict::Proven(m),
            Judgement::False(why) => EvidenceVerdict::False(why),
            Judgement::NeedsKeys => EvidenceVerdict::Wait(Wait::Keys(epoch)),
            // The final set is gone here (or will never be built): the record is kept for
            // auditors, who judge it from the log.
            Judgement::NeedsFinalSet(author)
                if e.is_some_and(|e| !e.awaits_final_set(&self.consortium, now)) =>
            {
                EvidenceVerdict::Unverifiable(author)
            }
            Judgement::NeedsFinalSet(_) => EvidenceVerdict::Wait(Wait::FinalSet(epoch)),
        }
    }

    fn epoch_record(&self, now: Time, author: MemberIndex, epoch: u64) -> Judged {
        if self.epoch_acceptable(now, epoch) {
            Judged::Accept(None)
        } else {
            Judged::Reject(Fault::member(
                author,
                FaultKind::UnexpectedRecord,
                None,
                format!("record for epoch {epoch}, which is not open"),
            ))
        }
    }

    fn check_submission(&self, now: Time, hash: Hash, s: &crate::record::Submission) -> Judged {
        if !self.epoch_acceptable(now, s.epoch) {
            return Judged::Ignore("submission for an epoch that is not open");
        }
        if let Some(why) = self
            .epochs
            .get(&s.epoch)
            .and_then(|e| e.refuses_submission(&hash))
        {
            return Judged::Ignore(why);
        }
        let Some(keys) = self.keys(s.epoch) else {
            return Judged::Wait(Wait::Keys(s.epoch));
        };
        match verify_submission(&self.consortium, keys, s) {
            Ok(_) => Judged::Accept(None),
            Err(e) => Judged::Reject(Fault {
                culprit: Culprit::Submission(hash),
                kind: FaultKind::InvalidSubmission,
                record: Some(hash),
                detail: e.to_string(),
                evidence: None,
            }),
        }
    }

    /// Whether a record deferred for `wait` must still wait (cheap; no cryptography).
    pub fn still_waiting(&self, wait: Wait) -> bool {
        match wait {
            Wait::Keys(e) => self.setups.get(&e).is_none_or(|s| s.still_waiting(wait)),
            // A setup not met yet is judged as it begins once it started (attempt 0; later
            // attempts wait until its records made it here).
            Wait::Attempt(e, a) => match self.setups.get(&e) {
                Some(s) => s.still_waiting(wait),
                None => a > 0 || self.now < self.consortium.setup_start(e),
            },
            Wait::Dealt { epoch, .. } => self
                .setups
                .get(&epoch)
                .is_none_or(|s| s.still_waiting(wait)),
            Wait::FinalSet(e) => self
                .epochs
                .get(&e)
                .is_none_or(|ep| ep.awaits_final_set(&self.consortium, self.now)),
        }
    }

    // --- Applying -----------------------------------------------------------------------------

    /// Applies a checked record that is now durable in the store.
    pub fn apply(
        &mut self,
        now: Time,
        checked: Checked,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Step {
        self.now = self.now.max(now);
        let mut out = Out::default();
        self.apply_record(&checked.record, checked.shares, &mut out);
        self.progress(rng, out)
    }

    /// A second, different record of an author at a sequence number it already used, or one
    /// that continues another fork of its chain (kept as evidence by the store): an agreement
    /// message or report part in it still counts (every honest member must be able to see what
    /// the others saw).
    pub fn apply_evidence(
        &mut self,
        now: Time,
        checked: Checked,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Step {
        self.now = self.now.max(now);
        let mut out = Out::default();
        self.route_evidence(&checked.record, &mut out);
        self.progress(rng, out)
    }

    /// What of an evidence record counts: its agreement message or report part.
    fn route_evidence(&mut self, record: &Record, out: &mut Out) {
        if let Payload::Identified(i) = record.payload() {
            if matches!(
                i.body,
                Body::Proposal { .. } | Body::Vote { .. } | Body::Report { .. }
            ) {
                self.route(i.author, record.hash(), i.prev, &i.body, None, out);
            }
        }
    }

    /// Replays a record kept as evidence after a restart (after the log): state only.
    pub fn replay_evidence(&mut self, record: &Record) {
        self.replaying = true;
        let mut out = Out::default();
        self.route_evidence(record, &mut out);
        self.replay_local.append(&mut out.local);
        self.replaying = false;
    }

    /// Replays a stored record after a restart: state only, no effects sent.
    pub fn replay(&mut self, record: &Record) {
        self.replaying = true;
        let mut out = Out::default();
        self.apply_record(record, None, &mut out);
        self.replay_local.append(&mut out.local);
        self.replaying = false;
    }

    fn apply_record(&mut self, record: &Record, shares: Option<VerifiedShares>, out: &mut Out) {
        match record.payload() {
            Payload::Identified(i) => {
                if i.author == self.me {
                    if i.seq > self.head.0 {
                        self.head = (i.seq, record.hash());
                    }
                    self.own_records
                        .entry(record.epoch())
                        .or_default()
                        .push(record.hash());
                    if let Body::Vote { instance, .. } = &i.body {
                        self.latest_vote.insert(*instance, record.hash());
                    }
                }
                let before = out.events.len();
                self.route(i.author, record.hash(), i.prev, &i.body, shares, out);
                self.note_convictions(before, out);
            }
            Payload::Submission(s) => {
                self.relay.seen(&record.hash());
                self.epoch_mut(s.epoch).apply_submission(record.hash(), s)
            }
        }
    }

    /// Counts the convictions among the events from `from` on, once per member, kind and
    /// epoch; a repeated one (a second complaint against one dealer) is no news.
    fn note_convictions(&mut self, from: usize, out: &mut Out) {
        let mut i = from;
        while i < out.events.len() {
            if let Some(Event::Convicted {
                epoch,
                member,
                kind,
                ..
            }) = out.events.get(i)
            {
                let fresh = self
                    .convictions
                    .entry(*member)
                    .or_default()
                    .insert((kind, *epoch));
                if !fresh {
                    out.events.remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Posts fault records for proven faults (from [`Bank::check`] or the store).
    pub fn accuse(
        &mut self,
        now: Time,
        evidence: Vec<Evidence>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Step {
        self.now = self.now.max(now);
        let mut out = Out::default();
        self.queue_accusations(evidence, &mut out);
        self.progress(rng, out)
    }

    /// Fault records for `evidence`: one per culprit, kind and epoch, unless the log has one
    /// already; none against ourselves (our chain as a peer forged it is no news).
    fn queue_accusations(&mut self, evidence: Vec<Evidence>, out: &mut Out) {
        let mut queued = BTreeSet::new();
        for e in evidence {
            let (Some(m), Some(epoch)) =
                (evidence::claimed_culprit(&e), evidence::claimed_epoch(&e))
            else {
                continue;
            };
            let kind = e.kind();
            let on_log = self
                .fault_records
                .iter()
                .any(|(_, c, k, n)| (*c, *k, *n) == (m, kind, epoch));
            if m == self.me
                || on_log
                || !self.epoch_acceptable(self.now, epoch)
                || !queued.insert((m, kind, epoch))
            {
                continue;
            }
            let body = Body::Fault { epoch, evidence: e };
            // Evidence too large for one record (two large equivocated records) stays local:
            // a record past the limit would hold up our own chain everywhere.
            if postcard::to_stdvec(&body)
                .map_or(true, |b| b.len() > crate::record::MAX_RECORD_BYTES - 1024)
            {
                continue;
            }
            out.bodies.push(body);
        }
    }

    /// A record as this member puts it on gossip: a submission with our stamp as its exit.
    pub fn gossip_frame(&self, record: &Record) -> Vec<u8> {
        crate::gossip::frame(
            &self.consortium.id,
            self.me,
            self.secrets.identity(),
            record,
        )
    }

    /// Each member's convictions on the log here: (kind, epoch).
    pub fn convictions(&self) -> &BTreeMap<MemberIndex, BTreeSet<(&'static str, u64)>> {
        &self.convictions
    }

    fn route(
        &mut self,
        author: MemberIndex,
        hash: Hash,
        prev: Hash,
        body: &Body,
        shares: Option<VerifiedShares>,
        out: &mut Out,
    ) {
        let now = self.now;
        let mut setup_out = SetupOut::default();
        match body {
            Body::DkgRound1 { epoch, .. }
            | Body::DkgRound2 { epoch, .. }
            | Body::DkgComplaint { epoch, .. }
            | Body::DkgDone { epoch, .. } => {
                let c = Arc::clone(&self.consortium);
                self.setup_mut(*epoch)
                    .apply_dkg(&c, author, hash, body, &mut setup_out);
            }
            Body::Fault { epoch, evidence } => {
                let verdict = self.judge_evidence(now, *epoch, evidence);
                let culprit = match verdict {
                    EvidenceVerdict::Proven(m) | EvidenceVerdict::Unverifiable(m) => Some(m),
                    _ => evidence::claimed_culprit(evidence),
                };
                if let Some(m) = culprit {
                    self.fault_records
                        .insert((author, m, evidence.kind(), *epoch));
                }
                if let EvidenceVerdict::Proven(member) = verdict {
                    out.events.push(Event::Convicted {
                        epoch: *epoch,
                        member,
                        kind: evidence.kind(),
                        detail: format!("fault record by member {author}"),
                        record: hash,
                    });
                }
            }
            Body::Proposal {
                instance: Instance::Setup { epoch, .. },
                ..
            }
            | Body::Vote {
                instance: Instance::Setup { epoch, .. },
                ..
            } => {
                let c = Arc::clone(&self.consortium);
                self.setup_mut(*epoch)
                    .apply_agreement(&c, now, author, hash, body, &mut setup_out);
            }
            _ => {
                let Some(epoch) = crate::record::epoch_of_body(body) else {
                    return;
                };
                self.epoch_mut(epoch);
                let ctx = Ctx {
                    consortium: &self.consortium,
                    me: self.me,
                    secrets: &self.secrets,
                    keys: self.setups.get(&epoch).and_then(Setup::keys),
                    now,
                };
                if let Some(e) = self.epochs.get_mut(&epoch) {
                    e.apply_record(&ctx, author, hash, prev, body, shares, out);
                }
            }
        }
        Self::take_setup(setup_out, out);
    }

    fn take_setup(s: SetupOut, out: &mut Out) {
        out.bodies.extend(s.bodies);
        out.local.extend(s.local);
        out.erase.extend(s.erase);
        out.events.extend(s.events);
        out.faults.extend(s.faults);
    }

    // --- Commands -------------------------------------------------------------------------------

    /// Gives this bank's scores for `epoch` (client id, score). Checks them all first.
    pub fn submit(
        &mut self,
        now: Time,
        epoch: u64,
        scores: Vec<(String, u16)>,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Step, Error> {
        self.now = self.now.max(now);
        let mut seen = BTreeSet::new();
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
        if epoch == 0
            || now >= self.consortium.submit_end(epoch)
            || !self.epoch_acceptable(now, epoch)
        {
            return Err(Error::EpochClosed(epoch));
        }
        let quota = self.consortium.genesis.oprf_quota;
        let bucket = self.consortium.genesis.privacy.client_bucket.max(1) as usize;
        if scores.len().div_ceil(bucket) * bucket > quota as usize {
            return Err(Error::TooManyClients {
                clients: scores.len(),
                quota,
            });
        }
        let privacy = &self.consortium.genesis.privacy;
        let packets = self.consortium.genesis.timing.submit_ms / privacy.packet_ms.max(1);
        if scores.len() as u64 > packets {
            return Err(Error::RelayCapacity {
                clients: scores.len(),
                packets,
            });
        }
        if self.keys(epoch).is_some_and(|k| k.ring_secret.is_none()) {
            return Err(Error::NotInRing(epoch));
        }
        let e = self.epoch_mut(epoch);
        // A closed epoch is named as closed, whether or not we gave scores for it.
        if !e.is_open() {
            return Err(Error::EpochClosed(epoch));
        }
        if e.has_scores() {
            return Err(Error::AlreadySubmitted(epoch));
        }
        // The operator's input is made durable before anything is done with it (DESIGN 8).
        let mut out = Out::default();
        e.set_scores(scores, EpochSecret::generate(rng), &mut out);
        Ok(self.progress(rng, out))
    }

    /// What the local store held, read back after a restart, before the log is replayed:
    /// decisions are acted on again, never re-derived.
    pub fn restore(&mut self, entries: &[LocalEntry]) -> Result<(), String> {
        let restored = Restored::parse(entries)?;
        for (epoch, r) in restored.setup {
            let setup = self.setup_mut(epoch);
            for (attempt, value) in r.decisions {
                setup.restore(attempt, value);
            }
            setup.restore_secret(r.secret, r.erased);
        }
        for (epoch, r) in restored.epochs {
            self.epoch_mut(epoch).restore(r);
        }
        Ok(())
    }

    /// After the log was replayed: stores what replay derived, publishes again our own records
    /// of unfinished work, and goes on.
    pub fn resume(&mut self, now: Time, rng: &mut (impl RngCore + CryptoRng)) -> Step {
        self.now = self.now.max(now);
        let mut out = Out::default();
        out.local.append(&mut self.replay_local);
        let mut again = Vec::new();
        for (scope, hashes) in &self.own_records {
            let unfinished = scope.is_some_and(|e| {
                self.epochs.get(&e).is_none_or(|ep| !ep.is_done())
                    && self.setups.get(&e).is_none_or(|s| !s.is_erased())
            });
            if unfinished {
                again.extend(hashes.iter().copied());
            }
        }
        let mut step = self.progress(rng, out);
        step.republish.extend(again);
        step
    }

    /// Our own chain's head is confirmed by peers: from now on we sign.
    pub fn confirm_head(&mut self, now: Time, rng: &mut (impl RngCore + CryptoRng)) -> Step {
        self.now = self.now.max(now);
        self.head_confirmed = true;
        self.progress(rng, Out::default())
    }
    pub fn head_confirmed(&self) -> bool {
        self.head_confirmed
    }

    // --- Requests, responses, time ----------------------------------------------------------------

    /// Answers a direct request from member `from`; the step holds what must be stored before
    /// the answer is sent (OPRF counts served).
    pub fn handle_request(
        &mut self,
        now: Time,
        from: MemberIndex,
        request: Request,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Response, Step) {
        self.now = self.now.max(now);
        let refused = |reason: &str| Response::Refused {
            reason: reason.to_string(),
        };
        if !self.consortium.is_member(from) || from == self.me {
            return (refused("not a peer member"), Step::default());
        }
        match request {
            Request::OprfEvaluate {
                epoch,
                batch,
                blinded,
            } => {
                if !self.epoch_acceptable(now, epoch) {
                    return (refused("epoch not open"), Step::default());
                }
                self.epoch_mut(epoch);
                let ctx = Ctx {
                    consortium: &self.consortium,
                    me: self.me,
                    secrets: &self.secrets,
                    keys: self.setups.get(&epoch).and_then(Setup::keys),
                    now,
                };
                let Some(e) = self.epochs.get_mut(&epoch) else {
                    return (refused("epoch not open"), Step::default());
                };
                let (response, write) = e.serve_oprf(&ctx, from, batch, &blinded, rng);
                let mut step = Step::default();
                step.local.extend(write);
                (response, step)
            }
            Request::Submissions { epoch, after } => {
                let response = match self.epochs.get(&epoch) {
                    Some(e) => e.serve_submissions(after),
                    None => Response::Submissions {
                        epoch,
                        after,
                        hashes: Vec::new(),
                        more: false,
                    },
                };
                (response, Step::default())
            }
            Request::Onion { packet } => {
                // Held or dropped (and counted), the sender learns the same.
                let _ =
                    self.relay
                        .receive(&self.consortium, now, from, &packet, &self.onion_key, rng);
                (Response::Taken, Step::default())
            }
            Request::Records { .. } | Request::Heads | Request::AuthorRange { .. } => {
                (refused("served by the store"), Step::default())
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
        match response {
            Response::OprfEvaluated {
                epoch,
                batch,
                evaluated,
                proof,
                signature,
            } => {
                let ctx = Ctx {
                    consortium: &self.consortium,
                    me: self.me,
                    secrets: &self.secrets,
                    keys: self.setups.get(&epoch).and_then(Setup::keys),
                    now: self.now,
                };
                if let Some(e) = self.epochs.get_mut(&epoch) {
                    e.oprf_response(&ctx, from, batch, evaluated, proof, signature, &mut out);
                }
            }
            Response::Submissions {
                epoch,
                after,
                hashes,
                more,
            } => {
                if let Some(e) = self.epochs.get_mut(&epoch) {
                    e.submissions_response(&self.consortium, from, after, hashes, more, &mut out);
                }
            }
            Response::Refused { .. }
            | Response::Records { .. }
            | Response::Heads { .. }
            | Response::Taken => {}
        }
        self.progress(rng, out)
    }

    /// Advances timers: setup attempts, windows, the seal, decryption, republishing.
    pub fn handle_timeout(&mut self, now: Time, rng: &mut (impl RngCore + CryptoRng)) -> Step {
        self.now = self.now.max(now);
        let mut step = self.progress(rng, Out::default());
        if self.head_confirmed && !self.replaying {
            let sending = self.sending();
            let (packets, exits) = self.relay.poll(&self.consortium, self.now, sending, rng);
            step.requests.extend(packets);
            step.exits.extend(exits);
            for n in self.relay.unconfirmed_epochs() {
                if self.epochs.get(&n).is_none_or(|e| !e.is_open()) {
                    self.relay.abandon(n);
                }
            }
        }
        if now.0 >= self.last_republish.0 + REPUBLISH_MS {
            self.last_republish = now;
            step.republish.extend(self.undecided_votes());
        }
        step
    }

    /// Our latest votes of instances that are not decided here.
    fn undecided_votes(&self) -> Vec<Hash> {
        self.latest_vote
            .iter()
            .filter(|(instance, _)| match instance {
                Instance::Setup { epoch, .. } => self
                    .setups
                    .get(epoch)
                    .is_some_and(|s| s.keys().is_none() && s.failed().is_none()),
                Instance::Seal { epoch } => self
                    .epochs
                    .get(epoch)
                    .is_some_and(|e| e.final_set().is_none() && !e.is_done()),
            })
            .map(|(_, h)| *h)
            .collect()
    }

    /// When [`Bank::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let c = &self.consortium;
        if self.now < c.start() {
            return Some(c.start());
        }
        if self.head_confirmed
            && self
                .epochs
                .iter()
                .any(|(n, e)| e.has_work(self.keys(*n).is_some()))
        {
            return Some(self.now);
        }
        let mut next: Vec<Time> = Vec::new();
        for s in self.setups.values().filter(|s| !s.is_erased()) {
            next.extend(s.next_timeout(c));
        }
        for e in self.epochs.values() {
            next.extend(e.next_deadline(c, self.now));
        }
        // The next epoch's setup starts, and its window opens.
        let current = c.epoch_at(self.now);
        next.push(c.setup_start(current + 1));
        next.push(c.epoch_start(current + 1));
        if !self.undecided_votes().is_empty() {
            next.push(self.last_republish.plus(REPUBLISH_MS));
        }
        // An epoch seen over: its keys are erased at the next step.
        if self
            .setups
            .iter()
            .any(|(n, s)| !s.is_erased() && self.over_seen.contains_key(n))
        {
            next.push(self.now.plus(1));
        }
        let next = next.into_iter().filter(|t| *t > self.now).min();
        // The relay's times are due however late we are: a packet received since the last
        // timeout may be due already (its delay was 0, or the driver calls late).
        let relay = if self.head_confirmed {
            self.relay
                .next_wake(self.sending())
                .map(|t| t.max(self.now))
        } else {
            None
        };
        [next, relay].into_iter().flatten().min()
    }

    // --- Progress -------------------------------------------------------------------------------

    /// Runs everything that became possible, then signs and applies what we produced. Until
    /// our head is confirmed nothing is run: what the setup and the epochs would do now may rest
    /// on a log that lacks our own latest records.
    fn progress(&mut self, rng: &mut (impl RngCore + CryptoRng), mut out: Out) -> Step {
        let mut step = Step::default();
        if self.replaying {
            return step;
        }
        self.steps += 1;
        if !self.head_confirmed {
            out.bodies.clear();
            out.submissions.clear();
            self.flush(&mut out, &mut step);
            return step;
        }
        for _ in 0..MAX_PROGRESS_ROUNDS {
            self.progress_once(rng, &mut out);
            let produced = !out.bodies.is_empty() || !out.submissions.is_empty();
            self.flush(&mut out, &mut step);
            if !produced {
                break;
            }
        }
        // What the last round produced is signed too (the rules consider it cast).
        self.flush(&mut out, &mut step);
        step
    }

    fn progress_once(&mut self, rng: &mut (impl RngCore + CryptoRng), out: &mut Out) {
        let now = self.now;
        let c = Arc::clone(&self.consortium);
        // Every member takes part in the setup of the current epoch and, once it starts, of
        // the next, with or without scores of its own.
        let current = c.epoch_at(now);
        for e in [current, current + 1] {
            if now >= c.setup_start(e) {
                self.setup_mut(e);
            }
        }
        // An epoch that is over here takes its keys with it (forward secrecy): our secret of
        // its setup and our key shares are erased. Only in a step after the one that saw it
        // over, so that the records that step made (our last decryption shares) are durable
        // before the keys that made them are gone; and nothing is posted for it meanwhile.
        let mut setup_out = SetupOut::default();
        for (&n, s) in self.setups.iter_mut().filter(|(_, s)| !s.is_erased()) {
            let over = self.epochs.get(&n).is_some_and(Epoch::is_done) || now >= c.decrypt_end(n);
            if over && *self.over_seen.entry(n).or_insert(self.steps) < self.steps {
                s.erase(&mut setup_out);
            }
        }
        for s in self.setups.values_mut() {
            if s.is_erased() {
                s.finish_public(&c, now, &mut setup_out);
            } else if !self.over_seen.contains_key(&s.epoch()) {
                s.progress(&c, now, rng, &mut setup_out);
                s.settle(&c, now, &mut setup_out);
            }
        }
        Self::take_setup(setup_out, out);
        if now >= c.start() {
            // Every member takes part in the current epoch, with or without scores of its own.
            self.epoch_mut(current);
        }
        for (&n, e) in self.epochs.iter_mut() {
            let ctx = Ctx {
                consortium: &c,
                me: self.me,
                secrets: &self.secrets,
                keys: self.setups.get(&n).and_then(Setup::keys),
                now,
            };
            e.advance(&ctx, rng, out);
        }
    }

    /// Signs what was produced (once the head is confirmed), applies it to ourselves, and
    /// hands the rest of the effects to the step.
    fn flush(&mut self, out: &mut Out, step: &mut Step) {
        // Faults this step proved with signed bytes (a bad OPRF evaluation) go on the log.
        let evidence: Vec<Evidence> = out
            .faults
            .iter_mut()
            .filter_map(|f| f.evidence.take())
            .collect();
        if !evidence.is_empty() && self.head_confirmed {
            self.queue_accusations(evidence, out);
        }
        let bodies: Vec<Body> = std::mem::take(&mut out.bodies);
        {
            for body in bodies {
                let seq = self.head.0 + 1;
                let record = Record::identified(
                    &self.consortium.id,
                    self.secrets.identity(),
                    self.me,
                    seq,
                    self.head.1,
                    body,
                );
                self.apply_record(&record, None, out);
                step.publish.push(record);
            }
        }
        // Our submissions go out through the relay, and enter our log as anyone's do: when an
        // exit publishes them. Until then nothing of ours names them.
        for s in std::mem::take(&mut out.submissions) {
            let epoch = s.epoch;
            let record = Record::submission(&self.consortium.id, s);
            self.relay
                .queue(epoch, record.hash(), record.bytes().to_vec());
        }
        step.local.append(&mut out.local);
        step.erase_local.append(&mut out.erase);
        step.requests.append(&mut out.requests);
        step.results.append(&mut out.results);
        step.faults.append(&mut out.faults);
        step.events.append(&mut out.events);
    }

    // --- Status -------------------------------------------------------------------------------

    pub fn status(&self) -> Status {
        // The latest setup that started: the current epoch's, or the next one's once it runs.
        let setup = self.setups.values().next_back();
        let (setup_attempt, setup_participants) = setup.map(Setup::current).unwrap_or_default();
        Status {
            me: self.me,
            keys_ready: self.keys(self.consortium.epoch_at(self.now)).is_some(),
            head_confirmed: self.head_confirmed,
            setup_epoch: setup.map_or(0, Setup::epoch),
            setup_attempt,
            setup_participants,
            setup_failed: setup.and_then(Setup::failed).map(str::to_string),
            epochs: self.epochs.values().map(Epoch::status).collect(),
            convictions: self
                .convictions
                .iter()
                .flat_map(|(&m, c)| c.iter().map(move |&(kind, epoch)| (m, kind, epoch)))
                .collect(),
        }
    }

    /// Erases the results, and whatever else of ours is left, of every epoch whose decryption
    /// window closed at least `retention_ms` ago (the node's results retention). The log is
    /// not touched: it is the consortium's evidence.
    pub fn expire_results(&mut self, now: Time, retention_ms: u64) -> Step {
        let mut out = Out::default();
        let c = Arc::clone(&self.consortium);
        for (&number, e) in self.epochs.iter_mut() {
            if c.decrypt_end(number).plus(retention_ms) <= now {
                e.expire(&mut out);
            }
        }
        Step {
            local: out.local,
            erase_local: out.erase,
            ..Step::default()
        }
    }

    /// Whether the results of `epoch` were erased at the end of their retention.
    pub fn results_expired(&self, epoch: u64) -> bool {
        self.epochs.get(&epoch).is_some_and(Epoch::is_expired)
    }

    /// Results so far for `epoch`.
    pub fn results(&self, epoch: u64) -> Vec<ClientResult> {
        self.epochs
            .get(&epoch)
            .map(Epoch::results)
            .unwrap_or_default()
    }

    /// The final set's root and size of `epoch`, once decided and built here.
    pub fn final_set(&self, epoch: u64) -> Option<(Hash, usize)> {
        self.epochs.get(&epoch)?.final_set()
    }
    /// The final set's hashes of `epoch`, ascending, once decided and built here.
    pub fn final_hashes(&self, epoch: u64) -> Option<Vec<Hash>> {
        self.epochs.get(&epoch)?.final_hashes()
    }
    /// The submissions of `epoch`'s decided set that its final set left out.
    pub fn excluded(&self, epoch: u64) -> Option<Vec<Hash>> {
        self.epochs.get(&epoch)?.excluded()
    }
    /// The members of `epoch`'s ring (the participants of its decided setup), once decided.
    pub fn ring_members(&self, epoch: u64) -> Option<Vec<MemberIndex>> {
        self.keys(epoch).map(|k| k.ring_members.clone())
    }
    /// `epoch`'s verifying shares of both runs (`X_i`, `K_i`), once its setup is decided.
    pub fn verifying_shares(&self, epoch: u64) -> Option<Vec<RistrettoPoint>> {
        let k = self.keys(epoch)?;
        Some(
            k.x.verifying
                .values()
                .chain(k.k.verifying.values())
                .copied()
                .collect(),
        )
    }
    /// Whether our secret of `epoch`'s setup and our key shares are erased, on disk and in
    /// memory.
    pub fn epoch_keys_erased(&self, epoch: u64) -> bool {
        self.setups
            .get(&epoch)
            .is_some_and(|s| s.is_erased() && !s.holds_secrets())
    }

    /// Whether the operator's scores for `epoch` were given (and are stored).
    pub fn has_scores(&self, epoch: u64) -> bool {
        self.epochs.get(&epoch).is_some_and(Epoch::has_scores)
    }
    /// Our submissions of `epoch` (client id, record hash), for our own bookkeeping.
    pub fn own_submissions(&self, epoch: u64) -> Vec<(String, Hash)> {
        self.epochs
            .get(&epoch)
            .map(Epoch::own_submissions)
            .unwrap_or_default()
    }
}

/// The verdict of a body's check, before it is tied to the record.
enum Judged {
    Accept(Option<VerifiedShares>),
    Reject(Fault),
    Ignore(&'static str),
    Wait(Wait),
}
