//! The result of evaluating one transaction: data, not effects. The ledger
//! turns it into postings; the store persists it atomically.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::ids::{MemberId, TxId};
use crate::points::Points;
use crate::transaction::TxKind;
use crate::window::CounterKey;

/// Which ruleset produced an outcome; stamped on every posting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RulesetStamp {
    /// The ruleset's declared name (`"acme-card"`).
    pub id: Arc<str>,
    /// The ruleset's declared version.
    pub version: u32,
    /// Hex SHA-256 content hash of the compiled plan.
    pub hash: Arc<str>,
}

/// What produced a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// An earn rule.
    Earn,
    /// A multiplier (its own component: the extra points it adds).
    Multiplier,
    /// A campaign award.
    Campaign,
}

/// One rule's award: its own posting component, rounded as declared, so a
/// statement can show "base 26, dining bonus 52".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// The rule or campaign id.
    pub rule: Arc<str>,
    /// Its human description.
    pub label: Arc<str>,
    /// What kind of rule produced it.
    pub kind: ComponentKind,
    /// Whole points awarded, after rounding, caps and trimming.
    pub points: Points,
    /// The exact value before rounding (for explain and audit).
    pub exact: Decimal,
    /// Campaign budget this component draws on, if any (the store may trim).
    pub budget: Option<Arc<str>>,
}

/// An increment of one counter (a cap's used points, an aggregate's spend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterDelta {
    /// Which counter instance.
    pub key: CounterKey,
    /// By how much (may be negative for refunds).
    pub delta: Decimal,
    /// The component (index into [`Outcome::components`]) whose points this
    /// counts, so the store can lower it when a budget trims that component.
    pub component: Option<u16>,
}

/// Points a component proposes to draw from a global campaign budget.
/// Evaluation proposes; the store enforces at commit and trims to the room
/// left (the trimmed outcome is what is stored and explained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetClaim {
    /// The budget's name.
    pub budget: Arc<str>,
    /// Index into [`Outcome::components`].
    pub component: u16,
    /// Points proposed.
    pub points: Points,
    /// The budget's total limit, as the plan declares it.
    pub limit: Points,
}

/// A tier change decided by evaluation or a tier review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierChange {
    /// The tier before.
    pub from: Option<Arc<str>>,
    /// The tier after.
    pub to: Arc<str>,
    /// When it takes effect.
    pub effective: DateTime<Utc>,
}

/// When the points earned become available and when they expire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotTerms {
    /// Pending until this instant (`None`: available at once).
    pub available_at: Option<DateTime<Utc>>,
    /// Expiry instant (`None`: never expires).
    pub expires_at: Option<DateTime<Utc>>,
}

/// One line of an explain trace: why a rule matched or not, and its arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainLine {
    /// The rule, campaign or tier id.
    pub rule: Arc<str>,
    /// Whether it matched.
    pub matched: bool,
    /// The deciding detail: the first failed condition with the values that
    /// decided it, or the arithmetic of the award, caps and trims.
    pub detail: String,
}

/// The explain trace of one evaluation (filled only on request).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainTrace {
    /// One line per rule, campaign and step, in evaluation order.
    pub lines: Vec<ExplainLine>,
}

/// Everything one transaction does, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The transaction.
    pub tx_id: TxId,
    /// Its member.
    pub member: MemberId,
    /// Its kind.
    pub kind: TxKind,
    /// The ruleset that produced this outcome.
    pub ruleset: RulesetStamp,
    /// Awards, one per rule that contributed.
    pub components: Vec<Component>,
    /// Counter increments (caps, aggregates).
    pub counters: Vec<CounterDelta>,
    /// Budget draws to enforce at commit.
    pub budgets: Vec<BudgetClaim>,
    /// Tier change, if any.
    pub tier_change: Option<TierChange>,
    /// Pending period and expiry of the lot the points form.
    pub lot: LotTerms,
    /// Explain trace, when requested.
    pub explain: Option<ExplainTrace>,
    /// The member version ([`crate::member::MemberView::version`]) this
    /// outcome was evaluated at, when the caller wants it checked: a store
    /// applies the outcome only if the member is still at that version, and
    /// otherwise refuses it ([`crate::ErrorKind::Stale`]) and changes
    /// nothing. Evaluation leaves it `None` (no check); the pipeline sets it
    /// on the transactions it evaluates from a predicted view
    /// ([`crate::ledger::advance_view`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expects_version: Option<u64>,
}

impl Outcome {
    /// An outcome with nothing in it, to be filled by evaluation (reusable
    /// buffer: call [`Outcome::clear`] between transactions).
    pub fn empty(tx_id: TxId, member: MemberId, kind: TxKind, ruleset: RulesetStamp) -> Outcome {
        Outcome {
            tx_id,
            member,
            kind,
            ruleset,
            components: Vec::new(),
            counters: Vec::new(),
            budgets: Vec::new(),
            tier_change: None,
            lot: LotTerms::default(),
            explain: None,
            expects_version: None,
        }
    }

    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        self.components.clear();
        self.counters.clear();
        self.budgets.clear();
        self.tier_change = None;
        self.lot = LotTerms::default();
        self.expects_version = None;
        if let Some(trace) = &mut self.explain {
            trace.lines.clear();
        }
    }

    /// Sum of all components' points (checked).
    pub fn total_points(&self) -> Result<Points, crate::points::PointsOverflow> {
        self.components
            .iter()
            .try_fold(Points::ZERO, |sum, c| sum.checked_add(c.points))
    }
}
