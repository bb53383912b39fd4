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
//! - **Adaptive batching in rounds.** A worker takes whatever is already
//!   waiting in its queue and never waits for more: one message alone is
//!   appended at once (no latency cost at low load), a backlog is appended
//!   in rounds of up to `max_batch` transactions, in arrival order. A round
//!   reads every member's view in one `member_views` call and appends all
//!   its outcomes in one `append_batch`.
//! - **A member's run in one round.** A hot member's consecutive
//!   transactions are evaluated one after another inside the round: the
//!   first from the view the store gave, each next one from the view
//!   [`ViewChain`] predicts once the earlier ones are applied (an earn's
//!   effect, and a settlement's when its authorization is earlier in the
//!   same run). Such an outcome carries the version it expects
//!   ([`Outcome::expects_version`]); if the premise fails (an earlier one
//!   was a redelivered duplicate, or refused) the store refuses it as
//!   stale without changing anything, and it goes back to the head of the
//!   queue to be evaluated from a fresh view. Where nothing can be
//!   predicted (after a refund, a reversal, a settlement of an
//!   authorization from an earlier round, or a campaign-budget claim the
//!   store may trim) the member's later transactions wait for the next
//!   round; a round takes none of a member's transactions past such a one,
//!   so a hot member's backlog never crowds the other members out of a
//!   round. Each member's transactions are applied in the order the source
//!   delivered them, and each outcome is the one a one-at-a-time run would
//!   give.
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

use rewards_core::ledger::{Receipt, ViewChain};
use rewards_core::store::MAX_BATCH_ITEMS;
use rewards_core::{
    CounterKey, Error as StoreError, ErrorKind, Evaluator, LedgerStore, MemberId, MemberView,
    Outcome, Transaction, TxId, TxKind,
};

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

impl Job {
    /// A transaction put back to be evaluated again.
    fn apply<P>((tx, meta, _): (Transaction, Meta, P)) -> Job {
        Job {
            work: Work::Apply(tx),
            meta,
        }
    }
}

/// Why a store or sink call ended without a result.
enum Stop {
    /// The store refused for good.
    Permanent(StoreError),
    /// Shutdown gave up waiting for the store.
    Aborted,
}

/// The evaluated transactions of one round waiting for a store append.
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
/// [`Worker::run`]).
const HOLD_BATCHES: usize = 4;

/// Moves the next round out of `pending` into `batch`: the waiting jobs in
/// arrival order, up to `max_batch` transactions (dead letters and stale
/// jobs ride along). A member may have several transactions in a round,
/// which [`Worker::process`] evaluates one after another, but none past
/// its first that no view can be predicted past (a refund, settlement,
/// reversal, chargeback or adjustment): its later ones stay waiting, in
/// order, and do not count, so a hot member's backlog cannot crowd the
/// other members out of a round.
fn take_round(pending: &mut VecDeque<Job>, batch: &mut Vec<Job>, max_batch: usize) {
    let mut closed: HashSet<MemberId> = HashSet::new();
    // Authorizations taken this round and not yet settled in it: a
    // settlement of one can be predicted ([`ViewChain`]).
    let mut open_auths: HashSet<TxId> = HashSet::new();
    let mut taken = 0;
    let mut rest = VecDeque::with_capacity(pending.len());
    while let Some(job) = pending.pop_front() {
        let take = match &job.work {
            Work::Reject(_) => true,
            Work::Apply(_) if taken >= max_batch => false,
            Work::Apply(tx) if closed.contains(&tx.member) => false,
            Work::Apply(tx) => {
                let settles_open = tx.kind == TxKind::Settlement
                    && tx
                        .original_id
                        .as_ref()
                        .is_some_and(|original| open_auths.remove(original));
                if tx.kind == TxKind::Authorization {
                    open_auths.insert(tx.id.clone());
                } else if !tx.kind.earns() && !settles_open {
                    closed.insert(tx.member.clone());
                }
                taken += 1;
                true
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

/// One member's transactions in a round, in order, with their plans.
struct Chain {
    member: MemberId,
    items: Vec<(Transaction, Meta, Arc<dyn Evaluator>)>,
}

struct Worker {
    inner: Arc<Inner>,
    counters: Arc<RunCounters>,
    abort: ShutdownSignal,
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let max_batch = self.inner.config.max_batch;
        // Jobs read ahead of the round, in arrival order; bounded so the
        // worker never buffers without end (the queue then fills and the
        // source slows down).
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
            match self.process(&mut batch).await {
                // Put back first, in order: each is older than anything
                // of its member still waiting.
                Ok(again) => {
                    for job in again.into_iter().rev() {
                        pending.push_front(job);
                    }
                }
                Err(()) => {
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
    }

    /// Handles one round. Returns the jobs to put back at the head of the
    /// queue, or `Err` when shutdown gave up (everything not yet
    /// acknowledged is then abandoned).
    ///
    /// The round's transactions are grouped by member, in arrival order.
    /// Every member's view is read once, in one
    /// [`LedgerStore::member_views`] call for the round, with the counters
    /// all of its transactions read. A member's first transaction is
    /// evaluated from that view, each later one from the view
    /// [`ViewChain`] predicts once the earlier ones are applied, with
    /// [`Outcome::expects_version`] set: if the premise fails (an earlier
    /// one turns out a duplicate, or is refused) the store refuses the
    /// outcome as stale and changes nothing, and the transaction is put
    /// back to be evaluated from a fresh view. Where nothing can be
    /// predicted (after a refund, a settlement of an authorization from an
    /// earlier round, or a campaign-budget claim that the store may trim)
    /// the member's remaining transactions are put back for the
    /// next round. All outcomes of the round go to one `append_batch`, so
    /// a hot member costs no extra round trips.
    async fn process(&mut self, batch: &mut Vec<Job>) -> Result<Vec<Job>, ()> {
        let inner = self.inner.clone();
        let mut chains: Vec<Chain> = Vec::new();
        let mut index: HashMap<MemberId, usize> = HashMap::new();
        let mut jobs = batch.drain(..);
        while let Some(job) = jobs.next() {
            if job.meta.ack.is_stale() {
                self.counters.stale.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let rejected = match job.work {
                Work::Reject(reason) => self.dead_letter(job.meta, None, reason).await,
                Work::Apply(tx) => match inner.programs.resolve(tx.program.as_deref()) {
                    Ok(plan) => {
                        let i = *index.entry(tx.member.clone()).or_insert_with(|| {
                            chains.push(Chain {
                                member: tx.member.clone(),
                                items: Vec::new(),
                            });
                            chains.len() - 1
                        });
                        chains[i].items.push((tx, job.meta, plan));
                        Ok(())
                    }
                    Err(e) => {
                        let reason = DeadLetterReason::program(&e);
                        self.dead_letter(job.meta, Some(&tx), reason).await
                    }
                },
            };
            if rejected.is_err() {
                self.abandon_all(jobs.map(|job| job.meta));
                self.abandon_chains(chains);
                return Err(());
            }
        }
        drop(jobs);
        if chains.is_empty() {
            return Ok(Vec::new());
        }
        let requests: Vec<(MemberId, Vec<CounterKey>)> = chains
            .iter()
            .map(|chain| {
                let mut keys = Vec::new();
                for (tx, _, plan) in &chain.items {
                    plan.counter_keys(tx, &mut keys);
                }
                if chain.items.len() > 1 {
                    keys.sort_unstable();
                    keys.dedup();
                }
                (chain.member.clone(), keys)
            })
            .collect();
        let views = match self
            .store_call(|| inner.store.member_views(&requests))
            .await
        {
            Ok(views) if views.len() == chains.len() => views.into_iter().map(Ok).collect(),
            // Refused as a whole (or answered oddly): ask one member at a
            // time, so that one bad member cannot sink the others.
            Ok(_) | Err(Stop::Permanent(_)) => {
                let mut views = Vec::with_capacity(chains.len());
                for (member, keys) in &requests {
                    views.push(
                        self.store_call(|| inner.store.member_view(member, keys))
                            .await,
                    );
                }
                views
            }
            Err(Stop::Aborted) => {
                self.abandon_chains(chains);
                return Err(());
            }
        };
        drop(requests);

        let mut segment = Segment::default();
        let mut again: Vec<Job> = Vec::new();
        let mut chains = chains.into_iter().zip(views);
        while let Some((chain, view)) = chains.next() {
            match self
                .evaluate_chain(chain, view, &mut segment, &mut again)
                .await
            {
                Ok(()) => {}
                Err(()) => {
                    self.abandon_segment(segment);
                    self.abandon_all(again.into_iter().map(|job| job.meta));
                    self.abandon_chains(chains.map(|(chain, _)| chain).collect());
                    return Err(());
                }
            }
        }
        let Ok(mut stale) = self.flush(&mut segment).await else {
            self.abandon_all(again.into_iter().map(|job| job.meta));
            return Err(());
        };
        // A member's refused (stale) transactions precede its unevaluated ones.
        stale.append(&mut again);
        Ok(stale)
    }

    /// Evaluates one member's transactions from `view` (see
    /// [`Worker::process`]) into `segment`; what must wait for the next
    /// round goes to `again`. `Err` when shutdown gave up: the chain's
    /// own jobs are then already abandoned.
    async fn evaluate_chain(
        &mut self,
        chain: Chain,
        view: Result<MemberView, Stop>,
        segment: &mut Segment,
        again: &mut Vec<Job>,
    ) -> Result<(), ()> {
        let inner = self.inner.clone();
        let mut items = chain.items.into_iter();
        let mut view = match view {
            Ok(view) => view,
            Err(Stop::Permanent(e)) => {
                let reason = DeadLetterReason::ledger(&e);
                while let Some((tx, meta, _)) = items.next() {
                    if self
                        .dead_letter(meta, Some(&tx), reason.clone())
                        .await
                        .is_err()
                    {
                        self.abandon_all(items.map(|(_, meta, _)| meta));
                        return Err(());
                    }
                }
                return Ok(());
            }
            Err(Stop::Aborted) => {
                self.abandon_all(items.map(|(_, meta, _)| meta));
                return Err(());
            }
        };
        // False while `view` is what the store said; true once it is a
        // prediction.
        let mut predicted = false;
        let mut chain_state = ViewChain::new();
        while let Some((tx, meta, plan)) = items.next() {
            let started = Instant::now();
            let evaluated = plan.evaluate(&tx, &view);
            inner
                .metrics
                .evaluation_us
                .observe_duration(started.elapsed());
            match evaluated {
                Ok(mut outcome) => {
                    if predicted {
                        outcome.expects_version = Some(view.version);
                    }
                    predicted = chain_state.advance(&mut view, &tx, &outcome);
                    segment.items.push((tx, outcome));
                    segment.metas.push(meta);
                    if !predicted {
                        // Nothing to predict past this one.
                        again.extend(items.map(Job::apply));
                        return Ok(());
                    }
                }
                Err(_) if predicted => {
                    // Perhaps only the prediction made it fail: evaluate
                    // it again from what the store says.
                    inner.metrics.reevaluated.fetch_add(1, Ordering::Relaxed);
                    again.push(Job::apply((tx, meta, plan)));
                    again.extend(items.map(Job::apply));
                    return Ok(());
                }
                Err(failure) => {
                    // The view stays what the store said: the next one
                    // is evaluated from it as it is.
                    let reason = DeadLetterReason::evaluate(&failure);
                    if self.dead_letter(meta, Some(&tx), reason).await.is_err() {
                        self.abandon_all(items.map(|(_, meta, _)| meta));
                        return Err(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends the segment and acknowledges each message; returns the
    /// transactions the store refused as stale (evaluated from a view that
    /// is no longer current), to be evaluated again.
    async fn flush(&mut self, segment: &mut Segment) -> Result<Vec<Job>, ()> {
        if segment.items.is_empty() {
            return Ok(Vec::new());
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
        let mut stale = Vec::new();
        for ((result, meta), (tx, _)) in results.into_iter().zip(metas).zip(items) {
            match result {
                Ok(receipt) => self.applied(meta, receipt),
                Err(Stop::Permanent(e)) if e.kind() == ErrorKind::Stale => {
                    tracing::debug!(tx = %tx.id, error = %e, "evaluated from a stale view; again");
                    inner.metrics.reevaluated.fetch_add(1, Ordering::Relaxed);
                    stale.push(Job {
                        work: Work::Apply(tx),
                        meta,
                    });
                }
                Err(Stop::Permanent(e)) => {
                    if self
                        .dead_letter(meta, Some(&tx), DeadLetterReason::ledger(&e))
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
            self.abandon_all(stale.into_iter().map(|job| job.meta));
            Err(())
        } else {
            Ok(stale)
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

    fn abandon_all(&self, metas: impl Iterator<Item = Meta>) {
        for meta in metas {
            self.abandon(meta);
        }
    }

    fn abandon_chains(&self, chains: Vec<Chain>) {
        self.abandon_all(
            chains
                .into_iter()
                .flat_map(|chain| chain.items.into_iter().map(|(_, meta, _)| meta)),
        );
    }
}
