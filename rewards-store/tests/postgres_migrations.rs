//! Migrations against the real server: idempotent, safe when several
//! processes start together, and strict about changed or unknown versions.

mod postgres_support;

use postgres_support::TestSchema;
use rewards_store::postgres::migrate::{latest_version, migrate_with_config, MIGRATIONS};
use rewards_store::postgres::PgError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_twice_applies_once() {
    let t = TestSchema::new();
    let first = migrate_with_config(&t.config).await.unwrap();
    let every: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(every, vec![1, 2, 3, 4, 5]);
    assert_eq!(first.applied, every);
    assert_eq!(first.version, latest_version());
    let second = migrate_with_config(&t.config).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.version, latest_version());

    let client = t.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 ORDER BY 1",
            &[&t.schema()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for table in [
        "budgets",
        "counters",
        "events",
        "inbox",
        "lots",
        "members",
        "outbox",
        "postings",
        "rulesets",
        "schema_migrations",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_do_not_race() {
    let t = TestSchema::new();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let config = t.config.clone();
            tokio::spawn(async move { migrate_with_config(&config).await })
        })
        .collect();
    let mut applied = Vec::new();
    for run in runs {
        let report = run.await.unwrap().unwrap();
        applied.extend(report.applied);
    }
    assert_eq!(
        applied,
        vec![1, 2, 3, 4, 5],
        "exactly one process applies each migration"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_migration_is_refused() {
    let t = TestSchema::new();
    migrate_with_config(&t.config).await.unwrap();
    let client = t.client().await;
    client
        .execute(
            &format!(
                "UPDATE {}.schema_migrations SET checksum = 'edited' WHERE version = 1",
                t.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let err = migrate_with_config(&t.config).await.unwrap_err();
    assert!(
        matches!(err, PgError::Migration { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("changed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let t = TestSchema::new();
    migrate_with_config(&t.config).await.unwrap();
    let client = t.client().await;
    client
        .execute(
            &format!(
                "INSERT INTO {}.schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')",
                t.schema()
            ),
            &[],
        )
        .await
        .unwrap();
    let err = migrate_with_config(&t.config).await.unwrap_err();
    assert!(
        matches!(err, PgError::Migration { version: 9999, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("newer build"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_schema_name_is_a_config_error() {
    let mut t = TestSchema::new();
    t.config.schema = "x; DROP TABLE y".into();
    let err = migrate_with_config(&t.config).await.unwrap_err();
    assert!(matches!(err, PgError::Config(_)), "{err}");
    t.config.schema = super_safe_name();
}

/// A valid name so the guard's drop does nothing harmful.
fn super_safe_name() -> String {
    postgres_support::unique_schema()
}
