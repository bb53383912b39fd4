//! Runtime values of `.rwd` expressions.
//!
//! [`Val`] is what the evaluator computes with: small, borrowing strings from
//! the transaction, the member view or the plan (no allocation per value),
//! with an explicit [`Val::Absent`] for optional fields that are missing
//! (three-valued logic, see `docs/semantics.md`). [`Value`] is the owned
//! form exchanged with host functions.

use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};
use rewards_core::{Currency, Presence, TxKind};
use rust_decimal::Decimal;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use crate::ast::{Duration, DurationUnit, TypeName};

/// A length of time: calendar months, calendar days (in the ruleset's zone)
/// and exact seconds, kept apart because a month or a day has no fixed
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Length {
    /// Calendar months (a year is 12).
    pub months: i64,
    /// Calendar days (a week is 7).
    pub days: i64,
    /// Exact seconds (an hour is 3600).
    pub seconds: i64,
}

impl Length {
    /// The span of a written duration.
    pub fn of(d: &Duration) -> Length {
        let n = i64::from(d.count);
        match d.unit {
            DurationUnit::Minutes => Length {
                seconds: n * 60,
                ..Length::default()
            },
            DurationUnit::Hours => Length {
                seconds: n * 3600,
                ..Length::default()
            },
            DurationUnit::Days => Length {
                days: n,
                ..Length::default()
            },
            DurationUnit::Weeks => Length {
                days: n * 7,
                ..Length::default()
            },
            DurationUnit::Months => Length {
                months: n,
                ..Length::default()
            },
            DurationUnit::Years => Length {
                months: n * 12,
                ..Length::default()
            },
        }
    }

    /// Checked sum.
    pub fn checked_add(self, o: Length) -> Option<Length> {
        Some(Length {
            months: self.months.checked_add(o.months)?,
            days: self.days.checked_add(o.days)?,
            seconds: self.seconds.checked_add(o.seconds)?,
        })
    }

    /// Checked negation.
    pub fn checked_neg(self) -> Option<Length> {
        Some(Length {
            months: self.months.checked_neg()?,
            days: self.days.checked_neg()?,
            seconds: self.seconds.checked_neg()?,
        })
    }

    /// Checked multiplication by a whole number.
    pub fn checked_mul(self, k: i64) -> Option<Length> {
        Some(Length {
            months: self.months.checked_mul(k)?,
            days: self.days.checked_mul(k)?,
            seconds: self.seconds.checked_mul(k)?,
        })
    }

    /// Order: months first, then days, then seconds (a month is longer than
    /// any number of days written next to it only when the day counts are
    /// equal; spans are compared as written, without assuming month lengths).
    pub fn cmp_key(&self) -> (i64, i64) {
        let days_secs = self
            .days
            .saturating_mul(86_400)
            .saturating_add(self.seconds);
        (self.months, days_secs)
    }
}

impl fmt::Display for Length {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.months != 0 {
            parts.push(format!("{} months", self.months));
        }
        if self.days != 0 {
            parts.push(format!("{} days", self.days));
        }
        if self.seconds != 0 || parts.is_empty() {
            parts.push(format!("{} seconds", self.seconds));
        }
        f.write_str(&parts.join(" "))
    }
}

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// An optional field that the transaction or member does not carry.
    Absent,
    /// A boolean.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// An exact decimal.
    Dec(Decimal),
    /// Money in the ruleset's currency (its amount).
    Money(Decimal),
    /// Points (exact until an award is rounded).
    Points(Decimal),
    /// Text.
    Str(Cow<'a, str>),
    /// A calendar date.
    Date(NaiveDate),
    /// An instant.
    DateTime(DateTime<Utc>),
    /// A length of time.
    Duration(Length),
    /// A transaction kind.
    Kind(TxKind),
    /// Card presence.
    Presence(Presence),
    /// A weekday.
    Weekday(Weekday),
    /// A tier, by rank (0 = lowest).
    Tier(u16),
    /// A currency.
    Currency(Currency),
}

impl Val<'_> {
    /// The numeric value of a number, money or points.
    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Val::Int(i) => Some(Decimal::from(*i)),
            Val::Dec(d) | Val::Money(d) | Val::Points(d) => Some(*d),
            _ => None,
        }
    }

    /// A copy that borrows nothing.
    pub fn into_owned(self) -> Val<'static> {
        match self {
            Val::Absent => Val::Absent,
            Val::Bool(b) => Val::Bool(b),
            Val::Int(i) => Val::Int(i),
            Val::Dec(d) => Val::Dec(d),
            Val::Money(d) => Val::Money(d),
            Val::Points(d) => Val::Points(d),
            Val::Str(s) => Val::Str(Cow::Owned(s.into_owned())),
            Val::Date(d) => Val::Date(d),
            Val::DateTime(t) => Val::DateTime(t),
            Val::Duration(s) => Val::Duration(s),
            Val::Kind(k) => Val::Kind(k),
            Val::Presence(p) => Val::Presence(p),
            Val::Weekday(w) => Val::Weekday(w),
            Val::Tier(t) => Val::Tier(t),
            Val::Currency(c) => Val::Currency(c),
        }
    }

    /// Equality across the numeric types (an integer equals the same decimal;
    /// points compare with numbers); `None` when either side is absent.
    pub fn equals(&self, other: &Val<'_>) -> Option<bool> {
        // The common same-type cases first (no decimal conversion).
        match (self, other) {
            (Val::Absent, _) | (_, Val::Absent) => return None,
            (Val::Int(a), Val::Int(b)) => return Some(a == b),
            (Val::Kind(a), Val::Kind(b)) => return Some(a == b),
            (Val::Str(a), Val::Str(b)) => return Some(a == b),
            (Val::Tier(a), Val::Tier(b)) => return Some(a == b),
            (Val::Presence(a), Val::Presence(b)) => return Some(a == b),
            _ => {}
        }
        if let (Some(a), Some(b)) = (self.numeric(), other.numeric()) {
            return Some(a == b);
        }
        Some(match (self, other) {
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::Date(a), Val::Date(b)) => a == b,
            (Val::DateTime(a), Val::DateTime(b)) => a == b,
            (Val::Duration(a), Val::Duration(b)) => a == b,
            (Val::Kind(a), Val::Kind(b)) => a == b,
            (Val::Presence(a), Val::Presence(b)) => a == b,
            (Val::Weekday(a), Val::Weekday(b)) => a == b,
            (Val::Tier(a), Val::Tier(b)) => a == b,
            (Val::Currency(a), Val::Currency(b)) => a == b,
            _ => false,
        })
    }

    /// Order of two values of one ordered type; `None` when either side is
    /// absent or the values have no common order.
    pub fn compare(&self, other: &Val<'_>) -> Option<Ordering> {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => return Some(a.cmp(b)),
            (Val::Money(a), Val::Money(b)) => return Some(dec_cmp(a, b)),
            (Val::Tier(a), Val::Tier(b)) => return Some(a.cmp(b)),
            _ => {}
        }
        if let (Some(a), Some(b)) = (self.numeric(), other.numeric()) {
            return Some(a.cmp(&b));
        }
        match (self, other) {
            (Val::Date(a), Val::Date(b)) => Some(a.cmp(b)),
            (Val::DateTime(a), Val::DateTime(b)) => Some(a.cmp(b)),
            (Val::Duration(a), Val::Duration(b)) => Some(a.cmp_key().cmp(&b.cmp_key())),
            (Val::Weekday(a), Val::Weekday(b)) => {
                Some(a.num_days_from_monday().cmp(&b.num_days_from_monday()))
            }
            (Val::Tier(a), Val::Tier(b)) => Some(a.cmp(b)),
            (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
            (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Numbers, money and points as one comparable decimal. Money only
    /// compares with money and points only with points or numbers; the
    /// checker guarantees that, so the evaluator need not tell them apart.
    fn numeric(&self) -> Option<Decimal> {
        match self {
            Val::Int(i) => Some(Decimal::from(*i)),
            Val::Dec(d) | Val::Money(d) | Val::Points(d) => Some(*d),
            _ => None,
        }
    }
}

/// A weekday's short name as written in `.rwd` (`mon` ... `sun`).
pub fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

/// Writes a value as a rule author would write it (`42.50 USD`, `gold`,
/// `"text"`, `sat`); `tiers` names tiers by rank.
pub fn display(v: &Val<'_>, currency: Currency, tiers: &[std::sync::Arc<str>]) -> String {
    match v {
        Val::Absent => "absent".to_string(),
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Dec(d) => d.normalize().to_string(),
        Val::Money(d) => format!("{} {currency}", money_text(*d, currency)),
        Val::Points(d) => format!("{} points", d.normalize()),
        Val::Str(s) => format!("{s:?}"),
        Val::Date(d) => d.to_string(),
        Val::DateTime(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Val::Duration(s) => s.to_string(),
        Val::Kind(k) => k.as_str().to_string(),
        Val::Presence(p) => p.as_str().to_string(),
        Val::Weekday(w) => weekday_name(*w).to_string(),
        Val::Tier(r) => tiers
            .get(usize::from(*r))
            .map_or_else(|| format!("tier #{r}"), |t| t.to_string()),
        Val::Currency(c) => c.to_string(),
    }
}

fn money_text(d: Decimal, currency: Currency) -> String {
    let mut d = d.normalize();
    if d.scale() < currency.minor_units() {
        d.rescale(currency.minor_units());
    }
    d.to_string()
}

/// An owned value passed to and returned by host functions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `string`
    String(String),
    /// `decimal`
    Decimal(Decimal),
    /// `integer`
    Integer(i64),
    /// `bool`
    Bool(bool),
    /// `money`: an amount in the ruleset's currency.
    Money(Decimal),
    /// `date`
    Date(NaiveDate),
    /// `datetime`
    DateTime(DateTime<Utc>),
    /// `duration`
    Duration(Length),
    /// `points`
    Points(Decimal),
}

impl Value {
    /// The declared type this value has.
    pub fn type_name(&self) -> TypeName {
        match self {
            Value::String(_) => TypeName::String,
            Value::Decimal(_) => TypeName::Decimal,
            Value::Integer(_) => TypeName::Integer,
            Value::Bool(_) => TypeName::Bool,
            Value::Money(_) => TypeName::Money,
            Value::Date(_) => TypeName::Date,
            Value::DateTime(_) => TypeName::DateTime,
            Value::Duration(_) => TypeName::Duration,
            Value::Points(_) => TypeName::Points,
        }
    }

    /// The evaluator's form.
    pub fn to_val(&self) -> Val<'static> {
        match self {
            Value::String(s) => Val::Str(Cow::Owned(s.clone())),
            Value::Decimal(d) => Val::Dec(*d),
            Value::Integer(i) => Val::Int(*i),
            Value::Bool(b) => Val::Bool(*b),
            Value::Money(d) => Val::Money(*d),
            Value::Date(d) => Val::Date(*d),
            Value::DateTime(t) => Val::DateTime(*t),
            Value::Duration(s) => Val::Duration(*s),
            Value::Points(d) => Val::Points(*d),
        }
    }

    /// Converts an evaluator value to the declared parameter type (an
    /// integer where a decimal is declared, for example).
    pub fn from_val(v: &Val<'_>, want: TypeName) -> Option<Value> {
        Some(match (want, v) {
            (TypeName::String, Val::Str(s)) => Value::String(s.to_string()),
            (TypeName::Decimal, _) => match v {
                Val::Int(i) => Value::Decimal(Decimal::from(*i)),
                Val::Dec(d) => Value::Decimal(*d),
                _ => return None,
            },
            (TypeName::Integer, Val::Int(i)) => Value::Integer(*i),
            (TypeName::Bool, Val::Bool(b)) => Value::Bool(*b),
            (TypeName::Money, Val::Money(d)) => Value::Money(*d),
            (TypeName::Date, Val::Date(d)) => Value::Date(*d),
            (TypeName::DateTime, Val::DateTime(t)) => Value::DateTime(*t),
            (TypeName::Duration, Val::Duration(s)) => Value::Duration(*s),
            (TypeName::Points, _) => match v {
                Val::Int(i) => Value::Points(Decimal::from(*i)),
                Val::Dec(d) | Val::Points(d) => Value::Points(*d),
                _ => return None,
            },
            _ => return None,
        })
    }
}

/// The default value of a type, used by `rwd test` for host functions the
/// command line cannot provide (false, 0, "", ...).
pub fn default_of(t: TypeName) -> Value {
    match t {
        TypeName::String => Value::String(String::new()),
        TypeName::Decimal => Value::Decimal(Decimal::ZERO),
        TypeName::Integer => Value::Integer(0),
        TypeName::Bool => Value::Bool(false),
        TypeName::Money => Value::Money(Decimal::ZERO),
        TypeName::Date => Value::Date(NaiveDate::MIN.with_day(1).unwrap_or(NaiveDate::MIN)),
        TypeName::DateTime => Value::DateTime(DateTime::<Utc>::UNIX_EPOCH),
        TypeName::Duration => Value::Duration(Length::default()),
        TypeName::Points => Value::Points(Decimal::ZERO),
    }
}

/// 10^0 to 10^28 (a decimal's scales).
const POW10: [i128; 29] = {
    let mut p = [1i128; 29];
    let mut i = 1;
    while i < 29 {
        p[i] = p[i - 1] * 10;
        i += 1;
    }
    p
};

/// `a.cmp(b)` (numeric order; a zero of any sign or scale equals zero),
/// from the mantissas in 128 bits when one rescaled to the other's scale
/// fits: `m1 / 10^s1` against `m2 / 10^s2` is `m1 * 10^(s2 - s1)` against
/// `m2` for `s1 <= s2`.
#[inline]
pub(crate) fn dec_cmp(a: &Decimal, b: &Decimal) -> Ordering {
    let (sa, sb) = (a.scale(), b.scale());
    let (ma, mb) = (a.mantissa(), b.mantissa());
    let pow = |n: u32| POW10.get(n as usize).copied();
    let scaled = if sa == sb {
        Some((ma, mb))
    } else if sa < sb {
        pow(sb - sa)
            .and_then(|p| ma.checked_mul(p))
            .map(|x| (x, mb))
    } else {
        pow(sa - sb)
            .and_then(|p| mb.checked_mul(p))
            .map(|y| (ma, y))
    };
    match scaled {
        Some((x, y)) => x.cmp(&y),
        None => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_across_types() {
        assert_eq!(Val::Int(2).equals(&Val::Dec(Decimal::TWO)), Some(true));
        assert_eq!(
            Val::Points(Decimal::ONE).compare(&Val::Int(2)),
            Some(Ordering::Less)
        );
        assert_eq!(Val::Absent.equals(&Val::Int(1)), None);
        assert_eq!(
            Val::Weekday(Weekday::Sat).compare(&Val::Weekday(Weekday::Sun)),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn host_values_convert_to_declared_types() {
        assert_eq!(
            Value::from_val(&Val::Int(3), TypeName::Decimal),
            Some(Value::Decimal(Decimal::from(3)))
        );
        assert_eq!(Value::from_val(&Val::Bool(true), TypeName::Integer), None);
        assert_eq!(Value::Integer(4).to_val(), Val::Int(4));
    }

    #[test]
    fn dec_cmp_is_decimal_cmp() {
        use rust_decimal_macros::dec;
        let mut xs = vec![
            dec!(0),
            dec!(0.00),
            dec!(-0),
            dec!(-0.000),
            dec!(1),
            dec!(1.0),
            dec!(-1),
            dec!(3000),
            dec!(2999.99),
            dec!(3000.01),
            dec!(0.0000000000000000000000000001),
            dec!(-0.0000000000000000000000000001),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::from(i64::MAX),
            Decimal::new(i64::MAX, 28),
            Decimal::new(i64::MIN, 5),
        ];
        let mut x: u64 = 5;
        for _ in 0..400 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let m = (x >> 4) as i64 % 10_000_000 - 5_000_000;
            xs.push(Decimal::new(m, ((x >> 40) % 8) as u32));
            xs.push(Decimal::from_i128_with_scale(
                i128::from(x >> 1) * i128::from(x >> 34) * if x.is_multiple_of(3) { -1 } else { 1 },
                ((x >> 50) % 29) as u32,
            ));
        }
        for a in &xs {
            for b in &xs {
                assert_eq!(dec_cmp(a, b), a.cmp(b), "{a} {b}");
            }
        }
    }
}
