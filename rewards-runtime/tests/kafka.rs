//! The Kafka source, DLQ producer and re-processing over a real broker
//! (tansu on loopback). Each test uses its own topics and group.
//!
//! The broker must be running or startable: if 127.0.0.1:9092 (or
//! `REWARDS_KAFKA_BROKERS`) does not answer, the tests run
//! `scripts/services/tansu.sh start`; when that fails they FAIL, naming the
//! script to run.

#![cfg(feature = "kafka")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use rewards_core::memory::MemoryStore;
use rewards_core::LedgerStore;
use rewards_runtime::kafka::{
    create_topics, header_text, headers, reprocess_dead_letter_topic, KafkaConfig, KafkaDeadLetters,
};

use common::kafka::*;
use common::{available, member, purchase, refund, workload, FlakyStore, PointsPerUnit};

async fn check_balances(store: &dyn LedgerStore, expected: &[(String, i64)]) {
    for (member, points) in expected {
        assert_eq!(available(store, member).await, *points, "{member}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_transactions_in_exact_balances_out_offsets_committed_at_shutdown() {
    let brokers = brokers();
    let topic = unique("tx");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 4)])
        .await
        .expect("topics");
    let (lines, expected) = workload("k1", 3_000, 50, 1);
    let placed = produce(&brokers, &topic, &keyed(&lines)).await;

    let store = Arc::new(MemoryStore::default());
    let dead = Arc::new(rewards_runtime::MemoryDeadLetters::new());
    let (pipeline, metrics) =
        pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead.clone());
    let running = start(&pipeline, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("3000 acks", || {
        metrics.acked.load(Ordering::Relaxed) >= 3_000
    })
    .await;
    let report = running.shutdown().await;
    assert_eq!(report.received, 3_000);
    assert_eq!(report.applied, 3_000);
    assert_eq!(report.duplicates, 0);
    assert!(dead.is_empty());
    check_balances(store.as_ref(), &expected).await;
    let end = ends(&placed, 4);
    assert_eq!(end.iter().sum::<i64>(), 3_000);
    assert_eq!(
        committed(&brokers, &group, &topic, 4),
        end,
        "shutdown committed everything done"
    );
    let p95 = metrics.pipeline_us.quantile_upper_bound(950);
    eprintln!(
        "pipeline p50 <= {:?} us, p95 <= {:?} us; end-to-end p95 <= {:?} us",
        metrics.pipeline_us.quantile_upper_bound(500),
        p95,
        metrics.end_to_end_us.quantile_upper_bound(950)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_land_in_the_dlq_topic_with_reasons_and_the_worker_keeps_going() {
    let brokers = brokers();
    let topic = unique("tx");
    let dlq = unique("dlq");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 2), (&dlq, 1)])
        .await
        .expect("topics");
    let mut records = Vec::new();
    for i in 0..100 {
        records.push((
            "m-1".to_string(),
            purchase(&format!("ok-{i}"), "m-1", "2.00"),
        ));
        if i % 10 == 0 {
            records.push(("m-1".to_string(), format!("garbage {i}")));
            records.push((
                "m-2".to_string(),
                purchase(&format!("bad-{i}"), "m-2", "2.00").replace(r#""USD""#, r#""XXX""#),
            ));
        }
    }
    produce(&brokers, &topic, &records).await;

    let store = Arc::new(MemoryStore::default());
    let dead = Arc::new(KafkaDeadLetters::new(&brokers, &dlq).expect("dlq producer"));
    let (pipeline, metrics) = pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead);
    let running = start(&pipeline, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("all acks", || metrics.acked.load(Ordering::Relaxed) >= 120).await;
    let report = running.shutdown().await;
    assert_eq!(report.applied, 100);
    assert_eq!(report.dead_lettered, 20);
    assert_eq!(available(store.as_ref(), "m-1").await, 200);

    // Read the DLQ topic back.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[&dlq]).expect("subscribe");
    let mut letters: Vec<(String, String, String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "only {} dead letters read",
            letters.len()
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            letters.push((
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                header_text(&m, headers::STAGE)
                    .unwrap_or_default()
                    .to_string(),
                header_text(&m, headers::FIELD)
                    .unwrap_or_default()
                    .to_string(),
                header_text(&m, headers::ORIGIN)
                    .unwrap_or_default()
                    .to_string(),
            ));
        }
    }
    let garbage: Vec<_> = letters
        .iter()
        .filter(|l| l.0.starts_with("garbage"))
        .collect();
    assert_eq!(garbage.len(), 10);
    assert!(garbage.iter().all(|l| l.1 == "decode" && l.2 == "$"));
    let currency: Vec<_> = letters.iter().filter(|l| l.0.contains("XXX")).collect();
    assert_eq!(currency.len(), 10);
    assert!(
        currency
            .iter()
            .all(|l| l.1 == "decode" && l.2 == "currency"),
        "{currency:?}"
    );
    assert!(letters
        .iter()
        .all(|l| l.3.starts_with(&format!("kafka:{topic}/"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_loses_and_doubles_nothing() {
    let brokers = brokers();
    let topic = unique("tx");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 3)])
        .await
        .expect("topics");
    let (lines, expected) = workload("k3", 2_000, 40, 1);
    let (first, second) = lines.split_at(1_000);
    let mut placed = produce(&brokers, &topic, &keyed(first)).await;

    let store = Arc::new(MemoryStore::default());
    let dead = Arc::new(rewards_runtime::MemoryDeadLetters::new());
    let (pipeline_a, metrics_a) =
        pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead.clone());
    let a = start(&pipeline_a, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("some progress", || {
        metrics_a.acked.load(Ordering::Relaxed) >= 300
    })
    .await;
    placed.extend(produce(&brokers, &topic, &keyed(second)).await);
    let report_a = a.shutdown().await;
    assert!(report_a.applied >= 300);

    let (pipeline_b, metrics_b) =
        pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead.clone());
    let b = start(&pipeline_b, KafkaConfig::new(&brokers, &group, &topic));
    let left = 2_000 - report_a.applied;
    wait_until("the rest", || {
        metrics_b.applied.load(Ordering::Relaxed) >= left
    })
    .await;
    let report_b = b.shutdown().await;
    assert_eq!(
        report_b.applied - report_b.duplicates,
        left,
        "each message applied once"
    );
    assert!(dead.is_empty());
    check_balances(store.as_ref(), &expected).await;
    assert_eq!(committed(&brokers, &group, &topic, 3), ends(&placed, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_swap_mid_stream_stamps_the_new_version_on_later_postings_only() {
    let brokers = brokers();
    let topic = unique("tx");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 2)])
        .await
        .expect("topics");
    let (lines, _) = workload("k4", 600, 9, 1);
    let (before, after) = lines.split_at(300);
    produce(&brokers, &topic, &keyed(before)).await;

    let store = Arc::new(MemoryStore::default());
    let dead = Arc::new(rewards_runtime::MemoryDeadLetters::new());
    let (pipeline, metrics) = pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead);
    let running = start(&pipeline, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("the first half", || {
        metrics.acked.load(Ordering::Relaxed) >= 300
    })
    .await;
    pipeline
        .programs()
        .swap("test-card", PointsPerUnit::new(2, 10).arc());
    produce(&brokers, &topic, &keyed(after)).await;
    wait_until("the second half", || {
        metrics.acked.load(Ordering::Relaxed) >= 600
    })
    .await;
    running.shutdown().await;

    let first_ids: std::collections::HashSet<String> = before
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_default()["id"]
                .to_string()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    let mut versions: HashMap<u32, usize> = HashMap::new();
    for m in 0..9 {
        let postings = store
            .history(&member(&format!("k4-m{m:03}")), 0, 1000)
            .await
            .expect("history");
        for p in postings {
            let version = p.ruleset.as_ref().map_or(0, |s| s.version);
            let expected = if first_ids.contains(p.source.as_str()) {
                1
            } else {
                2
            };
            assert_eq!(version, expected, "posting of {}", p.source);
            *versions.entry(version).or_default() += 1;
        }
    }
    assert_eq!(versions.get(&1), Some(&300));
    assert_eq!(versions.get(&2), Some(&300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_pauses_consumption_and_loses_nothing() {
    let brokers = brokers();
    let topic = unique("tx");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 2)])
        .await
        .expect("topics");
    let (lines, expected) = workload("k5", 800, 20, 1);
    let placed = produce(&brokers, &topic, &keyed(&lines)).await;

    let memory = Arc::new(MemoryStore::default());
    let flaky = Arc::new(FlakyStore::new(memory.clone(), 40));
    let dead = Arc::new(rewards_runtime::MemoryDeadLetters::new());
    let (pipeline, metrics) =
        pipeline_with(flaky.clone(), PointsPerUnit::new(1, 1).arc(), dead.clone());
    let running = start(&pipeline, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("all acks", || metrics.acked.load(Ordering::Relaxed) >= 800).await;
    let report = running.shutdown().await;
    assert_eq!(flaky.failures.load(Ordering::SeqCst), 40);
    assert!(
        metrics.consumer_pauses.load(Ordering::Relaxed) >= 1,
        "the consumer paused during the outage"
    );
    assert_eq!(report.applied, 800);
    assert!(dead.is_empty());
    check_balances(memory.as_ref(), &expected).await;
    assert_eq!(committed(&brokers, &group, &topic, 2), ends(&placed, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_topic_is_reprocessed_after_the_fix() {
    let brokers = brokers();
    let topic = unique("tx");
    let dlq = unique("dlq");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 1), (&dlq, 1)])
        .await
        .expect("topics");
    // The refund comes before its purchase.
    produce(
        &brokers,
        &topic,
        &[("m-1".into(), refund("r-1", "m-1", "10.00", "p-1"))],
    )
    .await;

    let store = Arc::new(MemoryStore::default());
    let sink = Arc::new(KafkaDeadLetters::new(&brokers, &dlq).expect("dlq producer"));
    let (pipeline, metrics) = pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), sink);
    let running = start(&pipeline, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("the refund", || metrics.acked.load(Ordering::Relaxed) >= 1).await;
    produce(
        &brokers,
        &topic,
        &[("m-1".into(), purchase("p-1", "m-1", "40.00"))],
    )
    .await;
    wait_until("the purchase", || {
        metrics.acked.load(Ordering::Relaxed) >= 2
    })
    .await;
    let report = running.shutdown().await;
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(available(store.as_ref(), "m-1").await, 40);

    let again_dead = Arc::new(rewards_runtime::MemoryDeadLetters::new());
    let (again, _) = pipeline_with(
        store.clone(),
        PointsPerUnit::new(1, 1).arc(),
        again_dead.clone(),
    );
    let report = reprocess_dead_letter_topic(
        &again,
        &brokers,
        &dlq,
        &unique("redrive"),
        std::future::pending(),
    )
    .await
    .expect("reprocess");
    assert_eq!(report.received, 1);
    assert_eq!(report.applied, 1);
    assert!(again_dead.is_empty());
    assert_eq!(
        available(store.as_ref(), "m-1").await,
        30,
        "a quarter refunded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_consumer_joining_mid_stream_rebalances_without_loss() {
    let brokers = brokers();
    let topic = unique("tx");
    let group = unique("group");
    create_topics(&brokers, &[(&topic, 4)])
        .await
        .expect("topics");
    let (lines, expected) = workload("k6", 2_000, 30, 1);
    let (first, second) = lines.split_at(1_000);
    let mut placed = produce(&brokers, &topic, &keyed(first)).await;

    let store = Arc::new(MemoryStore::default());
    let dead = Arc::new(rewards_runtime::MemoryDeadLetters::new());
    let (pipeline_a, metrics_a) =
        pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead.clone());
    let (pipeline_b, metrics_b) =
        pipeline_with(store.clone(), PointsPerUnit::new(1, 1).arc(), dead.clone());
    let a = start(&pipeline_a, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("some progress", || {
        metrics_a.acked.load(Ordering::Relaxed) >= 200
    })
    .await;
    // B joins: the group rebalances while A is busy.
    let b = start(&pipeline_b, KafkaConfig::new(&brokers, &group, &topic));
    wait_until("B to get partitions", || !b.tracker.assigned().is_empty()).await;
    placed.extend(produce(&brokers, &topic, &keyed(second)).await);
    let new_applied = || {
        let applied =
            metrics_a.applied.load(Ordering::Relaxed) + metrics_b.applied.load(Ordering::Relaxed);
        let duplicates = metrics_a.duplicates.load(Ordering::Relaxed)
            + metrics_b.duplicates.load(Ordering::Relaxed);
        applied - duplicates
    };
    wait_until("every transaction applied", || new_applied() >= 2_000).await;
    let report_a = a.shutdown().await;
    let report_b = b.shutdown().await;
    assert_eq!(
        report_a.applied - report_a.duplicates + report_b.applied - report_b.duplicates,
        2_000,
        "each transaction applied once in total"
    );
    assert!(report_b.received > 0, "B got partitions");
    assert!(dead.is_empty());
    check_balances(store.as_ref(), &expected).await;
    assert_eq!(committed(&brokers, &group, &topic, 4), ends(&placed, 4));
}
