//! The scheduled tier review (`JobKind::TierReview`) with a real ruleset:
//! tiers that qualify on the calendar year's spend, gold leaving after 30
//! days of grace. On the in-memory store and on PostgreSQL (a schema of its
//! own on `DATABASE_URL`, default the shared `test` database).
//!
//! The run, as of successive due instants:
//!
//! 1. version 1 (gold at 1,000 USD): a member with only a profile is given
//!    the lowest tier; the spenders were tiered by their transactions;
//! 2. the same instant again changes nothing;
//! 3. version 2 is swapped in (gold at 500 USD): the next run upgrades the
//!    member who spent 600;
//! 4. on 1 January nobody has spent anything this year: two daemons review
//!    the same instant at once, and the two golds get one downgrade each
//!    (one ledger entry, one schedule in the audit trail), 30 days later; the tier stays gold meanwhile, and later
//!    runs keep the date;
//! 5. at the scheduled instant the downgrades take effect (and the review
//!    of that instant does not schedule them again).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use std::sync::Arc;

use rewards_core::ledger::{LedgerConfig, SweepReport, TierEvent};
use rewards_core::memory::MemoryStore;
use rewards_core::{
    ErrorKind, Evaluator, LedgerStore, MemberId, MemberProfile, TierChange, Transaction,
};
use rewards_dsl::{HostFunctions, Plan};
use rewards_runtime::jobs::JobRunner;
use rewards_runtime::metrics::JobKind;
use rewards_runtime::{Metrics, ProgramRegistry};
use rewards_store::postgres::{migrate_with_config, PgConfig, PgStore};

use common::{member, DropSchema};

fn rules(version: u32, gold_at: u32) -> Arc<dyn Evaluator> {
    let source = format!(
        "ruleset \"tiers\" version {version}\n\
         currency USD\n\
         timezone \"UTC\"\n\
         rounding floor\n\
         tier green\n\
         tier gold qualify spend(calendar year) >= {gold_at} USD grace 30 days\n\
         rule base {{\n earn floor(tx.amount) points\n}}\n"
    );
    match Plan::compile(&source, &HostFunctions::new()) {
        Ok(plan) => Arc::new(plan),
        Err(d) => panic!("does not compile: {d:#?}"),
    }
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single().unwrap()
}

/// Evaluates and stores one purchase of `amount` (on 2026-09-01) with `plan`.
async fn spend(store: &dyn LedgerStore, plan: &dyn Evaluator, id: &str, who: &str, amount: &str) {
    let tx = Transaction::from_json_str(&common::purchase(id, who, amount)).expect("purchase");
    let mut keys = Vec::new();
    plan.counter_keys(&tx, &mut keys);
    let view = store.member_view(&tx.member, &keys).await.expect("view");
    let outcome = plan.evaluate(&tx, &view).expect("evaluate");
    store.append(&tx, &outcome).await.expect("append");
}

/// The member's tier (`None` also for a member with only a profile).
async fn tier(store: &dyn LedgerStore, who: &MemberId) -> Option<String> {
    match store.balance(who).await {
        Ok(b) => b.tier.map(|t| t.to_string()),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("balance of {who}: {e}"),
    }
}

async fn version(store: &dyn LedgerStore, who: &MemberId) -> u64 {
    store.balance(who).await.expect("balance").version
}

async fn review(runner: &JobRunner, as_of: DateTime<Utc>) -> SweepReport {
    runner
        .run_job(JobKind::TierReview, as_of)
        .await
        .expect("tier review")
}

async fn scheduled(store: &dyn LedgerStore, who: &MemberId) -> Option<TierChange> {
    store
        .tier_views(std::slice::from_ref(who), &[])
        .await
        .expect("tier view")
        .remove(0)
        .scheduled
}

/// The whole run on `store` (empty).
async fn review_run(store: Arc<dyn LedgerStore>) {
    let s = &*store;
    let metrics = Arc::new(Metrics::new());
    let v1 = rules(1, 1000);
    let programs = Arc::new(ProgramRegistry::single(v1.clone(), metrics.clone()));
    // Pages of two: four members take two pages and an empty one.
    let runner =
        JobRunner::new(store.clone(), programs.clone(), metrics.clone()).with_review_page(2);
    let other_daemon =
        JobRunner::new(store.clone(), programs.clone(), metrics.clone()).with_review_page(3);

    let (gold, up, low, quiet) = (member("gold"), member("up"), member("low"), member("quiet"));
    spend(s, &*v1, "t-1", "gold", "1200.00").await;
    spend(s, &*v1, "t-2", "up", "600.00").await;
    spend(s, &*v1, "t-3", "low", "100.00").await;
    s.put_profile(&MemberProfile::empty(quiet.clone()))
        .await
        .expect("profile");
    assert_eq!(tier(s, &gold).await.as_deref(), Some("gold"));
    assert_eq!(tier(s, &up).await.as_deref(), Some("green"));
    assert_eq!(tier(s, &quiet).await, None);

    // 1. Version 1: only the member without a tier gets one.
    let t0 = at(2026, 9, 2);
    let r = review(&runner, t0).await;
    assert_eq!((r.reviewed, r.changed), (4, 1), "{r:?}");
    assert_eq!(tier(s, &quiet).await.as_deref(), Some("green"));
    assert_eq!(tier(s, &up).await.as_deref(), Some("green"));

    // 2. The same instant again: nothing.
    let versions = [
        version(s, &gold).await,
        version(s, &up).await,
        version(s, &low).await,
        version(s, &quiet).await,
    ];
    let r = review(&runner, t0).await;
    assert_eq!((r.reviewed, r.changed, r.members), (4, 0, 0), "{r:?}");
    assert_eq!(
        versions,
        [
            version(s, &gold).await,
            version(s, &up).await,
            version(s, &low).await,
            version(s, &quiet).await,
        ]
    );

    // 3. Version 2 lowers gold to 500: the runner reviews with it next run.
    programs.swap("tiers", rules(2, 500));
    let t1 = at(2026, 9, 3);
    let r = review(&runner, t1).await;
    assert_eq!((r.reviewed, r.changed), (4, 1), "{r:?}");
    assert_eq!(tier(s, &up).await.as_deref(), Some("gold"));
    assert_eq!(tier(s, &low).await.as_deref(), Some("green"));

    // 4. A new year without spend: two daemons at once, one downgrade each
    //    for the two golds, after the grace.
    let t2 = at(2027, 1, 1);
    let before = [version(s, &gold).await, version(s, &up).await];
    let (a, b) = tokio::join!(review(&runner, t2), review(&other_daemon, t2));
    // Each daemon counts the changes it saw: a member the other daemon
    // changed between this one's read and write may count for both. The
    // ledger holds one entry.
    assert!((2..=4).contains(&(a.changed + b.changed)), "{a:?} {b:?}");
    assert_eq!((a.reviewed, b.reviewed), (4, 4));
    assert_eq!(
        [version(s, &gold).await, version(s, &up).await],
        before.map(|v| v + 1),
        "one entry each"
    );
    for who in [&gold, &up] {
        let events = s.audit(who, 0, 100).await.expect("audit");
        let schedules = events
            .iter()
            .flat_map(|e| &e.tier)
            .filter(|t| matches!(t, TierEvent::Scheduled { .. }))
            .count();
        assert_eq!(schedules, 1, "{who}: {events:?}");
    }
    let due = at(2027, 1, 31);
    for who in [&gold, &up] {
        assert_eq!(
            tier(s, who).await.as_deref(),
            Some("gold"),
            "{who} in grace"
        );
        assert_eq!(
            scheduled(s, who).await,
            Some(TierChange {
                from: Some(Arc::from("gold")),
                to: Arc::from("green"),
                effective: due,
            }),
            "{who}"
        );
    }
    let gold_version = version(s, &gold).await;
    let r = review(&runner, t2).await;
    assert_eq!(r.changed, 0, "{r:?}");
    let r = review(&runner, t2 + Duration::days(10)).await;
    assert_eq!(
        (r.changed, r.members),
        (0, 0),
        "later runs keep the date: {r:?}"
    );
    assert_eq!(scheduled(s, &gold).await.map(|c| c.effective), Some(due));
    assert_eq!(version(s, &gold).await, gold_version);

    // 5. At the scheduled instant: applied, and not scheduled again.
    let r = review(&runner, due).await;
    assert_eq!((r.members, r.changed), (2, 0), "{r:?}");
    for who in [&gold, &up, &low, &quiet] {
        assert_eq!(tier(s, who).await.as_deref(), Some("green"), "{who}");
        assert_eq!(scheduled(s, who).await, None, "{who}");
    }
    let r = review(&runner, due).await;
    assert_eq!((r.members, r.changed, r.reviewed), (0, 0, 4), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_review_decides_every_members_tier_in_memory() {
    review_run(Arc::new(MemoryStore::new(LedgerConfig::default()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_review_decides_every_members_tier_on_postgres() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let config =
        PgConfig::new(url).with_schema(format!("tier_review_{}_{nanos}", std::process::id()));
    let _drop = DropSchema(config.clone());
    migrate_with_config(&config).await.expect("migrate");
    let store = PgStore::connect(config, LedgerConfig::default())
        .await
        .expect("connect");
    review_run(Arc::new(store)).await;
}
