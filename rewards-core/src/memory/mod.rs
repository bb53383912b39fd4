//! The in-memory store: the embedded default implementation of
//! [`LedgerStore`], and [`MemoryCache`], an in-memory [`BalanceCache`].
//!
//! Each member's state sits behind its own mutex (a member map under a
//! read-write lock hands out the slots), so writers of different members run
//! in parallel and writers of one member are serialised. The idempotency
//! inbox is a sharded map; budgets have their own mutex. Locks are std
//! mutexes held only for the pure [`apply`] and the fold that follows —
//! never across an `.await` — always in the order member → inbox shard →
//! budgets → event log, so there is no deadlock.
//!
//! With an [`EventLog`] (see [`log`]), every entry and profile is written
//! to the log before it is applied to memory; [`MemoryStore::open`] rebuilds
//! the whole state by folding the logged entries again (event sourcing).

pub mod log;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::error::{Error, ReferenceProblem, Result};
use crate::ids::{MemberId, TxId};
use crate::ledger::{
    apply, apply_with_open_lots, check_inbox, check_member, member_view, Adjustment, AuditEvent,
    BudgetDelta, Command, InboxEntry, LedgerConfig, LedgerEntry, Lot, LotNeed, LotStatus,
    MemberBalance, MemberRecord, MemberState, Needs, OpenLots, Posting, Receipt, RecentEntry,
    ReconcileReport, RecordNeed, RecordStatus, Redemption, SweepReport, TierReview, TxRecord,
};
use crate::member::{MemberProfile, MemberView};
use crate::outcome::Outcome;
use crate::points::Points;
use crate::store::{
    BalanceCache, CachePut, CachedMember, LedgerStore, OutboxEvent, TierView, MAX_BATCH_ITEMS,
    MAX_PAGE_ROWS,
};
use crate::transaction::Transaction;
use crate::window::CounterKey;

pub use log::{EventLog, FileEventLog, FsyncPolicy, LogRecord};

const INBOX_SHARDS: usize = 32;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held cannot leave half an entry behind: the
    // entry is computed before anything is changed. Keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the store holds about one member.
#[derive(Debug, Default)]
struct MemberSlot {
    record: Option<MemberRecord>,
    profile: Option<MemberProfile>,
    lots: BTreeMap<TxId, Lot>,
    /// The lots that can be spent (status `available`, `remaining > 0`),
    /// in [`Lot::spend_order`]: spending a few points takes the first few
    /// in O(log n) instead of copying and sorting every open lot.
    open: BTreeMap<SpendKey, TxId>,
    records: HashMap<TxId, TxRecord>,
    postings: Vec<Posting>,
    events: Vec<AuditEvent>,
    counters: HashMap<CounterKey, Decimal>,
}

/// [`Lot::spend_order`] as an owned key.
type SpendKey = (bool, Option<DateTime<Utc>>, DateTime<Utc>, TxId);

fn spend_key(lot: &Lot) -> Option<SpendKey> {
    (lot.status == LotStatus::Available && lot.remaining.get() > 0).then(|| {
        (
            lot.expires_at.is_none(),
            lot.expires_at,
            lot.earned_at,
            lot.id.clone(),
        )
    })
}

/// The slot's spendable lots in spend order, handed to the ledger lazily.
struct SlotOpenLots<'a> {
    slot: &'a MemberSlot,
}

impl OpenLots for SlotOpenLots<'_> {
    fn in_spend_order(&self) -> Box<dyn Iterator<Item = &Lot> + '_> {
        let lots = &self.slot.lots;
        Box::new(self.slot.open.values().filter_map(move |id| lots.get(id)))
    }
}

impl MemberSlot {
    /// The state `command` needs (a superset is fine; lots and records are
    /// cloned so that `apply` works on its own copy). With `lazy`, only the
    /// lots of the records are loaded: the open lots are handed to the
    /// ledger through [`SlotOpenLots`] instead.
    fn state(
        &self,
        member: &MemberId,
        needs: &Needs,
        lazy: bool,
        budgets: &HashMap<Arc<str>, Points>,
    ) -> MemberState {
        let mut state = MemberState::new(member.clone());
        if let Some(record) = &self.record {
            state.member = record.clone();
        }
        match &needs.records {
            RecordNeed::None => {}
            RecordNeed::Original(id) => {
                if let Some(record) = self.records.get(id) {
                    if let Some(target) = record.alias_of.as_ref().and_then(|t| self.records.get(t))
                    {
                        state.records.push(target.clone());
                    }
                    state.records.push(record.clone());
                }
            }
            RecordNeed::LapsedAuthorizations(as_of) => {
                state.records.extend(
                    self.records
                        .values()
                        .filter(|r| {
                            matches!(r.status, RecordStatus::Authorized { expires_at } if expires_at <= *as_of)
                        })
                        .cloned(),
                );
            }
        }
        // The lots of the loaded records, looked up by id.
        let mut of_records: Vec<Lot> = Vec::new();
        for id in state.records.iter().filter_map(|r| r.lot.as_ref()) {
            if of_records.iter().any(|l| &l.id == id) {
                continue;
            }
            if let Some(lot) = self.lots.get(id) {
                of_records.push(lot.clone());
            }
        }
        state.lots = match needs.lots {
            LotNeed::None => Vec::new(),
            LotNeed::OfRecords => of_records,
            LotNeed::Open if lazy => of_records,
            LotNeed::Open => {
                let mut lots: Vec<Lot> = self
                    .lots
                    .values()
                    .filter(|l| l.remaining.get() > 0 && !of_records.iter().any(|r| r.id == l.id))
                    .cloned()
                    .collect();
                lots.extend(of_records);
                lots
            }
        };
        state.budgets_used = needs
            .budgets
            .iter()
            .map(|b| (b.clone(), budgets.get(b).copied().unwrap_or(Points::ZERO)))
            .collect();
        state
    }

    /// Upserts a lot, keeping the spend-order index in step.
    fn put_lot(&mut self, lot: &Lot) {
        if let Some(key) = self.lots.get(&lot.id).and_then(spend_key) {
            self.open.remove(&key);
        }
        if let Some(key) = spend_key(lot) {
            self.open.insert(key, lot.id.clone());
        }
        self.lots.insert(lot.id.clone(), lot.clone());
    }

    /// Folds an entry into the slot (live, and when rebuilding from the log).
    fn fold(&mut self, entry: &LedgerEntry) -> Result<()> {
        let version = self.record.as_ref().map_or(0, |r| r.version);
        if entry.expected_version != version {
            return Err(Error::other(
                format!(
                    "entry for {} expects version {}, the member is at {version}",
                    entry.member.member, entry.expected_version
                ),
                None,
            ));
        }
        self.record = Some(entry.member.clone());
        self.postings.extend(entry.postings.iter().cloned());
        for lot in &entry.lots {
            self.put_lot(lot);
        }
        for record in &entry.records {
            self.records.insert(record.id.clone(), record.clone());
        }
        for (key, delta) in &entry.counters {
            *self.counters.entry(key.clone()).or_default() += *delta;
        }
        self.events.push(entry.event.clone());
        if self.profile.is_none() {
            self.profile = Some(MemberProfile::empty(entry.member.member.clone()));
        }
        Ok(())
    }
}

/// The in-memory [`LedgerStore`], optionally backed by an event-log file.
pub struct MemoryStore {
    config: LedgerConfig,
    members: RwLock<HashMap<MemberId, Arc<Mutex<MemberSlot>>>>,
    /// Every member id with a slot, in id order (for
    /// [`LedgerStore::members_after`]). Written only while `members` is
    /// write-locked, when a slot is created; never locked while a member
    /// lock or `members` is wanted.
    ids: RwLock<BTreeSet<MemberId>>,
    inbox: Vec<Mutex<HashMap<TxId, InboxEntry>>>,
    budgets: Mutex<HashMap<Arc<str>, Points>>,
    log: Option<Mutex<Box<dyn EventLog>>>,
    outbox: Mutex<Outbox>,
}

/// The transactional outbox: events of applied requests not yet
/// acknowledged. Positions are given in application order (under the
/// member's lock), so a rebuild from the log gives every event its old
/// `seq` again, and logged acknowledgements drop the same ones.
#[derive(Debug, Default)]
struct Outbox {
    last: u64,
    events: BTreeMap<u64, OutboxEvent>,
}

impl Outbox {
    fn add(&mut self, entry: &LedgerEntry) {
        if entry.inbox.is_some() {
            self.last += 1;
            if let Some(event) = OutboxEvent::of_entry(self.last, entry) {
                self.events.insert(self.last, event);
            }
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("config", &self.config)
            .field("logged", &self.log.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore::new(LedgerConfig::default())
    }
}

impl MemoryStore {
    /// An empty store without an event log.
    pub fn new(config: LedgerConfig) -> MemoryStore {
        MemoryStore {
            config,
            members: RwLock::new(HashMap::new()),
            ids: RwLock::new(BTreeSet::new()),
            inbox: (0..INBOX_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            budgets: Mutex::new(HashMap::new()),
            log: None,
            outbox: Mutex::new(Outbox::default()),
        }
    }

    /// A store rebuilt from `records` (read from a log), writing new
    /// records to `log`.
    pub fn with_log(
        config: LedgerConfig,
        records: Vec<LogRecord>,
        log: Box<dyn EventLog>,
    ) -> Result<MemoryStore> {
        let mut store = MemoryStore::new(config);
        for record in &records {
            store.fold(record)?;
        }
        store.log = Some(Mutex::new(log));
        Ok(store)
    }

    /// Opens (creating if needed) the event-log file at `path` and rebuilds
    /// the store from it.
    pub fn open(path: &Path, config: LedgerConfig, fsync: FsyncPolicy) -> Result<MemoryStore> {
        let (log, records) = FileEventLog::open(path, fsync).map_err(|e| {
            let message = format!("cannot open the event log {}", path.display());
            if e.kind() == std::io::ErrorKind::InvalidData {
                // A corrupt log: retrying will not help.
                Error::other(message, Some(Box::new(e) as _))
            } else {
                Error::unavailable(message, Some(Box::new(e) as _))
            }
        })?;
        MemoryStore::with_log(config, records, Box::new(log))
    }

    /// Every member the store knows, sorted.
    pub fn members(&self) -> Vec<MemberId> {
        self.all_slots().into_iter().map(|(m, _)| m).collect()
    }

    /// A member's lots (inspection for tests and tools).
    pub fn lots(&self, member: &MemberId) -> Vec<Lot> {
        self.slot(member)
            .map(|slot| lock(&slot).lots.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A member's transaction records (inspection for tests and tools).
    pub fn records(&self, member: &MemberId) -> Vec<TxRecord> {
        let mut records: Vec<TxRecord> = self
            .slot(member)
            .map(|slot| lock(&slot).records.values().cloned().collect())
            .unwrap_or_default();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records
    }

    /// The ledger settings.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    fn slot(&self, member: &MemberId) -> Option<Arc<Mutex<MemberSlot>>> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(member)
            .cloned()
    }

    fn slot_or_new(&self, member: &MemberId) -> Arc<Mutex<MemberSlot>> {
        if let Some(slot) = self.slot(member) {
            return slot;
        }
        let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = members.get(member) {
            return slot.clone();
        }
        let slot = Arc::new(Mutex::new(MemberSlot::default()));
        members.insert(member.clone(), slot.clone());
        self.ids
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(member.clone());
        slot
    }

    fn all_slots(&self) -> Vec<(MemberId, Arc<Mutex<MemberSlot>>)> {
        let mut slots: Vec<_> = self
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(m, s)| (m.clone(), s.clone()))
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        slots
    }

    fn shard(&self, id: &TxId) -> &Mutex<HashMap<TxId, InboxEntry>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        &self.inbox[(hasher.finish() as usize) % INBOX_SHARDS]
    }

    fn write_log(&self, record: &LogRecord) -> Result<()> {
        if let Some(log) = &self.log {
            let unavailable =
                |e| Error::unavailable("cannot write the event log", Some(Box::new(e) as _));
            // Encode before taking the log's lock: only the write is serialised.
            let line = log::encode(record).map_err(unavailable)?;
            lock(log)
                .append_encoded(&line, record)
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Folds one logged record into memory (rebuild).
    fn fold(&mut self, record: &LogRecord) -> Result<()> {
        match record {
            LogRecord::Profile(profile) => {
                let slot = self.slot_or_new(&profile.member);
                lock(&slot).profile = Some(profile.clone());
            }
            LogRecord::Entry(entry) => {
                let slot = self.slot_or_new(&entry.member.member);
                lock(&slot).fold(entry)?;
                self.fold_shared(entry);
                lock(&self.outbox).add(entry);
            }
            LogRecord::OutboxAck(seqs) => {
                let mut outbox = lock(&self.outbox);
                for seq in seqs {
                    outbox.events.remove(seq);
                }
            }
        }
        Ok(())
    }

    /// Folds the cross-member parts of an entry: inbox row and budgets.
    fn fold_shared(&self, entry: &LedgerEntry) {
        if let Some(inbox) = &entry.inbox {
            lock(self.shard(&inbox.id)).insert(inbox.id.clone(), inbox.clone());
        }
        if !entry.budgets.is_empty() {
            add_budget_deltas(&mut lock(&self.budgets), &entry.budgets);
        }
    }

    /// Runs one command under the member's lock: inbox check, apply, log,
    /// fold. Budgets read to trim claims stay locked until the entry is
    /// folded (also across the log write), so two writers never both see
    /// the same room.
    fn execute(&self, command: &Command<'_>) -> Result<Executed> {
        let member = command.member().clone();
        let slot = self.slot_or_new(&member);
        let mut slot = lock(&slot);
        let needs = command.needs();
        if let RecordNeed::Original(original) = &needs.records {
            self.check_foreign(command, original, &slot)?;
        }
        let fingerprint = command.fingerprint()?;
        let mut inbox = command.request_id().map(|id| (id, lock(self.shard(id))));
        if let (Some((id, shard)), Some(fingerprint)) = (&inbox, &fingerprint) {
            if let Some(receipt) = check_inbox(shard.get(*id), fingerprint)? {
                return Ok(Executed::Duplicate(receipt));
            }
        }
        let mut budgets = (!needs.budgets.is_empty()).then(|| lock(&self.budgets));
        let empty = HashMap::new();
        let lazy = command.spends_open_lots_in_order();
        let state = slot.state(&member, &needs, lazy, budgets.as_deref().unwrap_or(&empty));
        let applied = if lazy {
            apply_with_open_lots(&state, command, &self.config, &SlotOpenLots { slot: &slot })?
        } else {
            apply(&state, command, &self.config)?
        };
        let Some(entry) = applied else {
            return Ok(Executed::Nothing(state.member));
        };
        self.write_log(&LogRecord::Entry(Box::new(entry.clone())))?;
        slot.fold(&entry)?;
        // Still under the member's lock: the member's events get
        // increasing positions in version order.
        lock(&self.outbox).add(&entry);
        if let (Some((_, shard)), Some(row)) = (&mut inbox, &entry.inbox) {
            shard.insert(row.id.clone(), row.clone());
        }
        if !entry.budgets.is_empty() {
            let mut guard = match budgets.take() {
                Some(guard) => guard,
                None => lock(&self.budgets),
            };
            add_budget_deltas(&mut guard, &entry.budgets);
        }
        Ok(Executed::Applied(Box::new(entry)))
    }

    /// A transaction naming an original of another member: the inbox
    /// knows the owner (read before this request's own shard is locked, so
    /// that two shard locks are never held at once).
    fn check_foreign(
        &self,
        command: &Command<'_>,
        original: &TxId,
        slot: &MemberSlot,
    ) -> Result<()> {
        let Command::Transaction { tx, .. } = command else {
            return Ok(());
        };
        if slot.records.contains_key(original) {
            return Ok(());
        }
        let owner = lock(self.shard(original))
            .get(original)
            .map(|e| e.member.clone());
        match owner {
            Some(owner) if owner != tx.member => Err(Error::reference(
                &tx.id,
                original,
                ReferenceProblem::OtherMember(owner),
            )),
            _ => Ok(()),
        }
    }

    fn receipt(&self, command: &Command<'_>) -> Result<Receipt> {
        match self.execute(command)? {
            Executed::Duplicate(receipt) => Ok(receipt),
            Executed::Applied(entry) => entry
                .receipt()
                .cloned()
                .ok_or_else(|| Error::other("a request entry without a receipt", None)),
            Executed::Nothing(_) => Err(Error::other("a request produced no entry", None)),
        }
    }

    fn sweep(&self, make: impl Fn(&MemberId) -> Command<'_>) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        for (member, _) in self.all_slots() {
            if let Executed::Applied(entry) = self.execute(&make(&member))? {
                report.members += 1;
                report.postings += entry.postings.len() as u64;
                report.delta = report.delta.checked_add(entry.event.delta)?;
            }
        }
        Ok(report)
    }

    /// The member's view and scheduled tier change as of now.
    fn tier_view_now(&self, member: &MemberId, counters: &[CounterKey]) -> TierView {
        let Some(slot) = self.slot(member) else {
            return TierView {
                view: member_view(None, None, HashMap::new()),
                scheduled: None,
            };
        };
        let slot = lock(&slot);
        let values = counters
            .iter()
            .filter_map(|k| slot.counters.get(k).map(|v| (k.clone(), *v)))
            .collect();
        TierView {
            view: member_view(slot.record.as_ref(), slot.profile.as_ref(), values),
            scheduled: slot.record.as_ref().and_then(|r| r.scheduled_tier.clone()),
        }
    }

    fn read<T>(&self, member: &MemberId, f: impl FnOnce(&MemberSlot) -> Option<T>) -> Result<T> {
        let slot = self
            .slot(member)
            .ok_or_else(|| Error::not_found(format!("member {member}")))?;
        let slot = lock(&slot);
        f(&slot).ok_or_else(|| Error::not_found(format!("member {member}")))
    }
}

fn add_budget_deltas(used: &mut HashMap<Arc<str>, Points>, deltas: &[BudgetDelta]) {
    for b in deltas {
        let points = used.entry(b.budget.clone()).or_default();
        *points = Points(points.get().saturating_add(b.delta.get()));
    }
}

/// What [`MemoryStore::execute`] did.
enum Executed {
    Applied(Box<LedgerEntry>),
    Duplicate(Receipt),
    Nothing(MemberRecord),
}

fn balance_of(record: &MemberRecord) -> MemberBalance {
    MemberBalance {
        member: record.member.clone(),
        balances: record.balances,
        tier: record.tier.clone(),
        version: record.version,
    }
}

impl MemoryStore {
    /// The member's view as of now (never blocks on I/O).
    fn view_now(&self, member: &MemberId, counters: &[CounterKey]) -> MemberView {
        let Some(slot) = self.slot(member) else {
            return member_view(None, None, HashMap::new());
        };
        let slot = lock(&slot);
        let values = counters
            .iter()
            .filter_map(|k| slot.counters.get(k).map(|v| (k.clone(), *v)))
            .collect();
        member_view(slot.record.as_ref(), slot.profile.as_ref(), values)
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn member_view(&self, member: &MemberId, counters: &[CounterKey]) -> Result<MemberView> {
        Ok(self.view_now(member, counters))
    }

    async fn member_views(
        &self,
        requests: &[(MemberId, Vec<CounterKey>)],
    ) -> Result<Vec<MemberView>> {
        Ok(requests
            .iter()
            .map(|(member, counters)| self.view_now(member, counters))
            .collect())
    }

    async fn outbox_fetch(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        let outbox = lock(&self.outbox);
        Ok(outbox
            .events
            .values()
            .take(limit.min(MAX_PAGE_ROWS))
            .cloned()
            .collect())
    }

    async fn outbox_ack(&self, seqs: &[u64]) -> Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        // Logged first, so that a rebuild does not publish them again.
        self.write_log(&LogRecord::OutboxAck(seqs.to_vec()))?;
        let mut outbox = lock(&self.outbox);
        Ok(seqs
            .iter()
            .filter(|seq| outbox.events.remove(seq).is_some())
            .count() as u64)
    }

    async fn append(&self, tx: &Transaction, outcome: &Outcome) -> Result<Receipt> {
        self.receipt(&Command::Transaction { tx, outcome })
    }

    async fn append_batch(&self, items: &[(Transaction, Outcome)]) -> Result<Vec<Result<Receipt>>> {
        if items.len() > MAX_BATCH_ITEMS {
            return Err(Error::Invalid(format!(
                "a batch holds at most {MAX_BATCH_ITEMS} items, not {}",
                items.len()
            )));
        }
        Ok(items
            .iter()
            .map(|(tx, outcome)| self.receipt(&Command::Transaction { tx, outcome }))
            .collect())
    }

    async fn redeem(&self, redemption: &Redemption) -> Result<Receipt> {
        self.receipt(&Command::Redeem(redemption))
    }

    async fn adjust(&self, adjustment: &Adjustment) -> Result<Receipt> {
        self.receipt(&Command::Adjust(adjustment))
    }

    async fn expire_due(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        self.sweep(|member| Command::ExpireLots { member, as_of })
    }

    async fn release_pending(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        self.sweep(|member| Command::ReleasePending { member, as_of })
    }

    async fn expire_authorizations(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        self.sweep(|member| Command::ExpireAuthorizations { member, as_of })
    }

    async fn review_tier(&self, review: &TierReview) -> Result<MemberBalance> {
        match self.execute(&Command::ReviewTier(review))? {
            Executed::Applied(entry) => Ok(balance_of(&entry.member)),
            Executed::Nothing(record) => Ok(balance_of(&record)),
            Executed::Duplicate(_) => Err(Error::other("a tier review has no inbox row", None)),
        }
    }

    async fn apply_scheduled_tiers(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        self.sweep(|member| Command::ApplyScheduledTier { member, as_of })
    }

    async fn members_after(&self, after: Option<&MemberId>, limit: usize) -> Result<Vec<MemberId>> {
        use std::ops::Bound;
        let limit = limit.min(MAX_PAGE_ROWS);
        let mut out = Vec::with_capacity(limit);
        let mut from = after.cloned();
        while out.len() < limit {
            // Candidates first, under the id lock alone (a slot is created
            // with `members` write-locked and then `ids`: never the reverse).
            let candidates: Vec<MemberId> = {
                let ids = self.ids.read().unwrap_or_else(PoisonError::into_inner);
                let range = match &from {
                    Some(a) => ids.range((Bound::Excluded(a.clone()), Bound::Unbounded)),
                    None => ids.range::<MemberId, _>(..),
                };
                range.take(limit - out.len()).cloned().collect()
            };
            let Some(last) = candidates.last().cloned() else {
                break;
            };
            // A slot left by a refused request holds nothing: not a member.
            out.extend(candidates.into_iter().filter(|m| {
                self.slot(m).is_some_and(|slot| {
                    let slot = lock(&slot);
                    slot.record.is_some() || slot.profile.is_some()
                })
            }));
            from = Some(last);
        }
        Ok(out)
    }

    async fn tier_views(
        &self,
        members: &[MemberId],
        counters: &[CounterKey],
    ) -> Result<Vec<TierView>> {
        crate::store::check_tier_view_request(members.len())?;
        Ok(members
            .iter()
            .map(|m| self.tier_view_now(m, counters))
            .collect())
    }

    async fn balance(&self, member: &MemberId) -> Result<MemberBalance> {
        self.read(member, |slot| slot.record.as_ref().map(balance_of))
    }

    async fn recent(&self, member: &MemberId, limit: usize) -> Result<Vec<RecentEntry>> {
        let limit = limit.min(MAX_PAGE_ROWS);
        self.read(member, |slot| {
            slot.record.as_ref()?;
            Some(
                slot.events
                    .iter()
                    .rev()
                    .take(limit)
                    .map(RecentEntry::from)
                    .collect(),
            )
        })
    }

    async fn history(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>> {
        let limit = limit.min(MAX_PAGE_ROWS);
        self.read(member, |slot| {
            slot.record.as_ref()?;
            // Postings are stored in seq order, from 1 without gaps.
            let start = usize::try_from(after_seq)
                .unwrap_or(usize::MAX)
                .min(slot.postings.len());
            Some(slot.postings[start..].iter().take(limit).cloned().collect())
        })
    }

    async fn audit(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let limit = limit.min(MAX_PAGE_ROWS);
        self.read(member, |slot| {
            slot.record.as_ref()?;
            let start = usize::try_from(after_seq)
                .unwrap_or(usize::MAX)
                .min(slot.events.len());
            Some(slot.events[start..].iter().take(limit).cloned().collect())
        })
    }

    async fn put_profile(&self, profile: &MemberProfile) -> Result<()> {
        let slot = self.slot_or_new(&profile.member);
        let mut slot = lock(&slot);
        self.write_log(&LogRecord::Profile(profile.clone()))?;
        slot.profile = Some(profile.clone());
        Ok(())
    }

    async fn profile(&self, member: &MemberId) -> Result<MemberProfile> {
        let slot = self
            .slot(member)
            .ok_or_else(|| Error::not_found(format!("profile {member}")))?;
        let slot = lock(&slot);
        slot.profile
            .clone()
            .ok_or_else(|| Error::not_found(format!("profile {member}")))
    }

    async fn budget_used(&self, budget: &str) -> Result<Points> {
        Ok(lock(&self.budgets)
            .get(budget)
            .copied()
            .unwrap_or(Points::ZERO))
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        for (_, slot) in self.all_slots() {
            let slot = lock(&slot);
            let Some(record) = &slot.record else {
                continue;
            };
            report.members += 1;
            report.postings += slot.postings.len() as u64;
            if let Some(drift) = check_member(record, &slot.postings, slot.lots.values())? {
                report.drift.push(drift);
            }
        }
        Ok(report)
    }
}

/// An in-memory [`BalanceCache`] (tests, and a single-process deployment
/// that wants the cache semantics without Redis).
#[derive(Debug, Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<MemberId, CacheSlot>>,
}

#[derive(Debug)]
enum CacheSlot {
    Value(CachedMember),
    Evicted { min_version: u64 },
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> MemoryCache {
        MemoryCache::default()
    }
}

#[async_trait]
impl BalanceCache for MemoryCache {
    async fn get(&self, member: &MemberId) -> Result<Option<CachedMember>> {
        Ok(match lock(&self.entries).get(member) {
            Some(CacheSlot::Value(v)) => Some(v.clone()),
            _ => None,
        })
    }

    async fn put(&self, entry: &CachedMember) -> Result<CachePut> {
        let mut entries = lock(&self.entries);
        let floor = match entries.get(&entry.member) {
            Some(CacheSlot::Value(v)) => v.version,
            Some(CacheSlot::Evicted { min_version }) => *min_version,
            None => 0,
        };
        if entry.version < floor {
            return Ok(CachePut::Stale { current: floor });
        }
        entries.insert(entry.member.clone(), CacheSlot::Value(entry.clone()));
        Ok(CachePut::Written)
    }

    async fn evict(&self, member: &MemberId, min_version: u64) -> Result<()> {
        let mut entries = lock(&self.entries);
        let floor = match entries.get(member) {
            Some(CacheSlot::Value(v)) => v.version.max(min_version),
            Some(CacheSlot::Evicted { min_version: m }) => (*m).max(min_version),
            None => min_version,
        };
        entries.insert(member.clone(), CacheSlot::Evicted { min_version: floor });
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        lock(&self.entries).clear();
        Ok(())
    }
}
