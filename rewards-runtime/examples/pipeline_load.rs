//! Measures the pipeline: throughput and latency with the in-memory store
//! and the test evaluator (points per whole currency unit).
//!
//! ```text
//! cargo run --release -p rewards-runtime --example pipeline_load -- in-process [COUNT] [CONCURRENCY]
//! cargo run --release -p rewards-runtime --example pipeline_load -- file [COUNT]
//! cargo run --release -p rewards-runtime --example pipeline_load -- kafka [RATE_PER_S] [SECONDS] [BROKERS]
//! cargo run --release -p rewards-runtime --example pipeline_load -- kafka-full [RATE_PER_S] [SECONDS] [BROKERS] [BACKLOG]
//! ```
//!
//! `kafka` produces at a fixed rate to a fresh 4-partition topic on a
//! running broker (`scripts/services/tansu.sh start`) and reports the
//! end-to-end latency (producer timestamp → ack after the store append),
//! the figure to compare with the broker's own produce → consume floor.
//!
//! `kafka-full` is the end-to-end report of `docs/performance.md` ("End to
//! end over Kafka"), in one run and on the same producer settings:
//!
//! 1. **broker only**: RATE/s for SECONDS to a fresh topic, read by a plain
//!    consumer group (`fetch.wait.max.ms=5`), no processing: produce →
//!    consume latency;
//! 2. **end to end**: the same load, generated transactions (10,000
//!    members), through the pipeline with the cashback ruleset and
//!    `CachedStore<PgStore, RedisCache>` (`DATABASE_URL`, `REDIS_URL`; a
//!    fresh schema and key prefix, dropped at the end): produce → durable
//!    (the store's append returned) latency;
//! 3. **max sustained rate**: BACKLOG transactions (default 20,000) produced
//!    first, then drained by a fresh pipeline: durable transactions per
//!    second.
//!
//! `REWARDS_LOAD_WORKERS` (pipeline workers, default 4),
//! `REWARDS_LOAD_PG_POOL` (PostgreSQL connections, default 8),
//! `REWARDS_LOAD_LINGER_MS` (the producer's `linger.ms`, default 5) and
//! `REWARDS_LOAD_COMMIT_MS` (the source's offset commit interval, default
//! `KafkaConfig`'s 1 s) change the full mode's settings. Each latency report also gives
//! p50/p95 per 10 s of sending, which shows a latency growing over the run.
//!
//! Latencies are exact (each message's send instant against the instant
//! it was consumed / made durable, one clock), printed as p50/p95/p99/max.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use rewards_core::memory::MemoryStore;
use rewards_core::Transaction;
use rewards_runtime::metrics::Histogram;
use rewards_runtime::{
    in_process, JsonLinesSource, MemoryDeadLetters, Metrics, Pipeline, PipelineConfig,
    ProgramRegistry,
};

fn ms(us: Option<u64>) -> String {
    match us {
        Some(u64::MAX) => "> 30 s".into(),
        Some(us) => format!("<= {}.{:03} ms", us / 1000, us % 1000),
        None => "n/a".into(),
    }
}

fn print_histogram(name: &str, h: &Histogram) {
    println!(
        "{name}: n={} p50 {} p95 {} p99 {}",
        h.count(),
        ms(h.quantile_upper_bound(500)),
        ms(h.quantile_upper_bound(950)),
        ms(h.quantile_upper_bound(990)),
    );
}

fn pipeline(metrics: &Arc<Metrics>) -> (Pipeline, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::default());
    let programs = Arc::new(ProgramRegistry::single(
        common::PointsPerUnit::new(1, 1).arc(),
        metrics.clone(),
    ));
    let pipeline = Pipeline::with_config(
        store.clone(),
        programs,
        Arc::new(MemoryDeadLetters::new()),
        metrics.clone(),
        PipelineConfig::default(),
    );
    (pipeline, store)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("in-process");
    let metrics = Arc::new(Metrics::new());
    let (pipeline, _store) = pipeline(&metrics);
    match mode {
        "in-process" => {
            let count: usize = arg(&args, 2, 100_000);
            let concurrency: usize = arg(&args, 3, 64).max(1);
            let (lines, _) = common::workload("load", count, 10_000, 1);
            let txs: Vec<Transaction> = lines
                .iter()
                .map(|l| Transaction::from_json_str(l))
                .collect::<Result<_, _>>()?;
            let (mut source, submitter) = in_process(1024);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(async move {
                pipeline
                    .run(&mut source, async {
                        let _ = stopped.await;
                    })
                    .await
            });
            let started = Instant::now();
            let chunks: Vec<Vec<Transaction>> = txs
                .chunks(count.div_ceil(concurrency).max(1))
                .map(<[Transaction]>::to_vec)
                .collect();
            let mut tasks = Vec::new();
            for chunk in chunks {
                let submitter = submitter.clone();
                tasks.push(tokio::spawn(async move {
                    for tx in chunk {
                        let _ = submitter.submit(tx).await;
                    }
                }));
            }
            for task in tasks {
                task.await?;
            }
            let elapsed = started.elapsed();
            let _ = stop.send(());
            let report = running.await??;
            println!(
                "in-process: {} applied in {:.3?} = {} tx/s ({} concurrent submitters)",
                report.applied,
                elapsed,
                report.applied * 1000 / elapsed.as_millis().max(1) as u64,
                concurrency
            );
        }
        "file" => {
            let count: usize = arg(&args, 2, 100_000);
            let (lines, _) = common::workload("file", count, 10_000, 1);
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("tx.jsonl");
            tokio::fs::write(&path, lines.join("\n")).await?;
            let mut source = JsonLinesSource::open(&path).await?;
            let started = Instant::now();
            let report = pipeline.run(&mut source, std::future::pending()).await?;
            let elapsed = started.elapsed();
            println!(
                "file: {} applied in {:.3?} = {} tx/s",
                report.applied,
                elapsed,
                report.applied * 1000 / elapsed.as_millis().max(1) as u64
            );
        }
        #[cfg(feature = "kafka")]
        "kafka" => kafka(&args, pipeline, metrics.clone()).await?,
        #[cfg(feature = "kafka")]
        "kafka-full" => return full::run(&args).await,
        other => return Err(format!("unknown mode {other}").into()),
    }
    print_histogram("evaluation", &metrics.evaluation_us);
    print_histogram("store append", &metrics.append_us);
    print_histogram("pipeline (receipt -> ack)", &metrics.pipeline_us);
    if metrics.end_to_end_us.count() > 0 {
        print_histogram("end-to-end (produce -> ack)", &metrics.end_to_end_us);
    }
    println!(
        "batches: {} calls, mean {} tx/call",
        metrics.batch_size.count(),
        metrics.batch_size.sum() / metrics.batch_size.count().max(1)
    );
    Ok(())
}

#[cfg(feature = "kafka")]
async fn kafka(
    args: &[String],
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
) -> Result<(), Box<dyn std::error::Error>> {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rewards_runtime::kafka::{create_topics, KafkaConfig, KafkaSource};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    let rate: u64 = arg(args, 2, 1000).max(1);
    let seconds: u64 = arg(args, 3, 10).max(1);
    let brokers: String = arg(args, 4, "127.0.0.1:9092".to_string());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let topic = format!("load-{stamp}");
    create_topics(&brokers, &[(&topic, 4)]).await?;
    let mut source = KafkaSource::new(
        KafkaConfig::new(&brokers, &format!("load-group-{stamp}"), &topic),
        metrics.clone(),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        pipeline
            .run(&mut source, async {
                let _ = stopped.await;
            })
            .await
    });
    // Let the consumer join its group before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()?;
    let count = rate * seconds;
    let (lines, _) = common::workload("kload", count as usize, 10_000, 1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let started = Instant::now();
    let mut pending = Vec::with_capacity(lines.len());
    for line in &lines {
        tick.tick().await;
        let value: serde_json::Value = serde_json::from_str(line)?;
        let key = value["member"].as_str().unwrap_or_default().to_string();
        let record = FutureRecord::to(&topic).key(&key).payload(line);
        pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in pending {
        let _ = delivery.await;
    }
    while metrics.acked.load(Ordering::Relaxed) < count {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let report = running.await??;
    println!(
        "kafka: {} applied at {rate}/s offered in {:.3?}",
        report.applied, elapsed
    );
    Ok(())
}

/// The `kafka-full` mode: broker-only baseline, end to end through
/// PostgreSQL and Redis, and the maximum sustained rate.
#[cfg(feature = "kafka")]
mod full {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    use rewards_core::error::Result as StoreResult;
    use rewards_core::generate::{Generator, GeneratorConfig};
    use rewards_core::ledger::Receipt;
    use rewards_core::{Evaluator, LedgerStore, Outcome, Transaction};
    use rewards_runtime::kafka::{create_topics, KafkaConfig, KafkaSource};
    use rewards_runtime::{MemoryDeadLetters, Metrics, Pipeline, PipelineConfig, ProgramRegistry};

    use super::common::fault::{database_url, plan, redis_url};
    use super::common::kafka::unique_ident;

    type Error = Box<dyn std::error::Error>;

    /// Send instants by message id, and the latencies observed.
    #[derive(Default)]
    struct Clock {
        sent: Mutex<HashMap<String, Instant>>,
        /// (send instant, latency) of each message observed.
        observed: Mutex<Vec<(Instant, Duration)>>,
        done: AtomicU64,
    }

    impl Clock {
        fn sent(&self, id: &str) {
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id.to_string(), Instant::now());
        }

        fn observe(&self, id: &str) {
            let now = Instant::now();
            let sent = self
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(id)
                .copied();
            if let Some(sent) = sent {
                self.observed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((sent, now.saturating_duration_since(sent)));
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }

        fn report(&self, name: &str) -> (Duration, Duration, Duration) {
            let observed = self
                .observed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let mut all: Vec<Duration> = observed.iter().map(|(_, d)| *d).collect();
            all.sort();
            let (p50, p95, p99) = (
                percentile(&all, 500),
                percentile(&all, 950),
                percentile(&all, 990),
            );
            println!(
                "{name}: n={} p50 {:.1?} p95 {:.1?} p99 {:.1?} max {:.1?}",
                all.len(),
                p50,
                p95,
                p99,
                all.last().copied().unwrap_or_default()
            );
            // By send time: a latency that grows over the run (a broker
            // slowing as it fills, a table growing) shows here, not in the
            // percentiles of the whole.
            if let Some(first) = observed.iter().map(|(sent, _)| *sent).min() {
                let mut windows: Vec<Vec<Duration>> = Vec::new();
                for (sent, latency) in &observed {
                    let at = usize::try_from(
                        sent.saturating_duration_since(first).as_secs() / WINDOW_SECS,
                    )
                    .unwrap_or(0);
                    if windows.len() <= at {
                        windows.resize_with(at + 1, Vec::new);
                    }
                    windows[at].push(*latency);
                }
                let line: Vec<String> = windows
                    .iter_mut()
                    .enumerate()
                    .map(|(i, w)| {
                        w.sort();
                        format!(
                            "{}s {:.1?}/{:.1?}",
                            i as u64 * WINDOW_SECS,
                            percentile(w, 500),
                            percentile(w, 950)
                        )
                    })
                    .collect();
                println!(
                    "  p50/p95 by {WINDOW_SECS} s of sending: {}",
                    line.join(", ")
                );
            }
            (p50, p95, p99)
        }
    }

    /// The width of the windows of [`Clock::report`].
    const WINDOW_SECS: u64 = 10;

    /// The `permille`th of sorted latencies (zero when there are none).
    fn percentile(sorted: &[Duration], permille: usize) -> Duration {
        sorted
            .get((sorted.len() * permille / 1000).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    /// The store, noting when each transaction became durable.
    struct Timed<S> {
        inner: S,
        clock: Arc<Clock>,
    }

    rewards_core::forward_ledger_store! {
        impl<S: LedgerStore> LedgerStore for Timed<S> {
            forward self.inner;
            default outbox_fetch, outbox_ack;
            async fn append(&self, tx: &Transaction, outcome: &Outcome) -> StoreResult<Receipt> {
                let receipt = self.inner.append(tx, outcome).await?;
                self.clock.observe(tx.id.as_str());
                Ok(receipt)
            }
            async fn append_batch(
                &self,
                items: &[(Transaction, Outcome)],
            ) -> StoreResult<Vec<StoreResult<Receipt>>> {
                let results = self.inner.append_batch(items).await?;
                for ((tx, _), result) in items.iter().zip(&results) {
                    if result.is_ok() {
                        self.clock.observe(tx.id.as_str());
                    }
                }
                Ok(results)
            }
        }
    }

    fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
        args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
    }

    /// A setting from the environment, or its default.
    fn env_or(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// The load's producer (both phases): `REWARDS_LOAD_LINGER_MS` (default
    /// 5, librdkafka's own default) lets records share a batch. tansu's
    /// in-memory engine lists every batch of a partition on each fetch, so
    /// one record per batch (`linger.ms=0`, used up to session 5) makes its
    /// fetches slow down as the topic grows (see docs/performance.md).
    fn producer(brokers: &str) -> Result<FutureProducer, Error> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("linger.ms", env_or("REWARDS_LOAD_LINGER_MS", 5).to_string())
            .create()?)
    }

    /// (id, member key, JSON line) of generated transactions.
    fn transactions(count: usize, prefix: &str) -> Result<Vec<(String, String, String)>, Error> {
        let config = GeneratorConfig {
            seed: 5,
            transactions: count,
            members: 10_000,
            id_prefix: prefix.into(),
            ..GeneratorConfig::default()
        };
        Ok(Generator::new(config)?
            .map(|tx| {
                (
                    tx.id.as_str().to_string(),
                    tx.member.as_str().to_string(),
                    tx.to_json_string(),
                )
            })
            .collect())
    }

    /// Produces `records` at `rate` per second (all of them at once when
    /// `rate` is 0), noting each send instant; waits for the deliveries.
    async fn produce_at(
        producer: &FutureProducer,
        topic: &str,
        records: &[(String, String, String)],
        rate: u64,
        clock: &Clock,
    ) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut pending = Vec::with_capacity(records.len());
        for (id, key, line) in records {
            if rate > 0 {
                tick.tick().await;
            }
            clock.sent(id);
            let record = FutureRecord::to(topic).key(key).payload(line);
            pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        let offered = started.elapsed();
        for delivery in pending {
            delivery.await?.map_err(|(e, _)| e)?;
        }
        Ok(offered)
    }

    async fn wait_done(clock: &Clock, want: u64, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        while clock.done.load(Ordering::Relaxed) < want {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {want} done after {limit:?}",
                    clock.done.load(Ordering::Relaxed)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Broker only: produce → consume in a group, no processing.
    async fn baseline(
        brokers: &str,
        rate: u64,
        seconds: u64,
    ) -> Result<(Duration, Duration, Duration), Error> {
        let topic = unique_ident("load_base");
        create_topics(brokers, &[(&topic, 4)]).await?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique_ident("load_base_group"))
            .set("enable.auto.commit", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "5")
            .create()?;
        consumer.subscribe(&[&topic])?;
        let clock = Arc::new(Clock::default());
        let reader = {
            let clock = clock.clone();
            tokio::spawn(async move {
                loop {
                    match consumer.recv().await {
                        Ok(m) => {
                            if let Some(Ok(id)) = m.key_view::<str>() {
                                clock.observe(id);
                            }
                        }
                        Err(e) => eprintln!("baseline consumer: {e}"),
                    }
                }
            })
        };
        // Let the consumer join its group before the clock starts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let count = rate * seconds;
        // The key is the id here: only the latency matters.
        let records: Vec<(String, String, String)> = transactions(count as usize, "base-")?
            .into_iter()
            .map(|(id, _, line)| (id.clone(), id, line))
            .collect();
        let offered = produce_at(&producer(brokers)?, &topic, &records, rate, &clock).await?;
        wait_done(&clock, count, Duration::from_secs(120)).await?;
        reader.abort();
        println!("broker only: {count} at {rate}/s offered over {offered:.1?}");
        Ok(clock.report("broker only (produce -> consume)"))
    }

    async fn full_pipeline(
        pg: &rewards_store::postgres::PgConfig,
        prefix: &str,
        clock: Arc<Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Pipeline, Error> {
        use rewards_store::cached::{CachedStore, CachedStoreConfig};
        use rewards_store::postgres::PgStore;
        use rewards_store::redis::{RedisCache, RedisCacheConfig};
        let mut pg = pg.clone();
        if let Some(size) = std::env::var("REWARDS_LOAD_PG_POOL")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            pg.pool_size = size;
        }
        let store = CachedStore::new(
            PgStore::connect(pg, rewards_core::ledger::LedgerConfig::default()).await?,
            RedisCache::new(RedisCacheConfig::single(redis_url()).key_prefix(prefix))?,
            CachedStoreConfig::default(),
        );
        let plan: Arc<dyn Evaluator> = Arc::new(plan(None));
        let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
        Ok(Pipeline::with_config(
            Arc::new(Timed {
                inner: store,
                clock,
            }),
            programs,
            Arc::new(MemoryDeadLetters::new()),
            metrics,
            PipelineConfig {
                workers: std::env::var("REWARDS_LOAD_WORKERS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(PipelineConfig::default().workers),
                ..PipelineConfig::default()
            },
        ))
    }

    /// Runs the pipeline over `topic` until `want` transactions are
    /// durable (or dead-lettered); returns the time from start to done.
    async fn consume(
        brokers: &str,
        topic: &str,
        pipeline: Pipeline,
        clock: &Clock,
        want: u64,
        started_with: impl std::future::Future<Output = Result<(), Error>>,
    ) -> Result<Duration, Error> {
        let metrics = pipeline.metrics().clone();
        let mut config = KafkaConfig::new(brokers, &unique_ident("load_group"), topic);
        if let Ok(ms) = std::env::var("REWARDS_LOAD_COMMIT_MS") {
            config.commit_interval = Duration::from_millis(ms.parse::<u64>()?.max(1));
        }
        let mut source = KafkaSource::new(config, metrics.clone())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            pipeline
                .run(&mut source, async {
                    let _ = stopped.await;
                })
                .await
        });
        let started = Instant::now();
        started_with.await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let settled = clock.done.load(Ordering::Relaxed) + metrics.dead_letters_total();
            if settled >= want {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("only {settled} of {want} settled after 600 s").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        let _ = stop.send(());
        let report = running.await??;
        println!("  run report: {report:?}");
        Ok(elapsed)
    }

    pub async fn run(args: &[String]) -> Result<(), Error> {
        let rate: u64 = arg(args, 2, 1000).max(1);
        let seconds: u64 = arg(args, 3, 60).max(1);
        let brokers: String = arg(args, 4, "127.0.0.1:9092".to_string());
        let backlog: u64 = arg(args, 5, 20_000);

        let (b50, b95, b99) = baseline(&brokers, rate, seconds).await?;

        let pg = rewards_store::postgres::PgConfig::new(database_url())
            .with_schema(unique_ident("load"));
        rewards_store::postgres::migrate_with_config(&pg).await?;
        let prefix = unique_ident("load");
        let result = async {
            // End to end at the offered rate.
            let topic = unique_ident("load_e2e");
            create_topics(&brokers, &[(&topic, 4)]).await?;
            let clock = Arc::new(Clock::default());
            let metrics = Arc::new(Metrics::new());
            let count = rate * seconds;
            let records = transactions(count as usize, "e2e-")?;
            let pipeline = full_pipeline(&pg, &prefix, clock.clone(), metrics.clone()).await?;
            let producer = producer(&brokers)?;
            let elapsed = consume(&brokers, &topic, pipeline, &clock, count, async {
                // Let the consumer join its group before the clock starts.
                tokio::time::sleep(Duration::from_secs(3)).await;
                let offered = produce_at(&producer, &topic, &records, rate, &clock).await?;
                println!("end to end: {count} at {rate}/s offered over {offered:.1?}");
                Ok(())
            })
            .await?;
            println!("  settled {elapsed:.1?} after the consumer started");
            let (e50, e95, e99) =
                clock.report("end to end (produce -> durable in PostgreSQL + Redis)");
            super::print_histogram("  store append", &metrics.append_us);
            super::print_histogram("  receipt -> ack", &metrics.pipeline_us);
            println!(
                "  batches: {} calls, mean {} tx/call",
                metrics.batch_size.count(),
                metrics.batch_size.sum() / metrics.batch_size.count().max(1)
            );

            // Max sustained rate: drain a backlog.
            let topic = unique_ident("load_backlog");
            create_topics(&brokers, &[(&topic, 4)]).await?;
            let clock = Arc::new(Clock::default());
            let metrics = Arc::new(Metrics::new());
            let records = transactions(backlog as usize, "backlog-")?;
            produce_at(&producer, &topic, &records, 0, &clock).await?;
            let pipeline = full_pipeline(&pg, &prefix, clock.clone(), metrics.clone()).await?;
            let elapsed = consume(&brokers, &topic, pipeline, &clock, backlog, async {
                Ok(())
            })
            .await?;
            let per_s = u128::from(backlog) * 1000 / elapsed.as_millis().max(1);
            println!(
                "max sustained: {backlog} backlog drained in {elapsed:.1?} = {per_s} tx/s \
                 (mean batch {})",
                metrics.batch_size.sum() / metrics.batch_size.count().max(1)
            );
            let ratio = |e: Duration, b: Duration| e.as_micros() * 100 / b.as_micros().max(1);
            println!(
                "summary: broker p50/p95/p99 {b50:.1?}/{b95:.1?}/{b99:.1?}; end to end \
                 {e50:.1?}/{e95:.1?}/{e99:.1?}; p95 ratio {}%; max sustained {per_s} tx/s",
                ratio(e95, b95)
            );
            Ok::<(), Error>(())
        }
        .await;
        let _ = rewards_store::postgres::drop_schema(&pg).await;
        if let Ok(cache) = rewards_store::redis::RedisCache::new(
            rewards_store::redis::RedisCacheConfig::single(redis_url()).key_prefix(&prefix),
        ) {
            let _ = rewards_core::store::BalanceCache::clear(&cache).await;
        }
        result
    }
}
