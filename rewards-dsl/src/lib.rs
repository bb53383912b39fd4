//! `rewards-dsl`: the `.rwd` rule language — grammar, syntax tree, checker,
//! diagnostics, formatter, compiler to an immutable `Plan`, evaluator.
//!
//! Front end, in pipeline order:
//! - [`parse`]: text → [`ast::Program`] plus syntax diagnostics (never fails);
//! - [`diag`]: diagnostic codes and rendering;
//! - [`limits`]: the bounds every accepted program respects.

#![deny(missing_docs)]

pub mod ast;
pub mod diag;
pub mod limits;
pub mod parse;

pub use diag::{Code, Diagnostic, Severity};
pub use parse::parse;
