//! The PostgreSQL adapter: the source of truth of the ledger.
//!
//! It holds no business rules. For each command it loads the state the core
//! ledger asks for, calls the core's pure ledger function, and writes the
//! resulting entry — inbox row, postings, lots, counters, balances, budget
//! draws, audit event — in ONE database transaction. See `docs/storage.md`
//! for the schema, the migrations, the concurrency model and batching.
//!
//! - [`config`]: [`PgConfig`] (URLs, schema, pool and batch bounds).
//! - [`migrate`]: versioned migrations under an advisory lock.
//! - [`error`]: [`PgError`] and its classification (transient or not).
//! - [`PgStore`]: the [`LedgerStore`](rewards_core::LedgerStore).

mod codec;
pub mod config;
mod engine;
pub mod error;
pub mod migrate;
mod pool;
mod sql;
mod store;

pub use config::{PgConfig, DEFAULT_SCHEMA};
pub use error::PgError;
pub use migrate::{drop_schema, migrate, migrate_with_config, MigrationReport, MIGRATIONS};
pub use store::PgStore;
