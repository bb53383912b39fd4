//! Points: whole loyalty points, with checked arithmetic (overflow is an
//! error, never a wrap).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A whole number of loyalty points (may be negative for debits).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Points(pub i64);

/// Points arithmetic left the i64 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("points arithmetic overflowed")]
pub struct PointsOverflow;

impl Points {
    /// Zero points.
    pub const ZERO: Points = Points(0);

    /// True for zero points (serde's `skip_serializing_if` takes a reference).
    #[allow(clippy::trivially_copy_pass_by_ref)]
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    /// Checked addition.
    pub fn checked_add(self, other: Points) -> Result<Points, PointsOverflow> {
        self.0
            .checked_add(other.0)
            .map(Points)
            .ok_or(PointsOverflow)
    }

    /// Checked subtraction.
    pub fn checked_sub(self, other: Points) -> Result<Points, PointsOverflow> {
        self.0
            .checked_sub(other.0)
            .map(Points)
            .ok_or(PointsOverflow)
    }

    /// Checked negation.
    pub fn checked_neg(self) -> Result<Points, PointsOverflow> {
        self.0.checked_neg().map(Points).ok_or(PointsOverflow)
    }

    /// The raw value.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Points {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pts", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(Points(i64::MAX).checked_add(Points(1)), Err(PointsOverflow));
        assert_eq!(Points(i64::MIN).checked_neg(), Err(PointsOverflow));
        assert_eq!(Points(2).checked_sub(Points(5)), Ok(Points(-3)));
    }
}
