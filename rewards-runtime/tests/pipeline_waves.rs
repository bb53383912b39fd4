//! The pipeline's rounds ("waves"): a hot member mixed with many others,
//! through a store that records every append. Each call holds distinct
//! members, each member's transactions are applied in input order (a
//! refund right behind its purchase finds it), and the balances are exact.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rewards_core::memory::MemoryStore;
use rewards_core::{LedgerStore, MemberId};
use rewards_runtime::{
    Backoff, JsonLinesSource, MemoryDeadLetters, Metrics, Pipeline, PipelineConfig, ProgramRegistry,
};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_hold_distinct_members_and_keep_each_members_order() {
    // Each batch append is held 2 ms so that a backlog forms behind it.
    let store = Arc::new(
        FlakyStore::new(Arc::new(MemoryStore::default()), 0)
            .with_append_delay(Duration::from_millis(2)),
    );
    // One worker sees everything: the hot member "w-hot" is every other
    // transaction, each of its purchases followed by a refund of it two
    // transactions later; 60 cold members once or twice each.
    let mut lines = Vec::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut push = |line: String, member: &str, id: &str, points: i64| {
        lines.push(line);
        order
            .entry(member.to_owned())
            .or_default()
            .push(id.to_owned());
        *expected.entry(member.to_owned()).or_default() += points;
    };
    for i in 0..120 {
        let cold = format!("w-c{:02}", i % 60);
        let id = format!("w-c-{i:03}");
        push(purchase(&id, &cold, "3.00"), &cold, &id, 3);
        if i % 2 == 0 {
            let id = format!("w-h-{i:03}");
            push(purchase(&id, "w-hot", "10.00"), "w-hot", &id, 10);
        } else {
            let original = format!("w-h-{:03}", i - 1);
            let id = format!("w-r-{i:03}");
            push(refund(&id, "w-hot", "4.00", &original), "w-hot", &id, -4);
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tx.jsonl");
    tokio::fs::write(&path, lines.join("\n") + "\n")
        .await
        .expect("write input");
    let metrics = Arc::new(Metrics::new());
    let programs = Arc::new(ProgramRegistry::single(
        PointsPerUnit::new(1, 1).arc(),
        metrics.clone(),
    ));
    let dead = Arc::new(MemoryDeadLetters::new());
    let pipeline = Pipeline::with_config(
        store.clone(),
        programs,
        dead.clone(),
        metrics,
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
        },
    );
    let mut source = JsonLinesSource::open(&path).await.expect("open");
    let report = pipeline
        .run(&mut source, std::future::pending())
        .await
        .expect("run");
    assert_eq!(report.received, 240);
    assert_eq!(report.applied, 240);
    assert_eq!(report.dead_lettered, 0, "{:?}", dead.take());

    let calls = store.calls.lock().expect("calls").clone();
    let mut applied: HashMap<String, Vec<String>> = HashMap::new();
    for call in &calls {
        assert!(call.len() <= 16, "at most max_batch per call");
        let members: HashSet<&MemberId> = call.iter().map(|(m, _)| m).collect();
        assert_eq!(
            members.len(),
            call.len(),
            "distinct members per call: {call:?}"
        );
        for (m, id) in call {
            applied
                .entry(m.as_str().to_owned())
                .or_default()
                .push(id.as_str().to_owned());
        }
    }
    assert_eq!(applied, order, "each member's transactions in input order");
    // One view read per round, never more than one per append call.
    assert!(store.view_calls.load(Ordering::SeqCst) as usize <= calls.len());
    for (member, points) in &expected {
        assert_eq!(available(store.as_ref(), member).await, *points, "{member}");
    }
    assert!(store.reconcile().await.expect("reconcile").drift.is_empty());
}
