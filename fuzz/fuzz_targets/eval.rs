//! The example rulesets, compiled once, evaluated (and explained) on every
//! transaction the decoder accepts from arbitrary bytes, with member views
//! whose counters, tier and balance also come from the input: evaluation
//! never panics and always terminates; refusals are `EvalError`s.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rewards_core::{MemberView, Points, Transaction};
use rewards_dsl::compile::compile_source_with;
use rewards_dsl::{CompileOptions, HostFunctions, Plan};
use rust_decimal::Decimal;

const EXAMPLES: [&str; 3] = [
    include_str!("../../examples/rules/airline.rwd"),
    include_str!("../../examples/rules/cashback.rwd"),
    include_str!("../../examples/rules/coffee.rwd"),
];

fn plans() -> &'static [Plan] {
    static PLANS: OnceLock<Vec<Plan>> = OnceLock::new();
    PLANS.get_or_init(|| {
        let options = CompileOptions {
            stub_missing_host_functions: true,
        };
        EXAMPLES
            .iter()
            .map(|source| match compile_source_with(source, &HostFunctions::new(), options) {
                Ok(plan) => plan,
                Err(diags) => panic!("an example does not compile: {diags:?}"),
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte shapes the member, the rest is the message.
    let Some((&shape, message)) = data.split_first() else {
        return;
    };
    let Ok(tx) = Transaction::from_json_bytes(message) else {
        return;
    };
    for plan in plans() {
        let mut view = MemberView::default();
        let mut keys = Vec::new();
        plan.counter_keys(&tx, &mut keys);
        let level = match shape % 4 {
            0 => Decimal::ZERO,
            1 => Decimal::ONE,
            2 => Decimal::new(999_999_999, 2),
            _ => Decimal::MAX,
        };
        for key in keys {
            view.counters.insert(key, level);
        }
        let tiers = plan.tier_names();
        if !tiers.is_empty() && shape & 0x10 != 0 {
            view.tier = Some(tiers[usize::from(shape >> 5) % tiers.len()].clone());
        }
        view.balance = Points(if shape & 0x08 != 0 { i64::MAX } else { 0 });
        let evaluated = plan.evaluate(&tx, &view);
        let explained = plan.explain(&tx, &view);
        // Explaining changes the trace, never the verdict.
        assert_eq!(
            evaluated.is_ok(),
            explained.is_ok(),
            "evaluate and explain disagree: {evaluated:?} / {explained:?}"
        );
    }
});
