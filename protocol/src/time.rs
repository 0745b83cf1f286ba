//! Protocol time: milliseconds since the Unix epoch, always passed in by the driver.

use serde::{Deserialize, Serialize};

/// A point in time in milliseconds since the Unix epoch. The protocol never reads a clock;
/// the node passes wall time and the simulator passes virtual time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(pub u64);

impl Time {
    pub const fn from_millis(ms: u64) -> Self {
        Time(ms)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// `self + ms`, saturating.
    pub const fn plus(self, ms: u64) -> Self {
        Time(self.0.saturating_add(ms))
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
