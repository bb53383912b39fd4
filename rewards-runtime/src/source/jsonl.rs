//! JSON lines: one transaction per line, from a file, stdin or any reader;
//! and dead-letter files read back for re-processing.
//!
//! Blank lines are skipped. Acknowledgements are tracked per line so a
//! caller can tell how far the file is durably processed
//! ([`LineProgress::done_through`]: every line up to it is acknowledged),
//! which is where a resumed run may start.

use async_trait::async_trait;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader, Lines};

use crate::deadletter::DeadLetter;
use crate::shutdown::ShutdownSignal;
use crate::source::{Ack, AckHandle, Delivery, Disposition, Feed, Origin, Payload, Source};
use crate::RuntimeError;

/// How far a line source got.
#[derive(Debug, Default)]
pub struct LineProgress {
    inner: Mutex<ProgressState>,
}

#[derive(Debug, Default)]
struct ProgressState {
    delivered: u64,
    acked: u64,
    dead_lettered: u64,
    /// Lines delivered and not yet acknowledged.
    pending: BTreeSet<u64>,
    /// The last line number read.
    last_line: u64,
}

impl LineProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lines handed to the pipeline.
    pub fn delivered(&self) -> u64 {
        self.lock().delivered
    }

    /// Lines acknowledged (applied or dead-lettered).
    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Of those, lines dead-lettered.
    pub fn dead_lettered(&self) -> u64 {
        self.lock().dead_lettered
    }

    /// Every line up to this number (1-based, inclusive) is acknowledged.
    pub fn done_through(&self) -> u64 {
        let state = self.lock();
        match state.pending.first() {
            Some(first) => first - 1,
            None => state.last_line,
        }
    }

    fn delivered_line(&self, line: u64) {
        let mut state = self.lock();
        state.delivered += 1;
        state.pending.insert(line);
        state.last_line = line;
    }

    fn skipped_line(&self, line: u64) {
        self.lock().last_line = line;
    }

    fn acked_line(&self, line: u64, dead: bool) {
        let mut state = self.lock();
        state.pending.remove(&line);
        state.acked += 1;
        if dead {
            state.dead_lettered += 1;
        }
    }
}

struct LineAck {
    progress: Arc<LineProgress>,
    line: u64,
}

impl AckHandle for LineAck {
    fn ack(self: Box<Self>, disposition: &Disposition) {
        let dead = matches!(disposition, Disposition::DeadLettered(_));
        self.progress.acked_line(self.line, dead);
    }
}

/// What each line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineFormat {
    /// A transaction.
    Transaction,
    /// A dead-letter record whose payload is re-submitted.
    DeadLetter,
}

/// A JSON-lines source.
pub struct JsonLinesSource {
    name: Arc<str>,
    lines: Lines<Box<dyn AsyncBufRead + Send + Unpin>>,
    format: LineFormat,
    skip_through: u64,
    progress: Arc<LineProgress>,
}

impl std::fmt::Debug for JsonLinesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSource")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl JsonLinesSource {
    /// Transactions from any buffered reader, named `name` in origins.
    pub fn from_reader(name: &str, reader: impl AsyncBufRead + Send + Unpin + 'static) -> Self {
        JsonLinesSource {
            name: Arc::from(name),
            lines: (Box::new(reader) as Box<dyn AsyncBufRead + Send + Unpin>).lines(),
            format: LineFormat::Transaction,
            skip_through: 0,
            progress: Arc::new(LineProgress::default()),
        }
    }

    /// Transactions from a file.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(path.as_ref()).await?;
        Ok(Self::from_reader(
            &path.as_ref().display().to_string(),
            BufReader::new(file),
        ))
    }

    /// Transactions from standard input (named `-`).
    pub fn stdin() -> Self {
        Self::from_reader("-", BufReader::new(tokio::io::stdin()))
    }

    /// The payloads of a dead-letter file (see [`crate::deadletter`]), for
    /// re-processing. A line that is not a dead-letter record is itself
    /// dead-lettered (with a decode reason) rather than dropped.
    pub async fn open_dead_letters(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let mut source = Self::open(path).await?;
        source.format = LineFormat::DeadLetter;
        Ok(source)
    }

    /// Skips lines `1..=line` (resume after [`LineProgress::done_through`]).
    pub fn skip_through(mut self, line: u64) -> Self {
        self.skip_through = line;
        self
    }

    /// Progress of this source, readable while and after it runs.
    pub fn progress(&self) -> Arc<LineProgress> {
        self.progress.clone()
    }

    fn delivery(&self, line_no: u64, line: String) -> Delivery {
        let origin = Origin::Line {
            source: self.name.clone(),
            line: line_no,
        };
        let ack = Ack::new(LineAck {
            progress: self.progress.clone(),
            line: line_no,
        });
        let (payload, key) = match self.format {
            LineFormat::Transaction => (line.into_bytes(), None),
            LineFormat::DeadLetter => match serde_json::from_str(&line)
                .map_err(|e| e.to_string())
                .and_then(|v| DeadLetter::from_json(&v))
            {
                Ok(letter) => (letter.payload, letter.key),
                // Not a record: pass the line on; it fails to decode as a
                // transaction and lands in the new dead letters, visibly.
                Err(_) => (line.into_bytes(), None),
            },
        };
        let mut delivery = Delivery::new(Payload::Bytes(payload), origin, ack);
        delivery.key = key;
        delivery
    }
}

#[async_trait]
impl Source for JsonLinesSource {
    fn name(&self) -> String {
        format!("jsonl:{}", self.name)
    }

    async fn run(&mut self, feed: Feed, mut stop: ShutdownSignal) -> Result<(), RuntimeError> {
        let mut line_no = 0u64;
        loop {
            // Wait for room first, so a stop never loses a line already read.
            let permit = tokio::select! {
                biased;
                () = stop.wait() => return Ok(()),
                permit = feed.reserve() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(()),
                },
            };
            let line = loop {
                // `next_line` is cancel-safe.
                let next = tokio::select! {
                    biased;
                    () = stop.wait() => return Ok(()),
                    next = self.lines.next_line() => next,
                };
                match next.map_err(|e| RuntimeError::Source(format!("{}: {e}", self.name)))? {
                    None => return Ok(()),
                    Some(line) => {
                        line_no += 1;
                        if line_no <= self.skip_through || line.trim().is_empty() {
                            self.progress.skipped_line(line_no);
                            continue;
                        }
                        break line;
                    }
                }
            };
            self.progress.delivered_line(line_no);
            permit.send(self.delivery(line_no, line));
        }
    }
}
