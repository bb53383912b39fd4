//! bench/day: the `day-run` tool on a sample of the day (a few thousand
//! generated transactions) against the real PostgreSQL (`DATABASE_URL`)
//! and Redis (`REDIS_URL`), from the file and through the broker
//! (`KAFKA_BROKERS`): every line is applied or dead-lettered, the store
//! reconciles, PostgreSQL equals the in-memory engine member by member,
//! and Redis equals PostgreSQL. An interrupted run removes what it made.
//! The full day (10 million) is `scripts/day.sh`. No timing is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rewards_core::generate::{Generator, GeneratorConfig};

/// A temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Writes `transactions` generated lines plus one line the decoder must
/// refuse (it is dead-lettered, not lost) into `dir`.
fn sample(dir: &Path, transactions: usize) -> PathBuf {
    let input = dir.join("day.jsonl");
    let config = GeneratorConfig {
        seed: 11,
        transactions,
        members: 300,
        ..GeneratorConfig::default()
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for line in Generator::new(config).unwrap().lines() {
        writeln!(file, "{line}").unwrap();
    }
    writeln!(file, "{{\"id\":\"bad-1\",\"member\":\"m-1\"}}").unwrap();
    file.flush().unwrap();
    input
}

fn day_run(input: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_day-run"))
        .arg("--input")
        .arg(input)
        .args(["--workers", "2", "--pool", "4", "--progress-every", "5"])
        // The reference in shards of members, as the full day runs it.
        .args(["--reference-shards", "3"])
        .args(extra)
        .output()
        .expect("run day-run")
}

/// Checks a finished run's output: zero drift over every line.
fn assert_zero_drift(output: &Output, transactions: usize) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "day-run failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines = transactions as u64 + 1;
    assert!(
        stdout.contains(&format!("of {lines} applied"))
            && stdout.contains("in 3 shard(s) of members"),
        "the reference ran in 3 shards over every line\n{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("day: "))
        .unwrap_or_else(|| panic!("no summary line\n{stdout}"));
    let field = |name: &str| -> u64 {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim_end_matches("/s").parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {summary}"))
    };
    assert_eq!(field("transactions"), lines);
    assert_eq!(
        field("applied") + field("dead_letters"),
        lines,
        "every line applied or dead-lettered: {summary}"
    );
    assert!(field("dead_letters") >= 1, "the bad line: {summary}");
    assert_eq!(field("store_drift"), 0, "{summary}");
    assert_eq!(field("drift"), 0, "{stdout}");
    assert!(field("members_compared") > 100, "{summary}");
    assert!(summary.contains("verdict=ZERO DRIFT"), "{summary}");
}

#[test]
fn a_sample_of_the_day_reconciles_with_zero_drift() {
    let dir = TempDir::new("day-run-smoke");
    let input = sample(&dir.0, 4000);
    assert_zero_drift(&day_run(&input, &[]), 4000);
}

#[test]
fn a_sample_of_the_day_through_the_broker_reconciles_with_zero_drift() {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let dir = TempDir::new("day-run-kafka");
    let input = sample(&dir.0, 3000);
    let output = day_run(&input, &["--kafka", &brokers]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("produced 3001 records (1 undecodable)"),
        "every line went to the topic\n{stderr}"
    );
    assert_zero_drift(&output, 3000);
}

#[tokio::test]
async fn an_interrupted_run_leaves_no_schema_and_no_keys() {
    let dir = TempDir::new("day-run-interrupt");
    let input = sample(&dir.0, 60_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_day-run"))
        .arg("--input")
        .arg(&input)
        .args(["--workers", "2", "--pool", "4", "--progress-every", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start day-run");
    // Wait until the feed is under way (its first progress line), then
    // interrupt it as Ctrl-C would.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut schema = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if let Some(rest) = line.strip_prefix("day-run: schema ") {
            schema = rest.split(',').next().map(str::to_string);
        }
        if line.starts_with("day-run [postgres+redis]") {
            break;
        }
        line.clear();
    }
    let schema = schema.unwrap_or_else(|| panic!("no schema announced\n{seen}"));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let exit = child.wait().unwrap();
    seen.push_str(&rest);
    assert!(
        !exit.success(),
        "an interrupted run is not a success\n{seen}"
    );
    assert!(
        seen.contains("day-run: interrupted after") && seen.contains("not reconciled"),
        "the interruption is reported\n{seen}"
    );

    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let left = client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 0, "schema {schema} was dropped\n{seen}");

    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut redis = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("dayrun:{schema}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.is_empty(), "Redis keys left: {keys:?}");
}
