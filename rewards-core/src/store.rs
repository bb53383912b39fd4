//! The storage traits: what the pipeline, the jobs and the API need from a
//! store, with no database concept in them. `rewards-core` provides the
//! in-memory store ([`crate::memory`]); `rewards-store` implements them for
//! PostgreSQL ([`LedgerStore`]) and Redis ([`BalanceCache`]).
//!
//! # Why this shape
//!
//! - **Async, object-safe traits** (`async-trait`): the daemon picks a store
//!   at run time (`Arc<dyn LedgerStore>`), and the database stores are async.
//!   The in-memory store is async only in signature: it never awaits while
//!   holding a lock.
//! - **Coarse, intention-revealing operations** (`append`, `redeem`,
//!   `expire_due`, ...) rather than row-level CRUD: each call is one atomic
//!   unit of work, so a store can run it as one database transaction, and
//!   the business rules stay in the pure [`crate::ledger::apply`] that every
//!   store calls with the state it loaded. No store can get refunds or expiry
//!   subtly different, and the conformance suite (feature `conformance`)
//!   checks each one against the same expectations.
//! - **Idempotency is part of the contract**: `append`, `redeem` and `adjust`
//!   carry their own ids; a repeat returns the stored [`Receipt`] (with
//!   `duplicate = true`) and changes nothing; the same id with another
//!   fingerprint is [`ErrorKind::Conflict`](crate::error::ErrorKind::Conflict).
//!   Sweeps are idempotent by construction (deterministic posting ids, lots
//!   closed once swept).
//! - **Batches return per-item results**: one bad transaction (an unknown
//!   original, a conflict) must not fail its neighbours; a store may still
//!   commit the good ones together for throughput.
//! - **The cache is a separate, weaker trait**: [`BalanceCache`] is a
//!   projection keyed by member with a version on every value, so that a
//!   late write of an older state can never overwrite a newer one, and a
//!   cache can always be cleared and rebuilt from the ledger.
//! - **One error type** ([`crate::error::Error`]) with a `kind()`: callers
//!   retry on `Unavailable`, dead-letter on `InvalidReference`/`Invalid`,
//!   report `Conflict`, answer 404 on `NotFound`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

use crate::error::Result;
use crate::ids::MemberId;
use crate::ids::TxId;
use crate::ledger::{
    Adjustment, AuditEvent, Balances, EntryKind, LedgerEntry, MemberBalance, Posting, PostingKind,
    Receipt, RecentEntry, ReconcileReport, Redemption, SweepReport, TierReview,
};
use crate::member::{MemberProfile, MemberView};
use crate::outcome::Outcome;
use crate::outcome::{RulesetStamp, TierChange};
use crate::points::Points;
use crate::transaction::Transaction;
use crate::window::CounterKey;

/// Most items one [`LedgerStore::append_batch`] call accepts.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Most rows one history, audit or recent query returns.
pub const MAX_PAGE_ROWS: usize = 1000;

/// Refuses a [`LedgerStore::tier_views`] request of more than
/// [`MAX_PAGE_ROWS`] members (`Invalid`), the same on every store.
pub fn check_tier_view_request(members: usize) -> crate::error::Result<()> {
    if members > MAX_PAGE_ROWS {
        return Err(crate::error::Error::Invalid(format!(
            "a tier view request holds at most {MAX_PAGE_ROWS} members, not {members}"
        )));
    }
    Ok(())
}

/// The points ledger's storage: the source of truth.
///
/// Every mutating call is atomic: either all of its effects (postings,
/// lots, counters, budgets, records, inbox row, member row, audit event)
/// are stored, or none. Reads see only committed state.
///
/// A wrapper that changes a few methods and passes the rest on to an inner
/// store writes its impl with
/// [`forward_ledger_store!`](crate::forward_ledger_store); a method added
/// here needs its line in that macro's table (a test checks).
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// What evaluation may know of a member: tier, profile attributes,
    /// balance and the values of `counters` (a missing counter is zero).
    /// A member never seen gets an empty view (not an error): their first
    /// transaction creates them.
    async fn member_view(&self, member: &MemberId, counters: &[CounterKey]) -> Result<MemberView>;

    /// [`LedgerStore::member_view`] for several members at once: one view
    /// per request, in request order (a member may be asked for more than
    /// once). Each view equals what `member_view` returns for the same
    /// request at the same committed state; a database store answers all of
    /// them in one round trip. The default asks one member at a time.
    async fn member_views(
        &self,
        requests: &[(MemberId, Vec<CounterKey>)],
    ) -> Result<Vec<MemberView>> {
        let mut views = Vec::with_capacity(requests.len());
        for (member, counters) in requests {
            views.push(self.member_view(member, counters).await?);
        }
        Ok(views)
    }

    /// Appends one evaluated transaction atomically with its inbox row.
    /// The same `tx.id` again with the same [`Transaction::fingerprint`]
    /// returns the stored receipt (`duplicate = true`) and changes nothing;
    /// with another fingerprint it is a conflict. Budget claims are trimmed
    /// to the room left; the trimmed outcome is what is stored. Refunds,
    /// settlements, reversals and chargebacks are scaled from the original's
    /// record; their outcome contributes only its ruleset stamp and tier change.
    async fn append(&self, tx: &Transaction, outcome: &Outcome) -> Result<Receipt>;

    /// Appends several (at most [`MAX_BATCH_ITEMS`]), in order, with one
    /// result per item; a failed item does not fail the others.
    async fn append_batch(&self, items: &[(Transaction, Outcome)]) -> Result<Vec<Result<Receipt>>>;

    /// Spends points first-expiring-first; idempotent by `redemption.id`.
    /// More than the available balance is `InsufficientBalance` and changes
    /// nothing.
    async fn redeem(&self, redemption: &Redemption) -> Result<Receipt>;

    /// Applies a manual adjustment; idempotent by `adjustment.id`.
    async fn adjust(&self, adjustment: &Adjustment) -> Result<Receipt>;

    /// Expires every lot whose `expires_at <= as_of` (idempotent).
    async fn expire_due(&self, as_of: DateTime<Utc>) -> Result<SweepReport>;

    /// Makes available every pending lot whose `available_at <= as_of`.
    async fn release_pending(&self, as_of: DateTime<Utc>) -> Result<SweepReport>;

    /// Voids every authorization still open at its lapse time `<= as_of`.
    async fn expire_authorizations(&self, as_of: DateTime<Utc>) -> Result<SweepReport>;

    /// Records the tier the rules decided for one member (applied now, or
    /// scheduled when `effective > as_of`; deciding the current tier
    /// cancels a scheduled change).
    async fn review_tier(&self, review: &TierReview) -> Result<MemberBalance>;

    /// Applies every scheduled tier change whose time `<= as_of`.
    async fn apply_scheduled_tiers(&self, as_of: DateTime<Utc>) -> Result<SweepReport>;

    /// A page of the store's members, for jobs that visit every member
    /// (the tier review): at most `limit` (and at most [`MAX_PAGE_ROWS`])
    /// member ids that sort after `after` (from the first when `None`), in
    /// member id order (the store's: in memory byte order, in PostgreSQL
    /// the collation of the members' unique id index). `after` need not be
    /// a member. Paging on with the last id of each page until a page
    /// comes back empty visits every member that existed when the walk
    /// began exactly once; a member created during the walk may or may not
    /// be visited. A member is anyone with a ledger entry or a profile.
    async fn members_after(&self, after: Option<&MemberId>, limit: usize) -> Result<Vec<MemberId>>;

    /// What a tier review reads of each of `members` (at most
    /// [`MAX_PAGE_ROWS`]): the [`MemberView`] with the values of `counters`
    /// (as [`LedgerStore::member_view`] gives it) and the member's
    /// scheduled tier change, one per member in request order. A member
    /// never seen gets an empty view and no scheduled change.
    async fn tier_views(
        &self,
        members: &[MemberId],
        counters: &[CounterKey],
    ) -> Result<Vec<TierView>>;

    /// A member's balances, tier and version; `NotFound` if never seen.
    async fn balance(&self, member: &MemberId) -> Result<MemberBalance>;

    /// The member's last `limit` entries (at most [`MAX_PAGE_ROWS`]), newest first.
    async fn recent(&self, member: &MemberId, limit: usize) -> Result<Vec<RecentEntry>>;

    /// Postings with `seq > after_seq`, oldest first, at most `limit`.
    async fn history(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>>;

    /// Audit events with `seq > after_seq`, oldest first, at most `limit`.
    async fn audit(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>>;

    /// Creates or replaces a member profile.
    async fn put_profile(&self, profile: &MemberProfile) -> Result<()>;

    /// A member profile; `NotFound` if never seen (a member created by a
    /// transaction has an empty one).
    async fn profile(&self, member: &MemberId) -> Result<MemberProfile>;

    /// Points drawn so far from a campaign budget (zero if never drawn).
    async fn budget_used(&self, budget: &str) -> Result<Points>;

    /// Recomputes every member's balances from their postings (and lots)
    /// and reports the members whose stored balances differ.
    async fn reconcile(&self) -> Result<ReconcileReport>;

    /// The transactional outbox: the oldest events not yet acknowledged,
    /// at most `limit` (and at most [`MAX_PAGE_ROWS`]), in `seq` order.
    ///
    /// Every applied request (a transaction, redemption or adjustment:
    /// every entry with an inbox row; not duplicates, not sweeps) writes one
    /// [`OutboxEvent`] **atomically with its postings**, so an event exists
    /// exactly when its entry is committed. A relay (e.g. to Kafka) loops:
    /// fetch, publish, [`LedgerStore::outbox_ack`] what it published. An
    /// event stays until acknowledged, so a relay that crashes between
    /// publishing and acknowledging publishes it again: delivery is at
    /// least once, and consumers deduplicate on `tx_id` (or `member` +
    /// `version`). A member's events come in the member's version order;
    /// `seq` is a store-wide position, increasing but with gaps. Run one
    /// relay per store: two relays fetch the same events (each is still
    /// delivered, twice).
    ///
    /// The default refuses (`Invalid`): the in-memory store, PostgreSQL and
    /// the cache wrapper implement it.
    async fn outbox_fetch(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        let _ = limit;
        Err(crate::error::Error::Invalid(
            "this store keeps no outbox".into(),
        ))
    }

    /// Acknowledges (removes) the outbox events with these `seq`s; returns
    /// how many were still there (an event acknowledged twice counts once).
    async fn outbox_ack(&self, seqs: &[u64]) -> Result<u64> {
        let _ = seqs;
        Err(crate::error::Error::Invalid(
            "this store keeps no outbox".into(),
        ))
    }
}

/// What a tier review reads of a member (see [`LedgerStore::tier_views`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierView {
    /// The member as evaluation sees them.
    pub view: MemberView,
    /// A decided change that takes effect later (a downgrade after grace).
    pub scheduled: Option<TierChange>,
}

/// One event of the transactional outbox (see
/// [`LedgerStore::outbox_fetch`]): what an applied request did. Its JSON
/// form (serde, the field names below) is stable: relays publish it as is
/// (documented in `docs/storage.md`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEvent {
    /// Store-wide position: increasing in commit order of each member,
    /// with gaps; the handle to acknowledge it.
    pub seq: u64,
    /// The transaction, redemption or adjustment id.
    pub tx_id: TxId,
    /// The member.
    pub member: MemberId,
    /// What it was.
    pub kind: EntryKind,
    /// When it took effect (the transaction's time).
    pub time: DateTime<Utc>,
    /// The member's version after it (from 1, without gaps).
    pub version: u64,
    /// Net change of the member's balances.
    pub points: Balances,
    /// The member's balances after it.
    pub balances: Balances,
    /// The member's tier after it.
    pub tier: Option<Arc<str>>,
    /// The postings it made, in order.
    pub postings: Vec<OutboxPosting>,
    /// The ruleset behind it (id, version, content hash), if any.
    pub ruleset: Option<RulesetStamp>,
}

/// One posting in an [`OutboxEvent`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxPosting {
    /// The rule id, or a ledger label (`redemption`, `clawback`, ...).
    pub rule: Arc<str>,
    /// What it records.
    pub kind: PostingKind,
    /// Its signed change of the balances.
    pub points: Balances,
    /// The lot it created or changed, if one.
    pub lot: Option<TxId>,
}

impl OutboxEvent {
    /// The event of an applied entry, at position `seq`; `None` for an
    /// entry without an inbox row (sweeps, tier reviews), which writes no
    /// event.
    pub fn of_entry(seq: u64, entry: &LedgerEntry) -> Option<OutboxEvent> {
        let inbox = entry.inbox.as_ref()?;
        Some(OutboxEvent {
            seq,
            tx_id: inbox.id.clone(),
            member: entry.member.member.clone(),
            kind: entry.event.kind,
            time: entry.event.time,
            version: entry.member.version,
            points: entry.event.delta,
            balances: entry.event.balances,
            tier: entry.member.tier.clone(),
            postings: entry
                .postings
                .iter()
                .map(|p| OutboxPosting {
                    rule: p.rule.clone(),
                    kind: p.kind,
                    points: p.delta,
                    lot: p.lot.clone(),
                })
                .collect(),
            ruleset: entry.event.ruleset.clone(),
        })
    }
}

/// A member's entry in the balance cache.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedMember {
    /// The member.
    pub member: MemberId,
    /// The version of the last applied entry this value reflects.
    pub version: u64,
    /// Balances at that version.
    pub balances: Balances,
    /// Tier at that version.
    pub tier: Option<Arc<str>>,
    /// Recent entries, newest first.
    pub recent: Vec<RecentEntry>,
}

/// What a [`BalanceCache::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePut {
    /// The value was stored.
    Written,
    /// The cache already holds (or has evicted) a newer version; the value
    /// was ignored.
    Stale {
        /// The version the cache holds or guards.
        current: u64,
    },
}

/// A write-through cache of balances, tiers and recent entries: a
/// projection of the ledger that can always be rebuilt from it.
///
/// Versions make it safe under races: a value is written only if its
/// version is at least the version held (or guarded by an eviction), so a
/// slow writer of an older state can never overwrite a newer one.
#[async_trait]
pub trait BalanceCache: Send + Sync {
    /// The cached entry, if any.
    async fn get(&self, member: &MemberId) -> Result<Option<CachedMember>>;

    /// Stores `entry` unless a newer version is held or guarded.
    async fn put(&self, entry: &CachedMember) -> Result<CachePut>;

    /// [`BalanceCache::put`] for several entries, applied in order (entries
    /// of one member may follow each other: each is checked against the
    /// version the previous one left), with one result per entry. A
    /// networked cache sends them in one pipelined round trip. The default
    /// puts one at a time.
    async fn put_many(&self, entries: &[CachedMember]) -> Result<Vec<CachePut>> {
        let mut done = Vec::with_capacity(entries.len());
        for entry in entries {
            done.push(self.put(entry).await?);
        }
        Ok(done)
    }

    /// Drops the member's entry and refuses later puts older than
    /// `min_version` (the version of the commit whose write-through failed).
    async fn evict(&self, member: &MemberId, min_version: u64) -> Result<()>;

    /// Drops every entry (and every guard).
    async fn clear(&self) -> Result<()>;
}
