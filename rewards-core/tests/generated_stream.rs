//! A generated day of transactions through the in-memory store: every
//! transaction is accepted (refunds and settlements refer to earlier
//! transactions), and the ledger reconciles.

use rewards_core::conformance::fixtures::outcome;
use rewards_core::generate::{Generator, GeneratorConfig};
use rewards_core::ledger::LedgerConfig;
use rewards_core::memory::MemoryStore;
use rewards_core::store::LedgerStore;
use rewards_core::TxKind;

#[tokio::test]
async fn a_generated_day_is_accepted_and_reconciles() {
    let store = MemoryStore::new(LedgerConfig::default());
    let config = GeneratorConfig {
        transactions: 5_000,
        members: 300,
        ..GeneratorConfig::default()
    };
    let mut refunds = 0;
    for tx in Generator::new(config).unwrap() {
        // One point per whole dollar, as a stand-in for a ruleset.
        let points = i64::try_from(tx.amount.amount.trunc().mantissa()).unwrap();
        let o = match tx.kind {
            TxKind::Purchase | TxKind::Authorization => outcome(&tx, &[("base", points)]),
            _ => outcome(&tx, &[]),
        };
        let receipt = store.append(&tx, &o).await.unwrap();
        if tx.kind == TxKind::Refund {
            refunds += 1;
            assert!(receipt.delta.available.get() <= 0);
        }
    }
    assert!(refunds > 50);
    let report = store.reconcile().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.drift);
    assert!(report.members > 100);
}
