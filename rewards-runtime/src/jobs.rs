//! Scheduled jobs: expiry of points, release of pending points, expiry of
//! open authorizations, and the tier review (scheduled tier changes, then
//! every member's tier decided again from the rules).
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
//!
//! # The tier review
//!
//! [`JobKind::TierReview`] first applies the scheduled tier changes due at
//! the instant (`apply_scheduled_tiers`), then walks every member page by
//! page ([`LedgerStore::members_after`]), reads each page's views with the
//! counters the review reads and the scheduled changes
//! ([`LedgerStore::tier_views`]), asks the current default program
//! ([`Evaluator::review_tier`], the plan loaded when the run starts: a hot
//! reload applies from the next run) and records each decision
//! ([`LedgerStore::review_tier`]). Scheduled changes go first so that a
//! downgrade due at this very instant takes effect before the member is
//! reviewed (the review would otherwise see a schedule not yet in the
//! future and schedule the downgrade again, a grace later).
//!
//! It is idempotent per due instant and safe with several daemons: the
//! review is a pure function of the member's state and the instant, a
//! decision equal to what the ledger already holds (the same tier, the same
//! scheduled change) records nothing, and the ledger names the entry of a
//! review after the member and the instant. So the first daemon to review a
//! member at an instant records the decision, and any other finds nothing
//! to change. A run interrupted by a transient error is retried from the
//! start: the members already reviewed have nothing left to change.

use chrono::{DateTime, TimeZone, Utc};
use std::sync::Arc;
use std::time::Duration;

use rewards_core::ledger::SweepReport;
use rewards_core::store::MAX_PAGE_ROWS;
use rewards_core::{Evaluator, LedgerStore, MemberId};

use crate::breaker::Backoff;
use crate::metrics::{JobKind, Metrics};
use crate::registry::ProgramRegistry;
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
/// minute; the tier review every hour.
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

/// Members per page of the tier review's walk.
pub const REVIEW_PAGE: usize = MAX_PAGE_ROWS;
/// The tier review logs its progress every this many pages.
const PROGRESS_EVERY_PAGES: u64 = 50;

/// Runs the jobs against a store.
pub struct JobRunner {
    store: Arc<dyn LedgerStore>,
    programs: Arc<ProgramRegistry>,
    metrics: Arc<Metrics>,
    schedule: Vec<JobSchedule>,
    backoff: Backoff,
    review_page: usize,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRunner")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl JobRunner {
    /// A runner with the [`default_schedule`]. The tier review decides
    /// tiers with the default program of `programs` as it is at each run.
    pub fn new(
        store: Arc<dyn LedgerStore>,
        programs: Arc<ProgramRegistry>,
        metrics: Arc<Metrics>,
    ) -> JobRunner {
        JobRunner {
            store,
            programs,
            metrics,
            schedule: default_schedule(),
            backoff: Backoff::default(),
            review_page: REVIEW_PAGE,
        }
    }

    /// Replaces the schedule.
    pub fn with_schedule(mut self, schedule: Vec<JobSchedule>) -> JobRunner {
        self.schedule = schedule;
        self
    }

    /// Sets the members per page of the tier review (1 to
    /// [`MAX_PAGE_ROWS`]; default [`REVIEW_PAGE`]).
    pub fn with_review_page(mut self, members: usize) -> JobRunner {
        self.review_page = members.clamp(1, MAX_PAGE_ROWS);
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
            JobKind::TierReview => self.review_tiers(as_of).await,
        };
        self.metrics.job_ran(job, result.is_ok());
        match &result {
            Ok(report) => tracing::info!(
                job = job.as_str(),
                %as_of,
                members = report.members,
                postings = report.postings,
                reviewed = report.reviewed,
                changed = report.changed,
                "job ran"
            ),
            Err(e) => tracing::warn!(job = job.as_str(), %as_of, error = %e, "job failed"),
        }
        Ok(result?)
    }

    /// The tier review as of `as_of` (see the module documentation).
    async fn review_tiers(&self, as_of: DateTime<Utc>) -> rewards_core::error::Result<SweepReport> {
        let mut report = self.store.apply_scheduled_tiers(as_of).await?;
        let plan: Arc<dyn Evaluator> = match self.programs.resolve(None) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(%as_of, error = %e, "tier review: no program to review with; only scheduled changes applied");
                return Ok(report);
            }
        };
        if !plan.reviews_tiers() {
            return Ok(report);
        }
        let mut keys = Vec::new();
        plan.review_keys(as_of, &mut keys);
        let mut after: Option<MemberId> = None;
        let mut pages = 0u64;
        let mut refused = 0u64;
        loop {
            let page = self
                .store
                .members_after(after.as_ref(), self.review_page)
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            let views = self.store.tier_views(&page, &keys).await?;
            for (member, read) in page.iter().zip(&views) {
                report.reviewed += 1;
                let review = match plan.review_tier(
                    member,
                    &read.view,
                    read.scheduled.as_ref(),
                    as_of,
                ) {
                    Ok(Some(review)) => review,
                    Ok(None) => continue,
                    Err(e) => {
                        // One member's evaluation failing must not stop
                        // the others; the first failure is logged.
                        if refused == 0 {
                            tracing::warn!(%member, %as_of, error = %e, "tier review: the rules failed for a member");
                        }
                        refused += 1;
                        continue;
                    }
                };
                let balance = self.store.review_tier(&review).await?;
                // A decision the ledger already held records nothing, and
                // the member's version stays where the view read it (a
                // transaction of the member in between counts as a change:
                // the count is for the log, not for correctness).
                if balance.version > read.view.version {
                    report.changed += 1;
                    report.members += 1;
                }
            }
            pages += 1;
            if pages.is_multiple_of(PROGRESS_EVERY_PAGES) {
                tracing::info!(%as_of, pages, reviewed = report.reviewed, changed = report.changed, "tier review in progress");
            }
            after = Some(last);
        }
        if refused > 0 {
            tracing::warn!(%as_of, refused, "tier review: members the rules failed for (their tiers are unchanged)");
        }
        Ok(report)
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
