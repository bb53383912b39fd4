//! Private service instances for fault tests: a `redis-server`, a
//! PostgreSQL cluster and a tansu broker, each on its own free loopback
//! port, owned by one test, which may stop and start them again (the
//! shared services are never touched). Each is killed when dropped.
//!
//! - [`PrivateRedis`]: nothing kept on disk; a restart comes back empty.
//! - [`PrivatePostgres`]: `initdb` into a temporary directory owned by the
//!   `postgres` OS user (PostgreSQL refuses to run as root; the commands run
//!   through `runuser -u postgres --` when the test runs as root), trust
//!   auth, database `test`. `stop` is `pg_ctl stop -m immediate` (a crash:
//!   recovery from the WAL at the next start).
//!   For disaster recovery (`tests/dr.rs`): [`PrivatePostgres::start_replicated`]
//!   (a primary configured for streaming replication),
//!   [`PrivatePostgres::start_standby`] (`pg_basebackup -R` into a new
//!   cluster on its own port, streaming through a replication slot),
//!   [`PrivatePostgres::require_sync_standby`] (synchronous replication:
//!   a commit is acknowledged only once the standby has flushed it),
//!   [`PrivatePostgres::promote`], [`PrivatePostgres::base_backup`] (a
//!   plain `pg_basebackup`, checked with `pg_verifybackup`),
//!   [`PrivatePostgres::from_backup`] and [`PrivatePostgres::destroy`].
//! - [`PrivateTansu`]: the tansu binary (`TANSU_BIN`, else
//!   `/var/cache/rewards/tansu/bin/tansu`) with sqlite storage in a
//!   temporary directory, so topics, records and committed offsets survive
//!   a restart.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A `redis-server` owned by one test.
pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port.
    pub fn start() -> PrivateRedis {
        let mut server = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.start_again();
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, as a crash).
    pub fn stop(&mut self) {
        kill_child(&mut self.child);
        let port = self.port;
        wait_for("the private redis to stop", Duration::from_secs(15), || {
            !port_open(port)
        });
    }

    /// Starts it again on the same port (empty).
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
        wait_for(
            "the private redis to listen",
            Duration::from_secs(15),
            || port_open(port),
        );
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// The directory of PostgreSQL's server binaries (`PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin`).
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set PG_BIN)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/*/bin/pg_ctl (or set PG_BIN)")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command for a PostgreSQL binary, as the `postgres` OS user when the
/// test runs as root.
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

fn run_ok(mut command: Command, what: &str) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PostgreSQL cluster owned by one test.
pub struct PrivatePostgres {
    port: u16,
    /// Holds the data directory (owned by `postgres` when run as root).
    dir: PathBuf,
    _parent: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    /// `initdb` and start on a free port, then create database `test`.
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::init(None)
    }

    /// [`PrivatePostgres::start`] with `extra_conf` appended to
    /// `postgresql.conf` before the first start.
    fn init(extra_conf: Option<&str>) -> PrivatePostgres {
        let (parent, dir) = cluster_dir();
        let mut initdb = pg_command("initdb");
        initdb.arg("-D").arg(dir.join("data")).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run_ok(initdb, "initdb");
        if let Some(extra) = extra_conf {
            append(&dir.join("data/postgresql.conf"), extra);
        }
        let mut server = PrivatePostgres {
            port: free_port(),
            dir,
            _parent: parent,
            running: false,
        };
        server.start_again();
        let mut create = pg_command("psql");
        create
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                "CREATE DATABASE test",
            ]);
        // psql lives in /usr/bin too; the versioned bin dir has it on Debian.
        run_ok(create, "create database test");
        server
    }

    /// The URL of database `test`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port)
    }

    /// Stops the server at once (`-m immediate`: no checkpoint, as a crash).
    pub fn stop(&mut self) {
        let mut stop = pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["stop", "-m", "immediate", "-w"]);
        run_ok(stop, "pg_ctl stop");
        self.running = false;
        let port = self.port;
        wait_for(
            "the private postgres to stop",
            Duration::from_secs(30),
            || !port_open(port),
        );
    }

    /// Starts the server (again) on its port and waits until it accepts
    /// connections.
    pub fn start_again(&mut self) {
        assert!(!self.running, "already running");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let mut start = pg_command("pg_ctl");
        start
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        run_ok(start, "pg_ctl start");
        self.running = true;
        let port = self.port;
        wait_for(
            "the private postgres to listen",
            Duration::from_secs(60),
            || port_open(port),
        );
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A primary for streaming replication: [`PrivatePostgres::start`] with
    /// `wal_level = replica`, WAL senders and replication slots, and a
    /// `replication` trust line for loopback in `pg_hba.conf`. Commits are
    /// asynchronous until [`PrivatePostgres::require_sync_standby`].
    pub fn start_replicated() -> PrivatePostgres {
        let server = PrivatePostgres::init(Some(REPLICATION_CONF));
        append(
            &server.dir.join("data/pg_hba.conf"),
            "\n# rewards DR tests: streaming replication and base backups\n\
             host replication postgres 127.0.0.1/32 trust\n",
        );
        server.sql("SELECT pg_reload_conf()");
        server
    }

    /// A streaming standby of this server on its own free port:
    /// `pg_basebackup -R` (which writes `standby.signal` and
    /// `primary_conninfo` with `application_name = NAME`) through a new
    /// physical replication slot `NAME`, started, and waited for until this
    /// server reports it `streaming`. `name` is a plain lower-case
    /// identifier.
    pub fn start_standby(&self, name: &str) -> PrivatePostgres {
        let (parent, dir) = cluster_dir();
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres application_name={name}",
            self.port
        );
        let mut backup = pg_command("pg_basebackup");
        backup
            .arg("-d")
            .arg(&conninfo)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-X", "stream", "-c", "fast", "-R", "-C", "-S", name])
            .arg("--no-sync");
        run_ok(backup, "pg_basebackup -R for the standby");
        let mut standby = PrivatePostgres {
            port: free_port(),
            dir,
            _parent: parent,
            running: false,
        };
        standby.start_again();
        let query =
            format!("SELECT state FROM pg_stat_replication WHERE application_name = '{name}'");
        wait_for(
            &format!("standby {name} to stream"),
            Duration::from_secs(60),
            || self.try_sql(&query).as_deref() == Some("streaming"),
        );
        standby
    }

    /// Makes standby `name` synchronous: `synchronous_standby_names =
    /// 'NAME'` and `synchronous_commit = on` (ALTER SYSTEM, reloaded), then
    /// waits until `pg_stat_replication` reports it `sync`. From then on a
    /// commit returns to the client only after the standby has written and
    /// flushed its WAL, so a crash of this server cannot lose an
    /// acknowledged commit once the standby is promoted. Set after the
    /// standby's base backup on purpose: the standby must not inherit the
    /// setting, or once promoted it would wait for a standby of its own.
    pub fn require_sync_standby(&self, name: &str) {
        self.sql(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{name}'"
        ));
        self.sql("ALTER SYSTEM SET synchronous_commit = 'on'");
        self.sql("SELECT pg_reload_conf()");
        let query =
            format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{name}'");
        wait_for(
            &format!("standby {name} to be synchronous"),
            Duration::from_secs(60),
            || self.try_sql(&query).as_deref() == Some("sync"),
        );
    }

    /// Promotes this standby (`pg_ctl promote -w`: returns once it accepts
    /// writes) and checks it has left recovery.
    pub fn promote(&mut self) {
        let mut promote = pg_command("pg_ctl");
        promote
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["promote", "-w", "-t", "60"]);
        run_ok(promote, "pg_ctl promote");
        assert_eq!(
            self.sql("SELECT pg_is_in_recovery()"),
            "f",
            "still in recovery after pg_ctl promote"
        );
    }

    /// A plain base backup of the running server (`pg_basebackup -X stream
    /// -c fast`, the WAL of the backup's duration included), checked with
    /// `pg_verifybackup` against its manifest.
    pub fn base_backup(&self) -> BaseBackup {
        let (parent, dir) = cluster_dir();
        let mut backup = pg_command("pg_basebackup");
        backup
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-D"])
            .arg(dir.join("data"))
            .args(["-X", "stream", "-c", "fast", "--no-sync"]);
        run_ok(backup, "pg_basebackup");
        let mut verify = pg_command("pg_verifybackup");
        verify.arg("-q").arg(dir.join("data"));
        run_ok(verify, "pg_verifybackup");
        BaseBackup {
            dir,
            _parent: parent,
        }
    }

    /// A new cluster started on a free port from a copy of `backup` (the
    /// backup itself stays untouched): crash recovery from the backup's
    /// checkpoint through the WAL it holds, then it accepts connections.
    pub fn from_backup(backup: &BaseBackup) -> PrivatePostgres {
        let (parent, dir) = cluster_dir();
        let mut copy = as_postgres("cp");
        copy.arg("-a")
            .arg(backup.dir.join("data"))
            .arg(dir.join("data"));
        run_ok(copy, "copy the base backup");
        let mut server = PrivatePostgres {
            port: free_port(),
            dir,
            _parent: parent,
            running: false,
        };
        server.start_again();
        server
    }

    /// A crash that takes the disk with it: stopped at once (`-m immediate`
    /// when running) and its data directory deleted.
    pub fn destroy(&mut self) {
        if self.running {
            self.stop();
        }
        std::fs::remove_dir_all(self.dir.join("data")).expect("delete the data directory");
    }

    /// Runs one SQL statement in database `postgres` through `psql`;
    /// returns its unaligned output, trimmed. Panics when it fails.
    pub fn sql(&self, sql: &str) -> String {
        let output = self
            .psql(sql)
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            output.status.success(),
            "psql -c {sql:?} on port {} failed ({}):\n{}",
            self.port,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// [`PrivatePostgres::sql`], `None` when it fails.
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        let output = self.psql(sql).output().ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    fn psql(&self, sql: &str) -> Command {
        let mut psql = pg_command("psql");
        psql.args(["-X", "-A", "-t", "-q"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .stdin(Stdio::null());
        psql
    }
}

/// What [`PrivatePostgres::start_replicated`] adds to `postgresql.conf`.
const REPLICATION_CONF: &str = "
# rewards DR tests: a primary for streaming replication
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
";

/// A temporary directory with a subdirectory `pg` the `postgres` OS user
/// owns (and can reach), to hold a cluster's `data` directory and socket.
fn cluster_dir() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("pg");
    std::fs::create_dir(&dir).expect("data dir");
    if is_root() {
        // Let the postgres user reach and own the data directory.
        let mut chmod = Command::new("chmod");
        chmod.arg("755").arg(parent.path());
        run_ok(chmod, "chmod the temp dir");
        let mut chown = Command::new("chown");
        chown.arg("postgres:").arg(&dir);
        run_ok(chown, "chown the data dir to postgres");
    }
    (parent, dir)
}

/// `program` (from `PATH`) as the `postgres` OS user when the test runs as
/// root.
fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", program]);
        command
    } else {
        Command::new(program)
    }
}

/// Appends `text` to a file of a cluster (as root or as its owner).
fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// A plain base backup ([`PrivatePostgres::base_backup`]): a data
/// directory with `backup_label`, `backup_manifest` and the WAL of the
/// backup's duration. Deleted when dropped.
pub struct BaseBackup {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl BaseBackup {
    /// The backup's data directory.
    pub fn path(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let mut stop = pg_command("pg_ctl");
            stop.arg("-D")
                .arg(self.dir.join("data"))
                .args(["stop", "-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = stop.status();
        }
    }
}

/// The tansu binary.
pub fn tansu_bin() -> PathBuf {
    std::env::var("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let root = std::env::var("TANSU_ROOT")
                .unwrap_or_else(|_| "/var/cache/rewards/tansu".to_string());
            Path::new(&root).join("bin/tansu")
        })
}

/// A tansu broker owned by one test, storing in sqlite so that a restart
/// keeps topics, records and committed offsets.
pub struct PrivateTansu {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateTansu {
    /// Starts a broker on a free port.
    pub fn start() -> PrivateTansu {
        let bin = tansu_bin();
        assert!(
            bin.exists(),
            "{} missing: run `scripts/services/tansu.sh build` (or set TANSU_BIN)",
            bin.display()
        );
        let mut broker = PrivateTansu {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        broker.start_again();
        broker
    }

    /// `host:port`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker: SIGTERM, SIGKILL after 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_for("the private tansu to stop", Duration::from_secs(15), || {
            !port_open(port)
        });
    }

    /// Starts it (again) on the same port and storage.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // Four slashes: an absolute path (see scripts/services/tansu.sh).
        let storage = format!("sqlite:///{}", self.dir.path().join("tansu.db").display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("tansu log");
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "the private tansu to listen",
            Duration::from_secs(30),
            || port_open(port),
        );
    }

    /// The broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}
