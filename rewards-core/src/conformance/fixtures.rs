//! Builders for the conformance checks and for tests: unique names,
//! transactions and hand-made outcomes (the evaluator is not needed).

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ids::{MemberId, TxId};
use crate::money::{Currency, Money};
use crate::outcome::{
    BudgetClaim, Component, ComponentKind, CounterDelta, LotTerms, Outcome, RulesetStamp,
};
use crate::points::Points;
use crate::transaction::{Transaction, TxKind};
use crate::window::{CounterKey, WindowKey};

static NEXT_SCOPE: AtomicU64 = AtomicU64::new(0);

/// A namespace for the ids one check creates, unique per process and call
/// (process id, start time, counter), so checks can share a database and
/// run in parallel or again.
#[derive(Debug, Clone)]
pub struct Scope {
    prefix: String,
}

impl Scope {
    /// A fresh scope; `label` names the check in the ids.
    pub fn new(label: &str) -> Scope {
        let n = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        Scope {
            prefix: format!("{label}-{:x}{:x}-{n}", std::process::id(), nanos),
        }
    }

    /// A member id in this scope.
    pub fn member(&self, name: &str) -> MemberId {
        MemberId::new(format!("{}-{name}", self.prefix)).expect("scoped member ids are short")
    }

    /// A transaction (or redemption, adjustment) id in this scope.
    pub fn id(&self, name: &str) -> TxId {
        TxId::new(format!("{}-{name}", self.prefix)).expect("scoped ids are short")
    }

    /// A budget or counter name in this scope.
    pub fn name(&self, name: &str) -> Arc<str> {
        Arc::from(format!("{}-{name}", self.prefix))
    }
}

/// Midnight UTC of 1 January of `year`: the checks date their data in
/// separate years (see the module docs of [`super`]).
pub fn year(year: i32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .single()
        .expect("1 January exists")
}

/// `base` plus whole days.
pub fn days(base: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    base + Duration::days(n)
}

/// A decimal amount from text (`"12.34"`).
pub fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("a decimal literal")
}

/// A transaction of any kind in USD at a grocery store (MCC 5411).
pub fn tx(
    kind: TxKind,
    id: &TxId,
    member: &MemberId,
    amount: &str,
    time: DateTime<Utc>,
    original: Option<&TxId>,
) -> Transaction {
    Transaction {
        id: id.clone(),
        member: member.clone(),
        kind,
        program: None,
        amount: Money::new(dec(amount), Currency::USD),
        time,
        mcc: Some(5411),
        merchant: Some("Corner Grocery".into()),
        channel: Some("card".into()),
        presence: None,
        country: None,
        original_id: original.cloned(),
        line_items: Vec::new(),
        attributes: BTreeMap::new(),
        points: None,
        reason: None,
        actor: None,
    }
}

/// A purchase.
pub fn purchase(id: &TxId, member: &MemberId, amount: &str, time: DateTime<Utc>) -> Transaction {
    tx(TxKind::Purchase, id, member, amount, time, None)
}

/// A transaction referring to `original` (refund, settlement, reversal, chargeback).
pub fn referring(
    kind: TxKind,
    id: &TxId,
    member: &MemberId,
    amount: &str,
    time: DateTime<Utc>,
    original: &TxId,
) -> Transaction {
    tx(kind, id, member, amount, time, Some(original))
}

/// A wire adjustment transaction.
pub fn adjustment_tx(
    id: &TxId,
    member: &MemberId,
    points: i64,
    time: DateTime<Utc>,
) -> Transaction {
    let mut t = tx(TxKind::Adjustment, id, member, "0", time, None);
    t.mcc = None;
    t.points = Some(Points(points));
    t.reason = Some("goodwill".into());
    t.actor = Some("agent-7".into());
    t
}

/// The ruleset stamp the checks use.
pub fn stamp() -> RulesetStamp {
    RulesetStamp {
        id: Arc::from("conformance"),
        version: 3,
        hash: Arc::from("c0ffee"),
    }
}

/// An outcome for `tx` with one component per `(rule, points)`.
pub fn outcome(tx: &Transaction, awards: &[(&str, i64)]) -> Outcome {
    let mut o = Outcome::empty(tx.id.clone(), tx.member.clone(), tx.kind, stamp());
    for (rule, points) in awards {
        o.components.push(Component {
            rule: Arc::from(*rule),
            label: Arc::from(*rule),
            kind: ComponentKind::Earn,
            points: Points(*points),
            exact: Decimal::from(*points),
            budget: None,
        });
    }
    o
}

/// [`outcome`] with lot terms.
pub fn outcome_with_terms(tx: &Transaction, awards: &[(&str, i64)], terms: LotTerms) -> Outcome {
    let mut o = outcome(tx, awards);
    o.lot = terms;
    o
}

/// Adds a counter delta (lifetime window) counting component `component`.
pub fn with_counter(
    mut o: Outcome,
    name: &Arc<str>,
    delta: Decimal,
    component: Option<u16>,
) -> Outcome {
    o.counters.push(CounterDelta {
        key: CounterKey::new(name.clone(), WindowKey::Lifetime),
        delta,
        component,
    });
    o
}

/// Adds a budget claim of component `component`'s points.
pub fn with_budget(mut o: Outcome, budget: &Arc<str>, component: u16, limit: i64) -> Outcome {
    let points = o
        .components
        .get(usize::from(component))
        .map_or(Points::ZERO, |c| c.points);
    if let Some(c) = o.components.get_mut(usize::from(component)) {
        c.budget = Some(budget.clone());
    }
    o.budgets.push(BudgetClaim {
        budget: budget.clone(),
        component,
        points,
        limit: Points(limit),
    });
    o
}

/// The lifetime counter key named `name`.
pub fn lifetime(name: &Arc<str>) -> CounterKey {
    CounterKey::new(name.clone(), WindowKey::Lifetime)
}
