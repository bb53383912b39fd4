//! Conditions compiled for the hot path.
//!
//! A rule's `when` and `audience`, an aggregate's `where` and a tier's
//! `qualify` are boolean expressions. The evaluator reads most of them
//! through [`Cond`]: the same expression, with its common leaf shapes —
//! a transaction field, the local hour or weekday of the transaction, the
//! member's tier or an aggregate compared with a constant, an MCC in a
//! category — decided directly on the field, without building a value per
//! node. Anything else is a [`Cond::Node`] and goes through the node
//! interpreter ([`Plan::eval`]), so a condition decides exactly what its
//! nodes do: the same three-valued logic, the same short-circuits (the
//! right side of `and`/`or` is not evaluated, nor are its errors raised,
//! when the left decides), the same errors. Explain still walks the nodes.

use chrono::{Datelike, Timelike, Weekday};
use rewards_core::{AttrValue, Presence, TxKind};
use rust_decimal::Decimal;
use std::cmp::Ordering;

use crate::ast::TypeName;
use crate::check::Builtin;
use crate::eval::Cx;
use crate::plan::{ConstSet, EvalError, Node, NodeId, Plan, Rel, TxRead};
use crate::value::Val;

/// MCCs below this are looked up in a bit set ([`Cond::Mcc`]); the four
/// digits of ISO 18245.
pub(crate) const MCC_BITS: usize = 10_000;

/// Index of a [`Cond`] in [`Plan::conds`].
pub(crate) type CondId = u32;

/// "No condition" in [`Plan::cond_of`].
pub(crate) const NO_COND: CondId = CondId::MAX;

/// One compiled condition; unknown is `None`.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    /// Any other expression: evaluated node by node.
    Node(NodeId),
    /// `not`.
    Not(CondId),
    /// `and`, left first.
    And(CondId, CondId),
    /// `or`, left first.
    Or(CondId, CondId),
    /// `tx.amount REL money`.
    Amount(Rel, Decimal),
    /// `tx.channel|country|merchant ==|!= "text"` (`negate` for `!=`).
    Text {
        field: TxRead,
        value: Box<str>,
        negate: bool,
    },
    /// `tx.attributes.NAME ==|!= "text"` for a string attribute.
    AttrText {
        name: Box<str>,
        value: Box<str>,
        negate: bool,
    },
    /// `tx.presence ==|!= P`.
    Presence(Presence, bool),
    /// `tx.kind ==|!= K`.
    Kind(TxKind, bool),
    /// `hour(tx.time) REL k` (local hour, known once per transaction).
    Hour(Rel, i64),
    /// `weekday(tx.time) [not] in [...]`: bit `n` = `n` days from Monday.
    Weekdays { mask: u8, negate: bool },
    /// `tx.mcc [not] in SET` with an integer set; `bits`: the set's
    /// members below [`MCC_BITS`], one bit each.
    Mcc {
        set: u32,
        negate: bool,
        bits: Box<[u64]>,
    },
    /// `member.tier REL tier`.
    Tier(Rel, u16),
    /// `AGGREGATE REL constant` (`flipped`: the constant is on the left).
    Aggregate {
        slot: u16,
        rel: Rel,
        value: Val<'static>,
        flipped: bool,
    },
}

fn rel_holds(rel: Rel, o: Ordering) -> bool {
    match rel {
        Rel::Eq => o == Ordering::Equal,
        Rel::Ne => o != Ordering::Equal,
        Rel::Lt => o == Ordering::Less,
        Rel::Le => o != Ordering::Greater,
        Rel::Gt => o == Ordering::Greater,
        Rel::Ge => o != Ordering::Less,
    }
}

/// The bit of a weekday in [`Cond::Weekdays`].
fn day_bit(w: Weekday) -> u8 {
    1 << w.num_days_from_monday()
}

impl Plan {
    /// Compiles the condition rooted at `node` into `self.conds` and
    /// records it in `self.cond_of` (compile time; once per root).
    pub(crate) fn compile_cond(&mut self, node: NodeId) {
        if self
            .cond_of
            .get(node as usize)
            .is_some_and(|c| *c != NO_COND)
        {
            return;
        }
        let id = self.cond(node);
        if let Some(slot) = self.cond_of.get_mut(node as usize) {
            *slot = id;
        }
    }

    fn push_cond(&mut self, c: Cond) -> CondId {
        let id = self.conds.len() as CondId;
        self.conds.push(c);
        id
    }

    fn cond(&mut self, id: NodeId) -> CondId {
        let node = self.nodes.get(id as usize).cloned();
        let c = match node {
            Some(Node::Not(x)) => {
                let x = self.cond(x);
                Cond::Not(x)
            }
            Some(Node::And(a, b)) => {
                let (a, b) = (self.cond(a), self.cond(b));
                Cond::And(a, b)
            }
            Some(Node::Or(a, b)) => {
                let (a, b) = (self.cond(a), self.cond(b));
                Cond::Or(a, b)
            }
            Some(Node::Cmp(rel, a, b)) => self.leaf_cmp(rel, a, b).unwrap_or(Cond::Node(id)),
            Some(Node::InSet { value, set, negate }) => {
                self.leaf_in(value, set, negate).unwrap_or(Cond::Node(id))
            }
            _ => Cond::Node(id),
        };
        self.push_cond(c)
    }

    /// The argument of a one-argument builtin on `tx.time` (`hour(tx.time)`).
    fn on_tx_time(&self, id: NodeId, which: Builtin) -> bool {
        let Some(Node::Builtin(b, (start, len))) = self.nodes.get(id as usize) else {
            return false;
        };
        *b == which
            && *len == 1
            && self
                .args
                .get(*start as usize)
                .and_then(|a| self.nodes.get(*a as usize))
                .is_some_and(|n| matches!(n, Node::Tx(TxRead::Time)))
    }

    fn leaf_cmp(&self, rel: Rel, a: NodeId, b: NodeId) -> Option<Cond> {
        // The constant on the right: `k < x` is `x > k`.
        let (x, k, rel, flipped) = match (self.nodes.get(a as usize), self.nodes.get(b as usize)) {
            (Some(_), Some(Node::Const(k))) => (a, k.clone(), rel, false),
            (Some(Node::Const(k)), Some(_)) => (b, k.clone(), rel.flipped(), true),
            _ => return None,
        };
        let eq = matches!(rel, Rel::Eq | Rel::Ne);
        let negate = rel == Rel::Ne;
        Some(match (self.nodes.get(x as usize)?, k) {
            (Node::Tx(TxRead::Amount), Val::Money(d)) => Cond::Amount(rel, d),
            (
                Node::Tx(field @ (TxRead::Channel | TxRead::Country | TxRead::Merchant)),
                Val::Str(s),
            ) if eq => Cond::Text {
                field: *field,
                value: s.as_ref().into(),
                negate,
            },
            (Node::TxAttr(name, TypeName::String), Val::Str(s)) if eq => Cond::AttrText {
                name: name.clone(),
                value: s.as_ref().into(),
                negate,
            },
            (Node::Tx(TxRead::Presence), Val::Presence(p)) if eq => Cond::Presence(p, negate),
            (Node::Tx(TxRead::Kind), Val::Kind(k)) if eq => Cond::Kind(k, negate),
            (Node::MemberTier, Val::Tier(t)) => Cond::Tier(rel, t),
            (Node::Builtin(..), Val::Int(k)) if self.on_tx_time(x, Builtin::Hour) => {
                Cond::Hour(rel, k)
            }
            (Node::Aggregate(slot), value @ (Val::Int(_) | Val::Money(_))) => Cond::Aggregate {
                slot: *slot,
                // `compare` takes the operands in their written order.
                rel: if flipped { rel.flipped() } else { rel },
                value,
                flipped,
            },
            _ => return None,
        })
    }

    fn leaf_in(&self, value: NodeId, set: u32, negate: bool) -> Option<Cond> {
        let s = self.sets.get(set as usize)?;
        match (self.nodes.get(value as usize)?, s) {
            (Node::Tx(TxRead::Mcc), ConstSet::Ints(ranges)) => {
                let mut bits = vec![0u64; MCC_BITS.div_ceil(64)];
                for &(lo, hi) in ranges {
                    let (lo, hi) = (lo.max(0), hi.min(MCC_BITS as i64 - 1));
                    for m in lo..=hi {
                        if let Some(w) = bits.get_mut(m as usize / 64) {
                            *w |= 1 << (m % 64);
                        }
                    }
                }
                Some(Cond::Mcc {
                    set,
                    negate,
                    bits: bits.into(),
                })
            }
            (Node::Builtin(..), ConstSet::Other(elems))
                if self.on_tx_time(value, Builtin::Weekday) =>
            {
                let mut mask = 0u8;
                for (a, b) in elems {
                    match (a, b) {
                        (Val::Weekday(w), None) => mask |= day_bit(*w),
                        (Val::Weekday(lo), Some(Val::Weekday(hi))) => {
                            let (lo, hi) = (lo.num_days_from_monday(), hi.num_days_from_monday());
                            for d in lo..=hi.min(6) {
                                mask |= 1 << d;
                            }
                        }
                        _ => return None,
                    }
                }
                Some(Cond::Weekdays { mask, negate })
            }
            _ => None,
        }
    }

    /// Decides the condition compiled for `node` (see [`Plan::compile_cond`]),
    /// or evaluates the node when none was compiled: `Some(true)` exactly
    /// when the node evaluates to `true`.
    #[inline]
    pub(crate) fn holds(&self, node: NodeId, cx: &Cx<'_>) -> Result<Option<bool>, EvalError> {
        match self.cond_of.get(node as usize) {
            Some(&c) if c != NO_COND => self.decide(c, cx),
            _ => self.eval_bool(node, cx),
        }
    }

    fn eval_bool(&self, node: NodeId, cx: &Cx<'_>) -> Result<Option<bool>, EvalError> {
        Ok(match self.eval(node, cx)? {
            Val::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// Decides a condition: its leaves on the field, inlined; the rest
    /// in [`Plan::decide_inner`].
    #[inline(always)]
    fn decide(&self, id: CondId, cx: &Cx<'_>) -> Result<Option<bool>, EvalError> {
        let Some(c) = self.conds.get(id as usize) else {
            return Ok(None);
        };
        match leaf(c, cx) {
            Some(r) => Ok(r),
            None => self.decide_inner(c, cx),
        }
    }

    /// `not`, `and`, `or`, aggregates, nodes.
    #[inline(never)]
    fn decide_inner(&self, c: &Cond, cx: &Cx<'_>) -> Result<Option<bool>, EvalError> {
        let tx = cx.tx;
        Ok(match c {
            Cond::Node(n) => return self.eval_bool(*n, cx),
            Cond::Not(x) => self.decide(*x, cx)?.map(|b| !b),
            Cond::And(a, b) => {
                let a = self.decide(*a, cx)?;
                if a == Some(false) {
                    return Ok(a);
                }
                match (a, self.decide(*b, cx)?) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }
            }
            Cond::Or(a, b) => {
                let a = self.decide(*a, cx)?;
                if a == Some(true) {
                    return Ok(a);
                }
                match (a, self.decide(*b, cx)?) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }
            }
            Cond::Amount(rel, d) => Some(rel_holds(*rel, tx.amount.amount.cmp(d))),
            Cond::Text {
                field,
                value,
                negate,
            } => {
                let text = match field {
                    TxRead::Channel => tx.channel.as_deref(),
                    TxRead::Country => tx.country.as_deref(),
                    _ => tx.merchant.as_deref(),
                };
                text.map(|t| (t == &**value) != *negate)
            }
            Cond::AttrText {
                name,
                value,
                negate,
            } => match tx.attributes.get(&**name) {
                Some(AttrValue::Text(t)) => Some((t.as_str() == &**value) != *negate),
                _ => None,
            },
            Cond::Presence(p, negate) => tx.presence.map(|x| (x == *p) != *negate),
            Cond::Kind(k, negate) => Some((tx.kind == *k) != *negate),
            Cond::Hour(rel, k) => Some(rel_holds(*rel, i64::from(cx.local.hour()).cmp(k))),
            Cond::Weekdays { mask, negate } => {
                Some((mask & day_bit(cx.local.weekday()) != 0) != *negate)
            }
            Cond::Mcc { set, negate, .. } => match (tx.mcc, self.sets.get(*set as usize)) {
                (None, _) => None,
                (Some(m), Some(s)) => s.contains(&Val::Int(i64::from(m))).map(|f| f != *negate),
                (Some(_), None) => None,
            },
            Cond::Tier(rel, t) => cx.tier.map(|x| rel_holds(*rel, x.cmp(t))),
            Cond::Aggregate {
                slot,
                rel,
                value,
                flipped,
            } => {
                let v = self.aggregate_value(*slot, cx)?;
                let r = if *flipped {
                    crate::eval::compare(*rel, value, &v)
                } else {
                    crate::eval::compare(*rel, &v, value)
                };
                match r {
                    Val::Bool(b) => Some(b),
                    _ => None,
                }
            }
        })
    }
}

/// A leaf decided on the field, as [`Plan::decide_inner`] decides it;
/// `None` for the other conditions.
#[inline(always)]
fn leaf(c: &Cond, cx: &Cx<'_>) -> Option<Option<bool>> {
    let tx = cx.tx;
    Some(match c {
        Cond::Amount(rel, d) => Some(rel_holds(*rel, crate::value::dec_cmp(&tx.amount.amount, d))),
        Cond::Kind(k, negate) => Some((tx.kind == *k) != *negate),
        Cond::Presence(p, negate) => tx.presence.map(|x| (x == *p) != *negate),
        Cond::Tier(rel, t) => cx.tier.map(|x| rel_holds(*rel, x.cmp(t))),
        Cond::Hour(rel, k) => Some(rel_holds(*rel, i64::from(cx.local.hour()).cmp(k))),
        Cond::Weekdays { mask, negate } => {
            Some((mask & day_bit(cx.local.weekday()) != 0) != *negate)
        }
        Cond::Mcc { bits, negate, .. } => {
            let m = usize::from(tx.mcc?);
            if m >= MCC_BITS {
                return None;
            }
            let w = bits.get(m / 64)?;
            Some((w & (1 << (m % 64)) != 0) != *negate)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostFunctions;
    use chrono::{DateTime, TimeDelta, Utc};
    use rewards_core::{
        CounterKey, Currency, MemberView, Money, Transaction, TxId, TxKind, Window,
    };
    use std::sync::Arc;

    /// Every condition shape `Cond` decides directly, on both sides of the
    /// operator, negated and combined with unknowns.
    const PROGRAM: &str = r#"
ruleset "conds" version 1
currency USD
timezone "America/New_York"
rounding floor
attribute tx.segment: string
attribute member.student: bool
category dining = mcc in [5812, 5813, 5814]
aggregate visits = count where tx.mcc in dining per month
aggregate big = spend where tx.amount > 100 USD per calendar year
tier blue
tier silver qualify spend(calendar year) >= 3000 USD
tier gold qualify 10_000 USD <= spend(calendar year) or big >= 5000 USD
rule r01 { when tx.amount > 500 USD  earn 1 points }
rule r02 { when 500 USD <= tx.amount  earn 1 points }
rule r03 { when tx.amount == 12.34 USD  earn 1 points }
rule r04 { when tx.amount != 0 USD  earn 1 points }
rule r05 { when tx.channel == "wallet"  earn 1 points }
rule r06 { when "US" != tx.country  earn 1 points }
rule r07 { when tx.merchant == "Merchant"  earn 1 points }
rule r08 { when tx.attributes.segment == "premium"  earn 1 points }
rule r09 { when tx.attributes.segment != "premium"  earn 1 points }
rule r10 { when tx.presence == online  earn 1 points }
rule r11 { when in_store != tx.presence  earn 1 points }
rule r12 { when tx.kind != authorization  earn 1 points }
rule r13 { when hour(tx.time) >= 22 or hour(tx.time) < 5  earn 1 points }
rule r14 { when 12 > hour(tx.time)  earn 1 points }
rule r15 { when weekday(tx.time) in [sat, sun]  earn 1 points }
rule r16 { when weekday(tx.time) not in [mon..wed, fri]  earn 1 points }
rule r17 { when weekday(tx.time) in [fri..mon]  earn 1 points }
rule r18 { when tx.mcc in dining  earn 1 points }
rule r19 { when tx.mcc not in dining or tx.amount < 5 USD  earn 1 points }
rule r20 { when member.tier >= silver  earn 1 points }
rule r21 { when gold > member.tier  earn 1 points }
rule r22 { when member.tier != gold and tx.channel == "card"  earn 1 points }
rule r23 { when visits == 0  earn 1 points }
rule r24 { when 2 < visits  earn 1 points }
rule r25 { when spend(calendar year) >= 3000 USD  earn 1 points }
rule r26 { when not (tx.channel == "wallet" or tx.country == "CA")  earn 1 points }
rule r27 { when member.attributes.student and tx.presence == online  earn 1 points }
rule r28 { when not member.attributes.student or tx.mcc in [5812, 7011]  earn 1 points }
rule r29 { when tx.mcc in [5000..5999] and not (tx.kind == purchase)  earn 1 points }
campaign c1 from 2026-12-01 to 2026-12-31 audience member.tier >= silver {
  when tx.amount >= 50 USD
  earn 1 points
}
"#;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    fn tx(rng: &mut Lcg, i: usize) -> Transaction {
        let start = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let pick = |r: &mut Lcg, n: u64| r.next() % n;
        let text = |r: &mut Lcg, xs: &[&str]| -> Option<String> {
            let k = (r.next() % (xs.len() as u64 + 1)) as usize;
            xs.get(k).map(|s| s.to_string())
        };
        let mut t = Transaction {
            id: TxId::new(format!("t{i}")).unwrap_or_else(|_| unreachable!()),
            member: rewards_core::MemberId::new("m").unwrap_or_else(|_| unreachable!()),
            kind: if pick(rng, 3) == 0 {
                TxKind::Authorization
            } else {
                TxKind::Purchase
            },
            program: None,
            amount: Money::new(
                match pick(rng, 5) {
                    0 => Decimal::new(1234, 2),
                    1 => Decimal::new(50_000, 2),
                    2 => Decimal::new(500, 0),
                    3 => Decimal::ZERO,
                    _ => Decimal::new(pick(rng, 90_000) as i64, (pick(rng, 4)) as u32),
                },
                Currency::USD,
            ),
            time: start + TimeDelta::minutes(pick(rng, 60 * 24 * 400) as i64),
            mcc: [
                None,
                Some(5812),
                Some(5814),
                Some(5411),
                Some(7011),
                Some(4899),
            ][pick(rng, 6) as usize],
            merchant: text(rng, &["Merchant", "Other"]),
            channel: text(rng, &["wallet", "card"]),
            presence: [None, Some(Presence::Online), Some(Presence::InStore)]
                [pick(rng, 3) as usize],
            country: text(rng, &["US", "CA", "FR"]),
            original_id: None,
            line_items: Vec::new(),
            attributes: Default::default(),
            points: None,
            reason: None,
            actor: None,
        };
        match pick(rng, 4) {
            0 => {
                t.attributes
                    .insert("segment".into(), AttrValue::Text("premium".into()));
            }
            1 => {
                t.attributes
                    .insert("segment".into(), AttrValue::Text("basic".into()));
            }
            2 => {
                t.attributes.insert("segment".into(), AttrValue::Bool(true));
            }
            _ => {}
        }
        t
    }

    fn view(rng: &mut Lcg, plan: &Plan, t: &Transaction) -> MemberView {
        let mut v = MemberView {
            tier: [
                None,
                Some("blue"),
                Some("silver"),
                Some("gold"),
                Some("gone"),
            ][(rng.next() % 5) as usize]
                .map(Arc::from),
            ..MemberView::default()
        };
        let mut keys = Vec::new();
        plan.counter_keys(t, &mut keys);
        for key in keys {
            if !rng.next().is_multiple_of(4) {
                let value = Decimal::new((rng.next() % 1_200_000) as i64, (rng.next() % 3) as u32);
                v.counters.insert(key, value);
            }
        }
        let date = t.time.with_timezone(&plan.tz).date_naive();
        v.counters.insert(
            CounterKey::new("agg.visits", Window::Month.key_for(date)),
            Decimal::from((rng.next() % 4) as i64),
        );
        match rng.next() % 3 {
            0 => {
                v.attributes.insert(
                    "student".into(),
                    AttrValue::Bool(rng.next().is_multiple_of(2)),
                );
            }
            1 => {
                v.attributes
                    .insert("student".into(), AttrValue::Text("yes".into()));
            }
            _ => {}
        }
        v
    }

    #[test]
    fn compiled_conditions_decide_as_the_nodes_evaluate() {
        let plan = match Plan::compile(PROGRAM, &HostFunctions::new()) {
            Ok(p) => p,
            Err(d) => panic!("{d:?}"),
        };
        let mut roots: Vec<NodeId> = Vec::new();
        for r in &plan.rules {
            roots.extend(r.audience);
            roots.extend(r.when);
        }
        roots.extend(plan.aggregates.iter().filter_map(|a| a.filter));
        roots.extend(plan.tiers.iter().filter_map(|t| t.qualify));
        // Every shape above but the attribute-only ones is compiled.
        let direct = plan
            .conds
            .iter()
            .filter(|c| {
                !matches!(
                    c,
                    Cond::Node(_) | Cond::Not(_) | Cond::And(..) | Cond::Or(..)
                )
            })
            .count();
        assert!(direct >= 30, "{direct} conditions decided directly");
        let mut rng = Lcg(7);
        let mut seen = [0usize; 3];
        for i in 0..4000 {
            let t = tx(&mut rng, i);
            let v = view(&mut rng, &plan, &t);
            let local = t.time.with_timezone(&plan.tz).naive_local();
            let own = [Some(Decimal::ONE), None, Some(t.amount.amount)];
            let cx = Cx {
                tx: &t,
                view: &v,
                date: local.date(),
                tier: plan.tier_rank(v.tier.as_ref()),
                item: None,
                own: if i % 2 == 0 { Some(&own) } else { None },
                local,
                cache: None,
                amount_units: None,
                keys: crate::eval::DateKeys::of(local.date()),
            };
            for root in &roots {
                let fast = plan.holds(*root, &cx);
                let slow = plan.eval_bool(*root, &cx);
                assert_eq!(
                    fast,
                    slow,
                    "node {root} ({}) on {t:?} / {v:?}",
                    plan.text(*root)
                );
                seen[match slow {
                    Ok(Some(true)) => 0,
                    Ok(Some(false)) => 1,
                    _ => 2,
                }] += 1;
            }
        }
        // Every outcome occurs: true, false and unknown.
        assert!(seen.iter().all(|n| *n > 100), "{seen:?}");
    }
}
