//! Proof under faults, against the real worker process
//! (`examples/fault_worker.rs`: Kafka source in a consumer group, the
//! cashback plan, PostgreSQL with Redis write-through), a real broker
//! (tansu), PostgreSQL and Redis on loopback. Every test compares, at the
//! end, every member's balance in PostgreSQL, through the cache and in the
//! Redis entry with the reference computed from the same input by the
//! in-memory engine (the compiled plan over a `MemoryStore`), and prints
//!
//! ```text
//! faults[NAME]: transactions=N faults_injected=K lost=L doubled=D
//! ```
//!
//! - `sigkill`: the worker is killed with SIGKILL at random points and
//!   restarted, again and again; then the whole topic is consumed again
//!   from offset zero by a new consumer group: nothing changes.
//! - `redis`: a private `redis-server` is killed and restarted mid-stream.
//! - `postgres`: a private PostgreSQL cluster is stopped (immediate mode,
//!   a crash) and restarted mid-stream.
//! - `broker`: a private tansu (sqlite storage) is restarted mid-stream.
//! - `two-workers` (cargo feature `fault-two-workers`, not in CI: tansu
//!   0.6.0's group coordinator leaves a killed member's partitions unowned
//!   in most runs): two workers in one group, one killed (and replaced)
//!   per cycle; in the last cycle the survivor finishes alone.
//!
//! Tests that stop a service use their OWN instance of it; the shared
//! services are never stopped. Lengths (environment, defaults are the
//! short CI run): `REWARDS_FAULT_CYCLES` (SIGKILLs, 3),
//! `REWARDS_FAULT_TRANSACTIONS` (3000), `REWARDS_FAULT_OUTAGES` (stops of
//! Redis, PostgreSQL, the broker; kills in `two-workers`; 2),
//! `REWARDS_FAULT_OUTAGE_TRANSACTIONS` (1500), `REWARDS_FAULT_SEED` (9).
//! `REWARDS_FAULT_LOG` is the workers' `RUST_LOG` (default `info`). The
//! full run (docs/faults.md):
//!
//! ```text
//! REWARDS_FAULT_CYCLES=20 REWARDS_FAULT_TRANSACTIONS=5000 \
//! REWARDS_FAULT_OUTAGES=5 REWARDS_FAULT_OUTAGE_TRANSACTIONS=4000 \
//!     cargo nextest run -p rewards-runtime --test faults --no-capture
//! ```

#![cfg(feature = "kafka")]
// A test crate: its helpers panic on failure like its tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fault::*;
use common::kafka::{brokers, unique};
use common::services::{PrivatePostgres, PrivateRedis, PrivateTansu};

/// Settings of the outage tests.
struct Lengths {
    outages: u64,
    transactions: usize,
    seed: u64,
}

fn outage_lengths() -> Lengths {
    Lengths {
        outages: env_or("REWARDS_FAULT_OUTAGES", 2),
        transactions: env_or("REWARDS_FAULT_OUTAGE_TRANSACTIONS", 1500),
        seed: env_or("REWARDS_FAULT_SEED", 9),
    }
}

/// Cuts `lines` into `parts` slices (the last ones may be empty).
fn slices(lines: &[(String, String)], parts: usize) -> Vec<Vec<(String, String)>> {
    let size = lines.len().div_ceil(parts.max(1)).max(1);
    let mut out: Vec<Vec<(String, String)>> = lines.chunks(size).map(<[_]>::to_vec).collect();
    out.resize(parts.max(out.len()), Vec::new());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_doubles_nothing_and_a_replay_changes_nothing() {
    let cycles: u64 = env_or("REWARDS_FAULT_CYCLES", 3);
    let count: usize = env_or("REWARDS_FAULT_TRANSACTIONS", 3000);
    let seed: u64 = env_or("REWARDS_FAULT_SEED", 9);
    let started = Instant::now();

    let rig = Rig::new("faults", brokers(), database_url(), redis_url());
    let _drop_schema = rig.drop_guard();
    let cached = rig.prepare().await;
    // Built before the clock of the first kill starts.
    worker_binary();

    let lines = workload(count, seed, "f-");
    let members = members_of(&lines);
    let (expected, _) = reference(&lines).await;

    // The input arrives in slices, one before each start, so that every
    // worker has fresh work when it is killed.
    let group = unique("faults-group");
    let parts = slices(&lines, cycles as usize + 1);
    let mut ends = vec![0i64; rig.partitions as usize];
    let mut rng = Rng(seed);
    let mut faults = 0u64;
    let mut mid_work = 0u64;
    for cycle in 0..cycles {
        rig.produce(&parts[cycle as usize], &mut ends).await;
        let before = rig.inbox_rows(cached.store()).await.expect("inbox");
        let mut worker = rig.spawn(&group, &[]);
        // Kill at a random point once it has started storing (bounded).
        rig.wait_stored_more(
            cached.store(),
            before,
            &mut worker,
            &format!("cycle {cycle}"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
        let at_kill = rig.inbox_rows(cached.store()).await.expect("inbox");
        kill(&mut worker);
        faults += 1;
        let produced: i64 = ends.iter().sum();
        if at_kill < produced {
            mid_work += 1;
        }
        eprintln!(
            "cycle {cycle}: killed after {} new inbox rows ({at_kill} stored, {produced} produced)",
            at_kill - before
        );
    }
    for part in parts.iter().skip(cycles as usize) {
        rig.produce(part, &mut ends).await;
    }
    let mut worker = rig.spawn(&group, &[]);
    rig.wait_committed(&group, &ends).await;
    kill(&mut worker);
    assert_eq!(ends.iter().sum::<i64>(), count as i64, "all produced");

    let tally = compare(&members, &expected, &cached).await;
    tally.summary("sigkill", count, faults);
    eprintln!(
        "sigkill: {faults} kills ({mid_work} with work outstanding), {} members, \
         {:?} inbox rows, {:.1?}",
        tally.members,
        rig.inbox_rows(cached.store()).await,
        started.elapsed()
    );
    tally.assert_exact("after the kills");

    // The whole topic again, from offset zero, by a new group: every
    // transaction is a duplicate, nothing changes.
    let rows = rig.inbox_rows(cached.store()).await;
    let replay_group = unique("faults-replay");
    let mut worker = rig.spawn(&replay_group, &[]);
    rig.wait_committed(&replay_group, &ends).await;
    kill(&mut worker);
    let again = compare(&members, &expected, &cached).await;
    again.summary("replay-from-zero", count, 0);
    again.assert_exact("after the replay");
    assert_eq!(
        rig.inbox_rows(cached.store()).await,
        rows,
        "no new inbox rows"
    );
    cached
        .cache()
        .clear()
        .await
        .expect("clear the cache prefix");
}

/// A service the outage tests stop and start again.
enum Service<'a> {
    Redis(&'a mut PrivateRedis),
    Postgres(&'a mut PrivatePostgres),
    Broker(&'a mut PrivateTansu),
}

impl Service<'_> {
    fn stop(&mut self) {
        match self {
            Service::Redis(s) => s.stop(),
            Service::Postgres(s) => s.stop(),
            Service::Broker(s) => s.stop(),
        }
    }

    fn start(&mut self) {
        match self {
            Service::Redis(s) => s.start_again(),
            Service::Postgres(s) => s.start_again(),
            Service::Broker(s) => s.start_again(),
        }
    }
}

/// One worker runs while `service` is stopped and started `outages` times
/// at seeded random points, with input arriving between the outages; then
/// it must finish everything, shut down gracefully, and the balances must
/// equal the reference.
async fn outage_run(name: &str, rig: Rig, mut service: Service<'_>, lengths: Lengths) {
    let started = Instant::now();
    let _drop_schema = rig.drop_guard();
    let cached = rig.prepare().await;
    worker_binary();
    let lines = workload(lengths.transactions, lengths.seed, &format!("{name}-"));
    let members = members_of(&lines);
    let (expected, _) = reference(&lines).await;
    let parts = slices(&lines, lengths.outages as usize + 1);
    let group = unique(&format!("{name}-group"));
    let mut ends = vec![0i64; rig.partitions as usize];
    let mut rng = Rng(lengths.seed ^ 0x5eed);
    let mut worker = rig.spawn(&group, &[]);
    let mut faults = 0;
    for (outage, part) in parts.iter().take(lengths.outages as usize).enumerate() {
        let before = rig.inbox_rows(cached.store()).await.expect("inbox");
        rig.produce(part, &mut ends).await;
        rig.wait_stored_more(
            cached.store(),
            before,
            &mut worker,
            &format!("{name} before outage {outage}"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        service.stop();
        faults += 1;
        // Down long enough for the worker to notice (store calls fail, the
        // breaker opens, the consumer loses its broker).
        tokio::time::sleep(Duration::from_millis(1000 + rng.below(1500))).await;
        service.start();
        eprintln!(
            "{name}: outage {outage} over ({:?} rows stored, {} produced)",
            rig.inbox_rows(cached.store()).await,
            ends.iter().sum::<i64>()
        );
    }
    for part in parts.iter().skip(lengths.outages as usize) {
        rig.produce(part, &mut ends).await;
    }
    rig.wait_committed(&group, &ends).await;
    let status = terminate(&mut worker);
    assert!(
        status.success(),
        "the worker shut down with {status}; logs:\n{}",
        rig.log_tail()
    );
    let tally = compare(&members, &expected, &cached).await;
    tally.summary(name, lengths.transactions, faults);
    eprintln!(
        "{name}: {faults} outages, {} members, {:.1?}",
        tally.members,
        started.elapsed()
    );
    tally.assert_exact(name);
    let _ = cached.cache().clear().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_restarted_mid_stream_loses_and_doubles_nothing() {
    let mut redis = PrivateRedis::start();
    let rig = Rig::new("redis", brokers(), database_url(), redis.url());
    outage_run("redis", rig, Service::Redis(&mut redis), outage_lengths()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_mid_stream_loses_and_doubles_nothing() {
    let mut postgres = PrivatePostgres::start();
    let rig = Rig::new("postgres", brokers(), postgres.url(), redis_url());
    outage_run(
        "postgres",
        rig,
        Service::Postgres(&mut postgres),
        outage_lengths(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_mid_stream_loses_and_doubles_nothing() {
    let mut broker = PrivateTansu::start();
    let rig = Rig::new("broker", broker.brokers(), database_url(), redis_url());
    outage_run(
        "broker",
        rig,
        Service::Broker(&mut broker),
        outage_lengths(),
    )
    .await;
}

/// Behind the cargo feature `fault-two-workers`, outside CI: on tansu 0.6.0
/// it fails about three runs in four. After the killed member's session
/// ends the survivor keeps heartbeating the same generation successfully
/// but is never asked to rebalance, so the dead member's partitions stay
/// unowned and the group stops committing (seen with
/// `REWARDS_KAFKA_DEBUG=cgrp`; see docs/faults.md). A broker fault, not a
/// loss: nothing is committed past what is stored.
#[cfg(feature = "fault-two-workers")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_in_one_group_one_killed_lose_and_double_nothing() {
    let lengths = outage_lengths();
    let started = Instant::now();
    let rig = Rig::new("pair", brokers(), database_url(), redis_url());
    let _drop_schema = rig.drop_guard();
    let cached = rig.prepare().await;
    worker_binary();
    let lines = workload(lengths.transactions, lengths.seed, "pair-");
    let members = members_of(&lines);
    let (expected, _) = reference(&lines).await;
    let parts = slices(&lines, lengths.outages as usize + 1);
    let group = unique("pair-group");
    let mut ends = vec![0i64; rig.partitions as usize];
    let mut rng = Rng(lengths.seed ^ 0x7a1);
    // Short sessions: the survivor takes over a killed member's partitions
    // within seconds.
    let session: &[(&str, &str)] = &[("--session-timeout-ms", "4000")];
    let mut workers = vec![rig.spawn(&group, session), rig.spawn(&group, session)];
    let mut faults = 0;
    for (cycle, part) in parts.iter().take(lengths.outages as usize).enumerate() {
        let before = rig.inbox_rows(cached.store()).await.expect("inbox");
        rig.produce(part, &mut ends).await;
        rig.wait_stored_more(
            cached.store(),
            before,
            &mut workers[0],
            &format!("pair cycle {cycle}"),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        let victim = usize::try_from(rng.below(2)).expect("index");
        let mut killed = workers.remove(victim);
        kill(&mut killed);
        faults += 1;
        // Replaced, except after the last kill: then the survivor must
        // finish alone.
        if cycle + 1 < lengths.outages as usize {
            workers.push(rig.spawn(&group, session));
        }
        eprintln!("pair: cycle {cycle} killed worker {victim}");
    }
    for part in parts.iter().skip(lengths.outages as usize) {
        rig.produce(part, &mut ends).await;
    }
    rig.wait_committed(&group, &ends).await;
    for worker in &mut workers {
        let status = terminate(worker);
        assert!(status.success(), "survivor exit {status}");
    }
    let tally = compare(&members, &expected, &cached).await;
    tally.summary("two-workers", lengths.transactions, faults);
    eprintln!(
        "two-workers: {faults} kills, {} members, {:.1?}",
        tally.members,
        started.elapsed()
    );
    tally.assert_exact("two workers, one killed");
    let _ = cached.cache().clear().await;
}
