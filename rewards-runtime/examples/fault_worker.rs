//! A Kafka worker for the fault-injection test (`tests/faults.rs`): consumes
//! a topic in a consumer group, evaluates with a plan compiled from a `.rwd`
//! file, appends to PostgreSQL (one schema) with a Redis write-through cache
//! (one key prefix) and writes dead letters to a JSON-lines file. It runs
//! until SIGTERM or Ctrl-C (a graceful shutdown that commits the offsets) —
//! or until it is killed, which is the point.
//!
//! ```text
//! cargo run -p rewards-runtime --features kafka --example fault_worker -- \
//!     --brokers 127.0.0.1:9092 --topic TOPIC --group GROUP \
//!     --rules examples/rules/cashback.rwd \
//!     --pg postgres://postgres@127.0.0.1:5432/test --schema SCHEMA \
//!     --redis redis://127.0.0.1:6379 --prefix PREFIX \
//!     --dead-letters dead.jsonl
//! ```
//!
//! The schema is migrated at start if needed. Prints `fault_worker: ready`
//! once the store and the consumer are set up, and the run report at a
//! graceful shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rewards_core::ledger::LedgerConfig;
use rewards_core::{Evaluator, LedgerStore};
use rewards_runtime::kafka::{KafkaConfig, KafkaSource};
use rewards_runtime::{JsonLinesDeadLetters, Metrics, Pipeline, PipelineConfig, ProgramRegistry};
use rewards_store::cached::{CachedStore, CachedStoreConfig};
use rewards_store::postgres::{PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

const USAGE: &str = "usage: fault_worker --brokers B --topic T --group G --rules FILE.rwd \
                     --pg URL --schema S --redis URL --prefix P --dead-letters FILE";

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

/// Completes on SIGTERM or Ctrl-C.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let flags = flags()?;
    let brokers = flag(&flags, "brokers")?;
    let topic = flag(&flags, "topic")?;
    let group = flag(&flags, "group")?;
    let rules = flag(&flags, "rules")?;
    let pg = flag(&flags, "pg")?;
    let schema = flag(&flags, "schema")?;
    let redis = flag(&flags, "redis")?;
    let prefix = flag(&flags, "prefix")?;
    let dead_letters = flag(&flags, "dead-letters")?;

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
    let store: Arc<dyn LedgerStore> = Arc::new(CachedStore::new(
        pg_store,
        cache,
        CachedStoreConfig {
            write_through_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            ..CachedStoreConfig::default()
        },
    ));
    let dead = Arc::new(JsonLinesDeadLetters::open(dead_letters).await?);

    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    let pipeline = Pipeline::with_config(
        store,
        programs,
        dead,
        metrics.clone(),
        PipelineConfig::default(),
    );
    let mut source = KafkaSource::new(KafkaConfig::new(brokers, group, topic), metrics)?;
    println!("fault_worker: ready");
    let report = pipeline.run(&mut source, terminated()).await?;
    println!("fault_worker: {report:?}");
    Ok(())
}
