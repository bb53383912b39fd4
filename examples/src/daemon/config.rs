//! The daemon's configuration: a TOML file, then `REWARDS_*` environment
//! overrides, then validation — so that a bad setting stops the daemon at
//! start with a message naming the key, never at the first transaction.
//!
//! Relative paths written in the file are relative to the file's own
//! directory (so `examples/daemon.toml` works from any working directory);
//! relative paths given through the environment are relative to the
//! working directory. Secrets (API tokens, database and Redis passwords)
//! are kept in [`Secret`]s, whose `Debug` never shows them.
//!
//! See `docs/operations.md` for every key and its default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Smallest accepted API token, in bytes (shorter ones are guessable).
pub const MIN_TOKEN_BYTES: usize = 16;
/// Largest request body the API accepts by default, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is wrong.
    #[error("configuration key `{key}`: {message}")]
    Invalid {
        /// The key (`http.addr`, or the environment variable).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// A secret string: compared and used, never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself (for comparison and for the driver only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the daemon stores points and where its transactions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In-memory store with its event-log file in the state folder; JSON
    /// lines from a file or stdin; no services needed.
    Embedded,
    /// PostgreSQL store with a Redis write-through cache; Kafka input.
    Full,
}

impl Mode {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Embedded => "embedded",
            Mode::Full => "full",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable, coloured when on a terminal.
    Pretty,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `rewards=debug,info`); `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address (`127.0.0.1:8080`; port 0 picks a free port).
    pub addr: SocketAddr,
    /// Largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Requests handled at once; more wait (mini-redis's semaphore).
    pub max_concurrent_requests: usize,
    /// A request taking longer is answered 408 and abandoned.
    pub request_timeout_ms: u64,
    /// Bearer tokens for the query, simulate and redeem endpoints.
    pub tokens: Vec<Secret>,
    /// Bearer tokens for the admin endpoints (they may use the others too).
    pub admin_tokens: Vec<Secret>,
    /// Bearer tokens allowed to submit transactions (`POST /v1/transactions`);
    /// admin tokens may too.
    pub ingest_tokens: Vec<Secret>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests: 256,
            request_timeout_ms: 10_000,
            tokens: Vec::new(),
            admin_tokens: Vec::new(),
            ingest_tokens: Vec::new(),
        }
    }
}

/// The programs (rulesets) of this deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgramsConfig {
    /// The program of transactions without a `program` field.
    pub default: String,
    /// Program name → `.rwd` file.
    pub files: BTreeMap<String, PathBuf>,
    /// Reload a program when its file changes (polled).
    pub watch: bool,
    /// How often files are polled and scheduled activations checked.
    pub poll_interval_ms: u64,
    /// Earlier versions kept per program for rollback and explain.
    pub keep_versions: usize,
}

impl Default for ProgramsConfig {
    fn default() -> Self {
        ProgramsConfig {
            default: String::new(),
            files: BTreeMap::new(),
            watch: true,
            poll_interval_ms: 1_000,
            keep_versions: 8,
        }
    }
}

/// Where transactions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// A JSON-lines file (`input.path`), read to its end.
    File,
    /// JSON lines on standard input, until end of input.
    Stdin,
    /// The Kafka topic of `[kafka]` (full mode).
    Kafka,
    /// No input: the daemon only serves the API and runs the jobs.
    None,
}

/// Input settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// `file`, `stdin`, `kafka` or `none`.
    pub kind: InputKind,
    /// The JSON-lines file, for `kind = "file"`.
    pub path: Option<PathBuf>,
    /// Member profiles (JSON lines) imported at start, if set.
    pub profiles: Option<PathBuf>,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            kind: InputKind::None,
            path: None,
            profiles: None,
        }
    }
}

/// Pipeline limits (see `rewards_runtime::PipelineConfig`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Parallel workers.
    pub workers: usize,
    /// Messages waiting between the source and the dispatcher.
    pub feed_capacity: usize,
    /// Messages waiting per worker.
    pub queue_capacity: usize,
    /// Most transactions per store append.
    pub max_batch: usize,
    /// On shutdown, how long a failing store is retried before the work
    /// still waiting is given up (unacknowledged).
    pub drain_timeout_ms: u64,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            workers: 4,
            feed_capacity: 256,
            queue_capacity: 256,
            max_batch: 64,
            drain_timeout_ms: 10_000,
        }
    }
}

/// When the embedded store's event log calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every record.
    Always,
    /// After every N records.
    Every(u32),
    /// Never (the operating system decides).
    Never,
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fsync, D::Error> {
        let text = String::deserialize(d)?;
        Fsync::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Fsync {
    /// Parses `always`, `never` or `every:N`.
    pub fn parse(text: &str) -> Result<Fsync, String> {
        match text {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            other => match other.strip_prefix("every:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(Fsync::Every(n)),
                _ => Err(format!(
                    "expected \"always\", \"never\" or \"every:N\" (N >= 1), got {other:?}"
                )),
            },
        }
    }
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Event-log durability.
    pub fsync: Fsync,
    /// How long an authorization may stay unsettled before it is voided.
    pub authorization_ttl_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            fsync: Fsync::Every(64),
            authorization_ttl_days: 30,
        }
    }
}

/// Scheduled jobs: each runs at multiples of its interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run the jobs at all.
    pub enabled: bool,
    /// Points expiry interval, seconds.
    pub expiry_every_secs: u64,
    /// Pending-points release interval, seconds.
    pub pending_release_every_secs: u64,
    /// Authorization expiry interval, seconds.
    pub authorization_expiry_every_secs: u64,
    /// Tier review interval (scheduled changes, then every member's tier
    /// decided again by the default program), seconds.
    pub tier_review_every_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            enabled: true,
            expiry_every_secs: 60,
            pending_release_every_secs: 60,
            authorization_expiry_every_secs: 60,
            tier_review_every_secs: 3_600,
        }
    }
}

/// Kafka (full mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group.
    pub group_id: String,
    /// The transactions topic (key = member id).
    pub topic: String,
    /// The dead-letter topic (empty: dead letters go to a file in the state folder).
    pub dead_letter_topic: String,
    /// The outcomes topic fed from the store's transactional outbox (one
    /// event per applied transaction, key = member id, at least once:
    /// consumers deduplicate on header `rewards-event-id`); empty: no relay.
    pub outcomes_topic: String,
    /// How often acknowledged offsets are committed, milliseconds.
    pub commit_interval_ms: u64,
    /// Create the topics at start if missing (partitions).
    pub create_topics: Option<i32>,
    /// Extra librdkafka settings.
    pub settings: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            group_id: "rewards-daemon".into(),
            topic: "transactions".into(),
            dead_letter_topic: "transactions.dlq".into(),
            outcomes_topic: String::new(),
            commit_interval_ms: 1000,
            create_topics: None,
            settings: BTreeMap::new(),
        }
    }
}

/// PostgreSQL (full mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// Primary URL (may hold a password: never logged).
    pub url: Secret,
    /// Read-replica URL, optional.
    pub replica_url: Option<Secret>,
    /// Schema of the tables.
    pub schema: String,
    /// Connections per pool.
    pub pool_size: usize,
    /// Apply pending migrations at start.
    pub migrate_on_start: bool,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/postgres"),
            replica_url: None,
            schema: "rewards".into(),
            pool_size: 8,
            migrate_on_start: true,
        }
    }
}

/// Redis write-through cache (full mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Use the cache at all.
    pub enabled: bool,
    /// Standalone URL (may hold a password: never logged).
    pub url: Secret,
    /// Cluster nodes (`host:port`); when set, `url` is ignored.
    pub cluster_nodes: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// Warm the cache at start with the most recently active members.
    pub warm_on_start: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            enabled: true,
            url: Secret::new("redis://127.0.0.1:6379"),
            cluster_nodes: Vec::new(),
            prefix: "rewards".into(),
            warm_on_start: true,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `embedded` (default) or `full`.
    pub mode: Mode,
    /// Where the event log, the explain journal and the dead letters live.
    pub state_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// HTTP API.
    pub http: HttpConfig,
    /// Programs.
    pub programs: ProgramsConfig,
    /// Input.
    pub input: InputConfig,
    /// Pipeline.
    pub pipeline: PipelineSettings,
    /// Embedded store.
    pub store: StoreConfig,
    /// Jobs.
    pub jobs: JobsConfig,
    /// Kafka.
    pub kafka: KafkaSettings,
    /// PostgreSQL.
    pub postgres: PostgresSettings,
    /// Redis.
    pub redis: RedisSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Embedded,
            state_dir: PathBuf::from("state"),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            programs: ProgramsConfig::default(),
            input: InputConfig::default(),
            pipeline: PipelineSettings::default(),
            store: StoreConfig::default(),
            jobs: JobsConfig::default(),
            kafka: KafkaSettings::default(),
            postgres: PostgresSettings::default(),
            redis: RedisSettings::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file (relative paths in it resolved against its
    /// directory). Does not apply the environment nor validate.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses TOML text (paths left as written).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Makes every relative path in the file relative to `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.state_dir);
        for path in self.programs.files.values_mut() {
            join(path);
        }
        if let Some(p) = self.input.path.as_mut() {
            join(p);
        }
        if let Some(p) = self.input.profiles.as_mut() {
            join(p);
        }
    }

    /// Applies `REWARDS_*` overrides from the process environment.
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_overrides(|name| std::env::var(name).ok())
    }

    /// Applies `REWARDS_*` overrides from `lookup` (the environment, or a
    /// map in tests). See `docs/operations.md` for the list.
    pub fn apply_overrides(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("REWARDS_MODE") {
            self.mode = match v.as_str() {
                "embedded" => Mode::Embedded,
                "full" => Mode::Full,
                _ => return Err(invalid("REWARDS_MODE", "expected `embedded` or `full`")),
            };
        }
        if let Some(v) = get("REWARDS_STATE_DIR") {
            self.state_dir = PathBuf::from(v);
        }
        if let Some(v) = get("REWARDS_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                _ => return Err(invalid("REWARDS_LOG_FORMAT", "expected `pretty` or `json`")),
            };
        }
        if let Some(v) = get("REWARDS_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = get("REWARDS_HTTP_ADDR") {
            self.http.addr = v
                .parse()
                .map_err(|e| invalid("REWARDS_HTTP_ADDR", format!("{e} (expected host:port)")))?;
        }
        if let Some(v) = get("REWARDS_API_TOKENS") {
            self.http.tokens = split_list(&v).map(Secret::new).collect();
        }
        if let Some(v) = get("REWARDS_ADMIN_TOKENS") {
            self.http.admin_tokens = split_list(&v).map(Secret::new).collect();
        }
        if let Some(v) = get("REWARDS_INGEST_TOKENS") {
            self.http.ingest_tokens = split_list(&v).map(Secret::new).collect();
        }
        if let Some(v) = get("REWARDS_DEFAULT_PROGRAM") {
            self.programs.default = v;
        }
        if let Some(v) = get("REWARDS_INPUT") {
            match v.as_str() {
                "-" | "stdin" => self.input.kind = InputKind::Stdin,
                "none" => self.input.kind = InputKind::None,
                "kafka" => self.input.kind = InputKind::Kafka,
                path => {
                    self.input.kind = InputKind::File;
                    self.input.path = Some(PathBuf::from(path));
                }
            }
        }
        if let Some(v) = get("REWARDS_PROFILES") {
            self.input.profiles = Some(PathBuf::from(v));
        }
        if let Some(v) = get("REWARDS_WORKERS") {
            self.pipeline.workers = v
                .parse()
                .map_err(|_| invalid("REWARDS_WORKERS", "expected a whole number"))?;
        }
        if let Some(v) = get("REWARDS_KAFKA_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = get("REWARDS_KAFKA_TOPIC") {
            self.kafka.topic = v;
        }
        if let Some(v) = get("REWARDS_KAFKA_GROUP") {
            self.kafka.group_id = v;
        }
        if let Some(v) = get("REWARDS_DATABASE_URL") {
            self.postgres.url = Secret::new(v);
        }
        if let Some(v) = get("REWARDS_REDIS_URL") {
            self.redis.url = Secret::new(v);
        }
        if let Some(v) = get("REWARDS_REDIS_CLUSTER_NODES") {
            self.redis.cluster_nodes = split_list(&v).map(str::to_string).collect();
        }
        Ok(())
    }

    /// Checks every setting; the first problem found is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(invalid("state_dir", "must not be empty"));
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        let http = &self.http;
        if http.max_body_bytes < 1024 || http.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "http.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if http.max_concurrent_requests == 0 {
            return Err(invalid(
                "http.max_concurrent_requests",
                "must be at least 1",
            ));
        }
        if http.request_timeout_ms == 0 {
            return Err(invalid("http.request_timeout_ms", "must be at least 1"));
        }
        if http.tokens.is_empty() && http.admin_tokens.is_empty() {
            return Err(invalid(
                "http.tokens",
                "at least one API token is required (set REWARDS_API_TOKENS or http.tokens)",
            ));
        }
        for (key, tokens) in [
            ("http.tokens", &http.tokens),
            ("http.admin_tokens", &http.admin_tokens),
            ("http.ingest_tokens", &http.ingest_tokens),
        ] {
            for token in tokens {
                let t = token.expose();
                if t.len() < MIN_TOKEN_BYTES {
                    return Err(invalid(
                        key,
                        format!("every token must be at least {MIN_TOKEN_BYTES} bytes"),
                    ));
                }
                if !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(
                        key,
                        "tokens must be printable ASCII without spaces",
                    ));
                }
            }
        }
        let programs = &self.programs;
        if programs.files.is_empty() {
            return Err(invalid(
                "programs.files",
                "at least one program (name = \"file.rwd\") is required",
            ));
        }
        for name in programs.files.keys() {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    &format!("programs.files.{name}"),
                    "a program name is 1-64 letters, digits, `-` or `_`",
                ));
            }
        }
        if programs.default.is_empty() {
            if programs.files.len() != 1 {
                return Err(invalid(
                    "programs.default",
                    "required when there is more than one program",
                ));
            }
        } else if !programs.files.contains_key(&programs.default) {
            return Err(invalid(
                "programs.default",
                format!(
                    "{:?} is not one of the programs ({})",
                    programs.default,
                    programs
                        .files
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if programs.poll_interval_ms < 50 {
            return Err(invalid("programs.poll_interval_ms", "must be at least 50"));
        }
        match (self.input.kind, &self.input.path) {
            (InputKind::File, None) => {
                return Err(invalid("input.path", "required when input.kind = \"file\""))
            }
            (InputKind::Kafka, _) if self.mode == Mode::Embedded => {
                return Err(invalid("input.kind", "kafka input needs mode = \"full\""))
            }
            _ => {}
        }
        let p = &self.pipeline;
        for (key, value) in [
            ("pipeline.workers", p.workers),
            ("pipeline.feed_capacity", p.feed_capacity),
            ("pipeline.queue_capacity", p.queue_capacity),
            ("pipeline.max_batch", p.max_batch),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if p.workers > 256 {
            return Err(invalid("pipeline.workers", "must be at most 256"));
        }
        if p.max_batch > rewards_core::store::MAX_BATCH_ITEMS {
            return Err(invalid(
                "pipeline.max_batch",
                format!("must be at most {}", rewards_core::store::MAX_BATCH_ITEMS),
            ));
        }
        if self.store.authorization_ttl_days == 0 {
            return Err(invalid(
                "store.authorization_ttl_days",
                "must be at least 1",
            ));
        }
        let j = &self.jobs;
        for (key, value) in [
            ("jobs.expiry_every_secs", j.expiry_every_secs),
            (
                "jobs.pending_release_every_secs",
                j.pending_release_every_secs,
            ),
            (
                "jobs.authorization_expiry_every_secs",
                j.authorization_expiry_every_secs,
            ),
            ("jobs.tier_review_every_secs", j.tier_review_every_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.mode == Mode::Full {
            if !cfg!(feature = "full") {
                return Err(invalid(
                    "mode",
                    "full mode needs the daemon built with the `full` feature",
                ));
            }
            if self.input.kind == InputKind::Kafka {
                let k = &self.kafka;
                for (key, value) in [
                    ("kafka.brokers", &k.brokers),
                    ("kafka.group_id", &k.group_id),
                    ("kafka.topic", &k.topic),
                ] {
                    if value.trim().is_empty() {
                        return Err(invalid(key, "must not be empty"));
                    }
                }
                if k.commit_interval_ms == 0 {
                    return Err(invalid("kafka.commit_interval_ms", "must be at least 1"));
                }
                if matches!(k.create_topics, Some(n) if n < 1) {
                    return Err(invalid(
                        "kafka.create_topics",
                        "partitions must be at least 1",
                    ));
                }
            }
            let pg = &self.postgres.url;
            if !(pg.expose().starts_with("postgres://") || pg.expose().starts_with("postgresql://"))
            {
                return Err(invalid(
                    "postgres.url",
                    "must be a postgres:// URL (set REWARDS_DATABASE_URL)",
                ));
            }
            if self.postgres.pool_size == 0 {
                return Err(invalid("postgres.pool_size", "must be at least 1"));
            }
            if self.redis.enabled
                && self.redis.cluster_nodes.is_empty()
                && !(self.redis.url.expose().starts_with("redis://")
                    || self.redis.url.expose().starts_with("rediss://"))
            {
                return Err(invalid(
                    "redis.url",
                    "must be a redis:// URL (set REWARDS_REDIS_URL), or set redis.cluster_nodes",
                ));
            }
        }
        Ok(())
    }

    /// The default program's name (the only one when not named).
    pub fn default_program(&self) -> &str {
        if self.programs.default.is_empty() {
            self.programs.files.keys().next().map_or("", String::as_str)
        } else {
            &self.programs.default
        }
    }

    /// The file polling interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.programs.poll_interval_ms)
    }
}

fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A URL with its password replaced by `***`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Config {
        let mut c = Config::default();
        c.http.tokens = vec![Secret::new("a-read-token-0123456789")];
        c.programs
            .files
            .insert("cashback".into(), PathBuf::from("cashback.rwd"));
        c
    }

    #[test]
    fn a_minimal_configuration_is_valid_and_picks_its_only_program() {
        let c = minimal();
        c.validate().unwrap();
        assert_eq!(c.default_program(), "cashback");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml("mode = \"embedded\"\n[http]\nadress = \"x\"\n").unwrap_err();
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn the_file_parses_every_section() {
        let text = r#"
            mode = "full"
            state_dir = "st"
            [log]
            format = "json"
            level = "debug"
            [http]
            addr = "0.0.0.0:9000"
            tokens = ["read-token-0123456789"]
            [programs]
            default = "a"
            files = { a = "a.rwd", b = "/abs/b.rwd" }
            [input]
            kind = "kafka"
            [store]
            fsync = "every:10"
            [postgres]
            url = "postgres://u:pw@h/db"
            [redis]
            cluster_nodes = ["127.0.0.1:7000"]
        "#;
        let mut c = Config::from_toml(text).unwrap();
        c.resolve_paths(Path::new("/etc/rewards"));
        assert_eq!(c.mode, Mode::Full);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.store.fsync, Fsync::Every(10));
        assert_eq!(c.programs.files["a"], PathBuf::from("/etc/rewards/a.rwd"));
        assert_eq!(c.programs.files["b"], PathBuf::from("/abs/b.rwd"));
        assert_eq!(c.state_dir, PathBuf::from("/etc/rewards/st"));
        assert!(
            !format!("{c:?}").contains("pw"),
            "secrets must not be printed"
        );
    }

    #[test]
    fn environment_overrides_win() {
        let mut c = minimal();
        let env: BTreeMap<&str, &str> = [
            ("REWARDS_HTTP_ADDR", "127.0.0.1:0"),
            (
                "REWARDS_API_TOKENS",
                "tok-aaaaaaaaaaaaaaaa, tok-bbbbbbbbbbbbbbbb",
            ),
            ("REWARDS_INPUT", "-"),
            ("REWARDS_LOG_FORMAT", "json"),
        ]
        .into_iter()
        .collect();
        c.apply_overrides(|k| env.get(k).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(c.http.addr.port(), 0);
        assert_eq!(c.http.tokens.len(), 2);
        assert_eq!(c.http.tokens[1].expose(), "tok-bbbbbbbbbbbbbbbb");
        assert_eq!(c.input.kind, InputKind::Stdin);
        assert_eq!(c.log.format, LogFormat::Json);
        let bad = c.apply_overrides(|k| (k == "REWARDS_MODE").then(|| "cloud".to_string()));
        assert!(bad.unwrap_err().to_string().contains("REWARDS_MODE"));
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = minimal();
        c.http.tokens = vec![Secret::new("short")];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.tokens"));

        let mut c = minimal();
        c.programs.default = "nope".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("programs.default"));

        let mut c = minimal();
        c.input.kind = InputKind::File;
        assert!(c.validate().unwrap_err().to_string().contains("input.path"));

        let mut c = minimal();
        c.input.kind = InputKind::Kafka;
        assert!(c.validate().unwrap_err().to_string().contains("input.kind"));

        let mut c = minimal();
        c.pipeline.workers = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pipeline.workers"));

        let mut c = minimal();
        c.http.tokens.clear();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.tokens"));
    }

    #[test]
    fn the_example_configurations_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let embedded = Config::from_file(&dir.join("daemon.toml")).unwrap();
        embedded.validate().unwrap();
        assert_eq!(embedded.mode, Mode::Embedded);
        assert_eq!(embedded.programs.files.len(), 3);
        assert!(embedded.programs.files.values().all(|p| p.exists()));
        assert!(embedded.input.path.as_ref().unwrap().exists());
        assert!(embedded.input.profiles.as_ref().unwrap().exists());

        let mut full = Config::from_file(&dir.join("daemon-full.toml")).unwrap();
        assert_eq!(full.mode, Mode::Full);
        assert_eq!(full.input.kind, InputKind::Kafka);
        // Tokens come from the environment in full mode.
        assert!(full.validate().is_err());
        full.apply_overrides(|k| {
            (k == "REWARDS_API_TOKENS").then(|| "an-api-token-from-env".to_string())
        })
        .unwrap();
        assert_eq!(full.validate().is_ok(), cfg!(feature = "full"));
    }

    #[test]
    fn fsync_policies_parse() {
        assert_eq!(Fsync::parse("always"), Ok(Fsync::Always));
        assert_eq!(Fsync::parse("every:5"), Ok(Fsync::Every(5)));
        assert!(Fsync::parse("every:0").is_err());
        assert!(Fsync::parse("sometimes").is_err());
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/rewards"),
            "postgres://app:***@db:5432/rewards"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact_url("garbage"), "***");
    }
}
