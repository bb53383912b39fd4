//! Named edge cases of the ledger, through the in-memory store (with lot
//! and record inspection) and through the pure `apply`.

use chrono::Duration;
use std::io::Write;
use std::sync::Arc;

use rewards_core::conformance::fixtures::*;
use rewards_core::error::ReferenceProblem;
use rewards_core::ledger::{
    apply, Balances, Command, LedgerConfig, LotStatus, MemberState, PostingKind, RecordStatus,
    Redemption, TierEvent, TierReview,
};
use rewards_core::memory::{FsyncPolicy, MemoryStore};
use rewards_core::outcome::LotTerms;
use rewards_core::store::LedgerStore;
use rewards_core::{Error, ErrorKind, Points, TxKind};

fn bal(available: i64, pending: i64) -> Balances {
    Balances {
        available: Points(available),
        pending: Points(pending),
    }
}

fn store() -> MemoryStore {
    MemoryStore::new(LedgerConfig::default())
}

#[tokio::test]
async fn refund_after_redemption() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let p = purchase(&s.id("p"), &m, "60.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 60)]))
        .await
        .unwrap();
    let q = purchase(&s.id("q"), &m, "40.00", t0 + Duration::hours(1));
    store
        .append(&q, &outcome(&q, &[("base", 40)]))
        .await
        .unwrap();
    let red = Redemption {
        id: s.id("red"),
        member: m.clone(),
        points: Points(90),
        time: days(t0, 1),
        reference: None,
    };
    store.redeem(&red).await.unwrap();
    // p (older) was spent first: p 0 left, q 10 left.
    let left: Vec<i64> = store.lots(&m).iter().map(|l| l.remaining.get()).collect();
    assert_eq!(left, vec![0, 10]);
    // Refund half of p: 30 clawed, taken from q's 10, 20 owed.
    let r = referring(TxKind::Refund, &s.id("r"), &m, "30.00", days(t0, 2), &p.id);
    let receipt = store.append(&r, &outcome(&r, &[])).await.unwrap();
    assert_eq!(receipt.delta, bal(-30, 0));
    assert_eq!(receipt.balances, bal(-20, 0));
    assert!(store.lots(&m).iter().all(|l| l.remaining.get() == 0));
    let detail = &store.audit(&m, 3, 1).await.unwrap()[0].detail;
    assert!(
        detail.contains("10 from other lots") && detail.contains("20 owed"),
        "{detail}"
    );
}

#[tokio::test]
async fn refund_after_expiry() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let p = purchase(&s.id("p"), &m, "100.00", t0);
    let terms = LotTerms {
        available_at: None,
        expires_at: Some(days(t0, 30)),
    };
    store
        .append(&p, &outcome_with_terms(&p, &[("base", 100)], terms))
        .await
        .unwrap();
    store.expire_due(days(t0, 30)).await.unwrap();
    assert_eq!(store.balance(&m).await.unwrap().balances, bal(0, 0));
    // Both halves of the refund are forgiven: the points already expired.
    for (i, amount) in ["50.00", "50.00"].iter().enumerate() {
        let r = referring(
            TxKind::Refund,
            &s.id(&format!("r{i}")),
            &m,
            amount,
            days(t0, 40),
            &p.id,
        );
        let receipt = store.append(&r, &outcome(&r, &[])).await.unwrap();
        assert_eq!(receipt.delta, bal(0, 0));
        assert_eq!(
            receipt.awards[0].1,
            Points(-50),
            "the award is clawed back on the record"
        );
    }
    let lot = &store.lots(&m)[0];
    assert_eq!(
        (lot.expired, lot.expired_forgiven),
        (Points(100), Points(100))
    );
    assert_eq!(
        store
            .records(&m)
            .iter()
            .find(|r| r.id == p.id)
            .unwrap()
            .awards[0]
            .clawed,
        Points(100)
    );
}

#[tokio::test]
async fn refund_of_a_refund_is_rejected() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let p = purchase(&s.id("p"), &m, "10.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 10)]))
        .await
        .unwrap();
    let r = referring(TxKind::Refund, &s.id("r"), &m, "10.00", t0, &p.id);
    store.append(&r, &outcome(&r, &[])).await.unwrap();
    let rr = referring(TxKind::Refund, &s.id("rr"), &m, "10.00", t0, &r.id);
    match store.append(&rr, &outcome(&rr, &[])).await {
        Err(Error::InvalidReference {
            problem: ReferenceProblem::WrongKind(TxKind::Refund),
            ..
        }) => {}
        other => panic!("expected a refund-of-a-refund rejection, got {other:?}"),
    }
    assert_eq!(store.balance(&m).await.unwrap().version, 2);
}

#[tokio::test]
async fn redemption_of_exactly_the_balance() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    for (i, points) in [7, 11, 13].iter().enumerate() {
        let p = purchase(
            &s.id(&format!("p{i}")),
            &m,
            "1.00",
            t0 + Duration::hours(i as i64),
        );
        store
            .append(&p, &outcome(&p, &[("base", *points)]))
            .await
            .unwrap();
    }
    let red = Redemption {
        id: s.id("red"),
        member: m.clone(),
        points: Points(31),
        time: t0,
        reference: None,
    };
    assert_eq!(store.redeem(&red).await.unwrap().balances, bal(0, 0));
    assert!(store.lots(&m).iter().all(|l| l.remaining == Points::ZERO));
    assert!(store.reconcile().await.unwrap().is_clean());
}

#[tokio::test]
async fn expiry_at_the_boundary_instant() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let at = days(t0, 10) + Duration::milliseconds(250);
    let p = purchase(&s.id("p"), &m, "5.00", t0);
    let terms = LotTerms {
        available_at: None,
        expires_at: Some(at),
    };
    store
        .append(&p, &outcome_with_terms(&p, &[("base", 5)], terms))
        .await
        .unwrap();
    let report = store
        .expire_due(at - Duration::milliseconds(1))
        .await
        .unwrap();
    assert_eq!((report.members, report.postings), (0, 0));
    let report = store.expire_due(at).await.unwrap();
    assert_eq!(
        (report.members, report.postings, report.delta),
        (1, 1, bal(-5, 0))
    );
    let expiry = store.history(&m, 1, 1).await.unwrap().remove(0);
    assert_eq!((expiry.kind, expiry.time), (PostingKind::Expire, at));
    assert_eq!(
        store.expire_due(at).await.unwrap().postings,
        0,
        "idempotent"
    );
}

#[tokio::test]
async fn tier_downgrade_after_the_grace_period() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let p = purchase(&s.id("p"), &m, "5.00", t0);
    let mut o = outcome(&p, &[("base", 5)]);
    o.tier_change = Some(rewards_core::TierChange {
        from: None,
        to: Arc::from("gold"),
        effective: t0,
    });
    store.append(&p, &o).await.unwrap();
    // The year review decides silver with 90 days of grace.
    let review = TierReview {
        member: m.clone(),
        tier: Arc::from("silver"),
        effective: days(t0, 365 + 90),
        as_of: days(t0, 365),
    };
    assert_eq!(
        store.review_tier(&review).await.unwrap().tier.as_deref(),
        Some("gold")
    );
    store
        .apply_scheduled_tiers(days(t0, 365 + 89))
        .await
        .unwrap();
    assert_eq!(
        store.balance(&m).await.unwrap().tier.as_deref(),
        Some("gold")
    );
    let report = store
        .apply_scheduled_tiers(days(t0, 365 + 90))
        .await
        .unwrap();
    assert_eq!(report.members, 1);
    assert_eq!(
        store.balance(&m).await.unwrap().tier.as_deref(),
        Some("silver")
    );
    let last = store.audit(&m, 0, 10).await.unwrap().pop().unwrap();
    assert_eq!(
        last.tier,
        vec![TierEvent::Changed {
            from: Some(Arc::from("gold")),
            to: Arc::from("silver")
        }]
    );
    assert_eq!(
        store
            .apply_scheduled_tiers(days(t0, 999))
            .await
            .unwrap()
            .members,
        0
    );
}

#[tokio::test]
async fn settlement_for_a_different_amount_than_authorized() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let cap = s.name("cap");
    let a = tx(TxKind::Authorization, &s.id("a"), &m, "80.00", t0, None);
    let o = with_counter(
        outcome(&a, &[("base", 80), ("bonus", 33)]),
        &cap,
        dec("33"),
        Some(1),
    );
    store.append(&a, &o).await.unwrap();
    assert_eq!(store.balance(&m).await.unwrap().balances, bal(0, 113));
    let st = referring(
        TxKind::Settlement,
        &s.id("s"),
        &m,
        "60.00",
        days(t0, 2),
        &a.id,
    );
    let receipt = store.append(&st, &outcome(&st, &[])).await.unwrap();
    // 80 × 60/80 = 60; 33 × 60/80 = 24.75 → 24.
    assert_eq!(
        receipt.awards,
        vec![
            (Arc::from("base"), Points(60)),
            (Arc::from("bonus"), Points(24))
        ]
    );
    assert_eq!(receipt.balances, bal(84, 0));
    let view = store.member_view(&m, &[lifetime(&cap)]).await.unwrap();
    assert_eq!(
        view.counter(&lifetime(&cap)),
        dec("24"),
        "counters re-scaled too"
    );
    let record = store
        .records(&m)
        .into_iter()
        .find(|r| r.id == a.id)
        .unwrap();
    assert_eq!(record.status, RecordStatus::Settled { by: st.id.clone() });
    assert_eq!(record.amount.amount, dec("60.00"));
    let lot = store.lots(&m).remove(0);
    assert_eq!(
        (lot.status, lot.granted, lot.remaining),
        (LotStatus::Available, Points(84), Points(84))
    );
}

#[tokio::test]
async fn reversal_after_settlement_is_rejected() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let a = tx(TxKind::Authorization, &s.id("a"), &m, "10.00", t0, None);
    store
        .append(&a, &outcome(&a, &[("base", 10)]))
        .await
        .unwrap();
    let st = referring(TxKind::Settlement, &s.id("s"), &m, "10.00", t0, &a.id);
    store.append(&st, &outcome(&st, &[])).await.unwrap();
    for original in [&a.id, &st.id] {
        let v = referring(
            TxKind::Reversal,
            &s.id(&format!("v-{original}")),
            &m,
            "10.00",
            t0,
            original,
        );
        match store.append(&v, &outcome(&v, &[])).await {
            Err(Error::InvalidReference {
                problem: ReferenceProblem::AlreadySettled,
                ..
            }) => {}
            other => panic!("expected AlreadySettled, got {other:?}"),
        }
    }
    assert_eq!(store.balance(&m).await.unwrap().balances, bal(10, 0));
}

#[tokio::test]
async fn authorization_that_never_settles() {
    let config = LedgerConfig {
        authorization_ttl_secs: 3 * 24 * 3600,
    };
    let (store, s) = (MemoryStore::new(config), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let a = tx(TxKind::Authorization, &s.id("a"), &m, "10.00", t0, None);
    store
        .append(&a, &outcome(&a, &[("base", 10)]))
        .await
        .unwrap();
    assert_eq!(
        store
            .expire_authorizations(days(t0, 2))
            .await
            .unwrap()
            .members,
        0
    );
    let report = store.expire_authorizations(days(t0, 3)).await.unwrap();
    assert_eq!(report.delta, bal(0, -10));
    let record = store.records(&m).remove(0);
    assert_eq!(record.status, RecordStatus::Voided { by: None });
    assert_eq!(store.lots(&m)[0].status, LotStatus::Void);
    assert_eq!(
        store
            .expire_authorizations(days(t0, 9))
            .await
            .unwrap()
            .members,
        0
    );
    let voids = store.history(&m, 0, 10).await.unwrap();
    assert_eq!(
        voids.last().map(|p| (p.kind, p.time)),
        Some((PostingKind::Void, days(t0, 3)))
    );
}

#[tokio::test]
async fn same_id_with_different_content_is_a_conflict() {
    let (store, s) = (store(), Scope::new("e"));
    let m = s.member("m");
    let t0 = year(2030);
    let p = purchase(&s.id("p"), &m, "10.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 10)]))
        .await
        .unwrap();
    let mut changed = p.clone();
    changed.time = t0 + Duration::seconds(1);
    let err = store
        .append(&changed, &outcome(&changed, &[("base", 10)]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // The same id used by another member is a conflict too.
    let mut elsewhere = p.clone();
    elsewhere.member = s.member("other");
    let err = store
        .append(&elsewhere, &outcome(&elsewhere, &[("base", 10)]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(store.balance(&m).await.unwrap().version, 1);
}

/// The pure function is deterministic: the same state and command give the
/// same entry, posting ids included.
#[test]
fn apply_is_deterministic() {
    let s = Scope::new("e");
    let m = s.member("m");
    let p = purchase(&s.id("p"), &m, "12.00", year(2030));
    let o = outcome(&p, &[("base", 12), ("bonus", 3)]);
    let command = Command::Transaction {
        tx: &p,
        outcome: &o,
    };
    let state = MemberState::new(m);
    let config = LedgerConfig::default();
    let first = apply(&state, &command, &config).unwrap().unwrap();
    let second = apply(&state, &command, &config).unwrap().unwrap();
    assert_eq!(first, second);
    assert_eq!(first.postings.len(), 2);
    assert_ne!(first.postings[0].id, first.postings[1].id);
    assert_eq!(first.expected_version, 0);
    assert_eq!(first.member.version, 1);
}

/// A record torn by a crash (no final newline) is dropped at start; the
/// acknowledged records before it are all rebuilt.
#[tokio::test]
async fn a_torn_event_log_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let s = Scope::new("e");
    let m = s.member("m");
    {
        let store = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Always).unwrap();
        let p = purchase(&s.id("p"), &m, "10.00", year(2030));
        store
            .append(&p, &outcome(&p, &[("base", 10)]))
            .await
            .unwrap();
    }
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"type":"entry","data":{"expec"#)
        .unwrap();
    drop(file);
    let store = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Always).unwrap();
    assert_eq!(store.balance(&m).await.unwrap().balances, bal(10, 0));
    let p2 = purchase(&s.id("p2"), &m, "1.00", year(2030));
    store
        .append(&p2, &outcome(&p2, &[("base", 1)]))
        .await
        .unwrap();
    drop(store);
    let store = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Always).unwrap();
    assert_eq!(store.balance(&m).await.unwrap().balances, bal(11, 0));
    // A bad line in the middle is corruption, not a torn write.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("garbage\n{text}")).unwrap();
    let err = MemoryStore::open(&path, LedgerConfig::default(), FsyncPolicy::Always).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
}
