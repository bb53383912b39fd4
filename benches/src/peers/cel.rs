//! The reference program's conditions in CEL (cel-interpreter), where CEL
//! fits: each rule's `when`/`audience`/schedule is one compiled CEL
//! `Program`, evaluated per transaction against a `Context` holding the
//! facts. CEL has no exact decimals (only int, uint, double), so amounts
//! enter the conditions as whole cents, and the awards, caps, groups and
//! multipliers — decimal arithmetic — stay in Rust (as a CEL user would).

use cel_interpreter::{Context, Program, Value};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::sync::Arc;

use super::facts::{Facts, FactsBuilder, CAPS};
use super::{Award, Awards};

/// One CEL condition per rule, in [`super::RULES`] order.
pub const CONDITIONS: [&str; 25] = [
    "mcc >= 5812 && mcc <= 5814 && dining_visits == 0",
    "((mcc >= 3000 && mcc <= 3299) || mcc == 4511) && airline_spend_cents == 0",
    "mcc in [5200, 5211, 5231, 5251, 5261] && amount_cents >= 5000",
    "earning",
    "mcc >= 5812 && mcc <= 5814",
    "mcc in [5411, 5422, 5441, 5451, 5462]",
    "mcc in [5541, 5542, 5983]",
    "mcc == 4899 || (mcc >= 5815 && mcc <= 5818)",
    "(mcc >= 3000 && mcc <= 3299) || mcc == 4511",
    "(mcc >= 3500 && mcc <= 3999) || mcc == 7011",
    "mcc == 5912",
    "presence == 'online'",
    "channel == 'wallet'",
    "country != '' && country != 'US'",
    "amount_cents > 50000",
    "mcc >= 5812 && mcc <= 5814 && weekday in [6, 7]",
    "hour >= 22 || hour < 5",
    "mcc >= 5812 && mcc <= 5814",
    "student && (mcc == 4899 || (mcc >= 5815 && mcc <= 5818))",
    "segment == 'premium'",
    "date >= 20260301 && date <= 20260531 && mcc in [5200, 5211, 5231, 5251, 5261]",
    "tier == 1",
    "tier == 2",
    "tier == 3",
    "date >= 20261201 && date <= 20261231 && tier >= 1",
];

/// The compiled conditions.
pub struct CelPeer {
    programs: Vec<Program>,
    root: Context<'static>,
    facts: FactsBuilder,
}

/// Whole cents of an amount (amounts carry at most two decimals here).
fn cents(d: Decimal) -> i64 {
    (d * Decimal::ONE_HUNDRED)
        .trunc()
        .to_i64()
        .unwrap_or(i64::MAX)
}

fn floor(d: Decimal) -> i64 {
    d.max(Decimal::ZERO).floor().to_i64().unwrap_or(0)
}

impl CelPeer {
    /// Compiles the conditions.
    pub fn new() -> Result<CelPeer, String> {
        let programs = CONDITIONS
            .iter()
            .map(|c| Program::compile(c).map_err(|e| format!("{c}: {e:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CelPeer {
            programs,
            root: Context::default(),
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
        if !f.earning {
            return Ok(());
        }
        // Built-in functions live in the root context, made once.
        let mut cx = self.root.new_inner_scope();
        let text = |s: &str| Value::String(Arc::new(s.to_string()));
        cx.add_variable_from_value("earning", Value::Bool(f.earning));
        cx.add_variable_from_value("mcc", Value::Int(f.mcc));
        cx.add_variable_from_value("amount_cents", Value::Int(cents(f.amount)));
        cx.add_variable_from_value("presence", text(f.presence));
        cx.add_variable_from_value("channel", text(&f.channel));
        cx.add_variable_from_value("country", text(&f.country));
        cx.add_variable_from_value("weekday", Value::Int(f.weekday));
        cx.add_variable_from_value("hour", Value::Int(f.hour));
        cx.add_variable_from_value("date", Value::Int(f.date));
        cx.add_variable_from_value("segment", text(&f.segment));
        cx.add_variable_from_value("student", Value::Bool(f.student));
        cx.add_variable_from_value("tier", Value::Int(f.tier));
        cx.add_variable_from_value("dining_visits", Value::Int(f.dining_visits));
        cx.add_variable_from_value("airline_spend_cents", Value::Int(cents(f.airline_spend)));
        let mut hit = [false; 25];
        for (h, p) in hit.iter_mut().zip(&self.programs) {
            *h = matches!(p.execute(&cx), Ok(Value::Bool(true)));
        }
        // Awards, caps, groups and multipliers in Rust.
        let room = |k: usize| -> i64 {
            let limit = CAPS.get(k).map_or(0, |c| c.2);
            let used = f.used.get(k).copied().unwrap_or_default();
            floor(Decimal::from(limit) - used)
        };
        let whole = floor(f.amount);
        let mut p = [0i64; 25];
        let award = |r: usize| -> i64 {
            match r {
                0 => 100,
                1 => 500,
                2 => whole.min(room(0)),
                3 | 15 | 18 => whole,
                4 => (2 * whole).min(room(1)),
                5 => whole.min(room(2)),
                6 => whole.min(room(3)),
                7 => (3 * whole).min(room(4)),
                8 => 2 * whole,
                9 => (2 * whole).min(room(5)),
                10 => whole.min(room(6)),
                11 => floor(f.amount / Decimal::TWO).min(100),
                12 => 5.min(room(7)),
                13 => 2 * floor(f.amount / Decimal::TEN),
                14 => 250.min(room(8)),
                16 => 10.min(room(9)),
                17 => {
                    let coffee: Decimal = f
                        .items
                        .iter()
                        .filter(|(c, _)| c == "coffee")
                        .map(|(_, a)| *a)
                        .sum();
                    floor(coffee * Decimal::from(5))
                }
                19 => (f.amount * Decimal::new(2, 2))
                    .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
                    .to_i64()
                    .unwrap_or(0),
                20 => 50,
                _ => 0,
            }
        };
        for (r, points) in p.iter_mut().enumerate().take(21) {
            if hit[r] {
                *points = award(r);
            }
        }
        let mut winner: Option<usize> = None;
        for r in [4, 5, 6, 7] {
            if hit[r] {
                match winner {
                    Some(w) if p[w] >= p[r] => p[r] = 0,
                    Some(w) => {
                        p[w] = 0;
                        winner = Some(r);
                    }
                    None => winner = Some(r),
                }
            }
        }
        if hit[0] {
            p[1] = 0;
        }
        let all: i64 = p[..21].iter().sum();
        if hit[21] {
            p[21] = floor(Decimal::new(1, 1) * Decimal::from(all));
        }
        if hit[22] {
            p[22] = floor(Decimal::new(25, 2) * Decimal::from(all));
        }
        if hit[23] {
            p[23] = p[8] + p[9];
        }
        if hit[24] {
            p[24] = (p[4] + p[5] + p[6] + p[7]).min(room(10));
        }
        for (rule, points) in p.iter().enumerate() {
            if *points > 0 {
                out.push(Award {
                    rule: u8::try_from(rule).map_err(|e| e.to_string())?,
                    points: *points,
                });
            }
        }
        Ok(())
    }
}
