//! Test support: a small real [`Evaluator`] (points per whole currency
//! unit), a store wrapper that fails transiently on demand, and helpers to
//! write transactions as JSON lines; Kafka helpers (`kafka`), private
//! service instances (`services`) and the fault rig (`fault`).

#![allow(dead_code)]

#[cfg(feature = "kafka")]
pub mod fault;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod services;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use rewards_core::error::Result;
use rewards_core::ledger::Receipt;
use rewards_core::memory::MemoryStore;
use rewards_core::{
    Component, ComponentKind, CounterKey, Error, EvalFailure, Evaluator, LedgerStore, MemberId,
    MemberView, Outcome, Points, RulesetStamp, Transaction, TxKind,
};

/// `per_unit` points per whole currency unit of a purchase; merchant
/// category 9999 is refused (an evaluation failure); lots expire after
/// `expiry_days` when set.
pub struct PointsPerUnit {
    stamp: RulesetStamp,
    per_unit: i64,
    expiry_days: Option<i64>,
    /// When set, evaluation waits on it twice (entered, released).
    gate: Option<Arc<Barrier>>,
}

impl PointsPerUnit {
    pub fn new(version: u32, per_unit: i64) -> PointsPerUnit {
        PointsPerUnit {
            stamp: RulesetStamp {
                id: Arc::from("test-card"),
                version,
                hash: Arc::from(format!("hash-v{version}")),
            },
            per_unit,
            expiry_days: None,
            gate: None,
        }
    }

    pub fn expiring_after(mut self, days: i64) -> PointsPerUnit {
        self.expiry_days = Some(days);
        self
    }

    pub fn gated(mut self, gate: Arc<Barrier>) -> PointsPerUnit {
        self.gate = Some(gate);
        self
    }

    pub fn arc(self) -> Arc<dyn Evaluator> {
        Arc::new(self)
    }
}

impl Evaluator for PointsPerUnit {
    fn stamp(&self) -> &RulesetStamp {
        &self.stamp
    }

    fn counter_keys(&self, _tx: &Transaction, _keys: &mut Vec<CounterKey>) {}

    fn evaluate(
        &self,
        tx: &Transaction,
        _member: &MemberView,
    ) -> std::result::Result<Outcome, EvalFailure> {
        if let Some(gate) = &self.gate {
            gate.wait();
            gate.wait();
        }
        if tx.mcc == Some(9999) {
            return Err(EvalFailure {
                code: "blocked_mcc",
                message: "merchant category 9999 earns nothing and is refused".into(),
            });
        }
        let mut outcome = Outcome::empty(
            tx.id.clone(),
            tx.member.clone(),
            tx.kind,
            self.stamp.clone(),
        );
        if matches!(tx.kind, TxKind::Purchase | TxKind::Authorization) {
            let units = tx.amount.amount.trunc();
            let points = units.to_i64().unwrap_or(0) * self.per_unit;
            outcome.components.push(Component {
                rule: Arc::from("base"),
                label: Arc::from("points per unit"),
                kind: ComponentKind::Earn,
                points: Points(points),
                exact: units * Decimal::from(self.per_unit),
                budget: None,
            });
            if let Some(days) = self.expiry_days {
                outcome.lot.expires_at = Some(tx.time + Duration::days(days));
            }
        }
        Ok(outcome)
    }

    fn explain(
        &self,
        tx: &Transaction,
        member: &MemberView,
    ) -> std::result::Result<Outcome, EvalFailure> {
        self.evaluate(tx, member)
    }
}

/// The in-memory store behind the pipeline tests: fails the next
/// `fail_next` pipeline calls (member view(s), append, append batch) with
/// the transient kind, then behaves; records the members and ids of every
/// append call (one entry per call) and counts view calls; may hold each
/// batch append for `append_delay` so that a backlog forms behind it.
pub struct FlakyStore {
    pub inner: Arc<MemoryStore>,
    pub fail_next: AtomicU64,
    pub failures: AtomicU64,
    pub calls: std::sync::Mutex<Vec<Vec<(MemberId, rewards_core::TxId)>>>,
    pub view_calls: AtomicU64,
    pub append_delay: std::time::Duration,
}

impl FlakyStore {
    pub fn new(inner: Arc<MemoryStore>, fail_next: u64) -> FlakyStore {
        FlakyStore {
            inner,
            fail_next: AtomicU64::new(fail_next),
            failures: AtomicU64::new(0),
            calls: std::sync::Mutex::new(Vec::new()),
            view_calls: AtomicU64::new(0),
            append_delay: std::time::Duration::ZERO,
        }
    }

    /// Holds every batch append for `delay`.
    pub fn with_append_delay(mut self, delay: std::time::Duration) -> FlakyStore {
        self.append_delay = delay;
        self
    }

    fn record(&self, items: &[(Transaction, Outcome)]) {
        let call = items
            .iter()
            .map(|(tx, _)| (tx.member.clone(), tx.id.clone()))
            .collect();
        self.calls.lock().expect("calls").push(call);
    }

    fn trip(&self) -> Result<()> {
        let left = self.fail_next.load(Ordering::SeqCst);
        if left > 0
            && self
                .fail_next
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(Error::unavailable("database is down (test)", None));
        }
        Ok(())
    }
}

rewards_core::forward_ledger_store! {
    impl LedgerStore for FlakyStore {
        forward self.inner;
        default outbox_fetch, outbox_ack;
        async fn member_view(
            &self,
            member: &MemberId,
            counters: &[CounterKey],
        ) -> Result<MemberView> {
            self.trip()?;
            self.view_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.member_view(member, counters).await
        }
        async fn member_views(
            &self,
            requests: &[(MemberId, Vec<CounterKey>)],
        ) -> Result<Vec<MemberView>> {
            self.trip()?;
            self.view_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.member_views(requests).await
        }
        async fn append(&self, tx: &Transaction, outcome: &Outcome) -> Result<Receipt> {
            self.trip()?;
            self.record(std::slice::from_ref(&(tx.clone(), outcome.clone())));
            self.inner.append(tx, outcome).await
        }
        async fn append_batch(
            &self,
            items: &[(Transaction, Outcome)],
        ) -> Result<Vec<Result<Receipt>>> {
            self.trip()?;
            self.record(items);
            if !self.append_delay.is_zero() {
                tokio::time::sleep(self.append_delay).await;
            }
            self.inner.append_batch(items).await
        }
    }
}

pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, 1, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// A purchase as one JSON line (no newline).
pub fn purchase(id: &str, member: &str, amount: &str) -> String {
    format!(
        r#"{{"id":"{id}","member":"{member}","kind":"purchase","amount":"{amount}","currency":"USD","mcc":5411,"time":"2026-09-01T12:00:00Z"}}"#
    )
}

/// A refund of `original` as one JSON line.
pub fn refund(id: &str, member: &str, amount: &str, original: &str) -> String {
    format!(
        r#"{{"id":"{id}","member":"{member}","kind":"refund","amount":"{amount}","currency":"USD","mcc":5411,"time":"2026-09-02T12:00:00Z","original_id":"{original}"}}"#
    )
}

/// An authorization as one JSON line.
pub fn authorization(id: &str, member: &str, amount: &str) -> String {
    format!(
        r#"{{"id":"{id}","member":"{member}","kind":"authorization","amount":"{amount}","currency":"USD","mcc":5411,"time":"2026-09-01T12:00:00Z"}}"#
    )
}

/// A settlement of the authorization `original` as one JSON line.
pub fn settlement(id: &str, member: &str, amount: &str, original: &str) -> String {
    format!(
        r#"{{"id":"{id}","member":"{member}","kind":"settlement","amount":"{amount}","currency":"USD","mcc":5411,"time":"2026-09-01T13:00:00Z","original_id":"{original}"}}"#
    )
}

/// A deterministic workload: `count` purchases over `members` members with
/// amounts between 1.00 and 250.99; returns the lines and the expected
/// available balance per member (`per_unit` points per whole unit).
pub fn workload(
    prefix: &str,
    count: usize,
    members: usize,
    per_unit: i64,
) -> (Vec<String>, Vec<(String, i64)>) {
    let mut expected = vec![0i64; members];
    let mut lines = Vec::with_capacity(count);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..count {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let member = (seed % members as u64) as usize;
        let whole = 1 + (seed >> 8) % 250;
        let cents = (seed >> 20) % 100;
        lines.push(purchase(
            &format!("{prefix}-{i:06}"),
            &format!("{prefix}-m{member:03}"),
            &format!("{whole}.{cents:02}"),
        ));
        expected[member] += whole as i64 * per_unit;
    }
    let expected = expected
        .into_iter()
        .enumerate()
        .map(|(m, points)| (format!("{prefix}-m{m:03}"), points))
        .collect();
    (lines, expected)
}

pub async fn available(store: &dyn LedgerStore, member: &str) -> i64 {
    let member = MemberId::new(member).expect("member id");
    store
        .balance(&member)
        .await
        .map(|b| b.balances.available.get())
        .unwrap_or(0)
}

pub fn member(id: &str) -> MemberId {
    MemberId::new(id).expect("member id")
}

/// Drops the schema when dropped (also when the test fails).
pub struct DropSchema(pub rewards_store::postgres::PgConfig);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let config = self.0.clone();
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        rewards_store::postgres::drop_schema(&config),
                    )
                    .await
                })
        })
        .join();
        if !matches!(done, Ok(Ok(Ok(())))) {
            eprintln!("could not drop schema {}: {done:?}", self.0.schema);
        }
    }
}
