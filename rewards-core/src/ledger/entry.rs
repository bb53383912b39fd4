//! The contract of the pure ledger function: the [`Command`] a store
//! receives, the [`Needs`] it declares, the [`MemberState`] the store loads,
//! and the [`LedgerEntry`] the ledger returns for the store to write.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::model::{
    Adjustment, AuditEvent, InboxEntry, Lot, MemberRecord, Posting, Receipt, Redemption,
    TierReview, TxRecord,
};
use crate::error::{Error, Result};
use crate::ids::{MemberId, TxId};
use crate::outcome::Outcome;
use crate::points::Points;
use crate::transaction::{Transaction, TxKind};
use crate::window::CounterKey;

/// Settings of the ledger's rules that a deployment chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerConfig {
    /// How long an authorization may stay unsettled before
    /// [`expire_authorizations`](crate::store::LedgerStore::expire_authorizations)
    /// voids it (counted from the authorization's own time).
    pub authorization_ttl_secs: i64,
}

impl LedgerConfig {
    /// 30 days: longer than card networks keep an authorization open.
    pub const DEFAULT_AUTHORIZATION_TTL_SECS: i64 = 30 * 24 * 3600;

    /// The authorization lifetime as a duration.
    pub fn authorization_ttl(&self) -> Duration {
        Duration::seconds(self.authorization_ttl_secs)
    }
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            authorization_ttl_secs: LedgerConfig::DEFAULT_AUTHORIZATION_TTL_SECS,
        }
    }
}

/// One unit of work on one member's ledger.
#[derive(Debug, Clone, Copy)]
pub enum Command<'a> {
    /// An evaluated transaction (any kind, adjustments included).
    Transaction {
        /// The transaction.
        tx: &'a Transaction,
        /// Its outcome.
        outcome: &'a Outcome,
    },
    /// A redemption.
    Redeem(&'a Redemption),
    /// A manual adjustment.
    Adjust(&'a Adjustment),
    /// Expire the member's lots due at `as_of`.
    ExpireLots {
        /// The member.
        member: &'a MemberId,
        /// The instant (lots with `expires_at <= as_of` expire).
        as_of: DateTime<Utc>,
    },
    /// Release the member's pending lots due at `as_of`.
    ReleasePending {
        /// The member.
        member: &'a MemberId,
        /// The instant (lots with `available_at <= as_of` are released).
        as_of: DateTime<Utc>,
    },
    /// Void the member's authorizations that lapsed at `as_of`.
    ExpireAuthorizations {
        /// The member.
        member: &'a MemberId,
        /// The instant.
        as_of: DateTime<Utc>,
    },
    /// Record a tier decided by the rules.
    ReviewTier(&'a TierReview),
    /// Apply the member's scheduled tier change if due at `as_of`.
    ApplyScheduledTier {
        /// The member.
        member: &'a MemberId,
        /// The instant.
        as_of: DateTime<Utc>,
    },
}

/// Which lots a command needs loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotNeed {
    /// None.
    None,
    /// The lots of the loaded records (`TxRecord::lot`).
    OfRecords,
    /// Every lot with `remaining > 0`, plus the lots of the loaded records.
    Open,
}

/// Which transaction records a command needs loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordNeed {
    /// None.
    None,
    /// The record with this id (following `alias_of` once). Absent is fine:
    /// the ledger answers with the right error.
    Original(TxId),
    /// The member's authorizations still open (status `authorized`) whose
    /// lapse time is `<= as_of`.
    LapsedAuthorizations(DateTime<Utc>),
}

/// What a store must load, inside its transaction, before calling
/// [`apply`](super::apply). A store may always load more (a superset);
/// the ledger filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Lots.
    pub lots: LotNeed,
    /// Records.
    pub records: RecordNeed,
    /// Budgets whose points used must be read (locked) to trim claims.
    pub budgets: Vec<Arc<str>>,
    /// Whether the request has an id to check in the inbox first.
    pub inbox: bool,
}

/// The member's state as the store loaded it for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// The member row (`MemberRecord::new` for a member never seen).
    pub member: MemberRecord,
    /// The lots [`Needs::lots`] asked for (or more).
    pub lots: Vec<Lot>,
    /// The records [`Needs::records`] asked for (or more).
    pub records: Vec<TxRecord>,
    /// Points used so far of each budget in [`Needs::budgets`] (absent: zero).
    pub budgets_used: Vec<(Arc<str>, Points)>,
}

impl MemberState {
    /// The state of a member never seen.
    pub fn new(member: MemberId) -> MemberState {
        MemberState {
            member: MemberRecord::new(member),
            lots: Vec::new(),
            records: Vec::new(),
            budgets_used: Vec::new(),
        }
    }
}

/// A change of a global campaign budget's points used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDelta {
    /// The budget.
    pub budget: Arc<str>,
    /// Points drawn (positive) or returned (negative).
    pub delta: Points,
    /// The budget's limit as the plan declares it (draws only), for a
    /// store that wants to re-check the invariant at write time.
    pub limit: Option<Points>,
}

/// Everything one command writes, computed by [`apply`](super::apply).
/// A store writes it in one transaction; the in-memory store folds it into
/// memory (and its event log): the same entry, the same result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The member row's version the entry was computed from: a store with
    /// concurrent writers updates the row only if it still has it
    /// (optimistic concurrency) and retries otherwise.
    pub expected_version: u64,
    /// The member row after the entry.
    pub member: MemberRecord,
    /// New postings, in `seq` order.
    pub postings: Vec<Posting>,
    /// Lots created or changed (full rows: upsert by id).
    pub lots: Vec<Lot>,
    /// Transaction records created or changed (full rows: upsert by id).
    pub records: Vec<TxRecord>,
    /// Increments of the member's counters.
    pub counters: Vec<(CounterKey, Decimal)>,
    /// Changes of global budgets.
    pub budgets: Vec<BudgetDelta>,
    /// The inbox row of the request, for idempotency.
    pub inbox: Option<InboxEntry>,
    /// The audit event.
    pub event: AuditEvent,
}

impl LedgerEntry {
    /// The receipt of the entry (as stored in its inbox row when it has one).
    pub fn receipt(&self) -> Option<&Receipt> {
        self.inbox.as_ref().map(|i| &i.receipt)
    }
}

fn sha256_json<T: Serialize>(value: &T) -> Result<[u8; 32]> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| Error::other("cannot encode a request", Some(Box::new(e) as _)))?;
    Ok(Sha256::digest(&bytes).into())
}

impl Command<'_> {
    /// The member the command is about.
    pub fn member(&self) -> &MemberId {
        match self {
            Command::Transaction { tx, .. } => &tx.member,
            Command::Redeem(r) => &r.member,
            Command::Adjust(a) => &a.member,
            Command::ReviewTier(r) => &r.member,
            Command::ExpireLots { member, .. }
            | Command::ReleasePending { member, .. }
            | Command::ExpireAuthorizations { member, .. }
            | Command::ApplyScheduledTier { member, .. } => member,
        }
    }

    /// The idempotency id, for requests that have one.
    pub fn request_id(&self) -> Option<&TxId> {
        match self {
            Command::Transaction { tx, .. } => Some(&tx.id),
            Command::Redeem(r) => Some(&r.id),
            Command::Adjust(a) => Some(&a.id),
            _ => None,
        }
    }

    /// SHA-256 of the request's canonical form (for requests with an id):
    /// [`Transaction::fingerprint`] for transactions, the canonical JSON of
    /// the redemption or adjustment otherwise.
    pub fn fingerprint(&self) -> Result<Option<[u8; 32]>> {
        Ok(match self {
            Command::Transaction { tx, .. } => Some(tx.fingerprint()),
            Command::Redeem(r) => Some(sha256_json(&("redemption", r))?),
            Command::Adjust(a) => Some(sha256_json(&("adjustment", a))?),
            _ => None,
        })
    }

    /// Whether the command reads the open lots ([`LotNeed::Open`]) only to
    /// spend them first-expiring-first (a refund or chargeback beyond the
    /// original's own lot, a redemption, a debit adjustment). A store that
    /// keeps its open lots in spend order may then load only the lots of
    /// the records ([`LotNeed::OfRecords`]) and hand the open lots over
    /// lazily to [`apply_with_open_lots`](super::apply_with_open_lots):
    /// the cost no longer grows with the member's open lots.
    pub fn spends_open_lots_in_order(&self) -> bool {
        match self {
            Command::Transaction { tx, .. } => matches!(
                tx.kind,
                TxKind::Adjustment | TxKind::Refund | TxKind::Chargeback
            ),
            Command::Redeem(_) | Command::Adjust(_) => true,
            _ => false,
        }
    }

    /// What the store must load before calling [`apply`](super::apply).
    pub fn needs(&self) -> Needs {
        let mut needs = Needs {
            lots: LotNeed::None,
            records: RecordNeed::None,
            budgets: Vec::new(),
            inbox: self.request_id().is_some(),
        };
        match self {
            Command::Transaction { tx, outcome } => match (tx.kind, &tx.original_id) {
                (TxKind::Purchase | TxKind::Authorization, _) => {
                    needs.budgets = outcome.budgets.iter().map(|b| b.budget.clone()).collect();
                    needs.budgets.sort();
                    needs.budgets.dedup();
                }
                (TxKind::Adjustment, _) => needs.lots = LotNeed::Open,
                (TxKind::Settlement | TxKind::Reversal, Some(original)) => {
                    needs.lots = LotNeed::OfRecords;
                    needs.records = RecordNeed::Original(original.clone());
                }
                (TxKind::Refund | TxKind::Chargeback, Some(original)) => {
                    needs.lots = LotNeed::Open;
                    needs.records = RecordNeed::Original(original.clone());
                }
                // A referring kind without its original is refused by apply.
                (_, None) => {}
            },
            Command::Redeem(_)
            | Command::Adjust(_)
            | Command::ExpireLots { .. }
            | Command::ReleasePending { .. } => needs.lots = LotNeed::Open,
            Command::ExpireAuthorizations { as_of, .. } => {
                needs.lots = LotNeed::OfRecords;
                needs.records = RecordNeed::LapsedAuthorizations(*as_of);
            }
            Command::ReviewTier(_) | Command::ApplyScheduledTier { .. } => {}
        }
        needs
    }
}

/// The idempotency check every store runs before [`apply`](super::apply):
/// `Ok(Some(receipt))` for a duplicate (return it, change nothing),
/// `Ok(None)` for a new request, `Conflict` for the same id with other content.
pub fn check_inbox(
    existing: Option<&InboxEntry>,
    fingerprint: &[u8; 32],
) -> Result<Option<Receipt>> {
    match existing {
        None => Ok(None),
        Some(entry) if &entry.fingerprint == fingerprint => {
            let mut receipt = entry.receipt.clone();
            receipt.duplicate = true;
            Ok(Some(receipt))
        }
        Some(entry) => Err(Error::Conflict {
            id: entry.id.clone(),
            reason: "the id was already used for a request with other content".into(),
        }),
    }
}
