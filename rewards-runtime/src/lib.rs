//! `rewards-runtime`: drives the rewards pipeline — decode, pick the plan,
//! load the member view, evaluate, persist, acknowledge — from Kafka, from
//! JSON-lines files or stdin, or from in-process calls. It never evaluates
//! rules itself: a plan is any [`rewards_core::Evaluator`], a store any
//! [`rewards_core::LedgerStore`].
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn rewards_core::LedgerStore>,
//! #               plan: std::sync::Arc<dyn rewards_core::Evaluator>,
//! #               tx: rewards_core::Transaction) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use rewards_runtime::{in_process, MemoryDeadLetters, Metrics, Pipeline, ProgramRegistry};
//!
//! let metrics = Arc::new(Metrics::new());
//! let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
//! let pipeline = Pipeline::new(store, programs, Arc::new(MemoryDeadLetters::new()), metrics);
//! let (mut source, submitter) = in_process(1024);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(async move {
//!     pipeline.run(&mut source, async { let _ = stopped.await; }).await
//! });
//! let disposition = submitter.submit(tx).await?; // durable when this returns
//! # let _ = disposition;
//! let _ = stop.send(());
//! running.await??;
//! # Ok(()) }
//! ```
//!
//! The daemon wires the same [`Pipeline`] to a `kafka::KafkaSource` and a
//! `kafka::KafkaDeadLetters`, runs a [`jobs::JobRunner`] beside it, and
//! serves [`Metrics::render_prometheus`]. See `docs/runtime.md`.

pub mod breaker;
pub mod deadletter;
pub mod jobs;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod registry;
pub mod reprocess;
pub mod shutdown;
pub mod source;

pub use breaker::{Backoff, CircuitBreaker};
pub use deadletter::{
    DeadLetter, DeadLetterReason, DeadLetterSink, JsonLinesDeadLetters, MemoryDeadLetters,
};
pub use metrics::{DeadLetterStage, Metrics};
pub use pipeline::{Pipeline, PipelineConfig, RunReport};
pub use registry::{ProgramRegistry, ProgramSet, UnknownProgram};
pub use shutdown::{shutdown_channel, ShutdownSignal, ShutdownTrigger};
pub use source::inprocess::{in_process, InProcessSource, SubmitError, Submitter};
pub use source::jsonl::{JsonLinesSource, LineProgress};
pub use source::{Ack, AckHandle, Delivery, Disposition, Feed, Origin, Payload, Source};

/// Errors of the runtime itself (bad input is never one: it goes to the
/// dead letters).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A source failed to read.
    #[error("source: {0}")]
    Source(String),
    /// Kafka client error.
    #[cfg(feature = "kafka")]
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A configuration value is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A store call failed for good (jobs).
    #[error("store: {0}")]
    Store(#[from] rewards_core::Error),
    /// I/O on a local file.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
