//! Disaster recovery (issue 9), against the real worker process
//! (`examples/fault_worker.rs`: Kafka source in a consumer group, the
//! cashback plan, PostgreSQL with Redis write-through), the shared broker
//! (tansu) and Redis, and PRIVATE PostgreSQL clusters on loopback
//! (`tests/common/services.rs`; the shared PostgreSQL is never used). Each
//! test compares, at the end, every member's balance in PostgreSQL, through
//! the cache and in the Redis entry with the reference computed from the
//! same input by the in-memory engine, and prints
//!
//! ```text
//! dr[NAME]: transactions=N faults_injected=K lost=L doubled=D
//! ```
//!
//! - `promote`: a primary with a synchronous streaming standby
//!   (`synchronous_commit = on`: a commit is acknowledged once the standby
//!   has flushed it). Mid-stream the primary is killed (`pg_ctl stop -m
//!   immediate`), the worker too (it cannot get on without a database); the
//!   standby is promoted and every transaction whose offset the group had
//!   committed (the worker commits an offset only once the store
//!   acknowledged everything before it), and every inbox row the primary
//!   showed just before the kill, must be in its inbox; then a worker
//!   pointed at the promoted standby finishes the topic in the same group.
//!   The promoted server gets a synchronous standby of its own and the
//!   cycle repeats, `REWARDS_DR_FAILOVERS` times; in every second cycle the
//!   standby crashes (`-m immediate`) a second before the primary is
//!   killed and is started again before its promotion — the case only
//!   synchronous replication survives (with an asynchronous standby the
//!   check fails: docs/faults.md). Faults counted: primary kills and
//!   standby crashes.
//! - `restore`: a plain base backup of the primary is taken mid-stream,
//!   the stream finishes, the primary is destroyed (crash and data
//!   directory deleted), a new cluster is started from the backup, the
//!   cache prefix is cleared (it holds the destroyed primary's newer
//!   state), and a NEW consumer group replays the whole topic from offset
//!   zero into it: the inbox skips what the backup already had.
//!
//! Lengths (environment, defaults are the short CI run):
//! `REWARDS_DR_TRANSACTIONS` (3000), `REWARDS_DR_FAILOVERS` (2),
//! `REWARDS_DR_SEED` (else `REWARDS_FAULT_SEED`, else 9).
//! `REWARDS_FAULT_LOG` is the workers' `RUST_LOG`. The full run
//! (docs/faults.md):
//!
//! ```text
//! REWARDS_DR_TRANSACTIONS=20000 REWARDS_DR_FAILOVERS=6 \
//!     cargo nextest run -p rewards-runtime --test dr --no-capture
//! ```

#![cfg(feature = "kafka")]
// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::fault::*;
use common::kafka::{brokers, committed, unique, PATIENCE};
use common::services::PrivatePostgres;
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::{LedgerStore, Transaction};
use rewards_store::postgres::{PgConfig, PgStore};

/// Settings of both tests.
struct Lengths {
    transactions: usize,
    failovers: u64,
    seed: u64,
}

fn lengths() -> Lengths {
    Lengths {
        transactions: env_or("REWARDS_DR_TRANSACTIONS", 3000),
        failovers: env_or("REWARDS_DR_FAILOVERS", 2).max(1),
        seed: env_or("REWARDS_DR_SEED", env_or("REWARDS_FAULT_SEED", 9)),
    }
}

/// The generated input with the transaction id of every line.
struct Input {
    lines: Vec<(String, String)>,
    ids: Vec<String>,
    members: BTreeSet<String>,
    /// The reference: the lines applied one by one by the compiled plan to
    /// a `MemoryStore`, as `common::fault::reference` does.
    expected: MemoryStore,
    /// Ids of the lines the plan or the ledger refused (the worker
    /// dead-letters them: they never reach the inbox).
    refused: HashSet<String>,
}

impl Input {
    async fn new(count: usize, seed: u64, id_prefix: &str) -> Input {
        let lines = workload(count, seed, id_prefix);
        let plan = plan(None);
        let expected = MemoryStore::new(LedgerConfig::default());
        let mut refused = HashSet::new();
        let mut ids = Vec::with_capacity(lines.len());
        let mut keys = Vec::new();
        for (_, line) in &lines {
            let tx = Transaction::from_json_bytes(line.as_bytes()).expect("generated lines decode");
            ids.push(tx.id.as_str().to_string());
            keys.clear();
            plan.counter_keys(&tx, &mut keys);
            let view = expected.member_view(&tx.member, &keys).await.expect("view");
            let applied = match plan.evaluate(&tx, &view) {
                Ok(outcome) => expected.append(&tx, &outcome).await.is_ok(),
                Err(_) => false,
            };
            if !applied {
                refused.insert(tx.id.as_str().to_string());
            }
        }
        Input {
            members: members_of(&lines),
            lines,
            ids,
            expected,
            refused,
        }
    }

    /// Transactions the worker stores (not refused).
    fn valid(&self) -> i64 {
        i64::try_from(self.lines.len() - self.refused.len()).expect("count")
    }
}

/// What was produced: the end of every partition and where each line went.
struct Produced {
    ends: Vec<i64>,
    /// (partition, offset, transaction id) per produced line.
    placed: Vec<(i32, i64, String)>,
}

impl Produced {
    fn new(rig: &Rig) -> Produced {
        Produced {
            ends: vec![0; usize::try_from(rig.partitions).expect("partitions")],
            placed: Vec::new(),
        }
    }

    /// Produces lines `range` of `input`.
    async fn produce(&mut self, rig: &Rig, input: &Input, range: std::ops::Range<usize>) {
        let records = &input.lines[range.clone()];
        let placed = common::kafka::produce(&rig.brokers, &rig.topic, records).await;
        for ((partition, offset), id) in placed.into_iter().zip(&input.ids[range]) {
            let end = &mut self.ends[usize::try_from(partition).expect("partition")];
            *end = (*end).max(offset + 1);
            self.placed.push((partition, offset, id.clone()));
        }
    }

    fn total(&self) -> i64 {
        self.ends.iter().sum()
    }
}

/// Line ranges of `parts` nearly equal slices of `count` lines.
fn ranges(count: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.max(1);
    (0..parts)
        .map(|i| (count * i / parts)..(count * (i + 1) / parts))
        .collect()
}

/// The transaction ids in the inbox of `store`'s schema.
async fn inbox_ids(store: &PgStore, schema: &str) -> HashSet<String> {
    let client = store.primary_pool().get().await.expect("a connection");
    client
        .query(&format!("SELECT id FROM {schema}.inbox"), &[])
        .await
        .expect("read the inbox")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// Waits (bounded) until `group` has committed more than `above` records in
/// all; returns the committed offsets.
async fn wait_committed_more(rig: &Rig, group: &str, above: i64) -> Vec<i64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let at = committed(&rig.brokers, group, &rig.topic, rig.partitions);
        if at.iter().sum::<i64>() > above {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} committed nothing past {above} (at {at:?}); logs:\n{}",
            rig.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints `dr[NAME]: transactions=N faults_injected=K lost=L doubled=D`.
fn summary(name: &str, tally: &Tally, transactions: usize, faults: u64) {
    println!(
        "dr[{name}]: transactions={transactions} faults_injected={faults} lost={} doubled={}",
        tally.lost, tally.doubled
    );
}

/// A rig's PostgreSQL settings pointed at another server.
fn repoint(rig: &mut Rig, server: &PrivatePostgres) {
    rig.pg = PgConfig::new(server.url()).with_schema(rig.pg.schema.clone());
}

/// The worker's consumer-group session (`fault_worker`'s default
/// `--session-timeout-ms`) and a margin.
const SESSION_OVER: Duration = Duration::from_millis(6000 + 1500);

/// Waits until the session of a worker killed at `killed` is over. A worker
/// that joins the group while a killed member still holds its session can
/// be left with no partitions on tansu 0.6.0 (it assigned `[]` and never
/// rebalanced when the dead member expired, in a 6-failover run; the same
/// coordinator fault as in "Two workers in one group" of docs/faults.md).
/// After the session the new worker's join expires the dead member first.
async fn session_over(killed: Instant) {
    let over = killed + SESSION_OVER;
    let now = Instant::now();
    if over > now {
        tokio::time::sleep(over - now).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_synchronous_standby_has_every_acknowledged_transaction_and_finishes_the_stream()
{
    let lengths = lengths();
    let started = Instant::now();
    let mut primary = PrivatePostgres::start_replicated();
    let mut rig = Rig::new("drpromote", brokers(), primary.url(), redis_url());
    let input = Input::new(lengths.transactions, lengths.seed, "drp-").await;
    // Built before the first cycle's clock starts.
    worker_binary();
    let group = unique("drpromote-group");
    let mut produced = Produced::new(&rig);
    let parts = ranges(input.lines.len(), lengths.failovers as usize + 1);
    let mut rng = Rng(lengths.seed ^ 0xd15a);
    let mut faults = 0u64;
    let mut cached = None;
    // When the last worker was killed (none yet).
    let mut killed: Option<Instant> = None;
    for failover in 0..lengths.failovers {
        let name = format!("standby{failover}");
        let mut standby = primary.start_standby(&name);
        primary.require_sync_standby(&name);
        let store = match cached.take() {
            // The schema is created through the synchronous standby too.
            None => rig.prepare().await,
            Some(store) => store,
        };
        produced
            .produce(&rig, &input, parts[failover as usize].clone())
            .await;
        let before = committed(&rig.brokers, &group, &rig.topic, rig.partitions)
            .iter()
            .sum::<i64>();
        let stored = rig.inbox_rows(store.store()).await.expect("inbox");
        if let Some(killed) = killed {
            session_over(killed).await;
        }
        let mut worker = rig.spawn(&group, &[]);
        rig.wait_stored_more(
            store.store(),
            stored,
            &mut worker,
            &format!("failover {failover}"),
        )
        .await;
        // Something acknowledged and committed in this cycle, so that the
        // check after the promotion is not empty; then a random point.
        wait_committed_more(&rig, &group, before).await;
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        // Every second failover, the standby crashes first and is down for
        // a second while the primary runs on: an asynchronous standby
        // would miss what the primary commits meanwhile (see
        // docs/faults.md); a synchronous one holds the commits back.
        let standby_down = failover % 2 == 1;
        if standby_down {
            standby.stop();
            faults += 1;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        // What the primary shows as committed right before it dies: with
        // synchronous replication a commit becomes visible only after the
        // standby flushed it, so all of it must survive the promotion too.
        let visible = inbox_ids(store.store(), &rig.pg.schema).await;
        primary.stop();
        faults += 1;
        // The worker meets the dead primary (store calls fail, retried);
        // then it goes too: a daemon is restarted with the new URL.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        kill(&mut worker);
        killed = Some(Instant::now());
        drop(store);
        // Everything this group ever committed: each of those transactions
        // was acknowledged by the old primary (or refused) before its
        // offset was committed.
        let acked = committed(&rig.brokers, &group, &rig.topic, rig.partitions);
        if standby_down {
            standby.start_again();
        }
        standby.promote();
        repoint(&mut rig, &standby);
        let promoted = rig.store().await;
        let present = inbox_ids(promoted.store(), &rig.pg.schema).await;
        let acknowledged: Vec<&String> = produced
            .placed
            .iter()
            .filter(|(p, o, id)| {
                *o < acked[usize::try_from(*p).expect("partition")] && !input.refused.contains(id)
            })
            .map(|(_, _, id)| id)
            .collect();
        let missing: Vec<&&String> = acknowledged
            .iter()
            .filter(|id| !present.contains(id.as_str()))
            .collect();
        let vanished: Vec<&String> = visible.difference(&present).collect();
        eprintln!(
            "failover {failover}{}: primary killed showing {} inbox rows ({} produced); \
             committed {acked:?} = {} acknowledged transactions; the promoted standby has {} \
             rows, {} acknowledged and {} of the primary's rows missing",
            if standby_down { " (standby down)" } else { "" },
            visible.len(),
            produced.total(),
            acknowledged.len(),
            present.len(),
            missing.len(),
            vanished.len()
        );
        assert!(
            !acknowledged.is_empty(),
            "failover {failover}: nothing acknowledged before the kill (the check would be empty)"
        );
        assert!(
            missing.is_empty(),
            "failover {failover}: acknowledged transactions missing on the promoted standby: \
             {missing:?}"
        );
        assert!(
            vanished.is_empty(),
            "failover {failover}: transactions the primary showed committed are missing on the \
             promoted standby: {vanished:?}"
        );
        cached = Some(promoted);
        primary = standby;
    }
    let cached = cached.expect("at least one failover");
    for range in parts.iter().skip(lengths.failovers as usize) {
        produced.produce(&rig, &input, range.clone()).await;
    }
    session_over(killed.expect("a worker was killed")).await;
    let mut worker = rig.spawn(&group, &[]);
    rig.wait_committed(&group, &produced.ends).await;
    let status = terminate(&mut worker);
    assert!(
        status.success(),
        "the worker shut down with {status}; logs:\n{}",
        rig.log_tail()
    );
    assert_eq!(
        produced.total(),
        lengths.transactions as i64,
        "all produced"
    );

    let tally = compare(&input.members, &input.expected, &cached).await;
    summary("promote", &tally, lengths.transactions, faults);
    let rows = rig.inbox_rows(cached.store()).await;
    eprintln!(
        "promote: {} failovers ({faults} faults), {} members, {rows:?} inbox rows ({} refused), {:.1?}",
        lengths.failovers,
        tally.members,
        input.refused.len(),
        started.elapsed()
    );
    tally.assert_exact("on the promoted standby");
    assert_eq!(
        rows,
        Some(input.valid()),
        "one inbox row per valid transaction"
    );
    cached
        .cache()
        .clear()
        .await
        .expect("clear the cache prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_base_backup_and_a_replay_from_zero_reach_the_same_balances() {
    let lengths = lengths();
    let started = Instant::now();
    let mut primary = PrivatePostgres::start_replicated();
    let mut rig = Rig::new("drrestore", brokers(), primary.url(), redis_url());
    let input = Input::new(lengths.transactions, lengths.seed, "drr-").await;
    let cached = rig.prepare().await;
    worker_binary();
    let group = unique("drrestore-group");
    let mut produced = Produced::new(&rig);
    let parts = ranges(input.lines.len(), 2);
    let mut rng = Rng(lengths.seed ^ 0xbac0);

    // The first half is being stored when the backup is taken; the second
    // half is produced only after it, so the backup cannot hold it.
    produced.produce(&rig, &input, parts[0].clone()).await;
    let mut worker = rig.spawn(&group, &[]);
    rig.wait_stored_more(cached.store(), 0, &mut worker, "before the backup")
        .await;
    tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
    let backup_started = rig.inbox_rows(cached.store()).await.expect("inbox");
    let backup = primary.base_backup();
    let backup_done = rig.inbox_rows(cached.store()).await.expect("inbox");
    produced.produce(&rig, &input, parts[1].clone()).await;
    rig.wait_committed(&group, &produced.ends).await;
    let status = terminate(&mut worker);
    assert!(
        status.success(),
        "the worker shut down with {status}; logs:\n{}",
        rig.log_tail()
    );
    // The primary was right before the disaster.
    compare(&input.members, &input.expected, &cached)
        .await
        .assert_exact("on the primary before the disaster");
    drop(cached);

    primary.destroy();
    let faults = 1;
    let restored = PrivatePostgres::from_backup(&backup);
    repoint(&mut rig, &restored);
    let cached = rig.store().await;
    let in_backup = rig.inbox_rows(cached.store()).await.expect("inbox");
    eprintln!(
        "restore: backup taken while the inbox grew from {backup_started} to {backup_done} \
         rows; the restored cluster has {in_backup}; {} valid transactions in all",
        input.valid()
    );
    assert!(
        in_backup >= backup_started && in_backup <= backup_done,
        "the backup holds the inbox as of a point during the backup"
    );
    assert!(
        in_backup < input.valid(),
        "the backup cannot hold the second half"
    );
    // The cache holds the destroyed primary's newer state: a restore
    // clears it (the cache is derived data).
    cached
        .cache()
        .clear()
        .await
        .expect("clear the cache prefix");

    let replay = unique("drrestore-replay");
    let mut worker = rig.spawn(&replay, &[]);
    rig.wait_committed(&replay, &produced.ends).await;
    let status = terminate(&mut worker);
    assert!(
        status.success(),
        "the replaying worker shut down with {status}; logs:\n{}",
        rig.log_tail()
    );
    let tally = compare(&input.members, &input.expected, &cached).await;
    summary("restore", &tally, lengths.transactions, faults);
    let rows = rig.inbox_rows(cached.store()).await;
    eprintln!(
        "restore: {} members, {in_backup} transactions from the backup, {rows:?} inbox rows \
         after the replay ({} refused), {:.1?}",
        tally.members,
        input.refused.len(),
        started.elapsed()
    );
    tally.assert_exact("on the cluster restored from the backup");
    assert_eq!(
        rows,
        Some(input.valid()),
        "one inbox row per valid transaction"
    );
    cached
        .cache()
        .clear()
        .await
        .expect("clear the cache prefix");
}
