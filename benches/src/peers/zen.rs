//! The reference program as a zen-engine JDM decision
//! (`benches/peers/reference.json`: input node → one expression node with
//! the rules, `$.key` referring to earlier results → output node), created
//! once and evaluated per transaction with the facts as its JSON context,
//! the documented way (`Decision::evaluate(json.into())`, awaited on a
//! minimal executor: zen evaluates asynchronously).

use serde_json::{Map, Number, Value};
use zen_engine::model::DecisionContent;
use zen_engine::{Decision, DecisionEngine};

use super::facts::{Facts, FactsBuilder, CAP_NAMES};
use super::{Award, Awards};

/// The JDM decision.
pub const JDM: &str = include_str!("../../peers/reference.json");

/// The created decision.
pub struct ZenPeer {
    decision: Decision,
    facts: FactsBuilder,
}

fn decimal(d: rust_decimal::Decimal) -> Value {
    d.to_string()
        .parse::<Number>()
        .map_or(Value::Null, Value::Number)
}

impl ZenPeer {
    /// Parses and creates the decision.
    pub fn new() -> Result<ZenPeer, String> {
        let content: DecisionContent = serde_json::from_str(JDM).map_err(|e| e.to_string())?;
        let engine = DecisionEngine::default();
        let decision = engine
            .create_decision(content.into())
            .map_err(|e| e.to_string())?;
        Ok(ZenPeer {
            decision,
            facts: FactsBuilder::new(),
        })
    }

    /// Builds the facts of one transaction.
    pub fn facts(&self) -> &FactsBuilder {
        &self.facts
    }

    /// The JSON context of one transaction.
    pub fn context(f: &Facts) -> Value {
        let mut m = Map::new();
        m.insert("earning".into(), f.earning.into());
        m.insert("amount".into(), decimal(f.amount));
        m.insert("mcc".into(), f.mcc.into());
        m.insert("presence".into(), f.presence.into());
        m.insert("channel".into(), f.channel.clone().into());
        m.insert("country".into(), f.country.clone().into());
        m.insert("weekday".into(), f.weekday.into());
        m.insert("hour".into(), f.hour.into());
        m.insert("date".into(), f.date.into());
        m.insert("segment".into(), f.segment.clone().into());
        m.insert("student".into(), f.student.into());
        m.insert("tier".into(), f.tier.into());
        m.insert("dining_visits".into(), f.dining_visits.into());
        m.insert("airline_spend".into(), decimal(f.airline_spend));
        let items = f
            .items
            .iter()
            .map(|(category, amount)| {
                let mut i = Map::new();
                i.insert("category".into(), category.clone().into());
                i.insert("amount".into(), decimal(*amount));
                Value::Object(i)
            })
            .collect();
        m.insert("items".into(), Value::Array(items));
        for (name, used) in CAP_NAMES.iter().zip(f.used.iter()) {
            m.insert((*name).into(), decimal(*used));
        }
        Value::Object(m)
    }

    /// Evaluates one transaction whose facts are in `f`.
    pub fn evaluate(&self, f: &Facts, out: &mut Awards) -> Result<(), String> {
        out.clear();
        let context = ZenPeer::context(f);
        let response = futures_executor::block_on(self.decision.evaluate(context.into()))
            .map_err(|e| e.to_string())?;
        let points = response
            .result
            .dot("p")
            .and_then(|p| p.as_array())
            .ok_or("the decision answered no `p` array")?;
        for (rule, p) in points.borrow().iter().enumerate() {
            let p = p
                .as_number()
                .and_then(|d| rust_decimal::prelude::ToPrimitive::to_i64(&d))
                .ok_or_else(|| format!("rule {rule}: not a whole number"))?;
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
