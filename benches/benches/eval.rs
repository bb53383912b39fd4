//! Rule evaluation: one transaction through the 24-rule reference program
//! (`benches/rules/reference.rwd`), explain off and on, over a set of
//! generated transactions; and compiling a generated program of 1,000 rules
//! and one with the most rules the language allows (10,000).

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use rewards_core::{
    AttrValue, CounterKey, Currency, LineItem, MemberId, MemberView, Money, Outcome, Presence,
    Transaction, TxId, TxKind, WindowKey,
};
use rewards_dsl::{HostFunctions, Plan};
use rust_decimal::Decimal;
use std::hint::black_box;
use std::sync::Arc;

const REFERENCE: &str = include_str!("../rules/reference.rwd");

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

fn generated_program(rules: usize) -> String {
    let mut s = String::from(
        "ruleset \"generated\" version 1\ncurrency USD\ntimezone \"Europe/Paris\"\nrounding half_up\n\
         group g takes best\n\
         aggregate visits = count where tx.kind == purchase per month\n",
    );
    for i in 0..rules {
        let mcc = 1000 + (i * 7) % 8000;
        s.push_str(&format!(
            "rule r{i} \"rule {i}\" priority {} {} {{\n  when tx.kind == purchase and tx.mcc in [{mcc}, {}..{}] and tx.amount >= {} USD and visits < {}\n  earn {} * floor(tx.amount) points\n  cap {} points per member per month\n}}\n",
            i % 13,
            if i % 10 == 0 { "exclusive group g" } else { "" },
            mcc + 100,
            mcc + 120,
            i % 50,
            10 + i % 20,
            1 + i % 4,
            1000 + i,
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let plan = match Plan::compile(REFERENCE, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => panic!("reference.rwd does not compile: {d:?}"),
    };
    let txs = transactions(1024);
    let views = views(&txs, &plan);
    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(1));
    for (name, explain) in [
        ("reference_24_rules", false),
        ("reference_24_rules_explain", true),
    ] {
        let mut out = Outcome::empty(
            txs[0].id.clone(),
            txs[0].member.clone(),
            txs[0].kind,
            plan.stamp().clone(),
        );
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let k = i % txs.len();
                i = i.wrapping_add(1);
                let r = if explain {
                    plan.explain_into(&txs[k], &views[k], &mut out)
                } else {
                    plan.evaluate_into(&txs[k], &views[k], &mut out)
                };
                black_box(r.is_ok());
                black_box(out.components.len());
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for rules in [1_000, rewards_dsl::limits::MAX_RULES] {
        let source = generated_program(rules);
        if let Err(d) = Plan::compile(&source, &HostFunctions::new()) {
            panic!("generated program does not compile: {:?}", d.first());
        }
        g.bench_function(format!("generated_{rules}_rules"), |b| {
            b.iter_batched(
                || source.clone(),
                |s| black_box(Plan::compile(&s, &HostFunctions::new()).is_ok()),
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("reference_24_rules", |b| {
        b.iter(|| black_box(Plan::compile(REFERENCE, &HostFunctions::new()).is_ok()))
    });
    g.finish();
}

/// The benchmark group (`criterion_group!` makes an undocumented `pub fn`).
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
