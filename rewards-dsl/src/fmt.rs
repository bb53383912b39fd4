//! The canonical formatter: `fmt(source)` prints a program in one layout,
//! whatever its author's spacing, and keeps every comment.
//!
//! Layout: one item per line; rules, campaigns and tests as blocks with a
//! two-space indented body; a blank line around every block and wherever
//! the author left one between two items; the names of consecutive
//! `category`, `aggregate` and `tier` lines aligned; a rule header longer
//! than [`MAX_WIDTH`] broken with one clause per line. Numbers of five or
//! more digits are grouped with `_` (`5_000_000`).
//!
//! Comments are collected from the source by position: a comment alone on
//! its line is printed before the construct that follows it, a comment
//! after code at the end of the line that holds that code.
//!
//! Formatting is idempotent: `fmt(fmt(s)) == fmt(s)`.

use crate::ast::*;
use crate::diag::{self, Diagnostic};
use crate::parse::parse;
use std::fmt::Write as _;

/// Lines longer than this are broken where the layout allows.
pub const MAX_WIDTH: usize = 100;

/// Formats a program; fails with the syntax errors if it does not parse.
pub fn fmt(source: &str) -> Result<String, Vec<Diagnostic>> {
    let (program, diags) = parse(source);
    if diag::has_errors(&diags) {
        return Err(diags);
    }
    Ok(format_program(&program, source))
}

/// Formats a parsed program; `source` is only read for comments and blank
/// lines between items.
pub fn format_program(program: &Program, source: &str) -> String {
    let mut p = Printer { lines: Vec::new() };
    p.items(program, source);
    let comments = collect_comments(source);
    p.attach(comments, source);
    p.finish()
}

#[derive(Debug, Clone)]
enum Line {
    Code {
        indent: usize,
        text: String,
        anchor: usize,
    },
    Blank,
}

struct Comment {
    start: usize,
    text: String,
    own_line: bool,
    blank_before: bool,
}

/// Finds `#` comments outside string literals.
fn collect_comments(source: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    let mut line_start = 0;
    while i < bytes.len() {
        match bytes.get(i).copied().unwrap_or(b'\n') {
            b'\n' => line_start = i + 1,
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes.get(i) {
                        Some(b'\\') => i += 1,
                        Some(b'"') => break,
                        Some(b'\n') => {
                            line_start = i + 1;
                            break;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'#' => {
                let end = source
                    .get(i..)
                    .and_then(|s| s.find('\n'))
                    .map_or(source.len(), |n| i + n);
                let text = source.get(i..end).unwrap_or("#").trim_end().to_string();
                let before = source.get(line_start..i).unwrap_or("");
                let own_line = before.trim().is_empty();
                let blank_before = own_line && {
                    let prev = source.get(..line_start).unwrap_or("");
                    let prev = prev.strip_suffix('\n').unwrap_or(prev);
                    let last_line = prev.rsplit('\n').next().unwrap_or("");
                    !prev.is_empty() && last_line.trim().is_empty()
                };
                out.push(Comment {
                    start: i,
                    text,
                    own_line,
                    blank_before,
                });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

struct Printer {
    lines: Vec<Line>,
}

fn is_block(item: &Item) -> bool {
    matches!(item.kind, ItemKind::Rule(_) | ItemKind::Test(_))
}

fn has_blank_line(text: &str) -> bool {
    let mut lines = text.split('\n');
    lines.next();
    let rest: Vec<&str> = lines.collect();
    // A blank line is a full line (between two newlines) with only spaces.
    rest.len() >= 2
        && rest
            .iter()
            .take(rest.len() - 1)
            .any(|l| l.trim().is_empty())
}

/// Which items align their names with their neighbours.
fn align_group(item: &Item) -> Option<u8> {
    match item.kind {
        ItemKind::Category(_) => Some(0),
        ItemKind::Aggregate(_) => Some(1),
        ItemKind::Tier(_) => Some(2),
        _ => None,
    }
}

fn item_name(item: &Item) -> usize {
    match &item.kind {
        ItemKind::Category(c) => c.name.name.len(),
        ItemKind::Aggregate(a) => a.name.name.len(),
        ItemKind::Tier(t) => t.name.name.len(),
        _ => 0,
    }
}

impl Printer {
    fn code(&mut self, indent: usize, text: String, anchor: usize) {
        self.lines.push(Line::Code {
            indent,
            text,
            anchor,
        });
    }

    fn items(&mut self, program: &Program, source: &str) {
        let items = &program.items;
        let mut widths = vec![0usize; items.len()];
        // Runs of same-kind items with no blank line between them align.
        let mut run_start = 0;
        for i in 0..=items.len() {
            let continues = i < items.len()
                && i > run_start
                && match (items.get(i - 1), items.get(i)) {
                    (Some(a), Some(b)) => {
                        align_group(a).is_some()
                            && align_group(a) == align_group(b)
                            && !has_blank_line(source.get(a.span.end..b.span.start).unwrap_or(""))
                    }
                    _ => false,
                };
            if !continues {
                let w = items
                    .get(run_start..i)
                    .map_or(0, |run| run.iter().map(item_name).max().unwrap_or(0));
                for slot in widths.get_mut(run_start..i).into_iter().flatten() {
                    *slot = w;
                }
                run_start = i;
            }
        }
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                if let Some(prev) = items.get(i - 1) {
                    let gap = source.get(prev.span.end..item.span.start).unwrap_or("");
                    if is_block(prev) || is_block(item) || has_blank_line(gap) {
                        self.lines.push(Line::Blank);
                    }
                }
            }
            self.item(item, widths.get(i).copied().unwrap_or(0));
        }
    }

    fn item(&mut self, item: &Item, width: usize) {
        let at = item.span.start;
        let pad = |name: &str| format!("{name:<width$}");
        let text = match &item.kind {
            ItemKind::Ruleset(r) => {
                format!("ruleset {} version {}", string(&r.name.value), r.version)
            }
            ItemKind::Currency(c) => format!("currency {}", c.code.name),
            ItemKind::Timezone(t) => format!("timezone {}", string(&t.zone.value)),
            ItemKind::Rounding(r) => format!("rounding {}", r.mode.as_str()),
            ItemKind::WeekStart(w) => format!("week starts {}", weekday_name(w.day)),
            ItemKind::Expiry(e) => match &e.rule {
                Expiry::After(d) => format!("points expire after {d}"),
                Expiry::AtEndOf { period, plus } => {
                    let mut s = format!("points expire at end of {}", period.as_str());
                    if let Some(d) = plus {
                        let _ = write!(s, " + {d}");
                    }
                    s
                }
                Expiry::Never => "points expire never".to_string(),
            },
            ItemKind::Pending(p) => format!("points pending {}", p.delay),
            ItemKind::Attribute(a) => format!(
                "attribute {}.{}: {}",
                a.scope.as_str(),
                a.name.name,
                a.ty.as_str()
            ),
            ItemKind::Extern(x) => {
                let params: Vec<String> = x
                    .params
                    .iter()
                    .map(|p| format!("{}: {}", p.name.name, p.ty.as_str()))
                    .collect();
                format!(
                    "extern fn {}({}) -> {}",
                    x.name.name,
                    params.join(", "),
                    x.ret.as_str()
                )
            }
            ItemKind::Category(c) => {
                format!("category {} = mcc in {}", pad(&c.name.name), list(&c.codes))
            }
            ItemKind::Aggregate(a) => {
                let mut s = format!("aggregate {} = {}", pad(&a.name.name), a.measure.as_str());
                if let Some(f) = &a.filter {
                    let _ = write!(s, " where {}", expr(f));
                }
                let _ = write!(s, " per {}", window(a.window.kind));
                s
            }
            ItemKind::Tier(t) => {
                let mut s = format!("tier {}", t.name.name);
                if t.qualify.is_some() || t.grace.is_some() {
                    s = format!("tier {}", pad(&t.name.name));
                }
                if let Some(q) = &t.qualify {
                    let _ = write!(s, " qualify {}", expr(q));
                }
                if let Some(g) = &t.grace {
                    let _ = write!(s, " grace {g}");
                }
                s
            }
            ItemKind::Group(g) => format!("group {} takes {}", g.name.name, g.resolution.as_str()),
            ItemKind::Rule(r) => return self.rule(r, at),
            ItemKind::Test(t) => return self.test(t, at, item.span.end),
        };
        self.code(0, text, at);
    }

    fn rule(&mut self, r: &RuleDecl, at: usize) {
        let keyword = match r.kind {
            RuleKind::Rule => "rule",
            RuleKind::Campaign => "campaign",
        };
        let mut head = format!("{keyword} {}", r.id.name);
        if let Some(d) = &r.description {
            let _ = write!(head, " {}", string(&d.value));
        }
        let mut clauses: Vec<(String, usize)> = Vec::new();
        if let Some(s) = &r.schedule {
            clauses.push((
                format!("from {} to {}", moment_opt(&s.from), moment_opt(&s.to)),
                s.span.start,
            ));
        }
        if let Some(a) = &r.audience {
            clauses.push((format!("audience {}", expr(a)), a.span.start));
        }
        if let Some(b) = &r.budget {
            clauses.push((
                format!("budget {} points", group_digits(&b.value.to_string())),
                b.span.start,
            ));
        }
        if let Some(p) = &r.priority {
            clauses.push((format!("priority {}", p.value), p.span.start));
        }
        if let Some(e) = &r.effective {
            let mut s = "effective".to_string();
            if let Some(f) = &e.from {
                let _ = write!(s, " from {}", moment(f));
            }
            if let Some(t) = &e.to {
                let _ = write!(s, " to {}", moment(t));
            }
            clauses.push((s, e.span.start));
        }
        if let Some(first) = r.tags.first() {
            let names: Vec<&str> = r.tags.iter().map(|t| t.name.as_str()).collect();
            clauses.push((format!("tags [{}]", names.join(", ")), first.span.start));
        }
        if let Some(g) = &r.group {
            clauses.push((format!("exclusive group {}", g.name), g.span.start));
        }
        let one_line: String = clauses.iter().fold(head.clone(), |mut acc, (c, _)| {
            acc.push(' ');
            acc.push_str(c);
            acc
        });
        if one_line.len() + 2 <= MAX_WIDTH || clauses.is_empty() {
            self.code(0, format!("{one_line} {{"), at);
        } else {
            self.code(0, head, at);
            let last = clauses.len() - 1;
            for (i, (c, anchor)) in clauses.into_iter().enumerate() {
                let text = if i == last { format!("{c} {{") } else { c };
                self.code(4, text, anchor);
            }
        }
        for s in &r.body {
            let text = match &s.kind {
                StmtKind::When(e) => format!("when {}", expr(e)),
                StmtKind::Earn(e) => format!("earn {} points", expr(e)),
                StmtKind::Multiply { target, factor } => {
                    let t = match target {
                        Target::Earned(_) => "earned".to_string(),
                        Target::Tag(t) => format!("tag {}", t.name),
                        Target::Rule(id) => id.name.clone(),
                    };
                    format!("multiply {t} by {}", expr(factor))
                }
                StmtKind::Cap(c) => {
                    let scope = match c.scope {
                        CapScope::Transaction(_) => "transaction".to_string(),
                        CapScope::Member(w) => format!("member per {}", window(w.kind)),
                    };
                    format!(
                        "cap {} points per {scope}",
                        group_digits(&c.limit.value.to_string())
                    )
                }
                StmtKind::Rounding(m) => format!("rounding {}", m.as_str()),
            };
            self.code(2, text, s.span.start);
        }
        self.code(0, "}".to_string(), r.body_span.end.saturating_sub(1));
    }

    fn test(&mut self, t: &TestDecl, at: usize, item_end: usize) {
        self.code(0, format!("test {} {{", string(&t.name.value)), at);
        for step in &t.steps {
            match step {
                TestStep::Member(r) => self.record(2, "member ", r, "", r.span.start),
                TestStep::Tx(r) => self.record(2, "tx ", r, "", r.span.start),
                TestStep::Expect(x) => {
                    let subject = match &x.subject {
                        Subject::Points => "points".to_string(),
                        Subject::Component(id) => format!("component {}", id.name),
                        Subject::Balance => "balance".to_string(),
                        Subject::Tier => "tier".to_string(),
                    };
                    self.code(
                        2,
                        format!("expect {subject} {} {}", x.op.as_str(), expr(&x.value)),
                        x.span.start,
                    );
                }
            }
        }
        self.code(0, "}".to_string(), item_end.saturating_sub(1));
    }

    /// Prints `prefix{ ... }suffix`, on one line if it fits.
    fn record(&mut self, indent: usize, prefix: &str, r: &Record, suffix: &str, anchor: usize) {
        let inline = format!("{prefix}{}{suffix}", record_inline(r));
        if indent + inline.len() <= MAX_WIDTH || r.fields.is_empty() {
            self.code(indent, inline, anchor);
            return;
        }
        self.code(indent, format!("{prefix}{{"), anchor);
        for f in &r.fields {
            let key = format!("{}: ", f.key.name);
            match &f.value {
                RecordValue::Expr(e) => {
                    self.code(indent + 2, format!("{key}{},", expr(e)), f.span.start)
                }
                RecordValue::Record(inner) => {
                    self.record(indent + 2, &key, inner, ",", f.span.start)
                }
                RecordValue::List(items, span) => {
                    let line = format!("{key}{},", records_inline(items));
                    if indent + 2 + line.len() <= MAX_WIDTH {
                        self.code(indent + 2, line, f.span.start);
                    } else {
                        self.code(indent + 2, format!("{key}["), f.span.start);
                        for item in items {
                            self.record(indent + 4, "", item, ",", item.span.start);
                        }
                        self.code(indent + 2, "],".to_string(), span.end.saturating_sub(1));
                    }
                }
            }
        }
        self.code(indent, format!("}}{suffix}"), r.span.end.saturating_sub(1));
    }

    /// Places the comments and joins the lines.
    fn attach(&mut self, comments: Vec<Comment>, _source: &str) {
        for c in comments {
            if !c.own_line {
                // The line holding the code just before the comment.
                let target = self
                    .lines
                    .iter()
                    .enumerate()
                    .filter_map(|(i, l)| match l {
                        Line::Code { anchor, .. } if *anchor <= c.start => Some((*anchor, i)),
                        _ => None,
                    })
                    .max();
                if let Some((_, i)) = target {
                    if let Some(Line::Code { text, .. }) = self.lines.get_mut(i) {
                        let _ = write!(text, "  {}", c.text);
                        continue;
                    }
                }
            }
            // Before the construct that follows the comment.
            let target = self
                .lines
                .iter()
                .enumerate()
                .filter_map(|(i, l)| match l {
                    Line::Code { anchor, .. } if *anchor > c.start => Some((*anchor, i)),
                    _ => None,
                })
                .min();
            let (at, indent) = match target {
                Some((_, i)) => {
                    let indent = match self.lines.get(i) {
                        Some(Line::Code { indent, text, .. })
                            if text.starts_with('}') || text.starts_with(']') =>
                        {
                            indent + 2
                        }
                        Some(Line::Code { indent, .. }) => *indent,
                        _ => 0,
                    };
                    (i, indent)
                }
                None => (self.lines.len(), 0),
            };
            let prev_open = match at.checked_sub(1).and_then(|i| self.lines.get(i)) {
                None | Some(Line::Blank) => false,
                Some(Line::Code { text, .. }) => !text.ends_with('{') && !text.ends_with('['),
            };
            let mut insert = vec![Line::Code {
                indent,
                text: c.text,
                anchor: c.start,
            }];
            if c.blank_before && prev_open {
                insert.insert(0, Line::Blank);
            }
            let tail = self.lines.split_off(at.min(self.lines.len()));
            self.lines.extend(insert);
            self.lines.extend(tail);
        }
    }

    fn finish(self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match line {
                Line::Code { indent, text, .. } => {
                    out.push_str(&" ".repeat(*indent));
                    out.push_str(text);
                }
                Line::Blank => {}
            }
            out.push('\n');
        }
        out
    }
}

fn weekday_name(day: chrono::Weekday) -> &'static str {
    match day {
        chrono::Weekday::Mon => "monday",
        chrono::Weekday::Tue => "tuesday",
        chrono::Weekday::Wed => "wednesday",
        chrono::Weekday::Thu => "thursday",
        chrono::Weekday::Fri => "friday",
        chrono::Weekday::Sat => "saturday",
        chrono::Weekday::Sun => "sunday",
    }
}

/// A window as written.
pub fn window(w: WindowKind) -> String {
    match w {
        WindowKind::Day => "day".to_string(),
        WindowKind::Week => "week".to_string(),
        WindowKind::Month => "month".to_string(),
        WindowKind::Quarter => "calendar quarter".to_string(),
        WindowKind::Year => "calendar year".to_string(),
        WindowKind::Rolling(1) => "rolling 1 day".to_string(),
        WindowKind::Rolling(n) => format!("rolling {n} days"),
        WindowKind::Lifetime => "lifetime".to_string(),
    }
}

/// A string literal with its quotes and escapes.
pub fn string(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Groups the digits of a whole part of five or more digits by thousands.
fn group_digits(digits: &str) -> String {
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let mut out = String::new();
    if int.len() >= 5 && int.bytes().all(|b| b.is_ascii_digit()) {
        let first = int.len() % 3;
        for (i, ch) in int.chars().enumerate() {
            if i > 0 && (i + 3 - first) % 3 == 0 {
                out.push('_');
            }
            out.push(ch);
        }
    } else {
        out.push_str(int);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

fn moment(m: &Moment) -> String {
    match m {
        Moment::Date(d, _) => d.format("%Y-%m-%d").to_string(),
        Moment::DateTime(dt, _) => datetime(dt),
    }
}

fn moment_opt(m: &Option<Moment>) -> String {
    m.as_ref().map_or_else(String::new, moment)
}

fn datetime(dt: &DateTimeLit) -> String {
    let mut s = if dt.has_seconds {
        dt.local.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        dt.local.format("%Y-%m-%dT%H:%M").to_string()
    };
    match dt.offset_minutes {
        None => {}
        Some(0) => s.push('Z'),
        Some(m) => {
            let sign = if m < 0 { '-' } else { '+' };
            let m = m.unsigned_abs();
            let _ = write!(s, "{sign}{:02}:{:02}", m / 60, m % 60);
        }
    }
    s
}

fn literal(lit: &Literal) -> String {
    match lit {
        Literal::Integer(n) => group_digits(&n.to_string()),
        Literal::Decimal(d) => group_digits(&d.to_string()),
        Literal::Money { amount, currency } => {
            format!("{} {}", group_digits(&amount.to_string()), currency.name)
        }
        Literal::String(s) => string(s),
        Literal::Bool(b) => b.to_string(),
        Literal::Date(d) => d.format("%Y-%m-%d").to_string(),
        Literal::DateTime(dt) => datetime(dt),
        Literal::Duration(d) => d.to_string(),
    }
}

fn list(elems: &[ListElem]) -> String {
    let mut s = String::new();
    list_into(&mut s, elems);
    s
}

fn list_into(s: &mut String, elems: &[ListElem]) {
    s.push('[');
    for (i, e) in elems.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        match e {
            ListElem::Single(x) => expr_into(s, x),
            ListElem::Range(a, b) => {
                expr_into(s, a);
                s.push_str("..");
                expr_into(s, b);
            }
        }
    }
    s.push(']');
}

/// An expression on one line, with the author's parentheses.
pub fn expr(e: &Expr) -> String {
    let mut s = String::new();
    expr_into(&mut s, e);
    s
}

/// [`expr`], appended to `s` (one buffer for the whole expression).
fn expr_into(s: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Literal(l) => s.push_str(&literal(l)),
        ExprKind::Name(id) => s.push_str(&id.name),
        ExprKind::Path(p) => {
            s.push_str(p.root.as_str());
            for f in &p.fields {
                s.push('.');
                s.push_str(&f.name);
            }
        }
        ExprKind::Unary { op, operand } => {
            s.push_str(match op {
                UnaryOp::Not => "not ",
                UnaryOp::Neg => "-",
            });
            expr_into(s, operand);
        }
        ExprKind::Binary { op, lhs, rhs } => {
            expr_into(s, lhs);
            s.push(' ');
            s.push_str(op.as_str());
            s.push(' ');
            expr_into(s, rhs);
        }
        ExprKind::List(elems) => list_into(s, elems),
        ExprKind::Call { func, args } => {
            s.push_str(&func.name);
            s.push('(');
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                expr_into(s, a);
            }
            s.push(')');
        }
        ExprKind::WindowAggregate { measure, window: w } => {
            s.push_str(measure.as_str());
            s.push('(');
            s.push_str(&window(w.kind));
            s.push(')');
        }
        ExprKind::ItemAggregate {
            func,
            filter,
            value,
        } => {
            s.push_str(func.as_str());
            s.push_str("(tx.line_items");
            if let Some(f) = filter {
                s.push_str(" where ");
                expr_into(s, f);
            }
            if let Some(v) = value {
                s.push_str(", ");
                expr_into(s, v);
            }
            s.push(')');
        }
        ExprKind::Paren(inner) => {
            s.push('(');
            expr_into(s, inner);
            s.push(')');
        }
    }
}

fn record_inline(r: &Record) -> String {
    if r.fields.is_empty() {
        return "{}".to_string();
    }
    let fields: Vec<String> = r
        .fields
        .iter()
        .map(|f| {
            let v = match &f.value {
                RecordValue::Expr(e) => expr(e),
                RecordValue::Record(inner) => record_inline(inner),
                RecordValue::List(items, _) => records_inline(items),
            };
            format!("{}: {v}", f.key.name)
        })
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn records_inline(items: &[Record]) -> String {
    let parts: Vec<String> = items.iter().map(record_inline).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_from_five() {
        assert_eq!(group_digits("5000"), "5000");
        assert_eq!(group_digits("15000"), "15_000");
        assert_eq!(group_digits("5000000"), "5_000_000");
        assert_eq!(group_digits("123456.75"), "123_456.75");
    }

    #[test]
    fn negative_unary_prints_tight() {
        let out = fmt("rule a { earn -(1 + 2) points }").unwrap_or_default();
        assert_eq!(out, "rule a {\n  earn -(1 + 2) points\n}\n");
    }
}
