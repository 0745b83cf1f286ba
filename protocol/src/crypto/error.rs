//! Errors of the cryptographic building blocks.

/// Why a cryptographic operation or verification failed.
///
/// Verification failures say which check failed, so that a fault record can name it;
/// they never include secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("score {0} is outside 0..=1023")]
    ScoreOutOfRange(u64),
    #[error("point encoding is not a valid ristretto255 point")]
    InvalidPoint,
    #[error("scalar encoding is not canonical")]
    InvalidScalar,
    #[error("range proof does not verify")]
    RangeProof,
    #[error("proof of {0} does not verify")]
    Proof(&'static str),
    #[error("signature does not verify")]
    Signature,
    #[error("share index {0} is zero or repeated")]
    BadShareIndex(u16),
    #[error("need {need} shares, got {got}")]
    NotEnoughShares { need: usize, got: usize },
    #[error("value is not a small discrete logarithm")]
    NotInTable,
    #[error("input is empty or too long")]
    BadInput,
}
