//! Kafka (feature `kafka`, on by default): the consumer-group source, the
//! dead-letter topic producer, re-processing of a dead-letter topic, and
//! topic administration.
//!
//! # The source
//!
//! [`KafkaSource`] reads a transactions topic keyed by member id in a
//! consumer group (`enable.auto.commit=false`, `enable.auto.offset.store=false`,
//! `fetch.wait.max.ms=5`). Each record becomes a [`Delivery`] whose ack
//! tells the [`OffsetTracker`] its outcome is durable; every
//! `commit_interval` the source commits, per partition, the lowest offset
//! not yet durable (so a commit never covers a message still in flight,
//! whatever order the workers finish in). On shutdown it commits
//! synchronously after the pipeline drained.
//!
//! **Rebalances.** Before partitions are revoked, the rebalance callback
//! commits what is done for them (synchronously, inside the callback, with
//! the consumer it is given) and forgets them: messages of a revoked
//! partition still queued in the pipeline become *stale* and are skipped,
//! their acks ignored. The new owner redelivers them from the committed
//! offset; the ledger's idempotency makes any message applied twice a
//! duplicate that changes nothing.
//!
//! **Backpressure and store outages.** The source waits for room in the
//! pipeline before taking a record, so a slow store slows consumption; while
//! the store circuit breaker is open it also pauses its partitions (no
//! fetching) and resumes them when the store answers again.
//!
//! **Outcomes.** [`OutboxRelay`] publishes the store's transactional
//! outbox to an outcomes topic (see [`outbox`]).
//!
//! **Consumer lag** comes from librdkafka statistics
//! (`statistics.interval.ms`, default 1 s here) into
//! `rewards_consumer_lag_messages`.

pub mod offsets;
pub mod outbox;
pub mod produce;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::deadletter::{DeadLetter, DeadLetterSink, SinkError};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, RunReport};
use crate::shutdown::ShutdownSignal;
use crate::source::{Ack, AckHandle, Delivery, Disposition, Feed, Origin, Payload, Source};
use crate::RuntimeError;

pub use offsets::{OffsetTracker, TopicPartition};
pub use outbox::{OutboxRelay, OutboxRelayConfig, RelayReport};
pub use produce::{produce_json_lines, Produced};

/// Header names of a dead-letter record.
pub mod headers {
    /// The pipeline stage that refused the message (`decode`, `program`,
    /// `evaluate`, `ledger`).
    pub const STAGE: &str = "rewards-dlq-stage";
    /// The stable reason code.
    pub const CODE: &str = "rewards-dlq-code";
    /// The reason, for a human.
    pub const REASON: &str = "rewards-dlq-reason";
    /// The offending field (decode errors).
    pub const FIELD: &str = "rewards-dlq-field";
    /// Where the message came from (`kafka:topic/partition@offset`).
    pub const ORIGIN: &str = "rewards-dlq-origin";
    /// When it was dead-lettered (RFC 3339).
    pub const AT: &str = "rewards-dlq-at";
}

/// How to reach and read the transactions topic.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// The topic to read.
    pub topic: String,
    /// How often done offsets are committed while running (default 1 s:
    /// each commit is a write on the broker, and on a broker that keeps its
    /// offsets durably — tansu on sqlite, here — committing every 100 ms
    /// slowed the fetches of everything else from ~20 ms to ~1 s end to
    /// end; a longer interval only widens what a crash redelivers, which
    /// the ledger's idempotency makes harmless).
    pub commit_interval: Duration,
    /// Stop once every assigned partition has been read to its end (for
    /// re-processing a dead-letter topic); otherwise run until shutdown.
    pub stop_at_end: bool,
    /// Extra or overriding librdkafka settings.
    pub overrides: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A configuration with the defaults described in the module docs.
    pub fn new(brokers: &str, group_id: &str, topic: &str) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topic: topic.into(),
            commit_interval: Duration::from_secs(1),
            stop_at_end: false,
            overrides: Vec::new(),
        }
    }

    /// Adds a librdkafka setting (wins over the defaults).
    pub fn set(mut self, key: &str, value: &str) -> KafkaConfig {
        self.overrides.push((key.into(), value.into()));
        self
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "5")
            .set("session.timeout.ms", "10000")
            .set("statistics.interval.ms", "1000")
            .set(
                "enable.partition.eof",
                if self.stop_at_end { "true" } else { "false" },
            );
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }
}

/// The consumer's callbacks: commit on revoke, track assignments, lag.
pub struct RuntimeContext {
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag = 0i64;
        let mut known = false;
        for topic in statistics.topics.values() {
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    lag += partition.consumer_lag;
                    known = true;
                }
            }
        }
        self.metrics
            .consumer_lag
            .store(if known { lag } else { -1 }, Ordering::Relaxed);
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked: Vec<TopicPartition> = list
                    .elements()
                    .iter()
                    .map(|e| (Arc::from(e.topic()), e.partition()))
                    .collect();
                let done = self.tracker.take_committable(Some(&revoked));
                if !done.is_empty() {
                    match commit_list(&done).and_then(|tpl| consumer.commit(&tpl, CommitMode::Sync))
                    {
                        Ok(()) => {
                            self.metrics.offset_commits.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            self.metrics
                                .offset_commit_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "commit on revoke failed; the new owner redelivers");
                        }
                    }
                }
                for partition in &revoked {
                    self.tracker.revoke(partition);
                }
                tracing::info!(partitions = ?revoked, committed = ?done, "partitions revoked");
            }
            Rebalance::Assign(_) | Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let mut assigned = Vec::new();
            for e in list.elements() {
                let partition: TopicPartition = (Arc::from(e.topic()), e.partition());
                self.tracker.assign(partition.clone());
                assigned.push(partition);
            }
            tracing::info!(partitions = ?assigned, "partitions assigned");
        }
        if let Rebalance::Error(e) = rebalance {
            tracing::warn!(error = %e, "rebalance error");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.metrics
                .offset_commit_errors
                .fetch_add(1, Ordering::Relaxed);
            // An asynchronous commit that failed (the broker restarting,
            // say) is tried again at the next tick: otherwise a partition
            // with nothing more to consume would keep the old committed
            // offset for good.
            let failed: Vec<(TopicPartition, i64)> = offsets
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(offset) => Some(((Arc::from(e.topic()), e.partition()), offset)),
                    _ => None,
                })
                .collect();
            self.tracker.commit_failed(&failed);
            tracing::warn!(error = %e, positions = ?failed, "offset commit failed; will retry");
        }
    }
}

fn commit_list(positions: &[(TopicPartition, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(positions.len());
    for ((topic, partition), offset) in positions {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

struct KafkaAck {
    tracker: Arc<OffsetTracker>,
    partition: TopicPartition,
    offset: i64,
    epoch: u64,
}

impl AckHandle for KafkaAck {
    fn ack(self: Box<Self>, _disposition: &Disposition) {
        self.tracker.acked(&self.partition, self.offset, self.epoch);
    }

    fn is_stale(&self) -> bool {
        self.tracker.is_stale(&self.partition, self.epoch)
    }
}

/// A consumer-group source over one topic.
pub struct KafkaSource {
    consumer: StreamConsumer<RuntimeContext>,
    tracker: Arc<OffsetTracker>,
    metrics: Arc<Metrics>,
    config: KafkaConfig,
    paused: bool,
    last_recommit: std::time::Instant,
}

/// How often positions already committed are committed again.
const RECOMMIT_EVERY: Duration = Duration::from_secs(5);

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("config", &self.config)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the topic.
    pub fn new(config: KafkaConfig, metrics: Arc<Metrics>) -> Result<KafkaSource, RuntimeError> {
        let tracker = Arc::new(OffsetTracker::default());
        let context = RuntimeContext {
            tracker: tracker.clone(),
            metrics: metrics.clone(),
        };
        let consumer: StreamConsumer<RuntimeContext> =
            config.client_config().create_with_context(context)?;
        consumer.subscribe(&[&config.topic])?;
        Ok(KafkaSource {
            consumer,
            tracker,
            metrics,
            config,
            paused: false,
            last_recommit: std::time::Instant::now(),
        })
    }

    /// The offset tracker (for inspection).
    pub fn tracker(&self) -> &Arc<OffsetTracker> {
        &self.tracker
    }

    /// Commits every partition's done position; every [`RECOMMIT_EVERY`]
    /// also those already committed (see
    /// [`OffsetTracker::committed_positions`]).
    fn commit(&mut self, mode: CommitMode) {
        let mut done = self.tracker.take_committable(None);
        if self.last_recommit.elapsed() >= RECOMMIT_EVERY {
            self.last_recommit = std::time::Instant::now();
            for (partition, position) in self.tracker.committed_positions() {
                if !done.iter().any(|(p, _)| *p == partition) {
                    done.push((partition, position));
                }
            }
            done.sort();
        }
        if done.is_empty() {
            return;
        }
        let result = commit_list(&done).and_then(|tpl| self.consumer.commit(&tpl, mode));
        match result {
            Ok(()) => {
                self.metrics.offset_commits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(positions = ?done, "offsets committed");
            }
            Err(e) => {
                self.tracker.commit_failed(&done);
                self.metrics
                    .offset_commit_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "offset commit failed; will retry");
            }
        }
    }

    /// Pauses the assignment while the store is unavailable, resumes after.
    fn follow_store(&mut self, feed: &Feed) {
        let unavailable = feed.store_unavailable();
        if unavailable == self.paused {
            return;
        }
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if unavailable {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => {
                self.paused = unavailable;
                if unavailable {
                    self.metrics.consumer_pauses.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(paused = unavailable, "consumer follows the store breaker");
            }
            Err(e) => tracing::warn!(error = %e, "pause/resume failed"),
        }
    }

    fn delivery(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
        let partition: TopicPartition = (Arc::from(message.topic()), message.partition());
        let offset = message.offset();
        let epoch = self.tracker.delivered(&partition, offset);
        let origin = Origin::Kafka {
            topic: partition.0.clone(),
            partition: partition.1,
            offset,
        };
        let ack = Ack::new(KafkaAck {
            tracker: self.tracker.clone(),
            partition,
            offset,
            epoch,
        });
        let mut delivery = Delivery::new(
            Payload::Bytes(message.payload().map(<[u8]>::to_vec).unwrap_or_default()),
            origin,
            ack,
        );
        delivery.key = message.key().map(<[u8]>::to_vec);
        delivery.timestamp = message
            .timestamp()
            .to_millis()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single());
        delivery
    }
}

#[async_trait]
impl Source for KafkaSource {
    fn name(&self) -> String {
        format!("kafka:{}", self.config.topic)
    }

    async fn run(&mut self, feed: Feed, mut stop: ShutdownSignal) -> Result<(), RuntimeError> {
        let mut tick = tokio::time::interval(self.config.commit_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.config.stop_at_end && self.tracker.all_at_end() {
                return Ok(());
            }
            // Room first, then a record: a record taken is never dropped.
            let permit = tokio::select! {
                biased;
                () = stop.wait() => return Ok(()),
                _ = tick.tick() => {
                    self.commit(CommitMode::Async);
                    self.follow_store(&feed);
                    continue;
                }
                permit = feed.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
            };
            let received = tokio::select! {
                biased;
                () = stop.wait() => return Ok(()),
                _ = tick.tick() => {
                    self.commit(CommitMode::Async);
                    self.follow_store(&feed);
                    continue;
                }
                received = self.consumer.recv() => received,
            };
            match received {
                Ok(message) => {
                    let delivery = self.delivery(&message);
                    permit.send(delivery);
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.tracker
                        .reached_end(&(Arc::from(self.config.topic.as_str()), partition));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    tokio::select! {
                        () = stop.wait() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }

    async fn finish(&mut self) -> Result<(), RuntimeError> {
        self.commit(CommitMode::Sync);
        let left = self.tracker.in_flight();
        tracing::info!(
            unacknowledged = left,
            "kafka source finished; offsets committed"
        );
        Ok(())
    }
}

/// Dead letters produced to a DLQ topic: the original key and payload, the
/// reason in headers (see [`headers`]). `send` returns once the broker
/// acknowledged the record (`acks=all`).
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for KafkaDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDeadLetters")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaDeadLetters {
    /// A producer to `topic`.
    pub fn new(brokers: &str, topic: &str) -> Result<KafkaDeadLetters, RuntimeError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(KafkaDeadLetters {
            producer,
            topic: topic.into(),
        })
    }
}

#[async_trait]
impl DeadLetterSink for KafkaDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let at = letter.at.to_rfc3339();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::STAGE,
                value: Some(letter.reason.stage.as_str()),
            })
            .insert(Header {
                key: headers::CODE,
                value: Some(letter.reason.code.as_str()),
            })
            .insert(Header {
                key: headers::REASON,
                value: Some(letter.reason.message.as_str()),
            })
            .insert(Header {
                key: headers::ORIGIN,
                value: Some(letter.origin.as_str()),
            })
            .insert(Header {
                key: headers::AT,
                value: Some(at.as_str()),
            });
        if let Some(field) = &letter.reason.field {
            headers = headers.insert(Header {
                key: headers::FIELD,
                value: Some(field.as_str()),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&letter.payload)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| SinkError(format!("{}: {e}", self.topic)))
    }
}

/// Reads a header of a record as text.
pub fn header_text<'a>(message: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Re-submits every record of a dead-letter topic through `pipeline` (its
/// payload is the original message), reading each partition to its end
/// under consumer group `group_id`, then stops. Records that fail again go
/// to the pipeline's own dead-letter sink.
pub async fn reprocess_dead_letter_topic(
    pipeline: &Pipeline,
    brokers: &str,
    dlq_topic: &str,
    group_id: &str,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunReport, RuntimeError> {
    let mut config = KafkaConfig::new(brokers, group_id, dlq_topic);
    config.stop_at_end = true;
    let mut source = KafkaSource::new(config, pipeline.metrics().clone())?;
    pipeline.run(&mut source, shutdown).await
}

/// Creates topics (`partitions` each, replication 1); an existing topic is
/// not an error.
pub async fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), RuntimeError> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = admin(brokers)?
        .create_topics(new.iter(), &admin_options())
        .await?;
    topic_results("creating", results, RDKafkaErrorCode::TopicAlreadyExists)
}

/// Deletes topics; a topic that does not exist is not an error.
pub async fn delete_topics(brokers: &str, topics: &[&str]) -> Result<(), RuntimeError> {
    let results = admin(brokers)?
        .delete_topics(topics, &admin_options())
        .await?;
    topic_results(
        "deleting",
        results,
        RDKafkaErrorCode::UnknownTopicOrPartition,
    )
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, RuntimeError> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

/// The first failure of an admin operation's per-topic results, `fine`
/// (the topic already as wanted) not counting as one.
fn topic_results(
    doing: &str,
    results: Vec<Result<String, (String, RDKafkaErrorCode)>>,
    fine: RDKafkaErrorCode,
) -> Result<(), RuntimeError> {
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, code)) if code == fine => {}
            Err((name, code)) => {
                return Err(RuntimeError::Config(format!(
                    "{doing} topic {name}: {code}"
                )))
            }
        }
    }
    Ok(())
}
