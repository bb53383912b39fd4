//! bench/store: the store-load logic on a few hundred transactions against
//! the real PostgreSQL (`DATABASE_URL`, default the shared server's `test`
//! database) and Redis (`REDIS_URL`), so that the tool cannot rot: every
//! mode kind stores every transaction and its reconciliation passes. No
//! timing is asserted.

use rewards_benches::store_load::{run_mode, Drive, Mode, Settings, Workload};

fn settings() -> Settings {
    Settings {
        members: 40,
        transactions: 300,
        // Generous: the modes finish long before; a slow shared machine
        // must not cut them short (the test checks that all were stored).
        limit_ms: 120_000,
        sample: 40,
        reads: 200,
        ..Settings::default()
    }
}

async fn check(mode: Mode, reads: bool) {
    let settings = settings();
    let workload = Workload::generate(&settings).expect("generate the workload");
    let (report, read) = run_mode(&settings, &workload, mode, reads)
        .await
        .expect("the mode runs");
    let rec = &report.reconciliation;
    assert!(rec.ok(), "{}: reconciliation failed: {rec:?}", mode.name());
    let refused: u64 = report.refused.values().sum();
    assert_eq!(
        report.applied + refused,
        300,
        "{}: every transaction is stored or refused for a reason ({:?})",
        mode.name(),
        report.refused
    );
    assert!(report.applied > 250, "{}: {report:?}", mode.name());
    assert_eq!(rec.inbox_rows, report.applied);
    assert!(rec.postings > 0 && rec.members > 0);
    if let Drive::Single { .. } | Drive::Batch { .. } = mode.drive {
        assert!(rec.receipts_checked > 0, "receipts compared: {rec:?}");
    }
    if mode.cached {
        assert!(rec.cache_checked > 0, "cache compared: {rec:?}");
    }
    if reads {
        let read = read.expect("read latency measured");
        assert_eq!(read.cache.count, 200);
        assert_eq!(read.postgres.count, 200);
        assert!(read.members > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_on_two_connections_reconciles() {
    check(
        Mode {
            drive: Drive::Single { workers: 2 },
            cached: false,
        },
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_through_redis_reconciles_and_measures_reads() {
    check(
        Mode {
            drive: Drive::Batch {
                workers: 2,
                per_batch: 50,
            },
            cached: true,
        },
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_through_redis_reconciles() {
    check(
        Mode {
            drive: Drive::Pipeline {
                workers: 2,
                max_batch: 50,
            },
            cached: true,
        },
        false,
    )
    .await;
}

#[test]
fn mode_names_parse_back() {
    for mode in rewards_benches::store_load::standard_modes(1000) {
        assert_eq!(Mode::parse(&mode.name()), Some(mode));
    }
    assert_eq!(Mode::parse("batch/4"), None);
    assert_eq!(Mode::parse("nope/1"), None);
}

/// The hand-written baseline writes every transaction once (one inbox row
/// each) and its balances equal its postings, in batches and one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hand_written_baseline_reconciles() {
    let settings = settings();
    let workload = Workload::generate(&settings).expect("generate the workload");
    for (workers, per_tx) in [(2, 1), (2, 50)] {
        let mode = Mode {
            drive: Drive::Hand { workers, per_tx },
            cached: false,
        };
        let (report, _) = run_mode(&settings, &workload, mode, false)
            .await
            .expect("the mode runs");
        let rec = &report.reconciliation;
        assert!(rec.ok(), "{}: {rec:?}", mode.name());
        assert_eq!(report.applied, 300, "{}", mode.name());
        assert_eq!(rec.inbox_rows, 300, "{}", mode.name());
    }
}
