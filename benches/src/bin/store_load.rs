//! `store-load`: durable throughput of the real write path (generated
//! transactions → `reference.rwd` Plan → PostgreSQL, with and without the
//! Redis write-through cache, and the runtime pipeline), then balance-read
//! latency (Redis cache vs PostgreSQL alone). Every mode ends with a
//! reconciliation; the exit status is non-zero if one fails.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-storebench cargo run --release -p rewards-benches --bin store-load -- \
//!     [--modes single/1,single/8,batch/4x1000,...] [--seconds 12] [--transactions 200000] \
//!     [--members 20000] [--batch 1000] [--keep] [--progress] [--markdown]
//! ```
//!
//! `benches/store/run.sh` runs it next to `pgbench` and `redis-benchmark`.

use clap::Parser;
use rewards_benches::store_load::stats::{ms, thousands};
use rewards_benches::store_load::{
    run_mode, standard_modes, BoxError, Mode, ModeReport, ReadReport, Settings, Workload,
};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "store-load",
    about = "Durable throughput and balance-read latency on PostgreSQL + Redis"
)]
struct Args {
    /// Comma-separated modes (`hand/1x1`, `hand/4x1000`, `single/1`,
    /// `single/8`, `batch/4x1000`, `pipeline/4x1000`, each but `hand`
    /// optionally `+redis`); default: all of them.
    #[arg(long, value_delimiter = ',')]
    modes: Vec<String>,
    /// Time limit per mode, seconds.
    #[arg(long, default_value_t = 12)]
    seconds: u64,
    /// Transactions generated (each mode takes them in order).
    #[arg(long, default_value_t = 200_000)]
    transactions: usize,
    /// Members of the generated day.
    #[arg(long, default_value_t = 20_000)]
    members: usize,
    /// Outcomes per `append_batch` in the batch and pipeline modes.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Balance reads per side (cache, PostgreSQL); 0 skips the reads.
    #[arg(long, default_value_t = 5000)]
    reads: usize,
    /// Members compared after each mode.
    #[arg(long, default_value_t = 500)]
    sample: usize,
    /// PostgreSQL URL (default: `$DATABASE_URL`, else
    /// postgres://postgres@127.0.0.1:5432/test).
    #[arg(long)]
    database_url: Option<String>,
    /// Redis URL (default: `$REDIS_URL`, else redis://127.0.0.1:6379).
    #[arg(long)]
    redis_url: Option<String>,
    /// Keep the schemas and the Redis keys.
    #[arg(long)]
    keep: bool,
    /// Progress every 2 s on stderr.
    #[arg(long)]
    progress: bool,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn row(r: &ModeReport) -> String {
    let rec = &r.reconciliation;
    let refused: u64 = r.refused.values().sum();
    // Where the time went, as shares of the summed worker time.
    let total = (r.view_us + r.eval_us + r.store_us).max(1);
    let share = |x: u64| x.saturating_mul(100) / total;
    let split = if r.view_us == 0 {
        format!(
            "eval {} ms / store {} ms (sums)",
            r.eval_us / 1000,
            r.store_us / 1000
        )
    } else {
        format!(
            "view {}% / eval {}% / store {}%",
            share(r.view_us),
            share(r.eval_us),
            share(r.store_us)
        )
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.mode.name(),
        thousands(r.tx_per_s()),
        thousands(r.applied),
        r.mean_batch(),
        r.call_latency.display_ms(),
        r.tx_latency.display_ms(),
        split,
        thousands(r.wal.bytes / r.applied.max(1)),
        if rec.ok() {
            format!("ok ({} refused)", refused)
        } else {
            "FAILED".to_string()
        },
    )
}

fn detail(r: &ModeReport) {
    let rec = &r.reconciliation;
    println!(
        "  {}: {} applied in {} s; refused {:?}; reconcile: {} members, {} postings, drift {}, inbox {} == applied {}, receipts {}/{} equal, cache {} checked ({} missing, {} different){}",
        r.mode.name(),
        r.applied,
        ms(r.elapsed_us / 1000),
        r.refused,
        rec.members,
        rec.postings,
        rec.drift,
        rec.inbox_rows,
        rec.applied,
        rec.receipts_checked - rec.receipts_mismatched,
        rec.receipts_checked,
        rec.cache_checked,
        rec.cache_missing,
        rec.cache_mismatched,
        match r.write_through {
            Some(w) => format!(
                "; write-through p50/p95/p99 {}/{}/{} ms (log2 buckets)",
                ms(w.p50),
                ms(w.p95),
                ms(w.p99)
            ),
            None => String::new(),
        }
    );
    println!(
        "    WAL: {} records, {} bytes, {} syncs (server-wide) = {} B/outcome",
        r.wal.records,
        r.wal.bytes,
        r.wal.syncs,
        r.wal.bytes / r.applied.max(1)
    );
}

fn reads_table(r: &ReadReport) {
    println!();
    println!(
        "Balance reads, one caller, {} existing members ({} hits / {} misses in the cache):",
        r.members, r.cache_hits, r.cache_misses
    );
    println!("| read | n | p50 ms | p95 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    for (name, p) in [
        ("Redis cache (CachedStore::balance)", &r.cache),
        ("PostgreSQL alone (PgStore::balance)", &r.postgres),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            p.count,
            ms(p.p50),
            ms(p.p95),
            ms(p.p99),
            ms(p.max)
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let defaults = Settings::default();
    let settings = Settings {
        database_url: args.database_url.unwrap_or(defaults.database_url),
        redis_url: args.redis_url.unwrap_or(defaults.redis_url),
        members: args.members,
        transactions: args.transactions,
        limit_ms: args.seconds.saturating_mul(1000),
        sample: args.sample,
        reads: args.reads,
        keep: args.keep,
        progress: args.progress,
        seed: args.seed,
    };
    let modes: Vec<Mode> = if args.modes.is_empty() {
        standard_modes(args.batch)
    } else {
        args.modes
            .iter()
            .map(|m| Mode::parse(m).ok_or_else(|| format!("unknown mode {m:?}")))
            .collect::<Result<_, _>>()?
    };
    eprintln!(
        "generating {} transactions over {} members ...",
        settings.transactions, settings.members
    );
    let workload = Workload::generate(&settings)?;
    let mut reports = Vec::new();
    let mut reads = None;
    for mode in modes {
        // Balance reads run on the members the cached batch mode created.
        let want_reads = settings.reads > 0
            && reads.is_none()
            && mode.cached
            && matches!(mode.drive, rewards_benches::store_load::Drive::Batch { .. });
        eprintln!("running {} (up to {} s) ...", mode.name(), args.seconds);
        let (report, read) = run_mode(&settings, &workload, mode, want_reads).await?;
        eprintln!(
            "  {}: {} tx/s",
            report.mode.name(),
            thousands(report.tx_per_s())
        );
        reports.push(report);
        if read.is_some() {
            reads = read;
        }
    }
    println!();
    println!("| mode | tx/s | outcomes | tx/call | store call p50/p95/p99 ms | per tx p50/p95/p99 ms | time split | WAL B/outcome | reconciliation |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!("{}", row(r));
    }
    println!();
    for r in &reports {
        detail(r);
    }
    if let Some(r) = &reads {
        reads_table(r);
    }
    if reports.iter().any(|r| !r.reconciliation.ok()) {
        return Err("a reconciliation failed".into());
    }
    Ok(())
}
