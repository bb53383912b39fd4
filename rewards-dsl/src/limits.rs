//! Limits of the language front end. Every program that passes the checker
//! is within them, so the compiler and the evaluator may rely on them; a
//! program beyond them is rejected with an `R04xx` diagnostic, never with
//! a crash or a hang.

/// Largest source file accepted, in bytes (a program of [`MAX_RULES`]
/// rules of a few lines each fits).
pub const MAX_SOURCE_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting of `(`, `[` and `{`, checked before parsing.
pub const MAX_NESTING_DEPTH: usize = 32;
/// Most operators (prefix and infix) in one expression.
pub const MAX_EXPR_OPERATORS: usize = 256;
/// Deepest expression tree (after precedence is applied).
pub const MAX_EXPR_DEPTH: usize = 48;
/// Most top-level items in one file.
pub const MAX_ITEMS: usize = 20_000;
/// Most rules and campaigns in one ruleset (rule indices are `u16` in the
/// plan; compile time and plan size grow linearly, see
/// `docs/performance.md`).
pub const MAX_RULES: usize = 10_000;
/// Most tiers in one ruleset.
pub const MAX_TIERS: usize = 32;
/// Most aggregates in one ruleset.
pub const MAX_AGGREGATES: usize = 64;
/// Most elements of one list (a range counts as one element).
pub const MAX_LIST_LEN: usize = 1024;
/// Longest string literal, in bytes (after decoding escapes).
pub const MAX_STRING_BYTES: usize = 1024;
/// Most arguments of a function call, and parameters of an extern function.
pub const MAX_ARGS: usize = 8;
/// Most statements in one rule body or test.
pub const MAX_STMTS: usize = 64;
/// Most diagnostics reported for one file; the rest are summarised.
pub const MAX_DIAGNOSTICS: usize = 200;
/// Longest `rolling N days` window.
pub const MAX_ROLLING_DAYS: u16 = 366;
