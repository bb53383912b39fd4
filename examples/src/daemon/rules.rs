//! The deployment's programs: compiling `.rwd` files, hot reload, scheduled
//! activation and rollback, on top of the runtime's [`ProgramRegistry`].
//!
//! A new version is swapped in **only** if it compiles **and** its `test`
//! blocks pass; otherwise the reload is refused with the diagnostics and
//! the old plan keeps serving. A reload of several programs is all or
//! nothing: one refused program refuses the whole reload. The swap itself is
//! one atomic pointer store in the registry: transactions already in flight
//! finish on the version they started with, later ones get the new one.
//!
//! Each program keeps its last few versions (`programs.keep_versions`), for
//! rollback and so that `explain` can re-evaluate a past transaction on the
//! plan that produced it. Reloads are serialised by one async mutex.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Mutex;

use rewards_core::{Evaluator, RulesetStamp};
use rewards_runtime::{ProgramRegistry, ProgramSet};

use super::metrics::DaemonMetrics;

/// Largest `.rwd` file read, in bytes: the language's own limit
/// ([`rewards_dsl::limits::MAX_SOURCE_BYTES`]), so that every program the
/// compiler accepts can be loaded (a 10,000-rule program is ~2 MB).
pub const MAX_RULES_FILE_BYTES: u64 = rewards_dsl::limits::MAX_SOURCE_BYTES as u64;

/// A failed `test` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestFailure {
    /// The test's name.
    pub test: String,
    /// What was expected and what came out.
    pub message: String,
}

/// A ruleset compiled and tested.
#[derive(Clone)]
pub struct CompiledProgram {
    /// The plan.
    pub plan: Arc<dyn Evaluator>,
    /// `test` blocks that passed.
    pub tests_passed: usize,
    /// `test` blocks that failed (a plan with failures is never swapped in).
    pub test_failures: Vec<TestFailure>,
    /// Warnings from the compiler (rendered).
    pub warnings: Vec<String>,
}

/// Why a compiler refused a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileRefused {
    /// Rendered diagnostics (`file:line:col: code: message`).
    pub diagnostics: Vec<String>,
}

/// Turns `.rwd` source into a tested plan. The daemon's is
/// [`super::dsl::DslCompiler`]; tests may bring their own.
pub trait RuleCompiler: Send + Sync {
    /// Compiles `source` (read from `path`) and runs its `test` blocks.
    fn compile(&self, path: &Path, source: &str) -> Result<CompiledProgram, CompileRefused>;
}

/// Why one program was not (re)loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramRejection {
    /// The program.
    pub program: String,
    /// Its file.
    pub path: PathBuf,
    /// `unreadable`, `compile_failed` or `tests_failed`.
    pub reason: &'static str,
    /// Diagnostics or the I/O error.
    pub diagnostics: Vec<String>,
    /// Failed tests.
    pub test_failures: Vec<TestFailure>,
}

impl std::fmt::Display for ProgramRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "program {} ({}): {}",
            self.program,
            self.path.display(),
            self.reason
        )?;
        for d in self.diagnostics.iter().take(5) {
            write!(f, "; {d}")?;
        }
        for t in self.test_failures.iter().take(5) {
            write!(f, "; test {:?}: {}", t.test, t.message)?;
        }
        Ok(())
    }
}

/// A refused reload or activation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// At least one program did not compile or failed its tests; nothing
    /// was swapped.
    #[error("rules refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(" | "))]
    Rejected(Vec<ProgramRejection>),
    /// The request names a program this deployment does not have.
    #[error("no program named {0:?}")]
    UnknownProgram(String),
    /// Nothing to roll back to.
    #[error("program {0:?} has no earlier version to roll back to")]
    NoPreviousVersion(String),
}

/// A plan as loaded, with where it came from.
#[derive(Clone)]
struct Loaded {
    plan: Arc<dyn Evaluator>,
    source_sha256: String,
    loaded_at: DateTime<Utc>,
    tests_passed: usize,
}

impl Loaded {
    fn info(&self, program: &str) -> VersionInfo {
        VersionInfo {
            program: program.to_string(),
            ruleset: self.plan.stamp().id.to_string(),
            version: self.plan.stamp().version,
            hash: self.plan.stamp().hash.to_string(),
            source_sha256: self.source_sha256.clone(),
            loaded_at: self.loaded_at,
            tests_passed: self.tests_passed,
        }
    }
}

/// One version of one program, as shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The program name.
    pub program: String,
    /// The ruleset id.
    pub ruleset: String,
    /// The ruleset's declared version.
    pub version: u32,
    /// The plan's content hash.
    pub hash: String,
    /// SHA-256 of the file's bytes.
    pub source_sha256: String,
    /// When it was compiled.
    pub loaded_at: DateTime<Utc>,
    /// Its `test` blocks (all passed).
    pub tests_passed: usize,
}

/// What happened to one program in a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadOutcome {
    /// `activated`, `unchanged` or `scheduled`.
    pub status: &'static str,
    /// The version now serving (or scheduled).
    pub version: VersionInfo,
    /// When a scheduled version takes over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activate_at: Option<DateTime<Utc>>,
}

/// A version waiting for its activation time.
#[derive(Clone)]
struct Pending {
    loaded: Loaded,
    at: DateTime<Utc>,
}

/// Every program's current, earlier and scheduled versions.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramsStatus {
    /// The default program.
    pub default: String,
    /// Per program.
    pub programs: Vec<ProgramStatus>,
}

/// One program's versions.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStatus {
    /// Name.
    pub program: String,
    /// Its file.
    pub path: PathBuf,
    /// The version serving.
    pub current: VersionInfo,
    /// Earlier versions, newest first (rollback goes to the first).
    pub previous: Vec<VersionInfo>,
    /// A version scheduled to take over.
    pub scheduled: Option<ReloadOutcome>,
}

struct State {
    current: BTreeMap<String, Loaded>,
    previous: BTreeMap<String, VecDeque<Loaded>>,
    pending: BTreeMap<String, Pending>,
    /// File modification time and length last seen, per program.
    seen: BTreeMap<String, Option<(SystemTime, u64)>>,
}

/// The programs of a deployment.
pub struct Programs {
    registry: Arc<ProgramRegistry>,
    compiler: Arc<dyn RuleCompiler>,
    files: BTreeMap<String, PathBuf>,
    default: String,
    keep_versions: usize,
    state: Mutex<State>,
    /// Every plan still held (current, previous, scheduled), by content hash.
    by_hash: RwLock<HashMap<Arc<str>, Arc<dyn Evaluator>>>,
    metrics: Arc<DaemonMetrics>,
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Programs")
            .field("files", &self.files)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

impl Programs {
    /// Compiles every program; any refusal fails the start.
    pub fn load(
        files: BTreeMap<String, PathBuf>,
        default: &str,
        keep_versions: usize,
        compiler: Arc<dyn RuleCompiler>,
        runtime_metrics: Arc<rewards_runtime::Metrics>,
        metrics: Arc<DaemonMetrics>,
    ) -> Result<Programs, ReloadError> {
        let mut current = BTreeMap::new();
        let mut seen = BTreeMap::new();
        let mut rejected = Vec::new();
        for (name, path) in &files {
            seen.insert(name.clone(), file_stamp(path));
            match build(compiler.as_ref(), name, path) {
                Ok(loaded) => {
                    current.insert(name.clone(), loaded);
                }
                Err(r) => rejected.push(r),
            }
        }
        if !rejected.is_empty() {
            return Err(ReloadError::Rejected(rejected));
        }
        let registry = Arc::new(ProgramRegistry::new(
            program_set(&current, default),
            runtime_metrics,
        ));
        let programs = Programs {
            registry,
            compiler,
            files,
            default: default.to_string(),
            keep_versions,
            state: Mutex::new(State {
                current,
                previous: BTreeMap::new(),
                pending: BTreeMap::new(),
                seen,
            }),
            by_hash: RwLock::new(HashMap::new()),
            metrics,
        };
        if let Ok(state) = programs.state.try_lock() {
            programs.index(&state);
            for (name, loaded) in &state.current {
                let stamp = loaded.plan.stamp();
                tracing::info!(program = %name, ruleset = %stamp.id, version = stamp.version, hash = %stamp.hash, tests = loaded.tests_passed, "program loaded");
            }
        }
        Ok(programs)
    }

    /// The registry the pipeline resolves plans in.
    pub fn registry(&self) -> &Arc<ProgramRegistry> {
        &self.registry
    }

    /// The default program's name.
    pub fn default_program(&self) -> &str {
        &self.default
    }

    /// The plan currently serving `program` (`None`: the default).
    pub fn resolve(&self, program: Option<&str>) -> Option<Arc<dyn Evaluator>> {
        self.registry.resolve(program).ok()
    }

    /// A plan still held (current, earlier or scheduled) with this content hash.
    pub fn plan_by_hash(&self, hash: &str) -> Option<Arc<dyn Evaluator>> {
        self.by_hash
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(hash)
            .cloned()
    }

    /// The stamps now serving, by program.
    pub fn stamps(&self) -> Vec<(Arc<str>, RulesetStamp)> {
        self.registry.snapshot().stamps()
    }

    /// Recompiles `program` (or every program) and swaps in the versions
    /// that changed — at once, or at `activate_at` when that is later than
    /// now. All or nothing: one refusal refuses the whole reload.
    pub async fn reload(
        &self,
        program: Option<&str>,
        activate_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<ReloadOutcome>, ReloadError> {
        let names: Vec<String> = match program {
            Some(name) if self.files.contains_key(name) => vec![name.to_string()],
            Some(name) => return Err(ReloadError::UnknownProgram(name.to_string())),
            None => self.files.keys().cloned().collect(),
        };
        let mut state = self.state.lock().await;
        let mut built = Vec::with_capacity(names.len());
        let mut rejected = Vec::new();
        for name in &names {
            let path = &self.files[name];
            state.seen.insert(name.clone(), file_stamp(path));
            match build(self.compiler.as_ref(), name, path) {
                Ok(loaded) => built.push((name.clone(), loaded)),
                Err(r) => rejected.push(r),
            }
        }
        if !rejected.is_empty() {
            self.metrics.reload(false);
            for r in &rejected {
                tracing::error!(program = %r.program, reason = r.reason, details = %r, "reload refused; the previous version keeps serving");
            }
            return Err(ReloadError::Rejected(rejected));
        }
        self.metrics.reload(true);
        let now = Utc::now();
        let mut outcomes = Vec::with_capacity(built.len());
        let scheduled = activate_at.filter(|at| *at > now);
        let mut changed = false;
        for (name, loaded) in built {
            let same = state
                .current
                .get(&name)
                .is_some_and(|c| c.plan.stamp().hash == loaded.plan.stamp().hash);
            if let Some(at) = scheduled {
                tracing::info!(program = %name, version = loaded.plan.stamp().version, hash = %loaded.plan.stamp().hash, %at, "version scheduled");
                outcomes.push(ReloadOutcome {
                    status: "scheduled",
                    version: loaded.info(&name),
                    activate_at: Some(at),
                });
                state.pending.insert(name, Pending { loaded, at });
                continue;
            }
            // An immediate reload supersedes a scheduled version.
            state.pending.remove(&name);
            if same {
                let info = state.current.get(&name).map(|c| c.info(&name));
                outcomes.push(ReloadOutcome {
                    status: "unchanged",
                    version: info.unwrap_or_else(|| loaded.info(&name)),
                    activate_at: None,
                });
                continue;
            }
            outcomes.push(ReloadOutcome {
                status: "activated",
                version: loaded.info(&name),
                activate_at: None,
            });
            self.install(&mut state, &name, loaded);
            changed = true;
        }
        if changed {
            self.registry
                .replace(program_set(&state.current, &self.default));
        }
        self.index(&state);
        Ok(outcomes)
    }

    /// Swaps in every scheduled version whose time has come.
    pub async fn activate_due(&self, now: DateTime<Utc>) -> Vec<ReloadOutcome> {
        let mut state = self.state.lock().await;
        let due: Vec<String> = state
            .pending
            .iter()
            .filter(|(_, p)| p.at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        let mut out = Vec::new();
        for name in due {
            if let Some(pending) = state.pending.remove(&name) {
                out.push(ReloadOutcome {
                    status: "activated",
                    version: pending.loaded.info(&name),
                    activate_at: Some(pending.at),
                });
                self.install(&mut state, &name, pending.loaded);
            }
        }
        if !out.is_empty() {
            self.registry
                .replace(program_set(&state.current, &self.default));
            self.index(&state);
        }
        out
    }

    /// Goes back to the previous version of `program` (the default program
    /// when `None`); the version rolled back from is dropped, and a
    /// scheduled version of the program is cancelled.
    pub async fn rollback(&self, program: Option<&str>) -> Result<ReloadOutcome, ReloadError> {
        let name = program.unwrap_or(&self.default).to_string();
        if !self.files.contains_key(&name) {
            return Err(ReloadError::UnknownProgram(name));
        }
        let mut state = self.state.lock().await;
        let previous = state
            .previous
            .get_mut(&name)
            .and_then(VecDeque::pop_front)
            .ok_or_else(|| ReloadError::NoPreviousVersion(name.clone()))?;
        state.pending.remove(&name);
        let info = previous.info(&name);
        state.current.insert(name.clone(), previous);
        self.registry
            .replace(program_set(&state.current, &self.default));
        self.index(&state);
        self.metrics.rollback();
        tracing::warn!(program = %name, version = info.version, hash = %info.hash, "rolled back");
        Ok(ReloadOutcome {
            status: "activated",
            version: info,
            activate_at: None,
        })
    }

    /// Reloads every program whose file changed since it was last read
    /// (modification time or length). A refused reload is logged and
    /// counted; the old plan keeps serving.
    pub async fn reload_changed_files(&self) -> Vec<Result<Vec<ReloadOutcome>, ReloadError>> {
        let changed: Vec<String> = {
            let state = self.state.lock().await;
            self.files
                .iter()
                .filter(|(name, path)| {
                    let now = file_stamp(path);
                    now.is_some() && state.seen.get(*name) != Some(&now)
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut out = Vec::new();
        for name in changed {
            tracing::info!(program = %name, "rules file changed; reloading");
            out.push(self.reload(Some(&name), None).await);
        }
        out
    }

    /// Every program's versions.
    pub async fn status(&self) -> ProgramsStatus {
        let state = self.state.lock().await;
        let programs = self
            .files
            .iter()
            .filter_map(|(name, path)| {
                let current = state.current.get(name)?.info(name);
                Some(ProgramStatus {
                    program: name.clone(),
                    path: path.clone(),
                    current,
                    previous: state
                        .previous
                        .get(name)
                        .map(|v| v.iter().map(|l| l.info(name)).collect())
                        .unwrap_or_default(),
                    scheduled: state.pending.get(name).map(|p| ReloadOutcome {
                        status: "scheduled",
                        version: p.loaded.info(name),
                        activate_at: Some(p.at),
                    }),
                })
            })
            .collect();
        ProgramsStatus {
            default: self.default.clone(),
            programs,
        }
    }

    fn install(&self, state: &mut State, name: &str, loaded: Loaded) {
        let stamp = loaded.plan.stamp().clone();
        if let Some(old) = state.current.insert(name.to_string(), loaded) {
            if old.plan.stamp().hash != stamp.hash {
                let history = state.previous.entry(name.to_string()).or_default();
                history.push_front(old);
                history.truncate(self.keep_versions);
            }
        }
        tracing::info!(program = %name, ruleset = %stamp.id, version = stamp.version, hash = %stamp.hash, "program version activated");
    }

    fn index(&self, state: &State) {
        let mut map: HashMap<Arc<str>, Arc<dyn Evaluator>> = HashMap::new();
        let all = state
            .current
            .values()
            .chain(state.previous.values().flatten())
            .chain(state.pending.values().map(|p| &p.loaded));
        for loaded in all {
            map.insert(loaded.plan.stamp().hash.clone(), loaded.plan.clone());
        }
        *self
            .by_hash
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }
}

fn program_set(current: &BTreeMap<String, Loaded>, default: &str) -> ProgramSet {
    let mut set = ProgramSet::new();
    for (name, loaded) in current {
        set = set.with(name, loaded.plan.clone());
    }
    set.with_default(default)
}

fn build(compiler: &dyn RuleCompiler, name: &str, path: &Path) -> Result<Loaded, ProgramRejection> {
    let reject = |reason, diagnostics, test_failures| ProgramRejection {
        program: name.to_string(),
        path: path.to_path_buf(),
        reason,
        diagnostics,
        test_failures,
    };
    let bytes = match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_RULES_FILE_BYTES => {
            return Err(reject(
                "unreadable",
                vec![format!(
                    "{} bytes is more than the {MAX_RULES_FILE_BYTES} allowed",
                    meta.len()
                )],
                Vec::new(),
            ))
        }
        Ok(_) => std::fs::read(path),
        Err(e) => Err(e),
    }
    .map_err(|e| reject("unreadable", vec![e.to_string()], Vec::new()))?;
    let source = String::from_utf8(bytes)
        .map_err(|_| reject("unreadable", vec!["not UTF-8".into()], Vec::new()))?;
    let compiled = compiler
        .compile(path, &source)
        .map_err(|e| reject("compile_failed", e.diagnostics, Vec::new()))?;
    if !compiled.test_failures.is_empty() {
        return Err(reject("tests_failed", Vec::new(), compiled.test_failures));
    }
    for w in &compiled.warnings {
        tracing::warn!(program = name, warning = %w, "rules warning");
    }
    Ok(Loaded {
        plan: compiled.plan,
        source_sha256: sha256_hex(source.as_bytes()),
        loaded_at: Utc::now(),
        tests_passed: compiled.tests_passed,
    })
}
