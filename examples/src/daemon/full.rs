//! Full mode (feature `full`): PostgreSQL as the source of truth, Redis as
//! the write-through cache in front of it ([`rewards_store::cached::CachedStore`]),
//! Kafka as the input (consumer group, offsets committed after durable
//! outcomes) and a Kafka dead-letter topic.
//!
//! Nothing secret is logged: the database and Redis URLs go through
//! [`redact_url`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use rewards_core::ledger::LedgerConfig;
use rewards_core::{LedgerStore, MemberId};
use rewards_runtime::kafka::{
    create_topics, KafkaConfig, KafkaDeadLetters, KafkaSource, OutboxRelay, OutboxRelayConfig,
};
use rewards_runtime::{DeadLetterSink, Metrics, Source};
use rewards_store::breaker::BreakerState;
use rewards_store::cached::{CacheBackend, CachedStore, CachedStoreConfig, WarmPlan};
use rewards_store::postgres::{PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

use super::config::{redact_url, Config};
use super::metrics::CacheFigures;
use super::{CacheControl, StartError};

/// How many recently active members are warmed into the cache at start.
pub const WARM_MEMBERS: usize = 10_000;

/// The Redis cache configuration of `config`.
pub fn redis_config(config: &Config) -> RedisCacheConfig {
    let r = &config.redis;
    let base = if r.cluster_nodes.is_empty() {
        RedisCacheConfig::single(r.url.expose())
    } else {
        RedisCacheConfig::cluster(r.cluster_nodes.iter().cloned())
    };
    base.key_prefix(r.prefix.clone())
}

/// A [`CachedStore`] seen by the daemon: figures and rebuilds.
pub struct CacheHandle<S, C> {
    cached: CachedStore<S, C>,
    members: Arc<dyn Fn() -> Vec<MemberId> + Send + Sync>,
}

impl<S, C> CacheHandle<S, C> {
    /// `members` lists the members the daemon knows (from its journal), for
    /// warming and full rebuilds.
    pub fn new(
        cached: CachedStore<S, C>,
        members: Arc<dyn Fn() -> Vec<MemberId> + Send + Sync>,
    ) -> CacheHandle<S, C> {
        CacheHandle { cached, members }
    }
}

#[async_trait]
impl<S, C> CacheControl for CacheHandle<S, C>
where
    S: LedgerStore + 'static,
    C: CacheBackend + 'static,
{
    fn figures(&self) -> CacheFigures {
        let h = self.cached.health();
        CacheFigures {
            hits: h.hits,
            misses: h.misses,
            bypassed_reads: h.bypassed_reads,
            errors: h.errors,
            timeouts: h.timeouts,
            write_throughs: h.write_throughs,
            write_through_failures: h.write_through_failures,
            evictions: h.evictions,
            repaired: h.repaired,
            breaker_state: match h.breaker {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            },
        }
    }

    async fn rebuild(
        &self,
        members: Option<Vec<MemberId>>,
    ) -> rewards_core::error::Result<serde_json::Value> {
        match members {
            Some(list) => {
                for m in &list {
                    self.cached.rebuild(m).await?;
                }
                Ok(json!({"rebuilt": list.len()}))
            }
            None => {
                let members = (self.members)();
                let report = self.cached.rebuild_all(&members).await?;
                Ok(json!({
                    "cleared": true,
                    "considered": report.considered,
                    "filled": report.filled,
                    "skipped": report.skipped,
                    "failed": report.failed,
                }))
            }
        }
    }

    async fn settle(&self, within: std::time::Duration) -> bool {
        self.cached.settle(within).await
    }
}

/// Warms the cache with the most recently active known members.
pub async fn warm<S, C>(cached: &CachedStore<S, C>, members: &[MemberId])
where
    S: LedgerStore + 'static,
    C: CacheBackend + 'static,
{
    match cached
        .warm(WarmPlan::MostRecent(WARM_MEMBERS), members)
        .await
    {
        Ok(r) => tracing::info!(
            considered = r.considered,
            filled = r.filled,
            skipped = r.skipped,
            failed = r.failed,
            "cache warmed"
        ),
        Err(e) => tracing::warn!(error = %e, "cache warming failed; reads fill it"),
    }
}

/// The Redis cache of `config`, connected.
pub async fn connect_redis(config: &Config) -> Result<RedisCache, StartError> {
    let target = if config.redis.cluster_nodes.is_empty() {
        redact_url(config.redis.url.expose())
    } else {
        config.redis.cluster_nodes.join(",")
    };
    let cache = RedisCache::connect(redis_config(config))
        .await
        .map_err(|e| StartError::Input(format!("redis {target}: {e}")))?;
    tracing::info!(redis = %target, "redis cache connected");
    Ok(cache)
}

/// The write-through settings.
pub fn cached_store_config() -> CachedStoreConfig {
    CachedStoreConfig::default()
}

/// The PostgreSQL settings of `config`.
pub fn pg_config(config: &Config) -> PgConfig {
    let p = &config.postgres;
    let mut pg = PgConfig::new(p.url.expose()).with_schema(p.schema.clone());
    if let Some(replica) = &p.replica_url {
        pg = pg.with_replica(replica.expose());
    }
    pg.pool_size = p.pool_size;
    pg.migrate_on_start = p.migrate_on_start;
    pg
}

/// The store of full mode: PostgreSQL, behind a Redis write-through cache
/// when `redis.enabled` (cleared at start, then warmed with the most
/// recently active members the daemon's journal knows, when
/// `redis.warm_on_start`).
pub async fn open_store(
    config: &Config,
    members: Arc<dyn Fn() -> Vec<MemberId> + Send + Sync>,
) -> Result<(Arc<dyn LedgerStore>, Option<Arc<dyn CacheControl>>), StartError> {
    let ledger = LedgerConfig {
        authorization_ttl_secs: i64::from(config.store.authorization_ttl_days) * 86_400,
    };
    let url = redact_url(config.postgres.url.expose());
    let pg = PgStore::connect(pg_config(config), ledger)
        .await
        .map_err(|e| StartError::Input(format!("postgres {url}: {e}")))?;
    tracing::info!(postgres = %url, schema = %config.postgres.schema, "postgres store connected");
    if !config.redis.enabled {
        return Ok((Arc::new(pg), None));
    }
    let cache = connect_redis(config).await?;
    let cached = CachedStore::new(pg, cache, cached_store_config());
    // Dirty marks live in the process: one that crashed between a commit
    // and its write-through, or with members dirty, left entries older than
    // the database that nothing would evict. So every start clears the
    // cache (reads go to the store until that succeeds) before warming it.
    match cached.invalidate_all().await {
        Ok(()) => tracing::info!("cache cleared at start"),
        Err(e) => tracing::warn!(error = %e, "cache not cleared at start; bypassed until repaired"),
    }
    if config.redis.warm_on_start {
        warm(&cached, &members()).await;
    }
    let handle: Arc<dyn CacheControl> = Arc::new(CacheHandle::new(cached.clone(), members));
    Ok((Arc::new(cached), Some(handle)))
}

/// The Kafka source of `config`.
pub async fn kafka_source(
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<Box<dyn Source>, StartError> {
    let k = &config.kafka;
    if let Some(partitions) = k.create_topics {
        let mut topics = vec![(k.topic.as_str(), partitions)];
        if !k.dead_letter_topic.is_empty() {
            topics.push((k.dead_letter_topic.as_str(), partitions));
        }
        if !k.outcomes_topic.is_empty() {
            topics.push((k.outcomes_topic.as_str(), partitions));
        }
        create_topics(&k.brokers, &topics)
            .await
            .map_err(|e| StartError::Input(format!("kafka: {e}")))?;
    }
    let mut kc = KafkaConfig::new(&k.brokers, &k.group_id, &k.topic);
    kc.commit_interval = Duration::from_millis(k.commit_interval_ms);
    for (key, value) in &k.settings {
        kc = kc.set(key, value);
    }
    let source =
        KafkaSource::new(kc, metrics).map_err(|e| StartError::Input(format!("kafka: {e}")))?;
    tracing::info!(brokers = %k.brokers, topic = %k.topic, group = %k.group_id, "kafka source subscribed");
    Ok(Box::new(source))
}

/// The dead-letter topic of `config`.
pub fn dead_letter_sink(config: &Config) -> Result<Arc<dyn DeadLetterSink>, StartError> {
    let k = &config.kafka;
    let sink = KafkaDeadLetters::new(&k.brokers, &k.dead_letter_topic)
        .map_err(|e| StartError::Input(format!("kafka dead-letter topic: {e}")))?;
    Ok(Arc::new(sink))
}

/// The outbox relay of `config` (`kafka.outcomes_topic`), when one is
/// configured: publishes the store's outbox to that topic.
pub fn outbox_relay(
    config: &Config,
    store: Arc<dyn LedgerStore>,
    metrics: Arc<Metrics>,
) -> Result<Option<OutboxRelay>, StartError> {
    let k = &config.kafka;
    if k.outcomes_topic.is_empty() {
        return Ok(None);
    }
    let relay = OutboxRelay::new(
        store,
        OutboxRelayConfig::new(&k.brokers, &k.outcomes_topic),
        metrics,
    )
    .map_err(|e| StartError::Input(format!("kafka outcomes topic: {e}")))?;
    tracing::info!(topic = %k.outcomes_topic, "outbox relay to the outcomes topic");
    Ok(Some(relay))
}

/// Publishes what is left in the outbox once the pipelines have stopped,
/// for at most `within`; what is not published then waits for the next
/// start (the outbox is durable).
pub async fn drain_outbox(relay: &OutboxRelay, within: Duration) {
    let drain = async {
        let mut published = 0usize;
        loop {
            match relay.run_once().await {
                Ok(0) => return Ok(published),
                Ok(n) => published += n,
                Err(e) => return Err((published, e)),
            }
        }
    };
    match tokio::time::timeout(within, drain).await {
        Ok(Ok(published)) => tracing::info!(published, "outbox drained at shutdown"),
        Ok(Err((published, e))) => tracing::warn!(
            error = %e,
            published,
            "outbox not drained at shutdown; the next start publishes the rest"
        ),
        Err(_) => tracing::warn!(
            within_ms = within.as_millis() as u64,
            "outbox not drained in time at shutdown; the next start publishes the rest"
        ),
    }
}
