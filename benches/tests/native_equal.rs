//! Always on (no peer engine needed): the `.rwd` plan of the reference
//! program and the same rules hand-written in Rust give identical points,
//! component by component, on 10,000 generated transactions — checked
//! before any timing of `benches/benches/peers.rs` is trusted.

use rewards_benches::peers::generated::cases;
use rewards_benches::peers::native::Native;
use rewards_benches::peers::{awards_of, show, Awards, REFERENCE_RWD, RULES};
use rewards_dsl::{HostFunctions, Plan};

#[test]
fn rwd_and_hand_written_rust_give_the_same_points() {
    let plan = match Plan::compile(REFERENCE_RWD, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => panic!("reference.rwd does not compile: {d:?}"),
    };
    let mut ids: Vec<&str> = plan.rule_ids().collect();
    let mut known = RULES.to_vec();
    ids.sort_unstable();
    known.sort_unstable();
    assert_eq!(ids, known, "the peers report the plan's rules");
    let native = Native::new();
    let cases = cases(10_000);
    assert_eq!(cases.len(), 10_000);
    let (mut want, mut got) = (Awards::new(), Awards::new());
    let mut awarded = [0usize; RULES.len()];
    let mut mismatches = Vec::new();
    for (tx, view) in &cases {
        let outcome = plan.evaluate(tx, view).expect("the plan evaluates");
        awards_of(&outcome, &mut want);
        native
            .evaluate(tx, view, &mut got)
            .expect("native evaluates");
        for a in &want {
            awarded[usize::from(a.rule)] += 1;
        }
        if want != got && mismatches.len() < 5 {
            mismatches.push(format!(
                "{} ({:?} {} mcc {:?} at {}, tier {:?}):\n  rwd    {}\n  native {}",
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
    // The generated set exercises every rule of the program.
    for (rule, n) in RULES.iter().zip(awarded) {
        assert!(n > 0, "no generated transaction earns {rule}");
    }
}
