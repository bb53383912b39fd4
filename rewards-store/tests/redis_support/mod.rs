//! Test harness for the Redis cache tests: the shared server, a private
//! `redis-server` that a test may stop and restart, and a Redis Cluster.
//!
//! The shared server (127.0.0.1:6379, or `REDIS_URL`) is never stopped or
//! flushed: each test works under its own key prefix and deletes its keys
//! at the end. Tests that stop Redis start a private server on a free
//! loopback port, owned by the test (killed when dropped).
//!
//! The cluster comes from `REWARDS_REDIS_CLUSTER` or `REDIS_CLUSTER_NODES`
//! (comma-separated addresses) when set; else `scripts/services/redis-cluster.sh
//! start` brings up the project's cluster on 7000-7002; when that script is
//! missing, the test starts a private 3-master cluster on free ports.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shared server's URL.
pub fn shared_redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test (in this or another process) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "rwtest-{test}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port nobody listens on right now (and, for cluster nodes,
/// whose bus port `port + 10000` is free too).
pub fn free_port(with_bus: bool) -> u16 {
    for _ in 0..200 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        if !with_bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Sends one inline command to 127.0.0.1:port and returns the raw reply, or
/// `None` when nothing answers.
pub fn raw_command(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_millis(200),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..300 {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// A `redis-server` owned by one test, on its own port, keeping nothing on
/// disk. Stopping kills the process; starting again reuses the port.
pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port.
    pub fn start() -> PrivateRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = PrivateRedis {
            port: free_port(false),
            dir,
            child: None,
        };
        server.start_again();
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("the private redis is running")
            .id()
    }

    /// Kills the server (as a crash would: no shutdown handshake).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_until("the private redis to stop", || {
            raw_command(port, "PING").is_none()
        });
    }

    /// Starts the server again on the same port (empty: nothing was kept).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        let port = self.port;
        wait_until("the private redis to answer PING", || {
            raw_command(port, "PING").is_some_and(|r| r.starts_with("+PONG"))
        });
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster to test against: its node addresses, and the private
/// nodes when the test had to start its own.
pub struct TestCluster {
    /// `host:port` of every master.
    pub nodes: Vec<String>,
    private: Option<PrivateCluster>,
}

fn cluster_ok(port: u16) -> bool {
    raw_command(port, "CLUSTER INFO").is_some_and(|info| info.contains("cluster_state:ok"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in cluster address {addr:?}"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

impl TestCluster {
    /// The cluster named by the environment, the project's cluster, or a
    /// private one (see the module doc).
    pub fn get() -> TestCluster {
        let from_env = std::env::var("REWARDS_REDIS_CLUSTER")
            .or_else(|_| std::env::var("REDIS_CLUSTER_NODES"))
            .ok()
            .filter(|v| !v.trim().is_empty());
        if let Some(list) = from_env {
            let nodes: Vec<String> = list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            let first = port_of(&nodes[0]);
            if !cluster_ok(first) {
                // The variable names where the cluster should be: bring the
                // project's cluster up there (idempotent), then insist.
                Self::run_script(&nodes);
            }
            assert!(
                nodes.iter().all(|n| cluster_ok(port_of(n))),
                "the Redis Cluster named by the environment ({list}) is not healthy"
            );
            return TestCluster {
                nodes,
                private: None,
            };
        }
        let default: Vec<String> = (7000..7003).map(|p| format!("127.0.0.1:{p}")).collect();
        if default.iter().all(|n| cluster_ok(port_of(n))) {
            return TestCluster {
                nodes: default,
                private: None,
            };
        }
        if repo_root()
            .join("scripts/services/redis-cluster.sh")
            .exists()
        {
            Self::run_script(&default);
            return TestCluster {
                nodes: default,
                private: None,
            };
        }
        let private = PrivateCluster::start(3);
        TestCluster {
            nodes: private.nodes(),
            private: Some(private),
        }
    }

    fn run_script(nodes: &[String]) {
        let script = repo_root().join("scripts/services/redis-cluster.sh");
        let ports = nodes
            .iter()
            .map(|n| port_of(n).to_string())
            .collect::<Vec<_>>()
            .join(" ");
        // Several test processes may get here at once: `flock` serialises
        // them (the script is a no-op once the cluster is healthy). `-o`:
        // the daemonised nodes must not inherit the lock.
        let status = Command::new("flock")
            .args(["-o", "-w", "120", "/tmp/rewards-redis-cluster-start.lock"])
            .arg(&script)
            .arg("start")
            .env("REDIS_CLUSTER_PORTS", ports)
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/services/redis-cluster.sh");
        assert!(status.success(), "redis-cluster.sh start failed: {status}");
    }
}

/// A 3-master cluster owned by one test (killed when dropped).
struct PrivateCluster {
    _dir: tempfile::TempDir,
    ports: Vec<u16>,
    children: Vec<Child>,
}

impl PrivateCluster {
    fn start(masters: usize) -> PrivateCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        let mut children = Vec::new();
        for _ in 0..masters {
            let port = free_port(true);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            children.push(child);
            wait_until("a cluster node to answer PING", || {
                raw_command(port, "PING").is_some_and(|r| r.starts_with("+PONG"))
            });
            ports.push(port);
        }
        let cluster = PrivateCluster {
            _dir: dir,
            ports,
            children,
        };
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for &port in &cluster.ports {
            wait_until("cluster_state:ok", || cluster_ok(port));
        }
        cluster
    }

    fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cache config for the shared server under a fresh prefix: short TTLs
/// so that keys left by a failed test expire on their own.
pub fn single_config(test: &str) -> rewards_store::redis::RedisCacheConfig {
    test_config(
        rewards_store::redis::RedisCacheConfig::single(shared_redis_url()),
        test,
    )
}

/// A cache config for `cluster` under a fresh prefix.
pub fn cluster_config(cluster: &TestCluster, test: &str) -> rewards_store::redis::RedisCacheConfig {
    test_config(
        rewards_store::redis::RedisCacheConfig::cluster(cluster.nodes.clone()),
        test,
    )
}

/// A cache config for a private server.
pub fn private_config(server: &PrivateRedis, test: &str) -> rewards_store::redis::RedisCacheConfig {
    test_config(
        rewards_store::redis::RedisCacheConfig::single(server.url()),
        test,
    )
}

fn test_config(
    config: rewards_store::redis::RedisCacheConfig,
    test: &str,
) -> rewards_store::redis::RedisCacheConfig {
    let mut config = config.key_prefix(unique_prefix(test));
    config.entry_ttl = Some(Duration::from_secs(600));
    config.tombstone_ttl = Duration::from_secs(600);
    // Generous bounds: the machines are shared and busy.
    config.op_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    config
}
