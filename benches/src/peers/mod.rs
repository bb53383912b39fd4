//! The reference program (`benches/rules/reference.rwd`, 24 rules and
//! campaigns) written for the engines a user would pick instead of `.rwd`,
//! so that their evaluation speed can be compared on the same inputs
//! (`benches/benches/peers.rs`) after checking that they all give the same
//! points (`benches/tests/peers_equal.rs`, `benches/tests/native_equal.rs`).
//!
//! - [`native`]: the same rules hand-written in Rust with `rust_decimal`
//!   (always built; the floor every engine is measured against);
//! - [`facts`]: the flat inputs a host would hand to a general-purpose
//!   engine (local weekday, hour and date, the counters of every cap and
//!   aggregate), computed from a [`Transaction`] and a [`MemberView`];
//! - `rhai`, `cel` (feature `peers-script`) and `zen` (feature `peers-zen`;
//!   `peers` enables both): the same program in a rhai script, CEL
//!   conditions and a zen-engine JDM decision.
//!
//! Every implementation answers with the same [`Awards`]: the points of
//! each component, in the order `.rwd` emits them (earn components in
//! visiting order, then multipliers), components of 0 points left out.

use rewards_core::{MemberView, Outcome, Transaction};

#[cfg(feature = "peers-script")]
pub mod cel;
pub mod facts;
pub mod generated;
pub mod native;
#[cfg(feature = "peers-script")]
pub mod rhai;
#[cfg(feature = "peers-zen")]
pub mod zen;

/// The reference program, as the semantics engineer wrote it.
pub const REFERENCE_RWD: &str = include_str!("../../rules/reference.rwd");

/// The rule ids of the reference program in `.rwd`'s visiting order
/// (priority descending, then declaration): earn rules first, then
/// multipliers. Every implementation reports its points by index into this.
pub const RULES: [&str; 25] = [
    "first_dinner",
    "first_flight",
    "home",
    "base",
    "dining",
    "groceries",
    "gas",
    "streaming",
    "airline",
    "hotel",
    "pharmacy",
    "online",
    "wallet",
    "abroad",
    "big_ticket",
    "weekend_dining",
    "night_owl",
    "coffee_items",
    "students",
    "segment",
    "spring",
    "silver_bonus",
    "gold_bonus",
    "platinum_travel",
    "holiday",
];

/// One component: the rule (index into [`RULES`]) and its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Award {
    /// Index into [`RULES`].
    pub rule: u8,
    /// Whole points (> 0).
    pub points: i64,
}

/// The components of one evaluation, in output order.
pub type Awards = Vec<Award>;

/// The components of a `.rwd` outcome as [`Awards`] (rules not in
/// [`RULES`] are reported as index 255, so a mismatch shows).
pub fn awards_of(outcome: &Outcome, into: &mut Awards) {
    into.clear();
    for c in &outcome.components {
        let rule = RULES
            .iter()
            .position(|r| *r == &*c.rule)
            .and_then(|i| u8::try_from(i).ok())
            .unwrap_or(u8::MAX);
        into.push(Award {
            rule,
            points: c.points.get(),
        });
    }
}

/// Renders awards for a failure message (`base 42, dining 84`).
pub fn show(awards: &[Award]) -> String {
    awards
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                RULES.get(usize::from(a.rule)).copied().unwrap_or("?"),
                a.points
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A transaction and the member state evaluation sees.
pub type Case = (Transaction, MemberView);
