//! The bundled daemon: configuration, store, programs, pipeline, jobs and
//! HTTP API wired together, with a start and a graceful stop.
//!
//! Shaped after mini-redis: [`Daemon::start`] builds everything, binds the
//! listener and spawns one task per job (pipeline, HTTP server, scheduled
//! jobs, rules watcher); every task watches one [`ShutdownSignal`].
//! [`Daemon::shutdown`] fires it (the binary does on SIGTERM/SIGINT); then
//! the source stops taking input, the pipeline finishes and acknowledges
//! the work in flight and the source commits (Kafka offsets), the HTTP
//! server finishes the requests in flight, the jobs stop between sweeps,
//! and [`Daemon::wait`] flushes the explain journal and drops the store
//! (which syncs the event log) before it returns.
//!
//! Modules: [`config`] (TOML + environment, validated), [`rules`]
//! (programs, hot reload, scheduled activation, rollback), [`dsl`] (the
//! `.rwd` compiler), [`journal`] (what explain re-evaluates), [`http`]
//! (the API), [`metrics`] (the daemon's own Prometheus metrics),
//! [`logging`], [`sample`] (example data), and `full` (PostgreSQL, Redis
//! and Kafka; feature `full`).

pub mod config;
pub mod dsl;
#[cfg(feature = "full")]
pub mod full;
pub mod http;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod rules;
pub mod sample;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::{FsyncPolicy, MemoryStore};
use rewards_core::{ErrorKind, LedgerStore, MemberId, MemberProfile};
use rewards_runtime::jobs::{JobRunner, JobSchedule};
use rewards_runtime::metrics::JobKind;
use rewards_runtime::{
    in_process, shutdown_channel, Backoff, DeadLetterSink, JsonLinesDeadLetters, JsonLinesSource,
    Metrics, Pipeline, PipelineConfig, RunReport, ShutdownSignal, ShutdownTrigger, Source,
};

use self::config::{Config, Fsync, InputKind, Mode};
use self::journal::{Journal, JournalingStore};
use self::metrics::{CacheFigures, DaemonMetrics};
use self::rules::{Programs, ReloadError, RuleCompiler};

/// File names inside the state folder.
pub mod files {
    /// The embedded store's event log.
    pub const EVENT_LOG: &str = "events.log";
    /// The explain journal.
    pub const JOURNAL: &str = "journal.jsonl";
    /// Dead letters (when not on a Kafka topic).
    pub const DEAD_LETTERS: &str = "dead-letters.jsonl";
}

/// How long a stopping daemon waits for the cache to be repaired.
const CACHE_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stopping daemon publishes what is left in the outbox.
#[cfg(feature = "full")]
const OUTBOX_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What a cache in front of the store offers the daemon (full mode).
#[async_trait]
pub trait CacheControl: Send + Sync {
    /// Hit ratio and health, for `/metrics`.
    fn figures(&self) -> CacheFigures;

    /// Rebuilds the entries of `members` from the store, or (`None`) drops
    /// the whole cache so reads refill it; returns a report.
    async fn rebuild(
        &self,
        members: Option<Vec<MemberId>>,
    ) -> rewards_core::error::Result<serde_json::Value>;

    /// Before the daemon stops: repairs what the cache missed while Redis
    /// was failing, for at most `within`; returns whether it is clean.
    async fn settle(&self, within: std::time::Duration) -> bool;
}

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A program did not compile or failed its tests.
    #[error("{0}")]
    Rules(#[from] ReloadError),
    /// The store could not be opened or reached.
    #[error("store: {0}")]
    Store(#[from] rewards_core::Error),
    /// A file or the listener.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The input or the pipeline.
    #[error("input: {0}")]
    Input(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// What the daemon did with a finite input (or until shutdown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The pipeline's report.
    pub report: RunReport,
    /// Net points posted by applied transactions (earned minus clawed back).
    pub points_posted: i64,
    /// Wall time of the run, milliseconds.
    pub elapsed_ms: u64,
    /// The input's name.
    pub source: String,
    /// Whether the run ended because the input ended (rather than a shutdown).
    pub input_ended: bool,
}

impl Summary {
    /// Transactions per second, with two decimals, computed in integers.
    pub fn throughput(&self) -> String {
        let ms = self.elapsed_ms.max(1);
        let per_sec_x100 = u128::from(self.report.received) * 100_000 / u128::from(ms);
        format!("{}.{:02}", per_sec_x100 / 100, per_sec_x100 % 100)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.report;
        writeln!(f, "summary of {}", self.source)?;
        writeln!(f, "  transactions read      {}", r.received)?;
        writeln!(
            f,
            "  applied                {} ({} duplicates of earlier runs)",
            r.applied, r.duplicates
        )?;
        writeln!(f, "  points posted (net)    {}", self.points_posted)?;
        writeln!(f, "  dead letters           {}", r.dead_lettered)?;
        if r.abandoned > 0 {
            writeln!(f, "  abandoned (redelivered later) {}", r.abandoned)?;
        }
        writeln!(
            f,
            "  time                   {}.{:03} s",
            self.elapsed_ms / 1000,
            self.elapsed_ms % 1000
        )?;
        write!(f, "  throughput             {} tx/s", self.throughput())
    }
}

/// A running daemon.
pub struct Daemon {
    addr: SocketAddr,
    state: Arc<http::AppState>,
    trigger: Arc<ShutdownTrigger>,
    summary: watch::Receiver<Option<Summary>>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    pipeline_task: Option<JoinHandle<Result<(), String>>>,
    has_input: bool,
    /// Stops the outbox relay (full mode), in [`Daemon::wait`] once the
    /// pipelines have finished.
    relay_stop: Option<ShutdownTrigger>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn fsync_policy(f: Fsync) -> FsyncPolicy {
    match f {
        Fsync::Always => FsyncPolicy::Always,
        Fsync::Every(n) => FsyncPolicy::EveryN(n),
        Fsync::Never => FsyncPolicy::Never,
    }
}

/// The store and its optional cache.
struct Stores {
    store: Arc<dyn LedgerStore>,
    cache: Option<Arc<dyn CacheControl>>,
}

async fn open_store(config: &Config, journal: &Arc<Journal>) -> Result<Stores, StartError> {
    let _ = journal;
    match config.mode {
        Mode::Embedded => {
            let path = config.state_dir.join(files::EVENT_LOG);
            let ledger = LedgerConfig {
                authorization_ttl_secs: i64::from(config.store.authorization_ttl_days) * 86_400,
            };
            let fsync = fsync_policy(config.store.fsync);
            let started = Instant::now();
            let store =
                tokio::task::spawn_blocking(move || MemoryStore::open(&path, ledger, fsync))
                    .await
                    .map_err(|e| {
                        StartError::Input(format!("opening the event log panicked: {e}"))
                    })??;
            tracing::info!(
                event_log = %config.state_dir.join(files::EVENT_LOG).display(),
                members = store.members().len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "embedded store rebuilt from its event log"
            );
            Ok(Stores {
                store: Arc::new(store),
                cache: None,
            })
        }
        #[cfg(feature = "full")]
        Mode::Full => {
            let journal = journal.clone();
            let members = Arc::new(move || journal.members());
            let (store, cache) = full::open_store(config, members).await?;
            Ok(Stores { store, cache })
        }
        #[cfg(not(feature = "full"))]
        Mode::Full => Err(StartError::Input(
            "full mode needs the daemon built with the `full` feature".into(),
        )),
    }
}

/// Imports member profiles (JSON lines); unchanged profiles are skipped so a
/// restart does not grow the event log. Returns how many were written.
async fn import_profiles(store: &dyn LedgerStore, path: &Path) -> Result<u64, StartError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(io_error(format!("reading profiles {}", path.display())))?;
    let mut written = 0u64;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let profile = MemberProfile::from_json_str(line)
            .map_err(|e| StartError::Input(format!("{}:{}: {e}", path.display(), i + 1)))?;
        match store.profile(&profile.member).await {
            Ok(existing) if existing == profile => continue,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        store.put_profile(&profile).await?;
        written += 1;
    }
    Ok(written)
}

fn schedule(config: &Config) -> Vec<JobSchedule> {
    let j = &config.jobs;
    [
        (
            JobKind::AuthorizationExpiry,
            j.authorization_expiry_every_secs,
        ),
        (JobKind::PendingRelease, j.pending_release_every_secs),
        (JobKind::Expiry, j.expiry_every_secs),
        (JobKind::TierReview, j.tier_review_every_secs),
    ]
    .into_iter()
    .map(|(job, secs)| JobSchedule {
        job,
        every: Duration::from_secs(secs),
    })
    .collect()
}

async fn open_source(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Box<dyn Source>>, StartError> {
    let _ = metrics;
    Ok(match config.input.kind {
        InputKind::None => None,
        InputKind::Stdin => Some(Box::new(JsonLinesSource::stdin())),
        InputKind::File => {
            let path = config
                .input
                .path
                .as_ref()
                .ok_or_else(|| StartError::Input("input.path is not set".into()))?;
            let source = JsonLinesSource::open(path)
                .await
                .map_err(io_error(format!("opening input {}", path.display())))?;
            Some(Box::new(source))
        }
        #[cfg(feature = "full")]
        InputKind::Kafka => Some(full::kafka_source(config, metrics.clone()).await?),
        #[cfg(not(feature = "full"))]
        InputKind::Kafka => {
            return Err(StartError::Input(
                "kafka input needs the daemon built with the `full` feature".into(),
            ))
        }
    })
}

async fn dead_letter_sink(config: &Config) -> Result<Arc<dyn DeadLetterSink>, StartError> {
    #[cfg(feature = "full")]
    if config.mode == Mode::Full && !config.kafka.dead_letter_topic.is_empty() {
        return full::dead_letter_sink(config);
    }
    let path = config.state_dir.join(files::DEAD_LETTERS);
    let sink = JsonLinesDeadLetters::open(&path)
        .await
        .map_err(io_error(format!("opening dead letters {}", path.display())))?;
    Ok(Arc::new(sink))
}

impl Daemon {
    /// Validates `config`, builds everything and starts serving.
    pub async fn start(
        config: Config,
        compiler: Arc<dyn RuleCompiler>,
    ) -> Result<Daemon, StartError> {
        config.validate()?;
        let started = Instant::now();
        std::fs::create_dir_all(&config.state_dir).map_err(io_error(format!(
            "creating the state folder {}",
            config.state_dir.display()
        )))?;
        tracing::info!(mode = config.mode.as_str(), state_dir = %config.state_dir.display(), "starting");

        let runtime_metrics = Arc::new(Metrics::new());
        let metrics = Arc::new(DaemonMetrics::new());
        let programs = Arc::new(Programs::load(
            config.programs.files.clone(),
            config.default_program(),
            config.programs.keep_versions,
            compiler,
            runtime_metrics.clone(),
            metrics.clone(),
        )?);

        let journal_path = config.state_dir.join(files::JOURNAL);
        let journal = Arc::new(Journal::open(&journal_path).map_err(io_error(format!(
            "opening the journal {}",
            journal_path.display()
        )))?);
        let Stores { store, cache } = open_store(&config, &journal).await?;
        if let Some(path) = &config.input.profiles {
            let n = import_profiles(store.as_ref(), path).await?;
            metrics.profiles_imported(n);
            tracing::info!(profiles = %path.display(), written = n, "member profiles imported");
        }
        let journaling: Arc<dyn LedgerStore> =
            Arc::new(JournalingStore::new(store.clone(), journal.clone()));

        let dead_letters = dead_letter_sink(&config).await?;
        let pipeline_config = PipelineConfig {
            workers: config.pipeline.workers,
            feed_capacity: config.pipeline.feed_capacity,
            queue_capacity: config.pipeline.queue_capacity,
            max_batch: config.pipeline.max_batch,
            backoff: Backoff::default(),
            drain_timeout: Duration::from_millis(config.pipeline.drain_timeout_ms),
        };
        let pipeline = Pipeline::with_config(
            journaling.clone(),
            programs.registry().clone(),
            dead_letters,
            runtime_metrics.clone(),
            pipeline_config,
        );
        let (mut http_source, submitter) = in_process(config.pipeline.feed_capacity);
        let (trigger, signal) = shutdown_channel();
        let trigger = Arc::new(trigger);
        let ready = Arc::new(AtomicBool::new(false));
        let state = Arc::new(http::AppState {
            store: journaling.clone(),
            plain_store: store.clone(),
            programs: programs.clone(),
            runtime_metrics: runtime_metrics.clone(),
            metrics: metrics.clone(),
            journal: journal.clone(),
            cache,
            auth: http::Auth::new(
                &config.http.tokens,
                &config.http.admin_tokens,
                &config.http.ingest_tokens,
            ),
            submitter,
            ready: ready.clone(),
            mode: config.mode.as_str(),
            started,
        });

        // HTTP first, so /health answers while the input runs.
        let listener = tokio::net::TcpListener::bind(config.http.addr)
            .await
            .map_err(io_error(format!("binding {}", config.http.addr)))?;
        let addr = listener
            .local_addr()
            .map_err(io_error("reading the bound address"))?;
        let router = http::router(
            state.clone(),
            config.http.max_body_bytes,
            config.http.max_concurrent_requests,
            Duration::from_millis(config.http.request_timeout_ms),
        );
        let mut tasks: Vec<(&'static str, JoinHandle<()>)> = Vec::new();
        {
            // The HTTP ingestion (`POST /v1/transactions`) runs its own run
            // of the same pipeline: same store, plans and dead letters.
            let pipeline = pipeline.clone();
            let mut stop = signal.clone();
            tasks.push((
                "http-ingest",
                tokio::spawn(async move {
                    match pipeline
                        .run(&mut http_source, async move { stop.wait().await })
                        .await
                    {
                        Ok(report) => tracing::info!(?report, "HTTP ingestion stopped"),
                        Err(e) => tracing::error!(error = %e, "HTTP ingestion failed"),
                    }
                }),
            ));
        }
        {
            let mut stop = signal.clone();
            tasks.push((
                "http",
                tokio::spawn(async move {
                    let served = axum::serve(listener, router)
                        .with_graceful_shutdown(async move { stop.wait().await })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "HTTP server failed");
                    }
                }),
            ));
        }
        tracing::info!(%addr, "HTTP API listening");

        #[cfg(not(feature = "full"))]
        let relay_stop = None;
        #[cfg(feature = "full")]
        let mut relay_stop = None;
        #[cfg(feature = "full")]
        if config.mode == Mode::Full {
            if let Some(relay) =
                full::outbox_relay(&config, store.clone(), runtime_metrics.clone())?
            {
                // Not stopped by the shutdown signal: the pipelines finish
                // their work in flight after it, and the outcomes of that
                // work must be published too. `wait` stops the relay once
                // they have finished; then it drains the outbox.
                let (relay_trigger, mut stop) = shutdown_channel();
                relay_stop = Some(relay_trigger);
                tasks.push((
                    "outbox",
                    tokio::spawn(async move {
                        relay.run(async move { stop.wait().await }).await;
                        full::drain_outbox(&relay, OUTBOX_DRAIN).await;
                    }),
                ));
            }
        }

        let (summary_tx, summary_rx) = watch::channel(None);
        if config.jobs.enabled {
            // The tier review decides with the default program as it is
            // at each run (hot reloads included).
            let runner = JobRunner::new(
                store.clone(),
                programs.registry().clone(),
                runtime_metrics.clone(),
            )
            .with_schedule(schedule(&config));
            let stop = signal.clone();
            // A file is a replay of past transactions: the jobs sweep by the
            // wall clock, so a sweep in the middle of the replay would expire
            // an authorization (or points) that the file's own later lines
            // settle (or spend) within their event time, and the result would
            // depend on timing. They start once the file has been read.
            let mut replay_done =
                (config.input.kind == InputKind::File).then(|| summary_rx.clone());
            tasks.push((
                "jobs",
                tokio::spawn(async move {
                    if let Some(done) = replay_done.as_mut() {
                        let mut wait_stop = stop.clone();
                        tokio::select! {
                            () = wait_stop.wait() => return,
                            finished = done.wait_for(Option::is_some) => {
                                if finished.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    runner.run(stop).await
                }),
            ));
        }

        {
            let programs = programs.clone();
            let mut stop = signal.clone();
            let every = config.poll_interval();
            let watch_files = config.programs.watch;
            tasks.push((
                "rules",
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.wait() => return,
                            () = tokio::time::sleep(every) => {}
                        }
                        programs.activate_due(chrono::Utc::now()).await;
                        if watch_files {
                            programs.reload_changed_files().await;
                        }
                    }
                }),
            ));
        }

        let source = open_source(&config, &runtime_metrics).await?;
        let has_input = source.is_some();
        let pipeline_task = match source {
            None => None,
            Some(mut source) => {
                let stop = signal.clone();
                let metrics = runtime_metrics.clone();
                Some(tokio::spawn(async move {
                    run_input(pipeline, source.as_mut(), stop, metrics, summary_tx).await
                }))
            }
        };
        ready.store(true, Ordering::Release);
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            programs = ?programs.stamps().iter().map(|(n, s)| format!("{n}={}@v{}", s.id, s.version)).collect::<Vec<_>>(),
            "ready"
        );
        Ok(Daemon {
            addr,
            state,
            trigger,
            summary: summary_rx,
            tasks,
            pipeline_task,
            has_input,
            relay_stop,
        })
    }

    /// The address the HTTP API listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The programs (for tests and embedding hosts).
    pub fn programs(&self) -> &Arc<Programs> {
        &self.state.programs
    }

    /// The ledger store (without the journal wrapper).
    pub fn ledger(&self) -> &Arc<dyn LedgerStore> {
        &self.state.plain_store
    }

    /// The runtime metrics.
    pub fn runtime_metrics(&self) -> &Arc<Metrics> {
        &self.state.runtime_metrics
    }

    /// A handle that stops the daemon from anywhere (signal handlers).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            trigger: self.trigger.clone(),
            ready: self.state.ready.clone(),
        }
    }

    /// Begins the graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown_handle().shutdown();
    }

    /// Waits until the input has ended (or the daemon stopped) and returns
    /// the run's summary; `None` when the daemon has no input.
    pub async fn input_finished(&self) -> Option<Summary> {
        if !self.has_input {
            return None;
        }
        let mut rx = self.summary.clone();
        let result = rx.wait_for(Option::is_some).await;
        result.ok().and_then(|s| s.clone())
    }

    /// Waits for every task to end (after [`Daemon::shutdown`]), flushes the
    /// journal and closes the store; returns the run's summary, if any.
    pub async fn wait(mut self) -> Result<Option<Summary>, StartError> {
        let mut failure = None;
        if let Some(task) = self.pipeline_task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(e) => failure = Some(format!("pipeline task failed: {e}")),
            }
        }
        for (name, task) in self.tasks.drain(..) {
            if name == "outbox" {
                // The pipelines have finished (the input above, the HTTP
                // ingestion as an earlier task): publish what they applied.
                if let Some(stop) = &self.relay_stop {
                    stop.trigger();
                }
            }
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "task ended abnormally");
            }
        }
        if let Err(e) = self.state.journal.sync() {
            tracing::warn!(error = %e, "journal sync failed");
        }
        if let Some(cache) = &self.state.cache {
            if !cache.settle(CACHE_SETTLE).await {
                tracing::warn!(
                    "cache not repaired before stopping: entries Redis missed may be stale \
                     until the next start clears it"
                );
            }
        }
        let summary = self.summary.borrow().clone();
        // The last references to the store go here: the event log syncs on drop.
        drop(self);
        tracing::info!("stopped");
        match failure {
            Some(e) => Err(StartError::Input(e)),
            None => Ok(summary),
        }
    }
}

/// Stops a daemon; cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    trigger: Arc<ShutdownTrigger>,
    ready: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Begins the graceful shutdown (idempotent).
    pub fn shutdown(&self) {
        if self.ready.swap(false, Ordering::AcqRel) {
            tracing::info!("shutdown requested: no more input; finishing the work in flight");
        }
        self.trigger.trigger();
    }
}

async fn run_input(
    pipeline: Pipeline,
    source: &mut dyn Source,
    stop: ShutdownSignal,
    metrics: Arc<Metrics>,
    summary: watch::Sender<Option<Summary>>,
) -> Result<(), String> {
    let name = source.name();
    let started = Instant::now();
    let points_before = metrics.points_posted.load(Ordering::Relaxed);
    let mut stop_wait = stop.clone();
    let result = pipeline
        .run(source, async move { stop_wait.wait().await })
        .await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let points = metrics.points_posted.load(Ordering::Relaxed) - points_before;
    match result {
        Ok(report) => {
            let s = Summary {
                report,
                points_posted: points,
                elapsed_ms,
                source: name,
                input_ended: !stop.is_triggered(),
            };
            tracing::info!(
                received = s.report.received,
                applied = s.report.applied,
                duplicates = s.report.duplicates,
                dead_letters = s.report.dead_lettered,
                points = s.points_posted,
                elapsed_ms,
                throughput = %s.throughput(),
                "input finished"
            );
            summary.send_replace(Some(s));
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "input failed");
            summary.send_replace(Some(Summary {
                report: RunReport::default(),
                points_posted: points,
                elapsed_ms,
                source: name,
                input_ended: false,
            }));
            Err(e.to_string())
        }
    }
}

/// The state folder's path for a file.
pub fn state_file(config: &Config, name: &str) -> PathBuf {
    config.state_dir.join(name)
}

/// Validates `config` and compiles (and tests) every program, without
/// starting anything: `rewards-daemon --check`.
pub fn check(config: &Config, compiler: Arc<dyn RuleCompiler>) -> Result<String, StartError> {
    config.validate()?;
    let programs = Programs::load(
        config.programs.files.clone(),
        config.default_program(),
        config.programs.keep_versions,
        compiler,
        Arc::new(Metrics::new()),
        Arc::new(DaemonMetrics::new()),
    )?;
    let mut out = format!("configuration OK (mode {})", config.mode.as_str());
    for (name, stamp) in programs.stamps() {
        let default = if &*name == programs.default_program() {
            " (default)"
        } else {
            ""
        };
        out.push_str(&format!(
            "\n  program {name}{default}: ruleset {} version {} hash {}",
            stamp.id, stamp.version, stamp.hash
        ));
    }
    Ok(out)
}
