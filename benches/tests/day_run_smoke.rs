//! bench/day: the `day-run` tool on a sample of the day (a few thousand
//! generated transactions) against the real PostgreSQL (`DATABASE_URL`)
//! and Redis (`REDIS_URL`): every line is applied or dead-lettered, the
//! store reconciles, PostgreSQL equals the in-memory engine member by
//! member, and Redis equals PostgreSQL. The full day (10 million) is
//! `scripts/day.sh`. No timing is asserted.

use std::io::Write;
use std::process::Command;

use rewards_core::generate::{Generator, GeneratorConfig};

#[test]
fn a_sample_of_the_day_reconciles_with_zero_drift() {
    let dir = std::env::temp_dir().join(format!("day-run-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("day.jsonl");
    let transactions = 4000;
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
    // One line the decoder must refuse: it is dead-lettered, not lost.
    writeln!(file, "{{\"id\":\"bad-1\",\"member\":\"m-1\"}}").unwrap();
    file.flush().unwrap();
    drop(file);

    let output = Command::new(env!("CARGO_BIN_EXE_day-run"))
        .arg("--input")
        .arg(&input)
        .args(["--workers", "2", "--pool", "4", "--progress-every", "5"])
        // The reference in shards of members, as the full day runs it.
        .args(["--reference-shards", "3"])
        .output()
        .expect("run day-run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        output.status.success(),
        "day-run failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("of 4001 applied") && stdout.contains("in 3 shard(s) of members"),
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
    assert_eq!(field("transactions"), transactions as u64 + 1);
    assert_eq!(
        field("applied") + field("dead_letters"),
        transactions as u64 + 1,
        "every line applied or dead-lettered: {summary}"
    );
    assert!(field("dead_letters") >= 1, "the bad line: {summary}");
    assert_eq!(field("store_drift"), 0, "{summary}");
    assert_eq!(field("drift"), 0, "{stdout}");
    assert!(field("members_compared") > 100, "{summary}");
    assert!(summary.contains("verdict=ZERO DRIFT"), "{summary}");
}
