//! Evaluation: one transaction and a member view in, one [`Outcome`] out.
//!
//! Pure, deterministic and bounded: no I/O, no clock, no loop other than
//! over a transaction's line items (at most [`MAX_LINE_ITEMS`]), every
//! arithmetic step checked. The order of evaluation is the one of
//! `docs/semantics.md`: match → earn → round → caps → exclusive groups →
//! multipliers → budget claims → counters → tier qualification → lot terms.
//!
//! The hot path ([`Plan::evaluate_into`]) visits only the rules the
//! dispatch index lists for the transaction's kind and MCC, keeps its
//! working state in a per-thread scratch buffer, and fills a reusable
//! [`Outcome`]; with explain on it visits every rule and writes why.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use rewards_core::limits::MAX_LINE_ITEMS;
use rewards_core::{
    AttrValue, BudgetClaim, Component, CounterDelta, CounterKey, EvalFailure, Evaluator,
    ExplainLine, ExplainTrace, LineItem, MemberView, Outcome, Points, TierChange, Transaction,
    TxKind, Window, WindowKey,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::cmp::Ordering;
use std::sync::Arc;

use crate::ast::{ItemFn, Period, Resolution, RoundingMode, TypeName};
use crate::check::{Builtin, ItemField};
use crate::compile::resolve_local;
use crate::plan::*;
use crate::value::{Length, Val, Value};
use crate::zone::ZoneTable;

// ---- pure operations (shared with constant folding)

/// `not`: unknown stays unknown.
pub(crate) fn not<'a>(v: &Val<'a>) -> Val<'a> {
    match v {
        Val::Bool(b) => Val::Bool(!b),
        _ => Val::Absent,
    }
}

/// Unary minus.
pub(crate) fn neg<'a>(v: &Val<'a>) -> Result<Val<'a>, EvalError> {
    let overflow = || EvalError::Overflow(String::new());
    Ok(match v {
        Val::Int(i) => Val::Int(i.checked_neg().ok_or_else(overflow)?),
        Val::Dec(d) => Val::Dec(-*d),
        Val::Money(d) => Val::Money(-*d),
        Val::Points(d) => Val::Points(-*d),
        Val::Duration(l) => Val::Duration(l.checked_neg().ok_or_else(overflow)?),
        _ => Val::Absent,
    })
}

/// Three-valued `and`.
pub(crate) fn and<'a>(a: &Val<'a>, b: &Val<'a>) -> Val<'a> {
    match (a, b) {
        (Val::Bool(false), _) | (_, Val::Bool(false)) => Val::Bool(false),
        (Val::Bool(true), Val::Bool(true)) => Val::Bool(true),
        _ => Val::Absent,
    }
}

/// Three-valued `or`.
pub(crate) fn or<'a>(a: &Val<'a>, b: &Val<'a>) -> Val<'a> {
    match (a, b) {
        (Val::Bool(true), _) | (_, Val::Bool(true)) => Val::Bool(true),
        (Val::Bool(false), Val::Bool(false)) => Val::Bool(false),
        _ => Val::Absent,
    }
}

/// A comparison; unknown when either side is.
pub(crate) fn compare(op: Rel, a: &Val<'_>, b: &Val<'_>) -> Val<'static> {
    let r = match op {
        Rel::Eq => a.equals(b),
        Rel::Ne => a.equals(b).map(|x| !x),
        _ => a.compare(b).map(|o| match op {
            Rel::Lt => o == Ordering::Less,
            Rel::Le => o != Ordering::Greater,
            Rel::Gt => o == Ordering::Greater,
            _ => o != Ordering::Less,
        }),
    };
    r.map_or(Val::Absent, Val::Bool)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Num {
    Int,
    Dec,
    Money,
    Points,
}

fn num(v: &Val<'_>) -> Option<(Decimal, Num)> {
    match v {
        Val::Int(i) => Some((Decimal::from(*i), Num::Int)),
        Val::Dec(d) => Some((*d, Num::Dec)),
        Val::Money(d) => Some((*d, Num::Money)),
        Val::Points(d) => Some((*d, Num::Points)),
        _ => None,
    }
}

/// Arithmetic, checked: overflow and division by zero are errors.
pub(crate) fn arith<'a>(
    op: ArithOp,
    a: &Val<'a>,
    b: &Val<'a>,
    tz: Tz,
) -> Result<Val<'a>, EvalError> {
    let overflow = || EvalError::Overflow(String::new());
    if matches!(a, Val::Absent) || matches!(b, Val::Absent) {
        return Ok(Val::Absent);
    }
    // `k * floor(tx.amount)`: as below, operands in the same order.
    match (op, a, b) {
        (ArithOp::Mul, Val::Int(k), Val::Money(d)) => {
            return Decimal::from(*k)
                .checked_mul(*d)
                .map(Val::Money)
                .ok_or_else(overflow);
        }
        (ArithOp::Mul, Val::Money(d), Val::Int(k)) => {
            return d
                .checked_mul(Decimal::from(*k))
                .map(Val::Money)
                .ok_or_else(overflow);
        }
        _ => {}
    }
    if let (Val::Int(x), Val::Int(y)) = (a, b) {
        let r = match op {
            ArithOp::Add => x.checked_add(*y),
            ArithOp::Sub => x.checked_sub(*y),
            ArithOp::Mul => x.checked_mul(*y),
            ArithOp::Div => None,
        };
        if op != ArithOp::Div {
            return r.map(Val::Int).ok_or_else(overflow);
        }
    }
    if let (Some((x, tx)), Some((y, ty))) = (num(a), num(b)) {
        let value = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
            ArithOp::Mul => x.checked_mul(y),
            ArithOp::Div => {
                if y.is_zero() {
                    return Err(EvalError::DivisionByZero(String::new()));
                }
                x.checked_div(y)
            }
        }
        .ok_or_else(overflow)?;
        let tag = if tx == Num::Money || ty == Num::Money {
            if op == ArithOp::Div && tx == Num::Money && ty == Num::Money {
                Num::Dec
            } else {
                Num::Money
            }
        } else if tx == Num::Points || ty == Num::Points {
            if op == ArithOp::Div && tx == Num::Points && ty == Num::Points {
                Num::Dec
            } else {
                Num::Points
            }
        } else {
            Num::Dec
        };
        return Ok(match tag {
            Num::Money => Val::Money(value),
            Num::Points => Val::Points(value),
            _ => Val::Dec(value),
        });
    }
    let sub = op == ArithOp::Sub;
    let signed = |l: &Length| -> Result<Length, EvalError> {
        if sub {
            l.checked_neg().ok_or_else(overflow)
        } else {
            Ok(*l)
        }
    };
    Ok(match (op, a, b) {
        (ArithOp::Add | ArithOp::Sub, Val::Date(d), Val::Duration(l)) => {
            Val::Date(add_to_date(*d, signed(l)?).ok_or_else(overflow)?)
        }
        (ArithOp::Add, Val::Duration(l), Val::Date(d)) => {
            Val::Date(add_to_date(*d, *l).ok_or_else(overflow)?)
        }
        (ArithOp::Add | ArithOp::Sub, Val::DateTime(t), Val::Duration(l)) => {
            Val::DateTime(add_length(*t, signed(l)?, tz).ok_or_else(overflow)?)
        }
        (ArithOp::Add, Val::Duration(l), Val::DateTime(t)) => {
            Val::DateTime(add_length(*t, *l, tz).ok_or_else(overflow)?)
        }
        (ArithOp::Add | ArithOp::Sub, Val::Duration(x), Val::Duration(y)) => {
            Val::Duration(x.checked_add(signed(y)?).ok_or_else(overflow)?)
        }
        (ArithOp::Sub, Val::Date(x), Val::Date(y)) => Val::Duration(Length {
            days: (*x - *y).num_days(),
            ..Length::default()
        }),
        (ArithOp::Sub, Val::DateTime(x), Val::DateTime(y)) => Val::Duration(Length {
            seconds: (*x - *y).num_seconds(),
            ..Length::default()
        }),
        (ArithOp::Mul, Val::Duration(l), Val::Int(k))
        | (ArithOp::Mul, Val::Int(k), Val::Duration(l)) => {
            Val::Duration(l.checked_mul(*k).ok_or_else(overflow)?)
        }
        _ => Val::Absent,
    })
}

fn add_to_date(d: NaiveDate, l: Length) -> Option<NaiveDate> {
    let d = add_months(d, l.months)?;
    let days = l.days.checked_add(l.seconds / 86_400)?;
    d.checked_add_signed(TimeDelta::try_days(days)?)
}

fn add_months(d: NaiveDate, months: i64) -> Option<NaiveDate> {
    // A day of the month that every month has (1 to 28): chrono's
    // `checked_add_months`/`checked_sub_months` keep it as it is in the
    // month `months` away (they clamp only days 29 to 31); the same date.
    if d.day() <= 28 && months.unsigned_abs() <= 12 * 100_000 {
        let index = i64::from(d.year()) * 12 + i64::from(d.month0()) + months;
        let year = i32::try_from(index.div_euclid(12)).ok()?;
        let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
        return NaiveDate::from_ymd_opt(year, month, d.day());
    }
    let m = chrono::Months::new(u32::try_from(months.unsigned_abs()).ok()?);
    if months >= 0 {
        d.checked_add_months(m)
    } else {
        d.checked_sub_months(m)
    }
}

/// Adds a length to an instant: months and days on the local calendar of
/// the zone (a day across a DST change is 23 or 25 hours), seconds exactly.
pub(crate) fn add_length(t: DateTime<Utc>, l: Length, tz: Tz) -> Option<DateTime<Utc>> {
    add_length_at(t, None, l, tz, None)
}

/// [`add_length`] with `t`'s local time when already known, and the
/// zone's table of offsets when there is one (the same instants).
fn add_length_at(
    t: DateTime<Utc>,
    local: Option<NaiveDateTime>,
    l: Length,
    tz: Tz,
    zone: Option<&ZoneTable>,
) -> Option<DateTime<Utc>> {
    let t = if l.months != 0 || l.days != 0 {
        let local = match local.or_else(|| zone.and_then(|z| z.local(t))) {
            Some(local) => local,
            None => t.with_timezone(&tz).naive_local(),
        };
        let mut date = local.date();
        if l.months != 0 {
            date = add_months(date, l.months)?;
        }
        if l.days != 0 {
            date = date.checked_add_signed(TimeDelta::try_days(l.days)?)?;
        }
        resolve_in(date.and_time(local.time()), tz, zone)
    } else {
        t
    };
    if l.seconds == 0 {
        return Some(t);
    }
    t.checked_add_signed(TimeDelta::try_seconds(l.seconds)?)
}

/// [`resolve_local`], from the zone's table when it answers.
#[inline]
fn resolve_in(local: NaiveDateTime, tz: Tz, zone: Option<&ZoneTable>) -> DateTime<Utc> {
    match zone.and_then(|z| z.resolve(local)) {
        Some(t) => t,
        None => resolve_local(local, tz),
    }
}

/// A built-in function.
pub(crate) fn builtin<'a>(b: Builtin, args: &[Val<'a>], tz: Tz) -> Result<Val<'a>, EvalError> {
    builtin_at(b, args, tz, None)
}

/// [`builtin`], with an instant whose local time is already known (the
/// transaction's own time: converted once per transaction).
fn builtin_at<'a>(
    b: Builtin,
    args: &[Val<'a>],
    tz: Tz,
    known: Option<(DateTime<Utc>, NaiveDateTime)>,
) -> Result<Val<'a>, EvalError> {
    let local = |t: &DateTime<Utc>| match known {
        Some((at, local)) if at == *t => local,
        _ => t.with_timezone(&tz).naive_local(),
    };
    if args.iter().any(|a| matches!(a, Val::Absent)) {
        return Ok(Val::Absent);
    }
    let whole = |v: &Val<'a>, f: fn(&Decimal) -> Decimal| -> Val<'a> {
        match v {
            Val::Int(i) => Val::Int(*i),
            Val::Dec(d) => Val::Dec(f(d)),
            Val::Money(d) => Val::Money(f(d)),
            Val::Points(d) => Val::Points(f(d)),
            _ => Val::Absent,
        }
    };
    let first = args.first().cloned().unwrap_or(Val::Absent);
    Ok(match b {
        Builtin::Floor => whole(&first, Decimal::floor),
        Builtin::Ceil => whole(&first, Decimal::ceil),
        Builtin::Round => whole(&first, |d| {
            d.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        }),
        Builtin::Min | Builtin::Max => {
            let mut best = first;
            for a in args.iter().skip(1) {
                let better = match a.compare(&best) {
                    Some(Ordering::Less) => b == Builtin::Min,
                    Some(Ordering::Greater) => b == Builtin::Max,
                    _ => false,
                };
                if better {
                    best = a.clone();
                }
            }
            // A number mixed with points or a decimal keeps the widest type.
            match (
                &best,
                args.iter().any(|a| matches!(a, Val::Points(_))),
                args.iter().any(|a| matches!(a, Val::Dec(_))),
            ) {
                (Val::Int(i), true, _) => Val::Points(Decimal::from(*i)),
                (Val::Dec(d), true, _) => Val::Points(*d),
                (Val::Int(i), false, true) => Val::Dec(Decimal::from(*i)),
                _ => best,
            }
        }
        Builtin::Weekday => match first {
            Val::DateTime(t) => Val::Weekday(local(&t).weekday()),
            _ => Val::Absent,
        },
        Builtin::Hour => match first {
            Val::DateTime(t) => Val::Int(i64::from(local(&t).hour())),
            _ => Val::Absent,
        },
        Builtin::Date => match first {
            Val::DateTime(t) => Val::Date(local(&t).date()),
            _ => Val::Absent,
        },
    })
}

/// Rounds an exact award to whole points.
pub fn round_award(exact: Decimal, mode: RoundingMode) -> Result<i64, EvalError> {
    // A whole award (scale 0: `k * floor(tx.amount)`, constants) is its own
    // rounding in every mode; its mantissa is the integer.
    if exact.scale() == 0 {
        if let Ok(whole) = i64::try_from(exact.mantissa()) {
            return Ok(whole);
        }
    }
    let r = match mode {
        RoundingMode::Floor => exact.floor(),
        RoundingMode::Ceiling => exact.ceil(),
        RoundingMode::HalfUp => {
            exact.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        }
        RoundingMode::HalfEven => {
            exact.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        }
    };
    r.to_i64()
        .ok_or_else(|| EvalError::Overflow("rounding an award to whole points".into()))
}

fn attr<'a>(value: Option<&'a AttrValue>, ty: TypeName) -> Val<'a> {
    let Some(value) = value else {
        return Val::Absent;
    };
    match (ty, value) {
        (TypeName::String, AttrValue::Text(s)) => Val::Str(Cow::Borrowed(s)),
        (TypeName::Bool, AttrValue::Bool(b)) => Val::Bool(*b),
        (TypeName::Decimal, AttrValue::Number(d)) => Val::Dec(*d),
        (TypeName::Money, AttrValue::Number(d)) => Val::Money(*d),
        (TypeName::Points, AttrValue::Number(d)) => Val::Points(*d),
        (TypeName::Integer, AttrValue::Number(d)) if d.fract().is_zero() => {
            d.to_i64().map_or(Val::Absent, Val::Int)
        }
        (TypeName::Date, AttrValue::Text(s)) => {
            s.parse::<NaiveDate>().map_or(Val::Absent, Val::Date)
        }
        (TypeName::DateTime, AttrValue::Text(s)) => DateTime::parse_from_rfc3339(s)
            .map_or(Val::Absent, |t| Val::DateTime(t.with_timezone(&Utc))),
        _ => Val::Absent,
    }
}

/// A transaction field.
#[inline]
fn tx_read(f: TxRead, tx: &Transaction) -> Val<'_> {
    match f {
        TxRead::Amount => Val::Money(tx.amount.amount),
        TxRead::Currency => Val::Currency(tx.amount.currency),
        TxRead::Kind => Val::Kind(tx.kind),
        TxRead::Mcc => tx.mcc.map_or(Val::Absent, |m| Val::Int(i64::from(m))),
        TxRead::Merchant => tx
            .merchant
            .as_deref()
            .map_or(Val::Absent, |s| Val::Str(Cow::Borrowed(s))),
        TxRead::Channel => tx
            .channel
            .as_deref()
            .map_or(Val::Absent, |s| Val::Str(Cow::Borrowed(s))),
        TxRead::Country => tx
            .country
            .as_deref()
            .map_or(Val::Absent, |s| Val::Str(Cow::Borrowed(s))),
        TxRead::Presence => tx.presence.map_or(Val::Absent, Val::Presence),
        TxRead::Time => Val::DateTime(tx.time),
    }
}

// ---- evaluation context

/// What an expression may read.
#[derive(Clone, Copy)]
pub(crate) struct Cx<'a> {
    pub tx: &'a Transaction,
    pub view: &'a MemberView,
    /// The transaction's local date in the ruleset's zone.
    pub date: NaiveDate,
    pub tier: Option<u16>,
    pub item: Option<&'a LineItem>,
    /// The transaction's own aggregate increments, when reading aggregates
    /// *after* the transaction (tier qualification).
    pub own: Option<&'a [Option<Decimal>]>,
    /// The transaction's local date-time in the ruleset's zone.
    pub local: NaiveDateTime,
    /// Aggregate values before the transaction, computed once per
    /// transaction (by slot).
    pub cache: Option<&'a [Cell<Option<Decimal>>]>,
    /// The transaction's amount in integers, when [`AmountUnits::of`]
    /// gives it.
    pub amount_units: Option<AmountUnits>,
    /// The window instances of `date`.
    pub keys: DateKeys,
}

/// The window instances containing one date, computed once per
/// transaction: [`DateKeys::key`] is [`Window::key_for`] for every window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DateKeys {
    day: i32,
    /// Days from Monday.
    weekday: u32,
    month: i32,
    quarter: i32,
    year: i32,
}

impl DateKeys {
    pub(crate) fn of(date: NaiveDate) -> DateKeys {
        // Days since 1970-01-01: 1970-01-01 is day 719,163 from 0001-01-01
        // (Window::key_for subtracts the two dates; the same count).
        let (year, month0) = (date.year(), date.month0() as i32);
        DateKeys {
            day: date.num_days_from_ce() - 719_163,
            weekday: date.weekday().num_days_from_monday(),
            month: year * 12 + month0,
            quarter: year * 4 + month0 / 3,
            year,
        }
    }

    /// `window.key_for(date)`, the same formulas.
    #[inline]
    pub(crate) fn key(&self, window: Window) -> WindowKey {
        match window {
            Window::Day | Window::Rolling(_) => WindowKey::Day(self.day),
            Window::Week(start) => {
                let back = (7 + self.weekday - start.num_days_from_monday()) % 7;
                WindowKey::Week(self.day - back as i32)
            }
            Window::Month => WindowKey::Month(self.month),
            Window::Quarter => WindowKey::Quarter(self.quarter),
            Window::Year => WindowKey::Year(self.year),
            Window::Lifetime => WindowKey::Lifetime,
        }
    }
}

/// Views of at most this many counters are searched by scanning.
const SCAN_COUNTERS: usize = 32;

/// [`MemberView::counter_sum`], the same decimal: a window with one
/// instance (every window but `rolling N days`) in a view of at most
/// [`SCAN_COUNTERS`] counters is found by scanning the view — comparing
/// the window instance, then the name — instead of hashing the key with
/// the map's SipHash (the stores' views hold only the counters the plan
/// asked for, a handful per transaction).
#[cfg(test)]
pub(crate) fn counter_sum(
    view: &MemberView,
    name: &str,
    window: Window,
    date: NaiveDate,
) -> Option<Decimal> {
    counter_sum_at(view, &Arc::from(name), window, date, &DateKeys::of(date))
}

/// [`counter_sum`] with the date's window instances known; a counter
/// name that is the plan's own `Arc` (the stores' views are keyed by the
/// plan's names) is recognised by its pointer before its text.
pub(crate) fn counter_sum_at(
    view: &MemberView,
    name: &Arc<str>,
    window: Window,
    date: NaiveDate,
    keys: &DateKeys,
) -> Option<Decimal> {
    if let Window::Rolling(days) = window {
        return rolling_sum(view, name, days, keys.day)
            .or_else(|| view.counter_sum(name, window, date));
    }
    if view.counters.len() > SCAN_COUNTERS {
        return view.counter_sum(name, window, date);
    }
    let key = keys.key(window);
    let value = view
        .counters
        .iter()
        .find(|(k, _)| k.window == key && (Arc::ptr_eq(&k.name, name) || *k.name == **name))
        .map_or(Decimal::ZERO, |(_, v)| *v);
    // As `counter_sum` folds: zero plus the value.
    Decimal::ZERO.checked_add(value)
}

/// The sum of a `rolling N days` counter (N > 1) over a view of at most
/// 64 counters, in integers, when every day bucket in the window is a
/// whole number of 64 bits (cap counters are whole points) and the sum
/// fits: the same decimal as [`MemberView::counter_sum`] (which sorts the
/// buckets newest first and adds them as decimals — the order does not
/// matter for whole numbers). `None`: ask the view.
fn rolling_sum(view: &MemberView, name: &str, days: u16, newest: i32) -> Option<Decimal> {
    if days <= 1 || view.counters.len() > 64 {
        return None;
    }
    let oldest = newest - (i32::from(days) - 1);
    let mut sum: i64 = 0;
    for (k, v) in &view.counters {
        if let rewards_core::WindowKey::Day(d) = k.window {
            if d >= oldest && d <= newest && &*k.name == name {
                // A negative zero or a fraction: the decimal path.
                if v.scale() != 0 || (v.is_zero() && v.is_sign_negative()) {
                    return None;
                }
                sum = sum.checked_add(i64::try_from(v.mantissa()).ok()?)?;
            }
        }
    }
    Some(Decimal::from(sum))
}

/// A positive amount as `mantissa / unit` (`unit` = 10^scale), both
/// 64-bit: `floor(amount / d)` is then the integer `mantissa / (unit * d)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AmountUnits {
    mantissa: u64,
    unit: u64,
}

impl AmountUnits {
    /// `None` for zero, negative and huge amounts (they take the decimal
    /// path).
    pub(crate) fn of(amount: Decimal) -> Option<AmountUnits> {
        if amount.is_sign_negative() || amount.is_zero() {
            return None;
        }
        Some(AmountUnits {
            mantissa: u64::try_from(amount.mantissa()).ok()?,
            unit: 10u64.checked_pow(amount.scale())?,
        })
    }

    /// `k * floor(amount / d)` for `k >= 1` and `d` dividing 1000, as the
    /// decimal `Decimal::from(k) * floor(amount / Decimal::from(d))` is bit
    /// for bit (a whole, positive number of scale 0; `amount / d` is exact
    /// since it has at most three more decimals); `None` when a step
    /// leaves 64 bits.
    pub(crate) fn scaled_floor(self, k: i64, d: u64) -> Option<Decimal> {
        let whole = self.mantissa / self.unit.checked_mul(d)?;
        i64::try_from(whole).ok()?.checked_mul(k).map(Decimal::from)
    }
}

impl Plan {
    /// The rank of a tier name.
    pub(crate) fn tier_rank(&self, name: Option<&Arc<str>>) -> Option<u16> {
        let name = name?;
        self.tier_names
            .iter()
            .position(|t| Arc::ptr_eq(t, name) || **t == **name)
            .and_then(|i| u16::try_from(i).ok())
    }

    pub(crate) fn aggregate_value(
        &self,
        slot: u16,
        cx: &Cx<'_>,
    ) -> Result<Val<'static>, EvalError> {
        let Some(a) = self.aggregates.get(usize::from(slot)) else {
            return Ok(Val::Absent);
        };
        // Counters come from the store: sums are checked like any arithmetic.
        let overflow = || EvalError::Overflow(format!("aggregate {}", a.label));
        let cached = cx.cache.and_then(|c| c.get(usize::from(slot)));
        let mut sum = match cached.and_then(Cell::get) {
            Some(before) => before,
            None => {
                let sum = counter_sum_at(cx.view, &a.counter, a.window, cx.date, &cx.keys)
                    .ok_or_else(overflow)?;
                if let Some(c) = cached {
                    c.set(Some(sum));
                }
                sum
            }
        };
        if let Some(own) = cx
            .own
            .and_then(|o| o.get(usize::from(slot)).copied().flatten())
        {
            sum = sum.checked_add(own).ok_or_else(overflow)?;
        }
        Ok(if a.spend {
            Val::Money(sum)
        } else {
            sum.trunc().to_i64().map_or(Val::Absent, Val::Int)
        })
    }

    /// An operand: the leaves (constants, transaction fields, the tier)
    /// read in place, anything else evaluated.
    #[inline(always)]
    fn operand<'a>(&'a self, id: NodeId, cx: &Cx<'a>) -> Result<Val<'a>, EvalError> {
        match self.nodes.get(id as usize) {
            Some(Node::Const(Val::Str(s))) => Ok(Val::Str(Cow::Borrowed(s.as_ref()))),
            Some(Node::Const(v)) => Ok(v.clone()),
            Some(Node::Tx(f)) => Ok(tx_read(*f, cx.tx)),
            Some(Node::MemberTier) => Ok(cx.tier.map_or(Val::Absent, Val::Tier)),
            _ => self.eval(id, cx),
        }
    }

    /// Evaluates one node.
    pub(crate) fn eval<'a>(&'a self, id: NodeId, cx: &Cx<'a>) -> Result<Val<'a>, EvalError> {
        let Some(node) = self.nodes.get(id as usize) else {
            return Ok(Val::Absent);
        };
        let tx = cx.tx;
        Ok(match node {
            Node::Const(Val::Str(s)) => Val::Str(Cow::Borrowed(s.as_ref())),
            Node::Const(v) => v.clone(),
            Node::Tx(f) => tx_read(*f, tx),
            Node::TxAttr(name, ty) => attr(tx.attributes.get(&**name), *ty),
            Node::MemberTier => cx.tier.map_or(Val::Absent, Val::Tier),
            Node::MemberEnrolled => cx.view.enrolled.map_or(Val::Absent, Val::Date),
            Node::MemberBalance => Val::Points(Decimal::from(cx.view.balance.get())),
            Node::MemberAttr(name, ty) => attr(cx.view.attributes.get(&**name), *ty),
            Node::Item(f) => match cx.item {
                None => Val::Absent,
                Some(item) => match f {
                    ItemField::Sku => Val::Str(Cow::Borrowed(&item.sku)),
                    ItemField::Category => Val::Str(Cow::Borrowed(&item.category)),
                    ItemField::Quantity => Val::Int(i64::from(item.quantity)),
                    ItemField::Amount => Val::Money(item.amount),
                },
            },
            Node::Aggregate(slot) => self.aggregate_value(*slot, cx)?,
            Node::Not(x) => not(&self.eval(*x, cx)?),
            Node::Neg(x) => neg(&self.eval(*x, cx)?)?,
            Node::And(a, b) => {
                let a = self.eval(*a, cx)?;
                if matches!(a, Val::Bool(false)) {
                    return Ok(a);
                }
                and(&a, &self.eval(*b, cx)?)
            }
            Node::Or(a, b) => {
                let a = self.eval(*a, cx)?;
                if matches!(a, Val::Bool(true)) {
                    return Ok(a);
                }
                or(&a, &self.eval(*b, cx)?)
            }
            Node::Cmp(op, a, b) => compare(*op, &self.operand(*a, cx)?, &self.operand(*b, cx)?),
            Node::InSet { value, set, negate } => {
                let v = self.operand(*value, cx)?;
                match self.sets.get(*set as usize).and_then(|s| s.contains(&v)) {
                    None => Val::Absent,
                    Some(found) => Val::Bool(found != *negate),
                }
            }
            Node::InList {
                value,
                elems,
                negate,
            } => {
                let v = self.eval(*value, cx)?;
                if matches!(v, Val::Absent) {
                    return Ok(Val::Absent);
                }
                let (start, len) = (elems.0 as usize, elems.1 as usize);
                let mut found = false;
                let mut unknown = false;
                for item in self.list_elems.get(start..start + len).unwrap_or(&[]) {
                    let hit = match item {
                        ListItem::One(x) => v.equals(&self.eval(*x, cx)?),
                        ListItem::Range(lo, hi) => {
                            let (lo, hi) = (self.eval(*lo, cx)?, self.eval(*hi, cx)?);
                            match (lo.compare(&v), v.compare(&hi)) {
                                (Some(a), Some(b)) => {
                                    Some(a != Ordering::Greater && b != Ordering::Greater)
                                }
                                _ => None,
                            }
                        }
                    };
                    match hit {
                        Some(true) => {
                            found = true;
                            break;
                        }
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if found {
                    Val::Bool(!*negate)
                } else if unknown {
                    Val::Absent
                } else {
                    Val::Bool(*negate)
                }
            }
            Node::Arith(op, a, b) => {
                let (a, b) = (self.operand(*a, cx)?, self.operand(*b, cx)?);
                arith(*op, &a, &b, self.tz)?
            }
            Node::Builtin(b, (start, len)) => {
                let ids = self
                    .args
                    .get(*start as usize..(*start + *len) as usize)
                    .unwrap_or(&[]);
                match ids {
                    [x] => {
                        let v = self.operand(*x, cx)?;
                        // The hot shapes, as `builtin_at` computes them.
                        match (b, &v) {
                            (Builtin::Floor, Val::Money(d)) => return Ok(Val::Money(d.floor())),
                            (Builtin::Hour, Val::DateTime(t)) if *t == tx.time => {
                                return Ok(Val::Int(i64::from(cx.local.hour())));
                            }
                            (Builtin::Weekday, Val::DateTime(t)) if *t == tx.time => {
                                return Ok(Val::Weekday(cx.local.weekday()));
                            }
                            _ => {}
                        }
                        builtin_at(
                            *b,
                            std::slice::from_ref(&v),
                            self.tz,
                            Some((tx.time, cx.local)),
                        )?
                    }
                    [x, y] => {
                        let v = [self.eval(*x, cx)?, self.eval(*y, cx)?];
                        builtin_at(*b, &v, self.tz, Some((tx.time, cx.local)))?
                    }
                    _ => {
                        let mut vals = Vec::with_capacity(ids.len());
                        for x in ids {
                            vals.push(self.eval(*x, cx)?);
                        }
                        builtin_at(*b, &vals, self.tz, Some((tx.time, cx.local)))?
                    }
                }
            }
            Node::Extern(f, (start, len)) => self.call_extern(*f, *start, *len, cx)?,
            Node::ItemFold {
                func,
                filter,
                value,
                zero,
            } => {
                if tx.line_items.len() > MAX_LINE_ITEMS {
                    return Err(EvalError::Limit(format!(
                        "{} line items; at most {MAX_LINE_ITEMS} are evaluated",
                        tx.line_items.len()
                    )));
                }
                let mut acc: Val<'a> = zero.clone();
                let mut count: i64 = 0;
                for item in &tx.line_items {
                    let inner = Cx {
                        item: Some(item),
                        ..*cx
                    };
                    if let Some(f) = filter {
                        if !matches!(self.eval(*f, &inner)?, Val::Bool(true)) {
                            continue;
                        }
                    }
                    match (func, value) {
                        (ItemFn::Sum, Some(v)) => {
                            let x = self.eval(*v, &inner)?;
                            acc = arith(ArithOp::Add, &acc, &x, self.tz)?;
                        }
                        _ => count += 1,
                    }
                }
                match func {
                    ItemFn::Count => Val::Int(count),
                    ItemFn::Sum => acc,
                }
            }
        })
    }

    fn call_extern<'a>(
        &'a self,
        f: u16,
        start: u32,
        len: u32,
        cx: &Cx<'a>,
    ) -> Result<Val<'a>, EvalError> {
        let Some(x) = self.externs.get(usize::from(f)) else {
            return Ok(Val::Absent);
        };
        let ids = self
            .args
            .get(start as usize..(start + len) as usize)
            .unwrap_or(&[]);
        let mut args: Vec<Value> = Vec::with_capacity(ids.len());
        for (id, want) in ids.iter().zip(&x.params) {
            let v = self.eval(*id, cx)?;
            if matches!(v, Val::Absent) {
                return Ok(Val::Absent);
            }
            match Value::from_val(&v, *want) {
                Some(v) => args.push(v),
                None => return Ok(Val::Absent),
            }
        }
        let out = (x.func)(&args).map_err(|e| EvalError::Host {
            function: x.name.to_string(),
            message: e.0,
        })?;
        let fits = out.type_name() == x.ret
            || matches!(
                (&out, x.ret),
                (Value::Integer(_), TypeName::Decimal | TypeName::Points)
            );
        if !fits {
            return Err(EvalError::Host {
                function: x.name.to_string(),
                message: format!(
                    "answered a {} where its declaration promises a {}",
                    out.type_name().as_str(),
                    x.ret.as_str()
                ),
            });
        }
        Ok(match (out, x.ret) {
            (Value::Integer(i), TypeName::Decimal) => Val::Dec(Decimal::from(i)),
            (Value::Integer(i), TypeName::Points) => Val::Points(Decimal::from(i)),
            (v, _) => v.to_val(),
        })
    }
}

// ---- the pipeline

/// One earn or multiplier award being computed.
#[derive(Debug, Clone, Copy)]
struct Award {
    rule: u16,
    exact: Decimal,
    points: i64,
    /// The rule (index) of the group winner that beat it.
    lost_to: Option<u16>,
}

#[derive(Default)]
struct Scratch {
    cands: Vec<u16>,
    earned: Vec<Award>,
    mults: Vec<Award>,
    winners: Vec<Option<usize>>,
    own: Vec<Option<Decimal>>,
    aggs: Vec<Cell<Option<Decimal>>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `d.max(Decimal::ZERO)` without the comparison: below zero gives
/// `Decimal::ZERO`; anything else, a zero of any scale or sign included,
/// is kept as it is (`Decimal::max` keeps its receiver on a tie).
#[inline]
fn at_least_zero(d: Decimal) -> Decimal {
    if d.is_sign_negative() && !d.is_zero() {
        Decimal::ZERO
    } else {
        d
    }
}

fn to_points(v: &Val<'_>) -> Option<Decimal> {
    v.as_decimal()
}

/// A tier the rules decided at a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierDecision {
    /// The tier decided.
    pub tier: Arc<str>,
    /// When it takes effect (later than `as_of`: a downgrade after grace).
    pub effective: DateTime<Utc>,
    /// Why, for the audit trail.
    pub reason: String,
}

impl TierDecision {
    /// The ledger's review record for `member`.
    pub fn into_review(
        self,
        member: rewards_core::MemberId,
        as_of: DateTime<Utc>,
    ) -> rewards_core::ledger::TierReview {
        rewards_core::ledger::TierReview {
            member,
            tier: self.tier,
            effective: self.effective,
            as_of,
        }
    }
}

impl Plan {
    /// Evaluates one transaction into a new outcome.
    pub fn evaluate(&self, tx: &Transaction, view: &MemberView) -> Result<Outcome, EvalError> {
        let mut out = Outcome::empty(
            tx.id.clone(),
            tx.member.clone(),
            tx.kind,
            self.stamp.clone(),
        );
        self.run(tx, view, &mut out, false)?;
        Ok(out)
    }

    /// Evaluates one transaction into a reusable outcome buffer (its vectors
    /// keep their capacity; nothing is allocated for a transaction whose
    /// rules read no host function).
    pub fn evaluate_into(
        &self,
        tx: &Transaction,
        view: &MemberView,
        out: &mut Outcome,
    ) -> Result<(), EvalError> {
        self.run(tx, view, out, false)
    }

    /// Evaluates with an explain trace: every rule, matched or not, and why.
    pub fn explain(&self, tx: &Transaction, view: &MemberView) -> Result<Outcome, EvalError> {
        let mut out = Outcome::empty(
            tx.id.clone(),
            tx.member.clone(),
            tx.kind,
            self.stamp.clone(),
        );
        self.run(tx, view, &mut out, true)?;
        Ok(out)
    }

    /// [`Plan::explain`] into a reusable buffer.
    pub fn explain_into(
        &self,
        tx: &Transaction,
        view: &MemberView,
        out: &mut Outcome,
    ) -> Result<(), EvalError> {
        self.run(tx, view, out, true)
    }

    /// The counters evaluating `tx` reads: the per-member caps of the rules
    /// that may match it and every aggregate, in the windows of its time.
    pub fn counter_keys(&self, tx: &Transaction, keys: &mut Vec<CounterKey>) {
        if !tx.kind.earns() {
            return;
        }
        let date = tx.time.with_timezone(&self.tz).date_naive();
        let kind = usize::from(tx.kind == TxKind::Authorization);
        for &i in self.dispatch.rules(kind, tx.mcc) {
            if let Some(r) = self.rules.get(usize::from(i)) {
                for cap in &r.caps {
                    if let Some(w) = cap.window {
                        push_keys(keys, &r.counter, w, date);
                    }
                }
            }
        }
        self.aggregate_keys(date, keys);
    }

    /// The aggregate counters read on `date` (tier reviews load these).
    pub fn aggregate_keys(&self, date: NaiveDate, keys: &mut Vec<CounterKey>) {
        for a in &self.aggregates {
            push_keys(keys, &a.counter, a.window, date);
        }
    }

    fn run(
        &self,
        tx: &Transaction,
        view: &MemberView,
        out: &mut Outcome,
        explain: bool,
    ) -> Result<(), EvalError> {
        out.clear();
        out.tx_id = tx.id.clone();
        out.member = tx.member.clone();
        out.kind = tx.kind;
        // The plan's own stamp (the usual case) is recognised by its
        // pointers before its text.
        let same = Arc::ptr_eq(&out.ruleset.id, &self.stamp.id)
            && Arc::ptr_eq(&out.ruleset.hash, &self.stamp.hash)
            && out.ruleset.version == self.stamp.version;
        if !same && out.ruleset != self.stamp {
            out.ruleset = self.stamp.clone();
        }
        if explain {
            if out.explain.is_none() {
                out.explain = Some(ExplainTrace::default());
            }
        } else {
            out.explain = None;
        }
        if !tx.kind.earns() {
            note(out, "kind", false, format!(
                "a {} is not evaluated by the rules: the ledger scales it from the original's stored postings, counters and budget draws",
                tx.kind
            ));
            return Ok(());
        }
        if tx.amount.currency != self.currency {
            return Err(EvalError::Currency {
                expected: self.currency,
                found: tx.amount.currency,
            });
        }
        if tx.line_items.len() > MAX_LINE_ITEMS {
            return Err(EvalError::Limit(format!(
                "{} line items; at most {MAX_LINE_ITEMS} are evaluated",
                tx.line_items.len()
            )));
        }
        // The per-thread buffers, borrowed in place (a fresh set if they
        // are in use: a host function that evaluates).
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.pipeline(tx, view, out, explain, &mut scratch),
            Err(_) => self.pipeline(tx, view, out, explain, &mut Scratch::default()),
        })
    }

    fn pipeline(
        &self,
        tx: &Transaction,
        view: &MemberView,
        out: &mut Outcome,
        explain: bool,
        s: &mut Scratch,
    ) -> Result<(), EvalError> {
        let local = match self.zone().and_then(|z| z.local(tx.time)) {
            Some(local) => local,
            None => tx.time.with_timezone(&self.tz).naive_local(),
        };
        let date = local.date();
        let tier = self.tier_rank(view.tier.as_ref());
        let mut aggs = std::mem::take(&mut s.aggs);
        aggs.clear();
        aggs.resize(self.aggregates.len(), Cell::new(None));
        let result = self.stages(tx, view, out, explain, s, local, date, tier, &aggs);
        s.aggs = aggs;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn stages(
        &self,
        tx: &Transaction,
        view: &MemberView,
        out: &mut Outcome,
        explain: bool,
        s: &mut Scratch,
        local: NaiveDateTime,
        date: NaiveDate,
        tier: Option<u16>,
        aggs: &[Cell<Option<Decimal>>],
    ) -> Result<(), EvalError> {
        let cx = Cx {
            tx,
            view,
            date,
            tier,
            item: None,
            own: None,
            local,
            cache: Some(aggs),
            amount_units: AmountUnits::of(tx.amount.amount),
            keys: DateKeys::of(date),
        };
        let bit = tier_bit(tier);
        s.cands.clear();
        s.earned.clear();
        s.mults.clear();
        if explain {
            s.cands.extend(0..self.rules.len() as u16);
        } else {
            let kind = usize::from(tx.kind == TxKind::Authorization);
            s.cands.extend_from_slice(self.dispatch.rules(kind, tx.mcc));
        }
        // 1-4: match, earn, round, caps (earn rules).
        for &i in &s.cands {
            let Some(r) = self.rules.get(usize::from(i)) else {
                continue;
            };
            let Action::Earn(amount) = r.action else {
                continue;
            };
            if !explain && r.tiers & bit == 0 {
                continue;
            }
            if !self.matches(r, &cx, out, explain)? {
                continue;
            }
            // `k * floor(tx.amount / d)` in integers (the same decimal).
            let fast = match (r.earn_floor, cx.amount_units) {
                (Some((k, d)), Some(units)) if !explain => units.scaled_floor(k, d),
                _ => None,
            };
            let v = match fast {
                Some(d) => Val::Money(d),
                // A constant read in place (`earn 5 points`).
                None => self.operand(amount, &cx).map_err(|e| e.within(&r.id))?,
            };
            let Some(exact) = to_points(&v) else {
                if explain {
                    let why = crate::explain::why_unknown(self, amount, &cx);
                    note(
                        out,
                        &r.id,
                        false,
                        format!("earn {} is unknown: {why}", self.text(amount)),
                    );
                }
                continue;
            };
            let exact = at_least_zero(exact);
            let rounded = round_award(exact, r.rounding).map_err(|e| e.within(&r.id))?;
            let (points, caps) = self.apply_caps(r, rounded, &cx, explain)?;
            if explain {
                note(
                    out,
                    &r.id,
                    true,
                    format!(
                        "earn {} = {} → {} {}{caps}",
                        self.text(amount),
                        exact.normalize(),
                        r.rounding.as_str(),
                        rounded
                    ),
                );
            }
            s.earned.push(Award {
                rule: i,
                exact,
                points,
                lost_to: None,
            });
        }
        // 5: exclusive groups.
        if !self.groups.is_empty() {
            s.winners.clear();
            s.winners.resize(self.groups.len(), None);
            for (k, a) in s.earned.iter().enumerate() {
                let Some(g) = self.rules.get(usize::from(a.rule)).and_then(|r| r.group) else {
                    continue;
                };
                let Some(slot) = s.winners.get_mut(usize::from(g)) else {
                    continue;
                };
                let best = self
                    .groups
                    .get(usize::from(g))
                    .is_some_and(|x| x.resolution == Resolution::Best);
                match slot {
                    None => *slot = Some(k),
                    Some(w) => {
                        if best && s.earned.get(*w).is_some_and(|cur| a.points > cur.points) {
                            *slot = Some(k);
                        }
                    }
                }
            }
            for k in 0..s.earned.len() {
                let Some(a) = s.earned.get(k).copied() else {
                    continue;
                };
                let Some(g) = self.rules.get(usize::from(a.rule)).and_then(|r| r.group) else {
                    continue;
                };
                let Some(Some(w)) = s.winners.get(usize::from(g)).copied() else {
                    continue;
                };
                if w != k {
                    let winner = s.earned.get(w).copied();
                    if let (Some(winner), Some(slot)) = (winner, s.earned.get_mut(k)) {
                        slot.lost_to = Some(winner.rule);
                        if explain {
                            let group = self.groups.get(usize::from(g));
                            let (gname, res) =
                                group.map_or(("?", "best"), |x| (&*x.name, x.resolution.as_str()));
                            let wr = self.rules.get(usize::from(winner.rule));
                            let lr = self.rules.get(usize::from(a.rule));
                            let detail = match group.map(|x| x.resolution) {
                                Some(Resolution::Best) => format!(
                                    "lost exclusive group {gname} (takes {res}) to {}: {} ≥ {} points",
                                    wr.map_or("?", |r| &r.id), winner.points, a.points
                                ),
                                _ => format!(
                                    "lost exclusive group {gname} (takes {res}) to {} (priority {} before {})",
                                    wr.map_or("?", |r| &r.id),
                                    wr.map_or(0, |r| r.priority),
                                    lr.map_or(0, |r| r.priority)
                                ),
                            };
                            let id = lr.map_or_else(|| Arc::from("?"), |r| r.id.clone());
                            push_line(out, id, false, detail);
                        }
                    }
                }
            }
        }
        // 6: multipliers, on the final points of their targets.
        for &i in &s.cands {
            let Some(r) = self.rules.get(usize::from(i)) else {
                continue;
            };
            let Action::Multiply {
                factor,
                targets,
                target_text,
            } = &r.action
            else {
                continue;
            };
            if !explain && r.tiers & bit == 0 {
                continue;
            }
            if !self.matches(r, &cx, out, explain)? {
                continue;
            }
            let f = self.operand(*factor, &cx).map_err(|e| e.within(&r.id))?;
            let Some(f) = to_points(&f) else {
                if explain {
                    let why = crate::explain::why_unknown(self, *factor, &cx);
                    note(
                        out,
                        &r.id,
                        false,
                        format!("factor {} is unknown: {why}", self.text(*factor)),
                    );
                }
                continue;
            };
            let mut base: i64 = 0;
            let mut parts = String::new();
            for a in s.earned.iter().filter(|a| a.lost_to.is_none()) {
                let bit = usize::from(a.rule);
                let hit = targets
                    .get(bit / 64)
                    .is_some_and(|w| w & (1u64 << (bit % 64)) != 0);
                if hit {
                    base = base
                        .checked_add(a.points)
                        .ok_or_else(|| EvalError::Overflow(r.id.to_string()))?;
                    if explain {
                        if !parts.is_empty() {
                            parts.push_str(" + ");
                        }
                        let id = self.rules.get(bit).map_or("?", |x| &x.id);
                        parts.push_str(&format!("{id} {}", a.points));
                    }
                }
            }
            let extra = f
                .checked_sub(Decimal::ONE)
                .and_then(|x| x.checked_mul(Decimal::from(base)))
                .ok_or_else(|| EvalError::Overflow(r.id.to_string()))?;
            let extra = at_least_zero(extra);
            let rounded = round_award(extra, r.rounding).map_err(|e| e.within(&r.id))?;
            let (points, caps) = self.apply_caps(r, rounded, &cx, explain)?;
            if explain {
                let parts = if parts.is_empty() {
                    "nothing".to_string()
                } else {
                    parts
                };
                note(out, &r.id, true, format!(
                    "multiply {target_text} by {}: base {base} ({parts}) × ({} − 1) = {} → {} {rounded}{caps}",
                    f.normalize(),
                    f.normalize(),
                    extra.normalize(),
                    r.rounding.as_str()
                ));
            }
            s.mults.push(Award {
                rule: i,
                exact: extra,
                points,
                lost_to: None,
            });
        }
        // 7: components, cap counters, budget claims.
        for a in s.earned.iter().chain(s.mults.iter()) {
            if a.lost_to.is_some() || a.points <= 0 {
                continue;
            }
            let Some(r) = self.rules.get(usize::from(a.rule)) else {
                continue;
            };
            let index = u16::try_from(out.components.len())
                .map_err(|_| EvalError::Limit("too many components".into()))?;
            out.components.push(Component {
                rule: r.id.clone(),
                label: r.label.clone(),
                kind: r.component,
                points: Points(a.points),
                exact: a.exact,
                budget: r.budget.as_ref().map(|b| b.0.clone()),
            });
            let mut emitted: [bool; 6] = [false; 6];
            for cap in &r.caps {
                let Some(w) = cap.window else { continue };
                let class = match w {
                    Window::Day | Window::Rolling(_) => 0,
                    Window::Week(_) => 1,
                    Window::Month => 2,
                    Window::Quarter => 3,
                    Window::Year => 4,
                    Window::Lifetime => 5,
                };
                if emitted[class] {
                    continue;
                }
                emitted[class] = true;
                out.counters.push(CounterDelta {
                    key: CounterKey {
                        name: r.counter.clone(),
                        window: cx.keys.key(w),
                    },
                    delta: Decimal::from(a.points),
                    component: Some(index),
                });
            }
            if let Some((name, limit)) = &r.budget {
                out.budgets.push(BudgetClaim {
                    budget: name.clone(),
                    component: index,
                    points: Points(a.points),
                    limit: *limit,
                });
                if explain {
                    note(out, &r.id, true, format!(
                        "budget {name}: proposes {} of {limit} points (the store trims to the room left at commit)",
                        a.points
                    ));
                }
            }
        }
        // 8: aggregates (the transaction's own increments).
        s.own.clear();
        s.own.resize(self.aggregates.len(), None);
        for (slot, a) in self.aggregates.iter().enumerate() {
            let counts = match a.filter {
                None => true,
                Some(f) => self.holds(f, &cx).map_err(|e| e.within(&a.label))? == Some(true),
            };
            if !counts {
                if explain {
                    let why = a
                        .filter
                        .map(|f| crate::explain::why_not(self, f, &cx))
                        .unwrap_or_default();
                    note(
                        out,
                        &format!("aggregate {}", a.label),
                        false,
                        format!("not counted: {why}"),
                    );
                }
                continue;
            }
            let delta = if a.spend {
                tx.amount.amount
            } else {
                Decimal::ONE
            };
            if let Some(o) = s.own.get_mut(slot) {
                *o = Some(delta);
            }
            if a.emits {
                let key = CounterKey {
                    name: a.counter.clone(),
                    window: cx.keys.key(a.window),
                };
                if explain {
                    note(
                        out,
                        &format!("aggregate {}", a.label),
                        true,
                        format!("{key} += {}", delta.normalize()),
                    );
                }
                out.counters.push(CounterDelta {
                    key,
                    delta,
                    component: None,
                });
            }
        }
        // 9: tier qualification, on the state after this transaction.
        if !self.tiers.is_empty() {
            let after = Cx {
                own: Some(&s.own),
                ..cx
            };
            let qualified = self.qualified_tier(&after, tier)?;
            if let Some(q) = qualified {
                if tier.is_none_or(|t| q > t) {
                    if let Some(to) = self.tier_names.get(usize::from(q)) {
                        if explain {
                            note(out, &format!("tier {to}"), true, format!(
                                "qualifies after this transaction (was {}); effective from its time",
                                view.tier.as_deref().unwrap_or("no tier")
                            ));
                        }
                        out.tier_change = Some(TierChange {
                            from: view.tier.clone(),
                            to: to.clone(),
                            effective: tx.time,
                        });
                    }
                }
            }
        }
        // 10: lot terms.
        let zone = self.zone();
        out.lot.available_at = self
            .pending
            .and_then(|p| add_length_at(tx.time, Some(local), p, self.tz, zone));
        out.lot.expires_at = match self.expiry {
            ExpiryPlan::Never => None,
            ExpiryPlan::After(l) => add_length_at(tx.time, Some(local), l, self.tz, zone),
            ExpiryPlan::AtEndOf(period, plus) => {
                let first = period_end(date, period);
                first.and_then(|d| {
                    let start = resolve_in(d.and_time(chrono::NaiveTime::MIN), self.tz, zone);
                    add_length_at(start, None, plus, self.tz, zone)
                })
            }
        };
        Ok(())
    }

    /// Effective period, audience, when.
    #[inline(always)]
    fn matches(
        &self,
        r: &RulePlan,
        cx: &Cx<'_>,
        out: &mut Outcome,
        explain: bool,
    ) -> Result<bool, EvalError> {
        if explain {
            return self.matches_explained(r, cx, out);
        }
        // The hot path: no explanation to write.
        let t = cx.tx.time;
        if r.from.is_some_and(|f| t < f) || r.until.is_some_and(|u| t >= u) {
            return Ok(false);
        }
        if let Some(a) = r.audience.filter(|_| !r.audience_by_dispatch) {
            if self.holds(a, cx).map_err(|e| e.within(&r.id))? != Some(true) {
                return Ok(false);
            }
        }
        if let Some(w) = r.when.filter(|_| !r.when_by_dispatch) {
            if self.holds(w, cx).map_err(|e| e.within(&r.id))? != Some(true) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Plan::matches`] with explain on: why not, in the trace.
    #[cold]
    #[inline(never)]
    fn matches_explained(
        &self,
        r: &RulePlan,
        cx: &Cx<'_>,
        out: &mut Outcome,
    ) -> Result<bool, EvalError> {
        let t = cx.tx.time;
        if r.from.is_some_and(|f| t < f) || r.until.is_some_and(|u| t >= u) {
            let what = if r.campaign {
                "schedule"
            } else {
                "effective period"
            };
            let minute = |t: DateTime<Utc>| t.with_timezone(&self.tz).format("%Y-%m-%dT%H:%M");
            let bound =
                |b: Option<DateTime<Utc>>| b.map_or("…".to_string(), |b| minute(b).to_string());
            let local = minute(t);
            let range = format!("{} to {}", bound(r.from), bound(r.until));
            note(
                out,
                &r.id,
                false,
                format!(
                    "{what}: {local} ({}) is outside {range} (end excluded)",
                    self.tz
                ),
            );
            return Ok(false);
        }
        for (what, cond) in [("audience", r.audience), ("when", r.when)] {
            let Some(c) = cond else { continue };
            let v = self.eval(c, cx).map_err(|e| e.within(&r.id))?;
            if !matches!(v, Val::Bool(true)) {
                note(
                    out,
                    &r.id,
                    false,
                    format!("{what}: {}", crate::explain::why_not(self, c, cx)),
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The room one of the rule's caps leaves, `max(limit - used, 0)` in
    /// whole points, with the counter's value when the cap has a window.
    #[inline(always)]
    fn cap_room(
        &self,
        r: &RulePlan,
        cap: &CapPlan,
        cx: &Cx<'_>,
    ) -> Result<(i64, Option<Decimal>), EvalError> {
        let Some(w) = cap.window else {
            return Ok((cap.limit, None));
        };
        let overflow = || EvalError::Overflow(format!("cap of {}", r.id));
        let used =
            counter_sum_at(cx.view, &r.counter, w, cx.date, &cx.keys).ok_or_else(overflow)?;
        // Whole points used (the usual case): the same room in integers.
        if used.scale() == 0 {
            if let Some(room) = i64::try_from(used.mantissa())
                .ok()
                .and_then(|u| cap.limit.checked_sub(u))
            {
                return Ok((room.max(0), Some(used)));
            }
        }
        let room = Decimal::from(cap.limit)
            .checked_sub(used)
            .ok_or_else(overflow)?
            .floor()
            .max(Decimal::ZERO)
            .to_i64()
            .ok_or_else(|| EvalError::Overflow(r.id.to_string()))?;
        Ok((room, Some(used)))
    }

    /// The points left of `rounded` by the rule's caps, and the caps'
    /// explain text when `explain` (empty otherwise).
    #[inline(always)]
    fn apply_caps(
        &self,
        r: &RulePlan,
        rounded: i64,
        cx: &Cx<'_>,
        explain: bool,
    ) -> Result<(i64, String), EvalError> {
        if explain {
            self.capped_explained(r, rounded, cx)
        } else {
            Ok((self.capped(r, rounded, cx)?, String::new()))
        }
    }

    /// The points left of `rounded` by the rule's caps (explain off).
    #[inline(always)]
    fn capped(&self, r: &RulePlan, rounded: i64, cx: &Cx<'_>) -> Result<i64, EvalError> {
        let mut points = rounded;
        for cap in &r.caps {
            points = points.min(self.cap_room(r, cap, cx)?.0);
        }
        Ok(points)
    }

    /// The points left of `rounded` by the rule's caps, with the caps'
    /// explain text.
    #[inline(never)]
    fn capped_explained(
        &self,
        r: &RulePlan,
        rounded: i64,
        cx: &Cx<'_>,
    ) -> Result<(i64, String), EvalError> {
        let mut points = rounded;
        let mut text = String::new();
        for cap in &r.caps {
            let (room, used) = self.cap_room(r, cap, cx)?;
            match used {
                Some(used) => text.push_str(&format!(
                    "; cap {}: used {}, room {room}",
                    cap.text,
                    used.normalize()
                )),
                None => text.push_str(&format!("; cap {}", cap.text)),
            }
            if room < points {
                points = room;
                text.push_str(&format!(" → trimmed to {points}"));
            }
        }
        Ok((points, text))
    }

    /// The highest tier whose `qualify` holds (a tier without one always
    /// does), among the tiers above `above` (all when `None`): a
    /// transaction only ever moves a member up, so the tiers at or below
    /// the current one are not evaluated for it.
    fn qualified_tier(&self, cx: &Cx<'_>, above: Option<u16>) -> Result<Option<u16>, EvalError> {
        let skip = above.map_or(0, |t| usize::from(t) + 1);
        for (rank, t) in self.tiers.iter().enumerate().skip(skip).rev() {
            let holds = match t.qualify {
                None => true,
                Some(q) => self.holds(q, cx).map_err(|e| e.within(&t.name))? == Some(true),
            };
            if holds {
                return Ok(u16::try_from(rank).ok());
            }
        }
        Ok(None)
    }

    /// The scheduled tier review of one member as of an instant: an upgrade
    /// at once, a downgrade after the current tier's grace (keeping the date
    /// of a downgrade already scheduled), the current tier again to cancel a
    /// scheduled change, or `None` when there is nothing to decide. `view`
    /// must hold the counters of [`Plan::aggregate_keys`] for `as_of`'s
    /// local date.
    pub fn review_tier(
        &self,
        view: &MemberView,
        scheduled: Option<&TierChange>,
        as_of: DateTime<Utc>,
    ) -> Result<Option<TierDecision>, EvalError> {
        if self.tiers.is_empty() {
            return Ok(None);
        }
        let date = as_of.with_timezone(&self.tz).date_naive();
        // A review reads member state only; an empty transaction stands in.
        let Some(tx) = review_tx(as_of, self.currency) else {
            return Ok(None);
        };
        let tier = self.tier_rank(view.tier.as_ref());
        let cx = Cx {
            tx: &tx,
            view,
            date,
            tier,
            item: None,
            own: None,
            local: as_of.with_timezone(&self.tz).naive_local(),
            cache: None,
            amount_units: None,
            keys: DateKeys::of(date),
        };
        let Some(q) = self.qualified_tier(&cx, None)? else {
            return Ok(None);
        };
        let Some(q_name) = self.tier_names.get(usize::from(q)).cloned() else {
            return Ok(None);
        };
        let current = tier;
        match current {
            Some(c) if q == c => Ok(scheduled.map(|_| TierDecision {
                tier: q_name.clone(),
                effective: as_of,
                reason: format!("qualifies for {q_name} again: the scheduled change is cancelled"),
            })),
            Some(c) if q < c => {
                let grace = self.tiers.get(usize::from(c)).and_then(|t| t.grace);
                let effective = match (scheduled, grace) {
                    (Some(s), _) if s.effective > as_of => s.effective,
                    (_, Some(g)) => add_length(as_of, g, self.tz).unwrap_or(as_of),
                    (_, None) => as_of,
                };
                let from = self.tier_names.get(usize::from(c)).map_or("?", |n| &**n);
                Ok(Some(TierDecision {
                    tier: q_name.clone(),
                    effective,
                    reason: format!(
                        "no longer qualifies for {from}: down to {q_name} from {}",
                        effective.to_rfc3339()
                    ),
                }))
            }
            _ => Ok(Some(TierDecision {
                tier: q_name.clone(),
                effective: as_of,
                reason: format!("qualifies for {q_name}"),
            })),
        }
    }
}

fn review_tx(as_of: DateTime<Utc>, currency: rewards_core::Currency) -> Option<Transaction> {
    Some(Transaction {
        id: rewards_core::TxId::new("tier-review").ok()?,
        member: rewards_core::MemberId::new("tier-review").ok()?,
        kind: TxKind::Adjustment,
        program: None,
        amount: rewards_core::Money::new(Decimal::ZERO, currency),
        time: as_of,
        mcc: None,
        merchant: None,
        channel: None,
        presence: None,
        country: None,
        original_id: None,
        line_items: Vec::new(),
        attributes: Default::default(),
        points: None,
        reason: None,
        actor: None,
    })
}

/// The first day after the period containing `date`.
fn period_end(date: NaiveDate, period: Period) -> Option<NaiveDate> {
    let (y, m) = (date.year(), date.month());
    let (ny, nm) = match period {
        Period::Month => {
            if m == 12 {
                (y + 1, 1)
            } else {
                (y, m + 1)
            }
        }
        Period::Quarter => {
            let q_end = ((m - 1) / 3 + 1) * 3;
            if q_end == 12 {
                (y + 1, 1)
            } else {
                (y, q_end + 1)
            }
        }
        Period::Year => (y + 1, 1),
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
}

fn push_keys(keys: &mut Vec<CounterKey>, name: &Arc<str>, w: Window, date: NaiveDate) {
    for k in w.keys_for(date) {
        let key = CounterKey {
            name: name.clone(),
            window: k,
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
}

fn note(out: &mut Outcome, rule: &str, matched: bool, detail: String) {
    push_line(out, Arc::from(rule), matched, detail);
}

fn push_line(out: &mut Outcome, rule: Arc<str>, matched: bool, detail: String) {
    if let Some(trace) = &mut out.explain {
        trace.lines.push(ExplainLine {
            rule,
            matched,
            detail,
        });
    }
}

impl Evaluator for Plan {
    fn stamp(&self) -> &rewards_core::RulesetStamp {
        &self.stamp
    }

    fn counter_keys(&self, tx: &Transaction, keys: &mut Vec<CounterKey>) {
        Plan::counter_keys(self, tx, keys);
    }

    fn evaluate(&self, tx: &Transaction, member: &MemberView) -> Result<Outcome, EvalFailure> {
        Plan::evaluate(self, tx, member).map_err(EvalFailure::from)
    }

    fn explain(&self, tx: &Transaction, member: &MemberView) -> Result<Outcome, EvalFailure> {
        Plan::explain(self, tx, member).map_err(EvalFailure::from)
    }

    fn reviews_tiers(&self) -> bool {
        !self.tiers.is_empty()
    }

    fn review_keys(&self, as_of: DateTime<Utc>, keys: &mut Vec<CounterKey>) {
        if !self.tiers.is_empty() {
            self.aggregate_keys(as_of.with_timezone(&self.tz).date_naive(), keys);
        }
    }

    fn review_tier(
        &self,
        id: &rewards_core::MemberId,
        member: &MemberView,
        scheduled: Option<&TierChange>,
        as_of: DateTime<Utc>,
    ) -> Result<Option<rewards_core::ledger::TierReview>, EvalFailure> {
        Ok(Plan::review_tier(self, member, scheduled, as_of)
            .map_err(EvalFailure::from)?
            .map(|d| d.into_review(id.clone(), as_of)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rounding_modes() {
        let cases = [
            (dec!(2.5), [2, 3, 3, 2]),
            (dec!(3.5), [3, 4, 4, 4]),
            (dec!(2.4), [2, 3, 2, 2]),
            (dec!(2.6), [2, 3, 3, 3]),
            (dec!(7), [7, 7, 7, 7]),
        ];
        for (x, want) in cases {
            let got = [
                RoundingMode::Floor,
                RoundingMode::Ceiling,
                RoundingMode::HalfUp,
                RoundingMode::HalfEven,
            ]
            .map(|m| round_award(x, m).unwrap_or(-1));
            assert_eq!(got, want, "{x}");
        }
    }

    #[test]
    fn arithmetic_overflow_is_an_error() {
        let tz = chrono_tz::UTC;
        assert!(matches!(
            arith(ArithOp::Mul, &Val::Int(i64::MAX), &Val::Int(2), tz),
            Err(EvalError::Overflow(_))
        ));
        assert!(matches!(
            arith(
                ArithOp::Mul,
                &Val::Dec(Decimal::MAX),
                &Val::Dec(dec!(2)),
                tz
            ),
            Err(EvalError::Overflow(_))
        ));
        assert!(matches!(
            arith(ArithOp::Div, &Val::Money(dec!(1)), &Val::Int(0), tz),
            Err(EvalError::DivisionByZero(_))
        ));
        assert!(round_award(Decimal::MAX, RoundingMode::Floor).is_err());
    }

    #[test]
    fn amount_units_give_the_decimal_results_bit_for_bit() {
        let mut amounts = vec![
            dec!(0.01),
            dec!(0.99),
            dec!(1),
            dec!(1.00),
            dec!(42.50),
            dec!(599.999),
            dec!(123456789.1234),
            dec!(9223372036854775807),
            dec!(92233720368547758.07),
            dec!(18446744073709551615),
            dec!(1.8446744073709551615),
        ];
        let mut x: u64 = 12345;
        for _ in 0..3000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mantissa = i64::try_from((x >> 20) % 10_000_000_000_000).unwrap_or(1) + 1;
            amounts.push(Decimal::new(mantissa, ((x >> 8) % 10) as u32));
        }
        let divisors = [
            1i64, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000,
        ];
        for a in amounts {
            let Some(units) = AmountUnits::of(a) else {
                panic!("{a} is positive and fits");
            };
            for d in divisors {
                let quotient = if d == 1 {
                    Ok(Val::Money(a))
                } else {
                    arith(ArithOp::Div, &Val::Money(a), &Val::Int(d), chrono_tz::UTC)
                };
                let Ok(Val::Money(q)) = quotient else {
                    panic!("{a} / {d}");
                };
                for k in [1i64, 2, 3, 5, 1000] {
                    let slow = arith(
                        ArithOp::Mul,
                        &Val::Int(k),
                        &Val::Money(q.floor()),
                        chrono_tz::UTC,
                    );
                    let fast = units.scaled_floor(k, d as u64);
                    if let (Some(fast), Ok(Val::Money(slow))) = (fast, slow) {
                        assert_eq!(fast.serialize(), slow.serialize(), "{k} * floor({a} / {d})");
                    } else {
                        assert!(fast.is_none(), "{k} * floor({a} / {d})");
                    }
                }
            }
        }
        for a in [dec!(0), dec!(0.00), dec!(-0.00), dec!(-1.5), Decimal::MAX] {
            assert!(AmountUnits::of(a).is_none(), "{a}");
        }
    }

    #[test]
    fn scanned_counters_equal_the_views_sums() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 31).unwrap_or_default();
        let windows = [
            Window::Day,
            Window::Week(chrono::Weekday::Mon),
            Window::Month,
            Window::Quarter,
            Window::Year,
            Window::Lifetime,
            Window::Rolling(7),
            Window::Rolling(30),
            Window::Rolling(1),
        ];
        for size in [0usize, 3, 20, SCAN_COUNTERS, SCAN_COUNTERS + 5, 70] {
            let mut view = MemberView::default();
            for i in 0..size {
                let w = windows[i % windows.len()];
                let day = today - TimeDelta::days((i / 2) as i64);
                let name = if i % 3 == 0 { "cap.a" } else { "cap.b" };
                // Whole values in the larger views (the integer paths).
                let scale = if size >= 20 && name == "cap.b" {
                    0
                } else {
                    (i % 3) as u32
                };
                let value = Decimal::new(i as i64 * 125 - 40, scale);
                view.counters
                    .insert(CounterKey::new(name, w.key_for(day)), value);
            }
            for name in ["cap.a", "cap.b", "cap.c"] {
                for w in windows {
                    let fast = counter_sum(&view, name, w, today).map(|d| d.serialize());
                    let slow = view.counter_sum(name, w, today).map(|d| d.serialize());
                    assert_eq!(fast, slow, "{size} {name} {w:?}");
                }
            }
        }
    }

    /// The hot path's caps (integer room, window keys once per
    /// transaction, counters found by pointer) give what explain's
    /// decimal path gives, for used counters whole, fractional, negative,
    /// over the limit and beyond 64 bits.
    #[test]
    fn caps_on_the_hot_path_equal_explains() {
        let src = r#"
ruleset "caps" version 1
currency USD
timezone "Europe/Paris"
rounding floor
points pending 3 days
points expire at end of quarter + 1 month
rule r_day { earn floor(tx.amount) points  cap 50 points per member per day }
rule r_week { earn floor(tx.amount) points  cap 70 points per member per week }
rule r_month { earn 2 * floor(tx.amount) points  cap 300 points per member per month }
rule r_quarter { earn floor(tx.amount / 2) points  cap 120 points per member per calendar quarter }
rule r_year { earn floor(tx.amount) points  cap 900 points per member per calendar year }
rule r_life { earn 7 points  cap 40 points per member per lifetime }
rule r_rolling { earn floor(tx.amount) points  cap 200 points per member per rolling 30 days }
rule r_both { earn floor(tx.amount) points  cap 25 points per transaction  cap 60 points per member per month }
"#;
        let plan = match Plan::compile(src, &crate::HostFunctions::new()) {
            Ok(p) => p,
            Err(d) => panic!("does not compile: {d:?}"),
        };
        let used = [
            dec!(0),
            dec!(10),
            dec!(49),
            dec!(50),
            dec!(51),
            dec!(12.5),
            dec!(-3),
            dec!(-0.5),
            dec!(299.99),
            dec!(1000),
            Decimal::from(i64::MAX),
            dec!(-9223372036854775809),
            dec!(0.000),
        ];
        let start = NaiveDate::from_ymd_opt(2026, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
            .unwrap_or_default();
        let mut x: u64 = 99;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for i in 0..600u64 {
            let time = start + TimeDelta::minutes((next() % (60 * 24 * 400)) as i64);
            let Ok(id) = rewards_core::TxId::new(format!("t{i}")) else {
                panic!("id");
            };
            let Ok(member) = rewards_core::MemberId::new("m") else {
                panic!("id");
            };
            let Some(tx) = review_tx(time, rewards_core::Currency::USD).map(|t| Transaction {
                id,
                member,
                kind: TxKind::Purchase,
                amount: rewards_core::Money::new(
                    Decimal::new((next() % 40_000) as i64, (next() % 3) as u32),
                    rewards_core::Currency::USD,
                ),
                ..t
            }) else {
                panic!("tx");
            };
            let mut keys = Vec::new();
            plan.counter_keys(&tx, &mut keys);
            let mut view = MemberView::default();
            for key in keys {
                if !next().is_multiple_of(5) {
                    let u = used[(next() % used.len() as u64) as usize];
                    view.counters.insert(key, u);
                }
            }
            let fast = plan.evaluate(&tx, &view);
            let slow = plan.explain(&tx, &view);
            match (fast, slow) {
                (Ok(a), Ok(mut b)) => {
                    b.explain = None;
                    assert_eq!(format!("{a:?}"), format!("{b:?}"), "{tx:?} {view:?}");
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("{a:?} / {b:?}"),
            }
        }
    }

    #[test]
    fn months_are_added_as_chrono_adds_them() {
        let chrono_add = |d: NaiveDate, months: i64| -> Option<NaiveDate> {
            let m = chrono::Months::new(u32::try_from(months.unsigned_abs()).ok()?);
            if months >= 0 {
                d.checked_add_months(m)
            } else {
                d.checked_sub_months(m)
            }
        };
        let mut date = NaiveDate::from_ymd_opt(1890, 1, 1).unwrap_or_default();
        let months = [
            0i64, 1, -1, 2, 11, 12, -12, 13, 24, -25, 120, 1199, -3000, 1_200_000,
        ];
        while date.year() < 2110 {
            for m in months {
                assert_eq!(add_months(date, m), chrono_add(date, m), "{date} {m}");
            }
            date += TimeDelta::days(5);
        }
        for (d, m) in [
            (NaiveDate::MAX, 1i64),
            (NaiveDate::MIN, -1),
            (NaiveDate::MAX, -1),
            (NaiveDate::MIN, 1),
            (NaiveDate::MIN, 1_200_001),
        ] {
            assert_eq!(add_months(d, m), chrono_add(d, m), "{d} {m}");
        }
    }

    #[test]
    fn date_keys_are_the_windows_keys() {
        let mut date = NaiveDate::from_ymd_opt(1899, 12, 25).unwrap_or_default();
        let starts = [
            chrono::Weekday::Mon,
            chrono::Weekday::Tue,
            chrono::Weekday::Wed,
            chrono::Weekday::Thu,
            chrono::Weekday::Fri,
            chrono::Weekday::Sat,
            chrono::Weekday::Sun,
        ];
        let mut windows = vec![
            Window::Day,
            Window::Month,
            Window::Quarter,
            Window::Year,
            Window::Lifetime,
            Window::Rolling(1),
            Window::Rolling(30),
        ];
        windows.extend(starts.map(Window::Week));
        // Every 3 days over 250 years (every weekday, month and leap year).
        while date.year() < 2150 {
            let keys = DateKeys::of(date);
            for w in &windows {
                assert_eq!(keys.key(*w), w.key_for(date), "{date} {w:?}");
            }
            date += TimeDelta::days(3);
        }
    }

    #[test]
    fn at_least_zero_is_max_with_zero_bit_for_bit() {
        for d in [
            dec!(0),
            dec!(0.00),
            dec!(-0.00),
            dec!(-3),
            dec!(0.01),
            dec!(7.50),
        ] {
            assert_eq!(
                at_least_zero(d).serialize(),
                d.max(Decimal::ZERO).serialize(),
                "{d}"
            );
        }
        for d in [dec!(7), dec!(7.00), dec!(-2), Decimal::from(i64::MAX)] {
            for mode in [RoundingMode::Floor, RoundingMode::HalfEven] {
                let slow = match mode {
                    RoundingMode::Floor => d.floor(),
                    _ => d.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven),
                };
                assert_eq!(round_award(d, mode).ok(), slow.to_i64(), "{d}");
            }
        }
    }

    #[test]
    fn three_valued_logic() {
        assert_eq!(and(&Val::Bool(false), &Val::Absent), Val::Bool(false));
        assert_eq!(and(&Val::Bool(true), &Val::Absent), Val::Absent);
        assert_eq!(or(&Val::Bool(true), &Val::Absent), Val::Bool(true));
        assert_eq!(or(&Val::Bool(false), &Val::Absent), Val::Absent);
        assert_eq!(not(&Val::Absent), Val::Absent);
    }
}
