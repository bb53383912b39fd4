//! Versioned migrations: `rewards-store/migrations/NNNN_name.sql`, embedded
//! in the binary, applied in order in ONE transaction under an advisory
//! lock, and recorded in `<schema>.schema_migrations` with a checksum.
//!
//! Two processes starting together both call [`migrate`]; the second waits
//! on the advisory lock, then finds every migration applied and does
//! nothing. A migration file changed after it was applied is an error (its
//! checksum differs), and so is a database migrated by a newer build.

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};

use super::config::{validate_schema, PgConfig};
use super::error::PgError;

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its version (the `NNNN` of the file name); strictly increasing.
    pub version: i32,
    /// Its name (the rest of the file name).
    pub name: &'static str,
    /// The SQL, written with unqualified names: it runs with `search_path`
    /// set to the target schema.
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL text.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// Every migration this build knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "text_documents",
        sql: include_str!("../../migrations/0002_text_documents.sql"),
    },
    Migration {
        version: 3,
        name: "outbox",
        sql: include_str!("../../migrations/0003_outbox.sql"),
    },
    Migration {
        version: 4,
        name: "lots_spend_order",
        sql: include_str!("../../migrations/0004_lots_spend_order.sql"),
    },
    Migration {
        version: 5,
        name: "compact_rows",
        sql: include_str!("../../migrations/0005_compact_rows.sql"),
    },
];

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order.
    pub applied: Vec<i32>,
    /// The schema's version afterwards.
    pub version: i32,
}

/// The advisory-lock key of a schema's migrations: the first eight bytes of
/// SHA-256("rewards-store.migrate:" + schema), so that two schemas migrate
/// independently and no other application's key is likely to collide.
fn lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("rewards-store.migrate:{schema}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Applies every pending migration to `schema` (created if missing), in one
/// transaction holding an advisory lock.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<MigrationReport, PgError> {
    validate_schema(schema)?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| PgError::from_pg("migrate", e))?;
    match migrate_in(&tx, schema).await {
        Ok(applied) => {
            tx.commit()
                .await
                .map_err(|e| PgError::from_pg("migrate", e))?;
            Ok(MigrationReport {
                applied,
                version: latest_version(),
            })
        }
        Err(e) => {
            // Roll back now rather than on drop, so that the advisory lock
            // and the catalog locks are released before this returns.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn migrate_in(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<Vec<i32>, PgError> {
    let err = |e| PgError::from_pg("migrate", e);
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)])
        .await
        .map_err(err)?;
    // The schema name was validated as a plain identifier above; it cannot
    // be a bind parameter in DDL.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};\n\
         SET LOCAL search_path TO {schema};\n\
         CREATE TABLE IF NOT EXISTS schema_migrations (\n\
             version    integer PRIMARY KEY,\n\
             name       text NOT NULL,\n\
             checksum   text NOT NULL,\n\
             applied_at timestamptz NOT NULL DEFAULT now()\n\
         );"
    ))
    .await
    .map_err(err)?;
    let rows = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(err)?;
    let mut done = Vec::with_capacity(rows.len());
    for row in rows {
        let version: i32 = row.try_get(0).map_err(err)?;
        let checksum: String = row.try_get(1).map_err(err)?;
        done.push((version, checksum));
    }
    for (version, checksum) in &done {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => {
                return Err(PgError::Migration {
                    version: *version,
                    detail: format!(
                        "schema {schema} was migrated by a newer build (this build knows up to {})",
                        latest_version()
                    ),
                })
            }
            Some(m) if m.checksum() != *checksum => {
                return Err(PgError::Migration {
                    version: *version,
                    detail: format!(
                        "migration {:04}_{} changed after it was applied to schema {schema}",
                        m.version, m.name
                    ),
                })
            }
            Some(_) => {}
        }
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        if done.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        tx.batch_execute(m.sql)
            .await
            .map_err(|e| PgError::Migration {
                version: m.version,
                detail: PgError::from_pg("migrate", e).to_string(),
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum()],
        )
        .await
        .map_err(err)?;
        applied.push(m.version);
    }
    Ok(applied)
}

/// Connects once (no pool) with the configuration's connect timeout and
/// applies pending migrations: the entry point for the CLI and the daemon.
pub async fn migrate_with_config(config: &PgConfig) -> Result<MigrationReport, PgError> {
    config.validate()?;
    let mut client = connect_once(config).await?;
    migrate(&mut client, &config.schema).await
}

/// Drops `schema` and everything in it (tests, and operators resetting a
/// scratch deployment).
pub async fn drop_schema(config: &PgConfig) -> Result<(), PgError> {
    config.validate()?;
    let client = connect_once(config).await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", config.schema))
        .await
        .map_err(|e| PgError::from_pg("drop schema", e))
}

/// One unpooled connection to the primary, its driver task spawned.
pub(crate) async fn connect_once(config: &PgConfig) -> Result<Client, PgError> {
    let mut pg: tokio_postgres::Config = config
        .url
        .parse()
        .map_err(|e| PgError::Config(format!("url: {e}")))?;
    pg.connect_timeout(config.connect_timeout());
    let (client, connection) = pg
        .connect(NoTls)
        .await
        .map_err(|e| PgError::from_pg("connect", e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres maintenance connection ended");
        }
    });
    Ok(client)
}

/// The newest version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_named_like_their_files() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "versions must increase");
            last = m.version;
            assert!(!m.sql.trim().is_empty());
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(
            files, expected,
            "every migration file must be listed in MIGRATIONS"
        );
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_ne!(lock_key("a"), lock_key("b"));
        assert_eq!(lock_key("rewards"), lock_key("rewards"));
    }
}
