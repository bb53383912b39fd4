//! `rewards-core`: the vocabulary every other crate of the rewards engine speaks.
//!
//! It owns the domain types (ids, [`Money`], [`Points`], [`Transaction`],
//! member profiles and views, [`Outcome`]), the points ledger rules (lots,
//! expiry, reversals, idempotency), the storage traits that the adapters in
//! `rewards-store` implement, an in-memory store (the embedded default) and
//! the limits that bound every input.
//!
//! It does no I/O of its own (the in-memory store's optional event-log file
//! is the one exception, and lives behind a trait) and depends on no other
//! workspace crate.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod evaluate;
mod forward;
#[cfg(feature = "generate")]
pub mod generate;
pub mod ids;
pub mod ledger;
pub mod limits;
pub mod member;
pub mod memory;
pub mod money;
pub mod outcome;
pub mod points;
pub mod store;
pub mod strict_json;
pub mod transaction;
pub mod window;

pub use error::{Error, ErrorKind};
pub use evaluate::{EvalFailure, Evaluator};
pub use ids::{MemberId, TxId};
pub use member::{MemberProfile, MemberView};
pub use money::{Currency, Money};
pub use outcome::{
    BudgetClaim, Component, ComponentKind, CounterDelta, ExplainLine, ExplainTrace, LotTerms,
    Outcome, RulesetStamp, TierChange,
};
pub use points::Points;
pub use store::{BalanceCache, LedgerStore};
pub use transaction::{AttrValue, DecodeError, LineItem, Presence, Transaction, TxKind};
pub use window::{CounterKey, Window, WindowKey};

/// What [`forward_ledger_store!`]'s expansion names through `$crate`, so
/// that its callers need no dependency of their own.
#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use chrono::{DateTime, Utc};
}
