//! The outbox relay: publishes the store's transactional outbox
//! ([`LedgerStore::outbox_fetch`]) to an outcomes topic and acknowledges
//! each event in the store only after the broker acknowledged it.
//!
//! - **Record**: key = member id (a member's events go to one partition,
//!   in the member's version order), payload = the [`OutboxEvent`] JSON
//!   (stable field names, `docs/storage.md`), headers
//!   [`headers::EVENT_ID`] (= the event's `tx_id`), [`headers::MEMBER_VERSION`]
//!   and [`headers::OUTBOX_SEQ`].
//! - **Producer**: idempotent (`enable.idempotence=true`, `acks=all`), so
//!   librdkafka's own retries neither duplicate nor reorder a record.
//! - **Order and acknowledgement**: events are fetched in `seq` order, sent
//!   in that order, and after the deliveries the relay acknowledges the
//!   events up to (not including) the first one that failed; the rest is
//!   fetched and sent again in the next round, so a member's events are
//!   never acknowledged out of order.
//! - **Delivery is at least once**: a relay that stops (or crashes) between
//!   the broker's acknowledgement and `outbox_ack` publishes those events
//!   again after a restart. Consumers deduplicate on the event id
//!   (`tx_id`, also in header [`headers::EVENT_ID`]) or on (`member`,
//!   `version`). Run one relay per store (the store's contract).
//! - **Failures** (store or broker) are retried with backoff; nothing is
//!   acknowledged that the broker did not take.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rewards_core::store::OutboxEvent;
use rewards_core::LedgerStore;

use crate::breaker::Backoff;
use crate::metrics::Metrics;
use crate::RuntimeError;

/// Header names of an outcome record.
pub mod headers {
    /// The event id (the transaction, redemption or adjustment id): the
    /// key to deduplicate on.
    pub const EVENT_ID: &str = "rewards-event-id";
    /// The member's version after the event.
    pub const MEMBER_VERSION: &str = "rewards-member-version";
    /// The event's position in the store's outbox.
    pub const OUTBOX_SEQ: &str = "rewards-outbox-seq";
}

/// Where and how the relay publishes.
#[derive(Debug, Clone)]
pub struct OutboxRelayConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The outcomes topic.
    pub topic: String,
    /// Events fetched (and published) per round.
    pub batch: usize,
    /// Wait after a round that found nothing.
    pub idle_wait: Duration,
    /// Backoff after a failed round.
    pub backoff: Backoff,
    /// Bound on one record's delivery (librdkafka `message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Extra or overriding librdkafka producer settings.
    pub overrides: Vec<(String, String)>,
}

impl OutboxRelayConfig {
    /// Defaults: 500 events a round, 20 ms idle wait, 30 s delivery bound.
    pub fn new(brokers: &str, topic: &str) -> OutboxRelayConfig {
        OutboxRelayConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            batch: 500,
            idle_wait: Duration::from_millis(20),
            backoff: Backoff::default(),
            delivery_timeout: Duration::from_secs(30),
            overrides: Vec::new(),
        }
    }

    /// Adds a librdkafka producer setting (wins over the defaults).
    pub fn set(mut self, key: &str, value: &str) -> OutboxRelayConfig {
        self.overrides.push((key.into(), value.into()));
        self
    }
}

/// What a relay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    /// Events the broker acknowledged.
    pub published: u64,
    /// Events acknowledged in the store.
    pub acknowledged: u64,
    /// Rounds that failed (store or broker) and were retried.
    pub failures: u64,
}

/// Publishes a store's outbox to a topic.
pub struct OutboxRelay {
    store: Arc<dyn LedgerStore>,
    producer: FutureProducer,
    config: OutboxRelayConfig,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay from `store` to `config.topic` (the topic must exist).
    pub fn new(
        store: Arc<dyn LedgerStore>,
        config: OutboxRelayConfig,
        metrics: Arc<Metrics>,
    ) -> Result<OutboxRelay, RuntimeError> {
        if config.batch == 0 {
            return Err(RuntimeError::Config(
                "outbox relay batch must be at least 1".into(),
            ));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        for (key, value) in &config.overrides {
            client.set(key, value);
        }
        Ok(OutboxRelay {
            store,
            producer: client.create()?,
            config,
            metrics,
        })
    }

    /// One round: fetch up to `batch` events, publish them in order, wait
    /// for the broker, acknowledge the delivered prefix in the store.
    /// Returns how many events were published and acknowledged; an error
    /// when the store failed or an event could not be delivered (the events
    /// from the first failure on stay in the outbox).
    pub async fn run_once(&self) -> Result<usize, RuntimeError> {
        let events = self.store.outbox_fetch(self.config.batch).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut pending = Vec::with_capacity(events.len());
        let mut send_error = None;
        for event in &events {
            match self.send(event) {
                Ok(delivery) => pending.push(delivery),
                Err(e) => {
                    // Later events must not overtake this one.
                    send_error = Some(e);
                    break;
                }
            }
        }
        let mut delivered = Vec::with_capacity(pending.len());
        let mut failure = send_error;
        for (event, delivery) in events.iter().zip(pending) {
            let outcome = match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(RuntimeError::Kafka(e)),
                Err(_) => Err(RuntimeError::Source(
                    "outbox delivery dropped by the producer".into(),
                )),
            };
            match outcome {
                Ok(()) if failure.is_none() => delivered.push(event.seq),
                Ok(()) => {}
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
        self.metrics
            .outbox_published
            .fetch_add(delivered.len() as u64, Ordering::Relaxed);
        if !delivered.is_empty() {
            self.store.outbox_ack(&delivered).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(delivered.len()),
        }
    }

    fn send(&self, event: &OutboxEvent) -> Result<rdkafka::producer::DeliveryFuture, RuntimeError> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| RuntimeError::Source(format!("outbox event {}: {e}", event.seq)))?;
        let version = event.version.to_string();
        let seq = event.seq.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::EVENT_ID,
                value: Some(event.tx_id.as_str()),
            })
            .insert(Header {
                key: headers::MEMBER_VERSION,
                value: Some(version.as_str()),
            })
            .insert(Header {
                key: headers::OUTBOX_SEQ,
                value: Some(seq.as_str()),
            });
        let record = FutureRecord::to(&self.config.topic)
            .key(event.member.as_str())
            .payload(&payload)
            .headers(headers);
        self.producer
            .send_result(record)
            .map_err(|(e, _)| RuntimeError::Kafka(e))
    }

    /// Relays until `shutdown` completes: rounds back to back while there
    /// are events, `idle_wait` between empty rounds, backoff after a
    /// failed one. A round in progress at shutdown is finished (its
    /// deliveries awaited and acknowledged) before returning.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> RelayReport {
        let (trigger, mut stop) = crate::shutdown::shutdown_channel();
        let stopper = async move {
            shutdown.await;
            trigger.trigger();
        };
        let relay = async {
            let mut report = RelayReport::default();
            let mut failures = 0u32;
            loop {
                if stop.is_triggered() {
                    return report;
                }
                let wait = match self.run_once().await {
                    Ok(0) => {
                        failures = 0;
                        self.config.idle_wait
                    }
                    Ok(n) => {
                        failures = 0;
                        report.published += n as u64;
                        report.acknowledged += n as u64;
                        continue;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        report.failures += 1;
                        self.metrics
                            .outbox_relay_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, failures, "outbox relay round failed; retrying");
                        self.config.backoff.delay(failures)
                    }
                };
                tokio::select! {
                    () = stop.wait() => return report,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        };
        tokio::pin!(stopper);
        tokio::pin!(relay);
        let report = tokio::select! {
            report = &mut relay => report,
            () = &mut stopper => relay.await,
        };
        tracing::info!(?report, "outbox relay stopped");
        report
    }
}
