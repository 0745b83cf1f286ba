//! The bankmesh protocol, sans-IO: consortium genesis and keys, canonically encoded records,
//! the cryptography of DESIGN 3, and the bank state machine that takes one member through DKG,
//! pseudonyms, submission, seal, aggregation, decryption and results.
//!
//! Nothing here opens a socket, reads a clock or draws its own randomness: time comes in as
//! [`Time`], randomness as `&mut impl CryptoRng`, and everything to send comes out in a [`Step`].
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod agreement;
pub mod bank;
pub mod consensus;
pub mod crypto;
pub mod epoch;
pub mod evidence;
pub mod genesis;
pub mod gossip;
pub mod keys;
pub mod local;
pub mod merkle;
pub mod messages;
pub mod record;
pub mod relay;
pub mod setup;
pub mod step;
pub mod time;

pub use bank::{Bank, Checked, Verdict};
pub use genesis::{Genesis, GenesisError};
pub use keys::MemberSecrets;
pub use record::{Hash, Record, UncheckedRecord};
pub use step::{
    ClientResult, Culprit, Error, Event, Fault, FaultKind, Origin, Phase, Status, Step, Wait,
    WITHHELD,
};
pub use time::Time;

/// Member index: 1..=n, also the Shamir/FROST identifier of the member's key shares.
pub type MemberIndex = u16;

/// Largest consortium the design supports: sums of n scores of at most 1023 stay below 2^16,
/// the range of the discrete-log table.
pub const MAX_MEMBERS: usize = 64;

/// Largest score (DESIGN 1: scores are 0..=1023).
pub const SCORE_MAX: u16 = 1023;

/// Longest client id in bytes.
pub const CLIENT_ID_MAX: usize = 128;
