//! The `rewards-daemon` binary as an operator runs it: a finite input with
//! `--exit-when-done`, a bad configuration, and a real SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rewards-daemon");

fn write_config(setup: &Setup, input: Option<&Path>) -> std::path::PathBuf {
    let input = match input {
        Some(path) => format!("[input]\nkind = \"file\"\npath = {:?}\n", path),
        None => String::new(),
    };
    let text = format!(
        r#"state_dir = {state:?}
[log]
level = "info"
format = "json"
[http]
addr = "127.0.0.1:0"
tokens = ["{USER}"]
admin_tokens = ["{ADMIN}"]
[programs]
watch = false
[programs.files]
card = {rules:?}
[jobs]
enabled = false
{input}"#,
        state = setup.state(),
        rules = setup.rules,
    );
    let path = setup.dir.path().join("daemon.toml");
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn a_finite_input_prints_the_summary_and_exits_zero() {
    let setup = Setup::new(&[
        purchase("p-1", "m-1", "10.00"),
        purchase("p-2", "m-2", "5.00"),
        "{not json".to_string(),
    ]);
    let config = write_config(&setup, Some(&setup.input));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--exit-when-done")
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("transactions read      3"), "{stdout}");
    assert!(stdout.contains("points posted (net)    15"), "{stdout}");
    assert!(stdout.contains("dead letters           1"), "{stdout}");
    assert!(stdout.contains("throughput"), "{stdout}");
    assert!(
        stdout.contains("program card: ruleset test-card version 1"),
        "{stdout}"
    );
    // JSON logs on stderr, and no token in them.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with('{') && l.contains("\"ready\"")),
        "{stderr}"
    );
    assert!(!stderr.contains(USER) && !stderr.contains(ADMIN));
    // The dead letter is in the state folder, with its reason.
    let letters =
        std::fs::read_to_string(setup.state().join("dead-letters.jsonl")).expect("dead letters");
    assert_eq!(letters.lines().count(), 1);
    assert!(letters.contains("decode"));
}

#[test]
fn an_invalid_configuration_exits_one_naming_the_key() {
    let setup = Setup::new(&[]);
    let config = write_config(&setup, None);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("REWARDS_API_TOKENS", "short")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.tokens"), "{stderr}");

    setup.write_rules("ruleset \"broken\"\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("compile_failed"));
}

#[test]
fn sigterm_stops_the_daemon_gracefully_with_status_zero() {
    let setup = Setup::new(&[]);
    let config = write_config(&setup, None);
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Wait for readiness in the (JSON) log, then signal.
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut ready = false;
    for line in lines.by_ref() {
        let line = line.expect("log line");
        if line.contains("\"ready\"") {
            ready = true;
            break;
        }
    }
    assert!(ready, "the daemon never logged ready");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("\"stopped\"")), "{rest:?}");
}
