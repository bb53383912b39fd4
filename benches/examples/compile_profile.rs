//! Compiles a generated program of N rules K times and prints the time of
//! each phase (parse + check, compile + hash), for profiling the front end
//! with `perf` or `valgrind --tool=callgrind`:
//!
//! ```sh
//! cargo run --release -p rewards-benches --example compile_profile -- 1000 5
//! ```
//!
//! The program is the benchmark's (`rewards_benches::eval_inputs::generated_program`).

use rewards_benches::eval_inputs::generated_program;
use rewards_dsl::{check_source, compile, HostFunctions};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let rules: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let times: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let source = generated_program(rules);
    let host = HostFunctions::new();
    for _ in 0..times {
        let start = Instant::now();
        let checked = match check_source(&source) {
            Ok(c) => c,
            Err(d) => {
                eprintln!("does not check: {:?}", d.first().map(|x| &x.message));
                std::process::exit(1);
            }
        };
        let front = start.elapsed();
        let plan = match compile(&checked, &source, &host) {
            Ok(p) => p,
            Err(d) => {
                eprintln!("does not compile: {:?}", d.first().map(|x| &x.message));
                std::process::exit(1);
            }
        };
        let total = start.elapsed();
        println!(
            "{rules} rules, {} bytes: parse+check {:?}, compile+hash {:?}, total {:?} ({} nodes)",
            source.len(),
            front,
            total.saturating_sub(front),
            total,
            plan.node_count()
        );
    }
}
