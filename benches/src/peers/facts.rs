//! The flat inputs a host hands to a general-purpose engine (rhai,
//! zen-engine, CEL): such an engine knows neither time zones nor the
//! member's windowed counters, so the host converts the transaction's time
//! to the ruleset's zone (local weekday, hour and date) and reads the
//! counters of every cap and aggregate the program may use. Building the
//! facts is part of each peer's cost per transaction (the `.rwd` plan and
//! the hand-written Rust do the same work inside).
//!
//! Absent optional fields become neutral values that make the conditions
//! reading them fail, as an unknown condition does in `.rwd`: MCC `-1`,
//! empty strings, no tier `-1`, `student` false.

use chrono::{Datelike, NaiveDate, Timelike, Weekday};
use chrono_tz::Tz;
use rewards_core::{AttrValue, CounterKey, MemberView, Presence, Transaction, TxKind, Window};
use rust_decimal::Decimal;
use std::sync::Arc;

use super::native::tier_rank;

/// The per-member caps of the reference program, in the order of
/// [`Facts::used`]: counter name, window, limit.
pub const CAPS: [(&str, Window, i64); 11] = [
    ("cap.home", Window::Quarter, 2500),
    ("cap.dining", Window::Quarter, 6000),
    ("cap.groceries", Window::Month, 3000),
    ("cap.gas", Window::Month, 1000),
    ("cap.streaming", Window::Month, 500),
    ("cap.hotel", Window::Year, 20_000),
    ("cap.pharmacy", Window::Rolling(30), 200),
    ("cap.wallet", Window::Day, 50),
    ("cap.big_ticket", Window::Month, 1000),
    ("cap.night_owl", Window::Week(Weekday::Mon), 30),
    ("cap.holiday", Window::Month, 2000),
];

/// Names of [`Facts::used`], as the peer programs read them.
pub const CAP_NAMES: [&str; 11] = [
    "used_home",
    "used_dining",
    "used_groceries",
    "used_gas",
    "used_streaming",
    "used_hotel",
    "used_pharmacy",
    "used_wallet",
    "used_big_ticket",
    "used_night_owl",
    "used_holiday",
];

/// One transaction and member as flat values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// A purchase or an authorization (the only kinds rules evaluate).
    pub earning: bool,
    /// The amount (USD).
    pub amount: Decimal,
    /// The MCC, `-1` when absent.
    pub mcc: i64,
    /// `online`, `in_store` or empty.
    pub presence: &'static str,
    /// The channel or empty.
    pub channel: String,
    /// The country or empty.
    pub country: String,
    /// Local weekday, 1 = Monday … 7 = Sunday.
    pub weekday: i64,
    /// Local hour 0–23.
    pub hour: i64,
    /// Local date as `yyyymmdd`.
    pub date: i64,
    /// The `segment` attribute or empty.
    pub segment: String,
    /// The member's `student` attribute (false when absent).
    pub student: bool,
    /// Tier rank (blue 0 … platinum 3), `-1` for none.
    pub tier: i64,
    /// The `dining_visits` aggregate (this month, before the transaction).
    pub dining_visits: i64,
    /// The `airline_spend` aggregate (this year).
    pub airline_spend: Decimal,
    /// Line items: category and amount.
    pub items: Vec<(String, Decimal)>,
    /// Points each per-member cap of [`CAPS`] has used in its window.
    pub used: [Decimal; 11],
}

/// Builds [`Facts`] (counter names made once).
#[derive(Debug, Clone)]
pub struct FactsBuilder {
    tz: Tz,
    caps: Vec<(Arc<str>, Window)>,
    dining_visits: Arc<str>,
    airline_spend: Arc<str>,
}

impl Default for FactsBuilder {
    fn default() -> Self {
        FactsBuilder::new()
    }
}

impl FactsBuilder {
    /// A builder for the reference program (zone America/New_York).
    pub fn new() -> FactsBuilder {
        FactsBuilder {
            tz: chrono_tz::America::New_York,
            caps: CAPS.iter().map(|(n, w, _)| (Arc::from(*n), *w)).collect(),
            dining_visits: Arc::from("agg.dining_visits"),
            airline_spend: Arc::from("agg.airline_spend"),
        }
    }

    /// The facts of one transaction, into a reusable value.
    pub fn build(&self, tx: &Transaction, view: &MemberView, f: &mut Facts) {
        let local = tx.time.with_timezone(&self.tz);
        let day: NaiveDate = local.date_naive();
        f.earning = matches!(tx.kind, TxKind::Purchase | TxKind::Authorization);
        f.amount = tx.amount.amount;
        f.mcc = tx.mcc.map_or(-1, i64::from);
        f.presence = match tx.presence {
            Some(Presence::Online) => "online",
            Some(Presence::InStore) => "in_store",
            None => "",
        };
        f.channel.clear();
        f.channel.push_str(tx.channel.as_deref().unwrap_or(""));
        f.country.clear();
        f.country.push_str(tx.country.as_deref().unwrap_or(""));
        f.weekday = i64::from(local.weekday().number_from_monday());
        f.hour = i64::from(local.hour());
        f.date = i64::from(day.year()) * 10_000 + i64::from(day.month() * 100 + day.day());
        f.segment.clear();
        if let Some(AttrValue::Text(s)) = tx.attributes.get("segment") {
            f.segment.push_str(s);
        }
        f.student = matches!(view.attributes.get("student"), Some(AttrValue::Bool(true)));
        f.tier = tier_rank(view.tier.as_deref()).map_or(-1, i64::from);
        f.dining_visits = view
            .counter(&CounterKey {
                name: self.dining_visits.clone(),
                window: Window::Month.key_for(day),
            })
            .trunc()
            .try_into()
            .unwrap_or(0);
        f.airline_spend = view.counter(&CounterKey {
            name: self.airline_spend.clone(),
            window: Window::Year.key_for(day),
        });
        f.items.clear();
        f.items
            .extend(tx.line_items.iter().map(|i| (i.category.clone(), i.amount)));
        for ((name, window), used) in self.caps.iter().zip(f.used.iter_mut()) {
            let mut sum = Decimal::ZERO;
            for key in window.keys_for(day) {
                sum += view.counter(&CounterKey {
                    name: name.clone(),
                    window: key,
                });
            }
            *used = sum;
        }
    }
}
