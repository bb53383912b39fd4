//! The shared inputs every implementation is checked and timed on: the
//! core's seeded transaction generator (realistic MCC mix, amounts, refunds,
//! authorizations), spread over 2026 so that the campaigns' schedules and
//! every weekday and hour occur, with foreign countries, coffee line items
//! and the `segment` attribute mixed in; and member views with every tier
//! (and an unknown one), the `student` attribute, and cap and aggregate
//! counters from empty to past their limits. Deterministic: the same `n`
//! gives the same cases.
//!
//! Also: generated programs of N rules, for compile time and plan size.

use chrono::{DateTime, TimeDelta, Utc};
use rewards_core::generate::{Generator, GeneratorConfig};
use rewards_core::{
    AttrValue, CounterKey, LineItem, MemberView, Presence, Transaction, TxKind, Window,
};
use rust_decimal::Decimal;
use std::sync::Arc;

use super::Case;

/// A small deterministic generator for the perturbations (no clock, no OS
/// randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Extra merchant categories the core generator does not draw, so that
/// every category of the reference program occurs.
const EXTRA_MCCS: [u16; 10] = [5422, 5542, 4899, 5816, 3058, 3650, 5211, 5261, 5813, 5983];

/// Counters (name, window) of the reference program's per-member caps and
/// aggregates, with values from empty to past the limit.
const CAPS: [(&str, Window, [i64; 5]); 11] = [
    ("cap.home", Window::Quarter, [0, 100, 2400, 2500, 2600]),
    ("cap.dining", Window::Quarter, [0, 300, 5950, 6000, 7000]),
    ("cap.groceries", Window::Month, [0, 120, 2990, 3000, 3100]),
    ("cap.gas", Window::Month, [0, 40, 980, 1000, 1200]),
    ("cap.streaming", Window::Month, [0, 30, 490, 500, 600]),
    ("cap.hotel", Window::Year, [0, 1000, 19_900, 20_000, 25_000]),
    ("cap.pharmacy", Window::Day, [0, 10, 60, 150, 210]),
    ("cap.wallet", Window::Day, [0, 5, 45, 50, 55]),
    ("cap.big_ticket", Window::Month, [0, 250, 900, 1000, 1250]),
    (
        "cap.night_owl",
        Window::Week(chrono::Weekday::Mon),
        [0, 10, 20, 30, 40],
    ),
    ("cap.holiday", Window::Month, [0, 100, 1950, 2000, 2100]),
];

/// `n` transactions and member views (see the module doc).
pub fn cases(n: usize) -> Vec<Case> {
    let config = GeneratorConfig {
        seed: 20_261_125,
        transactions: n,
        members: 500,
        ..GeneratorConfig::default()
    };
    let Ok(generator) = Generator::new(config) else {
        return Vec::new();
    };
    let tz = chrono_tz::America::New_York;
    let start = DateTime::parse_from_rfc3339("2026-01-01T05:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let mut rng = Lcg(7);
    let tiers = ["blue", "silver", "gold", "platinum", "bronze"];
    generator
        .take(n)
        .enumerate()
        .map(|(i, tx)| {
            let mut tx: Transaction = tx;
            // Any minute of 2026 (local New York times cover every hour).
            tx.time = start + TimeDelta::minutes(rng.below(365 * 24 * 60) as i64);
            if rng.below(4) == 0 {
                tx.mcc = Some(EXTRA_MCCS[rng.below(EXTRA_MCCS.len() as u64) as usize]);
            }
            if rng.below(50) == 0 {
                tx.mcc = None;
            }
            match rng.below(10) {
                0 => tx.country = Some("CA".into()),
                1 => tx.country = None,
                _ => {}
            }
            if rng.below(20) == 0 {
                tx.presence = None;
            } else if rng.below(3) == 0 {
                tx.presence = Some(Presence::Online);
            }
            if rng.below(30) == 0 {
                tx.channel = None;
            }
            if rng.below(5) == 0 {
                let segment = if rng.below(2) == 0 {
                    "premium"
                } else {
                    "standard"
                };
                tx.attributes
                    .insert("segment".into(), AttrValue::Text(segment.into()));
            }
            if rng.below(4) == 0 {
                let items = 1 + rng.below(3);
                tx.line_items = (0..items)
                    .map(|k| LineItem {
                        sku: format!("SKU{k}"),
                        category: if rng.below(2) == 0 { "coffee" } else { "food" }.into(),
                        quantity: 1,
                        amount: Decimal::new(100 + rng.below(900) as i64, 2),
                    })
                    .collect();
            }
            if i % 97 == 0 && tx.kind == TxKind::Purchase {
                tx.amount.amount = Decimal::new(50_000 + rng.below(200_000) as i64, 2);
            }
            let day = tx.time.with_timezone(&tz).date_naive();
            let mut view = MemberView {
                tier: match rng.below(6) {
                    5 => None,
                    t => Some(Arc::from(tiers[t as usize])),
                },
                ..MemberView::default()
            };
            match rng.below(3) {
                0 => {}
                1 => {
                    view.attributes
                        .insert("student".into(), AttrValue::Bool(true));
                }
                _ => {
                    view.attributes
                        .insert("student".into(), AttrValue::Bool(false));
                }
            }
            for (name, window, values) in CAPS {
                let v = values[rng.below(values.len() as u64) as usize];
                if v == 0 {
                    continue;
                }
                let name: Arc<str> = Arc::from(name);
                if name.as_ref() == "cap.pharmacy" {
                    // Rolling 30 days: spread over a few day buckets.
                    for back in [0i64, 3, 17, 29, 30] {
                        let d = day - TimeDelta::days(back);
                        view.counters
                            .insert(CounterKey::new(name.clone(), window.key_for(d)), v.into());
                    }
                } else {
                    view.counters
                        .insert(CounterKey::new(name, window.key_for(day)), v.into());
                }
            }
            let visits = [0i64, 0, 1, 4][rng.below(4) as usize];
            if visits > 0 {
                view.counters.insert(
                    CounterKey::new("agg.dining_visits", Window::Month.key_for(day)),
                    visits.into(),
                );
            }
            if rng.below(3) == 0 {
                view.counters.insert(
                    CounterKey::new("agg.airline_spend", Window::Year.key_for(day)),
                    Decimal::new(120_050 + rng.below(900_000) as i64, 2),
                );
            }
            view.counters.insert(
                CounterKey::new("spend", Window::Year.key_for(day)),
                Decimal::from(rng.below(30_000) as i64),
            );
            (tx, view)
        })
        .collect()
}

/// A generated program of `rules` rules in the style of the reference
/// program: each tests the kind, an MCC list, the amount and an aggregate,
/// earns a multiple of the amount and has a monthly cap; every tenth is in
/// an exclusive group. `.rwd` refuses more than
/// `rewards_dsl::limits::MAX_RULES` rules.
pub fn program(rules: usize) -> String {
    let mut s = String::from(
        "ruleset \"generated\" version 1\ncurrency USD\ntimezone \"America/New_York\"\nrounding floor\n\
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
