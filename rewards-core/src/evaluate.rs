//! The seam between the pipeline and the rule language: what the runtime
//! needs from a compiled ruleset, without depending on the language crate.
//! `rewards_dsl::Plan` implements [`Evaluator`].

use chrono::{DateTime, Utc};

use crate::ids::MemberId;
use crate::ledger::TierReview;
use crate::member::MemberView;
use crate::outcome::{Outcome, RulesetStamp, TierChange};
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

    /// Whether the ruleset decides tiers at a scheduled review. The review
    /// job enumerates the members only when it does. The default: no.
    fn reviews_tiers(&self) -> bool {
        false
    }

    /// The counters a tier review as of `as_of` reads (the aggregates the
    /// tiers qualify on, in the windows of `as_of`'s local date), so the
    /// store loads exactly those into each member's view. The default: none.
    fn review_keys(&self, as_of: DateTime<Utc>, keys: &mut Vec<CounterKey>) {
        let _ = (as_of, keys);
    }

    /// The scheduled tier review of one member as of `as_of`: the tier the
    /// rules decide and when it takes effect (at once for an upgrade, after
    /// the current tier's grace for a downgrade, keeping the date of a
    /// downgrade already `scheduled`; the current tier again cancels a
    /// scheduled change), or `None` when there is nothing to decide.
    /// `member` holds the counters of [`Evaluator::review_keys`] for the
    /// same `as_of`. Pure and deterministic: reviewing the same state as of
    /// the same instant decides the same thing, so the ledger records it
    /// once (see [`TierReview`]). The default: nothing to review.
    fn review_tier(
        &self,
        id: &MemberId,
        member: &MemberView,
        scheduled: Option<&TierChange>,
        as_of: DateTime<Utc>,
    ) -> Result<Option<TierReview>, EvalFailure> {
        let _ = (id, member, scheduled, as_of);
        Ok(None)
    }
}
