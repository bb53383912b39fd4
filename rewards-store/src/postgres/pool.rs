//! Connection pools (deadpool-postgres) for the primary and the optional
//! read replica. Connections are created lazily: building a pool never
//! touches the network, and a dead server shows up as a fast
//! [`PgError::Unavailable`] on first use (bounded by the connect timeout).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::config::PgConfig;
use super::error::PgError;

/// Which server a pool talks to (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    Replica,
}

/// Builds a pool for `url` with the bounds of `config`.
pub(crate) fn build_pool(config: &PgConfig, url: &str, role: Role) -> Result<Pool, PgError> {
    let field = match role {
        Role::Primary => "url",
        Role::Replica => "replica_url",
    };
    let mut pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| PgError::Config(format!("{field}: {e}")))?;
    pg.connect_timeout(config.connect_timeout());
    if pg.get_application_name().is_none() {
        pg.application_name("rewards-store");
    }
    if pg.get_options().is_none() {
        // Custom plans only: the store's statements are prepared once per
        // connection, often on a fresh schema, and take arrays whose size
        // and content vary per call; a generic plan chosen while the tables
        // were small (sequential scans, hash joins on every member's rows)
        // stays in the connection's cache as they grow — seen as 0.3-3 s
        // view reads and ever slower lot loads over a 1M-transaction run.
        // Planning each execution costs well under a millisecond.
        let mut options = String::from("-c plan_cache_mode=force_custom_plan");
        if config.statement_timeout_ms > 0 {
            options.push_str(&format!(
                " -c statement_timeout={}",
                config.statement_timeout_ms
            ));
        }
        pg.options(options);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // Fast: a broken connection is noticed by the next query and
            // replaced; `Verified` would add a round trip to every checkout.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .wait_timeout(Some(config.pool_wait_timeout()))
        .create_timeout(Some(config.connect_timeout()))
        .recycle_timeout(Some(config.connect_timeout()))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| PgError::Config(format!("{field}: cannot build pool: {e}")))
}
