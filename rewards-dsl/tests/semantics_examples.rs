//! The example programs' `test` blocks pass and exercise every rule.

use rewards_dsl::ast::TypeName;
use rewards_dsl::testing::run_source;
use rewards_dsl::value::Value;
use rewards_dsl::HostFunctions;
use std::path::PathBuf;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/rules exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rwd"))
        .collect();
    files.sort();
    files
}

#[test]
fn example_tests_pass_and_cover_every_rule() {
    let files = examples();
    assert!(!files.is_empty());
    // The host functions the examples declare, as a host would register them.
    let mut host = HostFunctions::new();
    host.register(
        "partner_airline",
        &[TypeName::String],
        TypeName::Bool,
        |args| {
            Ok(Value::Bool(
                matches!(args.first(), Some(Value::String(m)) if m.starts_with("Skyway")),
            ))
        },
    );
    let mut failed = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).expect("readable");
        let name = file.display().to_string();
        let report = match run_source(&source, &host) {
            Ok(r) => r,
            Err(d) => panic!("{name} does not compile: {d:?}"),
        };
        let text = report.render(&name);
        println!("{text}");
        if !report.passed() || !report.uncovered().is_empty() || !report.stubbed.is_empty() {
            failed.push(text);
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
