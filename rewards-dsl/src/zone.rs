//! A zone's UTC offsets between 1970 and 2100 as a table, for the hot
//! path's two conversions: an instant to its local time (the
//! transaction's) and a local time to its instant (the lot terms).
//!
//! chrono-tz answers both by a binary search over the zone's spans
//! (~390 instructions per local resolution); the table answers from a
//! bucket of ~24 days and one or two comparisons, with the same results.
//! Outside the table's range, in a gap, or for more than two candidate
//! offsets, the callers fall back to chrono-tz.
//!
//! The table is found through chrono-tz's public API: the total offset is
//! probed every [`STEP`] seconds and each change is bisected to its exact
//! second. A change is missed only when two changes lie within one step
//! and cancel out; in the tz data chrono-tz 0.10.4 embeds (tzdb 2025b) the
//! shortest interval between two offset changes of any zone from 1970 to
//! 2100 is 601,200 s (6.96 days: Gaza and Hebron's future Ramadan rules,
//! Noronha, Recife and Boa Vista in 2000), more than twice [`STEP`]. A
//! table is built once per zone per process and shared.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The probing step of the scan: 3 days (see the module documentation).
const STEP: i64 = 3 * 86_400;
/// 1970-01-01T00:00:00Z.
const START: i64 = 0;
/// 2100-01-01T00:00:00Z.
const END: i64 = 4_102_444_800;
/// Buckets of 2^21 s (~24.3 days).
const SHIFT: u32 = 21;
/// Offsets are less than a day: a local time's instant lies within a
/// day of its reading as UTC.
const DAY: i64 = 86_400;

/// The offsets of one zone over `[START, END)`.
pub(crate) struct ZoneTable {
    /// The offset at `START`.
    base: i32,
    /// The instants at which the total offset changes, and the offset from
    /// then on, ascending, all in `(START, END)`.
    changes: Vec<(i64, i32)>,
    /// By bucket `k`: the index of the first change at or after
    /// `START + (k << SHIFT)`.
    buckets: Vec<u32>,
}

impl std::fmt::Debug for ZoneTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZoneTable({} changes)", self.changes.len())
    }
}

fn offset_at(tz: Tz, t: i64) -> Option<i32> {
    let utc = DateTime::from_timestamp(t, 0)?.naive_utc();
    Some(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
}

impl ZoneTable {
    /// Scans `tz`: `None` if an offset is a day or more (never in the tz
    /// data) or a probe is out of chrono's range.
    fn build(tz: Tz) -> Option<ZoneTable> {
        let base = offset_at(tz, START)?;
        let mut changes: Vec<(i64, i32)> = Vec::new();
        let (mut t, mut off) = (START, base);
        while t < END {
            let next = (t + STEP).min(END);
            let o = offset_at(tz, next)?;
            if o != off {
                // The offset is `off` at `lo`, `o` at `hi`: bisect to the
                // first second of `o`.
                let (mut lo, mut hi) = (t, next);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset_at(tz, mid)? == off {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                if hi < END {
                    changes.push((hi, o));
                }
            }
            (t, off) = (next, o);
        }
        ZoneTable::from_changes(base, changes)
    }

    fn from_changes(base: i32, changes: Vec<(i64, i32)>) -> Option<ZoneTable> {
        if i64::from(base).abs() >= DAY || changes.iter().any(|c| i64::from(c.1).abs() >= DAY) {
            return None;
        }
        let n = ((END - START) >> SHIFT) as usize + 1;
        let mut buckets = Vec::with_capacity(n);
        let mut i = 0usize;
        for k in 0..n {
            let at = START + ((k as i64) << SHIFT);
            while changes.get(i).is_some_and(|c| c.0 < at) {
                i += 1;
            }
            buckets.push(u32::try_from(i).ok()?);
        }
        Some(ZoneTable {
            base,
            changes,
            buckets,
        })
    }

    /// The index of the span containing `t` (`START <= t < END`): the
    /// number of changes at or before `t`.
    #[inline]
    fn span(&self, t: i64) -> usize {
        let k = ((t - START) >> SHIFT) as usize;
        let mut i = self.buckets.get(k).map_or(0, |&i| i as usize);
        while self.changes.get(i).is_some_and(|c| c.0 <= t) {
            i += 1;
        }
        i
    }

    /// The offset of span `i`.
    #[inline]
    fn offset(&self, i: usize) -> i32 {
        match i.checked_sub(1) {
            None => self.base,
            Some(j) => self.changes.get(j).map_or(self.base, |c| c.1),
        }
    }

    /// The local time of an instant, as `t.with_timezone(&tz).naive_local()`
    /// gives it; `None` outside the table.
    #[inline]
    pub(crate) fn local(&self, t: DateTime<Utc>) -> Option<NaiveDateTime> {
        let s = t.timestamp();
        if !(START..END).contains(&s) {
            return None;
        }
        let o = self.offset(self.span(s));
        t.naive_utc().checked_add_offset(FixedOffset::east_opt(o)?)
    }

    /// The instant of a local time as `compile::resolve_local` gives it
    /// when the local time exists (once, or twice: the earlier); `None`
    /// in a gap or outside the table (the caller asks chrono-tz).
    #[inline]
    pub(crate) fn resolve(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let l = local.and_utc().timestamp();
        if l - DAY < START || l + DAY >= END {
            return None;
        }
        // chrono-tz's local spans: span `i` = [begin_i + o_i, end_i + o_i);
        // only spans meeting [l - DAY, l + DAY] in UTC can contain `l`.
        let mut i = self.span(l - DAY);
        let mut found: [Option<i32>; 2] = [None, None];
        let mut n = 0usize;
        loop {
            let begin = match i.checked_sub(1) {
                None => START,
                Some(j) => self.changes.get(j)?.0,
            };
            if begin > l + DAY {
                break;
            }
            let end = self.changes.get(i).map_or(END, |c| c.0);
            let o = i64::from(self.offset(i));
            if begin + o <= l && l < end + o {
                *found.get_mut(n)? = Some(self.offset(i));
                n += 1;
            }
            if end >= END {
                break;
            }
            i += 1;
        }
        let utc = |o: i32| {
            local
                .checked_sub_offset(FixedOffset::east_opt(o)?)
                .map(|t| t.and_utc())
        };
        match found {
            [Some(a), None] => utc(a),
            [Some(a), Some(b)] => Some(utc(a)?.min(utc(b)?)),
            _ => None,
        }
    }
}

/// The table of `tz`, built on first use in the process.
pub(crate) fn table(tz: Tz) -> Option<Arc<ZoneTable>> {
    static TABLES: OnceLock<Mutex<HashMap<Tz, Option<Arc<ZoneTable>>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| Mutex::new(HashMap::new()));
    if let Ok(map) = tables.lock() {
        if let Some(t) = map.get(&tz) {
            return t.clone();
        }
    }
    // Built outside the lock (two threads may both build one; the same).
    let built = ZoneTable::build(tz).map(Arc::new);
    if let Ok(mut map) = tables.lock() {
        map.entry(tz).or_insert_with(|| built.clone());
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zones with the most irregular offsets: 30-minute DST, skipped
    /// days, Ramadan suspensions, the shortest intervals between changes.
    const ZONES: [&str; 14] = [
        "America/New_York",
        "Europe/London",
        "Australia/Lord_Howe",
        "Pacific/Apia",
        "Asia/Kolkata",
        "Asia/Gaza",
        "Asia/Hebron",
        "America/Noronha",
        "America/Argentina/Tucuman",
        "Africa/Casablanca",
        "Antarctica/Troll",
        "Pacific/Kiritimati",
        "America/Sao_Paulo",
        "UTC",
    ];

    #[test]
    fn instants_have_chronos_local_times() {
        for zone in ZONES {
            let tz: Tz = zone.parse().unwrap_or(chrono_tz::UTC);
            let Some(table) = table(tz) else {
                panic!("{zone}: no table");
            };
            // Every 3 hours 7 minutes 11 seconds from 1970 to 2100, and the
            // seconds around every change.
            let mut probes: Vec<i64> = (START..END).step_by(11_231).collect();
            for c in &table.changes {
                probes.extend([c.0 - 1, c.0, c.0 + 1]);
            }
            for s in probes {
                let Some(t) = DateTime::from_timestamp(s, 123_000_000) else {
                    continue;
                };
                assert_eq!(
                    table.local(t),
                    Some(t.with_timezone(&tz).naive_local()),
                    "{zone} {t}"
                );
            }
        }
    }

    #[test]
    fn local_times_have_chronos_instants() {
        use chrono::offset::LocalResult;
        for zone in ZONES {
            let tz: Tz = zone.parse().unwrap_or(chrono_tz::UTC);
            let Some(table) = table(tz) else {
                panic!("{zone}: no table");
            };
            let mut probes: Vec<i64> = (START..END).step_by(11_239).collect();
            // Around every change, where gaps and folds are.
            for c in &table.changes {
                for d in (-2 * 3600..=2 * 3600).step_by(599) {
                    probes.push(c.0 + i64::from(c.1) + d);
                }
            }
            let (mut gaps, mut folds) = (0, 0);
            for s in probes {
                let Some(local) = DateTime::from_timestamp(s, 7).map(|t| t.naive_utc()) else {
                    continue;
                };
                let want = match tz.from_local_datetime(&local) {
                    LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => {
                        folds += 1;
                        Some(a.min(b).with_timezone(&Utc))
                    }
                    LocalResult::None => {
                        gaps += 1;
                        None
                    }
                };
                let inside = s - DAY >= START && s + DAY < END;
                let got = table.resolve(local);
                if inside {
                    assert_eq!(got, want, "{zone} {local}");
                } else {
                    assert!(got.is_none(), "{zone} {local}");
                }
            }
            // Kiritimati only ever moved forward (a skipped day).
            if zone != "UTC" && zone != "Asia/Kolkata" {
                assert!(gaps > 0, "{zone}: {gaps} gaps");
            }
            if zone == "America/New_York" || zone == "Australia/Lord_Howe" {
                assert!(folds > 0, "{zone}: {folds} folds");
            }
        }
    }

    #[test]
    fn a_missed_change_is_caught() {
        // The comparison above fails when the table loses a change.
        let tz: Tz = "America/New_York".parse().unwrap_or(chrono_tz::UTC);
        let Some(full) = ZoneTable::build(tz) else {
            panic!("no table");
        };
        let mut changes = full.changes.clone();
        let lost = changes.remove(changes.len() / 2);
        let Some(broken) = ZoneTable::from_changes(full.base, changes) else {
            panic!("no table");
        };
        let Some(t) = DateTime::from_timestamp(lost.0 + 3600, 0) else {
            panic!("range");
        };
        assert_ne!(broken.local(t), Some(t.with_timezone(&tz).naive_local()));
        let local = t.with_timezone(&tz).naive_local();
        assert_ne!(broken.resolve(local), full.resolve(local));
        assert_eq!(full.resolve(local), Some(t));
    }
}
