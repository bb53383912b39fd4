//! Property test: for the same random sequence of requests, the PostgreSQL
//! store (one unit per request, and batched) answers exactly like the
//! in-memory store: the same receipts or error kinds, the same balances,
//! postings and audit trail per member, and reconciliation stays clean.

mod postgres_support;

use std::sync::Arc;

use postgres_support::PgTest;
use proptest::prelude::*;
use rewards_core::conformance::fixtures::*;
use rewards_core::error::Result;
use rewards_core::ledger::{LedgerConfig, Receipt, Redemption};
use rewards_core::memory::MemoryStore;
use rewards_core::store::LedgerStore;
use rewards_core::{MemberId, Outcome, Points, Transaction, TxKind};

#[derive(Debug, Clone)]
enum Op {
    Purchase {
        m: u8,
        cents: u32,
        pts: i64,
        promo: i64,
    },
    Refund {
        m: u8,
        of: usize,
        cents: u32,
    },
    Auth {
        m: u8,
        cents: u32,
        pts: i64,
    },
    Settle {
        of: usize,
        cents: u32,
    },
    Reverse {
        of: usize,
    },
    Redeem {
        m: u8,
        pts: i64,
    },
    Adjust {
        m: u8,
        pts: i64,
    },
    Repeat {
        of: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 100u32..5000, 0i64..60, 0i64..20)
            .prop_map(|(m, cents, pts, promo)| Op::Purchase { m, cents, pts, promo }),
        2 => (0u8..3, any::<usize>(), 1u32..5000).prop_map(|(m, of, cents)| Op::Refund { m, of, cents }),
        1 => (0u8..3, 100u32..5000, 1i64..40).prop_map(|(m, cents, pts)| Op::Auth { m, cents, pts }),
        1 => (any::<usize>(), 1u32..6000).prop_map(|(of, cents)| Op::Settle { of, cents }),
        1 => any::<usize>().prop_map(|of| Op::Reverse { of }),
        1 => (0u8..3, 1i64..80).prop_map(|(m, pts)| Op::Redeem { m, pts }),
        1 => (0u8..3, -30i64..30).prop_map(|(m, pts)| Op::Adjust { m, pts }),
        1 => any::<usize>().prop_map(|of| Op::Repeat { of }),
    ]
}

#[derive(Debug, Clone)]
enum Req {
    Tx(Box<(Transaction, Outcome)>),
    Redeem(Redemption),
}

fn money(cents: u32) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Turns ops into concrete requests (ids unique to `s`).
fn requests(s: &Scope, ops: &[Op]) -> Vec<Req> {
    let t0 = year(2090);
    let budget = s.name("promo");
    let mut purchases: Vec<Transaction> = Vec::new();
    let mut auths: Vec<Transaction> = Vec::new();
    let mut out: Vec<Req> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let id = s.id(&format!("r{i}"));
        let t = days(t0, i as i64);
        let member = |m: &u8| s.member(&format!("m{m}"));
        let req = match op {
            Op::Purchase {
                m,
                cents,
                pts,
                promo,
            } => {
                let p = purchase(&id, &member(m), &money(*cents), t);
                let o = with_budget(
                    outcome(&p, &[("base", *pts), ("promo", *promo)]),
                    &budget,
                    1,
                    50,
                );
                purchases.push(p.clone());
                Req::Tx(Box::new((p, o)))
            }
            Op::Refund { m, of, cents } => {
                let Some(orig) = (!purchases.is_empty()).then(|| &purchases[of % purchases.len()])
                else {
                    continue;
                };
                let r = referring(TxKind::Refund, &id, &member(m), &money(*cents), t, &orig.id);
                let o = outcome(&r, &[]);
                Req::Tx(Box::new((r, o)))
            }
            Op::Auth { m, cents, pts } => {
                let a = tx(
                    TxKind::Authorization,
                    &id,
                    &member(m),
                    &money(*cents),
                    t,
                    None,
                );
                let o = outcome(&a, &[("base", *pts)]);
                auths.push(a.clone());
                Req::Tx(Box::new((a, o)))
            }
            Op::Settle { of, cents } => {
                let Some(a) = (!auths.is_empty()).then(|| &auths[of % auths.len()]) else {
                    continue;
                };
                let st = referring(TxKind::Settlement, &id, &a.member, &money(*cents), t, &a.id);
                let o = outcome(&st, &[]);
                purchases.push(st.clone());
                Req::Tx(Box::new((st, o)))
            }
            Op::Reverse { of } => {
                let Some(a) = (!auths.is_empty()).then(|| &auths[of % auths.len()]) else {
                    continue;
                };
                let rv = referring(
                    TxKind::Reversal,
                    &id,
                    &a.member,
                    &a.amount.amount.to_string(),
                    t,
                    &a.id,
                );
                let o = outcome(&rv, &[]);
                Req::Tx(Box::new((rv, o)))
            }
            Op::Redeem { m, pts } => Req::Redeem(Redemption {
                id,
                member: member(m),
                points: Points(*pts),
                time: t,
                reference: None,
            }),
            Op::Adjust { m, pts } => {
                let a = adjustment_tx(&id, &member(m), *pts, t);
                let o = outcome(&a, &[]);
                Req::Tx(Box::new((a, o)))
            }
            Op::Repeat { of } => {
                let Some(earlier) = (!out.is_empty()).then(|| out[of % out.len()].clone()) else {
                    continue;
                };
                earlier
            }
        };
        out.push(req);
    }
    out
}

/// What a request returned, comparable across stores.
fn summary(r: &Result<Receipt>) -> std::result::Result<Receipt, String> {
    match r {
        Ok(receipt) => Ok(receipt.clone()),
        Err(e) => Err(format!("{:?}", e.kind())),
    }
}

async fn run_single(
    store: &dyn LedgerStore,
    reqs: &[Req],
) -> Vec<std::result::Result<Receipt, String>> {
    let mut out = Vec::new();
    for req in reqs {
        let r = match req {
            Req::Tx(item) => store.append(&item.0, &item.1).await,
            Req::Redeem(r) => store.redeem(r).await,
        };
        out.push(summary(&r));
    }
    out
}

/// Consecutive transactions in batches of up to `size`; redemptions alone.
async fn run_batched(
    store: &dyn LedgerStore,
    reqs: &[Req],
    size: usize,
) -> Vec<std::result::Result<Receipt, String>> {
    let mut out = Vec::new();
    let mut pending: Vec<(Transaction, Outcome)> = Vec::new();
    for req in reqs {
        match req {
            Req::Tx(item) => {
                pending.push((**item).clone());
                if pending.len() == size {
                    for r in store.append_batch(&pending).await.expect("batch") {
                        out.push(summary(&r));
                    }
                    pending.clear();
                }
            }
            Req::Redeem(r) => {
                for r in store.append_batch(&pending).await.expect("batch") {
                    out.push(summary(&r));
                }
                pending.clear();
                out.push(summary(&store.redeem(r).await));
            }
        }
    }
    for r in store.append_batch(&pending).await.expect("batch") {
        out.push(summary(&r));
    }
    out
}

async fn same_members(a: &dyn LedgerStore, b: &dyn LedgerStore, members: &[MemberId]) {
    for m in members {
        match (a.balance(m).await, b.balance(m).await) {
            (Ok(x), Ok(y)) => assert_eq!(x, y, "{m}: balance"),
            (Err(x), Err(y)) => assert_eq!(x.kind(), y.kind(), "{m}"),
            (x, y) => panic!("{m}: {x:?} vs {y:?}"),
        }
        if a.balance(m).await.is_ok() {
            assert_eq!(
                a.history(m, 0, 1000).await.expect("history"),
                b.history(m, 0, 1000).await.expect("history"),
                "{m}: postings"
            );
            assert_eq!(
                a.audit(m, 0, 1000).await.expect("audit"),
                b.audit(m, 0, 1000).await.expect("audit"),
                "{m}: audit trail"
            );
            assert_eq!(
                a.recent(m, 5).await.expect("recent"),
                b.recent(m, 5).await.expect("recent"),
                "{m}: recent"
            );
        }
    }
}

/// Runs the property on two PostgreSQL stores (one unit per request, and
/// batched) against a fresh memory store per case. A plain test driving
/// proptest's runner, so that the schemas are dropped at the end.
#[test]
fn postgres_answers_like_memory() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (single, batched) = rt.block_on(async { (PgTest::new().await, PgTest::new().await) });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    let strategy = (proptest::collection::vec(op(), 1..40), 1usize..9);
    let result = runner.run(&strategy, |(ops, size)| {
        rt.block_on(async {
            let s = Scope::new("prop");
            let reqs = requests(&s, &ops);
            let memory = Arc::new(MemoryStore::new(LedgerConfig::default()));
            let expected = run_single(&*memory, &reqs).await;
            let one = run_single(&*single.store, &reqs).await;
            prop_assert_eq!(&one, &expected, "one unit per request");
            let many = run_batched(&*batched.store, &reqs, size).await;
            prop_assert_eq!(&many, &expected, "batched by {}", size);
            let members: Vec<MemberId> = (0..3).map(|m| s.member(&format!("m{m}"))).collect();
            same_members(&*memory, &*single.store, &members).await;
            same_members(&*memory, &*batched.store, &members).await;
            prop_assert!(single
                .store
                .reconcile()
                .await
                .expect("reconcile")
                .is_clean());
            prop_assert!(batched
                .store
                .reconcile()
                .await
                .expect("reconcile")
                .is_clean());
            Ok(())
        })
    });
    drop((single, batched));
    if let Err(e) = result {
        panic!("{e}");
    }
}
