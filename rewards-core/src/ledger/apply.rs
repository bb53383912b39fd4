//! [`apply`]: the pure ledger function, and the pure checks every store
//! shares (reconciliation of one member).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::entry::{BudgetDelta, Command, LedgerConfig, LedgerEntry, MemberState};
use super::model::{
    Adjustment, AuditEvent, Award, Balances, BudgetDraw, Drift, EntryKind, InboxEntry, Lot,
    LotStatus, MemberRecord, Posting, PostingId, PostingKind, Receipt, RecordStatus,
    RecordedCounter, Redemption, TierEvent, TierReview, TxRecord,
};
use crate::error::{Error, ReferenceProblem, Result};
use crate::ids::TxId;
use crate::member::MemberView;
use crate::money::Money;
use crate::outcome::{Outcome, RulesetStamp, TierChange};
use crate::points::Points;
use crate::transaction::{Transaction, TxKind};
use crate::window::CounterKey;

/// Applies one command to the member state a store loaded for it (see the
/// [module docs](super) for the plan and the rules).
///
/// Returns `Ok(None)` when a sweep or tier review has nothing to do, an
/// error when the request is refused (nothing must be written), or the
/// entry to write. Pure and deterministic: no clock, no I/O, no float.
pub fn apply(
    state: &MemberState,
    command: &Command<'_>,
    config: &LedgerConfig,
) -> Result<Option<LedgerEntry>> {
    apply_inner(state, command, config, None)
}

/// The member's open lots, handed to [`apply_with_open_lots`] lazily by a
/// store that keeps them in spend order (the in-memory store does), so that
/// a command spending a few points does not load every open lot.
pub trait OpenLots {
    /// The member's lots with status `available` and `remaining > 0`, in
    /// [`Lot::spend_order`]. Lots also present in [`MemberState::lots`]
    /// may be listed too: the loaded copy wins.
    fn in_spend_order(&self) -> Box<dyn Iterator<Item = &Lot> + '_>;
}

/// [`apply`] for a store that hands the member's open lots over lazily:
/// for a command whose [`Command::spends_open_lots_in_order`] is true, the
/// store may load only the lots of the records ([`LotNeed::OfRecords`](super::LotNeed::OfRecords))
/// into `state` and pass the open lots as `open`; the ledger takes from them
/// first-expiring-first only as far as it needs to. The result is the same
/// entry [`apply`] returns with every open lot loaded.
pub fn apply_with_open_lots(
    state: &MemberState,
    command: &Command<'_>,
    config: &LedgerConfig,
    open: &dyn OpenLots,
) -> Result<Option<LedgerEntry>> {
    apply_inner(state, command, config, Some(open))
}

fn apply_inner(
    state: &MemberState,
    command: &Command<'_>,
    config: &LedgerConfig,
    open: Option<&dyn OpenLots>,
) -> Result<Option<LedgerEntry>> {
    if command.member() != &state.member.member {
        return Err(Error::Invalid(format!(
            "the state loaded is of member {}, the command is for {}",
            state.member.member,
            command.member()
        )));
    }
    match *command {
        Command::Transaction { tx, outcome } => {
            transaction(state, tx, outcome, config, open).map(Some)
        }
        Command::Redeem(r) => redeem(state, r, open).map(Some),
        Command::Adjust(a) => {
            let fingerprint = command.fingerprint()?;
            let mut work = Work::new(state, a.id.clone(), EntryKind::Adjustment, a.time, None);
            work.open = open;
            adjust(&mut work, a)?;
            work.finish(fingerprint).map(Some)
        }
        Command::ExpireLots { as_of, .. } => expire_lots(state, as_of),
        Command::ReleasePending { as_of, .. } => release_pending(state, as_of),
        Command::ExpireAuthorizations { as_of, .. } => expire_authorizations(state, as_of),
        Command::ReviewTier(review) => review_tier(state, review),
        Command::ApplyScheduledTier { as_of, .. } => apply_scheduled_tier(state, as_of),
    }
}

/// The entry under construction: a private copy of the loaded state that
/// each step changes, with everything it changed recorded for the store.
struct Work<'s> {
    state: &'s MemberState,
    /// Open lots beyond `lots`, taken lazily (see [`OpenLots`]).
    open: Option<&'s dyn OpenLots>,
    member: MemberRecord,
    lots: BTreeMap<TxId, Lot>,
    changed_lots: Vec<TxId>,
    records: Vec<TxRecord>,
    postings: Vec<Posting>,
    counters: Vec<(CounterKey, Decimal)>,
    budgets: Vec<BudgetDelta>,
    tier: Vec<TierEvent>,
    awards: Vec<(Arc<str>, Points)>,
    trimmed: Points,
    source: TxId,
    kind: EntryKind,
    time: DateTime<Utc>,
    ruleset: Option<RulesetStamp>,
    detail: String,
}

impl<'s> Work<'s> {
    fn new(
        state: &'s MemberState,
        source: TxId,
        kind: EntryKind,
        time: DateTime<Utc>,
        ruleset: Option<RulesetStamp>,
    ) -> Work<'s> {
        Work {
            state,
            open: None,
            member: state.member.clone(),
            lots: state
                .lots
                .iter()
                .filter(|l| l.member == state.member.member)
                .map(|l| (l.id.clone(), l.clone()))
                .collect(),
            changed_lots: Vec::new(),
            records: Vec::new(),
            postings: Vec::new(),
            counters: Vec::new(),
            budgets: Vec::new(),
            tier: Vec::new(),
            awards: Vec::new(),
            trimmed: Points::ZERO,
            source,
            kind,
            time,
            ruleset,
            detail: String::new(),
        }
    }

    fn note(&mut self, text: std::fmt::Arguments<'_>) {
        if !self.detail.is_empty() {
            self.detail.push_str("; ");
        }
        let _ = self.detail.write_fmt(text);
    }

    /// Appends a posting (skipped when its delta is zero) and moves the balances.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        source: &TxId,
        kind: PostingKind,
        rule: &Arc<str>,
        delta: Balances,
        lot: Option<&TxId>,
        ruleset: Option<&RulesetStamp>,
        time: DateTime<Utc>,
    ) -> Result<()> {
        if delta.is_zero() {
            return Ok(());
        }
        let rule_seq = self
            .postings
            .iter()
            .filter(|p| &p.source == source && p.kind == kind && &p.rule == rule)
            .count() as u32;
        let before = self.member.balances;
        let after = before.checked_add(delta)?;
        self.member.balances = after;
        self.member.posting_seq += 1;
        self.postings.push(Posting {
            id: PostingId::derive(source.as_str(), kind, rule, rule_seq),
            member: self.member.member.clone(),
            seq: self.member.posting_seq,
            source: source.clone(),
            rule: rule.clone(),
            rule_seq,
            kind,
            delta,
            before,
            after,
            lot: lot.cloned(),
            ruleset: ruleset.cloned(),
            time,
        });
        Ok(())
    }

    fn lot_mut(&mut self, id: &TxId) -> Option<&mut Lot> {
        let lot = self.lots.get_mut(id)?;
        if !self.changed_lots.contains(id) {
            self.changed_lots.push(id.clone());
        }
        Some(lot)
    }

    fn insert_lot(&mut self, lot: Lot) {
        if !self.changed_lots.contains(&lot.id) {
            self.changed_lots.push(lot.id.clone());
        }
        self.lots.insert(lot.id.clone(), lot);
    }

    /// The member's debt: what a negative available balance owes.
    fn debt(&self) -> Points {
        Points(self.member.balances.available.get().min(0).saturating_neg())
    }

    /// Points that become available in lot `id` repay the debt first: the
    /// lot keeps only the rest. Call before posting the credit.
    fn credit_lot(&mut self, id: &TxId, points: Points) -> Result<Points> {
        let repay = Points(self.debt().get().min(points.get()));
        let keep = points.checked_sub(repay)?;
        if let Some(lot) = self.lot_mut(id) {
            lot.remaining = lot.remaining.checked_add(keep)?;
        }
        Ok(repay)
    }

    /// Takes up to `points` from available lots, first-expiring-first,
    /// skipping `except`; returns how much was taken. The loaded lots are
    /// merged with the lazily handed-over open lots (if any), so only the
    /// lots actually spent are copied.
    fn take_from_lots(&mut self, points: Points, except: Option<&TxId>) -> Result<Points> {
        if points.get() <= 0 {
            return Ok(Points::ZERO);
        }
        let spendable = |l: &Lot| {
            l.status == LotStatus::Available && l.remaining.get() > 0 && Some(&l.id) != except
        };
        // The plan: (lot, points to take, the lot's row if not loaded yet).
        let mut plan: Vec<(TxId, Points, Option<Lot>)> = Vec::new();
        {
            let mut loaded: Vec<&Lot> = self.lots.values().filter(|l| spendable(l)).collect();
            loaded.sort_by(|a, b| a.spend_order().cmp(&b.spend_order()));
            let mut loaded = loaded.into_iter().peekable();
            let lots = &self.lots;
            let member = &self.state.member.member;
            let mut others = self.open.map(|o| {
                o.in_spend_order().filter(move |l| {
                    &l.member == member && spendable(l) && !lots.contains_key(&l.id)
                })
            });
            let mut other = others.as_mut().and_then(Iterator::next);
            let mut left = points;
            while left.get() > 0 {
                let from_loaded = match (loaded.peek(), other) {
                    (Some(a), Some(b)) => a.spend_order() <= b.spend_order(),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let (lot, row) = if from_loaded {
                    match loaded.next() {
                        Some(lot) => (lot, None),
                        None => break,
                    }
                } else {
                    match other {
                        Some(lot) => {
                            other = others.as_mut().and_then(Iterator::next);
                            (lot, Some(lot.clone()))
                        }
                        None => break,
                    }
                };
                let take = Points(lot.remaining.get().min(left.get()));
                left = left.checked_sub(take)?;
                plan.push((lot.id.clone(), take, row));
            }
        }
        let mut taken = Points::ZERO;
        for (id, take, row) in plan {
            if let Some(row) = row {
                self.lots.insert(id.clone(), row);
            }
            if let Some(lot) = self.lot_mut(&id) {
                lot.remaining = lot.remaining.checked_sub(take)?;
                taken = taken.checked_add(take)?;
            }
        }
        Ok(taken)
    }

    fn record_tier(&mut self, to: &Arc<str>, effective: DateTime<Utc>, now: DateTime<Utc>) {
        let current = self.member.tier.clone();
        if effective <= now {
            if let Some(s) = self.member.scheduled_tier.take() {
                if s.to != *to || current.as_ref() == Some(to) {
                    self.tier.push(TierEvent::Cancelled {
                        to: s.to,
                        effective: s.effective,
                    });
                }
            }
            if current.as_ref() != Some(to) {
                self.tier.push(TierEvent::Changed {
                    from: current,
                    to: to.clone(),
                });
                self.member.tier = Some(to.clone());
                self.member.tier_since = Some(effective);
            }
        } else if current.as_ref() == Some(to) {
            if let Some(s) = self.member.scheduled_tier.take() {
                self.tier.push(TierEvent::Cancelled {
                    to: s.to,
                    effective: s.effective,
                });
            }
        } else {
            let same = self
                .member
                .scheduled_tier
                .as_ref()
                .is_some_and(|s| s.to == *to && s.effective == effective);
            if !same {
                self.member.scheduled_tier = Some(TierChange {
                    from: current,
                    to: to.clone(),
                    effective,
                });
                self.tier.push(TierEvent::Scheduled {
                    to: to.clone(),
                    effective,
                });
            }
        }
    }

    fn finish(mut self, fingerprint: Option<[u8; 32]>) -> Result<LedgerEntry> {
        let expected_version = self.state.member.version;
        self.member.version = expected_version + 1;
        let delta = self
            .member
            .balances
            .checked_sub(self.state.member.balances)?;
        let event = AuditEvent {
            member: self.member.member.clone(),
            seq: self.member.version,
            source: self.source.clone(),
            kind: self.kind,
            time: self.time,
            delta,
            balances: self.member.balances,
            postings: self.postings.iter().map(|p| p.id).collect(),
            tier: self.tier,
            ruleset: self.ruleset,
            detail: self.detail,
        };
        let inbox = fingerprint.map(|fingerprint| InboxEntry {
            id: self.source.clone(),
            member: self.member.member.clone(),
            fingerprint,
            receipt: Receipt {
                id: self.source.clone(),
                member: self.member.member.clone(),
                kind: self.kind,
                version: self.member.version,
                delta,
                balances: self.member.balances,
                awards: self.awards,
                trimmed: self.trimmed,
                tier: self.member.tier.clone(),
                duplicate: false,
            },
        });
        let mut lots = Vec::with_capacity(self.changed_lots.len());
        for id in &self.changed_lots {
            if let Some(lot) = self.lots.remove(id) {
                lots.push(lot);
            }
        }
        Ok(LedgerEntry {
            expected_version,
            member: self.member,
            postings: self.postings,
            lots,
            records: self.records,
            counters: self.counters,
            budgets: self.budgets,
            inbox,
            event,
        })
    }
}

/// `floor(value × num / den)` for `0 <= num <= den`, exactly, in integers.
/// `value` is a mantissa at any scale (points, or a decimal's mantissa);
/// the result is truncated toward zero (floor for non-negative values).
fn scale_down(value: i128, num: Decimal, den: Decimal) -> Result<i128> {
    if den <= Decimal::ZERO || num >= den {
        return Ok(value);
    }
    if num <= Decimal::ZERO {
        return Ok(0);
    }
    let scale = num.scale().max(den.scale());
    let as_int = |d: Decimal| -> Result<i128> {
        let mut d = d;
        d.rescale(scale);
        if d.scale() != scale {
            return Err(Error::other("amount out of range for exact scaling", None));
        }
        Ok(d.mantissa())
    };
    let (n, d) = (as_int(num)?, as_int(den)?);
    value
        .checked_mul(n)
        .map(|product| product / d)
        .ok_or_else(|| Error::other("exact scaling overflowed", None))
}

fn scale_points(points: Points, num: Decimal, den: Decimal) -> Result<Points> {
    let scaled = scale_down(i128::from(points.get()), num, den)?;
    i64::try_from(scaled)
        .map(Points)
        .map_err(|_| Error::other("points out of range", None))
}

/// A counter delta scaled by `num / den`, rounded toward zero at its scale.
fn scale_decimal(value: Decimal, num: Decimal, den: Decimal) -> Result<Decimal> {
    let scaled = scale_down(value.mantissa(), num, den)?;
    Decimal::try_from_i128_with_scale(scaled, value.scale())
        .map_err(|_| Error::other("counter out of range", None))
}

fn transaction<'s>(
    state: &'s MemberState,
    tx: &Transaction,
    outcome: &Outcome,
    config: &LedgerConfig,
    open: Option<&'s dyn OpenLots>,
) -> Result<LedgerEntry> {
    if !outcome_is_for(outcome, tx) {
        return Err(Error::Invalid(format!(
            "the outcome is for {} ({} of {}), not for {} ({} of {})",
            outcome.tx_id, outcome.kind, outcome.member, tx.id, tx.kind, tx.member
        )));
    }
    if let Some(expected) = outcome.expects_version {
        if expected != state.member.version {
            return Err(Error::Stale {
                id: tx.id.clone(),
                member: tx.member.clone(),
                expected,
                actual: state.member.version,
            });
        }
    }
    let fingerprint = Some(tx.fingerprint());
    let mut work = Work::new(
        state,
        tx.id.clone(),
        tx.kind.into(),
        tx.time,
        Some(outcome.ruleset.clone()),
    );
    work.open = open;
    match tx.kind {
        TxKind::Purchase | TxKind::Authorization => earn(&mut work, tx, outcome, config)?,
        TxKind::Adjustment => {
            let adjustment = Adjustment {
                id: tx.id.clone(),
                member: tx.member.clone(),
                points: tx.points.unwrap_or(Points::ZERO),
                reason: tx.reason.clone().unwrap_or_default(),
                actor: tx.actor.clone().unwrap_or_default(),
                time: tx.time,
                expires_at: None,
            };
            adjust(&mut work, &adjustment)?;
            work.records.push(reference_record(tx, None));
        }
        TxKind::Refund | TxKind::Chargeback => {
            let original = find_original(state, tx)?;
            clawback(&mut work, tx, original)?;
        }
        TxKind::Settlement => {
            let original = find_original(state, tx)?;
            settle(&mut work, tx, original)?;
        }
        TxKind::Reversal => {
            let original = find_original(state, tx)?;
            check_open_authorization(tx, original)?;
            void(&mut work, original, tx.time, Some(&tx.id))?;
            work.note(format_args!("reversed authorization {}", original.id));
            work.records.push(reference_record(tx, None));
        }
    }
    if let Some(change) = &outcome.tier_change {
        work.record_tier(&change.to, change.effective, tx.time);
    }
    work.finish(fingerprint)
}

fn reference_record(tx: &Transaction, alias_of: Option<TxId>) -> TxRecord {
    TxRecord {
        id: tx.id.clone(),
        member: tx.member.clone(),
        kind: tx.kind,
        time: tx.time,
        amount: tx.amount,
        original: tx.original_id.clone(),
        alias_of,
        ruleset: None,
        awards: Vec::new(),
        counters: Vec::new(),
        budgets: Vec::new(),
        lot: None,
        status: RecordStatus::Reference,
        refunded: Decimal::ZERO,
    }
}

fn earn(
    work: &mut Work<'_>,
    tx: &Transaction,
    outcome: &Outcome,
    config: &LedgerConfig,
) -> Result<()> {
    let n = outcome.components.len();
    let mut points: Vec<Points> = Vec::with_capacity(n);
    for c in &outcome.components {
        if c.points.get() < 0 {
            return Err(Error::Invalid(format!(
                "component {} awards negative points ({})",
                c.rule, c.points
            )));
        }
        points.push(c.points);
    }
    let mut counters: Vec<RecordedCounter> = Vec::with_capacity(outcome.counters.len());
    for c in &outcome.counters {
        if c.component.is_some_and(|i| usize::from(i) >= n) {
            return Err(Error::Invalid(format!(
                "counter {} names component {:?} of {n}",
                c.key, c.component
            )));
        }
        counters.push(RecordedCounter {
            key: c.key.clone(),
            delta: c.delta,
            reversed: Decimal::ZERO,
        });
    }
    // Budget claims are trimmed to the room left, in outcome order.
    let mut used: BTreeMap<Arc<str>, Points> = work.state.budgets_used.iter().cloned().collect();
    let mut draws: Vec<BudgetDraw> = Vec::new();
    for claim in &outcome.budgets {
        let i = usize::from(claim.component);
        let Some(component_points) = points.get(i).copied() else {
            return Err(Error::Invalid(format!(
                "budget claim on {} names component {i} of {n}",
                claim.budget
            )));
        };
        if claim.points.get() < 0 {
            return Err(Error::Invalid(format!(
                "budget claim on {} is negative",
                claim.budget
            )));
        }
        let so_far = used.get(&claim.budget).copied().unwrap_or(Points::ZERO);
        let room = claim.limit.checked_sub(so_far)?.get().max(0);
        let granted = Points(claim.points.get().min(room));
        let cut = Points(
            claim
                .points
                .checked_sub(granted)?
                .get()
                .min(component_points.get()),
        );
        if cut.get() > 0 {
            points[i] = component_points.checked_sub(cut)?;
            work.trimmed = work.trimmed.checked_add(cut)?;
            for (c, recorded) in outcome.counters.iter().zip(counters.iter_mut()) {
                if c.component == Some(claim.component) {
                    recorded.delta -= Decimal::from(cut.get());
                }
            }
            work.note(format_args!(
                "budget {} trimmed {} by {cut} (room {room})",
                claim.budget, outcome.components[i].rule
            ));
        }
        if granted.get() > 0 {
            used.insert(claim.budget.clone(), so_far.checked_add(granted)?);
            work.budgets.push(BudgetDelta {
                budget: claim.budget.clone(),
                delta: granted,
                limit: Some(claim.limit),
            });
            draws.push(BudgetDraw {
                budget: claim.budget.clone(),
                points: granted,
                returned: Points::ZERO,
            });
        }
    }
    let total = points
        .iter()
        .try_fold(Points::ZERO, |sum, p| sum.checked_add(*p))?;
    let held = tx.kind == TxKind::Authorization;
    let pending = earns_pending(tx, outcome);
    let status = if held {
        LotStatus::Held
    } else if pending {
        LotStatus::Pending
    } else {
        LotStatus::Available
    };
    let lot_id = (total.get() > 0).then(|| tx.id.clone());
    if let Some(id) = &lot_id {
        work.insert_lot(Lot {
            id: id.clone(),
            member: tx.member.clone(),
            earned_at: tx.time,
            available_at: outcome.lot.available_at,
            expires_at: outcome.lot.expires_at,
            status,
            granted: total,
            remaining: if pending { total } else { Points::ZERO },
            expired: Points::ZERO,
            expired_forgiven: Points::ZERO,
        });
        if !pending {
            let repaid = work.credit_lot(id, total)?;
            if repaid.get() > 0 {
                work.note(format_args!("{repaid} repaid a debt"));
            }
        }
    }
    let ruleset = outcome.ruleset.clone();
    for (c, p) in outcome.components.iter().zip(&points) {
        let delta = if pending {
            Balances {
                available: Points::ZERO,
                pending: *p,
            }
        } else {
            Balances {
                available: *p,
                pending: Points::ZERO,
            }
        };
        work.post(
            &tx.id,
            PostingKind::Earn,
            &c.rule,
            delta,
            lot_id.as_ref(),
            Some(&ruleset),
            tx.time,
        )?;
        work.awards.push((c.rule.clone(), *p));
    }
    for c in &counters {
        if !c.delta.is_zero() {
            work.counters.push((c.key.clone(), c.delta));
        }
    }
    let status = if held {
        RecordStatus::Authorized {
            expires_at: tx.time + config.authorization_ttl(),
        }
    } else {
        RecordStatus::Posted
    };
    work.records.push(TxRecord {
        id: tx.id.clone(),
        member: tx.member.clone(),
        kind: tx.kind,
        time: tx.time,
        amount: tx.amount,
        original: None,
        alias_of: None,
        ruleset: Some(ruleset),
        awards: outcome
            .components
            .iter()
            .zip(&points)
            .map(|(c, p)| Award {
                rule: c.rule.clone(),
                points: *p,
                clawed: Points::ZERO,
            })
            .collect(),
        counters,
        budgets: draws,
        lot: lot_id,
        status,
        refunded: Decimal::ZERO,
    });
    Ok(())
}

/// Whether an earn's points start out pending rather than available: an
/// authorization's are held, and a lot whose terms make it available only
/// after the transaction's time is pending until then.
fn earns_pending(tx: &Transaction, outcome: &Outcome) -> bool {
    tx.kind == TxKind::Authorization || outcome.lot.available_at.is_some_and(|at| at > tx.time)
}

/// The record a referring transaction names, following a settlement to its
/// authorization; checks member and currency.
fn find_original<'a>(state: &'a MemberState, tx: &Transaction) -> Result<&'a TxRecord> {
    let Some(original) = &tx.original_id else {
        return Err(Error::Invalid(format!(
            "a {} must name its original transaction",
            tx.kind
        )));
    };
    let problem = |p| Err(Error::reference(&tx.id, original, p));
    let by_id = |id: &TxId| state.records.iter().find(|r| &r.id == id);
    let found = by_id(original).or_else(|| {
        state
            .records
            .iter()
            .find(|r| matches!(&r.status, RecordStatus::Settled { by } if by == original))
    });
    let record = match found {
        None => return problem(ReferenceProblem::Unknown),
        Some(r) => match &r.alias_of {
            None => r,
            Some(target) => match by_id(target) {
                Some(target) => target,
                None => {
                    return Err(Error::other(
                        format!("the store did not load {target}, which {original} stands for"),
                        None,
                    ))
                }
            },
        },
    };
    if record.member != tx.member {
        return problem(ReferenceProblem::OtherMember(record.member.clone()));
    }
    if record.amount.currency != tx.amount.currency && tx.kind != TxKind::Reversal {
        return problem(ReferenceProblem::CurrencyMismatch);
    }
    Ok(record)
}

fn check_open_authorization(tx: &Transaction, record: &TxRecord) -> Result<()> {
    let problem = |p| Err(Error::reference(&tx.id, &record.id, p));
    if record.kind != TxKind::Authorization {
        return problem(ReferenceProblem::WrongKind(record.kind));
    }
    match record.status {
        RecordStatus::Authorized { .. } => Ok(()),
        RecordStatus::Settled { .. } => problem(ReferenceProblem::AlreadySettled),
        RecordStatus::Voided { .. } => problem(ReferenceProblem::AlreadyVoided),
        RecordStatus::Posted | RecordStatus::Reference => {
            problem(ReferenceProblem::WrongKind(record.kind))
        }
    }
}

fn clawback(work: &mut Work<'_>, tx: &Transaction, original: &TxRecord) -> Result<()> {
    let problem = |p| Err(Error::reference(&tx.id, &original.id, p));
    match &original.status {
        RecordStatus::Posted | RecordStatus::Settled { .. } => {}
        RecordStatus::Authorized { .. } => return problem(ReferenceProblem::NotSettled),
        RecordStatus::Voided { .. } => return problem(ReferenceProblem::AlreadyVoided),
        RecordStatus::Reference => return problem(ReferenceProblem::WrongKind(original.kind)),
    }
    let amount = original.amount.amount;
    let total = (original.refunded + tx.amount.amount).min(amount);
    let mut record = original.clone();
    record.refunded = total;
    // Per award: claw back floor(points × total / amount) − clawed so far.
    let mut claws: Vec<(Arc<str>, Points)> = Vec::with_capacity(record.awards.len());
    for award in &mut record.awards {
        let target = scale_points(award.points, total, amount)?;
        let claw = Points(target.checked_sub(award.clawed)?.get().max(0));
        award.clawed = award.clawed.checked_add(claw)?;
        claws.push((award.rule.clone(), claw));
    }
    for c in &mut record.counters {
        let target = scale_decimal(c.delta, total, amount)?;
        let step = target - c.reversed;
        c.reversed = target;
        if !step.is_zero() {
            work.counters.push((c.key.clone(), -step));
        }
    }
    for b in &mut record.budgets {
        let target = scale_points(b.points, total, amount)?;
        let step = target.checked_sub(b.returned)?;
        b.returned = target;
        if step.get() != 0 {
            work.budgets.push(BudgetDelta {
                budget: b.budget.clone(),
                delta: step.checked_neg()?,
                limit: None,
            });
        }
    }
    let claw_total = claws
        .iter()
        .try_fold(Points::ZERO, |sum, (_, p)| sum.checked_add(*p))?;
    // Where the points come from: the original's lot, then forgiveness of
    // what expired from it, then other lots, then a debt.
    let mut from_lot_pending = Points::ZERO;
    let mut from_lot_available = Points::ZERO;
    let mut forgiven = Points::ZERO;
    let mut rest = claw_total;
    if let Some(lot_id) = &record.lot {
        if let Some(lot) = work.lot_mut(lot_id) {
            let take = Points(lot.remaining.get().min(rest.get()));
            lot.remaining = lot.remaining.checked_sub(take)?;
            rest = rest.checked_sub(take)?;
            match lot.status {
                LotStatus::Available => from_lot_available = take,
                _ => from_lot_pending = take,
            }
            let forgivable = lot.expired.checked_sub(lot.expired_forgiven)?;
            forgiven = Points(forgivable.get().min(rest.get()));
            lot.expired_forgiven = lot.expired_forgiven.checked_add(forgiven)?;
            rest = rest.checked_sub(forgiven)?;
        }
    }
    let from_others = work.take_from_lots(rest, record.lot.as_ref())?;
    let owed = rest.checked_sub(from_others)?;
    // Spread the balance effect over the per-rule postings, in order:
    // the pending part, then the available part; forgiven points post nothing.
    let mut pending_left = from_lot_pending;
    let mut available_left = from_lot_available
        .checked_add(from_others)?
        .checked_add(owed)?;
    let ruleset = record.ruleset.clone();
    for (rule, claw) in &claws {
        let p = Points(claw.get().min(pending_left.get()));
        pending_left = pending_left.checked_sub(p)?;
        let a = Points(claw.checked_sub(p)?.get().min(available_left.get()));
        available_left = available_left.checked_sub(a)?;
        let delta = Balances {
            available: a.checked_neg()?,
            pending: p.checked_neg()?,
        };
        work.post(
            &tx.id,
            PostingKind::Clawback,
            rule,
            delta,
            record.lot.as_ref(),
            ruleset.as_ref(),
            tx.time,
        )?;
        work.awards.push((rule.clone(), claw.checked_neg()?));
    }
    work.note(format_args!(
        "{} {} of {} {}: clawed back {claw_total} ({} from the lot, {from_others} from other lots, {forgiven} forgiven as expired, {owed} owed)",
        tx.kind,
        tx.amount.amount,
        amount,
        original.amount.currency,
        from_lot_pending.checked_add(from_lot_available)?,
    ));
    work.records.push(record);
    work.records.push(reference_record(tx, None));
    Ok(())
}

fn settle(work: &mut Work<'_>, tx: &Transaction, original: &TxRecord) -> Result<()> {
    check_open_authorization(tx, original)?;
    let authorized = original.amount.amount;
    let settled = tx.amount.amount;
    let mut record = original.clone();
    record.amount = Money::new(settled, original.amount.currency);
    record.status = RecordStatus::Settled { by: tx.id.clone() };
    let mut old_new: Vec<(Arc<str>, Points, Points)> = Vec::new();
    for award in &mut record.awards {
        let new = scale_points(award.points, settled, authorized)?;
        old_new.push((award.rule.clone(), award.points, new));
        award.points = new;
    }
    for c in &mut record.counters {
        let new = scale_decimal(c.delta, settled, authorized)?;
        let step = new - c.delta;
        c.delta = new;
        if !step.is_zero() {
            work.counters.push((c.key.clone(), step));
        }
    }
    for b in &mut record.budgets {
        let new = scale_points(b.points, settled, authorized)?;
        let step = new.checked_sub(b.points)?;
        b.points = new;
        if step.get() != 0 {
            work.budgets.push(BudgetDelta {
                budget: b.budget.clone(),
                delta: step,
                limit: None,
            });
        }
    }
    let new_total = old_new
        .iter()
        .try_fold(Points::ZERO, |sum, (_, _, new)| sum.checked_add(*new))?;
    let mut available = false;
    if let Some(lot_id) = record.lot.clone() {
        let Some(lot) = work.lot_mut(&lot_id) else {
            return Err(Error::other(
                format!("the store did not load lot {lot_id} of {}", original.id),
                None,
            ));
        };
        available = lot.available_at.is_none_or(|at| at <= tx.time);
        lot.granted = new_total;
        if available {
            lot.status = LotStatus::Available;
            lot.remaining = Points::ZERO;
        } else {
            lot.status = LotStatus::Pending;
            lot.remaining = new_total;
        }
        if available {
            work.credit_lot(&lot_id, new_total)?;
        }
    }
    let ruleset = record.ruleset.clone();
    for (rule, old, new) in &old_new {
        let delta = if available {
            Balances {
                available: *new,
                pending: old.checked_neg()?,
            }
        } else {
            Balances {
                available: Points::ZERO,
                pending: new.checked_sub(*old)?,
            }
        };
        work.post(
            &tx.id,
            PostingKind::Settle,
            rule,
            delta,
            record.lot.as_ref(),
            ruleset.as_ref(),
            tx.time,
        )?;
        work.awards.push((rule.clone(), *new));
    }
    work.note(format_args!(
        "settled {settled} of {authorized} {} authorized: {new_total} points{}",
        original.amount.currency,
        if available { "" } else { " (pending)" }
    ));
    let lot = record.lot.clone();
    work.records.push(record);
    let mut settlement = reference_record(tx, Some(original.id.clone()));
    settlement.lot = lot;
    work.records.push(settlement);
    Ok(())
}

/// Voids an open authorization: its held points, counters and budget draws.
fn void(
    work: &mut Work<'_>,
    original: &TxRecord,
    time: DateTime<Utc>,
    by: Option<&TxId>,
) -> Result<()> {
    let mut record = original.clone();
    record.status = RecordStatus::Voided { by: by.cloned() };
    if let Some(lot_id) = &record.lot {
        if let Some(lot) = work.lot_mut(lot_id) {
            lot.status = LotStatus::Void;
            lot.remaining = Points::ZERO;
        }
    }
    let source = by.unwrap_or(&original.id).clone();
    let ruleset = record.ruleset.clone();
    for award in &record.awards {
        let delta = Balances {
            available: Points::ZERO,
            pending: award.points.checked_neg()?,
        };
        work.post(
            &source,
            PostingKind::Void,
            &award.rule,
            delta,
            record.lot.as_ref(),
            ruleset.as_ref(),
            time,
        )?;
        work.awards
            .push((award.rule.clone(), award.points.checked_neg()?));
    }
    for c in &mut record.counters {
        let step = c.delta - c.reversed;
        c.reversed = c.delta;
        if !step.is_zero() {
            work.counters.push((c.key.clone(), -step));
        }
    }
    for b in &mut record.budgets {
        let step = b.points.checked_sub(b.returned)?;
        b.returned = b.points;
        if step.get() != 0 {
            work.budgets.push(BudgetDelta {
                budget: b.budget.clone(),
                delta: step.checked_neg()?,
                limit: None,
            });
        }
    }
    work.records.push(record);
    Ok(())
}

fn redeem<'s>(
    state: &'s MemberState,
    redemption: &Redemption,
    open: Option<&'s dyn OpenLots>,
) -> Result<LedgerEntry> {
    if redemption.points.get() <= 0 {
        return Err(Error::Invalid(format!(
            "a redemption must spend a positive number of points, not {}",
            redemption.points
        )));
    }
    let available = state.member.balances.available;
    if redemption.points > available {
        return Err(Error::InsufficientBalance {
            member: redemption.member.clone(),
            requested: redemption.points,
            available: Points(available.get().max(0)),
        });
    }
    let fingerprint = Command::Redeem(redemption).fingerprint()?;
    let mut work = Work::new(
        state,
        redemption.id.clone(),
        EntryKind::Redemption,
        redemption.time,
        None,
    );
    work.open = open;
    let taken = work.take_from_lots(redemption.points, None)?;
    if taken != redemption.points {
        return Err(Error::other(
            format!(
                "member {}: the lots hold {taken} of the {} available points (run reconcile)",
                redemption.member, available
            ),
            None,
        ));
    }
    let rule: Arc<str> = Arc::from("redemption");
    let delta = Balances {
        available: redemption.points.checked_neg()?,
        pending: Points::ZERO,
    };
    let id = redemption.id.clone();
    work.post(
        &id,
        PostingKind::Redeem,
        &rule,
        delta,
        None,
        None,
        redemption.time,
    )?;
    work.awards.push((rule, delta.available));
    if let Some(reference) = &redemption.reference {
        work.note(format_args!("redeemed for {reference}"));
    }
    work.finish(fingerprint)
}

fn adjust(work: &mut Work<'_>, adjustment: &Adjustment) -> Result<()> {
    let rule: Arc<str> = Arc::from("adjustment");
    let points = adjustment.points;
    let id = adjustment.id.clone();
    if points.get() > 0 {
        work.insert_lot(Lot {
            id: id.clone(),
            member: adjustment.member.clone(),
            earned_at: adjustment.time,
            available_at: None,
            expires_at: adjustment.expires_at,
            status: LotStatus::Available,
            granted: points,
            remaining: Points::ZERO,
            expired: Points::ZERO,
            expired_forgiven: Points::ZERO,
        });
        work.credit_lot(&id, points)?;
    } else if points.get() < 0 {
        let wanted = points.checked_neg()?;
        let taken = work.take_from_lots(wanted, None)?;
        let owed = wanted.checked_sub(taken)?;
        if owed.get() > 0 {
            work.note(format_args!("{owed} owed"));
        }
    }
    let lot = (points.get() > 0).then_some(&id);
    let delta = Balances {
        available: points,
        pending: Points::ZERO,
    };
    work.post(
        &id,
        PostingKind::Adjust,
        &rule,
        delta,
        lot,
        None,
        adjustment.time,
    )?;
    work.awards.push((rule, points));
    work.note(format_args!(
        "adjusted {points} by {}: {}",
        adjustment.actor, adjustment.reason
    ));
    Ok(())
}

fn sorted_lots(state: &MemberState, due: impl Fn(&Lot) -> bool) -> Vec<&Lot> {
    let mut lots: Vec<&Lot> = state
        .lots
        .iter()
        .filter(|l| l.member == state.member.member && due(l))
        .collect();
    lots.sort_by(|a, b| a.spend_order().cmp(&b.spend_order()));
    lots.dedup_by(|a, b| a.id == b.id);
    lots
}

fn expire_lots(state: &MemberState, as_of: DateTime<Utc>) -> Result<Option<LedgerEntry>> {
    let due = sorted_lots(state, |l| {
        matches!(l.status, LotStatus::Available | LotStatus::Pending)
            && l.remaining.get() > 0
            && l.expires_at.is_some_and(|at| at <= as_of)
    });
    let Some(first) = due.first() else {
        return Ok(None);
    };
    let mut work = Work::new(state, first.id.clone(), EntryKind::Expiry, as_of, None);
    let rule: Arc<str> = Arc::from("expiry");
    let mut total = Points::ZERO;
    for lot in due {
        let gone = lot.remaining;
        let delta = if lot.status == LotStatus::Available {
            Balances {
                available: gone.checked_neg()?,
                pending: Points::ZERO,
            }
        } else {
            Balances {
                available: Points::ZERO,
                pending: gone.checked_neg()?,
            }
        };
        if let Some(l) = work.lot_mut(&lot.id) {
            l.remaining = Points::ZERO;
            l.expired = l.expired.checked_add(gone)?;
        }
        let time = lot.expires_at.unwrap_or(as_of);
        work.post(
            &lot.id,
            PostingKind::Expire,
            &rule,
            delta,
            Some(&lot.id),
            None,
            time,
        )?;
        total = total.checked_add(gone)?;
    }
    work.note(format_args!("{total} points expired as of {as_of}"));
    work.finish(None).map(Some)
}

fn release_pending(state: &MemberState, as_of: DateTime<Utc>) -> Result<Option<LedgerEntry>> {
    let due = sorted_lots(state, |l| {
        l.status == LotStatus::Pending && l.available_at.is_none_or(|at| at <= as_of)
    });
    let Some(first) = due.first() else {
        return Ok(None);
    };
    let mut work = Work::new(state, first.id.clone(), EntryKind::Release, as_of, None);
    let rule: Arc<str> = Arc::from("release");
    let mut total = Points::ZERO;
    for lot in due {
        let points = lot.remaining;
        if let Some(l) = work.lot_mut(&lot.id) {
            l.status = LotStatus::Available;
            l.remaining = Points::ZERO;
        }
        work.credit_lot(&lot.id, points)?;
        let delta = Balances {
            available: points,
            pending: points.checked_neg()?,
        };
        let time = lot.available_at.unwrap_or(as_of);
        work.post(
            &lot.id,
            PostingKind::Release,
            &rule,
            delta,
            Some(&lot.id),
            None,
            time,
        )?;
        total = total.checked_add(points)?;
    }
    work.note(format_args!("{total} points released as of {as_of}"));
    work.finish(None).map(Some)
}

fn expire_authorizations(state: &MemberState, as_of: DateTime<Utc>) -> Result<Option<LedgerEntry>> {
    let mut lapsed: Vec<&TxRecord> = state
        .records
        .iter()
        .filter(|r| r.member == state.member.member && r.kind == TxKind::Authorization)
        .filter(
            |r| matches!(r.status, RecordStatus::Authorized { expires_at } if expires_at <= as_of),
        )
        .collect();
    lapsed.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    lapsed.dedup_by(|a, b| a.id == b.id);
    let Some(first) = lapsed.first() else {
        return Ok(None);
    };
    let mut work = Work::new(
        state,
        first.id.clone(),
        EntryKind::AuthorizationExpiry,
        as_of,
        None,
    );
    for record in lapsed {
        let RecordStatus::Authorized { expires_at } = record.status else {
            continue;
        };
        void(&mut work, record, expires_at, None)?;
        work.note(format_args!(
            "authorization {} lapsed unsettled at {expires_at}",
            record.id
        ));
    }
    work.finish(None).map(Some)
}

fn review_tier(state: &MemberState, review: &TierReview) -> Result<Option<LedgerEntry>> {
    let mut work = Work::new(
        state,
        TxId::new(format!("tier-review@{}", review.as_of.timestamp()))
            .map_err(|e| Error::other(e.to_string(), None))?,
        EntryKind::TierReview,
        review.as_of,
        None,
    );
    work.record_tier(&review.tier, review.effective, review.as_of);
    if work.tier.is_empty() {
        return Ok(None);
    }
    work.finish(None).map(Some)
}

fn apply_scheduled_tier(state: &MemberState, as_of: DateTime<Utc>) -> Result<Option<LedgerEntry>> {
    let Some(scheduled) = state
        .member
        .scheduled_tier
        .as_ref()
        .filter(|s| s.effective <= as_of)
    else {
        return Ok(None);
    };
    let mut work = Work::new(
        state,
        TxId::new(format!("tier-schedule@{}", scheduled.effective.timestamp()))
            .map_err(|e| Error::other(e.to_string(), None))?,
        EntryKind::TierReview,
        as_of,
        None,
    );
    let to = scheduled.to.clone();
    work.record_tier(&to, scheduled.effective, as_of);
    work.finish(None).map(Some)
}

/// Balances as the lots say: available = remaining of available lots minus
/// the debt a negative stored balance records; pending = remaining of held
/// and pending lots.
pub fn fold_balances_from_lots<'a>(
    lots: impl IntoIterator<Item = &'a Lot>,
    stored: Balances,
) -> Result<Balances> {
    let mut sum = Balances {
        available: Points(stored.available.get().min(0)),
        pending: Points::ZERO,
    };
    for lot in lots {
        match lot.status {
            LotStatus::Available => sum.available = sum.available.checked_add(lot.remaining)?,
            LotStatus::Pending | LotStatus::Held => {
                sum.pending = sum.pending.checked_add(lot.remaining)?
            }
            LotStatus::Void => {}
        }
    }
    Ok(sum)
}

/// Checks one member: their stored balances against the sum of their
/// postings and against their lots. `None` when all three agree.
pub fn check_member<'a>(
    record: &MemberRecord,
    postings: impl IntoIterator<Item = &'a Posting>,
    lots: impl IntoIterator<Item = &'a Lot>,
) -> Result<Option<Drift>> {
    let from_postings = postings
        .into_iter()
        .try_fold(Balances::ZERO, |sum, p| sum.checked_add(p.delta))?;
    let from_lots = fold_balances_from_lots(lots, record.balances)?;
    if from_postings == record.balances && from_lots == record.balances {
        return Ok(None);
    }
    Ok(Some(Drift {
        member: record.member.clone(),
        stored: record.balances,
        from_postings,
        from_lots,
    }))
}

/// The view evaluation sees, from what a store holds. `enrolled` is read
/// from the profile attribute `enrolled` (a `YYYY-MM-DD` text) when present.
pub fn member_view(
    record: Option<&MemberRecord>,
    profile: Option<&crate::member::MemberProfile>,
    counters: std::collections::HashMap<CounterKey, Decimal>,
) -> crate::member::MemberView {
    let attributes = profile.map(|p| p.attributes.clone()).unwrap_or_default();
    let enrolled = match attributes.get("enrolled") {
        Some(crate::transaction::AttrValue::Text(t)) => t.parse().ok(),
        _ => None,
    };
    crate::member::MemberView {
        tier: record.and_then(|r| r.tier.clone()),
        enrolled,
        attributes,
        counters,
        balance: record.map(|r| r.balances.available).unwrap_or_default(),
        version: record.map_or(0, |r| r.version),
    }
}

/// Whether `outcome` was evaluated for `tx` (same id, member and kind).
fn outcome_is_for(outcome: &Outcome, tx: &Transaction) -> bool {
    outcome.tx_id == tx.id && outcome.member == tx.member && outcome.kind == tx.kind
}

/// The outcome's tier change, in the view once it takes effect by the
/// transaction's time (as [`Work::record_tier`] applies it).
fn advance_tier(view: &mut MemberView, tx: &Transaction, outcome: &Outcome) {
    if let Some(change) = &outcome.tier_change {
        if change.effective <= tx.time {
            view.tier = Some(change.to.clone());
        }
    }
}

/// Moves `view` past `tx`: the view the member's next transaction would
/// see once `tx` is applied with `outcome`, without asking the store.
///
/// Only an earn whose effect the outcome fully decides can be predicted: a
/// purchase or authorization with no campaign-budget claim (a budget may be
/// trimmed by other members' draws). Its effect mirrors [`apply`]'s: the
/// version goes up by one, each counter by its delta, the available
/// balance by the points unless the lot is held or pending, and the tier
/// changes when the outcome's change takes effect by the transaction's
/// time. Returns `false` (and leaves `view` as it was) for anything else,
/// or on overflow. The prediction is only as good as its premise (the
/// transaction is applied, not refused or a duplicate), so a caller that
/// evaluates from a predicted view sets [`Outcome::expects_version`] and
/// the store refuses the outcome when the premise failed.
pub fn advance_view(
    view: &mut crate::member::MemberView,
    tx: &Transaction,
    outcome: &Outcome,
) -> bool {
    if !tx.kind.earns() || !outcome.budgets.is_empty() || !outcome_is_for(outcome, tx) {
        return false;
    }
    let Some(version) = view.version.checked_add(1) else {
        return false;
    };
    let Ok(total) = outcome.total_points() else {
        return false;
    };
    if outcome.components.iter().any(|c| c.points.get() < 0) {
        return false;
    }
    let pending = earns_pending(tx, outcome);
    let balance = if pending {
        view.balance
    } else {
        match view.balance.checked_add(total) {
            Ok(b) => b,
            Err(_) => return false,
        }
    };
    // Applied in order: a key named twice ends at the sum of both deltas.
    let mut counters: Vec<(CounterKey, Decimal)> = Vec::with_capacity(outcome.counters.len());
    for c in &outcome.counters {
        if c.delta.is_zero() {
            continue;
        }
        let current = counters
            .iter()
            .rev()
            .find(|(k, _)| *k == c.key)
            .map_or_else(|| view.counter(&c.key), |(_, v)| *v);
        let Some(after) = current.checked_add(c.delta) else {
            return false;
        };
        counters.push((c.key.clone(), after));
    }
    view.version = version;
    view.balance = balance;
    view.counters.extend(counters);
    advance_tier(view, tx, outcome);
    true
}

/// An authorization a member's chain applied and has not settled yet:
/// what [`settle`] will read of its record.
#[derive(Debug, Clone)]
struct ChainedAuthorization {
    id: TxId,
    amount: Money,
    /// Each component's points, in order (the record's awards).
    awards: Vec<Points>,
    /// The record's counters, as recorded (every delta of the outcome).
    counters: Vec<(CounterKey, Decimal)>,
    /// When its lot's points become available (`None`: at once).
    available_at: Option<DateTime<Utc>>,
}

/// [`advance_view`] along one member's run of transactions, which also
/// predicts a settlement of an authorization earlier in the same run.
///
/// A settlement's effect depends on its authorization's record (awards,
/// counters, lot terms), which a view does not hold; when that
/// authorization was itself applied earlier in the run (predicted here),
/// the record is exactly what its outcome made, so the settlement's effect
/// mirrors [`settle`]'s: the version goes up by one, each of the
/// authorization's counters moves by its rescaled delta minus its delta,
/// the available balance gains the rescaled points when the lot is
/// available by the settlement's time, and the settlement's own tier
/// change applies when effective. Anything else that [`advance_view`]
/// cannot predict still ends the run. The same premise holds as for
/// [`advance_view`]: outcomes evaluated from a predicted view carry
/// [`Outcome::expects_version`].
#[derive(Debug, Clone, Default)]
pub struct ViewChain {
    open: Vec<ChainedAuthorization>,
}

impl ViewChain {
    /// A chain that has applied nothing yet.
    pub fn new() -> ViewChain {
        ViewChain::default()
    }

    /// Moves `view` past `tx` (see [`advance_view`]); `false` (and `view`
    /// unchanged) when nothing can be predicted.
    pub fn advance(&mut self, view: &mut MemberView, tx: &Transaction, outcome: &Outcome) -> bool {
        if tx.kind == TxKind::Settlement {
            return self.settle(view, tx, outcome);
        }
        if !advance_view(view, tx, outcome) {
            return false;
        }
        if tx.kind == TxKind::Authorization {
            self.open.push(ChainedAuthorization {
                id: tx.id.clone(),
                amount: tx.amount,
                awards: outcome.components.iter().map(|c| c.points).collect(),
                counters: outcome
                    .counters
                    .iter()
                    .map(|c| (c.key.clone(), c.delta))
                    .collect(),
                available_at: outcome.lot.available_at,
            });
        }
        true
    }

    fn settle(&mut self, view: &mut MemberView, tx: &Transaction, outcome: &Outcome) -> bool {
        if !outcome_is_for(outcome, tx) {
            return false;
        }
        let Some(original) = &tx.original_id else {
            return false;
        };
        let Some(at) = self.open.iter().position(|a| &a.id == original) else {
            return false;
        };
        let auth = &self.open[at];
        if auth.amount.currency != tx.amount.currency {
            return false;
        }
        let Some(next) = predict_settlement(view, tx, outcome, auth) else {
            return false;
        };
        *view = next;
        self.open.swap_remove(at);
        true
    }
}

/// The view after `tx` settles `auth` (see [`ViewChain`]), or `None` on
/// overflow.
fn predict_settlement(
    view: &MemberView,
    tx: &Transaction,
    outcome: &Outcome,
    auth: &ChainedAuthorization,
) -> Option<MemberView> {
    let (authorized, settled) = (auth.amount.amount, tx.amount.amount);
    let mut new_total = Points::ZERO;
    for points in &auth.awards {
        new_total = new_total
            .checked_add(scale_points(*points, settled, authorized).ok()?)
            .ok()?;
    }
    let mut next = view.clone();
    next.version = view.version.checked_add(1)?;
    // A lot exists when the authorization earned points; its points become
    // available at settlement when its terms allow by then.
    let earned = auth
        .awards
        .iter()
        .try_fold(Points::ZERO, |sum, p| sum.checked_add(*p))
        .ok()?;
    let available = auth.available_at.is_none_or(|at| at <= tx.time);
    if earned.get() > 0 && available {
        next.balance = next.balance.checked_add(new_total).ok()?;
    }
    for (key, delta) in &auth.counters {
        let step = scale_decimal(*delta, settled, authorized).ok()? - *delta;
        if step.is_zero() {
            continue;
        }
        let after = next.counter(key).checked_add(step)?;
        next.counters.insert(key.clone(), after);
    }
    advance_tier(&mut next, tx, outcome);
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    #[test]
    fn scaling_is_exact_integer_arithmetic() {
        // Large values stay exact: floor(1e12 × 999999999999.99 / 1e12).
        let big = 1_000_000_000_000i64;
        let scaled =
            scale_points(Points(big), dec!(999999999999.99), dec!(1000000000000.00)).unwrap();
        assert_eq!(scaled, Points(big - 1));
        assert_eq!(
            scale_points(Points(7), dec!(1), dec!(3)).unwrap(),
            Points(2)
        );
        assert_eq!(
            scale_points(Points(7), dec!(3), dec!(3)).unwrap(),
            Points(7)
        );
        assert_eq!(
            scale_points(Points(7), dec!(4), dec!(3)).unwrap(),
            Points(7)
        );
        assert_eq!(
            scale_points(Points(7), dec!(0), dec!(3)).unwrap(),
            Points(0)
        );
        assert_eq!(
            scale_points(Points(7), dec!(1), dec!(0)).unwrap(),
            Points(7)
        );
        // Mixed scales: 2.5 of 10.000.
        assert_eq!(
            scale_points(Points(10), dec!(2.5), dec!(10.000)).unwrap(),
            Points(2)
        );
        // Counters keep their scale and round toward zero.
        assert_eq!(
            scale_decimal(dec!(70.00), dec!(1), dec!(3)).unwrap(),
            dec!(23.33)
        );
        assert_eq!(
            scale_decimal(dec!(-70.00), dec!(1), dec!(3)).unwrap(),
            dec!(-23.33)
        );
        assert_eq!(scale_decimal(dec!(5), dec!(1), dec!(2)).unwrap(), dec!(2));
    }

    proptest! {
        /// However a purchase is refunded in parts, the cumulative clawback
        /// is never more than the award and exactly the award at the end.
        #[test]
        fn cumulative_clawback_never_exceeds_and_completes(
            points in 0i64..1_000_000,
            cuts in prop::collection::vec(1u32..100_000, 1..12),
        ) {
            let total_cents: u64 = cuts.iter().map(|c| u64::from(*c)).sum();
            let amount = Decimal::new(total_cents as i64, 2);
            let mut refunded = Decimal::ZERO;
            let mut clawed = Points::ZERO;
            for cut in &cuts {
                refunded += Decimal::new(i64::from(*cut), 2);
                let target = scale_points(Points(points), refunded, amount).unwrap();
                prop_assert!(target >= clawed, "monotonic");
                clawed = target;
                prop_assert!(clawed.get() <= points);
            }
            prop_assert_eq!(clawed, Points(points));
        }
    }
}
