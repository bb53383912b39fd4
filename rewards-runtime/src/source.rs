//! Where messages come from, and how they are acknowledged.
//!
//! A [`Source`] feeds [`Delivery`]s into the pipeline through a bounded
//! [`Feed`] (so a slow store pushes back all the way to the source). Each
//! delivery carries an [`Ack`]: the pipeline calls it exactly once, only
//! after the message's outcome is durable (the store append returned `Ok`,
//! or the message was written to the dead letters). A delivery dropped
//! without an ack (shutdown during a store outage, a revoked Kafka
//! partition) is simply not acknowledged: the source will deliver it again
//! (Kafka redelivers from the committed offset) and the ledger's idempotency
//! makes that harmless.
//!
//! Sources: [`jsonl`] (JSON-lines files, stdin, dead-letter files),
//! [`inprocess`] (the embedded default: a host submits transactions and
//! awaits their outcome) and, with the `kafka` feature, `crate::kafka`.

pub mod inprocess;
pub mod jsonl;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

use rewards_core::ledger::Receipt;
use rewards_core::Transaction;

use crate::breaker::CircuitBreaker;
use crate::deadletter::DeadLetterReason;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownSignal;
use crate::RuntimeError;

/// Where a message came from: for dead letters, logs and acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Kafka record.
    Kafka {
        /// Topic.
        topic: Arc<str>,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A line of a file or stream (1-based).
    Line {
        /// The file name, `-` for stdin.
        source: Arc<str>,
        /// Line number.
        line: u64,
    },
    /// A call of the embedding host.
    InProcess {
        /// Submission sequence number.
        seq: u64,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Origin::Line { source, line } => write!(f, "{source}:{line}"),
            Origin::InProcess { seq } => write!(f, "in-process#{seq}"),
        }
    }
}

/// The body of a delivery.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Wire bytes, to be decoded (Kafka value, a JSON line).
    Bytes(Vec<u8>),
    /// An already decoded transaction (in-process calls).
    Decoded(Box<Transaction>),
}

impl Payload {
    /// The wire bytes (a decoded transaction is encoded canonically).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(bytes) => bytes.clone(),
            Payload::Decoded(tx) => tx.to_json_string().into_bytes(),
        }
    }
}

/// What became of a message: given to its ack.
#[derive(Debug, Clone)]
pub enum Disposition {
    /// The store accepted the outcome (`receipt.duplicate` for a redelivery).
    Applied(Receipt),
    /// The message is in the dead letters, for this reason.
    DeadLettered(DeadLetterReason),
}

/// A source's acknowledgement hook.
pub trait AckHandle: Send {
    /// Called once, after the outcome is durable.
    fn ack(self: Box<Self>, disposition: &Disposition);

    /// True when acknowledging is pointless because the source gave the
    /// message up (a revoked Kafka partition): the pipeline may skip it.
    fn is_stale(&self) -> bool {
        false
    }
}

/// The acknowledgement of one delivery; dropping it unacknowledged means
/// "not done" (the source will deliver the message again).
pub struct Ack(Option<Box<dyn AckHandle>>);

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Ack" } else { "Ack(none)" })
    }
}

impl Ack {
    /// An ack calling `handle`.
    pub fn new(handle: impl AckHandle + 'static) -> Ack {
        Ack(Some(Box::new(handle)))
    }

    /// An ack that does nothing (a source with nothing to commit).
    pub fn none() -> Ack {
        Ack(None)
    }

    /// Acknowledges.
    pub fn ack(mut self, disposition: &Disposition) {
        if let Some(handle) = self.0.take() {
            handle.ack(disposition);
        }
    }

    /// See [`AckHandle::is_stale`].
    pub fn is_stale(&self) -> bool {
        self.0.as_ref().is_some_and(|h| h.is_stale())
    }
}

/// One message on its way through the pipeline.
#[derive(Debug)]
pub struct Delivery {
    /// The body.
    pub payload: Payload,
    /// The partition key (the member id on Kafka).
    pub key: Option<Vec<u8>>,
    /// Where it came from.
    pub origin: Origin,
    /// When the source received it (pipeline latency starts here).
    pub received_at: Instant,
    /// The producer's timestamp, when the source has one (end-to-end latency).
    pub timestamp: Option<DateTime<Utc>>,
    /// Its acknowledgement.
    pub ack: Ack,
}

impl Delivery {
    /// A delivery received now.
    pub fn new(payload: Payload, origin: Origin, ack: Ack) -> Delivery {
        Delivery {
            payload,
            key: None,
            origin,
            received_at: Instant::now(),
            timestamp: None,
            ack,
        }
    }
}

/// The bounded way into the pipeline.
#[derive(Debug, Clone)]
pub struct Feed {
    tx: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
    breaker: Arc<CircuitBreaker>,
}

/// The pipeline is no longer taking input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is closed")]
pub struct FeedClosed;

impl Feed {
    pub(crate) fn new(
        tx: mpsc::Sender<Delivery>,
        metrics: Arc<Metrics>,
        breaker: Arc<CircuitBreaker>,
    ) -> Feed {
        Feed {
            tx,
            metrics,
            breaker,
        }
    }

    /// True while the store is failing (the circuit breaker is open): a
    /// source that can pause its input (Kafka partitions) should.
    pub fn store_unavailable(&self) -> bool {
        self.breaker.is_open()
    }

    /// Hands a delivery over, waiting while the pipeline is full.
    /// Cancel-safe: if the future is dropped, the delivery is dropped unsent.
    pub async fn send(&self, delivery: Delivery) -> Result<(), FeedClosed> {
        let permit = self.tx.reserve().await.map_err(|_| FeedClosed)?;
        self.count();
        permit.send(delivery);
        Ok(())
    }

    /// Waits for room; the permit sends without waiting (for sources that
    /// must not take a message before there is room for it).
    pub async fn reserve(&self) -> Result<FeedPermit<'_>, FeedClosed> {
        let permit = self.tx.reserve().await.map_err(|_| FeedClosed)?;
        Ok(FeedPermit { permit, feed: self })
    }

    fn count(&self) {
        self.metrics.received.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    }
}

/// Room for one delivery in the pipeline.
#[derive(Debug)]
pub struct FeedPermit<'a> {
    permit: mpsc::Permit<'a, Delivery>,
    feed: &'a Feed,
}

impl FeedPermit<'_> {
    /// Sends without waiting.
    pub fn send(self, delivery: Delivery) {
        self.feed.count();
        self.permit.send(delivery);
    }
}

/// A source of messages for the pipeline.
#[async_trait]
pub trait Source: Send {
    /// A short name for logs (`kafka:transactions`, `file:tx.jsonl`).
    fn name(&self) -> String;

    /// Feeds deliveries until the input ends or `stop` fires, then returns.
    /// Returning drops the feed; the pipeline then finishes the work in
    /// flight and calls [`Source::finish`].
    async fn run(&mut self, feed: Feed, stop: ShutdownSignal) -> Result<(), RuntimeError>;

    /// Called once after the pipeline drained (every delivery acknowledged
    /// or given up): commit offsets, flush, close.
    async fn finish(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }
}
