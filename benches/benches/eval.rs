//! Rule evaluation: one transaction through the 24-rule reference program
//! (`benches/rules/reference.rwd`), explain off and on, over a set of
//! generated transactions; and compiling a generated program of 1,000 rules
//! and one with the most rules the language allows (10,000).

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use rewards_benches::eval_inputs::{generated_program, transactions, views, REFERENCE};
use rewards_core::Outcome;
use rewards_dsl::{HostFunctions, Plan};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let plan = match Plan::compile(REFERENCE, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => panic!("reference.rwd does not compile: {d:?}"),
    };
    let txs = transactions(1024);
    let views = views(&txs, &plan);
    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(1));
    for (name, explain) in [
        ("reference_24_rules", false),
        ("reference_24_rules_explain", true),
    ] {
        let mut out = Outcome::empty(
            txs[0].id.clone(),
            txs[0].member.clone(),
            txs[0].kind,
            plan.stamp().clone(),
        );
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let k = i % txs.len();
                i = i.wrapping_add(1);
                let r = if explain {
                    plan.explain_into(&txs[k], &views[k], &mut out)
                } else {
                    plan.evaluate_into(&txs[k], &views[k], &mut out)
                };
                black_box(r.is_ok());
                black_box(out.components.len());
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for rules in [1_000, rewards_dsl::limits::MAX_RULES] {
        let source = generated_program(rules);
        if let Err(d) = Plan::compile(&source, &HostFunctions::new()) {
            panic!("generated program does not compile: {:?}", d.first());
        }
        g.bench_function(format!("generated_{rules}_rules"), |b| {
            b.iter_batched(
                || source.clone(),
                |s| black_box(Plan::compile(&s, &HostFunctions::new()).is_ok()),
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("reference_24_rules", |b| {
        b.iter(|| black_box(Plan::compile(REFERENCE, &HostFunctions::new()).is_ok()))
    });
    g.finish();
}

/// The benchmark group (`criterion_group!` makes an undocumented `pub fn`).
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
