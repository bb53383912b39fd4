//! The pipeline over the JSON-lines and in-process sources with the
//! in-memory store and a small test evaluator.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rewards_core::memory::MemoryStore;
use rewards_core::{LedgerStore, Transaction};
use rewards_runtime::deadletter::read_dead_letter_file;
use rewards_runtime::jobs::JobRunner;
use rewards_runtime::metrics::JobKind;
use rewards_runtime::reprocess::reprocess_dead_letter_file;
use rewards_runtime::{
    in_process, Backoff, DeadLetterStage, Disposition, JsonLinesDeadLetters, JsonLinesSource,
    MemoryDeadLetters, Metrics, Pipeline, PipelineConfig, ProgramRegistry, ProgramSet,
};

use common::*;

fn config() -> PipelineConfig {
    PipelineConfig {
        workers: 3,
        feed_capacity: 16,
        queue_capacity: 8,
        max_batch: 32,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        drain_timeout: Duration::from_secs(30),
    }
}

struct Setup {
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    dir: tempfile::TempDir,
}

async fn setup(store: Arc<dyn LedgerStore>, plan: Arc<dyn rewards_core::Evaluator>) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    let dead = Arc::new(
        JsonLinesDeadLetters::open(dir.path().join("dead.jsonl"))
            .await
            .expect("dead-letter file"),
    );
    let pipeline = Pipeline::with_config(store, programs, dead, metrics.clone(), config());
    Setup {
        pipeline,
        metrics,
        dir,
    }
}

async fn write_lines(dir: &tempfile::TempDir, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    tokio::fs::write(&path, text).await.expect("write input");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_transactions_gives_exact_balances() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(store.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let (lines, expected) = workload("a", 2_000, 37, 1);
    let path = write_lines(&s.dir, "tx.jsonl", &lines).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let progress = source.progress();
    let report = s
        .pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.received, 2_000);
    assert_eq!(report.applied, 2_000);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.duplicates, 0);
    assert_eq!(progress.acked(), 2_000);
    assert_eq!(progress.done_through(), 2_000);
    let mut total = 0;
    for (member, points) in &expected {
        assert_eq!(available(store.as_ref(), member).await, *points, "{member}");
        total += points;
    }
    assert_eq!(s.metrics.points_posted.load(Ordering::Relaxed), total);
    assert_eq!(s.metrics.in_flight.load(Ordering::Relaxed), 0);
    assert_eq!(s.metrics.acked.load(Ordering::Relaxed), 2_000);
    assert!(s.metrics.batch_size.count() >= 1);
    assert!(store.reconcile().await.expect("reconcile").drift.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_go_to_the_dead_letter_file_with_reasons_and_the_rest_is_applied() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(store.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let lines = vec![
        purchase("ok-1", "m-1", "10.00"),
        "this is not json".to_string(),
        r#"{"id":"f-1","member":"m-1","kind":"purchase","amount":12.5,"currency":"USD","mcc":5411,"time":"2026-09-01T12:00:00Z"}"#.to_string(),
        r#"{"id":"f-2","kind":"purchase","amount":"1.00","currency":"USD","mcc":5411,"time":"2026-09-01T12:00:00Z"}"#.to_string(),
        purchase("ok-2", "m-2", "20.00").replace("5411", "9999"),
        refund("r-1", "m-1", "5.00", "no-such-purchase"),
        purchase("ok-3", "m-1", "7.99").replace(r#""kind""#, r#""program":"elsewhere","kind""#),
        purchase("ok-4", "m-2", "3.50"),
    ];
    let path = write_lines(&s.dir, "tx.jsonl", &lines).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let report = s
        .pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.received, 8);
    assert_eq!(report.applied, 2);
    assert_eq!(report.dead_lettered, 6);
    assert_eq!(available(store.as_ref(), "m-1").await, 10);
    assert_eq!(available(store.as_ref(), "m-2").await, 3);

    let letters: Vec<_> = read_dead_letter_file(s.dir.path().join("dead.jsonl"))
        .await
        .expect("read dead letters")
        .into_iter()
        .map(|r| r.expect("a dead-letter record"))
        .collect();
    let mut seen: Vec<(String, &str, String, Option<String>)> = letters
        .iter()
        .map(|l| {
            (
                l.origin.clone(),
                l.reason.stage.as_str(),
                l.reason.code.clone(),
                l.reason.field.clone(),
            )
        })
        .collect();
    seen.sort();
    let file = path.display().to_string();
    let at = |line: u32| format!("{file}:{line}");
    assert_eq!(
        seen,
        vec![
            (at(2), "decode", "decode".into(), Some("$".into())),
            (at(3), "decode", "decode".into(), Some("amount".into())),
            (at(4), "decode", "decode".into(), Some("member".into())),
            (at(5), "evaluate", "blocked_mcc".into(), None),
            (at(6), "ledger", "invalid_reference".into(), None),
            (
                at(7),
                "program",
                "unknown_program".into(),
                Some("program".into())
            ),
        ]
    );
    // The original bytes are kept exactly, for re-processing.
    let line3 = letters
        .iter()
        .find(|l| l.origin == at(3))
        .expect("line 3 letter");
    assert_eq!(line3.payload, lines[2].as_bytes());
    assert!(
        line3.reason.message.contains("JSON number"),
        "{}",
        line3.reason.message
    );
    assert_eq!(s.metrics.dead_letters(DeadLetterStage::Decode), 3);
    assert_eq!(s.metrics.dead_letters(DeadLetterStage::Ledger), 1);
    assert_eq!(s.metrics.dead_letters_total(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_and_oversized_lines_are_dead_lettered_not_fatal() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(store.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(purchase("u-1", "m-1", "5.00").as_bytes());
    bytes.extend_from_slice(b"\n\xff\xfe not utf-8\r\n");
    bytes.extend_from_slice(&vec![
        b'x';
        rewards_runtime::source::jsonl::MAX_LINE_BYTES + 100
    ]);
    bytes.push(b'\n');
    bytes.extend_from_slice(purchase("u-2", "m-1", "6.00").as_bytes());
    let path = s.dir.path().join("tx.jsonl");
    tokio::fs::write(&path, &bytes).await.expect("write");
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let report = s
        .pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.received, 4);
    assert_eq!(report.applied, 2);
    assert_eq!(report.dead_lettered, 2);
    assert_eq!(available(store.as_ref(), "m-1").await, 11);
    let letters: Vec<_> = read_dead_letter_file(s.dir.path().join("dead.jsonl"))
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.expect("record"))
        .collect();
    assert_eq!(letters.len(), 2);
    let by_origin = |line: u32| {
        letters
            .iter()
            .find(|l| l.origin.ends_with(&format!(":{line}")))
            .expect("letter")
    };
    assert_eq!(by_origin(2).payload, b"\xff\xfe not utf-8");
    assert!(by_origin(2).reason.message.contains("UTF-8"));
    assert_eq!(
        by_origin(3).payload.len(),
        rewards_runtime::source::jsonl::MAX_LINE_BYTES
    );
    assert!(by_origin(3).reason.message.contains("bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_applied_once_and_a_conflicting_one_is_dead_lettered() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(store.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let lines = vec![
        purchase("d-1", "m-1", "40.00"),
        purchase("d-2", "m-1", "2.00"),
        purchase("d-1", "m-1", "40.00"),
        purchase("d-1", "m-1", "41.00"),
    ];
    let path = write_lines(&s.dir, "tx.jsonl", &lines).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let report = s
        .pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.applied, 3);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(available(store.as_ref(), "m-1").await, 42);
    let letters = read_dead_letter_file(s.dir.path().join("dead.jsonl"))
        .await
        .expect("read");
    assert_eq!(letters.len(), 1);
    let letter = letters[0].as_ref().expect("record");
    assert_eq!(letter.reason.code, "conflict");

    // The whole file again (a replay): nothing changes.
    let mut again = JsonLinesSource::open(&path).await.expect("open");
    let report = s
        .pipeline
        .run(&mut again, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.duplicates, 3);
    assert_eq!(available(store.as_ref(), "m-1").await, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_store_failure_pauses_and_resumes_without_loss() {
    let memory = Arc::new(MemoryStore::default());
    let flaky = Arc::new(FlakyStore::new(memory.clone(), 25));
    let s = setup(flaky.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let (lines, expected) = workload("t", 500, 11, 1);
    let path = write_lines(&s.dir, "tx.jsonl", &lines).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let report = s
        .pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(
        flaky.failures.load(Ordering::SeqCst),
        25,
        "every planned failure happened"
    );
    assert_eq!(report.applied, 500);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(report.abandoned, 0);
    assert_eq!(s.metrics.store_retries.load(Ordering::Relaxed), 25);
    assert!(s.metrics.breaker_trips.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        s.metrics.breaker_open.load(Ordering::Relaxed),
        0,
        "closed again"
    );
    for (member, points) in &expected {
        assert_eq!(
            available(memory.as_ref(), member).await,
            *points,
            "{member}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_acks_nothing_it_did_not_apply_and_a_resume_completes_exactly() {
    let memory = Arc::new(MemoryStore::default());
    // Down for good (until the test lifts it below).
    let flaky = Arc::new(FlakyStore::new(memory.clone(), u64::MAX));
    let s = setup(flaky.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let (lines, expected) = workload("s", 300, 7, 1);
    let path = write_lines(&s.dir, "tx.jsonl", &lines).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let progress = source.progress();
    let mut config = config();
    config.drain_timeout = Duration::from_millis(50);
    let pipeline = Pipeline::with_config(
        flaky.clone(),
        s.pipeline.programs().clone(),
        Arc::new(MemoryDeadLetters::new()),
        s.metrics.clone(),
        config,
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics = s.metrics.clone();
    let stopper = tokio::spawn(async move {
        // Stop once the outage has been noticed.
        while metrics.store_retries.load(Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = stop.send(());
    });
    let report = pipeline
        .run(&mut source, async {
            let _ = stopped.await;
        })
        .await
        .expect("run");
    stopper.await.expect("stopper");
    assert_eq!(report.applied, 0);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(
        report.abandoned, report.received,
        "nothing acked, all given up"
    );
    assert_eq!(progress.acked(), 0);
    assert_eq!(progress.done_through(), 0);
    assert!(report.received < 300, "input stopped at shutdown");

    // The database is back: resume from the last durable line.
    flaky.fail_next.store(0, Ordering::SeqCst);
    let mut resumed = JsonLinesSource::open(&path)
        .await
        .expect("open")
        .skip_through(progress.done_through());
    let report = s
        .pipeline
        .run(&mut resumed, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.applied, 300);
    for (member, points) in &expected {
        assert_eq!(
            available(memory.as_ref(), member).await,
            *points,
            "{member}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_work_taken_and_a_resume_neither_loses_nor_doubles() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(store.clone(), PointsPerUnit::new(1, 1).arc()).await;
    let (lines, expected) = workload("g", 3_000, 13, 1);
    let path = write_lines(&s.dir, "tx.jsonl", &lines).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let progress = source.progress();
    let metrics = s.metrics.clone();
    let report = s
        .pipeline
        .run(&mut source, async move {
            while metrics.acked.load(Ordering::Relaxed) < 500 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("run");
    assert_eq!(report.abandoned, 0);
    assert_eq!(
        report.applied, report.received,
        "all work taken was finished"
    );
    assert_eq!(progress.acked(), progress.delivered());
    let done = progress.done_through();
    assert_eq!(
        done, report.received,
        "no blank lines: lines done = received"
    );

    let mut resumed = JsonLinesSource::open(&path)
        .await
        .expect("open")
        .skip_through(done);
    let second = s
        .pipeline
        .run(&mut resumed, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.applied + second.applied, 3_000);
    assert_eq!(second.duplicates, 0);
    for (member, points) in &expected {
        assert_eq!(available(store.as_ref(), member).await, *points, "{member}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_reprocessed_after_the_fix() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(store.clone(), PointsPerUnit::new(1, 1).arc()).await;
    // The refund arrives before its purchase: refused (unknown original).
    let first = write_lines(
        &s.dir,
        "first.jsonl",
        &[refund("r-9", "m-9", "30.00", "p-9")],
    )
    .await;
    let mut source = JsonLinesSource::open(&first).await.expect("open");
    let report = s
        .pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.dead_lettered, 1);
    let second = write_lines(&s.dir, "second.jsonl", &[purchase("p-9", "m-9", "60.00")]).await;
    let mut source = JsonLinesSource::open(&second).await.expect("open");
    s.pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(available(store.as_ref(), "m-9").await, 60);

    // Re-process, with a fresh dead-letter file for anything failing again.
    let retry_dead = Arc::new(
        JsonLinesDeadLetters::open(s.dir.path().join("dead-2.jsonl"))
            .await
            .expect("open"),
    );
    let again = Pipeline::with_config(
        store.clone(),
        s.pipeline.programs().clone(),
        retry_dead,
        s.metrics.clone(),
        config(),
    );
    let report = reprocess_dead_letter_file(
        &again,
        s.dir.path().join("dead.jsonl"),
        std::future::pending(),
    )
    .await
    .expect("reprocess");
    assert_eq!(report.received, 1);
    assert_eq!(report.applied, 1);
    assert_eq!(report.dead_lettered, 0);
    assert_eq!(
        available(store.as_ref(), "m-9").await,
        30,
        "half refunded: half clawed back"
    );
    let left = read_dead_letter_file(s.dir.path().join("dead-2.jsonl"))
        .await
        .expect("read");
    assert!(left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_submissions_return_their_disposition() {
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(
        PointsPerUnit::new(1, 2).arc(),
        metrics.clone(),
    ));
    let dead = Arc::new(MemoryDeadLetters::new());
    let pipeline = Pipeline::with_config(store.clone(), programs, dead.clone(), metrics, config());
    let (mut source, submitter) = in_process(8);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        pipeline
            .run(&mut source, async {
                let _ = stopped.await;
            })
            .await
    });

    let tx = Transaction::from_json_str(&purchase("ip-1", "m-5", "12.34")).expect("decode");
    match submitter.submit(tx.clone()).await.expect("submitted") {
        Disposition::Applied(receipt) => {
            assert!(!receipt.duplicate);
            assert_eq!(receipt.balances.available.get(), 24);
        }
        other => panic!("expected applied, got {other:?}"),
    }
    match submitter.submit(tx).await.expect("submitted") {
        Disposition::Applied(receipt) => assert!(receipt.duplicate),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    match submitter
        .submit_bytes(b"{}".to_vec())
        .await
        .expect("submitted")
    {
        Disposition::DeadLettered(reason) => {
            assert_eq!(reason.stage, DeadLetterStage::Decode);
            assert_eq!(reason.field.as_deref(), Some("id"));
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(dead.len(), 1);
    let _ = stop.send(());
    let report = running.await.expect("join").expect("run");
    assert_eq!(report.applied, 2);
    assert_eq!(available(store.as_ref(), "m-5").await, 24);
    assert!(
        submitter.submit_bytes(b"{}".to_vec()).await.is_err(),
        "stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_swap_lets_in_flight_work_finish_on_the_old_version() {
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(Barrier::new(2));
    let v1 = PointsPerUnit::new(1, 1).gated(gate.clone()).arc();
    let programs = Arc::new(ProgramRegistry::new(
        ProgramSet::new().with("card", v1).with_default("card"),
        metrics.clone(),
    ));
    let pipeline = Pipeline::with_config(
        store.clone(),
        programs.clone(),
        Arc::new(MemoryDeadLetters::new()),
        metrics.clone(),
        config(),
    );
    let (mut source, submitter) = in_process(8);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        pipeline
            .run(&mut source, async {
                let _ = stopped.await;
            })
            .await
    });
    let first = {
        let submitter = submitter.clone();
        tokio::spawn(async move {
            let tx = Transaction::from_json_str(&purchase("v-1", "m-7", "10.00")).expect("decode");
            submitter.submit(tx).await
        })
    };
    // Evaluation of v-1 has started on version 1 ...
    let waiter = gate.clone();
    tokio::task::spawn_blocking(move || waiter.wait())
        .await
        .expect("entered");
    // ... the plan is swapped while it is in flight ...
    programs.swap("card", PointsPerUnit::new(2, 3).arc());
    let waiter = gate.clone();
    tokio::task::spawn_blocking(move || waiter.wait())
        .await
        .expect("released");
    first.await.expect("join").expect("applied");
    // ... and later transactions use version 2.
    let tx = Transaction::from_json_str(&purchase("v-2", "m-7", "10.00")).expect("decode");
    submitter.submit(tx).await.expect("applied");
    let _ = stop.send(());
    running.await.expect("join").expect("run");

    let postings = store
        .history(&member("m-7"), 0, 100)
        .await
        .expect("history");
    let stamps: Vec<(String, u32, i64)> = postings
        .iter()
        .map(|p| {
            (
                p.source.to_string(),
                p.ruleset.as_ref().map_or(0, |s| s.version),
                p.delta.available.get(),
            )
        })
        .collect();
    assert_eq!(
        stamps,
        vec![("v-1".to_string(), 1, 10), ("v-2".to_string(), 2, 30)]
    );
    assert_eq!(metrics.plan_swaps.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_runs_at_due_instants_and_is_idempotent_across_daemons() {
    let store = Arc::new(MemoryStore::default());
    let s = setup(
        store.clone(),
        PointsPerUnit::new(1, 1).expiring_after(30).arc(),
    )
    .await;
    let path = write_lines(&s.dir, "tx.jsonl", &[purchase("e-1", "m-3", "50.00")]).await;
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    s.pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(available(store.as_ref(), "m-3").await, 50);

    let metrics = Arc::new(Metrics::new());
    let before_expiry = base_time() + chrono::Duration::days(29);
    let programs = Arc::new(ProgramRegistry::new(ProgramSet::new(), metrics.clone()));
    let daemon_a = JobRunner::new(store.clone(), programs.clone(), metrics.clone());
    let daemon_b = JobRunner::new(store.clone(), programs, metrics.clone());
    for (_, result) in daemon_a.run_all(before_expiry).await {
        result.expect("job");
    }
    assert_eq!(available(store.as_ref(), "m-3").await, 50, "not due yet");

    let after_expiry = base_time() + chrono::Duration::days(31);
    let (a, b) = tokio::join!(
        daemon_a.run_all(after_expiry),
        daemon_b.run_all(after_expiry)
    );
    let expired: u64 = a
        .into_iter()
        .chain(b)
        .filter(|(job, _)| *job == JobKind::Expiry)
        .map(|(_, r)| r.expect("job").postings)
        .sum();
    assert_eq!(expired, 1, "two daemons, one expiry posting");
    assert_eq!(available(store.as_ref(), "m-3").await, 0);
    assert_eq!(metrics.job_runs(JobKind::Expiry), 3);
    assert!(metrics
        .render_prometheus()
        .contains("rewards_job_runs_total{job=\"expiry\"} 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_runner_runs_on_schedule_until_stopped() {
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::new(ProgramSet::new(), metrics.clone()));
    let runner = JobRunner::new(store, programs, metrics.clone()).with_schedule(vec![
        rewards_runtime::jobs::JobSchedule {
            job: JobKind::PendingRelease,
            every: Duration::from_millis(200),
        },
    ]);
    let (trigger, signal) = rewards_runtime::shutdown_channel();
    let task = tokio::spawn(async move { runner.run(signal).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metrics.job_runs(JobKind::PendingRelease) < 3 {
        assert!(std::time::Instant::now() < deadline, "the job did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trigger.trigger();
    task.await.expect("the runner stops");
    assert_eq!(
        metrics.job_runs(JobKind::Expiry),
        0,
        "only scheduled jobs run"
    );
}

/// A dead-letter sink that fails its first `fail` writes.
struct FlakySink {
    inner: MemoryDeadLetters,
    fail: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl rewards_runtime::DeadLetterSink for FlakySink {
    async fn send(
        &self,
        letter: &rewards_runtime::DeadLetter,
    ) -> Result<(), rewards_runtime::deadletter::SinkError> {
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(rewards_runtime::deadletter::SinkError(
                "disk full (test)".into(),
            ));
        }
        self.inner.send(letter).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dead_letter_sink_is_retried_and_the_message_acked_once_written() {
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(
        PointsPerUnit::new(1, 1).arc(),
        metrics.clone(),
    ));
    let sink = Arc::new(FlakySink {
        inner: MemoryDeadLetters::new(),
        fail: std::sync::atomic::AtomicU64::new(3),
    });
    let pipeline = Pipeline::with_config(store, programs, sink.clone(), metrics.clone(), config());
    let (mut source, submitter) = in_process(8);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        pipeline
            .run(&mut source, async {
                let _ = stopped.await;
            })
            .await
    });
    let disposition = submitter
        .submit_bytes(b"not json".to_vec())
        .await
        .expect("answered");
    assert!(matches!(disposition, Disposition::DeadLettered(_)));
    assert_eq!(sink.inner.len(), 1, "written once the sink recovered");
    assert_eq!(metrics.dead_letter_retries.load(Ordering::Relaxed), 3);
    let _ = stop.send(());
    let report = running.await.expect("join").expect("run");
    assert_eq!(report.dead_lettered, 1);
}
