//! Scheduled jobs: expiry of points, release of pending points, expiry of
//! open authorizations, scheduled tier changes.
//!
//! Each job runs at *due instants*: multiples of its interval since the Unix
//! epoch (every minute on the minute, every hour on the hour, ...), and asks
//! the store to sweep "as of" that instant. Because every daemon computes
//! the same instants and the store's sweeps are idempotent per instant
//! (deterministic posting ids, lots closed once swept), several daemons may
//! run the same schedule: the first sweep of an instant does the work, the
//! others find nothing left. A daemon that was down catches up at its next
//! due instant, since a sweep covers everything due up to it.
//!
//! A transient store error is retried with backoff until the job's next due
//! instant; any other error is logged and counted
//! (`rewards_job_failures_total`), and the job runs again at its next
//! instant.

use chrono::{DateTime, TimeZone, Utc};
use std::sync::Arc;
use std::time::Duration;

use rewards_core::ledger::SweepReport;
use rewards_core::LedgerStore;

use crate::breaker::Backoff;
use crate::metrics::{JobKind, Metrics};
use crate::shutdown::ShutdownSignal;
use crate::RuntimeError;

/// One job and how often it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSchedule {
    /// Which job.
    pub job: JobKind,
    /// Its interval (due instants are multiples of it since the epoch).
    pub every: Duration,
}

/// The default schedule: authorizations, pending points and expiry every
/// minute; scheduled tier changes every hour.
pub fn default_schedule() -> Vec<JobSchedule> {
    let minute = Duration::from_secs(60);
    vec![
        JobSchedule {
            job: JobKind::AuthorizationExpiry,
            every: minute,
        },
        JobSchedule {
            job: JobKind::PendingRelease,
            every: minute,
        },
        JobSchedule {
            job: JobKind::Expiry,
            every: minute,
        },
        JobSchedule {
            job: JobKind::TierReview,
            every: Duration::from_secs(3600),
        },
    ]
}

/// The latest due instant at or before `now` for an interval.
pub fn due_at_or_before(now: DateTime<Utc>, every: Duration) -> DateTime<Utc> {
    let step = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
    let ms = now.timestamp_millis();
    let due = ms - ms.rem_euclid(step);
    Utc.timestamp_millis_opt(due).single().unwrap_or(now)
}

/// Runs the jobs against a store.
pub struct JobRunner {
    store: Arc<dyn LedgerStore>,
    metrics: Arc<Metrics>,
    schedule: Vec<JobSchedule>,
    backoff: Backoff,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    /// A runner with the [`default_schedule`].
    pub fn new(store: Arc<dyn LedgerStore>, metrics: Arc<Metrics>) -> JobRunner {
        JobRunner {
            store,
            metrics,
            schedule: default_schedule(),
            backoff: Backoff::default(),
        }
    }

    /// Replaces the schedule.
    pub fn with_schedule(mut self, schedule: Vec<JobSchedule>) -> JobRunner {
        self.schedule = schedule;
        self
    }

    /// Runs one job as of `as_of`, once (no retry).
    pub async fn run_job(
        &self,
        job: JobKind,
        as_of: DateTime<Utc>,
    ) -> Result<SweepReport, RuntimeError> {
        let result = match job {
            JobKind::Expiry => self.store.expire_due(as_of).await,
            JobKind::PendingRelease => self.store.release_pending(as_of).await,
            JobKind::AuthorizationExpiry => self.store.expire_authorizations(as_of).await,
            JobKind::TierReview => self.store.apply_scheduled_tiers(as_of).await,
        };
        self.metrics.job_ran(job, result.is_ok());
        match &result {
            Ok(report) => tracing::info!(
                job = job.as_str(),
                %as_of,
                members = report.members,
                postings = report.postings,
                "job ran"
            ),
            Err(e) => tracing::warn!(job = job.as_str(), %as_of, error = %e, "job failed"),
        }
        Ok(result?)
    }

    /// Runs every scheduled job once as of `as_of` (each at its own latest
    /// due instant), in schedule order.
    pub async fn run_all(
        &self,
        as_of: DateTime<Utc>,
    ) -> Vec<(JobKind, Result<SweepReport, RuntimeError>)> {
        let mut out = Vec::with_capacity(self.schedule.len());
        for s in &self.schedule {
            let due = due_at_or_before(as_of, s.every);
            out.push((s.job, self.run_job(s.job, due).await));
        }
        out
    }

    /// Runs the schedule until `stop` fires: each job at each of its due
    /// instants (by the wall clock), retrying transient store errors.
    pub async fn run(&self, mut stop: ShutdownSignal) {
        let mut next: Vec<DateTime<Utc>> = self
            .schedule
            .iter()
            .map(|s| due_at_or_before(Utc::now(), s.every))
            .collect();
        loop {
            let Some((index, due)) = next.iter().copied().enumerate().min_by_key(|(_, due)| *due)
            else {
                return;
            };
            let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = stop.wait() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let schedule = self.schedule[index];
            let mut failures = 0u32;
            loop {
                match self.run_job(schedule.job, due).await {
                    Err(RuntimeError::Store(e)) if e.kind().is_transient() => {
                        failures = failures.saturating_add(1);
                        let delay = self.backoff.delay(failures);
                        let give_up =
                            due + chrono::Duration::from_std(schedule.every).unwrap_or_default();
                        if Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default()
                            >= give_up
                        {
                            break;
                        }
                        tokio::select! {
                            () = stop.wait() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                    _ => break,
                }
            }
            let after = due + chrono::Duration::from_std(schedule.every).unwrap_or_default();
            // Skip instants missed while this one ran long.
            next[index] = after.max(due_at_or_before(Utc::now(), schedule.every));
            if next[index] <= due {
                next[index] = after;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_instants_are_aligned_to_the_interval() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 10, 17, 42).unwrap();
        assert_eq!(
            due_at_or_before(t, Duration::from_secs(60)),
            Utc.with_ymd_and_hms(2026, 3, 1, 10, 17, 0).unwrap()
        );
        assert_eq!(
            due_at_or_before(t, Duration::from_secs(3600)),
            Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
        );
        let on_the_minute = Utc.with_ymd_and_hms(2026, 3, 1, 10, 17, 0).unwrap();
        assert_eq!(
            due_at_or_before(on_the_minute, Duration::from_secs(60)),
            on_the_minute
        );
    }
}
