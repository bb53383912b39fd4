//! Proof under faults: the worker process (`examples/fault_worker.rs`:
//! Kafka source, the cashback plan, PostgreSQL with Redis write-through) is
//! killed with SIGKILL at random points and restarted, again and again;
//! afterwards every member's balance in PostgreSQL and through the Redis
//! cache equals the reference computed from the same input by the
//! in-memory engine (the compiled plan over a `MemoryStore`). Then the
//! whole topic is consumed again from offset zero by a new consumer group
//! into the same schema: nothing changes.
//!
//! ```text
//! # short (CI): 3 cycles, 3000 transactions
//! cargo test -p rewards-runtime --features kafka --test faults -- --nocapture
//! # full: 20 cycles
//! REWARDS_FAULT_CYCLES=20 REWARDS_FAULT_TRANSACTIONS=5000 \
//!     cargo test -p rewards-runtime --features kafka --test faults -- --nocapture
//! ```
//!
//! Settings (environment): `REWARDS_FAULT_CYCLES` (kills, default 3),
//! `REWARDS_FAULT_TRANSACTIONS` (default 3000), `REWARDS_FAULT_SEED`
//! (generator and kill delays, default 9), `REWARDS_KAFKA_BROKERS`
//! (default 127.0.0.1:9092, started with `scripts/services/tansu.sh start`
//! when absent), `DATABASE_URL` (default the shared `test` database),
//! `REDIS_URL` (default the shared redis on 6379). Each run uses its own
//! topic, groups, PostgreSQL schema (dropped at the end) and Redis key
//! prefix (cleared at the end). See `docs/faults.md`.

#![cfg(feature = "kafka")]
// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;

use rewards_core::generate::{Generator, GeneratorConfig};
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::store::{BalanceCache, LedgerStore};
use rewards_core::{Evaluator, MemberId, Transaction};
use rewards_runtime::kafka::create_topics;
use rewards_store::cached::{CachedStore, CachedStoreConfig};
use rewards_store::postgres::{drop_schema, migrate_with_config, PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

const SCRIPT: &str = "scripts/services/tansu.sh";
const RULES: &str = "examples/rules/cashback.rwd";
const PARTITIONS: i32 = 4;
/// A bound against hanging for ever, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The broker address, starting the broker with the project script if needed.
fn brokers() -> String {
    static BROKERS: OnceLock<Result<String, String>> = OnceLock::new();
    BROKERS
        .get_or_init(|| {
            let addr = std::env::var("REWARDS_KAFKA_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".to_string());
            if reachable(&addr) {
                return Ok(addr);
            }
            let output = Command::new("bash")
                .arg(root().join(SCRIPT))
                .arg("start")
                .output()
                .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
            if output.status.success() && reachable(&addr) {
                return Ok(addr);
            }
            Err(format!(
                "no Kafka broker on {addr} and `{SCRIPT} start` failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "the fault test needs the tansu broker. Run `{SCRIPT} build` \
                 (once, ~10 minutes) and `{SCRIPT} start`, or set REWARDS_KAFKA_BROKERS.\n{e}"
            )
        })
}

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A name unique to this run.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}_{}_{nanos}", std::process::id())
}

/// Seeded delays (splitmix64), so a run's kill points can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Builds the worker example once (cargo builds examples only on request)
/// and returns its path.
fn worker_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = option_env!("CARGO").unwrap_or("cargo");
            let mut command = Command::new(cargo);
            command
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "build",
                    "-p",
                    "rewards-runtime",
                    "--features",
                    "kafka",
                    "--example",
                    "fault_worker",
                    "--message-format=json-render-diagnostics",
                ])
                .stderr(Stdio::inherit());
            if !cfg!(debug_assertions) {
                command.arg("--release");
            }
            let output = command.output().expect("run cargo build for the worker");
            assert!(output.status.success(), "building fault_worker failed");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| {
                    v["reason"] == "compiler-artifact" && v["target"]["name"] == "fault_worker"
                })
                .find_map(|v| v["executable"].as_str().map(PathBuf::from))
                .expect("cargo named the fault_worker executable")
        })
        .clone()
}

/// Where one run keeps its things.
struct Setup {
    brokers: String,
    topic: String,
    pg: PgConfig,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Setup {
    /// Starts a worker in consumer group `group`; its output goes to
    /// `worker.log` in the run's directory.
    fn spawn(&self, group: &str) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("worker.log"))
            .expect("worker log");
        let rules = root().join(RULES);
        let dead = self.dir.path().join("dead.jsonl");
        let redis = redis_url();
        let args: [(&str, &str); 9] = [
            ("--brokers", &self.brokers),
            ("--topic", &self.topic),
            ("--group", group),
            ("--rules", rules.to_str().expect("utf-8 path")),
            ("--pg", &self.pg.url),
            ("--schema", &self.pg.schema),
            ("--redis", &redis),
            ("--prefix", &self.prefix),
            ("--dead-letters", dead.to_str().expect("utf-8 path")),
        ];
        let mut command = Command::new(worker_binary());
        for (flag, value) in args {
            command.arg(flag).arg(value);
        }
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn fault_worker")
    }

    /// The end of the workers' log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Rows in the inbox: transactions stored.
    async fn inbox_rows(&self, store: &PgStore) -> i64 {
        let client = store.primary_pool().get().await.expect("pg connection");
        client
            .query_one(
                &format!("SELECT count(*) FROM {}.inbox", self.pg.schema),
                &[],
            )
            .await
            .expect("count the inbox")
            .get::<_, i64>(0)
    }
}

/// Drops the schema at the end (also when the test fails).
struct DropSchema(PgConfig);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let config = self.0.clone();
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(drop_schema(&config))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop schema {}: {done:?}", self.0.schema);
        }
    }
}

/// Kills the worker with SIGKILL and reaps it.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The generated input, as (member key, JSON line).
fn workload(count: usize, seed: u64) -> Vec<(String, String)> {
    let config = GeneratorConfig {
        seed,
        transactions: count,
        members: 300,
        id_prefix: "f-".into(),
        ..GeneratorConfig::default()
    };
    Generator::new(config)
        .expect("generator")
        .map(|tx| (tx.member.as_str().to_string(), tx.to_json_string()))
        .collect()
}

/// The independent computation: each line decoded, evaluated by the
/// compiled plan against the member's view and appended, one by one in
/// input order, to a fresh in-memory store. What the plan or the ledger
/// refuses is skipped (the worker dead-letters it).
async fn reference(lines: &[(String, String)]) -> MemoryStore {
    let source = std::fs::read_to_string(root().join(RULES)).expect("rules");
    let plan = rewards_dsl::compile_source(&source, &rewards_dsl::HostFunctions::new())
        .expect("the rules compile");
    let plan: &dyn Evaluator = &plan;
    let store = MemoryStore::new(LedgerConfig::default());
    let mut keys = Vec::new();
    for (_, line) in lines {
        let Ok(tx) = Transaction::from_json_bytes(line.as_bytes()) else {
            continue;
        };
        keys.clear();
        plan.counter_keys(&tx, &mut keys);
        let view = store.member_view(&tx.member, &keys).await.expect("view");
        let Ok(outcome) = plan.evaluate(&tx, &view) else {
            continue;
        };
        let _refused_or_applied = store.append(&tx, &outcome).await;
    }
    store
}

/// Produces the records one per batch (tansu 0.6.0: a consumer resuming
/// mid-batch stalls) and returns one past the last offset per partition.
async fn produce(brokers: &str, topic: &str, records: &[(String, String)], ends: &mut [i64]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
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
    for delivery in pending {
        let (partition, offset) = delivery
            .await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("produced");
        let end = &mut ends[usize::try_from(partition).expect("partition")];
        *end = (*end).max(offset + 1);
    }
}

/// Committed offsets of `group` (0 where none).
fn committed(brokers: &str, group: &str, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return vec![0; PARTITIONS as usize];
    };
    (0..PARTITIONS)
        .map(|p| {
            committed
                .find_partition(topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(0)
                .max(0)
        })
        .collect()
}

/// Waits (bounded) until the group has committed everything produced.
async fn wait_committed(setup: &Setup, group: &str, ends: &[i64]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let at = committed(&setup.brokers, group, &setup.topic);
        if at.as_slice() == ends {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for group {group} to commit {ends:?} (at {at:?}); worker log:\n{}",
            setup.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The comparison with the reference.
#[derive(Debug, Default)]
struct Tally {
    members: usize,
    /// Points the reference has that PostgreSQL lacks (and members missing).
    lost: i64,
    /// Points PostgreSQL has above the reference.
    doubled: i64,
    /// Members whose version or tier differ from the reference.
    mismatched: Vec<String>,
    /// Members whose balance read through the cache, or whose cache entry,
    /// differs from PostgreSQL.
    cache_stale: Vec<String>,
}

async fn compare(
    members: &BTreeSet<String>,
    reference: &MemoryStore,
    cached: &CachedStore<PgStore, RedisCache>,
) -> Tally {
    let mut tally = Tally::default();
    for id in members {
        let m = MemberId::new(id.clone()).expect("member id");
        tally.members += 1;
        let want = reference.balance(&m).await.ok();
        let got = cached.store().balance(&m).await.ok();
        let (want_a, want_p) = want.as_ref().map_or((0, 0), |b| {
            (b.balances.available.get(), b.balances.pending.get())
        });
        let (got_a, got_p) = got.as_ref().map_or((0, 0), |b| {
            (b.balances.available.get(), b.balances.pending.get())
        });
        for (w, g) in [(want_a, got_a), (want_p, got_p)] {
            tally.lost += (w - g).max(0);
            tally.doubled += (g - w).max(0);
        }
        if want.is_some() && got.is_none() {
            tally.lost += 1;
        }
        if want.as_ref().map(|b| (b.version, b.tier.clone()))
            != got.as_ref().map(|b| (b.version, b.tier.clone()))
        {
            tally
                .mismatched
                .push(format!("{id}: want {want:?}, got {got:?}"));
        }
        if let Some(got) = &got {
            let through = cached.balance(&m).await.ok();
            let entry = BalanceCache::get(cached.cache(), &m).await.ok().flatten();
            let entry_ok = entry
                .as_ref()
                .is_none_or(|e| e.balances == got.balances && e.version == got.version);
            if through.as_ref().map(|b| (b.balances, b.version))
                != Some((got.balances, got.version))
                || !entry_ok
            {
                tally.cache_stale.push(format!(
                    "{id}: db {got:?}, cached {through:?}, entry {entry:?}"
                ));
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_doubles_nothing_and_a_replay_changes_nothing() {
    let cycles: u64 = env_or("REWARDS_FAULT_CYCLES", 3);
    let count: usize = env_or("REWARDS_FAULT_TRANSACTIONS", 3000);
    let seed: u64 = env_or("REWARDS_FAULT_SEED", 9);
    let started = Instant::now();

    let setup = Setup {
        brokers: brokers(),
        topic: unique("faults-tx").replace('_', "-"),
        pg: PgConfig::new(database_url()).with_schema(unique("faults")),
        prefix: unique("faults"),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let _drop_schema = DropSchema(setup.pg.clone());
    migrate_with_config(&setup.pg).await.expect("migrate");
    let store = PgStore::connect(setup.pg.clone(), LedgerConfig::default())
        .await
        .expect("connect the postgres store");
    let cached = CachedStore::new(
        store,
        RedisCache::new(RedisCacheConfig::single(redis_url()).key_prefix(&setup.prefix))
            .expect("redis cache"),
        CachedStoreConfig {
            write_through_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            ..CachedStoreConfig::default()
        },
    );
    create_topics(&setup.brokers, &[(&setup.topic, PARTITIONS)])
        .await
        .expect("topic");
    // Built before the clock of the first kill starts.
    worker_binary();

    let lines = workload(count, seed);
    let members: BTreeSet<String> = lines.iter().map(|(k, _)| k.clone()).collect();
    let expected = reference(&lines).await;

    // The input arrives in slices, one before each start, so that every
    // worker has fresh work when it is killed.
    let group = unique("faults-group");
    let slices: Vec<&[(String, String)]> = lines
        .chunks(count.div_ceil(cycles as usize + 1).max(1))
        .collect();
    let mut ends = vec![0i64; PARTITIONS as usize];
    let mut rng = Rng(seed);
    let mut faults = 0u64;
    let mut mid_work = 0u64;
    for cycle in 0..cycles {
        if let Some(slice) = slices.get(cycle as usize) {
            produce(&setup.brokers, &setup.topic, slice, &mut ends).await;
        }
        let before = setup.inbox_rows(cached.store()).await;
        let mut worker = setup.spawn(&group);
        // Kill at a random point once it has started storing (bounded).
        let deadline = Instant::now() + PATIENCE;
        while setup.inbox_rows(cached.store()).await == before && Instant::now() < deadline {
            if let Ok(Some(status)) = worker.try_wait() {
                panic!(
                    "the worker exited by itself ({status}), see its log in {:?}",
                    setup.dir
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            Instant::now() < deadline,
            "cycle {cycle}: the worker stored nothing new; its log:\n{}",
            setup.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
        let at_kill = setup.inbox_rows(cached.store()).await;
        kill(&mut worker);
        faults += 1;
        let stored: i64 = ends.iter().sum();
        if at_kill < stored {
            mid_work += 1;
        }
        eprintln!(
            "cycle {cycle}: killed after {} new inbox rows ({at_kill} stored, {stored} produced)",
            at_kill - before
        );
    }
    for slice in slices.iter().skip(cycles as usize) {
        produce(&setup.brokers, &setup.topic, slice, &mut ends).await;
    }
    let mut worker = setup.spawn(&group);
    wait_committed(&setup, &group, &ends).await;
    kill(&mut worker);
    assert_eq!(ends.iter().sum::<i64>(), count as i64, "all produced");

    let tally = compare(&members, &expected, &cached).await;
    println!(
        "faults: transactions={count} faults_injected={faults} lost={} doubled={}",
        tally.lost, tally.doubled
    );
    eprintln!(
        "faults: {faults} kills ({mid_work} with work outstanding), {} members, \
         {} inbox rows, {:.1?}",
        tally.members,
        setup.inbox_rows(cached.store()).await,
        started.elapsed()
    );
    assert_eq!(tally.lost, 0, "points lost: {tally:?}");
    assert_eq!(tally.doubled, 0, "points doubled: {tally:?}");
    assert!(tally.mismatched.is_empty(), "{:#?}", tally.mismatched);
    assert!(tally.cache_stale.is_empty(), "{:#?}", tally.cache_stale);

    // The whole topic again, from offset zero, by a new group: every
    // transaction is a duplicate, nothing changes.
    let rows = setup.inbox_rows(cached.store()).await;
    let replay_group = unique("faults-replay");
    let mut worker = setup.spawn(&replay_group);
    wait_committed(&setup, &replay_group, &ends).await;
    kill(&mut worker);
    let again = compare(&members, &expected, &cached).await;
    println!(
        "faults (replay from zero, new group): transactions={count} lost={} doubled={}",
        again.lost, again.doubled
    );
    assert_eq!(again.lost, 0, "replay lost points: {again:?}");
    assert_eq!(again.doubled, 0, "replay doubled points: {again:?}");
    assert!(again.mismatched.is_empty(), "{:#?}", again.mismatched);
    assert!(again.cache_stale.is_empty(), "{:#?}", again.cache_stale);
    assert_eq!(
        setup.inbox_rows(cached.store()).await,
        rows,
        "no new inbox rows"
    );

    cached
        .cache()
        .clear()
        .await
        .expect("clear the cache prefix");
}
