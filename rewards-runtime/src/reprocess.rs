//! Re-processing dead letters after a fix: the original payloads are read
//! back from a dead-letter file (or, with the `kafka` feature, from a DLQ
//! topic: `crate::kafka::reprocess_dead_letter_topic`) and submitted through
//! the pipeline again. Messages that now succeed are applied (ledger
//! idempotency makes a message that had in fact been applied a harmless
//! duplicate); those that still fail land in the pipeline's own dead-letter
//! sink — give it a new file, not the one being read.

use std::future::Future;
use std::path::Path;

use crate::pipeline::{Pipeline, RunReport};
use crate::source::jsonl::JsonLinesSource;
use crate::RuntimeError;

/// Re-submits every letter of the dead-letter file at `path` through
/// `pipeline`, until the file ends or `shutdown` completes.
pub async fn reprocess_dead_letter_file(
    pipeline: &Pipeline,
    path: impl AsRef<Path>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunReport, RuntimeError> {
    let mut source = JsonLinesSource::open_dead_letters(path).await?;
    pipeline.run(&mut source, shutdown).await
}
