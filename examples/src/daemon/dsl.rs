//! The daemon's [`RuleCompiler`]: `rewards-dsl` checks and compiles a
//! `.rwd` file into a [`Plan`](rewards_dsl::Plan) with the daemon's host
//! functions, then runs the file's `test` blocks against that very plan.
//!
//! Host functions this daemon registers (a real host registers its own):
//!
//! | function | meaning |
//! |---|---|
//! | `partner_airline(merchant: string) -> bool` | the merchant name starts with one of [`PARTNER_AIRLINES`] |
//!
//! A program declaring any other `extern fn` does not compile here.

use std::path::Path;
use std::sync::Arc;

use rewards_dsl::ast::TypeName;
use rewards_dsl::diag::{render, Style};
use rewards_dsl::host::HostError;
use rewards_dsl::value::Value;
use rewards_dsl::HostFunctions;

use super::rules::{CompileRefused, CompiledProgram, RuleCompiler, TestFailure};

/// Merchants `partner_airline` recognises (by name prefix).
pub const PARTNER_AIRLINES: [&str; 3] = ["Skyway", "Blue Air", "Northwind"];

/// Compiles `.rwd` sources with `rewards-dsl`.
pub struct DslCompiler {
    host: HostFunctions,
}

impl std::fmt::Debug for DslCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DslCompiler").finish_non_exhaustive()
    }
}

impl Default for DslCompiler {
    fn default() -> Self {
        DslCompiler::new()
    }
}

impl DslCompiler {
    /// A compiler with the daemon's host functions.
    pub fn new() -> DslCompiler {
        let mut host = HostFunctions::new();
        host.register(
            "partner_airline",
            &[TypeName::String],
            TypeName::Bool,
            |args| match args.first() {
                Some(Value::String(merchant)) => Ok(Value::Bool(
                    PARTNER_AIRLINES.iter().any(|p| merchant.starts_with(p)),
                )),
                _ => Err(HostError("partner_airline expects a merchant name".into())),
            },
        );
        DslCompiler { host }
    }
}

impl RuleCompiler for DslCompiler {
    fn compile(&self, path: &Path, source: &str) -> Result<CompiledProgram, CompileRefused> {
        let file = path.display().to_string();
        let rendered = |diags: &[rewards_dsl::Diagnostic]| CompileRefused {
            diagnostics: diags
                .iter()
                .map(|d| {
                    render(d, &file, source, Style::Plain)
                        .trim_end()
                        .to_string()
                })
                .collect(),
        };
        let checked = rewards_dsl::check_source(source).map_err(|d| rendered(&d))?;
        let plan = rewards_dsl::compile(&checked, source, &self.host).map_err(|d| rendered(&d))?;
        let report = rewards_dsl::testing::run(&checked, &plan, source);
        let tests_passed = report.tests.iter().filter(|t| t.passed()).count();
        let test_failures = report
            .tests
            .iter()
            .filter(|t| !t.passed())
            .map(|t| TestFailure {
                test: t.name.clone(),
                message: format!("{file}:{}: {}", t.line, t.failures.join("; ")),
            })
            .collect();
        let warnings = checked
            .warnings
            .iter()
            .map(|d| {
                render(d, &file, source, Style::Plain)
                    .trim_end()
                    .to_string()
            })
            .collect();
        Ok(CompiledProgram {
            plan: Arc::new(plan),
            tests_passed,
            test_failures,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
ruleset "t" version 1
currency USD
timezone "UTC"
rounding floor

rule base "1 point per dollar" {
  when tx.kind == purchase
  earn floor(tx.amount) points
}

test "ten dollars" {
  tx { amount: 10.00 USD, mcc: 5411, time: 2026-01-01T10:00 }
  expect points == 10
}
"#;

    #[test]
    fn good_rules_compile_with_their_tests() {
        let c = DslCompiler::new();
        let out = c.compile(Path::new("t.rwd"), GOOD).unwrap();
        assert_eq!(out.tests_passed, 1);
        assert!(out.test_failures.is_empty());
        assert_eq!(out.plan.stamp().version, 1);
    }

    #[test]
    fn failing_tests_are_reported() {
        let c = DslCompiler::new();
        let bad = GOOD.replace("expect points == 10", "expect points == 11");
        let out = c.compile(Path::new("t.rwd"), &bad).unwrap();
        assert_eq!(out.tests_passed, 0);
        assert_eq!(out.test_failures.len(), 1);
        assert_eq!(out.test_failures[0].test, "ten dollars");
    }

    #[test]
    fn broken_rules_are_refused_with_diagnostics() {
        let c = DslCompiler::new();
        let bad = GOOD.replace(
            "earn floor(tx.amount) points",
            "earn floor(tx.amount) + points",
        );
        let refused = c.compile(Path::new("t.rwd"), &bad).err().unwrap();
        assert!(!refused.diagnostics.is_empty());
        assert!(
            refused.diagnostics[0].contains("t.rwd:"),
            "{:?}",
            refused.diagnostics
        );
    }

    #[test]
    fn the_example_programs_compile_and_pass_their_tests() {
        let c = DslCompiler::new();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
        for name in ["cashback.rwd", "airline.rwd", "coffee.rwd"] {
            let path = dir.join(name);
            let source = std::fs::read_to_string(&path).unwrap();
            let out = c
                .compile(&path, &source)
                .unwrap_or_else(|e| panic!("{name}: {:?}", e.diagnostics));
            assert!(
                out.test_failures.is_empty(),
                "{name}: {:?}",
                out.test_failures
            );
            assert!(out.tests_passed > 0, "{name}");
        }
    }
}
