//! The transaction wire contract (`shared/design/TRANSACTION.md`, documented
//! for users in `docs/transactions.md`): the typed [`Transaction`], a decoder
//! that names the offending field in every error, and the canonical encoding.
//!
//! Decoding goes through `serde_json::Value` with `arbitrary_precision`, so
//! numbers in attributes are read as exact decimals and a float amount can be
//! told apart from a decimal string. A key appearing twice is refused
//! ([`crate::strict_json`]), as is anything whose canonical form would not
//! fit the size limit.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::ids::{MemberId, TxId};
use crate::limits::{
    MAX_ADJUSTMENT_POINTS, MAX_AMOUNT_MAJOR, MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES,
    MAX_LINE_ITEMS, MAX_TEXT_BYTES, MAX_TX_BYTES,
};
use crate::money::{Currency, Money};
use crate::points::Points;

/// What happened to the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    /// A completed purchase: earns points.
    Purchase,
    /// Money returned for an earlier purchase: claws back its points.
    Refund,
    /// A card authorization: earns pending points.
    Authorization,
    /// The settlement of an authorization: posts its pending points.
    Settlement,
    /// The voiding of an authorization: its pending points are cancelled.
    Reversal,
    /// A disputed purchase reversed by the issuer: claws back like a refund.
    Chargeback,
    /// Signed points set by support staff, with a reason and an actor.
    Adjustment,
}

impl TxKind {
    /// All kinds, in wire order.
    pub const ALL: [TxKind; 7] = [
        TxKind::Purchase,
        TxKind::Refund,
        TxKind::Authorization,
        TxKind::Settlement,
        TxKind::Reversal,
        TxKind::Chargeback,
        TxKind::Adjustment,
    ];

    /// The wire name (`"purchase"`).
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::Purchase => "purchase",
            TxKind::Refund => "refund",
            TxKind::Authorization => "authorization",
            TxKind::Settlement => "settlement",
            TxKind::Reversal => "reversal",
            TxKind::Chargeback => "chargeback",
            TxKind::Adjustment => "adjustment",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<TxKind> {
        TxKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Kinds that earn what the rules award (a lot of their own):
    /// purchases and authorizations. The others refer to an original.
    pub fn earns(self) -> bool {
        matches!(self, TxKind::Purchase | TxKind::Authorization)
    }

    /// Kinds that must name the transaction they refer to in `original_id`.
    pub fn needs_original(self) -> bool {
        matches!(
            self,
            TxKind::Refund | TxKind::Settlement | TxKind::Reversal | TxKind::Chargeback
        )
    }
}

impl fmt::Display for TxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the card was present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Card not present.
    Online,
    /// Card present.
    InStore,
}

impl Presence {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Online => "online",
            Presence::InStore => "in_store",
        }
    }
}

/// A value of a free-form attribute: numbers are exact decimals.
///
/// Serialised as plain JSON (`true`, `"12"`, `12`) with numbers written
/// exactly, and read back through the wire decoder's rules, so a text
/// `"12"` stays text and a number `0.1` stays the exact decimal 0.1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    /// A boolean.
    Bool(bool),
    /// An exact decimal number.
    Number(Decimal),
    /// A string.
    Text(String),
}

impl Serialize for AttrValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        attr_to_json(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        attr_value(&value, "attribute").map_err(serde::de::Error::custom)
    }
}

/// One line of a basket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LineItem {
    /// Stock-keeping unit.
    pub sku: String,
    /// Product category, as the merchant names it.
    pub category: String,
    /// Quantity (whole units).
    pub quantity: u32,
    /// Line amount in the transaction's currency.
    pub amount: Decimal,
}

/// One payment event, as decoded from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Globally unique id; the idempotency key.
    pub id: TxId,
    /// The member it belongs to.
    pub member: MemberId,
    /// What happened.
    pub kind: TxKind,
    /// Which program (ruleset) applies; `None` means the deployment default.
    pub program: Option<String>,
    /// The amount (zero for an adjustment that carries none).
    pub amount: Money,
    /// When the payment happened.
    pub time: DateTime<Utc>,
    /// Merchant category code.
    pub mcc: Option<u16>,
    /// Merchant name or id.
    pub merchant: Option<String>,
    /// How it was paid (`card`, `wallet`, ...).
    pub channel: Option<String>,
    /// Card present or not.
    pub presence: Option<Presence>,
    /// Merchant country, ISO 3166 alpha-2.
    pub country: Option<String>,
    /// The purchase or authorization this one refers to.
    pub original_id: Option<TxId>,
    /// Basket detail.
    pub line_items: Vec<LineItem>,
    /// Anything else rules may read.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Signed points of an adjustment.
    pub points: Option<Points>,
    /// Why an adjustment was made.
    pub reason: Option<String>,
    /// Who made an adjustment.
    pub actor: Option<String>,
}

/// A transaction was refused; `field` names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DecodeError {
    /// The JSON field (dotted path, e.g. `line_items[2].amount`), or `$` for the whole message.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// How much longer than the received text the canonical form can be, at
/// most: 64 attribute numbers written out (up to ~40 more bytes each), line
/// item amounts padded to the currency's decimals, an adjustment's `amount`.
/// Only messages within this distance of [`MAX_TX_BYTES`] are re-encoded to
/// check.
const CANONICAL_GROWTH_BOUND: usize = 8 * 1024;

impl DecodeError {
    /// The error for a message that is not strict JSON.
    pub fn from_strict(e: crate::strict_json::StrictError) -> DecodeError {
        match e {
            crate::strict_json::StrictError::Syntax(e) => {
                DecodeError::new("$", format!("not valid JSON: {e}"))
            }
            crate::strict_json::StrictError::Duplicate(d) => DecodeError::new(
                d.path,
                "appears twice in the message; a key may appear only once",
            ),
        }
    }

    fn new(field: impl Into<String>, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

type Fields = Map<String, Value>;

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional<'a>(fields: &'a Fields, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn required<'a>(fields: &'a Fields, name: &str) -> Result<&'a Value, DecodeError> {
    optional(fields, name).ok_or_else(|| DecodeError::new(name, "is required"))
}

fn text<'a>(value: &'a Value, field: &str) -> Result<&'a str, DecodeError> {
    let s = value.as_str().ok_or_else(|| {
        DecodeError::new(field, format!("must be a string, not {}", json_type(value)))
    })?;
    if s.len() > MAX_TEXT_BYTES {
        return Err(DecodeError::new(
            field,
            format!(
                "is {} bytes long; at most {MAX_TEXT_BYTES} are allowed",
                s.len()
            ),
        ));
    }
    // PostgreSQL text and jsonb cannot hold U+0000: refuse it here rather
    // than accept a message that only the in-memory store could keep.
    if s.contains('\0') {
        return Err(DecodeError::new(field, "must not contain U+0000 (NUL)"));
    }
    Ok(s)
}

fn optional_text(fields: &Fields, name: &str) -> Result<Option<String>, DecodeError> {
    optional(fields, name)
        .map(|v| text(v, name).map(str::to_string))
        .transpose()
}

/// Parses a decimal string (never a JSON number) with at most `max_scale` decimals.
fn decimal_string(value: &Value, field: &str, max_scale: u32) -> Result<Decimal, DecodeError> {
    let s = match value {
        Value::String(s) => s,
        Value::Number(_) => {
            return Err(DecodeError::new(
                field,
                "must be a decimal string such as \"12.34\", not a JSON number",
            ))
        }
        other => {
            return Err(DecodeError::new(
                field,
                format!("must be a decimal string, not {}", json_type(other)),
            ))
        }
    };
    let well_formed = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s.starts_with('.')
        && !s.ends_with('.');
    let amount = well_formed
        .then(|| Decimal::from_str(s).ok())
        .flatten()
        .ok_or_else(|| DecodeError::new(field, format!("`{s}` is not a decimal number")))?;
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(DecodeError::new(field, "must not be negative"));
    }
    if amount.normalize().scale() > max_scale {
        return Err(DecodeError::new(
            field,
            format!("`{s}` has more than {max_scale} decimal places for its currency"),
        ));
    }
    if amount > Decimal::from(MAX_AMOUNT_MAJOR) {
        return Err(DecodeError::new(
            field,
            format!("`{s}` exceeds the largest accepted amount {MAX_AMOUNT_MAJOR}"),
        ));
    }
    Ok(amount)
}

fn integer(value: &Value, field: &str, min: i64, max: i64) -> Result<i64, DecodeError> {
    let n = value.as_i64().ok_or_else(|| {
        DecodeError::new(
            field,
            format!("must be a whole number, not {}", describe(value)),
        )
    })?;
    if n < min || n > max {
        return Err(DecodeError::new(
            field,
            format!("{n} is outside {min}..={max}"),
        ));
    }
    Ok(n)
}

fn describe(value: &Value) -> String {
    match value {
        Value::Number(n) => format!("`{n}`"),
        other => json_type(other).to_string(),
    }
}

fn id_field<T>(
    fields: &Fields,
    name: &str,
    build: fn(String) -> Result<T, crate::ids::IdError>,
) -> Result<T, DecodeError> {
    let raw = text(required(fields, name)?, name)?;
    build(raw.to_string()).map_err(|e| DecodeError::new(name, e.to_string()))
}

fn attr_value(value: &Value, field: &str) -> Result<AttrValue, DecodeError> {
    match value {
        Value::Bool(b) => Ok(AttrValue::Bool(*b)),
        Value::String(_) => Ok(AttrValue::Text(text(value, field)?.to_string())),
        Value::Number(n) => {
            let raw = n.to_string();
            Decimal::from_str(&raw)
                .or_else(|_| Decimal::from_scientific(&raw))
                .map(AttrValue::Number)
                .map_err(|_| {
                    DecodeError::new(field, format!("`{raw}` is not an exact decimal in range"))
                })
        }
        other => Err(DecodeError::new(
            field,
            format!(
                "must be a string, number or boolean, not {}",
                json_type(other)
            ),
        )),
    }
}

/// Decodes an `attributes` object (also used for member profiles).
pub fn decode_attributes(
    value: &Value,
    field: &str,
) -> Result<BTreeMap<String, AttrValue>, DecodeError> {
    let map = value.as_object().ok_or_else(|| {
        DecodeError::new(
            field,
            format!("must be an object, not {}", json_type(value)),
        )
    })?;
    if map.len() > MAX_ATTRIBUTES {
        return Err(DecodeError::new(
            field,
            format!(
                "has {} entries; at most {MAX_ATTRIBUTES} are allowed",
                map.len()
            ),
        ));
    }
    map.iter()
        .map(|(k, v)| {
            let path = format!("{field}.{k}");
            check_attribute_key(k, field)?;
            Ok((k.clone(), attr_value(v, &path)?))
        })
        .collect()
}

/// Attribute keys are names: 1 to [`MAX_ATTRIBUTE_KEY_BYTES`] bytes, no
/// control characters.
fn check_attribute_key(key: &str, field: &str) -> Result<(), DecodeError> {
    if key.is_empty() {
        return Err(DecodeError::new(field, "has an empty key"));
    }
    if key.len() > MAX_ATTRIBUTE_KEY_BYTES {
        let shown: String = key.chars().take(32).collect();
        return Err(DecodeError::new(
            field,
            format!(
                "key `{shown}…` is {} bytes long; at most {MAX_ATTRIBUTE_KEY_BYTES} are allowed",
                key.len()
            ),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(DecodeError::new(
            field,
            format!("key {key:?} contains a control character"),
        ));
    }
    Ok(())
}

fn line_items(value: &Value, max_scale: u32) -> Result<Vec<LineItem>, DecodeError> {
    let items = value.as_array().ok_or_else(|| {
        DecodeError::new(
            "line_items",
            format!("must be an array, not {}", json_type(value)),
        )
    })?;
    if items.len() > MAX_LINE_ITEMS {
        return Err(DecodeError::new(
            "line_items",
            format!(
                "has {} items; at most {MAX_LINE_ITEMS} are allowed",
                items.len()
            ),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |name: &str| format!("line_items[{i}].{name}");
            let fields = item
                .as_object()
                .ok_or_else(|| DecodeError::new(format!("line_items[{i}]"), "must be an object"))?;
            let get = |name: &str| {
                optional(fields, name).ok_or_else(|| DecodeError::new(at(name), "is required"))
            };
            Ok(LineItem {
                sku: text(get("sku")?, &at("sku"))?.to_string(),
                category: text(get("category")?, &at("category"))?.to_string(),
                quantity: integer(get("quantity")?, &at("quantity"), 0, 1_000_000)? as u32,
                amount: decimal_string(get("amount")?, &at("amount"), max_scale)?,
            })
        })
        .collect()
}

impl Transaction {
    /// Decodes one JSON message (UTF-8 bytes), enforcing every rule of the
    /// wire contract. Unknown top-level fields are ignored.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Transaction, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::new(
                "$",
                format!(
                    "message is {} bytes; at most {MAX_TX_BYTES} are accepted",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::new("$", format!("message is not valid UTF-8: {e}")))?;
        Transaction::from_json_str(text)
    }

    /// Decodes one JSON message.
    pub fn from_json_str(text: &str) -> Result<Transaction, DecodeError> {
        if text.len() > MAX_TX_BYTES {
            return Err(DecodeError::new(
                "$",
                format!(
                    "message is {} bytes; at most {MAX_TX_BYTES} are accepted",
                    text.len()
                ),
            ));
        }
        let value = crate::strict_json::parse(text).map_err(DecodeError::from_strict)?;
        let tx = Transaction::from_json_value(&value)?;
        // The canonical form can be longer than the message (an attribute
        // `1e27` is written out in 28 digits; an adjustment gains its zero
        // `amount`): near the limit, make sure what is accepted can also be
        // stored and decoded again (dead letters, re-processing, the inbox).
        if text.len() > MAX_TX_BYTES - CANONICAL_GROWTH_BOUND {
            let canonical = tx.to_json_string().len();
            if canonical > MAX_TX_BYTES {
                return Err(DecodeError::new(
                    "$",
                    format!(
                        "message's canonical form is {canonical} bytes (numbers written out); at most {MAX_TX_BYTES} are accepted"
                    ),
                ));
            }
        }
        Ok(tx)
    }

    /// Decodes an already-parsed JSON value.
    pub fn from_json_value(value: &Value) -> Result<Transaction, DecodeError> {
        let fields = value.as_object().ok_or_else(|| {
            DecodeError::new(
                "$",
                format!("must be a JSON object, not {}", json_type(value)),
            )
        })?;
        let id = id_field(fields, "id", TxId::try_from)?;
        let member = id_field(fields, "member", MemberId::try_from)?;
        let kind_text = text(required(fields, "kind")?, "kind")?;
        let kind = TxKind::parse(kind_text).ok_or_else(|| {
            DecodeError::new(
                "kind",
                format!(
                    "`{kind_text}` is not one of purchase, refund, authorization, settlement, reversal, chargeback, adjustment"
                ),
            )
        })?;
        let currency_text = text(required(fields, "currency")?, "currency")?;
        let currency = Currency::parse(currency_text)
            .map_err(|e| DecodeError::new("currency", e.to_string()))?;
        let max_scale = currency.minor_units();
        let amount = match (kind, optional(fields, "amount")) {
            (TxKind::Adjustment, None) => Decimal::ZERO,
            (_, None) => return Err(DecodeError::new("amount", "is required")),
            (_, Some(v)) => decimal_string(v, "amount", max_scale)?,
        };
        let time_text = text(required(fields, "time")?, "time")?;
        let time = DateTime::parse_from_rfc3339(time_text)
            .map_err(|e| {
                DecodeError::new(
                    "time",
                    format!("`{time_text}` is not an RFC 3339 time with offset: {e}"),
                )
            })?
            .with_timezone(&Utc);
        // RFC 3339 has four-digit years: an offset may push a local time in
        // year 9999 (or 0000) out of them in UTC, where the canonical form
        // could no longer be written (found with the `decode_tx` fuzz invariant).
        if !(0..=9999).contains(&time.year()) {
            return Err(DecodeError::new(
                "time",
                format!("`{time_text}` is outside the years 0000 to 9999 in UTC"),
            ));
        }
        let mcc = optional(fields, "mcc")
            .map(|v| integer(v, "mcc", 0, 9999).map(|n| n as u16))
            .transpose()?;
        if mcc.is_none() && matches!(kind, TxKind::Purchase | TxKind::Refund) {
            return Err(DecodeError::new("mcc", format!("is required for a {kind}")));
        }
        let presence = match optional(fields, "presence") {
            None => None,
            Some(v) => Some(match text(v, "presence")? {
                "online" => Presence::Online,
                "in_store" => Presence::InStore,
                other => {
                    return Err(DecodeError::new(
                        "presence",
                        format!("`{other}` is not one of online, in_store"),
                    ))
                }
            }),
        };
        let country = optional_text(fields, "country")?;
        if let Some(c) = &country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(DecodeError::new(
                    "country",
                    format!("`{c}` is not an ISO 3166 alpha-2 code"),
                ));
            }
        }
        let original_id = match optional(fields, "original_id") {
            None if kind.needs_original() => {
                return Err(DecodeError::new(
                    "original_id",
                    format!("is required for a {kind}"),
                ))
            }
            None => None,
            Some(_) => Some(id_field(fields, "original_id", TxId::try_from)?),
        };
        if original_id.as_ref() == Some(&id) {
            return Err(DecodeError::new(
                "original_id",
                "must not be the transaction's own id",
            ));
        }
        let line_items = optional(fields, "line_items")
            .map(|v| line_items(v, max_scale))
            .transpose()?
            .unwrap_or_default();
        let attributes = optional(fields, "attributes")
            .map(|v| decode_attributes(v, "attributes"))
            .transpose()?
            .unwrap_or_default();
        let (points, reason, actor) = if kind == TxKind::Adjustment {
            let points = integer(
                required(fields, "points")?,
                "points",
                -MAX_ADJUSTMENT_POINTS,
                MAX_ADJUSTMENT_POINTS,
            )?;
            let reason = text(required(fields, "reason")?, "reason")?.to_string();
            let actor = text(required(fields, "actor")?, "actor")?.to_string();
            (Some(Points(points)), Some(reason), Some(actor))
        } else {
            (
                None,
                optional_text(fields, "reason")?,
                optional_text(fields, "actor")?,
            )
        };
        Ok(Transaction {
            id,
            member,
            kind,
            program: optional_text(fields, "program")?,
            amount: Money::new(amount, currency),
            time,
            mcc,
            merchant: optional_text(fields, "merchant")?,
            channel: optional_text(fields, "channel")?,
            presence,
            country,
            original_id,
            line_items,
            attributes,
            points,
            reason,
            actor,
        })
    }

    /// The canonical wire form (field order fixed, amounts as strings).
    pub fn to_json_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.as_str().into());
        m.insert("member".into(), self.member.as_str().into());
        m.insert("kind".into(), self.kind.as_str().into());
        if let Some(p) = &self.program {
            m.insert("program".into(), p.as_str().into());
        }
        m.insert("amount".into(), self.amount.amount.to_string().into());
        m.insert("currency".into(), self.amount.currency.code().into());
        m.insert(
            "time".into(),
            self.time
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                .into(),
        );
        if let Some(mcc) = self.mcc {
            m.insert("mcc".into(), mcc.into());
        }
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), v.as_str().into());
            }
        };
        put("merchant", &self.merchant);
        put("channel", &self.channel);
        put("presence", &self.presence.map(|p| p.as_str().to_string()));
        put("country", &self.country);
        put(
            "original_id",
            &self.original_id.as_ref().map(|i| i.to_string()),
        );
        put("reason", &self.reason);
        put("actor", &self.actor);
        if let Some(points) = self.points {
            m.insert("points".into(), points.get().into());
        }
        if !self.line_items.is_empty() {
            let items = self
                .line_items
                .iter()
                .map(|li| {
                    serde_json::json!({"sku": li.sku, "category": li.category,
                        "quantity": li.quantity, "amount": li.amount.to_string()})
                })
                .collect();
            m.insert("line_items".into(), Value::Array(items));
        }
        if !self.attributes.is_empty() {
            let attrs = self
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), attr_to_json(v)))
                .collect();
            m.insert("attributes".into(), Value::Object(attrs));
        }
        Value::Object(m)
    }

    /// The canonical wire form as one JSON line.
    pub fn to_json_string(&self) -> String {
        self.to_json_value().to_string()
    }

    /// SHA-256 of the canonical form: two messages with the same id and a
    /// different fingerprint are a conflict, not a duplicate.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.to_json_string().as_bytes()).into()
    }
}

/// Encodes an attribute value as JSON (numbers exact).
pub fn attr_to_json(value: &AttrValue) -> Value {
    match value {
        AttrValue::Bool(b) => Value::Bool(*b),
        AttrValue::Text(s) => Value::String(s.clone()),
        AttrValue::Number(d) => {
            serde_json::from_str(&d.to_string()).unwrap_or_else(|_| Value::String(d.to_string()))
        }
    }
}

#[cfg(test)]
mod tests;
