//! Test harness: a daemon started in-process on 127.0.0.1 port 0 with a
//! temporary state folder and its own small ruleset, driven over HTTP with
//! a real client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

use rewards_examples::daemon::config::{Config, InputKind, Secret};
use rewards_examples::daemon::dsl::DslCompiler;
use rewards_examples::daemon::Daemon;

pub const USER: &str = "user-token-0123456789";
pub const ADMIN: &str = "admin-token-0123456789";
pub const INGEST: &str = "ingest-token-0123456789";

/// One point per whole dollar on purchases; a test block that checks it.
pub fn rules(version: u32, per_dollar: u32) -> String {
    format!(
        r#"ruleset "test-card" version {version}
currency USD
timezone "UTC"
rounding floor

rule base "{per_dollar} point per dollar" {{
  when tx.kind == purchase
  earn {per_dollar} * floor(tx.amount) points
}}

test "ten dollars" {{
  tx {{ amount: 10.00 USD, mcc: 5411, time: 2026-01-01T10:00 }}
  expect points == {}
}}
"#,
        10 * per_dollar
    )
}

/// A purchase line in the wire format.
pub fn purchase(id: &str, member: &str, amount: &str) -> String {
    format!(
        r#"{{"id":"{id}","member":"{member}","kind":"purchase","amount":"{amount}","currency":"USD","mcc":5411,"time":"2026-09-20T12:00:00Z"}}"#
    )
}

/// A refund line in the wire format.
pub fn refund(id: &str, member: &str, amount: &str, original: &str) -> String {
    format!(
        r#"{{"id":"{id}","member":"{member}","kind":"refund","amount":"{amount}","currency":"USD","mcc":5411,"time":"2026-09-21T12:00:00Z","original_id":"{original}"}}"#
    )
}

/// A temporary deployment: state folder, rules file, input file.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub rules: PathBuf,
    pub input: PathBuf,
}

impl Setup {
    pub fn new(input_lines: &[String]) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = dir.path().join("card.rwd");
        std::fs::write(&rules, rules_text()).expect("rules");
        let input = dir.path().join("tx.jsonl");
        let mut text = input_lines.join("\n");
        text.push('\n');
        std::fs::write(&input, text).expect("input");
        Setup { dir, rules, input }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The embedded default on port 0, jobs off (they run by the wall
    /// clock), the file watcher off unless asked.
    pub fn config(&self, with_input: bool) -> Config {
        let mut c = Config {
            state_dir: self.state(),
            ..Config::default()
        };
        c.http.addr = "127.0.0.1:0".parse().expect("addr");
        c.http.tokens = vec![Secret::new(USER)];
        c.http.admin_tokens = vec![Secret::new(ADMIN)];
        c.http.ingest_tokens = vec![Secret::new(INGEST)];
        c.programs.files.insert("card".into(), self.rules.clone());
        c.programs.default = "card".into();
        c.programs.watch = false;
        c.jobs.enabled = false;
        c.log.level = "warn".into();
        if with_input {
            c.input.kind = InputKind::File;
            c.input.path = Some(self.input.clone());
        }
        c
    }

    pub fn write_rules(&self, text: &str) {
        write_atomically(&self.rules, text);
    }
}

fn rules_text() -> String {
    rules(1, 1)
}

/// Replaces a file's contents in one rename (a watcher never sees half a file).
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

pub async fn start(config: Config) -> Daemon {
    rewards_examples::daemon::logging::init(&config.log);
    Daemon::start(config, Arc::new(DslCompiler::new()))
        .await
        .expect("daemon starts")
}

/// An HTTP client for a daemon.
pub struct Api {
    pub base: String,
    pub client: Client,
}

impl Api {
    pub fn new(daemon: &Daemon) -> Api {
        Api {
            base: format!("http://{}", daemon.http_addr()),
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &str) -> Response {
        self.post_with(path, token, body, None).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        token: Option<&str>,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        req.send().await.expect("request")
    }

    /// GET with the user token, expecting `status`, returning the JSON.
    pub async fn json(&self, path: &str, status: StatusCode) -> Value {
        let r = self.get(path, Some(USER)).await;
        assert_eq!(r.status(), status, "GET {path}");
        r.json().await.expect("json")
    }

    /// A member's available points (`None`: 404).
    pub async fn available(&self, member: &str) -> Option<i64> {
        let r = self
            .get(&format!("/v1/members/{member}/balance"), Some(USER))
            .await;
        if r.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.expect("json");
        v["available"].as_i64()
    }

    /// The version serving the default program.
    pub async fn serving_version(&self) -> u64 {
        let v = self.json("/v1/programs", StatusCode::OK).await;
        v["programs"][0]["current"]["version"]
            .as_u64()
            .expect("version")
    }
}

/// Waits (bounded) until `check` holds; panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
