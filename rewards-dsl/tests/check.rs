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

/// The codes and messages of `src`'s diagnostics (empty when it checks).
fn diagnostics_of(src: &str) -> Vec<(Code, String)> {
    match check_source(src) {
        Ok(_) => Vec::new(),
        Err(diags) => diags.iter().map(|d| (d.code, d.message.clone())).collect(),
    }
}

fn has(diags: &[(Code, String)], code: Code, text: &str) -> bool {
    diags.iter().any(|(c, m)| *c == code && m.contains(text))
}

const HEAD: &str = "ruleset \"limits\" version 1\ncurrency USD\ntimezone \"UTC\"\nrounding floor\n";

#[test]
fn the_tier_limit_is_accepted_and_one_more_is_refused() {
    use rewards_dsl::limits::MAX_TIERS;
    let tiers = |n: usize| {
        let mut s = String::from(HEAD);
        for i in 0..n {
            s.push_str(&format!("tier t{i}\n"));
        }
        s.push_str("rule r \"r\" {\n  when member.tier >= t0\n  earn 1 points\n}\n");
        s
    };
    let at = diagnostics_of(&tiers(MAX_TIERS));
    assert!(!at.iter().any(|(c, _)| *c == Code::TooMany), "{at:?}");
    let over = diagnostics_of(&tiers(MAX_TIERS + 1));
    assert!(
        has(
            &over,
            Code::TooMany,
            &format!("more than {MAX_TIERS} tiers")
        ),
        "{over:?}"
    );
}

#[test]
fn the_aggregate_limit_is_accepted_and_one_more_is_refused() {
    use rewards_dsl::limits::MAX_AGGREGATES;
    let aggregates = |n: usize| {
        let mut s = String::from(HEAD);
        for i in 0..n {
            s.push_str(&format!(
                "aggregate a{i} = count where tx.kind == purchase per week\n"
            ));
        }
        s.push_str("rule r \"r\" {\n  when a0 > 1\n  earn 1 points\n}\n");
        s
    };
    let at = diagnostics_of(&aggregates(MAX_AGGREGATES));
    assert!(!at.iter().any(|(c, _)| *c == Code::TooMany), "{at:?}");
    let over = diagnostics_of(&aggregates(MAX_AGGREGATES + 1));
    assert!(
        has(
            &over,
            Code::TooMany,
            &format!("more than {MAX_AGGREGATES} aggregates")
        ),
        "{over:?}"
    );
}

#[test]
fn rolling_windows_are_one_to_the_limit_days_long() {
    use rewards_dsl::limits::MAX_ROLLING_DAYS;
    let capped = |days: u32| {
        format!(
            "{HEAD}rule r \"r\" {{\n  when tx.kind == purchase\n  earn floor(tx.amount) points\n  cap 100 points per member per rolling {days} days\n}}\n"
        )
    };
    let limit = u32::from(MAX_ROLLING_DAYS);
    for ok in [1, limit] {
        let d = diagnostics_of(&capped(ok));
        assert!(
            !d.iter().any(|(c, _)| *c == Code::OutOfRange),
            "{ok}: {d:?}"
        );
    }
    for bad in [0, limit + 1] {
        let d = diagnostics_of(&capped(bad));
        assert!(
            has(
                &d,
                Code::OutOfRange,
                &format!("a rolling window of {bad} days")
            ),
            "{bad}: {d:?}"
        );
    }
}

#[test]
fn the_statement_limit_of_a_rule_is_enforced() {
    use rewards_dsl::limits::MAX_STMTS;
    let rule = |statements: usize| {
        let mut s = format!("{HEAD}rule r \"r\" {{\n  when tx.kind == purchase\n");
        for _ in 1..statements {
            s.push_str("  earn 1 points\n");
        }
        s.push_str("}\n");
        s
    };
    let at = diagnostics_of(&rule(MAX_STMTS));
    assert!(!has(&at, Code::TooMany, "statements"), "{at:?}");
    let over = diagnostics_of(&rule(MAX_STMTS + 1));
    assert!(
        has(
            &over,
            Code::TooMany,
            &format!("more than {MAX_STMTS} statements")
        ),
        "{over:?}"
    );
}

#[test]
fn diagnostics_are_capped_per_file() {
    use rewards_dsl::limits::MAX_DIAGNOSTICS;
    // Three times as many rules as reportable diagnostics, each with an
    // unknown name in its condition.
    let mut s = String::from(HEAD);
    for i in 0..MAX_DIAGNOSTICS * 3 {
        s.push_str(&format!(
            "rule r{i} \"r\" {{\n  when nowhere{i} > 1\n  earn 1 points\n}}\n"
        ));
    }
    let d = diagnostics_of(&s);
    assert!(
        d.len() >= MAX_DIAGNOSTICS / 2,
        "the errors are reported: {}",
        d.len()
    );
    assert!(d.len() <= MAX_DIAGNOSTICS, "{} diagnostics", d.len());
}
