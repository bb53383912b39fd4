//! Loading a JSON-lines file of transactions into a topic: one record per
//! line, keyed by the transaction's member id (so a member's transactions
//! keep their order in one partition), as a host service would produce
//! them. Used to replay a day of traffic through the broker.
//!
//! How many records share a producer batch is the caller's choice:
//! tansu 0.6 serves nothing to a fetch that starts inside a multi-record
//! batch, so on tansu a topic that consumers may resume mid-way (from a
//! committed offset) needs one record per batch (real Kafka does not care);
//! but tansu's in-memory engine lists every batch of a partition on each
//! fetch, so a large topic read once from the start is far faster with full
//! batches. Deliveries are awaited in order with a bounded number in
//! flight, so memory stays flat whatever the file's size.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rewards_core::Transaction;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::RuntimeError;

/// Records waiting for their delivery report at most.
const IN_FLIGHT: usize = 20_000;

/// Records between two calls of the progress callback.
const PROGRESS_EVERY: u64 = 100_000;

/// What [`produce_json_lines`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Produced {
    /// Records acknowledged by the broker.
    pub records: u64,
    /// Of those, lines that did not decode as a transaction (sent without
    /// a key, for the pipeline to dead-letter with its reason).
    pub undecodable: u64,
}

/// Produces every non-blank line of `path` to `topic` (`acks=all`, at most
/// `batch_records` records per producer batch, see the module docs) and
/// waits until the broker acknowledged all of them; `progress` is called
/// with the count acknowledged so far every [`PROGRESS_EVERY`] records. A
/// file that cannot be read is a [`RuntimeError::Source`]; a record the
/// broker refuses stops the load with its [`RuntimeError::Kafka`] (the
/// records before it are in the topic).
pub async fn produce_json_lines(
    brokers: &str,
    topic: &str,
    path: &Path,
    batch_records: u32,
    mut progress: impl FnMut(u64),
) -> Result<Produced, RuntimeError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", if batch_records > 1 { "5" } else { "1" })
        .set("batch.num.messages", batch_records.max(1).to_string())
        .set("queue.buffering.max.messages", "100000")
        .set("message.timeout.ms", "60000")
        .create()?;
    let unreadable = |e: std::io::Error| RuntimeError::Source(format!("{}: {e}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut lines = BufReader::with_capacity(1 << 20, file).lines();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::with_capacity(IN_FLIGHT);
    let mut produced = Produced::default();
    while let Some(line) = lines.next_line().await.map_err(unreadable)? {
        if line.trim().is_empty() {
            continue;
        }
        let member = Transaction::from_json_str(&line)
            .ok()
            .map(|tx| tx.member.as_str().to_string());
        if member.is_none() {
            produced.undecodable += 1;
        }
        let mut record = FutureRecord::<str, str>::to(topic).payload(&line);
        if let Some(member) = &member {
            record = record.key(member.as_str());
        }
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                // The local queue is full: let deliveries drain, then retry.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if !settle_oldest(&mut pending, &mut produced, &mut progress).await? {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                Err((e, _)) => return Err(RuntimeError::Kafka(e)),
            }
        };
        pending.push_back(delivery);
        if pending.len() >= IN_FLIGHT {
            settle_oldest(&mut pending, &mut produced, &mut progress).await?;
        }
    }
    while settle_oldest(&mut pending, &mut produced, &mut progress).await? {}
    Ok(produced)
}

/// Waits for the oldest delivery report and counts it; false when none is
/// pending.
async fn settle_oldest(
    pending: &mut VecDeque<DeliveryFuture>,
    produced: &mut Produced,
    progress: &mut impl FnMut(u64),
) -> Result<bool, RuntimeError> {
    let Some(oldest) = pending.pop_front() else {
        return Ok(false);
    };
    match oldest.await {
        Ok(Ok(_)) => {}
        Ok(Err((e, _))) => return Err(RuntimeError::Kafka(e)),
        Err(_) => return Err(RuntimeError::Kafka(KafkaError::Canceled)),
    }
    produced.records += 1;
    if produced.records.is_multiple_of(PROGRESS_EVERY) {
        progress(produced.records);
    }
    Ok(true)
}
