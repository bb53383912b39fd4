//! The programs a deployment runs: program name → compiled ruleset, with a
//! default, swapped atomically on hot reload.
//!
//! The whole set lives in one [`ArcSwap`]: a reload builds a new set and
//! swaps it in with a single pointer store. A worker resolves the plan of a
//! transaction once, before evaluating it, and holds that `Arc` until the
//! outcome is stored; so a transaction in flight during a reload finishes on
//! the version it started with, and every later transaction sees the new
//! one. Nothing here evaluates rules: a plan is any [`Evaluator`].

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rewards_core::{Evaluator, RulesetStamp};

use crate::metrics::Metrics;

/// An immutable set of programs.
#[derive(Clone, Default)]
pub struct ProgramSet {
    programs: HashMap<Arc<str>, Arc<dyn Evaluator>>,
    default: Option<Arc<str>>,
}

impl std::fmt::Debug for ProgramSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut stamps: Vec<(&str, &RulesetStamp)> = self
            .programs
            .iter()
            .map(|(name, plan)| (&**name, plan.stamp()))
            .collect();
        stamps.sort_by_key(|(name, _)| *name);
        f.debug_struct("ProgramSet")
            .field("programs", &stamps)
            .field("default", &self.default)
            .finish()
    }
}

impl ProgramSet {
    /// An empty set.
    pub fn new() -> ProgramSet {
        ProgramSet::default()
    }

    /// Adds (or replaces) a program.
    pub fn with(mut self, name: &str, plan: Arc<dyn Evaluator>) -> ProgramSet {
        self.programs.insert(Arc::from(name), plan);
        self
    }

    /// Names the program used for transactions without a `program` field.
    pub fn with_default(mut self, name: &str) -> ProgramSet {
        self.default = Some(Arc::from(name));
        self
    }

    /// The plan for `program` (`None`: the default).
    pub fn resolve(&self, program: Option<&str>) -> Result<Arc<dyn Evaluator>, UnknownProgram> {
        let name = match program {
            Some(name) => name,
            None => self
                .default
                .as_deref()
                .ok_or(UnknownProgram { name: None })?,
        };
        self.programs
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownProgram {
                name: Some(name.to_string()),
            })
    }

    /// The loaded programs' stamps, sorted by program name.
    pub fn stamps(&self) -> Vec<(Arc<str>, RulesetStamp)> {
        let mut out: Vec<_> = self
            .programs
            .iter()
            .map(|(name, plan)| (name.clone(), plan.stamp().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The default program's name.
    pub fn default_program(&self) -> Option<&str> {
        self.default.as_deref()
    }
}

/// A transaction names a program that is not loaded (or names none and
/// there is no default); see [`ProgramSet::resolve`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .name { Some(n) => format!("program {n:?} is not loaded"), None => "no program named and no default program".to_string() })]
pub struct UnknownProgram {
    /// The program named, `None` when the default was asked for.
    pub name: Option<String>,
}

/// The live program set, swapped atomically.
#[derive(Debug)]
pub struct ProgramRegistry {
    current: ArcSwap<ProgramSet>,
    metrics: Arc<Metrics>,
}

impl ProgramRegistry {
    /// A registry holding `set`.
    pub fn new(set: ProgramSet, metrics: Arc<Metrics>) -> ProgramRegistry {
        ProgramRegistry {
            current: ArcSwap::from_pointee(set),
            metrics,
        }
    }

    /// A registry with one program, named after its ruleset id, as default.
    pub fn single(plan: Arc<dyn Evaluator>, metrics: Arc<Metrics>) -> ProgramRegistry {
        let name = plan.stamp().id.clone();
        ProgramRegistry::new(
            ProgramSet::new().with(&name, plan).with_default(&name),
            metrics,
        )
    }

    /// The plan for `program` in the current set.
    pub fn resolve(&self, program: Option<&str>) -> Result<Arc<dyn Evaluator>, UnknownProgram> {
        self.current.load().resolve(program)
    }

    /// The current set (a snapshot: later swaps do not change it).
    pub fn snapshot(&self) -> Arc<ProgramSet> {
        self.current.load_full()
    }

    /// Replaces the whole set at once (a reload of every program).
    pub fn replace(&self, set: ProgramSet) {
        self.current.store(Arc::new(set));
        self.metrics.plan_swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds or replaces one program, keeping the others.
    pub fn swap(&self, name: &str, plan: Arc<dyn Evaluator>) {
        self.current.rcu(|set| {
            let mut next = ProgramSet::clone(set);
            next.programs.insert(Arc::from(name), plan.clone());
            next
        });
        self.metrics.plan_swaps.fetch_add(1, Ordering::Relaxed);
        tracing::info!(program = name, version = plan.stamp().version, hash = %plan.stamp().hash, "plan swapped in");
    }
}
