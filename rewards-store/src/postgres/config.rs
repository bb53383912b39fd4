//! Configuration of the PostgreSQL store: where the primary (and an optional
//! read replica) is, which schema holds the tables, and the bounds on pools,
//! timeouts and batches.

use std::time::Duration;

use super::error::PgError;

/// The schema used when none is configured.
pub const DEFAULT_SCHEMA: &str = "rewards";
/// Longest schema name PostgreSQL keeps without truncating (NAMEDATALEN - 1).
pub const MAX_SCHEMA_LEN: usize = 63;
/// Most outcomes one call to `append_batch` writes in one database
/// transaction; larger batches are split into chunks of this size.
pub const MAX_BATCH_LEN: usize = 4096;

/// How to reach PostgreSQL and how to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConfig {
    /// Connection URL of the primary (`postgres://user@host:5432/db`).
    pub url: String,
    /// Connection URL of a read replica: lag-tolerant reads (balance,
    /// recent, history) go there when set.
    pub replica_url: Option<String>,
    /// Schema that holds every table (validated as a plain identifier).
    pub schema: String,
    /// Most connections in each pool.
    pub pool_size: usize,
    /// How long opening one connection may take before the store reports
    /// the database unavailable.
    pub connect_timeout_ms: u64,
    /// How long a caller waits for a free pooled connection.
    pub pool_wait_timeout_ms: u64,
    /// Server-side statement timeout on every pooled connection (0: none).
    pub statement_timeout_ms: u64,
    /// Outcomes per database transaction on the batched path (1..=
    /// [`MAX_BATCH_LEN`]).
    pub batch_len: usize,
    /// Whether [`PgStore::connect`](super::PgStore::connect) applies pending
    /// migrations before it returns.
    pub migrate_on_start: bool,
}

impl PgConfig {
    /// A configuration with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            replica_url: None,
            schema: DEFAULT_SCHEMA.to_string(),
            pool_size: 8,
            connect_timeout_ms: 2_000,
            pool_wait_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            batch_len: 1_000,
            migrate_on_start: true,
        }
    }

    /// The same configuration in another schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> PgConfig {
        self.schema = schema.into();
        self
    }

    /// The same configuration with a read replica.
    pub fn with_replica(mut self, replica_url: impl Into<String>) -> PgConfig {
        self.replica_url = Some(replica_url.into());
        self
    }

    /// Checks every field, so that a bad configuration fails at start with a
    /// message naming the field rather than at the first query.
    pub fn validate(&self) -> Result<(), PgError> {
        validate_schema(&self.schema)?;
        if self.pool_size == 0 {
            return Err(PgError::Config("pool_size must be at least 1".into()));
        }
        if self.connect_timeout_ms == 0 {
            return Err(PgError::Config(
                "connect_timeout_ms must be at least 1".into(),
            ));
        }
        if self.batch_len == 0 || self.batch_len > MAX_BATCH_LEN {
            return Err(PgError::Config(format!(
                "batch_len must be between 1 and {MAX_BATCH_LEN}, not {}",
                self.batch_len
            )));
        }
        for (field, url) in [
            ("url", Some(&self.url)),
            ("replica_url", self.replica_url.as_ref()),
        ] {
            if let Some(url) = url {
                url.parse::<tokio_postgres::Config>().map_err(|e| {
                    PgError::Config(format!("{field} is not a valid PostgreSQL URL: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// The connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The pool wait timeout as a duration.
    pub fn pool_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_wait_timeout_ms)
    }
}

/// Checks that `schema` is a plain lower-case SQL identifier
/// (`[a-z_][a-z0-9_]*`, at most 63 bytes, not `pg_*`), so that it can be
/// interpolated into statement text without quoting surprises.
pub fn validate_schema(schema: &str) -> Result<(), PgError> {
    let bad = |why: &str| PgError::Config(format!("schema {schema:?} {why}"));
    let mut bytes = schema.bytes();
    match bytes.next() {
        None => return Err(bad("must not be empty")),
        Some(b) if b == b'_' || b.is_ascii_lowercase() => {}
        Some(_) => return Err(bad("must start with a lower-case letter or '_'")),
    }
    if !bytes.all(|b| b == b'_' || b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(bad("may hold only lower-case letters, digits and '_'"));
    }
    if schema.len() > MAX_SCHEMA_LEN {
        return Err(bad("is longer than 63 bytes"));
    }
    if schema.starts_with("pg_") || schema == "information_schema" || schema == "public" {
        return Err(bad("is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["rewards", "t_0a9f", "_x", "a"] {
            assert!(validate_schema(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "Rewards",
            "1abc",
            "a-b",
            "a;drop",
            "a\"b",
            "pg_catalog",
            "public",
            "é",
            &long,
        ] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_checks_its_fields() {
        let ok = PgConfig::new("postgres://postgres@127.0.0.1:5432/test");
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.batch_len = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.pool_size = 0;
        assert!(c.validate().is_err());
        let c = ok.clone().with_replica("not a url at all ::");
        assert!(c.validate().is_err());
        assert!(ok.with_schema("x y").validate().is_err());
    }
}
