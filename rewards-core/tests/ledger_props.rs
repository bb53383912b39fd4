//! Property tests of the ledger through the in-memory store: for random
//! sequences of purchases, authorizations and their lifecycle, refunds
//! (partial, repeated, of unknown originals, of refunds), chargebacks,
//! redemptions, adjustments, duplicates, conflicts and sweeps:
//!
//! - balance == sum of postings == replay of the audit trail, for every member;
//! - the store rebuilt from its event log has the same balances, postings
//!   and audit trail;
//! - no lot's remaining points go negative;
//! - clawbacks never exceed what the original earned;
//! - duplicates and refused requests change nothing;
//! - a budget is never exceeded and equals what its draws keep;
//! - an earn without budget claims leaves exactly the view `advance_view` predicts;
//! - a member's run of transactions, settlements of its own authorizations
//!   included, leaves exactly the views `ViewChain` predicts.

// The helpers below are test code called from the property.
#![allow(clippy::unwrap_used)]

use chrono::Duration;
use proptest::prelude::*;
use std::collections::HashMap;

use rewards_core::conformance::{self, fixtures::*};
use rewards_core::ledger::{
    advance_view, LedgerConfig, LotStatus, PostingKind, Redemption, ViewChain,
};
use rewards_core::memory::{FsyncPolicy, MemoryStore};
use rewards_core::outcome::LotTerms;
use rewards_core::store::LedgerStore;
use rewards_core::{
    CounterKey, ErrorKind, MemberId, MemberView, Points, Transaction, TxId, TxKind,
};

const MEMBERS: usize = 3;
const BUDGET_LIMIT: i64 = 400;

#[derive(Debug, Clone)]
enum Op {
    Purchase {
        member: usize,
        cents: u32,
        awards: Vec<i64>,
        expires_in: Option<i64>,
        pending_for: Option<i64>,
        budget: bool,
    },
    Authorize {
        member: usize,
        cents: u32,
        points: i64,
        budget: bool,
    },
    Settle {
        pick: usize,
        percent: u32,
    },
    Reverse {
        pick: usize,
    },
    Refund {
        pick: usize,
        cents: u32,
        chargeback: bool,
    },
    RefundUnknown {
        member: usize,
    },
    RefundOfRefund {
        pick: usize,
    },
    Redeem {
        member: usize,
        points: i64,
    },
    Adjust {
        member: usize,
        points: i64,
    },
    Duplicate {
        pick: usize,
    },
    Conflict {
        pick: usize,
    },
    Expire {
        days_ahead: i64,
    },
    Release {
        days_ahead: i64,
    },
    LapseAuthorizations {
        days_ahead: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let member = 0..MEMBERS;
    prop_oneof![
        6 => (member.clone(), 1u32..50_000, prop::collection::vec(0i64..300, 1..3),
              prop::option::of(0i64..40), prop::option::of(0i64..10), any::<bool>())
            .prop_map(|(member, cents, awards, expires_in, pending_for, budget)| Op::Purchase {
                member, cents, awards, expires_in, pending_for, budget }),
        2 => (member.clone(), 1u32..50_000, 0i64..300, any::<bool>())
            .prop_map(|(member, cents, points, budget)| Op::Authorize { member, cents, points, budget }),
        2 => (any::<usize>(), 30u32..160).prop_map(|(pick, percent)| Op::Settle { pick, percent }),
        1 => any::<usize>().prop_map(|pick| Op::Reverse { pick }),
        4 => (any::<usize>(), 1u32..40_000, prop::bool::weighted(0.2))
            .prop_map(|(pick, cents, chargeback)| Op::Refund { pick, cents, chargeback }),
        1 => member.clone().prop_map(|member| Op::RefundUnknown { member }),
        1 => any::<usize>().prop_map(|pick| Op::RefundOfRefund { pick }),
        3 => (member.clone(), 1i64..400).prop_map(|(member, points)| Op::Redeem { member, points }),
        1 => (member.clone(), -300i64..300).prop_map(|(member, points)| Op::Adjust { member, points }),
        2 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Conflict { pick }),
        1 => (0i64..30).prop_map(|days_ahead| Op::Expire { days_ahead }),
        1 => (0i64..15).prop_map(|days_ahead| Op::Release { days_ahead }),
        1 => (0i64..40).prop_map(|days_ahead| Op::LapseAuthorizations { days_ahead }),
    ]
}

fn amount(cents: u32) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

struct Run {
    store: MemoryStore,
    scope: Scope,
    members: Vec<MemberId>,
    /// Every appended transaction with its outcome (for duplicates).
    sent: Vec<(Transaction, rewards_core::Outcome)>,
    purchases: Vec<Transaction>,
    auths: Vec<(Transaction, u32)>,
    refunds: Vec<Transaction>,
    next: usize,
    /// Per member: the chain of its transactions appended since the last
    /// change made outside `send`, and the view it predicts.
    chains: HashMap<MemberId, (ViewChain, MemberView)>,
    /// The counter keys views are read with (every key the run writes).
    keys: Vec<CounterKey>,
}

impl Run {
    fn id(&mut self, kind: &str) -> TxId {
        self.next += 1;
        self.scope.id(&format!("{kind}{}", self.next))
    }

    /// Appends; a refused request must leave the member's version
    /// unchanged, and an applied one the view [`advance_view`] predicted
    /// (when it predicts one).
    async fn send(&mut self, tx: Transaction, o: rewards_core::Outcome) -> Option<ErrorKind> {
        let before = self.store.balance(&tx.member).await.ok();
        let keys: Vec<_> = o.counters.iter().map(|c| c.key.clone()).collect();
        let mut predicted = self.store.member_view(&tx.member, &keys).await.unwrap();
        let predictable = advance_view(&mut predicted, &tx, &o);
        let (mut chain, mut chained) = match self.chains.remove(&tx.member) {
            Some(c) => c,
            None => (
                ViewChain::new(),
                self.store
                    .member_view(&tx.member, &self.keys)
                    .await
                    .unwrap(),
            ),
        };
        let chain_predicts = chain.advance(&mut chained, &tx, &o);
        match self.store.append(&tx, &o).await {
            Ok(receipt) => {
                assert!(!receipt.duplicate);
                if predictable {
                    let after = self.store.member_view(&tx.member, &keys).await.unwrap();
                    assert_eq!(predicted, after, "{} {}: predicted view", tx.kind, tx.id);
                }
                if chain_predicts {
                    let after = self
                        .store
                        .member_view(&tx.member, &self.keys)
                        .await
                        .unwrap();
                    assert_eq!(
                        chained, after,
                        "{} {}: view predicted by the chain",
                        tx.kind, tx.id
                    );
                    self.chains.insert(tx.member.clone(), (chain, chained));
                }
                self.sent.push((tx, o));
                None
            }
            Err(e) => {
                let after = self.store.balance(&tx.member).await.ok();
                assert_eq!(before, after, "a refused {} changed the member", tx.kind);
                Some(e.kind())
            }
        }
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let config = LedgerConfig {
        authorization_ttl_secs: 20 * 24 * 3600,
    };
    let store = MemoryStore::open(&path, config.clone(), FsyncPolicy::Never).unwrap();
    let scope = Scope::new("prop");
    let members = (0..MEMBERS)
        .map(|i| scope.member(&format!("m{i}")))
        .collect();
    let budget = scope.name("budget");
    let mut r = Run {
        store,
        scope,
        members,
        sent: Vec::new(),
        purchases: Vec::new(),
        auths: Vec::new(),
        refunds: Vec::new(),
        next: 0,
        chains: HashMap::new(),
        keys: Vec::new(),
    };
    let t0 = year(2030);
    r.keys = vec![lifetime(&budget)];
    for (step, op) in ops.into_iter().enumerate() {
        let now = t0 + Duration::hours(step as i64 * 6);
        if matches!(
            op,
            Op::Redeem { .. }
                | Op::Adjust { .. }
                | Op::Expire { .. }
                | Op::Release { .. }
                | Op::LapseAuthorizations { .. }
        ) {
            // Changes made outside `send`: the chains start again.
            r.chains.clear();
        }
        match op {
            Op::Purchase {
                member,
                cents,
                awards,
                expires_in,
                pending_for,
                budget: claim,
            } => {
                let id = r.id("p");
                let m = r.members[member].clone();
                let p = purchase(&id, &m, &amount(cents), now);
                let named: Vec<(String, i64)> = awards
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("rule{i}"), *a))
                    .collect();
                let refs: Vec<(&str, i64)> = named.iter().map(|(n, a)| (n.as_str(), *a)).collect();
                let terms = LotTerms {
                    available_at: pending_for.map(|d| days(now, d)),
                    expires_at: expires_in.map(|d| days(now, d)),
                };
                let mut o = outcome_with_terms(&p, &refs, terms);
                o = with_counter(o, &budget, rust_decimal::Decimal::from(awards[0]), Some(0));
                if cents % 3 == 0 {
                    // A tier change now or scheduled five days ahead.
                    o.tier_change = Some(rewards_core::TierChange {
                        from: None,
                        to: std::sync::Arc::from(format!("t{}", cents % 5)),
                        effective: days(now, i64::from(cents % 2) * 10 - 5),
                    });
                }
                if claim {
                    o = with_budget(o, &budget, 0, BUDGET_LIMIT);
                }
                if r.send(p.clone(), o).await.is_none() {
                    r.purchases.push(p);
                }
            }
            Op::Authorize {
                member,
                cents,
                points,
                budget: claim,
            } => {
                let id = r.id("a");
                let m = r.members[member].clone();
                let a = tx(TxKind::Authorization, &id, &m, &amount(cents), now, None);
                let mut o = with_counter(
                    outcome(&a, &[("base", points)]),
                    &budget,
                    rust_decimal::Decimal::new(i64::from(cents), 2),
                    Some(0),
                );
                if claim {
                    o = with_budget(o, &budget, 0, BUDGET_LIMIT);
                }
                assert_eq!(r.send(a.clone(), o).await, None);
                r.auths.push((a, cents));
            }
            Op::Settle { pick, percent } => {
                if r.auths.is_empty() {
                    continue;
                }
                let (a, cents) = r.auths[pick % r.auths.len()].clone();
                let id = r.id("s");
                let settled = amount((u64::from(cents) * u64::from(percent) / 100).max(1) as u32);
                let s = referring(TxKind::Settlement, &id, &a.member, &settled, now, &a.id);
                if r.send(s.clone(), outcome(&s, &[])).await.is_none() {
                    r.purchases.push(s);
                }
            }
            Op::Reverse { pick } => {
                if r.auths.is_empty() {
                    continue;
                }
                let (a, _) = r.auths[pick % r.auths.len()].clone();
                let id = r.id("v");
                let v = referring(TxKind::Reversal, &id, &a.member, "0.00", now, &a.id);
                r.send(v.clone(), outcome(&v, &[])).await;
            }
            Op::Refund {
                pick,
                cents,
                chargeback,
            } => {
                let targets: Vec<Transaction> = r
                    .purchases
                    .iter()
                    .cloned()
                    .chain(r.auths.iter().map(|(a, _)| a.clone()))
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let p = targets[pick % targets.len()].clone();
                let id = r.id("r");
                let kind = if chargeback {
                    TxKind::Chargeback
                } else {
                    TxKind::Refund
                };
                let f = referring(kind, &id, &p.member, &amount(cents), now, &p.id);
                match r.send(f.clone(), outcome(&f, &[])).await {
                    None => r.refunds.push(f),
                    Some(kind) => assert_eq!(kind, ErrorKind::InvalidReference),
                }
            }
            Op::RefundUnknown { member } => {
                let id = r.id("u");
                let m = r.members[member].clone();
                let original = r.scope.id("never-sent");
                let f = referring(TxKind::Refund, &id, &m, "1.00", now, &original);
                assert_eq!(
                    r.send(f.clone(), outcome(&f, &[])).await,
                    Some(ErrorKind::InvalidReference)
                );
            }
            Op::RefundOfRefund { pick } => {
                if r.refunds.is_empty() {
                    continue;
                }
                let original = r.refunds[pick % r.refunds.len()].clone();
                let id = r.id("rr");
                let f = referring(
                    TxKind::Refund,
                    &id,
                    &original.member,
                    "1.00",
                    now,
                    &original.id,
                );
                assert_eq!(
                    r.send(f.clone(), outcome(&f, &[])).await,
                    Some(ErrorKind::InvalidReference)
                );
            }
            Op::Redeem { member, points } => {
                let m = r.members[member].clone();
                let before = r.store.balance(&m).await.ok();
                let available = before.as_ref().map_or(0, |b| b.balances.available.get());
                let red = Redemption {
                    id: r.id("x"),
                    member: m.clone(),
                    points: Points(points),
                    time: now,
                    reference: None,
                };
                match r.store.redeem(&red).await {
                    Ok(receipt) => {
                        assert!(points <= available);
                        assert_eq!(receipt.delta.available, Points(-points));
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::InsufficientBalance);
                        assert!(points > available);
                        assert_eq!(r.store.balance(&m).await.ok(), before);
                    }
                }
            }
            Op::Adjust { member, points } => {
                let id = r.id("j");
                let m = r.members[member].clone();
                let a = adjustment_tx(&id, &m, points, now);
                assert_eq!(r.send(a.clone(), outcome(&a, &[])).await, None);
            }
            Op::Duplicate { pick } => {
                if r.sent.is_empty() {
                    continue;
                }
                let (t, o) = r.sent[pick % r.sent.len()].clone();
                let before = r.store.balance(&t.member).await.unwrap();
                let receipt = r.store.append(&t, &o).await.unwrap();
                assert!(receipt.duplicate);
                assert_eq!(r.store.balance(&t.member).await.unwrap(), before);
            }
            Op::Conflict { pick } => {
                if r.sent.is_empty() {
                    continue;
                }
                let (mut t, o) = r.sent[pick % r.sent.len()].clone();
                t.merchant = Some("someone else".into());
                let before = r.store.balance(&t.member).await.unwrap();
                let e = r.store.append(&t, &o).await.unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert_eq!(r.store.balance(&t.member).await.unwrap(), before);
            }
            Op::Expire { days_ahead } => {
                let as_of = days(now, days_ahead);
                r.store.expire_due(as_of).await.unwrap();
                let v: Vec<_> = collect_versions(&r).await;
                r.store.expire_due(as_of).await.unwrap();
                assert_eq!(v, collect_versions(&r).await, "expiry is idempotent");
            }
            Op::Release { days_ahead } => {
                r.store
                    .release_pending(days(now, days_ahead))
                    .await
                    .unwrap();
            }
            Op::LapseAuthorizations { days_ahead } => {
                r.store
                    .expire_authorizations(days(now, days_ahead))
                    .await
                    .unwrap();
            }
        }
    }
    check_invariants(&r, &budget).await;
    let rebuilt = MemoryStore::open(&path, config, FsyncPolicy::Never).unwrap();
    for m in &r.members {
        match r.store.balance(m).await {
            Ok(b) => {
                assert_eq!(rebuilt.balance(m).await.unwrap(), b);
                assert_eq!(
                    rebuilt.history(m, 0, 1000).await.unwrap(),
                    r.store.history(m, 0, 1000).await.unwrap()
                );
                assert_eq!(
                    rebuilt.audit(m, 0, 1000).await.unwrap(),
                    r.store.audit(m, 0, 1000).await.unwrap()
                );
                assert_eq!(rebuilt.lots(m), r.store.lots(m));
            }
            Err(_) => assert!(rebuilt.balance(m).await.is_err()),
        }
    }
    assert_eq!(
        rebuilt.budget_used(&budget).await.unwrap(),
        r.store.budget_used(&budget).await.unwrap()
    );
}

async fn collect_versions(r: &Run) -> Vec<Option<u64>> {
    let mut v = Vec::new();
    for m in &r.members {
        v.push(r.store.balance(m).await.ok().map(|b| b.version));
    }
    v
}

async fn check_invariants(r: &Run, budget: &std::sync::Arc<str>) {
    let mut drawn = 0i64;
    for m in &r.members {
        if r.store.balance(m).await.is_err() {
            continue;
        }
        conformance::assert_conserved(&r.store, m).await;
        let lots = r.store.lots(m);
        for lot in &lots {
            assert!(lot.remaining.get() >= 0, "lot {} went negative", lot.id);
            assert!(
                lot.remaining <= lot.granted,
                "lot {} holds more than granted",
                lot.id
            );
            assert!(lot.expired_forgiven <= lot.expired);
        }
        // Clawbacks per original lot never exceed what the lot was granted.
        let history = r.store.history(m, 0, 1000).await.unwrap();
        let mut clawed: HashMap<TxId, i64> = HashMap::new();
        for p in history.iter().filter(|p| p.kind == PostingKind::Clawback) {
            let lot = p.lot.clone().unwrap();
            *clawed.entry(lot).or_default() -= p.delta.available.get() + p.delta.pending.get();
        }
        for (lot_id, total) in clawed {
            let lot = lots.iter().find(|l| l.id == lot_id).unwrap();
            assert!(
                total <= lot.granted.get(),
                "clawed {total} > granted {}",
                lot.granted
            );
        }
        for record in r.store.records(m) {
            for award in &record.awards {
                assert!(
                    award.clawed.get() >= 0 && award.clawed <= award.points,
                    "{}: {award:?}",
                    record.id
                );
            }
            for c in &record.counters {
                assert!(c.reversed.abs() <= c.delta.abs(), "{}: {c:?}", record.id);
            }
            for b in &record.budgets {
                assert!(b.returned.get() >= 0 && b.returned <= b.points);
                if b.budget == *budget {
                    drawn += b.points.get() - b.returned.get();
                }
            }
            assert!(record.refunded <= record.amount.amount);
        }
        let sum = lots
            .iter()
            .filter(|l| l.status == LotStatus::Available)
            .map(|l| l.remaining.get())
            .sum::<i64>();
        let b = r.store.balance(m).await.unwrap().balances;
        assert_eq!(
            sum + b.available.get().min(0),
            b.available.get(),
            "lots and balance agree"
        );
        assert!(b.pending.get() >= 0);
    }
    let used = r.store.budget_used(budget).await.unwrap().get();
    assert!(used <= BUDGET_LIMIT, "budget exceeded: {used}");
    assert_eq!(used, drawn, "budget used == what the draws keep");
    assert!(r.store.reconcile().await.unwrap().is_clean());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn ledger_invariants_hold(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(ops));
    }
}
