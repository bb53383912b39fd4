//! What `/metrics` serves: the runtime's metrics
//! ([`rewards_runtime::Metrics::render_prometheus`]) followed by the
//! daemon's own — HTTP requests, rule reloads, redemptions, the programs
//! loaded, and the cache's hit ratio and health.
//!
//! Plain atomics, no floating point: a ratio is rendered from integers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use rewards_core::RulesetStamp;
use std::sync::Arc;

/// Cache figures for `/metrics` (full mode), taken from the cache wrapper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// Reads answered by the cache.
    pub hits: u64,
    /// Reads the cache could not answer (filled from the store).
    pub misses: u64,
    /// Reads sent to the store because the cache was bypassed.
    pub bypassed_reads: u64,
    /// Cache calls that failed.
    pub errors: u64,
    /// Cache calls that timed out.
    pub timeouts: u64,
    /// Write-throughs done.
    pub write_throughs: u64,
    /// Write-throughs that failed (the member was evicted or marked dirty).
    pub write_through_failures: u64,
    /// Entries evicted.
    pub evictions: u64,
    /// Members repaired after an outage.
    pub repaired: u64,
    /// 0 closed (healthy), 1 half-open (probing), 2 open (bypassed).
    pub breaker_state: u8,
}

/// The daemon's own counters.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    http_2xx: AtomicU64,
    http_4xx: AtomicU64,
    http_5xx: AtomicU64,
    http_unauthorized: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_refused: AtomicU64,
    rollbacks: AtomicU64,
    redemptions: AtomicU64,
    adjustments: AtomicU64,
    simulations: AtomicU64,
    profiles_imported: AtomicU64,
}

impl DaemonMetrics {
    /// All zero.
    pub fn new() -> DaemonMetrics {
        DaemonMetrics::default()
    }

    /// Counts one HTTP response.
    pub fn http_response(&self, status: u16) {
        let counter = match status {
            500.. => &self.http_5xx,
            400.. => &self.http_4xx,
            _ => &self.http_2xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if status == 401 || status == 403 {
            self.http_unauthorized.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one reload attempt.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reloads_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one rollback.
    pub fn rollback(&self) {
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one applied redemption.
    pub fn redemption(&self) {
        self.redemptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one applied adjustment.
    pub fn adjustment(&self) {
        self.adjustments.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one simulation.
    pub fn simulation(&self) {
        self.simulations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts imported member profiles.
    pub fn profiles_imported(&self, n: u64) {
        self.profiles_imported.fetch_add(n, Ordering::Relaxed);
    }

    /// Reloads refused so far.
    pub fn reloads_refused(&self) -> u64 {
        self.reloads_refused.load(Ordering::Relaxed)
    }

    /// Renders the daemon's metrics (appended after the runtime's).
    pub fn render(
        &self,
        out: &mut String,
        programs: &[(Arc<str>, RulesetStamp)],
        cache: Option<&CacheFigures>,
        ready: bool,
    ) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "rewards_http_responses_total",
            "HTTP responses, by status class.",
            "counter",
        );
        for (class, counter) in [
            ("2xx", &self.http_2xx),
            ("4xx", &self.http_4xx),
            ("5xx", &self.http_5xx),
        ] {
            let _ = writeln!(
                out,
                "rewards_http_responses_total{{class=\"{class}\"}} {}",
                load(counter)
            );
        }
        counter(
            out,
            "rewards_http_auth_failures_total",
            "Requests refused with 401 or 403.",
            load(&self.http_unauthorized),
        );
        header(
            out,
            "rewards_rule_reloads_total",
            "Rule reloads, by result (refused: did not compile or failed its tests).",
            "counter",
        );
        let _ = writeln!(
            out,
            "rewards_rule_reloads_total{{result=\"ok\"}} {}",
            load(&self.reloads_ok)
        );
        let _ = writeln!(
            out,
            "rewards_rule_reloads_total{{result=\"refused\"}} {}",
            load(&self.reloads_refused)
        );
        counter(
            out,
            "rewards_rule_rollbacks_total",
            "Rollbacks to an earlier program version.",
            load(&self.rollbacks),
        );
        counter(
            out,
            "rewards_redemptions_total",
            "Redemptions applied through the API (duplicates excluded).",
            load(&self.redemptions),
        );
        counter(
            out,
            "rewards_adjustments_total",
            "Adjustments applied through the admin API (duplicates excluded).",
            load(&self.adjustments),
        );
        counter(
            out,
            "rewards_simulations_total",
            "Transactions simulated through the API.",
            load(&self.simulations),
        );
        counter(
            out,
            "rewards_profiles_imported_total",
            "Member profiles imported at start.",
            load(&self.profiles_imported),
        );
        header(
            out,
            "rewards_program_info",
            "The ruleset version serving each program (value 1).",
            "gauge",
        );
        for (name, stamp) in programs {
            let _ = writeln!(
                out,
                "rewards_program_info{{program=\"{}\",ruleset=\"{}\",version=\"{}\",hash=\"{}\"}} 1",
                escape(name),
                escape(&stamp.id),
                stamp.version,
                escape(&stamp.hash)
            );
        }
        gauge(
            out,
            "rewards_ready",
            "1 when the daemon is ready to serve.",
            u64::from(ready),
        );
        gauge(
            out,
            "rewards_cache_enabled",
            "1 when a write-through cache is in front of the store.",
            u64::from(cache.is_some()),
        );
        if let Some(c) = cache {
            counter(
                out,
                "rewards_cache_hits_total",
                "Balance reads answered by the cache.",
                c.hits,
            );
            counter(
                out,
                "rewards_cache_misses_total",
                "Balance reads the cache could not answer.",
                c.misses,
            );
            header(
                out,
                "rewards_cache_hit_ratio",
                "Hits / (hits + misses) since start (0 before any read).",
                "gauge",
            );
            let _ = writeln!(
                out,
                "rewards_cache_hit_ratio {}",
                ratio(c.hits, c.hits.saturating_add(c.misses))
            );
            counter(
                out,
                "rewards_cache_bypassed_reads_total",
                "Reads sent to the store while the cache was bypassed.",
                c.bypassed_reads,
            );
            counter(
                out,
                "rewards_cache_errors_total",
                "Cache calls that failed.",
                c.errors,
            );
            counter(
                out,
                "rewards_cache_timeouts_total",
                "Cache calls that timed out.",
                c.timeouts,
            );
            counter(
                out,
                "rewards_cache_write_throughs_total",
                "Write-throughs done after a commit.",
                c.write_throughs,
            );
            counter(
                out,
                "rewards_cache_write_through_failures_total",
                "Write-throughs that failed (the entry was evicted or marked dirty).",
                c.write_through_failures,
            );
            counter(
                out,
                "rewards_cache_evictions_total",
                "Cache entries evicted.",
                c.evictions,
            );
            counter(
                out,
                "rewards_cache_repaired_total",
                "Members repaired after a cache outage.",
                c.repaired,
            );
            gauge(
                out,
                "rewards_cache_breaker_state",
                "Cache circuit breaker: 0 closed, 1 half-open, 2 open (cache bypassed).",
                u64::from(c.breaker_state),
            );
            gauge(
                out,
                "rewards_cache_healthy",
                "1 while the cache breaker is closed.",
                u64::from(c.breaker_state == 0),
            );
        }
    }
}

/// `num / den` as a decimal with 4 places, without floating point.
pub fn ratio(num: u64, den: u64) -> String {
    if den == 0 {
        return "0".into();
    }
    let scaled = u128::from(num) * 10_000 / u128::from(den);
    format!("{}.{:04}", scaled / 10_000, scaled % 10_000)
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_exact_decimals() {
        assert_eq!(ratio(0, 0), "0");
        assert_eq!(ratio(1, 3), "0.3333");
        assert_eq!(ratio(5, 5), "1.0000");
        assert_eq!(ratio(9_999, 10_000), "0.9999");
    }

    #[test]
    fn the_cache_section_renders_only_with_a_cache() {
        let m = DaemonMetrics::new();
        m.http_response(200);
        m.http_response(401);
        let mut out = String::new();
        m.render(&mut out, &[], None, true);
        assert!(out.contains("rewards_http_responses_total{class=\"4xx\"} 1\n"));
        assert!(out.contains("rewards_http_auth_failures_total 1\n"));
        assert!(out.contains("rewards_cache_enabled 0\n"));
        assert!(!out.contains("rewards_cache_hit_ratio"));
        let mut out = String::new();
        let figures = CacheFigures {
            hits: 3,
            misses: 1,
            ..CacheFigures::default()
        };
        m.render(&mut out, &[], Some(&figures), false);
        assert!(out.contains("rewards_cache_hit_ratio 0.7500\n"));
        assert!(out.contains("rewards_cache_healthy 1\n"));
        assert!(out.contains("rewards_ready 0\n"));
    }
}
