//! Shared helpers of the PostgreSQL tests: each test gets its own schema
//! (`t_<random>`) on the shared `test` database, dropped when the guard goes
//! out of scope (also when the test panics).

#![allow(dead_code)]

use rewards_store::postgres::PgConfig;

/// The shared test database (override with `DATABASE_URL`).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A fresh, unique schema name.
pub fn unique_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// A configuration on a unique schema; the schema is dropped on drop.
pub struct TestSchema {
    /// The configuration to use.
    pub config: PgConfig,
}

impl TestSchema {
    /// A new unique schema (not created yet: migrations create it).
    pub fn new() -> TestSchema {
        TestSchema {
            config: PgConfig::new(database_url()).with_schema(unique_schema()),
        }
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        &self.config.schema
    }

    /// A plain client on the test database, for checks in SQL.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.config.url).await
    }
}

/// A plain client, its connection driven on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let config = self.config.clone();
        // A fresh runtime on its own thread: works from inside a tokio test
        // and while unwinding from a panic.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // Bounded: a connection the test leaked may still hold a
                // lock; then the schema is left behind with a warning
                // rather than hanging the test.
                let client = connect(&config.url).await;
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
                        config.schema
                    ))
                    .await
            })
        })
        .join();
        if let Ok(Err(e)) = done {
            eprintln!("could not drop test schema {}: {e}", self.config.schema);
        }
    }
}

/// A migrated store on its own schema. Fields drop in order: the store
/// (and its pools) first, then the schema.
pub struct PgTest {
    /// The store.
    pub store: std::sync::Arc<rewards_store::postgres::PgStore>,
    /// Its schema (dropped last).
    pub schema: TestSchema,
}

impl PgTest {
    /// A store with the default ledger settings.
    pub async fn new() -> PgTest {
        PgTest::with_ledger(rewards_core::ledger::LedgerConfig::default()).await
    }

    /// A store with the given ledger settings.
    pub async fn with_ledger(ledger: rewards_core::ledger::LedgerConfig) -> PgTest {
        let schema = TestSchema::new();
        PgTest::on(schema, ledger).await
    }

    /// A store on `schema` with its configuration.
    pub async fn on(schema: TestSchema, ledger: rewards_core::ledger::LedgerConfig) -> PgTest {
        let store = rewards_store::postgres::PgStore::connect(schema.config.clone(), ledger)
            .await
            .expect("connect the postgres store");
        PgTest {
            store: std::sync::Arc::new(store),
            schema,
        }
    }
}
