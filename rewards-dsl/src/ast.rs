//! The syntax tree of a `.rwd` program.
//!
//! This module owns the *shape* of a program as written: every node carries
//! a [`Span`] (byte offsets into the source), nothing is resolved yet. The
//! tree is faithful to the source order so that the formatter can print it
//! back; the checker ([`crate::check`]) validates it and produces a symbol
//! table plus the type of every expression (indexed by [`ExprId`]).
//!
//! Stability contract: the compiler builds its `Plan` from this tree and the
//! checker's output. Adding a variant is a breaking change for the compiler
//! and must be coordinated; the helpers on [`RuleDecl`] and [`TestDecl`]
//! give typed access that a checked program guarantees to be well-formed
//! (exactly one action per rule, at most one `when`, and so on).

use chrono::{NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use std::fmt;

/// A half-open byte range `start..end` into the source text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    /// Offset of the first byte.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

impl fmt::Debug for Span {
    // Printed as `@start..end` so that tests can strip spans from a debug dump.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}..{}", self.start, self.end)
    }
}

/// An identifier (rule id, tier, category, tag, group, function name...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    /// The name as written.
    pub name: String,
    /// Where it was written.
    pub span: Span,
}

/// A string literal, escapes already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrLit {
    /// The decoded text.
    pub value: String,
    /// The span including the quotes.
    pub span: Span,
}

/// A whole `.rwd` file: its top-level items in source order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Program {
    /// The items that parsed; items with syntax errors are left out.
    pub items: Vec<Item>,
    /// Number of expressions in the program: every [`ExprId`] is below it.
    pub expr_count: u32,
}

/// One top-level item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it declares.
    pub kind: ItemKind,
    /// From its first keyword to its last token.
    pub span: Span,
}

/// The kinds of top-level items.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    /// `ruleset "acme-card" version 7`
    Ruleset(RulesetDecl),
    /// `currency USD`
    Currency(CurrencyDecl),
    /// `timezone "America/New_York"`
    Timezone(TimezoneDecl),
    /// `rounding floor` (the default rounding of every rule)
    Rounding(RoundingDecl),
    /// `week starts sunday`
    WeekStart(WeekStartDecl),
    /// `points expire after 24 months` and friends
    Expiry(ExpiryDecl),
    /// `points pending 14 days`
    Pending(PendingDecl),
    /// `attribute tx.segment: string`
    Attribute(AttributeDecl),
    /// `extern fn risk(merchant: string) -> decimal`
    Extern(ExternDecl),
    /// `category dining = mcc in [5812, 5813]`
    Category(CategoryDecl),
    /// `aggregate airline_spend = spend where ... per calendar year`
    Aggregate(AggregateDecl),
    /// `tier gold qualify ... grace 90 days`
    Tier(TierDecl),
    /// `group category_bonus takes best`
    Group(GroupDecl),
    /// `rule ... { ... }` or `campaign ... { ... }`
    Rule(Box<RuleDecl>),
    /// `test "..." { ... }`
    Test(TestDecl),
}

/// `ruleset "name" version N`
#[derive(Debug, Clone, PartialEq)]
pub struct RulesetDecl {
    /// The ruleset's id.
    pub name: StrLit,
    /// Its version number.
    pub version: u32,
    /// Span of the version number.
    pub version_span: Span,
}

/// `currency USD`: the one currency of the ruleset's money.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrencyDecl {
    /// The ISO 4217 code as written (validated by the checker).
    pub code: Ident,
}

/// `timezone "Area/City"`: the zone of every window and every date.
#[derive(Debug, Clone, PartialEq)]
pub struct TimezoneDecl {
    /// The IANA zone name (validated by the checker).
    pub zone: StrLit,
}

/// `rounding MODE`: the default rounding of rule awards.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundingDecl {
    /// The mode.
    pub mode: RoundingMode,
    /// Span of the mode word.
    pub mode_span: Span,
}

/// How an exact award is turned into whole points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoundingMode {
    /// Toward negative infinity.
    Floor,
    /// Toward positive infinity.
    Ceiling,
    /// To nearest, halves away from zero.
    HalfUp,
    /// To nearest, halves to the even neighbour (banker's rounding).
    HalfEven,
}

impl RoundingMode {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundingMode::Floor => "floor",
            RoundingMode::Ceiling => "ceiling",
            RoundingMode::HalfUp => "half_up",
            RoundingMode::HalfEven => "half_even",
        }
    }
}

/// `week starts DAY`
#[derive(Debug, Clone, PartialEq)]
pub struct WeekStartDecl {
    /// The first day of a week window.
    pub day: chrono::Weekday,
    /// Span of the day name.
    pub day_span: Span,
}

/// `points expire ...`
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiryDecl {
    /// When earned points expire.
    pub rule: Expiry,
}

/// The expiry policy of earned points.
#[derive(Debug, Clone, PartialEq)]
pub enum Expiry {
    /// `points expire after 24 months`: counted from the earning transaction's time.
    After(Duration),
    /// `points expire at end of quarter + 3 months`: end of the earning
    /// transaction's period (in the ruleset's zone) plus an optional delay.
    AtEndOf {
        /// The period whose end starts the clock.
        period: Period,
        /// Added to the end of the period.
        plus: Option<Duration>,
    },
    /// `points expire never`
    Never,
}

/// A calendar period for expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Calendar month.
    Month,
    /// Calendar quarter.
    Quarter,
    /// Calendar year.
    Year,
}

impl Period {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }
}

/// `points pending 14 days`: earned points become available after this delay.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDecl {
    /// The delay.
    pub delay: Duration,
}

/// `attribute tx.NAME: TYPE` or `attribute member.NAME: TYPE`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeDecl {
    /// Whose attribute it is.
    pub scope: AttrScope,
    /// The attribute's key in the transaction's or profile's `attributes`.
    pub name: Ident,
    /// Its declared type.
    pub ty: TypeName,
    /// Span of the type name.
    pub ty_span: Span,
}

/// Transaction or member attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttrScope {
    /// `tx.attributes.NAME`
    Tx,
    /// `member.attributes.NAME`
    Member,
}

impl AttrScope {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            AttrScope::Tx => "tx",
            AttrScope::Member => "member",
        }
    }
}

/// A type name as written in declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeName {
    /// `string`
    String,
    /// `decimal`
    Decimal,
    /// `integer`
    Integer,
    /// `bool`
    Bool,
    /// `money` (in the ruleset's currency)
    Money,
    /// `date`
    Date,
    /// `datetime`
    DateTime,
    /// `duration`
    Duration,
    /// `points`
    Points,
}

impl TypeName {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            TypeName::String => "string",
            TypeName::Decimal => "decimal",
            TypeName::Integer => "integer",
            TypeName::Bool => "bool",
            TypeName::Money => "money",
            TypeName::Date => "date",
            TypeName::DateTime => "datetime",
            TypeName::Duration => "duration",
            TypeName::Points => "points",
        }
    }
}

/// `extern fn NAME(p: TYPE, ...) -> TYPE`: a typed host function that the
/// host registers from Rust when it compiles the ruleset.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternDecl {
    /// The function's name.
    pub name: Ident,
    /// Its parameters in order.
    pub params: Vec<Param>,
    /// Its result type.
    pub ret: TypeName,
    /// Span of the result type.
    pub ret_span: Span,
}

/// One parameter of an extern function.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Documentation-only name.
    pub name: Ident,
    /// Its type.
    pub ty: TypeName,
    /// Span of the whole `name: type`.
    pub span: Span,
}

/// `category NAME = mcc in [...]`
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryDecl {
    /// The category's name, usable as `tx.mcc in NAME`.
    pub name: Ident,
    /// Its merchant category codes: integers and integer ranges.
    pub codes: Vec<ListElem>,
    /// Span of the list.
    pub list_span: Span,
}

/// `aggregate NAME = spend|count [where COND] per WINDOW`
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateDecl {
    /// The aggregate's name, usable in expressions.
    pub name: Ident,
    /// What is summed.
    pub measure: Measure,
    /// Span of the measure word.
    pub measure_span: Span,
    /// Which of the member's transactions count (reads `tx.` only).
    pub filter: Option<Expr>,
    /// Over which window.
    pub window: WindowSpec,
}

/// What a member aggregate accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// Sum of amounts (money), net of refunds.
    Spend,
    /// Number of transactions (integer), net of refunds.
    Count,
}

impl Measure {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Spend => "spend",
            Measure::Count => "count",
        }
    }
}

/// A window written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSpec {
    /// Which window.
    pub kind: WindowKind,
    /// Where it was written.
    pub span: Span,
}

/// The windows of caps and aggregates; all computed in the ruleset's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WindowKind {
    /// `day`
    Day,
    /// `week` (starting on the declared week start)
    Week,
    /// `month`
    Month,
    /// `calendar quarter`
    Quarter,
    /// `calendar year`
    Year,
    /// `rolling N days` (today and the N-1 days before it)
    Rolling(u16),
    /// `lifetime`
    Lifetime,
}

impl WindowKind {
    /// The matching `rewards_core` window, given the week's first day.
    pub fn to_core(self, week_start: chrono::Weekday) -> rewards_core::Window {
        use rewards_core::Window;
        match self {
            WindowKind::Day => Window::Day,
            WindowKind::Week => Window::Week(week_start),
            WindowKind::Month => Window::Month,
            WindowKind::Quarter => Window::Quarter,
            WindowKind::Year => Window::Year,
            WindowKind::Rolling(n) => Window::Rolling(n),
            WindowKind::Lifetime => Window::Lifetime,
        }
    }
}

/// `tier NAME [qualify COND] [grace DURATION]`; tiers are ordered from the
/// lowest (first declared) to the highest.
#[derive(Debug, Clone, PartialEq)]
pub struct TierDecl {
    /// The tier's name.
    pub name: Ident,
    /// The condition to reach or keep the tier; none: everyone qualifies.
    pub qualify: Option<Expr>,
    /// How long a member keeps the tier after no longer qualifying.
    pub grace: Option<Duration>,
}

/// `group NAME takes best|first`
#[derive(Debug, Clone, PartialEq)]
pub struct GroupDecl {
    /// The group's name.
    pub name: Ident,
    /// How a winner is chosen among matching members of the group.
    pub resolution: Resolution,
    /// Span of the resolution word.
    pub resolution_span: Span,
}

/// How an exclusive group picks its one award.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The largest award (ties: higher priority, then declaration order).
    Best,
    /// The matching rule with the highest priority (ties: declaration order).
    First,
}

impl Resolution {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Best => "best",
            Resolution::First => "first",
        }
    }
}

/// Whether a [`RuleDecl`] is a plain rule or a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// `rule`
    Rule,
    /// `campaign`
    Campaign,
}

/// A `rule` or a `campaign`: header clauses plus a body of statements.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDecl {
    /// Rule or campaign.
    pub kind: RuleKind,
    /// The id, unique among rules and campaigns; names its posting component.
    pub id: Ident,
    /// Human description (shown on statements and in explain output).
    pub description: Option<StrLit>,
    /// `priority N` (default 0; higher goes first).
    pub priority: Option<Spanned<u32>>,
    /// `effective from DATE to DATE` (rules only).
    pub effective: Option<DateRange>,
    /// `from DATE to DATE` (campaigns only; required there).
    pub schedule: Option<DateRange>,
    /// `audience COND` (campaigns only).
    pub audience: Option<Expr>,
    /// `budget N points` (campaigns only): across all members.
    pub budget: Option<Spanned<i64>>,
    /// `tags [a, b]`
    pub tags: Vec<Ident>,
    /// `exclusive group NAME`
    pub group: Option<Ident>,
    /// The statements of the body, in source order.
    pub body: Vec<Stmt>,
    /// Span of the `{ ... }` body.
    pub body_span: Span,
}

impl RuleDecl {
    /// The `when` condition (at most one in a checked program).
    pub fn when(&self) -> Option<&Expr> {
        self.body.iter().find_map(|s| match &s.kind {
            StmtKind::When(e) => Some(e),
            _ => None,
        })
    }

    /// The action (`earn` or `multiply`; exactly one in a checked program).
    pub fn action(&self) -> Option<&Stmt> {
        self.body
            .iter()
            .find(|s| matches!(s.kind, StmtKind::Earn(_) | StmtKind::Multiply { .. }))
    }

    /// The per-rule rounding override (at most one in a checked program).
    pub fn rounding(&self) -> Option<RoundingMode> {
        self.body.iter().find_map(|s| match s.kind {
            StmtKind::Rounding(m) => Some(m),
            _ => None,
        })
    }

    /// The caps, in source order.
    pub fn caps(&self) -> impl Iterator<Item = &Cap> {
        self.body.iter().filter_map(|s| match &s.kind {
            StmtKind::Cap(c) => Some(c),
            _ => None,
        })
    }
}

/// A value with its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

/// `from A to B` (both inclusive as dates; a datetime is an exact instant
/// in the ruleset's zone). `effective` may leave either end open.
#[derive(Debug, Clone, PartialEq)]
pub struct DateRange {
    /// Start, if any.
    pub from: Option<Moment>,
    /// End, if any.
    pub to: Option<Moment>,
    /// The whole clause.
    pub span: Span,
}

/// A date or date-time written in a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// A whole day in the ruleset's zone.
    Date(NaiveDate, Span),
    /// An instant (local time in the ruleset's zone unless an offset is written).
    DateTime(DateTimeLit, Span),
}

impl Moment {
    /// Where it was written.
    pub fn span(&self) -> Span {
        match self {
            Moment::Date(_, s) | Moment::DateTime(_, s) => *s,
        }
    }
}

/// One statement of a rule or campaign body.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// What it says.
    pub kind: StmtKind,
    /// From its keyword to its end.
    pub span: Span,
}

/// The statements of a rule body.
#[derive(Debug, Clone, PartialEq)]
pub enum StmtKind {
    /// `when COND`
    When(Expr),
    /// `earn EXPR points`
    Earn(Expr),
    /// `multiply TARGET by FACTOR`
    Multiply {
        /// What is multiplied.
        target: Target,
        /// The factor (a number).
        factor: Expr,
    },
    /// `cap N points per ...`
    Cap(Cap),
    /// `rounding MODE`: overrides the ruleset's default for this rule.
    Rounding(RoundingMode),
}

/// What a `multiply` statement scales.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `earned`: every earn component of the transaction.
    Earned(Span),
    /// `tag NAME`: the earn components of rules with that tag.
    Tag(Ident),
    /// `RULE_ID`: that rule's earn component.
    Rule(Ident),
}

/// `cap N points per transaction` or `cap N points per member per WINDOW`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    /// The most points the rule awards within the scope.
    pub limit: Spanned<i64>,
    /// The scope of the limit.
    pub scope: CapScope,
}

/// The scope of a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapScope {
    /// Per transaction.
    Transaction(Span),
    /// Per member per window.
    Member(WindowSpec),
}

/// `test "name" { member {...} tx {...} expect ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct TestDecl {
    /// The test's name.
    pub name: StrLit,
    /// Its steps in order; an `expect` refers to the latest `tx` before it.
    pub steps: Vec<TestStep>,
}

impl TestDecl {
    /// The member setup (at most one in a checked program).
    pub fn member(&self) -> Option<&Record> {
        self.steps.iter().find_map(|s| match s {
            TestStep::Member(r) => Some(r),
            _ => None,
        })
    }
}

/// One step of a test.
#[derive(Debug, Clone, PartialEq)]
pub enum TestStep {
    /// `member { tier: gold, ... }`: the member's state before the first tx.
    Member(Record),
    /// `tx { amount: 42.50 USD, ... }`: evaluate a transaction.
    Tx(Record),
    /// `expect SUBJECT OP VALUE`
    Expect(Expectation),
}

/// `{ key: value, ... }` in a test.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Fields in source order.
    pub fields: Vec<RecordField>,
    /// The braces and everything between.
    pub span: Span,
}

impl Record {
    /// The first field with this key.
    pub fn get(&self, key: &str) -> Option<&RecordField> {
        self.fields.iter().find(|f| f.key.name == key)
    }
}

/// `key: value`
#[derive(Debug, Clone, PartialEq)]
pub struct RecordField {
    /// The key.
    pub key: Ident,
    /// The value.
    pub value: RecordValue,
    /// The whole field.
    pub span: Span,
}

/// The value of a record field.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordValue {
    /// A literal or other constant expression.
    Expr(Expr),
    /// A nested record (e.g. `attributes: { segment: "student" }`).
    Record(Record),
    /// A list of records (e.g. `line_items: [{...}, {...}]`).
    List(Vec<Record>, Span),
}

/// `expect SUBJECT OP VALUE`
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// What is checked.
    pub subject: Subject,
    /// How it compares.
    pub op: CmpOp,
    /// The expected value.
    pub value: Expr,
    /// The whole statement.
    pub span: Span,
}

/// What an expectation looks at (after the latest `tx`).
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// `points`: total points awarded to the latest transaction.
    Points,
    /// `component RULE_ID`: that rule's component on the latest transaction (0 if none).
    Component(Ident),
    /// `balance`: the member's balance after the latest transaction.
    Balance,
    /// `tier`: the member's tier after the latest transaction.
    Tier,
}

/// A comparison operator in an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// The operator.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// Identity of an expression: dense, `0..Program::expr_count`, assigned in
/// source order. The checker's type table is indexed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub u32);

impl ExprId {
    /// As an index into a table of `expr_count` entries.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// Its identity.
    pub id: ExprId,
    /// What it is.
    pub kind: ExprKind,
    /// Where it was written.
    pub span: Span,
}

/// The kinds of expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal value.
    Literal(Literal),
    /// A bare name: a category, tier, aggregate, enum value (`purchase`,
    /// `online`, `sat`) or currency code; resolved by the checker.
    Name(Ident),
    /// A dotted path rooted at `tx`, `member` or `item`.
    Path(Path),
    /// A prefix operator.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// Its operand.
        operand: Box<Expr>,
    },
    /// An infix operator.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `[a, b, c..d]`
    List(Vec<ListElem>),
    /// `f(a, b)`: a built-in or an extern function.
    Call {
        /// The function's name.
        func: Ident,
        /// Its arguments.
        args: Vec<Expr>,
    },
    /// `spend(calendar year)` / `count(month)`: an unfiltered member aggregate.
    WindowAggregate {
        /// What is accumulated.
        measure: Measure,
        /// Over which window.
        window: WindowSpec,
    },
    /// `sum(tx.line_items where COND, VALUE)` / `count(tx.line_items where COND)`:
    /// a bounded fold over the transaction's line items; `item.` paths refer
    /// to the current item inside `COND` and `VALUE`.
    ItemAggregate {
        /// Sum or count.
        func: ItemFn,
        /// Which items count.
        filter: Option<Box<Expr>>,
        /// What is summed (required for `sum`, absent for `count`).
        value: Option<Box<Expr>>,
    },
    /// `( e )`: kept so that the formatter prints the author's parentheses.
    Paren(Box<Expr>),
}

/// A fold over line items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemFn {
    /// `sum(...)`
    Sum,
    /// `count(...)`
    Count,
}

impl ItemFn {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemFn::Sum => "sum",
            ItemFn::Count => "count",
        }
    }
}

/// An element of a list: a value or an inclusive range `lo..hi`.
#[derive(Debug, Clone, PartialEq)]
pub enum ListElem {
    /// One value.
    Single(Expr),
    /// An inclusive range of an ordered type (`3000..3299`, `mon..fri`).
    Range(Expr, Expr),
}

/// `tx.amount`, `member.attributes.prior_tier`, `item.category`...
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// The root object.
    pub root: Root,
    /// The field names after the root, at least one.
    pub fields: Vec<Ident>,
}

/// The root of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    /// The transaction being evaluated.
    Tx,
    /// The member's state before the transaction.
    Member,
    /// The current line item inside `sum(...)`/`count(...)`.
    Item,
}

impl Root {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Tx => "tx",
            Root::Member => "member",
            Root::Item => "item",
        }
    }
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `not`
    Not,
    /// `-`
    Neg,
}

/// Infix operators, lowest precedence first: `or`; `and`; comparisons and
/// `in`/`not in` (non-chaining); `+ -`; `* /`. (`not` binds between `and`
/// and the comparisons; unary `-` binds tightest.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in` (a list or a category)
    In,
    /// `not in`
    NotIn,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl BinaryOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::In => "in",
            BinaryOp::NotIn => "not in",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
        }
    }

    /// Binding strength: higher binds tighter (`or` = 1 ... `*` = 5).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge
            | BinaryOp::In
            | BinaryOp::NotIn => 4,
            BinaryOp::Add | BinaryOp::Sub => 5,
            BinaryOp::Mul | BinaryOp::Div => 6,
        }
    }

    /// Comparison or membership (non-chaining).
    pub fn is_comparison(self) -> bool {
        self.precedence() == 4
    }
}

/// Precedence of prefix `not` (between `and` and the comparisons).
pub const NOT_PRECEDENCE: u8 = 3;
/// Precedence of prefix `-` (tightest).
pub const NEG_PRECEDENCE: u8 = 7;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `42`, `5_000_000`
    Integer(i64),
    /// `1.5`
    Decimal(Decimal),
    /// `42.50 USD`
    Money {
        /// The exact amount.
        amount: Decimal,
        /// The currency code as written (the checker requires the ruleset's).
        currency: Ident,
    },
    /// `"text"`
    String(String),
    /// `true` / `false`
    Bool(bool),
    /// `2026-12-01`
    Date(NaiveDate),
    /// `2026-12-05T12:00`
    DateTime(DateTimeLit),
    /// `90 days`
    Duration(Duration),
}

/// A date-time literal: a local time in the ruleset's zone, or an instant
/// when an offset (`Z`, `+02:00`) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTimeLit {
    /// Wall-clock date and time as written.
    pub local: NaiveDateTime,
    /// Minutes east of UTC, when written.
    pub offset_minutes: Option<i32>,
    /// Whether seconds were written (for printing back).
    pub has_seconds: bool,
}

/// A duration: a count of a calendar or clock unit. Months and years are
/// calendar units (added to dates), the rest are fixed lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Duration {
    /// How many units.
    pub count: u32,
    /// Which unit.
    pub unit: DurationUnit,
    /// Where it was written.
    pub span: Span,
}

/// Units of a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DurationUnit {
    /// 60 seconds.
    Minutes,
    /// 60 minutes.
    Hours,
    /// A calendar day in the ruleset's zone.
    Days,
    /// 7 days.
    Weeks,
    /// A calendar month.
    Months,
    /// A calendar year.
    Years,
}

impl DurationUnit {
    /// The singular and plural words.
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            DurationUnit::Minutes => ("minute", "minutes"),
            DurationUnit::Hours => ("hour", "hours"),
            DurationUnit::Days => ("day", "days"),
            DurationUnit::Weeks => ("week", "weeks"),
            DurationUnit::Months => ("month", "months"),
            DurationUnit::Years => ("year", "years"),
        }
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (one, many) = self.unit.words();
        write!(
            f,
            "{} {}",
            self.count,
            if self.count == 1 { one } else { many }
        )
    }
}
