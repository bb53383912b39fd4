//! Errors of the Redis cache adapter.

use std::time::Duration;

use super::keys::PrefixError;

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCacheError {
    /// The server or the client library reported an error.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// An operation did not finish in time.
    #[error("redis {op} timed out after {after:?}")]
    Timeout {
        /// Which operation.
        op: &'static str,
        /// The bound it exceeded.
        after: Duration,
    },
    /// The configured key prefix is not usable.
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    /// A cache entry could not be read back (written by something else, or
    /// by an incompatible version).
    #[error("cache entry of member {member:?} is malformed: {reason}")]
    Malformed {
        /// The member.
        member: String,
        /// What is wrong with it.
        reason: String,
    },
}
