//! The example programs' `test` blocks pass and exercise every rule.

use rewards_dsl::testing::run_source;
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
    for file in files {
        let source = std::fs::read_to_string(&file).expect("readable");
        let name = file.display().to_string();
        let report = match run_source(&source, &HostFunctions::new()) {
            Ok(r) => r,
            Err(d) => panic!("{name} does not compile: {d:?}"),
        };
        let text = report.render(&name);
        assert!(report.passed(), "{text}");
        assert!(report.uncovered().is_empty(), "{text}");
    }
}
