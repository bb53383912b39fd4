//! The daemon's full mode end to end, started in-process as `daemon_api.rs`
//! starts the embedded mode: transactions from a Kafka topic (the tansu
//! broker), PostgreSQL as the store with the Redis write-through cache in
//! front, malformed messages to the dead-letter topic, and the store's
//! transactional outbox relayed to the outcomes topic.
//!
//! - 36 purchases over five members, one half refund of an earlier purchase
//!   and one malformed message go in through the topic; the balances the
//!   API answers equal the expected points (one per whole dollar, the
//!   refund clawing back its share) and PostgreSQL's, Redis holds the same
//!   versions and balances; the malformed message is on the dead-letter
//!   topic with its reason headers; after `shutdown` and `wait` the outcomes
//!   topic holds exactly one event per applied transaction (adding up to the
//!   balances), the outbox is empty and the group has committed the topic's
//!   end.
//! - A restart on the same topic, group, schema and prefix applies nothing
//!   twice: only the new messages are received, and no outcome is
//!   published again.
//!
//! Every run has its own topics, consumer group, PostgreSQL schema and
//! Redis key prefix (named after the process id and the clock), dropped or
//! cleared at the end, so the tests run in parallel with anything else.
//!
//! Needs `KAFKA_BROKERS` (default 127.0.0.1:9092), `DATABASE_URL` (default
//! postgres://postgres@127.0.0.1:5432/test) and `REDIS_URL` (default
//! redis://127.0.0.1:6379).

#![cfg(feature = "full")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use rewards_core::ledger::Balances;
use rewards_core::store::{CachePut, CachedMember, OutboxEvent};
use rewards_core::{LedgerStore, MemberId, Points};
use rewards_examples::daemon::config::{Config, InputKind, Mode, Secret};
use rewards_examples::daemon::{Daemon, Summary};
use rewards_runtime::kafka::outbox::headers as outcome_headers;
use rewards_runtime::kafka::{header_text, headers as dlq_headers};
use rewards_store::postgres::{drop_schema, PgConfig, PgStore};
use rewards_store::redis::{RedisCache, RedisCacheConfig};

use common::*;

/// Partitions of each topic the daemon creates (`kafka.create_topics`).
const PARTITIONS: i32 = 3;

/// A bound against hanging for ever, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// Nanoseconds since the epoch plus a counter: unique within the process.
fn nanos() -> u128 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    now + u128::from(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Everything one run names: topics, group, schema, key prefix.
struct Names {
    brokers: String,
    pg_url: String,
    redis_url: String,
    topic: String,
    dead_letter_topic: String,
    outcomes_topic: String,
    group: String,
    schema: String,
    prefix: String,
}

impl Names {
    fn new(name: &str) -> Names {
        let tag = format!("{}-{}", std::process::id(), nanos());
        let unique = |what: &str| format!("dfull-{name}-{what}-{tag}");
        Names {
            brokers: brokers(),
            pg_url: database_url(),
            redis_url: redis_url(),
            topic: unique("tx"),
            dead_letter_topic: unique("dlq"),
            outcomes_topic: unique("outcomes"),
            group: unique("group"),
            schema: format!("dfull_{name}_{}", tag.replace('-', "_")),
            prefix: unique("cache"),
        }
    }

    /// The embedded test configuration of `setup`, switched to full mode
    /// over this run's names.
    fn config(&self, setup: &Setup) -> Config {
        let mut c = setup.config(false);
        c.mode = Mode::Full;
        c.input.kind = InputKind::Kafka;
        c.kafka.brokers = self.brokers.clone();
        c.kafka.group_id = self.group.clone();
        c.kafka.topic = self.topic.clone();
        c.kafka.dead_letter_topic = self.dead_letter_topic.clone();
        c.kafka.outcomes_topic = self.outcomes_topic.clone();
        c.kafka.create_topics = Some(PARTITIONS);
        c.postgres.url = Secret::new(self.pg_url.clone());
        c.postgres.schema = self.schema.clone();
        c.postgres.pool_size = 4;
        c.redis.enabled = true;
        c.redis.url = Secret::new(self.redis_url.clone());
        c.redis.prefix = self.prefix.clone();
        c
    }

    fn pg_config(&self) -> PgConfig {
        PgConfig::new(self.pg_url.clone()).with_schema(self.schema.clone())
    }

    /// The PostgreSQL store alone (no cache), over this run's schema.
    async fn pg(&self) -> PgStore {
        PgStore::connect(self.pg_config(), Default::default())
            .await
            .expect("connect to PostgreSQL")
    }

    fn redis(&self) -> RedisCache {
        RedisCache::new(RedisCacheConfig::single(self.redis_url.clone()).key_prefix(&self.prefix))
            .expect("redis cache")
    }

    /// Drops the schema and the Redis keys when dropped (also when the test
    /// fails).
    fn cleanup(&self) -> Cleanup {
        Cleanup {
            pg: self.pg_config(),
            redis: self.redis_url.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

struct Cleanup {
    pg: PgConfig,
    redis: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let pg = self.pg.clone();
        let redis = RedisCacheConfig::single(self.redis.clone()).key_prefix(&self.prefix);
        // A runtime of its own: the test's may be gone (or panicking).
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    let schema = tokio::time::timeout(Duration::from_secs(30), drop_schema(&pg))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    let keys = match RedisCache::new(redis) {
                        Ok(cache) => tokio::time::timeout(Duration::from_secs(30), cache.clear())
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string())),
                        Err(e) => Err(e.to_string()),
                    };
                    (schema, keys)
                })
        })
        .join();
        match done {
            Ok((Ok(()), Ok(()))) => {}
            other => eprintln!(
                "cleanup of schema {} / Redis prefix {} incomplete: {other:?}",
                self.pg.schema, self.prefix
            ),
        }
    }
}

/// A producer writing one record per batch (tansu serves nothing to a fetch
/// starting inside a multi-record batch).
fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

/// Produces `(key, payload, partition)` records in order, each acknowledged
/// before the next is sent (so a member's records keep their order); raises
/// `ends` (one past the last offset, per partition).
async fn produce(names: &Names, records: &[(String, String, Option<i32>)], ends: &mut [i64]) {
    let producer = producer(&names.brokers);
    for (key, payload, partition) in records {
        let mut record = FutureRecord::to(&names.topic)
            .key(key.as_str())
            .payload(payload.as_str());
        if let Some(p) = partition {
            record = record.partition(*p);
        }
        let (p, offset) = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("producing to {}: {e}", names.topic));
        let end = &mut ends[usize::try_from(p).expect("partition")];
        *end = (*end).max(offset + 1);
    }
}

/// The key of the end markers [`read_topic`] appends.
const END_KEY: &str = "dfull-end-marker";

/// Every record of `topic` (its writers stopped): this call appends an end
/// marker to each partition (one record, key [`END_KEY`], a payload of its
/// own) and reads each partition from its beginning up to its marker,
/// leaving out end markers. tansu's high watermarks count batches, not
/// records, so they cannot tell where a partition ends.
async fn read_topic(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    let token = format!("end-{}-{}", std::process::id(), nanos());
    let producer = producer(brokers);
    for p in 0..PARTITIONS {
        let record = FutureRecord::to(topic)
            .key(END_KEY)
            .payload(token.as_str())
            .partition(p);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("end marker on {topic}/{p}: {e}"));
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("dfull-reader-{}-{}", std::process::id(), nanos()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut ended = vec![false; PARTITIONS as usize];
    let mut out = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while ended.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "gave up reading {topic} to its end markers (partitions ended: {ended:?}, \
             {} records read)",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let p = usize::try_from(m.partition()).expect("partition");
                if m.key() == Some(END_KEY.as_bytes()) {
                    // An earlier call's marker is skipped; this call's ends the partition.
                    ended[p] |= m.payload() == Some(token.as_bytes());
                } else {
                    assert!(!ended[p], "{topic}/{p}: a record after the end marker");
                    out.push(m.detach());
                }
            }
        }
    }
    out
}

/// Committed offsets of the run's group on its topic (0 where none: a
/// partition that never received anything has nothing to commit).
fn committed(names: &Names) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &names.brokers)
        .set("group.id", &names.group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(&names.topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("committed offsets of {}: {e}", names.group));
    (0..PARTITIONS)
        .map(|p| {
            committed
                .find_partition(&names.topic, p)
                .and_then(|e| e.offset().to_raw())
                .unwrap_or(0)
                .max(0)
        })
        .collect()
}

/// Waits (bounded) until the group has committed `ends`.
async fn wait_committed(names: &Names, ends: &[i64]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let at = committed(names);
        if at == ends {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for group {} to commit the topic's end {ends:?} (at {at:?})",
            names.group
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (bounded) until the API shows every member's expected balance;
/// the panic names the members still behind and the daemon's counters.
async fn wait_balances(daemon: &Daemon, api: &Api, expected: &BTreeMap<String, i64>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut behind = Vec::new();
        for (member, points) in expected {
            let seen = api.available(member).await;
            if seen != Some(*points) {
                behind.push(format!("{member}: {seen:?} (want {points})"));
            }
        }
        if behind.is_empty() {
            return;
        }
        let m = daemon.runtime_metrics();
        assert!(
            Instant::now() < deadline,
            "gave up after {PATIENCE:?} waiting for the balances: {behind:?}; \
             received {} applied {} acked {} consumer lag {}",
            m.received.load(Ordering::Relaxed),
            m.applied.load(Ordering::Relaxed),
            m.acked.load(Ordering::Relaxed),
            m.consumer_lag.load(Ordering::Relaxed),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the daemon and returns its run's summary.
async fn stop(daemon: Daemon) -> Summary {
    daemon.shutdown();
    let summary = tokio::time::timeout(PATIENCE, daemon.wait())
        .await
        .expect("the daemon stops within the patience")
        .expect("clean stop");
    summary.expect("a summary of the Kafka input")
}

/// Whole dollars of a `D.CC` amount, and the amount in cents.
fn dollars_and_cents(amount: &str) -> (i64, i64) {
    let (whole, cents) = amount.split_once('.').expect("D.CC");
    let whole: i64 = whole.parse().expect("dollars");
    let cents: i64 = cents.parse().expect("cents");
    (whole, whole * 100 + cents)
}

/// A run's input: the records to produce, the applied transaction ids, the
/// expected balances and the malformed payload.
struct Workload {
    records: Vec<(String, String, Option<i32>)>,
    applied: BTreeSet<String>,
    expected: BTreeMap<String, i64>,
    malformed: Option<String>,
}

/// `count` purchases over `members` members (1 point per whole dollar);
/// optionally one refund of half of an earlier purchase, and one malformed
/// message (an amount written as a JSON number).
fn workload(count: usize, members: usize, refund_and_malformed: bool) -> Workload {
    let mut w = Workload {
        records: Vec::new(),
        applied: BTreeSet::new(),
        expected: BTreeMap::new(),
        malformed: None,
    };
    let mut amounts = BTreeMap::new();
    for i in 0..count {
        let member = format!("m-{}", i % members);
        let id = format!("p-{i:03}");
        let amount = format!("{}.{:02}", 5 + (i * 37) % 190, (i * 53) % 100);
        let (whole, cents) = dollars_and_cents(&amount);
        *w.expected.entry(member.clone()).or_default() += whole;
        amounts.insert(id.clone(), (member.clone(), whole, cents));
        w.records
            .push((member.clone(), purchase(&id, &member, &amount), None));
        w.applied.insert(id);
        if refund_and_malformed && i == count / 2 {
            // Half of purchase 3 back: floor(points × refunded / amount).
            let (member, points, cents) = amounts["p-003"].clone();
            let refunded = cents / 2;
            let amount = format!("{}.{:02}", refunded / 100, refunded % 100);
            let clawed = points * refunded / cents;
            assert!(clawed > 0, "the refund claws something back");
            *w.expected.get_mut(&member).expect("member") -= clawed;
            w.records.push((
                member.clone(),
                refund("r-003", &member, &amount, "p-003"),
                None,
            ));
            w.applied.insert("r-003".into());

            let bad = r#"{"id":"bad-1","member":"m-1","kind":"purchase","amount":3.5,"currency":"USD","mcc":5411,"time":"2026-09-20T12:00:00Z"}"#.to_string();
            w.records.push(("m-1".into(), bad.clone(), None));
            w.malformed = Some(bad);
        }
    }
    w
}

/// The outcome events of the outcomes topic, checked record by record
/// (keyed by member, event id header = transaction id); panics on an event
/// published twice.
async fn outcome_events(names: &Names) -> BTreeMap<String, OutboxEvent> {
    let mut events = BTreeMap::new();
    for m in read_topic(&names.brokers, &names.outcomes_topic).await {
        let event: OutboxEvent =
            serde_json::from_slice(m.payload().expect("payload")).expect("an outbox event");
        assert_eq!(
            m.key(),
            Some(event.member.as_str().as_bytes()),
            "keyed by member"
        );
        assert_eq!(
            header_text(&m, outcome_headers::EVENT_ID),
            Some(event.tx_id.as_str()),
            "event id header"
        );
        let id = event.tx_id.as_str().to_string();
        if let Some(first) = events.insert(id.clone(), event) {
            panic!("{id} published twice on the outcomes topic (first: {first:?})");
        }
    }
    events
}

/// Checks PostgreSQL (balances, inbox, empty outbox) and Redis (the cached
/// balance equals PostgreSQL's) against `expected`, after a stop.
async fn check_stored(names: &Names, expected: &BTreeMap<String, i64>, stored: i64) {
    let pg = names.pg().await;
    let redis = names.redis();
    for (member, points) in expected {
        let id = MemberId::new(member.clone()).expect("member id");
        let balance = pg.balance(&id).await.expect("balance in PostgreSQL");
        assert_eq!(
            balance.balances.available.get(),
            *points,
            "{member} in PostgreSQL"
        );
        // The API read every member through the cache, which the
        // write-through kept current.
        let cached = redis
            .get(&id)
            .await
            .expect("read Redis")
            .unwrap_or_else(|| panic!("{member}: no entry under Redis prefix {}", names.prefix));
        assert_eq!(
            (cached.version, cached.balances),
            (balance.version, balance.balances),
            "{member}: Redis holds what PostgreSQL holds"
        );
    }
    let client = pg.primary_pool().get().await.expect("a connection");
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {}.inbox", names.schema), &[])
        .await
        .expect("count the inbox")
        .get(0);
    assert_eq!(rows, stored, "transactions stored once each");
    assert!(
        pg.outbox_fetch(10).await.expect("outbox").is_empty(),
        "the relay published and acknowledged the whole outbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_to_postgres_and_redis_with_dead_letters_outcomes_and_committed_offsets() {
    let names = Names::new("main");
    let _cleanup = names.cleanup();
    let setup = Setup::new(&[]);
    let work = workload(36, 5, true);
    let malformed = work.malformed.clone().expect("a malformed message");

    let daemon = start(names.config(&setup)).await;
    let api = Api::new(&daemon);
    let mut ends = vec![0i64; PARTITIONS as usize];
    produce(&names, &work.records, &mut ends).await;
    wait_balances(&daemon, &api, &work.expected).await;

    let summary = stop(daemon).await;
    let valid = work.applied.len() as u64;
    assert_eq!(summary.report.received, valid + 1, "{summary:?}");
    assert_eq!(summary.report.applied, valid, "{summary:?}");
    assert_eq!(summary.report.duplicates, 0, "{summary:?}");
    assert_eq!(summary.report.dead_lettered, 1, "{summary:?}");
    assert!(!summary.input_ended, "Kafka input runs until shutdown");

    // The malformed message is on the dead-letter topic, with its reason.
    let dead = read_topic(&names.brokers, &names.dead_letter_topic).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    let letter = &dead[0];
    assert_eq!(letter.payload(), Some(malformed.as_bytes()), "the original");
    assert_eq!(letter.key(), Some(&b"m-1"[..]), "the original key");
    assert_eq!(header_text(letter, dlq_headers::STAGE), Some("decode"));
    assert_eq!(header_text(letter, dlq_headers::FIELD), Some("amount"));
    let reason = header_text(letter, dlq_headers::REASON).expect("a reason header");
    assert!(!reason.trim().is_empty(), "a reason");
    assert!(header_text(letter, dlq_headers::CODE).is_some_and(|c| !c.is_empty()));
    assert!(header_text(letter, dlq_headers::ORIGIN).is_some_and(|o| o.contains(&names.topic)));

    // Offsets committed to the topic's end: a restart re-applies nothing.
    wait_committed(&names, &ends).await;
    check_stored(&names, &work.expected, valid as i64).await;

    // One outcome event per applied transaction, whose points add up to
    // the member's balance.
    let events = outcome_events(&names).await;
    assert_eq!(
        events.keys().cloned().collect::<BTreeSet<_>>(),
        work.applied,
        "the outcomes topic holds exactly the applied transactions"
    );
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for e in events.values() {
        *sums.entry(e.member.as_str().to_string()).or_default() += e.points.available.get();
    }
    assert_eq!(sums, work.expected, "outcome events add up to the balances");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_on_the_same_topic_and_schema_applies_nothing_twice() {
    let names = Names::new("restart");
    let _cleanup = names.cleanup();
    let setup = Setup::new(&[]);
    let work = workload(12, 3, false);

    let daemon = start(names.config(&setup)).await;
    let api = Api::new(&daemon);
    let mut ends = vec![0i64; PARTITIONS as usize];
    produce(&names, &work.records, &mut ends).await;
    wait_balances(&daemon, &api, &work.expected).await;
    let first = stop(daemon).await;
    assert_eq!(first.report.applied, work.applied.len() as u64, "{first:?}");
    wait_committed(&names, &ends).await;
    check_stored(&names, &work.expected, work.applied.len() as i64).await;

    // A process that died between a commit and its write-through leaves an
    // entry nothing evicts: the next start clears the cache first.
    let ghost = MemberId::new("ghost-of-a-crash").expect("member id");
    let stale = CachedMember {
        member: ghost.clone(),
        version: 3,
        balances: Balances {
            available: Points(999),
            pending: Points(0),
        },
        tier: None,
        recent: Vec::new(),
    };
    assert_eq!(
        names.redis().put(&stale).await.expect("put"),
        CachePut::Written
    );

    // Same group, topic, schema and cache prefix. One marker per partition:
    // each partition is read in order, so once every marker is applied
    // anything redelivered would have been received before it.
    let daemon = start(names.config(&setup)).await;
    assert_eq!(
        names.redis().get(&ghost).await.expect("read Redis"),
        None,
        "the start cleared the cache"
    );
    let api = Api::new(&daemon);
    let mut markers = Vec::new();
    let mut expected = work.expected.clone();
    for p in 0..PARTITIONS {
        let member = format!("marker-{p}");
        markers.push((
            member.clone(),
            purchase(&format!("marker-tx-{p}"), &member, "7.25"),
            Some(p),
        ));
        expected.insert(member, 7);
    }
    produce(&names, &markers, &mut ends).await;
    wait_balances(&daemon, &api, &expected).await;
    let second = stop(daemon).await;
    let markers = markers.len() as u64;
    assert_eq!(
        second.report.received, markers,
        "only the markers: {second:?}"
    );
    assert_eq!(second.report.applied, markers, "{second:?}");
    assert_eq!(second.report.duplicates, 0, "{second:?}");
    assert_eq!(second.report.dead_lettered, 0, "{second:?}");

    wait_committed(&names, &ends).await;
    let stored = work.applied.len() as u64 + markers;
    check_stored(&names, &expected, stored as i64).await;
    let events = outcome_events(&names).await;
    let mut want = work.applied.clone();
    want.extend((0..PARTITIONS).map(|p| format!("marker-tx-{p}")));
    assert_eq!(
        events.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "no outcome published twice, none missing"
    );
}
