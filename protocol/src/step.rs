//! What the state machine hands its driver (STYLE 1, 4): the [`Step`] of effects, faults that
//! name a culprit, events for progress and status, and local errors. Every protocol module
//! depends on this one; it depends on none of them.

use crate::local::LocalWrite;
use crate::messages::Request;
use crate::record::{Evidence, Hash, Record};
use crate::MemberIndex;

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

/// What a deferred record waits for; drivers hold it and check it again once
/// [`crate::Bank::still_waiting`] says the wait is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Wait {
    /// An epoch's keys (its setup not decided yet).
    Keys(u64),
    /// A setup attempt of an epoch that has not started here yet.
    Attempt(u64, u32),
    /// The final set of an epoch (shares cannot be judged before it).
    FinalSet(u64),
    /// A participant's DKG record of `round` (0: round 1, 1: round 2) in a run: what a record
    /// after it in the participant's chain, or a complaint against its shares, needs.
    Dealt {
        epoch: u64,
        attempt: u32,
        run: crate::record::Run,
        dealer: MemberIndex,
        round: u8,
    },
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
    /// A second, different record where one is allowed (equivocation), or more records of a
    /// kind than a member may post.
    Duplicate,
    InvalidSubmission,
    InvalidDecryptionShare,
    BadOprfResponse,
    /// A malformed or out-of-order report, proposal or vote.
    BadAgreementMessage,
    /// A fault record whose evidence does not hold.
    FalseAccusation,
}

/// A peer's misbehaviour, with enough to name it (STYLE 4: faults, not errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub culprit: Culprit,
    pub kind: FaultKind,
    pub record: Option<Hash>,
    pub detail: String,
    /// The culprit's own signed bytes that prove the fault to anyone, if the fault is of a
    /// kind that can be proven: the bank posts them in a fault record.
    pub evidence: Option<Evidence>,
}

impl Fault {
    pub fn member(
        m: MemberIndex,
        kind: FaultKind,
        record: Option<Hash>,
        detail: impl Into<String>,
    ) -> Fault {
        Fault {
            culprit: Culprit::Member(m),
            kind,
            record,
            detail: detail.into(),
            evidence: None,
        }
    }
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
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Phase {
    Setup,
    /// Submissions are accepted; our own clients get pseudonyms and are submitted.
    Submit,
    /// Reports and the agreement on the final set.
    Seal,
    /// Fetching the final set, aggregating, posting and combining decryption shares.
    Decrypt,
    Done,
}

/// Something that happened, for progress reporting and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Both DKG runs of a setup attempt are decided and their keys in use.
    SetupDecided {
        epoch: u64,
        attempt: u32,
        participants: Vec<MemberIndex>,
    },
    /// A setup attempt was abandoned; the next runs with these participants.
    SetupRetry {
        epoch: u64,
        attempt: u32,
        next: Vec<MemberIndex>,
    },
    PseudonymsReady {
        epoch: u64,
        clients: usize,
    },
    Submitted {
        epoch: u64,
        count: usize,
    },
    Reported {
        epoch: u64,
        submissions: usize,
    },
    Sealed {
        epoch: u64,
        submissions: usize,
        root: Hash,
        round: u32,
    },
    /// One of our submissions is not in the final set; its client gets no result this epoch.
    SubmissionDropped {
        epoch: u64,
        client_id: String,
    },
    EpochDone {
        epoch: u64,
        results: usize,
    },
    /// A record on the log proves `member` at fault (a DKG complaint judged, or a fault record
    /// whose evidence holds). `record` is the proving record's hash.
    Convicted {
        epoch: u64,
        member: MemberIndex,
        /// What for, as a short name (`bad-dkg-share`, `equivocation`, ...).
        kind: &'static str,
        detail: String,
        record: Hash,
    },
    /// A phase cannot complete (DESIGN 8: an explicit failure, never a silent hang). A seal
    /// failure is superseded if a certified decision turns up later.
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
    /// Sum of the scores of every bank that holds the client; `None` when the result is
    /// withheld because fewer banks than the genesis `min_count` hold it.
    pub sum: Option<u64>,
    /// Number of banks that hold the client.
    pub count: u32,
}

/// How a withheld result is written where an average would be.
pub const WITHHELD: &str = "withheld";

impl ClientResult {
    /// The average with two decimals, rounded half up, computed exactly in integers; or
    /// [`WITHHELD`].
    pub fn average_2dp(&self) -> String {
        let Some(sum) = self.sum else {
            return WITHHELD.to_string();
        };
        let count = u64::from(self.count.max(1));
        let hundredths = (sum * 200 + count) / (2 * count);
        format!("{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// What the driver must do.
#[must_use]
#[derive(Debug, Default)]
pub struct Step {
    /// Local state to make durable before anything else in this step is done.
    pub local: Vec<LocalWrite>,
    /// Prefixes of local keys to erase after `local` is written, in the same durable batch.
    pub erase_local: Vec<String>,
    /// Records this bank made, in order: persist each, then publish it.
    pub publish: Vec<Record>,
    /// Own records already durable that should go out again (lost gossip, or unpublished
    /// before a restart): the driver reads them from its store and publishes them.
    pub republish: Vec<Hash>,
    /// Direct requests to send.
    pub requests: Vec<(MemberIndex, Request)>,
    /// Records that reached us as the exit of their onion path: the driver checks each as it
    /// would a received one and publishes it on gossip if it is accepted.
    pub exits: Vec<Vec<u8>>,
    pub results: Vec<ClientResult>,
    pub faults: Vec<Fault>,
    pub events: Vec<Event>,
}

impl Step {
    pub fn extend(&mut self, other: Step) {
        self.local.extend(other.local);
        self.erase_local.extend(other.erase_local);
        self.publish.extend(other.publish);
        self.republish.extend(other.republish);
        self.requests.extend(other.requests);
        self.exits.extend(other.exits);
        self.results.extend(other.results);
        self.faults.extend(other.faults);
        self.events.extend(other.events);
    }
    pub fn is_empty(&self) -> bool {
        self.local.is_empty()
            && self.erase_local.is_empty()
            && self.publish.is_empty()
            && self.republish.is_empty()
            && self.requests.is_empty()
            && self.exits.is_empty()
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
    #[error(
        "{clients} clients exceed the {packets} packets a member sends in one submission window \
         (timing.submit_ms / privacy.packet_ms)"
    )]
    RelayCapacity { clients: usize, packets: u64 },
    #[error("scores for epoch {0} were already given")]
    AlreadySubmitted(u64),
    #[error(
        "this member is not in epoch {0}'s ring: it missed the epoch's setup, so it can submit from the next epoch on"
    )]
    NotInRing(u64),
}

/// A status snapshot (DESIGN 8: readiness separate from liveness).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub me: MemberIndex,
    /// The consortium keys are decided and in use here.
    pub keys_ready: bool,
    /// This member may sign: its own chain's head was confirmed by peers since it started.
    pub head_confirmed: bool,
    /// The latest setup that started (the current epoch's, or the next's once it runs): its
    /// epoch, the attempt under way (or decided), its participants, and a failure if any.
    pub setup_epoch: u64,
    pub setup_attempt: u32,
    pub setup_participants: Vec<MemberIndex>,
    pub setup_failed: Option<String>,
    pub epochs: Vec<EpochStatus>,
    /// What the log proves of each member: one `(member, kind, epoch)` per fault record kind.
    pub convictions: Vec<(MemberIndex, &'static str, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochStatus {
    pub epoch: u64,
    pub phase: Phase,
    /// Submissions held (before the seal) or in the final set (after).
    pub submissions: usize,
    pub mine: usize,
    pub results: usize,
    /// The root of the final set, once decided.
    pub root: Option<Hash>,
    pub failed: Option<String>,
}
