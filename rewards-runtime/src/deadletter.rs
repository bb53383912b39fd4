//! Dead letters: messages the pipeline could not apply, kept with the reason.
//!
//! Bad input is never dropped silently and never stops a worker: a message
//! that fails to decode, names an unknown program, is refused by the ruleset
//! or is refused for good by the ledger (an unknown original, a conflicting
//! duplicate) is written to a [`DeadLetterSink`] with a
//! [`DeadLetterReason`], and only then acknowledged. Sinks: a JSON-lines
//! file ([`JsonLinesDeadLetters`]), memory ([`MemoryDeadLetters`], for hosts
//! that inspect them themselves) and, with the `kafka` feature, a DLQ topic
//! (`crate::kafka::KafkaDeadLetters`, the reason in headers).
//!
//! After a fix (a late original arrived, a ruleset was corrected), the
//! letters are re-submitted through the pipeline: see [`crate::reprocess`].

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

use rewards_core::{DecodeError, Error as StoreError, ErrorKind, EvalFailure};

use crate::metrics::DeadLetterStage;
use crate::registry::UnknownProgram;
use crate::source::Origin;

/// Why a message is in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterReason {
    /// The pipeline stage that refused it.
    #[serde(with = "stage_serde")]
    pub stage: DeadLetterStage,
    /// A stable code: `decode`, `unknown_program`, the ruleset's failure
    /// code, or the ledger error kind (`invalid_reference`, `conflict`, ...).
    pub code: String,
    /// The offending field, for decode errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What went wrong, for a human.
    pub message: String,
}

mod stage_serde {
    use super::DeadLetterStage;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(stage: &DeadLetterStage, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(stage.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeadLetterStage, D::Error> {
        let text = String::deserialize(d)?;
        DeadLetterStage::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown stage {text:?}")))
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.stage.as_str(),
            self.code,
            self.message
        )
    }
}

impl DeadLetterReason {
    /// The transaction did not decode.
    pub fn decode(error: &DecodeError) -> DeadLetterReason {
        DeadLetterReason {
            stage: DeadLetterStage::Decode,
            code: "decode".into(),
            field: Some(error.field.clone()),
            message: error.to_string(),
        }
    }

    /// The transaction names a program that is not loaded.
    pub fn program(error: &UnknownProgram) -> DeadLetterReason {
        DeadLetterReason {
            stage: DeadLetterStage::Program,
            code: "unknown_program".into(),
            field: Some("program".into()),
            message: error.to_string(),
        }
    }

    /// The ruleset refused to evaluate it.
    pub fn evaluate(failure: &EvalFailure) -> DeadLetterReason {
        DeadLetterReason {
            stage: DeadLetterStage::Evaluate,
            code: failure.code.to_string(),
            field: None,
            message: failure.message.clone(),
        }
    }

    /// The ledger refused it for good.
    pub fn ledger(error: &StoreError) -> DeadLetterReason {
        DeadLetterReason {
            stage: DeadLetterStage::Ledger,
            code: kind_code(error.kind()).into(),
            field: None,
            message: error.to_string(),
        }
    }
}

/// The stable code of a store error kind.
pub fn kind_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not_found",
        ErrorKind::Conflict => "conflict",
        ErrorKind::InsufficientBalance => "insufficient_balance",
        ErrorKind::InvalidReference => "invalid_reference",
        ErrorKind::Invalid => "invalid",
        ErrorKind::Unavailable => "unavailable",
        _ => "other",
    }
}

/// A message in the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The original bytes, exactly as received.
    pub payload: Vec<u8>,
    /// The original key.
    pub key: Option<Vec<u8>>,
    /// Where it came from (as text: `kafka:tx/3@1234`, `tx.jsonl:17`).
    pub origin: String,
    /// Why.
    pub reason: DeadLetterReason,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter made now.
    pub fn new(
        payload: Vec<u8>,
        key: Option<Vec<u8>>,
        origin: &Origin,
        reason: DeadLetterReason,
    ) -> DeadLetter {
        DeadLetter {
            payload,
            key,
            origin: origin.to_string(),
            reason,
            at: Utc::now(),
        }
    }

    /// The JSON-lines record: `payload` as text when it is UTF-8, else
    /// `payload_bytes` as an array of numbers; the same for the key.
    pub fn to_json(&self) -> Value {
        let mut record = json!({
            "at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "origin": self.origin,
            "reason": self.reason,
        });
        if let Value::Object(map) = &mut record {
            put_bytes(map, "payload", &self.payload);
            if let Some(key) = &self.key {
                put_bytes(map, "key", key);
            }
        }
        record
    }

    /// Reads a record written by [`DeadLetter::to_json`].
    pub fn from_json(value: &Value) -> Result<DeadLetter, String> {
        let map = value
            .as_object()
            .ok_or("a dead letter must be a JSON object")?;
        let payload = get_bytes(map, "payload")?.ok_or("payload is missing")?;
        let key = get_bytes(map, "key")?;
        let origin = map
            .get("origin")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let reason: DeadLetterReason =
            serde_json::from_value(map.get("reason").cloned().ok_or("reason is missing")?)
                .map_err(|e| format!("reason: {e}"))?;
        let at = map
            .get("at")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or("at is missing or not RFC 3339")?;
        Ok(DeadLetter {
            payload,
            key,
            origin,
            reason,
            at,
        })
    }
}

fn put_bytes(map: &mut serde_json::Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            map.insert(name.into(), Value::String(text.into()));
        }
        Err(_) => {
            map.insert(format!("{name}_bytes"), json!(bytes));
        }
    }
}

fn get_bytes(map: &serde_json::Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, String> {
    if let Some(text) = map.get(name).and_then(Value::as_str) {
        return Ok(Some(text.as_bytes().to_vec()));
    }
    match map.get(&format!("{name}_bytes")) {
        None => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| format!("{name}_bytes: {e}")),
    }
}

/// Writing a dead letter failed (retried by the pipeline; the message stays
/// unacknowledged until it succeeds).
#[derive(Debug, thiserror::Error)]
#[error("dead-letter sink: {0}")]
pub struct SinkError(pub String);

/// Where dead letters go. `send` returns only once the letter is durable.
#[async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Stores one letter durably.
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError>;
}

/// Dead letters appended to a JSON-lines file, one record per line, each
/// written and synced to disk before `send` returns.
#[derive(Debug)]
pub struct JsonLinesDeadLetters {
    path: PathBuf,
    file: tokio::sync::Mutex<tokio::fs::File>,
}

impl JsonLinesDeadLetters {
    /// Opens (creating or appending to) the file.
    pub async fn open(path: impl AsRef<Path>) -> std::io::Result<JsonLinesDeadLetters> {
        let path = path.as_ref().to_path_buf();
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        Ok(JsonLinesDeadLetters {
            path,
            file: tokio::sync::Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl DeadLetterSink for JsonLinesDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let mut line = letter.to_json().to_string();
        line.push('\n');
        let mut file = self.file.lock().await;
        let io = |e: std::io::Error| SinkError(format!("{}: {e}", self.path.display()));
        file.write_all(line.as_bytes()).await.map_err(io)?;
        file.flush().await.map_err(io)?;
        file.sync_data().await.map_err(io)?;
        Ok(())
    }
}

/// Reads every record of a dead-letter file; a line that is not a record
/// is reported with its line number.
pub async fn read_dead_letter_file(
    path: impl AsRef<Path>,
) -> std::io::Result<Vec<Result<DeadLetter, String>>> {
    let text = tokio::fs::read_to_string(path.as_ref()).await?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<Value>(line)
                .map_err(|e| e.to_string())
                .and_then(|v| DeadLetter::from_json(&v))
                .map_err(|e| format!("line {}: {e}", i + 1))
        })
        .collect())
}

/// Dead letters kept in memory, for hosts that handle them themselves.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl MemoryDeadLetters {
    /// An empty sink.
    pub fn new() -> MemoryDeadLetters {
        MemoryDeadLetters::default()
    }

    /// Takes the letters collected so far.
    pub fn take(&self) -> Vec<DeadLetter> {
        std::mem::take(
            &mut *self
                .letters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl DeadLetterSink for MemoryDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        self.letters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(letter.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_text_and_bytes() {
        let reason = DeadLetterReason::decode(&DecodeError {
            field: "amount".into(),
            reason: "must be a decimal string".into(),
        });
        for payload in [b"{\"id\":1}".to_vec(), vec![0xff, 0x00, 0x41]] {
            let letter = DeadLetter::new(
                payload,
                Some(b"m-1".to_vec()),
                &Origin::Line {
                    source: "tx.jsonl".into(),
                    line: 3,
                },
                reason.clone(),
            );
            let json = letter.to_json();
            assert_eq!(json["reason"]["stage"], "decode");
            assert_eq!(json["reason"]["field"], "amount");
            assert_eq!(json["origin"], "tx.jsonl:3");
            let back = DeadLetter::from_json(&json).unwrap();
            assert_eq!(back.payload, letter.payload);
            assert_eq!(back.key, letter.key);
            assert_eq!(back.reason, letter.reason);
            assert_eq!(back.origin, letter.origin);
        }
    }
}
