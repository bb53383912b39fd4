//! `rewards-dsl`: the `.rwd` rule language — grammar, syntax tree, checker,
//! diagnostics, formatter, compiler to an immutable `Plan`, evaluator.
//!
//! Front end, in pipeline order:
//! - [`parse`]: text → [`ast::Program`] plus syntax diagnostics (never fails);
//! - [`check`]: name resolution and type checking → [`check::Analysis`];
//! - [`types`]: the expression types and operator typing rules;
//! - [`diag`]: diagnostic codes and rendering;
//! - [`fmt`]: the canonical formatter;
//! - [`limits`]: the bounds every accepted program respects.
//!
//! Back end (semantics: `docs/semantics.md`):
//! - [`compile`]: checked program → immutable [`Plan`] (flat nodes, folded
//!   constants, rules pre-indexed by kind and MCC, content hash);
//! - `cond`: conditions compiled for the hot path (common comparisons
//!   decided on the field, the rest by the node interpreter);
//! - [`host`]: typed host functions registered from Rust;
//! - [`eval`]: `Plan::evaluate` → `Outcome`, tier reviews;
//! - [`explain`]: why and why not, and a human-readable rendering;
//! - [`testing`]: runs a program's `test` blocks with rule coverage;
//! - [`value`]: runtime values.

#![deny(missing_docs)]

pub mod ast;
pub mod check;
pub mod compile;
mod cond;
pub mod diag;
pub mod eval;
pub mod explain;
pub mod fmt;
pub mod host;
pub mod limits;
pub mod parse;
pub mod plan;
pub mod testing;
pub mod types;
pub mod value;
mod zone;

pub use check::{check, check_source, Checked};
pub use compile::{compile, compile_source, CompileOptions};
pub use diag::{Code, Diagnostic, Severity};
pub use eval::TierDecision;
pub use fmt::fmt;
pub use host::HostFunctions;
pub use parse::parse;
pub use plan::{EvalError, Plan};
