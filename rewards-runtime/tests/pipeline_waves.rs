//! The pipeline's rounds: a hot member mixed with many others, through a
//! store that records every append. A member's consecutive purchases ride
//! one append call (each evaluated from the view its predecessors leave),
//! a refund ends the member's run in a call, each member's transactions
//! are applied in input order, and the balances are exact; transactions
//! evaluated behind redelivered ones are refused as stale and evaluated
//! again from the store.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rewards_core::memory::MemoryStore;
use rewards_core::{
    Component, ComponentKind, CounterKey, EvalFailure, Evaluator, LedgerStore, MemberView, Outcome,
    Points, RulesetStamp, Transaction,
};
use rewards_runtime::{
    Backoff, JsonLinesSource, MemoryDeadLetters, Metrics, Pipeline, PipelineConfig,
    ProgramRegistry, RunReport,
};

use common::*;

/// Input lines with, per member, the ids in input order and the
/// available points expected at the end.
#[derive(Default)]
struct Workload {
    lines: Vec<String>,
    order: HashMap<String, Vec<String>>,
    expected: HashMap<String, i64>,
}

impl Workload {
    fn push(&mut self, line: String, member: &str, id: &str, points: i64) {
        self.lines.push(line);
        self.order
            .entry(member.to_owned())
            .or_default()
            .push(id.to_owned());
        *self.expected.entry(member.to_owned()).or_default() += points;
    }
}

/// One worker, rounds of at most 16, small queues and a short backoff.
fn one_worker() -> PipelineConfig {
    PipelineConfig {
        workers: 1,
        feed_capacity: 64,
        queue_capacity: 64,
        max_batch: 16,
        backoff: Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        drain_timeout: Duration::from_secs(30),
    }
}

/// Runs `lines` from a JSON-lines file through a pipeline of `plan` into
/// `store`; returns the report, the metrics and the dead letters.
async fn run_lines(
    store: Arc<FlakyStore>,
    plan: Arc<dyn Evaluator>,
    lines: &[String],
    config: PipelineConfig,
) -> (RunReport, Arc<Metrics>, Arc<MemoryDeadLetters>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tx.jsonl");
    tokio::fs::write(&path, lines.join("\n") + "\n")
        .await
        .expect("write input");
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(plan, metrics.clone()));
    let dead = Arc::new(MemoryDeadLetters::new());
    let pipeline = Pipeline::with_config(store, programs, dead.clone(), metrics.clone(), config);
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let report = pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    (report, metrics, dead)
}

/// Each member's transactions reached the store in input order (over all
/// append calls), every prediction held, and the balances are exact.
async fn assert_in_order_and_exact(store: &FlakyStore, workload: &Workload, metrics: &Metrics) {
    let calls = store.calls.lock().expect("calls").clone();
    let mut applied: HashMap<String, Vec<String>> = HashMap::new();
    for (m, id) in calls.iter().flatten() {
        applied
            .entry(m.as_str().to_owned())
            .or_default()
            .push(id.as_str().to_owned());
    }
    assert_eq!(
        applied, workload.order,
        "each member's transactions in input order"
    );
    assert_eq!(
        metrics.reevaluated.load(Ordering::Relaxed),
        0,
        "nothing was a duplicate or refused: every prediction held"
    );
    for (member, points) in &workload.expected {
        assert_eq!(available(store, member).await, *points, "{member}");
    }
    assert!(store.reconcile().await.expect("reconcile").drift.is_empty());
}

/// The transactions of `member` in each append call, in order.
fn runs_of(store: &FlakyStore, member: &str) -> Vec<Vec<String>> {
    let calls = store.calls.lock().expect("calls").clone();
    calls
        .iter()
        .map(|call| {
            call.iter()
                .filter(|(m, _)| m.as_str() == member)
                .map(|(_, id)| id.as_str().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_members_run_rides_one_call_in_order_and_a_refund_ends_it() {
    // Each batch append is held 2 ms so that a backlog forms behind it.
    let store = Arc::new(
        FlakyStore::new(Arc::new(MemoryStore::default()), 0)
            .with_append_delay(Duration::from_millis(2)),
    );
    // One worker sees everything: the hot member "w-hot" is every other
    // transaction, three purchases then a refund of the third; 60 cold
    // members once or twice each.
    let mut w = Workload::default();
    for i in 0..120 {
        let cold = format!("w-c{:02}", i % 60);
        let id = format!("w-c-{i:03}");
        w.push(purchase(&id, &cold, "3.00"), &cold, &id, 3);
        if i % 4 != 3 {
            let id = format!("w-h-{i:03}");
            w.push(purchase(&id, "w-hot", "10.00"), "w-hot", &id, 10);
        } else {
            let original = format!("w-h-{:03}", i - 1);
            let id = format!("w-r-{i:03}");
            w.push(refund(&id, "w-hot", "4.00", &original), "w-hot", &id, -4);
        }
    }
    let plan = PointsPerUnit::new(1, 1).arc();
    let (report, metrics, dead) = run_lines(store.clone(), plan, &w.lines, one_worker()).await;
    assert_eq!(report.received, 240);
    assert_eq!(report.applied, 240);
    assert_eq!(report.dead_lettered, 0, "{:?}", dead.take());

    let calls = store.calls.lock().expect("calls").clone();
    assert!(
        calls.iter().all(|call| call.len() <= 16),
        "at most max_batch per call"
    );
    let hot_runs = runs_of(&store, "w-hot");
    for hot in &hot_runs {
        if let Some(refund) = hot.iter().position(|id| id.starts_with("w-r-")) {
            assert_eq!(refund + 1, hot.len(), "a refund ends the run: {hot:?}");
        }
    }
    assert!(
        hot_runs.iter().any(|hot| hot.len() > 1),
        "the backlog gave some call several of the hot member's transactions: {calls:?}"
    );
    // One view read per round, never more than one per append call.
    assert!(store.view_calls.load(Ordering::SeqCst) as usize <= calls.len());
    assert_in_order_and_exact(&store, &w, &metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_of_an_authorization_in_the_same_run_does_not_end_it() {
    let store = Arc::new(
        FlakyStore::new(Arc::new(MemoryStore::default()), 0)
            .with_append_delay(Duration::from_millis(2)),
    );
    // The hot member: authorize 20.00, a purchase, settle 15.00 of it, a
    // purchase, over and over; cold members in between.
    let mut w = Workload::default();
    for i in 0..160 {
        let cold = format!("s-c{:02}", i % 40);
        let id = format!("s-c-{i:03}");
        w.push(purchase(&id, &cold, "2.00"), &cold, &id, 2);
        let id = format!("s-h-{i:03}");
        match i % 4 {
            // Held: nothing available until settled.
            0 => w.push(authorization(&id, "s-hot", "20.00"), "s-hot", &id, 0),
            2 => {
                let original = format!("s-h-{:03}", i - 2);
                // 20 points scaled to 15.00 of 20.00.
                w.push(
                    settlement(&id, "s-hot", "15.00", &original),
                    "s-hot",
                    &id,
                    15,
                );
            }
            _ => w.push(purchase(&id, "s-hot", "5.00"), "s-hot", &id, 5),
        }
    }
    let plan = PointsPerUnit::new(1, 1).arc();
    let (report, metrics, dead) = run_lines(store.clone(), plan, &w.lines, one_worker()).await;
    assert_eq!(report.applied, 320);
    assert_eq!(report.dead_lettered, 0, "{:?}", dead.take());

    // A settlement followed, in the same call, by a later transaction of
    // the member: the run went on past it.
    let settled = |id: &String| {
        id.strip_prefix("s-h-")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 4 == 2)
    };
    let hot_runs = runs_of(&store, "s-hot");
    assert!(
        hot_runs
            .iter()
            .any(|hot| hot.windows(2).any(|pair| settled(&pair[0]))),
        "some call carried the hot member on past a settlement: {hot_runs:?}"
    );
    assert_in_order_and_exact(&store, &w, &metrics).await;
}

/// Awards one point per whole unit, but never past a balance of 100: what
/// it awards depends on the member's view, so an outcome evaluated from a
/// wrong prediction would be visibly wrong.
struct CappedAtHundred(RulesetStamp);

impl Evaluator for CappedAtHundred {
    fn stamp(&self) -> &RulesetStamp {
        &self.0
    }
    fn counter_keys(&self, _tx: &Transaction, _keys: &mut Vec<CounterKey>) {}
    fn evaluate(&self, tx: &Transaction, view: &MemberView) -> Result<Outcome, EvalFailure> {
        use rust_decimal::prelude::ToPrimitive;
        let units = tx.amount.amount.trunc().to_i64().unwrap_or(0);
        let room = (100 - view.balance.get()).max(0);
        let mut outcome = Outcome::empty(tx.id.clone(), tx.member.clone(), tx.kind, self.0.clone());
        outcome.components.push(Component {
            rule: Arc::from("capped"),
            label: Arc::from("capped at 100"),
            kind: ComponentKind::Earn,
            points: Points(units.min(room)),
            exact: rust_decimal::Decimal::from(units.min(room)),
            budget: None,
        });
        Ok(outcome)
    }
    fn explain(&self, tx: &Transaction, view: &MemberView) -> Result<Outcome, EvalFailure> {
        self.evaluate(tx, view)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_behind_redelivered_ones_are_evaluated_again_from_the_store() {
    let plan: Arc<dyn Evaluator> = Arc::new(CappedAtHundred(RulesetStamp {
        id: Arc::from("capped"),
        version: 1,
        hash: Arc::from("capped-v1"),
    }));
    let memory = Arc::new(MemoryStore::default());
    let store =
        Arc::new(FlakyStore::new(memory.clone(), 0).with_append_delay(Duration::from_millis(2)));
    // Twelve purchases of 10 by one member; the first four were applied
    // before a crash lost their acknowledgements, so all twelve come again.
    let lines: Vec<String> = (0..12)
        .map(|i| purchase(&format!("d-{i:02}"), "d-hot", "10.00"))
        .collect();
    for line in &lines[..4] {
        let tx = Transaction::from_json_bytes(line.as_bytes()).expect("decode");
        let view = memory.member_view(&tx.member, &[]).await.expect("view");
        let outcome = plan.evaluate(&tx, &view).expect("evaluate");
        memory.append(&tx, &outcome).await.expect("append");
    }
    assert_eq!(available(memory.as_ref(), "d-hot").await, 40);

    let config = PipelineConfig {
        workers: 1,
        max_batch: 16,
        ..PipelineConfig::default()
    };
    let (report, metrics, dead) = run_lines(store.clone(), plan, &lines, config).await;
    assert_eq!(report.received, 12);
    assert_eq!(report.applied, 12);
    assert_eq!(report.duplicates, 4);
    assert_eq!(report.dead_lettered, 0, "{:?}", dead.take());
    // Sequentially: 10 each until the balance reaches 100, then nothing. A
    // prediction that counted the redelivered four again would have seen
    // 100 early and awarded less.
    assert_eq!(available(memory.as_ref(), "d-hot").await, 100);
    let history = memory
        .history(&member("d-hot"), 0, 100)
        .await
        .expect("history");
    assert_eq!(history.len(), 10, "ten purchases earned, two found no room");
    assert!(memory
        .reconcile()
        .await
        .expect("reconcile")
        .drift
        .is_empty());
    // Wherever a call held a redelivered transaction followed by a new one
    // of the member, the new ones were refused as stale and done again.
    let calls = store.calls.lock().expect("calls").clone();
    let behind_duplicate = calls.iter().any(|call| {
        call.iter()
            .position(|(_, id)| id.as_str() < "d-04")
            .is_some_and(|dup| call[dup..].iter().any(|(_, id)| id.as_str() >= "d-04"))
    });
    let reevaluated = metrics.reevaluated.load(Ordering::Relaxed);
    assert_eq!(behind_duplicate, reevaluated > 0, "{calls:?}");
}
