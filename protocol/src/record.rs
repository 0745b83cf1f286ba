//! Records of the replicated log (DESIGN 5): a versioned, canonically encoded envelope bound to
//! the consortium id. Identified records are signed by their author and hash-chained per author;
//! submissions are anonymous and authenticated by their own proofs and signatures.
//!
//! Decoding yields an [`UncheckedRecord`]; only [`crate::Bank::check`] turns it into a
//! [`Record`], after verifying everything the current state allows.

use curve25519_dalek::ristretto::RistrettoPoint;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::consensus::VoteKind;
use crate::crypto::elgamal::Ciphertext;
use crate::crypto::keyswitch::KeySwitchShare;
use crate::crypto::oprf::DleqProof;
use crate::crypto::ring::RingSignature;
use crate::crypto::schnorr;
use crate::crypto::sealed::SharedProof;
use crate::crypto::validity::ValidityProof;
use crate::genesis::{Consortium, ConsortiumId};
use crate::MemberIndex;

/// Record id: SHA-256 of the canonical bytes.
pub type Hash = [u8; 32];

/// Wire format version.
pub const VERSION: u8 = 2;
/// Cipher suite: ed25519 identities, ristretto255 group, SHA-256 record hashes.
pub const SUITE: u8 = 1;
/// Largest encoded record (gossip and sync limits are set from it).
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u8,
    pub suite: u8,
    pub consortium: ConsortiumId,
    pub payload: Payload,
}

/// Identified records are the common case and carry their signature inline; boxing them would
/// cost an allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Identified(Identified),
    Submission(Box<Submission>),
}

/// A record signed by a member, chained to that member's previous record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identified {
    pub author: MemberIndex,
    /// 1 for the author's first record.
    pub seq: u64,
    /// Hash of the author's record `seq - 1`; zero for the first.
    pub prev: Hash,
    pub body: Body,
    pub signature: Signature,
}

/// Which of the two independent DKG runs (DESIGN 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Run {
    /// The decryption key `x`.
    Decryption,
    /// The OPRF key `k` for client pseudonyms.
    Pseudonym,
}

impl Run {
    pub const ALL: [Run; 2] = [Run::Decryption, Run::Pseudonym];
    pub fn label(self) -> &'static [u8] {
        match self {
            Run::Decryption => b"x",
            Run::Pseudonym => b"k",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// FROST DKG round 1 package (broadcast) of one epoch's setup: commitments and proof of
    /// knowledge, and the author's fresh keys for the epoch.
    DkgRound1 {
        epoch: u64,
        run: Run,
        attempt: u32,
        package: Vec<u8>,
        /// Ristretto255 key (`P = p*G`) the other dealers seal this member's round-2 shares of
        /// the run to; fresh for the epoch and erased after it, so the sealed shares on the log
        /// open for nobody.
        seal_key: [u8; 32],
        /// Decryption run only: the author's ring key for the epoch's submissions.
        ring: Option<Box<RingKeyAnnouncement>>,
    },
    /// FROST DKG round 2 packages, each encrypted to its recipient's `seal_key`, with a proof
    /// that the dealer knows the ephemeral's secret (so no dealer can post another's ephemeral
    /// and have complaints open that other dealer's shares).
    DkgRound2 {
        epoch: u64,
        run: Run,
        attempt: u32,
        ephemeral: [u8; 32],
        ephemeral_proof: schnorr::Signature,
        shares: Vec<SealedShare>,
    },
    /// The author applied every participant's round-2 record of the run and posted its
    /// complaints (all before this, in its chain). A run's keys are computed only once every
    /// participant's is in, so every member judges the same complaints.
    DkgDone { epoch: u64, run: Run, attempt: u32 },
    /// How many OPRF evaluations the author served each member in `epoch` (DESIGN 4.2).
    OprfUsage {
        epoch: u64,
        served: Vec<(MemberIndex, u32)>,
    },
    /// One part of the author's report of the submissions it holds for `epoch` at the deadline
    /// (DESIGN 4.4): hashes in ascending order, each part continuing the one before; the part
    /// with `last` ends the report, and its record hash is what the seal pins.
    Report {
        epoch: u64,
        part: u32,
        last: bool,
        hashes: Vec<Hash>,
    },
    /// A Tendermint proposal in one agreement instance.
    Proposal {
        instance: Instance,
        round: u32,
        valid_round: Option<u32>,
        value: Value,
    },
    /// A Tendermint prevote or precommit; it carries the value it votes for (nil as `None`).
    Vote {
        instance: Instance,
        kind: VoteKind,
        round: u32,
        value: Option<Value>,
    },
    /// Key-switched decryption shares for sealed submissions (DESIGN 4.6), naming the root of
    /// the final set they decrypt under.
    DecryptionShares {
        epoch: u64,
        root: Hash,
        shares: Vec<ShareEntry>,
    },
    /// A DKG complaint: the share `dealer` sealed to the author in this run and attempt did not
    /// open or did not match the dealer's commitment. It reveals the shared point of that one
    /// share with a proof, so anyone can open the share from the log and see who lied: the
    /// dealer, or the author (a false complaint).
    DkgComplaint {
        epoch: u64,
        run: Run,
        attempt: u32,
        dealer: MemberIndex,
        shared: [u8; 32],
        proof: SharedProof,
    },
    /// Evidence that a member broke the protocol, checkable from the log alone.
    Fault { epoch: u64, evidence: Evidence },
}

/// What a fault record proves (issue 6: culprits named on the log). Each variant carries the
/// culprit's own signed bytes, so it is checked without trusting the member that posted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two different records signed by one author at one sequence number (canonical bytes).
    Equivocation { first: Vec<u8>, second: Vec<u8> },
    /// A signed decryption shares record with a share whose proof fails against the final set
    /// it names (or that breaks its bounds).
    BadDecryptionShares { record: Vec<u8> },
    /// A signed OPRF evaluation whose proof fails against the evaluator's verifying share.
    BadOprfEvaluation(Box<SignedEvaluation>),
    /// An invalid submission an exit published, with the exit's stamp on it
    /// ([`crate::gossip`]): exits verify what they publish.
    InvalidPublication {
        record: Vec<u8>,
        exit: MemberIndex,
        signature: Signature,
    },
}

/// An OPRF partial evaluation as its evaluator signed it, with the request it answers: what a
/// requester needs to prove a bad evaluation to anyone (the blinded elements reveal nothing of
/// the client ids).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedEvaluation {
    pub epoch: u64,
    pub requester: MemberIndex,
    pub evaluator: MemberIndex,
    pub batch: u32,
    pub blinded: Vec<RistrettoPoint>,
    pub evaluated: Vec<RistrettoPoint>,
    pub proof: DleqProof,
    pub signature: Signature,
}
impl Eq for SignedEvaluation {}

impl SignedEvaluation {
    /// The bytes the evaluator's identity key signs.
    #[allow(clippy::too_many_arguments)]
    pub fn signed_bytes(
        consortium: &ConsortiumId,
        epoch: u64,
        requester: MemberIndex,
        evaluator: MemberIndex,
        batch: u32,
        blinded: &[RistrettoPoint],
        evaluated: &[RistrettoPoint],
        proof: &DleqProof,
    ) -> Vec<u8> {
        postcard::to_stdvec(&(
            b"bankmesh.oprf-evaluation.v1",
            consortium,
            epoch,
            requester,
            evaluator,
            batch,
            blinded,
            evaluated,
            proof,
        ))
        .unwrap_or_default()
    }

    /// Whether the evaluator signed it.
    pub fn check_signature(&self, c: &Consortium) -> Result<(), String> {
        let key = c
            .identity(self.evaluator)
            .ok_or(format!("member {} is not a member", self.evaluator))?;
        let bytes = Self::signed_bytes(
            &c.id,
            self.epoch,
            self.requester,
            self.evaluator,
            self.batch,
            &self.blinded,
            &self.evaluated,
            &self.proof,
        );
        key.verify(&bytes, &self.signature)
            .map_err(|_| format!("member {}'s signature does not verify", self.evaluator))
    }
}

impl Evidence {
    /// A short name, for logs, status and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::Equivocation { .. } => "equivocation",
            Evidence::BadDecryptionShares { .. } => "bad-decryption-share",
            Evidence::BadOprfEvaluation(_) => "bad-oprf-eval",
            Evidence::InvalidPublication { .. } => "invalid-submission",
        }
    }
}

/// A member's ring key for one epoch (DESIGN 3: ring keys are per epoch, so that a later theft
/// links none of a bank's past submissions), with a Schnorr proof that the author knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RingKeyAnnouncement {
    pub key: RistrettoPoint,
    pub proof: schnorr::Signature,
}
impl Eq for RingKeyAnnouncement {}

/// An agreement instance: one per setup attempt of an epoch and one per epoch's seal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Instance {
    Setup { epoch: u64, attempt: u32 },
    Seal { epoch: u64 },
}

impl Instance {
    /// The epoch the instance belongs to.
    pub fn epoch(&self) -> u64 {
        match self {
            Instance::Setup { epoch, .. } | Instance::Seal { epoch } => *epoch,
        }
    }
}

/// What an agreement instance decides.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Value {
    /// The setup attempt succeeded: the transcripts of its decryption and pseudonym DKG runs.
    SetupKeys { transcripts: [Hash; 2] },
    /// The setup attempt is abandoned; the next attempt runs with these participants.
    SetupRetry { next: Vec<MemberIndex> },
    /// The seal: the pinned reports, one per member (its report's last part), by member. The
    /// final set is every submission in at least `f + 1` of them.
    Seal { reports: Vec<(MemberIndex, Hash)> },
}

impl Value {
    /// The value's id: SHA-256 over a domain label and its canonical encoding.
    pub fn id(&self) -> crate::consensus::ValueId {
        let mut h = Sha256::new();
        h.update(b"bankmesh.value.v1");
        h.update(postcard::to_stdvec(self).unwrap_or_default());
        h.finalize().into()
    }

    /// Whether the value is of the kind the instance decides.
    pub fn fits(&self, instance: &Instance) -> bool {
        matches!(
            (self, instance),
            (
                Value::SetupKeys { .. } | Value::SetupRetry { .. },
                Instance::Setup { .. }
            ) | (Value::Seal { .. }, Instance::Seal { .. })
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    pub recipient: MemberIndex,
    pub ciphertext: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareEntry {
    pub submission: Hash,
    pub share: KeySwitchShare,
}
impl Eq for ShareEntry {}

/// An anonymous score submission (DESIGN 4.3). It carries no bank identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub epoch: u64,
    /// Per-epoch client tag `T = sk_T * G`.
    pub tag: RistrettoPoint,
    /// `Enc(score)` under the consortium key `X`.
    pub ciphertext: Ciphertext,
    /// One-time key `O = o * G` that the result is key-switched to.
    pub one_time: RistrettoPoint,
    pub validity: ValidityProof,
    /// Schnorr signature by `sk_T` over everything above.
    pub holder: schnorr::Signature,
    /// Linkable ring signature by one of the members over everything above: only a member
    /// posts, once per tag and at most the quota per epoch, without saying which.
    pub ring: RingSignature,
}
impl Eq for Submission {}

impl Submission {
    /// The bytes the holder signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&(
            self.epoch,
            &self.tag,
            &self.ciphertext,
            &self.one_time,
            &self.validity,
        ))
        .unwrap_or_default()
    }

    /// The bytes the ring signature covers: what the holder signed, and its signature.
    pub fn ring_signed_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(&(self.signed_bytes(), &self.holder)).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record is empty or larger than {MAX_RECORD_BYTES} bytes")]
    Size,
    #[error("record does not decode: {0}")]
    Malformed(String),
    #[error("record encoding is not canonical")]
    NotCanonical,
    #[error("unsupported record version {0} or suite {1}")]
    Version(u8, u8),
}

/// A decoded record whose signatures and proofs have not been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncheckedRecord {
    envelope: Envelope,
    bytes: Vec<u8>,
    hash: Hash,
}

/// A record that passed [`crate::Bank::check`] (or that this node made itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    envelope: Envelope,
    bytes: Vec<u8>,
    hash: Hash,
}

pub fn hash_bytes(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

impl UncheckedRecord {
    /// Decodes canonical bytes: the encoding of the decoded value must equal the input exactly.
    pub fn decode(bytes: &[u8]) -> Result<UncheckedRecord, DecodeError> {
        if bytes.is_empty() || bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::Size);
        }
        let (envelope, rest): (Envelope, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::NotCanonical);
        }
        if envelope.version != VERSION || envelope.suite != SUITE {
            return Err(DecodeError::Version(envelope.version, envelope.suite));
        }
        let again =
            postcard::to_stdvec(&envelope).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if again != bytes {
            return Err(DecodeError::NotCanonical);
        }
        Ok(UncheckedRecord {
            envelope,
            bytes: bytes.to_vec(),
            hash: hash_bytes(bytes),
        })
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    pub fn hash(&self) -> Hash {
        self.hash
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `(author, seq)` if identified. Not yet verified.
    pub fn claimed_position(&self) -> Option<(MemberIndex, u64)> {
        match &self.envelope.payload {
            Payload::Identified(i) => Some((i.author, i.seq)),
            Payload::Submission(_) => None,
        }
    }

    /// `(author, seq, prev)` if identified. Not yet verified.
    pub fn claimed_chain(&self) -> Option<(MemberIndex, u64, Hash)> {
        match &self.envelope.payload {
            Payload::Identified(i) => Some((i.author, i.seq, i.prev)),
            Payload::Submission(_) => None,
        }
    }

    /// The author, if identified. Not yet verified.
    pub fn claimed_author(&self) -> Option<MemberIndex> {
        match &self.envelope.payload {
            Payload::Identified(i) => Some(i.author),
            Payload::Submission(_) => None,
        }
    }

    /// Checks what needs no protocol state: consortium binding and the author's signature.
    /// Body-specific checks follow in the bank.
    pub fn check_envelope(&self, consortium: &Consortium) -> Result<(), EnvelopeError> {
        if self.envelope.consortium != consortium.id {
            return Err(EnvelopeError::WrongConsortium);
        }
        if let Payload::Identified(i) = &self.envelope.payload {
            let key = consortium
                .identity(i.author)
                .ok_or(EnvelopeError::UnknownAuthor(i.author))?;
            let msg = signing_bytes(&consortium.id, i.author, i.seq, &i.prev, &i.body);
            key.verify(&msg, &i.signature)
                .map_err(|_| EnvelopeError::BadSignature(i.author))?;
            if i.seq == 0 {
                return Err(EnvelopeError::BadSequence(i.author));
            }
        }
        Ok(())
    }

    /// Marks the record checked. Only the bank calls this, after all checks passed.
    pub(crate) fn into_checked(self) -> Record {
        Record {
            envelope: self.envelope,
            bytes: self.bytes,
            hash: self.hash,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("record is for another consortium")]
    WrongConsortium,
    #[error("author {0} is not a member")]
    UnknownAuthor(MemberIndex),
    #[error("signature of member {0} does not verify")]
    BadSignature(MemberIndex),
    #[error("member {0} used sequence number 0")]
    BadSequence(MemberIndex),
}

fn signing_bytes(
    consortium: &ConsortiumId,
    author: MemberIndex,
    seq: u64,
    prev: &Hash,
    body: &Body,
) -> Vec<u8> {
    postcard::to_stdvec(&(
        b"bankmesh.record.v1",
        VERSION,
        SUITE,
        consortium,
        author,
        seq,
        prev,
        body,
    ))
    .unwrap_or_default()
}

impl Record {
    /// Signs and encodes an identified record.
    pub fn identified(
        consortium: &ConsortiumId,
        key: &SigningKey,
        author: MemberIndex,
        seq: u64,
        prev: Hash,
        body: Body,
    ) -> Record {
        let signature = key.sign(&signing_bytes(consortium, author, seq, &prev, &body));
        let payload = Payload::Identified(Identified {
            author,
            seq,
            prev,
            body,
            signature,
        });
        Self::from_envelope(Envelope {
            version: VERSION,
            suite: SUITE,
            consortium: *consortium,
            payload,
        })
    }

    /// Encodes a submission this node built (its proofs are its own).
    pub fn submission(consortium: &ConsortiumId, submission: Submission) -> Record {
        let payload = Payload::Submission(Box::new(submission));
        Self::from_envelope(Envelope {
            version: VERSION,
            suite: SUITE,
            consortium: *consortium,
            payload,
        })
    }

    fn from_envelope(envelope: Envelope) -> Record {
        let bytes = postcard::to_stdvec(&envelope).unwrap_or_default();
        Record {
            hash: hash_bytes(&bytes),
            envelope,
            bytes,
        }
    }

    /// Rebuilds a record from bytes this node stored after checking them (store replay).
    pub fn from_trusted_bytes(bytes: &[u8]) -> Result<Record, DecodeError> {
        UncheckedRecord::decode(bytes).map(UncheckedRecord::into_checked)
    }

    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
    pub fn payload(&self) -> &Payload {
        &self.envelope.payload
    }
    pub fn hash(&self) -> Hash {
        self.hash
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn author(&self) -> Option<MemberIndex> {
        match &self.envelope.payload {
            Payload::Identified(i) => Some(i.author),
            Payload::Submission(_) => None,
        }
    }
    /// `(author, seq, prev)` for identified records.
    pub fn chain_position(&self) -> Option<(MemberIndex, u64, Hash)> {
        match &self.envelope.payload {
            Payload::Identified(i) => Some((i.author, i.seq, i.prev)),
            Payload::Submission(_) => None,
        }
    }
    /// The epoch a record belongs to, if any (every record belongs to one; setup records to
    /// the epoch whose keys they make).
    pub fn epoch(&self) -> Option<u64> {
        epoch_of(&self.envelope.payload)
    }
    /// A short name of the record kind, for logs and faults.
    pub fn kind(&self) -> &'static str {
        kind_of(&self.envelope.payload)
    }
}

/// The epoch a payload belongs to (setup records to the epoch whose keys they make).
pub fn epoch_of(payload: &Payload) -> Option<u64> {
    match payload {
        Payload::Submission(s) => Some(s.epoch),
        Payload::Identified(i) => epoch_of_body(&i.body),
    }
}

/// The epoch an identified record's body belongs to, if any.
pub fn epoch_of_body(body: &Body) -> Option<u64> {
    match body {
        Body::DkgRound1 { epoch, .. }
        | Body::DkgRound2 { epoch, .. }
        | Body::DkgDone { epoch, .. } => Some(*epoch),
        Body::Proposal { instance, .. } | Body::Vote { instance, .. } => Some(instance.epoch()),
        Body::OprfUsage { epoch, .. }
        | Body::Report { epoch, .. }
        | Body::DecryptionShares { epoch, .. }
        | Body::DkgComplaint { epoch, .. }
        | Body::Fault { epoch, .. } => Some(*epoch),
    }
}

pub fn kind_of(payload: &Payload) -> &'static str {
    match payload {
        Payload::Submission(_) => "submission",
        Payload::Identified(i) => kind_of_body(&i.body),
    }
}

/// A short name of an identified record's kind.
pub fn kind_of_body(body: &Body) -> &'static str {
    match body {
        Body::DkgRound1 { .. } => "dkg-round1",
        Body::DkgRound2 { .. } => "dkg-round2",
        Body::DkgDone { .. } => "dkg-done",
        Body::OprfUsage { .. } => "oprf-usage",
        Body::Report { .. } => "report",
        Body::Proposal { .. } => "proposal",
        Body::Vote {
            kind: VoteKind::Prevote,
            ..
        } => "prevote",
        Body::Vote {
            kind: VoteKind::Precommit,
            ..
        } => "precommit",
        Body::DecryptionShares { .. } => "decryption-shares",
        Body::DkgComplaint { .. } => "dkg-complaint",
        Body::Fault { .. } => "fault",
    }
}
