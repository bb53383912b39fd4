//! Conversions between rows and the ledger's types: integers, enums as
//! text, the JSON documents (receipts, records, audit events as text;
//! profiles as jsonb). Bad stored data is a [`PgError::Corrupt`], never a panic.

use rewards_core::ledger::{EntryKind, LotStatus, PostingKind};
use rewards_core::transaction::{attr_to_json, decode_attributes};
use rewards_core::{AttrValue, MemberId, Points, RulesetStamp, TxId};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_postgres::Row;

use super::error::PgError;

/// A `u64` counter (version, sequence) as a `bigint`.
pub(crate) fn to_i64(value: u64, what: &'static str) -> Result<i64, PgError> {
    i64::try_from(value).map_err(|_| PgError::corrupt(what, format!("{value} exceeds bigint")))
}

/// A stored `bigint` counter back as a `u64`.
pub(crate) fn to_u64(value: i64, what: &'static str) -> Result<u64, PgError> {
    u64::try_from(value).map_err(|_| PgError::corrupt(what, format!("{value} is negative")))
}

/// A stored id back as a [`TxId`].
pub(crate) fn tx_id(text: String, what: &'static str) -> Result<TxId, PgError> {
    TxId::new(text).map_err(|e| PgError::corrupt(what, e))
}

/// A stored id back as a [`MemberId`].
pub(crate) fn member_id(text: String, what: &'static str) -> Result<MemberId, PgError> {
    MemberId::new(text).map_err(|e| PgError::corrupt(what, e))
}

/// Points from a `bigint`.
pub(crate) fn points(value: i64) -> Points {
    Points(value)
}

/// A serialisable value as jsonb.
pub(crate) fn to_json<T: serde::Serialize>(
    value: &T,
    what: &'static str,
) -> Result<Value, PgError> {
    serde_json::to_value(value).map_err(|e| PgError::corrupt(what, e))
}

/// A jsonb document back as a ledger type.
pub(crate) fn from_json<T: DeserializeOwned>(
    value: Value,
    what: &'static str,
) -> Result<T, PgError> {
    serde_json::from_value(value).map_err(|e| PgError::corrupt(what, e))
}

/// A serialisable value as JSON text (the documents of the write path:
/// receipts, records, audit event bodies; see migration 0002).
pub(crate) fn to_text<T: serde::Serialize>(
    value: &T,
    what: &'static str,
) -> Result<String, PgError> {
    serde_json::to_string(value).map_err(|e| PgError::corrupt(what, e))
}

/// A JSON text document back as a ledger type.
pub(crate) fn from_text<T: DeserializeOwned>(text: &str, what: &'static str) -> Result<T, PgError> {
    serde_json::from_str(text).map_err(|e| PgError::corrupt(what, e))
}

/// The ruleset stamp joined from `rulesets` at columns `at` (id), `at + 1`
/// (version) and `at + 2` (hash); `None` when the row names no ruleset.
pub(crate) fn ruleset_stamp(row: &Row, at: usize) -> Result<Option<RulesetStamp>, PgError> {
    let e = |e| PgError::from_pg("read ruleset", e);
    let Some(id) = row.try_get::<_, Option<String>>(at).map_err(e)? else {
        return Ok(None);
    };
    let version: i64 = row.try_get(at + 1).map_err(e)?;
    let hash: String = row.try_get(at + 2).map_err(e)?;
    Ok(Some(RulesetStamp {
        id: Arc::from(id),
        version: u32::try_from(version)
            .map_err(|_| PgError::corrupt("ruleset version", version))?,
        hash: Arc::from(hash),
    }))
}

/// A profile's attributes as a jsonb object in the wire form (numbers as
/// exact JSON numbers), so that a text attribute `"12"` stays text.
pub(crate) fn attributes_to_json(attributes: &BTreeMap<String, AttrValue>) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|(k, v)| (k.clone(), attr_to_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// Stored attributes back, decoded like the wire form.
pub(crate) fn attributes_from_json(value: &Value) -> Result<BTreeMap<String, AttrValue>, PgError> {
    decode_attributes(value, "attributes").map_err(|e| PgError::corrupt("profile attributes", e))
}

/// The text of a posting kind.
pub(crate) fn posting_kind_str(kind: PostingKind) -> &'static str {
    kind.as_str()
}

/// A posting kind from its text.
pub(crate) fn posting_kind(text: &str) -> Result<PostingKind, PgError> {
    const ALL: [PostingKind; 8] = [
        PostingKind::Earn,
        PostingKind::Release,
        PostingKind::Settle,
        PostingKind::Void,
        PostingKind::Clawback,
        PostingKind::Redeem,
        PostingKind::Expire,
        PostingKind::Adjust,
    ];
    ALL.into_iter()
        .find(|k| k.as_str() == text)
        .ok_or_else(|| PgError::corrupt("posting kind", text))
}

/// The text of a lot status.
pub(crate) fn lot_status_str(status: LotStatus) -> &'static str {
    match status {
        LotStatus::Held => "held",
        LotStatus::Pending => "pending",
        LotStatus::Available => "available",
        LotStatus::Void => "void",
    }
}

/// A lot status from its text.
pub(crate) fn lot_status(text: &str) -> Result<LotStatus, PgError> {
    Ok(match text {
        "held" => LotStatus::Held,
        "pending" => LotStatus::Pending,
        "available" => LotStatus::Available,
        "void" => LotStatus::Void,
        other => return Err(PgError::corrupt("lot status", other)),
    })
}

const ENTRY_KINDS: [(EntryKind, &str); 12] = [
    (EntryKind::Purchase, "purchase"),
    (EntryKind::Refund, "refund"),
    (EntryKind::Authorization, "authorization"),
    (EntryKind::Settlement, "settlement"),
    (EntryKind::Reversal, "reversal"),
    (EntryKind::Chargeback, "chargeback"),
    (EntryKind::Adjustment, "adjustment"),
    (EntryKind::Redemption, "redemption"),
    (EntryKind::Expiry, "expiry"),
    (EntryKind::Release, "release"),
    (EntryKind::AuthorizationExpiry, "authorization_expiry"),
    (EntryKind::TierReview, "tier_review"),
];

/// The text of an entry kind (the same as its serde name).
pub(crate) fn entry_kind_str(kind: EntryKind) -> &'static str {
    ENTRY_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("unknown", |(_, s)| s)
}

/// An entry kind from its text.
pub(crate) fn entry_kind(text: &str) -> Result<EntryKind, PgError> {
    ENTRY_KINDS
        .iter()
        .find(|(_, s)| *s == text)
        .map(|(k, _)| *k)
        .ok_or_else(|| PgError::corrupt("entry kind", text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_kind_text_matches_serde() {
        for (kind, text) in ENTRY_KINDS {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::String(text.into())
            );
            assert_eq!(entry_kind(text).unwrap(), kind);
        }
    }

    #[test]
    fn lot_status_text_matches_serde() {
        for s in [
            LotStatus::Held,
            LotStatus::Pending,
            LotStatus::Available,
            LotStatus::Void,
        ] {
            let text = lot_status_str(s);
            assert_eq!(serde_json::to_value(s).unwrap(), Value::String(text.into()));
            assert_eq!(lot_status(text).unwrap(), s);
        }
        assert!(posting_kind("nope").is_err());
        assert_eq!(posting_kind("clawback").unwrap(), PostingKind::Clawback);
    }

    #[test]
    fn attributes_keep_their_types() {
        let mut attrs = BTreeMap::new();
        attrs.insert("code".to_string(), AttrValue::Text("12".into()));
        attrs.insert(
            "score".to_string(),
            AttrValue::Number("1.50".parse().unwrap()),
        );
        attrs.insert("vip".to_string(), AttrValue::Bool(true));
        let json = attributes_to_json(&attrs);
        assert_eq!(attributes_from_json(&json).unwrap(), attrs);
    }
}
