//! The core's conformance suite through `CachedStore<PgStore, RedisCache>`:
//! PostgreSQL as the store (its own schema on the shared `test` database),
//! Redis as the cache (the shared server, and the cluster). Afterwards the
//! cache equals the database for every member.

// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod postgres_support;
mod redis_support;

use std::sync::Arc;

use postgres_support::TestSchema;
use rewards_core::conformance;
use rewards_core::ledger::LedgerConfig;
use rewards_core::store::{BalanceCache, CachedMember, LedgerStore};
use rewards_core::MemberId;
use rewards_store::cached::{CacheBackend, CachedStore, CachedStoreConfig};
use rewards_store::postgres::PgStore;
use rewards_store::redis::{RedisCache, RedisCacheConfig};

use redis_support::*;

type Cached = CachedStore<PgStore, RedisCache>;

async fn cached(schema: &TestSchema, cache: RedisCacheConfig) -> Cached {
    let store = PgStore::connect(schema.config.clone(), LedgerConfig::default())
        .await
        .expect("connect the postgres store");
    CachedStore::new(
        store,
        RedisCache::new(cache).unwrap(),
        CachedStoreConfig {
            write_through_timeout: std::time::Duration::from_secs(2),
            read_timeout: std::time::Duration::from_secs(2),
            ..CachedStoreConfig::default()
        },
    )
}

/// Every member in the schema: its cache entry (after a read through the
/// wrapper) equals the database.
async fn cache_equals_database(schema: &TestSchema, cached: &Cached) {
    let client = schema.client().await;
    let rows = client
        .query(
            &format!("SELECT member_id FROM {}.members", schema.schema()),
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() > 20, "the suite made members");
    let capacity = cached.cache().recent_capacity();
    for row in rows {
        let m = MemberId::new(row.get::<_, String>(0)).unwrap();
        let Ok(b) = cached.store().balance(&m).await else {
            assert!(cached.balance(&m).await.is_err(), "{m}");
            continue;
        };
        assert_eq!(cached.balance(&m).await.unwrap(), b, "{m}");
        let recent = cached.store().recent(&m, capacity).await.unwrap();
        let entry = BalanceCache::get(cached.cache(), &m).await.unwrap();
        assert_eq!(
            entry,
            Some(CachedMember {
                member: m.clone(),
                version: b.version,
                balances: b.balances,
                tier: b.tier.clone(),
                recent,
            }),
            "{m}: cache != database"
        );
    }
    let health = cached.health();
    assert_eq!(health.errors, 0, "{health:?}");
    assert_eq!(health.breaker_counters.dirty, 0, "{health:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_postgres_with_redis() {
    let schema = TestSchema::new();
    let store = cached(&schema, single_config("pg-all")).await;
    let ttl = LedgerConfig::default().authorization_ttl();
    conformance::run_all(Arc::new(store.clone()), ttl).await;
    cache_equals_database(&schema, &store).await;
    store.cache().clear().await.unwrap();
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_all_postgres_with_redis_cluster() {
    let cluster = TestCluster::get();
    let schema = TestSchema::new();
    let store = cached(&schema, cluster_config(&cluster, "pg-all")).await;
    let ttl = LedgerConfig::default().authorization_ttl();
    conformance::run_all(Arc::new(store.clone()), ttl).await;
    cache_equals_database(&schema, &store).await;
    store.cache().clear().await.unwrap();
    drop(store);
}
