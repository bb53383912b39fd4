//! In-process calls: the embedded default. A host keeps a [`Submitter`],
//! submits transactions (decoded or as wire bytes) and awaits what became of
//! each one; the same pipeline (ordering, batching, dead letters, backoff)
//! runs behind it.

use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use rewards_core::Transaction;

use crate::shutdown::ShutdownSignal;
use crate::source::{Ack, AckHandle, Delivery, Disposition, Feed, Origin, Payload, Source};
use crate::RuntimeError;

struct Submission {
    payload: Payload,
    reply: oneshot::Sender<Disposition>,
}

/// The receiving end, run by the pipeline.
#[derive(Debug)]
pub struct InProcessSource {
    rx: mpsc::Receiver<Submission>,
    seq: Arc<AtomicU64>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission").finish_non_exhaustive()
    }
}

/// The host's handle; clone it freely.
#[derive(Debug, Clone)]
pub struct Submitter {
    tx: mpsc::Sender<Submission>,
}

/// Why a submission has no disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The pipeline is not running (stopped, or never started).
    #[error("the pipeline is not running")]
    Closed,
    /// The pipeline stopped before the outcome was durable (a shutdown
    /// during a store outage): nothing was applied; submit it again later.
    #[error("the pipeline stopped before the transaction was applied")]
    Abandoned,
}

/// A source and its submitter; `capacity` bounds submissions waiting to
/// enter the pipeline.
pub fn in_process(capacity: usize) -> (InProcessSource, Submitter) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        InProcessSource {
            rx,
            seq: Arc::new(AtomicU64::new(0)),
        },
        Submitter { tx },
    )
}

impl Submitter {
    /// Submits a decoded transaction and waits until its outcome is durable.
    pub async fn submit(&self, tx: Transaction) -> Result<Disposition, SubmitError> {
        self.submit_payload(Payload::Decoded(Box::new(tx))).await
    }

    /// Submits wire bytes (decoded by the pipeline; a decode error comes
    /// back as a dead-letter disposition).
    pub async fn submit_bytes(&self, bytes: Vec<u8>) -> Result<Disposition, SubmitError> {
        self.submit_payload(Payload::Bytes(bytes)).await
    }

    async fn submit_payload(&self, payload: Payload) -> Result<Disposition, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submission { payload, reply })
            .await
            .map_err(|_| SubmitError::Closed)?;
        answer.await.map_err(|_| SubmitError::Abandoned)
    }
}

struct ReplyAck(oneshot::Sender<Disposition>);

impl AckHandle for ReplyAck {
    fn ack(self: Box<Self>, disposition: &Disposition) {
        // The host may have stopped waiting; the outcome is durable anyway.
        let _ = self.0.send(disposition.clone());
    }
}

#[async_trait]
impl Source for InProcessSource {
    fn name(&self) -> String {
        "in-process".into()
    }

    async fn run(&mut self, feed: Feed, mut stop: ShutdownSignal) -> Result<(), RuntimeError> {
        loop {
            let permit = tokio::select! {
                biased;
                () = stop.wait() => break,
                permit = feed.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let submission = tokio::select! {
                biased;
                () = stop.wait() => break,
                next = self.rx.recv() => match next {
                    Some(submission) => submission,
                    None => break,
                },
            };
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            permit.send(Delivery::new(
                submission.payload,
                Origin::InProcess { seq },
                Ack::new(ReplyAck(submission.reply)),
            ));
        }
        // Refuse new submissions, and answer those still queued with
        // `Abandoned` (their reply channel is dropped) rather than leaving
        // them waiting.
        self.rx.close();
        while let Ok(submission) = self.rx.try_recv() {
            drop(submission);
        }
        Ok(())
    }
}
