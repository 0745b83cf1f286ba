//! The cryptography of DESIGN 3, on ristretto255.

pub mod dlog;
pub mod elgamal;
pub mod error;
pub mod keyswitch;
pub mod lagrange;
pub mod oprf;
pub mod ring;
pub mod schnorr;
pub mod sealed;
pub mod tag;
pub mod validity;

pub use error::CryptoError;

use merlin::Transcript;

use crate::genesis::ConsortiumId;

/// A Fiat-Shamir transcript bound to the consortium, the epoch and the record kind
/// (DESIGN 3: every challenge has explicit domain labels).
pub fn transcript(consortium: &ConsortiumId, epoch: u64, kind: &'static [u8]) -> Transcript {
    let mut t = Transcript::new(b"bankmesh.v1");
    t.append_message(b"consortium", consortium);
    t.append_u64(b"epoch", epoch);
    t.append_message(b"kind", kind);
    t
}
