//! The write-through cache in front of a ledger store: [`CachedStore`].
//!
//! `CachedStore<S, C>` is itself a [`LedgerStore`]. Every write goes to the
//! store `S` first; once the store has committed, the new balances, tier
//! and recent entry are written through to the cache `C` (one round trip,
//! bounded by a short timeout). The store's answer is returned whatever
//! happens in the cache: a cache failure never loses, fails or blocks a
//! write for longer than that timeout.
//!
//! Reads of balances and recent entries are served from the cache; a miss
//! reads the store and fills the cache. Everything else goes to the store.
//!
//! # Never older than an acknowledged commit
//!
//! - Every cache value carries the member's version; writes and fills are
//!   compare-and-set on it (see [`crate::redis::scripts`]), so a late write
//!   or a slow fill of an older state is refused.
//! - A failed write-through evicts the member's entry with a guard at the
//!   commit's version (a fill from an older snapshot is then refused). If
//!   even that fails, the member is recorded as dirty before the write
//!   returns: reads of a dirty member go to the store, and the cache is not
//!   written for it, until a repair has evicted its entry.
//! - The [circuit breaker](crate::breaker) opens after consecutive
//!   failures: then no cache call is made, reads go to the store and every
//!   member written is recorded as dirty. After the cool-down, a probe
//!   checks the cache, repairs every dirty member, and only then closes.
//! - Dropping the whole cache (sweeps, whose reports do not say which
//!   members changed, and [`CachedStore::invalidate_all`]) takes a fence
//!   that waits for in-flight fills and refuses fills that read the store
//!   before it.
//!
//! Maintenance (probe, repair) runs in a background task spawned when it is
//! due, or when the host calls [`CachedStore::maintain`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rewards_core::error::{ErrorKind, Result};
use rewards_core::ledger::{
    Adjustment, AuditEvent, Balances, MemberBalance, Posting, Receipt, RecentEntry,
    ReconcileReport, Redemption, SweepReport, TierReview,
};
use rewards_core::memory::MemoryCache;
use rewards_core::store::{
    BalanceCache, CachePut, CachedMember, OutboxEvent, TierView, MAX_PAGE_ROWS,
};
use rewards_core::{
    CounterKey, LedgerStore, MemberId, MemberProfile, MemberView, Outcome, Points, Transaction,
};
use tokio::sync::RwLock;
use tokio::time::Instant;

use crate::breaker::{BreakerConfig, BreakerCounters, BreakerState, CircuitBreaker, WriteRoute};

/// The cache-side effect of one commit, for [`CacheBackend::apply_commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitUpdate<'a> {
    /// The member.
    pub member: &'a MemberId,
    /// The member's version after the commit.
    pub version: u64,
    /// The member's version before it.
    pub base_version: u64,
    /// Balances after it.
    pub balances: Balances,
    /// Tier after it.
    pub tier: Option<&'a str>,
    /// The entries it added to the member's recent list, oldest first.
    pub new_recent: &'a [RecentEntry],
}

/// What [`CacheBackend::apply_commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The entry now reflects the commit.
    Written,
    /// The cache already held this version or a newer one.
    Stale {
        /// The version it holds.
        current: u64,
    },
    /// The entry could not be extended (a miss, a tombstone, a gap): it was
    /// replaced by a guard at the commit's version; the next read fills it.
    Guarded,
}

/// What the write-through wrapper needs from a cache beyond
/// [`BalanceCache`]: applying one commit in one step, and a health check.
#[async_trait]
pub trait CacheBackend: BalanceCache {
    /// How many recent entries an entry keeps.
    fn recent_capacity(&self) -> usize;

    /// Checks that the cache answers.
    async fn ping(&self) -> Result<()>;

    /// Applies one commit: extends the cached entry when it is complete at
    /// exactly `update.base_version`, refuses when the cache holds this
    /// version or a newer one, and otherwise guards the member at
    /// `update.version`. The default does it with `get`, `put` and `evict`;
    /// the Redis cache does it in one script.
    async fn apply_commit(&self, update: &CommitUpdate<'_>) -> Result<ApplyOutcome> {
        let current = self.get(update.member).await?;
        let recent = match current {
            Some(entry) if entry.version >= update.version => {
                return Ok(ApplyOutcome::Stale {
                    current: entry.version,
                })
            }
            Some(entry) if entry.version == update.base_version => Some(entry.recent),
            None if update.base_version == 0 => Some(Vec::new()),
            _ => None,
        };
        let Some(mut older) = recent else {
            self.evict(update.member, update.version).await?;
            return Ok(ApplyOutcome::Guarded);
        };
        let mut recent: Vec<RecentEntry> = update.new_recent.iter().rev().cloned().collect();
        recent.append(&mut older);
        recent.truncate(self.recent_capacity());
        let put = self
            .put(&CachedMember {
                member: update.member.clone(),
                version: update.version,
                balances: update.balances,
                tier: update.tier.map(Arc::from),
                recent,
            })
            .await?;
        Ok(match put {
            CachePut::Written => ApplyOutcome::Written,
            CachePut::Stale { current } => ApplyOutcome::Stale { current },
        })
    }

    /// [`CacheBackend::apply_commit`] for several commits, applied in order
    /// (a member may appear more than once: each update is checked against
    /// what the previous one left), with one outcome per update. The Redis
    /// cache sends them in one pipelined round trip; the default applies
    /// one at a time.
    async fn apply_commits(&self, updates: &[CommitUpdate<'_>]) -> Result<Vec<ApplyOutcome>> {
        let mut done = Vec::with_capacity(updates.len());
        for update in updates {
            done.push(self.apply_commit(update).await?);
        }
        Ok(done)
    }

    /// [`BalanceCache::evict`] for several `(member, min_version)` pairs
    /// (the Redis cache: one pipelined round trip); the default evicts one
    /// at a time.
    async fn evict_many(&self, members: &[(&MemberId, u64)]) -> Result<()> {
        for (member, min_version) in members {
            self.evict(member, *min_version).await?;
        }
        Ok(())
    }
}

/// How many recent entries [`CachedStore`] keeps per member in the core's
/// in-memory cache.
pub const MEMORY_CACHE_RECENT: usize = 20;

/// The core's in-memory cache behind the wrapper (a single-process
/// deployment, tests): commits are applied with the default `get`/`put`.
#[async_trait]
impl CacheBackend for MemoryCache {
    fn recent_capacity(&self) -> usize {
        MEMORY_CACHE_RECENT
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// Settings of the write-through wrapper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedStoreConfig {
    /// Bound on one write-through (and on the eviction after a failed one).
    pub write_through_timeout: Duration,
    /// Added to `write_through_timeout` per update of a batch written
    /// through in one call (after `append_batch`): the bound of a batch of
    /// `n` updates is `write_through_timeout + n * write_through_per_item`.
    pub write_through_per_item: Duration,
    /// Bound on one cache read or fill.
    pub read_timeout: Duration,
    /// Bound on clearing the whole cache.
    pub clear_timeout: Duration,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Dirty members repaired per round of a repair.
    pub repair_batch: usize,
    /// Spawn the probe and the repair in a background task when due
    /// (otherwise only [`CachedStore::maintain`] runs them).
    pub auto_maintain: bool,
}

impl Default for CachedStoreConfig {
    fn default() -> Self {
        CachedStoreConfig {
            write_through_timeout: Duration::from_millis(50),
            write_through_per_item: Duration::from_micros(100),
            read_timeout: Duration::from_millis(50),
            clear_timeout: Duration::from_secs(30),
            breaker: BreakerConfig::default(),
            repair_batch: 1000,
            auto_maintain: true,
        }
    }
}

/// Which members to warm at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmPlan {
    /// Every member given.
    All,
    /// The `n` members given whose latest entry is the most recent.
    MostRecent(usize),
}

/// What a warming did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmReport {
    /// Members considered.
    pub considered: u64,
    /// Entries written to the cache.
    pub filled: u64,
    /// Members skipped: unknown to the store, or the cache already held
    /// them as new.
    pub skipped: u64,
    /// Members whose fill failed (cache or store error).
    pub failed: u64,
}

/// Write-through latency summary (log2 buckets: each figure is an upper
/// bound within a factor of two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Write-throughs measured.
    pub count: u64,
    /// Median, in microseconds.
    pub p50_us: u64,
    /// 95th percentile, in microseconds.
    pub p95_us: u64,
    /// 99th percentile, in microseconds.
    pub p99_us: u64,
    /// Slowest, in microseconds (exact).
    pub max_us: u64,
}

/// Cache-health figures for the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHealth {
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads the cache did not hold (served by the store, then filled).
    pub misses: u64,
    /// `hits / (hits + misses)` in basis points (0 to 10 000; 0 before any read).
    pub hit_ratio_bp: u32,
    /// Reads sent to the store without asking the cache (breaker not
    /// closed, member dirty).
    pub bypassed_reads: u64,
    /// Failed cache calls (errors and timeouts).
    pub errors: u64,
    /// Of which timeouts.
    pub timeouts: u64,
    /// Write-throughs applied.
    pub write_throughs: u64,
    /// Write-throughs that replaced the entry by a guard (a miss or a gap).
    pub write_through_guards: u64,
    /// Write-throughs and fills refused because the cache held a newer
    /// version.
    pub stale_refused: u64,
    /// Write-throughs that failed.
    pub write_through_failures: u64,
    /// Writes that skipped the cache (breaker not closed, member dirty).
    pub store_only_writes: u64,
    /// Entries filled from the store (misses, warming, repair).
    pub fills: u64,
    /// Evictions done (failed write-throughs, invalidations, repairs).
    pub evictions: u64,
    /// Dirty members repaired.
    pub repaired: u64,
    /// Whole-cache clears.
    pub clears: u64,
    /// Write-through latency.
    pub write_through_latency: LatencySummary,
    /// Breaker state.
    pub breaker: BreakerState,
    /// Breaker counters and dirty-set size.
    pub breaker_counters: BreakerCounters,
    /// When the last rebuild or warming finished.
    pub last_rebuild: Option<DateTime<Utc>>,
}

// 32 log2 buckets reach 2^31 µs (35 minutes); `Default` exists for arrays up to 32.
const LATENCY_BUCKETS: usize = 32;

#[derive(Debug, Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    bypassed_reads: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    write_throughs: AtomicU64,
    write_through_guards: AtomicU64,
    stale_refused: AtomicU64,
    write_through_failures: AtomicU64,
    store_only_writes: AtomicU64,
    fills: AtomicU64,
    evictions: AtomicU64,
    repaired: AtomicU64,
    clears: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS],
    latency_max_us: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Stats {
    fn record_latency(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Bucket b holds latencies below 2^b µs.
        let bucket = (u64::BITS - us.leading_zeros()) as usize;
        bump(&self.latency_buckets[bucket.min(LATENCY_BUCKETS - 1)]);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn latency(&self) -> LatencySummary {
        let counts: Vec<u64> = self.latency_buckets.iter().map(get).collect();
        let count: u64 = counts.iter().sum();
        let max_us = get(&self.latency_max_us);
        let percentile = |per_mille: u64| -> u64 {
            if count == 0 {
                return 0;
            }
            let rank = (count * per_mille).div_ceil(1000).max(1);
            let mut seen = 0;
            for (bucket, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let upper = if bucket == 0 { 0 } else { (1u64 << bucket) - 1 };
                    return upper.min(max_us);
                }
            }
            max_us
        };
        LatencySummary {
            count,
            p50_us: percentile(500),
            p95_us: percentile(950),
            p99_us: percentile(990),
            max_us,
        }
    }
}

/// A cache call's failure, already counted.
struct CacheFailed;

/// What a cache lookup found.
enum Lookup {
    /// The entry.
    Hit(CachedMember),
    /// Nothing: read the store and fill.
    Miss,
    /// The cache may not be used (breaker, dirty member, error): read the
    /// store only.
    Bypass,
}

struct Inner<S, C> {
    store: S,
    cache: C,
    config: CachedStoreConfig,
    breaker: CircuitBreaker,
    stats: Stats,
    /// Fill fence: fills hold it shared; dropping the whole cache holds it
    /// exclusively and bumps the epoch, refusing fills that read the store
    /// before.
    fence: RwLock<u64>,
    /// A maintenance pass (probe, repair) is running.
    maintaining: AtomicBool,
    /// The background maintenance task exists.
    maintainer: AtomicBool,
    last_rebuild: Mutex<Option<DateTime<Utc>>>,
}

/// A [`LedgerStore`] with a write-through [`CacheBackend`] in front of its
/// balance and recent-entry reads. See the module documentation.
pub struct CachedStore<S, C> {
    inner: Arc<Inner<S, C>>,
}

impl<S, C> Clone for CachedStore<S, C> {
    fn clone(&self) -> Self {
        CachedStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, C> std::fmt::Debug for CachedStore<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

impl<S, C> CachedStore<S, C>
where
    S: LedgerStore + 'static,
    C: CacheBackend + 'static,
{
    /// Puts `cache` in front of `store`.
    pub fn new(store: S, cache: C, config: CachedStoreConfig) -> CachedStore<S, C> {
        CachedStore {
            inner: Arc::new(Inner {
                store,
                cache,
                breaker: CircuitBreaker::new(config.breaker.clone()),
                config,
                stats: Stats::default(),
                fence: RwLock::new(0),
                maintaining: AtomicBool::new(false),
                maintainer: AtomicBool::new(false),
                last_rebuild: Mutex::new(None),
            }),
        }
    }

    /// The store behind.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The cache in front.
    pub fn cache(&self) -> &C {
        &self.inner.cache
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// The cache-health figures.
    pub fn health(&self) -> CacheHealth {
        let s = &self.inner.stats;
        let (hits, misses) = (get(&s.hits), get(&s.misses));
        let hit_ratio_bp = match hits.checked_add(misses) {
            Some(0) | None => 0,
            Some(total) => u32::try_from(hits.saturating_mul(10_000) / total).unwrap_or(10_000),
        };
        CacheHealth {
            hits,
            misses,
            hit_ratio_bp,
            bypassed_reads: get(&s.bypassed_reads),
            errors: get(&s.errors),
            timeouts: get(&s.timeouts),
            write_throughs: get(&s.write_throughs),
            write_through_guards: get(&s.write_through_guards),
            stale_refused: get(&s.stale_refused),
            write_through_failures: get(&s.write_through_failures),
            store_only_writes: get(&s.store_only_writes),
            fills: get(&s.fills),
            evictions: get(&s.evictions),
            repaired: get(&s.repaired),
            clears: get(&s.clears),
            write_through_latency: s.latency(),
            breaker: self.inner.breaker.state(),
            breaker_counters: self.inner.breaker.counters(),
            last_rebuild: *self
                .inner
                .last_rebuild
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Runs one cache call bounded by `bound`, counting its failure and
    /// telling the breaker.
    async fn call<T>(
        &self,
        bound: Duration,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> std::result::Result<T, CacheFailed> {
        let stats = &self.inner.stats;
        match tokio::time::timeout(bound, fut).await {
            Ok(Ok(value)) => {
                self.inner.breaker.record_success();
                Ok(value)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cache call failed");
                bump(&stats.errors);
                self.on_failure();
                Err(CacheFailed)
            }
            Err(_) => {
                bump(&stats.errors);
                bump(&stats.timeouts);
                self.on_failure();
                Err(CacheFailed)
            }
        }
    }

    fn on_failure(&self) {
        if self.inner.breaker.record_failure() {
            tracing::warn!("cache circuit breaker opened: reads go to the store");
        }
    }

    /// Spawns the maintenance task when the breaker is not closed or a
    /// member is dirty (and none is running). The task keeps going, probing
    /// after each cool-down and repairing, until the breaker is closed and
    /// nothing is dirty, so the cache is repaired when Redis returns even if
    /// no more traffic comes. It holds only a weak reference: dropping the
    /// last handle of the store ends it.
    fn kick(&self) {
        if !self.inner.config.auto_maintain || !self.needs_maintenance() {
            return;
        }
        if self.inner.maintainer.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.maintainer.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let this = CachedStore { inner };
                this.maintain().await;
                if !this.needs_maintenance() {
                    this.inner.maintainer.store(false, Ordering::Release);
                    // A dirtying that raced with the check kicks again.
                    if this.needs_maintenance() {
                        this.kick();
                    }
                    return;
                }
                let pause = this.maintenance_pause();
                drop(this);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Whether a probe or a repair is outstanding.
    fn needs_maintenance(&self) -> bool {
        let breaker = &self.inner.breaker;
        breaker.state() != BreakerState::Closed || breaker.has_dirty()
    }

    /// How long the maintenance task waits before its next try: until the
    /// probe is due when the breaker is open, else a short pause before
    /// repairing again.
    fn maintenance_pause(&self) -> Duration {
        const RETRY: Duration = Duration::from_millis(100);
        match self.inner.breaker.probe_due_at() {
            Some(due) => due.saturating_duration_since(Instant::now()).max(RETRY),
            None => RETRY,
        }
    }

    /// Repairs the cache before the host stops: runs maintenance (probing
    /// after each cool-down) until the breaker is closed and no member is
    /// dirty, or `within` has passed. Returns whether the cache is clean.
    /// A dirty member left behind keeps a possibly stale entry in Redis
    /// for other readers; a host that starts again should clear the cache
    /// ([`CachedStore::invalidate_all`]) before serving from it.
    pub async fn settle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            self.maintain().await;
            if !self.needs_maintenance() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(self.maintenance_pause().min(deadline - now)).await;
        }
    }

    /// Runs the probe (when the breaker is open and its cool-down passed)
    /// and repairs dirty members. Returns the breaker state afterwards.
    /// Safe to call at any time, e.g. from a timer.
    pub async fn maintain(&self) -> BreakerState {
        while self.inner.maintaining.swap(true, Ordering::AcqRel) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.maintain_now().await;
        self.inner.maintaining.store(false, Ordering::Release);
        self.inner.breaker.state()
    }

    async fn maintain_now(&self) {
        let breaker = &self.inner.breaker;
        if breaker.try_begin_probe() {
            tracing::info!("cache circuit breaker half-open: probing");
            let up = self
                .call(self.inner.config.read_timeout, self.inner.cache.ping())
                .await
                .is_ok();
            if !up {
                breaker.probe_failed();
                return;
            }
            breaker.probe_reached();
            // Repair, then close under the breaker's lock; a member dirtied
            // meanwhile keeps it half-open for another round.
            for _ in 0..100 {
                if self.repair_dirty().await.is_err() {
                    breaker.probe_failed();
                    tracing::warn!("cache repair failed: circuit breaker open again");
                    return;
                }
                if breaker.try_close() {
                    tracing::info!("cache repaired: circuit breaker closed");
                    return;
                }
            }
            breaker.probe_failed();
        } else if breaker.state() == BreakerState::Closed && breaker.has_dirty() {
            let _ = self.repair_dirty().await;
        }
    }

    /// Repairs what the breaker holds as dirty: evicts each member's entry
    /// with a guard at the store's current version, then refills it.
    async fn repair_dirty(&self) -> std::result::Result<(), CacheFailed> {
        let breaker = &self.inner.breaker;
        loop {
            let batch = breaker.take_repair_batch(self.inner.config.repair_batch.max(1));
            if batch.is_empty() {
                return Ok(());
            }
            if batch.clear_all {
                self.clear_fenced().await?;
                breaker.cleared_all(batch.up_to_mark);
            }
            for (member, mark) in &batch.members {
                let version = match self.inner.store.balance(member).await {
                    Ok(b) => b.version,
                    Err(e) if e.kind() == ErrorKind::NotFound => 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "store read failed during cache repair");
                        return Err(CacheFailed);
                    }
                };
                let bound = self.inner.config.write_through_timeout;
                self.call(bound, self.inner.cache.evict(member, version))
                    .await?;
                bump(&self.inner.stats.evictions);
                breaker.repaired(member, *mark, version);
                bump(&self.inner.stats.repaired);
                if version > 0 {
                    // Rewrite from the store so the cache is warm again; a
                    // failure here only leaves a miss behind the guard.
                    let _ = self.fill(member, true).await;
                }
            }
        }
    }

    /// Drops the whole cache behind the fence (waiting for in-flight fills
    /// and refusing those that read the store before).
    async fn clear_fenced(&self) -> std::result::Result<(), CacheFailed> {
        let mut epoch = self.inner.fence.write().await;
        *epoch += 1;
        self.call(self.inner.config.clear_timeout, self.inner.cache.clear())
            .await?;
        bump(&self.inner.stats.clears);
        Ok(())
    }

    /// Reads `member`'s balance and recent entries from the store and fills
    /// the cache with them. `None` when the store does not know the member
    /// (or its two reads were not of one version); the fill itself is best
    /// effort. `repairing` lets the repair fill while the breaker is not
    /// yet closed.
    async fn fill(
        &self,
        member: &MemberId,
        repairing: bool,
    ) -> Result<Option<(MemberBalance, Vec<RecentEntry>)>> {
        let ticket = *self.inner.fence.read().await;
        let balance = match self.inner.store.balance(member).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let capacity = self.inner.cache.recent_capacity().min(MAX_PAGE_ROWS);
        let recent = self.inner.store.recent(member, capacity).await?;
        let newest = recent.first().map_or(0, |r| r.version);
        if newest != balance.version {
            // A write landed between the two reads: do not fill.
            return Ok(None);
        }
        let entry = CachedMember {
            member: member.clone(),
            version: balance.version,
            balances: balance.balances,
            tier: balance.tier.clone(),
            recent: recent.clone(),
        };
        let fence = self.inner.fence.read().await;
        let allowed = *fence == ticket && (repairing || self.inner.breaker.cache_readable(member));
        if allowed {
            let bound = self.inner.config.read_timeout;
            match self.call(bound, self.inner.cache.put(&entry)).await {
                Ok(CachePut::Written) => bump(&self.inner.stats.fills),
                Ok(CachePut::Stale { .. }) => bump(&self.inner.stats.stale_refused),
                Err(CacheFailed) => {}
            }
        }
        drop(fence);
        Ok(Some((balance, recent)))
    }

    /// Looks `member` up in the cache, when the cache may serve it.
    async fn lookup(&self, member: &MemberId) -> Lookup {
        self.kick();
        if !self.inner.breaker.cache_readable(member) {
            bump(&self.inner.stats.bypassed_reads);
            return Lookup::Bypass;
        }
        let bound = self.inner.config.read_timeout;
        match self.call(bound, self.inner.cache.get(member)).await {
            Ok(Some(entry)) => {
                bump(&self.inner.stats.hits);
                Lookup::Hit(entry)
            }
            Ok(None) => {
                bump(&self.inner.stats.misses);
                Lookup::Miss
            }
            Err(CacheFailed) => Lookup::Bypass,
        }
    }

    /// Writes one commit through (or records its member as dirty).
    async fn write_through(&self, update: CommitUpdate<'_>) {
        self.kick();
        let stats = &self.inner.stats;
        if self
            .inner
            .breaker
            .route_write(update.member, update.version)
            == WriteRoute::StoreOnly
        {
            bump(&stats.store_only_writes);
            return;
        }
        let bound = self.inner.config.write_through_timeout;
        let started = Instant::now();
        match self
            .call(bound, self.inner.cache.apply_commit(&update))
            .await
        {
            Ok(outcome) => {
                stats.record_latency(started.elapsed());
                self.inner.breaker.covered(update.member, update.version);
                match outcome {
                    ApplyOutcome::Written => bump(&stats.write_throughs),
                    ApplyOutcome::Guarded => bump(&stats.write_through_guards),
                    ApplyOutcome::Stale { .. } => bump(&stats.stale_refused),
                }
            }
            Err(CacheFailed) => {
                bump(&stats.write_through_failures);
                self.evict_or_mark(update.member, update.version).await;
            }
        }
    }

    /// Writes a batch's commits through in one cache call: each member's
    /// consecutive commits merged into one update (balances and tier of the
    /// last, every new recent entry), members the cache may not be written
    /// for recorded as dirty. If the call fails (a timeout: it may still
    /// land later, and the version guard then refuses it), every member it
    /// carried is evicted with a guard at its commit's version in one more
    /// call, as after one failed commit; if that fails too, they are
    /// recorded as dirty (reads of them go to the store until the repair
    /// has evicted their entries).
    async fn write_through_batch(
        &self,
        items: &[(Transaction, Outcome)],
        results: &[Result<Receipt>],
    ) {
        struct Run {
            member: MemberId,
            base: u64,
            version: u64,
            balances: Balances,
            tier: Option<Arc<str>>,
            recent: Vec<RecentEntry>,
        }
        self.kick();
        let stats = &self.inner.stats;
        let mut runs: Vec<Run> = Vec::new();
        // The index in `runs` of each member's latest run.
        let mut last_run: HashMap<&MemberId, usize> = HashMap::new();
        for ((tx, _), result) in items.iter().zip(results) {
            let Ok(receipt) = result else { continue };
            if receipt.duplicate {
                continue;
            }
            let entry = RecentEntry {
                id: receipt.id.clone(),
                kind: receipt.kind,
                time: tx.time,
                delta: receipt.delta,
                version: receipt.version,
            };
            if let Some(&i) = last_run.get(&receipt.member) {
                let run = &mut runs[i];
                if run.version.checked_add(1) == Some(receipt.version) {
                    run.version = receipt.version;
                    run.balances = receipt.balances;
                    run.tier = receipt.tier.clone();
                    run.recent.push(entry);
                    continue;
                }
            }
            last_run.insert(&receipt.member, runs.len());
            runs.push(Run {
                member: receipt.member.clone(),
                base: receipt.version.saturating_sub(1),
                version: receipt.version,
                balances: receipt.balances,
                tier: receipt.tier.clone(),
                recent: vec![entry],
            });
        }
        let mut updates: Vec<CommitUpdate<'_>> = Vec::with_capacity(runs.len());
        // Commits per update (the counters count commits, as one by one).
        let mut commits: Vec<u64> = Vec::with_capacity(runs.len());
        for run in &runs {
            // Routed run by run: a store-only run marks its own version, so
            // an earlier run's write-through cannot clean it.
            let writable = self.inner.breaker.route_write(&run.member, run.version)
                == WriteRoute::WriteThrough;
            let n = run.recent.len() as u64;
            if !writable {
                stats.store_only_writes.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            commits.push(n);
            updates.push(CommitUpdate {
                member: &run.member,
                version: run.version,
                base_version: run.base,
                balances: run.balances,
                tier: run.tier.as_deref(),
                new_recent: &run.recent,
            });
        }
        if updates.is_empty() {
            return;
        }
        let per_item = self
            .inner
            .config
            .write_through_per_item
            .saturating_mul(u32::try_from(updates.len()).unwrap_or(u32::MAX));
        let bound = self
            .inner
            .config
            .write_through_timeout
            .saturating_add(per_item);
        let started = Instant::now();
        match self
            .call(bound, self.inner.cache.apply_commits(&updates))
            .await
        {
            Ok(outcomes) => {
                stats.record_latency(started.elapsed());
                for update in &updates {
                    self.inner.breaker.covered(update.member, update.version);
                }
                for (outcome, n) in outcomes.into_iter().zip(&commits) {
                    let counter = match outcome {
                        ApplyOutcome::Written => &stats.write_throughs,
                        ApplyOutcome::Guarded => &stats.write_through_guards,
                        ApplyOutcome::Stale { .. } => &stats.stale_refused,
                    };
                    counter.fetch_add(*n, Ordering::Relaxed);
                }
            }
            Err(CacheFailed) => {
                for n in &commits {
                    stats
                        .write_through_failures
                        .fetch_add(*n, Ordering::Relaxed);
                }
                // As for one commit: evict every member with a guard at its
                // commit's version (one call); if even that fails, or the
                // breaker opened, record them as dirty.
                let guards: Vec<(&MemberId, u64)> =
                    updates.iter().map(|u| (u.member, u.version)).collect();
                let evicted = self.inner.breaker.state() == BreakerState::Closed
                    && self
                        .call(bound, self.inner.cache.evict_many(&guards))
                        .await
                        .is_ok();
                for (member, version) in &guards {
                    if evicted {
                        self.inner.breaker.covered(member, *version);
                    } else {
                        self.inner.breaker.mark_dirty(member, *version);
                    }
                }
                if evicted {
                    stats
                        .evictions
                        .fetch_add(guards.len() as u64, Ordering::Relaxed);
                } else {
                    self.kick();
                }
            }
        }
    }

    /// Evicts `member` with a guard at `version`; when that fails too,
    /// records the member as dirty.
    async fn evict_or_mark(&self, member: &MemberId, version: u64) {
        if self.inner.breaker.state() != BreakerState::Closed {
            // The breaker opened (maybe on this very failure): leave Redis
            // alone, the repair will evict.
            self.inner.breaker.mark_dirty(member, version);
            self.kick();
            return;
        }
        let bound = self.inner.config.write_through_timeout;
        match self
            .call(bound, self.inner.cache.evict(member, version))
            .await
        {
            Ok(()) => {
                bump(&self.inner.stats.evictions);
                self.inner.breaker.covered(member, version);
            }
            Err(CacheFailed) => {
                self.inner.breaker.mark_dirty(member, version);
                self.kick();
            }
        }
    }

    /// Writes a receipt's commit through (nothing for a duplicate).
    async fn after_receipt(&self, receipt: &Receipt, time: DateTime<Utc>) {
        if receipt.duplicate {
            return;
        }
        let entry = RecentEntry {
            id: receipt.id.clone(),
            kind: receipt.kind,
            time,
            delta: receipt.delta,
            version: receipt.version,
        };
        self.write_through(CommitUpdate {
            member: &receipt.member,
            version: receipt.version,
            base_version: receipt.version.saturating_sub(1),
            balances: receipt.balances,
            tier: receipt.tier.as_deref(),
            new_recent: std::slice::from_ref(&entry),
        })
        .await;
    }

    /// After a commit whose recent entry is not known here: guard the
    /// member at `version` (or record it dirty).
    async fn after_opaque_commit(&self, member: &MemberId, version: u64) {
        self.kick();
        if self.inner.breaker.route_write(member, version) == WriteRoute::StoreOnly {
            bump(&self.inner.stats.store_only_writes);
            return;
        }
        self.evict_or_mark(member, version).await;
    }

    /// After a sweep that changed members it does not name: drop the whole
    /// cache. Until that succeeds every member counts as dirty.
    async fn after_sweep(&self, report: &SweepReport) {
        if report.members == 0 && report.postings == 0 {
            return;
        }
        let mark = self.inner.breaker.mark_all_dirty();
        if self.inner.breaker.state() == BreakerState::Closed && self.clear_fenced().await.is_ok() {
            self.inner.breaker.cleared_all(mark);
        }
    }

    /// Drops `member`'s entry (guarded at the store's version), e.g. after
    /// a change made behind the store's back. When the cache cannot be
    /// reached the member stays dirty (read from the store) until repaired.
    pub async fn invalidate(&self, member: &MemberId) -> Result<()> {
        // Dirty first, so no read serves or fills the entry meanwhile.
        let mark = self.inner.breaker.mark_dirty(member, u64::MAX);
        let version = match self.inner.store.balance(member).await {
            Ok(b) => b.version,
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if self.inner.breaker.state() != BreakerState::Closed {
            // The repair evicts it once Redis is back.
            return Ok(());
        }
        let bound = self.inner.config.write_through_timeout;
        if self
            .call(bound, self.inner.cache.evict(member, version))
            .await
            .is_ok()
        {
            bump(&self.inner.stats.evictions);
            // Clean again, unless written meanwhile.
            self.inner.breaker.repaired(member, mark, version);
        }
        Ok(())
    }

    /// Drops and refills `member`'s entry from the store.
    pub async fn rebuild(&self, member: &MemberId) -> Result<()> {
        self.invalidate(member).await?;
        self.fill(member, false).await?;
        self.set_last_rebuild();
        Ok(())
    }

    /// Drops every entry. Until that succeeds every member counts as dirty
    /// (reads go to the store); the repair retries it.
    pub async fn invalidate_all(&self) -> Result<()> {
        let mark = self.inner.breaker.mark_all_dirty();
        match self.clear_fenced().await {
            Ok(()) => {
                self.inner.breaker.cleared_all(mark);
                Ok(())
            }
            Err(CacheFailed) => Err(rewards_core::Error::unavailable(
                "the cache could not be cleared; it is bypassed until repaired",
                None,
            )),
        }
    }

    /// Drops every entry and warms the cache again from `members`.
    pub async fn rebuild_all(&self, members: &[MemberId]) -> Result<WarmReport> {
        self.invalidate_all().await?;
        self.warm(WarmPlan::All, members).await
    }

    /// Warms the cache from the store for `members` (the store has no
    /// member listing, so the host names them, e.g. from its own index).
    /// With [`WarmPlan::MostRecent`], the members whose latest entry is the
    /// newest are warmed first and only `n` of them.
    pub async fn warm(&self, plan: WarmPlan, members: &[MemberId]) -> Result<WarmReport> {
        let mut report = WarmReport {
            considered: members.len() as u64,
            ..WarmReport::default()
        };
        let chosen: Vec<MemberId> = match plan {
            WarmPlan::All => members.to_vec(),
            WarmPlan::MostRecent(n) => {
                let mut latest: Vec<(DateTime<Utc>, u64, MemberId)> = Vec::new();
                for member in members {
                    match self.inner.store.recent(member, 1).await {
                        Ok(entries) => match entries.first() {
                            Some(entry) => latest.push((entry.time, entry.version, member.clone())),
                            None => report.skipped += 1,
                        },
                        Err(e) if e.kind() == ErrorKind::NotFound => report.skipped += 1,
                        Err(e) => {
                            tracing::warn!(member = %member, error = %e, "warming: store read failed");
                            report.failed += 1;
                        }
                    }
                }
                latest.sort_by(|a, b| b.cmp(a));
                report.skipped += latest.len().saturating_sub(n) as u64;
                latest.into_iter().take(n).map(|(_, _, m)| m).collect()
            }
        };
        for member in &chosen {
            let fills_before = get(&self.inner.stats.fills);
            match self.fill(member, false).await {
                Ok(Some(_)) if get(&self.inner.stats.fills) > fills_before => report.filled += 1,
                Ok(_) => report.skipped += 1,
                Err(e) => {
                    tracing::warn!(member = %member, error = %e, "warming a member failed");
                    report.failed += 1;
                }
            }
        }
        self.set_last_rebuild();
        Ok(report)
    }

    fn set_last_rebuild(&self) {
        *self
            .inner
            .last_rebuild
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Utc::now());
    }
}

#[async_trait]
impl<S, C> LedgerStore for CachedStore<S, C>
where
    S: LedgerStore + 'static,
    C: CacheBackend + 'static,
{
    async fn member_view(&self, member: &MemberId, counters: &[CounterKey]) -> Result<MemberView> {
        // The view needs counters and profile attributes, which the cache
        // does not hold: the store answers.
        self.inner.store.member_view(member, counters).await
    }

    async fn member_views(
        &self,
        requests: &[(MemberId, Vec<CounterKey>)],
    ) -> Result<Vec<MemberView>> {
        self.inner.store.member_views(requests).await
    }

    async fn append(&self, tx: &Transaction, outcome: &Outcome) -> Result<Receipt> {
        let receipt = self.inner.store.append(tx, outcome).await?;
        self.after_receipt(&receipt, tx.time).await;
        Ok(receipt)
    }

    async fn append_batch(&self, items: &[(Transaction, Outcome)]) -> Result<Vec<Result<Receipt>>> {
        let results = self.inner.store.append_batch(items).await?;
        self.write_through_batch(items, &results).await;
        Ok(results)
    }

    async fn redeem(&self, redemption: &Redemption) -> Result<Receipt> {
        let receipt = self.inner.store.redeem(redemption).await?;
        self.after_receipt(&receipt, redemption.time).await;
        Ok(receipt)
    }

    async fn adjust(&self, adjustment: &Adjustment) -> Result<Receipt> {
        let receipt = self.inner.store.adjust(adjustment).await?;
        self.after_receipt(&receipt, adjustment.time).await;
        Ok(receipt)
    }

    async fn expire_due(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let report = self.inner.store.expire_due(as_of).await?;
        self.after_sweep(&report).await;
        Ok(report)
    }

    async fn release_pending(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let report = self.inner.store.release_pending(as_of).await?;
        self.after_sweep(&report).await;
        Ok(report)
    }

    async fn expire_authorizations(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let report = self.inner.store.expire_authorizations(as_of).await?;
        self.after_sweep(&report).await;
        Ok(report)
    }

    async fn review_tier(&self, review: &TierReview) -> Result<MemberBalance> {
        let balance = self.inner.store.review_tier(review).await?;
        self.after_opaque_commit(&balance.member, balance.version)
            .await;
        Ok(balance)
    }

    async fn apply_scheduled_tiers(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let report = self.inner.store.apply_scheduled_tiers(as_of).await?;
        self.after_sweep(&report).await;
        Ok(report)
    }

    async fn members_after(&self, after: Option<&MemberId>, limit: usize) -> Result<Vec<MemberId>> {
        // The cache holds no member list: the store answers.
        self.inner.store.members_after(after, limit).await
    }

    async fn tier_views(
        &self,
        members: &[MemberId],
        counters: &[CounterKey],
    ) -> Result<Vec<TierView>> {
        // Counters, profiles and scheduled changes are not cached.
        self.inner.store.tier_views(members, counters).await
    }

    async fn balance(&self, member: &MemberId) -> Result<MemberBalance> {
        match self.lookup(member).await {
            Lookup::Hit(entry) => {
                return Ok(MemberBalance {
                    member: entry.member,
                    balances: entry.balances,
                    tier: entry.tier,
                    version: entry.version,
                })
            }
            Lookup::Miss => {
                if let Some((balance, _)) = self.fill(member, false).await? {
                    return Ok(balance);
                }
            }
            Lookup::Bypass => {}
        }
        self.inner.store.balance(member).await
    }

    async fn recent(&self, member: &MemberId, limit: usize) -> Result<Vec<RecentEntry>> {
        let capacity = self.inner.cache.recent_capacity();
        if limit > capacity {
            return self.inner.store.recent(member, limit).await;
        }
        match self.lookup(member).await {
            Lookup::Hit(mut entry) => {
                entry.recent.truncate(limit);
                return Ok(entry.recent);
            }
            Lookup::Miss => {
                if let Some((_, mut recent)) = self.fill(member, false).await? {
                    recent.truncate(limit);
                    return Ok(recent);
                }
            }
            Lookup::Bypass => {}
        }
        self.inner.store.recent(member, limit).await
    }

    async fn history(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>> {
        self.inner.store.history(member, after_seq, limit).await
    }

    async fn audit(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        self.inner.store.audit(member, after_seq, limit).await
    }

    async fn put_profile(&self, profile: &MemberProfile) -> Result<()> {
        self.inner.store.put_profile(profile).await
    }

    async fn profile(&self, member: &MemberId) -> Result<MemberProfile> {
        self.inner.store.profile(member).await
    }

    async fn budget_used(&self, budget: &str) -> Result<Points> {
        self.inner.store.budget_used(budget).await
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        self.inner.store.reconcile().await
    }

    async fn outbox_fetch(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        self.inner.store.outbox_fetch(limit).await
    }

    async fn outbox_ack(&self, seqs: &[u64]) -> Result<u64> {
        self.inner.store.outbox_ack(seqs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_reads_the_buckets() {
        let stats = Stats::default();
        assert_eq!(stats.latency(), LatencySummary::default());
        for us in [100u64, 120, 130, 140, 150, 160, 170, 180, 190, 5000] {
            stats.record_latency(Duration::from_micros(us));
        }
        let summary = stats.latency();
        assert_eq!(summary.count, 10);
        assert_eq!(summary.max_us, 5000);
        // 100..190 µs fall in the bucket below 256 µs.
        assert_eq!(summary.p50_us, 255);
        assert_eq!(summary.p95_us, 5000);
        assert!(summary.p50_us <= summary.p95_us && summary.p95_us <= summary.p99_us);
    }
}
