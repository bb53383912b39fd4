//! Kafka test helpers shared by `tests/kafka.rs`, `tests/faults.rs` and
//! `tests/e2e.rs`: the broker address (starting the project's broker when
//! needed), unique names, a producer that writes one record per batch,
//! committed offsets of a group, and a bounded wait.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use rewards_core::{Evaluator, LedgerStore};
use rewards_runtime::kafka::{KafkaConfig, KafkaSource};
use rewards_runtime::{
    Backoff, DeadLetterSink, Metrics, Pipeline, PipelineConfig, ProgramRegistry, RunReport,
};

/// The project's broker script.
pub const TANSU_SCRIPT: &str = "scripts/services/tansu.sh";

/// A bound against hanging for ever, not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The workspace root.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared broker's address (`REWARDS_KAFKA_BROKERS`, else
/// `KAFKA_BROKERS`, else 127.0.0.1:9092), starting the broker with the
/// project script if nothing answers there. Fails naming the script.
pub fn brokers() -> String {
    static BROKERS: OnceLock<Result<String, String>> = OnceLock::new();
    BROKERS
        .get_or_init(|| {
            let addr = std::env::var("REWARDS_KAFKA_BROKERS")
                .or_else(|_| std::env::var("KAFKA_BROKERS"))
                .unwrap_or_else(|_| "127.0.0.1:9092".to_string());
            if reachable(&addr) {
                return Ok(addr);
            }
            let output = std::process::Command::new("bash")
                .arg(root().join(TANSU_SCRIPT))
                .arg("start")
                .output()
                .map_err(|e| format!("cannot run {TANSU_SCRIPT}: {e}"))?;
            if output.status.success() && reachable(&addr) {
                return Ok(addr);
            }
            Err(format!(
                "no Kafka broker on {addr} and `{TANSU_SCRIPT} start` failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "Kafka integration tests need the tansu broker. Run `{TANSU_SCRIPT} build` \
                 (once, ~10 minutes) and `{TANSU_SCRIPT} start`, or set REWARDS_KAFKA_BROKERS.\n{e}"
            )
        })
}

/// Something accepts TCP connections at `addr`.
pub fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// A name unique to this process and moment (`rt-NAME-PID-NANOS`), usable
/// as a topic, group, key prefix; [`unique_ident`] for SQL identifiers.
pub fn unique(name: &str) -> String {
    format!("rt-{name}-{}-{}", std::process::id(), nanos())
}

/// A unique lower-case SQL identifier (`NAME_PID_NANOS`).
pub fn unique_ident(name: &str) -> String {
    format!("{name}_{}_{}", std::process::id(), nanos())
}

fn nanos() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos + u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A producer writing one record per batch: tansu 0.6.0 serves nothing to
/// a fetch that starts inside a multi-record batch (a consumer resuming
/// from a committed offset mid-batch would stall), which real Kafka
/// handles. Single-record batches keep every committed offset aligned.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer")
}

/// Produces `(key, payload)` records and waits until all are acknowledged;
/// returns where each landed (partition, offset), in input order.
pub async fn produce(brokers: &str, topic: &str, records: &[(String, String)]) -> Vec<(i32, i64)> {
    produce_with(&producer(brokers), topic, records).await
}

/// [`produce`] with a given producer.
pub async fn produce_with(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> Vec<(i32, i64)> {
    let mut pending = Vec::with_capacity(records.len());
    for (key, payload) in records {
        let record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(payload.as_str());
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    let mut placed = Vec::with_capacity(pending.len());
    for delivery in pending {
        placed.push(
            delivery
                .await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("produced"),
        );
    }
    placed
}

/// One past the last offset produced, per partition.
pub fn ends(placed: &[(i32, i64)], partitions: i32) -> Vec<i64> {
    (0..partitions)
        .map(|p| {
            placed
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, o)| o + 1)
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Keyed by the member id inside the JSON line (`none` when unreadable).
pub fn keyed(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let key = value["member"].as_str().unwrap_or("none").to_string();
            (key, line.clone())
        })
        .collect()
}

/// Committed offsets of `group` on `topic` (0 where none, or when the
/// broker does not answer).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return vec![0; usize::try_from(partitions).unwrap_or(0)];
    };
    (0..partitions)
        .map(|p| {
            committed
                .find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(0)
                .max(0)
        })
        .collect()
}

/// Waits (bounded by [`PATIENCE`]) until `group` has committed `ends`;
/// `context` is added to the failure message (a worker log, say).
pub async fn wait_committed(
    brokers: &str,
    group: &str,
    topic: &str,
    want: &[i64],
    context: impl Fn() -> String,
) {
    let partitions = i32::try_from(want.len()).expect("partitions");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let at = committed(brokers, group, topic, partitions);
        if at.as_slice() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for group {group} to commit {want:?} (at {at:?}); {}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded by [`PATIENCE`]) until `done()` holds.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pipeline settings of the in-process Kafka tests: 4 workers, short
/// backoff.
pub fn config() -> PipelineConfig {
    PipelineConfig {
        workers: 4,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(50),
        },
        ..PipelineConfig::default()
    }
}

/// A pipeline running over a Kafka source in this process.
pub struct Running {
    pub tracker: Arc<rewards_runtime::kafka::OffsetTracker>,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<Result<RunReport, rewards_runtime::RuntimeError>>,
}

impl Running {
    /// Graceful shutdown; returns the run report.
    pub async fn shutdown(self) -> RunReport {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("run")
    }
}

/// Runs `pipeline` over a Kafka source with `kafka` until shut down.
pub fn start(pipeline: &Pipeline, kafka: KafkaConfig) -> Running {
    let mut source = KafkaSource::new(kafka, pipeline.metrics().clone()).expect("consumer");
    let tracker = source.tracker().clone();
    let pipeline = pipeline.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        pipeline
            .run(&mut source, async {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        tracker,
        stop,
        task,
    }
}

/// A pipeline over `store` with one plan and `dead` letters.
pub fn pipeline_with(
    store: Arc<dyn LedgerStore>,
    plan: Arc<dyn Evaluator>,
    dead: Arc<dyn DeadLetterSink>,
) -> (Pipeline, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    (
        Pipeline::with_config(store, programs, dead, metrics.clone(), config()),
        metrics,
    )
}
