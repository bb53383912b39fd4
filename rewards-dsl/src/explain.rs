//! Explain: why a rule matched or not, with the values that decided it,
//! and a human-readable rendering of an [`Outcome`] with its trace.
//!
//! The evaluator (with explain on) visits every rule and asks this module
//! for the first condition that failed: it descends `and` to the first
//! conjunct that does not hold, reports both sides of a failed `or`, and
//! prints comparisons with their operands' values, e.g.
//! `tx.mcc in dining: 5411 not in [5812..5814]`, or names the absent field
//! that made a condition unknown.

use std::fmt::Write as _;

use rewards_core::Outcome;

use crate::eval::Cx;
use crate::plan::{ConstSet, ListItem, Node, NodeId, Plan};
use crate::value::Val;

/// Why a condition (a node that did not evaluate to `true`) does not hold.
pub(crate) fn why_not(plan: &Plan, node: NodeId, cx: &Cx<'_>) -> String {
    let value = match plan.eval(node, cx) {
        Ok(v) => v,
        Err(e) => return format!("{}: {e}", plan.text(node)),
    };
    if value == Val::Absent {
        return format!(
            "{} is unknown: {}",
            plan.text(node),
            why_unknown(plan, node, cx)
        );
    }
    let text = plan.text(node);
    let eval = |n: NodeId| plan.eval(n, cx).unwrap_or(Val::Absent);
    match plan.nodes.get(node as usize) {
        Some(Node::And(a, b)) => {
            if eval(*a) != Val::Bool(true) {
                why_not(plan, *a, cx)
            } else {
                why_not(plan, *b, cx)
            }
        }
        Some(Node::Or(a, b)) => format!(
            "neither {} nor {}",
            why_not(plan, *a, cx),
            why_not(plan, *b, cx)
        ),
        Some(Node::Not(x)) => format!("{text}: {} holds", plan.text(*x)),
        Some(Node::Cmp(op, a, b)) => {
            let (va, vb) = (eval(*a), eval(*b));
            format!(
                "{text}: {} {} {}",
                plan.show(&va),
                op.negated().as_str(),
                plan.show(&vb)
            )
        }
        Some(Node::InSet { value, set, negate }) => {
            let v = eval(*value);
            let set = plan
                .sets
                .get(*set as usize)
                .map_or("[]".to_string(), show_set);
            let word = if *negate { "in" } else { "not in" };
            format!("{text}: {} {word} {set}", plan.show(&v))
        }
        Some(Node::InList {
            value,
            elems,
            negate,
        }) => {
            let v = eval(*value);
            let (start, len) = (elems.0 as usize, elems.1 as usize);
            let mut shown = Vec::new();
            for item in plan.list_elems.get(start..start + len).unwrap_or(&[]) {
                shown.push(match item {
                    ListItem::One(x) => plan.show(&eval(*x)),
                    ListItem::Range(a, b) => {
                        format!("{}..{}", plan.show(&eval(*a)), plan.show(&eval(*b)))
                    }
                });
            }
            let word = if *negate { "in" } else { "not in" };
            format!("{text}: {} {word} [{}]", plan.show(&v), shown.join(", "))
        }
        _ => format!("{text} is {}", plan.show(&value)),
    }
}

/// Which absent value made an expression unknown.
pub(crate) fn why_unknown(plan: &Plan, node: NodeId, cx: &Cx<'_>) -> String {
    match first_absent(plan, node, cx, 0) {
        Some(n) => format!("{} is absent", plan.text(n)),
        None => format!("{} has no value", plan.text(node)),
    }
}

fn first_absent(plan: &Plan, node: NodeId, cx: &Cx<'_>, depth: usize) -> Option<NodeId> {
    if depth > crate::limits::MAX_EXPR_DEPTH + 2 {
        return None;
    }
    let kids = children(plan, node);
    if kids.is_empty() {
        return (plan.eval(node, cx).ok()? == Val::Absent).then_some(node);
    }
    for k in kids {
        if let Some(n) = first_absent(plan, k, cx, depth + 1) {
            return Some(n);
        }
    }
    None
}

fn children(plan: &Plan, node: NodeId) -> Vec<NodeId> {
    let args = |(start, len): (u32, u32)| -> Vec<NodeId> {
        plan.args
            .get(start as usize..(start + len) as usize)
            .map(<[NodeId]>::to_vec)
            .unwrap_or_default()
    };
    match plan.nodes.get(node as usize) {
        Some(Node::Not(x) | Node::Neg(x)) => vec![*x],
        Some(Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) | Node::Arith(_, a, b)) => {
            vec![*a, *b]
        }
        Some(Node::InSet { value, .. }) => vec![*value],
        Some(Node::InList { value, elems, .. }) => {
            let mut v = vec![*value];
            let (start, len) = (elems.0 as usize, elems.1 as usize);
            for item in plan.list_elems.get(start..start + len).unwrap_or(&[]) {
                match item {
                    ListItem::One(x) => v.push(*x),
                    ListItem::Range(a, b) => v.extend([*a, *b]),
                }
            }
            v
        }
        Some(Node::Builtin(_, range) | Node::Extern(_, range)) => args(*range),
        _ => Vec::new(),
    }
}

fn show_set(set: &ConstSet) -> String {
    match set {
        ConstSet::Ints(ranges) => {
            let mut parts = Vec::new();
            for (lo, hi) in ranges {
                if hi - lo <= 2 {
                    for x in *lo..=*hi {
                        parts.push(x.to_string());
                    }
                } else {
                    parts.push(format!("{lo}..{hi}"));
                }
            }
            format!("[{}]", parts.join(", "))
        }
        ConstSet::Other(elems) => {
            let parts: Vec<String> = elems
                .iter()
                .map(|(a, b)| match b {
                    None => short(a),
                    Some(b) => format!("{}..{}", short(a), short(b)),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

fn short(v: &Val<'_>) -> String {
    match v {
        Val::Str(s) => format!("{s:?}"),
        Val::Kind(k) => k.as_str().to_string(),
        Val::Presence(p) => p.as_str().to_string(),
        Val::Weekday(w) => crate::value::weekday_name(*w).to_string(),
        Val::Int(i) => i.to_string(),
        Val::Dec(d) | Val::Money(d) | Val::Points(d) => d.normalize().to_string(),
        other => format!("{other:?}"),
    }
}

/// Renders an outcome for a human: the trace (when present), the
/// components with their arithmetic, counters, budget claims, tier change
/// and lot terms.
pub fn render(outcome: &Outcome) -> String {
    let mut s = String::new();
    let hash: String = outcome.ruleset.hash.chars().take(12).collect();
    let _ = writeln!(
        s,
        "{} {} of member {} — ruleset {} version {} ({hash}…)",
        outcome.kind, outcome.tx_id, outcome.member, outcome.ruleset.id, outcome.ruleset.version
    );
    if let Some(trace) = &outcome.explain {
        s.push_str("\nwhy:\n");
        for line in &trace.lines {
            let mark = if line.matched { "✓" } else { "✗" };
            let _ = writeln!(s, "  {mark} {}: {}", line.rule, line.detail);
        }
    }
    s.push_str("\ncomponents:\n");
    if outcome.components.is_empty() {
        s.push_str("  (none)\n");
    }
    let width = outcome
        .components
        .iter()
        .map(|c| c.rule.len())
        .max()
        .unwrap_or(0);
    for c in &outcome.components {
        let kind = match c.kind {
            rewards_core::ComponentKind::Earn => "earn",
            rewards_core::ComponentKind::Multiplier => "multiplier",
            rewards_core::ComponentKind::Campaign => "campaign",
        };
        let _ = writeln!(
            s,
            "  {:<width$}  {:>8}  ({kind}, exact {}) {}",
            c.rule,
            c.points.get(),
            c.exact.normalize(),
            c.label
        );
    }
    match outcome.total_points() {
        Ok(t) => {
            let _ = writeln!(s, "total: {t} points");
        }
        Err(e) => {
            let _ = writeln!(s, "total: {e}");
        }
    }
    if !outcome.counters.is_empty() {
        s.push_str("counters:\n");
        for c in &outcome.counters {
            let of = c
                .component
                .map_or(String::new(), |i| format!(" (component {i})"));
            let _ = writeln!(s, "  {} += {}{of}", c.key, c.delta.normalize());
        }
    }
    if !outcome.budgets.is_empty() {
        s.push_str("budget claims:\n");
        for b in &outcome.budgets {
            let _ = writeln!(
                s,
                "  {}: {} points proposed (limit {}; trimmed by the store to the room left)",
                b.budget, b.points, b.limit
            );
        }
    }
    if let Some(t) = &outcome.tier_change {
        let _ = writeln!(
            s,
            "tier: {} → {} from {}",
            t.from.as_deref().unwrap_or("no tier"),
            t.to,
            t.effective.to_rfc3339()
        );
    }
    if outcome.lot.available_at.is_some() || outcome.lot.expires_at.is_some() {
        let _ = writeln!(
            s,
            "lot: available {}, expires {}",
            outcome
                .lot
                .available_at
                .map_or("at once".to_string(), |t| format!("at {}", t.to_rfc3339())),
            outcome
                .lot
                .expires_at
                .map_or("never".to_string(), |t| format!("at {}", t.to_rfc3339())),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Rel;

    #[test]
    fn sets_show_short_ranges_as_codes() {
        assert_eq!(
            show_set(&ConstSet::Ints(vec![(5812, 5814), (3000, 3299)])),
            "[5812, 5813, 5814, 3000..3299]"
        );
    }

    #[test]
    fn negated_operators_read_naturally() {
        assert_eq!(Rel::Ge.negated().as_str(), "<");
        assert_eq!(Rel::Eq.negated().as_str(), "!=");
    }
}
