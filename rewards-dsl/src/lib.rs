//! `rewards-dsl`: the `.rwd` rule language — grammar, syntax tree, checker,
//! diagnostics, formatter, compiler to an immutable `Plan`, evaluator.
