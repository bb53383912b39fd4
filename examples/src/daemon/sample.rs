//! The example data in `examples/data/`: one day of generated transactions
//! for the three example programs, member profiles, and a few malformed
//! lines that must land in the dead letters. Deterministic: the same
//! settings give the same files, byte for byte (`rewards-daemon sample`).
//!
//! Built on the core's seeded generator (feature `generate`): one stream
//! per program with its own members (`m-…` for the default cash-back
//! program, `sky-m-…` for the airline card, `bean-m-…` for the coffee
//! shop, in euros with drink and food line items), merged in time order.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::NaiveDate;
use rust_decimal::Decimal;

use rewards_core::generate::{Generator, GeneratorConfig};
use rewards_core::{AttrValue, Currency, LineItem, MemberId, MemberProfile, Transaction, TxKind};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleConfig {
    /// Seed of the first stream (the others use seed + 1, + 2).
    pub seed: u64,
    /// Transactions of the default (cash-back) program.
    pub cashback: usize,
    /// Transactions of the airline program.
    pub airline: usize,
    /// Transactions of the coffee program.
    pub coffee: usize,
    /// The day.
    pub day: NaiveDate,
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            seed: 7,
            cashback: 2_400,
            airline: 600,
            coffee: 400,
            day: NaiveDate::from_ymd_opt(2026, 9, 20).unwrap_or_default(),
        }
    }
}

/// Lines that must be dead-lettered, one per kind of mistake.
pub const BAD_LINES: [&str; 3] = [
    r#"{"id":"bad-0001","member":"m-000001","kind":"purchase","amount":12.5,"currency":"USD","mcc":5411,"time":"2026-09-20T23:59:00Z"}"#,
    r#"{"id":"bad-0002","member":"m-000001","kind":"purchase","amount":"12.50","currency":"XXY","mcc":5411,"time":"2026-09-20T23:59:00Z"}"#,
    r#"{"id":"bad-0003","kind":"purchase","amount":"12.50","currency":"USD","mcc":5411,"time":"2026-09-20T23:59:00Z"}"#,
];

/// The generated files' contents.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Transactions, one JSON line each, in time order, bad lines last.
    pub transactions: Vec<String>,
    /// Member profiles, one JSON line each.
    pub profiles: Vec<String>,
}

fn renamed(prefix: &str, id: &MemberId) -> MemberId {
    MemberId::new(format!("{prefix}{id}")).unwrap_or_else(|_| id.clone())
}

fn stream(config: GeneratorConfig) -> Result<Vec<Transaction>, String> {
    Ok(Generator::new(config)
        .map_err(|e| format!("generator: {e}"))?
        .collect())
}

/// Generates the sample.
pub fn generate(config: &SampleConfig) -> Result<Sample, String> {
    let base = GeneratorConfig {
        day: config.day,
        ..GeneratorConfig::default()
    };
    let mut all = Vec::new();

    // Cash-back (default program): students get the streaming extra.
    for mut tx in stream(GeneratorConfig {
        seed: config.seed,
        transactions: config.cashback,
        members: (config.cashback / 10).max(1),
        id_prefix: "tx-".into(),
        ..base.clone()
    })? {
        if tx.member.as_str().ends_with('0') {
            tx.attributes
                .insert("segment".into(), AttrValue::Text("student".into()));
        }
        all.push(tx);
    }

    // Airline card.
    let mut sky_members = BTreeSet::new();
    for mut tx in stream(GeneratorConfig {
        seed: config.seed + 1,
        transactions: config.airline,
        members: (config.airline / 8).max(1),
        id_prefix: "sky-".into(),
        ..base.clone()
    })? {
        tx.member = renamed("sky-", &tx.member);
        tx.program = Some("airline".into());
        sky_members.insert(tx.member.clone());
        all.push(tx);
    }

    // Coffee shop, in euros, with line items at cafés.
    let mut bean_members = BTreeSet::new();
    for mut tx in stream(GeneratorConfig {
        seed: config.seed + 2,
        transactions: config.coffee,
        members: (config.coffee / 8).max(1),
        id_prefix: "bean-".into(),
        currency: Currency::parse("EUR").map_err(|e| e.to_string())?,
        ..base.clone()
    })? {
        tx.member = renamed("bean-", &tx.member);
        tx.program = Some("coffee".into());
        bean_members.insert(tx.member.clone());
        let cafe = matches!(tx.mcc, Some(5812 | 5814));
        if cafe && matches!(tx.kind, TxKind::Purchase | TxKind::Authorization) {
            let amount = tx.amount.amount;
            let drink = (amount * Decimal::new(6, 1)).round_dp(2);
            let food = amount - drink;
            tx.line_items = vec![
                LineItem {
                    sku: "LAT".into(),
                    category: "drink".into(),
                    quantity: 1,
                    amount: drink,
                },
                LineItem {
                    sku: "CRO".into(),
                    category: "food".into(),
                    quantity: 1,
                    amount: food,
                },
            ];
        }
        all.push(tx);
    }

    // One day, in time order (stable: ties keep generation order).
    all.sort_by_key(|tx| tx.time);
    let mut transactions: Vec<String> = all.iter().map(Transaction::to_json_string).collect();
    transactions.extend(BAD_LINES.iter().map(|l| (*l).to_string()));

    let mut profiles = Vec::new();
    let tiers = ["silver", "gold", "platinum"];
    for (i, member) in sky_members.iter().enumerate() {
        let mut p = MemberProfile::empty(member.clone());
        if i % 4 == 0 {
            p.attributes.insert(
                "prior_tier".into(),
                AttrValue::Text(tiers[(i / 4) % tiers.len()].into()),
            );
        }
        profiles.push(p);
    }
    for member in &bean_members {
        profiles.push(MemberProfile::empty(member.clone()));
    }
    let profiles = profiles
        .iter()
        .map(|p| serde_json::to_string(p).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // Sanity: every generated line decodes.
    for line in transactions
        .iter()
        .take(transactions.len() - BAD_LINES.len())
    {
        Transaction::from_json_str(line).map_err(|e| format!("generated an invalid line: {e}"))?;
    }
    Ok(Sample {
        transactions,
        profiles,
    })
}

/// Writes `transactions.jsonl` and `members.jsonl` into `dir`.
pub fn write(sample: &Sample, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let join = |lines: &[String]| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    };
    std::fs::write(dir.join("transactions.jsonl"), join(&sample.transactions))?;
    std::fs::write(dir.join("members.jsonl"), join(&sample.profiles))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_deterministic_and_has_its_bad_lines_last() {
        let config = SampleConfig {
            cashback: 200,
            airline: 50,
            coffee: 40,
            ..SampleConfig::default()
        };
        let a = generate(&config).unwrap();
        let b = generate(&config).unwrap();
        assert_eq!(a.transactions, b.transactions);
        assert_eq!(a.transactions.len(), 290 + BAD_LINES.len());
        for bad in BAD_LINES {
            assert!(Transaction::from_json_str(bad).is_err(), "{bad}");
        }
        assert!(a
            .transactions
            .iter()
            .any(|l| l.contains("\"program\":\"airline\"")));
        assert!(a.transactions.iter().any(|l| l.contains("\"EUR\"")));
        for p in &a.profiles {
            MemberProfile::from_json_str(p).unwrap();
        }
    }
}
