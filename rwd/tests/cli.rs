//! The `rwd` binary end to end: exit codes, output, files rewritten.

#![allow(clippy::unwrap_used)] // test helpers panic on broken fixtures

use std::path::Path;
use std::process::Command;

fn rwd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rwd"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "ruleset \"t\" version 1\ncurrency USD\ntimezone \"UTC\"\nrounding floor\n\nrule base {\n  earn floor(tx.amount) points\n}\n";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_passes_a_good_file_and_fails_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.rwd", GOOD);
    let (code, stdout, _) = rwd(&["check", &good]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "ok: 1 file checked, 0 warnings\n");

    let bad = write(
        dir.path(),
        "bad.rwd",
        &GOOD.replace("floor(tx.amount)", "tx.amount + member.balance"),
    );
    let (code, _, stderr) = rwd(&["check", &good, &bad]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("error[R0301]: cannot add money and points"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.rwd:7:8"), "{stderr}");
    assert!(
        stderr.contains("failed: 1 error in 1 of 2 files"),
        "{stderr}"
    );
    assert!(!stderr.contains("\x1b["), "colour in a pipe: {stderr}");
}

#[test]
fn check_reports_a_missing_file() {
    let (code, _, stderr) = rwd(&["check", "/nonexistent/x.rwd"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn fmt_rewrites_and_check_mode_only_reports() {
    let dir = tempfile::tempdir().unwrap();
    let messy = GOOD.replace("rule base {\n  earn", "rule   base{earn");
    let path = write(dir.path(), "messy.rwd", &messy);
    let (code, stdout, _) = rwd(&["fmt", "--check", &path]);
    assert_eq!(code, 1);
    assert!(stdout.contains("would reformat"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), messy);

    let (code, _, _) = rwd(&["fmt", &path]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), GOOD);
    let (code, stdout, _) = rwd(&["fmt", "--check", &path]);
    assert_eq!((code, stdout.as_str()), (0, ""));
}

#[test]
fn fmt_leaves_a_file_with_syntax_errors_alone() {
    let dir = tempfile::tempdir().unwrap();
    let broken = "rule a { earn 1 + points }\n";
    let path = write(dir.path(), "broken.rwd", broken);
    let (code, _, stderr) = rwd(&["fmt", &path]);
    assert_eq!(code, 1);
    assert!(stderr.contains("R0101"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
}

#[test]
fn the_examples_check_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let files: Vec<String> = ["cashback.rwd", "airline.rwd", "coffee.rwd"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let (code, stdout, stderr) = rwd(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "ok: 3 files checked, 0 warnings\n");
}
