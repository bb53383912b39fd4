//! The fault rig shared by `tests/faults.rs` and `tests/e2e.rs`: the
//! worker process (`examples/fault_worker.rs`), the generated input, the
//! reference computed by the in-memory engine, and the comparison of
//! PostgreSQL and Redis with it.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rewards_core::generate::{Generator, GeneratorConfig};
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::store::{BalanceCache, LedgerStore};
use rewards_core::{Evaluator, MemberId, Transaction};
use rewards_store::cached::{CachedStore, CachedStoreConfig};
use rewards_store::postgres::{migrate_with_config, PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

use super::kafka::root;
use super::DropSchema;

/// The ruleset the worker and the reference use.
pub const RULES: &str = "examples/rules/cashback.rwd";

/// The shared PostgreSQL database.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// The shared Redis server.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// An environment setting, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeded numbers (splitmix64), so that a run's fault points repeat.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Builds the worker example once (cargo builds examples only on request)
/// and returns its path.
pub fn worker_binary() -> PathBuf {
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

/// Where one run keeps its things, and how its workers are started.
pub struct Rig {
    /// The broker.
    pub brokers: String,
    /// The transactions topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: i32,
    /// PostgreSQL URL and schema.
    pub pg: PgConfig,
    /// Redis URL.
    pub redis: String,
    /// Redis key prefix.
    pub prefix: String,
    /// Logs and dead letters.
    pub dir: tempfile::TempDir,
    /// Where dead letters go (`--dead-letters FILE` by default).
    pub dead_letters: Vec<(String, String)>,
    spawned: AtomicUsize,
}

impl Rig {
    /// A rig with its own topic, schema and key prefix named after `name`.
    pub fn new(name: &str, brokers: String, pg_url: String, redis: String) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = dir.path().join("dead.jsonl");
        Rig {
            brokers,
            topic: super::kafka::unique(&format!("{name}-tx")),
            partitions: 4,
            pg: PgConfig::new(pg_url).with_schema(super::kafka::unique_ident(name)),
            redis,
            prefix: super::kafka::unique(name),
            dead_letters: vec![(
                "--dead-letters".into(),
                dead.to_str().expect("utf-8 path").into(),
            )],
            dir,
            spawned: AtomicUsize::new(0),
        }
    }

    /// Creates the topic and the schema; returns the store the test reads
    /// from (PostgreSQL with the Redis cache in front, as the worker has).
    pub async fn prepare(&self) -> CachedStore<PgStore, RedisCache> {
        super::kafka::wait_until("the broker", || super::kafka::reachable(&self.brokers)).await;
        rewards_runtime::kafka::create_topics(&self.brokers, &[(&self.topic, self.partitions)])
            .await
            .expect("topic");
        migrate_with_config(&self.pg).await.expect("migrate");
        self.store().await
    }

    /// A store over the rig's schema and key prefix.
    pub async fn store(&self) -> CachedStore<PgStore, RedisCache> {
        let store = PgStore::connect(self.pg.clone(), LedgerConfig::default())
            .await
            .expect("connect the postgres store");
        CachedStore::new(
            store,
            RedisCache::new(RedisCacheConfig::single(self.redis.clone()).key_prefix(&self.prefix))
                .expect("redis cache"),
            CachedStoreConfig {
                write_through_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(2),
                ..CachedStoreConfig::default()
            },
        )
    }

    /// Starts a worker in consumer group `group`, with `extra` flags; its
    /// output goes to `worker-N.log` in the run's directory.
    pub fn spawn(&self, group: &str, extra: &[(&str, &str)]) -> Worker {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("worker-{n:03}.log")))
            .expect("worker log");
        let rules = root().join(RULES);
        let args: [(&str, &str); 8] = [
            ("--brokers", &self.brokers),
            ("--topic", &self.topic),
            ("--group", group),
            ("--rules", rules.to_str().expect("utf-8 path")),
            ("--pg", &self.pg.url),
            ("--schema", &self.pg.schema),
            ("--redis", &self.redis),
            ("--prefix", &self.prefix),
        ];
        let mut command = Command::new(worker_binary());
        for (flag, value) in args {
            command.arg(flag).arg(value);
        }
        for (flag, value) in &self.dead_letters {
            command.arg(flag).arg(value);
        }
        for (flag, value) in extra {
            command.arg(flag).arg(value);
        }
        command
            .env(
                "RUST_LOG",
                std::env::var("REWARDS_FAULT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .map(Worker)
            .expect("spawn fault_worker")
    }

    /// The end of the last four workers' logs.
    pub fn log_tail(&self) -> String {
        let n = self.spawned.load(Ordering::Relaxed);
        let mut out = String::new();
        for i in n.saturating_sub(4)..n {
            let log = std::fs::read_to_string(self.dir.path().join(format!("worker-{i:03}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("--- worker-{i:03}.log (end)\n"));
            out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Rows in the inbox (transactions stored), `None` when PostgreSQL does
    /// not answer.
    pub async fn inbox_rows(&self, store: &PgStore) -> Option<i64> {
        let client = tokio::time::timeout(Duration::from_secs(5), store.primary_pool().get())
            .await
            .ok()?
            .ok()?;
        client
            .query_one(
                &format!("SELECT count(*) FROM {}.inbox", self.pg.schema),
                &[],
            )
            .await
            .ok()
            .map(|row| row.get::<_, i64>(0))
    }

    /// Waits (bounded) until the inbox has more than `before` rows; fails
    /// with the workers' logs. `worker` must not exit meanwhile.
    pub async fn wait_stored_more(
        &self,
        store: &PgStore,
        before: i64,
        worker: &mut Child,
        what: &str,
    ) -> i64 {
        let deadline = std::time::Instant::now() + super::kafka::PATIENCE;
        loop {
            if let Some(rows) = self.inbox_rows(store).await {
                if rows > before {
                    return rows;
                }
            }
            if let Ok(Some(status)) = worker.try_wait() {
                panic!(
                    "{what}: the worker exited by itself ({status}); logs:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: the worker stored nothing new; logs:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the group committed `ends`.
    pub async fn wait_committed(&self, group: &str, ends: &[i64]) {
        super::kafka::wait_committed(&self.brokers, group, &self.topic, ends, || {
            format!("logs:\n{}", self.log_tail())
        })
        .await;
    }

    /// Produces `records` one per batch and raises `ends` (one past the last
    /// offset per partition).
    pub async fn produce(&self, records: &[(String, String)], ends: &mut [i64]) {
        let placed = super::kafka::produce(&self.brokers, &self.topic, records).await;
        for (partition, offset) in placed {
            let end = &mut ends[usize::try_from(partition).expect("partition")];
            *end = (*end).max(offset + 1);
        }
    }

    /// Drops the schema (call at the end; see [`DropSchema`] for failures).
    pub fn drop_guard(&self) -> DropSchema {
        DropSchema(self.pg.clone())
    }
}

/// Kills a worker with SIGKILL and reaps it.
/// A worker process, killed when dropped (a test that panics must not leave
/// it running against services that are gone).
pub struct Worker(Child);

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            kill(&mut self.0);
        }
    }
}

pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops a worker with SIGTERM (a graceful shutdown) and waits for it;
/// returns its exit status.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().expect("wait for the worker")
}

/// The generated input (seeded; purchases, refunds, authorizations with
/// settlements and reversals over 300 members), as (member key, JSON line).
pub fn workload(count: usize, seed: u64, id_prefix: &str) -> Vec<(String, String)> {
    let config = GeneratorConfig {
        seed,
        transactions: count,
        members: 300,
        id_prefix: id_prefix.into(),
        ..GeneratorConfig::default()
    };
    Generator::new(config)
        .expect("generator")
        .map(|tx| (tx.member.as_str().to_string(), tx.to_json_string()))
        .collect()
}

/// The members of an input.
pub fn members_of(lines: &[(String, String)]) -> BTreeSet<String> {
    lines.iter().map(|(k, _)| k.clone()).collect()
}

/// The ruleset of [`RULES`] compiled, with its `version` line replaced by
/// `version` when given (a "new release" of the same ruleset).
pub fn plan(version: Option<u32>) -> rewards_dsl::Plan {
    let mut source = std::fs::read_to_string(root().join(RULES)).expect("rules");
    if let Some(version) = version {
        source = source.replace(
            "ruleset \"acme-cashback\" version 3",
            &format!("ruleset \"acme-cashback\" version {version}"),
        );
    }
    rewards_dsl::compile_source(&source, &rewards_dsl::HostFunctions::new())
        .expect("the rules compile")
}

/// The independent computation: each line decoded, evaluated by the
/// compiled plan against the member's view and appended, one by one in
/// input order, to a fresh in-memory store. What the plan or the ledger
/// refuses is skipped (the worker dead-letters it). Returns the store and
/// the number of lines refused.
pub async fn reference(lines: &[(String, String)]) -> (MemoryStore, usize) {
    let plan = plan(None);
    reference_with(lines, &[(0, &plan)]).await
}

/// [`reference`] with plans switching at line indexes: `plans` holds
/// `(first line, plan)` in increasing order.
pub async fn reference_with(
    lines: &[(String, String)],
    plans: &[(usize, &dyn Evaluator)],
) -> (MemoryStore, usize) {
    let store = MemoryStore::new(LedgerConfig::default());
    let mut keys = Vec::new();
    let mut refused = 0;
    for (i, (_, line)) in lines.iter().enumerate() {
        let plan = plans
            .iter()
            .rev()
            .find(|(from, _)| *from <= i)
            .map(|(_, plan)| *plan)
            .expect("a plan for every line");
        let Ok(tx) = Transaction::from_json_bytes(line.as_bytes()) else {
            refused += 1;
            continue;
        };
        keys.clear();
        plan.counter_keys(&tx, &mut keys);
        let view = store.member_view(&tx.member, &keys).await.expect("view");
        let Ok(outcome) = plan.evaluate(&tx, &view) else {
            refused += 1;
            continue;
        };
        if store.append(&tx, &outcome).await.is_err() {
            refused += 1;
        }
    }
    (store, refused)
}

/// The comparison with the reference.
#[derive(Debug, Default)]
pub struct Tally {
    /// Members compared.
    pub members: usize,
    /// Points the reference has that PostgreSQL lacks (and members missing).
    pub lost: i64,
    /// Points PostgreSQL has above the reference.
    pub doubled: i64,
    /// Members whose version or tier differ from the reference.
    pub mismatched: Vec<String>,
    /// Members whose balance read through the cache, or whose cache entry,
    /// differs from PostgreSQL.
    pub cache_stale: Vec<String>,
}

impl Tally {
    /// Prints the summary line
    /// `faults[NAME]: transactions=N faults_injected=K lost=L doubled=D`.
    pub fn summary(&self, name: &str, transactions: usize, faults: u64) {
        println!(
            "faults[{name}]: transactions={transactions} faults_injected={faults} lost={} doubled={}",
            self.lost, self.doubled
        );
    }

    /// Asserts nothing lost, doubled, mismatched or stale.
    pub fn assert_exact(&self, what: &str) {
        assert_eq!(self.lost, 0, "{what}: points lost: {self:#?}");
        assert_eq!(self.doubled, 0, "{what}: points doubled: {self:#?}");
        assert!(self.mismatched.is_empty(), "{what}: {:#?}", self.mismatched);
        assert!(
            self.cache_stale.is_empty(),
            "{what}: {:#?}",
            self.cache_stale
        );
    }
}

/// Compares every member's balance in PostgreSQL, through the cache and in
/// the Redis entry (when present) with the reference.
pub async fn compare(
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
