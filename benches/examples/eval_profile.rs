//! Evaluates the 24-rule reference program (`benches/rules/reference.rwd`)
//! over the transactions and member views of `benches/benches/eval.rs`
//! (`rewards_benches::eval_inputs`) in a loop, for profiling the evaluator
//! with `perf` or `valgrind --tool=callgrind` (instruction counts do not
//! depend on the machine's load):
//!
//! ```sh
//! cargo run --release -p rewards-benches --example eval_profile -- 200000 [explain]
//! ```

use rewards_benches::eval_inputs::{transactions, views, REFERENCE};
use rewards_core::Outcome;
use rewards_dsl::{HostFunctions, Plan};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let explain = args.next().is_some_and(|a| a == "explain");
    let plan = match Plan::compile(REFERENCE, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("reference.rwd does not compile: {:?}", d.first());
            std::process::exit(1);
        }
    };
    let txs = transactions(1024);
    let views = views(&txs, &plan);
    let Some(first) = txs.first() else { return };
    let mut out = Outcome::empty(
        first.id.clone(),
        first.member.clone(),
        first.kind,
        plan.stamp().clone(),
    );
    let mut points = 0i64;
    let start = Instant::now();
    for i in 0..n {
        let k = i % txs.len();
        let (Some(tx), Some(view)) = (txs.get(k), views.get(k)) else {
            continue;
        };
        let r = if explain {
            plan.explain_into(tx, view, &mut out)
        } else {
            plan.evaluate_into(tx, view, &mut out)
        };
        if r.is_ok() {
            points += out.components.iter().map(|c| c.points.get()).sum::<i64>();
        }
        black_box(&out);
    }
    let took = start.elapsed();
    println!(
        "{n} evaluations (explain {explain}): {:?}, {} ns/tx, {points} points",
        took,
        took.as_nanos() / n.max(1) as u128
    );
}
