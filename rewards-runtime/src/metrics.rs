//! Metrics of the pipeline as plain atomics, and their Prometheus text
//! rendering (exposition format 0.0.4).
//!
//! Everything here is lock-free and allocation-free on the hot path: a
//! counter is one `AtomicU64`, a histogram is a fixed array of cumulative
//! buckets in microseconds. The daemon serves [`Metrics::render_prometheus`]
//! on its `/metrics` endpoint. No floating point is used: durations are kept
//! in whole microseconds and printed as decimal seconds by integer formatting.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (the last bucket,
/// `+Inf`, is implicit).
pub const LATENCY_BUCKETS_US: [u64; 27] = [
    50, 100, 250, 500, 1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000, 10_000,
    12_500, 15_000, 20_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Upper bounds of the batch-size buckets (transactions per store call).
pub const BATCH_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// A histogram with fixed bucket bounds, safe to update from any thread.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// `buckets[i]` counts observations `<= bounds[i]` (not cumulative);
    /// the last one counts the rest.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram with the given ascending bucket bounds.
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation (in the histogram's unit).
    pub fn observe(&self, value: u64) {
        let slot = self.bounds.partition_point(|&b| b < value);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration, in whole microseconds.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of all observations.
    pub fn sum(&self) -> u64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// The upper bound of the bucket holding the `permille`-th observation
    /// (e.g. 950 for p95): an upper estimate of the quantile. `None` when
    /// empty; `Some(u64::MAX)` when it falls in the `+Inf` bucket.
    pub fn quantile_upper_bound(&self, permille: u64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = (count * permille.min(1000)).div_ceil(1000).max(1);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(self.bounds.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, seconds: bool) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = if seconds {
                micros_as_seconds(*bound)
            } else {
                bound.to_string()
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = if seconds {
            micros_as_seconds(self.sum())
        } else {
            self.sum().to_string()
        };
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

/// Formats microseconds as decimal seconds without floating point.
pub fn micros_as_seconds(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// Why a message went to the dead letters (the `stage` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterStage {
    /// The bytes are not a valid transaction.
    Decode,
    /// The transaction names a program that is not loaded.
    Program,
    /// The ruleset refused to evaluate it.
    Evaluate,
    /// The ledger refused it for good (unknown original, conflict, ...).
    Ledger,
}

impl DeadLetterStage {
    /// All stages, in label order.
    pub const ALL: [DeadLetterStage; 4] = [
        DeadLetterStage::Decode,
        DeadLetterStage::Program,
        DeadLetterStage::Evaluate,
        DeadLetterStage::Ledger,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStage::Decode => "decode",
            DeadLetterStage::Program => "program",
            DeadLetterStage::Evaluate => "evaluate",
            DeadLetterStage::Ledger => "ledger",
        }
    }

    /// Parses a label value.
    pub fn parse(text: &str) -> Option<DeadLetterStage> {
        DeadLetterStage::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Scheduled jobs, by label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Expiry of points lots.
    Expiry,
    /// Release of pending points.
    PendingRelease,
    /// Expiry of open card authorizations.
    AuthorizationExpiry,
    /// Periodic tier review.
    TierReview,
}

impl JobKind {
    /// All jobs, in label order.
    pub const ALL: [JobKind; 4] = [
        JobKind::Expiry,
        JobKind::PendingRelease,
        JobKind::AuthorizationExpiry,
        JobKind::TierReview,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Expiry => "expiry",
            JobKind::PendingRelease => "pending_release",
            JobKind::AuthorizationExpiry => "authorization_expiry",
            JobKind::TierReview => "tier_review",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// All metrics of one runtime (share it as `Arc<Metrics>`).
#[derive(Debug)]
pub struct Metrics {
    /// Messages taken from a source.
    pub received: AtomicU64,
    /// Transactions whose outcome the store accepted (new or duplicate).
    pub applied: AtomicU64,
    /// Of those, redeliveries the store recognised as already applied.
    pub duplicates: AtomicU64,
    /// Transactions evaluated from a predicted view that had to be
    /// evaluated again from a fresh one (the store refused the outcome as
    /// stale, or evaluation failed on the prediction).
    pub reevaluated: AtomicU64,
    /// Points credited or debited by applied outcomes (signed sum).
    pub points_posted: AtomicI64,
    dead_letters: [AtomicU64; 4],
    /// Messages acknowledged to their source.
    pub acked: AtomicU64,
    /// Store calls that failed transiently and were retried.
    pub store_retries: AtomicU64,
    /// Dead-letter writes that failed and were retried.
    pub dead_letter_retries: AtomicU64,
    /// 1 while the store circuit breaker is open.
    pub breaker_open: AtomicU64,
    /// Times the breaker opened.
    pub breaker_trips: AtomicU64,
    /// Messages currently inside the pipeline (received, not yet acked or dropped).
    pub in_flight: AtomicI64,
    /// Consumer lag in messages, summed over assigned partitions (-1: unknown).
    pub consumer_lag: AtomicI64,
    /// Times the Kafka consumer paused its partitions for a store outage.
    pub consumer_pauses: AtomicU64,
    /// Kafka offset commits that succeeded.
    pub offset_commits: AtomicU64,
    /// Kafka offset commits that failed.
    pub offset_commit_errors: AtomicU64,
    /// Program reloads (plan swaps).
    pub plan_swaps: AtomicU64,
    /// Outbox events the relay published (the broker acknowledged them).
    pub outbox_published: AtomicU64,
    /// Outbox relay rounds that failed (store or broker) and were retried.
    pub outbox_relay_errors: AtomicU64,
    job_runs: [AtomicU64; 4],
    job_failures: [AtomicU64; 4],
    /// Evaluation time per transaction, microseconds.
    pub evaluation_us: Histogram,
    /// Store append time per batch, microseconds.
    pub append_us: Histogram,
    /// From receipt by the source to acknowledgement, microseconds.
    pub pipeline_us: Histogram,
    /// From the message's own timestamp (Kafka create time) to
    /// acknowledgement, microseconds; only sources with timestamps feed it.
    pub end_to_end_us: Histogram,
    /// Transactions per store append call.
    pub batch_size: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Metrics {
        Metrics {
            received: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            reevaluated: AtomicU64::new(0),
            points_posted: AtomicI64::new(0),
            dead_letters: std::array::from_fn(|_| AtomicU64::new(0)),
            acked: AtomicU64::new(0),
            store_retries: AtomicU64::new(0),
            dead_letter_retries: AtomicU64::new(0),
            breaker_open: AtomicU64::new(0),
            breaker_trips: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            consumer_lag: AtomicI64::new(-1),
            consumer_pauses: AtomicU64::new(0),
            offset_commits: AtomicU64::new(0),
            offset_commit_errors: AtomicU64::new(0),
            plan_swaps: AtomicU64::new(0),
            outbox_published: AtomicU64::new(0),
            outbox_relay_errors: AtomicU64::new(0),
            job_runs: std::array::from_fn(|_| AtomicU64::new(0)),
            job_failures: std::array::from_fn(|_| AtomicU64::new(0)),
            evaluation_us: Histogram::new(&LATENCY_BUCKETS_US),
            append_us: Histogram::new(&LATENCY_BUCKETS_US),
            pipeline_us: Histogram::new(&LATENCY_BUCKETS_US),
            end_to_end_us: Histogram::new(&LATENCY_BUCKETS_US),
            batch_size: Histogram::new(&BATCH_BUCKETS),
        }
    }

    /// Counts one dead letter of the given stage.
    pub fn dead_lettered(&self, stage: DeadLetterStage) {
        self.dead_letters[stage.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Dead letters of one stage so far.
    pub fn dead_letters(&self, stage: DeadLetterStage) -> u64 {
        self.dead_letters[stage.index()].load(Ordering::Relaxed)
    }

    /// Dead letters of all stages so far.
    pub fn dead_letters_total(&self) -> u64 {
        DeadLetterStage::ALL
            .iter()
            .map(|s| self.dead_letters(*s))
            .sum()
    }

    /// Counts one run of a scheduled job.
    pub fn job_ran(&self, job: JobKind, ok: bool) {
        self.job_runs[job.index()].fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.job_failures[job.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs of one job so far (successful or not).
    pub fn job_runs(&self, job: JobKind) -> u64 {
        self.job_runs[job.index()].load(Ordering::Relaxed)
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "rewards_messages_received_total",
            "Messages taken from a source.",
            load(&self.received),
        );
        counter(
            &mut out,
            "rewards_transactions_applied_total",
            "Transactions whose outcome the store accepted (including recognised duplicates).",
            load(&self.applied),
        );
        counter(
            &mut out,
            "rewards_transactions_duplicate_total",
            "Redelivered transactions the store recognised as already applied.",
            load(&self.duplicates),
        );
        counter(
            &mut out,
            "rewards_transactions_reevaluated_total",
            "Transactions evaluated from a predicted member view that were evaluated again from a fresh one.",
            load(&self.reevaluated),
        );
        header(
            &mut out,
            "rewards_points_posted_total",
            "Signed sum of points posted by applied outcomes.",
            "counter",
        );
        let _ = writeln!(
            out,
            "rewards_points_posted_total {}",
            self.points_posted.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "rewards_dead_letters_total",
            "Messages sent to the dead letters, by stage.",
            "counter",
        );
        for stage in DeadLetterStage::ALL {
            let _ = writeln!(
                out,
                "rewards_dead_letters_total{{stage=\"{}\"}} {}",
                stage.as_str(),
                self.dead_letters(stage)
            );
        }
        counter(
            &mut out,
            "rewards_messages_acked_total",
            "Messages acknowledged to their source after a durable outcome.",
            load(&self.acked),
        );
        counter(
            &mut out,
            "rewards_store_retries_total",
            "Store calls that failed transiently and were retried.",
            load(&self.store_retries),
        );
        counter(
            &mut out,
            "rewards_dead_letter_retries_total",
            "Dead-letter writes that failed and were retried.",
            load(&self.dead_letter_retries),
        );
        gauge(
            &mut out,
            "rewards_store_breaker_open",
            "1 while the store circuit breaker is open.",
            i64::try_from(load(&self.breaker_open)).unwrap_or(i64::MAX),
        );
        counter(
            &mut out,
            "rewards_store_breaker_trips_total",
            "Times the store circuit breaker opened.",
            load(&self.breaker_trips),
        );
        gauge(
            &mut out,
            "rewards_messages_in_flight",
            "Messages received and not yet acknowledged.",
            self.in_flight.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "rewards_consumer_lag_messages",
            "Kafka consumer lag summed over assigned partitions (-1: unknown).",
            self.consumer_lag.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "rewards_consumer_pauses_total",
            "Times the Kafka consumer paused its partitions during a store outage.",
            load(&self.consumer_pauses),
        );
        counter(
            &mut out,
            "rewards_offset_commits_total",
            "Kafka offset commits that succeeded.",
            load(&self.offset_commits),
        );
        counter(
            &mut out,
            "rewards_offset_commit_errors_total",
            "Kafka offset commits that failed.",
            load(&self.offset_commit_errors),
        );
        counter(
            &mut out,
            "rewards_plan_swaps_total",
            "Ruleset plans swapped in by hot reload.",
            load(&self.plan_swaps),
        );
        counter(
            &mut out,
            "rewards_outbox_published_total",
            "Outbox events published to the outcomes topic.",
            load(&self.outbox_published),
        );
        counter(
            &mut out,
            "rewards_outbox_relay_errors_total",
            "Outbox relay rounds that failed and were retried.",
            load(&self.outbox_relay_errors),
        );
        header(
            &mut out,
            "rewards_job_runs_total",
            "Scheduled job runs, by job.",
            "counter",
        );
        for job in JobKind::ALL {
            let _ = writeln!(
                out,
                "rewards_job_runs_total{{job=\"{}\"}} {}",
                job.as_str(),
                load(&self.job_runs[job.index()])
            );
        }
        header(
            &mut out,
            "rewards_job_failures_total",
            "Scheduled job runs that failed, by job.",
            "counter",
        );
        for job in JobKind::ALL {
            let _ = writeln!(
                out,
                "rewards_job_failures_total{{job=\"{}\"}} {}",
                job.as_str(),
                load(&self.job_failures[job.index()])
            );
        }
        histogram_seconds(
            &mut out,
            "rewards_evaluation_seconds",
            "Time to evaluate one transaction.",
            &self.evaluation_us,
        );
        histogram_seconds(
            &mut out,
            "rewards_store_append_seconds",
            "Time of one store append call (one batch).",
            &self.append_us,
        );
        histogram_seconds(
            &mut out,
            "rewards_pipeline_seconds",
            "From receipt by the source to acknowledgement.",
            &self.pipeline_us,
        );
        histogram_seconds(
            &mut out,
            "rewards_end_to_end_seconds",
            "From the message timestamp (producer) to acknowledgement.",
            &self.end_to_end_us,
        );
        header(
            &mut out,
            "rewards_store_batch_size",
            "Transactions per store append call.",
            "histogram",
        );
        self.batch_size
            .render(&mut out, "rewards_store_batch_size", "", false);
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: i64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn histogram_seconds(out: &mut String, name: &str, help: &str, histogram: &Histogram) {
    header(out, name, help, "histogram");
    histogram.render(out, name, "", true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::new(&LATENCY_BUCKETS_US);
        assert_eq!(h.quantile_upper_bound(500), None);
        for us in [40, 60, 60, 900, 40_000_000] {
            h.observe(us);
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum(), 40_001_060);
        assert_eq!(h.quantile_upper_bound(200), Some(50));
        assert_eq!(h.quantile_upper_bound(600), Some(100));
        assert_eq!(h.quantile_upper_bound(800), Some(1_000));
        assert_eq!(h.quantile_upper_bound(1000), Some(u64::MAX));
    }

    #[test]
    fn prometheus_text_is_well_formed() {
        let m = Metrics::new();
        m.received.fetch_add(3, Ordering::Relaxed);
        m.dead_lettered(DeadLetterStage::Decode);
        m.evaluation_us.observe(1_500);
        m.batch_size.observe(3);
        let text = m.render_prometheus();
        assert!(text.contains("rewards_messages_received_total 3\n"));
        assert!(text.contains("rewards_dead_letters_total{stage=\"decode\"} 1\n"));
        assert!(text.contains("rewards_dead_letters_total{stage=\"ledger\"} 0\n"));
        assert!(text.contains("rewards_evaluation_seconds_bucket{le=\"0.001000\"} 0\n"));
        assert!(text.contains("rewards_evaluation_seconds_bucket{le=\"0.002000\"} 1\n"));
        assert!(text.contains("rewards_evaluation_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("rewards_evaluation_seconds_sum 0.001500\n"));
        assert!(text.contains("rewards_store_batch_size_bucket{le=\"4\"} 1\n"));
        // Every sample line is `name{labels} value` with an integer or decimal value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').expect("sample line");
            assert!(!name.is_empty());
            assert!(
                value == "+Inf"
                    || value
                        .trim_start_matches('-')
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.'),
                "bad value in {line}"
            );
        }
    }
}
