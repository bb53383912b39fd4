//! The reference program as a rhai script (`benches/peers/reference.rhai`):
//! compiled once to an `AST`, evaluated per transaction with the facts
//! pushed into a fresh `Scope` (rhai with exact `Decimal` numbers and no
//! floating point).

use rhai::{Array, Dynamic, Engine, Map, Scope, AST};

use super::facts::{Facts, FactsBuilder, CAP_NAMES};
use super::{Award, Awards};

/// The script.
pub const SCRIPT: &str = include_str!("../../peers/reference.rhai");

/// The compiled script and its engine.
pub struct RhaiPeer {
    engine: Engine,
    ast: AST,
    facts: FactsBuilder,
}

impl RhaiPeer {
    /// Compiles the script.
    pub fn new() -> Result<RhaiPeer, String> {
        let mut engine = Engine::new();
        engine.set_optimization_level(rhai::OptimizationLevel::Full);
        let ast = engine.compile(SCRIPT).map_err(|e| e.to_string())?;
        Ok(RhaiPeer {
            engine,
            ast,
            facts: FactsBuilder::new(),
        })
    }

    /// Builds the facts of one transaction.
    pub fn facts(&self) -> &FactsBuilder {
        &self.facts
    }

    /// Evaluates one transaction whose facts are in `f`.
    pub fn evaluate(&self, f: &Facts, out: &mut Awards) -> Result<(), String> {
        out.clear();
        let mut scope = Scope::new();
        scope.push_constant("earning", f.earning);
        scope.push_constant("amount", Dynamic::from_decimal(f.amount));
        scope.push_constant("mcc", f.mcc);
        scope.push_constant("presence", f.presence.to_string());
        scope.push_constant("channel", f.channel.clone());
        scope.push_constant("country", f.country.clone());
        scope.push_constant("weekday", f.weekday);
        scope.push_constant("hour", f.hour);
        scope.push_constant("date", f.date);
        scope.push_constant("segment", f.segment.clone());
        scope.push_constant("student", f.student);
        scope.push_constant("tier", f.tier);
        scope.push_constant("dining_visits", f.dining_visits);
        scope.push_constant("airline_spend", Dynamic::from_decimal(f.airline_spend));
        let items: Array = f
            .items
            .iter()
            .map(|(category, amount)| {
                let mut m = Map::new();
                m.insert("category".into(), category.clone().into());
                m.insert("amount".into(), Dynamic::from_decimal(*amount));
                Dynamic::from_map(m)
            })
            .collect();
        scope.push_constant("items", items);
        for (name, used) in CAP_NAMES.iter().zip(f.used.iter()) {
            scope.push_constant(*name, Dynamic::from_decimal(*used));
        }
        let points: Array = self
            .engine
            .eval_ast_with_scope(&mut scope, &self.ast)
            .map_err(|e| e.to_string())?;
        for (rule, p) in points.iter().enumerate() {
            let p = p.as_int().map_err(|t| format!("rule {rule}: a {t}"))?;
            if p > 0 {
                out.push(Award {
                    rule: u8::try_from(rule).map_err(|e| e.to_string())?,
                    points: p,
                });
            }
        }
        Ok(())
    }
}
