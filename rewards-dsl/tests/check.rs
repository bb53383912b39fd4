//! The checker's output contract: symbols, types and resolutions.

use rewards_dsl::ast::*;
use rewards_dsl::check::{measure_key, window_key, Builtin, Resolved, TxField};
use rewards_dsl::types::Type;
use rewards_dsl::{check_source, Code};

const PROGRAM: &str = r#"
ruleset "contract" version 3
currency EUR
timezone "Europe/Paris"
rounding half_up
week starts sunday
points pending 3 days
attribute tx.segment: string
category dining = mcc in [5812, 3000..3002]
aggregate spend_year = spend where tx.mcc in dining per calendar year
tier bronze
tier silver qualify spend_year >= 100 EUR
group g takes first
rule base priority 2 exclusive group g {
  when tx.mcc in dining and member.tier >= silver and tx.attributes.segment == "x"
  earn floor(tx.amount) * 2 points
}
rule boost {
  when count(week) > 3
  multiply base by 1.5
}
"#;

fn rule<'a>(program: &'a Program, id: &str) -> &'a RuleDecl {
    program
        .items
        .iter()
        .find_map(|i| match &i.kind {
            ItemKind::Rule(r) if r.id.name == id => Some(&**r),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no rule {id}"))
}

#[test]
fn symbols_are_resolved() {
    let checked = check_source(PROGRAM).unwrap_or_else(|d| panic!("{d:#?}"));
    let s = &checked.analysis.symbols;
    assert_eq!((s.name.as_str(), s.version), ("contract", 3));
    assert_eq!(s.currency.code(), "EUR");
    assert_eq!(s.timezone, chrono_tz::Europe::Paris);
    assert_eq!(s.rounding, RoundingMode::HalfUp);
    assert_eq!(s.week_start, chrono::Weekday::Sun);
    assert_eq!(
        s.pending.map(|d| (d.count, d.unit)),
        Some((3, DurationUnit::Days))
    );
    assert_eq!(s.tiers, vec!["bronze", "silver"]);
    assert_eq!(s.tier_rank("silver"), Some(1));
    assert!(s.categories["dining"].contains(3001));
    assert!(!s.categories["dining"].contains(3003));
    assert_eq!(s.aggregates["spend_year"].window, WindowKind::Year);
    assert_eq!(s.groups["g"], Resolution::First);
    assert!(s.rules["base"].earns);
    assert!(!s.rules["boost"].earns);
    assert!(s
        .window_aggregates
        .contains(&(measure_key(Measure::Count), window_key(WindowKind::Week))));
    assert!(checked.warnings.is_empty());
}

#[test]
fn every_expression_is_typed_and_names_resolve() {
    let checked = check_source(PROGRAM).unwrap_or_else(|d| panic!("{d:#?}"));
    let a = &checked.analysis;
    let base = rule(&checked.program, "base");
    let when = base.when().unwrap();
    assert_eq!(a.type_of(when), &Type::Bool);
    let Some(Stmt {
        kind: StmtKind::Earn(earn),
        ..
    }) = base.action()
    else {
        panic!()
    };
    assert_eq!(a.type_of(earn), &Type::Money);
    let ExprKind::Binary { lhs, .. } = &earn.kind else {
        panic!()
    };
    assert_eq!(a.resolution(lhs), Some(&Resolved::Builtin(Builtin::Floor)));
    let ExprKind::Call { args, .. } = &lhs.kind else {
        panic!()
    };
    assert_eq!(
        a.resolution(&args[0]),
        Some(&Resolved::TxField(TxField::Amount))
    );
    // member.tier >= silver: silver is tier rank 1.
    let ExprKind::Binary { lhs: and_lhs, .. } = &when.kind else {
        panic!()
    };
    let ExprKind::Binary { rhs: tier_cmp, .. } = &and_lhs.kind else {
        panic!()
    };
    let ExprKind::Binary { rhs: silver, .. } = &tier_cmp.kind else {
        panic!()
    };
    assert_eq!(a.resolution(silver), Some(&Resolved::Tier(1)));
    // No expression of a checked program is left untyped.
    fn walk(e: &Expr, a: &rewards_dsl::check::Analysis) {
        assert_ne!(a.type_of(e), &Type::Error, "{e:?}");
        match &e.kind {
            ExprKind::Binary { lhs, rhs, .. } => {
                walk(lhs, a);
                walk(rhs, a);
            }
            ExprKind::Unary { operand, .. } | ExprKind::Paren(operand) => walk(operand, a),
            ExprKind::Call { args, .. } => args.iter().for_each(|x| walk(x, a)),
            _ => {}
        }
    }
    walk(when, a);
    walk(earn, a);
}

#[test]
fn all_errors_are_reported_at_once() {
    let src = PROGRAM
        .replace("floor(tx.amount) * 2", "tx.amount + member.balance")
        .replace("count(week) > 3", "count(week)")
        .replace("tx.attributes.segment", "tx.attributes.sgment")
        .replace("multiply base", "multiply bas");
    let diags = check_source(&src).unwrap_err();
    let codes: Vec<Code> = diags.iter().map(|d| d.code).collect();
    for want in [
        Code::OperatorTypes,
        Code::NotBool,
        Code::UndeclaredAttribute,
        Code::UnknownTarget,
    ] {
        assert!(codes.contains(&want), "{want} missing from {codes:?}");
    }
}

/// A program of `n` small rules.
fn many_rules(n: usize) -> String {
    let mut s = String::from(
        "ruleset \"many\" version 1\ncurrency USD\ntimezone \"UTC\"\nrounding floor\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "rule r{i} {{\n  when tx.mcc in [{}]\n  earn floor(tx.amount) points\n}}\n",
            1000 + i % 8000
        ));
    }
    s
}

#[test]
fn the_rule_limit_is_accepted_and_one_more_is_refused() {
    use rewards_dsl::limits::MAX_RULES;
    let at_limit = many_rules(MAX_RULES);
    let plan = rewards_dsl::Plan::compile(&at_limit, &rewards_dsl::HostFunctions::new())
        .unwrap_or_else(|d| panic!("{MAX_RULES} rules refused: {:?}", d.first()));
    assert_eq!(plan.rule_ids().count(), MAX_RULES);
    let over = many_rules(MAX_RULES + 1);
    let Err(diags) = check_source(&over) else {
        panic!("one rule too many is accepted");
    };
    let too_many: Vec<_> = diags.iter().filter(|d| d.code == Code::TooMany).collect();
    assert_eq!(too_many.len(), 1, "{diags:?}");
    assert!(
        too_many[0]
            .message
            .contains(&format!("more than {MAX_RULES} rules")),
        "{}",
        too_many[0].message
    );
}
