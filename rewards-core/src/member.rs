//! Members: the profile a host imports, and the read-only view of a member's
//! state that evaluation sees (supplied by the store, never fetched during
//! evaluation).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ids::MemberId;
use crate::points::Points;
use crate::transaction::{decode_attributes, AttrValue, DecodeError};
use crate::window::{CounterKey, CounterKeyRef, Window, WindowKey};

/// A member profile as imported from JSON lines or set through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProfile {
    /// The member.
    pub member: MemberId,
    /// Declared attributes rules may read as `member.attributes.NAME`.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrValue>,
}

impl MemberProfile {
    /// An empty profile (created on a member's first transaction).
    pub fn empty(member: MemberId) -> MemberProfile {
        MemberProfile {
            member,
            attributes: BTreeMap::new(),
        }
    }

    /// Decodes one JSON line such as `{"member":"m-1","attributes":{...}}`.
    pub fn from_json_str(text: &str) -> Result<MemberProfile, DecodeError> {
        let value = crate::strict_json::parse(text).map_err(DecodeError::from_strict)?;
        let fields = value.as_object().ok_or_else(|| DecodeError {
            field: "$".into(),
            reason: "must be a JSON object".into(),
        })?;
        let member = fields
            .get("member")
            .and_then(Value::as_str)
            .ok_or_else(|| DecodeError {
                field: "member".into(),
                reason: "is required and must be a string".into(),
            })?;
        let member = MemberId::new(member).map_err(|e| DecodeError {
            field: "member".into(),
            reason: e.to_string(),
        })?;
        let attributes = match fields.get("attributes") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => decode_attributes(v, "attributes")?,
        };
        Ok(MemberProfile { member, attributes })
    }
}

/// What evaluation may know about a member: a snapshot taken by the store
/// before the transaction is evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Current tier name (`None` before any qualification).
    pub tier: Option<Arc<str>>,
    /// Enrolment date, when known.
    pub enrolled: Option<NaiveDate>,
    /// Profile attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Current values of the counters the plan reads (caps, aggregates);
    /// a missing key counts as zero.
    pub counters: HashMap<CounterKey, Decimal>,
    /// Available balance.
    pub balance: Points,
    /// The member's version (the number of entries applied; 0 for a member
    /// never seen) the view was read at.
    #[serde(default)]
    pub version: u64,
}

impl MemberView {
    /// A counter's value, zero when absent.
    pub fn counter(&self, key: &CounterKey) -> Decimal {
        self.counters.get(key).copied().unwrap_or(Decimal::ZERO)
    }

    /// [`MemberView::counter`] by the key's parts (no key is built).
    pub fn counter_at(&self, name: &str, window: WindowKey) -> Decimal {
        self.counters
            .get(&(name, window) as &dyn CounterKeyRef)
            .copied()
            .unwrap_or(Decimal::ZERO)
    }

    /// The sum of a counter over the instances `window` reads on the local
    /// `date` ([`Window::keys_for`]: one, or the day buckets of a rolling
    /// window, added newest first); `None` when the sum overflows. For a
    /// rolling window a view of at most 64 counters is scanned once
    /// instead of being searched once per day (a search hashes the key);
    /// the sum is the same.
    pub fn counter_sum(&self, name: &str, window: Window, date: NaiveDate) -> Option<Decimal> {
        const SCAN: usize = 64;
        if let Window::Rolling(days) = window {
            let days = i32::from(days.max(1));
            if self.counters.len() <= SCAN && days > 1 {
                let WindowKey::Day(newest) = window.key_for(date) else {
                    return None;
                };
                let oldest = newest - (days - 1);
                let mut found = [(0i32, Decimal::ZERO); SCAN];
                let mut n = 0;
                for (k, v) in &self.counters {
                    if let WindowKey::Day(d) = k.window {
                        if d >= oldest && d <= newest && &*k.name == name {
                            if let Some(slot) = found.get_mut(n) {
                                *slot = (d, *v);
                                n += 1;
                            }
                        }
                    }
                }
                let found = found.get_mut(..n).unwrap_or_default();
                found.sort_unstable_by_key(|f| std::cmp::Reverse(f.0));
                return found
                    .iter()
                    .try_fold(Decimal::ZERO, |sum, (_, v)| sum.checked_add(*v));
            }
        }
        window.keys_for(date).try_fold(Decimal::ZERO, |sum, key| {
            sum.checked_add(self.counter_at(name, key))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn counter_sums_agree_with_key_by_key_lookups() {
        let today = d(2026, 3, 31);
        let mut view = MemberView::default();
        for (back, v) in [(0i64, 5), (3, 7), (29, 11), (30, 1000), (-1, 2000)] {
            let day = today - chrono::TimeDelta::days(back);
            view.counters.insert(
                CounterKey::new("cap.x", Window::Day.key_for(day)),
                Decimal::from(v),
            );
        }
        view.counters.insert(
            CounterKey::new("cap.y", Window::Day.key_for(today)),
            Decimal::from(100_000),
        );
        view.counters.insert(
            CounterKey::new("cap.x", Window::Month.key_for(today)),
            Decimal::from(9),
        );
        let slow = |w: Window| {
            w.keys_for(today)
                .map(|k| view.counter(&CounterKey::new("cap.x", k)))
                .sum::<Decimal>()
        };
        for w in [
            Window::Rolling(30),
            Window::Rolling(31),
            Window::Rolling(1),
            Window::Rolling(366),
            Window::Month,
            Window::Day,
            Window::Year,
        ] {
            assert_eq!(view.counter_sum("cap.x", w, today), Some(slow(w)), "{w:?}");
        }
        assert_eq!(
            view.counter_sum("cap.x", Window::Rolling(30), today),
            Some(Decimal::from(23))
        );
        // Many counters: searched day by day, the same sum.
        for i in 0..70 {
            view.counters.insert(
                CounterKey::new(format!("other.{i}"), WindowKey::Lifetime),
                Decimal::ONE,
            );
        }
        assert_eq!(
            view.counter_sum("cap.x", Window::Rolling(30), today),
            Some(Decimal::from(23))
        );
        view.counters.insert(
            CounterKey::new(
                "cap.x",
                Window::Day.key_for(today - chrono::TimeDelta::days(1)),
            ),
            Decimal::MAX,
        );
        assert_eq!(view.counter_sum("cap.x", Window::Rolling(30), today), None);
        assert_eq!(
            view.counter_at("cap.y", Window::Day.key_for(today)),
            Decimal::from(100_000)
        );
    }
}
