//! Setup (DESIGN 4.1): the two FROST DKG runs (`x` for decryption, `k` for pseudonyms) of one
//! epoch, in numbered attempts that do not wait for every member. Every epoch has its own
//! setup, in the `dkg_ms` before the epoch starts, with fresh keys ([`epoch_keys`]): its
//! decryption and OPRF keys, the keys its round-2 shares are sealed to, and the ring keys its
//! submissions are signed with. Once the epoch is over the member erases its secret of the
//! epoch ([`Setup::erase`]), and with it everything that could open those shares again.
//!
//! Attempt 0 runs with every member. Each attempt ends with an agreement instance
//! ([`crate::agreement`]) that decides either `SetupKeys` (the transcripts of both runs: their
//! keys are used from then on, by every member alike) or `SetupRetry` (the participants of the
//! next attempt: the members that posted, by the attempt's deadline, everything they could
//! on the proposer's log; at least `q` of them). A member enters the instance once it computed
//! both runs' keys, or at the attempt's deadline. It votes for `SetupKeys` only with the very
//! transcripts it computed itself, and for `SetupRetry` only past the deadline, when it could
//! not compute the keys, and when every member named posted in this attempt; it adopts
//! whatever a quorum precommitted.

pub mod dkg;
pub mod epoch_keys;

use std::collections::{BTreeMap, BTreeSet};

use curve25519_dalek::ristretto::RistrettoPoint;
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::agreement::Agreement;
use crate::consensus::{Action, Receipt, Validity};
use crate::genesis::Consortium;
use crate::keys::EpochSecret;
use crate::local::{self, LocalWrite};
use crate::record::{Body, Hash, Instance, Run, Value};
use crate::step::{Event, Fault, FaultKind, Phase, Wait};
use crate::time::Time;
use crate::MemberIndex;

use dkg::DkgRun;
pub use dkg::{Blame, DkgReject, Round1, RunKeys};

/// Attempts before setup gives up (each is bounded by the agreement's rounds too).
pub const MAX_ATTEMPTS: u32 = 8;

/// An epoch's keys: both runs of its decided attempt, and the ring its submissions are signed in.
#[derive(Clone)]
pub struct SetupKeys {
    pub attempt: u32,
    /// Decryption key `X`, its verifying shares and our share of `x`.
    pub x: RunKeys,
    /// Pseudonym key `K`, its verifying shares and our share of `k`.
    pub k: RunKeys,
    /// The epoch's ring: the decided attempt's participants and the ring keys they announced,
    /// in member order.
    pub ring_members: Vec<MemberIndex>,
    pub ring: Vec<RistrettoPoint>,
    /// Our ring key for the epoch and our position in the ring, if we are in it and still
    /// hold the epoch's secret.
    pub ring_secret: Option<(usize, Zeroizing<Scalar>)>,
}

impl std::fmt::Debug for SetupKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupKeys")
            .field("attempt", &self.attempt)
            .field("x", &self.x)
            .field("k", &self.k)
            .field("ring_members", &self.ring_members)
            .field(
                "ring_secret",
                &self.ring_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

struct Attempt {
    number: u32,
    participants: Vec<MemberIndex>,
    runs: [DkgRun; 2],
    agreement: Agreement,
    /// When this member learned of the attempt (attempt 0: the genesis start).
    began: Time,
}

impl Attempt {
    fn run(&self, run: Run) -> &DkgRun {
        match run {
            Run::Decryption => &self.runs[0],
            Run::Pseudonym => &self.runs[1],
        }
    }
    fn run_mut(&mut self, run: Run) -> &mut DkgRun {
        match run {
            Run::Decryption => &mut self.runs[0],
            Run::Pseudonym => &mut self.runs[1],
        }
    }
    fn transcripts(&self) -> Option<[Hash; 2]> {
        let [x, k] = &self.runs;
        Some([x.computed()?.1, k.computed()?.1])
    }
    /// Members the attempt's complaints prove at fault, in either run.
    fn convicted(&self) -> BTreeSet<MemberIndex> {
        let [x, k] = &self.runs;
        let mut all = x.convicted();
        all.extend(k.convicted());
        all
    }
    /// A dealer of a bad share is proven (or dealt us one): the attempt's keys are not used
    /// (the share's recipient has none), and the next attempt runs without it. Every member
    /// judges the same complaints, the ones before the participants' done records.
    fn has_bad_dealer(&self) -> bool {
        self.runs.iter().any(DkgRun::has_bad_dealer)
    }
    /// The transcripts this member would vote for: none once a bad dealer is proven.
    fn usable_transcripts(&self) -> Option<[Hash; 2]> {
        if self.has_bad_dealer() {
            None
        } else {
            self.transcripts()
        }
    }
}

/// What setup hands the bank after an input.
#[derive(Default)]
pub struct SetupOut {
    pub bodies: Vec<Body>,
    pub local: Vec<LocalWrite>,
    /// Prefixes of local keys to erase after `local` is written.
    pub erase: Vec<String>,
    pub events: Vec<Event>,
    pub faults: Vec<Fault>,
}

pub struct Setup {
    epoch: u64,
    me: MemberIndex,
    attempts: Vec<Attempt>,
    /// Our fresh secret of the epoch (stored before anything derived from it is posted).
    secret: Option<EpochSecret>,
    /// The secret was erased after the epoch: nothing is posted or opened any more.
    erased: bool,
    keys: Option<SetupKeys>,
    /// Each attempt's decision, stored before it is acted on (or read back after a restart).
    decisions: BTreeMap<u32, Value>,
    failed: Option<String>,
}

impl Setup {
    pub fn new(consortium: &Consortium, me: MemberIndex, epoch: u64) -> Setup {
        let mut setup = Setup {
            epoch,
            me,
            attempts: Vec::new(),
            secret: None,
            erased: false,
            keys: None,
            decisions: BTreeMap::new(),
            failed: None,
        };
        setup.begin(
            consortium,
            0,
            consortium.indices().collect(),
            consortium.setup_start(epoch),
        );
        setup
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn begin(
        &mut self,
        consortium: &Consortium,
        number: u32,
        participants: Vec<MemberIndex>,
        began: Time,
    ) {
        let epoch = self.epoch;
        let runs = [Run::Decryption, Run::Pseudonym]
            .map(|run| DkgRun::new(consortium, epoch, run, number, participants.clone()));
        let instance = Instance::Setup {
            epoch,
            attempt: number,
        };
        self.attempts.push(Attempt {
            number,
            participants,
            runs,
            agreement: Agreement::new(consortium, self.me, instance),
            began,
        });
    }

    pub fn keys(&self) -> Option<&SetupKeys> {
        self.keys.as_ref()
    }
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }
    /// The attempt under way (or decided) and its participants.
    pub fn current(&self) -> (u32, Vec<MemberIndex>) {
        self.attempts
            .last()
            .map(|a| (a.number, a.participants.clone()))
            .unwrap_or_default()
    }

    fn attempt(&self, number: u32) -> Option<&Attempt> {
        self.attempts.get(number as usize)
    }
    fn attempt_mut(&mut self, number: u32) -> Option<&mut Attempt> {
        self.attempts.get_mut(number as usize)
    }

    /// A decision read back from the local store: acted on again, never re-derived.
    pub fn restore(&mut self, attempt: u32, value: Value) {
        self.decisions.insert(attempt, value);
    }

    /// Our secret of the epoch read back from the local store, or the mark that it was erased.
    pub fn restore_secret(&mut self, secret: Option<Zeroizing<[u8; 32]>>, erased: bool) {
        self.erased = erased;
        self.secret = if erased {
            None
        } else {
            secret.map(EpochSecret::from_bytes)
        };
    }

    pub fn is_erased(&self) -> bool {
        self.erased
    }

    /// Whether any secret of the epoch is still held in memory: the setup secret, a key share
    /// or ring key, or a DKG run's secret state.
    pub fn holds_secrets(&self) -> bool {
        let in_keys = self
            .keys
            .as_ref()
            .is_some_and(|k| k.x.share.is_some() || k.k.share.is_some() || k.ring_secret.is_some());
        let in_runs = self
            .attempts
            .iter()
            .any(|a| a.runs.iter().any(DkgRun::holds_secrets));
        self.secret.is_some() || in_keys || in_runs
    }

    /// After the epoch's secret is erased (after a restart, say): the public keys are still
    /// computed from the log and the stored decision followed, so the epoch's ring and
    /// verifying shares stay known; nothing is posted.
    pub fn finish_public(&mut self, consortium: &Consortium, now: Time, out: &mut SetupOut) {
        let me = self.me;
        for a in &mut self.attempts {
            for dkg in &mut a.runs {
                let _ = dkg.try_finish(&consortium.id, me);
            }
        }
        let numbers: Vec<u32> = self.attempts.iter().map(|a| a.number).collect();
        for number in numbers {
            self.adopt(consortium, now, number, out);
        }
    }

    /// The epoch is over here: our secret of the epoch and our key shares are erased, on disk
    /// (in the step's durable batch, with a mark so that a restart never draws a new one) and
    /// in memory. From then on the sealed shares on the log open for nobody, and our ring key
    /// for the epoch cannot be recomputed.
    pub fn erase(&mut self, out: &mut SetupOut) {
        if self.erased {
            return;
        }
        self.erased = true;
        self.secret = None;
        if let Some(k) = &mut self.keys {
            k.x.share = None;
            k.k.share = None;
            k.ring_secret = None;
        }
        for a in &mut self.attempts {
            for dkg in &mut a.runs {
                dkg.forget_secrets();
            }
        }
        let (mark, erase) = local::setup_erased(self.epoch);
        out.local.push(mark);
        out.erase.extend(erase);
    }

    /// Whether a setup `Proposal` or `Vote` by `author` would be counted.
    pub fn accepts(&self, author: MemberIndex, body: &Body) -> bool {
        match Agreement::message_of(body) {
            Some((Instance::Setup { attempt, .. }, _, _)) => self
                .attempt(attempt)
                .is_some_and(|a| a.agreement.accepts(author, body)),
            _ => false,
        }
    }

    /// Whether records of `attempt` can be judged yet.
    pub fn knows_attempt(&self, attempt: u32) -> bool {
        (attempt as usize) < self.attempts.len()
    }

    /// The deadline of an attempt at this member: its slot in the absolute schedule, and never
    /// less than one attempt's length after the member learned of it.
    fn deadline(consortium: &Consortium, a: &Attempt) -> Time {
        let slot = consortium.setup_start(a.runs[0].epoch()).plus(
            consortium
                .attempt_ms()
                .saturating_mul(u64::from(a.number) + 1),
        );
        slot.max(a.began.plus(consortium.attempt_ms()))
    }

    /// Checks a DKG record that needs no other record (STYLE 5): epoch, attempt, participant,
    /// package, the author's keys for the epoch.
    pub fn check_dkg(
        &self,
        consortium: &Consortium,
        author: MemberIndex,
        body: &Body,
    ) -> Result<(), CheckDkg> {
        let epoch = self.epoch;
        match body {
            Body::DkgRound1 {
                run,
                attempt,
                package,
                seal_key,
                ring,
                ..
            } => {
                let a = self
                    .attempt(*attempt)
                    .ok_or(CheckDkg::Wait(Wait::Attempt(epoch, *attempt)))?;
                let round1 = Round1 {
                    epoch,
                    attempt: *attempt,
                    package,
                    seal_key,
                    ring: ring.as_deref(),
                };
                a.run(*run)
                    .check_round1(consortium, author, round1)
                    .map(|_| ())
                    .map_err(CheckDkg::Reject)
            }
            Body::DkgRound2 {
                run,
                attempt,
                ephemeral,
                ephemeral_proof,
                shares,
                ..
            } => {
                let a = self
                    .attempt(*attempt)
                    .ok_or(CheckDkg::Wait(Wait::Attempt(epoch, *attempt)))?;
                let dkg = a.run(*run);
                if !dkg.has_round1(author) {
                    // Its round 1 precedes this in its chain.
                    return Err(CheckDkg::Wait(Wait::Dealt {
                        epoch,
                        attempt: *attempt,
                        run: *run,
                        dealer: author,
                        round: 0,
                    }));
                }
                dkg.check_round2(
                    consortium,
                    author,
                    epoch,
                    *attempt,
                    ephemeral,
                    ephemeral_proof,
                    shares,
                )
                .map_err(CheckDkg::Reject)
            }
            Body::DkgComplaint {
                run,
                attempt,
                dealer,
                shared,
                proof,
                ..
            } => {
                let a = self
                    .attempt(*attempt)
                    .ok_or(CheckDkg::Wait(Wait::Attempt(epoch, *attempt)))?;
                match a
                    .run(*run)
                    .check_complaint(consortium, author, *dealer, shared, proof)
                {
                    Ok(Some(())) => Ok(()),
                    Ok(None) => Err(CheckDkg::Wait(Wait::Dealt {
                        epoch,
                        attempt: *attempt,
                        run: *run,
                        dealer: *dealer,
                        round: 1,
                    })),
                    Err(r) => Err(CheckDkg::Reject(r)),
                }
            }
            Body::DkgDone { run, attempt, .. } => {
                let a = self
                    .attempt(*attempt)
                    .ok_or(CheckDkg::Wait(Wait::Attempt(epoch, *attempt)))?;
                match a.run(*run).check_done(author, *attempt) {
                    Ok(Some(())) => Ok(()),
                    Ok(None) => Err(CheckDkg::Wait(Wait::Dealt {
                        epoch,
                        attempt: *attempt,
                        run: *run,
                        dealer: author,
                        round: 1,
                    })),
                    Err(r) => Err(CheckDkg::Reject(r)),
                }
            }
            _ => Ok(()),
        }
    }

    /// Applies a DKG record (checked, durable).
    pub fn apply_dkg(
        &mut self,
        consortium: &Consortium,
        author: MemberIndex,
        hash: Hash,
        body: &Body,
        out: &mut SetupOut,
    ) {
        let me = self.me;
        let epoch = self.epoch;
        let secret = self.secret.as_ref();
        let Some(attempt) = (match body {
            Body::DkgRound1 { attempt, .. }
            | Body::DkgRound2 { attempt, .. }
            | Body::DkgComplaint { attempt, .. }
            | Body::DkgDone { attempt, .. } => Some(*attempt),
            _ => None,
        }) else {
            return;
        };
        let Some(a) = self.attempts.get_mut(attempt as usize) else {
            return;
        };
        match body {
            Body::DkgRound1 {
                run,
                package,
                seal_key,
                ring,
                ..
            } => {
                let dkg = a.run_mut(*run);
                let round1 = Round1 {
                    epoch,
                    attempt,
                    package,
                    seal_key,
                    ring: ring.as_deref(),
                };
                match dkg.check_round1(consortium, author, round1) {
                    Ok(pkg) => dkg.apply_round1(author, pkg, *seal_key, ring.as_deref()),
                    Err(DkgReject::Duplicate) => out.faults.push(Fault::member(
                        author,
                        FaultKind::Duplicate,
                        Some(hash),
                        "second round-1 package",
                    )),
                    Err(_) => {}
                }
                dkg.note_record(author, 0, hash);
                if let (true, Some(secret)) = (author == me, secret) {
                    // Replaying our own record after a restart: recompute its secret.
                    dkg.resume_round1(consortium, me, secret);
                }
            }
            Body::DkgRound2 {
                run,
                ephemeral,
                shares,
                ..
            } => {
                let dkg = a.run_mut(*run);
                dkg.note_record(author, 1, hash);
                if let Err(why) =
                    dkg.apply_round2(consortium, me, secret, author, ephemeral, shares)
                {
                    out.faults.push(Fault::member(
                        author,
                        FaultKind::BadDkgPackage,
                        Some(hash),
                        why,
                    ));
                }
                if let (true, Some(secret)) = (author == me, secret) {
                    dkg.resume_round2(consortium, me, secret);
                }
            }
            Body::DkgDone { run, .. } => {
                let dkg = a.run_mut(*run);
                dkg.note_record(author, 2, hash);
                dkg.apply_done(author);
            }
            Body::DkgComplaint {
                run,
                dealer,
                shared,
                ..
            } => {
                let dkg = a.run_mut(*run);
                if let Some(blame) = dkg.apply_complaint(consortium, author, *dealer, shared) {
                    let (member, kind) = match blame {
                        Blame::Dealer => (*dealer, "bad-dkg-share"),
                        Blame::Complainer => (author, "false-complaint"),
                    };
                    out.events.push(Event::Convicted {
                        epoch,
                        member,
                        kind,
                        detail: format!(
                            "run {run:?}, attempt {attempt}: member {author} complained about the share member {dealer} sealed to it"
                        ),
                        record: hash,
                    });
                }
            }
            _ => {}
        }
    }

    /// Applies a setup `Proposal` or `Vote` record.
    pub fn apply_agreement(
        &mut self,
        consortium: &Consortium,
        now: Time,
        author: MemberIndex,
        hash: Hash,
        body: &Body,
        out: &mut SetupOut,
    ) {
        let Some((Instance::Setup { attempt, .. }, _, _)) = Agreement::message_of(body) else {
            return;
        };
        let Some(a) = self.attempt_mut(attempt) else {
            return;
        };
        let Some(taken) = a.agreement.on_record(now, author, body) else {
            return;
        };
        match taken.receipt {
            Receipt::New | Receipt::Duplicate => {}
            other => out.faults.push(Fault::member(
                author,
                FaultKind::BadAgreementMessage,
                Some(hash),
                format!("setup attempt {attempt}: {other:?}"),
            )),
        }
        self.judge(consortium, now, attempt, out);
        self.act(consortium, now, attempt, taken.actions, out);
    }

    /// Runs everything time or new records made possible.
    pub fn progress(
        &mut self,
        consortium: &Consortium,
        now: Time,
        rng: &mut (impl RngCore + CryptoRng),
        out: &mut SetupOut,
    ) {
        let epoch = self.epoch;
        if now < consortium.setup_start(epoch)
            || self.keys.is_some()
            || self.failed.is_some()
            || self.erased
        {
            return;
        }
        let me = self.me;
        let Some(number) = self.attempts.last().map(|a| a.number) else {
            return;
        };
        if self.secret.is_none() {
            let posted = self.attempts.iter().any(|a| {
                Run::ALL
                    .iter()
                    .any(|&run| a.run(run).has_round1(me) || a.run(run).has_round2(me))
            });
            if posted {
                // Our records of this setup are out but their secret is gone (a store restored
                // from a backup older than it): a new secret would equivocate. Sit it out.
                self.fail(
                    "our secret of this epoch's setup is lost (restored from an older backup?): this member sits the epoch out and takes part again from the next".into(),
                    out,
                );
                self.erase(out);
                return;
            }
            // Drawn fresh and stored before anything derived from it is posted.
            let secret = EpochSecret::generate(rng);
            out.local
                .push(local::setup_secret(epoch, secret.as_bytes()));
            self.secret = Some(secret);
        }
        let secret = self.secret.as_ref();
        if let (Some(a), Some(secret)) = (self.attempts.get_mut(number as usize), secret) {
            for run in Run::ALL {
                let dkg = a.run_mut(run);
                if let Some(body) = dkg.round1_body(consortium, me, secret) {
                    out.bodies.push(body);
                }
                if let Some(body) = dkg.round2_body(consortium, me, secret) {
                    out.bodies.push(body);
                }
                out.bodies
                    .extend(dkg.complaints_to_post(consortium, me, secret));
                out.bodies.extend(dkg.done_body(me));
                if let Err(why) = dkg.try_finish(&consortium.id, me) {
                    dkg.fail(why);
                }
            }
        }
        let Some(a) = self.attempt(number) else {
            return;
        };
        let computed = a.usable_transcripts().is_some() || a.has_bad_dealer();
        let due = now >= Self::deadline(consortium, a);
        let mut actions = Vec::new();
        if let Some(a) = self.attempt_mut(number) {
            if (computed || due) && !a.agreement.engine().is_started() {
                actions.extend(a.agreement.start(now));
            }
            actions.extend(a.agreement.on_timeout(now));
        }
        self.judge(consortium, now, number, out);
        self.act(consortium, now, number, actions, out);
        // A value owed as proposer may have become available (keys computed, deadline passed).
        self.offer_value(consortium, now, number, out);
        if let Some(a) = self.attempt(number) {
            if a.agreement.engine().exhausted() && self.keys.is_none() {
                let reason = format!(
                    "setup attempt {number}: no agreement in {} rounds ({}; {})",
                    a.agreement.engine().max_rounds(),
                    a.run(Run::Decryption).waiting_for(),
                    a.run(Run::Pseudonym).waiting_for()
                );
                self.fail(reason, out);
            }
        }
    }

    fn fail(&mut self, reason: String, out: &mut SetupOut) {
        if self.failed.is_none() {
            out.events.push(Event::Failed {
                epoch: Some(self.epoch),
                phase: Phase::Setup,
                reason: reason.clone(),
            });
            self.failed = Some(reason);
        }
    }

    /// What we say of each value of an attempt's instance (see the module doc).
    fn judge(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some(a) = self.attempt(number) else {
            return;
        };
        let mine = a.usable_transcripts();
        let bad_dealer = a.has_bad_dealer();
        let convicted = a.convicted();
        let due = now >= Self::deadline(consortium, a);
        let mut verdicts = Vec::new();
        for (id, value, old) in a.agreement.values() {
            // A verdict once given stands (a value valid past the deadline stays valid when our
            // keys come in later, so a member locked on it can still be followed).
            if matches!(old, Validity::Invalid | Validity::Valid) {
                continue;
            }
            let verdict = match value {
                Value::SetupKeys { transcripts } => match mine {
                    Some(t) if t == *transcripts => Validity::Valid,
                    Some(_) => Validity::Invalid,
                    None if bad_dealer => Validity::Invalid,
                    None => Validity::Unknown,
                },
                Value::SetupRetry { next } => {
                    let sorted = next.windows(2).all(|w| w.first() < w.get(1));
                    let within = next.iter().all(|m| a.participants.contains(m));
                    let ready = bad_dealer || (mine.is_none() && due);
                    if !sorted || !within || next.len() < consortium.quorum() {
                        Validity::Invalid
                    } else if ready
                        && next
                            .iter()
                            .all(|&m| Self::posted(a, m) && !convicted.contains(&m))
                    {
                        Validity::Valid
                    } else {
                        Validity::Available
                    }
                }
                Value::Seal { .. } => Validity::Invalid,
            };
            if verdict != old {
                verdicts.push((*id, verdict));
            }
        }
        let mut actions = Vec::new();
        if let Some(a) = self.attempt_mut(number) {
            for (id, v) in verdicts {
                actions.extend(a.agreement.set_validity(now, id, v));
            }
        }
        self.act(consortium, now, number, actions, out);
    }

    /// Whether `member` posted both its round-1 packages in the attempt.
    fn posted(a: &Attempt, member: MemberIndex) -> bool {
        Run::ALL.iter().all(|&run| a.run(run).has_round1(member))
    }

    /// Whether `member` posted everything it could in the attempt: its round-2 records too
    /// once every round-1 package was in, and its done records once every round-2 was.
    fn posted_all(a: &Attempt, member: MemberIndex) -> bool {
        Run::ALL.iter().all(|&run| {
            let dkg = a.run(run);
            dkg.has_round1(member)
                && (!dkg.round1_complete() || dkg.has_round2(member))
                && (!dkg.round2_complete() || dkg.has_done(member))
        })
    }

    /// The value this member proposes, if it has one yet.
    fn value_for(&self, consortium: &Consortium, now: Time, a: &Attempt) -> Option<Value> {
        if let Some(transcripts) = a.usable_transcripts() {
            return Some(Value::SetupKeys { transcripts });
        }
        let convicted = a.convicted();
        let clean = |m: &MemberIndex| !convicted.contains(m);
        // With a bad dealer proven, the retry need not wait for the deadline once everyone
        // else posted what it could.
        let early = a.has_bad_dealer()
            && a.participants
                .iter()
                .filter(|m| clean(m))
                .all(|&m| Self::posted_all(a, m));
        if (!early && now < Self::deadline(consortium, a)) || a.number + 1 >= MAX_ATTEMPTS {
            return None;
        }
        let next: Vec<MemberIndex> = a
            .participants
            .iter()
            .copied()
            .filter(|&m| Self::posted_all(a, m) && clean(&m))
            .collect();
        (next.len() >= consortium.quorum()).then_some(Value::SetupRetry { next })
    }

    fn offer_value(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some(a) = self.attempt(number) else {
            return;
        };
        if a.agreement.engine().awaiting_value().is_none() {
            return;
        }
        let Some(value) = self.value_for(consortium, now, a) else {
            return;
        };
        let mut actions = Vec::new();
        if let Some(a) = self.attempt_mut(number) {
            actions = a.agreement.propose(now, value);
        }
        self.act(consortium, now, number, actions, out);
    }

    fn act(
        &mut self,
        consortium: &Consortium,
        now: Time,
        number: u32,
        actions: Vec<Action>,
        out: &mut SetupOut,
    ) {
        for action in actions {
            match action {
                Action::Decide { .. } => self.decided(consortium, now, number, out),
                Action::NeedValue { .. } => self.offer_value(consortium, now, number, out),
                other => {
                    if let Some(body) = self.attempt(number).and_then(|a| a.agreement.body(&other))
                    {
                        out.bodies.push(body);
                    }
                }
            }
        }
        self.adopt(consortium, now, number, out);
    }

    /// Acts on an attempt's decision: stored first, then keys used or the next attempt begun.
    fn decided(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some((_, value)) = self.attempt(number).and_then(|a| a.agreement.decision()) else {
            return;
        };
        let value = value.clone();
        if self.decisions.contains_key(&number) {
            return;
        }
        out.local
            .push(local::setup_decision(self.epoch, number, &value));
        self.decisions.insert(number, value);
        self.adopt(consortium, now, number, out);
    }

    /// Follows the stored decision of attempt `number`, once what it needs is here.
    fn adopt(&mut self, consortium: &Consortium, now: Time, number: u32, out: &mut SetupOut) {
        let Some(value) = self.decisions.get(&number).cloned() else {
            return;
        };
        match value {
            Value::SetupRetry { next } => {
                if self.knows_attempt(number + 1) {
                    return;
                }
                out.events.push(Event::SetupRetry {
                    epoch: self.epoch,
                    attempt: number,
                    next: next.clone(),
                });
                self.begin(consortium, number + 1, next, now);
            }
            Value::SetupKeys { transcripts } => {
                if self.keys.is_some() {
                    return;
                }
                let Some(a) = self.attempt(number) else {
                    return;
                };
                if a.transcripts() != Some(transcripts) {
                    return; // not computed yet here (records still arriving)
                }
                let [x, k] = &a.runs;
                let (Some((x, _)), Some((k, _))) = (x.computed(), k.computed()) else {
                    return;
                };
                // The ring: every participant announced a proven ring key in its round-1
                // record of the decryption run, which the decided transcript covers.
                let announced = a.run(Run::Decryption).ring_keys();
                let ring_members = a.participants.clone();
                let Some(ring) = ring_members
                    .iter()
                    .map(|m| announced.get(m).copied())
                    .collect::<Option<Vec<RistrettoPoint>>>()
                else {
                    return;
                };
                let ring_secret = self.secret.as_ref().and_then(|secret| {
                    let scalar = epoch_keys::ring_secret(secret, consortium, self.epoch);
                    let position = ring_members.iter().position(|&m| m == self.me)?;
                    let ours = ring.get(position)? == &epoch_keys::ring_public(&scalar);
                    ours.then_some((position, scalar))
                });
                let keys = SetupKeys {
                    attempt: number,
                    x: x.clone(),
                    k: k.clone(),
                    ring_members,
                    ring,
                    ring_secret,
                };
                out.events.push(Event::SetupDecided {
                    epoch: self.epoch,
                    attempt: number,
                    participants: a.participants.clone(),
                });
                self.keys = Some(keys);
            }
            Value::Seal { .. } => {}
        }
    }

    /// After records were applied or time passed: decisions that were waiting for keys to be
    /// computed (or for a restored decision) take effect.
    pub fn settle(&mut self, consortium: &Consortium, now: Time, out: &mut SetupOut) {
        let numbers: Vec<u32> = self.attempts.iter().map(|a| a.number).collect();
        for number in numbers {
            self.judge(consortium, now, number, out);
            self.adopt(consortium, now, number, out);
        }
    }

    pub fn next_timeout(&self, consortium: &Consortium) -> Option<Time> {
        if self.keys.is_some() || self.failed.is_some() {
            return None;
        }
        let a = self.attempts.last()?;
        let deadline = Self::deadline(consortium, a);
        [Some(deadline), a.agreement.next_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Members with a decided attempt's key shares (for OPRF evaluation and decryption).
    pub fn participants(&self) -> BTreeSet<MemberIndex> {
        self.keys
            .as_ref()
            .map(|k| k.x.verifying.keys().copied().collect())
            .unwrap_or_default()
    }

    /// `(round-1, round-2, participants)` of both runs of the current attempt, for status.
    pub fn progress_counts(&self) -> Vec<(Run, usize, usize, usize)> {
        let Some(a) = self.attempts.last() else {
            return Vec::new();
        };
        Run::ALL
            .iter()
            .map(|&run| {
                let (r1, r2, n) = a.run(run).progress();
                (run, r1, r2, n)
            })
            .collect()
    }

    /// Whether a deferred record waiting for `wait` (of this setup's epoch) still has to wait.
    pub fn still_waiting(&self, wait: Wait) -> bool {
        match wait {
            Wait::Keys(_) => self.keys.is_none(),
            Wait::Attempt(_, a) => !self.knows_attempt(a),
            Wait::Dealt {
                attempt,
                run,
                dealer,
                ..
            } => self
                .attempt(attempt)
                .is_none_or(|a| !a.run(run).has_round2(dealer)),
            Wait::FinalSet(_) => false,
        }
    }
}

/// Why a DKG record cannot be accepted now.
pub enum CheckDkg {
    Reject(DkgReject),
    Wait(Wait),
}
