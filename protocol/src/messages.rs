//! Direct request/response messages between members (DESIGN 7): OPRF evaluations and sync.
//! These travel over authenticated libp2p streams, so the sender is known to the receiver.

use curve25519_dalek::ristretto::RistrettoPoint;
use serde::{Deserialize, Serialize};

use crate::crypto::oprf::DleqProof;
use crate::record::Hash;
use crate::MemberIndex;

/// Most blinded elements in one OPRF request.
pub const OPRF_BATCH_MAX: usize = 1024;
/// Most records or hashes in one sync reply.
pub const SYNC_BATCH_MAX: usize = 512;
/// Most submission hashes in one page of [`Response::Submissions`] (128 KiB).
pub const SUBMISSIONS_PAGE: usize = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Evaluate the OPRF on blinded elements with the responder's key share.
    OprfEvaluate {
        epoch: u64,
        batch: u32,
        blinded: Vec<RistrettoPoint>,
    },
    /// The hashes of the submissions the responder holds for `epoch`, in ascending order,
    /// from just after `after` (the pre-report sync round, DESIGN 4.4).
    Submissions { epoch: u64, after: Option<Hash> },
    /// Records by hash.
    Records { hashes: Vec<Hash> },
    /// The responder's per-author chain heads.
    Heads,
    /// Records of one author from `from_seq` on.
    AuthorRange { author: MemberIndex, from_seq: u64 },
    /// An onion packet to relay (DESIGN 6); every packet has the same size.
    Onion { packet: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    OprfEvaluated {
        epoch: u64,
        batch: u32,
        evaluated: Vec<RistrettoPoint>,
        proof: DleqProof,
        /// By the evaluator's identity key, over the request and the answer
        /// ([`crate::record::SignedEvaluation::signed_bytes`]): a bad evaluation is evidence.
        signature: ed25519_dalek::Signature,
    },
    Submissions {
        epoch: u64,
        after: Option<Hash>,
        hashes: Vec<Hash>,
        /// More follow after the last of `hashes`.
        more: bool,
    },
    Records {
        records: Vec<Vec<u8>>,
    },
    Heads {
        heads: Vec<(MemberIndex, u64, Hash)>,
    },
    /// An onion packet was received (whatever becomes of it: the sender learns nothing more).
    Taken,
    /// The request was refused (rate limit, unknown set, not ready); says why.
    Refused {
        reason: String,
    },
}

impl Request {
    pub fn kind(&self) -> &'static str {
        match self {
            Request::OprfEvaluate { .. } => "oprf-evaluate",
            Request::Submissions { .. } => "submissions",
            Request::Records { .. } => "records",
            Request::Heads => "heads",
            Request::AuthorRange { .. } => "author-range",
            Request::Onion { .. } => "onion",
        }
    }
}
