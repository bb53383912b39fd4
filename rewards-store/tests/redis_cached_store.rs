//! `CachedStore` over the shared Redis with failures injected between the
//! wrapper and the real cache: failed write-throughs, failed evictions, an
//! open breaker; and the operations around the cache: sweeps, warming,
//! invalidation and rebuild, health figures.

// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rewards_core::conformance::fixtures::{
    days, outcome, outcome_with_terms, purchase, year, Scope,
};
use rewards_core::error::Result;
use rewards_core::ledger::{LedgerConfig, TierReview};
use rewards_core::memory::MemoryStore;
use rewards_core::outcome::LotTerms;
use rewards_core::store::{BalanceCache, CachePut, CachedMember, LedgerStore};
use rewards_core::{Error, MemberId};
use rewards_store::breaker::{BreakerConfig, BreakerState};
use rewards_store::cached::{
    ApplyOutcome, CacheBackend, CachedStore, CachedStoreConfig, CommitUpdate, WarmPlan,
};
use rewards_store::redis::RedisCache;

use redis_support::*;

/// The real Redis cache, with switches that make some calls fail before
/// they reach it, and a count of the calls that did.
struct Flaky {
    inner: RedisCache,
    fail_apply: AtomicBool,
    fail_evict: AtomicBool,
    fail_all: AtomicBool,
    calls: AtomicU64,
}

impl Flaky {
    fn check(&self, switch: &AtomicBool) -> Result<()> {
        if self.fail_all.load(Ordering::SeqCst) || switch.load(Ordering::SeqCst) {
            return Err(Error::unavailable("injected failure", None));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

static NEVER: AtomicBool = AtomicBool::new(false);

#[async_trait]
impl BalanceCache for Flaky {
    async fn get(&self, member: &MemberId) -> Result<Option<CachedMember>> {
        self.check(&NEVER)?;
        BalanceCache::get(&self.inner, member).await
    }

    async fn put(&self, entry: &CachedMember) -> Result<CachePut> {
        self.check(&NEVER)?;
        BalanceCache::put(&self.inner, entry).await
    }

    async fn evict(&self, member: &MemberId, min_version: u64) -> Result<()> {
        self.check(&self.fail_evict)?;
        BalanceCache::evict(&self.inner, member, min_version).await
    }

    async fn clear(&self) -> Result<()> {
        self.check(&NEVER)?;
        BalanceCache::clear(&self.inner).await
    }
}

#[async_trait]
impl CacheBackend for Flaky {
    fn recent_capacity(&self) -> usize {
        self.inner.recent_capacity()
    }

    async fn ping(&self) -> Result<()> {
        self.check(&NEVER)?;
        CacheBackend::ping(&self.inner).await
    }

    async fn apply_commit(&self, update: &CommitUpdate<'_>) -> Result<ApplyOutcome> {
        self.check(&self.fail_apply)?;
        CacheBackend::apply_commit(&self.inner, update).await
    }
}

type Cached = CachedStore<MemoryStore, Flaky>;

fn setup(test: &str, threshold: u32) -> Cached {
    setup_with(test, threshold, false)
}

fn setup_with(test: &str, threshold: u32, auto_maintain: bool) -> Cached {
    let cache = Flaky {
        inner: RedisCache::new(single_config(test)).unwrap(),
        fail_apply: AtomicBool::new(false),
        fail_evict: AtomicBool::new(false),
        fail_all: AtomicBool::new(false),
        calls: AtomicU64::new(0),
    };
    CachedStore::new(
        MemoryStore::new(LedgerConfig::default()),
        cache,
        CachedStoreConfig {
            write_through_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            breaker: BreakerConfig {
                failure_threshold: threshold,
                cool_down: Duration::from_millis(100),
                max_dirty: 1000,
            },
            auto_maintain,
            ..CachedStoreConfig::default()
        },
    )
}

async fn buy(cached: &Cached, scope: &Scope, m: &MemberId, name: &str, points: i64) {
    let p = purchase(&scope.id(name), m, "10.00", year(2090));
    cached
        .append(&p, &outcome(&p, &[("base", points)]))
        .await
        .unwrap();
}

/// The cache entry straight from Redis.
async fn raw(cached: &Cached, m: &MemberId) -> Option<CachedMember> {
    BalanceCache::get(&cached.cache().inner, m).await.unwrap()
}

/// Straight from Redis: the member's entry, if any, equals the store.
async fn entry_matches_store(cached: &Cached, m: &MemberId) {
    let b = cached.store().balance(m).await.unwrap();
    let recent = cached
        .store()
        .recent(m, cached.cache().recent_capacity())
        .await
        .unwrap();
    if let Some(entry) = raw(cached, m).await {
        assert_eq!(entry.version, b.version, "{m}");
        assert_eq!(entry.balances, b.balances, "{m}");
        assert_eq!(entry.tier, b.tier, "{m}");
        assert_eq!(entry.recent, recent, "{m}");
    }
}

#[tokio::test]
async fn a_failed_write_through_evicts_with_a_guard() {
    let cached = setup("wt-fail", 5);
    let s = Scope::new("wt-fail");
    let m = s.member("m");
    buy(&cached, &s, &m, "p1", 10).await;
    let v1 = raw(&cached, &m).await.expect("written through");
    assert_eq!(v1.version, 1);

    cached.cache().fail_apply.store(true, Ordering::SeqCst);
    buy(&cached, &s, &m, "p2", 10).await;
    let health = cached.health();
    assert_eq!(health.write_through_failures, 1, "{health:?}");
    assert_eq!(health.evictions, 1, "{health:?}");
    assert_eq!(raw(&cached, &m).await, None, "evicted");
    // A reader that read the store before the commit comes late with its
    // snapshot: the guard refuses it.
    assert_eq!(
        BalanceCache::put(&cached.cache().inner, &v1).await.unwrap(),
        CachePut::Stale { current: 2 }
    );
    cached.cache().fail_apply.store(false, Ordering::SeqCst);
    let b = cached.balance(&m).await.unwrap();
    assert_eq!(b, cached.store().balance(&m).await.unwrap());
    assert_eq!(b.version, 2);
    assert_eq!(raw(&cached, &m).await.unwrap().version, 2, "filled");
    entry_matches_store(&cached, &m).await;
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn when_even_the_eviction_fails_the_member_is_dirty_until_repaired() {
    let cached = setup("dirty", 5);
    let s = Scope::new("dirty");
    let (m, other) = (s.member("m"), s.member("other"));
    buy(&cached, &s, &m, "p1", 10).await;
    buy(&cached, &s, &other, "o1", 10).await;

    cached.cache().fail_apply.store(true, Ordering::SeqCst);
    cached.cache().fail_evict.store(true, Ordering::SeqCst);
    buy(&cached, &s, &m, "p2", 10).await;
    cached.cache().fail_apply.store(false, Ordering::SeqCst);
    cached.cache().fail_evict.store(false, Ordering::SeqCst);
    let health = cached.health();
    assert_eq!(health.breaker, BreakerState::Closed, "two failures of five");
    assert_eq!(health.breaker_counters.dirty, 1, "{health:?}");
    // Redis still holds version 1; the member is read from the store.
    assert_eq!(raw(&cached, &m).await.unwrap().version, 1);
    assert_eq!(cached.balance(&m).await.unwrap().version, 2);
    assert_eq!(cached.health().bypassed_reads, 1);
    let hits = cached.health().hits;
    assert_eq!(cached.balance(&other).await.unwrap().version, 1);
    assert_eq!(cached.health().hits, hits + 1, "others are served as usual");

    // The repair evicts and rewrites it; then it is served again.
    assert_eq!(cached.maintain().await, BreakerState::Closed);
    let health = cached.health();
    assert_eq!(health.breaker_counters.dirty, 0, "{health:?}");
    assert_eq!(health.repaired, 1, "{health:?}");
    assert_eq!(raw(&cached, &m).await.unwrap().version, 2);
    entry_matches_store(&cached, &m).await;
    let hits = cached.health().hits;
    assert_eq!(cached.balance(&m).await.unwrap().version, 2);
    assert_eq!(cached.health().hits, hits + 1);
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn a_dirty_members_next_write_through_cleans_it() {
    let cached = setup("dirty-next", 5);
    let s = Scope::new("dirty-next");
    let m = s.member("m");
    buy(&cached, &s, &m, "p1", 10).await;
    cached.cache().fail_apply.store(true, Ordering::SeqCst);
    cached.cache().fail_evict.store(true, Ordering::SeqCst);
    buy(&cached, &s, &m, "p2", 10).await;
    cached.cache().fail_apply.store(false, Ordering::SeqCst);
    cached.cache().fail_evict.store(false, Ordering::SeqCst);
    assert_eq!(cached.health().breaker_counters.dirty, 1);
    assert_eq!(raw(&cached, &m).await.unwrap().version, 1, "stale in Redis");

    // Its next commit is written through (compare-and-set on the version):
    // the entry at 1 cannot be extended to 3, so it becomes a guard at 3,
    // which covers the missed commit 2: the member is clean, and the next
    // read fills it from the store.
    buy(&cached, &s, &m, "p3", 10).await;
    let health = cached.health();
    assert_eq!(health.breaker_counters.dirty, 0, "{health:?}");
    assert_eq!(health.write_through_guards, 1, "{health:?}");
    assert_eq!(raw(&cached, &m).await, None, "a guard reads as a miss");
    assert_eq!(cached.balance(&m).await.unwrap().version, 3);
    assert_eq!(raw(&cached, &m).await.unwrap().version, 3, "filled");
    entry_matches_store(&cached, &m).await;
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn the_cache_is_repaired_when_redis_returns_even_without_more_traffic() {
    let cached = setup_with("no-traffic", 3, true);
    let s = Scope::new("no-traffic");
    let members: Vec<MemberId> = (0..3).map(|i| s.member(&format!("m{i}"))).collect();
    for m in &members {
        buy(&cached, &s, m, &format!("{m}-a"), 5).await;
    }
    // Redis fails (but keeps its entries at version 1) while every member
    // is written again: the breaker opens, the members are dirty.
    cached.cache().fail_all.store(true, Ordering::SeqCst);
    for m in &members {
        buy(&cached, &s, m, &format!("{m}-b"), 5).await;
    }
    assert_eq!(cached.health().breaker, BreakerState::Open);
    cached.cache().fail_all.store(false, Ordering::SeqCst);
    for m in &members {
        assert_eq!(raw(&cached, m).await.unwrap().version, 1, "stale in Redis");
    }
    // No further write or read: the background task probes after the
    // cool-down and repairs.
    let mut closed = false;
    for _ in 0..250 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let h = cached.health();
        if h.breaker == BreakerState::Closed && h.breaker_counters.dirty == 0 {
            closed = true;
            break;
        }
    }
    assert!(closed, "{:?}", cached.health());
    for m in &members {
        entry_matches_store(&cached, m).await;
    }
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn settle_repairs_before_the_host_stops() {
    let cached = setup("settle", 1);
    let s = Scope::new("settle");
    let m = s.member("m");
    buy(&cached, &s, &m, "p1", 5).await;
    cached.cache().fail_all.store(true, Ordering::SeqCst);
    buy(&cached, &s, &m, "p2", 5).await;
    assert_eq!(cached.health().breaker, BreakerState::Open);
    // Still failing: settle gives up at its bound and says so.
    assert!(!cached.settle(Duration::from_millis(300)).await);
    cached.cache().fail_all.store(false, Ordering::SeqCst);
    assert!(cached.settle(Duration::from_secs(5)).await);
    assert_eq!(cached.health().breaker, BreakerState::Closed);
    entry_matches_store(&cached, &m).await;
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn an_open_breaker_makes_no_cache_calls_and_closes_after_repair() {
    let cached = setup("open", 3);
    let s = Scope::new("open");
    let members: Vec<MemberId> = (0..4).map(|i| s.member(&format!("m{i}"))).collect();
    for m in &members {
        buy(&cached, &s, m, &format!("{m}-a"), 5).await;
    }
    cached.cache().fail_all.store(true, Ordering::SeqCst);
    // Write-through and eviction fail for the first member: 2 failures;
    // the next write-through opens the breaker.
    buy(&cached, &s, &members[0], "x0", 5).await;
    assert_eq!(cached.health().breaker, BreakerState::Closed);
    buy(&cached, &s, &members[1], "x1", 5).await;
    assert_eq!(cached.health().breaker, BreakerState::Open);
    cached.cache().fail_all.store(false, Ordering::SeqCst);

    // Open: nothing reaches the cache; everything works from the store.
    let calls = cached.cache().calls();
    for (i, m) in members.iter().enumerate() {
        buy(&cached, &s, m, &format!("{m}-b"), 5).await;
        let b = cached.balance(m).await.unwrap();
        assert_eq!(b, cached.store().balance(m).await.unwrap());
        assert_eq!(b.version, if i < 2 { 3 } else { 2 });
    }
    assert_eq!(cached.cache().calls(), calls, "no cache call while open");
    let health = cached.health();
    assert_eq!(health.breaker_counters.dirty, 4, "{health:?}");
    assert_eq!(health.store_only_writes, 4, "{health:?}");

    // After the cool-down the probe repairs all four, then closes.
    let mut state = BreakerState::Open;
    for _ in 0..200 {
        state = cached.maintain().await;
        if state == BreakerState::Closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, BreakerState::Closed);
    let health = cached.health();
    assert_eq!(health.breaker_counters.dirty, 0, "{health:?}");
    assert_eq!(health.breaker_counters.opened, 1, "{health:?}");
    assert_eq!(health.breaker_counters.closed, 1, "{health:?}");
    for m in &members {
        entry_matches_store(&cached, m).await;
        assert!(
            raw(&cached, m).await.is_some(),
            "{m}: rewritten by the repair"
        );
    }
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn a_sweep_drops_the_whole_cache() {
    let cached = setup("sweep", 5);
    let s = Scope::new("sweep");
    let members: Vec<MemberId> = (0..3).map(|i| s.member(&format!("m{i}"))).collect();
    for m in &members {
        let p = purchase(&s.id(&format!("{m}-p")), m, "10.00", year(2090));
        let terms = LotTerms {
            available_at: None,
            expires_at: Some(year(2091)),
        };
        cached
            .append(&p, &outcome_with_terms(&p, &[("base", 10)], terms))
            .await
            .unwrap();
        assert!(raw(&cached, m).await.is_some());
    }
    let report = cached.expire_due(year(2092)).await.unwrap();
    assert_eq!(report.members, 3);
    assert_eq!(cached.health().clears, 1);
    for m in &members {
        assert_eq!(raw(&cached, m).await, None, "{m}: dropped");
        let b = cached.balance(m).await.unwrap();
        assert_eq!(b.balances.available.get(), 0, "{m}: expired");
        assert_eq!(b, cached.store().balance(m).await.unwrap());
        entry_matches_store(&cached, m).await;
    }
    // A sweep with nothing to do leaves the cache alone.
    cached.expire_due(year(2092)).await.unwrap();
    assert_eq!(cached.health().clears, 1);
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn warming_invalidation_rebuild_and_health() {
    let cached = setup("warm", 5);
    let s = Scope::new("warm");
    let members: Vec<MemberId> = (0..8).map(|i| s.member(&format!("m{i}"))).collect();
    for (i, m) in members.iter().enumerate() {
        let p = purchase(
            &s.id(&format!("{m}-p")),
            m,
            "10.00",
            days(year(2090), i as i64),
        );
        cached
            .append(&p, &outcome(&p, &[("base", 10)]))
            .await
            .unwrap();
    }
    let unknown = s.member("never-seen");
    cached.invalidate_all().await.unwrap();
    assert!(cached
        .cache()
        .inner
        .cached_members()
        .await
        .unwrap()
        .is_empty());
    assert_eq!(cached.health().last_rebuild, None);

    // The three most recently active members.
    let mut candidates = members.clone();
    candidates.push(unknown.clone());
    let report = cached
        .warm(WarmPlan::MostRecent(3), &candidates)
        .await
        .unwrap();
    assert_eq!(report.considered, 9);
    assert_eq!(report.filled, 3);
    assert_eq!(report.failed, 0);
    let mut warmed = cached.cache().inner.cached_members().await.unwrap();
    warmed.sort();
    let mut newest: Vec<String> = members[5..].iter().map(|m| m.to_string()).collect();
    newest.sort();
    assert_eq!(warmed, newest);
    assert!(cached.health().last_rebuild.is_some());

    // All of them (the three already warm are skipped as up to date).
    let report = cached.warm(WarmPlan::All, &members).await.unwrap();
    assert_eq!(report.filled + report.skipped, 8);
    for m in &members {
        entry_matches_store(&cached, m).await;
        assert!(raw(&cached, m).await.is_some());
    }

    // Hits and misses: 8 hits, then one miss after an invalidation.
    let before = cached.health();
    for m in &members {
        cached.balance(m).await.unwrap();
    }
    cached.invalidate(&members[0]).await.unwrap();
    assert_eq!(raw(&cached, &members[0]).await, None);
    cached.balance(&members[0]).await.unwrap();
    let after = cached.health();
    assert_eq!(after.hits - before.hits, 8);
    assert_eq!(after.misses - before.misses, 1);
    assert!(after.hit_ratio_bp > 0 && after.hit_ratio_bp <= 10_000);
    assert_eq!(
        u64::from(after.hit_ratio_bp),
        after.hits * 10_000 / (after.hits + after.misses)
    );
    assert!(
        raw(&cached, &members[0]).await.is_some(),
        "filled on the miss"
    );

    // Rebuild one member, then everything.
    cached.rebuild(&members[1]).await.unwrap();
    entry_matches_store(&cached, &members[1]).await;
    assert!(raw(&cached, &members[1]).await.is_some());
    let report = cached.rebuild_all(&members).await.unwrap();
    assert_eq!(report.filled, 8);
    for m in &members {
        entry_matches_store(&cached, m).await;
    }
    // An unknown member stays unknown, and is not cached.
    assert!(cached.balance(&unknown).await.is_err());
    assert_eq!(raw(&cached, &unknown).await, None);
    assert!(after.write_through_latency.count >= 8);
    assert!(after.write_through_latency.p50_us <= after.write_through_latency.max_us);
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test]
async fn a_tier_review_guards_the_entry() {
    let cached = setup("tier", 5);
    let s = Scope::new("tier");
    let m = s.member("m");
    buy(&cached, &s, &m, "p1", 10).await;
    let review = TierReview {
        member: m.clone(),
        tier: Arc::from("gold"),
        effective: year(2090),
        as_of: year(2090),
    };
    let after = cached.review_tier(&review).await.unwrap();
    assert_eq!(after.tier.as_deref(), Some("gold"));
    assert_eq!(raw(&cached, &m).await, None, "guarded at the new version");
    let b = cached.balance(&m).await.unwrap();
    assert_eq!(b, after);
    entry_matches_store(&cached, &m).await;
    assert_eq!(
        raw(&cached, &m).await.unwrap().tier.as_deref(),
        Some("gold")
    );
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_writes_through_every_member_in_order() {
    let cached = setup("batch", 5);
    let s = Scope::new("batch");
    let members: Vec<MemberId> = (0..6).map(|i| s.member(&format!("m{i}"))).collect();
    let mut items = Vec::new();
    for round in 0..4 {
        for m in &members {
            let p = purchase(&s.id(&format!("{m}-{round}")), m, "10.00", year(2090));
            let o = outcome(&p, &[("base", 1 + round)]);
            items.push((p, o));
        }
    }
    let results = cached.append_batch(&items).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
    let health = cached.health();
    assert_eq!(health.write_throughs, 24, "{health:?}");
    assert_eq!(health.write_through_guards, 0, "{health:?}");
    for m in &members {
        let entry = raw(&cached, m).await.expect("written through");
        assert_eq!(entry.version, 4, "{m}");
        assert_eq!(entry.balances.available.get(), 1 + 2 + 3 + 4, "{m}");
        entry_matches_store(&cached, m).await;
    }
    // The same batch again: duplicates, nothing written.
    cached.append_batch(&items).await.unwrap();
    assert_eq!(cached.health().write_throughs, 24);
    cached.cache().inner.clear().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_write_through_evicts_every_member_with_a_guard() {
    let cached = setup("batch-fail", 5);
    let s = Scope::new("batch-fail");
    let members: Vec<MemberId> = (0..4).map(|i| s.member(&format!("m{i}"))).collect();
    for m in &members {
        buy(&cached, &s, m, &format!("{m}-0"), 1).await;
    }
    let before: Vec<CachedMember> = {
        let mut v = Vec::new();
        for m in &members {
            v.push(raw(&cached, m).await.expect("written through"));
        }
        v
    };
    cached.cache().fail_apply.store(true, Ordering::SeqCst);
    let mut items = Vec::new();
    for round in 1..3 {
        for m in &members {
            let p = purchase(&s.id(&format!("{m}-{round}")), m, "10.00", year(2090));
            let o = outcome(&p, &[("base", 2)]);
            items.push((p, o));
        }
    }
    let results = cached.append_batch(&items).await.unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
    cached.cache().fail_apply.store(false, Ordering::SeqCst);
    let health = cached.health();
    assert_eq!(health.write_through_failures, 8, "{health:?}");
    assert_eq!(health.evictions, 4, "one guard per member: {health:?}");
    assert_eq!(health.breaker_counters.dirty, 0, "{health:?}");
    for (m, old) in members.iter().zip(&before) {
        assert_eq!(raw(&cached, m).await, None, "{m}: evicted, not stale");
        // The guard sits at the member's last commit of the batch.
        assert_eq!(
            BalanceCache::put(&cached.cache().inner, old).await.unwrap(),
            CachePut::Stale { current: 3 }
        );
        let b = cached.balance(m).await.unwrap();
        assert_eq!(b, cached.store().balance(m).await.unwrap());
        assert_eq!(b.version, 3);
        entry_matches_store(&cached, m).await;
    }
    cached.cache().inner.clear().await.unwrap();
}

/// The wrapper over the core's in-memory cache (the default `apply_commit`
/// built from `get`/`put`/`evict`): the whole conformance suite, then every
/// cached entry equals the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_cache_behind_the_wrapper_conforms() {
    use rewards_core::memory::MemoryCache;
    let cached = CachedStore::new(
        MemoryStore::new(LedgerConfig::default()),
        MemoryCache::new(),
        CachedStoreConfig::default(),
    );
    let ttl = LedgerConfig::default().authorization_ttl();
    rewards_core::conformance::run_all(Arc::new(cached.clone()), ttl).await;
    let mut entries = 0;
    for m in cached.store().members() {
        let Ok(b) = cached.store().balance(&m).await else {
            continue;
        };
        assert_eq!(cached.balance(&m).await.unwrap(), b, "{m}");
        let entry = BalanceCache::get(cached.cache(), &m)
            .await
            .unwrap()
            .unwrap();
        let recent = cached.store().recent(&m, 20).await.unwrap();
        assert_eq!(
            (entry.version, entry.balances, &entry.recent),
            (b.version, b.balances, &recent),
            "{m}"
        );
        entries += 1;
    }
    assert!(entries > 20);
    let health = cached.health();
    assert!(health.write_throughs > 0 && health.hits > 0, "{health:?}");
    assert_eq!(health.errors, 0);
}
