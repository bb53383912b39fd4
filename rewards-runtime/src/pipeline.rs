//! The pipeline: decode → pick the plan → member view → evaluate → append →
//! acknowledge. It drives; it never evaluates rules itself.
//!
//! ```text
//!  Source ──Feed (bounded)──▶ dispatcher ──shard by member (bounded)──▶ worker 0..N
//!                             (decode)                                  view, evaluate,
//!                                                                       append / dead letter,
//!                                                                       ack
//! ```
//!
//! - **Ordering.** The dispatcher routes every transaction of a member to
//!   the same worker, and a worker handles its queue in order, so a member's
//!   transactions are applied in the order the source delivered them (on
//!   Kafka: partition order, the key being the member). Workers run in
//!   parallel across members.
//! - **Adaptive batching in waves.** A worker takes whatever is already
//!   waiting in its queue and never waits for more: one message alone is
//!   appended at once (no latency cost at low load), a backlog is appended
//!   in batches. Each round takes, in arrival order, the first waiting
//!   transaction of each member, up to `max_batch` (a member's later
//!   transactions wait for later rounds, at most `4 × max_batch` jobs are
//!   held back). A round is a wave of distinct members: their views are
//!   read in one `member_views` call and their outcomes appended in one
//!   `append_batch`; the next round starts once it is durable, so a view
//!   always reflects the member's earlier transactions.
//! - **Acks** go to the source only after the outcome is durable (the store
//!   returned `Ok`, or the dead-letter sink returned `Ok`).
//! - **Bad input** (decode errors, unknown programs, evaluation failures,
//!   permanent ledger errors) goes to the dead-letter sink with its reason;
//!   the worker carries on.
//! - **Transient store errors** open the [`CircuitBreaker`]: the worker
//!   keeps its messages, waits out an exponential backoff and retries;
//!   meanwhile the bounded queues fill up and the source stops reading
//!   (the Kafka source also pauses its partitions). Nothing is acknowledged,
//!   nothing is lost.
//! - **Shutdown.** When the shutdown future completes, the source stops
//!   taking input; the work already taken is finished and acknowledged;
//!   then the source commits ([`Source::finish`]). If the store is down, the
//!   work still waiting is given up after `drain_timeout` (unacknowledged,
//!   so it is delivered again later).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;

use rewards_core::ledger::Receipt;
use rewards_core::store::MAX_BATCH_ITEMS;
use rewards_core::{Error as StoreError, LedgerStore, MemberId, Outcome, Transaction};

use crate::breaker::{Backoff, CircuitBreaker};
use crate::deadletter::{DeadLetter, DeadLetterReason, DeadLetterSink};
use crate::metrics::Metrics;
use crate::registry::ProgramRegistry;
use crate::shutdown::{shutdown_channel, ShutdownSignal};
use crate::source::{Ack, Delivery, Disposition, Feed, Origin, Payload, Source};
use crate::RuntimeError;

/// Limits and timings of a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Parallel workers (members are spread over them).
    pub workers: usize,
    /// Messages waiting between the source and the dispatcher.
    pub feed_capacity: usize,
    /// Messages waiting per worker.
    pub queue_capacity: usize,
    /// Most transactions per store append (at most
    /// [`MAX_BATCH_ITEMS`]).
    pub max_batch: usize,
    /// Backoff of the store circuit breaker (and of dead-letter retries).
    pub backoff: Backoff,
    /// After shutdown, how long to keep retrying a failing store before
    /// giving up the work still waiting (it stays unacknowledged).
    pub drain_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 4,
            feed_capacity: 256,
            queue_capacity: 256,
            max_batch: 64,
            backoff: Backoff::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// What one [`Pipeline::run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages taken from the source.
    pub received: u64,
    /// Transactions the store accepted (including recognised duplicates).
    pub applied: u64,
    /// Of those, duplicates (already applied before).
    pub duplicates: u64,
    /// Messages written to the dead letters.
    pub dead_lettered: u64,
    /// Messages given up unacknowledged (shutdown during a store outage).
    pub abandoned: u64,
    /// Messages skipped because their source gave them up (revoked partition).
    pub stale: u64,
}

#[derive(Debug, Default)]
struct RunCounters {
    received: AtomicU64,
    applied: AtomicU64,
    duplicates: AtomicU64,
    dead_lettered: AtomicU64,
    abandoned: AtomicU64,
    stale: AtomicU64,
}

impl RunCounters {
    fn report(&self) -> RunReport {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RunReport {
            received: get(&self.received),
            applied: get(&self.applied),
            duplicates: get(&self.duplicates),
            dead_lettered: get(&self.dead_lettered),
            abandoned: get(&self.abandoned),
            stale: get(&self.stale),
        }
    }
}

/// The pipeline; cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn LedgerStore>,
    programs: Arc<ProgramRegistry>,
    dead_letters: Arc<dyn DeadLetterSink>,
    metrics: Arc<Metrics>,
    breaker: Arc<CircuitBreaker>,
    config: PipelineConfig,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("programs", &self.inner.programs)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// The message body kept for the dead letters.
enum Raw {
    Bytes(Vec<u8>),
    /// Submitted decoded: re-encoded canonically if dead-lettered.
    Decoded,
}

/// Everything about a message but its transaction.
struct Meta {
    raw: Raw,
    key: Option<Vec<u8>>,
    origin: Origin,
    received_at: Instant,
    timestamp: Option<DateTime<Utc>>,
    ack: Ack,
}

// Moved once per message; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Work {
    Apply(Transaction),
    Reject(DeadLetterReason),
}

struct Job {
    work: Work,
    meta: Meta,
}

/// Why a store or sink call ended without a result.
enum Stop {
    /// The store refused for good.
    Permanent(StoreError),
    /// Shutdown gave up waiting for the store.
    Aborted,
}

/// The transactions of one wave waiting for a store append.
#[derive(Default)]
struct Segment {
    items: Vec<(Transaction, Outcome)>,
    metas: Vec<Meta>,
}

impl Pipeline {
    /// A pipeline over `store`, running the plans of `programs`, writing bad
    /// input to `dead_letters`, with default limits and its own metrics.
    pub fn new(
        store: Arc<dyn LedgerStore>,
        programs: Arc<ProgramRegistry>,
        dead_letters: Arc<dyn DeadLetterSink>,
        metrics: Arc<Metrics>,
    ) -> Pipeline {
        Pipeline::with_config(
            store,
            programs,
            dead_letters,
            metrics,
            PipelineConfig::default(),
        )
    }

    /// As [`Pipeline::new`], with explicit limits.
    pub fn with_config(
        store: Arc<dyn LedgerStore>,
        programs: Arc<ProgramRegistry>,
        dead_letters: Arc<dyn DeadLetterSink>,
        metrics: Arc<Metrics>,
        mut config: PipelineConfig,
    ) -> Pipeline {
        config.workers = config.workers.max(1);
        config.feed_capacity = config.feed_capacity.max(1);
        config.queue_capacity = config.queue_capacity.max(1);
        config.max_batch = config.max_batch.clamp(1, MAX_BATCH_ITEMS);
        let breaker = Arc::new(CircuitBreaker::new(config.backoff, metrics.clone()));
        Pipeline {
            inner: Arc::new(Inner {
                store,
                programs,
                dead_letters,
                metrics,
                breaker,
                config,
            }),
        }
    }

    /// The program registry (swap plans through it while running).
    pub fn programs(&self) -> &Arc<ProgramRegistry> {
        &self.inner.programs
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The store circuit breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.inner.breaker
    }

    /// Runs `source` through the pipeline until its input ends or `shutdown`
    /// completes, finishes the work in flight, lets the source commit, and
    /// reports. A source error is returned after the drain and the commit.
    pub async fn run(
        &self,
        source: &mut dyn Source,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<RunReport, RuntimeError> {
        let inner = &self.inner;
        let config = &inner.config;
        let counters = Arc::new(RunCounters::default());
        let (stop_trigger, stop) = shutdown_channel();
        let (abort_trigger, abort) = shutdown_channel();

        let mut shards = Vec::with_capacity(config.workers);
        let mut workers = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let (tx, rx) = mpsc::channel(config.queue_capacity);
            shards.push(tx);
            let worker = Worker {
                inner: inner.clone(),
                counters: counters.clone(),
                abort: abort.clone(),
            };
            workers.push(tokio::spawn(worker.run(rx)));
        }
        let (feed_tx, feed_rx) = mpsc::channel(config.feed_capacity);
        let dispatcher = tokio::spawn(dispatch(
            feed_rx,
            shards,
            counters.clone(),
            inner.metrics.clone(),
        ));
        let feed = Feed::new(feed_tx, inner.metrics.clone(), inner.breaker.clone());
        tracing::info!(source = %source.name(), workers = config.workers, "pipeline started");

        tokio::pin!(shutdown);
        let mut stopping_since: Option<Instant> = None;
        let source_result = {
            let run = source.run(feed, stop.clone());
            tokio::pin!(run);
            loop {
                tokio::select! {
                    result = &mut run => break result,
                    () = &mut shutdown, if stopping_since.is_none() => {
                        tracing::info!("shutdown: no more input");
                        stop_trigger.trigger();
                        stopping_since = Some(Instant::now());
                    }
                }
            }
        };
        if let Err(e) = &source_result {
            tracing::error!(error = %e, "source failed; draining what it delivered");
        }

        // The feed is closed: the dispatcher ends, then every worker after
        // its queue. Wait for them; a shutdown during the drain (or the one
        // that stopped the source) bounds how long a failing store is retried.
        let drain = async {
            let _ = dispatcher.await;
            for worker in workers {
                if let Err(e) = worker.await {
                    tracing::error!(error = %e, "worker ended abnormally");
                }
            }
        };
        tokio::pin!(drain);
        loop {
            let deadline = stopping_since.map(|since| since + config.drain_timeout);
            tokio::select! {
                () = &mut drain => break,
                () = &mut shutdown, if stopping_since.is_none() => {
                    stop_trigger.trigger();
                    stopping_since = Some(Instant::now());
                }
                () = sleep_until_opt(deadline), if !abort.is_triggered() => {
                    tracing::warn!("drain timeout: giving up unacknowledged work");
                    abort_trigger.trigger();
                }
            }
        }

        let finish_result = source.finish().await;
        let report = counters.report();
        tracing::info!(?report, "pipeline stopped");
        source_result?;
        finish_result?;
        Ok(report)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn shard_of(bytes: &[u8], shards: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    usize::try_from(hasher.finish() % shards as u64).unwrap_or(0)
}

/// Decodes and routes each delivery to its member's worker.
async fn dispatch(
    mut feed: mpsc::Receiver<Delivery>,
    shards: Vec<mpsc::Sender<Job>>,
    counters: Arc<RunCounters>,
    metrics: Arc<Metrics>,
) {
    while let Some(delivery) = feed.recv().await {
        counters.received.fetch_add(1, Ordering::Relaxed);
        let Delivery {
            payload,
            key,
            origin,
            received_at,
            timestamp,
            ack,
        } = delivery;
        let (work, raw) = match payload {
            Payload::Decoded(tx) => (Work::Apply(*tx), Raw::Decoded),
            Payload::Bytes(bytes) => match Transaction::from_json_bytes(&bytes) {
                Ok(tx) => (Work::Apply(tx), Raw::Bytes(bytes)),
                Err(e) => (
                    Work::Reject(DeadLetterReason::decode(&e)),
                    Raw::Bytes(bytes),
                ),
            },
        };
        let shard = match &work {
            Work::Apply(tx) => shard_of(tx.member.as_str().as_bytes(), shards.len()),
            Work::Reject(_) => key.as_deref().map_or(0, |key| shard_of(key, shards.len())),
        };
        let job = Job {
            work,
            meta: Meta {
                raw,
                key,
                origin,
                received_at,
                timestamp,
                ack,
            },
        };
        if let Err(lost) = shards[shard].send(job).await {
            // The worker is gone (aborted): the message stays unacknowledged.
            drop(lost);
            counters.abandoned.fetch_add(1, Ordering::Relaxed);
            metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How many batches' worth of jobs a worker may hold back (see
/// [`take_round`]).
const HOLD_BATCHES: usize = 4;

/// Moves the next round out of `pending` into `batch`: in arrival order,
/// every job whose member has no earlier job still waiting or already in
/// the round, up to `max_batch` transactions (dead letters and stale jobs
/// ride along). Each member's jobs keep their order, and a round holds at
/// most one transaction per member, so the round is one wave: one
/// `member_views` call and one `append_batch`. A hot member's later
/// transactions wait for later rounds instead of splitting this one.
fn take_round(pending: &mut VecDeque<Job>, batch: &mut Vec<Job>, max_batch: usize) {
    let mut members: HashSet<MemberId> = HashSet::new();
    let mut taken = 0;
    let mut rest = VecDeque::with_capacity(pending.len());
    while let Some(job) = pending.pop_front() {
        let take = match &job.work {
            Work::Reject(_) => true,
            Work::Apply(_) if taken >= max_batch => false,
            Work::Apply(tx) => {
                if members.insert(tx.member.clone()) {
                    taken += 1;
                    true
                } else {
                    false
                }
            }
        };
        if take {
            batch.push(job);
        } else {
            rest.push_back(job);
        }
    }
    *pending = rest;
}

struct Worker {
    inner: Arc<Inner>,
    counters: Arc<RunCounters>,
    abort: ShutdownSignal,
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let max_batch = self.inner.config.max_batch;
        // Jobs held back because their member already has one in the
        // round, in arrival order; bounded so a hot member cannot make the
        // worker buffer without end (the queue then fills and the source
        // slows down, as before).
        let hold = max_batch.saturating_mul(HOLD_BATCHES);
        let mut pending: VecDeque<Job> = VecDeque::with_capacity(hold);
        let mut batch = Vec::with_capacity(max_batch);
        loop {
            if pending.is_empty() {
                match queue.recv().await {
                    Some(job) => pending.push_back(job),
                    None => return,
                }
            }
            while pending.len() < hold {
                match queue.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => break,
                }
            }
            take_round(&mut pending, &mut batch, max_batch);
            if self.process(&mut batch).await.is_err() {
                for job in pending.drain(..) {
                    self.abandon(job.meta);
                }
                queue.close();
                while let Ok(job) = queue.try_recv() {
                    self.abandon(job.meta);
                }
                return;
            }
        }
    }

    /// Handles one batch in waves; `Err` when shutdown gave up (everything
    /// not yet acknowledged is abandoned).
    ///
    /// Wave 0 holds the first transaction of each member in the batch, wave
    /// 1 the second ones, and so on (each wave in arrival order). A wave's
    /// member views are read in one [`LedgerStore::member_views`] call, its
    /// outcomes appended with one `append_batch`; the next wave starts only
    /// once the previous one is durable, so every view reflects the
    /// member's earlier transactions and each member's order is kept.
    async fn process(&mut self, batch: &mut Vec<Job>) -> Result<(), ()> {
        let mut waves: Vec<Vec<(Transaction, Meta)>> = Vec::new();
        let mut seen: HashMap<MemberId, usize> = HashMap::new();
        let mut jobs = batch.drain(..);
        while let Some(job) = jobs.next() {
            if job.meta.ack.is_stale() {
                self.counters.stale.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            match job.work {
                Work::Reject(reason) => {
                    if self.dead_letter(job.meta, None, reason).await.is_err() {
                        self.abandon_waves(waves);
                        self.abandon_all(jobs);
                        return Err(());
                    }
                }
                Work::Apply(tx) => {
                    let wave = seen.entry(tx.member.clone()).or_insert(0);
                    if waves.len() <= *wave {
                        waves.push(Vec::new());
                    }
                    waves[*wave].push((tx, job.meta));
                    *wave += 1;
                }
            }
        }
        drop(jobs);
        let mut waves = waves.into_iter();
        while let Some(wave) = waves.next() {
            if self.run_wave(wave).await.is_err() {
                self.abandon_waves(waves.collect());
                return Err(());
            }
        }
        Ok(())
    }

    /// One wave (at most one transaction per member): resolve the plans,
    /// read every view in one call, evaluate, append, acknowledge.
    async fn run_wave(&mut self, wave: Vec<(Transaction, Meta)>) -> Result<(), ()> {
        let inner = self.inner.clone();
        let mut ready = Vec::with_capacity(wave.len());
        let mut requests = Vec::with_capacity(wave.len());
        let mut wave = wave.into_iter();
        while let Some((tx, meta)) = wave.next() {
            match inner.programs.resolve(tx.program.as_deref()) {
                Ok(plan) => {
                    let mut keys = Vec::new();
                    plan.counter_keys(&tx, &mut keys);
                    requests.push((tx.member.clone(), keys));
                    ready.push((tx, meta, plan));
                }
                Err(e) => {
                    let reason = DeadLetterReason::program(&e);
                    if self.dead_letter(meta, Some(&tx), reason).await.is_err() {
                        self.abandon_all_prepared(ready);
                        for (_, meta) in wave {
                            self.abandon(meta);
                        }
                        return Err(());
                    }
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        let views = match self
            .store_call(|| inner.store.member_views(&requests))
            .await
        {
            Ok(views) if views.len() == ready.len() => views.into_iter().map(Ok).collect(),
            // Refused as a whole (or answered oddly): ask one member at a
            // time, so that one bad member cannot sink the others.
            Ok(_) | Err(Stop::Permanent(_)) => {
                let mut views = Vec::with_capacity(ready.len());
                for (member, keys) in &requests {
                    views.push(
                        self.store_call(|| inner.store.member_view(member, keys))
                            .await,
                    );
                }
                views
            }
            Err(Stop::Aborted) => {
                self.abandon_all_prepared(ready);
                return Err(());
            }
        };
        let mut segment = Segment::default();
        let mut items = ready.into_iter().zip(views);
        while let Some(((tx, meta, plan), view)) = items.next() {
            let view = match view {
                Ok(view) => view,
                Err(Stop::Permanent(e)) => {
                    if self
                        .dead_letter(meta, Some(&tx), DeadLetterReason::ledger(&e))
                        .await
                        .is_err()
                    {
                        self.abandon_segment(segment);
                        for ((_, meta, _), _) in items {
                            self.abandon(meta);
                        }
                        return Err(());
                    }
                    continue;
                }
                Err(Stop::Aborted) => {
                    self.abandon(meta);
                    self.abandon_segment(segment);
                    for ((_, meta, _), _) in items {
                        self.abandon(meta);
                    }
                    return Err(());
                }
            };
            let started = Instant::now();
            let evaluated = plan.evaluate(&tx, &view);
            inner
                .metrics
                .evaluation_us
                .observe_duration(started.elapsed());
            match evaluated {
                Ok(outcome) => {
                    segment.items.push((tx, outcome));
                    segment.metas.push(meta);
                }
                Err(failure) => {
                    let reason = DeadLetterReason::evaluate(&failure);
                    if self.dead_letter(meta, Some(&tx), reason).await.is_err() {
                        self.abandon_segment(segment);
                        for ((_, meta, _), _) in items {
                            self.abandon(meta);
                        }
                        return Err(());
                    }
                }
            }
        }
        self.flush(&mut segment).await
    }

    /// Appends the segment and acknowledges each message.
    async fn flush(&mut self, segment: &mut Segment) -> Result<(), ()> {
        if segment.items.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let items = std::mem::take(&mut segment.items);
        let metas = std::mem::take(&mut segment.metas);
        inner.metrics.batch_size.observe(items.len() as u64);
        let started = Instant::now();
        let results: Vec<Result<Receipt, Stop>> = if items.len() == 1 {
            let (tx, outcome) = &items[0];
            vec![self.store_call(|| inner.store.append(tx, outcome)).await]
        } else {
            match self.store_call(|| inner.store.append_batch(&items)).await {
                Ok(results) if results.len() == items.len() => {
                    let mut out = Vec::with_capacity(items.len());
                    for (result, (tx, outcome)) in results.into_iter().zip(&items) {
                        out.push(match result {
                            Ok(receipt) => Ok(receipt),
                            // One item hit a transient error: retry it alone.
                            Err(e) if e.kind().is_transient() => {
                                self.store_call(|| inner.store.append(tx, outcome)).await
                            }
                            Err(e) => Err(Stop::Permanent(e)),
                        });
                    }
                    out
                }
                // The call as a whole was refused (or answered oddly): apply
                // one by one, so one bad item cannot sink its neighbours.
                Ok(_) | Err(Stop::Permanent(_)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (tx, outcome) in &items {
                        out.push(self.store_call(|| inner.store.append(tx, outcome)).await);
                    }
                    out
                }
                Err(Stop::Aborted) => items.iter().map(|_| Err(Stop::Aborted)).collect(),
            }
        };
        inner.metrics.append_us.observe_duration(started.elapsed());
        let mut aborted = false;
        for ((result, meta), (tx, _)) in results.into_iter().zip(metas).zip(&items) {
            match result {
                Ok(receipt) => self.applied(meta, receipt),
                Err(Stop::Permanent(e)) => {
                    if self
                        .dead_letter(meta, Some(tx), DeadLetterReason::ledger(&e))
                        .await
                        .is_err()
                    {
                        aborted = true;
                    }
                }
                Err(Stop::Aborted) => {
                    self.abandon(meta);
                    aborted = true;
                }
            }
        }
        if aborted {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Calls the store through the circuit breaker, retrying transient
    /// errors with backoff until it answers or shutdown gives up.
    async fn store_call<T, F, Fut>(&mut self, mut op: F) -> Result<T, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let inner = self.inner.clone();
        loop {
            if let Some(wait) = inner.breaker.wait_time() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.abort.wait() => return Err(Stop::Aborted),
                }
                continue;
            }
            match op().await {
                Ok(value) => {
                    inner.breaker.record_success();
                    return Ok(value);
                }
                Err(e) if e.kind().is_transient() => {
                    inner.metrics.store_retries.fetch_add(1, Ordering::Relaxed);
                    let delay = inner.breaker.record_failure();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "store unavailable; pausing");
                }
                Err(e) => {
                    // The store answered: it is reachable.
                    inner.breaker.record_success();
                    return Err(Stop::Permanent(e));
                }
            }
        }
    }

    /// Writes a dead letter (retrying the sink with backoff), then acks.
    async fn dead_letter(
        &mut self,
        meta: Meta,
        tx: Option<&Transaction>,
        reason: DeadLetterReason,
    ) -> Result<(), ()> {
        let payload = match (&meta.raw, tx) {
            (Raw::Bytes(bytes), _) => bytes.clone(),
            (Raw::Decoded, Some(tx)) => tx.to_json_string().into_bytes(),
            (Raw::Decoded, None) => Vec::new(),
        };
        let letter = DeadLetter::new(payload, meta.key.clone(), &meta.origin, reason.clone());
        let backoff = self.inner.config.backoff;
        let mut failures = 0u32;
        loop {
            match self.inner.dead_letters.send(&letter).await {
                Ok(()) => break,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.inner
                        .metrics
                        .dead_letter_retries
                        .fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.delay(failures);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "dead-letter sink failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.abort.wait() => {
                            self.abandon(meta);
                            return Err(());
                        }
                    }
                }
            }
        }
        tracing::debug!(origin = %meta.origin, %reason, "dead-lettered");
        self.inner.metrics.dead_lettered(reason.stage);
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.acknowledge(meta, &Disposition::DeadLettered(reason));
        Ok(())
    }

    fn applied(&self, meta: Meta, receipt: Receipt) {
        let metrics = &self.inner.metrics;
        metrics.applied.fetch_add(1, Ordering::Relaxed);
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        if receipt.duplicate {
            metrics.duplicates.fetch_add(1, Ordering::Relaxed);
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            let delta = receipt
                .delta
                .available
                .get()
                .saturating_add(receipt.delta.pending.get());
            metrics.points_posted.fetch_add(delta, Ordering::Relaxed);
        }
        self.acknowledge(meta, &Disposition::Applied(receipt));
    }

    fn acknowledge(&self, meta: Meta, disposition: &Disposition) {
        let metrics = &self.inner.metrics;
        meta.ack.ack(disposition);
        metrics.acked.fetch_add(1, Ordering::Relaxed);
        metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics
            .pipeline_us
            .observe_duration(meta.received_at.elapsed());
        if let Some(produced) = meta.timestamp {
            if let Ok(elapsed) = (Utc::now() - produced).to_std() {
                metrics.end_to_end_us.observe_duration(elapsed);
            }
        }
    }

    fn abandon(&self, meta: Meta) {
        drop(meta);
        self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn abandon_segment(&self, segment: Segment) {
        for meta in segment.metas {
            self.abandon(meta);
        }
    }

    fn abandon_all(&self, jobs: impl Iterator<Item = Job>) {
        for job in jobs {
            self.abandon(job.meta);
        }
    }

    fn abandon_waves(&self, waves: Vec<Vec<(Transaction, Meta)>>) {
        for (_, meta) in waves.into_iter().flatten() {
            self.abandon(meta);
        }
    }

    fn abandon_all_prepared<P>(&self, ready: Vec<(Transaction, Meta, P)>) {
        for (_, meta, _) in ready {
            self.abandon(meta);
        }
    }
}
