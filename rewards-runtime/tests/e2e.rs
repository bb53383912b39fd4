//! End to end over the real services: the tansu broker, PostgreSQL and
//! Redis on loopback, through the real [`Pipeline`] — the Kafka source in a
//! consumer group, the cashback ruleset compiled from
//! `examples/rules/cashback.rwd`, `CachedStore<PgStore, RedisCache>`, dead
//! letters to a DLQ topic.
//!
//! One run, in three parts of generated transactions (purchases, refunds,
//! authorizations, settlements, reversals) with malformed messages mixed
//! in:
//!
//! 1. pipeline A consumes part 1; part 2 is produced; A is shut down mid
//!    stream: the offsets it committed cover exactly what it finished;
//! 2. pipeline B (same group) takes over and finishes part 2; the ruleset
//!    is reloaded (version 3 → 4, richer base rule); part 3 is produced
//!    and consumed; B shuts down and has committed the topic's end;
//! 3. every member's balance in PostgreSQL, through the cache and in
//!    Redis equals the reference computed by the in-memory engine (version
//!    3 up to the reload, 4 after), every member's postings name the same
//!    ruleset versions as the reference's (the new version on later
//!    postings only), each transaction is applied once, and the DLQ topic
//!    holds every malformed message and every refusal, with reason headers.
//!
//! Needs the broker (started with `scripts/services/tansu.sh start` when
//! absent), `DATABASE_URL` and `REDIS_URL` (defaults: the shared services).

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

use rewards_core::{Evaluator, LedgerStore, MemberId};
use rewards_runtime::kafka::{create_topics, header_text, headers, KafkaConfig, KafkaDeadLetters};
use rewards_runtime::{DeadLetterSink, Metrics, Pipeline, PipelineConfig, ProgramRegistry};

use common::fault::*;
use common::kafka::*;

/// Malformed messages, each with the decode field the DLQ must name.
fn malformed(i: usize) -> (String, String, &'static str) {
    match i % 4 {
        0 => (format!("bad-{i}"), format!("not json at all {i}"), "$"),
        1 => (
            format!("bad-{i}"),
            format!(
                r#"{{"id":"x-{i}","member":"bad-{i}","kind":"purchase","amount":"1.00","currency":"XXX","time":"2026-09-01T12:00:00Z"}}"#
            ),
            "currency",
        ),
        2 => (
            format!("bad-{i}"),
            format!(
                r#"{{"id":"x-{i}","member":"bad-{i}","kind":"purchase","currency":"USD","time":"2026-09-01T12:00:00Z"}}"#
            ),
            "amount",
        ),
        _ => (
            format!("bad-{i}"),
            format!(
                r#"{{"id":"x-{i}","member":"bad-{i}","kind":"purchase","amount":12.5,"currency":"USD","time":"2026-09-01T12:00:00Z"}}"#
            ),
            "amount",
        ),
    }
}

/// `lines` with a malformed message after every `every`-th line; returns
/// the mixed input and the malformed ones (key → expected field).
fn with_malformed(
    lines: &[(String, String)],
    every: usize,
    first: usize,
) -> (Vec<(String, String)>, BTreeMap<String, &'static str>) {
    let mut out = Vec::with_capacity(lines.len() + lines.len() / every + 1);
    let mut bad = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        out.push(line.clone());
        if i % every == every - 1 {
            let (key, payload, field) = malformed(first + bad.len());
            bad.insert(payload.clone(), field);
            out.push((key, payload));
        }
    }
    (out, bad)
}

/// The ruleset id, version and source transaction of every posting.
async fn stamps(store: &dyn LedgerStore, member: &MemberId) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.history(member, after, 500).await.expect("history");
        let Some(last) = page.last() else {
            return out;
        };
        after = last.seq;
        for p in &page {
            out.push((
                p.source.as_str().to_string(),
                p.rule.to_string(),
                p.ruleset.as_ref().map_or(0, |s| s.version),
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_in_exact_balances_out_over_kafka_postgres_and_redis_with_dlq_restart_and_reload()
{
    let count: usize = env_or("REWARDS_E2E_TRANSACTIONS", 3000);
    let started = Instant::now();
    let rig = Rig::new("e2e", brokers(), database_url(), redis_url());
    let _drop_schema = rig.drop_guard();
    let cached = Arc::new(rig.prepare().await);
    let dlq = unique("e2e-dlq");
    create_topics(&rig.brokers, &[(&dlq, 1)])
        .await
        .expect("dlq topic");
    let group = unique("e2e-group");

    // Three parts; part 3 runs on version 4.
    let lines = workload(count, 17, "e2e-");
    let members = members_of(&lines);
    let third = count / 3;
    let (part1, bad1) = with_malformed(&lines[..third], 50, 0);
    let (part2, bad2) = with_malformed(&lines[third..2 * third], 50, 1000);
    let (part3, bad3) = with_malformed(&lines[2 * third..], 50, 2000);
    let v3 = plan(None);
    let v4 = {
        // Version 4 earns twice the base: a different outcome, so a
        // posting evaluated by the wrong version shows in the balances.
        let source = std::fs::read_to_string(root().join(RULES))
            .expect("rules")
            .replace(
                "ruleset \"acme-cashback\" version 3",
                "ruleset \"acme-cashback\" version 4",
            )
            .replace("earn tx.amount points", "earn 2 * tx.amount points");
        rewards_dsl::compile_source(&source, &rewards_dsl::HostFunctions::new())
            .expect("version 4 compiles")
    };
    assert_eq!(v4.stamp().version, 4);
    let (expected, refused) = reference_with(&lines, &[(0, &v3), (2 * third, &v4)]).await;
    let malformed_total = bad1.len() + bad2.len() + bad3.len();
    let valid = count - refused;

    let mut ends = vec![0i64; rig.partitions as usize];
    let dead: Arc<dyn DeadLetterSink> =
        Arc::new(KafkaDeadLetters::new(&rig.brokers, &dlq).expect("dlq producer"));
    let v3: Arc<dyn Evaluator> = Arc::new(v3);
    let v4: Arc<dyn Evaluator> = Arc::new(v4);

    // 1. A consumes part 1, part 2 arrives, A shuts down mid-stream.
    rig.produce(&part1, &mut ends).await;
    // Small queues: A holds little work when it is stopped, so it stops
    // mid-stream.
    let metrics_a = Arc::new(Metrics::new());
    let pipeline_a = Pipeline::with_config(
        cached.clone(),
        Arc::new(ProgramRegistry::single(v3.clone(), metrics_a.clone())),
        dead.clone(),
        metrics_a.clone(),
        PipelineConfig {
            workers: 2,
            feed_capacity: 16,
            queue_capacity: 8,
            max_batch: 8,
            ..config()
        },
    );
    let a = start(
        &pipeline_a,
        KafkaConfig::new(&rig.brokers, &group, &rig.topic),
    );
    let part1_len = part1.len() as u64;
    wait_until("A to finish part 1", || {
        metrics_a.acked.load(Ordering::Relaxed) >= part1_len
    })
    .await;
    rig.produce(&part2, &mut ends).await;
    wait_until("A to start on part 2", || {
        metrics_a.acked.load(Ordering::Relaxed) >= part1_len + 50
    })
    .await;
    let report_a = a.shutdown().await;
    assert_eq!(report_a.abandoned, 0);
    assert_eq!(report_a.stale, 0);
    let at = committed(&rig.brokers, &group, &rig.topic, rig.partitions);
    assert_eq!(
        at.iter().sum::<i64>(),
        report_a.received as i64,
        "A's shutdown committed exactly what it finished ({report_a:?}, committed {at:?})"
    );
    assert!(
        at.iter().sum::<i64>() < ends.iter().sum::<i64>(),
        "A stopped mid-stream"
    );

    // 2. B takes over, finishes part 2, the ruleset is reloaded, part 3.
    let (pipeline_b, metrics_b) = pipeline_with(cached.clone(), v3.clone(), dead.clone());
    let b = start(
        &pipeline_b,
        KafkaConfig::new(&rig.brokers, &group, &rig.topic),
    );
    let part12_ends = ends.clone();
    wait_committed(&rig.brokers, &group, &rig.topic, &part12_ends, || {
        format!("B: {:?}", metrics_b.acked.load(Ordering::Relaxed))
    })
    .await;
    pipeline_b.programs().swap("acme-cashback", v4.clone());
    rig.produce(&part3, &mut ends).await;
    wait_committed(&rig.brokers, &group, &rig.topic, &ends, || {
        format!("B: {:?}", metrics_b.acked.load(Ordering::Relaxed))
    })
    .await;
    let report_b = b.shutdown().await;
    assert_eq!(
        committed(&rig.brokers, &group, &rig.topic, rig.partitions),
        ends,
        "B's shutdown committed the end of the topic"
    );
    assert_eq!(
        ends.iter().sum::<i64>(),
        (count + malformed_total) as i64,
        "everything produced"
    );
    let new_a = report_a.applied - report_a.duplicates;
    let new_b = report_b.applied - report_b.duplicates;
    assert_eq!(
        new_a + new_b,
        valid as u64,
        "each transaction applied once ({report_a:?}, {report_b:?})"
    );
    assert_eq!(
        report_a.dead_lettered + report_b.dead_lettered,
        (refused + malformed_total) as u64,
        "every refusal and malformed message dead-lettered"
    );

    // 3. Balances, postings and stamps against the reference.
    let tally = compare(&members, &expected, &cached).await;
    println!(
        "e2e: transactions={count} malformed={malformed_total} refused={refused} lost={} doubled={} \
         ({:.1?})",
        tally.lost,
        tally.doubled,
        started.elapsed()
    );
    tally.assert_exact("end to end");
    let mut versions: BTreeMap<u32, usize> = BTreeMap::new();
    let late: BTreeSet<String> = lines[2 * third..]
        .iter()
        .filter_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_string))
        .collect();
    for id in &members {
        let m = MemberId::new(id.clone()).expect("member");
        let got = stamps(cached.store(), &m).await;
        let want = stamps(&expected, &m).await;
        assert_eq!(got, want, "postings of {id}");
        for (source, _, version) in &got {
            *versions.entry(*version).or_default() += 1;
            if *version == 4 {
                assert!(
                    late.contains(source),
                    "{source} was evaluated before the reload"
                );
            }
        }
    }
    assert!(versions.get(&3).is_some_and(|n| *n > 0), "{versions:?}");
    assert!(versions.get(&4).is_some_and(|n| *n > 0), "{versions:?}");

    // The DLQ topic: every malformed message with its reason headers.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &rig.brokers)
        .set("group.id", unique("e2e-dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    reader.subscribe(&[&dlq]).expect("subscribe");
    let mut letters: Vec<(String, String, String, String, String)> = Vec::new();
    let want_letters = refused + malformed_total;
    let deadline = Instant::now() + PATIENCE;
    while letters.len() < want_letters {
        assert!(
            Instant::now() < deadline,
            "only {} of {want_letters} dead letters read",
            letters.len()
        );
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            let h = |name| header_text(&m, name).unwrap_or_default().to_string();
            letters.push((
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                h(headers::STAGE),
                h(headers::CODE),
                h(headers::FIELD),
                h(headers::REASON),
            ));
        }
    }
    let mut bad: BTreeMap<String, &str> = BTreeMap::new();
    bad.extend(bad1);
    bad.extend(bad2);
    bad.extend(bad3);
    let mut found = 0;
    for (payload, stage, code, field, reason) in &letters {
        assert!(!reason.is_empty(), "a reason for {payload}");
        assert!(!code.is_empty(), "a code for {payload}");
        if let Some(want_field) = bad.get(payload) {
            found += 1;
            assert_eq!(stage, "decode", "{payload}");
            assert_eq!(field, want_field, "{payload}: {reason}");
        } else {
            assert!(
                stage == "ledger" || stage == "evaluate",
                "a refusal of a well-formed transaction: {payload} {stage} {reason}"
            );
        }
    }
    assert_eq!(found, malformed_total, "every malformed message in the DLQ");
    eprintln!(
        "e2e: A {report_a:?}\ne2e: B {report_b:?}\ne2e: postings by version {versions:?}, {:.1?}",
        started.elapsed()
    );
    let _ = cached.cache().clear().await;
}
