//! The reference program hand-written in Rust with `rust_decimal`: what a
//! competent engineer would write without a rules engine — a `match` on
//! the merchant category, the caps read straight from the member's
//! counters, the groups and multipliers as plain code. It is the floor
//! the `.rwd` evaluator is measured against (goal: within 3×).
//!
//! The semantics are those of `docs/semantics.md` for exactly the rules of
//! `benches/rules/reference.rwd` (match, earn, round, caps, exclusive
//! groups, multipliers); it reports points only (no counters, budgets,
//! tier change or lot terms — the `.rwd` plan computes those too, which is
//! part of what it costs).

use chrono::{Datelike, NaiveDate, Timelike, Weekday};
use chrono_tz::Tz;
use rewards_core::{
    AttrValue, CounterKey, Currency, MemberView, Transaction, TxKind, Window, WindowKey,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::sync::Arc;

use super::{Award, Awards};

/// Merchant categories of the reference program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cat {
    /// 5812–5814.
    Dining,
    /// 5411, 5422, 5441, 5451, 5462.
    Groceries,
    /// 5541, 5542, 5983.
    Gas,
    /// 4899, 5815–5818.
    Streaming,
    /// 3000–3299, 4511.
    Airline,
    /// 3500–3999, 7011.
    Hotel,
    /// 5912.
    Pharmacy,
    /// 5200, 5211, 5231, 5251, 5261.
    Home,
    /// Anything else.
    Other,
}

/// The category of a merchant category code.
pub fn category(mcc: u16) -> Cat {
    match mcc {
        5812..=5814 => Cat::Dining,
        5411 | 5422 | 5441 | 5451 | 5462 => Cat::Groceries,
        5541 | 5542 | 5983 => Cat::Gas,
        4899 | 5815..=5818 => Cat::Streaming,
        3000..=3299 | 4511 => Cat::Airline,
        3500..=3999 | 7011 => Cat::Hotel,
        5912 => Cat::Pharmacy,
        5200 | 5211 | 5231 | 5251 | 5261 => Cat::Home,
        _ => Cat::Other,
    }
}

/// The rank of a tier name (`blue` 0 … `platinum` 3); another name is no tier.
pub fn tier_rank(tier: Option<&str>) -> Option<u8> {
    match tier? {
        "blue" => Some(0),
        "silver" => Some(1),
        "gold" => Some(2),
        "platinum" => Some(3),
        _ => None,
    }
}

// Indices into `RULES`.
const FIRST_DINNER: usize = 0;
const FIRST_FLIGHT: usize = 1;
const HOME: usize = 2;
const BASE: usize = 3;
const DINING: usize = 4;
const GROCERIES: usize = 5;
const GAS: usize = 6;
const STREAMING: usize = 7;
const AIRLINE: usize = 8;
const HOTEL: usize = 9;
const PHARMACY: usize = 10;
const ONLINE: usize = 11;
const WALLET: usize = 12;
const ABROAD: usize = 13;
const BIG_TICKET: usize = 14;
const WEEKEND_DINING: usize = 15;
const NIGHT_OWL: usize = 16;
const COFFEE_ITEMS: usize = 17;
const STUDENTS: usize = 18;
const SEGMENT: usize = 19;
const SPRING: usize = 20;
/// The first multiplier (silver_bonus, gold_bonus, platinum_travel, holiday follow).
const SILVER_BONUS: usize = 21;
const EARN_RULES: usize = 21;

/// Why the hand-written program refused a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeError {
    /// Not in USD.
    Currency,
    /// Points beyond i64.
    Overflow,
}

/// The hand-written program; build once, evaluate many times.
#[derive(Debug, Clone)]
pub struct Native {
    tz: Tz,
    counters: [Arc<str>; 11],
    dining_visits: Arc<str>,
    airline_spend: Arc<str>,
    holiday: (NaiveDate, NaiveDate),
    spring: (NaiveDate, NaiveDate),
}

impl Default for Native {
    fn default() -> Self {
        Native::new()
    }
}

/// Whole points of an exact award, floor (the ruleset's rounding).
fn floor_points(exact: Decimal) -> Result<i64, NativeError> {
    exact
        .max(Decimal::ZERO)
        .floor()
        .to_i64()
        .ok_or(NativeError::Overflow)
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

impl Native {
    /// The program, with its counter names built once.
    pub fn new() -> Native {
        let cap = |id: &str| -> Arc<str> { Arc::from(format!("cap.{id}")) };
        Native {
            tz: chrono_tz::America::New_York,
            counters: [
                cap("home"),
                cap("dining"),
                cap("groceries"),
                cap("gas"),
                cap("streaming"),
                cap("hotel"),
                cap("pharmacy"),
                cap("wallet"),
                cap("big_ticket"),
                cap("night_owl"),
                cap("holiday"),
            ],
            dining_visits: Arc::from("agg.dining_visits"),
            airline_spend: Arc::from("agg.airline_spend"),
            holiday: (date(2026, 12, 1), date(2026, 12, 31)),
            spring: (date(2026, 3, 1), date(2026, 5, 31)),
        }
    }

    /// The room a per-member cap leaves: `limit` minus the points counter
    /// `which` holds in the window of `day`, never below 0.
    fn room(
        &self,
        view: &MemberView,
        which: usize,
        window: Window,
        day: NaiveDate,
        limit: i64,
    ) -> Result<i64, NativeError> {
        let Some(name) = self.counters.get(which) else {
            return Ok(limit);
        };
        let mut used = Decimal::ZERO;
        for key in window.keys_for(day) {
            used += view.counter(&CounterKey {
                name: name.clone(),
                window: key,
            });
        }
        (Decimal::from(limit) - used)
            .floor()
            .max(Decimal::ZERO)
            .to_i64()
            .ok_or(NativeError::Overflow)
    }

    fn aggregate(&self, view: &MemberView, name: &Arc<str>, window: WindowKey) -> Decimal {
        view.counter(&CounterKey {
            name: name.clone(),
            window,
        })
    }

    /// Evaluates one transaction: the points of each component, in `.rwd`'s
    /// output order, into `out`.
    pub fn evaluate(
        &self,
        tx: &Transaction,
        view: &MemberView,
        out: &mut Awards,
    ) -> Result<(), NativeError> {
        out.clear();
        if !matches!(tx.kind, TxKind::Purchase | TxKind::Authorization) {
            return Ok(());
        }
        if tx.amount.currency != Currency::USD {
            return Err(NativeError::Currency);
        }
        let local = tx.time.with_timezone(&self.tz);
        let day = local.date_naive();
        let amount = tx.amount.amount;
        let whole = floor_points(amount)?;
        let cat = tx.mcc.map(category);
        let tier = tier_rank(view.tier.as_deref());

        // Earned award per rule (`None`: did not match); caps applied.
        let mut earned: [Option<i64>; EARN_RULES] = [None; EARN_RULES];
        let month = Window::Month;
        let quarter = Window::Quarter;
        match cat {
            Some(Cat::Dining) => {
                let visits = self.aggregate(view, &self.dining_visits, month.key_for(day));
                if visits.trunc().is_zero() {
                    earned[FIRST_DINNER] = Some(100);
                }
                earned[DINING] = Some(
                    whole
                        .checked_mul(2)
                        .ok_or(NativeError::Overflow)?
                        .min(self.room(view, 1, quarter, day, 6000)?),
                );
                if matches!(local.weekday(), Weekday::Sat | Weekday::Sun) {
                    earned[WEEKEND_DINING] = Some(whole);
                }
                let coffee: Decimal = tx
                    .line_items
                    .iter()
                    .filter(|i| i.category == "coffee")
                    .map(|i| i.amount)
                    .sum();
                earned[COFFEE_ITEMS] = Some(floor_points(coffee * Decimal::from(5))?);
            }
            Some(Cat::Airline) => {
                let spend = self.aggregate(view, &self.airline_spend, Window::Year.key_for(day));
                if spend.is_zero() {
                    earned[FIRST_FLIGHT] = Some(500);
                }
                earned[AIRLINE] = Some(whole.checked_mul(2).ok_or(NativeError::Overflow)?);
            }
            Some(Cat::Home) => {
                if amount >= Decimal::from(50) {
                    earned[HOME] = Some(whole.min(self.room(view, 0, quarter, day, 2500)?));
                }
            }
            Some(Cat::Groceries) => {
                earned[GROCERIES] = Some(whole.min(self.room(view, 2, month, day, 3000)?));
            }
            Some(Cat::Gas) => {
                earned[GAS] = Some(whole.min(self.room(view, 3, month, day, 1000)?));
            }
            Some(Cat::Streaming) => {
                earned[STREAMING] = Some(
                    whole
                        .checked_mul(3)
                        .ok_or(NativeError::Overflow)?
                        .min(self.room(view, 4, month, day, 500)?),
                );
                let student = matches!(view.attributes.get("student"), Some(AttrValue::Bool(true)));
                if student {
                    earned[STUDENTS] = Some(whole);
                }
            }
            Some(Cat::Hotel) => {
                earned[HOTEL] = Some(
                    whole
                        .checked_mul(2)
                        .ok_or(NativeError::Overflow)?
                        .min(self.room(view, 5, Window::Year, day, 20_000)?),
                );
            }
            Some(Cat::Pharmacy) => {
                earned[PHARMACY] =
                    Some(whole.min(self.room(view, 6, Window::Rolling(30), day, 200)?));
            }
            Some(Cat::Other) | None => {}
        }
        earned[BASE] = Some(whole);
        if tx.presence == Some(rewards_core::Presence::Online) {
            earned[ONLINE] = Some(floor_points(amount / Decimal::from(2))?.min(100));
        }
        if tx.channel.as_deref() == Some("wallet") {
            earned[WALLET] = Some(5.min(self.room(view, 7, Window::Day, day, 50)?));
        }
        if tx.country.as_deref().is_some_and(|c| c != "US") {
            earned[ABROAD] = Some(
                floor_points(amount / Decimal::TEN)?
                    .checked_mul(2)
                    .ok_or(NativeError::Overflow)?,
            );
        }
        if amount > Decimal::from(500) {
            earned[BIG_TICKET] = Some(250.min(self.room(view, 8, month, day, 1000)?));
        }
        let hour = local.hour();
        if !(5..22).contains(&hour) {
            earned[NIGHT_OWL] =
                Some(10.min(self.room(view, 9, Window::Week(Weekday::Mon), day, 30)?));
        }
        if matches!(tx.attributes.get("segment"), Some(AttrValue::Text(s)) if s == "premium") {
            let exact = (amount * Decimal::new(2, 2)).max(Decimal::ZERO);
            earned[SEGMENT] = Some(
                exact
                    .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
                    .to_i64()
                    .ok_or(NativeError::Overflow)?,
            );
        }
        if cat == Some(Cat::Home) && self.spring.0 <= day && day <= self.spring.1 {
            earned[SPRING] = Some(50);
        }

        // Exclusive groups: category_bonus takes best (the first of the
        // largest in visiting order), welcome takes first.
        let mut winner: Option<usize> = None;
        for r in [DINING, GROCERIES, GAS, STREAMING] {
            if let Some(p) = earned[r] {
                match winner {
                    Some(w) if earned[w].is_some_and(|q| q >= p) => earned[r] = None,
                    Some(w) => {
                        earned[w] = None;
                        winner = Some(r);
                    }
                    None => winner = Some(r),
                }
            }
        }
        if earned[FIRST_DINNER].is_some() {
            earned[FIRST_FLIGHT] = None;
        }

        // Multipliers on the final points of their targets.
        let sum = |rules: &[usize]| -> Result<i64, NativeError> {
            rules.iter().try_fold(0i64, |acc, r| {
                acc.checked_add(earned[*r].unwrap_or(0))
                    .ok_or(NativeError::Overflow)
            })
        };
        let all: [usize; EARN_RULES] = std::array::from_fn(|i| i);
        let mut mults = [0i64; 4];
        if tier == Some(1) {
            mults[0] = floor_points(Decimal::new(1, 1) * Decimal::from(sum(&all)?))?;
        }
        if tier == Some(2) {
            mults[1] = floor_points(Decimal::new(25, 2) * Decimal::from(sum(&all)?))?;
        }
        if tier == Some(3) {
            mults[2] = sum(&[AIRLINE, HOTEL])?;
        }
        if self.holiday.0 <= day && day <= self.holiday.1 && tier.is_some_and(|t| t >= 1) {
            let base = sum(&[DINING, GROCERIES, GAS, STREAMING])?;
            mults[3] = base.min(self.room(view, 10, month, day, 2000)?);
        }

        for (rule, points) in earned.iter().enumerate() {
            if let Some(p) = *points {
                if p > 0 {
                    out.push(Award {
                        rule: rule as u8,
                        points: p,
                    });
                }
            }
        }
        for (k, p) in mults.iter().enumerate() {
            if *p > 0 {
                out.push(Award {
                    rule: (SILVER_BONUS + k) as u8,
                    points: *p,
                });
            }
        }
        Ok(())
    }
}
