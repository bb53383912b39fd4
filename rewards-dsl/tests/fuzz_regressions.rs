//! Inputs found by fuzzing (`fuzz/`, target `eval`) that once panicked the
//! evaluator, kept as tests. Counters come from the store (a cache that may
//! be corrupt or tampered with): extreme values must give an `EvalError`,
//! never a panic.

use rewards_core::{MemberView, Transaction};
use rewards_dsl::compile::compile_source_with;
use rewards_dsl::{CompileOptions, EvalError, HostFunctions, Plan};
use rust_decimal::Decimal;

fn example_plans() -> Vec<(&'static str, Plan)> {
    let options = CompileOptions {
        stub_missing_host_functions: true,
    };
    [
        ("airline", include_str!("../../examples/rules/airline.rwd")),
        (
            "cashback",
            include_str!("../../examples/rules/cashback.rwd"),
        ),
        ("coffee", include_str!("../../examples/rules/coffee.rwd")),
    ]
    .into_iter()
    .map(|(name, source)| {
        let plan = compile_source_with(source, &HostFunctions::new(), options)
            .unwrap_or_else(|d| panic!("{name} does not compile: {d:?}"));
        (name, plan)
    })
    .collect()
}

/// The message of `fuzz/artifacts/eval/crash-ec85729b...` (without its
/// leading shape byte 0xa7, which set every counter to `Decimal::MAX`).
const CRASH_TX: &str = r#"{"amount":"20.47","channel":"wallet","country":"US","currency":"EUR","id":"bean-0000010","kind":"authorization","mcc":5411,"member":"bean-m-000009","merchant":"Fresh Market #1248","presence":"in_store","progr.m":"coffee","time":"2027-09-20T00:33:51.144Z"}"#;

/// Evaluates `tx` with every counter the plan reads set to `level`.
fn evaluate_with_counters(plan: &Plan, tx: &Transaction, level: Decimal) -> Result<(), EvalError> {
    let mut keys = Vec::new();
    plan.counter_keys(tx, &mut keys);
    let mut view = MemberView::default();
    for key in keys {
        view.counters.insert(key, level);
    }
    plan.evaluate(tx, &view)?;
    plan.explain(tx, &view)?;
    Ok(())
}

#[test]
fn counters_at_decimal_max_are_an_overflow_error_not_a_panic() {
    let tx = Transaction::from_json_str(CRASH_TX).expect("the crash input decodes");
    let mut overflows = 0;
    for (_, plan) in example_plans() {
        match evaluate_with_counters(&plan, &tx, Decimal::MAX) {
            Ok(()) => {}
            Err(e) if e.code() == "eval.overflow" => overflows += 1,
            // Other refusals (another currency, ...) are fine: no panic.
            Err(_) => {}
        }
    }
    // The aggregate sum of the crash overflows in at least one example.
    assert!(overflows >= 1, "no example read the overflowing counters");
}

#[test]
fn extreme_counters_on_every_kind_never_panic() {
    let plans = example_plans();
    for kind in ["purchase", "authorization", "refund", "settlement"] {
        let tx = Transaction::from_json_str(&format!(
            r#"{{"id":"t","member":"m","kind":"{kind}","amount":"20.00","currency":"USD","mcc":5812,"original_id":"o","time":"2026-12-05T12:00:00Z"}}"#
        ))
        .expect("decodes");
        for level in [Decimal::MAX, Decimal::MIN, Decimal::new(1, 28)] {
            for (name, plan) in &plans {
                // An error is a fine answer; reaching here means no panic.
                let verdict = evaluate_with_counters(plan, &tx, level);
                assert!(
                    verdict.is_ok() || !verdict.as_ref().is_err_and(|e| e.code().is_empty()),
                    "{name} {kind} {level}: an error without a code"
                );
            }
        }
    }
}
