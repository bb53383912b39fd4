//! Text to syntax tree. Parsing never fails: it returns the items that
//! parsed and a diagnostic for every syntax error.
//!
//! The source is first guarded (size, bracket nesting) so that the pest
//! parser cannot overflow its stack; then it is parsed one top-level item at
//! a time, and after a syntax error the parser skips to the next line that
//! starts (in column 0) with a top-level keyword. Expressions are built with
//! precedence climbing, bounded by [`MAX_EXPR_OPERATORS`] and
//! [`MAX_EXPR_DEPTH`], so every later pass may recurse over the tree safely.

use crate::ast::*;
use crate::diag::{Code, Diagnostic};
use crate::limits::{
    MAX_EXPR_DEPTH, MAX_EXPR_OPERATORS, MAX_ITEMS, MAX_LIST_LEN, MAX_NESTING_DEPTH,
    MAX_SOURCE_BYTES, MAX_STRING_BYTES,
};
use chrono::{NaiveDate, NaiveTime};
use pest::iterators::Pair;
use pest::Parser as _;
use rust_decimal::Decimal;
use std::str::FromStr;

mod grammar {
    #![allow(missing_docs)]
    //! The pest grammar (`rwd.pest`); `Rule` is private to the parser.
    #[derive(pest_derive::Parser)]
    #[grammar = "rwd.pest"]
    pub(super) struct RwdParser;
}
use grammar::{Rule, RwdParser};

/// The words that start a top-level item; error recovery resumes at a line
/// starting with one of them.
pub const TOP_LEVEL_KEYWORDS: &[&str] = &[
    "ruleset",
    "currency",
    "timezone",
    "rounding",
    "week",
    "points",
    "attribute",
    "extern",
    "category",
    "aggregate",
    "tier",
    "group",
    "rule",
    "campaign",
    "test",
];

/// Parses a whole program. The tree holds every item that parsed; the
/// diagnostics list every syntax error (`R01xx`) and limit (`R04xx`) hit.
pub fn parse(source: &str) -> (Program, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if source.len() > MAX_SOURCE_BYTES {
        diags.push(
            Diagnostic::new(
                Code::SourceTooLarge,
                Span::new(0, 0),
                format!(
                    "the source is {} bytes; at most {MAX_SOURCE_BYTES} are accepted",
                    source.len()
                ),
            )
            .with_hint("split the program or remove unused rules"),
        );
        return (Program::default(), diags);
    }
    if let Some(span) = too_deep(source) {
        diags.push(
            Diagnostic::new(
                Code::NestingTooDeep,
                span,
                format!("brackets are nested more than {MAX_NESTING_DEPTH} deep"),
            )
            .with_hint("flatten the expression, e.g. by removing redundant parentheses"),
        );
        return (Program::default(), diags);
    }
    let mut builder = Builder {
        base: 0,
        next_id: 0,
        diags: Vec::new(),
    };
    let mut items = Vec::new();
    let mut pos = skip_trivia(source, 0);
    while pos < source.len() {
        if items.len() >= MAX_ITEMS {
            builder.diags.push(Diagnostic::new(
                Code::TooMany,
                Span::new(pos, pos),
                format!("more than {MAX_ITEMS} top-level items"),
            ));
            break;
        }
        let rest = source.get(pos..).unwrap_or("");
        match RwdParser::parse(Rule::item_at, rest) {
            Ok(mut pairs) => {
                let item_pair = pairs.next().and_then(|p| p.into_inner().next());
                let Some(item_pair) = item_pair else { break };
                let end = pos + item_pair.as_span().end();
                builder.base = pos;
                if let Ok(item) = builder.item(item_pair) {
                    items.push(item);
                }
                pos = skip_trivia(source, end.max(pos + 1));
            }
            Err(error) => {
                builder.diags.push(syntax_error(&error, source, pos));
                pos = next_item_line(source, pos);
            }
        }
    }
    diags.append(&mut builder.diags);
    let program = Program {
        items,
        expr_count: builder.next_id,
    };
    (program, diags)
}

/// Whether the parse rejected the whole file (too large, nested too deep),
/// so that later passes have nothing to look at.
pub fn rejected_whole(diags: &[Diagnostic]) -> bool {
    diags
        .iter()
        .any(|d| matches!(d.code, Code::SourceTooLarge | Code::NestingTooDeep))
}

/// Finds the first bracket nested deeper than the limit, skipping strings
/// and comments.
fn too_deep(source: &str) -> Option<Span> {
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i).copied().unwrap_or(b' ') {
            b'#' => {
                while i < bytes.len() && bytes.get(i) != Some(&b'\n') {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes.get(i) {
                        Some(b'\\') => i += 1,
                        Some(b'"') | Some(b'\n') => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Some(Span::new(i, i + 1));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Skips whitespace and comments from `pos`.
fn skip_trivia(source: &str, mut pos: usize) -> usize {
    let bytes = source.as_bytes();
    loop {
        match bytes.get(pos) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => pos += 1,
            Some(b'#') => {
                while pos < bytes.len() && bytes.get(pos) != Some(&b'\n') {
                    pos += 1;
                }
            }
            _ => return pos.min(source.len()),
        }
    }
}

/// The start of the next line after `pos` that begins with a top-level
/// keyword, or the end of the source.
fn next_item_line(source: &str, pos: usize) -> usize {
    let mut at = pos;
    while let Some(nl) = source.get(at..).and_then(|s| s.find('\n')) {
        at += nl + 1;
        let line = source.get(at..).unwrap_or("");
        let word_len = line
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let word = line.get(..word_len).unwrap_or("");
        if TOP_LEVEL_KEYWORDS.contains(&word) {
            return at;
        }
    }
    source.len()
}

/// A pest error as a diagnostic with a readable list of expectations.
fn syntax_error(error: &pest::error::Error<Rule>, source: &str, base: usize) -> Diagnostic {
    let at = match error.location {
        pest::error::InputLocation::Pos(p) => base + p,
        pest::error::InputLocation::Span((s, _)) => base + s,
    };
    let found = token_at(source, at);
    let end = at + found.len();
    let expected = match &error.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe_expected(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let found_text = if found.is_empty() {
        "the end of the file".to_string()
    } else {
        format!("`{found}`")
    };
    let mut diag = Diagnostic::new(
        Code::Syntax,
        Span::new(at, end.max(at)),
        format!("unexpected {found_text}"),
    );
    if !expected.is_empty() {
        diag = diag.with_hint(format!("expected {expected}"));
    }
    diag
}

/// The word or character at `at`, for messages.
fn token_at(source: &str, at: usize) -> &str {
    let rest = source.get(at..).unwrap_or("");
    let word = rest
        .char_indices()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '_')
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    if word > 0 {
        return rest.get(..word.min(40)).unwrap_or("");
    }
    match rest.chars().next() {
        Some(c) if !c.is_whitespace() => rest.get(..c.len_utf8()).unwrap_or(""),
        Some(_) => "",
        None => "",
    }
}

fn describe_expected(rules: &[Rule]) -> String {
    let mut labels: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !labels.contains(&s) {
            labels.push(s);
        }
    };
    for r in rules {
        push(rule_label(*r));
    }
    if labels.iter().any(|l| l == "an expression") {
        labels.retain(|l| {
            !matches!(
                l.as_str(),
                "a name" | "`spend` or `count`" | "a whole number" | "`item_fn`" | "`root`"
            )
        });
    }
    if labels.iter().any(|l| l == "a top-level item") {
        labels.retain(|l| !l.starts_with('`') || l == "a top-level item");
    }
    labels.truncate(8);
    match labels.len() {
        0 => String::new(),
        1 => labels.remove(0),
        n => {
            let last = labels.remove(n - 1);
            format!("{} or {last}", labels.join(", "))
        }
    }
}

fn rule_label(rule: Rule) -> String {
    let name = format!("{rule:?}");
    if let Some(word) = name.strip_prefix("k_") {
        return match rule {
            Rule::k_ruleset
            | Rule::k_currency
            | Rule::k_timezone
            | Rule::k_week
            | Rule::k_attribute
            | Rule::k_extern
            | Rule::k_category
            | Rule::k_aggregate
            | Rule::k_group
            | Rule::k_campaign
            | Rule::k_test => "a top-level item".to_string(),
            Rule::k_days => "`days`".to_string(),
            _ => format!("`{word}`"),
        };
    }
    let text = match rule {
        Rule::item | Rule::item_at | Rule::EOI => "a top-level item",
        Rule::expr
        | Rule::paren
        | Rule::list
        | Rule::item_agg
        | Rule::window_agg
        | Rule::call
        | Rule::datetime
        | Rule::date
        | Rule::money
        | Rule::duration
        | Rule::number
        | Rule::string
        | Rule::boolean
        | Rule::path
        | Rule::name
        | Rule::root
        | Rule::number_part
        | Rule::item_fn
        | Rule::op_not
        | Rule::op_neg => "an expression",
        Rule::op_or
        | Rule::op_and
        | Rule::op_eq
        | Rule::op_ne
        | Rule::op_le
        | Rule::op_ge
        | Rule::op_lt
        | Rule::op_gt
        | Rule::op_in
        | Rule::op_not_in
        | Rule::op_add
        | Rule::op_sub
        | Rule::op_mul
        | Rule::op_div => "an operator",
        Rule::ident | Rule::target_rule => "a name",
        Rule::field => "a field name",
        Rule::integer | Rule::count => "a whole number",
        Rule::string_body => "a string",
        Rule::rounding_mode => "a rounding mode (floor, ceiling, half_up, half_even)",
        Rule::weekday => "a day of the week (monday ... sunday)",
        Rule::period => "month, quarter or year",
        Rule::never => "`never`",
        Rule::attr_scope => "`tx` or `member`",
        Rule::type_name => {
            "a type (string, decimal, integer, bool, money, date, datetime, duration, points)"
        }
        Rule::measure => "`spend` or `count`",
        Rule::resolution => "`best` or `first`",
        Rule::earned | Rule::target_earned => "`earned`",
        Rule::tag_kw | Rule::target_tag => "`tag`",
        Rule::per_transaction => "`transaction`",
        Rule::cmp_op => "a comparison (==, !=, <, <=, >, >=)",
        Rule::window
        | Rule::w_day
        | Rule::w_week
        | Rule::w_month
        | Rule::w_quarter
        | Rule::w_year
        | Rule::w_rolling
        | Rule::w_lifetime => {
            "a window (day, week, month, calendar quarter, calendar year, rolling N days, lifetime)"
        }
        Rule::duration_unit => "a time unit (minutes, hours, days, weeks, months, years)",
        Rule::currency_code => "a currency code such as USD",
        Rule::body => "`{`",
        Rule::when_stmt
        | Rule::earn_stmt
        | Rule::multiply_stmt
        | Rule::cap_stmt
        | Rule::rounding_stmt => "a statement (when, earn, multiply, cap, rounding) or `}`",
        Rule::member_step | Rule::tx_step | Rule::expect_step => "`member`, `tx`, `expect` or `}`",
        Rule::priority
        | Rule::effective
        | Rule::tags
        | Rule::exclusive
        | Rule::schedule
        | Rule::audience
        | Rule::budget => "a header clause or `{`",
        Rule::record => "`{`",
        Rule::record_field => "a field (`name: value`)",
        Rule::record_list => "a list of records",
        Rule::list_elem | Rule::range => "a list element",
        Rule::subject
        | Rule::subject_points
        | Rule::subject_component
        | Rule::subject_balance
        | Rule::subject_tier => "`points`, `component`, `balance` or `tier`",
        Rule::line_items => "`tx.line_items`",
        Rule::param => "a parameter (`name: type`)",
        _ => return format!("`{}`", name.trim_start_matches("w_")),
    };
    text.to_string()
}

/// A failure while building one item; its diagnostic is already recorded.
struct Abort;

type Built<T> = Result<T, Abort>;

enum Tok<'i> {
    Prefix(UnaryOp, Span),
    Infix(BinaryOp),
    Operand(Pair<'i, Rule>),
}

struct Builder {
    base: usize,
    next_id: u32,
    diags: Vec<Diagnostic>,
}

fn is_keyword(rule: Rule) -> bool {
    format!("{rule:?}").starts_with("k_")
}

/// The children of a pair without the keyword tokens.
fn children(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

impl Builder {
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        // pest leaves the whitespace and comments skipped before a failed
        // trailing optional inside the span; they are not part of the node.
        let len = trimmed_len(pair.as_str());
        Span::new(self.base + s.start(), self.base + s.start() + len)
    }

    fn fail<T>(&mut self, diag: Diagnostic) -> Built<T> {
        self.diags.push(diag);
        Err(Abort)
    }

    fn ident(&self, pair: &Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(pair),
        }
    }

    fn mk(&mut self, kind: ExprKind, span: Span) -> Expr {
        let id = ExprId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        Expr { id, kind, span }
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Built<Item> {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::ruleset_decl => self.ruleset(pair)?,
            Rule::currency_decl => {
                let code = match children(pair).next() {
                    Some(p) => self.ident(&p),
                    None => return Err(Abort),
                };
                ItemKind::Currency(CurrencyDecl { code })
            }
            Rule::timezone_decl => {
                let zone = match children(pair).next() {
                    Some(p) => self.string(p)?,
                    None => return Err(Abort),
                };
                ItemKind::Timezone(TimezoneDecl { zone })
            }
            Rule::rounding_decl => {
                let p = children(pair).next().ok_or(Abort)?;
                ItemKind::Rounding(RoundingDecl {
                    mode: rounding_mode(p.as_str()),
                    mode_span: self.span(&p),
                })
            }
            Rule::week_decl => {
                let p = children(pair).next().ok_or(Abort)?;
                let day = p.as_str().parse().unwrap_or(chrono::Weekday::Mon);
                ItemKind::WeekStart(WeekStartDecl {
                    day,
                    day_span: self.span(&p),
                })
            }
            Rule::points_decl => self.points_decl(pair)?,
            Rule::attribute_decl => {
                let mut it = children(pair);
                let scope = match it.next().map(|p| p.as_str().to_string()).as_deref() {
                    Some("member") => AttrScope::Member,
                    _ => AttrScope::Tx,
                };
                let name = it.next().map(|p| self.ident(&p)).ok_or(Abort)?;
                let ty_pair = it.next().ok_or(Abort)?;
                ItemKind::Attribute(AttributeDecl {
                    scope,
                    name,
                    ty: type_name(ty_pair.as_str()),
                    ty_span: self.span(&ty_pair),
                })
            }
            Rule::extern_decl => self.extern_decl(pair)?,
            Rule::category_decl => {
                let mut it = children(pair);
                let name = it.next().map(|p| self.ident(&p)).ok_or(Abort)?;
                let list = it.next().ok_or(Abort)?;
                let list_span = self.span(&list);
                let codes = self.list_elems(list, 0)?.0;
                ItemKind::Category(CategoryDecl {
                    name,
                    codes,
                    list_span,
                })
            }
            Rule::aggregate_decl => {
                let mut name = None;
                let mut measure = None;
                let mut filter = None;
                let mut window = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::ident => name = Some(self.ident(&p)),
                        Rule::measure => {
                            measure = Some((measure_of(p.as_str()), self.span(&p)));
                        }
                        Rule::expr => filter = Some(self.expr(p, 0)?),
                        Rule::window => window = Some(self.window(p)?),
                        _ => {}
                    }
                }
                let (measure, measure_span) = measure.ok_or(Abort)?;
                ItemKind::Aggregate(AggregateDecl {
                    name: name.ok_or(Abort)?,
                    measure,
                    measure_span,
                    filter,
                    window: window.ok_or(Abort)?,
                })
            }
            Rule::tier_decl => {
                let mut name = None;
                let mut qualify = None;
                let mut grace = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::ident => name = Some(self.ident(&p)),
                        Rule::expr => qualify = Some(self.expr(p, 0)?),
                        Rule::duration => grace = Some(self.duration(p)?),
                        _ => {}
                    }
                }
                ItemKind::Tier(TierDecl {
                    name: name.ok_or(Abort)?,
                    qualify,
                    grace,
                })
            }
            Rule::group_decl => {
                let mut it = children(pair);
                let name = it.next().map(|p| self.ident(&p)).ok_or(Abort)?;
                let r = it.next().ok_or(Abort)?;
                ItemKind::Group(GroupDecl {
                    name,
                    resolution: if r.as_str() == "first" {
                        Resolution::First
                    } else {
                        Resolution::Best
                    },
                    resolution_span: self.span(&r),
                })
            }
            Rule::rule_decl => ItemKind::Rule(Box::new(self.rule(pair, RuleKind::Rule)?)),
            Rule::campaign_decl => ItemKind::Rule(Box::new(self.rule(pair, RuleKind::Campaign)?)),
            Rule::test_decl => ItemKind::Test(self.test(pair)?),
            _ => return Err(Abort),
        };
        Ok(Item { kind, span })
    }

    fn ruleset(&mut self, pair: Pair<'_, Rule>) -> Built<ItemKind> {
        let mut it = children(pair);
        let name = self.string(it.next().ok_or(Abort)?)?;
        let v = it.next().ok_or(Abort)?;
        let version_span = self.span(&v);
        let version = self.integer(&v)?;
        let version = match u32::try_from(version) {
            Ok(v) => v,
            Err(_) => {
                return self.fail(Diagnostic::new(
                    Code::InvalidLiteral,
                    version_span,
                    format!("version {version} is too large"),
                ))
            }
        };
        Ok(ItemKind::Ruleset(RulesetDecl {
            name,
            version,
            version_span,
        }))
    }

    fn points_decl(&mut self, pair: Pair<'_, Rule>) -> Built<ItemKind> {
        let clause = children(pair).next().ok_or(Abort)?;
        Ok(match clause.as_rule() {
            Rule::pending => {
                let d = children(clause).next().ok_or(Abort)?;
                ItemKind::Pending(PendingDecl {
                    delay: self.duration(d)?,
                })
            }
            Rule::expire_after => {
                let d = children(clause).next().ok_or(Abort)?;
                ItemKind::Expiry(ExpiryDecl {
                    rule: Expiry::After(self.duration(d)?),
                })
            }
            Rule::expire_at_end => {
                let mut period = Period::Year;
                let mut plus = None;
                for p in children(clause) {
                    match p.as_rule() {
                        Rule::period => {
                            period = match p.as_str() {
                                "month" => Period::Month,
                                "quarter" => Period::Quarter,
                                _ => Period::Year,
                            }
                        }
                        Rule::duration => plus = Some(self.duration(p)?),
                        _ => {}
                    }
                }
                ItemKind::Expiry(ExpiryDecl {
                    rule: Expiry::AtEndOf { period, plus },
                })
            }
            _ => ItemKind::Expiry(ExpiryDecl {
                rule: Expiry::Never,
            }),
        })
    }

    fn extern_decl(&mut self, pair: Pair<'_, Rule>) -> Built<ItemKind> {
        let mut name = None;
        let mut params = Vec::new();
        let mut ret = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(&p)),
                Rule::param => {
                    let span = self.span(&p);
                    let mut it = p.into_inner();
                    let pname = it.next().map(|p| self.ident(&p)).ok_or(Abort)?;
                    let ty = it.next().map(|p| type_name(p.as_str())).ok_or(Abort)?;
                    params.push(Param {
                        name: pname,
                        ty,
                        span,
                    });
                }
                Rule::type_name => ret = Some((type_name(p.as_str()), self.span(&p))),
                _ => {}
            }
        }
        let (ret, ret_span) = ret.ok_or(Abort)?;
        Ok(ItemKind::Extern(ExternDecl {
            name: name.ok_or(Abort)?,
            params,
            ret,
            ret_span,
        }))
    }

    fn rule(&mut self, pair: Pair<'_, Rule>, kind: RuleKind) -> Built<RuleDecl> {
        let mut it = children(pair);
        let id = it.next().map(|p| self.ident(&p)).ok_or(Abort)?;
        let mut decl = RuleDecl {
            kind,
            id,
            description: None,
            priority: None,
            effective: None,
            schedule: None,
            audience: None,
            budget: None,
            tags: Vec::new(),
            group: None,
            body: Vec::new(),
            body_span: Span::default(),
        };
        let mut seen_tags = false;
        for p in it {
            let span = self.span(&p);
            let rule = p.as_rule();
            let duplicate = match rule {
                Rule::priority => decl.priority.is_some(),
                Rule::effective => decl.effective.is_some(),
                Rule::schedule => decl.schedule.is_some(),
                Rule::audience => decl.audience.is_some(),
                Rule::budget => decl.budget.is_some(),
                Rule::tags => seen_tags,
                Rule::exclusive => decl.group.is_some(),
                _ => false,
            };
            if duplicate {
                self.diags.push(
                    Diagnostic::new(
                        Code::DuplicateClause,
                        span,
                        format!("`{}` is given twice", clause_word(rule)),
                    )
                    .with_hint("keep one of them"),
                );
                continue;
            }
            match rule {
                Rule::string => decl.description = Some(self.string(p)?),
                Rule::priority => {
                    let n = children(p).next().ok_or(Abort)?;
                    let nspan = self.span(&n);
                    let v = self.integer(&n)?;
                    let value = u32::try_from(v).map_err(|_| {
                        self.diags.push(Diagnostic::new(
                            Code::InvalidLiteral,
                            nspan,
                            format!("priority {v} is too large"),
                        ));
                        Abort
                    })?;
                    decl.priority = Some(Spanned { value, span: nspan });
                }
                Rule::effective | Rule::schedule => {
                    let range = self.date_range(p)?;
                    if rule == Rule::effective {
                        decl.effective = Some(range);
                    } else {
                        decl.schedule = Some(range);
                    }
                }
                Rule::audience => {
                    let e = children(p).next().ok_or(Abort)?;
                    decl.audience = Some(self.expr(e, 0)?);
                }
                Rule::budget => {
                    let n = children(p).next().ok_or(Abort)?;
                    let value = self.integer(&n)?;
                    decl.budget = Some(Spanned {
                        value,
                        span: self.span(&n),
                    });
                }
                Rule::tags => {
                    seen_tags = true;
                    decl.tags = children(p).map(|t| self.ident(&t)).collect();
                }
                Rule::exclusive => {
                    decl.group = children(p).next().map(|g| self.ident(&g));
                }
                Rule::body => {
                    decl.body_span = span;
                    for s in children(p) {
                        let stmt = self.stmt(s)?;
                        decl.body.push(stmt);
                    }
                }
                _ => {}
            }
        }
        Ok(decl)
    }

    fn date_range(&mut self, pair: Pair<'_, Rule>) -> Built<DateRange> {
        let span = self.span(&pair);
        let mut from = None;
        let mut to = None;
        let mut next_is_to = false;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::k_from => next_is_to = false,
                Rule::k_to => next_is_to = true,
                Rule::date | Rule::datetime => {
                    let m = self.moment(p)?;
                    if next_is_to {
                        to = Some(m);
                    } else {
                        from = Some(m);
                    }
                }
                _ => {}
            }
        }
        Ok(DateRange { from, to, span })
    }

    fn moment(&mut self, pair: Pair<'_, Rule>) -> Built<Moment> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::date => Ok(Moment::Date(self.date(&pair)?, span)),
            _ => Ok(Moment::DateTime(self.datetime(&pair)?, span)),
        }
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Built<Stmt> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let kind = match rule {
            Rule::when_stmt | Rule::earn_stmt => {
                let e = children(pair).next().ok_or(Abort)?;
                let e = self.expr(e, 0)?;
                if rule == Rule::when_stmt {
                    StmtKind::When(e)
                } else {
                    StmtKind::Earn(e)
                }
            }
            Rule::multiply_stmt => {
                let mut it = children(pair);
                let t = it.next().and_then(|t| t.into_inner().next()).ok_or(Abort)?;
                let target = match t.as_rule() {
                    Rule::target_earned => Target::Earned(self.span(&t)),
                    Rule::target_tag => {
                        let name = t.into_inner().find(|p| p.as_rule() == Rule::ident);
                        Target::Tag(name.map(|n| self.ident(&n)).ok_or(Abort)?)
                    }
                    _ => {
                        let name = t.into_inner().next().ok_or(Abort)?;
                        Target::Rule(self.ident(&name))
                    }
                };
                let factor = self.expr(it.next().ok_or(Abort)?, 0)?;
                StmtKind::Multiply { target, factor }
            }
            Rule::cap_stmt => {
                let mut limit = None;
                let mut scope = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::integer => {
                            let value = self.integer(&p)?;
                            limit = Some(Spanned {
                                value,
                                span: self.span(&p),
                            });
                        }
                        Rule::per_transaction => {
                            scope = Some(CapScope::Transaction(self.span(&p)));
                        }
                        Rule::window => scope = Some(CapScope::Member(self.window(p)?)),
                        _ => {}
                    }
                }
                StmtKind::Cap(Cap {
                    limit: limit.ok_or(Abort)?,
                    scope: scope.ok_or(Abort)?,
                })
            }
            Rule::rounding_stmt => {
                let m = children(pair).next().ok_or(Abort)?;
                StmtKind::Rounding(rounding_mode(m.as_str()))
            }
            _ => return Err(Abort),
        };
        Ok(Stmt { kind, span })
    }

    fn window(&mut self, pair: Pair<'_, Rule>) -> Built<WindowSpec> {
        let span = self.span(&pair);
        let w = pair.into_inner().next().ok_or(Abort)?;
        let kind = match w.as_rule() {
            Rule::w_day => WindowKind::Day,
            Rule::w_week => WindowKind::Week,
            Rule::w_month => WindowKind::Month,
            Rule::w_quarter => WindowKind::Quarter,
            Rule::w_year => WindowKind::Year,
            Rule::w_lifetime => WindowKind::Lifetime,
            _ => {
                let n = children(w).next().ok_or(Abort)?;
                let nspan = self.span(&n);
                let v = self.integer(&n)?;
                match u16::try_from(v) {
                    Ok(days) => WindowKind::Rolling(days),
                    Err(_) => {
                        return self.fail(Diagnostic::new(
                            Code::InvalidLiteral,
                            nspan,
                            format!("{v} days is too long a window"),
                        ))
                    }
                }
            }
        };
        Ok(WindowSpec { kind, span })
    }

    fn test(&mut self, pair: Pair<'_, Rule>) -> Built<TestDecl> {
        let mut it = children(pair);
        let name = self.string(it.next().ok_or(Abort)?)?;
        let mut steps = Vec::new();
        for p in it {
            let step = match p.as_rule() {
                Rule::member_step | Rule::tx_step => {
                    let is_member = p.as_rule() == Rule::member_step;
                    let r = children(p).next().ok_or(Abort)?;
                    let record = self.record(r)?;
                    if is_member {
                        TestStep::Member(record)
                    } else {
                        TestStep::Tx(record)
                    }
                }
                Rule::expect_step => {
                    let span = self.span(&p);
                    let mut inner = children(p);
                    let subject_pair = inner.next().and_then(|s| s.into_inner().next());
                    let subject_pair = subject_pair.ok_or(Abort)?;
                    let subject = match subject_pair.as_rule() {
                        Rule::subject_component => {
                            let n = children(subject_pair).next().ok_or(Abort)?;
                            Subject::Component(self.ident(&n))
                        }
                        Rule::subject_balance => Subject::Balance,
                        Rule::subject_tier => Subject::Tier,
                        _ => Subject::Points,
                    };
                    let op = inner.next().map(|o| cmp_op(o.as_str())).ok_or(Abort)?;
                    let value = self.expr(inner.next().ok_or(Abort)?, 0)?;
                    TestStep::Expect(Expectation {
                        subject,
                        op,
                        value,
                        span,
                    })
                }
                _ => continue,
            };
            steps.push(step);
        }
        Ok(TestDecl { name, steps })
    }

    fn record(&mut self, pair: Pair<'_, Rule>) -> Built<Record> {
        let span = self.span(&pair);
        let mut fields = Vec::new();
        for f in pair.into_inner() {
            let fspan = self.span(&f);
            let mut it = f.into_inner();
            let key = it.next().map(|k| self.ident(&k)).ok_or(Abort)?;
            let v = it.next().ok_or(Abort)?;
            let value = match v.as_rule() {
                Rule::record => RecordValue::Record(self.record(v)?),
                Rule::record_list => {
                    let lspan = self.span(&v);
                    let mut records = Vec::new();
                    for r in v.into_inner() {
                        records.push(self.record(r)?);
                    }
                    RecordValue::List(records, lspan)
                }
                _ => RecordValue::Expr(self.expr(v, 0)?),
            };
            fields.push(RecordField {
                key,
                value,
                span: fspan,
            });
        }
        Ok(Record { fields, span })
    }

    // ---- expressions

    fn expr(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Built<Expr> {
        Ok(self.expr_d(pair, depth)?.0)
    }

    /// Builds an expression and returns it with its tree depth.
    fn expr_d(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Built<(Expr, usize)> {
        let span = self.span(&pair);
        let mut toks = Vec::new();
        let mut operators = 0usize;
        for p in pair.into_inner() {
            let tok = match p.as_rule() {
                Rule::op_not => Tok::Prefix(UnaryOp::Not, self.span(&p)),
                Rule::op_neg => Tok::Prefix(UnaryOp::Neg, self.span(&p)),
                Rule::op_or => Tok::Infix(BinaryOp::Or),
                Rule::op_and => Tok::Infix(BinaryOp::And),
                Rule::op_eq => Tok::Infix(BinaryOp::Eq),
                Rule::op_ne => Tok::Infix(BinaryOp::Ne),
                Rule::op_lt => Tok::Infix(BinaryOp::Lt),
                Rule::op_le => Tok::Infix(BinaryOp::Le),
                Rule::op_gt => Tok::Infix(BinaryOp::Gt),
                Rule::op_ge => Tok::Infix(BinaryOp::Ge),
                Rule::op_in => Tok::Infix(BinaryOp::In),
                Rule::op_not_in => Tok::Infix(BinaryOp::NotIn),
                Rule::op_add => Tok::Infix(BinaryOp::Add),
                Rule::op_sub => Tok::Infix(BinaryOp::Sub),
                Rule::op_mul => Tok::Infix(BinaryOp::Mul),
                Rule::op_div => Tok::Infix(BinaryOp::Div),
                _ => Tok::Operand(p),
            };
            if !matches!(tok, Tok::Operand(_)) {
                operators += 1;
            }
            toks.push(tok);
        }
        if operators > MAX_EXPR_OPERATORS {
            return self.fail(
                Diagnostic::new(
                    Code::ExpressionTooComplex,
                    span,
                    format!("this expression has {operators} operators; at most {MAX_EXPR_OPERATORS} are allowed"),
                )
                .with_hint("split it into several rules or conditions"),
            );
        }
        let mut toks: Vec<Option<Tok<'_>>> = toks.into_iter().map(Some).collect();
        let mut pos = 0;
        let result = self.climb(&mut toks, &mut pos, 0, depth, span)?;
        Ok(result)
    }

    fn too_deep<T>(&mut self, span: Span) -> Built<T> {
        self.fail(
            Diagnostic::new(
                Code::ExpressionTooComplex,
                span,
                format!("this expression is nested more than {MAX_EXPR_DEPTH} levels deep"),
            )
            .with_hint("split it into several rules or conditions"),
        )
    }

    /// Precedence climbing over the flat token list of one `expr`.
    fn climb(
        &mut self,
        toks: &mut [Option<Tok<'_>>],
        pos: &mut usize,
        min_prec: u8,
        depth: usize,
        whole: Span,
    ) -> Built<(Expr, usize)> {
        if depth > MAX_EXPR_DEPTH {
            return self.too_deep(whole);
        }
        let first = toks.get_mut(*pos).and_then(Option::take).ok_or(Abort)?;
        *pos += 1;
        let (mut lhs, mut lhs_depth) = match first {
            Tok::Prefix(op, op_span) => {
                let prec = match op {
                    UnaryOp::Not => NOT_PRECEDENCE,
                    UnaryOp::Neg => NEG_PRECEDENCE,
                };
                let (operand, d) = self.climb(toks, pos, prec, depth + 1, whole)?;
                let span = op_span.to(operand.span);
                let e = self.mk(
                    ExprKind::Unary {
                        op,
                        operand: Box::new(operand),
                    },
                    span,
                );
                (e, d + 1)
            }
            Tok::Operand(p) => self.primary(p, depth + 1)?,
            Tok::Infix(_) => return Err(Abort),
        };
        loop {
            let op = match toks.get(*pos) {
                Some(Some(Tok::Infix(op))) if op.precedence() >= min_prec => *op,
                _ => break,
            };
            *pos += 1;
            let (rhs, rhs_depth) = self.climb(toks, pos, op.precedence() + 1, depth + 1, whole)?;
            let span = lhs.span.to(rhs.span);
            lhs_depth = lhs_depth.max(rhs_depth) + 1;
            if lhs_depth > MAX_EXPR_DEPTH {
                return self.too_deep(whole);
            }
            lhs = self.mk(
                ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            );
        }
        Ok((lhs, lhs_depth))
    }

    fn primary(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Built<(Expr, usize)> {
        if depth > MAX_EXPR_DEPTH {
            let span = self.span(&pair);
            return self.too_deep(span);
        }
        let span = self.span(&pair);
        let (kind, d) = match pair.as_rule() {
            Rule::paren => {
                let inner = pair.into_inner().next().ok_or(Abort)?;
                let (e, d) = self.expr_d(inner, depth + 1)?;
                (ExprKind::Paren(Box::new(e)), d + 1)
            }
            Rule::list => {
                let (elems, d) = self.list_elems(pair, depth + 1)?;
                (ExprKind::List(elems), d + 1)
            }
            Rule::call => {
                let mut it = pair.into_inner();
                let func = it.next().map(|f| self.ident(&f)).ok_or(Abort)?;
                let mut args = Vec::new();
                let mut d = 0;
                for a in it {
                    let (e, ad) = self.expr_d(a, depth + 1)?;
                    d = d.max(ad);
                    args.push(e);
                }
                (ExprKind::Call { func, args }, d + 1)
            }
            Rule::window_agg => {
                let mut it = pair.into_inner();
                let measure = it.next().map(|m| measure_of(m.as_str())).ok_or(Abort)?;
                let window = self.window(it.next().ok_or(Abort)?)?;
                (ExprKind::WindowAggregate { measure, window }, 1)
            }
            Rule::item_agg => {
                let mut func = ItemFn::Sum;
                let mut filter = None;
                let mut value = None;
                let mut after_where = false;
                let mut d = 0;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::item_fn => {
                            func = if p.as_str() == "count" {
                                ItemFn::Count
                            } else {
                                ItemFn::Sum
                            }
                        }
                        Rule::k_where => after_where = true,
                        Rule::expr => {
                            let (e, ed) = self.expr_d(p, depth + 1)?;
                            d = d.max(ed);
                            if after_where && filter.is_none() {
                                filter = Some(Box::new(e));
                            } else {
                                value = Some(Box::new(e));
                            }
                        }
                        _ => {}
                    }
                }
                (
                    ExprKind::ItemAggregate {
                        func,
                        filter,
                        value,
                    },
                    d + 1,
                )
            }
            Rule::path => {
                let mut it = pair.into_inner();
                let root = match it.next().map(|r| r.as_str().to_string()).as_deref() {
                    Some("member") => Root::Member,
                    Some("item") => Root::Item,
                    _ => Root::Tx,
                };
                let fields = it.map(|f| self.ident(&f)).collect();
                (ExprKind::Path(Path { root, fields }), 1)
            }
            Rule::name => {
                let id = pair
                    .into_inner()
                    .next()
                    .map(|i| self.ident(&i))
                    .ok_or(Abort)?;
                (ExprKind::Name(id), 1)
            }
            _ => (ExprKind::Literal(self.literal(pair)?), 1),
        };
        if d > MAX_EXPR_DEPTH {
            return self.too_deep(span);
        }
        Ok((self.mk(kind, span), d))
    }

    fn list_elems(&mut self, pair: Pair<'_, Rule>, depth: usize) -> Built<(Vec<ListElem>, usize)> {
        let span = self.span(&pair);
        let mut elems = Vec::new();
        let mut d = 0;
        for e in pair.into_inner() {
            if elems.len() >= MAX_LIST_LEN {
                return self.fail(Diagnostic::new(
                    Code::TooMany,
                    span,
                    format!("this list has more than {MAX_LIST_LEN} elements"),
                ));
            }
            let inner = e.into_inner().next().ok_or(Abort)?;
            if inner.as_rule() == Rule::range {
                let mut ends = inner.into_inner();
                let (lo, ld) = self.primary(ends.next().ok_or(Abort)?, depth + 1)?;
                let (hi, hd) = self.primary(ends.next().ok_or(Abort)?, depth + 1)?;
                d = d.max(ld).max(hd);
                elems.push(ListElem::Range(lo, hi));
            } else {
                let (x, xd) = self.expr_d(inner, depth + 1)?;
                d = d.max(xd);
                elems.push(ListElem::Single(x));
            }
        }
        Ok((elems, d))
    }

    // ---- literals

    fn literal(&mut self, pair: Pair<'_, Rule>) -> Built<Literal> {
        Ok(match pair.as_rule() {
            Rule::number => {
                if pair.as_str().contains('.') {
                    Literal::Decimal(self.decimal(&pair)?)
                } else {
                    Literal::Integer(self.integer(&pair)?)
                }
            }
            Rule::money => {
                let mut it = pair.into_inner();
                let n = it.next().ok_or(Abort)?;
                let amount = self.decimal(&n)?;
                let currency = it.next().map(|c| self.ident(&c)).ok_or(Abort)?;
                Literal::Money { amount, currency }
            }
            Rule::duration => Literal::Duration(self.duration(pair)?),
            Rule::string => Literal::String(self.string(pair)?.value),
            Rule::boolean => Literal::Bool(pair.as_str() == "true"),
            Rule::date => Literal::Date(self.date(&pair)?),
            Rule::datetime => Literal::DateTime(self.datetime(&pair)?),
            _ => return Err(Abort),
        })
    }

    fn integer(&mut self, pair: &Pair<'_, Rule>) -> Built<i64> {
        let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
        match digits.parse::<i64>() {
            Ok(n) => Ok(n),
            Err(_) => {
                let span = self.span(pair);
                self.fail(
                    Diagnostic::new(
                        Code::InvalidLiteral,
                        span,
                        format!("`{}` is too large for a whole number", pair.as_str()),
                    )
                    .with_hint(format!("whole numbers go up to {}", i64::MAX)),
                )
            }
        }
    }

    fn decimal(&mut self, pair: &Pair<'_, Rule>) -> Built<Decimal> {
        let digits: String = pair.as_str().chars().filter(|c| *c != '_').collect();
        match Decimal::from_str(&digits) {
            Ok(d) if digits.len() <= 29 => Ok(d),
            _ => {
                let span = self.span(pair);
                self.fail(
                    Diagnostic::new(
                        Code::InvalidLiteral,
                        span,
                        format!("`{}` is not a decimal number in range", pair.as_str()),
                    )
                    .with_hint("decimals have at most 28 significant digits"),
                )
            }
        }
    }

    fn duration(&mut self, pair: Pair<'_, Rule>) -> Built<Duration> {
        let span = self.span(&pair);
        let mut it = pair.into_inner();
        let n = it.next().ok_or(Abort)?;
        let count = self.integer(&n)?;
        let Ok(count) = u32::try_from(count) else {
            return self.fail(Diagnostic::new(
                Code::InvalidLiteral,
                span,
                format!("{count} is too large for a duration"),
            ));
        };
        let unit = match it
            .next()
            .map(|u| u.as_str().trim_end_matches('s').to_string())
        {
            Some(u) if u == "minute" => DurationUnit::Minutes,
            Some(u) if u == "hour" => DurationUnit::Hours,
            Some(u) if u == "week" => DurationUnit::Weeks,
            Some(u) if u == "month" => DurationUnit::Months,
            Some(u) if u == "year" => DurationUnit::Years,
            _ => DurationUnit::Days,
        };
        Ok(Duration { count, unit, span })
    }

    fn string(&mut self, pair: Pair<'_, Rule>) -> Built<StrLit> {
        let span = self.span(&pair);
        let raw = pair.into_inner().next().map_or("", |b| b.as_str());
        let mut value = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            match chars.next() {
                Some('"') => value.push('"'),
                Some('\\') => value.push('\\'),
                Some('n') => value.push('\n'),
                Some('t') => value.push('\t'),
                other => {
                    let shown = other.map_or(String::new(), String::from);
                    return self.fail(
                        Diagnostic::new(
                            Code::InvalidLiteral,
                            span,
                            format!("unknown escape `\\{shown}` in a string"),
                        )
                        .with_hint("the escapes are \\\" \\\\ \\n and \\t"),
                    );
                }
            }
        }
        if value.len() > MAX_STRING_BYTES {
            return self.fail(Diagnostic::new(
                Code::StringTooLong,
                span,
                format!(
                    "this string is {} bytes long; at most {MAX_STRING_BYTES} are allowed",
                    value.len()
                ),
            ));
        }
        Ok(StrLit { value, span })
    }

    fn date(&mut self, pair: &Pair<'_, Rule>) -> Built<NaiveDate> {
        match NaiveDate::parse_from_str(pair.as_str(), "%Y-%m-%d") {
            Ok(d) => Ok(d),
            Err(_) => {
                let span = self.span(pair);
                self.fail(
                    Diagnostic::new(
                        Code::InvalidLiteral,
                        span,
                        format!("`{}` is not a valid date", pair.as_str()),
                    )
                    .with_hint("dates are written YYYY-MM-DD, e.g. 2026-12-01"),
                )
            }
        }
    }

    fn datetime(&mut self, pair: &Pair<'_, Rule>) -> Built<DateTimeLit> {
        let text = pair.as_str();
        let parsed = (|| {
            let date = NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()?;
            let rest = text.get(11..)?;
            let has_seconds = rest.get(5..6) == Some(":");
            let time_len = if has_seconds { 8 } else { 5 };
            let time_text = rest.get(..time_len)?;
            let time = if has_seconds {
                NaiveTime::parse_from_str(time_text, "%H:%M:%S").ok()?
            } else {
                NaiveTime::parse_from_str(time_text, "%H:%M").ok()?
            };
            let zone = rest.get(time_len..)?;
            let offset_minutes = match zone {
                "" => None,
                "Z" => Some(0),
                z => {
                    let sign = if z.starts_with('-') { -1 } else { 1 };
                    let h: i32 = z.get(1..3)?.parse().ok()?;
                    let m: i32 = z.get(4..6)?.parse().ok()?;
                    if h > 23 || m > 59 {
                        return None;
                    }
                    Some(sign * (h * 60 + m))
                }
            };
            Some(DateTimeLit {
                local: date.and_time(time),
                offset_minutes,
                has_seconds,
            })
        })();
        match parsed {
            Some(dt) => Ok(dt),
            None => {
                let span = self.span(pair);
                self.fail(
                    Diagnostic::new(
                        Code::InvalidLiteral,
                        span,
                        format!("`{text}` is not a valid date and time"),
                    )
                    .with_hint("write YYYY-MM-DDTHH:MM, optionally with :SS and Z or +HH:MM"),
                )
            }
        }
    }
}

/// The length of `text` without trailing whitespace and comments.
fn trimmed_len(text: &str) -> usize {
    let mut t = text;
    loop {
        t = t.trim_end();
        let line_start = t.rfind('\n').map_or(0, |i| i + 1);
        let line = t.get(line_start..).unwrap_or("");
        let mut in_string = false;
        let mut escaped = false;
        let mut cut = None;
        for (i, c) in line.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                '#' if !in_string => {
                    cut = Some(i);
                    break;
                }
                _ => {}
            }
        }
        match cut {
            Some(i) => t = t.get(..line_start + i).unwrap_or(""),
            None => return t.len(),
        }
    }
}

fn clause_word(rule: Rule) -> &'static str {
    match rule {
        Rule::priority => "priority",
        Rule::effective => "effective",
        Rule::schedule => "from ... to",
        Rule::audience => "audience",
        Rule::budget => "budget",
        Rule::tags => "tags",
        _ => "exclusive group",
    }
}

fn rounding_mode(text: &str) -> RoundingMode {
    match text {
        "ceiling" => RoundingMode::Ceiling,
        "half_up" => RoundingMode::HalfUp,
        "half_even" => RoundingMode::HalfEven,
        _ => RoundingMode::Floor,
    }
}

fn measure_of(text: &str) -> Measure {
    if text == "count" {
        Measure::Count
    } else {
        Measure::Spend
    }
}

fn cmp_op(text: &str) -> CmpOp {
    match text {
        "!=" => CmpOp::Ne,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Le,
        ">" => CmpOp::Gt,
        ">=" => CmpOp::Ge,
        _ => CmpOp::Eq,
    }
}

fn type_name(text: &str) -> TypeName {
    match text {
        "decimal" => TypeName::Decimal,
        "integer" => TypeName::Integer,
        "bool" => TypeName::Bool,
        "money" => TypeName::Money,
        "date" => TypeName::Date,
        "datetime" => TypeName::DateTime,
        "duration" => TypeName::Duration,
        "points" => TypeName::Points,
        _ => TypeName::String,
    }
}
