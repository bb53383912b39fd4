//! `day-run`: a day of traffic, end to end, with a zero-drift check.
//!
//! A JSON-lines file of transactions (the generator's day: `rwd generate
//! --seed 7 --transactions 10000000 > day.jsonl`) is fed through the runtime
//! `Pipeline` — decode, member view, a compiled `.rwd` plan, append — into
//! PostgreSQL with the Redis write-through cache (`CachedStore<PgStore,
//! RedisCache>`), exactly as the daemon's full mode does with file input.
//! Then the same file goes through the in-memory engine (`MemoryStore`), the
//! reference. Afterwards:
//!
//! - the store's own reconciliation: every balance equals its postings and
//!   lots (drift must be empty);
//! - every member: PostgreSQL balance and tier == the reference's;
//! - every member the cache holds: Redis == PostgreSQL (version, balances,
//!   tier); members the cache does not hold are counted (they are read from
//!   PostgreSQL and filled on the next read, which is correct, not drift).
//!
//! It prints progress every few seconds (rate, ETA), one summary line and a
//! Markdown row for `docs/performance.md`; the exit status is non-zero when
//! anything differs. Each run uses its own schema and key prefix, removed at
//! the end unless `--keep`.
//!
//! The reference holds every member's whole history in memory (~3 KB per
//! transaction: the full day's did not fit in 24 GiB), so it runs in
//! shards of members (`--reference-shards`, by default one per 2,000,000
//! lines): the file is split by a hash of the member id, each shard runs
//! through a fresh `MemoryStore`, its members are compared and it is
//! dropped. Members are independent in the ledger except for campaign
//! budgets, which a shard sees whole: a budget exhausted within the day
//! would show as drift, never hide it. `--reconcile-only SCHEMA` checks a
//! schema a stopped run kept (its Redis prefix too) without feeding it again.
//!
//! With `--kafka BROKERS` the day goes through the broker: the file is
//! first produced to a fresh topic keyed by member (timed on its own), then
//! the pipeline's Kafka source consumes it to the end into the same store,
//! and the same checks follow; the topic is deleted afterwards.
//!
//! ```text
//! cargo run --release -p rewards-benches --bin day-run -- --input day.jsonl
//! cargo run --release -p rewards-benches --bin day-run -- --input day.jsonl --kafka 127.0.0.1:9092
//! scripts/day.sh [TRANSACTIONS]   # generate, run, report (the documented command)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::{ErrorKind, Evaluator, LedgerStore, MemberId};
use rewards_dsl::{HostFunctions, Plan};
use rewards_runtime::kafka::{
    create_topics, delete_topics, produce_json_lines, KafkaConfig, KafkaSource,
};
use rewards_runtime::shutdown::terminated;
use rewards_runtime::{
    shutdown_channel, JsonLinesSource, MemoryDeadLetters, Metrics, Pipeline, PipelineConfig,
    ProgramRegistry, RunReport, ShutdownSignal, Source,
};
use rewards_store::cached::{CachedStore, CachedStoreConfig};
use rewards_store::postgres::{drop_schema, PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

/// How long an interrupted feed may take to finish its work in flight
/// before the run is abandoned (the feed's own drain is bounded too).
const INTERRUPT_GRACE: Duration = Duration::from_secs(15);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Cached = CachedStore<PgStore, RedisCache>;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "day-run",
    about = "A day of transactions through PostgreSQL + Redis, reconciled against the in-memory engine"
)]
struct Args {
    /// The transactions, one JSON object per line.
    #[arg(long)]
    input: PathBuf,
    /// The ruleset (default: the benchmarks' 24-rule reference program).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Pipeline workers (members are spread over them).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Most transactions per append.
    #[arg(long, default_value_t = 1000)]
    max_batch: usize,
    /// PostgreSQL connections.
    #[arg(long, default_value_t = 8)]
    pool: usize,
    /// PostgreSQL URL (default `$DATABASE_URL`, else the shared `test` database).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis URL (default `$REDIS_URL`, else redis://127.0.0.1:6379).
    #[arg(long)]
    redis_url: Option<String>,
    /// Skip the in-memory reference run (then only the store's own
    /// reconciliation and Redis == PostgreSQL are checked).
    #[arg(long)]
    no_reference: bool,
    /// Keep the schema and the Redis keys afterwards.
    #[arg(long)]
    keep: bool,
    /// Reference shards (members split by hash); 0 = one per 2,000,000 lines.
    #[arg(long, default_value_t = 0)]
    reference_shards: usize,
    /// Reconcile an existing schema (and its Redis prefix) against the
    /// file without feeding it: for a run whose reference did not finish.
    #[arg(long)]
    reconcile_only: Option<String>,
    /// Feed through a Kafka broker (e.g. 127.0.0.1:9092) instead of from the
    /// file: the file is first produced to a fresh topic (keyed by member,
    /// `--partitions`), then the pipeline consumes the topic to its end.
    /// The rate reported is that of the consumption, to durable storage.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Partitions of the `--kafka` topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 10)]
    progress_every: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("day-run: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("day-run: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Lines in the input (for the ETA), counted quickly.
fn count_lines(path: &PathBuf) -> Result<u64, BoxError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Runs the file through `store` with progress; returns the report and the
/// wall time.
async fn feed(
    label: &str,
    source: &mut dyn Source,
    args: &Args,
    plan: Arc<dyn Evaluator>,
    store: Arc<dyn LedgerStore>,
    total: u64,
    mut stop: ShutdownSignal,
) -> Result<(RunReport, Duration, Arc<MemoryDeadLetters>), BoxError> {
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    let dead = Arc::new(MemoryDeadLetters::new());
    let pipeline = Pipeline::with_config(
        store,
        programs,
        dead.clone(),
        metrics.clone(),
        PipelineConfig {
            workers: args.workers,
            max_batch: args.max_batch,
            ..PipelineConfig::default()
        },
    );
    let started = Instant::now();
    let every = Duration::from_secs(args.progress_every.max(1));
    let watcher = {
        let metrics = metrics.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(every).await;
                let done = metrics.acked.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs().max(1);
                let rate = (done - last) / every.as_secs().max(1);
                let eta = total.saturating_sub(done) / rate.max(1);
                let appends = metrics.append_us.count().max(1);
                eprintln!(
                    "day-run [{label}] {done}/{total} ({}%) {rate}/s now, {}/s mean, eta {eta}s; \
                     appends {appends}: mean {} tx, {} ms; re-evaluated {}",
                    done * 100 / total.max(1),
                    done / secs,
                    metrics.batch_size.sum() / appends,
                    metrics.append_us.sum() / appends / 1000,
                    metrics.reevaluated.load(Ordering::Relaxed),
                );
                last = done;
            }
        })
    };
    let report = pipeline.run(source, stop.wait()).await?;
    let elapsed = started.elapsed();
    watcher.abort();
    Ok((report, elapsed, dead))
}

/// Produces the input to `topic` (created here) and returns a source that
/// reads it to its end in a fresh consumer group.
async fn through_broker(args: &Args, brokers: &str, topic: &str) -> Result<KafkaSource, BoxError> {
    create_topics(brokers, &[(topic, args.partitions.max(1))]).await?;
    let started = Instant::now();
    // Read once from the start by one consumer group: full batches (see
    // produce_json_lines on tansu).
    let produced = produce_json_lines(brokers, topic, &args.input, 1000, |n| {
        eprintln!(
            "day-run [produce] {n} records, {}/s",
            per_second(n, started.elapsed())
        );
    })
    .await
    .map_err(|e| format!("producing {} to {topic}: {e}", args.input.display()))?;
    eprintln!(
        "day-run: produced {} records ({} undecodable) to {topic} in {:.1}s = {}/s",
        produced.records,
        produced.undecodable,
        started.elapsed().as_secs_f64(),
        per_second(produced.records, started.elapsed())
    );
    let mut config = KafkaConfig::new(brokers, &format!("{topic}_group"), topic);
    config.stop_at_end = true;
    Ok(KafkaSource::new(config, Arc::new(Metrics::new()))?)
}

/// Differences found, by kind, with a few examples.
#[derive(Debug, Default)]
struct Drift {
    counts: HashMap<&'static str, u64>,
    examples: Vec<String>,
}

impl Drift {
    fn add(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        *self.counts.entry(kind).or_default() += 1;
        if self.examples.len() < 10 {
            self.examples.push(format!("{kind}: {}", example()));
        }
    }

    fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn merge(&mut self, other: Drift) {
        for (kind, n) in other.counts {
            *self.counts.entry(kind).or_default() += n;
        }
        for e in other.examples {
            if self.examples.len() < 10 {
                self.examples.push(e);
            }
        }
    }
}

/// Compares every member: PostgreSQL == reference, Redis == PostgreSQL.
async fn compare(
    members: Vec<MemberId>,
    cached: Arc<Cached>,
    reference: Option<Arc<MemoryStore>>,
) -> Result<(Drift, u64, u64), BoxError> {
    let checked = Arc::new(AtomicU64::new(0));
    let not_cached = Arc::new(AtomicU64::new(0));
    let chunks: Vec<Vec<MemberId>> = members.chunks(4096).map(<[MemberId]>::to_vec).collect();
    let mut drift = Drift::default();
    // A few chunks at a time over the pool: ~1M members take tens of seconds.
    let mut set = tokio::task::JoinSet::new();
    let mut pending = chunks.into_iter();
    loop {
        while set.len() < 8 {
            let Some(chunk) = pending.next() else { break };
            let cached = cached.clone();
            let reference = reference.clone();
            let checked = checked.clone();
            let not_cached = not_cached.clone();
            set.spawn(async move {
                let mut drift = Drift::default();
                for member in chunk {
                    let pg = match cached.store().balance(&member).await {
                        Ok(b) => Some(b),
                        Err(e) if e.kind() == ErrorKind::NotFound => None,
                        Err(e) => return Err(BoxError::from(e)),
                    };
                    if let Some(reference) = &reference {
                        let expected = match reference.balance(&member).await {
                            Ok(b) => Some(b),
                            Err(e) if e.kind() == ErrorKind::NotFound => None,
                            Err(e) => return Err(BoxError::from(e)),
                        };
                        match (&pg, &expected) {
                            (Some(p), Some(r)) if p.balances != r.balances || p.tier != r.tier => {
                                drift.add("postgres != reference", || {
                                    format!("{member}: {:?} vs {:?}", p.balances, r.balances)
                                })
                            }
                            (None, Some(_)) => {
                                drift.add("missing in postgres", || member.to_string())
                            }
                            (Some(_), None) => {
                                drift.add("missing in reference", || member.to_string())
                            }
                            _ => {}
                        }
                    }
                    if let Some(p) = &pg {
                        match cached.cache().get(&member).await? {
                            None => {
                                not_cached.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(entry) => {
                                if entry.version != p.version
                                    || entry.balances != p.balances
                                    || entry.tier != p.tier
                                {
                                    drift.add("redis != postgres", || {
                                        format!(
                                            "{member}: v{} {:?} vs v{} {:?}",
                                            entry.version, entry.balances, p.version, p.balances
                                        )
                                    });
                                }
                            }
                        }
                    }
                    checked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(drift)
            });
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        drift.merge(joined??);
    }
    Ok((
        drift,
        checked.load(Ordering::Relaxed),
        not_cached.load(Ordering::Relaxed),
    ))
}

/// What the member-by-member check found.
struct Checked {
    drift: Drift,
    /// Members compared.
    members: u64,
    /// Of those, members the cache does not hold.
    not_cached: u64,
    /// Time spent comparing (not running the reference).
    compare_time: Duration,
    /// How the reference ran, for the summary.
    reference_note: String,
}

/// The reference in `shards` passes (members split by a hash of their id,
/// each pass a fresh `MemoryStore` over that shard's lines), each compared
/// and dropped before the next.
async fn reference_in_shards(
    args: &Args,
    plan: Arc<dyn Evaluator>,
    cached: Arc<Cached>,
    total: u64,
    shards: usize,
) -> Result<Checked, BoxError> {
    let dir = std::env::temp_dir().join(format!("day-run-shards-{}", std::process::id()));
    let split_started = Instant::now();
    let files = split_by_member(&args.input, &dir, shards)?;
    let split_time = split_started.elapsed();
    let mut checked = Checked {
        drift: Drift::default(),
        members: 0,
        not_cached: 0,
        compare_time: Duration::ZERO,
        reference_note: String::new(),
    };
    let (mut applied, mut took) = (0u64, Duration::ZERO);
    for (k, (file, lines)) in files.iter().enumerate() {
        let memory = Arc::new(MemoryStore::new(LedgerConfig::default()));
        let label = format!("reference {}/{shards}", k + 1);
        let (r, t, _) = feed(
            &label,
            &mut JsonLinesSource::open(file).await?,
            args,
            plan.clone(),
            memory.clone(),
            *lines,
            ShutdownSignal::never(),
        )
        .await?;
        applied += r.applied;
        took += t;
        let compare_started = Instant::now();
        let (d, c, n) = compare(memory.members(), cached.clone(), Some(memory)).await?;
        checked.compare_time += compare_started.elapsed();
        checked.drift.merge(d);
        checked.members += c;
        checked.not_cached += n;
        std::fs::remove_file(file)?;
    }
    std::fs::remove_dir(&dir).ok();
    checked.reference_note = format!(
        "{applied} of {total} applied in {:.1}s = {}/s, in {shards} shard(s) of members \
         (the file split in {:.1}s)",
        took.as_secs_f64(),
        per_second(applied, took),
        split_time.as_secs_f64()
    );
    Ok(checked)
}

/// Splits a JSON-lines file into `shards` files by a hash of each line's
/// `member` (a line without one goes to shard 0, where it is dead-lettered
/// as in the real run); returns each file with its line count.
fn split_by_member(
    input: &std::path::Path,
    dir: &std::path::Path,
    shards: usize,
) -> Result<Vec<(PathBuf, u64)>, BoxError> {
    use std::hash::{BuildHasher, Hasher};
    use std::io::{BufRead, BufWriter, Write};
    std::fs::create_dir_all(dir)?;
    let hasher = std::collections::hash_map::RandomState::new();
    let mut out = Vec::with_capacity(shards);
    for k in 0..shards {
        let path = dir.join(format!("shard-{k}.jsonl"));
        out.push((BufWriter::new(std::fs::File::create(&path)?), path, 0u64));
    }
    let reader = std::io::BufReader::new(std::fs::File::open(input)?);
    for line in reader.split(b'\n') {
        let line = line?;
        let shard = member_of(&line).map_or(0, |m| {
            let mut h = hasher.build_hasher();
            h.write(m);
            usize::try_from(h.finish() % shards as u64).unwrap_or(0)
        });
        let (w, _, n) = &mut out[shard];
        w.write_all(&line)?;
        w.write_all(b"\n")?;
        *n += 1;
    }
    out.into_iter()
        .map(|(mut w, path, n)| {
            w.flush()?;
            Ok((path, n))
        })
        .collect()
}

/// The bytes of a line's `"member":"..."` value (the generator writes it
/// without spaces; anything else is left to shard 0).
fn member_of(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"member\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    Some(&line[at..at + len])
}

fn per_second(n: u64, d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    n.saturating_mul(1000) / ms
}

async fn run(args: Args) -> Result<bool, BoxError> {
    let source = match &args.rules {
        Some(path) => std::fs::read_to_string(path)?,
        None => rewards_benches::peers::REFERENCE_RWD.to_string(),
    };
    let plan = Plan::compile(&source, &HostFunctions::new())
        .map_err(|d| format!("the rules do not compile: {d:?}"))?;
    let plan: Arc<dyn Evaluator> = Arc::new(plan);
    let total = count_lines(&args.input)?;
    eprintln!("day-run: {total} lines in {}", args.input.display());

    let database_url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis_url = args
        .redis_url
        .clone()
        .or_else(|| std::env::var("REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let schema = args
        .reconcile_only
        .clone()
        .unwrap_or_else(|| rewards_benches::store_load::unique_name("day"));
    let mut config = PgConfig::new(database_url).with_schema(schema);
    config.pool_size = args.pool.max(1);
    let pg = PgStore::connect(config.clone(), LedgerConfig::default()).await?;
    let prefix = format!("dayrun:{}", config.schema);
    let cache =
        RedisCache::connect(RedisCacheConfig::single(redis_url).key_prefix(prefix.clone())).await?;
    let cached = Arc::new(CachedStore::new(pg, cache, CachedStoreConfig::default()));
    // SIGINT/SIGTERM: the feed stops taking lines and finishes what it took;
    // the checks after it are abandoned; either way the schema and the
    // Redis keys are removed below (unless --keep), not left behind. The
    // handlers are installed before the schema is announced.
    let (trigger, stop) = shutdown_channel();
    let interrupted = terminated();
    tokio::spawn(async move {
        interrupted.await;
        eprintln!("day-run: interrupted: stopping, then cleaning up");
        trigger.trigger();
    });
    eprintln!("day-run: schema {}, Redis prefix {prefix}", config.schema);
    let topic = format!("dayrun_{}", config.schema);

    let outcome = async {
        let (report, elapsed, dead) = if args.reconcile_only.is_some() {
            eprintln!("day-run: reconciling {} as it is (not fed)", config.schema);
            let report = RunReport {
                applied: total,
                ..RunReport::default()
            };
            (report, Duration::ZERO, Arc::new(MemoryDeadLetters::new()))
        } else {
            let (label, mut source): (&str, Box<dyn Source>) = match &args.kafka {
                None => (
                    "postgres+redis",
                    Box::new(JsonLinesSource::open(&args.input).await?),
                ),
                Some(brokers) => (
                    "kafka -> postgres+redis",
                    Box::new(through_broker(&args, brokers, &topic).await?),
                ),
            };
            feed(
                label,
                source.as_mut(),
                &args,
                plan.clone(),
                cached.clone(),
                total,
                stop.clone(),
            )
            .await?
        };
        if stop.is_triggered() {
            eprintln!(
                "day-run: interrupted after {} of {total} applied; not reconciled",
                report.applied
            );
            return Ok(false);
        }
        let health = cached.health();
        let durable_rate = per_second(report.applied, elapsed);
        eprintln!(
            "day-run: postgres+redis: {} applied ({} duplicates), {} dead letters in {:.1}s = {durable_rate}/s",
            report.applied,
            report.duplicates,
            report.dead_lettered,
            elapsed.as_secs_f64()
        );
        let mut reasons: HashMap<String, u64> = HashMap::new();
        for letter in dead.take() {
            *reasons
                .entry(format!(
                    "{}:{}",
                    letter.reason.stage.as_str(),
                    letter.reason.code
                ))
                .or_default() += 1;
        }

        let reconcile_started = Instant::now();
        let store_report = cached.store().reconcile().await?;
        let reconcile_time = reconcile_started.elapsed();

        let Checked {
            drift,
            members: checked,
            not_cached,
            compare_time,
            reference_note,
        } = if args.no_reference {
            let compare_started = Instant::now();
            let (drift, members, not_cached) = compare(Vec::new(), cached.clone(), None).await?;
            Checked {
                drift,
                members,
                not_cached,
                compare_time: compare_started.elapsed(),
                reference_note: "skipped".to_string(),
            }
        } else {
            let shards = match args.reference_shards {
                0 => usize::try_from(total.div_ceil(2_000_000))
                    .unwrap_or(1)
                    .max(1),
                n => n,
            };
            reference_in_shards(&args, plan.clone(), cached.clone(), total, shards).await?
        };

        let ok = store_report.is_clean() && drift.total() == 0 && report.abandoned == 0;
        println!(
            "day: transactions={total} applied={} dead_letters={} seconds={:.1} rate={durable_rate}/s \
             store_drift={} members_compared={checked} drift={} not_in_cache={not_cached} verdict={}",
            report.applied,
            report.dead_lettered,
            elapsed.as_secs_f64(),
            store_report.drift.len(),
            drift.total(),
            if ok { "ZERO DRIFT" } else { "DRIFT" }
        );
        println!("  dead letters by reason: {reasons:?}");
        println!(
            "  store reconcile: {} members, {} postings, {:.1}s; compare {:.1}s; reference run: {reference_note}",
            store_report.members,
            store_report.postings,
            reconcile_time.as_secs_f64(),
            compare_time.as_secs_f64()
        );
        println!(
            "  cache: {} write-throughs, {} failures, {} store-only writes, {} evictions, breaker {:?}",
            health.write_throughs,
            health.write_through_failures,
            health.store_only_writes,
            health.evictions,
            cached.breaker().state()
        );
        for (kind, n) in &drift.counts {
            println!("  drift {kind}: {n}");
        }
        for e in &drift.examples {
            println!("    {e}");
        }
        println!(
            "| {total} | {} | {:.0} s | {durable_rate}/s | {} | {} | {} |",
            args.workers,
            elapsed.as_secs_f64(),
            store_report.drift.len(),
            drift.total(),
            not_cached
        );
        Ok::<bool, BoxError>(ok)
    };
    let outcome = {
        let mut stop = stop.clone();
        tokio::select! {
            result = outcome => result,
            () = async { stop.wait().await; tokio::time::sleep(INTERRUPT_GRACE).await } => {
                eprintln!("day-run: interrupted during the checks; not reconciled");
                Ok(false)
            }
        }
    };

    if !args.keep {
        if let Err(e) = cached.cache().clear().await {
            eprintln!("day-run: could not clear Redis prefix {prefix}: {e}");
        }
        if let Err(e) = drop_schema(&config).await {
            eprintln!("day-run: could not drop schema {}: {e}", config.schema);
        }
        if let Some(brokers) = &args.kafka {
            if let Err(e) = delete_topics(brokers, &[&topic]).await {
                eprintln!("day-run: could not delete topic {topic}: {e}");
            }
        }
    }
    outcome
}
