//! The in-memory store's optional event log: an append-only JSON-lines
//! file of [`LogRecord`]s, the only file I/O in `rewards-core`.
//!
//! # Durability (fsync policy)
//!
//! A record is written and flushed to the operating system before the
//! store applies it to memory and acknowledges the request, so a crash of
//! the process never loses an acknowledged request. Whether it survives a
//! power loss depends on [`FsyncPolicy`]:
//!
//! - [`FsyncPolicy::Always`]: `fsync` after every record, before the
//!   acknowledgement. Durable; the slowest.
//! - [`FsyncPolicy::EveryN`]: `fsync` after every N records. A power loss
//!   may lose up to N − 1 acknowledged records.
//! - [`FsyncPolicy::Never`]: the operating system decides when to write.
//!
//! A record cut short by a crash (the bytes after the last newline) was
//! never acknowledged: [`FileEventLog::open`] drops it and
//! truncates the file to the last whole record. A bad line anywhere else is
//! an error (the log is corrupt; nothing is guessed).

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::ledger::LedgerEntry;
use crate::member::MemberProfile;

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum LogRecord {
    /// A ledger entry, as [`apply`](crate::ledger::apply) returned it.
    Entry(Box<LedgerEntry>),
    /// A member profile set through `put_profile`.
    Profile(MemberProfile),
    /// Outbox events acknowledged (by `seq`): a rebuild drops them again.
    OutboxAck(Vec<u64>),
}

/// Where the in-memory store writes its records before applying them.
pub trait EventLog: Send {
    /// Appends one record durably enough for the policy; an error means
    /// the record may not be stored, and the store refuses the request.
    fn append(&mut self, record: &LogRecord) -> io::Result<()>;

    /// Appends `record`, already encoded by [`encode`] as `line` (the
    /// store encodes outside the log's lock, so that writers of different
    /// members do not serialise behind one another's JSON encoding). The
    /// same durability as [`append`](EventLog::append); by default it
    /// simply calls it.
    fn append_encoded(&mut self, line: &[u8], record: &LogRecord) -> io::Result<()> {
        let _ = line;
        self.append(record)
    }
}

/// One record as its log line: JSON and the terminating newline.
pub fn encode(record: &LogRecord) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(1024);
    serde_json::to_writer(&mut line, record).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// When [`FileEventLog`] calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record.
    Always,
    /// After every N records (N ≥ 1).
    EveryN(u32),
    /// Never (the operating system decides).
    Never,
}

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct FileEventLog {
    file: File,
    path: PathBuf,
    policy: FsyncPolicy,
    unsynced: u32,
}

impl FileEventLog {
    /// Opens (creating if needed) the log at `path` and reads the records
    /// it holds, dropping a torn last record.
    pub fn open(path: &Path, policy: FsyncPolicy) -> io::Result<(FileEventLog, Vec<LogRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        // Every record ends with a newline written in the same call: what
        // follows the last newline is a torn record, never acknowledged.
        let good_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut records = Vec::new();
        for (i, line) in bytes[..good_len].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let record = serde_json::from_slice::<LogRecord>(line).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: line {} is not a valid record: {e}",
                        path.display(),
                        i + 1
                    ),
                )
            })?;
            records.push(record);
        }
        if bytes.len() != good_len {
            file.set_len(good_len as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok((
            FileEventLog {
                file,
                path: path.to_path_buf(),
                policy,
                unsynced: 0,
            },
            records,
        ))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl EventLog for FileEventLog {
    fn append(&mut self, record: &LogRecord) -> io::Result<()> {
        let line = encode(record)?;
        self.append_encoded(&line, record)
    }

    fn append_encoded(&mut self, line: &[u8], _record: &LogRecord) -> io::Result<()> {
        // One write call per record, straight to the file (no user-space
        // buffer to flush: every record is acknowledged on its own, so it
        // must reach the operating system before `append` returns). With
        // O_APPEND a record is never interleaved, and a crash can only
        // tear the last one.
        self.file.write_all(line)?;
        self.unsynced += 1;
        let sync = match self.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::EveryN(n) => self.unsynced >= n.max(1),
            FsyncPolicy::Never => false,
        };
        if sync {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }
}

impl Drop for FileEventLog {
    fn drop(&mut self) {
        if self.unsynced > 0 {
            let _ = self.file.sync_data();
        }
    }
}
