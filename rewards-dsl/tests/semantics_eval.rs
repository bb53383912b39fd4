//! The semantics of `docs/semantics.md`, one behaviour per test.

use chrono::{DateTime, Utc};
use rewards_core::{
    ComponentKind, CounterKey, Currency, MemberId, MemberView, Money, Outcome, Points, Transaction,
    TxId, TxKind, Window, WindowKey,
};
use rewards_dsl::ast::TypeName;
use rewards_dsl::host::HostError;
use rewards_dsl::value::Value;
use rewards_dsl::{EvalError, HostFunctions, Plan};
use rust_decimal::Decimal;
use std::str::FromStr;
use std::sync::Arc;

const HEADER: &str = r#"ruleset "t" version 1
currency USD
timezone "America/New_York"
rounding floor
"#;

fn plan(body: &str) -> Plan {
    plan_with(body, &HostFunctions::new())
}

fn plan_with(body: &str, host: &HostFunctions) -> Plan {
    let source = format!("{HEADER}{body}");
    match Plan::compile(&source, host) {
        Ok(p) => p,
        Err(d) => panic!("does not compile: {d:#?}"),
    }
}

fn at(time: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(time)
        .expect("rfc3339")
        .with_timezone(&Utc)
}

fn tx(amount: &str, mcc: Option<u16>, time: &str) -> Transaction {
    Transaction {
        id: TxId::new("t-1").expect("id"),
        member: MemberId::new("m-1").expect("id"),
        kind: TxKind::Purchase,
        program: None,
        amount: Money::new(Decimal::from_str(amount).expect("decimal"), Currency::USD),
        time: at(time),
        mcc,
        merchant: Some("Shop".into()),
        channel: None,
        presence: None,
        country: None,
        original_id: None,
        line_items: Vec::new(),
        attributes: Default::default(),
        points: None,
        reason: None,
        actor: None,
    }
}

fn points(o: &Outcome, rule: &str) -> i64 {
    o.components
        .iter()
        .filter(|c| &*c.rule == rule)
        .map(|c| c.points.get())
        .sum()
}

fn total(o: &Outcome) -> i64 {
    o.total_points().expect("no overflow").get()
}

const NOON: &str = "2026-06-10T16:00:00Z";

#[test]
fn each_rounding_mode_rounds_each_component() {
    for (mode, want) in [
        ("floor", 2),
        ("ceiling", 3),
        ("half_up", 3),
        ("half_even", 2),
    ] {
        let p = plan(&format!(
            "rule r {{\n earn tx.amount points\n rounding {mode}\n}}\nrule s {{\n earn tx.amount points\n}}\n"
        ));
        let o = p
            .evaluate(&tx("2.50", None, NOON), &MemberView::default())
            .expect("ok");
        assert_eq!(points(&o, "r"), want, "{mode}");
        // The ruleset's default (floor) applies to the other rule, separately.
        assert_eq!(points(&o, "s"), 2, "{mode}");
        assert_eq!(o.components.len(), 2);
    }
    let p = plan("rule r {\n earn tx.amount points\n rounding half_even\n}\n");
    let o = p
        .evaluate(&tx("3.50", None, NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(total(&o), 4);
}

#[test]
fn stacking_is_additive_and_each_rule_is_its_own_component() {
    let p = plan(
        "category dining = mcc in [5812, 5813, 5814]\n\
         rule base \"1 point per dollar\" {\n when tx.kind == purchase\n earn floor(tx.amount) points\n}\n\
         rule dining \"3x\" {\n when tx.mcc in dining\n earn 2 * floor(tx.amount) points\n}\n",
    );
    let o = p
        .evaluate(&tx("13.99", Some(5812), NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(points(&o, "base"), 13);
    assert_eq!(points(&o, "dining"), 26);
    assert_eq!(total(&o), 39);
    assert_eq!(&*o.components[0].label, "1 point per dollar");
    assert_eq!(o.components[0].kind, ComponentKind::Earn);
}

#[test]
fn exclusive_group_best_keeps_the_largest_award() {
    let p = plan(
        "group g takes best\n\
         rule small priority 9 exclusive group g {\n earn 10 points\n}\n\
         rule big exclusive group g {\n earn 30 points\n}\n\
         rule tie exclusive group g {\n earn 30 points\n}\n",
    );
    let o = p
        .explain(&tx("1", None, NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(points(&o, "big"), 30);
    assert_eq!(points(&o, "small"), 0);
    assert_eq!(points(&o, "tie"), 0, "ties go to declaration order");
    let why = rewards_dsl::explain::render(&o);
    assert!(
        why.contains("lost exclusive group g (takes best) to big"),
        "{why}"
    );
}

#[test]
fn exclusive_group_best_compares_awards_after_caps() {
    let p = plan(
        "group g takes best\n\
         rule capped exclusive group g {\n earn 50 points\n cap 100 points per member per month\n}\n\
         rule other exclusive group g {\n earn 20 points\n}\n",
    );
    let mut view = MemberView::default();
    let month = Window::Month.key_for(chrono::NaiveDate::from_ymd_opt(2026, 6, 10).expect("date"));
    view.counters
        .insert(CounterKey::new("cap.capped", month), Decimal::from(90));
    let o = p.evaluate(&tx("1", None, NOON), &view).expect("ok");
    assert_eq!(points(&o, "other"), 20);
    assert_eq!(points(&o, "capped"), 0);
}

#[test]
fn exclusive_group_first_keeps_the_highest_priority() {
    let p = plan(
        "group g takes first\n\
         rule low priority 1 exclusive group g {\n earn 500 points\n}\n\
         rule high priority 10 exclusive group g {\n earn 5 points\n}\n\
         rule off priority 20 exclusive group g {\n when tx.amount > 100 USD\n earn 1 points\n}\n",
    );
    let o = p
        .evaluate(&tx("1", None, NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(points(&o, "high"), 5);
    assert_eq!(total(&o), 5);
}

#[test]
fn multipliers_scale_final_points_of_their_targets_without_compounding() {
    let p = plan(
        "rule base tags [core] {\n earn floor(tx.amount) points\n}\n\
         rule bonus {\n earn 10 points\n cap 4 points per transaction\n}\n\
         rule double {\n multiply earned by 2\n}\n\
         rule triple_core {\n multiply tag core by 3\n}\n\
         rule half {\n multiply base by 0.5\n}\n",
    );
    let o = p
        .evaluate(&tx("42.50", None, NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(points(&o, "base"), 42);
    assert_eq!(points(&o, "bonus"), 4, "capped before it is multiplied");
    assert_eq!(points(&o, "double"), 46, "(2 - 1) x (42 + 4)");
    assert_eq!(
        points(&o, "triple_core"),
        84,
        "(3 - 1) x 42, not of double's extra"
    );
    assert_eq!(
        points(&o, "half"),
        0,
        "a factor below 1 never removes points"
    );
    let kinds: Vec<ComponentKind> = o.components.iter().map(|c| c.kind).collect();
    assert_eq!(kinds[2], ComponentKind::Multiplier);
}

#[test]
fn the_language_reference_example_gives_252() {
    let p = plan(
        "category dining = mcc in [5812, 5813, 5814]\n\
         tier green qualify spend(calendar year) >= 0 USD\n\
         tier gold qualify spend(calendar year) >= 5000 USD grace 90 days\n\
         group category_bonus takes best\n\
         rule base {\n when tx.kind == purchase\n earn floor(tx.amount) points\n}\n\
         rule dining priority 10 exclusive group category_bonus {\n when tx.mcc in dining\n earn 2 * floor(tx.amount) points\n cap 6000 points per member per calendar quarter\n}\n\
         campaign winter_double from 2026-12-01 to 2026-12-31 budget 5_000_000 points {\n when member.tier >= gold and weekday(tx.time) in [sat, sun]\n multiply earned by 2\n}\n",
    );
    let view = MemberView {
        tier: Some(Arc::from("gold")),
        ..MemberView::default()
    };
    let o = p
        .evaluate(&tx("42.50", Some(5812), "2026-12-05T17:00:00Z"), &view)
        .expect("ok");
    assert_eq!(total(&o), 252);
    assert_eq!(points(&o, "winter_double"), 126);
    assert_eq!(o.budgets.len(), 1);
    assert_eq!(o.budgets[0].points, Points(126));
    assert_eq!(o.budgets[0].limit, Points(5_000_000));
    assert_eq!(usize::from(o.budgets[0].component), 2);
    assert_eq!(o.components[2].kind, ComponentKind::Campaign);
    assert_eq!(o.components[2].budget.as_deref(), Some("t/winter_double"));
    // Dining's cap counter counts its own component, in the local quarter.
    let cap = o
        .counters
        .iter()
        .find(|c| &*c.key.name == "cap.dining")
        .expect("cap counter");
    assert_eq!(cap.delta, Decimal::from(84));
    // Dining (priority 10) is visited before base: it is component 0.
    assert_eq!(cap.component, Some(0));
    assert_eq!(cap.key.window, WindowKey::Quarter(2026 * 4 + 3));
}

#[test]
fn a_cap_reached_mid_transaction_awards_the_remainder() {
    let p = plan("rule r {\n earn tx.amount points\n cap 1000 points per member per month\n}\n");
    let month = Window::Month.key_for(chrono::NaiveDate::from_ymd_opt(2026, 6, 10).expect("date"));
    let mut view = MemberView::default();
    view.counters
        .insert(CounterKey::new("cap.r", month), Decimal::from(960));
    let o = p.evaluate(&tx("100", None, NOON), &view).expect("ok");
    assert_eq!(total(&o), 40);
    assert_eq!(o.counters[0].delta, Decimal::from(40));
    view.counters
        .insert(CounterKey::new("cap.r", month), Decimal::from(1000));
    let o = p.evaluate(&tx("100", None, NOON), &view).expect("ok");
    assert_eq!(total(&o), 0);
    assert!(o.components.is_empty() && o.counters.is_empty());
}

/// Explain states each cap's counter, room and trim, whether the counter
/// is whole points (the integer path) or not, and a cap without a window.
#[test]
fn explain_shows_each_caps_room_and_trim() {
    let p = plan("rule r {\n earn tx.amount points\n cap 1000 points per member per month\n cap 50 points per transaction\n}\n");
    let month = Window::Month.key_for(chrono::NaiveDate::from_ymd_opt(2026, 6, 10).expect("date"));
    let text = |used: Decimal| {
        let mut view = MemberView::default();
        view.counters.insert(CounterKey::new("cap.r", month), used);
        let o = p.explain(&tx("100", None, NOON), &view).expect("ok");
        let points = total(&o);
        let line = o
            .explain
            .expect("trace")
            .lines
            .into_iter()
            .find(|l| &*l.rule == "r" && l.matched)
            .expect("the rule's line");
        (points, line.detail)
    };
    let head = "earn tx.amount = 100 → floor 100; cap 1000 points per member per month: ";
    assert_eq!(
        text(Decimal::from(960)),
        (
            40,
            format!("{head}used 960, room 40 → trimmed to 40; cap 50 points per transaction")
        )
    );
    assert_eq!(
        text(Decimal::new(9605, 1)),
        (
            39,
            format!("{head}used 960.5, room 39 → trimmed to 39; cap 50 points per transaction")
        )
    );
    assert_eq!(
        text(Decimal::from(900)),
        (
            50,
            format!("{head}used 900, room 100; cap 50 points per transaction → trimmed to 50")
        )
    );
}

#[test]
fn rolling_caps_sum_day_buckets_in_the_ruleset_zone() {
    let p = plan("rule r {\n earn tx.amount points\n cap 100 points per member per rolling 7 days\n cap 60 points per member per day\n}\n");
    // 2026-06-10T02:00Z is still June 9 in New York.
    let t = tx("80", None, "2026-06-10T02:00:00Z");
    let mut keys = Vec::new();
    p.counter_keys(&t, &mut keys);
    let june9 = Window::Day.key_for(chrono::NaiveDate::from_ymd_opt(2026, 6, 9).expect("date"));
    let june3 = Window::Day.key_for(chrono::NaiveDate::from_ymd_opt(2026, 6, 3).expect("date"));
    let june2 = Window::Day.key_for(chrono::NaiveDate::from_ymd_opt(2026, 6, 2).expect("date"));
    assert!(keys.contains(&CounterKey::new("cap.r", june9)));
    assert!(keys.contains(&CounterKey::new("cap.r", june3)));
    assert!(!keys.contains(&CounterKey::new("cap.r", june2)));
    let mut view = MemberView::default();
    view.counters
        .insert(CounterKey::new("cap.r", june3), Decimal::from(30));
    view.counters
        .insert(CounterKey::new("cap.r", june2), Decimal::from(1000));
    let o = p.evaluate(&t, &view).expect("ok");
    assert_eq!(total(&o), 60, "day cap 60 is tighter than rolling room 70");
    // Day and rolling windows share the day bucket: one increment.
    assert_eq!(o.counters.len(), 1);
    assert_eq!(o.counters[0].key, CounterKey::new("cap.r", june9));
}

#[test]
fn windows_follow_the_zone_across_daylight_saving_and_year_ends() {
    let p = plan(
        "aggregate yearly = spend per calendar year\n\
         aggregate weekly = count per week\n\
         aggregate quarterly = count per calendar quarter\n\
         rule r {\n earn 1 points\n}\n",
    );
    // New Year's Eve 23:30 in New York is already 2027 in UTC.
    let o = p
        .evaluate(
            &tx("5", None, "2027-01-01T04:30:00Z"),
            &MemberView::default(),
        )
        .expect("ok");
    let key = |name: &str| {
        o.counters
            .iter()
            .find(|c| &*c.key.name == name)
            .map(|c| c.key.window)
    };
    assert_eq!(key("agg.yearly"), Some(WindowKey::Year(2026)));
    assert_eq!(key("agg.quarterly"), Some(WindowKey::Quarter(2026 * 4 + 3)));
    // Sunday 2026-11-01 01:30 EST (after the fall-back) is still in the
    // week that started Monday 2026-10-26.
    let o = p
        .evaluate(
            &tx("5", None, "2026-11-01T06:30:00Z"),
            &MemberView::default(),
        )
        .expect("ok");
    let monday = Window::Day.key_for(chrono::NaiveDate::from_ymd_opt(2026, 10, 26).expect("d"));
    let WindowKey::Day(n) = monday else { panic!() };
    assert_eq!(
        o.counters
            .iter()
            .find(|c| &*c.key.name == "agg.weekly")
            .map(|c| c.key.window),
        Some(WindowKey::Week(n))
    );
}

#[test]
fn effective_periods_are_whole_local_days() {
    let p = plan("rule r effective from 2026-03-08 to 2026-03-08 {\n earn 1 points\n}\n");
    let view = MemberView::default();
    // DST starts on 2026-03-08 in New York: the local day is 23 hours long.
    let cases = [
        ("2026-03-08T04:59:59Z", 0), // 23:59:59 on the 7th
        ("2026-03-08T05:00:00Z", 1), // 00:00 EST
        ("2026-03-09T03:59:59Z", 1), // 23:59:59 EDT
        ("2026-03-09T04:00:00Z", 0), // 00:00 on the 9th
    ];
    for (time, want) in cases {
        let o = p.evaluate(&tx("1", None, time), &view).expect("ok");
        assert_eq!(total(&o), want, "{time}");
    }
}

#[test]
fn campaign_schedule_and_audience() {
    let p = plan(
        "tier basic\ntier gold qualify member.balance >= 1000\n\
         campaign promo from 2026-06-01 to 2026-06-30 audience member.tier >= gold {\n earn 100 points\n}\n",
    );
    let gold = MemberView {
        tier: Some(Arc::from("gold")),
        ..MemberView::default()
    };
    let basic = MemberView {
        tier: Some(Arc::from("basic")),
        ..MemberView::default()
    };
    assert_eq!(
        total(&p.evaluate(&tx("1", None, NOON), &gold).expect("ok")),
        100
    );
    assert_eq!(
        total(&p.evaluate(&tx("1", None, NOON), &basic).expect("ok")),
        0
    );
    assert_eq!(
        total(
            &p.evaluate(&tx("1", None, "2026-07-01T12:00:00Z"), &gold)
                .expect("ok")
        ),
        0
    );
    let o = p.explain(&tx("1", None, NOON), &basic).expect("ok");
    let why = rewards_dsl::explain::render(&o);
    assert!(
        why.contains("audience: member.tier >= gold: basic < gold"),
        "{why}"
    );
}

#[test]
fn tier_qualification_counts_the_transaction_and_takes_effect_after_it() {
    let p = plan(
        "tier green\ntier gold qualify spend(calendar year) >= 5000 USD grace 90 days\n\
         rule base {\n earn floor(tx.amount) points\n}\n\
         rule gold_bonus {\n when member.tier == gold\n earn 100 points\n}\n",
    );
    let year = WindowKey::Year(2026);
    let mut view = MemberView {
        tier: Some(Arc::from("green")),
        ..MemberView::default()
    };
    view.counters
        .insert(CounterKey::new("spend", year), Decimal::from(4900));
    let o = p.evaluate(&tx("150", None, NOON), &view).expect("ok");
    assert_eq!(
        points(&o, "gold_bonus"),
        0,
        "the transaction sees the tier before it"
    );
    let change = o.tier_change.as_ref().expect("upgrade");
    assert_eq!(&*change.to, "gold");
    assert_eq!(change.from.as_deref(), Some("green"));
    assert_eq!(change.effective, at(NOON));
    // No tier yet: the lowest tier without a condition is reached at once.
    let o = p
        .evaluate(&tx("1", None, NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(o.tier_change.map(|c| c.to), Some(Arc::from("green")));
}

#[test]
fn tier_review_downgrades_after_grace_and_cancels_on_requalifying() {
    let p = plan(
        "tier green\ntier gold qualify spend(calendar year) >= 5000 USD grace 90 days\n\
         rule base {\n earn 1 points\n}\n",
    );
    let as_of = at("2027-01-02T12:00:00Z");
    let gold = MemberView {
        tier: Some(Arc::from("gold")),
        ..MemberView::default()
    };
    let d = p
        .review_tier(&gold, None, as_of)
        .expect("ok")
        .expect("decision");
    assert_eq!(&*d.tier, "green");
    // 90 calendar days in New York: 07:00 EST then, 07:00 EDT after.
    assert_eq!(d.effective, at("2027-04-02T11:00:00Z"));
    // A later review keeps the scheduled date.
    let scheduled = rewards_core::TierChange {
        from: Some(Arc::from("gold")),
        to: Arc::from("green"),
        effective: d.effective,
    };
    let later = at("2027-02-01T12:00:00Z");
    let d2 = p
        .review_tier(&gold, Some(&scheduled), later)
        .expect("ok")
        .expect("decision");
    assert_eq!(d2.effective, d.effective);
    // Qualifying again cancels it (decides the current tier).
    let mut back = gold.clone();
    back.counters.insert(
        CounterKey::new("spend", WindowKey::Year(2027)),
        Decimal::from(6000),
    );
    let d3 = p
        .review_tier(&back, Some(&scheduled), later)
        .expect("ok")
        .expect("decision");
    assert_eq!(&*d3.tier, "gold");
    assert_eq!(d3.effective, later);
    assert_eq!(p.review_tier(&back, None, later).expect("ok"), None);
}

#[test]
fn the_evaluator_reviews_tiers_with_the_aggregates_of_the_instant() {
    use rewards_core::Evaluator;
    let p = plan(
        "tier green\ntier gold qualify spend(calendar year) >= 5000 USD grace 90 days\n\
         rule base {\n earn 1 points\n}\n",
    );
    assert!(Evaluator::reviews_tiers(&p));
    let as_of = at("2027-01-02T12:00:00Z");
    let mut keys = Vec::new();
    Evaluator::review_keys(&p, as_of, &mut keys);
    assert_eq!(keys, vec![CounterKey::new("spend", WindowKey::Year(2027))]);
    let gold = MemberView {
        tier: Some(Arc::from("gold")),
        ..MemberView::default()
    };
    let m = MemberId::new("m-1").expect("id");
    let review = Evaluator::review_tier(&p, &m, &gold, None, as_of)
        .expect("ok")
        .expect("a downgrade");
    assert_eq!(review.member, m);
    assert_eq!(&*review.tier, "green");
    assert_eq!(review.as_of, as_of);
    assert_eq!(review.effective, at("2027-04-02T11:00:00Z"));
    let untiered = plan("rule base {\n earn 1 points\n}\n");
    assert!(!Evaluator::reviews_tiers(&untiered));
    let mut keys = Vec::new();
    Evaluator::review_keys(&untiered, as_of, &mut keys);
    assert!(keys.is_empty());
    assert_eq!(
        Evaluator::review_tier(&untiered, &m, &gold, None, as_of).expect("ok"),
        None
    );
}

#[test]
fn aggregates_filter_and_read_the_value_before_the_transaction() {
    let p = plan(
        "category airline = mcc in [3000..3299, 4511]\n\
         aggregate airline_spend = spend where tx.mcc in airline per calendar year\n\
         rule first_flight {\n when airline_spend == 0 USD and tx.mcc in airline\n earn 500 points\n}\n",
    );
    let o = p
        .evaluate(&tx("300", Some(3001), NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(total(&o), 500);
    assert_eq!(o.counters.len(), 1);
    assert_eq!(
        o.counters[0].key,
        CounterKey::new("agg.airline_spend", WindowKey::Year(2026))
    );
    assert_eq!(o.counters[0].delta, Decimal::from(300));
    assert_eq!(o.counters[0].component, None);
    let o = p
        .evaluate(&tx("300", Some(5411), NOON), &MemberView::default())
        .expect("ok");
    assert!(o.counters.is_empty(), "filtered out");
}

#[test]
fn refunds_are_not_evaluated_the_ledger_scales_them() {
    let p = plan("aggregate s = spend per lifetime\nrule r {\n earn tx.amount points\n cap 10 points per member per day\n}\n");
    let mut t = tx("50", None, NOON);
    for kind in [
        TxKind::Refund,
        TxKind::Chargeback,
        TxKind::Settlement,
        TxKind::Reversal,
        TxKind::Adjustment,
    ] {
        t.kind = kind;
        let o = p.evaluate(&t, &MemberView::default()).expect("ok");
        assert!(o.components.is_empty() && o.counters.is_empty() && o.budgets.is_empty());
        assert!(o.tier_change.is_none());
        assert_eq!(o.ruleset, *p.stamp());
    }
    t.kind = TxKind::Authorization;
    let o = p.evaluate(&t, &MemberView::default()).expect("ok");
    assert_eq!(total(&o), 10, "an authorization earns like a purchase");
}

#[test]
fn absent_fields_make_conditions_unknown_and_explain_names_them() {
    let p = plan(
        "category dining = mcc in [5812]\n\
         rule a {\n when tx.mcc in dining\n earn 1 points\n}\n\
         rule b {\n when not (tx.mcc in dining)\n earn 1 points\n}\n\
         rule c {\n when tx.mcc in dining or tx.amount > 10 USD\n earn 1 points\n}\n",
    );
    let o = p
        .explain(&tx("20", None, NOON), &MemberView::default())
        .expect("ok");
    assert_eq!(points(&o, "a"), 0);
    assert_eq!(points(&o, "b"), 0, "not unknown is unknown");
    assert_eq!(points(&o, "c"), 1, "true or unknown is true");
    let why = rewards_dsl::explain::render(&o);
    assert!(why.contains("tx.mcc is absent"), "{why}");
    let o = p
        .explain(&tx("20", Some(5411), NOON), &MemberView::default())
        .expect("ok");
    let why = rewards_dsl::explain::render(&o);
    assert!(
        why.contains("when: tx.mcc in dining: 5411 not in [5812]"),
        "{why}"
    );
}

#[test]
fn host_functions_are_bound_by_signature_and_called() {
    let body = "extern fn partner(merchant: string) -> bool\n\
                rule p {\n when partner(tx.merchant)\n earn 7 points\n}\n";
    let source = format!("{HEADER}{body}");
    // Missing: a compile diagnostic.
    let err = Plan::compile(&source, &HostFunctions::new()).expect_err("missing");
    assert!(err[0].message.contains("not registered"), "{err:?}");
    // Wrong signature: a compile diagnostic.
    let mut wrong = HostFunctions::new();
    wrong.register("partner", &[TypeName::Integer], TypeName::Bool, |_| {
        Ok(Value::Bool(true))
    });
    let err = Plan::compile(&source, &wrong).expect_err("mismatch");
    assert!(
        err[0]
            .message
            .contains("registered as partner(integer) -> bool"),
        "{err:?}"
    );
    // Registered: called with the merchant.
    let mut host = HostFunctions::new();
    host.register("partner", &[TypeName::String], TypeName::Bool, |args| {
        Ok(Value::Bool(
            matches!(&args[0], Value::String(m) if m == "Shop"),
        ))
    });
    let p = plan_with(body, &host);
    assert_eq!(
        total(
            &p.evaluate(&tx("1", None, NOON), &MemberView::default())
                .expect("ok")
        ),
        7
    );
    // The hash covers the signatures.
    let mut other = HostFunctions::new();
    other.register("partner", &[TypeName::String], TypeName::Bool, |_| {
        Ok(Value::Bool(false))
    });
    assert_eq!(
        p.hash(),
        plan_with(body, &other).hash(),
        "same signature, same hash"
    );
    // A failing host function is an evaluation error.
    let mut failing = HostFunctions::new();
    failing.register("partner", &[TypeName::String], TypeName::Bool, |_| {
        Err(HostError("down".into()))
    });
    let e = plan_with(body, &failing)
        .evaluate(&tx("1", None, NOON), &MemberView::default())
        .expect_err("host error");
    assert_eq!(e.code(), "eval.host");
}

#[test]
fn overflow_is_an_evaluation_error_never_a_wrap() {
    let p = plan("rule r {\n earn (tx.amount / 1 USD) * (tx.amount / 1 USD) * (tx.amount / 1 USD) points\n}\n");
    let e = p
        .evaluate(&tx("1000000000000", None, NOON), &MemberView::default())
        .expect_err("overflow");
    assert!(matches!(e, EvalError::Overflow(_)), "{e}");
    assert_eq!(e.code(), "eval.overflow");
    let p = plan("attribute tx.n: integer\nrule r {\n earn 10 / tx.attributes.n points\n}\n");
    let mut t = tx("1", None, NOON);
    t.attributes
        .insert("n".into(), rewards_core::AttrValue::Number(Decimal::ZERO));
    assert_eq!(
        p.evaluate(&t, &MemberView::default())
            .expect_err("div")
            .code(),
        "eval.division_by_zero"
    );
}

#[test]
fn a_constant_overflow_is_a_compile_diagnostic() {
    let source = format!("{HEADER}rule r {{\n earn 9223372036854775807 + 1 points\n}}\n");
    let err = Plan::compile(&source, &HostFunctions::new()).expect_err("overflow");
    assert!(err[0].message.contains("cannot be computed"), "{err:?}");
}

#[test]
fn foreign_currency_and_too_many_line_items_are_errors() {
    let p = plan("rule r {\n earn 1 points\n}\n");
    let mut t = tx("1", None, NOON);
    t.amount.currency = Currency::EUR;
    assert_eq!(
        p.evaluate(&t, &MemberView::default())
            .expect_err("currency")
            .code(),
        "eval.currency"
    );
    let mut t = tx("1", None, NOON);
    let item = rewards_core::LineItem {
        sku: "x".into(),
        category: "y".into(),
        quantity: 1,
        amount: Decimal::ONE,
    };
    t.line_items = vec![item; rewards_core::limits::MAX_LINE_ITEMS + 1];
    assert_eq!(
        p.evaluate(&t, &MemberView::default())
            .expect_err("limit")
            .code(),
        "eval.limit"
    );
}

#[test]
fn line_item_folds_and_lot_terms() {
    let source = "ruleset \"t\" version 1\ncurrency USD\ntimezone \"America/New_York\"\nrounding floor\n\
                  points pending 14 days\npoints expire at end of quarter + 1 month\n\
                  rule coffee {\n earn 10 * sum(tx.line_items where item.category == \"coffee\", item.amount) points\n}\n\
                  rule items {\n earn count(tx.line_items) points\n}\n";
    let p = Plan::compile(source, &HostFunctions::new()).expect("compiles");
    let mut t = tx("7.00", None, "2026-03-01T15:00:00Z");
    for (cat, amount) in [("coffee", "4.20"), ("food", "2.80")] {
        t.line_items.push(rewards_core::LineItem {
            sku: cat.into(),
            category: cat.into(),
            quantity: 1,
            amount: Decimal::from_str(amount).expect("d"),
        });
    }
    let o = p.evaluate(&t, &MemberView::default()).expect("ok");
    assert_eq!(points(&o, "coffee"), 42);
    assert_eq!(points(&o, "items"), 2);
    // 14 calendar days later at the same local time (across the DST change).
    assert_eq!(o.lot.available_at, Some(at("2026-03-15T14:00:00Z")));
    // End of Q1 in New York (April 1st, 00:00 EDT) plus one month.
    assert_eq!(o.lot.expires_at, Some(at("2026-05-01T04:00:00Z")));
}

#[test]
fn the_hash_ignores_layout_but_not_meaning() {
    let a = plan("rule r {\n earn 1 points\n}\n");
    let b = plan("rule   r {   earn 1 points }\n");
    let c = plan("rule r {\n earn 2 points\n}\n");
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
    assert_eq!(a.hash().len(), 64);
}

#[test]
fn dispatch_skips_rules_that_cannot_match_but_explain_agrees() {
    let p = plan(
        "category dining = mcc in [5812, 5813]\ncategory grocery = mcc in [5411]\n\
         rule d {\n when tx.kind == purchase and tx.mcc in dining\n earn 2 points\n}\n\
         rule g {\n when tx.mcc in grocery or tx.mcc == 5999\n earn 3 points\n}\n\
         rule n {\n when tx.mcc not in dining\n earn 5 points\n}\n\
         rule a {\n when tx.kind == authorization\n earn 7 points\n}\n",
    );
    for mcc in [
        None,
        Some(5812),
        Some(5813),
        Some(5814),
        Some(5411),
        Some(5999),
        Some(0),
        Some(9999),
    ] {
        for kind in [TxKind::Purchase, TxKind::Authorization] {
            let mut t = tx("1", mcc, NOON);
            t.kind = kind;
            let fast = p.evaluate(&t, &MemberView::default()).expect("ok");
            let slow = p.explain(&t, &MemberView::default()).expect("ok");
            assert_eq!(fast.components, slow.components, "{mcc:?} {kind}");
        }
    }
}

#[test]
fn extreme_counters_from_the_store_are_an_overflow_error_not_a_panic() {
    let p = plan(
        "aggregate s = spend per rolling 2 days\n\
         rule r {\n when s != 1 USD\n earn 1 points\n}\n",
    );
    let t = tx("1", None, NOON);
    let mut keys = Vec::new();
    p.counter_keys(&t, &mut keys);
    assert_eq!(keys.len(), 2, "{keys:?}");
    for level in [Decimal::MAX, Decimal::MIN] {
        let mut view = MemberView::default();
        for k in &keys {
            view.counters.insert(k.clone(), level);
        }
        let e = p.evaluate(&t, &view).expect_err("overflow");
        assert_eq!(e.code(), "eval.overflow", "{level}: {e}");
        assert_eq!(
            p.explain(&t, &view).expect_err("overflow").code(),
            "eval.overflow"
        );
    }
}

/// `docs/semantics.md`, "Worked example": `docs/language.md`'s first
/// program, a gold member on Saturday 2026-12-05, 42.50 USD at MCC 5812.
/// Components come in visiting order (priority first: `dining` has
/// priority 10, so it comes before `base`), multipliers last.
#[test]
fn the_worked_example_of_the_semantics_page() {
    let doc = include_str!("../../docs/language.md");
    let start = doc.find("```rwd\n").expect("a first rwd block") + "```rwd\n".len();
    let len = doc[start..].find("```").expect("the block ends");
    let source = &doc[start..start + len];
    let plan = match Plan::compile(source, &HostFunctions::new()) {
        Ok(p) => p,
        Err(d) => panic!("language.md's program does not compile: {d:#?}"),
    };
    let view = MemberView {
        tier: Some(Arc::from("gold")),
        ..MemberView::default()
    };
    // 12:00 in New York.
    let o = plan
        .evaluate(&tx("42.50", Some(5812), "2026-12-05T17:00:00Z"), &view)
        .expect("evaluates");
    let got: Vec<(&str, i64)> = o
        .components
        .iter()
        .map(|c| (&*c.rule, c.points.get()))
        .collect();
    assert_eq!(
        got,
        vec![("dining", 84), ("base", 42), ("winter_double", 126)]
    );
    assert_eq!(total(&o), 252);
    assert_eq!(o.budgets.len(), 1);
    assert_eq!(&*o.budgets[0].budget, "acme-card/winter_double");
    assert_eq!(o.budgets[0].points, Points(126));
}

/// Rules whose conditions only test the member's tier are skipped for other
/// tiers without being evaluated; the outcome is the same as evaluating
/// them (explain evaluates every rule), and a condition that can fail is
/// still evaluated (its error is not hidden by the tier test).
#[test]
fn tier_conditions_filter_rules_without_changing_outcomes() {
    let p = plan(
        r#"tier blue
tier silver
tier gold
rule base { earn floor(tx.amount) points }
rule g "gold" { when member.tier == gold multiply earned by 2 }
rule s "silver or better" { when silver <= member.tier and tx.mcc in [5812] earn 7 points }
rule not_gold { when member.tier != gold or tx.mcc in [1] earn 1 points }
campaign c from 2026-01-01 to 2026-12-31 audience member.tier > blue { earn 3 points }
"#,
    );
    for tier in [
        None,
        Some("blue"),
        Some("silver"),
        Some("gold"),
        Some("renamed"),
    ] {
        for mcc in [5812, 4000] {
            let view = MemberView {
                tier: tier.map(Arc::from),
                ..MemberView::default()
            };
            let t = tx("10.00", Some(mcc), NOON);
            let fast = p.evaluate(&t, &view).expect("evaluates");
            let slow = p.explain(&t, &view).expect("explains");
            assert_eq!(fast.components, slow.components, "{tier:?} {mcc}");
            let dining = if mcc == 5812 { 7 } else { 0 };
            let want = 10
                + match tier {
                    // `multiply earned by 2` doubles base, s and c.
                    Some("gold") => 10 + 2 * (3 + dining),
                    Some("silver") => 3 + 1 + dining,
                    Some("blue") => 1,
                    // No tier: `member.tier != gold` is unknown.
                    _ => 0,
                };
            assert_eq!(total(&fast), want, "{tier:?} {mcc}");
        }
    }
    let failing = plan(
        r#"tier blue
tier gold
rule r { when tx.amount / (tx.amount - tx.amount) > 1 and member.tier == gold earn 1 points }
"#,
    );
    let blue = MemberView {
        tier: Some(Arc::from("blue")),
        ..MemberView::default()
    };
    assert!(matches!(
        failing.evaluate(&tx("10.00", Some(5812), NOON), &blue),
        Err(EvalError::DivisionByZero(_))
    ));
}
