//! Failure classification and the read replica: a dead server is a clear,
//! quick `Unavailable` (the runtime pauses and retries on it), and
//! lag-tolerant reads go to the replica pool when one is configured.

mod postgres_support;

use std::time::Duration;

use postgres_support::{PgTest, TestSchema};
use rewards_core::conformance::fixtures::*;
use rewards_core::error::ErrorKind;
use rewards_core::ledger::LedgerConfig;
use rewards_core::store::LedgerStore;
use rewards_core::Points;
use rewards_store::postgres::{PgConfig, PgError, PgStore};

/// A loopback port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn dead_config() -> PgConfig {
    let mut config = PgConfig::new(format!(
        "postgres://postgres@127.0.0.1:{}/test",
        dead_port()
    ))
    .with_schema("t_dead");
    config.connect_timeout_ms = 500;
    config.pool_wait_timeout_ms = 500;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_at_start_is_unavailable() {
    // Bounded so that a regression shows as a failure, not a hung suite.
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        PgStore::connect(dead_config(), LedgerConfig::default()),
    )
    .await
    .expect("connect gives up by itself");
    let err = result.expect_err("nothing listens there");
    assert!(err.is_transient(), "{err}");
    assert!(matches!(err, PgError::Unavailable { .. }), "{err}");
    let core: rewards_core::error::Error = err.into();
    assert_eq!(core.kind(), ErrorKind::Unavailable);
    assert!(core.to_string().contains("unavailable"), "{core}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_later_is_unavailable_per_call() {
    let mut config = dead_config();
    config.migrate_on_start = false;
    let store = PgStore::connect(config, LedgerConfig::default())
        .await
        .expect("pools are lazy");
    let s = Scope::new("dead");
    let p = purchase(&s.id("p"), &s.member("m"), "1.00", year(2090));
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        store.append(&p, &outcome(&p, &[("base", 1)])),
    )
    .await
    .expect("append gives up by itself")
    .expect_err("nothing listens there");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        store.append_batch(&[(p.clone(), outcome(&p, &[("base", 1)]))]),
    )
    .await
    .expect("batch gives up by itself")
    .expect_err("a transient failure fails the whole batch call");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = store.balance(&s.member("m")).await.expect_err("down");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_tolerant_reads_go_to_the_replica() {
    // A replica on the same server: reads work and see the writes.
    let schema = TestSchema::new();
    let config = schema
        .config
        .clone()
        .with_replica(schema.config.url.clone());
    let t = PgTest::on(
        TestSchema {
            config: config.clone(),
        },
        LedgerConfig::default(),
    )
    .await;
    std::mem::forget(schema); // the same schema: dropped once, by `t`
    let s = Scope::new("replica");
    let m = s.member("m");
    let p = purchase(&s.id("p"), &m, "5.00", year(2090));
    t.store
        .append(&p, &outcome(&p, &[("base", 5)]))
        .await
        .unwrap();
    assert_eq!(
        t.store.balance(&m).await.unwrap().balances.available,
        Points(5)
    );
    assert_eq!(t.store.recent(&m, 10).await.unwrap().len(), 1);

    // A dead replica: writes still go to the primary, the lag-tolerant
    // reads fail over to nothing (they are the replica's), the reads
    // evaluation needs stay on the primary.
    let mut broken = config.clone();
    broken.replica_url = Some(dead_config().url);
    broken.connect_timeout_ms = 500;
    broken.pool_wait_timeout_ms = 500;
    let store = PgStore::connect(broken, LedgerConfig::default())
        .await
        .unwrap();
    let q = purchase(&s.id("q"), &m, "2.00", year(2090));
    let r = store
        .append(&q, &outcome(&q, &[("base", 2)]))
        .await
        .unwrap();
    assert_eq!(r.balances.available, Points(7));
    assert_eq!(
        store.balance(&m).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(
        store.history(&m, 0, 10).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(store.member_view(&m, &[]).await.unwrap().balance, Points(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_plan_every_statement_and_time_it_out() {
    // Generic plans made on a fresh schema went on being used as the
    // tables grew (seconds per view read); the pool turns them off.
    let t = PgTest::new().await;
    let client = t.store.primary_pool().get().await.expect("connection");
    let mode: String = client
        .query_one("SHOW plan_cache_mode", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(mode, "force_custom_plan");
    let timeout: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(
        timeout, "30s",
        "the configured statement timeout still applies"
    );
}
