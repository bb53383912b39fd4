//! Errors of the PostgreSQL store and their classification: what is
//! transient (the database is unreachable or busy: pause and retry), what is
//! a duplicate or conflicting transaction id, and what is a bug or a bad
//! configuration.

use std::fmt;

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// Everything that can go wrong inside the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The configuration is unusable (bad schema name, bad URL, ...).
    #[error("postgres store configuration: {0}")]
    Config(String),
    /// The database cannot be reached or is overloaded right now: connection
    /// refused or lost, pool timeout, server shutting down. Retrying later
    /// may succeed; nothing was written.
    #[error("postgres unavailable ({context}): {detail}")]
    Unavailable {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        detail: String,
    },
    /// The server rolled the transaction back because of a serialization
    /// failure or deadlock; retrying it is safe.
    #[error("postgres transaction must be retried ({context}): {detail}")]
    Retry {
        /// What the store was doing.
        context: &'static str,
        /// The underlying error.
        detail: String,
    },
    /// A migration could not be applied (or the schema is newer than this
    /// build knows).
    #[error("postgres migration {version}: {detail}")]
    Migration {
        /// The migration's version number.
        version: i32,
        /// What went wrong.
        detail: String,
    },
    /// Stored data could not be read back into domain types.
    #[error("postgres data is corrupt ({context}): {detail}")]
    Corrupt {
        /// What was being read.
        context: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// Any other database error (a bug in a statement, a constraint the
    /// ledger should have prevented, ...).
    #[error("postgres error ({context}): {detail}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
        /// The underlying error.
        detail: String,
    },
}

impl PgError {
    /// Whether retrying later may succeed (the runtime pauses and retries).
    pub fn is_transient(&self) -> bool {
        matches!(self, PgError::Unavailable { .. } | PgError::Retry { .. })
    }

    /// Classifies a driver error met while doing `context`.
    pub fn from_pg(context: &'static str, err: tokio_postgres::Error) -> PgError {
        let detail = error_chain(&err);
        match err.code() {
            None => PgError::Unavailable { context, detail },
            Some(code) if is_retry(code) => PgError::Retry { context, detail },
            Some(code) if is_unavailable(code) => PgError::Unavailable { context, detail },
            Some(code) => PgError::Database {
                context,
                code: Some(code.code().to_string()),
                detail,
            },
        }
    }

    /// Classifies a pool error met while doing `context`.
    pub fn from_pool(context: &'static str, err: PoolError) -> PgError {
        match err {
            PoolError::Backend(e) => PgError::from_pg(context, e),
            PoolError::Timeout(kind) => PgError::Unavailable {
                context,
                detail: format!("connection pool timed out ({kind:?})"),
            },
            PoolError::Closed => PgError::Unavailable {
                context,
                detail: "connection pool is closed".into(),
            },
            other => PgError::Unavailable {
                context,
                detail: error_chain(&other),
            },
        }
    }

    /// Builds a [`PgError::Corrupt`].
    pub fn corrupt(context: &'static str, detail: impl fmt::Display) -> PgError {
        PgError::Corrupt {
            context,
            detail: detail.to_string(),
        }
    }

    /// The SQLSTATE of a [`PgError::Database`], if any.
    pub fn sql_state(&self) -> Option<&str> {
        match self {
            PgError::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Whether the error is a unique violation (SQLSTATE 23505).
pub fn is_unique_violation(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

fn is_retry(code: &SqlState) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
}

fn is_unavailable(code: &SqlState) -> bool {
    let c = code.code();
    // 08: connection exception; 53: insufficient resources (too many
    // connections, disk full, out of memory); 57P01..57P05: admin/crash
    // shutdown, cannot connect now, idle-session timeout; 57014: statement
    // cancelled (statement timeout) is treated as transient overload.
    c.starts_with("08")
        || c.starts_with("53")
        || c.starts_with("57P")
        || *code == SqlState::QUERY_CANCELED
}

/// The error and its sources on one line (`a: b: c`).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
