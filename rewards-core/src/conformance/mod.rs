//! The store conformance suite (feature `conformance`): async checks that
//! every [`LedgerStore`] and [`BalanceCache`] must pass, so the in-memory
//! store, PostgreSQL and Redis implement the same semantics. Each check
//! panics with a message naming what differs (it is test code).
//!
//! # Running them on a shared database
//!
//! Every check makes its own ids ([`fixtures::Scope`]), so the checks can
//! run again and in parallel on a database shared with other tests — with
//! one rule: the store-wide sweeps (`expire_due`, `release_pending`,
//! `expire_authorizations`, `apply_scheduled_tiers`) touch every member, so
//! the **sweep checks** (named `sweep_check_*`) must not run in parallel
//! with each other. They date their data in their own years (2031–2035) and
//! sweep only up to 2036; the other checks date theirs in 2090 and later
//! with no expiry, so no sweep can touch them. [`run_all`] runs everything
//! in a safe order.

pub mod fixtures;

use chrono::Duration;
use std::sync::Arc;

use crate::error::ErrorKind;
use crate::ids::MemberId;
use crate::ledger::{
    Adjustment, Balances, EntryKind, PostingKind, Redemption, TierEvent, TierReview,
};
use crate::member::MemberProfile;
use crate::outcome::{LotTerms, TierChange};
use crate::points::Points;
use crate::store::{BalanceCache, CachePut, CachedMember, LedgerStore};
use crate::transaction::{AttrValue, Transaction, TxKind};
use fixtures::*;

fn bal(available: i64, pending: i64) -> Balances {
    Balances {
        available: Points(available),
        pending: Points(pending),
    }
}

async fn balances(store: &dyn LedgerStore, member: &MemberId) -> Balances {
    store.balance(member).await.expect("balance").balances
}

async fn version(store: &dyn LedgerStore, member: &MemberId) -> u64 {
    store.balance(member).await.expect("balance").version
}

fn expect_kind<T: std::fmt::Debug>(result: crate::error::Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) if e.kind() == kind => {}
        other => panic!("{what}: expected a {kind:?} error, got {other:?}"),
    }
}

/// Conservation for one member: the stored balances equal the sum of the
/// postings and the replay of the audit trail; posting and audit sequences
/// run from 1 without gaps; every posting's before/after chain holds.
pub async fn assert_conserved(store: &dyn LedgerStore, member: &MemberId) {
    let stored = store.balance(member).await.expect("balance");
    let mut postings = Vec::new();
    let mut after = 0;
    loop {
        let page = store.history(member, after, 100).await.expect("history");
        let Some(last) = page.last() else { break };
        after = last.seq;
        postings.extend(page);
    }
    let mut running = Balances::ZERO;
    for (i, p) in postings.iter().enumerate() {
        assert_eq!(p.seq, i as u64 + 1, "{member}: posting sequence has a gap");
        assert_eq!(p.before, running, "{member}: posting {} before", p.seq);
        running = running.checked_add(p.delta).expect("no overflow");
        assert_eq!(p.after, running, "{member}: posting {} after", p.seq);
        assert!(!p.delta.is_zero(), "{member}: an empty posting");
    }
    assert_eq!(
        running, stored.balances,
        "{member}: balance != sum of postings"
    );
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit(member, after, 100).await.expect("audit");
        let Some(last) = page.last() else { break };
        after = last.seq;
        events.extend(page);
    }
    let mut replay = Balances::ZERO;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "{member}: audit sequence has a gap");
        replay = replay.checked_add(e.delta).expect("no overflow");
        assert_eq!(
            replay, e.balances,
            "{member}: audit event {} balances",
            e.seq
        );
    }
    assert_eq!(
        replay, stored.balances,
        "{member}: balance != replay of the audit trail"
    );
    assert_eq!(
        events.len() as u64,
        stored.version,
        "{member}: version != audit events"
    );
    let ids: usize = events.iter().map(|e| e.postings.len()).sum();
    assert_eq!(
        ids,
        postings.len(),
        "{member}: audit events name every posting once"
    );
}

/// A purchase earns one posting per component, stamped with the ruleset,
/// with deterministic ids; the member and an empty profile are created.
pub async fn check_earn(store: &dyn LedgerStore) {
    let s = Scope::new("earn");
    let m = s.member("m");
    let t0 = year(2090);
    expect_kind(
        store.balance(&m).await,
        ErrorKind::NotFound,
        "balance of a new member",
    );
    expect_kind(
        store.profile(&m).await,
        ErrorKind::NotFound,
        "profile of a new member",
    );
    let view = store
        .member_view(&m, &[])
        .await
        .expect("view of a new member");
    assert_eq!(view.balance, Points::ZERO);
    let p = purchase(&s.id("p1"), &m, "26.40", t0);
    let receipt = store
        .append(&p, &outcome(&p, &[("base", 26), ("dining", 52)]))
        .await
        .expect("append");
    assert!(!receipt.duplicate);
    assert_eq!(receipt.kind, EntryKind::Purchase);
    assert_eq!(receipt.delta, bal(78, 0));
    assert_eq!(receipt.balances, bal(78, 0));
    assert_eq!(receipt.version, 1);
    assert_eq!(
        receipt.awards,
        vec![
            (Arc::from("base"), Points(26)),
            (Arc::from("dining"), Points(52))
        ]
    );
    assert_eq!(balances(store, &m).await, bal(78, 0));
    let history = store.history(&m, 0, 10).await.expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].kind, PostingKind::Earn);
    assert_eq!(history[0].ruleset, Some(stamp()));
    assert_eq!(history[1].rule.as_ref(), "dining");
    assert_eq!(
        history[0].id,
        crate::ledger::PostingId::derive(p.id.as_str(), PostingKind::Earn, "base", 0)
    );
    assert_eq!(history[1].before, bal(26, 0));
    let profile = store.profile(&m).await.expect("profile created");
    assert!(profile.attributes.is_empty());
    let recent = store.recent(&m, 5).await.expect("recent");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].id, p.id);
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("enrolled".to_string(), AttrValue::Text("2024-03-01".into()));
    store
        .put_profile(&MemberProfile {
            member: m.clone(),
            attributes: attrs,
        })
        .await
        .expect("put profile");
    let view = store.member_view(&m, &[]).await.expect("view");
    assert_eq!(view.balance, Points(78));
    assert_eq!(
        view.enrolled.map(|d| d.to_string()).as_deref(),
        Some("2024-03-01")
    );
    assert_conserved(store, &m).await;
}

/// The same id twice is one posting; with other content a conflict; in a
/// batch, per-item results.
pub async fn check_idempotency(store: &dyn LedgerStore) {
    let s = Scope::new("idem");
    let m = s.member("m");
    let t0 = year(2090);
    let p = purchase(&s.id("p1"), &m, "10.00", t0);
    let o = outcome(&p, &[("base", 10)]);
    let first = store.append(&p, &o).await.expect("first");
    let again = store.append(&p, &o).await.expect("duplicate");
    assert!(again.duplicate, "a repeat must be reported as a duplicate");
    assert_eq!(again.balances, first.balances);
    assert_eq!(again.version, first.version);
    assert_eq!(balances(store, &m).await, bal(10, 0));
    assert_eq!(version(store, &m).await, 1);
    let mut other = p.clone();
    other.amount.amount = dec("11.00");
    expect_kind(
        store
            .append(&other, &outcome(&other, &[("base", 11)]))
            .await,
        ErrorKind::Conflict,
        "same id, other content",
    );
    assert_eq!(balances(store, &m).await, bal(10, 0));
    // A batch: new, duplicate of an earlier item, unknown original, new.
    let p2 = purchase(&s.id("p2"), &m, "5.00", t0);
    let bad = referring(TxKind::Refund, &s.id("r-x"), &m, "1.00", t0, &s.id("nope"));
    let p3 = purchase(&s.id("p3"), &m, "7.00", t0);
    let items = vec![
        (p2.clone(), outcome(&p2, &[("base", 5)])),
        (p2.clone(), outcome(&p2, &[("base", 5)])),
        (bad.clone(), outcome(&bad, &[])),
        (p3.clone(), outcome(&p3, &[("base", 7)])),
    ];
    let results = store.append_batch(&items).await.expect("batch");
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], Ok(r) if !r.duplicate));
    assert!(matches!(&results[1], Ok(r) if r.duplicate));
    assert!(matches!(&results[2], Err(e) if e.kind() == ErrorKind::InvalidReference));
    assert!(matches!(&results[3], Ok(r) if !r.duplicate));
    assert_eq!(balances(store, &m).await, bal(22, 0));
    // A redemption and an adjustment are idempotent by their own ids.
    let r = Redemption {
        id: s.id("red"),
        member: m.clone(),
        points: Points(2),
        time: t0,
        reference: Some("coffee".into()),
    };
    store.redeem(&r).await.expect("redeem");
    assert!(store.redeem(&r).await.expect("again").duplicate);
    let mut r2 = r.clone();
    r2.points = Points(3);
    expect_kind(
        store.redeem(&r2).await,
        ErrorKind::Conflict,
        "redemption id reused",
    );
    let a = Adjustment {
        id: s.id("adj"),
        member: m.clone(),
        points: Points(4),
        reason: "goodwill".into(),
        actor: "agent".into(),
        time: t0,
        expires_at: None,
    };
    store.adjust(&a).await.expect("adjust");
    assert!(store.adjust(&a).await.expect("again").duplicate);
    assert_eq!(balances(store, &m).await, bal(24, 0));
    assert_conserved(store, &m).await;
}

/// What a request returned, comparable across stores.
fn summary(
    r: &crate::error::Result<crate::ledger::Receipt>,
) -> Result<crate::ledger::Receipt, ErrorKind> {
    match r {
        Ok(receipt) => Ok(receipt.clone()),
        Err(e) => Err(e.kind()),
    }
}

/// Batches: one `append_batch` gives exactly what appending its items one
/// at a time gives on a fresh in-memory store — per item (receipts, error
/// kinds) and afterwards (balances, postings, audit trails, budgets) — for
/// a batch where one member appears several times (a refund of an original
/// stored earlier, a refund of an original in the same batch, budget
/// trims carried from item to item) mixed with duplicates (of stored and
/// of in-batch requests), a conflict, an unknown original and another
/// member's original.
pub async fn check_batches(store: &dyn LedgerStore) {
    let s = Scope::new("batch");
    let (a, b, c) = (s.member("a"), s.member("b"), s.member("c"));
    let t0 = year(2091);
    let visits = s.name("visits");
    let promo = s.name("promo");
    let p0 = purchase(&s.id("p0"), &a, "20.00", t0);
    let pb = purchase(&s.id("pb"), &b, "8.00", t0);
    let before = vec![
        (
            p0.clone(),
            with_counter(outcome(&p0, &[("base", 20)]), &visits, dec("1"), None),
        ),
        (pb.clone(), outcome(&pb, &[("base", 8)])),
    ];
    let t1 = days(t0, 1);
    let p1 = purchase(&s.id("p1"), &a, "10.00", t1);
    let p2 = purchase(&s.id("p2"), &b, "5.00", t1);
    let r0 = referring(TxKind::Refund, &s.id("r0"), &a, "5.00", t1, &p0.id);
    let p3 = purchase(&s.id("p3"), &a, "7.00", t1);
    let mut p1_other = p1.clone();
    p1_other.amount.amount = dec("11.00");
    let unknown = referring(TxKind::Refund, &s.id("rx"), &c, "1.00", t1, &s.id("nope"));
    let foreign = referring(TxKind::Refund, &s.id("ry"), &c, "1.00", t1, &pb.id);
    let r1 = referring(TxKind::Refund, &s.id("r1"), &a, "4.00", t1, &p1.id);
    let p4 = purchase(&s.id("p4"), &a, "3.00", t1);
    let item = |t: &Transaction, o: crate::outcome::Outcome| (t.clone(), o);
    let batch = vec![
        item(
            &p1,
            with_counter(
                with_budget(outcome(&p1, &[("base", 10), ("promo", 15)]), &promo, 1, 25),
                &visits,
                dec("1"),
                None,
            ),
        ),
        item(&p2, outcome(&p2, &[("base", 5)])),
        item(&r0, outcome(&r0, &[])),
        item(
            &p3,
            with_budget(outcome(&p3, &[("base", 7), ("promo", 15)]), &promo, 1, 25),
        ),
        item(
            &p0,
            with_counter(outcome(&p0, &[("base", 20)]), &visits, dec("1"), None),
        ),
        item(&p1_other, outcome(&p1_other, &[("base", 11)])),
        item(&unknown, outcome(&unknown, &[])),
        item(&foreign, outcome(&foreign, &[])),
        item(&r1, outcome(&r1, &[])),
        item(&p2, outcome(&p2, &[("base", 5)])),
        item(&p4, outcome(&p4, &[("base", 3)])),
    ];
    let reference = crate::memory::MemoryStore::new(crate::ledger::LedgerConfig::default());
    for (t, o) in &before {
        reference.append(t, o).await.expect("reference: before");
        store.append(t, o).await.expect("before");
    }
    let mut expected = Vec::new();
    for (t, o) in &batch {
        expected.push(summary(&reference.append(t, o).await));
    }
    let got: Vec<_> = store
        .append_batch(&batch)
        .await
        .expect("batch")
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        got, expected,
        "a batch answers like its items one at a time"
    );
    // The mix really is a mix.
    assert!(matches!(&got[4], Ok(r) if r.duplicate), "stored duplicate");
    assert!(
        matches!(&got[9], Ok(r) if r.duplicate),
        "in-batch duplicate"
    );
    assert_eq!(got[5], Err(ErrorKind::Conflict));
    assert_eq!(got[6], Err(ErrorKind::InvalidReference));
    assert_eq!(got[7], Err(ErrorKind::InvalidReference));
    assert!(
        matches!(&got[3], Ok(r) if r.trimmed.get() > 0),
        "budget trimmed"
    );
    for m in [&a, &b] {
        assert_same_member(store, &reference, m).await;
    }
    expect_kind(store.balance(&c).await, ErrorKind::NotFound, "refused only");
    assert_eq!(
        store.budget_used(&promo).await.expect("budget"),
        reference
            .budget_used(&promo)
            .await
            .expect("reference budget"),
    );
    let key = lifetime(&visits);
    assert_eq!(
        store
            .member_view(&a, std::slice::from_ref(&key))
            .await
            .expect("view"),
        reference
            .member_view(&a, std::slice::from_ref(&key))
            .await
            .expect("reference view"),
    );
}

/// `member_views` answers each request like `member_view`: members with
/// counters and a profile, a profile-only member, an unknown member, one
/// member asked twice with other counters, and no request at all.
pub async fn check_member_views(store: &dyn LedgerStore) {
    let s = Scope::new("views");
    let (x, y, z) = (s.member("x"), s.member("y"), s.member("z"));
    let t0 = year(2092);
    let (k1, k2, k3) = (s.name("k1"), s.name("k2"), s.name("k3"));
    let p = purchase(&s.id("p"), &x, "10.00", t0);
    let o = with_counter(
        with_counter(outcome(&p, &[("base", 10)]), &k1, dec("2.5"), None),
        &k2,
        dec("1"),
        None,
    );
    store.append(&p, &o).await.expect("append");
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert("segment".to_owned(), AttrValue::Text("vip".into()));
    store
        .put_profile(&MemberProfile {
            member: x.clone(),
            attributes: attributes.clone(),
        })
        .await
        .expect("profile x");
    store
        .put_profile(&MemberProfile {
            member: z.clone(),
            attributes,
        })
        .await
        .expect("profile z");
    let requests = vec![
        (x.clone(), vec![lifetime(&k1), lifetime(&k2), lifetime(&k3)]),
        (y.clone(), vec![lifetime(&k1)]),
        (x.clone(), vec![lifetime(&k2)]),
        (z.clone(), vec![]),
        (x.clone(), vec![]),
    ];
    let views = store.member_views(&requests).await.expect("views");
    assert_eq!(views.len(), requests.len());
    for ((member, keys), view) in requests.iter().zip(&views) {
        let single = store.member_view(member, keys).await.expect("view");
        assert_eq!(view, &single, "{member} {keys:?}");
    }
    assert_eq!(views[0].counter(&lifetime(&k1)), dec("2.5"));
    assert_eq!(views[2].counters.len(), 1);
    assert_eq!(views[1], crate::member::MemberView::default());
    assert!(store.member_views(&[]).await.expect("none").is_empty());
}

/// Walks every member of `store` with `members_after` pages of `limit`;
/// checks each page's size and that no member comes twice.
async fn walk_members(store: &dyn LedgerStore, limit: usize) -> Vec<MemberId> {
    let mut all: Vec<MemberId> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<MemberId> = None;
    for _ in 0..1_000_000 {
        let page = store
            .members_after(after.as_ref(), limit)
            .await
            .expect("members page");
        assert!(page.len() <= limit, "a page of {limit} held {}", page.len());
        let Some(last) = page.last().cloned() else {
            return all;
        };
        for m in page {
            assert!(seen.insert(m.clone()), "{m} came twice in the walk");
            all.push(m);
        }
        after = Some(last);
    }
    panic!("the member walk never ended");
}

/// The member walk (`members_after`) and what a tier review reads
/// (`tier_views`): every member with an entry or a profile comes exactly
/// once, in pages of at most the limit, in id order among ids that differ
/// in their last character; a member whose only request was refused is not
/// a member; a page after an id that is not a member starts after it;
/// `tier_views` gives `member_view`'s view and the scheduled tier change.
pub async fn check_member_walk(store: &dyn LedgerStore) {
    let s = Scope::new("walk");
    let t0 = year(2093);
    let k = s.name("k");
    let ms: Vec<MemberId> = (1..=5).map(|i| s.member(&format!("m{i}"))).collect();
    for (i, m) in ms.iter().enumerate() {
        if i % 2 == 0 {
            let p = purchase(&s.id(&format!("p{i}")), m, "10.00", t0);
            let o = with_counter(outcome(&p, &[("base", 10)]), &k, dec("2.5"), None);
            store.append(&p, &o).await.expect("append");
        } else {
            store
                .put_profile(&MemberProfile::empty(m.clone()))
                .await
                .expect("profile");
        }
    }
    let refused = s.member("m6");
    let r = referring(
        TxKind::Refund,
        &s.id("r6"),
        &refused,
        "1.00",
        t0,
        &s.id("none"),
    );
    expect_kind(
        store.append(&r, &outcome(&r, &[])).await,
        ErrorKind::InvalidReference,
        "refund of nothing",
    );
    let ours = |walk: &[MemberId]| -> Vec<MemberId> {
        walk.iter()
            .filter(|m| ms.contains(m) || **m == refused)
            .cloned()
            .collect()
    };
    for limit in [2, 7, crate::store::MAX_PAGE_ROWS] {
        assert_eq!(
            ours(&walk_members(store, limit).await),
            ms,
            "walk by {limit}"
        );
    }
    assert!(store
        .members_after(None, 0)
        .await
        .expect("empty page")
        .is_empty());
    assert!(
        store
            .members_after(None, crate::store::MAX_PAGE_ROWS + 5)
            .await
            .expect("big page")
            .len()
            <= crate::store::MAX_PAGE_ROWS
    );
    let between = s.member("m35");
    let rest = store
        .members_after(Some(&between), crate::store::MAX_PAGE_ROWS)
        .await
        .expect("after a non-member");
    let rest = ours(&rest);
    assert_eq!(&rest[..], &ms[3..], "after {between}");

    // What a review reads.
    let unknown = s.member("nobody");
    let asked = vec![ms[0].clone(), ms[1].clone(), unknown.clone(), ms[0].clone()];
    let keys = vec![lifetime(&k)];
    let read = store.tier_views(&asked, &keys).await.expect("tier views");
    assert_eq!(read.len(), asked.len());
    for (m, r) in asked.iter().zip(&read) {
        assert_eq!(
            r.view,
            store.member_view(m, &keys).await.expect("view"),
            "{m}"
        );
        assert_eq!(r.scheduled, None, "{m}");
    }
    assert_eq!(read[0].view.counter(&lifetime(&k)), dec("2.5"));
    assert_eq!(read[2].view, crate::member::MemberView::default());
    let review = |tier: &str, at: i64, effective: i64| TierReview {
        member: ms[0].clone(),
        tier: Arc::from(tier),
        effective: days(t0, effective),
        as_of: days(t0, at),
    };
    store
        .review_tier(&review("gold", 1, 1))
        .await
        .expect("gold");
    store
        .review_tier(&review("silver", 2, 100))
        .await
        .expect("downgrade with grace");
    let read = store
        .tier_views(std::slice::from_ref(&ms[0]), &[])
        .await
        .expect("tier view");
    assert_eq!(read[0].view.tier.as_deref(), Some("gold"));
    assert_eq!(
        read[0].scheduled,
        Some(TierChange {
            from: Some(Arc::from("gold")),
            to: Arc::from("silver"),
            effective: days(t0, 100),
        })
    );
    let too_many: Vec<MemberId> = (0..=crate::store::MAX_PAGE_ROWS)
        .map(|i| s.member(&format!("x{i}")))
        .collect();
    expect_kind(
        store.tier_views(&too_many, &[]).await,
        ErrorKind::Invalid,
        "too many tier views",
    );
}

/// Acknowledges everything in the outbox (earlier checks left events).
async fn drain_outbox(store: &dyn LedgerStore) {
    for _ in 0..10_000 {
        let events = store.outbox_fetch(1000).await.expect("outbox fetch");
        if events.is_empty() {
            return;
        }
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        store.outbox_ack(&seqs).await.expect("outbox ack");
    }
    panic!("the outbox never drained");
}

/// The transactional outbox: one event per applied request (transactions
/// alone and in batches, redemptions, adjustments), none for duplicates
/// and refused requests; events in order with what the receipts said; an
/// event stays until acknowledged, and acknowledging twice is harmless.
/// Must not run in parallel with other writers of the same store.
pub async fn check_outbox(store: &dyn LedgerStore) {
    drain_outbox(store).await;
    let s = Scope::new("outbox");
    let (a, b) = (s.member("a"), s.member("b"));
    let t0 = year(2093);
    let p1 = purchase(&s.id("p1"), &a, "10.00", t0);
    let o1 = outcome(&p1, &[("base", 10), ("bonus", 5)]);
    let mut receipts = vec![store.append(&p1, &o1).await.expect("p1")];
    assert!(store.append(&p1, &o1).await.expect("again").duplicate);
    let mut other = p1.clone();
    other.amount.amount = dec("12.00");
    expect_kind(
        store
            .append(&other, &outcome(&other, &[("base", 12)]))
            .await,
        ErrorKind::Conflict,
        "conflict",
    );
    let p2 = purchase(&s.id("p2"), &b, "4.00", t0);
    let r1 = referring(TxKind::Refund, &s.id("r1"), &a, "5.00", days(t0, 1), &p1.id);
    let bad = referring(TxKind::Refund, &s.id("rx"), &a, "1.00", t0, &s.id("nope"));
    let batch = vec![
        (p2.clone(), outcome(&p2, &[("base", 4)])),
        (bad.clone(), outcome(&bad, &[])),
        (r1.clone(), outcome(&r1, &[])),
    ];
    receipts.extend(
        store
            .append_batch(&batch)
            .await
            .expect("batch")
            .into_iter()
            .flatten(),
    );
    receipts.push(
        store
            .redeem(&Redemption {
                id: s.id("red"),
                member: a.clone(),
                points: Points(3),
                time: days(t0, 2),
                reference: None,
            })
            .await
            .expect("redeem"),
    );
    receipts.push(
        store
            .adjust(&Adjustment {
                id: s.id("adj"),
                member: b.clone(),
                points: Points(2),
                reason: "goodwill".into(),
                actor: "agent".into(),
                time: days(t0, 2),
                expires_at: None,
            })
            .await
            .expect("adjust"),
    );
    let events = store.outbox_fetch(100).await.expect("fetch");
    assert_eq!(
        events.len(),
        5,
        "one event per applied request: {events:#?}"
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "seq order");
    let ids: Vec<&str> = events.iter().map(|e| e.tx_id.as_str()).collect();
    let want: Vec<&str> = receipts.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, want);
    for (event, receipt) in events.iter().zip(&receipts) {
        assert_eq!(event.member, receipt.member);
        assert_eq!(event.kind, receipt.kind);
        assert_eq!(event.version, receipt.version);
        assert_eq!(event.points, receipt.delta);
        assert_eq!(event.balances, receipt.balances);
        assert_eq!(event.tier, receipt.tier);
        let sum = event
            .postings
            .iter()
            .try_fold(Balances::default(), |acc, p| acc.checked_add(p.points));
        assert_eq!(sum.expect("sum"), event.points, "postings add up");
        let json = serde_json::to_string(event).expect("encode");
        assert_eq!(
            &serde_json::from_str::<crate::store::OutboxEvent>(&json).expect("decode"),
            event
        );
    }
    assert_eq!(events[0].ruleset.as_ref(), Some(&stamp()));
    assert_eq!(
        events[0].postings,
        vec![
            crate::store::OutboxPosting {
                rule: Arc::from("base"),
                kind: PostingKind::Earn,
                points: bal(10, 0),
                lot: Some(p1.id.clone()),
            },
            crate::store::OutboxPosting {
                rule: Arc::from("bonus"),
                kind: PostingKind::Earn,
                points: bal(5, 0),
                lot: Some(p1.id.clone()),
            },
        ],
        "base and bonus"
    );
    assert_eq!(events[0].time, t0);
    // The refund claws back under the purchase's ruleset (kept on its
    // record); the redemption has no ruleset.
    assert_eq!(events[2].tx_id, r1.id);
    assert_eq!(events[2].ruleset.as_ref(), Some(&stamp()));
    assert!(events[2]
        .postings
        .iter()
        .all(|p| p.kind == PostingKind::Clawback && p.lot.as_ref() == Some(&p1.id)));
    assert_eq!(events[2].postings.len(), 2, "{:?}", events[2].postings);
    assert_eq!(events[3].ruleset, None);
    let audit = store.audit(&a, 0, 10).await.expect("audit");
    assert_eq!(audit.len(), 3, "p1, r1, red");
    assert_eq!(audit[0].ruleset.as_ref(), Some(&stamp()));
    assert_eq!(audit[1].ruleset.as_ref(), Some(&stamp()));
    assert_eq!(audit[2].ruleset, None);
    // Acknowledge some: the others stay; twice is harmless.
    let first: Vec<u64> = events[..2].iter().map(|e| e.seq).collect();
    assert_eq!(store.outbox_ack(&first).await.expect("ack"), 2);
    assert_eq!(store.outbox_ack(&first).await.expect("ack again"), 0);
    let rest = store.outbox_fetch(100).await.expect("fetch");
    assert_eq!(rest, events[2..].to_vec());
    assert_eq!(
        store.outbox_fetch(1).await.expect("fetch one"),
        events[2..3].to_vec()
    );
    let seqs: Vec<u64> = rest.iter().map(|e| e.seq).collect();
    assert_eq!(store.outbox_ack(&seqs).await.expect("ack rest"), 3);
    assert!(store.outbox_fetch(100).await.expect("empty").is_empty());
    assert_eq!(store.outbox_ack(&[]).await.expect("nothing"), 0);
}

/// Redemption: more than available is refused and changes nothing;
/// exactly the balance leaves zero.
pub async fn check_redemption(store: &dyn LedgerStore) {
    let s = Scope::new("redeem");
    let m = s.member("m");
    let t0 = year(2090);
    let p = purchase(&s.id("p1"), &m, "100.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 100)]))
        .await
        .expect("append");
    let v = version(store, &m).await;
    let too_much = Redemption {
        id: s.id("r1"),
        member: m.clone(),
        points: Points(101),
        time: days(t0, 1),
        reference: None,
    };
    expect_kind(
        store.redeem(&too_much).await,
        ErrorKind::InsufficientBalance,
        "overdraw",
    );
    assert_eq!(
        version(store, &m).await,
        v,
        "a refused redemption changes nothing"
    );
    let zero = Redemption {
        points: Points(0),
        id: s.id("r0"),
        ..too_much.clone()
    };
    expect_kind(
        store.redeem(&zero).await,
        ErrorKind::Invalid,
        "zero redemption",
    );
    let exact = Redemption {
        points: Points(100),
        id: s.id("r2"),
        ..too_much.clone()
    };
    let receipt = store.redeem(&exact).await.expect("exact balance");
    assert_eq!(receipt.balances, bal(0, 0));
    assert_eq!(receipt.kind, EntryKind::Redemption);
    let one = Redemption {
        points: Points(1),
        id: s.id("r3"),
        ..too_much
    };
    expect_kind(
        store.redeem(&one).await,
        ErrorKind::InsufficientBalance,
        "empty balance",
    );
    assert_conserved(store, &m).await;
}

/// Partial refunds claw back cumulatively, rounded down on the running
/// total: never more than the original earned, and exactly all of it at
/// the end; a refund beyond the amount claws nothing more.
pub async fn check_partial_refunds(store: &dyn LedgerStore) {
    let s = Scope::new("partial");
    let m = s.member("m");
    let t0 = year(2090);
    let p = purchase(&s.id("p"), &m, "100.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 100), ("bonus", 7)]))
        .await
        .expect("append");
    let mut clawed = Vec::new();
    for (i, amount) in ["33.33", "33.33", "33.33", "0.01", "5.00"]
        .iter()
        .enumerate()
    {
        let r = referring(
            TxKind::Refund,
            &s.id(&format!("r{i}")),
            &m,
            amount,
            days(t0, 1),
            &p.id,
        );
        let receipt = store.append(&r, &outcome(&r, &[])).await.expect("refund");
        let awards: Vec<i64> = receipt.awards.iter().map(|(_, p)| p.get()).collect();
        clawed.push(awards);
    }
    assert_eq!(
        clawed,
        vec![
            vec![-33, -2],
            vec![-33, -2],
            vec![-33, -2],
            vec![-1, -1],
            vec![0, 0]
        ],
        "cumulative proportional clawback, rounded down on the running total"
    );
    assert_eq!(balances(store, &m).await, bal(0, 0));
    assert_conserved(store, &m).await;
}

/// Refund after the points were spent: the balance goes negative (a debt
/// the next earnings repay first).
pub async fn check_refund_after_redemption(store: &dyn LedgerStore) {
    let s = Scope::new("spent");
    let m = s.member("m");
    let t0 = year(2090);
    let p = purchase(&s.id("p"), &m, "100.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 100)]))
        .await
        .expect("append");
    let r = Redemption {
        id: s.id("red"),
        member: m.clone(),
        points: Points(80),
        time: days(t0, 1),
        reference: None,
    };
    store.redeem(&r).await.expect("redeem");
    let refund = referring(TxKind::Refund, &s.id("r"), &m, "100.00", days(t0, 2), &p.id);
    let receipt = store
        .append(&refund, &outcome(&refund, &[]))
        .await
        .expect("refund");
    assert_eq!(
        receipt.delta,
        bal(-100, 0),
        "the whole award is clawed back"
    );
    assert_eq!(balances(store, &m).await, bal(-80, 0), "the member owes 80");
    let again = referring(
        TxKind::Refund,
        &s.id("r2"),
        &m,
        "100.00",
        days(t0, 2),
        &p.id,
    );
    let receipt = store
        .append(&again, &outcome(&again, &[]))
        .await
        .expect("over-refund");
    assert_eq!(receipt.delta, bal(0, 0), "never twice");
    let p2 = purchase(&s.id("p2"), &m, "50.00", days(t0, 3));
    store
        .append(&p2, &outcome(&p2, &[("base", 50)]))
        .await
        .expect("append");
    assert_eq!(balances(store, &m).await, bal(-30, 0));
    let one = Redemption {
        id: s.id("red2"),
        points: Points(1),
        ..r
    };
    expect_kind(
        store.redeem(&one).await,
        ErrorKind::InsufficientBalance,
        "in debt",
    );
    let p3 = purchase(&s.id("p3"), &m, "40.00", days(t0, 3));
    store
        .append(&p3, &outcome(&p3, &[("base", 40)]))
        .await
        .expect("append");
    assert_eq!(balances(store, &m).await, bal(10, 0));
    store
        .redeem(&Redemption {
            id: s.id("red3"),
            points: Points(10),
            ..one
        })
        .await
        .expect("the repaid lot keeps only the rest");
    assert_conserved(store, &m).await;
}

/// Refused references change nothing: unknown original, refund of a
/// refund, chargeback of a refund, another member's purchase, another currency.
pub async fn check_invalid_references(store: &dyn LedgerStore) {
    let s = Scope::new("refs");
    let m = s.member("m");
    let other = s.member("o");
    let t0 = year(2090);
    let p = purchase(&s.id("p"), &m, "20.00", t0);
    store
        .append(&p, &outcome(&p, &[("base", 20)]))
        .await
        .expect("append");
    let r = referring(TxKind::Refund, &s.id("r"), &m, "5.00", t0, &p.id);
    store.append(&r, &outcome(&r, &[])).await.expect("refund");
    let v = version(store, &m).await;
    let b = balances(store, &m).await;
    let cases = [
        referring(
            TxKind::Refund,
            &s.id("x1"),
            &m,
            "1.00",
            t0,
            &s.id("unknown"),
        ),
        referring(TxKind::Refund, &s.id("x2"), &m, "1.00", t0, &r.id),
        referring(TxKind::Chargeback, &s.id("x3"), &m, "1.00", t0, &r.id),
        referring(TxKind::Settlement, &s.id("x4"), &m, "1.00", t0, &p.id),
        referring(TxKind::Reversal, &s.id("x5"), &m, "1.00", t0, &p.id),
        referring(TxKind::Refund, &s.id("x6"), &other, "1.00", t0, &p.id),
    ];
    for case in &cases {
        expect_kind(
            store.append(case, &outcome(case, &[])).await,
            ErrorKind::InvalidReference,
            &format!("{} of {:?}", case.kind, case.original_id),
        );
    }
    let mut eur = referring(TxKind::Refund, &s.id("x7"), &m, "1.00", t0, &p.id);
    eur.amount.currency = crate::money::Currency::EUR;
    expect_kind(
        store.append(&eur, &outcome(&eur, &[])).await,
        ErrorKind::InvalidReference,
        "refund in another currency",
    );
    assert_eq!(
        version(store, &m).await,
        v,
        "refused references change nothing"
    );
    assert_eq!(balances(store, &m).await, b);
    // The refused refund of an unknown original succeeds once it arrives.
    let late = purchase(&s.id("unknown"), &m, "10.00", t0);
    store
        .append(&late, &outcome(&late, &[("base", 10)]))
        .await
        .expect("late original");
    let redrive = &cases[0];
    let receipt = store
        .append(redrive, &outcome(redrive, &[]))
        .await
        .expect("re-drive");
    assert_eq!(receipt.delta, bal(-1, 0));
    let mismatch = outcome(&p, &[("base", 1)]);
    expect_kind(
        store.append(&cases[1], &mismatch).await,
        ErrorKind::Invalid,
        "outcome of another tx",
    );
    assert_conserved(store, &m).await;
}

/// Authorization, settlement (less and more than authorized), refunds of a
/// settled authorization by either id, reversal, and the refusals.
pub async fn check_card_lifecycle(store: &dyn LedgerStore) {
    let s = Scope::new("card");
    let m = s.member("m");
    let t0 = year(2091);
    let a1 = tx(TxKind::Authorization, &s.id("a1"), &m, "50.00", t0, None);
    let receipt = store
        .append(&a1, &outcome(&a1, &[("base", 50)]))
        .await
        .expect("auth");
    assert_eq!(
        receipt.balances,
        bal(0, 50),
        "an authorization earns pending points"
    );
    let early = referring(TxKind::Refund, &s.id("early"), &m, "10.00", t0, &a1.id);
    expect_kind(
        store.append(&early, &outcome(&early, &[])).await,
        ErrorKind::InvalidReference,
        "refund of an open authorization",
    );
    let s1 = referring(
        TxKind::Settlement,
        &s.id("s1"),
        &m,
        "40.00",
        days(t0, 1),
        &a1.id,
    );
    let receipt = store.append(&s1, &outcome(&s1, &[])).await.expect("settle");
    assert_eq!(receipt.balances, bal(40, 0), "settled for less: re-scaled");
    let again = referring(
        TxKind::Settlement,
        &s.id("s1b"),
        &m,
        "40.00",
        days(t0, 1),
        &a1.id,
    );
    expect_kind(
        store.append(&again, &outcome(&again, &[])).await,
        ErrorKind::InvalidReference,
        "second settlement",
    );
    let rev = referring(
        TxKind::Reversal,
        &s.id("rev1"),
        &m,
        "50.00",
        days(t0, 2),
        &a1.id,
    );
    expect_kind(
        store.append(&rev, &outcome(&rev, &[])).await,
        ErrorKind::InvalidReference,
        "reversal after settlement",
    );
    let r1 = referring(
        TxKind::Refund,
        &s.id("r1"),
        &m,
        "20.00",
        days(t0, 3),
        &a1.id,
    );
    let receipt = store
        .append(&r1, &outcome(&r1, &[]))
        .await
        .expect("refund by auth id");
    assert_eq!(receipt.delta, bal(-20, 0), "20 of 40 settled: half");
    let r2 = referring(
        TxKind::Refund,
        &s.id("r2"),
        &m,
        "20.00",
        days(t0, 3),
        &s1.id,
    );
    let receipt = store
        .append(&r2, &outcome(&r2, &[]))
        .await
        .expect("refund by settlement id");
    assert_eq!(receipt.delta, bal(-20, 0));
    assert_eq!(balances(store, &m).await, bal(0, 0));
    // Reversal voids; nothing may follow it.
    let a2 = tx(TxKind::Authorization, &s.id("a2"), &m, "30.00", t0, None);
    store
        .append(&a2, &outcome(&a2, &[("base", 30)]))
        .await
        .expect("auth");
    let rev2 = referring(
        TxKind::Reversal,
        &s.id("rev2"),
        &m,
        "30.00",
        days(t0, 1),
        &a2.id,
    );
    let receipt = store
        .append(&rev2, &outcome(&rev2, &[]))
        .await
        .expect("reversal");
    assert_eq!(receipt.balances, bal(0, 0));
    let late = referring(
        TxKind::Settlement,
        &s.id("s2"),
        &m,
        "30.00",
        days(t0, 2),
        &a2.id,
    );
    expect_kind(
        store.append(&late, &outcome(&late, &[])).await,
        ErrorKind::InvalidReference,
        "settlement after reversal",
    );
    // Settled for more than authorized: the authorized points, no more.
    let a3 = tx(TxKind::Authorization, &s.id("a3"), &m, "30.00", t0, None);
    store
        .append(&a3, &outcome(&a3, &[("base", 30)]))
        .await
        .expect("auth");
    let s3 = referring(
        TxKind::Settlement,
        &s.id("s3"),
        &m,
        "45.00",
        days(t0, 1),
        &a3.id,
    );
    assert_eq!(
        store
            .append(&s3, &outcome(&s3, &[]))
            .await
            .expect("settle")
            .balances,
        bal(30, 0)
    );
    let cb = referring(
        TxKind::Chargeback,
        &s.id("cb3"),
        &m,
        "45.00",
        days(t0, 9),
        &s3.id,
    );
    let receipt = store
        .append(&cb, &outcome(&cb, &[]))
        .await
        .expect("chargeback");
    assert_eq!(
        receipt.delta,
        bal(-30, 0),
        "a chargeback claws back like a refund"
    );
    assert_eq!(receipt.kind, EntryKind::Chargeback);
    assert_conserved(store, &m).await;
}

/// Budgets are trimmed to the room left (the trimmed outcome is stored),
/// counters follow the trim; a refund returns budget and counter room by
/// the same proportion.
pub async fn check_caps_and_budgets(store: &dyn LedgerStore) {
    let s = Scope::new("budget");
    let m = s.member("m");
    let budget = s.name("winter");
    let cap = s.name("cap");
    let spend = s.name("spend");
    let t0 = year(2090);
    let p1 = purchase(&s.id("p1"), &m, "70.00", t0);
    let o1 = with_counter(
        with_counter(
            with_budget(
                outcome(&p1, &[("base", 70), ("promo", 70)]),
                &budget,
                1,
                100,
            ),
            &cap,
            dec("70"),
            Some(1),
        ),
        &spend,
        dec("70.00"),
        None,
    );
    store.append(&p1, &o1).await.expect("p1");
    let p2 = purchase(&s.id("p2"), &m, "50.00", t0);
    let o2 = with_counter(
        with_counter(
            with_budget(
                outcome(&p2, &[("base", 50), ("promo", 50)]),
                &budget,
                1,
                100,
            ),
            &cap,
            dec("50"),
            Some(1),
        ),
        &spend,
        dec("50.00"),
        None,
    );
    let receipt = store.append(&p2, &o2).await.expect("p2");
    assert_eq!(receipt.trimmed, Points(20));
    assert_eq!(receipt.awards[1], (Arc::from("promo"), Points(30)));
    assert_eq!(receipt.delta, bal(80, 0));
    assert_eq!(store.budget_used(&budget).await.expect("used"), Points(100));
    let p3 = purchase(&s.id("p3"), &m, "10.00", t0);
    let o3 = with_budget(outcome(&p3, &[("promo", 10)]), &budget, 0, 100);
    assert_eq!(
        store.append(&p3, &o3).await.expect("p3").trimmed,
        Points(10),
        "no room left"
    );
    let keys = [lifetime(&cap), lifetime(&spend)];
    let view = store.member_view(&m, &keys).await.expect("view");
    assert_eq!(
        view.counter(&keys[0]),
        dec("100"),
        "the cap counter follows the trim"
    );
    assert_eq!(view.counter(&keys[1]), dec("120.00"));
    let r = referring(
        TxKind::Refund,
        &s.id("r2"),
        &m,
        "25.00",
        days(t0, 1),
        &p2.id,
    );
    let receipt = store.append(&r, &outcome(&r, &[])).await.expect("refund");
    assert_eq!(receipt.delta, bal(-40, 0), "25 + 15 clawed back");
    assert_eq!(store.budget_used(&budget).await.expect("used"), Points(85));
    let view = store.member_view(&m, &keys).await.expect("view");
    assert_eq!(view.counter(&keys[0]), dec("85"));
    assert_eq!(view.counter(&keys[1]), dec("95.00"));
    assert_eq!(
        store.budget_used(&s.name("never")).await.expect("unused"),
        Points(0)
    );
    assert_conserved(store, &m).await;
}

/// Adjustments: credits form a lot, debits may take the balance below zero;
/// wire adjustments too.
pub async fn check_adjustments(store: &dyn LedgerStore) {
    let s = Scope::new("adjust");
    let m = s.member("m");
    let t0 = year(2090);
    let credit = Adjustment {
        id: s.id("a1"),
        member: m.clone(),
        points: Points(500),
        reason: "welcome".into(),
        actor: "agent-1".into(),
        time: t0,
        expires_at: None,
    };
    store.adjust(&credit).await.expect("credit");
    let debit = Adjustment {
        id: s.id("a2"),
        points: Points(-700),
        ..credit.clone()
    };
    assert_eq!(
        store.adjust(&debit).await.expect("debit").balances,
        bal(-200, 0)
    );
    let wire = adjustment_tx(&s.id("a3"), &m, 250, t0);
    let receipt = store
        .append(&wire, &outcome(&wire, &[]))
        .await
        .expect("wire adjustment");
    assert_eq!(receipt.kind, EntryKind::Adjustment);
    assert_eq!(receipt.balances, bal(50, 0));
    let events = store.audit(&m, 0, 10).await.expect("audit");
    assert!(
        events[0].detail.contains("agent-1"),
        "the actor is in the audit trail"
    );
    let refund = referring(TxKind::Refund, &s.id("r"), &m, "1.00", t0, &wire.id);
    expect_kind(
        store.append(&refund, &outcome(&refund, &[])).await,
        ErrorKind::InvalidReference,
        "refund of an adjustment",
    );
    assert_conserved(store, &m).await;
}

/// Tier changes from outcomes apply at once and are audited.
pub async fn check_tier_from_outcome(store: &dyn LedgerStore) {
    let s = Scope::new("tier");
    let m = s.member("m");
    let t0 = year(2090);
    let p = purchase(&s.id("p"), &m, "10.00", t0);
    let mut o = outcome(&p, &[("base", 10)]);
    o.tier_change = Some(TierChange {
        from: None,
        to: Arc::from("gold"),
        effective: t0,
    });
    let receipt = store.append(&p, &o).await.expect("append");
    assert_eq!(receipt.tier.as_deref(), Some("gold"));
    assert_eq!(
        store
            .member_view(&m, &[])
            .await
            .expect("view")
            .tier
            .as_deref(),
        Some("gold")
    );
    let events = store.audit(&m, 0, 10).await.expect("audit");
    assert_eq!(
        events[0].tier,
        vec![TierEvent::Changed {
            from: None,
            to: Arc::from("gold")
        }]
    );
}

/// `store` holds what `reference` (the in-memory store, fed the same
/// requests) holds for `member`: balance, every posting (lot by lot), the
/// audit trail; and the member's balances are conserved.
async fn assert_same_member(
    store: &dyn LedgerStore,
    reference: &dyn LedgerStore,
    member: &MemberId,
) {
    use crate::store::MAX_PAGE_ROWS;
    let page = MAX_PAGE_ROWS;
    assert_eq!(
        store.balance(member).await.expect("balance"),
        reference.balance(member).await.expect("reference balance"),
        "{member}: balance"
    );
    assert_eq!(
        store.history(member, 0, page).await.expect("history"),
        reference
            .history(member, 0, page)
            .await
            .expect("reference history"),
        "{member}: postings"
    );
    assert_eq!(
        store.audit(member, 0, page).await.expect("audit"),
        reference
            .audit(member, 0, page)
            .await
            .expect("reference audit"),
        "{member}: audit trail"
    );
    assert_conserved(store, member).await;
}

/// Views carry the member's version, [`advance_view`] predicts exactly the
/// view the store gives after an earn it can predict (counters, held and
/// pending lots, a tier change now and one scheduled), and an outcome that
/// expects another version is refused as stale, alone or in a batch,
/// changing nothing; a duplicate is still recognised whatever it expects.
///
/// [`advance_view`]: crate::ledger::advance_view
pub async fn check_predicted_views(store: &dyn LedgerStore) {
    use crate::ledger::advance_view;
    let s = Scope::new("predict");
    let m = s.member("m");
    let t0 = year(2094);
    let (k1, k2) = (s.name("k1"), s.name("k2"));
    let keys = [lifetime(&k1), lifetime(&k2)];
    let view = store.member_view(&m, &keys).await.expect("view");
    assert_eq!(view.version, 0, "a member never seen is at version 0");

    let gold = TierChange {
        from: None,
        to: Arc::from("gold"),
        effective: t0,
    };
    let platinum_later = TierChange {
        from: Some(Arc::from("gold")),
        to: Arc::from("platinum"),
        effective: days(t0, 30),
    };
    let p1 = purchase(&s.id("p1"), &m, "10.00", t0);
    let mut a1 = purchase(&s.id("a1"), &m, "7.00", t0);
    a1.kind = TxKind::Authorization;
    let p2 = purchase(&s.id("p2"), &m, "5.00", days(t0, 1));
    let p3 = purchase(&s.id("p3"), &m, "4.00", days(t0, 2));
    let p4 = purchase(&s.id("p4"), &m, "3.00", days(t0, 3));
    let mut o1 = with_counter(
        outcome(&p1, &[("base", 10), ("bonus", 5)]),
        &k1,
        dec("1"),
        None,
    );
    o1.tier_change = Some(gold);
    let o_a1 = with_counter(outcome(&a1, &[("base", 7)]), &k1, dec("2.5"), None);
    let o2 = outcome_with_terms(
        &p2,
        &[("base", 5)],
        LotTerms {
            available_at: Some(days(t0, 20)),
            expires_at: None,
        },
    );
    let mut o3 = with_counter(
        with_counter(outcome(&p3, &[("base", 4)]), &k2, dec("4"), Some(0)),
        &k2,
        dec("-1.25"),
        Some(0),
    );
    o3.tier_change = Some(platinum_later);
    let o4 = outcome(&p4, &[]);
    for (t, o) in [(&p1, o1), (&a1, o_a1), (&p2, o2), (&p3, o3), (&p4, o4)] {
        let before = store.member_view(&m, &keys).await.expect("view before");
        let mut predicted = before.clone();
        assert!(advance_view(&mut predicted, t, &o), "{}: predictable", t.id);
        let mut o = o;
        o.expects_version = Some(before.version);
        let receipt = store
            .append(t, &o)
            .await
            .expect("append at the expected version");
        assert_eq!(receipt.version, before.version + 1);
        let after = store.member_view(&m, &keys).await.expect("view after");
        assert_eq!(
            predicted, after,
            "{}: the prediction is the store's view",
            t.id
        );
    }
    let view = store.member_view(&m, &keys).await.expect("view");
    assert_eq!(view.version, 5);
    assert_eq!(
        view.balance,
        Points(19),
        "10 + 5 + 4; held and pending apart"
    );
    assert_eq!(
        view.tier.as_deref(),
        Some("gold"),
        "platinum only scheduled"
    );

    // Stale alone: refused, nothing changed.
    let p5 = purchase(&s.id("p5"), &m, "9.00", days(t0, 4));
    let mut o5 = outcome(&p5, &[("base", 9)]);
    o5.expects_version = Some(4);
    expect_kind(
        store.append(&p5, &o5).await,
        ErrorKind::Stale,
        "stale alone",
    );
    assert_eq!(store.member_view(&m, &keys).await.expect("view"), view);
    // In a batch: the right expectations apply, the wrong one is refused.
    let p6 = purchase(&s.id("p6"), &m, "6.00", days(t0, 4));
    let mut o6 = outcome(&p6, &[("base", 6)]);
    o6.expects_version = Some(6);
    o5.expects_version = Some(5);
    let p7 = purchase(&s.id("p7"), &m, "2.00", days(t0, 4));
    let mut o7 = outcome(&p7, &[("base", 2)]);
    o7.expects_version = Some(6);
    let got: Vec<_> = store
        .append_batch(&[(p5.clone(), o5.clone()), (p6, o6), (p7, o7)])
        .await
        .expect("batch")
        .iter()
        .map(summary)
        .collect();
    assert!(
        matches!(&got[0], Ok(r) if r.version == 6 && !r.duplicate),
        "{got:?}"
    );
    assert!(matches!(&got[1], Ok(r) if r.version == 7), "{got:?}");
    assert_eq!(got[2], Err(ErrorKind::Stale), "{got:?}");
    // A duplicate is a duplicate, whatever version it expected.
    o5.expects_version = Some(1);
    let again = store.append(&p5, &o5).await.expect("duplicate");
    assert!(again.duplicate && again.version == 6);
    let view = store.member_view(&m, &keys).await.expect("view");
    assert_eq!((view.version, view.balance), (7, Points(34)));
    assert_conserved(store, &m).await;

    // Nothing predicted past a budget claim or a refund.
    let p8 = purchase(&s.id("p8"), &m, "1.00", days(t0, 5));
    let budgeted = with_budget(outcome(&p8, &[("promo", 1)]), &s.name("promo"), 0, 100);
    let mut unchanged = view.clone();
    assert!(!advance_view(&mut unchanged, &p8, &budgeted));
    let r1 = referring(TxKind::Refund, &s.id("r1"), &m, "1.00", days(t0, 5), &p1.id);
    assert!(!advance_view(&mut unchanged, &r1, &outcome(&r1, &[])));
    assert_eq!(
        unchanged, view,
        "a refused prediction leaves the view alone"
    );
}

/// [`ViewChain`] predicts exactly the view the store gives after a run of
/// one member's transactions in which settlements follow their
/// authorizations: settled in full, in part and above the authorized
/// amount, with the lot available at once, pending until later, and
/// without points; counters rescaled; and the settlement's own tier change.
/// A settlement of an authorization outside the run, or settled twice, is
/// not predicted.
///
/// [`ViewChain`]: crate::ledger::ViewChain
pub async fn check_chained_settlements(store: &dyn LedgerStore) {
    use crate::ledger::ViewChain;
    let s = Scope::new("chain");
    let m = s.member("m");
    let t0 = year(2095);
    let k = s.name("spend");
    let keys = [lifetime(&k)];
    let auth = |name: &str, amount: &str, hours: i64| {
        let mut a = purchase(&s.id(name), &m, amount, t0 + chrono::Duration::hours(hours));
        a.kind = TxKind::Authorization;
        a
    };
    let settle = |name: &str, amount: &str, hours: i64, original: &Transaction| {
        referring(
            TxKind::Settlement,
            &s.id(name),
            &m,
            amount,
            t0 + chrono::Duration::hours(hours),
            &original.id,
        )
    };
    let a1 = auth("a1", "20.00", 0);
    let a2 = auth("a2", "9.99", 1);
    let a3 = auth("a3", "3.00", 2);
    let a4 = auth("a4", "5.00", 3);
    let p1 = purchase(&s.id("p1"), &m, "4.00", t0 + chrono::Duration::hours(4));
    // a1 settled in part (13.37 of 20.00), a2 above (capped), a3 (no
    // points) in full, a4 pending until day 10, settled on day 1.
    let s1 = settle("s1", "13.37", 5, &a1);
    let s2 = settle("s2", "12.00", 6, &a2);
    let s3 = settle("s3", "3.00", 7, &a3);
    let s4 = settle("s4", "2.50", 24, &a4);
    let o_a1 = with_counter(
        outcome(&a1, &[("base", 20), ("bonus", 7)]),
        &k,
        dec("20.00"),
        None,
    );
    let o_a2 = with_counter(outcome(&a2, &[("base", 9)]), &k, dec("9.99"), None);
    let o_a3 = with_counter(outcome(&a3, &[]), &k, dec("3.00"), None);
    let o_a4 = with_counter(
        outcome_with_terms(
            &a4,
            &[("base", 5)],
            LotTerms {
                available_at: Some(days(t0, 10)),
                expires_at: None,
            },
        ),
        &k,
        dec("5.00"),
        None,
    );
    let o_p1 = outcome(&p1, &[("base", 4)]);
    let mut o_s3 = outcome(&s3, &[]);
    o_s3.tier_change = Some(TierChange {
        from: None,
        to: Arc::from("silver"),
        effective: s3.time,
    });
    let run: Vec<(Transaction, crate::Outcome)> = vec![
        (a1.clone(), o_a1),
        (a2.clone(), o_a2),
        (a3.clone(), o_a3),
        (a4.clone(), o_a4),
        (p1.clone(), o_p1),
        (s1.clone(), outcome(&s1, &[])),
        (s2.clone(), outcome(&s2, &[])),
        (s3.clone(), o_s3),
        (s4.clone(), outcome(&s4, &[])),
    ];
    let start = store.member_view(&m, &keys).await.expect("view");
    let mut chain = ViewChain::new();
    let mut view = start.clone();
    let mut batch = Vec::new();
    for (t, o) in &run {
        let mut o = o.clone();
        o.expects_version = Some(view.version);
        assert!(chain.advance(&mut view, t, &o), "{}: predictable", t.id);
        batch.push((t.clone(), o));
    }
    // Applied one by one, each step's view is the store's.
    let mut chain = ViewChain::new();
    let mut predicted = start;
    for (t, o) in &batch {
        assert!(chain.advance(&mut predicted, t, o));
        let receipt = store.append(t, o).await.expect("append as predicted");
        assert_eq!(receipt.version, predicted.version);
        let after = store.member_view(&m, &keys).await.expect("view after");
        assert_eq!(
            predicted, after,
            "{}: the prediction is the store's view",
            t.id
        );
    }
    assert_eq!(predicted, view, "the run predicted as a whole");
    // 20+7 scaled to 13.37/20 → 13 + 4; 9 capped at 9; 0; 5 pending.
    assert_eq!(view.balance, Points(4 + 13 + 4 + 9));
    assert_eq!(view.tier.as_deref(), Some("silver"));
    assert_conserved(store, &m).await;

    // Not predicted: an authorization outside the run, or settled again.
    let mut other = ViewChain::new();
    let mut unchanged = view.clone();
    let s5 = settle("s5", "1.00", 30, &a1);
    assert!(!other.advance(&mut unchanged, &s5, &outcome(&s5, &[])));
    let a5 = auth("a5", "2.00", 31);
    let s6 = settle("s6", "2.00", 32, &a5);
    let s7 = settle("s7", "2.00", 33, &a5);
    assert!(other.advance(&mut unchanged, &a5, &outcome(&a5, &[("base", 2)])));
    assert!(other.advance(&mut unchanged, &s6, &outcome(&s6, &[])));
    let before = unchanged.clone();
    assert!(!other.advance(&mut unchanged, &s7, &outcome(&s7, &[])));
    assert_eq!(
        unchanged, before,
        "a refused prediction leaves the view alone"
    );
}

/// Clawbacks that must take from a member's other lots, among many lots
/// of equal expiry and age (spend order then falls to the id, compared
/// bytewise: `B` before `a`): refunds and a chargeback alone and in a
/// batch with an original purchased in the same batch, each answered like
/// the in-memory store answers them, with the same postings (lot by lot),
/// balances and audit trail, and conserved.
pub async fn check_clawback_from_other_lots(store: &dyn LedgerStore) {
    let s = Scope::new("claw");
    let m = s.member("m");
    let t0 = year(2095);
    let reference = crate::memory::MemoryStore::new(crate::ledger::LedgerConfig::default());
    async fn both(
        store: &dyn LedgerStore,
        reference: &dyn LedgerStore,
        t: Transaction,
        o: crate::outcome::Outcome,
    ) -> Result<crate::ledger::Receipt, ErrorKind> {
        let got = summary(&store.append(&t, &o).await);
        let want = summary(&reference.append(&t, &o).await);
        assert_eq!(got, want, "{} answered like the in-memory store", t.id);
        got
    }
    let mut purchases = Vec::new();
    for i in 0..24 {
        // Same earn time and expiry in pairs, so spend order falls to the
        // id (bytewise: `B` before `a`, which a natural-language collation
        // of the database would put the other way round).
        let name = if i % 2 == 0 {
            format!("a{i:02}")
        } else {
            format!("B{i:02}")
        };
        let p = purchase(&s.id(&name), &m, "10.00", days(t0, i / 4));
        let terms = LotTerms {
            available_at: None,
            expires_at: (i % 3 != 0).then(|| days(t0, 400 + i / 6)),
        };
        both(
            store,
            &reference,
            p.clone(),
            outcome_with_terms(&p, &[("base", 10 + i)], terms),
        )
        .await
        .expect("purchase");
        purchases.push(p);
    }
    let spend = Redemption {
        id: s.id("spend"),
        member: m.clone(),
        points: Points(200),
        time: days(t0, 7),
        reference: None,
    };
    let got = summary(&store.redeem(&spend).await);
    assert_eq!(got, summary(&reference.redeem(&spend).await), "redemption");
    // The first purchases' lots are spent: their refunds take from others.
    let refund = |name: &str, original: &Transaction, amount: &str, kind: TxKind| {
        referring(kind, &s.id(name), &m, amount, days(t0, 8), &original.id)
    };
    let r1 = refund("r1", &purchases[1], "10.00", TxKind::Refund);
    assert!(both(store, &reference, r1.clone(), outcome(&r1, &[]))
        .await
        .is_ok());
    let r2 = refund("r2", &purchases[2], "4.00", TxKind::Refund);
    assert!(both(store, &reference, r2.clone(), outcome(&r2, &[]))
        .await
        .is_ok());
    let fresh = purchase(&s.id("fresh"), &m, "30.00", days(t0, 8));
    let batch = vec![
        (fresh.clone(), outcome(&fresh, &[("base", 30)])),
        {
            let r = refund("r3", &fresh, "30.00", TxKind::Refund);
            (r.clone(), outcome(&r, &[]))
        },
        {
            let r = refund("r4", &purchases[0], "10.00", TxKind::Chargeback);
            (r.clone(), outcome(&r, &[]))
        },
        {
            let r = refund("r5", &purchases[2], "6.00", TxKind::Refund);
            (r.clone(), outcome(&r, &[]))
        },
    ];
    let mut want = Vec::new();
    for (t, o) in &batch {
        want.push(summary(&reference.append(t, o).await));
    }
    let got: Vec<_> = store
        .append_batch(&batch)
        .await
        .expect("batch")
        .iter()
        .map(summary)
        .collect();
    assert_eq!(got, want, "the batch answers like the in-memory store");
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_same_member(store, &reference, &m).await;
}

/// Reconciliation finds no drift in a store that only the ledger wrote.
pub async fn check_reconcile(store: &dyn LedgerStore) {
    let report = store.reconcile().await.expect("reconcile");
    assert!(report.is_clean(), "drift: {:?}", report.drift);
}

/// Concurrent writers: a shared budget is never exceeded, one member's
/// parallel appends all count, and parallel duplicates apply once.
pub async fn check_concurrency(store: Arc<dyn LedgerStore>) {
    let s = Scope::new("conc");
    let budget = s.name("budget");
    let t0 = year(2090);
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = store.clone();
        let s = s.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let m = s.member(&format!("m{task}"));
            let shared = s.member("shared");
            let dup = purchase(&s.id("dup"), &shared, "1.00", t0);
            let mut fresh = 0;
            for i in 0..20 {
                let p = purchase(&s.id(&format!("p{task}-{i}")), &m, "10.00", t0);
                let o = with_budget(outcome(&p, &[("promo", 10)]), &budget, 0, 500);
                store.append(&p, &o).await.expect("append");
                let q = purchase(&s.id(&format!("q{task}-{i}")), &shared, "1.00", t0);
                store
                    .append(&q, &outcome(&q, &[("base", 1)]))
                    .await
                    .expect("append shared");
                if !store
                    .append(&dup, &outcome(&dup, &[("base", 1)]))
                    .await
                    .expect("dup")
                    .duplicate
                {
                    fresh += 1;
                }
            }
            fresh
        }));
    }
    let mut fresh = 0;
    for task in tasks {
        fresh += task.await.expect("task");
    }
    assert_eq!(fresh, 1, "parallel duplicates apply once");
    assert_eq!(store.budget_used(&budget).await.expect("used"), Points(500));
    let mut granted = 0;
    for task in 0..8 {
        let m = s.member(&format!("m{task}"));
        granted += balances(&*store, &m).await.available.get();
        assert_conserved(&*store, &m).await;
    }
    assert_eq!(granted, 500, "the budget's points, exactly");
    let shared = s.member("shared");
    assert_eq!(balances(&*store, &shared).await, bal(161, 0));
    assert_conserved(&*store, &shared).await;
}

/// Expiry (sweep): first-expiring-first redemption, the boundary instant,
/// idempotent sweeps, and a refund after expiry (the expired part forgiven).
pub async fn sweep_check_expiry(store: &dyn LedgerStore) {
    let s = Scope::new("expiry");
    let m = s.member("m");
    let t0 = year(2031);
    let terms = |d: i64| LotTerms {
        available_at: None,
        expires_at: Some(days(t0, d)),
    };
    let a = purchase(&s.id("a"), &m, "100.00", t0);
    let b = purchase(&s.id("b"), &m, "100.00", t0);
    let c = purchase(&s.id("c"), &m, "100.00", t0);
    store
        .append(&a, &outcome_with_terms(&a, &[("base", 100)], terms(200)))
        .await
        .expect("a");
    store
        .append(&b, &outcome_with_terms(&b, &[("base", 100)], terms(100)))
        .await
        .expect("b");
    store
        .append(&c, &outcome(&c, &[("base", 100)]))
        .await
        .expect("c");
    let r = Redemption {
        id: s.id("red"),
        member: m.clone(),
        points: Points(150),
        time: days(t0, 1),
        reference: None,
    };
    store.redeem(&r).await.expect("redeem");
    // b (first to expire) is empty, a holds 50, c 100.
    store
        .expire_due(days(t0, 100) - Duration::seconds(1))
        .await
        .expect("sweep");
    assert_eq!(
        balances(store, &m).await,
        bal(150, 0),
        "nothing expires before its instant"
    );
    store.expire_due(days(t0, 100)).await.expect("sweep");
    assert_eq!(balances(store, &m).await, bal(150, 0), "b was spent first");
    store
        .expire_due(days(t0, 200))
        .await
        .expect("sweep at the boundary instant");
    assert_eq!(
        balances(store, &m).await,
        bal(100, 0),
        "a's 50 expired at its instant"
    );
    let v = version(store, &m).await;
    store.expire_due(days(t0, 300)).await.expect("sweep again");
    assert_eq!(version(store, &m).await, v, "expiry is idempotent");
    let history = store.history(&m, 0, 100).await.expect("history");
    assert_eq!(
        history
            .iter()
            .filter(|p| p.kind == PostingKind::Expire)
            .count(),
        1
    );
    // Refund of a: 100 clawed; 50 were spent (from c), 50 expired (forgiven).
    let refund = referring(
        TxKind::Refund,
        &s.id("ra"),
        &m,
        "100.00",
        days(t0, 250),
        &a.id,
    );
    let receipt = store
        .append(&refund, &outcome(&refund, &[]))
        .await
        .expect("refund after expiry");
    assert_eq!(receipt.delta, bal(-50, 0));
    assert_eq!(balances(store, &m).await, bal(50, 0));
    let refund_b = referring(
        TxKind::Refund,
        &s.id("rb"),
        &m,
        "100.00",
        days(t0, 250),
        &b.id,
    );
    let receipt = store
        .append(&refund_b, &outcome(&refund_b, &[]))
        .await
        .expect("refund of the spent lot");
    assert_eq!(receipt.delta, bal(-100, 0));
    assert_eq!(
        balances(store, &m).await,
        bal(-50, 0),
        "spent points are owed"
    );
    assert_conserved(store, &m).await;
}

/// Pending points (sweep): released at their instant; a refund while
/// pending claws back from pending.
pub async fn sweep_check_pending(store: &dyn LedgerStore) {
    let s = Scope::new("pending");
    let m = s.member("m");
    let t0 = year(2032);
    let terms = LotTerms {
        available_at: Some(days(t0, 14)),
        expires_at: None,
    };
    let p = purchase(&s.id("p"), &m, "80.00", t0);
    store
        .append(&p, &outcome_with_terms(&p, &[("base", 80)], terms.clone()))
        .await
        .expect("p");
    let q = purchase(&s.id("q"), &m, "20.00", t0);
    store
        .append(&q, &outcome_with_terms(&q, &[("base", 20)], terms))
        .await
        .expect("q");
    assert_eq!(balances(store, &m).await, bal(0, 100));
    let r = referring(TxKind::Refund, &s.id("r"), &m, "40.00", days(t0, 1), &p.id);
    assert_eq!(
        store
            .append(&r, &outcome(&r, &[]))
            .await
            .expect("refund")
            .delta,
        bal(0, -40)
    );
    store.release_pending(days(t0, 13)).await.expect("sweep");
    assert_eq!(balances(store, &m).await, bal(0, 60));
    store.release_pending(days(t0, 14)).await.expect("sweep");
    assert_eq!(balances(store, &m).await, bal(60, 0));
    let v = version(store, &m).await;
    store
        .release_pending(days(t0, 15))
        .await
        .expect("sweep again");
    assert_eq!(version(store, &m).await, v, "release is idempotent");
    assert_conserved(store, &m).await;
}

/// An authorization that never settles is voided once `ttl` has passed
/// (pass the store's configured authorization lifetime).
pub async fn sweep_check_authorization_lapse(store: &dyn LedgerStore, ttl: Duration) {
    let s = Scope::new("lapse");
    let m = s.member("m");
    let t0 = year(2033);
    let budget = s.name("b");
    let a = tx(TxKind::Authorization, &s.id("a"), &m, "25.00", t0, None);
    let o = with_budget(outcome(&a, &[("base", 25)]), &budget, 0, 1000);
    store.append(&a, &o).await.expect("auth");
    assert_eq!(store.budget_used(&budget).await.expect("used"), Points(25));
    store
        .expire_authorizations(t0 + ttl - Duration::seconds(1))
        .await
        .expect("sweep");
    assert_eq!(balances(store, &m).await, bal(0, 25));
    store.expire_authorizations(t0 + ttl).await.expect("sweep");
    assert_eq!(
        balances(store, &m).await,
        bal(0, 0),
        "voided at its lapse time"
    );
    assert_eq!(
        store.budget_used(&budget).await.expect("used"),
        Points(0),
        "budget returned"
    );
    let late = referring(TxKind::Settlement, &s.id("s"), &m, "25.00", t0 + ttl, &a.id);
    expect_kind(
        store.append(&late, &outcome(&late, &[])).await,
        ErrorKind::InvalidReference,
        "settlement after lapse",
    );
    let events = store.audit(&m, 0, 10).await.expect("audit");
    assert_eq!(
        events.last().map(|e| e.kind),
        Some(EntryKind::AuthorizationExpiry)
    );
    assert_conserved(store, &m).await;
}

/// Tier review (sweep): a downgrade decided with grace is scheduled, a
/// requalification cancels it, and it takes effect once the grace is over.
pub async fn sweep_check_tier_grace(store: &dyn LedgerStore) {
    let s = Scope::new("grace");
    let m = s.member("m");
    let t0 = year(2034);
    let review = |tier: &str, at: i64, effective: i64| TierReview {
        member: m.clone(),
        tier: Arc::from(tier),
        effective: days(t0, effective),
        as_of: days(t0, at),
    };
    assert_eq!(
        store
            .review_tier(&review("gold", 0, 0))
            .await
            .expect("gold")
            .tier
            .as_deref(),
        Some("gold")
    );
    let v = version(store, &m).await;
    store
        .review_tier(&review("gold", 1, 1))
        .await
        .expect("same tier");
    assert_eq!(
        version(store, &m).await,
        v,
        "deciding the same tier changes nothing"
    );
    store
        .review_tier(&review("silver", 10, 100))
        .await
        .expect("downgrade with grace");
    store
        .review_tier(&review("gold", 20, 20))
        .await
        .expect("requalified");
    store
        .apply_scheduled_tiers(days(t0, 150))
        .await
        .expect("sweep");
    assert_eq!(
        store.balance(&m).await.expect("balance").tier.as_deref(),
        Some("gold"),
        "cancelled"
    );
    store
        .review_tier(&review("silver", 200, 290))
        .await
        .expect("downgrade with grace");
    store
        .apply_scheduled_tiers(days(t0, 289))
        .await
        .expect("sweep");
    assert_eq!(
        store.balance(&m).await.expect("balance").tier.as_deref(),
        Some("gold"),
        "within grace"
    );
    store
        .apply_scheduled_tiers(days(t0, 290))
        .await
        .expect("sweep");
    assert_eq!(
        store.balance(&m).await.expect("balance").tier.as_deref(),
        Some("silver"),
        "after grace"
    );
    let tiers: Vec<TierEvent> = store
        .audit(&m, 0, 100)
        .await
        .expect("audit")
        .into_iter()
        .flat_map(|e| e.tier)
        .collect();
    let gold: Arc<str> = Arc::from("gold");
    let silver: Arc<str> = Arc::from("silver");
    assert_eq!(
        tiers,
        vec![
            TierEvent::Changed {
                from: None,
                to: gold.clone()
            },
            TierEvent::Scheduled {
                to: silver.clone(),
                effective: days(t0, 100)
            },
            TierEvent::Cancelled {
                to: silver.clone(),
                effective: days(t0, 100)
            },
            TierEvent::Scheduled {
                to: silver.clone(),
                effective: days(t0, 290)
            },
            TierEvent::Changed {
                from: Some(gold),
                to: silver
            },
        ]
    );
}

/// A [`BalanceCache`]: versioned puts, eviction guards, clear.
pub async fn check_balance_cache(cache: &dyn BalanceCache) {
    let s = Scope::new("cache");
    let m = s.member("m");
    let entry = |version: u64, available: i64| CachedMember {
        member: m.clone(),
        version,
        balances: bal(available, 0),
        tier: Some(Arc::from("gold")),
        recent: Vec::new(),
    };
    assert_eq!(cache.get(&m).await.expect("get"), None);
    assert_eq!(
        cache.put(&entry(5, 50)).await.expect("put"),
        CachePut::Written
    );
    assert_eq!(
        cache.put(&entry(4, 40)).await.expect("put"),
        CachePut::Stale { current: 5 }
    );
    assert_eq!(cache.get(&m).await.expect("get"), Some(entry(5, 50)));
    assert_eq!(
        cache.put(&entry(6, 60)).await.expect("put"),
        CachePut::Written
    );
    cache.evict(&m, 8).await.expect("evict");
    assert_eq!(cache.get(&m).await.expect("get"), None);
    assert_eq!(
        cache.put(&entry(7, 70)).await.expect("put"),
        CachePut::Stale { current: 8 }
    );
    assert_eq!(
        cache.put(&entry(8, 80)).await.expect("put"),
        CachePut::Written
    );
    assert_eq!(
        cache.get(&m).await.expect("get").map(|e| e.version),
        Some(8)
    );
    // Batched puts: applied in order, each against what the previous left
    // (a member twice, stale versions refused, guards respected).
    let n = s.member("n");
    let other = |version: u64, available: i64| CachedMember {
        member: n.clone(),
        ..entry(version, available)
    };
    assert_eq!(
        cache
            .put_many(&[
                entry(9, 90),
                entry(7, 70),
                other(3, 30),
                other(2, 20),
                entry(10, 100)
            ])
            .await
            .expect("put_many"),
        vec![
            CachePut::Written,
            CachePut::Stale { current: 9 },
            CachePut::Written,
            CachePut::Stale { current: 3 },
            CachePut::Written,
        ]
    );
    assert_eq!(cache.get(&m).await.expect("get"), Some(entry(10, 100)));
    assert_eq!(cache.get(&n).await.expect("get"), Some(other(3, 30)));
    cache.evict(&n, 6).await.expect("evict");
    assert_eq!(
        cache
            .put_many(&[other(5, 50), other(6, 60)])
            .await
            .expect("put_many"),
        vec![CachePut::Stale { current: 6 }, CachePut::Written]
    );
    assert_eq!(cache.get(&n).await.expect("get"), Some(other(6, 60)));
    assert!(cache.put_many(&[]).await.expect("empty").is_empty());
    cache.clear().await.expect("clear");
    assert_eq!(cache.get(&m).await.expect("get"), None);
}

/// Every store check, the parallel-safe ones first, then the sweep checks
/// one after the other, then reconciliation.
pub async fn run_all(store: Arc<dyn LedgerStore>, authorization_ttl: Duration) {
    let s = &*store;
    check_earn(s).await;
    check_idempotency(s).await;
    check_batches(s).await;
    check_member_views(s).await;
    check_member_walk(s).await;
    check_outbox(s).await;
    check_redemption(s).await;
    check_partial_refunds(s).await;
    check_refund_after_redemption(s).await;
    check_invalid_references(s).await;
    check_card_lifecycle(s).await;
    check_caps_and_budgets(s).await;
    check_adjustments(s).await;
    check_tier_from_outcome(s).await;
    check_predicted_views(s).await;
    check_clawback_from_other_lots(s).await;
    check_concurrency(store.clone()).await;
    sweep_check_expiry(s).await;
    sweep_check_pending(s).await;
    sweep_check_authorization_lapse(s, authorization_ttl).await;
    sweep_check_tier_grace(s).await;
    check_reconcile(s).await;
}
