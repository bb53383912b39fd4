//! The seam between the pipeline and the rule language: what the runtime
//! needs from a compiled ruleset, without depending on the language crate.
//! `rewards_dsl::Plan` implements [`Evaluator`].

use crate::member::MemberView;
use crate::outcome::{Outcome, RulesetStamp};
use crate::transaction::Transaction;
use crate::window::CounterKey;

/// Why a transaction could not be evaluated (it goes to the dead letters
/// with this reason; nothing is posted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EvalFailure {
    /// A stable code (for metrics and dead-letter headers).
    pub code: &'static str,
    /// What went wrong, for a human.
    pub message: String,
}

/// A compiled, immutable ruleset that turns transactions into outcomes.
pub trait Evaluator: Send + Sync {
    /// The ruleset id, version and content hash stamped on every posting.
    fn stamp(&self) -> &RulesetStamp;

    /// The counters (caps, aggregates) evaluating `tx` will read, so the
    /// store loads exactly those into the [`MemberView`].
    fn counter_keys(&self, tx: &Transaction, keys: &mut Vec<CounterKey>);

    /// Evaluates one transaction: pure, deterministic, bounded.
    fn evaluate(&self, tx: &Transaction, member: &MemberView) -> Result<Outcome, EvalFailure>;

    /// Evaluates with an explain trace filled in.
    fn explain(&self, tx: &Transaction, member: &MemberView) -> Result<Outcome, EvalFailure>;
}
