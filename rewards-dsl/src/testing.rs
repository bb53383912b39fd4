//! Runs the `test` blocks of a program and reports pass/fail per test and
//! rule coverage (which rules matched in some test transaction).
//!
//! Each test keeps a tiny member state between its transactions — counters
//! (caps and aggregates), tier, balance, and what each transaction earned —
//! so that caps across transactions, tier upgrades and refunds can be
//! tested without the ledger. Refunds and chargebacks of an earlier test
//! transaction are scaled like the ledger does (cumulative proportional,
//! rounded down on the running total), and `expect points` on a refund is
//! the negative of the points it claws back. `expect balance` counts points
//! as soon as they are earned (pending periods are the ledger's business).

use chrono::{DateTime, Utc};
use rewards_core::{
    AttrValue, CounterKey, Currency, LineItem, MemberId, MemberView, Money, Outcome, Points,
    Transaction, TxId, TxKind,
};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use crate::ast::{CmpOp, Record, RecordValue, Subject, TestDecl, TestStep};
use crate::check::Checked;
use crate::compile::{compile_with, constant, start_of_day, CompileOptions};
use crate::diag::{line_col, Diagnostic};
use crate::host::HostFunctions;
use crate::plan::Plan;
use crate::value::Val;

/// The result of one test block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// 1-based line of the test in its file.
    pub line: usize,
    /// Failed expectations and errors (empty: passed).
    pub failures: Vec<String>,
}

impl TestResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The result of all test blocks of one program.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TestReport {
    /// One entry per test block, in source order.
    pub tests: Vec<TestResult>,
    /// Every rule and campaign id, in declaration order, with whether some
    /// test transaction matched it.
    pub coverage: Vec<(String, bool)>,
    /// Host functions replaced by stubs (not registered).
    pub stubbed: Vec<String>,
}

impl TestReport {
    /// Whether every test passed.
    pub fn passed(&self) -> bool {
        self.tests.iter().all(TestResult::passed)
    }

    /// Rules no test exercised.
    pub fn uncovered(&self) -> Vec<&str> {
        self.coverage
            .iter()
            .filter(|(_, c)| !c)
            .map(|(r, _)| r.as_str())
            .collect()
    }

    /// A human-readable report: one line per test, failures indented,
    /// coverage last.
    pub fn render(&self, file: &str) -> String {
        let mut s = String::new();
        for t in &self.tests {
            let status = if t.passed() { "ok" } else { "FAILED" };
            let _ = writeln!(s, "{file}:{}: test \"{}\" ... {status}", t.line, t.name);
            for f in &t.failures {
                for (i, line) in f.lines().enumerate() {
                    let lead = if i == 0 { "    " } else { "      " };
                    let _ = writeln!(s, "{lead}{line}");
                }
            }
        }
        let passed = self.tests.iter().filter(|t| t.passed()).count();
        let _ = writeln!(
            s,
            "{file}: {passed} passed, {} failed",
            self.tests.len() - passed
        );
        let covered = self.coverage.iter().filter(|(_, c)| *c).count();
        let _ = write!(s, "{file}: rule coverage {covered}/{}", self.coverage.len());
        let missing = self.uncovered();
        if missing.is_empty() {
            s.push('\n');
        } else {
            let _ = writeln!(s, "; not exercised: {}", missing.join(", "));
        }
        if !self.stubbed.is_empty() {
            let _ = writeln!(
                s,
                "{file}: host functions stubbed (answer false/0/\"\"): {}",
                self.stubbed.join(", ")
            );
        }
        s
    }
}

/// Checks, compiles (stubbing host functions the host did not register)
/// and runs the tests of a source text.
pub fn run_source(source: &str, host: &HostFunctions) -> Result<TestReport, Vec<Diagnostic>> {
    let checked = crate::check::check_source(source)?;
    let plan = compile_with(
        &checked,
        source,
        host,
        CompileOptions {
            stub_missing_host_functions: true,
        },
    )?;
    Ok(run(&checked, &plan, source))
}

/// Runs the tests of a checked program against its plan.
pub fn run(checked: &Checked, plan: &Plan, source: &str) -> TestReport {
    let mut exercised: BTreeSet<String> = BTreeSet::new();
    let mut tests = Vec::new();
    for item in &checked.program.items {
        if let crate::ast::ItemKind::Test(t) = &item.kind {
            let failures = run_one(checked, plan, t, &mut exercised);
            tests.push(TestResult {
                name: t.name.value.clone(),
                line: line_col(source, item.span.start).line,
                failures,
            });
        }
    }
    let mut coverage = Vec::new();
    for item in &checked.program.items {
        if let crate::ast::ItemKind::Rule(r) = &item.kind {
            coverage.push((r.id.name.clone(), exercised.contains(&r.id.name)));
        }
    }
    TestReport {
        tests,
        coverage,
        stubbed: plan.stubbed_functions().to_vec(),
    }
}

/// What an earlier test transaction earned, for refunds.
struct Earned {
    amount: Decimal,
    points: i64,
    counters: Vec<(CounterKey, Decimal)>,
    refunded: Decimal,
    clawed: i64,
    reversed: Vec<Decimal>,
}

struct State {
    view: MemberView,
    initial_aggregates: Vec<(String, Val<'static>)>,
    first_tx: bool,
    history: HashMap<String, Earned>,
}

fn run_one(
    checked: &Checked,
    plan: &Plan,
    t: &TestDecl,
    exercised: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut state = State {
        view: MemberView::default(),
        initial_aggregates: Vec::new(),
        first_tx: true,
        history: HashMap::new(),
    };
    let mut last: Option<(Outcome, i64)> = None;
    let mut n = 0usize;
    for step in &t.steps {
        match step {
            TestStep::Member(r) => {
                if let Err(e) = member(checked, plan, r, &mut state) {
                    failures.push(format!("member: {e}"));
                }
            }
            TestStep::Tx(r) => {
                n += 1;
                let tx = match transaction(checked, plan, r, n) {
                    Ok(tx) => tx,
                    Err(e) => {
                        failures.push(format!("tx #{n}: {e}"));
                        last = None;
                        continue;
                    }
                };
                if state.first_tx {
                    state.first_tx = false;
                    seed_aggregates(plan, &tx, &mut state);
                }
                match plan.explain(&tx, &state.view) {
                    Ok(outcome) => {
                        for line in outcome.explain.iter().flat_map(|e| &e.lines) {
                            if line.matched {
                                exercised.insert(line.rule.to_string());
                            }
                        }
                        let points = apply(&tx, &outcome, &mut state);
                        last = Some((outcome, points));
                    }
                    Err(e) => {
                        failures.push(format!("tx #{n}: evaluation failed: {e}"));
                        last = None;
                    }
                }
            }
            TestStep::Expect(x) => {
                let Some((outcome, points)) = &last else {
                    continue;
                };
                let expected = constant(&checked.analysis, &x.value);
                let (ok, got, want) = match (&x.subject, &expected) {
                    (Subject::Tier, Some(Val::Tier(rank))) => {
                        let got = plan.tier_rank(state.view.tier.as_ref());
                        let ok = got.is_some_and(|g| holds(x.op, i64::from(g), i64::from(*rank)));
                        (
                            ok,
                            state.view.tier.as_deref().unwrap_or("no tier").to_string(),
                            plan.tier_names()
                                .get(usize::from(*rank))
                                .map_or("?".to_string(), |n| n.to_string()),
                        )
                    }
                    (subject, Some(v)) => {
                        let want = v.as_decimal().and_then(|d| d.to_i64());
                        let got = match subject {
                            Subject::Points => *points,
                            Subject::Balance => state.view.balance.get(),
                            Subject::Component(id) => outcome
                                .components
                                .iter()
                                .filter(|c| *c.rule == *id.name)
                                .map(|c| c.points.get())
                                .sum(),
                            Subject::Tier => 0,
                        };
                        match want {
                            Some(w) => (holds(x.op, got, w), got.to_string(), w.to_string()),
                            None => (false, got.to_string(), "?".to_string()),
                        }
                    }
                    (_, None) => (false, "?".to_string(), "a constant".to_string()),
                };
                if !ok {
                    let subject = match &x.subject {
                        Subject::Points => "points".to_string(),
                        Subject::Balance => "balance".to_string(),
                        Subject::Tier => "tier".to_string(),
                        Subject::Component(id) => format!("component {}", id.name),
                    };
                    failures.push(format!(
                        "expect {subject} {} {want}: got {got} (after tx #{n})\n{}",
                        x.op.as_str(),
                        crate::explain::render(outcome).trim_end()
                    ));
                }
            }
        }
    }
    failures
}

fn holds(op: CmpOp, got: i64, want: i64) -> bool {
    match op {
        CmpOp::Eq => got == want,
        CmpOp::Ne => got != want,
        CmpOp::Lt => got < want,
        CmpOp::Le => got <= want,
        CmpOp::Gt => got > want,
        CmpOp::Ge => got >= want,
    }
}

/// Applies an outcome to the test member; returns the points it added
/// (negative for a refund's clawback).
fn apply(tx: &Transaction, outcome: &Outcome, state: &mut State) -> i64 {
    let view = &mut state.view;
    match tx.kind {
        TxKind::Purchase | TxKind::Authorization => {
            let points = outcome.total_points().map_or(0, Points::get);
            for c in &outcome.counters {
                let slot = view.counters.entry(c.key.clone()).or_insert(Decimal::ZERO);
                *slot = slot.saturating_add(c.delta);
            }
            view.balance = Points(view.balance.get().saturating_add(points));
            state.history.insert(
                tx.id.to_string(),
                Earned {
                    amount: tx.amount.amount,
                    points,
                    counters: outcome
                        .counters
                        .iter()
                        .map(|c| (c.key.clone(), c.delta))
                        .collect(),
                    refunded: Decimal::ZERO,
                    clawed: 0,
                    reversed: vec![Decimal::ZERO; outcome.counters.len()],
                },
            );
            if let Some(change) = &outcome.tier_change {
                view.tier = Some(change.to.clone());
            }
            points
        }
        TxKind::Refund | TxKind::Chargeback => {
            let Some(orig) = tx
                .original_id
                .as_ref()
                .and_then(|o| state.history.get_mut(&o.to_string()))
            else {
                return 0;
            };
            if orig.amount.is_zero() {
                return 0;
            }
            let running = (orig.refunded + tx.amount.amount).min(orig.amount);
            orig.refunded = running;
            let share = |x: Decimal| x.saturating_mul(running) / orig.amount;
            let clawed_total = share(Decimal::from(orig.points))
                .floor()
                .to_i64()
                .unwrap_or(0);
            let claw = clawed_total - orig.clawed;
            orig.clawed = clawed_total;
            for ((key, delta), reversed) in orig.counters.iter().zip(orig.reversed.iter_mut()) {
                let target = share(*delta)
                    .round_dp_with_strategy(delta.scale(), rust_decimal::RoundingStrategy::ToZero);
                let step = target - *reversed;
                *reversed = target;
                let slot = view.counters.entry(key.clone()).or_insert(Decimal::ZERO);
                *slot = slot.saturating_sub(step);
            }
            view.balance = Points(view.balance.get().saturating_sub(claw));
            -claw
        }
        _ => 0,
    }
}

fn seed_aggregates(plan: &Plan, tx: &Transaction, state: &mut State) {
    let date = tx.time.with_timezone(&plan.tz).date_naive();
    for (name, value) in std::mem::take(&mut state.initial_aggregates) {
        let Some(a) = plan.aggregates.iter().find(|a| a.label == name) else {
            continue;
        };
        let Some(v) = value.as_decimal() else {
            continue;
        };
        let key = CounterKey::new(a.counter.clone(), a.window.key_for(date));
        state.view.counters.insert(key, v);
    }
}

fn value(checked: &Checked, v: &RecordValue) -> Result<Val<'static>, String> {
    match v {
        RecordValue::Expr(e) => {
            constant(&checked.analysis, e).ok_or_else(|| "not a constant".into())
        }
        _ => Err("expected a value, not a record".into()),
    }
}

fn attr_value(v: &Val<'_>) -> Option<AttrValue> {
    Some(match v {
        Val::Bool(b) => AttrValue::Bool(*b),
        Val::Int(i) => AttrValue::Number(Decimal::from(*i)),
        Val::Dec(d) | Val::Money(d) | Val::Points(d) => AttrValue::Number(*d),
        Val::Str(s) => AttrValue::Text(s.to_string()),
        Val::Date(d) => AttrValue::Text(d.to_string()),
        Val::DateTime(t) => AttrValue::Text(t.to_rfc3339()),
        _ => return None,
    })
}

fn attributes(checked: &Checked, r: &Record) -> Result<BTreeMap<String, AttrValue>, String> {
    let mut out = BTreeMap::new();
    for f in &r.fields {
        let v = value(checked, &f.value)?;
        let a =
            attr_value(&v).ok_or_else(|| format!("attribute {} has no wire form", f.key.name))?;
        out.insert(f.key.name.clone(), a);
    }
    Ok(out)
}

fn member(checked: &Checked, plan: &Plan, r: &Record, state: &mut State) -> Result<(), String> {
    for f in &r.fields {
        match f.key.name.as_str() {
            "tier" => match value(checked, &f.value)? {
                Val::Tier(rank) => {
                    state.view.tier = plan.tier_names().get(usize::from(rank)).cloned();
                }
                _ => return Err("tier must be a declared tier".into()),
            },
            "enrolled" => match value(checked, &f.value)? {
                Val::Date(d) => state.view.enrolled = Some(d),
                _ => return Err("enrolled must be a date".into()),
            },
            "balance" => {
                let v = value(checked, &f.value)?;
                let b = v
                    .as_decimal()
                    .and_then(|d| d.to_i64())
                    .ok_or("balance must be whole points")?;
                state.view.balance = Points(b);
            }
            "attributes" => {
                if let RecordValue::Record(rec) = &f.value {
                    state.view.attributes = attributes(checked, rec)?;
                }
            }
            "aggregates" => {
                if let RecordValue::Record(rec) = &f.value {
                    for a in &rec.fields {
                        state
                            .initial_aggregates
                            .push((a.key.name.clone(), value(checked, &a.value)?));
                    }
                }
            }
            other => return Err(format!("unknown member field `{other}`")),
        }
    }
    Ok(())
}

fn text(checked: &Checked, v: &RecordValue) -> Result<String, String> {
    match value(checked, v)? {
        Val::Str(s) => Ok(s.to_string()),
        _ => Err("expected a string".into()),
    }
}

fn transaction(
    checked: &Checked,
    plan: &Plan,
    r: &Record,
    n: usize,
) -> Result<Transaction, String> {
    let currency: Currency = plan.currency();
    let mut tx = Transaction {
        id: TxId::new(format!("test-{n}")).map_err(|e| e.to_string())?,
        member: MemberId::new("test-member").map_err(|e| e.to_string())?,
        kind: TxKind::Purchase,
        program: None,
        amount: Money::new(Decimal::ZERO, currency),
        time: DateTime::<Utc>::UNIX_EPOCH,
        mcc: None,
        merchant: None,
        channel: None,
        presence: None,
        country: None,
        original_id: None,
        line_items: Vec::new(),
        attributes: BTreeMap::new(),
        points: None,
        reason: None,
        actor: None,
    };
    for f in &r.fields {
        match f.key.name.as_str() {
            "id" => tx.id = TxId::new(text(checked, &f.value)?).map_err(|e| e.to_string())?,
            "original_id" => {
                tx.original_id =
                    Some(TxId::new(text(checked, &f.value)?).map_err(|e| e.to_string())?)
            }
            "merchant" => tx.merchant = Some(text(checked, &f.value)?),
            "channel" => tx.channel = Some(text(checked, &f.value)?),
            "country" => tx.country = Some(text(checked, &f.value)?),
            "kind" => match value(checked, &f.value)? {
                Val::Kind(k) => tx.kind = k,
                _ => return Err("kind must be a transaction kind".into()),
            },
            "presence" => match value(checked, &f.value)? {
                Val::Presence(p) => tx.presence = Some(p),
                _ => return Err("presence must be online or in_store".into()),
            },
            "amount" => match value(checked, &f.value)? {
                Val::Money(d) => tx.amount = Money::new(d, currency),
                _ => return Err("amount must be money".into()),
            },
            "points" => {
                let v = value(checked, &f.value)?;
                tx.points = v.as_decimal().and_then(|d| d.to_i64()).map(Points);
            }
            "mcc" => match value(checked, &f.value)? {
                Val::Int(m) => {
                    tx.mcc = Some(u16::try_from(m).map_err(|_| format!("{m} is not an MCC"))?)
                }
                _ => return Err("mcc must be a whole number".into()),
            },
            "time" => match value(checked, &f.value)? {
                Val::DateTime(t) => tx.time = t,
                Val::Date(d) => tx.time = start_of_day(d, plan.timezone()),
                _ => return Err("time must be a date-time".into()),
            },
            "attributes" => {
                if let RecordValue::Record(rec) = &f.value {
                    tx.attributes = attributes(checked, rec)?;
                }
            }
            "line_items" => {
                if let RecordValue::List(items, _) = &f.value {
                    for item in items {
                        tx.line_items.push(line_item(checked, item)?);
                    }
                }
            }
            other => return Err(format!("unknown transaction field `{other}`")),
        }
    }
    Ok(tx)
}

fn line_item(checked: &Checked, r: &Record) -> Result<LineItem, String> {
    let mut item = LineItem {
        sku: String::new(),
        category: String::new(),
        quantity: 1,
        amount: Decimal::ZERO,
    };
    for f in &r.fields {
        match f.key.name.as_str() {
            "sku" => item.sku = text(checked, &f.value)?,
            "category" => item.category = text(checked, &f.value)?,
            "quantity" => match value(checked, &f.value)? {
                Val::Int(q) => {
                    item.quantity = u32::try_from(q).map_err(|_| "quantity out of range")?
                }
                _ => return Err("quantity must be a whole number".into()),
            },
            "amount" => match value(checked, &f.value)? {
                Val::Money(d) => item.amount = d,
                _ => return Err("a line item's amount is money".into()),
            },
            other => return Err(format!("unknown line item field `{other}`")),
        }
    }
    Ok(item)
}
