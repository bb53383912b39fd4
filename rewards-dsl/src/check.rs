//! Name resolution and type checking.
//!
//! [`check`] walks a parsed [`Program`] once for declarations and once for
//! bodies, and reports *every* name, type and shape error it finds (it
//! never stops at the first). Its output, [`Analysis`], is what the
//! compiler builds on:
//!
//! - [`Symbols`]: the ruleset's settings and declarations, resolved (the
//!   currency as a `Currency`, the zone as a `Tz`, tiers in order, ...);
//! - the [`Type`] of every expression, indexed by [`ExprId`];
//! - what every name, path and call refers to ([`Resolved`]).
//!
//! Guarantee: if the diagnostics hold no error, every expression is
//! well-typed, every name resolves, every rule has exactly one action, and
//! every limit in [`crate::limits`] holds.

use crate::ast::*;
use crate::diag::{self, Code, Diagnostic};
use crate::limits::{MAX_AGGREGATES, MAX_ARGS, MAX_ROLLING_DAYS, MAX_RULES, MAX_STMTS, MAX_TIERS};
use crate::types::{arithmetic, Type};
use chrono::Weekday;
use rewards_core::{Currency, Presence, TxKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A transaction field readable as `tx.NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxField {
    /// `tx.amount` (money)
    Amount,
    /// `tx.currency` (currency)
    Currency,
    /// `tx.kind` (kind)
    Kind,
    /// `tx.mcc` (integer, optional)
    Mcc,
    /// `tx.merchant` (string, optional)
    Merchant,
    /// `tx.channel` (string, optional)
    Channel,
    /// `tx.presence` (presence, optional)
    Presence,
    /// `tx.country` (string, optional)
    Country,
    /// `tx.time` (datetime)
    Time,
}

impl TxField {
    /// Every field with its name and type.
    pub const ALL: [(TxField, &'static str, Type); 9] = [
        (TxField::Amount, "amount", Type::Money),
        (TxField::Currency, "currency", Type::Currency),
        (TxField::Kind, "kind", Type::Kind),
        (TxField::Mcc, "mcc", Type::Integer),
        (TxField::Merchant, "merchant", Type::String),
        (TxField::Channel, "channel", Type::String),
        (TxField::Presence, "presence", Type::Presence),
        (TxField::Country, "country", Type::String),
        (TxField::Time, "time", Type::DateTime),
    ];

    /// Whether a transaction may lack it (a condition reading it is then false).
    pub fn is_optional(self) -> bool {
        matches!(
            self,
            TxField::Mcc
                | TxField::Merchant
                | TxField::Channel
                | TxField::Presence
                | TxField::Country
        )
    }
}

/// A member field readable as `member.NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberField {
    /// `member.tier` (tier before the transaction; optional)
    Tier,
    /// `member.enrolled` (date; optional)
    Enrolled,
    /// `member.balance` (points)
    Balance,
}

impl MemberField {
    /// Every field with its name and type.
    pub const ALL: [(MemberField, &'static str, Type); 3] = [
        (MemberField::Tier, "tier", Type::Tier),
        (MemberField::Enrolled, "enrolled", Type::Date),
        (MemberField::Balance, "balance", Type::Points),
    ];
}

/// A line-item field readable as `item.NAME` inside `sum`/`count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemField {
    /// `item.sku` (string)
    Sku,
    /// `item.category` (string)
    Category,
    /// `item.quantity` (integer)
    Quantity,
    /// `item.amount` (money)
    Amount,
}

impl ItemField {
    /// Every field with its name and type.
    pub const ALL: [(ItemField, &'static str, Type); 4] = [
        (ItemField::Sku, "sku", Type::String),
        (ItemField::Category, "category", Type::String),
        (ItemField::Quantity, "quantity", Type::Integer),
        (ItemField::Amount, "amount", Type::Money),
    ];
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `floor(x)`
    Floor,
    /// `ceil(x)`
    Ceil,
    /// `round(x)` (half-even)
    Round,
    /// `min(a, b, ...)`
    Min,
    /// `max(a, b, ...)`
    Max,
    /// `weekday(t)`
    Weekday,
    /// `hour(t)`
    Hour,
    /// `date(t)`
    Date,
}

impl Builtin {
    /// Every built-in with its name.
    pub const ALL: [(Builtin, &'static str); 8] = [
        (Builtin::Floor, "floor"),
        (Builtin::Ceil, "ceil"),
        (Builtin::Round, "round"),
        (Builtin::Min, "min"),
        (Builtin::Max, "max"),
        (Builtin::Weekday, "weekday"),
        (Builtin::Hour, "hour"),
        (Builtin::Date, "date"),
    ];

    /// The built-in called `name`.
    pub fn by_name(name: &str) -> Option<Builtin> {
        Builtin::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(b, _)| *b)
    }
}

/// What a name, path or call refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// `tx.FIELD`
    TxField(TxField),
    /// `tx.attributes.NAME` with its declared type.
    TxAttribute(String, TypeName),
    /// `member.FIELD`
    MemberField(MemberField),
    /// `member.attributes.NAME` with its declared type.
    MemberAttribute(String, TypeName),
    /// `item.FIELD`
    ItemField(ItemField),
    /// A declared aggregate, by name.
    Aggregate(String),
    /// A declared category, by name.
    Category(String),
    /// A tier, by rank (0 = lowest, the first declared).
    Tier(usize),
    /// A transaction kind value.
    Kind(TxKind),
    /// A presence value.
    Presence(Presence),
    /// A weekday value.
    Weekday(Weekday),
    /// A currency code value.
    Currency(Currency),
    /// A call to a built-in function.
    Builtin(Builtin),
    /// A call to a declared extern function, by name.
    Extern(String),
}

/// A declared extern function's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternSig {
    /// Parameter types in order.
    pub params: Vec<TypeName>,
    /// Result type.
    pub ret: TypeName,
}

/// A category's codes as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CategorySet {
    /// Inclusive `(low, high)` MCC ranges; a single code is `(c, c)`.
    pub ranges: Vec<(u16, u16)>,
}

impl CategorySet {
    /// Whether `mcc` is in the set.
    pub fn contains(&self, mcc: u16) -> bool {
        self.ranges.iter().any(|(lo, hi)| *lo <= mcc && mcc <= *hi)
    }
}

/// A declared aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateInfo {
    /// Spend or count.
    pub measure: Measure,
    /// Its window.
    pub window: WindowKind,
    /// Index of its item in `Program::items`.
    pub item: usize,
}

/// A declared rule or campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Index of its item in `Program::items`.
    pub item: usize,
    /// Rule or campaign.
    pub kind: RuleKind,
    /// Whether its action is `earn` (else `multiply`).
    pub earns: bool,
    /// Its tags.
    pub tags: Vec<String>,
}

/// The ruleset's settings and declarations, resolved. Defaults stand in
/// for missing settings (a program missing one also has an error).
#[derive(Debug, Clone, PartialEq)]
pub struct Symbols {
    /// `ruleset "name"`
    pub name: String,
    /// `version N`
    pub version: u32,
    /// `currency`
    pub currency: Currency,
    /// `timezone`
    pub timezone: chrono_tz::Tz,
    /// `rounding` (the default of every rule)
    pub rounding: RoundingMode,
    /// `week starts` (default Monday)
    pub week_start: Weekday,
    /// `points expire` (default never)
    pub expiry: Expiry,
    /// `points pending` (default none)
    pub pending: Option<Duration>,
    /// Declared transaction attributes.
    pub tx_attributes: BTreeMap<String, TypeName>,
    /// Declared member attributes.
    pub member_attributes: BTreeMap<String, TypeName>,
    /// Declared extern functions.
    pub externs: BTreeMap<String, ExternSig>,
    /// Declared categories.
    pub categories: BTreeMap<String, CategorySet>,
    /// Declared aggregates.
    pub aggregates: BTreeMap<String, AggregateInfo>,
    /// Tier names, lowest first.
    pub tiers: Vec<String>,
    /// Declared exclusive groups.
    pub groups: BTreeMap<String, Resolution>,
    /// Rules and campaigns by id.
    pub rules: BTreeMap<String, RuleInfo>,
    /// Unfiltered aggregates used as `spend(W)` / `count(W)`.
    pub window_aggregates: BTreeSet<(MeasureKey, WindowKindKey)>,
}

/// [`Measure`] as an ordered key.
pub type MeasureKey = u8;
/// [`WindowKind`] as an ordered key: `(kind, rolling days)`.
pub type WindowKindKey = (u8, u16);

/// The key of a [`Measure`].
pub fn measure_key(m: Measure) -> MeasureKey {
    match m {
        Measure::Spend => 0,
        Measure::Count => 1,
    }
}

/// The key of a [`WindowKind`].
pub fn window_key(w: WindowKind) -> WindowKindKey {
    match w {
        WindowKind::Day => (0, 0),
        WindowKind::Week => (1, 0),
        WindowKind::Month => (2, 0),
        WindowKind::Quarter => (3, 0),
        WindowKind::Year => (4, 0),
        WindowKind::Rolling(n) => (5, n),
        WindowKind::Lifetime => (6, 0),
    }
}

impl Symbols {
    /// The rank of a tier (0 = lowest).
    pub fn tier_rank(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t == name)
    }
}

impl Default for Symbols {
    fn default() -> Symbols {
        Symbols {
            name: String::new(),
            version: 0,
            currency: Currency::USD,
            timezone: chrono_tz::UTC,
            rounding: RoundingMode::Floor,
            week_start: Weekday::Mon,
            expiry: Expiry::Never,
            pending: None,
            tx_attributes: BTreeMap::new(),
            member_attributes: BTreeMap::new(),
            externs: BTreeMap::new(),
            categories: BTreeMap::new(),
            aggregates: BTreeMap::new(),
            tiers: Vec::new(),
            groups: BTreeMap::new(),
            rules: BTreeMap::new(),
            window_aggregates: BTreeSet::new(),
        }
    }
}

/// The checker's output: symbols, types and resolutions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Analysis {
    /// The ruleset's declarations.
    pub symbols: Symbols,
    /// Type of each expression by [`ExprId::index`] ([`Type::Error`] where
    /// unknown).
    pub types: Vec<Type>,
    /// What each `Name`, `Path` and `Call` expression refers to.
    pub resolved: HashMap<ExprId, Resolved>,
}

impl Analysis {
    /// The type of an expression.
    pub fn type_of(&self, e: &Expr) -> &Type {
        self.types.get(e.id.index()).unwrap_or(&Type::Error)
    }

    /// What a name, path or call refers to.
    pub fn resolution(&self, e: &Expr) -> Option<&Resolved> {
        self.resolved.get(&e.id)
    }
}

/// A program that parsed and checked without errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The syntax tree.
    pub program: Program,
    /// Symbols, types and resolutions.
    pub analysis: Analysis,
    /// Warnings (never errors).
    pub warnings: Vec<Diagnostic>,
}

/// Parses and checks a source text: the checked program, or every
/// diagnostic (syntax, names, types, limits) sorted by position.
pub fn check_source(source: &str) -> Result<Checked, Vec<Diagnostic>> {
    let (program, mut diags) = crate::parse::parse(source);
    if crate::parse::rejected_whole(&diags) {
        return Err(diags);
    }
    let (analysis, mut more) = check(&program);
    diags.append(&mut more);
    diag::sort(&mut diags);
    if diag::has_errors(&diags) {
        return Err(diags);
    }
    Ok(Checked {
        program,
        analysis,
        warnings: diags,
    })
}

/// Every diagnostic of a source text, sorted: syntax, names, types,
/// limits. The checker is skipped when the whole file was rejected
/// (too large, nested too deep), since it would only see an empty program.
pub fn diagnose(source: &str) -> Vec<Diagnostic> {
    let (program, mut diags) = crate::parse::parse(source);
    if !crate::parse::rejected_whole(&diags) {
        let (_, mut more) = check(&program);
        diags.append(&mut more);
    }
    diag::sort(&mut diags);
    diags
}

/// Checks a parsed program. Reports every error found; never panics.
pub fn check(program: &Program) -> (Analysis, Vec<Diagnostic>) {
    let mut c = Checker {
        syms: Symbols::default(),
        types: vec![Type::Error; program.expr_count as usize],
        resolved: HashMap::new(),
        diags: Vec::new(),
        values: HashMap::new(),
        used: BTreeSet::new(),
        tags: BTreeSet::new(),
        decl_spans: HashMap::new(),
    };
    c.declarations(program);
    c.bodies(program);
    c.unused(program);
    c.diags.truncate(crate::limits::MAX_DIAGNOSTICS);
    let analysis = Analysis {
        symbols: c.syms,
        types: c.types,
        resolved: c.resolved,
    };
    (analysis, c.diags)
}

/// A declared name in the expression namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Tier(usize),
    Category,
    Aggregate(Measure),
}

/// Where an expression is, and so what it may read.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    /// `tx.` paths.
    tx: bool,
    /// `member.` paths, aggregates.
    member: bool,
    /// `item.` paths.
    item: bool,
    /// For messages: "in an aggregate filter".
    place: &'static str,
}

const RULE_CTX: Ctx = Ctx {
    tx: true,
    member: true,
    item: false,
    place: "in a rule",
};
const FILTER_CTX: Ctx = Ctx {
    tx: true,
    member: false,
    item: false,
    place: "in an aggregate filter, which reads only the transaction",
};
const MEMBER_CTX: Ctx = Ctx {
    tx: false,
    member: true,
    item: false,
    place: "here, which reads only the member's state",
};
const CONST_CTX: Ctx = Ctx {
    tx: false,
    member: false,
    item: false,
    place: "in a test value, which must be a constant",
};

const KIND_VALUES: [(&str, TxKind); 7] = [
    ("purchase", TxKind::Purchase),
    ("refund", TxKind::Refund),
    ("authorization", TxKind::Authorization),
    ("settlement", TxKind::Settlement),
    ("reversal", TxKind::Reversal),
    ("chargeback", TxKind::Chargeback),
    ("adjustment", TxKind::Adjustment),
];
const PRESENCE_VALUES: [(&str, Presence); 2] = [
    ("online", Presence::Online),
    ("in_store", Presence::InStore),
];
const WEEKDAY_VALUES: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

fn builtin_value(name: &str) -> Option<(Resolved, Type)> {
    if let Some((_, k)) = KIND_VALUES.iter().find(|(n, _)| *n == name) {
        return Some((Resolved::Kind(*k), Type::Kind));
    }
    if let Some((_, p)) = PRESENCE_VALUES.iter().find(|(n, _)| *n == name) {
        return Some((Resolved::Presence(*p), Type::Presence));
    }
    if let Some((_, w)) = WEEKDAY_VALUES.iter().find(|(n, _)| *n == name) {
        return Some((Resolved::Weekday(*w), Type::Weekday));
    }
    if let Ok(c) = Currency::parse(name) {
        return Some((Resolved::Currency(c), Type::Currency));
    }
    None
}

fn is_reserved(name: &str) -> bool {
    builtin_value(name).is_some() || Builtin::by_name(name).is_some()
}

fn plural(word: &str) -> String {
    match word.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{word}s"),
    }
}

/// Edit distance, for "did you mean" hints (inputs are short names).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = if name.len() <= 3 { 1 } else { 2 };
    candidates
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

struct Checker {
    syms: Symbols,
    types: Vec<Type>,
    resolved: HashMap<ExprId, Resolved>,
    diags: Vec<Diagnostic>,
    values: HashMap<String, Value>,
    used: BTreeSet<String>,
    tags: BTreeSet<String>,
    decl_spans: HashMap<(u8, String), Span>,
}

/// Namespaces for duplicate detection.
const NS_VALUE: u8 = 0;
const NS_RULE: u8 = 1;
const NS_GROUP: u8 = 2;
const NS_EXTERN: u8 = 3;
const NS_TX_ATTR: u8 = 4;
const NS_MEMBER_ATTR: u8 = 5;
const NS_TEST: u8 = 6;

impl Checker {
    fn err(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(code, span, message));
    }

    fn hint(&mut self, hint: impl Into<String>) {
        if let Some(d) = self.diags.last_mut() {
            d.hint = Some(hint.into());
        }
    }

    fn set_type(&mut self, e: &Expr, t: Type) -> Type {
        if let Some(slot) = self.types.get_mut(e.id.index()) {
            *slot = t.clone();
        }
        t
    }

    /// Declares `name` in namespace `ns`; reports a duplicate or a clash
    /// with a built-in. Returns whether it is new.
    fn declare(&mut self, ns: u8, name: &Ident, what: &str) -> bool {
        if (ns == NS_VALUE || ns == NS_EXTERN) && is_reserved(&name.name) {
            self.err(
                Code::ReservedName,
                name.span,
                format!(
                    "`{}` is a built-in name and cannot name {} {what}",
                    name.name,
                    if what.starts_with('a') { "an" } else { "a" }
                ),
            );
            self.hint("choose another name");
            return false;
        }
        let key = (ns, name.name.clone());
        if let Some(first) = self.decl_spans.get(&key).copied() {
            self.diags.push(
                Diagnostic::new(
                    Code::Duplicate,
                    name.span,
                    format!("`{}` is declared twice", name.name),
                )
                .with_note(first, "first declared here")
                .with_hint(format!("rename or remove one of the two {}", plural(what))),
            );
            return false;
        }
        self.decl_spans.insert(key, name.span);
        true
    }

    // ---- pass 1: declarations

    fn declarations(&mut self, program: &Program) {
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let mut once = |c: &mut Checker, what: &'static str, span: Span| {
            if let Some(first) = seen.get(what) {
                c.diags.push(
                    Diagnostic::new(
                        Code::RepeatedDeclaration,
                        span,
                        format!("`{what}` is declared more than once"),
                    )
                    .with_note(*first, "first declared here")
                    .with_hint("a ruleset has one of each; remove the repetition"),
                );
                false
            } else {
                seen.insert(what, span);
                true
            }
        };
        let mut rule_count = 0usize;
        for (index, item) in program.items.iter().enumerate() {
            match &item.kind {
                ItemKind::Ruleset(r) => {
                    if once(self, "ruleset", item.span) {
                        self.syms.name = r.name.value.clone();
                        self.syms.version = r.version;
                        if r.name.value.trim().is_empty() {
                            self.err(Code::OutOfRange, r.name.span, "the ruleset's name is empty");
                            self.hint("name the ruleset, e.g. ruleset \"acme-card\" version 1");
                        }
                    }
                }
                ItemKind::Currency(c) => {
                    if once(self, "currency", item.span) {
                        match Currency::parse(&c.code.name) {
                            Ok(cur) => self.syms.currency = cur,
                            Err(e) => {
                                self.err(Code::UnknownCurrency, c.code.span, e.to_string());
                                self.hint("use an ISO 4217 code such as USD, EUR or JPY");
                            }
                        }
                    }
                }
                ItemKind::Timezone(t) => {
                    if once(self, "timezone", item.span) {
                        match t.zone.value.parse::<chrono_tz::Tz>() {
                            Ok(tz) => self.syms.timezone = tz,
                            Err(_) => {
                                self.err(
                                    Code::UnknownTimezone,
                                    t.zone.span,
                                    format!("`{}` is not an IANA time zone", t.zone.value),
                                );
                                self.hint("use a zone name such as \"America/New_York\" or \"Europe/Paris\"");
                            }
                        }
                    }
                }
                ItemKind::Rounding(r) => {
                    if once(self, "rounding", item.span) {
                        self.syms.rounding = r.mode;
                    }
                }
                ItemKind::WeekStart(w) => {
                    if once(self, "week starts", item.span) {
                        self.syms.week_start = w.day;
                    }
                }
                ItemKind::Expiry(e) => {
                    if once(self, "points expire", item.span) {
                        self.syms.expiry = e.rule.clone();
                        if let Expiry::After(d) = &e.rule {
                            self.positive_duration(d, "an expiry");
                        }
                    }
                }
                ItemKind::Pending(p) => {
                    if once(self, "points pending", item.span) {
                        self.syms.pending = Some(p.delay);
                    }
                }
                ItemKind::Attribute(a) => {
                    let (ns, map) = match a.scope {
                        AttrScope::Tx => (NS_TX_ATTR, &mut self.syms.tx_attributes),
                        AttrScope::Member => (NS_MEMBER_ATTR, &mut self.syms.member_attributes),
                    };
                    map.entry(a.name.name.clone()).or_insert(a.ty);
                    self.declare(ns, &a.name, "attribute");
                }
                ItemKind::Extern(x) => {
                    if x.params.len() > MAX_ARGS {
                        self.err(
                            Code::TooMany,
                            x.name.span,
                            format!(
                                "`{}` has {} parameters; at most {MAX_ARGS} are allowed",
                                x.name.name,
                                x.params.len()
                            ),
                        );
                    }
                    if self.declare(NS_EXTERN, &x.name, "function") {
                        self.syms.externs.insert(
                            x.name.name.clone(),
                            ExternSig {
                                params: x.params.iter().map(|p| p.ty).collect(),
                                ret: x.ret,
                            },
                        );
                    }
                }
                ItemKind::Category(cat) => {
                    let set = self.category_codes(cat);
                    if self.declare(NS_VALUE, &cat.name, "category") {
                        self.values.insert(cat.name.name.clone(), Value::Category);
                        self.syms.categories.insert(cat.name.name.clone(), set);
                    }
                }
                ItemKind::Aggregate(a) => {
                    self.window(&a.window);
                    if self.syms.aggregates.len() == MAX_AGGREGATES {
                        self.err(
                            Code::TooMany,
                            a.name.span,
                            format!("more than {MAX_AGGREGATES} aggregates"),
                        );
                    }
                    if self.declare(NS_VALUE, &a.name, "aggregate") {
                        self.values
                            .insert(a.name.name.clone(), Value::Aggregate(a.measure));
                        self.syms.aggregates.insert(
                            a.name.name.clone(),
                            AggregateInfo {
                                measure: a.measure,
                                window: a.window.kind,
                                item: index,
                            },
                        );
                    }
                }
                ItemKind::Tier(t) => {
                    if self.syms.tiers.len() == MAX_TIERS {
                        self.err(
                            Code::TooMany,
                            t.name.span,
                            format!("more than {MAX_TIERS} tiers"),
                        );
                    }
                    if self.declare(NS_VALUE, &t.name, "tier") {
                        self.values
                            .insert(t.name.name.clone(), Value::Tier(self.syms.tiers.len()));
                        self.syms.tiers.push(t.name.name.clone());
                    }
                    if let Some(g) = &t.grace {
                        self.positive_duration(g, "a grace period");
                    }
                }
                ItemKind::Group(g) => {
                    if self.declare(NS_GROUP, &g.name, "group") {
                        self.syms.groups.insert(g.name.name.clone(), g.resolution);
                    }
                }
                ItemKind::Rule(r) => {
                    rule_count += 1;
                    if rule_count == MAX_RULES + 1 {
                        self.err(
                            Code::TooMany,
                            r.id.span,
                            format!("more than {MAX_RULES} rules and campaigns"),
                        );
                        self.hint("split the program into several rulesets");
                    }
                    for t in &r.tags {
                        self.tags.insert(t.name.clone());
                    }
                    let earns = matches!(r.action().map(|s| &s.kind), Some(StmtKind::Earn(_)));
                    if self.declare(NS_RULE, &r.id, "rule") {
                        self.syms.rules.insert(
                            r.id.name.clone(),
                            RuleInfo {
                                item: index,
                                kind: r.kind,
                                earns,
                                tags: r.tags.iter().map(|t| t.name.clone()).collect(),
                            },
                        );
                    }
                }
                ItemKind::Test(t) => {
                    let name = Ident {
                        name: t.name.value.clone(),
                        span: t.name.span,
                    };
                    self.declare(NS_TEST, &name, "test");
                }
            }
        }
        for (what, hint) in [
            (
                "ruleset",
                "start the file with e.g. ruleset \"acme-card\" version 1",
            ),
            (
                "currency",
                "declare the ruleset's currency, e.g. currency USD",
            ),
            (
                "timezone",
                "declare the zone of windows and dates, e.g. timezone \"America/New_York\"",
            ),
            (
                "rounding",
                "declare how awards are rounded: rounding floor|ceiling|half_up|half_even",
            ),
        ] {
            if !seen.contains_key(what) {
                let span = program
                    .items
                    .first()
                    .map_or(Span::default(), |i| Span::new(i.span.start, i.span.start));
                self.err(
                    Code::MissingDeclaration,
                    span,
                    format!("the ruleset has no `{what}` declaration"),
                );
                self.hint(hint);
            }
        }
    }

    fn positive_duration(&mut self, d: &Duration, what: &str) {
        if d.count == 0 {
            self.err(Code::OutOfRange, d.span, format!("{what} of zero length"));
            self.hint("give a positive duration, e.g. 90 days");
        }
    }

    fn window(&mut self, w: &WindowSpec) {
        if let WindowKind::Rolling(n) = w.kind {
            if n == 0 || n > MAX_ROLLING_DAYS {
                self.err(
                    Code::OutOfRange,
                    w.span,
                    format!("a rolling window of {n} days"),
                );
                self.hint(format!(
                    "rolling windows are 1 to {MAX_ROLLING_DAYS} days long"
                ));
            }
        }
    }

    fn category_codes(&mut self, cat: &CategoryDecl) -> CategorySet {
        let mut set = CategorySet::default();
        let code = |c: &mut Checker, e: &Expr| -> Option<u16> {
            c.set_type(e, Type::Integer);
            match &e.kind {
                ExprKind::Literal(Literal::Integer(n)) => match u16::try_from(*n) {
                    Ok(v) if v <= 9999 => Some(v),
                    _ => {
                        c.err(
                            Code::OutOfRange,
                            e.span,
                            format!("{n} is not a merchant category code"),
                        );
                        c.hint("merchant category codes are 0 to 9999");
                        None
                    }
                },
                _ => {
                    c.err(
                        Code::ListType,
                        e.span,
                        "a category lists merchant category codes, i.e. whole numbers",
                    );
                    c.hint("write codes and ranges, e.g. [5812, 3000..3299]");
                    None
                }
            }
        };
        for elem in &cat.codes {
            match elem {
                ListElem::Single(e) => {
                    if let Some(v) = code(self, e) {
                        set.ranges.push((v, v));
                    }
                }
                ListElem::Range(lo, hi) => {
                    if let (Some(a), Some(b)) = (code(self, lo), code(self, hi)) {
                        if a > b {
                            self.err(
                                Code::BadRange,
                                lo.span.to(hi.span),
                                format!("the range {a}..{b} is empty"),
                            );
                            self.hint("write the lower bound first");
                        } else {
                            set.ranges.push((a, b));
                        }
                    }
                }
            }
        }
        if cat.codes.is_empty() {
            self.err(
                Code::OutOfRange,
                cat.list_span,
                format!("category `{}` has no codes", cat.name.name),
            );
        }
        set
    }

    // ---- pass 2: bodies

    fn bodies(&mut self, program: &Program) {
        for item in &program.items {
            match &item.kind {
                ItemKind::Aggregate(a) => {
                    if let Some(f) = &a.filter {
                        self.condition(f, FILTER_CTX, "an aggregate's `where`");
                    }
                }
                ItemKind::Tier(t) => {
                    if let Some(q) = &t.qualify {
                        self.condition(q, MEMBER_CTX, "`qualify`");
                    }
                }
                ItemKind::Rule(r) => self.rule(r),
                ItemKind::Test(t) => self.test(t),
                _ => {}
            }
        }
    }

    fn condition(&mut self, e: &Expr, ctx: Ctx, what: &str) {
        let t = self.expr(e, ctx);
        if !matches!(t, Type::Bool | Type::Error) {
            self.err(
                Code::NotBool,
                e.span,
                format!("{what} needs a condition, but this is {t:#}"),
            );
            self.hint("compare it with something, e.g. `x >= 100 USD`");
        }
    }

    fn date_range(&mut self, range: &DateRange) {
        let (Some(from), Some(to)) = (&range.from, &range.to) else {
            return;
        };
        let key = |m: &Moment| match m {
            Moment::Date(d, _) => (d.and_hms_opt(0, 0, 0), true),
            Moment::DateTime(dt, _) => (Some(dt.local), false),
        };
        let (a, _) = key(from);
        let (b, b_is_date) = key(to);
        // A date as the end means the whole day.
        let b = if b_is_date {
            b.and_then(|b| b.checked_add_signed(chrono::TimeDelta::days(1)))
        } else {
            b
        };
        if let (Some(a), Some(b)) = (a, b) {
            if a >= b {
                self.err(
                    Code::BadRange,
                    range.span,
                    "this period ends before it starts",
                );
                self.hint("write the start date first");
            }
        }
    }

    fn rule(&mut self, r: &RuleDecl) {
        let what = match r.kind {
            RuleKind::Rule => "rule",
            RuleKind::Campaign => "campaign",
        };
        if let Some(e) = &r.effective {
            self.date_range(e);
        }
        match (&r.schedule, r.kind) {
            (Some(s), _) => self.date_range(s),
            (None, RuleKind::Campaign) => {
                self.err(
                    Code::RuleShape,
                    r.id.span,
                    format!("campaign `{}` has no schedule", r.id.name),
                );
                self.hint("add `from DATE to DATE` after the campaign's name");
            }
            _ => {}
        }
        if let Some(a) = &r.audience {
            self.condition(a, MEMBER_CTX, "`audience`");
        }
        if let Some(b) = &r.budget {
            if b.value <= 0 {
                self.err(Code::OutOfRange, b.span, "a budget must be positive");
            }
        }
        if let Some(g) = &r.group {
            self.used.insert(format!("group {}", g.name));
            if !self.syms.groups.contains_key(&g.name) {
                self.err(
                    Code::UnknownGroup,
                    g.span,
                    format!("no group `{}` is declared", g.name),
                );
                let hint = did_you_mean(&g.name, self.syms.groups.keys().map(String::as_str))
                    .unwrap_or_else(|| format!("declare it: group {} takes best", g.name));
                self.hint(hint);
            }
        }
        if r.body.len() > MAX_STMTS {
            self.err(
                Code::TooMany,
                r.body_span,
                format!("this {what} has more than {MAX_STMTS} statements"),
            );
        }
        let mut whens = 0;
        let mut actions = 0;
        let mut roundings = 0;
        let mut multiplies = false;
        for s in &r.body {
            match &s.kind {
                StmtKind::When(e) => {
                    whens += 1;
                    if whens == 2 {
                        self.err(
                            Code::RuleShape,
                            s.span,
                            format!("this {what} has more than one `when`"),
                        );
                        self.hint("join the conditions with `and`");
                    }
                    self.condition(e, RULE_CTX, "`when`");
                }
                StmtKind::Earn(e) => {
                    actions += 1;
                    if actions == 2 {
                        self.err(
                            Code::RuleShape,
                            s.span,
                            format!("this {what} has more than one action"),
                        );
                        self.hint(
                            "a rule has one `earn` or one `multiply`; split it into two rules",
                        );
                    }
                    let t = self.expr(e, RULE_CTX);
                    if !matches!(
                        t,
                        Type::Integer | Type::Decimal | Type::Points | Type::Money | Type::Error
                    ) {
                        self.err(
                            Code::EarnType,
                            e.span,
                            format!("`earn` needs a number of points, but this is {t:#}"),
                        );
                        self.hint(
                            "earn a number, points or money, e.g. `earn floor(tx.amount) points`",
                        );
                    }
                }
                StmtKind::Multiply { target, factor } => {
                    actions += 1;
                    multiplies = true;
                    if actions == 2 {
                        self.err(
                            Code::RuleShape,
                            s.span,
                            format!("this {what} has more than one action"),
                        );
                        self.hint(
                            "a rule has one `earn` or one `multiply`; split it into two rules",
                        );
                    }
                    self.target(target, &r.id);
                    let t = self.expr(factor, RULE_CTX);
                    if !matches!(t, Type::Integer | Type::Decimal | Type::Error) {
                        self.err(
                            Code::FactorType,
                            factor.span,
                            format!("a multiplier must be a number, but this is {t:#}"),
                        );
                        self.hint("multiply by a number such as 2 or 1.5");
                    } else if let ExprKind::Literal(Literal::Integer(n)) = &factor.kind {
                        if *n < 0 {
                            self.err(
                                Code::OutOfRange,
                                factor.span,
                                "a multiplier cannot be negative",
                            );
                        }
                    }
                }
                StmtKind::Cap(cap) => {
                    if cap.limit.value <= 0 {
                        self.err(Code::OutOfRange, cap.limit.span, "a cap must be positive");
                        self.hint("to switch a rule off, remove it or end its `effective` period");
                    }
                    if let CapScope::Member(w) = &cap.scope {
                        self.window(w);
                    }
                }
                StmtKind::Rounding(_) => {
                    roundings += 1;
                    if roundings == 2 {
                        self.err(
                            Code::RuleShape,
                            s.span,
                            format!("this {what} has more than one `rounding`"),
                        );
                    }
                }
            }
        }
        if actions == 0 {
            self.err(
                Code::RuleShape,
                r.id.span,
                format!("{what} `{}` has no `earn` or `multiply`", r.id.name),
            );
            self.hint("add e.g. `earn floor(tx.amount) points`");
        }
        if multiplies {
            if let Some(g) = &r.group {
                self.err(
                    Code::RuleShape,
                    g.span,
                    "a multiplier cannot be in an exclusive group",
                );
                self.hint("exclusive groups choose among `earn` rules; remove `exclusive group`");
            }
        }
    }

    fn target(&mut self, target: &Target, me: &Ident) {
        match target {
            Target::Earned(_) => {}
            Target::Tag(t) => {
                if !self.tags.contains(&t.name) {
                    self.err(
                        Code::UnknownTarget,
                        t.span,
                        format!("no rule has the tag `{}`", t.name),
                    );
                    let hint = did_you_mean(&t.name, self.tags.iter().map(String::as_str))
                        .unwrap_or_else(|| "add `tags [...]` to the rules to multiply".to_string());
                    self.hint(hint);
                }
            }
            Target::Rule(id) => match self.syms.rules.get(&id.name) {
                None => {
                    self.err(
                        Code::UnknownTarget,
                        id.span,
                        format!("no rule or campaign is called `{}`", id.name),
                    );
                    let hint = did_you_mean(&id.name, self.syms.rules.keys().map(String::as_str))
                        .unwrap_or_else(|| {
                            "multiply `earned`, a rule id, or `tag NAME`".to_string()
                        });
                    self.hint(hint);
                }
                Some(info) if !info.earns || id.name == me.name => {
                    self.err(
                        Code::UnknownTarget,
                        id.span,
                        format!(
                            "`{}` does not `earn` points, so it cannot be multiplied",
                            id.name
                        ),
                    );
                    self.hint("a multiplier scales the award of an `earn` rule");
                }
                Some(_) => {}
            },
        }
    }

    // ---- expressions

    fn expr(&mut self, e: &Expr, ctx: Ctx) -> Type {
        let t = self.expr_inner(e, ctx);
        self.set_type(e, t)
    }

    fn expr_inner(&mut self, e: &Expr, ctx: Ctx) -> Type {
        match &e.kind {
            ExprKind::Literal(lit) => self.literal(lit, e.span),
            ExprKind::Paren(inner) => self.expr(inner, ctx),
            ExprKind::Name(id) => self.name(e, id, ctx),
            ExprKind::Path(p) => self.path(e, p, ctx),
            ExprKind::Unary { op, operand } => {
                let t = self.expr(operand, ctx);
                match (op, &t) {
                    (_, Type::Error) => Type::Error,
                    (UnaryOp::Not, Type::Bool) => Type::Bool,
                    (
                        UnaryOp::Neg,
                        Type::Integer | Type::Decimal | Type::Money | Type::Points | Type::Duration,
                    ) => t,
                    (UnaryOp::Not, _) => {
                        self.err(
                            Code::OperatorTypes,
                            e.span,
                            format!("`not` needs a bool, but this is {t:#}"),
                        );
                        Type::Error
                    }
                    (UnaryOp::Neg, _) => {
                        self.err(Code::OperatorTypes, e.span, format!("cannot negate {t:#}"));
                        Type::Error
                    }
                }
            }
            ExprKind::Binary { op, lhs, rhs } => self.binary(e, *op, lhs, rhs, ctx),
            ExprKind::List(elems) => self.list(elems, ctx),
            ExprKind::Call { func, args } => self.call(e, func, args, ctx),
            ExprKind::WindowAggregate { measure, window } => {
                self.window(window);
                if !ctx.member {
                    self.err(
                        Code::Scope,
                        e.span,
                        format!("member history cannot be read {}", ctx.place),
                    );
                    return Type::Error;
                }
                self.syms
                    .window_aggregates
                    .insert((measure_key(*measure), window_key(window.kind)));
                match measure {
                    Measure::Spend => Type::Money,
                    Measure::Count => Type::Integer,
                }
            }
            ExprKind::ItemAggregate {
                func,
                filter,
                value,
            } => {
                if ctx.item || !ctx.tx {
                    self.err(
                        Code::Scope,
                        e.span,
                        format!(
                            "line items cannot be read {}",
                            if ctx.item {
                                "inside another sum or count"
                            } else {
                                ctx.place
                            }
                        ),
                    );
                    return Type::Error;
                }
                let inner = Ctx { item: true, ..ctx };
                if let Some(f) = filter {
                    self.condition(f, inner, "`where`");
                }
                match (func, value) {
                    (ItemFn::Count, None) => Type::Integer,
                    (ItemFn::Count, Some(v)) => {
                        self.expr(v, inner);
                        self.err(
                            Code::Arity,
                            v.span,
                            "`count` over line items takes no value",
                        );
                        self.hint("write count(tx.line_items where COND)");
                        Type::Error
                    }
                    (ItemFn::Sum, None) => {
                        self.err(
                            Code::Arity,
                            e.span,
                            "`sum` over line items needs a value to sum",
                        );
                        self.hint("write sum(tx.line_items where COND, item.amount)");
                        Type::Error
                    }
                    (ItemFn::Sum, Some(v)) => {
                        let t = self.expr(v, inner);
                        match t {
                            Type::Integer
                            | Type::Decimal
                            | Type::Money
                            | Type::Points
                            | Type::Error => t,
                            other => {
                                self.err(
                                    Code::ArgumentType,
                                    v.span,
                                    format!("cannot sum {other:#}"),
                                );
                                self.hint("sum a number or money, e.g. item.amount");
                                Type::Error
                            }
                        }
                    }
                }
            }
        }
    }

    fn literal(&mut self, lit: &Literal, span: Span) -> Type {
        match lit {
            Literal::Integer(_) => Type::Integer,
            Literal::Decimal(_) => Type::Decimal,
            Literal::Money { currency, .. } => {
                match Currency::parse(&currency.name) {
                    Err(e) => {
                        self.err(Code::UnknownCurrency, currency.span, e.to_string());
                        self.hint(format!(
                            "write amounts in the ruleset's currency, e.g. 10 {}",
                            self.syms.currency
                        ));
                    }
                    Ok(c) if c != self.syms.currency => {
                        self.err(
                            Code::CurrencyMismatch,
                            span,
                            format!(
                                "this amount is in {c}, but the ruleset's currency is {}",
                                self.syms.currency
                            ),
                        );
                        self.hint(format!(
                            "a ruleset has one currency; write the amount in {}",
                            self.syms.currency
                        ));
                    }
                    Ok(_) => {}
                }
                Type::Money
            }
            Literal::String(_) => Type::String,
            Literal::Bool(_) => Type::Bool,
            Literal::Date(_) => Type::Date,
            Literal::DateTime(_) => Type::DateTime,
            Literal::Duration(_) => Type::Duration,
        }
    }

    fn name(&mut self, e: &Expr, id: &Ident, ctx: Ctx) -> Type {
        if let Some(v) = self.values.get(&id.name).copied() {
            self.used.insert(id.name.clone());
            return match v {
                Value::Tier(rank) => {
                    self.resolved.insert(e.id, Resolved::Tier(rank));
                    Type::Tier
                }
                Value::Category => {
                    self.resolved
                        .insert(e.id, Resolved::Category(id.name.clone()));
                    Type::Category
                }
                Value::Aggregate(m) => {
                    if !ctx.member {
                        self.err(
                            Code::Scope,
                            id.span,
                            format!("aggregate `{}` cannot be read {}", id.name, ctx.place),
                        );
                        return Type::Error;
                    }
                    self.resolved
                        .insert(e.id, Resolved::Aggregate(id.name.clone()));
                    match m {
                        Measure::Spend => Type::Money,
                        Measure::Count => Type::Integer,
                    }
                }
            };
        }
        if let Some((res, t)) = builtin_value(&id.name) {
            self.resolved.insert(e.id, res);
            return t;
        }
        let (code, msg, hint) = if self.syms.rules.contains_key(&id.name) {
            (
                Code::WrongKind,
                format!("`{}` is a rule, not a value", id.name),
                None,
            )
        } else if self.syms.groups.contains_key(&id.name) {
            (
                Code::WrongKind,
                format!("`{}` is a group, not a value", id.name),
                None,
            )
        } else if Builtin::by_name(&id.name).is_some() || self.syms.externs.contains_key(&id.name) {
            (
                Code::WrongKind,
                format!("`{}` is a function", id.name),
                Some(format!("call it: {}(...)", id.name)),
            )
        } else if ["tx", "member", "item"].contains(&id.name.as_str()) {
            (
                Code::UnknownField,
                format!("`{}` needs a field", id.name),
                Some(format!("e.g. {}.amount", id.name)),
            )
        } else {
            let candidates: Vec<String> = self
                .values
                .keys()
                .cloned()
                .chain(KIND_VALUES.iter().map(|(n, _)| n.to_string()))
                .chain(PRESENCE_VALUES.iter().map(|(n, _)| n.to_string()))
                .chain(WEEKDAY_VALUES.iter().map(|(n, _)| n.to_string()))
                .collect();
            let hint = did_you_mean(&id.name, candidates.iter().map(String::as_str)).or_else(|| {
                Some("declare it as a tier, category or aggregate, or use a built-in value (purchase, online, mon, ...)".to_string())
            });
            (
                Code::UnknownName,
                format!("unknown name `{}`", id.name),
                hint,
            )
        };
        self.err(code, id.span, msg);
        if let Some(h) = hint {
            self.hint(h);
        }
        Type::Error
    }

    fn path(&mut self, e: &Expr, p: &Path, ctx: Ctx) -> Type {
        let allowed = match p.root {
            Root::Tx => ctx.tx,
            Root::Member => ctx.member,
            Root::Item => ctx.item,
        };
        if !allowed {
            let place = if p.root == Root::Item {
                "outside sum(tx.line_items ...) or count(tx.line_items ...)"
            } else {
                ctx.place
            };
            self.err(
                Code::Scope,
                e.span,
                format!("`{}.` cannot be read {place}", p.root.as_str()),
            );
            return Type::Error;
        }
        let names: Vec<&str> = p.fields.iter().map(|f| f.name.as_str()).collect();
        let full = format!("{}.{}", p.root.as_str(), names.join("."));
        let first = p.fields.first().map_or(e.span, |f| f.span);
        let resolved = match (p.root, names.as_slice()) {
            (Root::Tx, ["attributes", attr]) | (Root::Member, ["attributes", attr]) => {
                let (map, scope) = if p.root == Root::Tx {
                    (&self.syms.tx_attributes, "tx")
                } else {
                    (&self.syms.member_attributes, "member")
                };
                match map.get(*attr).copied() {
                    Some(ty) => {
                        self.used.insert(format!("attribute {scope}.{attr}"));
                        if p.root == Root::Tx {
                            Some((
                                Resolved::TxAttribute(attr.to_string(), ty),
                                Type::from_name(ty),
                            ))
                        } else {
                            Some((
                                Resolved::MemberAttribute(attr.to_string(), ty),
                                Type::from_name(ty),
                            ))
                        }
                    }
                    None => {
                        let span = p.fields.get(1).map_or(e.span, |f| f.span);
                        let hint = did_you_mean(attr, map.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                format!("declare it: attribute {scope}.{attr}: string")
                            });
                        self.err(
                            Code::UndeclaredAttribute,
                            span,
                            format!("attribute `{attr}` of `{scope}` is not declared"),
                        );
                        self.hint(hint);
                        return Type::Error;
                    }
                }
            }
            (Root::Tx, [field]) => TxField::ALL
                .iter()
                .find(|(_, n, _)| n == field)
                .map(|(f, _, t)| (Resolved::TxField(*f), t.clone())),
            (Root::Member, [field]) => MemberField::ALL
                .iter()
                .find(|(_, n, _)| n == field)
                .map(|(f, _, t)| (Resolved::MemberField(*f), t.clone())),
            (Root::Item, [field]) => ItemField::ALL
                .iter()
                .find(|(_, n, _)| n == field)
                .map(|(f, _, t)| (Resolved::ItemField(*f), t.clone())),
            _ => None,
        };
        match resolved {
            Some((res, t)) => {
                self.resolved.insert(e.id, res);
                t
            }
            None => {
                let fields: Vec<&str> = match p.root {
                    Root::Tx => TxField::ALL
                        .iter()
                        .map(|(_, n, _)| *n)
                        .chain(["attributes"])
                        .collect(),
                    Root::Member => MemberField::ALL
                        .iter()
                        .map(|(_, n, _)| *n)
                        .chain(["attributes"])
                        .collect(),
                    Root::Item => ItemField::ALL.iter().map(|(_, n, _)| *n).collect(),
                };
                let hint = if full == "tx.line_items" {
                    "line items are read with sum(tx.line_items where ..., item.amount) or count(tx.line_items where ...)".to_string()
                } else if names.first() == Some(&"attributes") {
                    format!("write {}.attributes.NAME", p.root.as_str())
                } else {
                    did_you_mean(names.first().copied().unwrap_or(""), fields.iter().copied())
                        .map(|h| {
                            h.replace('`', "")
                                .replace(
                                    "did you mean ",
                                    &format!("did you mean `{}.", p.root.as_str()),
                                )
                                .replace('?', "`?")
                        })
                        .unwrap_or_else(|| {
                            format!(
                                "the fields of `{}` are {}",
                                p.root.as_str(),
                                fields.join(", ")
                            )
                        })
                };
                self.err(
                    Code::UnknownField,
                    first.to(e.span),
                    format!("`{full}` is not a field"),
                );
                self.hint(hint);
                Type::Error
            }
        }
    }

    fn binary(&mut self, e: &Expr, op: BinaryOp, lhs: &Expr, rhs: &Expr, ctx: Ctx) -> Type {
        let l = self.expr(lhs, ctx);
        let r = self.expr(rhs, ctx);
        match op {
            BinaryOp::And | BinaryOp::Or => {
                for (side, t) in [(lhs, &l), (rhs, &r)] {
                    if !matches!(t, Type::Bool | Type::Error) {
                        self.err(
                            Code::OperatorTypes,
                            side.span,
                            format!(
                                "`{}` needs bools on both sides, but this is {t:#}",
                                op.as_str()
                            ),
                        );
                        self.hint("compare the value with something, e.g. `x > 0`");
                    }
                }
                Type::Bool
            }
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => {
                let ordered = !matches!(op, BinaryOp::Eq | BinaryOp::Ne);
                match l.unify(&r) {
                    None => {
                        self.err(
                            Code::Compare,
                            e.span,
                            format!("cannot compare {l} with {r}"),
                        );
                        let hint = match (&l, &r) {
                            (Type::Money, Type::Integer | Type::Decimal)
                            | (Type::Integer | Type::Decimal, Type::Money) => {
                                format!(
                                    "write the amount with its currency, e.g. 100 {}",
                                    self.syms.currency
                                )
                            }
                            (Type::Date, Type::DateTime) | (Type::DateTime, Type::Date) => {
                                "take the date of the time: date(tx.time)".to_string()
                            }
                            _ => "both sides must have the same type".to_string(),
                        };
                        self.hint(hint);
                    }
                    Some(t) if ordered && !t.is_ordered() => {
                        self.err(
                            Code::Compare,
                            e.span,
                            format!("values of type {t} have no order"),
                        );
                        self.hint("use == or != , or `in [...]`");
                    }
                    Some(t) if !t.has_equality() => {
                        self.err(
                            Code::Compare,
                            e.span,
                            format!("cannot compare {t}s with `{}`", op.as_str()),
                        );
                        if t == Type::Category {
                            self.hint("test membership with `tx.mcc in CATEGORY`");
                        }
                    }
                    Some(_) => {}
                }
                Type::Bool
            }
            BinaryOp::In | BinaryOp::NotIn => {
                match &r {
                    Type::Error => {}
                    Type::Category => {
                        if !matches!(l, Type::Integer | Type::Error) {
                            self.err(
                                Code::Membership,
                                e.span,
                                format!("a category holds merchant category codes, not {l} values"),
                            );
                            self.hint("write `tx.mcc in CATEGORY`");
                        }
                    }
                    Type::List(elem) => {
                        if l.unify(elem).is_none() {
                            self.err(
                                Code::Membership,
                                e.span,
                                format!("cannot look for {l:#} in {r:#}"),
                            );
                            self.hint("the value and the list's elements must have the same type");
                        }
                    }
                    other => {
                        self.err(
                            Code::Membership,
                            rhs.span,
                            format!(
                                "`{}` needs a list or a category on its right, not {other:#}",
                                op.as_str()
                            ),
                        );
                        self.hint("write e.g. `x in [a, b]` or `tx.mcc in dining`");
                    }
                }
                Type::Bool
            }
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => {
                match arithmetic(op, &l, &r) {
                    Some(t) => t,
                    None => {
                        let verb = match op {
                            BinaryOp::Add => "add",
                            BinaryOp::Sub => "subtract",
                            BinaryOp::Mul => "multiply",
                            _ => "divide",
                        };
                        let msg = match op {
                            BinaryOp::Add => format!("cannot add {l} and {r}"),
                            BinaryOp::Sub => format!("cannot subtract {r} from {l}"),
                            BinaryOp::Mul => format!("cannot multiply {l} by {r}"),
                            _ => format!("cannot divide {l} by {r}"),
                        };
                        self.err(Code::OperatorTypes, e.span, msg);
                        let hint = match (&l, &r) {
                        (Type::Money, Type::Points) | (Type::Points, Type::Money) => {
                            "money and points never mix; compute the points from the money first, e.g. floor(tx.amount) * 2".to_string()
                        }
                        (Type::Money, Type::Integer | Type::Decimal) | (Type::Integer | Type::Decimal, Type::Money) => {
                            format!("give the number a currency, e.g. 10 {}", self.syms.currency)
                        }
                        _ => format!("you can {verb} numbers, money with money, and points with points"),
                    };
                        self.hint(hint);
                        Type::Error
                    }
                }
            }
        }
    }

    fn list(&mut self, elems: &[ListElem], ctx: Ctx) -> Type {
        let mut elem_type = Type::Error;
        let unify = |c: &mut Checker, t: Type, span: Span, elem_type: &mut Type| match elem_type
            .unify(&t)
        {
            Some(u) => *elem_type = u,
            None => {
                c.err(
                    Code::ListType,
                    span,
                    format!("this list mixes {elem_type} and {t}"),
                );
                c.hint("all elements of a list have one type");
            }
        };
        for el in elems {
            match el {
                ListElem::Single(x) => {
                    let t = self.expr(x, ctx);
                    if matches!(t, Type::List(_) | Type::Category) {
                        self.err(Code::ListType, x.span, format!("a list cannot hold {t:#}"));
                        continue;
                    }
                    unify(self, t, x.span, &mut elem_type);
                }
                ListElem::Range(lo, hi) => {
                    let a = self.expr(lo, ctx);
                    let b = self.expr(hi, ctx);
                    let span = lo.span.to(hi.span);
                    match a.unify(&b) {
                        Some(t) if t.is_ordered() => unify(self, t, span, &mut elem_type),
                        Some(t) => {
                            self.err(
                                Code::ListType,
                                span,
                                format!("values of type {t} have no order, so they make no range"),
                            );
                        }
                        None => {
                            self.err(Code::ListType, span, format!("a range from {a:#} to {b:#}"));
                        }
                    }
                }
            }
        }
        Type::List(Box::new(elem_type))
    }

    fn call(&mut self, e: &Expr, func: &Ident, args: &[Expr], ctx: Ctx) -> Type {
        let types: Vec<Type> = args.iter().map(|a| self.expr(a, ctx)).collect();
        if args.len() > MAX_ARGS {
            self.err(
                Code::TooMany,
                e.span,
                format!("more than {MAX_ARGS} arguments"),
            );
            return Type::Error;
        }
        if let Some(b) = Builtin::by_name(&func.name) {
            self.resolved.insert(e.id, Resolved::Builtin(b));
            return self.builtin(e, func, b, args, &types);
        }
        let Some(sig) = self.syms.externs.get(&func.name).cloned() else {
            self.err(
                Code::UnknownFunction,
                func.span,
                format!("unknown function `{}`", func.name),
            );
            let names: Vec<String> = Builtin::ALL
                .iter()
                .map(|(_, n)| n.to_string())
                .chain(self.syms.externs.keys().cloned())
                .collect();
            let hint =
                did_you_mean(&func.name, names.iter().map(String::as_str)).unwrap_or_else(|| {
                    format!(
                        "declare a host function: extern fn {}(x: string) -> decimal",
                        func.name
                    )
                });
            self.hint(hint);
            return Type::Error;
        };
        self.used.insert(format!("fn {}", func.name));
        self.resolved
            .insert(e.id, Resolved::Extern(func.name.clone()));
        if sig.params.len() != args.len() {
            self.arity(e, &func.name, sig.params.len(), args.len());
        } else {
            for ((arg, t), want) in args.iter().zip(&types).zip(&sig.params) {
                let want_t = Type::from_name(*want);
                if !t.fits(&want_t) {
                    self.err(
                        Code::ArgumentType,
                        arg.span,
                        format!("`{}` takes {want_t:#} here, not {t:#}", func.name),
                    );
                }
            }
        }
        Type::from_name(sig.ret)
    }

    fn arity(&mut self, e: &Expr, name: &str, want: usize, got: usize) {
        self.err(
            Code::Arity,
            e.span,
            format!(
                "`{name}` takes {want} argument{}, but {got} {} given",
                if want == 1 { "" } else { "s" },
                if got == 1 { "is" } else { "are" }
            ),
        );
    }

    fn builtin(
        &mut self,
        e: &Expr,
        func: &Ident,
        b: Builtin,
        args: &[Expr],
        types: &[Type],
    ) -> Type {
        match b {
            Builtin::Floor | Builtin::Ceil | Builtin::Round => {
                let ([arg], [t]) = (args, types) else {
                    self.arity(e, &func.name, 1, args.len());
                    return Type::Error;
                };
                match t {
                    Type::Integer | Type::Decimal | Type::Money | Type::Points | Type::Error => {
                        t.clone()
                    }
                    other => {
                        self.err(
                            Code::ArgumentType,
                            arg.span,
                            format!(
                                "`{}` rounds numbers, money or points, not {other:#}",
                                func.name
                            ),
                        );
                        Type::Error
                    }
                }
            }
            Builtin::Min | Builtin::Max => {
                if args.len() < 2 {
                    self.err(
                        Code::Arity,
                        e.span,
                        format!("`{}` takes at least 2 arguments", func.name),
                    );
                    return Type::Error;
                }
                let mut acc = Type::Error;
                for (arg, t) in args.iter().zip(types) {
                    match acc.unify(t) {
                        Some(u) if u.is_ordered() => acc = u,
                        Some(u) => {
                            self.err(
                                Code::ArgumentType,
                                arg.span,
                                format!("values of type {u} have no order"),
                            );
                            return Type::Error;
                        }
                        None => {
                            self.err(
                                Code::ArgumentType,
                                arg.span,
                                format!("`{}` of {acc} and {t}", func.name),
                            );
                            self.hint("all arguments must have one type");
                            return Type::Error;
                        }
                    }
                }
                acc
            }
            Builtin::Weekday | Builtin::Hour | Builtin::Date => {
                let ([arg], [t]) = (args, types) else {
                    self.arity(e, &func.name, 1, args.len());
                    return Type::Error;
                };
                if !matches!(t, Type::DateTime | Type::Error) {
                    self.err(
                        Code::ArgumentType,
                        arg.span,
                        format!("`{}` takes a datetime, not {t:#}", func.name),
                    );
                    self.hint("e.g. weekday(tx.time)");
                    return Type::Error;
                }
                match b {
                    Builtin::Weekday => Type::Weekday,
                    Builtin::Hour => Type::Integer,
                    _ => Type::Date,
                }
            }
        }
    }

    // ---- tests

    fn test(&mut self, t: &TestDecl) {
        if t.steps.len() > MAX_STMTS {
            self.err(
                Code::TooMany,
                t.name.span,
                format!("this test has more than {MAX_STMTS} steps"),
            );
        }
        let mut seen_tx = false;
        let mut seen_member = false;
        let mut expects = 0;
        for step in &t.steps {
            match step {
                TestStep::Member(r) => {
                    if seen_member || seen_tx {
                        self.err(
                            Code::TestShape,
                            r.span,
                            "`member` is set once, before the first `tx`",
                        );
                    }
                    seen_member = true;
                    self.member_record(r);
                }
                TestStep::Tx(r) => {
                    seen_tx = true;
                    self.tx_record(r);
                }
                TestStep::Expect(x) => {
                    expects += 1;
                    if !seen_tx {
                        self.err(Code::TestShape, x.span, "`expect` comes after a `tx`");
                        self.hint("an expectation checks the outcome of the latest transaction");
                    }
                    self.expectation(x);
                }
            }
        }
        if !seen_tx || expects == 0 {
            self.err(
                Code::TestShape,
                t.name.span,
                format!(
                    "test \"{}\" needs at least one `tx` and one `expect`",
                    t.name.value
                ),
            );
        }
    }

    fn expectation(&mut self, x: &Expectation) {
        let t = self.expr(&x.value, CONST_CTX);
        let want = match &x.subject {
            Subject::Tier => Type::Tier,
            Subject::Component(id) => {
                if !self.syms.rules.contains_key(&id.name) {
                    self.err(
                        Code::UnknownComponent,
                        id.span,
                        format!("no rule or campaign is called `{}`", id.name),
                    );
                    if let Some(h) =
                        did_you_mean(&id.name, self.syms.rules.keys().map(String::as_str))
                    {
                        self.hint(h);
                    }
                }
                Type::Points
            }
            Subject::Points | Subject::Balance => Type::Points,
        };
        let fits = matches!(
            (&want, &t),
            (Type::Points, Type::Integer | Type::Points | Type::Error)
                | (Type::Tier, Type::Tier | Type::Error)
        );
        if !fits {
            let shown = if want == Type::Points {
                "a whole number of points".to_string()
            } else {
                format!("{want:#}")
            };
            self.err(
                Code::TestValueType,
                x.value.span,
                format!("expected {shown}, not {t:#}"),
            );
        }
    }

    fn field_value(&mut self, f: &RecordField, want: &Type) {
        match &f.value {
            RecordValue::Expr(e) => {
                let t = self.expr(e, CONST_CTX);
                if !t.fits(want) {
                    self.err(
                        Code::TestValueType,
                        e.span,
                        format!("`{}` is {want:#}, not {t:#}", f.key.name),
                    );
                    if *want == Type::Money {
                        self.hint(format!(
                            "write an amount with its currency, e.g. 12.50 {}",
                            self.syms.currency
                        ));
                    } else if *want == Type::DateTime {
                        self.hint("write a date and time, e.g. 2026-12-05T12:00");
                    }
                }
            }
            RecordValue::Record(r) => {
                self.err(
                    Code::TestValueType,
                    r.span,
                    format!("`{}` is {want:#}, not a record", f.key.name),
                );
            }
            RecordValue::List(_, span) => {
                self.err(
                    Code::TestValueType,
                    *span,
                    format!("`{}` is {want:#}, not a list", f.key.name),
                );
            }
        }
    }

    fn unique_keys(&mut self, r: &Record) {
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for f in &r.fields {
            if let Some(first) = seen.get(f.key.name.as_str()) {
                self.diags.push(
                    Diagnostic::new(
                        Code::Duplicate,
                        f.key.span,
                        format!("`{}` is given twice", f.key.name),
                    )
                    .with_note(*first, "first given here"),
                );
            } else {
                seen.insert(&f.key.name, f.key.span);
            }
        }
    }

    fn unknown_field(&mut self, key: &Ident, what: &str, fields: &[&str]) {
        self.err(
            Code::UnknownTestField,
            key.span,
            format!("{what} has no field `{}`", key.name),
        );
        let hint = did_you_mean(&key.name, fields.iter().copied())
            .unwrap_or_else(|| format!("the fields are {}", fields.join(", ")));
        self.hint(hint);
    }

    fn attributes_record(&mut self, f: &RecordField, scope: AttrScope) {
        let RecordValue::Record(r) = &f.value else {
            let span = f.span;
            self.err(
                Code::TestValueType,
                span,
                "`attributes` is a record, e.g. attributes: { segment: \"student\" }",
            );
            return;
        };
        self.unique_keys(r);
        for a in &r.fields {
            let map = match scope {
                AttrScope::Tx => &self.syms.tx_attributes,
                AttrScope::Member => &self.syms.member_attributes,
            };
            match map.get(&a.key.name).copied() {
                Some(ty) => self.field_value(a, &Type::from_name(ty)),
                None => {
                    self.err(
                        Code::UndeclaredAttribute,
                        a.key.span,
                        format!(
                            "attribute `{}` of `{}` is not declared",
                            a.key.name,
                            scope.as_str()
                        ),
                    );
                    self.hint(format!(
                        "declare it: attribute {}.{}: string",
                        scope.as_str(),
                        a.key.name
                    ));
                }
            }
        }
    }

    fn member_record(&mut self, r: &Record) {
        self.unique_keys(r);
        const FIELDS: [&str; 5] = ["tier", "enrolled", "balance", "attributes", "aggregates"];
        for f in &r.fields {
            match f.key.name.as_str() {
                "tier" => self.field_value(f, &Type::Tier),
                "enrolled" => self.field_value(f, &Type::Date),
                "balance" => self.field_value(f, &Type::Points),
                "attributes" => self.attributes_record(f, AttrScope::Member),
                "aggregates" => {
                    let RecordValue::Record(agg) = &f.value else {
                        self.err(Code::TestValueType, f.span, "`aggregates` is a record, e.g. aggregates: { airline_spend: 6000 USD }");
                        continue;
                    };
                    self.unique_keys(agg);
                    for a in &agg.fields {
                        match self.syms.aggregates.get(&a.key.name).map(|i| i.measure) {
                            Some(m) => {
                                let want = if m == Measure::Spend {
                                    Type::Money
                                } else {
                                    Type::Integer
                                };
                                self.field_value(a, &want);
                            }
                            None => {
                                self.err(
                                    Code::UnknownName,
                                    a.key.span,
                                    format!("no aggregate is called `{}`", a.key.name),
                                );
                                if let Some(h) = did_you_mean(
                                    &a.key.name,
                                    self.syms.aggregates.keys().map(String::as_str),
                                ) {
                                    self.hint(h);
                                }
                            }
                        }
                    }
                }
                _ => self.unknown_field(&f.key, "`member`", &FIELDS),
            }
        }
    }

    fn tx_record(&mut self, r: &Record) {
        self.unique_keys(r);
        const FIELDS: [&str; 13] = [
            "id",
            "kind",
            "amount",
            "mcc",
            "merchant",
            "channel",
            "presence",
            "country",
            "time",
            "original_id",
            "line_items",
            "attributes",
            "points",
        ];
        for f in &r.fields {
            match f.key.name.as_str() {
                "id" | "merchant" | "channel" | "country" | "original_id" => {
                    self.field_value(f, &Type::String)
                }
                "kind" => self.field_value(f, &Type::Kind),
                "amount" => self.field_value(f, &Type::Money),
                "points" => self.field_value(f, &Type::Points),
                "mcc" => {
                    self.field_value(f, &Type::Integer);
                    if let RecordValue::Expr(Expr {
                        kind: ExprKind::Literal(Literal::Integer(n)),
                        span,
                        ..
                    }) = &f.value
                    {
                        if !(0..=9999).contains(n) {
                            self.err(
                                Code::OutOfRange,
                                *span,
                                format!("{n} is not a merchant category code"),
                            );
                            self.hint("merchant category codes are 0 to 9999");
                        }
                    }
                }
                "presence" => self.field_value(f, &Type::Presence),
                "time" => self.field_value(f, &Type::DateTime),
                "attributes" => self.attributes_record(f, AttrScope::Tx),
                "line_items" => {
                    let RecordValue::List(items, _) = &f.value else {
                        self.err(Code::TestValueType, f.span, "`line_items` is a list of records, e.g. [{ sku: \"A1\", category: \"coffee\", quantity: 1, amount: 3.50 USD }]");
                        continue;
                    };
                    for item in items {
                        self.unique_keys(item);
                        for g in &item.fields {
                            let want = match g.key.name.as_str() {
                                "sku" | "category" => Type::String,
                                "quantity" => Type::Integer,
                                "amount" => Type::Money,
                                _ => {
                                    self.unknown_field(
                                        &g.key,
                                        "a line item",
                                        &["sku", "category", "quantity", "amount"],
                                    );
                                    continue;
                                }
                            };
                            self.field_value(g, &want);
                        }
                        for required in ["sku", "category", "quantity", "amount"] {
                            if item.get(required).is_none() {
                                self.err(
                                    Code::TestShape,
                                    item.span,
                                    format!("this line item has no `{required}`"),
                                );
                            }
                        }
                    }
                }
                _ => self.unknown_field(&f.key, "`tx`", &FIELDS),
            }
        }
        let kind = r.get("kind").and_then(|f| match &f.value {
            RecordValue::Expr(Expr {
                kind: ExprKind::Name(n),
                ..
            }) => TxKind::parse(&n.name),
            _ => None,
        });
        let kind = kind.unwrap_or(TxKind::Purchase);
        let mut required = vec!["time"];
        if kind != TxKind::Adjustment {
            required.push("amount");
        } else {
            required.push("points");
        }
        if matches!(kind, TxKind::Purchase | TxKind::Refund) {
            required.push("mcc");
        }
        if kind.needs_original() {
            required.push("original_id");
        }
        for field in required {
            if r.get(field).is_none() {
                self.err(
                    Code::TestShape,
                    r.span,
                    format!("this {kind} has no `{field}`"),
                );
                self.hint(format!("add `{field}: ...` to the tx record"));
            }
        }
    }

    // ---- pass 3: unused declarations

    fn unused(&mut self, program: &Program) {
        for item in &program.items {
            let (key, name, what) = match &item.kind {
                ItemKind::Category(c) => (c.name.name.clone(), &c.name, "category"),
                ItemKind::Aggregate(a) => (a.name.name.clone(), &a.name, "aggregate"),
                ItemKind::Group(g) => (format!("group {}", g.name.name), &g.name, "group"),
                ItemKind::Extern(x) => (format!("fn {}", x.name.name), &x.name, "function"),
                ItemKind::Attribute(a) => (
                    format!("attribute {}.{}", a.scope.as_str(), a.name.name),
                    &a.name,
                    "attribute",
                ),
                _ => continue,
            };
            if !self.used.contains(&key) && self.decl_spans.values().any(|s| *s == name.span) {
                self.err(
                    Code::Unused,
                    name.span,
                    format!("{what} `{}` is never used", name.name),
                );
                self.hint("remove it, or use it in a rule");
            }
        }
    }
}
