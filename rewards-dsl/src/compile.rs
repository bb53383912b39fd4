//! From a checked program to an immutable [`Plan`].
//!
//! The compiler flattens every expression into one node vector (children
//! are indices), folds constant sub-expressions, turns categories and
//! constant lists into sorted integer ranges, binds `extern fn`
//! declarations to the host's registered functions (a missing function or
//! a different signature is a diagnostic), orders rules by priority, and
//! pre-indexes them by transaction kind and MCC from the top-level
//! conditions of their `when` (`tx.kind == purchase`, `tx.mcc in dining`,
//! and `and`/`or` of those), so evaluation visits only rules that can match.
//! Finally it computes the content hash: SHA-256 over the formatter's
//! output, the IANA time-zone database version and the bound host
//! functions' signatures.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use rewards_core::{ComponentKind, Points, RulesetStamp, TxKind, Window};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::ast::*;
use crate::check::{Analysis, Checked, MemberField, Resolved, Symbols, TxField};
use crate::diag::{Code, Diagnostic};
use crate::host::{signature_text, HostFunctions};
use crate::limits::{MAX_RULES, MAX_TIERS};
use crate::plan::*;
use crate::types::Type;
use crate::value::{default_of, Length, Val};

/// How to compile.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompileOptions {
    /// Replace host functions that are declared but not registered with
    /// stubs answering the result type's zero value (`false`, `0`, `""`).
    /// For `rwd test` and `rwd eval` only, which cannot load the host's
    /// functions; a production host leaves this off.
    pub stub_missing_host_functions: bool,
}

/// Parses, checks and compiles a source text.
pub fn compile_source(source: &str, host: &HostFunctions) -> Result<Plan, Vec<Diagnostic>> {
    compile_source_with(source, host, CompileOptions::default())
}

/// [`compile_source`] with options.
pub fn compile_source_with(
    source: &str,
    host: &HostFunctions,
    options: CompileOptions,
) -> Result<Plan, Vec<Diagnostic>> {
    let checked = crate::check::check_source(source)?;
    compile_with(&checked, source, host, options)
}

/// Compiles a checked program (`source` is the text it was parsed from).
pub fn compile(
    checked: &Checked,
    source: &str,
    host: &HostFunctions,
) -> Result<Plan, Vec<Diagnostic>> {
    compile_with(checked, source, host, CompileOptions::default())
}

/// [`compile`] with options.
pub fn compile_with(
    checked: &Checked,
    source: &str,
    host: &HostFunctions,
    options: CompileOptions,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut c = Compiler::new(&checked.analysis);
    c.bind_externs(&checked.program, host, options);
    c.declared_aggregates(&checked.program);
    let tiers = c.tiers(&checked.program);
    let groups: Vec<GroupPlan> = c
        .syms
        .groups
        .iter()
        .map(|(name, res)| GroupPlan {
            name: name.as_str().into(),
            resolution: *res,
        })
        .collect();
    let mut rules = Vec::new();
    for item in &checked.program.items {
        if let ItemKind::Rule(r) = &item.kind {
            rules.push((r.as_ref(), item.span));
        }
    }
    if rules.len() > MAX_RULES {
        c.diags.push(Diagnostic::new(
            Code::TooMany,
            Span::default(),
            format!("more than {MAX_RULES} rules and campaigns"),
        ));
    }
    let mut plans: Vec<(RulePlan, Vec<String>, Option<&Target>)> = Vec::new();
    for (r, span) in &rules {
        let group = r
            .group
            .as_ref()
            .and_then(|g| groups.iter().position(|x| *x.name == *g.name.as_str()))
            .and_then(|i| u16::try_from(i).ok());
        plans.push(c.rule(r, *span, group));
    }
    // Visiting order: priority descending, then declaration order (stable).
    plans.sort_by_key(|p| std::cmp::Reverse(p.0.priority));
    let tags: Vec<Vec<String>> = plans.iter().map(|p| p.1.clone()).collect();
    let ids: Vec<Arc<str>> = plans.iter().map(|p| p.0.id.clone()).collect();
    let earns: Vec<bool> = plans.iter().map(|p| p.0.earns()).collect();
    let words = plans.len().div_ceil(64);
    let mut rules: Vec<RulePlan> = Vec::with_capacity(plans.len());
    for (mut rule, _, target) in plans {
        if let (Action::Multiply { targets, .. }, Some(target)) = (&mut rule.action, target) {
            *targets = vec![0u64; words];
            for (i, earn) in earns.iter().enumerate() {
                let hit = *earn
                    && match target {
                        Target::Earned(_) => true,
                        Target::Tag(t) => tags[i].contains(&t.name),
                        Target::Rule(id) => *ids[i] == *id.name,
                    };
                if hit {
                    if let Some(w) = targets.get_mut(i / 64) {
                        *w |= 1u64 << (i % 64);
                    }
                }
            }
        }
        rules.push(rule);
    }
    let dispatch = c.dispatch(&mut rules);
    let mut emitted: Vec<(Arc<str>, u8)> = Vec::new();
    for a in &mut c.aggregates {
        let class = (a.counter.clone(), key_class(a.window));
        a.emits = !emitted.contains(&class);
        if a.emits {
            emitted.push(class);
        }
    }
    if !c.diags.is_empty() {
        return Err(c.diags);
    }
    let syms = c.syms;
    let hash = content_hash(&checked.program, source, &c.externs, &c.stubbed);
    let expiry = match &syms.expiry {
        Expiry::Never => ExpiryPlan::Never,
        Expiry::After(d) => ExpiryPlan::After(Length::of(d)),
        Expiry::AtEndOf { period, plus } => {
            ExpiryPlan::AtEndOf(*period, plus.as_ref().map(Length::of).unwrap_or_default())
        }
    };
    let mut plan = Plan {
        stamp: RulesetStamp {
            id: syms.name.as_str().into(),
            version: syms.version,
            hash: hash.into(),
        },
        currency: syms.currency,
        tz: syms.timezone,
        zone: crate::zone::table(syms.timezone),
        week_start: syms.week_start,
        pending: syms.pending.as_ref().map(Length::of),
        expiry,
        source: source.into(),
        nodes: c.nodes,
        spans: c.spans,
        args: c.args,
        list_elems: c.list_elems,
        sets: c.sets,
        rules,
        groups,
        aggregates: c.aggregates,
        tier_names: tiers.iter().map(|t| t.name.clone()).collect(),
        tiers,
        externs: c.externs,
        dispatch,
        stubbed: c.stubbed,
        conds: Vec::new(),
        cond_of: Vec::new(),
    };
    plan.compile_conds();
    Ok(plan)
}

impl Plan {
    /// Parses, checks and compiles `source` with the host's functions.
    pub fn compile(source: &str, host: &HostFunctions) -> Result<Plan, Vec<Diagnostic>> {
        compile_source(source, host)
    }
}

fn content_hash(
    program: &Program,
    source: &str,
    externs: &[ExternPlan],
    stubbed: &[String],
) -> String {
    let mut h = Sha256::new();
    h.update(b"rwd-plan-v1\0");
    h.update(crate::fmt::format_program(program, source).as_bytes());
    h.update(b"\0tzdb:");
    h.update(chrono_tz::IANA_TZDB_VERSION.as_bytes());
    for x in externs {
        h.update(b"\0host:");
        h.update(signature_text(&x.name, &x.params, x.ret).as_bytes());
        if stubbed.iter().any(|s| **s == *x.name) {
            h.update(b" stub");
        }
    }
    hex::encode(h.finalize())
}

/// The value of a constant expression of a checked program (test values).
pub(crate) fn constant(analysis: &Analysis, e: &Expr) -> Option<Val<'static>> {
    let mut c = Compiler::new(analysis);
    let id = c.expr(e);
    match c.nodes.get(id as usize) {
        Some(Node::Const(v)) if c.diags.is_empty() => Some(v.clone()),
        _ => None,
    }
}

/// Resolves a local date-time in a zone: the earlier instant in a fold, the
/// first valid instant after a gap.
pub(crate) fn resolve_local(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    use chrono::offset::LocalResult;
    use chrono::{Offset, TimeZone};
    let mut probe = local;
    // Gaps are at most a few hours long; step in minutes past them.
    for _ in 0..(6 * 60) {
        // `tz.from_local_datetime(&probe)`, without building the zoned
        // date-times: the same instants.
        let utc = |o: &chrono_tz::TzOffset| probe.checked_sub_offset(o.fix());
        let found = match tz.offset_from_local_datetime(&probe) {
            LocalResult::Single(o) => utc(&o),
            LocalResult::Ambiguous(a, b) => match (utc(&a), utc(&b)) {
                (Some(x), Some(y)) => Some(x.min(y)),
                _ => None,
            },
            LocalResult::None => None,
        };
        match found {
            Some(t) => return t.and_utc(),
            None => {
                probe = match probe.checked_add_signed(TimeDelta::minutes(1)) {
                    Some(p) => p,
                    None => break,
                }
            }
        }
    }
    local.and_utc()
}

/// The first instant of a local date in a zone.
pub(crate) fn start_of_day(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    resolve_local(date.and_time(chrono::NaiveTime::MIN), tz)
}

fn moment(m: &Moment, tz: Tz, end: bool) -> Option<DateTime<Utc>> {
    match m {
        Moment::Date(d, _) => {
            let day = if end { d.succ_opt()? } else { *d };
            Some(start_of_day(day, tz))
        }
        Moment::DateTime(dt, _) => {
            let t = datetime_lit(dt, tz)?;
            // An end date-time is inclusive.
            if end {
                t.checked_add_signed(TimeDelta::nanoseconds(1))
            } else {
                Some(t)
            }
        }
    }
}

pub(crate) fn datetime_lit(dt: &DateTimeLit, tz: Tz) -> Option<DateTime<Utc>> {
    match dt.offset_minutes {
        Some(off) => dt
            .local
            .checked_sub_signed(TimeDelta::minutes(i64::from(off)))
            .map(|t| t.and_utc()),
        None => Some(resolve_local(dt.local, tz)),
    }
}

/// The window of a window spec.
pub(crate) fn window_text(w: WindowKind) -> String {
    crate::fmt::window(w)
}

/// Which counter instances two windows share: day and rolling windows both
/// count in day buckets.
fn key_class(w: Window) -> u8 {
    match w {
        Window::Day | Window::Rolling(_) => 0,
        Window::Week(_) => 1,
        Window::Month => 2,
        Window::Quarter => 3,
        Window::Year => 4,
        Window::Lifetime => 5,
    }
}

/// Pre-filter of a rule from its `when`: the earning kinds it may match
/// (bit 0 purchase, bit 1 authorization) and the MCC ranges it requires
/// (`None`: any MCC or none), and whether the `when` holds exactly for the
/// transactions the filter lets through (then the dispatch index decides
/// it and evaluation need not compute it).
#[derive(Debug, Clone)]
struct Pre {
    kinds: u8,
    mcc: Option<Vec<(u32, u32)>>,
    /// The member tiers it may hold for ([`tier_bit`]).
    tiers: u64,
    exact: bool,
}

const ALL_KINDS: u8 = 0b11;
const ALL_TIERS: u64 = u64::MAX;
const MAX_MCC: u32 = u16::MAX as u32;

fn kind_bit(k: TxKind) -> u8 {
    match k {
        TxKind::Purchase => 1,
        TxKind::Authorization => 2,
        _ => 0,
    }
}

fn normalise(mut ranges: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn complement(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in ranges {
        if *lo > next {
            out.push((next, lo - 1));
        }
        next = hi.saturating_add(1);
    }
    if next <= MAX_MCC {
        out.push((next, MAX_MCC));
    }
    out
}

fn intersect(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for (alo, ahi) in a {
        for (blo, bhi) in b {
            let lo = (*alo).max(*blo);
            let hi = (*ahi).min(*bhi);
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    normalise(out)
}

pub(crate) struct Compiler<'p> {
    analysis: &'p Analysis,
    syms: &'p Symbols,
    tz: Tz,
    nodes: Vec<Node>,
    spans: Vec<Span>,
    args: Vec<NodeId>,
    list_elems: Vec<ListItem>,
    sets: Vec<ConstSet>,
    category_sets: HashMap<String, u32>,
    agg_by_name: HashMap<String, u16>,
    agg_by_window: HashMap<(Measure, WindowKind), u16>,
    aggregates: Vec<AggPlan>,
    extern_index: HashMap<String, u16>,
    externs: Vec<ExternPlan>,
    stubbed: Vec<String>,
    diags: Vec<Diagnostic>,
}

impl<'p> Compiler<'p> {
    fn new(analysis: &'p Analysis) -> Compiler<'p> {
        Compiler {
            analysis,
            syms: &analysis.symbols,
            tz: analysis.symbols.timezone,
            nodes: Vec::new(),
            spans: Vec::new(),
            args: Vec::new(),
            list_elems: Vec::new(),
            sets: Vec::new(),
            category_sets: HashMap::new(),
            agg_by_name: HashMap::new(),
            agg_by_window: HashMap::new(),
            aggregates: Vec::new(),
            extern_index: HashMap::new(),
            externs: Vec::new(),
            stubbed: Vec::new(),
            diags: Vec::new(),
        }
    }

    fn week_start(&self) -> Weekday {
        self.syms.week_start
    }

    fn push(&mut self, node: Node, span: Span) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(node);
        self.spans.push(span);
        id
    }

    fn konst(&self, id: NodeId) -> Option<&Val<'static>> {
        match self.nodes.get(id as usize) {
            Some(Node::Const(v)) => Some(v),
            _ => None,
        }
    }

    fn fold_or_push(
        &mut self,
        node: Node,
        span: Span,
        folded: Option<Result<Val<'static>, crate::plan::EvalError>>,
    ) -> NodeId {
        match folded {
            Some(Ok(v)) => self.push(Node::Const(v), span),
            Some(Err(e)) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::OutOfRange,
                        span,
                        format!("this constant cannot be computed: {e}"),
                    )
                    .with_hint("the result must stay within 28 significant digits and never divide by zero"),
                );
                self.push(node, span)
            }
            None => self.push(node, span),
        }
    }

    // ---- host functions

    fn bind_externs(&mut self, program: &Program, host: &HostFunctions, options: CompileOptions) {
        for item in &program.items {
            let ItemKind::Extern(x) = &item.kind else {
                continue;
            };
            if self.extern_index.contains_key(&x.name.name) {
                continue;
            }
            let params: Vec<TypeName> = x.params.iter().map(|p| p.ty).collect();
            let declared = signature_text(&x.name.name, &params, x.ret);
            let func = match host.get(&x.name.name) {
                Some(f) if f.params == params && f.ret == x.ret => f.func.clone(),
                Some(f) => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::ArgumentType,
                            x.name.span,
                            format!(
                                "host function `{}` is registered as {}, but declared as {declared}",
                                x.name.name,
                                signature_text(&x.name.name, &f.params, f.ret)
                            ),
                        )
                        .with_hint("make the `extern fn` declaration match the function the host registers"),
                    );
                    continue;
                }
                None if options.stub_missing_host_functions => {
                    self.stubbed.push(x.name.name.clone());
                    let value = default_of(x.ret);
                    Arc::new(move |_: &[crate::value::Value]| Ok(value.clone()))
                }
                None => {
                    self.diags.push(
                        Diagnostic::new(
                            Code::UnknownFunction,
                            x.name.span,
                            format!("host function `{declared}` is not registered by the host"),
                        )
                        .with_hint("register it with HostFunctions::register before compiling, or remove the declaration"),
                    );
                    continue;
                }
            };
            let index = self.externs.len() as u16;
            self.extern_index.insert(x.name.name.clone(), index);
            self.externs.push(ExternPlan {
                name: x.name.name.as_str().into(),
                params,
                ret: x.ret,
                func,
            });
        }
    }

    // ---- aggregates and tiers

    fn declared_aggregates(&mut self, program: &Program) {
        for item in &program.items {
            let ItemKind::Aggregate(a) = &item.kind else {
                continue;
            };
            if self.agg_by_name.contains_key(&a.name.name) {
                continue;
            }
            let filter = a.filter.as_ref().map(|f| self.expr(f));
            let slot = self.aggregates.len() as u16;
            self.aggregates.push(AggPlan {
                counter: format!("agg.{}", a.name.name).into(),
                label: a.name.name.clone(),
                spend: a.measure == Measure::Spend,
                window: a.window.kind.to_core(self.week_start()),
                filter,
                emits: true,
            });
            self.agg_by_name.insert(a.name.name.clone(), slot);
        }
    }

    fn window_aggregate(&mut self, measure: Measure, window: WindowKind) -> u16 {
        let key = (measure, window);
        if let Some(slot) = self.agg_by_window.get(&key) {
            return *slot;
        }
        let slot = self.aggregates.len() as u16;
        self.aggregates.push(AggPlan {
            counter: measure.as_str().into(),
            label: format!("{}({})", measure.as_str(), window_text(window)),
            spend: measure == Measure::Spend,
            window: window.to_core(self.week_start()),
            filter: None,
            emits: true,
        });
        self.agg_by_window.insert(key, slot);
        slot
    }

    fn tiers(&mut self, program: &Program) -> Vec<TierPlan> {
        let mut tiers = Vec::new();
        for item in &program.items {
            if let ItemKind::Tier(t) = &item.kind {
                let qualify = t.qualify.as_ref().map(|q| self.expr(q));
                tiers.push(TierPlan {
                    name: t.name.name.as_str().into(),
                    qualify,
                    grace: t.grace.as_ref().map(Length::of),
                });
            }
        }
        tiers
    }

    // ---- rules

    fn rule<'r>(
        &mut self,
        r: &'r RuleDecl,
        _span: Span,
        group: Option<u16>,
    ) -> (RulePlan, Vec<String>, Option<&'r Target>) {
        let range = r.effective.as_ref().or(r.schedule.as_ref());
        let from = range
            .and_then(|x| x.from.as_ref())
            .and_then(|m| moment(m, self.tz, false));
        let until = range
            .and_then(|x| x.to.as_ref())
            .and_then(|m| moment(m, self.tz, true));
        let audience = r.audience.as_ref().map(|a| self.expr(a));
        let when = r.when().map(|w| self.expr(w));
        let mut target_ref = None;
        let action = match r.action().map(|s| &s.kind) {
            Some(StmtKind::Multiply { target, factor }) => {
                target_ref = Some(target);
                let target_text = match target {
                    Target::Earned(_) => "earned".to_string(),
                    Target::Tag(t) => format!("tag {}", t.name),
                    Target::Rule(id) => id.name.clone(),
                };
                Action::Multiply {
                    factor: self.expr(factor),
                    targets: Vec::new(),
                    target_text,
                }
            }
            Some(StmtKind::Earn(e)) => Action::Earn(self.expr(e)),
            _ => Action::Earn(self.push(Node::Const(Val::Int(0)), r.id.span)),
        };
        let mut caps = Vec::new();
        for cap in r.caps() {
            let (window, text) = match cap.scope {
                CapScope::Transaction(_) => {
                    (None, format!("{} points per transaction", cap.limit.value))
                }
                CapScope::Member(w) => (
                    Some(w.kind.to_core(self.week_start())),
                    format!(
                        "{} points per member per {}",
                        cap.limit.value,
                        window_text(w.kind)
                    ),
                ),
            };
            caps.push(CapPlan {
                limit: cap.limit.value,
                window,
                text,
            });
        }
        let campaign = r.kind == RuleKind::Campaign;
        let component = if campaign {
            ComponentKind::Campaign
        } else if matches!(action, Action::Multiply { .. }) {
            ComponentKind::Multiplier
        } else {
            ComponentKind::Earn
        };
        let budget = r.budget.map(|b| {
            (
                Arc::<str>::from(format!("{}/{}", self.syms.name, r.id.name)),
                Points(b.value),
            )
        });
        let plan = RulePlan {
            id: r.id.name.as_str().into(),
            label: r
                .description
                .as_ref()
                .map_or_else(|| r.id.name.as_str().into(), |d| d.value.as_str().into()),
            campaign,
            component,
            priority: r.priority.map_or(0, |p| p.value),
            from,
            until,
            audience,
            when,
            action,
            rounding: r.rounding().unwrap_or(self.syms.rounding),
            caps,
            counter: format!("cap.{}", r.id.name).into(),
            group,
            budget,
            when_by_dispatch: false,
            audience_by_dispatch: false,
            tiers: u64::MAX,
            earn_floor: None,
        };
        (
            plan,
            r.tags.iter().map(|t| t.name.clone()).collect(),
            target_ref,
        )
    }

    // ---- dispatch

    fn pre(&self, node: NodeId) -> Pre {
        let any = Pre {
            tiers: ALL_TIERS,
            kinds: ALL_KINDS,
            mcc: None,
            exact: false,
        };
        let Some(n) = self.nodes.get(node as usize) else {
            return any;
        };
        match n {
            Node::Const(Val::Bool(false)) => Pre {
                tiers: ALL_TIERS,
                kinds: 0,
                mcc: None,
                exact: true,
            },
            Node::Const(Val::Bool(true)) => Pre { exact: true, ..any },
            Node::And(a, b) => {
                let (a, b) = (self.pre(*a), self.pre(*b));
                Pre {
                    exact: a.exact && b.exact,
                    tiers: a.tiers & b.tiers,
                    kinds: a.kinds & b.kinds,
                    mcc: match (a.mcc, b.mcc) {
                        (Some(x), Some(y)) => Some(intersect(&x, &y)),
                        (x, None) => x,
                        (None, y) => y,
                    },
                }
            }
            Node::Or(a, b) => {
                let (a, b) = (self.pre(*a), self.pre(*b));
                // A side that can never hold adds nothing to the union.
                if a.kinds == 0 {
                    return b;
                }
                if b.kinds == 0 {
                    return a;
                }
                // A union of two (kinds × MCCs × tiers) products is one
                // product when they differ in one dimension at most.
                let differ = usize::from(a.kinds != b.kinds)
                    + usize::from(a.mcc != b.mcc)
                    + usize::from(a.tiers != b.tiers);
                Pre {
                    exact: a.exact && b.exact && differ <= 1,
                    tiers: a.tiers | b.tiers,
                    kinds: a.kinds | b.kinds,
                    mcc: match (a.mcc, b.mcc) {
                        (Some(mut x), Some(y)) => {
                            x.extend(y);
                            Some(normalise(x))
                        }
                        _ => None,
                    },
                }
            }
            Node::Cmp(op, a, b)
                if matches!(
                    (self.nodes.get(*a as usize), self.nodes.get(*b as usize)),
                    (Some(Node::MemberTier), Some(Node::Const(Val::Tier(_))))
                        | (Some(Node::Const(Val::Tier(_))), Some(Node::MemberTier))
                ) =>
            {
                let (op, k) = match (self.nodes.get(*a as usize), self.nodes.get(*b as usize)) {
                    (_, Some(Node::Const(Val::Tier(k)))) => (*op, *k),
                    (Some(Node::Const(Val::Tier(k))), _) => (op.flipped(), *k),
                    _ => return any,
                };
                // An absent tier makes the comparison unknown: never holds.
                let mut tiers = 0u64;
                for rank in 0..self.syms.tiers.len().min(MAX_TIERS) {
                    let r = rank as u16;
                    let holds = match op {
                        Rel::Eq => r == k,
                        Rel::Ne => r != k,
                        Rel::Lt => r < k,
                        Rel::Le => r <= k,
                        Rel::Gt => r > k,
                        Rel::Ge => r >= k,
                    };
                    if holds {
                        tiers |= 1 << rank;
                    }
                }
                Pre {
                    kinds: ALL_KINDS,
                    mcc: None,
                    tiers,
                    exact: true,
                }
            }
            Node::Cmp(op @ (Rel::Eq | Rel::Ne), a, b) => {
                let (field, value) =
                    match (self.nodes.get(*a as usize), self.nodes.get(*b as usize)) {
                        (Some(Node::Tx(f)), Some(Node::Const(v)))
                        | (Some(Node::Const(v)), Some(Node::Tx(f))) => (*f, v),
                        _ => return any,
                    };
                match (field, value) {
                    (TxRead::Kind, Val::Kind(k)) => Pre {
                        tiers: ALL_TIERS,
                        kinds: if *op == Rel::Eq {
                            kind_bit(*k)
                        } else {
                            ALL_KINDS & !kind_bit(*k)
                        },
                        mcc: None,
                        exact: true,
                    },
                    (TxRead::Mcc, Val::Int(m)) if *op == Rel::Eq => Pre {
                        tiers: ALL_TIERS,
                        kinds: ALL_KINDS,
                        mcc: Some(match u32::try_from(*m) {
                            Ok(m) if m <= MAX_MCC => vec![(m, m)],
                            _ => Vec::new(),
                        }),
                        exact: true,
                    },
                    _ => any,
                }
            }
            Node::InSet { value, set, negate } => {
                let (Some(Node::Tx(field)), Some(set)) = (
                    self.nodes.get(*value as usize),
                    self.sets.get(*set as usize),
                ) else {
                    return any;
                };
                match (field, set) {
                    (TxRead::Mcc, ConstSet::Ints(ranges)) => {
                        let r: Vec<(u32, u32)> = ranges
                            .iter()
                            .filter(|(_, hi)| *hi >= 0)
                            .map(|(lo, hi)| {
                                (
                                    u32::try_from((*lo).max(0)).unwrap_or(0).min(MAX_MCC),
                                    u32::try_from(*hi).unwrap_or(MAX_MCC).min(MAX_MCC),
                                )
                            })
                            .collect();
                        let r = normalise(r);
                        Pre {
                            tiers: ALL_TIERS,
                            kinds: ALL_KINDS,
                            mcc: Some(if *negate { complement(&r) } else { r }),
                            exact: true,
                        }
                    }
                    (TxRead::Kind, ConstSet::Other(elems)) => {
                        let mut kinds = 0u8;
                        for (v, range) in elems {
                            match (v, range) {
                                (Val::Kind(k), None) => kinds |= kind_bit(*k),
                                _ => return any,
                            }
                        }
                        Pre {
                            tiers: ALL_TIERS,
                            kinds: if *negate { ALL_KINDS & !kinds } else { kinds },
                            mcc: None,
                            exact: true,
                        }
                    }
                    _ => any,
                }
            }
            _ => any,
        }
    }

    /// Whether evaluating a node may fail (overflow, division by zero, a
    /// host function, a counter sum, a line-item limit).
    fn fallible(&self, node: NodeId) -> bool {
        let Some(n) = self.nodes.get(node as usize) else {
            return true;
        };
        match n {
            Node::Const(_)
            | Node::Tx(_)
            | Node::TxAttr(..)
            | Node::MemberTier
            | Node::MemberEnrolled
            | Node::MemberBalance
            | Node::MemberAttr(..)
            | Node::Item(_) => false,
            Node::Not(x) => self.fallible(*x),
            Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) => {
                self.fallible(*a) || self.fallible(*b)
            }
            Node::InSet { value, .. } => self.fallible(*value),
            Node::Builtin(_, (start, len)) => self
                .args
                .get(*start as usize..(*start + *len) as usize)
                .is_none_or(|ids| ids.iter().any(|x| self.fallible(*x))),
            Node::InList { .. }
            | Node::Neg(_)
            | Node::Arith(..)
            | Node::Aggregate(_)
            | Node::Extern(..)
            | Node::ItemFold { .. } => true,
        }
    }

    fn dispatch(&self, rules: &mut [RulePlan]) -> Dispatch {
        let pres: Vec<Pre> = rules
            .iter()
            .map(|r| match r.when {
                Some(w) => self.pre(w),
                None => Pre {
                    kinds: ALL_KINDS,
                    mcc: None,
                    tiers: ALL_TIERS,
                    exact: true,
                },
            })
            .collect();
        for (r, p) in rules.iter_mut().zip(&pres) {
            // Rules are filtered by tier before they are evaluated only when
            // evaluating their conditions cannot fail: skipping them then
            // changes nothing, errors included.
            let audience = match r.audience {
                Some(a) if !self.fallible(a) => Some(self.pre(a)),
                Some(_) => None,
                None => Some(Pre {
                    kinds: ALL_KINDS,
                    mcc: None,
                    tiers: ALL_TIERS,
                    exact: true,
                }),
            };
            let when_ok = r.when.is_none_or(|w| !self.fallible(w));
            let filtered = when_ok && audience.is_some();
            r.tiers = match (&audience, filtered) {
                (Some(a), true) => a.tiers & p.tiers,
                _ => ALL_TIERS,
            };
            r.when_by_dispatch = p.exact && (filtered || p.tiers == ALL_TIERS);
            r.audience_by_dispatch = audience.as_ref().is_some_and(|a| {
                a.exact
                    && a.kinds == ALL_KINDS
                    && a.mcc.is_none()
                    && (filtered || a.tiers == ALL_TIERS)
            });
        }
        let mut bounds = BTreeSet::new();
        for p in &pres {
            for (lo, hi) in p.mcc.iter().flatten() {
                bounds.insert(*lo);
                if *hi < MAX_MCC {
                    bounds.insert(hi + 1);
                }
            }
        }
        let mut d = Dispatch {
            bounds: bounds.into_iter().collect(),
            table: Vec::new(),
            lists: Vec::new(),
        };
        // Each rule is pushed into the segments its MCC ranges cover (every
        // range starts and ends on a bound, so it covers whole segments):
        // linear in the size of the index, not rules × segments.
        let row = d.row();
        let mut seen: HashMap<Vec<u16>, u32> = HashMap::new();
        for kind in [1u8, 2u8] {
            let mut lists: Vec<Vec<u16>> = vec![Vec::new(); row];
            for (i, p) in pres.iter().enumerate() {
                if p.kinds & kind == 0 {
                    continue;
                }
                let i = i as u16;
                match &p.mcc {
                    None => lists.iter_mut().for_each(|l| l.push(i)),
                    Some(ranges) => {
                        for (lo, hi) in ranges {
                            let first = 1 + d.bounds.partition_point(|b| b <= lo);
                            let last = 1 + d.bounds.partition_point(|b| b <= hi);
                            for l in lists.iter_mut().take(last + 1).skip(first) {
                                if l.last() != Some(&i) {
                                    l.push(i);
                                }
                            }
                        }
                    }
                }
            }
            for list in lists {
                let id = match seen.get(&list) {
                    Some(id) => *id,
                    None => {
                        let id = d.lists.len() as u32;
                        seen.insert(list.clone(), id);
                        d.lists.push(list);
                        id
                    }
                };
                d.table.push(id);
            }
        }
        d
    }

    // ---- expressions

    pub(crate) fn expr(&mut self, e: &Expr) -> NodeId {
        let span = e.span;
        match &e.kind {
            ExprKind::Paren(inner) => {
                let id = self.expr(inner);
                // Keep the parenthesised span for explain.
                if let Some(s) = self.spans.get_mut(id as usize) {
                    *s = span;
                }
                id
            }
            ExprKind::Literal(lit) => {
                let v = self.literal(lit);
                self.push(Node::Const(v), span)
            }
            ExprKind::Name(_) | ExprKind::Path(_) => self.reference(e),
            ExprKind::Unary { op, operand } => {
                let x = self.expr(operand);
                let (node, folded) = match op {
                    UnaryOp::Not => (
                        Node::Not(x),
                        self.konst(x).map(|v| Ok(crate::eval::not(v).into_owned())),
                    ),
                    UnaryOp::Neg => (
                        Node::Neg(x),
                        self.konst(x)
                            .map(|v| crate::eval::neg(v).map(Val::into_owned)),
                    ),
                };
                self.fold_or_push(node, span, folded)
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary(e, *op, lhs, rhs),
            ExprKind::List(_) => {
                self.diags.push(Diagnostic::new(
                    Code::ListType,
                    span,
                    "a list is only used on the right of `in`",
                ));
                self.push(Node::Const(Val::Absent), span)
            }
            ExprKind::Call { args, .. } => {
                let ids: Vec<NodeId> = args.iter().map(|a| self.expr(a)).collect();
                let start = self.args.len() as u32;
                self.args.extend(&ids);
                let range = (start, ids.len() as u32);
                match self.analysis.resolution(e) {
                    Some(Resolved::Builtin(b)) => {
                        let consts: Option<Vec<Val<'static>>> =
                            ids.iter().map(|i| self.konst(*i).cloned()).collect();
                        let folded = consts.map(|vals| {
                            crate::eval::builtin(*b, &vals, self.tz).map(Val::into_owned)
                        });
                        self.fold_or_push(Node::Builtin(*b, range), span, folded)
                    }
                    Some(Resolved::Extern(name)) => match self.extern_index.get(name) {
                        Some(i) => self.push(Node::Extern(*i, range), span),
                        // Unbound (a diagnostic was reported when binding).
                        None => self.push(Node::Const(Val::Absent), span),
                    },
                    _ => self.push(Node::Const(Val::Absent), span),
                }
            }
            ExprKind::WindowAggregate { measure, window } => {
                let slot = self.window_aggregate(*measure, window.kind);
                self.push(Node::Aggregate(slot), span)
            }
            ExprKind::ItemAggregate {
                func,
                filter,
                value,
            } => {
                let filter = filter.as_ref().map(|f| self.expr(f));
                let value = value.as_ref().map(|v| self.expr(v));
                let zero = match (func, self.analysis.type_of(e)) {
                    (ItemFn::Count, _) | (_, Type::Integer) => Val::Int(0),
                    (_, Type::Money) => Val::Money(rust_decimal::Decimal::ZERO),
                    (_, Type::Points) => Val::Points(rust_decimal::Decimal::ZERO),
                    _ => Val::Dec(rust_decimal::Decimal::ZERO),
                };
                self.push(
                    Node::ItemFold {
                        func: *func,
                        filter,
                        value,
                        zero,
                    },
                    span,
                )
            }
        }
    }

    fn literal(&mut self, lit: &Literal) -> Val<'static> {
        match lit {
            Literal::Integer(i) => Val::Int(*i),
            Literal::Decimal(d) => Val::Dec(*d),
            Literal::Money { amount, .. } => Val::Money(*amount),
            Literal::String(s) => Val::Str(s.clone().into()),
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Date(d) => Val::Date(*d),
            Literal::DateTime(dt) => datetime_lit(dt, self.tz).map_or(Val::Absent, Val::DateTime),
            Literal::Duration(d) => Val::Duration(Length::of(d)),
        }
    }

    fn reference(&mut self, e: &Expr) -> NodeId {
        let span = e.span;
        let node = match self.analysis.resolution(e) {
            Some(Resolved::TxField(f)) => Node::Tx(match f {
                TxField::Amount => TxRead::Amount,
                TxField::Currency => TxRead::Currency,
                TxField::Kind => TxRead::Kind,
                TxField::Mcc => TxRead::Mcc,
                TxField::Merchant => TxRead::Merchant,
                TxField::Channel => TxRead::Channel,
                TxField::Presence => TxRead::Presence,
                TxField::Country => TxRead::Country,
                TxField::Time => TxRead::Time,
            }),
            Some(Resolved::TxAttribute(name, ty)) => Node::TxAttr(name.as_str().into(), *ty),
            Some(Resolved::MemberField(f)) => match f {
                MemberField::Tier => Node::MemberTier,
                MemberField::Enrolled => Node::MemberEnrolled,
                MemberField::Balance => Node::MemberBalance,
            },
            Some(Resolved::MemberAttribute(name, ty)) => {
                Node::MemberAttr(name.as_str().into(), *ty)
            }
            Some(Resolved::ItemField(f)) => Node::Item(*f),
            Some(Resolved::Aggregate(name)) => match self.agg_by_name.get(name) {
                Some(slot) => Node::Aggregate(*slot),
                None => Node::Const(Val::Absent),
            },
            Some(Resolved::Tier(rank)) => {
                Node::Const(Val::Tier(u16::try_from(*rank).unwrap_or(u16::MAX)))
            }
            Some(Resolved::Kind(k)) => Node::Const(Val::Kind(*k)),
            Some(Resolved::Presence(p)) => Node::Const(Val::Presence(*p)),
            Some(Resolved::Weekday(w)) => Node::Const(Val::Weekday(*w)),
            Some(Resolved::Currency(c)) => Node::Const(Val::Currency(*c)),
            // A category is only read on the right of `in` (see `binary`).
            _ => Node::Const(Val::Absent),
        };
        self.push(node, span)
    }

    fn category_set(&mut self, name: &str) -> u32 {
        if let Some(id) = self.category_sets.get(name) {
            return *id;
        }
        let ranges = self
            .syms
            .categories
            .get(name)
            .map(|c| {
                let mut r: Vec<(i64, i64)> = c
                    .ranges
                    .iter()
                    .map(|(lo, hi)| (i64::from(*lo), i64::from(*hi)))
                    .collect();
                r.sort_unstable();
                merge_i64(r)
            })
            .unwrap_or_default();
        let id = self.sets.len() as u32;
        self.sets.push(ConstSet::Ints(ranges));
        self.category_sets.insert(name.to_string(), id);
        id
    }

    fn binary(&mut self, e: &Expr, op: BinaryOp, lhs: &Expr, rhs: &Expr) -> NodeId {
        let span = e.span;
        if matches!(op, BinaryOp::In | BinaryOp::NotIn) {
            let negate = op == BinaryOp::NotIn;
            let value = self.expr(lhs);
            let rhs_inner = strip_parens(rhs);
            if let Some(Resolved::Category(name)) = self.analysis.resolution(rhs_inner) {
                let name = name.clone();
                let set = self.category_set(&name);
                let folded = self.konst(value).and_then(|v| {
                    self.sets
                        .get(set as usize)
                        .map(|s| Ok(three(s.contains(v), negate)))
                });
                return self.fold_or_push(Node::InSet { value, set, negate }, span, folded);
            }
            if let ExprKind::List(elems) = &rhs_inner.kind {
                return self.list_membership(value, elems, negate, span, rhs_inner.span);
            }
            let _ = self.expr(rhs);
            return self.push(Node::Const(Val::Absent), span);
        }
        let a = self.expr(lhs);
        let b = self.expr(rhs);
        let both = match (self.konst(a), self.konst(b)) {
            (Some(x), Some(y)) => Some((x.clone(), y.clone())),
            _ => None,
        };
        let (node, folded) = match op {
            BinaryOp::And => (
                Node::And(a, b),
                both.map(|(x, y)| Ok(crate::eval::and(&x, &y).into_owned())),
            ),
            BinaryOp::Or => (
                Node::Or(a, b),
                both.map(|(x, y)| Ok(crate::eval::or(&x, &y).into_owned())),
            ),
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => {
                let c = match op {
                    BinaryOp::Eq => Rel::Eq,
                    BinaryOp::Ne => Rel::Ne,
                    BinaryOp::Lt => Rel::Lt,
                    BinaryOp::Le => Rel::Le,
                    BinaryOp::Gt => Rel::Gt,
                    _ => Rel::Ge,
                };
                (
                    Node::Cmp(c, a, b),
                    both.map(|(x, y)| Ok(crate::eval::compare(c, &x, &y))),
                )
            }
            _ => {
                let o = match op {
                    BinaryOp::Add => ArithOp::Add,
                    BinaryOp::Sub => ArithOp::Sub,
                    BinaryOp::Mul => ArithOp::Mul,
                    _ => ArithOp::Div,
                };
                (
                    Node::Arith(o, a, b),
                    both.map(|(x, y)| crate::eval::arith(o, &x, &y, self.tz).map(Val::into_owned)),
                )
            }
        };
        self.fold_or_push(node, span, folded)
    }

    fn list_membership(
        &mut self,
        value: NodeId,
        elems: &[ListElem],
        negate: bool,
        span: Span,
        list_span: Span,
    ) -> NodeId {
        let mut items = Vec::with_capacity(elems.len());
        for el in elems {
            items.push(match el {
                ListElem::Single(x) => ListItem::One(self.expr(x)),
                ListElem::Range(lo, hi) => ListItem::Range(self.expr(lo), self.expr(hi)),
            });
        }
        let all_const = items.iter().all(|i| match i {
            ListItem::One(x) => self.konst(*x).is_some(),
            ListItem::Range(a, b) => self.konst(*a).is_some() && self.konst(*b).is_some(),
        });
        if !all_const {
            let start = self.list_elems.len() as u32;
            self.list_elems.extend(&items);
            let _ = list_span;
            return self.push(
                Node::InList {
                    value,
                    elems: (start, items.len() as u32),
                    negate,
                },
                span,
            );
        }
        let consts: Vec<(Val<'static>, Option<Val<'static>>)> = items
            .iter()
            .filter_map(|i| match i {
                ListItem::One(x) => self.konst(*x).map(|v| (v.clone(), None)),
                ListItem::Range(a, b) => match (self.konst(*a), self.konst(*b)) {
                    (Some(a), Some(b)) => Some((a.clone(), Some(b.clone()))),
                    _ => None,
                },
            })
            .collect();
        let ints: Option<Vec<(i64, i64)>> = consts
            .iter()
            .map(|(a, b)| match (a, b) {
                (Val::Int(x), None) => Some((*x, *x)),
                (Val::Int(x), Some(Val::Int(y))) => Some((*x, *y)),
                _ => None,
            })
            .collect();
        let set = match ints {
            Some(mut r) => {
                r.sort_unstable();
                ConstSet::Ints(merge_i64(r))
            }
            None => ConstSet::Other(consts),
        };
        let id = self.sets.len() as u32;
        self.sets.push(set);
        let folded = self.konst(value).and_then(|v| {
            self.sets
                .get(id as usize)
                .map(|s| Ok(three(s.contains(v), negate)))
        });
        self.fold_or_push(
            Node::InSet {
                value,
                set: id,
                negate,
            },
            span,
            folded,
        )
    }
}

fn strip_parens(e: &Expr) -> &Expr {
    match &e.kind {
        ExprKind::Paren(inner) => strip_parens(inner),
        _ => e,
    }
}

fn three(found: Option<bool>, negate: bool) -> Val<'static> {
    match found {
        None => Val::Absent,
        Some(f) => Val::Bool(f != negate),
    }
}

fn merge_i64(sorted: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(sorted.len());
    for (lo, hi) in sorted {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcc_ranges_normalise_and_complement() {
        assert_eq!(normalise(vec![(5, 9), (1, 3), (4, 4)]), vec![(1, 9)]);
        assert_eq!(complement(&[(0, 9), (20, MAX_MCC)]), vec![(10, 19)]);
        assert_eq!(intersect(&[(0, 10)], &[(5, 20)]), vec![(5, 10)]);
    }

    #[test]
    fn resolving_matches_chronos_zoned_resolution() {
        use chrono::offset::LocalResult;
        use chrono::TimeZone;
        // The resolution before it read the offsets directly.
        let reference = |local: NaiveDateTime, tz: Tz| -> DateTime<Utc> {
            let mut probe = local;
            for _ in 0..(6 * 60) {
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) => return t.with_timezone(&Utc),
                    LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
                    LocalResult::None => {
                        probe = match probe.checked_add_signed(TimeDelta::minutes(1)) {
                            Some(p) => p,
                            None => break,
                        }
                    }
                }
            }
            local.and_utc()
        };
        for zone in [
            "America/New_York",
            "Europe/London",
            "Australia/Lord_Howe",
            "Pacific/Apia",
            "Asia/Kolkata",
        ] {
            let tz: Tz = zone.parse().unwrap_or(chrono_tz::UTC);
            let start = NaiveDate::from_ymd_opt(2011, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default();
            // Every 23 minutes and 13 seconds over three years: gaps, folds
            // and the day Samoa skipped.
            let mut t = start;
            while chrono::Datelike::year(&t) < 2014 {
                assert_eq!(resolve_local(t, tz), reference(t, tz), "{zone} {t}");
                t += TimeDelta::seconds(23 * 60 + 13);
            }
        }
    }

    #[test]
    fn local_times_resolve_across_dst() {
        let tz: Tz = "America/New_York".parse().unwrap_or(chrono_tz::UTC);
        // 2026-03-08 02:30 does not exist in New York: the first valid instant is 03:00 EDT.
        let gap = NaiveDate::from_ymd_opt(2026, 3, 8)
            .and_then(|d| d.and_hms_opt(2, 30, 0))
            .unwrap_or_default();
        assert_eq!(
            resolve_local(gap, tz).to_rfc3339(),
            "2026-03-08T07:00:00+00:00"
        );
        // 2026-11-01 01:30 happens twice: the earlier one (EDT) is taken.
        let fold = NaiveDate::from_ymd_opt(2026, 11, 1)
            .and_then(|d| d.and_hms_opt(1, 30, 0))
            .unwrap_or_default();
        assert_eq!(
            resolve_local(fold, tz).to_rfc3339(),
            "2026-11-01T05:30:00+00:00"
        );
    }
}
