//! Golden tests: every program in `golden/invalid/` is checked and its
//! rendered diagnostics compared with the sibling `.expected` file; every
//! program in `golden/valid/` and `examples/rules/` must check clean and be
//! formatted already. Run with `UPDATE_GOLDEN=1` to rewrite the `.expected`
//! files after an intended change, and review the diff.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use rewards_dsl::check::diagnose;
use rewards_dsl::diag::{self, Code, Style};
use rewards_dsl::fmt;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rwd_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rwd"))
        .collect();
    files.sort();
    files
}

/// Parse + check, every diagnostic, rendered plain.
fn render(name: &str, source: &str) -> (String, Vec<Code>) {
    let diags = diagnose(source);
    let codes = diags.iter().map(|d| d.code).collect();
    (diag::render_all(&diags, name, source, Style::Plain), codes)
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn invalid_programs_give_the_expected_diagnostics() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = rwd_files(&golden_dir().join("invalid"));
    assert!(files.len() >= 30, "only {} invalid programs", files.len());
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap();
        let name = format!("invalid/{}", path.file_name().unwrap().to_string_lossy());
        let (rendered, codes) = render(&name, &source);
        assert!(!codes.is_empty(), "{name}: no diagnostics");
        seen.extend(codes);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &rendered).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| format!("(missing {})", expected_path.display()));
        if expected != rendered {
            failures.push(format!(
                "--- {name}: expected\n{expected}\n--- got\n{rendered}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden files differ (UPDATE_GOLDEN=1 rewrites them):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every code but R0401 (an 8 MiB file; see tests/parse.rs) has a golden.
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !seen.contains(c) && **c != Code::SourceTooLarge)
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a golden program: {missing:?}"
    );
}

fn assert_clean_and_formatted(path: &Path) {
    let source = std::fs::read_to_string(path).unwrap();
    let name = path.display().to_string();
    let (rendered, codes) = render(&name, &source);
    assert!(codes.is_empty(), "{rendered}");
    let formatted = fmt(&source).unwrap();
    assert_eq!(
        formatted, source,
        "{name} is not formatted (rwd fmt {name})"
    );
    assert_eq!(
        fmt(&formatted).unwrap(),
        formatted,
        "{name}: fmt is not idempotent"
    );
}

#[test]
fn valid_programs_check_clean_and_are_formatted() {
    let files = rwd_files(&golden_dir().join("valid"));
    assert!(!files.is_empty());
    for path in files {
        assert_clean_and_formatted(&path);
    }
}

#[test]
fn examples_check_clean_and_are_formatted() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let files = rwd_files(&dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in ["airline.rwd", "cashback.rwd", "coffee.rwd"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "missing example {wanted}"
        );
    }
    for path in files {
        assert_clean_and_formatted(&path);
    }
}

/// The ```rwd blocks of the language reference.
fn doc_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```rwd") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_example_in_the_language_reference_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/language.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let blocks = doc_blocks(&doc);
    assert!(blocks.len() >= 10, "only {} examples", blocks.len());
    for block in blocks {
        let (_, diags) = rewards_dsl::parse(&block);
        assert!(diags.is_empty(), "{block}\n{diags:#?}");
    }
    // The first block is a whole program: it also checks clean.
    let first = doc_blocks(&doc).remove(0);
    let (rendered, codes) = render("language.md", &first);
    assert!(codes.is_empty(), "{rendered}");
}

#[test]
fn every_code_is_documented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    let doc = std::fs::read_to_string(path).unwrap();
    for code in Code::ALL {
        assert!(
            doc.contains(&format!("\n## {code}\n")),
            "{code} is not in docs/diagnostics.md"
        );
    }
}
