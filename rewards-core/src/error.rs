//! The one error type of `rewards-core` and of every store behind its traits.
//!
//! Shaped like `sqlx::Error`: a `#[non_exhaustive]` enum whose variants
//! carry the detail, and a small [`ErrorKind`] that callers match on to
//! decide what to do (retry, dead-letter, report a conflict, answer 404).

use std::fmt;

use crate::ids::{MemberId, TxId};
use crate::points::{Points, PointsOverflow};
use crate::transaction::TxKind;

/// A boxed underlying error (driver, I/O) kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for results of the ledger and the stores.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller should do about an error, without matching on details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The member, profile or record does not exist (HTTP 404).
    NotFound,
    /// The same id was used with other content: not a duplicate, a conflict.
    Conflict,
    /// A debit larger than the available balance; nothing was changed.
    InsufficientBalance,
    /// The transaction refers to an original it may not refer to (unknown
    /// purchase, refund of a refund, reversal after settlement, ...). The
    /// runtime dead-letters it; a later re-drive may succeed (the original
    /// may arrive late).
    InvalidReference,
    /// A request that can never succeed as sent (an outcome for another
    /// transaction, a redemption of zero points, ...).
    Invalid,
    /// The store is down or overloaded; retry later. Nothing was applied.
    Unavailable,
    /// The outcome was evaluated against a member state that is no longer
    /// current ([`crate::outcome::Outcome::expects_version`]): evaluate it
    /// again from a fresh view. Nothing was applied.
    Stale,
    /// Anything else (overflow, corrupted state, a bug).
    Other,
}

impl ErrorKind {
    /// True when retrying the same request later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }
}

/// Why a transaction may not refer to its `original_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReferenceProblem {
    /// No such transaction is recorded for this member.
    Unknown,
    /// The original belongs to another member.
    OtherMember(MemberId),
    /// The original is of a kind that cannot be referred to this way
    /// (a refund of a refund, a settlement of a purchase, ...).
    WrongKind(TxKind),
    /// The authorization has not settled yet (refund or chargeback of an
    /// open authorization: reverse it instead).
    NotSettled,
    /// The authorization has already settled (a reversal or a second settlement).
    AlreadySettled,
    /// The authorization was already reversed or expired.
    AlreadyVoided,
    /// The amounts are in different currencies.
    CurrencyMismatch,
}

impl fmt::Display for ReferenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceProblem::Unknown => f.write_str("no such transaction for this member"),
            ReferenceProblem::OtherMember(m) => write!(f, "it belongs to member {m}"),
            ReferenceProblem::WrongKind(k) => write!(f, "it is a {k}, which cannot be referred to"),
            ReferenceProblem::NotSettled => f.write_str("the authorization has not settled"),
            ReferenceProblem::AlreadySettled => {
                f.write_str("the authorization has already settled")
            }
            ReferenceProblem::AlreadyVoided => {
                f.write_str("the authorization was already reversed or expired")
            }
            ReferenceProblem::CurrencyMismatch => f.write_str("the currencies differ"),
        }
    }
}

/// An error of the ledger or of a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ErrorKind::NotFound`].
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`member m-1`, `profile m-1`).
        what: String,
    },
    /// See [`ErrorKind::Conflict`].
    #[error("conflict on {id}: {reason}")]
    Conflict {
        /// The id used twice.
        id: TxId,
        /// What differs.
        reason: String,
    },
    /// See [`ErrorKind::InsufficientBalance`].
    #[error("insufficient balance for {member}: {requested} requested, {available} available")]
    InsufficientBalance {
        /// The member.
        member: MemberId,
        /// Points asked for.
        requested: Points,
        /// Points available.
        available: Points,
    },
    /// See [`ErrorKind::InvalidReference`].
    #[error("{id} cannot refer to {original}: {problem}")]
    InvalidReference {
        /// The referring transaction.
        id: TxId,
        /// The original it names.
        original: TxId,
        /// Why it may not.
        problem: ReferenceProblem,
    },
    /// See [`ErrorKind::Invalid`].
    #[error("invalid request: {0}")]
    Invalid(String),
    /// See [`ErrorKind::Unavailable`].
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// See [`ErrorKind::Stale`].
    #[error("outcome of {id} was evaluated at version {expected} of member {member}, which is at {actual}")]
    Stale {
        /// The transaction.
        id: TxId,
        /// The member.
        member: MemberId,
        /// The version the outcome expects.
        expected: u64,
        /// The member's version.
        actual: u64,
    },
    /// See [`ErrorKind::Other`].
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::InsufficientBalance { .. } => ErrorKind::InsufficientBalance,
            Error::InvalidReference { .. } => ErrorKind::InvalidReference,
            Error::Invalid(_) => ErrorKind::Invalid,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Stale { .. } => ErrorKind::Stale,
            Error::Other { .. } => ErrorKind::Other,
        }
    }

    /// A not-found error.
    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    /// A transient store error (retry later).
    pub fn unavailable(message: impl Into<String>, source: impl Into<Option<BoxError>>) -> Error {
        Error::Unavailable {
            message: message.into(),
            source: source.into(),
        }
    }

    /// Any other error.
    pub fn other(message: impl Into<String>, source: impl Into<Option<BoxError>>) -> Error {
        Error::Other {
            message: message.into(),
            source: source.into(),
        }
    }

    /// An invalid-reference error.
    pub fn reference(id: &TxId, original: &TxId, problem: ReferenceProblem) -> Error {
        Error::InvalidReference {
            id: id.clone(),
            original: original.clone(),
            problem,
        }
    }
}

impl From<PointsOverflow> for Error {
    fn from(e: PointsOverflow) -> Error {
        Error::other(
            "points arithmetic overflowed",
            Some(Box::new(e) as BoxError),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinguished() {
        let id = TxId::new("r-1").unwrap();
        let original = TxId::new("p-1").unwrap();
        let e = Error::reference(&id, &original, ReferenceProblem::WrongKind(TxKind::Refund));
        assert_eq!(e.kind(), ErrorKind::InvalidReference);
        assert_eq!(
            e.to_string(),
            "r-1 cannot refer to p-1: it is a refund, which cannot be referred to"
        );
        assert!(Error::unavailable("down", None).kind().is_transient());
        assert!(!Error::not_found("member m").kind().is_transient());
        assert_eq!(Error::from(PointsOverflow).kind(), ErrorKind::Other);
    }
}
