//! The compiled, immutable form of a ruleset.
//!
//! A [`Plan`] is flat: every expression of the program is a [`Node`] in one
//! vector, children are indices into it, constant sub-expressions are
//! folded, categories and constant lists are pre-sorted integer ranges, and
//! rules are pre-indexed by transaction kind and merchant category code so
//! that a rule whose `when` cannot hold for a transaction is never visited.
//! It is `Send + Sync`, shared by `Arc`, and identified by a content hash
//! (see [`Plan::stamp`]); swapping plans is swapping `Arc`s.

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use rewards_core::{ComponentKind, Currency, Points, RulesetStamp, Window};
use rust_decimal::Decimal;
use std::fmt;
use std::sync::Arc;

use crate::ast::{self, ItemFn, Period, Resolution, RoundingMode, TypeName};
use crate::check::{Builtin, ItemField};
use crate::host::HostFn;
use crate::value::{Length, Val};

/// Index of a node in [`Plan`]'s node vector.
pub type NodeId = u32;

/// Why a transaction could not be evaluated. Nothing is posted; the
/// runtime dead-letters the transaction with [`EvalError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// Arithmetic left the exact decimal range or the i64 points range.
    #[error("arithmetic overflow in {0}")]
    Overflow(String),
    /// A division by zero.
    #[error("division by zero in {0}")]
    DivisionByZero(String),
    /// The transaction's currency is not the ruleset's.
    #[error("the transaction is in {found}, but the ruleset's currency is {expected}")]
    Currency {
        /// The ruleset's currency.
        expected: Currency,
        /// The transaction's.
        found: Currency,
    },
    /// A host function failed or answered with the wrong type.
    #[error("host function {function}: {message}")]
    Host {
        /// The function.
        function: String,
        /// What it said.
        message: String,
    },
    /// An input beyond the engine's limits.
    #[error("limit: {0}")]
    Limit(String),
}

impl EvalError {
    /// The stable code (`eval.overflow`, ...) for metrics and dead letters.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::Overflow(_) => "eval.overflow",
            EvalError::DivisionByZero(_) => "eval.division_by_zero",
            EvalError::Currency { .. } => "eval.currency",
            EvalError::Host { .. } => "eval.host",
            EvalError::Limit(_) => "eval.limit",
        }
    }

    /// The same error, with the rule or step it happened in.
    pub(crate) fn within(self, place: &str) -> EvalError {
        match self {
            EvalError::Overflow(m) if m.is_empty() => EvalError::Overflow(place.to_string()),
            EvalError::DivisionByZero(m) if m.is_empty() => {
                EvalError::DivisionByZero(place.to_string())
            }
            other => other,
        }
    }
}

impl From<EvalError> for rewards_core::EvalFailure {
    fn from(e: EvalError) -> rewards_core::EvalFailure {
        rewards_core::EvalFailure {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Rel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rel::Eq => "==",
            Rel::Ne => "!=",
            Rel::Lt => "<",
            Rel::Le => "<=",
            Rel::Gt => ">",
            Rel::Ge => ">=",
        }
    }

    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub(crate) fn flipped(self) -> Rel {
        match self {
            Rel::Eq => Rel::Eq,
            Rel::Ne => Rel::Ne,
            Rel::Lt => Rel::Gt,
            Rel::Le => Rel::Ge,
            Rel::Gt => Rel::Lt,
            Rel::Ge => Rel::Le,
        }
    }

    /// The operator that holds exactly when this one does not.
    pub(crate) fn negated(self) -> Rel {
        match self {
            Rel::Eq => Rel::Ne,
            Rel::Ne => Rel::Eq,
            Rel::Lt => Rel::Ge,
            Rel::Le => Rel::Gt,
            Rel::Gt => Rel::Le,
            Rel::Ge => Rel::Lt,
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// A transaction field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxRead {
    Amount,
    Currency,
    Kind,
    Mcc,
    Merchant,
    Channel,
    Presence,
    Country,
    Time,
}

/// One compiled expression node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Const(Val<'static>),
    Tx(TxRead),
    TxAttr(Box<str>, TypeName),
    MemberTier,
    MemberEnrolled,
    MemberBalance,
    MemberAttr(Box<str>, TypeName),
    Item(ItemField),
    Aggregate(u16),
    Not(NodeId),
    Neg(NodeId),
    And(NodeId, NodeId),
    Or(NodeId, NodeId),
    Cmp(Rel, NodeId, NodeId),
    /// Membership in a constant set (categories, constant lists).
    InSet {
        value: NodeId,
        set: u32,
        negate: bool,
    },
    /// Membership in a list with non-constant elements; `elems` indexes
    /// [`Plan::list_elems`].
    InList {
        value: NodeId,
        elems: (u32, u32),
        negate: bool,
    },
    Arith(ArithOp, NodeId, NodeId),
    /// `args` indexes [`Plan::args`].
    Builtin(Builtin, (u32, u32)),
    Extern(u16, (u32, u32)),
    ItemFold {
        func: ItemFn,
        filter: Option<NodeId>,
        value: Option<NodeId>,
        zero: Val<'static>,
    },
}

/// An element of a non-constant list.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ListItem {
    One(NodeId),
    Range(NodeId, NodeId),
}

/// A constant set: sorted, merged integer ranges, or other constants.
#[derive(Debug, Clone)]
pub(crate) enum ConstSet {
    Ints(Vec<(i64, i64)>),
    Other(Vec<(Val<'static>, Option<Val<'static>>)>),
}

impl ConstSet {
    pub(crate) fn contains(&self, v: &Val<'_>) -> Option<bool> {
        match (self, v) {
            (_, Val::Absent) => None,
            (ConstSet::Ints(ranges), Val::Int(i)) => {
                let at = ranges.partition_point(|(_, hi)| hi < i);
                Some(ranges.get(at).is_some_and(|(lo, _)| lo <= i))
            }
            (ConstSet::Ints(ranges), other) => {
                let d = other.as_decimal()?;
                Some(
                    ranges
                        .iter()
                        .any(|(lo, hi)| Decimal::from(*lo) <= d && d <= Decimal::from(*hi)),
                )
            }
            (ConstSet::Other(elems), v) => Some(elems.iter().any(|(a, b)| match b {
                None => a.equals(v) == Some(true),
                Some(b) => {
                    matches!(
                        a.compare(v),
                        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                    ) && matches!(
                        v.compare(b),
                        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                    )
                }
            })),
        }
    }
}

/// A cap of a rule.
#[derive(Debug, Clone)]
pub(crate) struct CapPlan {
    pub limit: i64,
    /// `None`: per transaction.
    pub window: Option<Window>,
    /// As written, for explain.
    pub text: String,
}

/// What a rule does when it matches.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Earn(NodeId),
    Multiply {
        factor: NodeId,
        /// Bit set over rule indices: the earn rules it scales.
        targets: Vec<u64>,
        /// As written, for explain.
        target_text: String,
    },
}

/// One rule or campaign.
#[derive(Debug, Clone)]
pub(crate) struct RulePlan {
    pub id: Arc<str>,
    pub label: Arc<str>,
    pub campaign: bool,
    pub component: ComponentKind,
    pub priority: u32,
    /// Start (inclusive) and end (exclusive) of the effective period or schedule.
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub audience: Option<NodeId>,
    pub when: Option<NodeId>,
    pub action: Action,
    pub rounding: RoundingMode,
    pub caps: Vec<CapPlan>,
    /// The counter of its per-member caps (`cap.ID`).
    pub counter: Arc<str>,
    pub group: Option<u16>,
    pub budget: Option<(Arc<str>, Points)>,
    /// The `when` holds exactly for the transactions the dispatch index
    /// lists the rule for (it tests only the kind and the MCC), so the
    /// evaluator does not compute it for those (explain still does).
    pub when_by_dispatch: bool,
    /// Likewise for the `audience`, decided by [`RulePlan::tiers`].
    pub audience_by_dispatch: bool,
    /// Bit set of the member tiers (bit = rank, bit 63 = no tier) for
    /// which the rule may match; the evaluator skips the rule for the
    /// others (all bits when its conditions could fail to evaluate).
    pub tiers: u64,
    /// `Some((k, d))` when the rule earns `k * floor(tx.amount / d)`
    /// (`k >= 1`, `d` a divisor of 1000; `floor(tx.amount)` is `(1, 1)`):
    /// the evaluator computes it in integers from the transaction's amount
    /// (see [`crate::eval::AmountUnits`]) instead of node by node.
    pub earn_floor: Option<(i64, u64)>,
}

/// The bit of a member's tier in [`RulePlan::tiers`].
pub(crate) fn tier_bit(tier: Option<u16>) -> u64 {
    match tier {
        Some(t) if t < 63 => 1 << t,
        _ => 1 << 63,
    }
}

impl RulePlan {
    pub(crate) fn earns(&self) -> bool {
        matches!(self.action, Action::Earn(_))
    }
}

/// An exclusive group.
#[derive(Debug, Clone)]
pub(crate) struct GroupPlan {
    pub name: Arc<str>,
    pub resolution: Resolution,
}

/// A counter-backed member aggregate (declared, or `spend(W)`/`count(W)`).
#[derive(Debug, Clone)]
pub(crate) struct AggPlan {
    /// The counter's name (`agg.NAME`, `spend`, `count`).
    pub counter: Arc<str>,
    /// As written (`airline_spend`, `spend(calendar year)`).
    pub label: String,
    pub spend: bool,
    pub window: Window,
    pub filter: Option<NodeId>,
    /// Whether this slot emits the transaction's increment (two slots that
    /// share counter instances, e.g. `spend(day)` and `spend(rolling 7
    /// days)`, emit it once).
    pub emits: bool,
}

/// A tier.
#[derive(Debug, Clone)]
pub(crate) struct TierPlan {
    pub name: Arc<str>,
    pub qualify: Option<NodeId>,
    pub grace: Option<Length>,
}

/// A bound host function.
#[derive(Clone)]
pub(crate) struct ExternPlan {
    pub name: Arc<str>,
    pub params: Vec<TypeName>,
    pub ret: TypeName,
    pub func: HostFn,
}

impl fmt::Debug for ExternPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::host::signature_text(
            &self.name,
            &self.params,
            self.ret,
        ))
    }
}

/// When earned points expire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ExpiryPlan {
    Never,
    After(Length),
    AtEndOf(Period, Length),
}

/// Pre-indexed rule lists: which rules can match a transaction of an
/// earning kind with a given merchant category code.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dispatch {
    /// Sorted, distinct boundaries of the MCC ranges rules test.
    pub bounds: Vec<u32>,
    /// `lists` index per (kind 0 = purchase / 1 = authorization) × segment
    /// (see [`Dispatch::segment`]).
    pub table: Vec<u32>,
    /// Rule indices in visiting order, deduplicated.
    pub lists: Vec<Vec<u16>>,
}

impl Dispatch {
    /// Number of rows per kind: "no MCC" plus one per segment.
    pub(crate) fn row(&self) -> usize {
        self.bounds.len() + 2
    }

    /// The segment of an MCC (0: none; `j + 1` for `[bounds[j-1], bounds[j])`).
    pub(crate) fn segment(&self, mcc: Option<u16>) -> usize {
        match mcc {
            None => 0,
            Some(m) => 1 + self.bounds.partition_point(|b| *b <= u32::from(m)),
        }
    }

    pub(crate) fn rules(&self, kind: usize, mcc: Option<u16>) -> &[u16] {
        self.table
            .get(kind * self.row() + self.segment(mcc))
            .and_then(|l| self.lists.get(*l as usize))
            .map_or(&[], Vec::as_slice)
    }
}

/// A compiled ruleset: immutable, `Send + Sync`, shared by `Arc`.
#[derive(Debug)]
pub struct Plan {
    pub(crate) stamp: RulesetStamp,
    pub(crate) currency: Currency,
    pub(crate) tz: Tz,
    /// `tz`'s offsets from 1970 to 2100 ([`crate::zone`]), for the hot
    /// path's conversions, found when the plan is compiled (once per zone
    /// and process, shared by the plans of the zone) so that no transaction
    /// waits for it; `None`: chrono-tz answers.
    pub(crate) zone: Option<Arc<crate::zone::ZoneTable>>,
    pub(crate) week_start: Weekday,
    pub(crate) pending: Option<Length>,
    pub(crate) expiry: ExpiryPlan,
    pub(crate) source: Arc<str>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) spans: Vec<ast::Span>,
    pub(crate) args: Vec<NodeId>,
    pub(crate) list_elems: Vec<ListItem>,
    pub(crate) sets: Vec<ConstSet>,
    /// Rules in visiting order (priority descending, then declaration).
    pub(crate) rules: Vec<RulePlan>,
    pub(crate) groups: Vec<GroupPlan>,
    pub(crate) aggregates: Vec<AggPlan>,
    pub(crate) tiers: Vec<TierPlan>,
    pub(crate) tier_names: Vec<Arc<str>>,
    pub(crate) externs: Vec<ExternPlan>,
    pub(crate) dispatch: Dispatch,
    /// Names of host functions replaced by stubs (`rwd test` only).
    pub(crate) stubbed: Vec<String>,
    /// The conditions (`when`, `audience`, aggregate filters, `qualify`)
    /// compiled for the hot path ([`crate::cond`]).
    pub(crate) conds: Vec<crate::cond::Cond>,
    /// By node: the condition compiled for it, or [`crate::cond::NO_COND`].
    pub(crate) cond_of: Vec<crate::cond::CondId>,
}

impl Plan {
    /// The zone's table of offsets ([`Plan::zone`]).
    #[inline]
    pub(crate) fn zone(&self) -> Option<&crate::zone::ZoneTable> {
        self.zone.as_deref()
    }

    /// Compiles every rule's `when` and `audience`, every aggregate's
    /// filter and every tier's `qualify` into [`Plan::conds`].
    pub(crate) fn compile_conds(&mut self) {
        for i in 0..self.rules.len() {
            let k = match self.rules.get(i).map(|r| &r.action) {
                Some(Action::Earn(amount)) => self.scaled_floor(*amount),
                _ => None,
            };
            if let Some(r) = self.rules.get_mut(i) {
                r.earn_floor = k;
            }
        }
        self.conds.clear();
        self.cond_of = vec![crate::cond::NO_COND; self.nodes.len()];
        let mut roots: Vec<NodeId> = Vec::new();
        for r in &self.rules {
            roots.extend(r.audience);
            roots.extend(r.when);
        }
        roots.extend(self.aggregates.iter().filter_map(|a| a.filter));
        roots.extend(self.tiers.iter().filter_map(|t| t.qualify));
        for root in roots {
            self.compile_cond(root);
        }
    }

    /// `Some((k, d))` when `node` is `floor(tx.amount)` (`(1, 1)`),
    /// `floor(tx.amount / d)` with a constant whole `d` dividing 1000 (the
    /// quotient has at most three more decimals: the decimal division is
    /// exact), or either times a constant whole `k >= 1` on either side.
    fn scaled_floor(&self, node: NodeId) -> Option<(i64, u64)> {
        let floor_of_amount = |id: NodeId| -> Option<u64> {
            let Some(Node::Builtin(crate::check::Builtin::Floor, (start, 1))) =
                self.nodes.get(id as usize)
            else {
                return None;
            };
            let arg = *self.args.get(*start as usize)?;
            match self.nodes.get(arg as usize)? {
                Node::Tx(TxRead::Amount) => Some(1),
                Node::Arith(ArithOp::Div, x, y) => {
                    let amount =
                        matches!(self.nodes.get(*x as usize), Some(Node::Tx(TxRead::Amount)));
                    match self.nodes.get(*y as usize) {
                        Some(Node::Const(Val::Int(d))) if amount && *d >= 1 && 1000 % *d == 0 => {
                            u64::try_from(*d).ok()
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        if let Some(d) = floor_of_amount(node) {
            return Some((1, d));
        }
        let Some(Node::Arith(ArithOp::Mul, a, b)) = self.nodes.get(node as usize) else {
            return None;
        };
        let (k, d) = match (self.nodes.get(*a as usize), self.nodes.get(*b as usize)) {
            (Some(Node::Const(Val::Int(k))), _) => (*k, floor_of_amount(*b)?),
            (_, Some(Node::Const(Val::Int(k)))) => (*k, floor_of_amount(*a)?),
            _ => return None,
        };
        (k >= 1).then_some((k, d))
    }

    /// The ruleset id, version and content hash stamped on every posting.
    pub fn stamp(&self) -> &RulesetStamp {
        &self.stamp
    }

    /// The hex SHA-256 content hash.
    pub fn hash(&self) -> &str {
        &self.stamp.hash
    }

    /// The ruleset's time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first day of `week` windows.
    pub fn week_start(&self) -> Weekday {
        self.week_start
    }

    /// The ruleset's currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Rule and campaign ids in visiting order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.id)
    }

    /// Tier names, lowest first.
    pub fn tier_names(&self) -> &[Arc<str>] {
        &self.tier_names
    }

    /// Host functions replaced by stubs because they were not registered
    /// (only when compiled for `rwd test` with stubs allowed).
    pub fn stubbed_functions(&self) -> &[String] {
        &self.stubbed
    }

    /// Number of expression nodes (after constant folding).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The source text of a node, for explain.
    pub(crate) fn text(&self, node: NodeId) -> &str {
        self.spans
            .get(node as usize)
            .and_then(|s| self.source.get(s.start..s.end))
            .unwrap_or("?")
    }

    pub(crate) fn show(&self, v: &Val<'_>) -> String {
        crate::value::display(v, self.currency, &self.tier_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn plan_is_send_and_sync() {
        assert_send_sync::<Plan>();
        assert_send_sync::<Arc<Plan>>();
    }

    #[test]
    fn int_sets_search_ranges() {
        let set = ConstSet::Ints(vec![(3000, 3299), (4511, 4511), (5812, 5814)]);
        assert_eq!(set.contains(&Val::Int(3100)), Some(true));
        assert_eq!(set.contains(&Val::Int(4510)), Some(false));
        assert_eq!(set.contains(&Val::Int(5814)), Some(true));
        assert_eq!(set.contains(&Val::Int(9999)), Some(false));
        assert_eq!(set.contains(&Val::Absent), None);
    }
}
