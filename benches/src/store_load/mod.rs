//! bench/store: durable throughput and balance-read latency of the real
//! write path — generated transactions, evaluated by a compiled `.rwd`
//! [`Plan`], appended to PostgreSQL (`PgStore`), optionally through the
//! Redis write-through cache (`CachedStore<PgStore, RedisCache>`), and the
//! full runtime pipeline. Every mode ends with a reconciliation so that the
//! figures are figures of correct work. The `store-load` binary prints
//! them; `benches/tests/store_load_smoke.rs` runs the same code on a few
//! hundred transactions.
//!
//! Each mode runs on its own schema (`sl_<pid>_<nanos>_<n>`) and, when
//! cached, its own Redis key prefix; both are removed at the end of the
//! mode unless [`Settings::keep`] is set.

pub mod hand;
mod modes;
pub mod stats;

pub use modes::{run_mode, run_reads, unique_name};
pub use stats::{Percentiles, WalDelta};

use std::collections::BTreeMap;
use std::sync::Arc;

use rewards_core::generate::{Generator, GeneratorConfig};
use rewards_core::{MemberId, Transaction};
use rewards_dsl::{HostFunctions, Plan};

/// Boxed error of the tool.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The reference program (24 rules: caps, aggregates, tiers, budgets).
pub use crate::peers::REFERENCE_RWD;

/// What to run against.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL URL (database `test` on the shared server by default).
    pub database_url: String,
    /// Redis URL of the shared server.
    pub redis_url: String,
    /// Members of the generated day.
    pub members: usize,
    /// Transactions generated (each mode takes them in order until the
    /// time limit).
    pub transactions: usize,
    /// Time limit of one mode, in milliseconds (workers stop taking new
    /// transactions after it).
    pub limit_ms: u64,
    /// Members whose balances are compared (store vs receipts, cache vs
    /// store) after each mode.
    pub sample: usize,
    /// Balance reads per side in the read-latency measurement.
    pub reads: usize,
    /// Keep schemas and Redis keys.
    pub keep: bool,
    /// Print progress to stderr every 2 s.
    pub progress: bool,
    /// Generator seed.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
            redis_url: std::env::var("REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            members: 20_000,
            transactions: 200_000,
            limit_ms: 12_000,
            sample: 500,
            reads: 5_000,
            keep: false,
            progress: false,
            seed: 7,
        }
    }
}

/// How a mode drives the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// One database transaction per outcome (`append`): per transaction
    /// `member_view`, `evaluate`, `append`; `workers` tasks partitioned by
    /// member, each with one pooled connection.
    Single {
        /// Workers (= connections).
        workers: usize,
    },
    /// `append_batch` of up to `per_batch` outcomes, `workers` tasks
    /// partitioned by member. A batch holds at most one transaction per
    /// member (the next one needs the view after it), so a worker looks
    /// ahead in its queue (preserving each member's order) to fill it. The
    /// batch's member views are read in one `member_views` call.
    Batch {
        /// Workers.
        workers: usize,
        /// Outcomes per `append_batch` (at most 1000).
        per_batch: usize,
    },
    /// The hand-written baseline ([`hand`]): the same shape of writes
    /// (inbox, postings, balance upsert, audit row) without the store,
    /// `per_tx` outcomes per database transaction, `workers` connections
    /// partitioned by member; no evaluation.
    Hand {
        /// Workers (= connections).
        workers: usize,
        /// Outcomes per database transaction.
        per_tx: usize,
    },
    /// The runtime `Pipeline` (JSON-lines source in memory → decode →
    /// view → Plan → append/append_batch → ack), `workers` workers,
    /// adaptive batches of up to `max_batch`.
    Pipeline {
        /// Pipeline workers.
        workers: usize,
        /// Most transactions per append.
        max_batch: usize,
    },
}

/// One mode: how it drives the store, and whether through the Redis cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// How.
    pub drive: Drive,
    /// Through `CachedStore<PgStore, RedisCache>` (write-through).
    pub cached: bool,
}

impl Mode {
    /// A short name: `single/1`, `batch/4x1000+redis`, `pipeline/4+redis`.
    pub fn name(&self) -> String {
        let base = match self.drive {
            Drive::Single { workers } => format!("single/{workers}"),
            Drive::Batch { workers, per_batch } => format!("batch/{workers}x{per_batch}"),
            Drive::Pipeline { workers, max_batch } => format!("pipeline/{workers}x{max_batch}"),
            Drive::Hand { workers, per_tx } => format!("hand/{workers}x{per_tx}"),
        };
        if self.cached {
            format!("{base}+redis")
        } else {
            base
        }
    }

    /// Parses a name as printed by [`Mode::name`].
    pub fn parse(text: &str) -> Option<Mode> {
        let (base, cached) = match text.strip_suffix("+redis") {
            Some(b) => (b, true),
            None => (text, false),
        };
        let (kind, rest) = base.split_once('/')?;
        let drive = match kind {
            "single" => Drive::Single {
                workers: rest.parse().ok()?,
            },
            "batch" | "pipeline" | "hand" => {
                let (w, n) = rest.split_once('x')?;
                let (workers, n) = (w.parse().ok()?, n.parse().ok()?);
                if kind == "batch" {
                    Drive::Batch {
                        workers,
                        per_batch: n,
                    }
                } else if kind == "hand" {
                    Drive::Hand { workers, per_tx: n }
                } else {
                    Drive::Pipeline {
                        workers,
                        max_batch: n,
                    }
                }
            }
            _ => return None,
        };
        Some(Mode { drive, cached })
    }
}

/// The modes of the issue: the hand-written baseline (one outcome per
/// database transaction on 1 and 8 connections, `per_batch` per
/// transaction on 4), then single on 1 and 8 connections and batch on 4
/// workers, each without and with Redis, then the pipeline with Redis.
pub fn standard_modes(per_batch: usize) -> Vec<Mode> {
    let mut modes: Vec<Mode> = [(1, 1), (8, 1), (4, per_batch)]
        .into_iter()
        .map(|(workers, per_tx)| Mode {
            drive: Drive::Hand { workers, per_tx },
            cached: false,
        })
        .collect();
    let drives = [
        Drive::Single { workers: 1 },
        Drive::Single { workers: 8 },
        Drive::Batch {
            workers: 4,
            per_batch,
        },
    ];
    for drive in drives {
        for cached in [false, true] {
            modes.push(Mode { drive, cached });
        }
    }
    modes.push(Mode {
        drive: Drive::Pipeline {
            workers: 4,
            max_batch: per_batch,
        },
        cached: true,
    });
    modes
}

/// The generated transactions and the compiled plan.
pub struct Workload {
    /// Transactions in time order.
    pub transactions: Vec<Transaction>,
    /// The compiled reference program.
    pub plan: Arc<Plan>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("transactions", &self.transactions.len())
            .finish_non_exhaustive()
    }
}

impl Workload {
    /// Generates `settings.transactions` over `settings.members` members
    /// with the core's seeded generator and compiles the reference program.
    pub fn generate(settings: &Settings) -> Result<Workload, BoxError> {
        let plan = Plan::compile(REFERENCE_RWD, &HostFunctions::new())
            .map_err(|d| format!("reference.rwd does not compile: {d:?}"))?;
        let config = GeneratorConfig {
            seed: settings.seed,
            transactions: settings.transactions,
            members: settings.members,
            ..GeneratorConfig::default()
        };
        let transactions: Vec<Transaction> = Generator::new(config)?.collect();
        Ok(Workload {
            transactions,
            plan: Arc::new(plan),
        })
    }

    /// Transactions of each of `parts` partitions (by member), in order.
    pub fn partition(&self, parts: usize) -> Vec<Vec<Transaction>> {
        let parts = parts.max(1);
        let mut out = vec![Vec::new(); parts];
        for tx in &self.transactions {
            out[partition_of(&tx.member, parts)].push(tx.clone());
        }
        out
    }
}

/// The partition of a member (FNV-1a over its id: stable across runs).
pub fn partition_of(member: &MemberId, parts: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % u64::try_from(parts.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// What the reconciliation after a mode found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Members the store's `reconcile` checked.
    pub members: u64,
    /// Postings it summed.
    pub postings: u64,
    /// Members whose stored balances differ from their postings or lots.
    pub drift: u64,
    /// Members whose stored balances were compared with the last receipt
    /// the tool got for them.
    pub receipts_checked: u64,
    /// Of those, different.
    pub receipts_mismatched: u64,
    /// Members whose Redis entry was compared with the database.
    pub cache_checked: u64,
    /// Of those, with no entry (evicted after a failed write-through).
    pub cache_missing: u64,
    /// Of those, with an entry different from the database.
    pub cache_mismatched: u64,
    /// Rows in the inbox (one per applied request).
    pub inbox_rows: u64,
    /// Requests the tool saw applied (not duplicates).
    pub applied: u64,
}

impl Reconciliation {
    /// True when every check passed: no drift, receipts and cache entries
    /// equal to the database, one inbox row per applied request. A missing
    /// entry is allowed: a write-through past its timeout evicts (the next
    /// read fills from the database).
    pub fn ok(&self) -> bool {
        self.drift == 0
            && self.receipts_mismatched == 0
            && self.cache_mismatched == 0
            && self.inbox_rows == self.applied
    }
}

/// The figures of one mode.
#[derive(Debug, Clone)]
pub struct ModeReport {
    /// The mode.
    pub mode: Mode,
    /// Outcomes stored (new, not duplicates).
    pub applied: u64,
    /// Requests the ledger refused for good, by error kind (a refund
    /// beyond what is left, ...), and evaluation failures.
    pub refused: BTreeMap<String, u64>,
    /// Wall time from the first call to the last result, µs.
    pub elapsed_us: u64,
    /// Latency of one store call (one `append`, or one `append_batch`), µs.
    pub call_latency: Percentiles,
    /// Latency of one transaction: view + evaluate + append (single), or
    /// receipt → ack (pipeline), µs.
    pub tx_latency: Percentiles,
    /// Total time in `member_view` calls, µs (summed over workers).
    pub view_us: u64,
    /// Total time in `Plan::evaluate`, µs (summed over workers).
    pub eval_us: u64,
    /// Total time in the store write calls, µs (summed over workers).
    pub store_us: u64,
    /// Store write calls.
    pub calls: u64,
    /// WAL written during the mode (the whole server: other sessions too).
    pub wal: WalDelta,
    /// The reconciliation after it.
    pub reconciliation: Reconciliation,
    /// Write-through latency reported by the cache (p50/p95/p99), µs.
    pub write_through: Option<Percentiles>,
}

impl ModeReport {
    /// Outcomes per second (integer).
    pub fn tx_per_s(&self) -> u64 {
        self.applied.saturating_mul(1_000_000) / self.elapsed_us.max(1)
    }

    /// Mean outcomes per store call.
    pub fn mean_batch(&self) -> u64 {
        self.applied / self.calls.max(1)
    }
}

/// Balance-read latency: the Redis cache (`CachedStore::balance`) against
/// PostgreSQL alone (`PgStore::balance`), sequential reads by one caller
/// over members that exist.
#[derive(Debug, Clone)]
pub struct ReadReport {
    /// Distinct members read.
    pub members: u64,
    /// Through the cache.
    pub cache: Percentiles,
    /// Cache hits / misses during the measured reads.
    pub cache_hits: u64,
    /// Misses.
    pub cache_misses: u64,
    /// PostgreSQL alone.
    pub postgres: Percentiles,
}
