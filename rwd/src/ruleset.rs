//! Loading a ruleset for `rwd test`, `rwd eval` and `rwd explain`: check,
//! bind host functions (`--host NAME=VALUE` answers a constant; other
//! declared functions are stubbed with their type's zero value, since the
//! command line cannot load the host's Rust code), compile; and reading a
//! transaction and a member view from JSON.

use crate::files;
use rewards_core::{CounterKey, MemberView, Points, Transaction, WindowKey};
use rewards_dsl::ast::TypeName;
use rewards_dsl::check::Checked;
use rewards_dsl::compile::{compile_with, CompileOptions};
use rewards_dsl::value::Value;
use rewards_dsl::{HostFunctions, Plan};
use std::path::Path;
use std::str::FromStr;

/// A compiled ruleset with its source.
pub struct Loaded {
    /// The source text.
    pub source: String,
    /// The checked program.
    pub checked: Checked,
    /// The plan.
    pub plan: Plan,
}

/// Reads, checks and compiles a ruleset; prints diagnostics on failure.
pub fn load(path: &Path, hosts: &[String]) -> Result<Loaded, String> {
    let source = files::read(path)?;
    let checked = match rewards_dsl::check_source(&source) {
        Ok(c) => c,
        Err(diags) => {
            files::report(path, &source, &diags);
            return Err(format!("{}: does not check", path.display()));
        }
    };
    let host = host_functions(&checked, hosts)?;
    let options = CompileOptions {
        stub_missing_host_functions: true,
    };
    match compile_with(&checked, &source, &host, options) {
        Ok(plan) => Ok(Loaded {
            source,
            checked,
            plan,
        }),
        Err(diags) => {
            files::report(path, &source, &diags);
            Err(format!("{}: does not compile", path.display()))
        }
    }
}

/// `NAME=VALUE` pairs as constant host functions with the declared types.
pub fn host_functions(checked: &Checked, hosts: &[String]) -> Result<HostFunctions, String> {
    let mut host = HostFunctions::new();
    for pair in hosts {
        let (name, text) = pair
            .split_once('=')
            .ok_or_else(|| format!("--host {pair}: write NAME=VALUE"))?;
        let sig =
            checked.analysis.symbols.externs.get(name).ok_or_else(|| {
                format!("--host {pair}: the ruleset declares no `extern fn {name}`")
            })?;
        let value = constant(sig.ret, text)
            .ok_or_else(|| format!("--host {pair}: `{text}` is not a {}", sig.ret.as_str()))?;
        host.register(name, &sig.params, sig.ret, move |_| Ok(value.clone()));
    }
    Ok(host)
}

fn constant(ty: TypeName, text: &str) -> Option<Value> {
    Some(match ty {
        TypeName::Bool => Value::Bool(text.parse().ok()?),
        TypeName::String => Value::String(text.to_string()),
        TypeName::Integer => Value::Integer(text.parse().ok()?),
        TypeName::Decimal => Value::Decimal(rust_decimal::Decimal::from_str(text).ok()?),
        TypeName::Money => Value::Money(rust_decimal::Decimal::from_str(text).ok()?),
        TypeName::Points => Value::Points(rust_decimal::Decimal::from_str(text).ok()?),
        TypeName::Date => Value::Date(text.parse().ok()?),
        TypeName::DateTime => Value::DateTime(text.parse().ok()?),
        TypeName::Duration => return None,
    })
}

/// Inline JSON, or `@PATH` to read it from a file.
fn json_text(arg: &str) -> Result<String, String> {
    match arg.strip_prefix('@') {
        Some(path) => files::read(Path::new(path)),
        None => Ok(arg.to_string()),
    }
}

/// A transaction in the wire format.
pub fn transaction(arg: &str) -> Result<Transaction, String> {
    let text = json_text(arg)?;
    Transaction::from_json_str(&text).map_err(|e| format!("--tx: {e}"))
}

/// A member view: `{"tier": "gold", "enrolled": "2024-03-01", "balance":
/// 120, "attributes": {...}, "counters": {"cap.dining@q8107": "5950"}}`.
pub fn member(arg: Option<&str>) -> Result<MemberView, String> {
    let Some(arg) = arg else {
        return Ok(MemberView::default());
    };
    let text = json_text(arg)?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("--member: not valid JSON: {e}"))?;
    let fields = value.as_object().ok_or("--member: must be a JSON object")?;
    let mut view = MemberView::default();
    for (key, v) in fields {
        match key.as_str() {
            "tier" => view.tier = v.as_str().map(Into::into),
            "enrolled" => {
                view.enrolled = Some(
                    v.as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or("--member: enrolled must be a YYYY-MM-DD string")?,
                )
            }
            "balance" => {
                view.balance = Points(
                    v.as_i64()
                        .ok_or("--member: balance must be a whole number")?,
                )
            }
            "attributes" => {
                view.attributes = rewards_core::transaction::decode_attributes(v, "attributes")
                    .map_err(|e| format!("--member: {e}"))?
            }
            "counters" => {
                let map = v
                    .as_object()
                    .ok_or("--member: counters must be an object")?;
                for (k, n) in map {
                    let (name, window) = k
                        .rsplit_once('@')
                        .ok_or_else(|| format!("--member: counter `{k}` is not NAME@WINDOW"))?;
                    let window = WindowKey::parse(window)
                        .ok_or_else(|| format!("--member: `{window}` is not a window key (d20600, q8107, y2026, lifetime)"))?;
                    let amount = match n {
                        serde_json::Value::String(s) => rust_decimal::Decimal::from_str(s).ok(),
                        serde_json::Value::Number(x) => {
                            rust_decimal::Decimal::from_str(&x.to_string()).ok()
                        }
                        _ => None,
                    }
                    .ok_or_else(|| format!("--member: counter `{k}` needs a decimal value"))?;
                    view.counters.insert(CounterKey::new(name, window), amount);
                }
            }
            other => return Err(format!("--member: unknown field `{other}`")),
        }
    }
    Ok(view)
}
