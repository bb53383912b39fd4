//! The circuit breaker in front of the Redis cache, and the set of members
//! whose cache entry may be stale ("dirty").
//!
//! States:
//!
//! - **Closed**: the cache is used. Each failed cache operation counts; a
//!   success resets the count. After [`BreakerConfig::failure_threshold`]
//!   consecutive failures the breaker opens.
//! - **Open**: the cache is not touched. Writes go to the store only and
//!   their members are recorded as dirty; reads go to the store. After
//!   [`BreakerConfig::cool_down`] one probe may start.
//! - **HalfOpen**: one probe is running. It checks Redis, then repairs every
//!   dirty member (evicts or rewrites its entry from the store) and only then
//!   closes the breaker. Until then reads still go to the store, so the cache
//!   never serves an entry written before a commit it missed. Once the probe
//!   has reached Redis, writes go through again, so that the dirty set only
//!   shrinks while it is repaired.
//!
//! A dirty member remembers the newest commit version the cache missed.
//! Cache writes are compare-and-set on the version, so once one reaches
//! Redis at that version or newer (a write-through, whatever its outcome,
//! or an eviction that leaves a guard) every missed commit up to it is
//! covered and the member is clean again ([`CircuitBreaker::covered`]).
//! That is why writes of dirty members still go through while the breaker
//! lets writes pass: a member written on every round (a hot one) repairs
//! itself instead of being dirtied again faster than a repair can chase it.
//!
//! The breaker and the dirty set share one lock, so "the dirty set is empty"
//! and "close" happen together: a write that races with closing either sees
//! the breaker closed (and writes through) or marks its member dirty before
//! the close (which then does not happen).
//!
//! The dirty set is bounded ([`BreakerConfig::max_dirty`]); past the bound it
//! records an overflow instead, and the repair then clears the whole cache.
//!
//! Time is `tokio::time::Instant`, so tests drive it with
//! `tokio::time::pause`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rewards_core::MemberId;
use tokio::time::Instant;

/// How the breaker behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before a probe may run.
    pub cool_down: Duration,
    /// The most members remembered as dirty; past it the whole cache is
    /// cleared on repair instead.
    pub max_dirty: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(2),
            max_dirty: 100_000,
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// The cache is in use.
    Closed,
    /// The cache is bypassed; waiting for the cool-down to end.
    Open,
    /// A probe is checking Redis and repairing dirty members; the cache is
    /// still bypassed.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        })
    }
}

/// Where a write's cache update goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteRoute {
    /// Write through to the cache.
    WriteThrough,
    /// Store only: the member was recorded as dirty.
    StoreOnly,
}

/// What a probe must repair: taken under the lock, handed back with
/// [`CircuitBreaker::repaired`] when done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairBatch {
    /// The dirty members, each with the mark it carried when taken.
    pub members: Vec<(MemberId, u64)>,
    /// The dirty set overflowed: clear the whole cache.
    pub clear_all: bool,
    /// Every mark up to this one is covered by the batch.
    pub up_to_mark: u64,
}

impl RepairBatch {
    /// Nothing to repair.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && !self.clear_all
    }
}

/// Counters kept by the breaker, for the health figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BreakerCounters {
    /// How many times the breaker opened.
    pub opened: u64,
    /// How many times it closed again after a successful probe.
    pub closed: u64,
    /// Probes that failed (Redis still unreachable).
    pub failed_probes: u64,
    /// Members currently dirty.
    pub dirty: usize,
    /// Whether the dirty set overflowed (the repair will clear everything).
    pub dirty_overflow: bool,
}

/// Why a member is dirty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dirty {
    /// The mark of its latest dirtying (orders it against full clears).
    mark: u64,
    /// The newest commit version the cache missed (`u64::MAX`: unknown,
    /// only a repair by mark cleans it).
    version: u64,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Half-open and the probe has reached Redis: members that are not
    /// dirty may be written through again (so no new member becomes dirty
    /// while the dirty ones are repaired).
    probe_reached: bool,
    consecutive_failures: u32,
    opened_at: Instant,
    /// member → its latest dirtying.
    dirty: HashMap<MemberId, Dirty>,
    /// Mark of the latest dirtying that overflowed the set, if any.
    overflow_mark: Option<u64>,
    last_mark: u64,
    counters: BreakerCounters,
}

/// A circuit breaker plus the dirty-member set it guards.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker with an empty dirty set.
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            ..config
        };
        CircuitBreaker {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                probe_reached: false,
                consecutive_failures: 0,
                opened_at: Instant::now(),
                dirty: HashMap::new(),
                overflow_mark: None,
                last_mark: 0,
                counters: BreakerCounters::default(),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock guards plain data updated in small steps that cannot
        // panic half-way; a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Counters and dirty-set size.
    pub fn counters(&self) -> BreakerCounters {
        let inner = self.lock();
        BreakerCounters {
            dirty: inner.dirty.len(),
            dirty_overflow: inner.overflow_mark.is_some(),
            ..inner.counters
        }
    }

    /// Whether a read of `member` may be served from (and fill) the cache:
    /// the breaker is closed, the member is not dirty and the dirty set has
    /// not overflowed.
    pub fn cache_readable(&self, member: &MemberId) -> bool {
        let inner = self.lock();
        inner.state == BreakerState::Closed
            && inner.overflow_mark.is_none()
            && !inner.dirty.contains_key(member)
    }

    /// Decides where the cache update of a commit at `version` goes. While
    /// the breaker lets writes pass (closed, or half-open once the probe
    /// reached Redis) and no full clear is pending, it goes through, dirty
    /// member or not (see the module doc); otherwise the member is (re)marked
    /// dirty at `version`.
    pub fn route_write(&self, member: &MemberId, version: u64) -> WriteRoute {
        let mut inner = self.lock();
        let writable = inner.state == BreakerState::Closed
            || (inner.state == BreakerState::HalfOpen && inner.probe_reached);
        if writable && inner.overflow_mark.is_none() {
            WriteRoute::WriteThrough
        } else {
            self.mark_locked(&mut inner, member, version);
            WriteRoute::StoreOnly
        }
    }

    /// Records `member` as dirty: the cache missed its commit at `version`
    /// (`u64::MAX` when unknown), so its entry may be older than the store
    /// and must be repaired before the cache serves it again. Returns the
    /// mark to hand to [`CircuitBreaker::repaired`].
    pub fn mark_dirty(&self, member: &MemberId, version: u64) -> u64 {
        let mut inner = self.lock();
        self.mark_locked(&mut inner, member, version)
    }

    /// A cache write for `member` at `version` reached Redis (written,
    /// guarded or refused as stale: either way Redis now holds `version`,
    /// a guard at it, or something newer), so every commit it missed up to
    /// `version` is covered.
    pub fn covered(&self, member: &MemberId, version: u64) {
        let mut inner = self.lock();
        if inner
            .dirty
            .get(member)
            .is_some_and(|d| d.version <= version)
        {
            inner.dirty.remove(member);
        }
    }

    /// Records every member as dirty (the whole cache must be cleared
    /// before it serves reads again). Returns the mark to hand to
    /// [`CircuitBreaker::cleared_all`].
    pub fn mark_all_dirty(&self) -> u64 {
        let mut inner = self.lock();
        inner.last_mark += 1;
        let mark = inner.last_mark;
        inner.overflow_mark = Some(mark);
        mark
    }

    fn mark_locked(&self, inner: &mut Inner, member: &MemberId, version: u64) -> u64 {
        inner.last_mark += 1;
        let mark = inner.last_mark;
        if let Some(entry) = inner.dirty.get_mut(member) {
            entry.mark = mark;
            entry.version = entry.version.max(version);
        } else if inner.dirty.len() < self.config.max_dirty {
            inner.dirty.insert(member.clone(), Dirty { mark, version });
        } else {
            inner.overflow_mark = Some(mark);
        }
        mark
    }

    /// Whether `member` is dirty.
    pub fn is_dirty(&self, member: &MemberId) -> bool {
        let inner = self.lock();
        inner.overflow_mark.is_some() || inner.dirty.contains_key(member)
    }

    /// Whether anything waits for repair.
    pub fn has_dirty(&self) -> bool {
        let inner = self.lock();
        inner.overflow_mark.is_some() || !inner.dirty.is_empty()
    }

    /// A cache operation succeeded: resets the failure count while closed.
    pub fn record_success(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::Closed {
            inner.consecutive_failures = 0;
        }
    }

    /// A cache operation failed (error or timeout). Returns true when this
    /// failure opened the breaker.
    pub fn record_failure(&self) -> bool {
        let mut inner = self.lock();
        if inner.state != BreakerState::Closed {
            return false;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        if inner.consecutive_failures >= self.config.failure_threshold {
            inner.state = BreakerState::Open;
            inner.opened_at = Instant::now();
            inner.counters.opened += 1;
            true
        } else {
            false
        }
    }

    /// When the next probe is due, while the breaker is open.
    fn due_at(&self, inner: &Inner) -> Option<Instant> {
        (inner.state == BreakerState::Open).then(|| inner.opened_at + self.config.cool_down)
    }

    /// Whether the breaker is open and its cool-down has passed (a probe
    /// is due).
    pub fn probe_due(&self) -> bool {
        self.probe_due_at().is_some_and(|due| Instant::now() >= due)
    }

    /// When the next probe is due, while the breaker is open.
    pub fn probe_due_at(&self) -> Option<Instant> {
        self.due_at(&self.lock())
    }

    /// Starts a probe if one is due: open → half-open. Only one caller gets
    /// `true` until the probe ends with [`CircuitBreaker::probe_failed`] or
    /// [`CircuitBreaker::try_close`].
    pub fn try_begin_probe(&self) -> bool {
        let mut inner = self.lock();
        if self.due_at(&inner).is_some_and(|due| Instant::now() >= due) {
            inner.state = BreakerState::HalfOpen;
            inner.probe_reached = false;
            true
        } else {
            false
        }
    }

    /// The probe reached Redis: while it repairs the dirty members, writes
    /// of the other members go through again (reads still wait for the
    /// close).
    pub fn probe_reached(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            inner.probe_reached = true;
        }
    }

    /// The probe found Redis still failing: half-open → open, the cool-down
    /// starts again.
    pub fn probe_failed(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            inner.probe_reached = false;
            inner.state = BreakerState::Open;
            inner.opened_at = Instant::now();
            inner.counters.failed_probes += 1;
        }
    }

    /// What is dirty now, to be repaired.
    pub fn take_repair_batch(&self, max_members: usize) -> RepairBatch {
        let inner = self.lock();
        RepairBatch {
            members: inner
                .dirty
                .iter()
                .take(max_members)
                .map(|(m, dirty)| (m.clone(), dirty.mark))
                .collect(),
            clear_all: inner.overflow_mark.is_some(),
            up_to_mark: inner.last_mark,
        }
    }

    /// `member`'s entry was evicted with a guard at `version` after it was
    /// taken for repair with `mark`: it is clean unless it was dirtied again
    /// since by a commit newer than `version`.
    pub fn repaired(&self, member: &MemberId, mark: u64, version: u64) {
        let mut inner = self.lock();
        if inner
            .dirty
            .get(member)
            .is_some_and(|d| d.mark == mark || d.version <= version)
        {
            inner.dirty.remove(member);
        }
    }

    /// The whole cache was cleared after every mark up to `up_to_mark` was
    /// taken: those members and the overflow are repaired.
    pub fn cleared_all(&self, up_to_mark: u64) {
        let mut inner = self.lock();
        inner.dirty.retain(|_, dirty| dirty.mark > up_to_mark);
        if inner.overflow_mark.is_some_and(|mark| mark <= up_to_mark) {
            inner.overflow_mark = None;
        }
    }

    /// Ends a successful probe: half-open → closed, but only when nothing
    /// is dirty any more (checked under the same lock that writes mark
    /// dirty under). Returns whether it closed.
    pub fn try_close(&self) -> bool {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen
            && inner.dirty.is_empty()
            && inner.overflow_mark.is_none()
        {
            inner.state = BreakerState::Closed;
            inner.probe_reached = false;
            inner.consecutive_failures = 0;
            inner.counters.closed += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> MemberId {
        MemberId::new(id).unwrap()
    }

    fn breaker(threshold: u32, max_dirty: usize) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: threshold,
            cool_down: Duration::from_secs(10),
            max_dirty,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures_only() {
        let b = breaker(3, 10);
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        b.record_success();
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.record_failure());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.counters().opened, 1);
        // Further failures while open change nothing.
        assert!(!b.record_failure());
        assert_eq!(b.counters().opened, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn while_open_writes_go_to_the_store_and_mark_dirty() {
        let b = breaker(1, 10);
        let m = member("m-1");
        assert_eq!(b.route_write(&m, 1), WriteRoute::WriteThrough);
        assert!(b.cache_readable(&m));
        b.record_failure();
        assert!(!b.cache_readable(&m));
        assert_eq!(b.route_write(&m, 2), WriteRoute::StoreOnly);
        assert!(b.is_dirty(&m));
        assert!(!b.is_dirty(&member("m-2")));
        assert_eq!(b.counters().dirty, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn probe_waits_for_the_cool_down_and_is_exclusive() {
        let b = breaker(1, 10);
        b.record_failure();
        assert!(!b.probe_due());
        assert!(!b.try_begin_probe());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!b.try_begin_probe());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.probe_due());
        assert!(b.try_begin_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.try_begin_probe(), "only one probe at a time");
        // A failed probe re-opens and restarts the cool-down.
        b.probe_failed();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.counters().failed_probes, 1);
        assert!(!b.try_begin_probe());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_begin_probe());
        assert!(b.try_close());
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.counters().closed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_close_before_dirty_members_are_repaired() {
        let b = breaker(1, 10);
        let (m1, m2) = (member("m-1"), member("m-2"));
        b.record_failure();
        b.route_write(&m1, 1);
        b.route_write(&m2, 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_begin_probe());
        let batch = b.take_repair_batch(100);
        assert_eq!(batch.members.len(), 2);
        assert!(!batch.clear_all);
        // m1 is written again (store only, half-open) while being repaired:
        // its commit 2 is newer than the guard (1) the repair leaves.
        assert_eq!(b.route_write(&m1, 2), WriteRoute::StoreOnly);
        for (m, mark) in &batch.members {
            b.repaired(m, *mark, 1);
        }
        assert!(b.is_dirty(&m1), "dirtied again during repair: stays dirty");
        assert!(!b.is_dirty(&m2));
        assert!(!b.try_close());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let batch = b.take_repair_batch(100);
        assert_eq!(batch.members.len(), 1);
        for (m, mark) in &batch.members {
            b.repaired(m, *mark, 2);
        }
        assert!(b.try_close());
        assert!(b.cache_readable(&m1));
        assert_eq!(b.route_write(&m1, 3), WriteRoute::WriteThrough);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repair_covers_commits_up_to_its_guard_whatever_the_mark() {
        let b = breaker(1, 10);
        let m = member("m-1");
        b.record_failure();
        b.route_write(&m, 5);
        let batch = b.take_repair_batch(10);
        // Dirtied again by commit 6, which the store held when the repair
        // read version 7: the guard at 7 covers it.
        assert_eq!(b.route_write(&m, 6), WriteRoute::StoreOnly);
        b.repaired(&m, batch.members[0].1, 7);
        assert!(!b.is_dirty(&m));
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_probe_reaches_redis_writes_go_through_and_cover_what_they_reach() {
        let b = breaker(1, 10);
        let (dirty, clean) = (member("m-dirty"), member("m-clean"));
        b.record_failure();
        b.route_write(&dirty, 4);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_begin_probe());
        // Not reached yet: writes are store-only (and dirty their member).
        assert_eq!(b.route_write(&clean, 1), WriteRoute::StoreOnly);
        let batch = b.take_repair_batch(10);
        for (m, mark) in &batch.members {
            if *m == clean {
                b.repaired(m, *mark, 1);
            }
        }
        b.probe_reached();
        assert_eq!(b.route_write(&clean, 2), WriteRoute::WriteThrough);
        // A dirty member's write goes through too; an older one than what
        // it missed does not clean it, one at or past it does.
        assert_eq!(b.route_write(&dirty, 3), WriteRoute::WriteThrough);
        b.covered(&dirty, 3);
        assert!(b.is_dirty(&dirty));
        b.covered(&dirty, 5);
        assert!(!b.is_dirty(&dirty));
        assert!(!b.cache_readable(&clean), "reads wait for the close");
        // A failed probe forgets it.
        b.probe_failed();
        assert_eq!(b.route_write(&clean, 3), WriteRoute::StoreOnly);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_begin_probe());
        assert_eq!(b.route_write(&member("m-other"), 1), WriteRoute::StoreOnly);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dirty_member_bypasses_the_cache_while_closed() {
        let b = breaker(5, 10);
        let m = member("m-1");
        b.mark_dirty(&m, 8);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.cache_readable(&m));
        assert!(b.cache_readable(&member("m-2")));
        // Its writes still go through (compare-and-set on the version).
        assert_eq!(b.route_write(&m, 9), WriteRoute::WriteThrough);
        assert!(!b.cache_readable(&m), "dirty until a write reaches Redis");
        let batch = b.take_repair_batch(10);
        for (m, mark) in &batch.members {
            b.repaired(m, *mark, 8);
        }
        assert!(b.cache_readable(&m));
        // try_close only acts on a half-open breaker.
        assert!(!b.try_close());
        assert_eq!(b.counters().closed, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_version_is_cleaned_only_by_its_mark() {
        let b = breaker(5, 10);
        let m = member("m-1");
        let mark = b.mark_dirty(&m, u64::MAX);
        b.covered(&m, u64::MAX - 1);
        assert!(b.is_dirty(&m));
        b.repaired(&m, mark, 3);
        assert!(!b.is_dirty(&m));
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_bypasses_everything_until_a_full_clear() {
        let b = breaker(1, 2);
        b.record_failure();
        for i in 0..5 {
            b.route_write(&member(&format!("m-{i}")), 1);
        }
        let counters = b.counters();
        assert_eq!(counters.dirty, 2);
        assert!(counters.dirty_overflow);
        // A member never written is dirty too: its entry may be anything.
        assert!(b.is_dirty(&member("m-never")));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_begin_probe());
        let batch = b.take_repair_batch(100);
        assert!(batch.clear_all);
        // m-0 (in the set) is written again while the cache is cleared.
        assert_eq!(b.route_write(&member("m-0"), 2), WriteRoute::StoreOnly);
        b.cleared_all(batch.up_to_mark);
        assert!(!b.counters().dirty_overflow);
        assert!(b.is_dirty(&member("m-0")), "written during the clear");
        assert!(!b.is_dirty(&member("m-1")));
        assert!(!b.is_dirty(&member("m-4")));
        assert!(!b.try_close());
        let batch = b.take_repair_batch(100);
        assert!(!batch.clear_all);
        assert_eq!(batch.members.len(), 1);
        for (m, mark) in &batch.members {
            b.repaired(m, *mark, 2);
        }
        assert!(b.try_close());
        assert!(b.cache_readable(&member("m-never")));
    }

    #[tokio::test(start_paused = true)]
    async fn marking_all_dirty_bypasses_until_cleared() {
        let b = breaker(5, 10);
        let m = member("m-1");
        let early = b.mark_dirty(&m, 1);
        let all = b.mark_all_dirty();
        assert!(all > early);
        assert!(!b.cache_readable(&member("m-2")));
        assert_eq!(b.route_write(&member("m-2"), 1), WriteRoute::StoreOnly);
        b.cleared_all(all);
        // m-1 (before the mark) is covered by the clear; m-2 was written
        // after it and stays dirty.
        assert!(b.cache_readable(&m));
        assert!(b.is_dirty(&member("m-2")));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn threshold_zero_means_one() {
        let b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        });
        assert_eq!(b.config().failure_threshold, 1);
    }
}
