//! The peers give the same points as `.rwd` (`cargo test -p rewards-benches
//! --features peers`; `peers-script` leaves zen-engine out): rhai,
//! zen-engine and CEL + Rust, each on the same
//! 10,000 generated transactions, component by component — checked before
//! any timing of `benches/benches/peers.rs` is trusted.

use rewards_benches::peers::cel::CelPeer;
use rewards_benches::peers::facts::Facts;
use rewards_benches::peers::generated::cases;
use rewards_benches::peers::rhai::RhaiPeer;
use rewards_benches::peers::{awards_of, show, Awards, REFERENCE_RWD};
use rewards_dsl::{HostFunctions, Plan};

const N: usize = 10_000;

fn check(name: &str, mut run: impl FnMut(&Facts, &mut Awards) -> Result<(), String>) {
    let plan = match Plan::compile(REFERENCE_RWD, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => panic!("reference.rwd does not compile: {d:?}"),
    };
    let builder = rewards_benches::peers::facts::FactsBuilder::new();
    let mut facts = Facts::default();
    let (mut want, mut got) = (Awards::new(), Awards::new());
    let mut mismatches = Vec::new();
    for (tx, view) in &cases(N) {
        let outcome = plan.evaluate(tx, view).expect("the plan evaluates");
        awards_of(&outcome, &mut want);
        builder.build(tx, view, &mut facts);
        if let Err(e) = run(&facts, &mut got) {
            panic!("{name} failed on {}: {e}", tx.id);
        }
        if want != got && mismatches.len() < 5 {
            mismatches.push(format!(
                "{} ({:?} {} mcc {:?} at {}, tier {:?}):\n  rwd  {}\n  {name} {}",
                tx.id,
                tx.kind,
                tx.amount.amount,
                tx.mcc,
                tx.time,
                view.tier,
                show(&want),
                show(&got)
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn rhai_gives_the_same_points() {
    let peer = RhaiPeer::new().expect("the script compiles");
    check("rhai", |f, out| peer.evaluate(f, out));
}

#[cfg(feature = "peers-zen")]
#[test]
fn zen_engine_gives_the_same_points() {
    let peer = rewards_benches::peers::zen::ZenPeer::new().expect("the decision loads");
    check("zen", |f, out| peer.evaluate(f, out));
}

#[test]
fn cel_gives_the_same_points() {
    let peer = CelPeer::new().expect("the conditions compile");
    check("cel", |f, out| peer.evaluate(f, out));
}
