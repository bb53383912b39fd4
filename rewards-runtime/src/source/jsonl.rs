//! JSON lines: one transaction per line, from a file, stdin or any reader;
//! and dead-letter files read back for re-processing.
//!
//! Lines are read as bytes: a line that is not UTF-8 or not JSON is a
//! decode error like any other (dead-lettered, the run goes on). A line is
//! kept up to [`MAX_LINE_BYTES`]; the rest of a longer one is skipped and the
//! truncated line fails to decode (its size exceeds the transaction limit).
//! Blank lines are skipped. Acknowledgements are tracked per line so a
//! caller can tell how far the file is durably processed
//! ([`LineProgress::done_through`]: every line up to it is acknowledged),
//! which is where a resumed run may start.

use async_trait::async_trait;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use rewards_core::limits::MAX_TX_BYTES;

use crate::deadletter::DeadLetter;
use crate::shutdown::ShutdownSignal;
use crate::source::{Ack, AckHandle, Delivery, Disposition, Feed, Origin, Payload, Source};
use crate::RuntimeError;

/// Longest line kept (a dead-letter record wraps a transaction of at most
/// `MAX_TX_BYTES`, escaped).
pub const MAX_LINE_BYTES: usize = 4 * MAX_TX_BYTES + 1;

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
    reader: Box<dyn AsyncBufRead + Send + Unpin>,
    /// The line being read (kept across cancelled reads).
    line: Vec<u8>,
    line_no: u64,
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
            reader: Box::new(reader),
            line: Vec::new(),
            line_no: 0,
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

    /// Reads the next line into `self.line` (without its end of line);
    /// `false` at the end of the input. Cancel-safe: a partial line stays in
    /// `self.line` and the next call continues it.
    async fn next_line(&mut self) -> std::io::Result<bool> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(!self.line.is_empty());
            }
            let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.reader.consume(used);
            if done {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                return Ok(true);
            }
        }
    }

    fn delivery(&self, line_no: u64, line: Vec<u8>) -> Delivery {
        let origin = Origin::Line {
            source: self.name.clone(),
            line: line_no,
        };
        let ack = Ack::new(LineAck {
            progress: self.progress.clone(),
            line: line_no,
        });
        let (payload, key) = match self.format {
            LineFormat::Transaction => (line, None),
            LineFormat::DeadLetter => match serde_json::from_slice(&line)
                .map_err(|e| e.to_string())
                .and_then(|v| DeadLetter::from_json(&v))
            {
                Ok(letter) => (letter.payload, letter.key),
                // Not a record: pass the line on; it fails to decode as a
                // transaction and lands in the new dead letters, visibly.
                Err(_) => (line, None),
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
                let more = tokio::select! {
                    biased;
                    () = stop.wait() => return Ok(()),
                    more = self.next_line() => more,
                };
                if !more.map_err(|e| RuntimeError::Source(format!("{}: {e}", self.name)))? {
                    return Ok(());
                }
                self.line_no += 1;
                let line = std::mem::take(&mut self.line);
                if self.line_no <= self.skip_through || line.iter().all(u8::is_ascii_whitespace) {
                    self.progress.skipped_line(self.line_no);
                    continue;
                }
                break line;
            };
            self.progress.delivered_line(self.line_no);
            permit.send(self.delivery(self.line_no, line));
        }
    }
}
