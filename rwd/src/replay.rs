//! `rwd replay --rules FILE --input FILE [--state DIR] [--profiles FILE]`:
//! a backtest. Runs a JSON-lines file of transactions through one ruleset
//! into a state folder (the embedded store's event log, rebuilt first when
//! it exists), through the same pipeline as the daemon (decode, member view,
//! evaluate, append, dead letters with reasons), then reconciles.
//!
//! Replaying the same file again changes nothing: every transaction is a
//! recognised duplicate.

use async_trait::async_trait;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rewards_core::ledger::{EntryKind, Receipt, ReconcileReport};
use rewards_core::memory::{FsyncPolicy, MemoryStore};
use rewards_core::{LedgerStore, MemberProfile, Outcome, Transaction};
use rewards_runtime::{
    DeadLetter, DeadLetterSink, JsonLinesDeadLetters, JsonLinesSource, LineProgress, Metrics,
    Pipeline, PipelineConfig, ProgramRegistry, RunReport,
};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::state;

/// Arguments of `rwd replay`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ruleset (`.rwd`); it must check and compile.
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// The transactions, one JSON object per line (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// The state folder (created if needed): event log and dead letters.
    #[arg(long, value_name = "DIR", default_value = "state")]
    state: PathBuf,
    /// Member profiles to load first, one JSON object per line
    /// (`{"member": "m-1", "attributes": {...}}`).
    #[arg(long, value_name = "FILE")]
    profiles: Option<PathBuf>,
    /// Parallel workers (members are spread over them; a member's
    /// transactions stay in file order). Default: the number of CPUs. With
    /// campaign budgets shared by all members, `--workers 1` makes the
    /// order in which budgets are drawn exactly the file's.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// `fsync` the event log after every N records (1: after each; 0:
    /// leave it to the operating system). The log is always synced at the end.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    fsync_every: u32,
    /// Progress display: `auto` (a bar on a terminal, plain lines
    /// otherwise), `bar`, `plain` or `none`.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    progress: ProgressMode,
    /// Seconds between plain progress lines.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    progress_interval: u64,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProgressMode {
    Auto,
    Bar,
    Plain,
    None,
}

/// Runs the replay; exit 0 when the ledger reconciles without drift.
pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(replay(args)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn replay(args: Args) -> Result<ExitCode, String> {
    let plan = state::load_plan(&args.rules)?;
    let stamp = plan.stamp().clone();

    std::fs::create_dir_all(&args.state)
        .map_err(|e| format!("{}: cannot create: {e}", args.state.display()))?;
    let log_path = state::event_log(&args.state);
    let fsync = match args.fsync_every {
        0 => FsyncPolicy::Never,
        1 => FsyncPolicy::Always,
        n => FsyncPolicy::EveryN(n),
    };
    let opening = Instant::now();
    let store = MemoryStore::open(&log_path, state::ledger_config(), fsync)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let store = Arc::new(store);
    let known = store.members().len();
    if known > 0 {
        eprintln!(
            "rebuilt {known} members from {} in {}",
            log_path.display(),
            seconds(opening.elapsed())
        );
    }

    if let Some(path) = &args.profiles {
        let loaded = load_profiles(store.as_ref(), path).await?;
        eprintln!("profiles: {loaded} loaded from {}", path.display());
    }

    let dead_path = state::dead_letters(&args.state);
    let sink = JsonLinesDeadLetters::open(&dead_path)
        .await
        .map_err(|e| format!("{}: cannot open: {e}", dead_path.display()))?;
    let sink = Arc::new(CountingSink::new(sink));
    let counting = Arc::new(CountingStore::new(store.clone()));

    let (mut source, total) = if args.input.as_os_str() == "-" {
        (JsonLinesSource::stdin(), None)
    } else {
        let total = count_lines(&args.input)?;
        let source = JsonLinesSource::open(&args.input)
            .await
            .map_err(|e| format!("{}: cannot open: {e}", args.input.display()))?;
        (source, Some(total))
    };
    let progress = source.progress();

    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let config = PipelineConfig {
        workers: workers.max(1),
        max_batch: 256,
        feed_capacity: 4096,
        queue_capacity: 1024,
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::with_config(counting.clone(), programs, sink.clone(), metrics, config);

    eprintln!(
        "replaying {} with {} v{} into {} ({workers} workers)",
        args.input.display(),
        stamp.id,
        stamp.version,
        args.state.display()
    );
    let started = Instant::now();
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shutdown = {
        let interrupted = interrupted.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::Relaxed);
            } else {
                std::future::pending::<()>().await;
            }
        }
    };
    let display = Display::new(args.progress, total, args.progress_interval);
    let ticker = tokio::spawn(display.clone().run(progress.clone(), started));
    let result = pipeline.run(&mut source, shutdown).await;
    ticker.abort();
    let elapsed = started.elapsed();
    display.finish(progress.acked(), elapsed);
    let report = result.map_err(|e| format!("the replay failed: {e}"))?;
    drop(pipeline);

    let reconcile = store
        .reconcile()
        .await
        .map_err(|e| format!("reconciliation failed: {e}"))?;
    let summary = Summary {
        input: &args.input,
        report: &report,
        sink: &sink,
        store: &counting,
        reconcile: &reconcile,
        elapsed,
        dead_path: &dead_path,
    };
    summary.print();
    if interrupted.load(Ordering::Relaxed) {
        eprintln!(
            "interrupted: every line up to {} is done; replay the file again to \
             finish (what was done is skipped as duplicates)",
            progress.done_through()
        );
    }
    // Dropping the store syncs the event log's last records.
    drop(counting);
    drop(store);
    if !reconcile.is_clean() || report.abandoned > 0 || interrupted.load(Ordering::Relaxed) {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Counts the lines of a file (for the progress total): a fast pass over
/// its bytes.
fn count_lines(path: &Path) -> Result<u64, String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    let mut last = b'\n';
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buffer[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok(lines)
}

/// Loads member profiles; a profile identical to the stored one is not
/// written again (so replaying with the same profiles adds nothing).
async fn load_profiles(store: &MemoryStore, path: &Path) -> Result<u64, String> {
    let text = crate::files::read(path)?;
    let mut loaded = 0u64;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let profile = MemberProfile::from_json_str(line)
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if store.profile(&profile.member).await.ok().as_ref() == Some(&profile) {
            continue;
        }
        store
            .put_profile(&profile)
            .await
            .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        loaded += 1;
    }
    Ok(loaded)
}

/// The progress display: an indicatif bar, plain lines, or nothing.
#[derive(Clone)]
struct Display {
    bar: Option<ProgressBar>,
    plain: bool,
    total: Option<u64>,
    interval: Duration,
}

impl Display {
    fn new(mode: ProgressMode, total: Option<u64>, interval_secs: u64) -> Display {
        let terminal = std::io::stderr().is_terminal();
        let (bar, plain) = match mode {
            ProgressMode::None => (false, false),
            ProgressMode::Bar => (true, false),
            ProgressMode::Plain => (false, true),
            ProgressMode::Auto => (terminal, !terminal),
        };
        let bar = bar.then(|| {
            let bar = match total {
                Some(total) => ProgressBar::with_draw_target(
                    Some(total),
                    ProgressDrawTarget::stderr_with_hz(10),
                ),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10)),
            };
            let template = if total.is_some() {
                "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} lines, {per_sec}, eta {eta}"
            } else {
                "{elapsed_precise} {spinner} {human_pos} lines, {per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Display {
            bar,
            plain,
            total,
            interval: Duration::from_secs(interval_secs.max(1)),
        }
    }

    async fn run(self, progress: Arc<LineProgress>, started: Instant) {
        let tick = if self.bar.is_some() {
            Duration::from_millis(100)
        } else {
            self.interval
        };
        let mut ticks = tokio::time::interval(tick);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let done = progress.acked();
            if let Some(bar) = &self.bar {
                bar.set_position(done);
            } else if self.plain {
                eprintln!("{}", self.line(done, started.elapsed()));
            }
        }
    }

    fn line(&self, done: u64, elapsed: Duration) -> String {
        let rate = per_second(done, elapsed);
        match self.total {
            Some(total) if total > 0 => {
                let permille = done.saturating_mul(1000) / total;
                format!(
                    "progress: {done}/{total} lines ({}.{}%), {rate} tx/s, {}",
                    permille / 10,
                    permille % 10,
                    seconds(elapsed)
                )
            }
            _ => format!("progress: {done} lines, {rate} tx/s, {}", seconds(elapsed)),
        }
    }

    /// Ends the display; plain mode always closes with a last line, so a
    /// run shorter than the interval still reports its progress.
    fn finish(&self, done: u64, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.finish();
        } else if self.plain {
            eprintln!("{}", self.line(done, elapsed));
        }
    }
}

/// Whole items per second.
fn per_second(items: u64, elapsed: Duration) -> u64 {
    let micros = elapsed.as_micros().max(1);
    u64::try_from(u128::from(items) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

/// A duration as seconds with three decimals (`12.345 s`).
fn seconds(elapsed: Duration) -> String {
    format!("{}.{:03} s", elapsed.as_secs(), elapsed.subsec_millis())
}

/// Counts the dead letters by reason, passing them on to the file.
struct CountingSink {
    inner: JsonLinesDeadLetters,
    by_reason: Mutex<BTreeMap<String, u64>>,
}

impl CountingSink {
    fn new(inner: JsonLinesDeadLetters) -> CountingSink {
        CountingSink {
            inner,
            by_reason: Mutex::new(BTreeMap::new()),
        }
    }

    fn counts(&self) -> BTreeMap<String, u64> {
        self.by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl DeadLetterSink for CountingSink {
    async fn send(
        &self,
        letter: &DeadLetter,
    ) -> Result<(), rewards_runtime::deadletter::SinkError> {
        self.inner.send(letter).await?;
        let reason = format!("{}/{}", letter.reason.stage.as_str(), letter.reason.code);
        *self
            .by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(reason)
            .or_default() += 1;
        Ok(())
    }
}

/// The store, counting the points of every new (not duplicate) receipt.
struct CountingStore {
    inner: Arc<MemoryStore>,
    /// Earned by purchases, authorizations and credit adjustments.
    issued: AtomicI64,
    /// Taken back by refunds and chargebacks.
    clawed_back: AtomicI64,
    /// Voided by reversals, settlements for less, debit adjustments.
    voided: AtomicI64,
    /// Removed from proposed awards by campaign budgets.
    trimmed: AtomicI64,
    /// Members whose first transaction this replay applied.
    new_members: AtomicU64,
}

impl CountingStore {
    fn new(inner: Arc<MemoryStore>) -> CountingStore {
        CountingStore {
            inner,
            issued: AtomicI64::new(0),
            clawed_back: AtomicI64::new(0),
            voided: AtomicI64::new(0),
            trimmed: AtomicI64::new(0),
            new_members: AtomicU64::new(0),
        }
    }

    fn count(&self, receipt: &Receipt) {
        if receipt.duplicate {
            return;
        }
        if receipt.version == 1 {
            self.new_members.fetch_add(1, Ordering::Relaxed);
        }
        self.trimmed
            .fetch_add(receipt.trimmed.get(), Ordering::Relaxed);
        let net = receipt
            .delta
            .available
            .get()
            .saturating_add(receipt.delta.pending.get());
        let counter = match receipt.kind {
            EntryKind::Refund | EntryKind::Chargeback => &self.clawed_back,
            _ if net >= 0 => &self.issued,
            _ => &self.voided,
        };
        counter.fetch_add(net.saturating_abs(), Ordering::Relaxed);
    }

    fn get(counter: &AtomicI64) -> i64 {
        counter.load(Ordering::Relaxed)
    }
}

rewards_core::forward_ledger_store! {
    impl LedgerStore for CountingStore {
        forward self.inner;
        // The trait's defaults, as before: views one member at a time, no outbox.
        default member_views, outbox_fetch, outbox_ack;

        async fn append(
            &self,
            tx: &Transaction,
            outcome: &Outcome,
        ) -> rewards_core::error::Result<Receipt> {
            let receipt = self.inner.append(tx, outcome).await?;
            self.count(&receipt);
            Ok(receipt)
        }

        async fn append_batch(
            &self,
            items: &[(Transaction, Outcome)],
        ) -> rewards_core::error::Result<Vec<rewards_core::error::Result<Receipt>>> {
            let results = self.inner.append_batch(items).await?;
            for receipt in results.iter().flatten() {
                self.count(receipt);
            }
            Ok(results)
        }
    }
}

/// The final summary, printed to stdout.
struct Summary<'a> {
    input: &'a Path,
    report: &'a RunReport,
    sink: &'a CountingSink,
    store: &'a CountingStore,
    reconcile: &'a ReconcileReport,
    elapsed: Duration,
    dead_path: &'a Path,
}

impl Summary<'_> {
    fn print(&self) {
        let r = self.report;
        let row = |name: &str, value: String| println!("  {name:<22} {value:>14}");
        println!("replay of {}", self.input.display());
        row("transactions read", r.received.to_string());
        row(
            "accepted",
            r.applied.saturating_sub(r.duplicates).to_string(),
        );
        row("duplicates", r.duplicates.to_string());
        row("dead-lettered", r.dead_lettered.to_string());
        for (reason, n) in self.sink.counts() {
            println!("    {reason:<20} {n:>14}");
        }
        if r.abandoned > 0 {
            row("not finished", r.abandoned.to_string());
        }
        let s = self.store;
        row("points issued", CountingStore::get(&s.issued).to_string());
        row(
            "points clawed back",
            CountingStore::get(&s.clawed_back).to_string(),
        );
        row("points voided", CountingStore::get(&s.voided).to_string());
        row("points trimmed", CountingStore::get(&s.trimmed).to_string());
        row(
            "new members",
            s.new_members.load(Ordering::Relaxed).to_string(),
        );
        row("members", self.reconcile.members.to_string());
        row("elapsed", seconds(self.elapsed));
        row(
            "throughput",
            format!("{} tx/s", per_second(r.received, self.elapsed)),
        );
        if r.dead_lettered > 0 {
            println!("dead letters: {}", self.dead_path.display());
        }
        let drift = self.reconcile.drift.len();
        println!(
            "reconciliation: {} members, {} postings, drift {drift}",
            self.reconcile.members, self.reconcile.postings
        );
        for d in self.reconcile.drift.iter().take(20) {
            println!(
                "  drift {}: stored {}/{}, postings {}/{}, lots {}/{} (available/pending)",
                d.member,
                d.stored.available,
                d.stored.pending,
                d.from_postings.available,
                d.from_postings.pending,
                d.from_lots.available,
                d.from_lots.pending
            );
        }
    }
}
