//! The outbox relay over the real services: transactions consumed from
//! tansu by the pipeline into `CachedStore<PgStore, RedisCache>`, the
//! store's outbox published by [`OutboxRelay`] to an outcomes topic, the
//! relay stopped and started again mid-stream. Every applied transaction
//! appears on the outcomes topic exactly once (the relay's graceful stop
//! finishes its round; a crash could repeat events, which consumers
//! deduplicate on `rewards-event-id`), keyed by member, each member's
//! events in version order, and the outbox ends empty.

#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use rewards_core::store::OutboxEvent;
use rewards_core::{Evaluator, LedgerStore};
use rewards_runtime::kafka::outbox::headers as outcome_headers;
use rewards_runtime::kafka::{
    create_topics, header_text, KafkaConfig, OutboxRelay, OutboxRelayConfig,
};
use rewards_runtime::{shutdown_channel, MemoryDeadLetters, Metrics};

use common::fault::*;
use common::kafka::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_applied_transaction_is_published_once_in_member_order_across_a_relay_restart() {
    let count = 1500;
    let rig = Rig::new("outbox", brokers(), database_url(), redis_url());
    let _drop_schema = rig.drop_guard();
    let cached = Arc::new(rig.prepare().await);
    let outcomes = unique("outbox-outcomes");
    create_topics(&rig.brokers, &[(&outcomes, 3)])
        .await
        .expect("outcomes topic");
    let lines = workload(count, 23, "ob-");
    let (expected, refused) = reference(&lines).await;
    let valid = count - refused;

    let plan: Arc<dyn Evaluator> = Arc::new(plan(None));
    let (pipeline, metrics) =
        pipeline_with(cached.clone(), plan, Arc::new(MemoryDeadLetters::new()));
    let group = unique("outbox-group");
    let running = start(
        &pipeline,
        KafkaConfig::new(&rig.brokers, &group, &rig.topic),
    );
    let mut ends = vec![0i64; rig.partitions as usize];
    let (first, second) = lines.split_at(count / 2);
    rig.produce(first, &mut ends).await;

    // Relay 1 runs while the first half is consumed and is stopped.
    let relay_metrics = Arc::new(Metrics::new());
    let relay = Arc::new(
        OutboxRelay::new(
            cached.clone(),
            OutboxRelayConfig::new(&rig.brokers, &outcomes),
            relay_metrics.clone(),
        )
        .expect("relay"),
    );
    let (stop1, mut stopped1) = shutdown_channel();
    let relay1 = {
        let relay = relay.clone();
        tokio::spawn(async move { relay.run(async move { stopped1.wait().await }).await })
    };
    wait_until("some events published", || {
        relay_metrics.outbox_published.load(Ordering::Relaxed) >= 100
    })
    .await;
    stop1.trigger();
    let report1 = relay1.await.expect("relay 1");
    assert!(report1.published >= 100, "{report1:?}");
    assert_eq!(report1.published, report1.acknowledged);

    // The rest arrives while no relay runs; relay 2 (a new process in
    // production: a new producer) publishes the backlog and the rest.
    rig.produce(second, &mut ends).await;
    let relay2 = OutboxRelay::new(
        cached.clone(),
        OutboxRelayConfig::new(&rig.brokers, &outcomes),
        relay_metrics.clone(),
    )
    .expect("relay 2");
    let (stop2, mut stopped2) = shutdown_channel();
    let relay2 =
        tokio::spawn(async move { relay2.run(async move { stopped2.wait().await }).await });
    wait_committed(&rig.brokers, &group, &rig.topic, &ends, || {
        format!("acked {}", metrics.acked.load(Ordering::Relaxed))
    })
    .await;
    let report = running.shutdown().await;
    assert_eq!(report.applied - report.duplicates, valid as u64);
    wait_until("the outbox published", || {
        relay_metrics.outbox_published.load(Ordering::Relaxed) >= valid as u64
    })
    .await;
    stop2.trigger();
    let report2 = relay2.await.expect("relay 2");
    assert_eq!(
        report1.published + report2.published,
        valid as u64,
        "{report1:?} {report2:?}"
    );
    assert!(
        cached.outbox_fetch(10).await.expect("fetch").is_empty(),
        "the outbox is empty"
    );

    // Read the outcomes topic to the end.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &rig.brokers)
        .set("group.id", unique("outbox-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[&outcomes]).expect("subscribe");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_version: BTreeMap<String, u64> = BTreeMap::new();
    let mut records = 0usize;
    let deadline = Instant::now() + PATIENCE;
    let mut quiet_since = Instant::now();
    while records < valid || quiet_since.elapsed() < Duration::from_secs(2) {
        assert!(
            Instant::now() < deadline,
            "only {records} of {valid} outcomes read"
        );
        let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) else {
            continue;
        };
        quiet_since = Instant::now();
        records += 1;
        let event: OutboxEvent =
            serde_json::from_slice(m.payload().expect("payload")).expect("event JSON");
        assert_eq!(
            m.key(),
            Some(event.member.as_str().as_bytes()),
            "keyed by member"
        );
        assert_eq!(
            header_text(&m, outcome_headers::EVENT_ID),
            Some(event.tx_id.as_str())
        );
        let member = event.member.as_str().to_string();
        let previous = last_version.insert(member.clone(), event.version);
        assert!(
            previous.is_none_or(|v| v < event.version),
            "{member}: version {} after {previous:?}",
            event.version
        );
        *seen.entry(event.tx_id.as_str().to_string()).or_default() += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "published twice: {doubled:?}");
    assert_eq!(seen.len(), valid, "every applied transaction published");
    // The events are the applied transactions: the reference's members'
    // final versions match the last event of each member.
    let members: BTreeSet<String> = members_of(&lines);
    for id in &members {
        let m = rewards_core::MemberId::new(id.clone()).expect("member");
        let want = expected.balance(&m).await.map(|b| b.version).ok();
        assert_eq!(last_version.get(id).copied(), want, "{id}");
    }
    println!(
        "outbox: transactions={count} applied={valid} published={} relay_restarts=1 lost=0 doubled=0",
        seen.len()
    );
    let _ = cached.cache().clear().await;
}
