//! `forward_ledger_store!`: a wrapper that overrides nothing passes the
//! whole conformance suite through to the in-memory store; overrides and
//! kept defaults take the place of the forwarded methods.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rewards_core::conformance;
use rewards_core::error::Result;
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::{ErrorKind, LedgerStore, Points};

/// Forwards every method.
struct Plain<S> {
    inner: S,
}

rewards_core::forward_ledger_store! {
    impl<S: LedgerStore> LedgerStore for Plain<S> {
        forward self.inner;
    }
}

/// Keeps the outbox defaults (refusing) and counts budget look-ups.
struct Partial {
    inner: Arc<dyn LedgerStore>,
    budget_lookups: AtomicU64,
}

rewards_core::forward_ledger_store! {
    impl LedgerStore for Partial {
        forward self.inner;
        default outbox_fetch, outbox_ack;
        /// Counted, then forwarded.
        async fn budget_used(&self, budget: &str) -> Result<Points> {
            self.budget_lookups.fetch_add(1, Ordering::Relaxed);
            self.inner.budget_used(budget).await
        }
    }
}

#[tokio::test]
async fn a_plain_wrapper_passes_the_conformance_suite() {
    let config = LedgerConfig::default();
    let ttl = config.authorization_ttl();
    let store = Plain {
        inner: MemoryStore::new(config),
    };
    conformance::run_all(Arc::new(store), ttl).await;
}

#[tokio::test]
async fn overrides_and_kept_defaults_replace_forwarding() {
    let inner: Arc<dyn LedgerStore> = Arc::new(MemoryStore::new(LedgerConfig::default()));
    let store = Partial {
        inner: inner.clone(),
        budget_lookups: AtomicU64::new(0),
    };
    assert_eq!(store.budget_used("b").await.expect("budget"), Points(0));
    assert_eq!(store.budget_lookups.load(Ordering::Relaxed), 1);
    // The inner store keeps an outbox; the wrapper keeps the default.
    assert!(inner
        .outbox_fetch(10)
        .await
        .expect("inner outbox")
        .is_empty());
    let refused = store.outbox_fetch(10).await.expect_err("the default");
    assert_eq!(refused.kind(), ErrorKind::Invalid);
    let refused = store.outbox_ack(&[1]).await.expect_err("the default");
    assert_eq!(refused.kind(), ErrorKind::Invalid);
}
