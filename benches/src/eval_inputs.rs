//! The inputs of the rule-evaluation benchmark (`benches/benches/eval.rs`)
//! and of its profiling examples (`benches/examples/eval_profile.rs`,
//! `compile_profile.rs`): deterministic transactions and member views for
//! the 24-rule reference program, and generated programs of N rules.

use chrono::{DateTime, TimeDelta, Utc};
use rewards_core::{
    AttrValue, CounterKey, Currency, LineItem, MemberId, MemberView, Money, Presence, Transaction,
    TxId, TxKind, WindowKey,
};
use rewards_dsl::Plan;
use rust_decimal::Decimal;
use std::sync::Arc;

/// Generated programs of N rules (the peers bench's, so both benches
/// compile the same programs).
pub use crate::peers::generated::program as generated_program;
/// The reference program (24 rules).
pub use crate::peers::REFERENCE_RWD as REFERENCE;

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

/// `n` transactions: purchases and authorizations over twelve MCCs, 97
/// members, line items on 1 in 7, an attribute on 1 in 5.
pub fn transactions(n: usize) -> Vec<Transaction> {
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

/// One member view per transaction: four tiers in turn, every counter the
/// plan reads pre-filled, and a yearly spend.
pub fn views(txs: &[Transaction], plan: &Plan) -> Vec<MemberView> {
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
