//! Evaluates the 24-rule reference program (`benches/rules/reference.rwd`)
//! over the transactions and member views of `benches/benches/eval.rs` in a
//! loop, for profiling the evaluator with `perf` or
//! `valgrind --tool=callgrind` (instruction counts do not depend on the
//! machine's load):
//!
//! ```sh
//! cargo run --release -p rewards-dsl --example eval_profile -- 200000 [explain]
//! ```

use chrono::{DateTime, TimeDelta, Utc};
use rewards_core::{
    AttrValue, CounterKey, Currency, LineItem, MemberId, MemberView, Money, Outcome, Presence,
    Transaction, TxId, TxKind, WindowKey,
};
use rewards_dsl::{HostFunctions, Plan};
use rust_decimal::Decimal;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

const REFERENCE: &str = include_str!("../../benches/rules/reference.rwd");

/// A deterministic generator (no clock, no OS randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() as usize) % xs.len()]
    }
}

fn transactions(n: usize) -> Vec<Transaction> {
    let mut rng = Lcg(42);
    let mccs = [
        5812u16, 5814, 5411, 5541, 4899, 3058, 7011, 5912, 5211, 5999, 5311, 4121,
    ];
    let start = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    (0..n)
        .map(|i| {
            let cents = 100 + (rng.next() % 60_000) as i64;
            let mut tx = Transaction {
                id: TxId::new(format!("tx-{i}")).unwrap_or_else(|_| unreachable!()),
                member: MemberId::new(format!("m-{}", i % 97)).unwrap_or_else(|_| unreachable!()),
                kind: if i % 10 == 0 {
                    TxKind::Authorization
                } else {
                    TxKind::Purchase
                },
                program: None,
                amount: Money::new(Decimal::new(cents, 2), Currency::USD),
                time: start + TimeDelta::minutes((rng.next() % (60 * 24 * 30)) as i64),
                mcc: Some(rng.pick(&mccs)),
                merchant: Some("Merchant".into()),
                channel: Some(rng.pick(&["card", "wallet"]).to_string()),
                presence: Some(rng.pick(&[Presence::Online, Presence::InStore])),
                country: Some(rng.pick(&["US", "US", "US", "CA"]).to_string()),
                original_id: None,
                line_items: Vec::new(),
                attributes: Default::default(),
                points: None,
                reason: None,
                actor: None,
            };
            if i % 7 == 0 {
                tx.line_items = vec![
                    LineItem {
                        sku: "LAT".into(),
                        category: "coffee".into(),
                        quantity: 1,
                        amount: Decimal::new(420, 2),
                    },
                    LineItem {
                        sku: "CRO".into(),
                        category: "food".into(),
                        quantity: 1,
                        amount: Decimal::new(320, 2),
                    },
                ];
            }
            if i % 5 == 0 {
                tx.attributes
                    .insert("segment".into(), AttrValue::Text("premium".into()));
            }
            tx
        })
        .collect()
}

fn views(txs: &[Transaction], plan: &Plan) -> Vec<MemberView> {
    let tiers = ["blue", "silver", "gold", "platinum"];
    txs.iter()
        .enumerate()
        .map(|(i, tx)| {
            let mut keys = Vec::new();
            plan.counter_keys(tx, &mut keys);
            let mut view = MemberView {
                tier: Some(Arc::from(tiers[i % tiers.len()])),
                ..MemberView::default()
            };
            for (k, key) in keys.into_iter().enumerate() {
                view.counters
                    .insert(key, Decimal::from((k as i64 * 37) % 900));
            }
            view.counters.insert(
                CounterKey::new("spend", WindowKey::Year(2026)),
                Decimal::from(2500 + (i as i64 % 30) * 1000),
            );
            view
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let explain = args.next().is_some_and(|a| a == "explain");
    let plan = match Plan::compile(REFERENCE, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("reference.rwd does not compile: {:?}", d.first());
            std::process::exit(1);
        }
    };
    let txs = transactions(1024);
    let views = views(&txs, &plan);
    let Some(first) = txs.first() else { return };
    let mut out = Outcome::empty(
        first.id.clone(),
        first.member.clone(),
        first.kind,
        plan.stamp().clone(),
    );
    let mut points = 0i64;
    let start = Instant::now();
    for i in 0..n {
        let k = i % txs.len();
        let (Some(tx), Some(view)) = (txs.get(k), views.get(k)) else {
            continue;
        };
        let r = if explain {
            plan.explain_into(tx, view, &mut out)
        } else {
            plan.evaluate_into(tx, view, &mut out)
        };
        if r.is_ok() {
            points += out.components.iter().map(|c| c.points.get()).sum::<i64>();
        }
        black_box(&out);
    }
    let took = start.elapsed();
    println!(
        "{n} evaluations (explain {explain}): {:?}, {} ns/tx, {points} points",
        took,
        took.as_nanos() / n.max(1) as u128
    );
}
