//! Counting windows for caps, budgets and aggregates.
//!
//! A window is computed from the transaction's own time (event time) in the
//! ruleset's time zone, so a late transaction counts in the window of its own
//! time. Each window instance has a [`WindowKey`]; a counter is named by a
//! [`CounterKey`] (counter name + window key). Rolling windows of N days are
//! kept as day buckets and summed over the last N days.

use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A kind of window, as declared in a ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// One calendar day.
    Day,
    /// One week starting on the given day (Monday unless declared).
    Week(#[serde(with = "weekday_serde")] Weekday),
    /// One calendar month.
    Month,
    /// One calendar quarter.
    Quarter,
    /// One calendar year.
    Year,
    /// The last N days including the transaction's own day (day buckets).
    Rolling(u16),
    /// Forever.
    Lifetime,
}

mod weekday_serde {
    use chrono::Weekday;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(day: &Weekday, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(day.num_days_from_monday() as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Weekday, D::Error> {
        let n = u8::deserialize(d)?;
        Weekday::try_from(n % 7).map_err(serde::de::Error::custom)
    }
}

/// One instance of a window; numbers are ordinals so keys sort in time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "w", content = "n", rename_all = "snake_case")]
pub enum WindowKey {
    /// Forever.
    Lifetime,
    /// Days since 1970-01-01 (local date).
    Day(i32),
    /// Days since 1970-01-01 of the week's first day.
    Week(i32),
    /// `year * 12 + month0`.
    Month(i32),
    /// `year * 4 + quarter0`.
    Quarter(i32),
    /// The year.
    Year(i32),
}

fn epoch_days(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN);
    (date - epoch).num_days() as i32
}

/// The local calendar date of an instant in a time zone.
pub fn local_date(instant: DateTime<Utc>, tz: Tz) -> NaiveDate {
    instant.with_timezone(&tz).date_naive()
}

impl Window {
    /// The window instance containing `date` (a local date in the ruleset's
    /// zone). A rolling window answers with the day bucket of `date`.
    pub fn key_for(self, date: NaiveDate) -> WindowKey {
        match self {
            Window::Day | Window::Rolling(_) => WindowKey::Day(epoch_days(date)),
            Window::Week(start) => {
                let back =
                    (7 + date.weekday().num_days_from_monday() - start.num_days_from_monday()) % 7;
                WindowKey::Week(epoch_days(date) - back as i32)
            }
            Window::Month => WindowKey::Month(date.year() * 12 + date.month0() as i32),
            Window::Quarter => WindowKey::Quarter(date.year() * 4 + (date.month0() / 3) as i32),
            Window::Year => WindowKey::Year(date.year()),
            Window::Lifetime => WindowKey::Lifetime,
        }
    }

    /// The day buckets a rolling window sums for `date`, newest first;
    /// for the other windows just the one key.
    pub fn keys_for(self, date: NaiveDate) -> impl Iterator<Item = WindowKey> {
        let (first, count) = match self {
            Window::Rolling(days) => (epoch_days(date), i32::from(days.max(1))),
            other => match other.key_for(date) {
                WindowKey::Day(d) => (d, 1),
                key => return KeysIter::One(Some(key)),
            },
        };
        KeysIter::Days {
            next: first,
            left: count,
        }
    }
}

enum KeysIter {
    One(Option<WindowKey>),
    Days { next: i32, left: i32 },
}

impl Iterator for KeysIter {
    type Item = WindowKey;
    fn next(&mut self) -> Option<WindowKey> {
        match self {
            KeysIter::One(key) => key.take(),
            KeysIter::Days { next, left } => {
                if *left == 0 {
                    return None;
                }
                let key = WindowKey::Day(*next);
                *next -= 1;
                *left -= 1;
                Some(key)
            }
        }
    }
}

impl fmt::Display for WindowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WindowKey::Lifetime => f.write_str("lifetime"),
            WindowKey::Day(n) => write!(f, "d{n}"),
            WindowKey::Week(n) => write!(f, "w{n}"),
            WindowKey::Month(n) => write!(f, "m{n}"),
            WindowKey::Quarter(n) => write!(f, "q{n}"),
            WindowKey::Year(n) => write!(f, "y{n}"),
        }
    }
}

impl WindowKey {
    /// Parses the [`Display`](fmt::Display) form (`q8107`, `lifetime`).
    pub fn parse(text: &str) -> Option<WindowKey> {
        if text == "lifetime" {
            return Some(WindowKey::Lifetime);
        }
        let (tag, num) = text.split_at_checked(1)?;
        let n: i32 = num.parse().ok()?;
        Some(match tag {
            "d" => WindowKey::Day(n),
            "w" => WindowKey::Week(n),
            "m" => WindowKey::Month(n),
            "q" => WindowKey::Quarter(n),
            "y" => WindowKey::Year(n),
            _ => return None,
        })
    }
}

/// A counter instance: which counter (a name the plan declares, such as
/// `cap.dining` or `agg.spend_airline`) in which window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    /// The counter's name, declared by the plan.
    pub name: Arc<str>,
    /// The window instance.
    pub window: WindowKey,
}

impl CounterKey {
    /// Builds a key.
    pub fn new(name: impl Into<Arc<str>>, window: WindowKey) -> CounterKey {
        CounterKey {
            name: name.into(),
            window,
        }
    }
}

/// A counter key seen through its parts, so that a map keyed by
/// [`CounterKey`] can be searched with a borrowed name (no `Arc` clone):
/// `map.get(&("cap.dining", key) as &dyn CounterKeyRef)`. Hashes and
/// compares exactly like the [`CounterKey`] with the same parts.
pub trait CounterKeyRef {
    /// The counter's name.
    fn name(&self) -> &str;
    /// The window instance.
    fn window(&self) -> WindowKey;
}

impl CounterKeyRef for CounterKey {
    fn name(&self) -> &str {
        &self.name
    }
    fn window(&self) -> WindowKey {
        self.window
    }
}

impl CounterKeyRef for (&str, WindowKey) {
    fn name(&self) -> &str {
        self.0
    }
    fn window(&self) -> WindowKey {
        self.1
    }
}

impl<'a> std::borrow::Borrow<dyn CounterKeyRef + 'a> for CounterKey {
    fn borrow(&self) -> &(dyn CounterKeyRef + 'a) {
        self
    }
}

/// Hashes a counter key from its parts in two writes (the name's bytes,
/// then the window instance packed in one `u64`): counters are looked up
/// on every evaluation, and each `write` of the default SipHash costs.
fn hash_counter<H: std::hash::Hasher>(name: &str, window: WindowKey, state: &mut H) {
    let (tag, n): (u64, i32) = match window {
        WindowKey::Lifetime => (0, 0),
        WindowKey::Day(n) => (1, n),
        WindowKey::Week(n) => (2, n),
        WindowKey::Month(n) => (3, n),
        WindowKey::Quarter(n) => (4, n),
        WindowKey::Year(n) => (5, n),
    };
    state.write(name.as_bytes());
    state.write_u64((tag << 32) | u64::from(n as u32));
}

impl std::hash::Hash for CounterKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_counter(&self.name, self.window, state);
    }
}

// Exactly as `CounterKey`'s `Hash`.
impl std::hash::Hash for dyn CounterKeyRef + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        hash_counter(self.name(), self.window(), state);
    }
}

impl PartialEq for dyn CounterKeyRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.window() == other.window() && self.name() == other.name()
    }
}

impl Eq for dyn CounterKeyRef + '_ {}

impl fmt::Display for CounterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn quarter_and_week_keys() {
        assert_eq!(
            Window::Quarter.key_for(d(2026, 3, 31)),
            WindowKey::Quarter(2026 * 4)
        );
        assert_eq!(
            Window::Quarter.key_for(d(2026, 4, 1)),
            WindowKey::Quarter(2026 * 4 + 1)
        );
        // 2026-11-25 is a Wednesday; its Monday-week starts 2026-11-23.
        assert_eq!(
            Window::Week(Weekday::Mon).key_for(d(2026, 11, 25)),
            Window::Day.key_for(d(2026, 11, 23)).as_week()
        );
        assert_eq!(
            Window::Week(Weekday::Sun).key_for(d(2026, 11, 25)),
            Window::Day.key_for(d(2026, 11, 22)).as_week()
        );
    }

    #[test]
    fn local_date_uses_the_zone() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let instant = DateTime::parse_from_rfc3339("2027-01-01T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(local_date(instant, tz), d(2026, 12, 31));
        assert_eq!(
            Window::Year.key_for(local_date(instant, tz)),
            WindowKey::Year(2026)
        );
    }

    #[test]
    fn rolling_keys_are_day_buckets() {
        let keys: Vec<_> = Window::Rolling(3).keys_for(d(1970, 1, 3)).collect();
        assert_eq!(
            keys,
            vec![WindowKey::Day(2), WindowKey::Day(1), WindowKey::Day(0)]
        );
        let keys: Vec<_> = Window::Month.keys_for(d(1970, 2, 3)).collect();
        assert_eq!(keys, vec![WindowKey::Month(1970 * 12 + 1)]);
    }

    #[test]
    fn keys_round_trip_as_text() {
        for key in [
            WindowKey::Lifetime,
            WindowKey::Day(-3),
            WindowKey::Quarter(8107),
        ] {
            assert_eq!(WindowKey::parse(&key.to_string()), Some(key));
        }
    }

    #[test]
    fn borrowed_keys_find_the_same_entries() {
        use std::collections::HashMap;
        let mut map: HashMap<CounterKey, i32> = HashMap::new();
        map.insert(CounterKey::new("cap.a", WindowKey::Day(3)), 1);
        map.insert(CounterKey::new("cap.b", WindowKey::Month(7)), 2);
        let get = |name: &str, w: WindowKey| map.get(&(name, w) as &dyn CounterKeyRef).copied();
        assert_eq!(get("cap.a", WindowKey::Day(3)), Some(1));
        assert_eq!(get("cap.b", WindowKey::Month(7)), Some(2));
        assert_eq!(get("cap.a", WindowKey::Day(4)), None);
        assert_eq!(get("cap.b", WindowKey::Week(7)), None);
        assert_eq!(get("cap.c", WindowKey::Day(3)), None);
    }

    impl WindowKey {
        fn as_week(self) -> WindowKey {
            match self {
                WindowKey::Day(n) => WindowKey::Week(n),
                other => other,
            }
        }
    }
}
