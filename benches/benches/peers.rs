//! `.rwd` against the engines a user would pick instead, in one criterion
//! run (`benches/peers/run.sh` runs it and prints the table of
//! `docs/performance.md`, "Against other engines"):
//!
//! Built with `--features peers` (`peers-script` leaves zen-engine out).
//!
//! - `peers_tx/*`: one transaction of the 24-rule reference program
//!   (`benches/rules/reference.rwd`) per iteration, cycling over the same
//!   1,024 generated transactions, for `.rwd` (explain off and on), the
//!   same rules hand-written in Rust, rhai, zen-engine and CEL (the peers'
//!   time includes building their flat inputs, `facts`, timed alone too);
//! - `peers_batch/*`: the 1,024 transactions per iteration (throughput);
//! - `peers_compile/N` and `peers_eval_rules/N`: compiling a generated
//!   program of N rules and evaluating a transaction with it; the bytes the
//!   compiled plan keeps (counted by this binary's global allocator) are
//!   written to `$PEERS_MEMORY_OUT` (default `peers-memory.json`).
//!
//! Every implementation is checked against `.rwd` on these inputs before
//! anything is timed (and in `tests/peers_equal.rs` on 10,000).

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use rewards_benches::peers::cel::CelPeer;
use rewards_benches::peers::facts::{Facts, FactsBuilder};
use rewards_benches::peers::generated::{cases, program};
use rewards_benches::peers::native::Native;
use rewards_benches::peers::rhai::RhaiPeer;
#[cfg(feature = "peers-zen")]
use rewards_benches::peers::zen::ZenPeer;
use rewards_benches::peers::{awards_of, show, Awards, Case, REFERENCE_RWD};
use rewards_core::{MemberView, Outcome};
use rewards_dsl::{HostFunctions, Plan};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::hint::black_box;

/// A peer: evaluates the facts of one transaction into awards.
type Peer<'a> = Box<dyn Fn(&Facts, &mut Awards) -> Result<(), String> + 'a>;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Rule counts of the generated programs (`.rwd` accepts at most
/// `rewards_dsl::limits::MAX_RULES`, 10,000; larger counts are reported
/// refused).
const RULE_COUNTS: [usize; 4] = [10, 100, 1_000, 10_000];

fn compile(source: &str) -> Result<Plan, String> {
    Plan::compile(source, &HostFunctions::new())
        .map_err(|d| format!("{:?}", d.first().map(|x| x.message.clone())))
}

fn empty_outcome(plan: &Plan, case: &Case) -> Outcome {
    Outcome::empty(
        case.0.id.clone(),
        case.0.member.clone(),
        case.0.kind,
        plan.stamp().clone(),
    )
}

/// Checks every implementation against `.rwd` on the benchmark's inputs.
fn check_equal(plan: &Plan, cases: &[Case], peers: &[(&str, Peer<'_>)]) {
    let native = Native::new();
    let builder = FactsBuilder::new();
    let mut facts = Facts::default();
    let (mut want, mut got) = (Awards::new(), Awards::new());
    for (tx, view) in cases {
        let outcome = match plan.evaluate(tx, view) {
            Ok(o) => o,
            Err(e) => panic!("rwd failed on {}: {e}", tx.id),
        };
        awards_of(&outcome, &mut want);
        builder.build(tx, view, &mut facts);
        let native_run = native
            .evaluate(tx, view, &mut got)
            .map_err(|e| format!("{e:?}"));
        let mut runs = vec![("native", native_run, got.clone())];
        for (name, run) in peers {
            let r = run(&facts, &mut got);
            runs.push((name, r, got.clone()));
        }
        for (name, r, got) in runs {
            if let Err(e) = r {
                panic!("{name} failed on {}: {e}", tx.id);
            }
            if want != got {
                panic!(
                    "{name} differs from rwd on {}: rwd {} / {name} {}",
                    tx.id,
                    show(&want),
                    show(&got)
                );
            }
        }
    }
}

fn per_transaction(c: &mut Criterion) {
    let plan = match compile(REFERENCE_RWD) {
        Ok(p) => p,
        Err(e) => panic!("reference.rwd does not compile: {e}"),
    };
    let (rhai, cel) = match (RhaiPeer::new(), CelPeer::new()) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(e), _) | (_, Err(e)) => panic!("a peer program does not load: {e}"),
    };
    #[cfg(feature = "peers-zen")]
    let zen = match ZenPeer::new() {
        Ok(z) => z,
        Err(e) => panic!("the zen decision does not load: {e}"),
    };
    let mut peers: Vec<(&str, Peer<'_>)> = vec![
        ("rhai", Box::new(|f, o| rhai.evaluate(f, o))),
        ("cel", Box::new(|f, o| cel.evaluate(f, o))),
    ];
    #[cfg(feature = "peers-zen")]
    peers.push(("zen", Box::new(|f, o| zen.evaluate(f, o))));
    let cases = cases(1024);
    check_equal(&plan, &cases, &peers);
    let native = Native::new();
    let builder = FactsBuilder::new();
    let n = cases.len();

    let mut g = c.benchmark_group("peers_tx");
    g.throughput(Throughput::Elements(1));
    for (name, explain) in [("rwd", false), ("rwd_explain", true)] {
        let mut out = empty_outcome(&plan, &cases[0]);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                let (tx, view) = &cases[i % n];
                i = i.wrapping_add(1);
                let r = if explain {
                    plan.explain_into(tx, view, &mut out)
                } else {
                    plan.evaluate_into(tx, view, &mut out)
                };
                black_box((r.is_ok(), out.components.len()));
            })
        });
    }
    let mut awards = Awards::new();
    let mut i = 0usize;
    g.bench_function("native", |b| {
        b.iter(|| {
            let (tx, view) = &cases[i % n];
            i = i.wrapping_add(1);
            black_box(native.evaluate(tx, view, &mut awards).is_ok());
            black_box(awards.len());
        })
    });
    let mut facts = Facts::default();
    g.bench_function("facts", |b| {
        b.iter(|| {
            let (tx, view) = &cases[i % n];
            i = i.wrapping_add(1);
            builder.build(tx, view, &mut facts);
            black_box(facts.used[0]);
        })
    });
    for (name, run) in &peers {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let (tx, view) = &cases[i % n];
                i = i.wrapping_add(1);
                builder.build(tx, view, &mut facts);
                black_box(run(&facts, &mut awards).is_ok());
                black_box(awards.len());
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("peers_batch");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    let mut out = empty_outcome(&plan, &cases[0]);
    g.bench_function("rwd", |b| {
        b.iter(|| {
            let mut points = 0usize;
            for (tx, view) in &cases {
                if plan.evaluate_into(tx, view, &mut out).is_ok() {
                    points += out.components.len();
                }
            }
            black_box(points)
        })
    });
    g.bench_function("native", |b| {
        b.iter(|| {
            let mut points = 0usize;
            for (tx, view) in &cases {
                if native.evaluate(tx, view, &mut awards).is_ok() {
                    points += awards.len();
                }
            }
            black_box(points)
        })
    });
    for (name, run) in &peers {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut points = 0usize;
                for (tx, view) in &cases {
                    builder.build(tx, view, &mut facts);
                    if run(&facts, &mut awards).is_ok() {
                        points += awards.len();
                    }
                }
                black_box(points)
            })
        });
    }
    g.finish();
}

/// Net bytes the value built by `f` keeps allocated (allocated minus freed
/// while building, the value still alive). `stats_alloc` already counts a
/// reallocation's growth in `bytes_allocated` (and its shrinking in
/// `bytes_deallocated`); adding `bytes_reallocated` again would count the
/// growth of every temporary buffer as kept.
fn retained<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let region = Region::new(GLOBAL);
    let value = f();
    let s = region.change();
    let net = s.bytes_allocated as isize - s.bytes_deallocated as isize;
    (value, net)
}

fn scaling(c: &mut Criterion) {
    let cases = cases(256);
    let mut memory = Vec::new();
    let mut g = c.benchmark_group("peers_compile");
    g.sample_size(10);
    for rules in RULE_COUNTS {
        let source = program(rules);
        // A first compile initialises what is built once per process (time
        // zone data, ...), so that the plan alone is counted.
        drop(compile(&source));
        let (plan, bytes) = retained(|| compile(&source));
        match plan {
            Ok(plan) => {
                memory.push(format!(
                    "{{\"rules\": {rules}, \"plan_bytes\": {bytes}, \"nodes\": {}, \"source_bytes\": {}}}",
                    plan.node_count(),
                    source.len()
                ));
                g.bench_function(rules.to_string(), |b| {
                    b.iter_batched(
                        || source.clone(),
                        |s| black_box(compile(&s).is_ok()),
                        BatchSize::SmallInput,
                    )
                });
            }
            Err(e) => {
                eprintln!("peers_compile/{rules}: refused: {e}");
                memory.push(format!(
                    "{{\"rules\": {rules}, \"refused\": {:?}}}",
                    e.replace('"', "'")
                ));
            }
        }
    }
    g.finish();
    let out = std::env::var("PEERS_MEMORY_OUT").unwrap_or_else(|_| "peers-memory.json".into());
    if let Err(e) = std::fs::write(&out, format!("[\n  {}\n]\n", memory.join(",\n  "))) {
        eprintln!("cannot write {out}: {e}");
    }

    let mut g = c.benchmark_group("peers_eval_rules");
    g.throughput(Throughput::Elements(1));
    for rules in RULE_COUNTS {
        let Ok(plan) = compile(&program(rules)) else {
            continue;
        };
        // Members with no counters: every cap has room, every rule may match.
        let view = MemberView::default();
        let mut out = empty_outcome(&plan, &cases[0]);
        let mut i = 0usize;
        g.bench_function(rules.to_string(), |b| {
            b.iter(|| {
                let (tx, _) = &cases[i % cases.len()];
                i = i.wrapping_add(1);
                black_box(plan.evaluate_into(tx, &view, &mut out).is_ok());
                black_box(out.components.len());
            })
        });
    }
    g.finish();
}

/// The unit costs behind the evaluator findings of `docs/performance.md`:
/// a time-zone conversion, a calendar-month step in the zone (as lot terms
/// do), and one member-counter lookup (as caps and aggregates do).
fn parts(c: &mut Criterion) {
    use chrono::{Datelike, Months, TimeZone, Timelike};
    use rewards_core::{CounterKey, Window};
    use std::sync::Arc;
    let cases = cases(256);
    let tz = chrono_tz::America::New_York;
    let n = cases.len();
    let mut g = c.benchmark_group("peers_parts");
    let mut i = 0usize;
    g.bench_function("local_time", |b| {
        b.iter(|| {
            let (tx, _) = &cases[i % n];
            i = i.wrapping_add(1);
            let local = tx.time.with_timezone(&tz);
            black_box((local.weekday(), local.hour()));
        })
    });
    g.bench_function("add_24_months_local", |b| {
        b.iter(|| {
            let (tx, _) = &cases[i % n];
            i = i.wrapping_add(1);
            let local = tx.time.with_timezone(&tz).naive_local();
            let later = local
                .checked_add_months(Months::new(24))
                .map(|t| tz.from_local_datetime(&t).earliest());
            black_box(later);
        })
    });
    let name: Arc<str> = Arc::from("cap.dining");
    g.bench_function("counter_lookup", |b| {
        b.iter(|| {
            let (tx, view) = &cases[i % n];
            i = i.wrapping_add(1);
            let day = tx.time.date_naive();
            black_box(view.counter(&CounterKey {
                name: name.clone(),
                window: Window::Quarter.key_for(day),
            }));
        })
    });
    g.finish();
}

/// The benchmark group (`criterion_group!` makes an undocumented `pub fn`).
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::per_transaction,
        super::scaling,
        super::parts
    );
}
criterion_main!(group::benches);
