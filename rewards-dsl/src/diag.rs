//! Diagnostics: stable codes, messages, spans, hints, and their rendering
//! as `file:line:col` with the source line and a caret under the span.
//!
//! Codes are grouped by stage: `R01xx` syntax, `R02xx` names, `R03xx`
//! types, `R04xx` limits and program shape. A code never changes meaning
//! once released; `docs/diagnostics.md` explains each with an example.

use crate::ast::Span;
use std::fmt::{self, Write as _};

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The program is accepted; something looks unintended.
    Warning,
    /// The program is rejected.
    Error,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal, $sev:ident; )*) => {
        /// A stable diagnostic code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $name, )*
        }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as printed, e.g. `R0301`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }

            /// The severity of every diagnostic with this code.
            pub fn severity(self) -> Severity {
                match self { $(Code::$name => Severity::$sev,)* }
            }
        }
    };
}

codes! {
    /// The text does not follow the grammar.
    Syntax = "R0101", Error;
    /// A literal is malformed or out of range (number, date, time, escape).
    InvalidLiteral = "R0102", Error;
    /// A header clause (`priority`, `tags`, ...) is given twice.
    DuplicateClause = "R0103", Error;
    /// A bare name is not declared and is not a built-in value.
    UnknownName = "R0201", Error;
    /// A path names no field of `tx`, `member` or `item`.
    UnknownField = "R0202", Error;
    /// `tx.attributes.X` / `member.attributes.X` without an `attribute` declaration.
    UndeclaredAttribute = "R0203", Error;
    /// A call to a function that is neither built in nor declared `extern`.
    UnknownFunction = "R0204", Error;
    /// `multiply X by ...` where X is no rule and `tag X` is no tag in use.
    UnknownTarget = "R0205", Error;
    /// `exclusive group X` where no `group X takes ...` is declared.
    UnknownGroup = "R0206", Error;
    /// A name (rule id, tier, category, ...) is declared twice.
    Duplicate = "R0207", Error;
    /// Not an ISO 4217 currency code.
    UnknownCurrency = "R0208", Error;
    /// Not an IANA time-zone name.
    UnknownTimezone = "R0209", Error;
    /// A declared name is a reserved built-in value or function.
    ReservedName = "R0210", Error;
    /// A name is declared but of the wrong kind for where it is used.
    WrongKind = "R0211", Error;
    /// A `member { }` / `tx { }` field that does not exist.
    UnknownTestField = "R0212", Error;
    /// `expect component X` where X is no rule or campaign.
    UnknownComponent = "R0213", Error;
    /// An operator is applied to operands of the wrong types.
    OperatorTypes = "R0301", Error;
    /// A condition (`when`, `qualify`, `audience`, `where`) is not a bool.
    NotBool = "R0302", Error;
    /// Money in another currency than the ruleset's.
    CurrencyMismatch = "R0303", Error;
    /// A function is called with the wrong number of arguments.
    Arity = "R0304", Error;
    /// A function argument has the wrong type.
    ArgumentType = "R0305", Error;
    /// `earn` of something that is not a number, money or points.
    EarnType = "R0306", Error;
    /// A comparison between values of different or unordered types.
    Compare = "R0307", Error;
    /// `in` whose right side is no list or category, or whose types differ.
    Membership = "R0308", Error;
    /// List elements of mixed types, or a range over an unordered type.
    ListType = "R0309", Error;
    /// A test field or expectation value of the wrong type.
    TestValueType = "R0310", Error;
    /// A `multiply` factor that is not a number.
    FactorType = "R0311", Error;
    /// A path used where it cannot be evaluated (`member.` in an aggregate filter, `item.` outside `sum`).
    Scope = "R0312", Error;
    /// The source file is too large.
    SourceTooLarge = "R0401", Error;
    /// Brackets nested too deeply.
    NestingTooDeep = "R0402", Error;
    /// An expression with too many operators or too deep.
    ExpressionTooComplex = "R0403", Error;
    /// Too many items, rules, tiers, list elements, arguments or statements.
    TooMany = "R0404", Error;
    /// A string literal is too long.
    StringTooLong = "R0405", Error;
    /// A required declaration (`ruleset`, `currency`, `timezone`, `rounding`) is missing.
    MissingDeclaration = "R0406", Error;
    /// A once-only declaration is repeated.
    RepeatedDeclaration = "R0407", Error;
    /// A rule body without exactly one action, or with repeated statements.
    RuleShape = "R0408", Error;
    /// A date range or value range that ends before it starts.
    BadRange = "R0409", Error;
    /// A number outside its allowed range (MCC, window length, cap, factor...).
    OutOfRange = "R0410", Error;
    /// A test block that cannot run (no `tx`, `expect` before `tx`, missing field).
    TestShape = "R0411", Error;
    /// A declaration that nothing uses.
    Unused = "R0412", Warning;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The stable code (its severity is `code.severity()`).
    pub code: Code,
    /// What is wrong, in one sentence without a final period.
    pub message: String,
    /// Where: the caret goes under this span.
    pub span: Span,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
    /// Related places, e.g. the first definition of a duplicate.
    pub notes: Vec<(Span, String)>,
}

impl Diagnostic {
    /// A diagnostic without hint or notes.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            span,
            hint: None,
            notes: Vec::new(),
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a related place.
    pub fn with_note(mut self, span: Span, note: impl Into<String>) -> Diagnostic {
        self.notes.push((span, note.into()));
        self
    }

    /// Error or warning.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// Whether this rejects the program.
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

/// Whether any of the diagnostics is an error.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}

/// Sorts diagnostics by position then code, and drops exact duplicates.
pub fn sort(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        (a.span.start, a.span.end, a.code).cmp(&(b.span.start, b.span.end, b.code))
    });
    diags.dedup();
}

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// Line and column of a byte offset (clamped into the source).
pub fn line_col(source: &str, offset: usize) -> LineCol {
    let offset = floor_char_boundary(source, offset);
    let before = source.get(..offset).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    LineCol { line, col }
}

fn floor_char_boundary(source: &str, offset: usize) -> usize {
    let mut at = offset.min(source.len());
    while at > 0 && !source.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The text of the line containing `offset`, and the offset where it starts.
fn line_at(source: &str, offset: usize) -> (&str, usize) {
    let offset = floor_char_boundary(source, offset);
    let start = source
        .get(..offset)
        .and_then(|s| s.rfind('\n'))
        .map_or(0, |i| i + 1);
    let rest = source.get(start..).unwrap_or("");
    let end = rest.find('\n').map_or(rest.len(), |i| i);
    let text = rest.get(..end).unwrap_or("");
    (text.strip_suffix('\r').unwrap_or(text), start)
}

/// Styling of rendered diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// No escape codes (files, pipes, golden tests).
    Plain,
    /// ANSI colours (a terminal).
    Color,
}

/// Renders one diagnostic:
///
/// ```text
/// error[R0301]: cannot add money and points
///   --> card.rwd:12:8
///    |
/// 12 |   earn tx.amount + 5 points
///    |        ^^^^^^^^^^^^^^
///    = hint: ...
/// ```
pub fn render(diag: &Diagnostic, file: &str, source: &str, style: Style) -> String {
    let (bold, red, yellow, blue, reset) = match style {
        Style::Plain => ("", "", "", "", ""),
        Style::Color => ("\x1b[1m", "\x1b[31m", "\x1b[33m", "\x1b[34m", "\x1b[0m"),
    };
    let (label, colour) = match diag.severity() {
        Severity::Error => ("error", red),
        Severity::Warning => ("warning", yellow),
    };
    let at = line_col(source, diag.span.start);
    let (line_text, line_start) = line_at(source, diag.span.start);
    let gutter = at.line.to_string().len();
    let pad = " ".repeat(gutter);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{bold}{colour}{label}[{}]{reset}{bold}: {}{reset}",
        diag.code, diag.message
    );
    let _ = writeln!(out, "{pad}{blue}-->{reset} {file}:{}:{}", at.line, at.col);
    let _ = writeln!(out, "{pad} {blue}|{reset}");
    let shown: String = line_text
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let _ = writeln!(out, "{blue}{}{reset} {blue}|{reset} {shown}", at.line);
    // The caret runs to the span's end or the end of its first line.
    let line_end = line_start + line_text.len();
    let caret_end = diag.span.end.clamp(diag.span.start, line_end);
    let width = source
        .get(floor_char_boundary(source, diag.span.start)..floor_char_boundary(source, caret_end))
        .map_or(0, |s| s.chars().count())
        .max(1);
    let _ = writeln!(
        out,
        "{pad} {blue}|{reset} {}{colour}{}{reset}",
        " ".repeat(at.col.saturating_sub(1)),
        "^".repeat(width)
    );
    for (span, note) in &diag.notes {
        let lc = line_col(source, span.start);
        let _ = writeln!(
            out,
            "{pad} {blue}={reset} note: {note} ({file}:{}:{})",
            lc.line, lc.col
        );
    }
    if let Some(hint) = &diag.hint {
        let _ = writeln!(out, "{pad} {blue}={reset} hint: {hint}");
    }
    out
}

/// Renders all diagnostics, separated by blank lines, with a summary line.
pub fn render_all(diags: &[Diagnostic], file: &str, source: &str, style: Style) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(d, file, source, style));
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let _ = writeln!(
        out,
        "{file}: {errors} error{}, {warnings} warning{}",
        if errors == 1 { "" } else { "s" },
        if warnings == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let src = "ab\ncdé f\n";
        assert_eq!(line_col(src, 0), LineCol { line: 1, col: 1 });
        assert_eq!(line_col(src, 3), LineCol { line: 2, col: 1 });
        // 'f' is after a two-byte character.
        assert_eq!(line_col(src, 8), LineCol { line: 2, col: 5 });
        // Out of range and inside a character are clamped.
        assert_eq!(line_col(src, 999).line, 3);
        assert_eq!(line_col(src, 6), LineCol { line: 2, col: 3 });
    }

    #[test]
    fn renders_a_caret_under_the_span() {
        let src = "rule a {\n  earn x points\n}\n";
        let d = Diagnostic::new(Code::UnknownName, Span::new(16, 17), "unknown name `x`")
            .with_hint("declare it");
        let text = render(&d, "f.rwd", src, Style::Plain);
        assert_eq!(
            text,
            "error[R0201]: unknown name `x`\n --> f.rwd:2:8\n  |\n2 |   earn x points\n  |        ^\n  = hint: declare it\n"
        );
    }

    #[test]
    fn codes_are_unique_and_grouped() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert!(c.as_str().starts_with("R0"));
        }
    }
}
