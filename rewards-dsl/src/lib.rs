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

#![deny(missing_docs)]

pub mod ast;
pub mod check;
pub mod diag;
pub mod fmt;
pub mod limits;
pub mod parse;
pub mod types;

pub use check::{check, check_source, Checked};
pub use diag::{Code, Diagnostic, Severity};
pub use fmt::fmt;
pub use parse::parse;
