//! Members: the profile a host imports, and the read-only view of a member's
//! state that evaluation sees (supplied by the store, never fetched during
//! evaluation).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::ids::MemberId;
use crate::points::Points;
use crate::transaction::{decode_attributes, AttrValue, DecodeError};
use crate::window::CounterKey;

/// A member profile as imported from JSON lines or set through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberProfile {
    /// The member.
    pub member: MemberId,
    /// Declared attributes rules may read as `member.attributes.NAME`.
    #[serde(default)]
    pub attributes: BTreeMap<String, AttrValue>,
}

impl MemberProfile {
    /// An empty profile (created on a member's first transaction).
    pub fn empty(member: MemberId) -> MemberProfile {
        MemberProfile {
            member,
            attributes: BTreeMap::new(),
        }
    }

    /// Decodes one JSON line such as `{"member":"m-1","attributes":{...}}`.
    pub fn from_json_str(text: &str) -> Result<MemberProfile, DecodeError> {
        let value = crate::strict_json::parse(text).map_err(DecodeError::from_strict)?;
        let fields = value.as_object().ok_or_else(|| DecodeError {
            field: "$".into(),
            reason: "must be a JSON object".into(),
        })?;
        let member = fields
            .get("member")
            .and_then(Value::as_str)
            .ok_or_else(|| DecodeError {
                field: "member".into(),
                reason: "is required and must be a string".into(),
            })?;
        let member = MemberId::new(member).map_err(|e| DecodeError {
            field: "member".into(),
            reason: e.to_string(),
        })?;
        let attributes = match fields.get("attributes") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => decode_attributes(v, "attributes")?,
        };
        Ok(MemberProfile { member, attributes })
    }
}

/// What evaluation may know about a member: a snapshot taken by the store
/// before the transaction is evaluated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Current tier name (`None` before any qualification).
    pub tier: Option<Arc<str>>,
    /// Enrolment date, when known.
    pub enrolled: Option<NaiveDate>,
    /// Profile attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Current values of the counters the plan reads (caps, aggregates);
    /// a missing key counts as zero.
    pub counters: HashMap<CounterKey, Decimal>,
    /// Available balance.
    pub balance: Points,
}

impl MemberView {
    /// A counter's value, zero when absent.
    pub fn counter(&self, key: &CounterKey) -> Decimal {
        self.counters.get(key).copied().unwrap_or(Decimal::ZERO)
    }
}
