//! Running one mode: setup (schema, cache prefix), the workers, the
//! reconciliation, the balance reads, and the teardown.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rewards_core::ledger::{Balances, LedgerConfig, Receipt};
use rewards_core::{ErrorKind, Evaluator, LedgerStore, MemberId, Transaction};
use rewards_dsl::Plan;
use rewards_runtime::{
    JsonLinesSource, MemoryDeadLetters, Metrics, Pipeline, PipelineConfig, ProgramRegistry,
};
use rewards_store::cached::{CachedStore, CachedStoreConfig};
use rewards_store::postgres::{drop_schema, PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};
use tokio::task::JoinSet;

use super::stats::{wal_now, Percentiles};
use super::{BoxError, Drive, Mode, ModeReport, ReadReport, Reconciliation, Settings, Workload};

type Cached = CachedStore<PgStore, RedisCache>;

/// The store of one mode.
enum Backend {
    Pg(Arc<PgStore>),
    Cached(Arc<Cached>),
}

impl Backend {
    fn store(&self) -> Arc<dyn LedgerStore> {
        match self {
            Backend::Pg(p) => p.clone(),
            Backend::Cached(c) => c.clone(),
        }
    }

    fn pg(&self) -> &PgStore {
        match self {
            Backend::Pg(p) => p,
            Backend::Cached(c) => c.store(),
        }
    }

    fn cached(&self) -> Option<&Cached> {
        match self {
            Backend::Pg(_) => None,
            Backend::Cached(c) => Some(c),
        }
    }
}

struct Env {
    backend: Backend,
    config: PgConfig,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A schema name (and Redis key prefix) no other run uses, starting with
/// `prefix` (`sl` for store-load's modes, `day` for day-run).
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

async fn open(settings: &Settings, cached: bool, pool_size: usize) -> Result<Env, BoxError> {
    let mut config = PgConfig::new(settings.database_url.clone()).with_schema(unique_name("sl"));
    config.pool_size = pool_size.max(1);
    let pg = PgStore::connect(config.clone(), LedgerConfig::default()).await?;
    let backend = if cached {
        let prefix = format!("storeload:{}", config.schema);
        let cache = RedisCache::connect(
            RedisCacheConfig::single(settings.redis_url.clone()).key_prefix(prefix),
        )
        .await?;
        Backend::Cached(Arc::new(CachedStore::new(
            pg,
            cache,
            CachedStoreConfig::default(),
        )))
    } else {
        Backend::Pg(Arc::new(pg))
    };
    Ok(Env { backend, config })
}

async fn close(env: &Env, keep: bool) -> Result<(), BoxError> {
    if keep {
        eprintln!(
            "kept schema {} (and Redis prefix storeload:{})",
            env.config.schema, env.config.schema
        );
        return Ok(());
    }
    let mut first_error: Option<BoxError> = None;
    if let Some(c) = env.backend.cached() {
        if let Err(e) = c.cache().clear().await {
            first_error = Some(Box::new(e));
        }
    }
    if let Err(e) = drop_schema(&env.config).await {
        first_error.get_or_insert(Box::new(e));
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What one worker did.
#[derive(Default)]
struct WorkerStats {
    applied: u64,
    refused: BTreeMap<String, u64>,
    view_us: u64,
    eval_us: u64,
    store_us: u64,
    calls: u64,
    call_lat: Vec<u64>,
    tx_lat: Vec<u64>,
    /// Version and balances of each member's last receipt.
    last: HashMap<MemberId, (u64, Balances)>,
}

impl WorkerStats {
    fn record(&mut self, result: rewards_core::error::Result<Receipt>) -> Result<(), BoxError> {
        match result {
            Ok(receipt) => {
                if !receipt.duplicate {
                    self.applied += 1;
                }
                self.last
                    .insert(receipt.member.clone(), (receipt.version, receipt.balances));
                Ok(())
            }
            Err(e) if e.kind().is_transient() => Err(Box::new(e)),
            Err(e) => {
                *self.refused.entry(format!("{:?}", e.kind())).or_default() += 1;
                Ok(())
            }
        }
    }

    fn merge(&mut self, other: WorkerStats) {
        self.applied += other.applied;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.view_us += other.view_us;
        self.eval_us += other.eval_us;
        self.store_us += other.store_us;
        self.calls += other.calls;
        self.call_lat.extend(other.call_lat);
        self.tx_lat.extend(other.tx_lat);
        self.last.extend(other.last);
    }
}

/// One transaction per database transaction: view, evaluate, append.
async fn single_worker(
    store: Arc<dyn LedgerStore>,
    plan: Arc<Plan>,
    txs: Vec<Transaction>,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> Result<WorkerStats, BoxError> {
    let mut s = WorkerStats::default();
    let mut keys = Vec::new();
    for tx in &txs {
        if Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        keys.clear();
        plan.counter_keys(tx, &mut keys);
        let view = store.member_view(&tx.member, &keys).await?;
        let t1 = Instant::now();
        let evaluated = plan.evaluate(tx, &view);
        let t2 = Instant::now();
        s.view_us += us(t1 - t0);
        s.eval_us += us(t2 - t1);
        let outcome = match evaluated {
            Ok(o) => o,
            Err(f) => {
                *s.refused.entry(format!("eval:{}", f.code())).or_default() += 1;
                continue;
            }
        };
        let result = store.append(tx, &outcome).await;
        let t3 = Instant::now();
        s.store_us += us(t3 - t2);
        s.calls += 1;
        s.call_lat.push(us(t3 - t2));
        s.tx_lat.push(us(t3 - t0));
        s.record(result)?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(s)
}

/// Batches of distinct members: the head transaction of the `per_batch`
/// members whose head is oldest, so each member's order is kept and a hot
/// member cannot clog the batch.
async fn batch_worker(
    store: Arc<dyn LedgerStore>,
    plan: Arc<Plan>,
    txs: Vec<Transaction>,
    per_batch: usize,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> Result<WorkerStats, BoxError> {
    let mut s = WorkerStats::default();
    let mut queues: HashMap<MemberId, VecDeque<(usize, Transaction)>> = HashMap::new();
    for (i, tx) in txs.into_iter().enumerate() {
        queues
            .entry(tx.member.clone())
            .or_default()
            .push_back((i, tx));
    }
    let mut heads: BinaryHeap<Reverse<(usize, MemberId)>> = queues
        .iter()
        .filter_map(|(m, q)| q.front().map(|(i, _)| Reverse((*i, m.clone()))))
        .collect();
    let per_batch = per_batch.clamp(1, rewards_core::store::MAX_BATCH_ITEMS);
    while !heads.is_empty() && Instant::now() < deadline {
        let mut batch = Vec::with_capacity(per_batch);
        while batch.len() < per_batch {
            let Some(Reverse((_, member))) = heads.pop() else {
                break;
            };
            let Some(queue) = queues.get_mut(&member) else {
                continue;
            };
            if let Some((_, tx)) = queue.pop_front() {
                batch.push(tx);
            }
            if let Some((next, _)) = queue.front() {
                heads.push(Reverse((*next, member)));
            }
        }
        // Read the batch's member views in one call (distinct members).
        let t0 = Instant::now();
        let requests: Vec<(MemberId, Vec<rewards_core::CounterKey>)> = batch
            .iter()
            .map(|tx| {
                let mut keys = Vec::new();
                plan.counter_keys(tx, &mut keys);
                (tx.member.clone(), keys)
            })
            .collect();
        let views: Vec<Option<rewards_core::MemberView>> = store
            .member_views(&requests)
            .await?
            .into_iter()
            .map(Some)
            .collect();
        if views.len() != batch.len() {
            return Err("member_views returned a different number of views".into());
        }
        let t1 = Instant::now();
        let mut items = Vec::with_capacity(batch.len());
        for (tx, view) in batch.into_iter().zip(views) {
            let view = view.ok_or("a member view is missing")?;
            match plan.evaluate(&tx, &view) {
                Ok(outcome) => items.push((tx, outcome)),
                Err(f) => *s.refused.entry(format!("eval:{}", f.code())).or_default() += 1,
            }
        }
        let t2 = Instant::now();
        let results = store.append_batch(&items).await?;
        let t3 = Instant::now();
        s.view_us += us(t1 - t0);
        s.eval_us += us(t2 - t1);
        s.store_us += us(t3 - t2);
        s.calls += 1;
        s.call_lat.push(us(t3 - t2));
        s.tx_lat.push(us(t3 - t0));
        for result in results {
            s.record(result)?;
        }
        done.fetch_add(u64::try_from(items.len()).unwrap_or(0), Ordering::Relaxed);
    }
    Ok(s)
}

/// Prints `name: N done, R/s` to stderr every 2 s until dropped.
struct Progress(Option<tokio::task::JoinHandle<()>>);

impl Progress {
    fn start(enabled: bool, name: String, done: Arc<AtomicU64>) -> Progress {
        if !enabled {
            return Progress(None);
        }
        Progress(Some(tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let rate = n.saturating_mul(1000)
                    / u64::try_from(started.elapsed().as_millis())
                        .unwrap_or(1)
                        .max(1);
                eprintln!("  {name}: {n} outcomes, {rate}/s");
            }
        })))
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Members touched by the workload, sorted, thinned to at most `n`
/// (evenly spread).
fn spread(mut members: Vec<MemberId>, n: usize) -> Vec<MemberId> {
    members.sort();
    members.dedup();
    if members.len() <= n || n == 0 {
        return members;
    }
    let step = members.len() / n;
    members.into_iter().step_by(step.max(1)).take(n).collect()
}

/// Runs one mode on its own schema (and Redis prefix), reconciles, measures
/// balance reads when `reads` is set, and cleans up (unless `keep`).
pub async fn run_mode(
    settings: &Settings,
    workload: &Workload,
    mode: Mode,
    reads: bool,
) -> Result<(ModeReport, Option<ReadReport>), BoxError> {
    let pool = match mode.drive {
        Drive::Single { workers } | Drive::Hand { workers, .. } => workers,
        Drive::Batch { .. } | Drive::Pipeline { .. } => 8,
    };
    let env = open(settings, mode.cached, pool).await?;
    let result = run_in(settings, workload, mode, reads, &env).await;
    let closed = close(&env, settings.keep).await;
    let out = result?;
    closed?;
    Ok(out)
}

async fn run_in(
    settings: &Settings,
    workload: &Workload,
    mode: Mode,
    reads: bool,
    env: &Env,
) -> Result<(ModeReport, Option<ReadReport>), BoxError> {
    let store = env.backend.store();
    let limit = Duration::from_millis(settings.limit_ms);
    let done = Arc::new(AtomicU64::new(0));
    let wal_before = wal_now(env.backend.pg()).await;
    let mut stats = WorkerStats::default();
    let mut pipeline_latency = None;
    let started = Instant::now();
    let elapsed;
    match mode.drive {
        Drive::Single { workers } => {
            let _progress = Progress::start(settings.progress, mode.name(), done.clone());
            let deadline = started + limit;
            let mut set = JoinSet::new();
            for part in workload.partition(workers) {
                set.spawn(single_worker(
                    store.clone(),
                    workload.plan.clone(),
                    part,
                    deadline,
                    done.clone(),
                ));
            }
            while let Some(joined) = set.join_next().await {
                stats.merge(joined??);
            }
            elapsed = started.elapsed();
        }
        Drive::Batch { workers, per_batch } => {
            let _progress = Progress::start(settings.progress, mode.name(), done.clone());
            let deadline = started + limit;
            let mut set = JoinSet::new();
            for part in workload.partition(workers) {
                set.spawn(batch_worker(
                    store.clone(),
                    workload.plan.clone(),
                    part,
                    per_batch,
                    deadline,
                    done.clone(),
                ));
            }
            while let Some(joined) = set.join_next().await {
                stats.merge(joined??);
            }
            elapsed = started.elapsed();
        }
        Drive::Hand { workers, per_tx } => {
            let _progress = Progress::start(settings.progress, mode.name(), done.clone());
            let pg = match &env.backend {
                Backend::Pg(pg) => pg.clone(),
                Backend::Cached(_) => {
                    return Err("the hand-written baseline runs without Redis".into())
                }
            };
            super::hand::create_tables(&pg, &env.config.schema).await?;
            let started = Instant::now();
            let deadline = started + limit;
            let mut set = JoinSet::new();
            for part in workload.partition(workers) {
                set.spawn(super::hand::worker(
                    pg.clone(),
                    env.config.schema.clone(),
                    part,
                    per_tx.clamp(1, rewards_core::store::MAX_BATCH_ITEMS),
                    deadline,
                    done.clone(),
                ));
            }
            while let Some(joined) = set.join_next().await {
                let (written, latencies) = joined??;
                stats.applied += written;
                stats.calls += latencies.len() as u64;
                stats.store_us += latencies.iter().sum::<u64>();
                stats.call_lat.extend(latencies);
            }
            elapsed = started.elapsed();
        }
        Drive::Pipeline { workers, max_batch } => {
            let metrics = Arc::new(Metrics::new());
            let plan: Arc<dyn Evaluator> = workload.plan.clone();
            let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
            let dead = Arc::new(MemoryDeadLetters::new());
            let pipeline = Pipeline::with_config(
                store.clone(),
                programs,
                dead.clone(),
                metrics.clone(),
                PipelineConfig {
                    workers,
                    max_batch,
                    // Let a backlog of `max_batch` wait per worker, so that
                    // adaptive batches can reach that size.
                    queue_capacity: max_batch.max(1),
                    feed_capacity: max_batch.max(1).saturating_mul(workers.max(1)),
                    ..PipelineConfig::default()
                },
            );
            let mut bytes = Vec::new();
            for tx in &workload.transactions {
                bytes.extend_from_slice(tx.to_json_string().as_bytes());
                bytes.push(b'\n');
            }
            let mut source =
                JsonLinesSource::from_reader("store-load", std::io::Cursor::new(bytes));
            let applied = Arc::new(AtomicU64::new(0));
            let watcher = {
                let metrics = metrics.clone();
                let applied = applied.clone();
                tokio::spawn(async move {
                    loop {
                        applied.store(metrics.acked.load(Ordering::Relaxed), Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            };
            let _progress = Progress::start(settings.progress, mode.name(), applied);
            let started = Instant::now();
            let report = pipeline.run(&mut source, tokio::time::sleep(limit)).await?;
            elapsed = started.elapsed();
            watcher.abort();
            stats.applied = report.applied.saturating_sub(report.duplicates);
            for letter in dead.take() {
                *stats
                    .refused
                    .entry(format!(
                        "{}:{}",
                        letter.reason.stage.as_str(),
                        letter.reason.code
                    ))
                    .or_default() += 1;
            }
            stats.eval_us = metrics.evaluation_us.sum();
            stats.store_us = metrics.append_us.sum();
            stats.calls = metrics.append_us.count();
            let bucketed = |h: &rewards_runtime::metrics::Histogram| Percentiles {
                count: h.count(),
                p50: h.quantile_upper_bound(500).unwrap_or(0),
                p95: h.quantile_upper_bound(950).unwrap_or(0),
                p99: h.quantile_upper_bound(990).unwrap_or(0),
                max: h.quantile_upper_bound(1000).unwrap_or(0),
            };
            pipeline_latency = Some((bucketed(&metrics.append_us), bucketed(&metrics.pipeline_us)));
        }
    }
    let wal = wal_before.until(&wal_now(env.backend.pg()).await);
    let members: Vec<MemberId> = workload
        .transactions
        .iter()
        .map(|t| t.member.clone())
        .collect();
    let members = spread(members, usize::MAX);
    let reconciliation = match mode.drive {
        Drive::Hand { .. } => {
            let (inbox_rows, drift) =
                super::hand::reconcile(env.backend.pg(), &env.config.schema).await?;
            Reconciliation {
                drift,
                inbox_rows,
                applied: stats.applied,
                ..Reconciliation::default()
            }
        }
        _ => reconcile(env, &stats, &members, settings.sample).await?,
    };
    let (call_latency, tx_latency) = match pipeline_latency {
        Some(p) => p,
        None => (
            Percentiles::of(std::mem::take(&mut stats.call_lat)),
            Percentiles::of(std::mem::take(&mut stats.tx_lat)),
        ),
    };
    if let Some(c) = env.backend.cached() {
        let h = c.health();
        eprintln!(
            "  cache: {} write-throughs, {} guards, {} stale, {} failures, {} store-only, {} evictions, {} errors ({} timeouts), breaker {:?}",
            h.write_throughs,
            h.write_through_guards,
            h.stale_refused,
            h.write_through_failures,
            h.store_only_writes,
            h.evictions,
            h.errors,
            h.timeouts,
            h.breaker
        );
    }
    let write_through = env.backend.cached().map(|c| {
        let l = c.health().write_through_latency;
        Percentiles {
            count: l.count,
            p50: l.p50_us,
            p95: l.p95_us,
            p99: l.p99_us,
            max: l.max_us,
        }
    });
    let read_report = if reads {
        let existing: Vec<MemberId> = stats.last.keys().cloned().collect();
        Some(measure_reads(env, spread(existing, 1000), settings.reads).await?)
    } else {
        None
    };
    let report = ModeReport {
        mode,
        applied: stats.applied,
        refused: stats.refused,
        elapsed_us: us(elapsed),
        call_latency,
        tx_latency,
        view_us: stats.view_us,
        eval_us: stats.eval_us,
        store_us: stats.store_us,
        calls: stats.calls,
        wal,
        reconciliation,
        write_through,
    };
    Ok((report, read_report))
}

/// The store's own reconciliation (balances == postings == lots), one
/// inbox row per applied request, and for a sample of members: the
/// database equals the last receipt, and the Redis entry equals the
/// database.
async fn reconcile(
    env: &Env,
    stats: &WorkerStats,
    members: &[MemberId],
    sample: usize,
) -> Result<Reconciliation, BoxError> {
    let pg = env.backend.pg();
    let report = pg.reconcile().await?;
    let mut r = Reconciliation {
        members: report.members,
        postings: report.postings,
        drift: u64::try_from(report.drift.len()).unwrap_or(u64::MAX),
        applied: stats.applied,
        ..Reconciliation::default()
    };
    let client = pg.primary_pool().get().await?;
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {}.inbox", env.config.schema),
            &[],
        )
        .await?;
    r.inbox_rows = u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0);
    drop(client);
    for member in spread(members.to_vec(), sample) {
        let balance = match pg.balance(&member).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Box::new(e)),
        };
        if let Some((version, balances)) = stats.last.get(&member) {
            r.receipts_checked += 1;
            if *version != balance.version || *balances != balance.balances {
                r.receipts_mismatched += 1;
            }
        }
        if let Some(cached) = env.backend.cached() {
            r.cache_checked += 1;
            match cached.cache().get(&member).await? {
                None => r.cache_missing += 1,
                Some(entry) => {
                    if entry.version != balance.version
                        || entry.balances != balance.balances
                        || entry.tier != balance.tier
                    {
                        r.cache_mismatched += 1;
                    }
                }
            }
        }
    }
    Ok(r)
}

/// Sequential `balance` reads, alternating the cache and PostgreSQL alone
/// member by member (so both see the same machine noise), after one warm
/// pass through the cache.
async fn measure_reads(
    env: &Env,
    members: Vec<MemberId>,
    reads: usize,
) -> Result<ReadReport, BoxError> {
    let pg = env.backend.pg();
    let cached = env.backend.cached();
    if members.is_empty() {
        return Err("no member to read".into());
    }
    if let Some(c) = cached {
        for m in &members {
            c.balance(m).await?;
        }
    }
    let before = cached.map(|c| c.health());
    let mut cache_lat = Vec::with_capacity(reads);
    let mut pg_lat = Vec::with_capacity(reads);
    for i in 0..reads {
        let m = &members[i % members.len()];
        if let Some(c) = cached {
            let t = Instant::now();
            c.balance(m).await?;
            cache_lat.push(us(t.elapsed()));
        }
        let t = Instant::now();
        pg.balance(m).await?;
        pg_lat.push(us(t.elapsed()));
    }
    let after = cached.map(|c| c.health());
    let (hits, misses) = match (before, after) {
        (Some(b), Some(a)) => (a.hits - b.hits, a.misses - b.misses),
        _ => (0, 0),
    };
    Ok(ReadReport {
        members: u64::try_from(members.len()).unwrap_or(0),
        cache: Percentiles::of(cache_lat),
        cache_hits: hits,
        cache_misses: misses,
        postgres: Percentiles::of(pg_lat),
    })
}

/// Runs the cached batch mode briefly to create members, then measures
/// balance reads (cache vs PostgreSQL).
pub async fn run_reads(
    settings: &Settings,
    workload: &Workload,
    per_batch: usize,
) -> Result<(ModeReport, Option<ReadReport>), BoxError> {
    run_mode(
        settings,
        workload,
        Mode {
            drive: Drive::Batch {
                workers: 4,
                per_batch,
            },
            cached: true,
        },
        true,
    )
    .await
}
