//! Measures the pipeline: throughput and latency with the in-memory store
//! and the test evaluator (points per whole currency unit).
//!
//! ```text
//! cargo run --release -p rewards-runtime --example pipeline_load -- in-process [COUNT] [CONCURRENCY]
//! cargo run --release -p rewards-runtime --example pipeline_load -- file [COUNT]
//! cargo run --release -p rewards-runtime --example pipeline_load -- kafka [RATE_PER_S] [SECONDS] [BROKERS]
//! ```
//!
//! `kafka` produces at a fixed rate to a fresh 4-partition topic on a
//! running broker (`scripts/services/tansu.sh start`) and reports the
//! end-to-end latency (producer timestamp → ack after the store append),
//! the figure to compare with the broker's own produce → consume floor.

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
