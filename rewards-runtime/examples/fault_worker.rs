//! A Kafka worker for the fault-injection tests (`tests/faults.rs`) and the
//! end-to-end test (`tests/e2e.rs`): consumes a topic in a consumer group,
//! evaluates with a plan compiled from a `.rwd` file, appends to PostgreSQL
//! (one schema) with a Redis write-through cache (one key prefix) and
//! writes dead letters to a JSON-lines file or a DLQ topic. It runs until
//! SIGTERM or Ctrl-C (a graceful shutdown that commits the offsets) — or
//! until it is killed, which is the point.
//!
//! ```text
//! RUST_LOG=info,rewards_runtime=debug \
//! cargo run -p rewards-runtime --features kafka --example fault_worker -- \
//!     --brokers 127.0.0.1:9092 --topic TOPIC --group GROUP \
//!     --rules examples/rules/cashback.rwd \
//!     --pg postgres://postgres@127.0.0.1:5432/test --schema SCHEMA \
//!     --redis redis://127.0.0.1:6379 --prefix PREFIX \
//!     --dead-letters dead.jsonl        # or --dlq-topic TOPIC
//!     [--session-timeout-ms 6000] [--instance-id ID]
//! ```
//!
//! `REWARDS_KAFKA_DEBUG=cgrp` turns on librdkafka's debug contexts
//! (logged through `RUST_LOG`, e.g. `info,librdkafka=debug,rdkafka=debug`).
//! `--session-timeout-ms` (default 6000) bounds how long the group waits
//! for a killed member before its partitions move (heartbeats every
//! 500 ms). `--instance-id` turns on static membership
//! (`group.instance.id`): a restarted worker with the same id takes its
//! old member's place at once instead of waiting for that session to end.
//!
//! The schema is migrated at start if needed. Prints `fault_worker: ready`
//! once the store and the consumer are set up, and the run report at a
//! graceful shutdown. Logs (assignment, revocation, commits at debug) go
//! to stderr, filtered by `RUST_LOG` (default `info`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rewards_core::ledger::LedgerConfig;
use rewards_core::{Evaluator, LedgerStore};
use rewards_runtime::kafka::{KafkaConfig, KafkaDeadLetters, KafkaSource};
use rewards_runtime::shutdown::terminated;
use rewards_runtime::{
    DeadLetterSink, JsonLinesDeadLetters, Metrics, Pipeline, PipelineConfig, ProgramRegistry,
};
use rewards_store::cached::{CachedStore, CachedStoreConfig};
use rewards_store::postgres::{PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

const USAGE: &str = "usage: fault_worker --brokers B --topic T --group G --rules FILE.rwd \
                     --pg URL --schema S --redis URL --prefix P \
                     (--dead-letters FILE | --dlq-topic TOPIC) \
                     [--session-timeout-ms MS] [--instance-id ID]";

fn flags() -> Result<HashMap<String, String>, String> {
    let mut args = std::env::args().skip(1);
    let mut flags = HashMap::new();
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument {flag:?}\n{USAGE}"));
        };
        let value = args
            .next()
            .ok_or_else(|| format!("--{name} needs a value\n{USAGE}"))?;
        flags.insert(name.to_string(), value);
    }
    Ok(flags)
}

fn flag<'a>(flags: &'a HashMap<String, String>, name: &str) -> Result<&'a str, String> {
    flags
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("missing --{name}\n{USAGE}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = flags()?;
    let brokers = flag(&flags, "brokers")?;
    let topic = flag(&flags, "topic")?;
    let group = flag(&flags, "group")?;
    let rules = flag(&flags, "rules")?;
    let pg = flag(&flags, "pg")?;
    let schema = flag(&flags, "schema")?;
    let redis = flag(&flags, "redis")?;
    let prefix = flag(&flags, "prefix")?;
    let session_timeout: u64 = flags
        .get("session-timeout-ms")
        .map(|v| v.parse())
        .transpose()
        .map_err(|e| format!("--session-timeout-ms: {e}"))?
        .unwrap_or(6000);

    let source = std::fs::read_to_string(rules).map_err(|e| format!("{rules}: {e}"))?;
    let plan = rewards_dsl::compile_source(&source, &rewards_dsl::HostFunctions::new())
        .map_err(|diags| format!("{rules} does not compile: {diags:?}"))?;
    let plan: Arc<dyn Evaluator> = Arc::new(plan);

    let pg_store = PgStore::connect(
        PgConfig::new(pg).with_schema(schema),
        LedgerConfig::default(),
    )
    .await?;
    let cache = RedisCache::new(RedisCacheConfig::single(redis).key_prefix(prefix))?;
    let cached = CachedStore::new(
        pg_store,
        cache,
        CachedStoreConfig {
            write_through_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            ..CachedStoreConfig::default()
        },
    );
    // A worker killed between a commit and its write-through (or with
    // members still dirty) leaves stale entries behind: start from an
    // empty cache, as the daemon does.
    if let Err(e) = cached.invalidate_all().await {
        tracing::warn!(error = %e, "cache not cleared at start; bypassed until repaired");
    }
    let store: Arc<dyn LedgerStore> = Arc::new(cached.clone());
    let dead: Arc<dyn DeadLetterSink> = match (flags.get("dead-letters"), flags.get("dlq-topic")) {
        (Some(file), None) => Arc::new(JsonLinesDeadLetters::open(file).await?),
        (None, Some(dlq)) => Arc::new(KafkaDeadLetters::new(brokers, dlq)?),
        _ => return Err(format!("give one of --dead-letters, --dlq-topic\n{USAGE}").into()),
    };

    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    let pipeline = Pipeline::with_config(
        store,
        programs,
        dead,
        metrics.clone(),
        PipelineConfig::default(),
    );
    let mut kafka = KafkaConfig::new(brokers, group, topic)
        .set("session.timeout.ms", &session_timeout.to_string())
        .set(
            "heartbeat.interval.ms",
            &(session_timeout / 6).clamp(100, 3000).to_string(),
        );
    if let Ok(debug) = std::env::var("REWARDS_KAFKA_DEBUG") {
        // librdkafka's own debug contexts (`cgrp`, `fetch`, ...), logged
        // through `RUST_LOG=librdkafka=debug` or `rdkafka=trace`.
        kafka = kafka.set("debug", &debug);
    }
    if let Some(id) = flags.get("instance-id") {
        kafka = kafka.set("group.instance.id", id);
    }
    let mut source = KafkaSource::new(kafka, metrics)?;
    println!("fault_worker: ready");
    let report = pipeline.run(&mut source, terminated()).await?;
    let settled = cached.settle(Duration::from_secs(10)).await;
    println!("fault_worker: {report:?} cache settled: {settled}");
    Ok(())
}
