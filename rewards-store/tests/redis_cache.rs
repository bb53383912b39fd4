//! The Redis cache adapter against real servers: the shared Redis and a
//! 3-master Redis Cluster. Every test runs on both, under its own prefix.

// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_support;

use std::sync::Arc;

use rewards_core::conformance;
use rewards_core::ledger::{Balances, EntryKind, RecentEntry};
use rewards_core::store::{BalanceCache, CachePut, CachedMember};
use rewards_core::{ErrorKind, MemberId, Points, TxId};
use rewards_store::cached::{ApplyOutcome, CacheBackend, CommitUpdate};
use rewards_store::redis::keys::hash_slot;
use rewards_store::redis::{RedisCache, RedisCacheConfig};

use redis_support::*;

fn member(name: &str) -> MemberId {
    MemberId::new(name).unwrap()
}

fn bal(available: i64, pending: i64) -> Balances {
    Balances {
        available: Points(available),
        pending: Points(pending),
    }
}

fn recent(version: u64, delta: i64) -> RecentEntry {
    RecentEntry {
        id: TxId::new(format!("tx-{version}")).unwrap(),
        kind: EntryKind::Purchase,
        time: chrono::DateTime::from_timestamp(1_900_000_000 + version as i64, 0).unwrap(),
        delta: bal(delta, 0),
        version,
    }
}

fn entry(
    m: &MemberId,
    version: u64,
    available: i64,
    recent_entries: Vec<RecentEntry>,
) -> CachedMember {
    CachedMember {
        member: m.clone(),
        version,
        balances: bal(available, 0),
        tier: Some(Arc::from("gold")),
        recent: recent_entries,
    }
}

/// The core's `BalanceCache` conformance check.
async fn balance_cache_conformance(cache: RedisCache) {
    conformance::check_balance_cache(&cache).await;
    cache.clear().await.unwrap();
}

/// Commits extend the entry in one step: balances, tier, and the recent
/// list pushed and trimmed to its bound; TTLs are set on both keys.
async fn commits_extend_a_bounded_recent_list(cache: RedisCache) {
    assert_eq!(cache.recent_capacity(), 3);
    let m = member("m-extend");
    let mut history = Vec::new();
    let mut available = 0;
    for version in 1..=5u64 {
        let e = recent(version, version as i64 * 10);
        available += version as i64 * 10;
        let tier = if version >= 4 { Some("gold") } else { None };
        let outcome = cache
            .apply_commit(&CommitUpdate {
                member: &m,
                version,
                base_version: version - 1,
                balances: bal(available, 1),
                tier,
                new_recent: std::slice::from_ref(&e),
            })
            .await
            .unwrap();
        assert_eq!(outcome, ApplyOutcome::Written, "version {version}");
        history.insert(0, e);
        let got = cache.get(&m).await.unwrap().expect("entry");
        assert_eq!(got.version, version);
        assert_eq!(got.balances, bal(available, 1));
        assert_eq!(got.tier.as_deref(), tier);
        let expected: Vec<RecentEntry> = history.iter().take(3).cloned().collect();
        assert_eq!(got.recent, expected, "newest first, at most 3");
    }
    // A replay of an applied commit is refused.
    let e = recent(5, 50);
    assert_eq!(
        cache
            .apply_commit(&CommitUpdate {
                member: &m,
                version: 5,
                base_version: 4,
                balances: bal(0, 0),
                tier: None,
                new_recent: std::slice::from_ref(&e),
            })
            .await
            .unwrap(),
        ApplyOutcome::Stale { current: 5 }
    );
    cache.clear().await.unwrap();
}

/// A commit that does not follow the cached version (a gap), or finds no
/// entry, leaves a guard at its version: older puts are refused, the next
/// fill at that version or newer is taken.
async fn a_gap_leaves_a_guard(cache: RedisCache) {
    let m = member("m-gap");
    assert_eq!(
        cache
            .put(&entry(&m, 2, 20, vec![recent(2, 10), recent(1, 10)]))
            .await
            .unwrap(),
        CachePut::Written
    );
    let e = recent(4, 5);
    let update = CommitUpdate {
        member: &m,
        version: 4,
        base_version: 3,
        balances: bal(25, 0),
        tier: None,
        new_recent: std::slice::from_ref(&e),
    };
    assert_eq!(
        cache.apply_commit(&update).await.unwrap(),
        ApplyOutcome::Guarded
    );
    assert_eq!(cache.get(&m).await.unwrap(), None);
    assert_eq!(
        cache.put(&entry(&m, 3, 30, vec![])).await.unwrap(),
        CachePut::Stale { current: 4 }
    );
    assert_eq!(
        cache.put(&entry(&m, 4, 25, vec![e.clone()])).await.unwrap(),
        CachePut::Written
    );
    assert_eq!(cache.get(&m).await.unwrap().unwrap().version, 4);

    // No entry at all and not the member's first commit: guarded too.
    let fresh = member("m-gap-fresh");
    let update = CommitUpdate {
        member: &fresh,
        version: 7,
        base_version: 6,
        balances: bal(1, 0),
        tier: None,
        new_recent: std::slice::from_ref(&e),
    };
    assert_eq!(
        cache.apply_commit(&update).await.unwrap(),
        ApplyOutcome::Guarded
    );
    assert_eq!(cache.get(&fresh).await.unwrap(), None);
    // The member's very first commit needs no earlier entry.
    let first = member("m-gap-first");
    let e1 = recent(1, 3);
    let update = CommitUpdate {
        member: &first,
        version: 1,
        base_version: 0,
        balances: bal(3, 0),
        tier: None,
        new_recent: std::slice::from_ref(&e1),
    };
    assert_eq!(
        cache.apply_commit(&update).await.unwrap(),
        ApplyOutcome::Written
    );
    assert_eq!(cache.get(&first).await.unwrap().unwrap().recent, vec![e1]);
    cache.clear().await.unwrap();
}

/// Writes of many versions, sent concurrently in a scrambled order: the
/// cache ends with the newest, and no older write ever replaced a newer one
/// (each refused write names a version at least as new as its own).
async fn stale_writes_never_overwrite_newer_ones(cache: RedisCache) {
    let cache = Arc::new(cache);
    let m = member("m-stale");
    let n: u64 = 60;
    // A fixed scramble of 1..=n (multiplication by 37 modulo 61 is a bijection).
    let order: Vec<u64> = (1..=n).map(|i| (i * 37) % (n + 1)).collect();
    let mut tasks = Vec::new();
    for chunk in order.chunks(6) {
        let cache = cache.clone();
        let m = m.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for version in chunk {
                let put = cache
                    .put(&entry(
                        &m,
                        version,
                        version as i64 * 100,
                        vec![recent(version, 1)],
                    ))
                    .await
                    .unwrap();
                results.push((version, put));
            }
            results
        }));
    }
    for task in tasks {
        for (version, put) in task.await.unwrap() {
            if let CachePut::Stale { current } = put {
                assert!(current > version, "refused {version} for {current}");
            }
        }
    }
    let got = cache.get(&m).await.unwrap().unwrap();
    assert_eq!(got.version, n);
    assert_eq!(got.balances, bal(n as i64 * 100, 0));
    assert_eq!(got.recent, vec![recent(n, 1)]);
    // An old write arriving late, whether a put or a commit, changes nothing.
    assert_eq!(
        cache.put(&entry(&m, 3, -1, vec![])).await.unwrap(),
        CachePut::Stale { current: n }
    );
    let e = recent(n - 1, 9);
    assert_eq!(
        cache
            .apply_commit(&CommitUpdate {
                member: &m,
                version: n - 1,
                base_version: n - 2,
                balances: bal(-1, 0),
                tier: None,
                new_recent: std::slice::from_ref(&e),
            })
            .await
            .unwrap(),
        ApplyOutcome::Stale { current: n }
    );
    assert_eq!(cache.get(&m).await.unwrap().unwrap(), got);
    cache.clear().await.unwrap();
}

/// Two prefixes on one server do not see each other; clearing one leaves
/// the other; the member listing reads the key space on every node.
async fn prefixes_isolate(a: RedisCache, b: RedisCache) {
    let members: Vec<MemberId> = (0..40).map(|i| member(&format!("m-{i:02}"))).collect();
    for m in &members {
        a.put(&entry(m, 1, 1, vec![recent(1, 1)])).await.unwrap();
        b.put(&entry(m, 2, 2, vec![recent(2, 2)])).await.unwrap();
    }
    let names: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    assert_eq!(a.cached_members().await.unwrap(), names);
    assert_eq!(a.clear().await.unwrap(), 80, "40 hashes and 40 lists");
    assert_eq!(a.cached_members().await.unwrap(), Vec::<String>::new());
    for m in &members {
        assert_eq!(a.get(m).await.unwrap(), None);
        assert_eq!(b.get(m).await.unwrap().unwrap().version, 2);
    }
    b.clear().await.unwrap();
    assert_eq!(b.cached_members().await.unwrap(), Vec::<String>::new());
}

/// A batch of commits in one pipelined call (one pipeline per slot on the
/// cluster): applied in order, a member's consecutive commits extend its
/// entry, stale ones are refused, gaps guard, and a later single write of
/// an older version still cannot land. Enough members to cover every
/// cluster master.
async fn batched_commits_keep_the_version_guard(cache: RedisCache) {
    let members: Vec<MemberId> = (0..40).map(|i| member(&format!("m-batch-{i}"))).collect();
    for m in &members {
        assert_eq!(
            cache
                .put(&entry(m, 2, 20, vec![recent(2, 10)]))
                .await
                .unwrap(),
            CachePut::Written
        );
    }
    let (e3, e4, e5) = (recent(3, 1), recent(4, 1), recent(5, 1));
    let mut updates = Vec::new();
    for m in &members {
        // Extends 2 -> 3, then 3 -> 4 (the same member twice, in order).
        updates.push(CommitUpdate {
            member: m,
            version: 3,
            base_version: 2,
            balances: bal(21, 0),
            tier: None,
            new_recent: std::slice::from_ref(&e3),
        });
        updates.push(CommitUpdate {
            member: m,
            version: 4,
            base_version: 3,
            balances: bal(22, 0),
            tier: Some("silver"),
            new_recent: std::slice::from_ref(&e4),
        });
        // A late write of version 3 again: stale.
        updates.push(CommitUpdate {
            member: m,
            version: 3,
            base_version: 2,
            balances: bal(99, 0),
            tier: None,
            new_recent: std::slice::from_ref(&e3),
        });
    }
    // A member with a gap (nothing cached at its base): guarded.
    let gap = member("m-batch-gap");
    updates.push(CommitUpdate {
        member: &gap,
        version: 5,
        base_version: 4,
        balances: bal(5, 0),
        tier: None,
        new_recent: std::slice::from_ref(&e5),
    });
    let outcomes = cache.apply_commits(&updates).await.unwrap();
    let mut expected = Vec::new();
    for _ in &members {
        expected.extend([
            ApplyOutcome::Written,
            ApplyOutcome::Written,
            ApplyOutcome::Stale { current: 4 },
        ]);
    }
    expected.push(ApplyOutcome::Guarded);
    assert_eq!(outcomes, expected);
    for m in &members {
        let got = cache.get(m).await.unwrap().unwrap();
        assert_eq!(got.version, 4, "{m}");
        assert_eq!(got.balances, bal(22, 0), "{m}");
        assert_eq!(got.tier.as_deref(), Some("silver"), "{m}");
        assert_eq!(
            got.recent,
            vec![e4.clone(), e3.clone(), recent(2, 10)],
            "{m}"
        );
        assert_eq!(
            cache.put(&entry(m, 3, 30, vec![])).await.unwrap(),
            CachePut::Stale { current: 4 }
        );
    }
    assert_eq!(cache.get(&gap).await.unwrap(), None);
    assert_eq!(
        cache.put(&entry(&gap, 4, 4, vec![])).await.unwrap(),
        CachePut::Stale { current: 5 }
    );
    assert!(cache.apply_commits(&[]).await.unwrap().is_empty());
    // Batched evictions: a guard at max(min_version, cached version).
    let guards: Vec<(&MemberId, u64)> =
        members.iter().map(|m| (m, 10)).chain([(&gap, 1)]).collect();
    let guarded = cache.evict_many(&guards).await.unwrap();
    assert_eq!(guarded.len(), members.len() + 1);
    assert!(guarded[..members.len()].iter().all(|v| *v == 10));
    assert_eq!(guarded[members.len()], 5, "the newer guard stays");
    for m in &members {
        assert_eq!(cache.get(m).await.unwrap(), None);
        assert_eq!(
            cache.put(&entry(m, 9, 9, vec![])).await.unwrap(),
            CachePut::Stale { current: 10 }
        );
    }
    cache.clear().await.unwrap();
}

fn with_capacity(mut config: RedisCacheConfig, recent_max: usize) -> RedisCacheConfig {
    config.recent_max = recent_max;
    config
}

macro_rules! on_both {
    ($name:ident, $check:ident) => {
        on_both!($name, $check, 20);
    };
    ($name:ident, $check:ident, $capacity:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn single() {
                let config = with_capacity(single_config(stringify!($name)), $capacity);
                $check(RedisCache::connect(config).await.unwrap()).await;
            }

            #[tokio::test]
            async fn cluster() {
                let cluster = TestCluster::get();
                let config = with_capacity(cluster_config(&cluster, stringify!($name)), $capacity);
                $check(RedisCache::connect(config).await.unwrap()).await;
            }
        }
    };
}

on_both!(conformance_balance_cache, balance_cache_conformance);
on_both!(recent_list, commits_extend_a_bounded_recent_list, 3);
on_both!(gap_guard, a_gap_leaves_a_guard);
on_both!(stale_writes, stale_writes_never_overwrite_newer_ones);
on_both!(batched_commits, batched_commits_keep_the_version_guard);

#[tokio::test]
async fn prefixes_isolate_single() {
    let a = RedisCache::connect(single_config("iso-a")).await.unwrap();
    let b = RedisCache::connect(single_config("iso-b")).await.unwrap();
    prefixes_isolate(a, b).await;
}

#[tokio::test]
async fn prefixes_isolate_cluster() {
    let cluster = TestCluster::get();
    let a = RedisCache::connect(cluster_config(&cluster, "iso-a"))
        .await
        .unwrap();
    let b = RedisCache::connect(cluster_config(&cluster, "iso-b"))
        .await
        .unwrap();
    prefixes_isolate(a, b).await;
}

/// On the real cluster: a member's two keys hash to the same slot (as the
/// server computes it), members spread over all three masters, and the TTL
/// is set on both keys.
#[tokio::test]
async fn a_members_keys_share_one_slot_on_the_cluster() {
    let cluster = TestCluster::get();
    let config = cluster_config(&cluster, "slots");
    let cache = RedisCache::connect(config).await.unwrap();
    let port = cluster.nodes[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap();
    let layout = cache.layout().clone();
    let mut slots = Vec::new();
    for i in 0..30 {
        let m = format!("m-{i}");
        let (bal_key, recent_key) = (layout.balance(&m), layout.recent(&m));
        let server = |key: &str| -> u16 {
            let reply = raw_command(port, &format!("CLUSTER KEYSLOT {key}")).unwrap();
            reply.trim().trim_start_matches(':').parse().unwrap()
        };
        assert_eq!(server(&bal_key), hash_slot(bal_key.as_bytes()), "{bal_key}");
        assert_eq!(
            server(&recent_key),
            hash_slot(bal_key.as_bytes()),
            "{recent_key}"
        );
        slots.push(hash_slot(bal_key.as_bytes()));
        cache
            .put(&entry(&member(&m), 1, 1, vec![recent(1, 1)]))
            .await
            .unwrap();
    }
    // 30 members over 16384 slots in three ranges: all three masters used.
    let ranges = [0..5461u16, 5461..10923, 10923..16384];
    for range in ranges {
        assert!(
            slots.iter().any(|s| range.contains(s)),
            "no member in {range:?}"
        );
    }
    assert_eq!(cache.cached_members().await.unwrap().len(), 30);
    cache.clear().await.unwrap();
}

#[tokio::test]
async fn entries_carry_the_ttl() {
    let config = single_config("ttl");
    let port: u16 = shared_redis_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(6379);
    let cache = RedisCache::connect(config).await.unwrap();
    let m = member("m-ttl");
    cache
        .put(&entry(&m, 1, 1, vec![recent(1, 1)]))
        .await
        .unwrap();
    let pttl = |key: String| -> i64 {
        let reply = raw_command(port, &format!("PTTL {key}")).unwrap();
        reply.trim().trim_start_matches(':').parse().unwrap()
    };
    let layout = cache.layout().clone();
    for key in [layout.balance("m-ttl"), layout.recent("m-ttl")] {
        let ttl = pttl(key.clone());
        assert!(ttl > 0 && ttl <= 600_000, "{key}: {ttl}");
    }
    cache.evict(&m, 1).await.unwrap();
    let ttl = pttl(layout.balance("m-ttl"));
    assert!(ttl > 0 && ttl <= 600_000, "tombstone: {ttl}");
    assert_eq!(pttl(layout.recent("m-ttl")), -2, "the list is gone");
    cache.clear().await.unwrap();
}

/// Nothing listens: the cache is built (it connects lazily) and every call
/// fails as `Unavailable`, quickly.
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = free_port(false);
    let mut config = RedisCacheConfig::single(format!("redis://127.0.0.1:{port}"))
        .key_prefix(unique_prefix("down"));
    config.connect_timeout = std::time::Duration::from_millis(300);
    let cache = RedisCache::new(config).unwrap();
    let err = BalanceCache::get(&cache, &member("m")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let err = CacheBackend::ping(&cache).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[test]
fn a_bad_prefix_is_refused() {
    let config = RedisCacheConfig::single("redis://127.0.0.1:6379").key_prefix("a{b}");
    assert!(RedisCache::new(config).is_err());
}
