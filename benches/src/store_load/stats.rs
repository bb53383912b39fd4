//! Latency percentiles (exact, from every sample) and WAL counters.

use rewards_store::postgres::PgStore;

/// Percentiles of a set of durations in microseconds (exact: computed from
/// every sample, nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

impl Percentiles {
    /// From unsorted samples.
    pub fn of(mut samples: Vec<u64>) -> Percentiles {
        samples.sort_unstable();
        let at = |permille: usize| -> u64 {
            if samples.is_empty() {
                return 0;
            }
            let i = (samples.len() - 1).saturating_mul(permille) / 1000;
            samples[i]
        };
        Percentiles {
            count: u64::try_from(samples.len()).unwrap_or(u64::MAX),
            p50: at(500),
            p95: at(950),
            p99: at(990),
            max: samples.last().copied().unwrap_or(0),
        }
    }

    /// `p50/p95/p99` as milliseconds with three decimals.
    pub fn display_ms(&self) -> String {
        format!("{}/{}/{}", ms(self.p50), ms(self.p95), ms(self.p99))
    }
}

/// Microseconds as milliseconds with three decimals (integer arithmetic).
pub fn ms(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// An integer with thousands separators.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// WAL written between two readings of `pg_stat_wal` (server-wide: other
/// sessions on the shared server are included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalDelta {
    /// WAL records.
    pub records: u64,
    /// WAL bytes.
    pub bytes: u64,
    /// WAL syncs (flushes to disk).
    pub syncs: u64,
}

/// Reads `pg_stat_wal` (zeros if it cannot).
pub async fn wal_now(pg: &PgStore) -> WalDelta {
    let Ok(client) = pg.primary_pool().get().await else {
        return WalDelta::default();
    };
    let row = client
        .query_one(
            "SELECT wal_records::bigint, wal_bytes::bigint, wal_sync::bigint FROM pg_stat_wal",
            &[],
        )
        .await;
    match row {
        Ok(row) => {
            let get = |i: usize| {
                row.try_get::<_, i64>(i)
                    .ok()
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0)
            };
            WalDelta {
                records: get(0),
                bytes: get(1),
                syncs: get(2),
            }
        }
        Err(_) => WalDelta::default(),
    }
}

impl WalDelta {
    /// `after - self`.
    pub fn until(&self, after: &WalDelta) -> WalDelta {
        WalDelta {
            records: after.records.saturating_sub(self.records),
            bytes: after.bytes.saturating_sub(self.bytes),
            syncs: after.syncs.saturating_sub(self.syncs),
        }
    }
}
