//! The ledger's records: what a store keeps and what [`apply`](super::apply)
//! reads and returns. Plain data, serialisable, with no database concept.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

use crate::ids::{MemberId, TxId};
use crate::money::Money;
use crate::outcome::{RulesetStamp, TierChange};
use crate::points::{Points, PointsOverflow};
use crate::transaction::TxKind;
use crate::window::CounterKey;

/// A member's available and pending points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balances {
    /// Spendable points (negative when a clawback exceeded what was left).
    pub available: Points,
    /// Points earned but not yet available (pending period, open authorization).
    pub pending: Points,
}

impl Balances {
    /// Both zero.
    pub const ZERO: Balances = Balances {
        available: Points::ZERO,
        pending: Points::ZERO,
    };

    /// Component-wise checked addition.
    pub fn checked_add(self, other: Balances) -> Result<Balances, PointsOverflow> {
        Ok(Balances {
            available: self.available.checked_add(other.available)?,
            pending: self.pending.checked_add(other.pending)?,
        })
    }

    /// Component-wise checked subtraction.
    pub fn checked_sub(self, other: Balances) -> Result<Balances, PointsOverflow> {
        Ok(Balances {
            available: self.available.checked_sub(other.available)?,
            pending: self.pending.checked_sub(other.pending)?,
        })
    }

    /// True when both are zero.
    pub fn is_zero(self) -> bool {
        self == Balances::ZERO
    }
}

/// A posting's deterministic id: the first 128 bits of SHA-256 over
/// (source id, posting kind, rule id, sequence). The same input always gives the same id,
/// so a store can make it a primary key and a replay can never post twice.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PostingId(pub [u8; 16]);

impl PostingId {
    /// Derives the id of the `seq`-th posting of `kind` that `rule` makes
    /// for `source` (the kind keeps an earn and a later void of the same
    /// authorization and rule apart).
    pub fn derive(source: &str, kind: PostingKind, rule: &str, seq: u32) -> PostingId {
        let mut hash = Sha256::new();
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [source.as_bytes(), kind.as_str().as_bytes(), rule.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(seq.to_be_bytes());
        let digest = hash.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        PostingId(id)
    }

    /// 32 lower-case hex digits (fits a PostgreSQL `uuid`).
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }
}

impl TryFrom<String> for PostingId {
    type Error = String;
    fn try_from(text: String) -> Result<PostingId, String> {
        let bytes = hex::decode(&text).map_err(|e| format!("posting id `{text}`: {e}"))?;
        let id: [u8; 16] = bytes
            .try_into()
            .map_err(|_| format!("posting id `{text}` is not 32 hex digits"))?;
        Ok(PostingId(id))
    }
}

impl From<PostingId> for String {
    fn from(id: PostingId) -> String {
        id.to_hex()
    }
}

impl fmt::Display for PostingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PostingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostingId({})", self.to_hex())
    }
}

/// What a posting records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingKind {
    /// Points earned by a rule (available at once or pending).
    Earn,
    /// A pending lot became available.
    Release,
    /// An authorization's held points were posted by its settlement.
    Settle,
    /// An authorization's held points were voided (reversal or expiry).
    Void,
    /// Points taken back by a refund or chargeback.
    Clawback,
    /// Points spent by a redemption.
    Redeem,
    /// Points that expired.
    Expire,
    /// A manual adjustment.
    Adjust,
}

impl PostingKind {
    /// The wire name (`"earn"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PostingKind::Earn => "earn",
            PostingKind::Release => "release",
            PostingKind::Settle => "settle",
            PostingKind::Void => "void",
            PostingKind::Clawback => "clawback",
            PostingKind::Redeem => "redeem",
            PostingKind::Expire => "expire",
            PostingKind::Adjust => "adjust",
        }
    }
}

/// One append-only ledger line. The member's balances are the sum of the
/// `delta`s of their postings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// Deterministic id from (`source`, `kind`, `rule`, `rule_seq`).
    pub id: PostingId,
    /// The member.
    pub member: MemberId,
    /// The member's posting sequence number, from 1, without gaps.
    pub seq: u64,
    /// What it comes from: the transaction, redemption or adjustment id,
    /// or for expiry and release sweeps the lot's id.
    pub source: TxId,
    /// The rule id, or a ledger label (`redemption`, `expiry`, ...).
    pub rule: Arc<str>,
    /// Sequence of this posting among those `rule` made for `source`.
    pub rule_seq: u32,
    /// What it records.
    pub kind: PostingKind,
    /// Signed change of the available and pending points.
    pub delta: Balances,
    /// Balances just before it.
    pub before: Balances,
    /// Balances just after it.
    pub after: Balances,
    /// The lot it created or changed, when it concerns one lot.
    pub lot: Option<TxId>,
    /// The ruleset behind the points (the original's, for a clawback).
    pub ruleset: Option<RulesetStamp>,
    /// When it takes effect (the transaction's time, or the sweep's instant).
    pub time: DateTime<Utc>,
}

/// Where a lot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LotStatus {
    /// Earned by an authorization: pending until it settles.
    Held,
    /// Pending until its `available_at`.
    Pending,
    /// Spendable.
    Available,
    /// Voided by a reversal or an authorization expiry.
    Void,
}

/// Points earned together (one earning transaction or adjustment), spent
/// first-expiring-first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// The id of the transaction or adjustment that created it.
    pub id: TxId,
    /// The member.
    pub member: MemberId,
    /// When it was earned.
    pub earned_at: DateTime<Utc>,
    /// Pending until then (`None`: available once settled or at once).
    pub available_at: Option<DateTime<Utc>>,
    /// Expires then (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: LotStatus,
    /// Points granted to it (after settlement re-scaling).
    pub granted: Points,
    /// Points left in it; never negative.
    pub remaining: Points,
    /// Points of it that expired.
    pub expired: Points,
    /// Of the expired points, how many a later refund has already forgiven.
    pub expired_forgiven: Points,
}

impl Lot {
    /// The order in which debits consume lots: first expiring first, lots
    /// that never expire last, then oldest first, then by id.
    pub fn spend_order(&self) -> (bool, Option<DateTime<Utc>>, DateTime<Utc>, &str) {
        (
            self.expires_at.is_none(),
            self.expires_at,
            self.earned_at,
            self.id.as_str(),
        )
    }
}

/// One rule's award recorded on an earning transaction, and how much of it
/// refunds have clawed back so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Award {
    /// The rule id.
    pub rule: Arc<str>,
    /// Points earned (after budget trimming and settlement re-scaling).
    pub points: Points,
    /// Points clawed back so far (never more than `points`).
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub clawed: Points,
}

/// A counter delta recorded on an earning transaction, and how much of it
/// refunds have reversed so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedCounter {
    /// The counter instance (the original's window).
    pub key: CounterKey,
    /// The delta applied.
    pub delta: Decimal,
    /// The part reversed so far (same sign as `delta`, never larger).
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub reversed: Decimal,
}

/// A budget draw granted to an earning transaction, and how much refunds
/// have returned so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDraw {
    /// The budget.
    pub budget: Arc<str>,
    /// Points granted (after trimming).
    pub points: Points,
    /// Points returned so far.
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub returned: Points,
}

/// Where a recorded transaction stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecordStatus {
    /// A purchase (or a settled authorization's settlement): refundable.
    Posted,
    /// An open authorization, void if not settled by `expires_at`.
    Authorized {
        /// When it lapses unless settled.
        expires_at: DateTime<Utc>,
    },
    /// A settled authorization: refundable.
    Settled {
        /// The settlement.
        by: TxId,
    },
    /// A reversed or lapsed authorization.
    Voided {
        /// The reversal, or `None` when it lapsed.
        by: Option<TxId>,
    },
    /// A transaction that refers to another (refund, chargeback, reversal,
    /// settlement): nothing can refer to it.
    Reference,
}

/// What the ledger remembers of a transaction, so that later transactions
/// can refer to it (refunds, settlements, reversals, chargebacks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    /// The transaction id.
    pub id: TxId,
    /// The member.
    pub member: MemberId,
    /// Its kind.
    pub kind: TxKind,
    /// Its time.
    pub time: DateTime<Utc>,
    /// Its amount (for a settled authorization: the settled amount).
    pub amount: Money,
    /// The transaction it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<TxId>,
    /// Stores load the named record instead of this one when another
    /// transaction refers to this id (a settlement → its authorization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_of: Option<TxId>,
    /// The ruleset that produced its awards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ruleset: Option<RulesetStamp>,
    /// Awards per rule.
    pub awards: Vec<Award>,
    /// Counter deltas applied.
    pub counters: Vec<RecordedCounter>,
    /// Budget draws granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<BudgetDraw>,
    /// The lot its points formed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lot: Option<TxId>,
    /// Where it stands.
    pub status: RecordStatus,
    /// Cumulative amount refunded or charged back so far.
    #[serde(default, skip_serializing_if = "Decimal::is_zero")]
    pub refunded: Decimal,
}

/// A scheduled tier change, stored on the member until its time comes.
pub type ScheduledTier = TierChange;

/// The member row: balances, sequence numbers and tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member.
    pub member: MemberId,
    /// Number of entries applied (the optimistic-concurrency version and
    /// the audit sequence).
    pub version: u64,
    /// Number of postings (the last posting's `seq`).
    pub posting_seq: u64,
    /// Current balances (the sum of the postings).
    pub balances: Balances,
    /// Current tier.
    pub tier: Option<Arc<str>>,
    /// Since when.
    pub tier_since: Option<DateTime<Utc>>,
    /// A decided change that takes effect later (a downgrade after grace).
    pub scheduled_tier: Option<ScheduledTier>,
}

impl MemberRecord {
    /// The record of a member seen for the first time.
    pub fn new(member: MemberId) -> MemberRecord {
        MemberRecord {
            member,
            version: 0,
            posting_seq: 0,
            balances: Balances::ZERO,
            tier: None,
            tier_since: None,
            scheduled_tier: None,
        }
    }
}

/// A debit of points, with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// Idempotency key: the same id again returns the first receipt.
    pub id: TxId,
    /// The member.
    pub member: MemberId,
    /// Points to spend (> 0).
    pub points: Points,
    /// When.
    pub time: DateTime<Utc>,
    /// What the points were spent on (free text).
    pub reference: Option<String>,
}

/// Signed points set by support staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// Idempotency key.
    pub id: TxId,
    /// The member.
    pub member: MemberId,
    /// Signed points (≠ 0). A credit forms a lot; a debit may take the
    /// balance below zero (it is a correction, not a purchase).
    pub points: Points,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Expiry of the lot a credit forms (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// A tier decided by the rules at a review (the ledger does not know tier
/// order; the rules decide, grace included, and say when it takes effect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierReview {
    /// The member.
    pub member: MemberId,
    /// The tier the rules decided.
    pub tier: Arc<str>,
    /// When it takes effect (after `as_of`: scheduled, e.g. a downgrade
    /// after a grace period).
    pub effective: DateTime<Utc>,
    /// When the review runs.
    pub as_of: DateTime<Utc>,
}

/// What an entry was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A purchase.
    Purchase,
    /// A refund.
    Refund,
    /// An authorization.
    Authorization,
    /// A settlement.
    Settlement,
    /// A reversal.
    Reversal,
    /// A chargeback.
    Chargeback,
    /// An adjustment (wire transaction or [`Adjustment`]).
    Adjustment,
    /// A redemption.
    Redemption,
    /// An expiry sweep.
    Expiry,
    /// A pending-release sweep.
    Release,
    /// An authorization that never settled, voided by the sweep.
    AuthorizationExpiry,
    /// A tier review or a scheduled tier change taking effect.
    TierReview,
}

impl From<TxKind> for EntryKind {
    fn from(kind: TxKind) -> EntryKind {
        match kind {
            TxKind::Purchase => EntryKind::Purchase,
            TxKind::Refund => EntryKind::Refund,
            TxKind::Authorization => EntryKind::Authorization,
            TxKind::Settlement => EntryKind::Settlement,
            TxKind::Reversal => EntryKind::Reversal,
            TxKind::Chargeback => EntryKind::Chargeback,
            TxKind::Adjustment => EntryKind::Adjustment,
        }
    }
}

/// A tier event in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TierEvent {
    /// The tier changed.
    Changed {
        /// Before.
        from: Option<Arc<str>>,
        /// After.
        to: Arc<str>,
    },
    /// A change was decided to take effect later.
    Scheduled {
        /// The tier it will be.
        to: Arc<str>,
        /// When.
        effective: DateTime<Utc>,
    },
    /// A scheduled change was cancelled (the member requalified).
    Cancelled {
        /// The tier it would have been.
        to: Arc<str>,
        /// When it would have taken effect.
        effective: DateTime<Utc>,
    },
}

/// One audit event per applied entry: replaying the `delta`s of a member's
/// events gives their balances; `seq` is the member's version after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The member.
    pub member: MemberId,
    /// The member's version after the entry (from 1, without gaps).
    pub seq: u64,
    /// The transaction, redemption or adjustment id; for sweeps the id of
    /// the first lot or record concerned.
    pub source: TxId,
    /// What it was.
    pub kind: EntryKind,
    /// When it took effect.
    pub time: DateTime<Utc>,
    /// Net change of the balances.
    pub delta: Balances,
    /// Balances after it.
    pub balances: Balances,
    /// The postings it made.
    pub postings: Vec<PostingId>,
    /// Tier events.
    pub tier: Vec<TierEvent>,
    /// The ruleset behind it, if any.
    pub ruleset: Option<RulesetStamp>,
    /// A human line (`refund 50.00 of 100.00 USD: clawed 60, 10 forgiven (expired)`).
    pub detail: String,
}

/// What an applied (or duplicate) request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction, redemption or adjustment id.
    pub id: TxId,
    /// The member.
    pub member: MemberId,
    /// What it was.
    pub kind: EntryKind,
    /// The member's version after it.
    pub version: u64,
    /// Net change of the balances.
    pub delta: Balances,
    /// Balances after it.
    pub balances: Balances,
    /// Net points per rule (clawbacks negative), after trimming and scaling:
    /// the outcome as stored.
    pub awards: Vec<(Arc<str>, Points)>,
    /// Points removed from the proposed awards by budget trimming.
    pub trimmed: Points,
    /// The tier after it.
    pub tier: Option<Arc<str>>,
    /// True when this is the stored receipt of an earlier identical request.
    pub duplicate: bool,
}

/// The idempotency row of a request: its fingerprint and its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEntry {
    /// The request id.
    pub id: TxId,
    /// The member.
    pub member: MemberId,
    /// SHA-256 of the request's canonical form.
    #[serde(with = "hex_32")]
    pub fingerprint: [u8; 32],
    /// The receipt returned for it (and for every duplicate).
    pub receipt: Receipt,
}

mod hex_32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("fingerprint is not 64 hex digits"))
    }
}

/// A recent entry, as shown in a member's recent activity (and cached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEntry {
    /// The source id.
    pub id: TxId,
    /// What it was.
    pub kind: EntryKind,
    /// When.
    pub time: DateTime<Utc>,
    /// Net change of the balances.
    pub delta: Balances,
    /// The member's version after it.
    pub version: u64,
}

impl From<&AuditEvent> for RecentEntry {
    fn from(event: &AuditEvent) -> RecentEntry {
        RecentEntry {
            id: event.source.clone(),
            kind: event.kind,
            time: event.time,
            delta: event.delta,
            version: event.seq,
        }
    }
}

/// A member's balances, tier and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberBalance {
    /// The member.
    pub member: MemberId,
    /// Balances.
    pub balances: Balances,
    /// Tier.
    pub tier: Option<Arc<str>>,
    /// Version (of the last applied entry).
    pub version: u64,
}

/// What a sweep (expiry, release, authorization expiry, scheduled tiers) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Members with an entry.
    pub members: u64,
    /// Postings made.
    pub postings: u64,
    /// Net change of all balances.
    pub delta: Balances,
    /// Members whose tier the rules reviewed (the tier review job only).
    #[serde(default)]
    pub reviewed: u64,
    /// Members whose review decision changed the ledger: a tier changed, a
    /// downgrade scheduled or a scheduled change cancelled (the tier review
    /// job only; each also counts in `members`). As seen by one run: with
    /// several daemons reviewing one instant, a member another daemon
    /// changed meanwhile may count in both runs (the ledger holds one
    /// entry).
    #[serde(default)]
    pub changed: u64,
}

/// One member whose stored balances disagree with their postings or lots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The member.
    pub member: MemberId,
    /// Stored balances.
    pub stored: Balances,
    /// Sum of the postings.
    pub from_postings: Balances,
    /// Sum of the lots' remaining points (available minus debt; held and
    /// pending lots as pending).
    pub from_lots: Balances,
}

/// The result of [`reconcile`](crate::store::LedgerStore::reconcile).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Members checked.
    pub members: u64,
    /// Postings summed.
    pub postings: u64,
    /// Members that drifted (empty when all is well).
    pub drift: Vec<Drift>,
}

impl ReconcileReport {
    /// True when nothing drifted.
    pub fn is_clean(&self) -> bool {
        self.drift.is_empty()
    }
}
