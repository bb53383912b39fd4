//! The state folder shared by `rwd replay`, `rwd balance` and `rwd history`:
//! the embedded store's event log (`events.jsonl`, rebuilt into memory on
//! every start) and the dead letters of the replays (`dead-letters.jsonl`);
//! plus loading a ruleset as an [`Evaluator`].

use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::{EventLog, LogRecord, MemoryStore};
use rewards_core::{Evaluator, MemberId};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::files;

/// The event log's file name inside the state folder.
pub const EVENT_LOG: &str = "events.jsonl";
/// The dead letters' file name inside the state folder.
pub const DEAD_LETTERS: &str = "dead-letters.jsonl";

/// The event log of the state folder `dir`.
pub fn event_log(dir: &Path) -> PathBuf {
    dir.join(EVENT_LOG)
}

/// The dead-letter file of the state folder `dir`.
pub fn dead_letters(dir: &Path) -> PathBuf {
    dir.join(DEAD_LETTERS)
}

/// The ledger settings of the embedded store (the defaults: the state
/// folder does not record others, so every command must use the same).
pub fn ledger_config() -> LedgerConfig {
    LedgerConfig::default()
}

/// Checks and compiles the ruleset at `path` (host functions are not
/// available to the command-line tool: a ruleset declaring one does not
/// compile). Diagnostics, warnings included, are printed to stderr; `Err`
/// carries a one-line summary.
pub fn load_plan(path: &Path) -> Result<Arc<dyn Evaluator>, String> {
    let source = files::read(path)?;
    let refused = |diags: &[rewards_dsl::Diagnostic]| {
        files::report(path, &source, diags);
        let errors = diags.iter().filter(|d| d.is_error()).count();
        format!(
            "{}: the ruleset does not compile ({errors} error{})",
            path.display(),
            if errors == 1 { "" } else { "s" }
        )
    };
    let checked = rewards_dsl::check_source(&source).map_err(|d| refused(&d))?;
    files::report(path, &source, &checked.warnings);
    let host = rewards_dsl::HostFunctions::new();
    let plan = rewards_dsl::compile(&checked, &source, &host).map_err(|d| refused(&d))?;
    Ok(Arc::new(plan))
}

/// Parses a member id given on the command line.
pub fn member_id(text: &str) -> Result<MemberId, String> {
    MemberId::new(text).map_err(|e| format!("{text:?} is not a member id: {e}"))
}

/// An event log that refuses writes: the read-only commands rebuild the
/// state and never change it.
struct ReadOnlyLog;

impl EventLog for ReadOnlyLog {
    fn append(&mut self, _record: &LogRecord) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the state is open read-only",
        ))
    }
}

/// Rebuilds the store of the state folder `dir` from its event log,
/// read-only: the file is neither created nor repaired, so this is safe
/// while a replay is appending to it (a record being written, after the
/// last newline, is not read).
pub fn open_read_only(dir: &Path) -> Result<MemoryStore, String> {
    let path = event_log(dir);
    let file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!(
                "no state in {}: {} does not exist (run `rwd replay` first)",
                dir.display(),
                path.display()
            )
        } else {
            format!("{}: cannot open: {e}", path.display())
        }
    })?;
    let records = read_records(&path, file)?;
    MemoryStore::with_log(ledger_config(), records, Box::new(ReadOnlyLog))
        .map_err(|e| format!("{}: cannot rebuild the state: {e}", path.display()))
}

/// Reads every whole record (line ending in a newline) of an event log.
fn read_records(path: &Path, file: std::fs::File) -> Result<Vec<LogRecord>, String> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut records = Vec::new();
    for number in 1u64.. {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if n == 0 || line.last() != Some(&b'\n') {
            // The end, or a record still being written (or torn by a
            // crash): never acknowledged, not part of the state.
            break;
        }
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = serde_json::from_slice::<LogRecord>(text).map_err(|e| {
            format!(
                "{}: line {number} is not a valid record: {e}",
                path.display()
            )
        })?;
        records.push(record);
    }
    Ok(records)
}

/// Runs a store call to completion (the memory store never waits).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    Ok(runtime.block_on(future))
}
