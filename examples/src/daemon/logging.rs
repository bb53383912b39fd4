//! Structured logs with `tracing`: pretty for people, JSON lines for log
//! shippers. `RUST_LOG`, when set, wins over `log.level`.
//!
//! Nothing secret is ever a field: tokens are only compared (as digests),
//! database and Redis URLs are logged through
//! [`redact_url`](super::config::redact_url), and the configuration's
//! `Debug` shows secrets as `Secret(***)`.

use tracing_subscriber::EnvFilter;

use super::config::{LogConfig, LogFormat};

/// Installs the global subscriber (once; later calls do nothing). Logs go
/// to standard error, so standard output carries only the summary.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Pretty => builder.with_target(false).try_init(),
    };
    // Already installed (tests start several daemons in one process): keep it.
    drop(result);
}
