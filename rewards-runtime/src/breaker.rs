//! A circuit breaker with exponential backoff around the store.
//!
//! When a store call fails with a transient error (`ErrorKind::Unavailable`:
//! the database is down or overloaded), the breaker opens for a backoff
//! interval that doubles on every consecutive failure up to a ceiling. While
//! it is open no worker calls the store (they wait, holding their messages
//! unacknowledged, so the bounded queues fill and the source stops reading:
//! the consumer is paused). When the interval has passed, the next call is
//! the probe: a success closes the breaker and resets the backoff.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Exponential backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait after a failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
}

/// The breaker; share it as `Arc<CircuitBreaker>` between the workers.
#[derive(Debug)]
pub struct CircuitBreaker {
    backoff: Backoff,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(backoff: Backoff, metrics: Arc<Metrics>) -> CircuitBreaker {
        CircuitBreaker {
            backoff,
            state: Mutex::new(State::default()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain fields; a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long to wait before calling the store (`None`: call now).
    pub fn wait_time(&self) -> Option<Duration> {
        let state = self.lock();
        let until = state.open_until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// True while failures are outstanding (open or half-open).
    pub fn is_open(&self) -> bool {
        self.lock().failures > 0
    }

    /// Consecutive transient failures so far.
    pub fn failures(&self) -> u32 {
        self.lock().failures
    }

    /// A store call succeeded: close.
    pub fn record_success(&self) {
        let mut state = self.lock();
        if state.failures > 0 {
            state.failures = 0;
            state.open_until = None;
            self.metrics.breaker_open.store(0, Ordering::Relaxed);
            tracing::info!("store reachable again, circuit breaker closed");
        }
    }

    /// A store call failed transiently: open (again) for the next backoff.
    pub fn record_failure(&self) -> Duration {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        let delay = self.backoff.delay(state.failures);
        state.open_until = Some(Instant::now() + delay);
        if state.failures == 1 {
            self.metrics.breaker_trips.fetch_add(1, Ordering::Relaxed);
            self.metrics.breaker_open.store(1, Ordering::Relaxed);
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 100, 100]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_and_closes_on_success() {
        let metrics = Arc::new(Metrics::new());
        let breaker = CircuitBreaker::new(Backoff::default(), metrics.clone());
        assert_eq!(breaker.wait_time(), None);
        assert_eq!(breaker.record_failure(), Duration::from_millis(50));
        assert!(breaker.is_open());
        assert_eq!(metrics.breaker_open.load(Ordering::Relaxed), 1);
        assert_eq!(breaker.wait_time(), Some(Duration::from_millis(50)));
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(breaker.wait_time(), None, "half-open: the next call probes");
        assert_eq!(breaker.record_failure(), Duration::from_millis(100));
        breaker.record_success();
        assert!(!breaker.is_open());
        assert_eq!(breaker.wait_time(), None);
        assert_eq!(metrics.breaker_trips.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.breaker_open.load(Ordering::Relaxed), 0);
    }
}
