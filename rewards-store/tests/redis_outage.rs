//! Redis going away under `CachedStore<MemoryStore, RedisCache>`, on a
//! private `redis-server` owned by each test (never the shared one):
//!
//! - crashed (killed) mid-run, then restarted empty on the same port;
//! - frozen (SIGSTOP) mid-run with its data, then thawed (SIGCONT) still
//!   holding entries older than the commits made meanwhile.
//!
//! Each shows: no write is lost (the store has every commit), reads fall
//! back to the store while Redis is away, the breaker opens and closes
//! again, and once it has closed the cache equals the store for every
//! member; a stale entry is never served.

// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::process::Command;
use std::time::Duration;

use rewards_core::conformance::fixtures::{outcome, purchase, year, Scope};
use rewards_core::ledger::{LedgerConfig, Redemption};
use rewards_core::memory::MemoryStore;
use rewards_core::store::{BalanceCache, CachedMember, LedgerStore};
use rewards_core::{MemberId, Points};
use rewards_store::breaker::{BreakerConfig, BreakerState};
use rewards_store::cached::{CacheBackend, CachedStore, CachedStoreConfig};
use rewards_store::redis::RedisCache;

use redis_support::*;

type Cached = CachedStore<MemoryStore, RedisCache>;

fn cached_on(server: &PrivateRedis, test: &str, auto_maintain: bool) -> Cached {
    let mut config = private_config(server, test);
    config.op_timeout = Duration::from_millis(300);
    config.connect_timeout = Duration::from_millis(300);
    CachedStore::new(
        MemoryStore::new(LedgerConfig::default()),
        RedisCache::new(config).unwrap(),
        CachedStoreConfig {
            write_through_timeout: Duration::from_millis(400),
            read_timeout: Duration::from_millis(400),
            breaker: BreakerConfig {
                failure_threshold: 3,
                cool_down: Duration::from_millis(200),
                max_dirty: 10_000,
            },
            auto_maintain,
            ..CachedStoreConfig::default()
        },
    )
}

/// Appends `n` purchases of `points` each for every member; every append
/// must succeed whatever the cache does.
async fn earn(
    cached: &Cached,
    scope: &Scope,
    members: &[MemberId],
    round: &str,
    n: usize,
    points: i64,
) {
    for m in members {
        for i in 0..n {
            let p = purchase(
                &scope.id(&format!("{m}-{round}-{i}")),
                m,
                "10.00",
                year(2090),
            );
            let receipt = cached
                .append(&p, &outcome(&p, &[("base", points)]))
                .await
                .expect("a write never fails because of the cache");
            assert!(!receipt.duplicate);
        }
    }
}

/// Reads through the wrapper equal the store's own answers.
async fn reads_match_store(cached: &Cached, members: &[MemberId]) {
    for m in members {
        assert_eq!(
            cached.balance(m).await.unwrap(),
            cached.store().balance(m).await.unwrap(),
            "{m}"
        );
        assert_eq!(
            cached.recent(m, 10).await.unwrap(),
            cached.store().recent(m, 10).await.unwrap(),
            "{m}"
        );
    }
}

/// Every member's cache entry, read straight from Redis, equals the store
/// (after a read through the wrapper has filled any miss).
async fn cache_equals_store(cached: &Cached, members: &[MemberId]) {
    let capacity = cached.cache().recent_capacity();
    for m in members {
        cached.balance(m).await.unwrap();
        let b = cached.store().balance(m).await.unwrap();
        let expected = CachedMember {
            member: m.clone(),
            version: b.version,
            balances: b.balances,
            tier: b.tier,
            recent: cached.store().recent(m, capacity).await.unwrap(),
        };
        let entry = BalanceCache::get(cached.cache(), m).await.unwrap();
        assert_eq!(entry, Some(expected), "{m}: cache != store");
    }
}

/// The store holds every commit: `rounds` purchases of 5 points each, and
/// the version counts them.
async fn nothing_lost(cached: &Cached, members: &[MemberId], commits: u64, points: i64) {
    for m in members {
        let b = cached.store().balance(m).await.unwrap();
        assert_eq!(b.version, commits, "{m}");
        assert_eq!(b.balances.available, Points(points), "{m}");
        rewards_core::conformance::assert_conserved(cached.store(), m).await;
    }
}

/// Calls `maintain` until the breaker has closed again.
async fn until_closed(cached: &Cached) {
    for _ in 0..400 {
        if cached.maintain().await == BreakerState::Closed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the breaker did not close: {:?}", cached.health());
}

fn signal(server: &PrivateRedis, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_and_restart_loses_nothing_and_the_cache_recovers() {
    let mut server = PrivateRedis::start();
    let cached = cached_on(&server, "crash", false);
    let scope = Scope::new("crash");
    let members: Vec<MemberId> = (0..8).map(|i| scope.member(&format!("m{i}"))).collect();

    // Up: writes go through, reads hit.
    earn(&cached, &scope, &members, "a", 3, 5).await;
    reads_match_store(&cached, &members).await;
    cache_equals_store(&cached, &members).await;
    let before = cached.health();
    assert!(before.hits > 0 && before.write_throughs > 0, "{before:?}");
    assert_eq!(before.breaker, BreakerState::Closed);

    // Crash mid-run.
    server.stop();
    earn(&cached, &scope, &members, "b", 2, 5).await;
    let down = cached.health();
    assert_eq!(down.breaker, BreakerState::Open, "{down:?}");
    assert!(down.breaker_counters.opened >= 1, "{down:?}");
    assert!(down.breaker_counters.dirty >= 1, "{down:?}");
    assert!(down.store_only_writes >= 1, "{down:?}");
    // Reads fall back to the store, with the new commits.
    reads_match_store(&cached, &members).await;
    assert!(cached.health().bypassed_reads > down.bypassed_reads);
    nothing_lost(&cached, &members, 5, 25).await;

    // While Redis is still down, a probe fails and the breaker re-opens.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(cached.maintain().await, BreakerState::Open);
    assert!(cached.health().breaker_counters.failed_probes >= 1);

    // Back (empty): the probe repairs the dirty members, then closes.
    server.start_again();
    until_closed(&cached).await;
    let up = cached.health();
    assert_eq!(up.breaker_counters.dirty, 0, "{up:?}");
    assert!(up.breaker_counters.closed >= 1, "{up:?}");
    assert!(up.repaired >= 1, "{up:?}");

    // More writes go through again; the cache equals the store.
    earn(&cached, &scope, &members, "c", 1, 5).await;
    nothing_lost(&cached, &members, 6, 30).await;
    reads_match_store(&cached, &members).await;
    cache_equals_store(&cached, &members).await;
    cached.cache().clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_keeps_stale_entries_that_are_repaired_before_use() {
    let server = PrivateRedis::start();
    let cached = cached_on(&server, "freeze", false);
    let scope = Scope::new("freeze");
    let members: Vec<MemberId> = (0..6).map(|i| scope.member(&format!("m{i}"))).collect();
    earn(&cached, &scope, &members, "a", 2, 5).await;
    cache_equals_store(&cached, &members).await;

    // Frozen: every call times out; Redis keeps its (now aging) entries.
    signal(&server, "-STOP");
    earn(&cached, &scope, &members, "b", 2, 5).await;
    let redeem = Redemption {
        id: scope.id("redeem"),
        member: members[0].clone(),
        points: Points(7),
        time: year(2090),
        reference: None,
    };
    cached.redeem(&redeem).await.expect("redeem while frozen");
    assert_eq!(cached.health().breaker, BreakerState::Open);
    reads_match_store(&cached, &members).await;

    // Thawed: Redis answers again, holding the entries of before the
    // freeze. Until the repair has run, reads still come from the store.
    signal(&server, "-CONT");
    let mut stale_entries = 0;
    for m in &members {
        let stale = BalanceCache::get(cached.cache(), m).await.unwrap();
        let now = cached.store().balance(m).await.unwrap();
        if let Some(stale) = stale {
            assert!(stale.version < now.version, "{m}: the entry is older");
            stale_entries += 1;
        }
        assert_eq!(
            cached.balance(m).await.unwrap(),
            now,
            "{m}: never the stale entry"
        );
    }
    assert!(
        stale_entries >= 1,
        "Redis kept entries from before the freeze"
    );
    until_closed(&cached).await;
    assert_eq!(cached.health().breaker_counters.dirty, 0);
    cache_equals_store(&cached, &members).await;
    reads_match_store(&cached, &members).await;
    let m0 = cached.balance(&members[0]).await.unwrap();
    assert_eq!(m0.balances.available, Points(20 - 7));
    cached.cache().clear().await.unwrap();
}

/// The same crash with the background maintenance on: the breaker closes
/// by itself once Redis is back and something touches the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_probe_closes_the_breaker_by_itself() {
    let mut server = PrivateRedis::start();
    let cached = cached_on(&server, "auto", true);
    let scope = Scope::new("auto");
    let members: Vec<MemberId> = (0..4).map(|i| scope.member(&format!("m{i}"))).collect();
    earn(&cached, &scope, &members, "a", 1, 5).await;
    server.stop();
    earn(&cached, &scope, &members, "b", 2, 5).await;
    assert_ne!(cached.health().breaker, BreakerState::Closed);
    server.start_again();
    let mut closed = false;
    for _ in 0..400 {
        // Reads kick the maintenance task when a probe is due.
        reads_match_store(&cached, &members).await;
        if cached.health().breaker == BreakerState::Closed {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(closed, "{:?}", cached.health());
    nothing_lost(&cached, &members, 3, 15).await;
    cache_equals_store(&cached, &members).await;
    cached.cache().clear().await.unwrap();
}
