//! The points ledger: the rules of postings, lots, expiry, pending points,
//! refunds, the card lifecycle, adjustments and tiers — as pure functions,
//! so that every store (in memory, PostgreSQL) runs the very same logic.
//!
//! # The plan: load, apply, write
//!
//! A store handles every mutating request the same way, inside one unit of
//! work (one database transaction; one member lock in memory):
//!
//! 1. Build a [`Command`] (a transaction with its outcome, a redemption, an
//!    adjustment, a sweep of one member, a tier review).
//! 2. Ask it what it [`Needs`]: whether it has an inbox id to check, which
//!    lots ([`LotNeed`]), which transaction records ([`RecordNeed`]: the
//!    original a refund refers to, the lapsed authorizations of a sweep) and
//!    which budgets (to trim claims). A purchase needs only the member row
//!    and its budgets; a refund needs the original's record and the open
//!    lots; a tier review needs only the member row. A database store loads
//!    exactly that (`SELECT ... FOR UPDATE`), the in-memory store hands over
//!    what it holds (any superset is fine: the ledger filters).
//! 3. Run [`check_inbox`] with the request's [`Command::fingerprint`]: a
//!    duplicate returns the stored receipt and writes nothing; the same id
//!    with another fingerprint is a conflict.
//! 4. Call [`apply`]`(&MemberState, &Command, &LedgerConfig)`: pure and
//!    deterministic, no clock, no I/O. It returns `Ok(None)` when a sweep or
//!    review finds nothing to do, an error when the request is refused
//!    (nothing is written), or a [`LedgerEntry`]: every row to write —
//!    postings, lots (upsert), transaction records (upsert), counter
//!    increments, budget deltas, the inbox row with its [`Receipt`], the new
//!    member row and the audit event. `expected_version` lets a store with
//!    concurrent writers make the member-row update conditional.
//! 5. Write the entry and commit. The in-memory store appends the entry to
//!    its event log and folds it into its maps; at start it rebuilds the
//!    same state by folding the logged entries again (event sourcing).
//!
//! Sweeps (expiry, release, authorization lapse, scheduled tiers) are
//! store-wide: a store finds the members with something due — lots with
//! `remaining > 0` and `expires_at <= as_of`; pending lots with
//! `available_at <= as_of`; records `authorized` with a lapse time
//! `<= as_of`; a `scheduled_tier` with `effective <= as_of` — and runs the
//! per-member command ([`Command::ExpireLots`], ...) for each, each in its
//! own unit of work. A member whose state changed in between simply gets
//! `Ok(None)`.
//!
//! [`check_member`] is the pure reconciliation of one member (stored
//! balances against the sum of the postings and against the lots), and
//! [`member_view`] builds the view evaluation sees.
//!
//! # Postings and balances
//!
//! A member has two balances: `available` (spendable) and `pending` (earned
//! but not yet spendable: a pending period, or an authorization not yet
//! settled). Every change of either is a [`Posting`] with a signed delta,
//! the balances before and after, the ruleset stamp behind the points and a
//! deterministic [`PostingId`] derived from (source id, rule id, sequence).
//! Postings are append-only; balances are the sum of the postings; the
//! member row caches that sum and [`reconcile`](crate::store::LedgerStore::reconcile)
//! checks it.
//!
//! # Lots
//!
//! An earning transaction (purchase, authorization) or a credit adjustment
//! forms one [`Lot`] with the outcome's [`LotTerms`](crate::outcome::LotTerms):
//! pending until `available_at`, expiring at `expires_at`. Debits
//! (redemptions, debit adjustments, clawbacks beyond the original's own lot)
//! consume available lots first-expiring-first (never-expiring last, then
//! oldest, then by id). A lot's `remaining` never goes below zero.
//!
//! # Expiry and release
//!
//! Both are sweeps "as of" an instant, idempotent: a lot expires when
//! `expires_at <= as_of` (the boundary instant included) and its remaining
//! points leave through one `expire` posting (pending lots too; an open
//! authorization's lot never expires, it lapses — see below). A pending lot
//! is released when `available_at <= as_of`. Until a sweep runs, balances
//! do not change by themselves: the balance is always the sum of postings.
//!
//! # Refunds and chargebacks: clawback
//!
//! A refund or a chargeback names its original (a purchase or a settled
//! authorization, or its settlement). The ledger keeps, on the original's
//! [`TxRecord`], what it earned per rule, the counter deltas it applied and
//! the budget points it drew, and the cumulative amount refunded. A refund
//! of amount `r` makes the running total `R = min(refunded + r, amount)`
//! and, for each award, claws back `floor(points × R / amount) − clawed so
//! far`; counter deltas and budget draws are reversed by the same rule
//! (counters rounded toward zero at the delta's own scale). Rounding down on
//! the running total means several partial refunds never claw back more
//! than the original earned, and a full refund claws back exactly all of it.
//! Refunding more than the original's amount claws back no more than 100%.
//!
//! **Policy when the points were already used.** A clawback is taken from
//! the original's own lot first (pending or available). What that lot no
//! longer holds because it *expired* is forgiven (those points already left
//! the balance once; they are recorded as forgiven on the lot so that they
//! are forgiven only once). What it no longer holds because it was *spent*
//! is taken from the member's other available lots, first-expiring-first,
//! and if those do not suffice the available balance goes **negative**: the
//! member owes points, recorded as such (a debt, visible as a negative
//! balance). New available points (earn, release, settlement, credit
//! adjustment) repay a debt first. Nothing is ever silently dropped: the
//! audit event's detail says how much was taken from the lot, from other
//! lots, forgiven, and owed.
//!
//! Refused, with [`ErrorKind::InvalidReference`](crate::error::ErrorKind::InvalidReference)
//! (and nothing written): an unknown original (the runtime dead-letters it;
//! a re-drive after the original arrived succeeds), an original of another
//! member, a refund or chargeback of a refund, a chargeback, a reversal or
//! an adjustment, of an open or voided authorization, or in another currency.
//!
//! # Card lifecycle
//!
//! - An **authorization** earns its outcome as a `held` lot (pending
//!   points), with its counters and budget draws, and lapses at
//!   `time + authorization_ttl` ([`LedgerConfig`]).
//! - Its **settlement** posts the held points to available (or keeps them
//!   pending until the lot's `available_at`). A settlement for less than
//!   authorized re-scales every award, counter and budget draw by
//!   `settled / authorized` (rounded down, the difference released); a
//!   settlement for more posts the authorized points unchanged — the
//!   authorization reserved cap and budget room, and the ledger never
//!   re-evaluates. Afterwards the authorization's record carries the settled
//!   amount and awards, and refunds may name either id.
//! - A **reversal** voids the held points and releases the counters and
//!   budget draws; a reversal (or a second settlement) after settlement is
//!   refused, as is a settlement or reversal of a voided authorization.
//! - A **chargeback** claws back like a refund.
//! - An authorization never settled is voided like a reversal by the
//!   [`expire_authorizations`](crate::store::LedgerStore::expire_authorizations)
//!   sweep once its lapse time has come.
//!
//! For referring kinds (refund, chargeback, settlement, reversal) the
//! outcome's components, counters and budget claims are **not** applied —
//! the original's record decides — only its ruleset stamp and tier change.
//!
//! # Adjustments
//!
//! Signed points with reason and actor (wire `adjustment` transactions or
//! [`Adjustment`]). A credit forms a lot (never expiring unless said); a
//! debit consumes lots first-expiring-first and may take the balance below
//! zero (a correction must always be recordable).
//!
//! # Tiers
//!
//! The member row holds the tier. An outcome's tier change, or a
//! [`TierReview`] (the tier the rules decided at a review), is applied at
//! once when its `effective` time is not later than the entry's time, and
//! otherwise scheduled (replacing an earlier schedule); deciding the current
//! tier cancels a scheduled change (the member requalified within grace).
//! [`apply_scheduled_tiers`](crate::store::LedgerStore::apply_scheduled_tiers)
//! applies due schedules. Every change, schedule and cancellation is a
//! [`TierEvent`] in the audit trail.
//!
//! # Caps and budgets
//!
//! Counter deltas (caps, aggregates) are applied in the same entry as the
//! postings. Budget claims are trimmed at apply time to the room left
//! (`limit − used`, read under the store's lock), in outcome order; a
//! trimmed component's points, its counter deltas (those that name it) and
//! its lot shrink accordingly, and the trimmed outcome is what is stored.
//!
//! # Idempotency
//!
//! Requests with ids (transactions, redemptions, adjustments) share one
//! inbox namespace: the same id and fingerprint again returns the stored
//! receipt with `duplicate = true`; another fingerprint is a conflict.
//! Refused requests are not stored (a re-drive is evaluated afresh).
//! Sweeps are idempotent because they only touch lots and records still due.

mod apply;
mod entry;
mod model;

pub use apply::{
    advance_view, apply, apply_with_open_lots, check_member, fold_balances_from_lots, member_view,
    OpenLots, ViewChain,
};
pub use entry::{
    check_inbox, BudgetDelta, Command, LedgerConfig, LedgerEntry, LotNeed, MemberState, Needs,
    RecordNeed,
};
pub use model::*;
