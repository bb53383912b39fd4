//! Parser tests on the design document's example and on error recovery.

use rewards_dsl::ast::*;
use rewards_dsl::{parse, Code};

const DESIGN_EXAMPLE: &str = r#"
ruleset "acme-card" version 7
currency USD
timezone "America/New_York"
rounding floor                       # declared, never implicit

category dining    = mcc in [5812, 5813, 5814]
category groceries = mcc in [5411, 5422]

tier green    qualify spend(calendar year) >= 0 USD
tier gold     qualify spend(calendar year) >= 5000 USD   grace 90 days
tier platinum qualify spend(calendar year) >= 15000 USD

group category_bonus takes best

rule base "1 point per dollar" {
  when tx.kind == purchase
  earn floor(tx.amount) points
}

rule dining "3x at restaurants" priority 10 exclusive group category_bonus {
  when tx.mcc in dining
  earn 2 * floor(tx.amount) points              # on top of base
  cap 6000 points per member per calendar quarter
}

campaign winter_double from 2026-12-01 to 2026-12-31
         budget 5_000_000 points {
  when member.tier >= gold and weekday(tx.time) in [sat, sun]
  multiply earned by 2
}

test "gold member dines on a saturday" {
  member { tier: gold }
  tx { amount: 42.50 USD, mcc: 5812, time: 2026-12-05T12:00 }
  expect points == 252          # (42 + 84) * 2
}
"#;

#[test]
fn the_design_example_parses() {
    let (program, diags) = parse(DESIGN_EXAMPLE);
    assert!(diags.is_empty(), "{diags:#?}");
    assert_eq!(program.items.len(), 14);
    let rules: Vec<&RuleDecl> = program
        .items
        .iter()
        .filter_map(|i| match &i.kind {
            ItemKind::Rule(r) => Some(&**r),
            _ => None,
        })
        .collect();
    assert_eq!(rules.len(), 3);
    let dining = rules[1];
    assert_eq!(dining.id.name, "dining");
    assert_eq!(dining.priority.map(|p| p.value), Some(10));
    assert_eq!(
        dining.group.as_ref().map(|g| g.name.as_str()),
        Some("category_bonus")
    );
    assert_eq!(dining.caps().count(), 1);
    let campaign = rules[2];
    assert_eq!(campaign.kind, RuleKind::Campaign);
    assert_eq!(campaign.budget.map(|b| b.value), Some(5_000_000));
    let Some(when) = campaign.when() else {
        panic!("no when")
    };
    let ExprKind::Binary {
        op: BinaryOp::And,
        lhs,
        rhs,
    } = &when.kind
    else {
        panic!("{when:?}")
    };
    assert!(matches!(
        lhs.kind,
        ExprKind::Binary {
            op: BinaryOp::Ge,
            ..
        }
    ));
    assert!(matches!(
        rhs.kind,
        ExprKind::Binary {
            op: BinaryOp::In,
            ..
        }
    ));
    // Spans point into the source.
    assert_eq!(
        &DESIGN_EXAMPLE[when.span.start..when.span.end],
        "member.tier >= gold and weekday(tx.time) in [sat, sun]"
    );
}

#[test]
fn precedence_and_associativity() {
    let src = "rule r { earn 1 + 2 * 3 - -4 points when not a == b or c and d }";
    let (program, diags) = parse(src);
    assert!(diags.is_empty(), "{diags:#?}");
    let ItemKind::Rule(rule) = &program.items[0].kind else {
        panic!()
    };
    let Some(Stmt {
        kind: StmtKind::Earn(earn),
        ..
    }) = rule.action()
    else {
        panic!()
    };
    // (1 + (2 * 3)) - (-4)
    let ExprKind::Binary {
        op: BinaryOp::Sub,
        lhs,
        rhs,
    } = &earn.kind
    else {
        panic!("{earn:?}")
    };
    assert!(matches!(
        lhs.kind,
        ExprKind::Binary {
            op: BinaryOp::Add,
            ..
        }
    ));
    assert!(matches!(
        rhs.kind,
        ExprKind::Unary {
            op: UnaryOp::Neg,
            ..
        }
    ));
    // (not (a == b)) or (c and d)
    let when = rule.when().unwrap();
    let ExprKind::Binary {
        op: BinaryOp::Or,
        lhs,
        rhs,
    } = &when.kind
    else {
        panic!("{when:?}")
    };
    assert!(matches!(
        lhs.kind,
        ExprKind::Unary {
            op: UnaryOp::Not,
            ..
        }
    ));
    assert!(matches!(
        rhs.kind,
        ExprKind::Binary {
            op: BinaryOp::And,
            ..
        }
    ));
}

#[test]
fn one_bad_item_does_not_hide_the_next() {
    let src = "rule a {\n  earn 1 + points\n}\nrule b {\n  when tx.amount >\n}\ntier gold\n";
    let (program, diags) = parse(src);
    assert_eq!(diags.len(), 2, "{diags:#?}");
    assert!(diags.iter().all(|d| d.code == Code::Syntax));
    assert_eq!(program.items.len(), 1);
}

#[test]
fn deep_nesting_is_a_diagnostic_not_a_crash() {
    let src = format!(
        "rule a {{ earn {}1{} points }}",
        "(".repeat(100_000),
        ")".repeat(100_000)
    );
    let (_, diags) = parse(&src);
    assert_eq!(diags[0].code, Code::NestingTooDeep);
    let src = format!("rule a {{ earn {}1 points }}", "- ".repeat(10_000));
    let (_, diags) = parse(&src);
    assert_eq!(diags[0].code, Code::ExpressionTooComplex);
    let src = format!("rule a {{ earn 1{} points }}", " + 1".repeat(200));
    let (_, diags) = parse(&src);
    assert_eq!(diags[0].code, Code::ExpressionTooComplex);
}

#[test]
fn syntax_errors_say_what_was_expected() {
    let src = "rule a {\n  earn 1 + points\n}\nrule b {\n  when tx.amount >\n}\ntier gold\n";
    let (_, diags) = parse(src);
    let text: Vec<String> = diags
        .iter()
        .map(|d| rewards_dsl::diag::render(d, "t.rwd", src, rewards_dsl::diag::Style::Plain))
        .collect();
    let text = text.join("\n");
    assert!(text.contains("t.rwd:2:12"), "{text}");
    assert!(text.contains("expected an expression"), "{text}");
}

#[test]
fn a_huge_source_is_rejected_whole() {
    let src = "# padding\n".repeat(rewards_dsl::limits::MAX_SOURCE_BYTES / 10 + 1);
    let (program, diags) = parse(&src);
    assert!(program.items.is_empty());
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, Code::SourceTooLarge);
    // The checker is skipped: no "missing declaration" noise.
    let all = rewards_dsl::check::diagnose(&src);
    assert_eq!(all.len(), 1, "{all:#?}");
}

#[test]
fn long_lists_and_many_items_hit_limits() {
    let list: Vec<String> = (0..=rewards_dsl::limits::MAX_LIST_LEN)
        .map(|i| (i % 9999).to_string())
        .collect();
    let src = format!("category big = mcc in [{}]", list.join(", "));
    let (_, diags) = parse(&src);
    assert_eq!(diags[0].code, Code::TooMany, "{diags:#?}");
    let src = "group g takes best\n".repeat(rewards_dsl::limits::MAX_ITEMS + 1);
    let (program, diags) = parse(&src);
    assert_eq!(program.items.len(), rewards_dsl::limits::MAX_ITEMS);
    assert_eq!(diags[0].code, Code::TooMany);
}

#[test]
fn spans_exclude_trailing_comments() {
    let src = "tier gold   # the top\n\ntier silver\n";
    let (program, diags) = parse(src);
    assert!(diags.is_empty());
    assert_eq!(
        &src[program.items[0].span.start..program.items[0].span.end],
        "tier gold"
    );
}
