//! The write path: one database transaction ("unit") for one or many
//! ledger commands. No business rule lives here: a unit loads what the
//! commands' [`Needs`](rewards_core::ledger::Needs) ask for, calls the
//! core's pure [`apply`] for each command in order (carrying each member's
//! state from one command to the next), and writes every resulting entry
//! with multi-row statements.
//!
//! Round trips per unit, whatever its size: `BEGIN`; one pipelined burst of
//! loads (lock the existing members in id order, inbox rows, originals,
//! ensure and lock the budgets in name order); one more to insert the
//! members that did not exist, only when there are some; one more for lots
//! when a command needs them; one pipelined burst of writes; `COMMIT`.
//!
//! Locks are always taken existing members first (sorted by id), then
//! budgets (sorted by name), so units never deadlock on the rows they load.
//! New member rows come last, inserted in id order: an insert waits only on
//! another unit inserting the same id, and that unit (past its loads) waits
//! on nothing this one holds; a member another unit created meanwhile makes
//! the unit run again. A refund returning points to a budget it did not
//! lock may still meet a deadlock, which PostgreSQL breaks and the caller
//! retries ([`PgError::Retry`]).

use chrono::{DateTime, Utc};
use deadpool_postgres::Client as Transaction;
use rewards_core::error::{Error, ReferenceProblem};
use rewards_core::ledger::{
    apply, check_inbox, Balances, Command, InboxEntry, LedgerConfig, LedgerEntry, Lot, LotNeed,
    MemberRecord, MemberState, Needs, Receipt, RecordNeed, RecordStatus, TxRecord,
};
use rewards_core::{MemberId, Points, RulesetStamp, TxId, TxKind};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::{btree_map, BTreeMap, HashMap};
use std::sync::Arc;
use tokio_postgres::Row;

use super::codec::{
    entry_kind_str, from_json, from_text, lot_status, lot_status_str, member_id, points,
    posting_kind_str, ruleset_stamp, to_i64, to_json, to_text, to_u64, tx_id,
};
use super::error::PgError;
use super::sql::Sql;

/// What one command did.
#[derive(Debug)]
pub(crate) enum Done {
    /// Its entry was written.
    Applied(Box<LedgerEntry>),
    /// It repeats an earlier identical request: its stored receipt.
    Duplicate(Receipt),
    /// Nothing to do (a sweep or review with nothing due); the member row.
    Nothing(MemberRecord),
}

/// Why a whole unit was rolled back.
#[derive(Debug)]
pub(crate) enum UnitError {
    /// A database error.
    Pg(PgError),
    /// Another writer got in between the loads and the writes (a request id
    /// inserted concurrently for another member): run again.
    Race(&'static str),
}

impl From<PgError> for UnitError {
    fn from(e: PgError) -> UnitError {
        UnitError::Pg(e)
    }
}

/// The interned ruleset stamps, shared by every unit of a store.
pub(crate) type RulesetCache = std::sync::RwLock<HashMap<RulesetStamp, i32>>;

/// A member as loaded, then as changed command by command.
struct Member {
    key: i64,
    start_version: u64,
    record: MemberRecord,
    lots: BTreeMap<TxId, Lot>,
    records: BTreeMap<TxId, TxRecord>,
    changed: bool,
}

/// An inbox row known to the unit (loaded, or written by an earlier command).
struct Inboxed {
    fingerprint: [u8; 32],
    receipt: Receipt,
}

/// Rows to write, gathered from every entry of the unit.
#[derive(Default)]
struct Writes {
    inbox: Vec<(TxId, i64, [u8; 32], Receipt)>,
    records: BTreeMap<TxId, (i64, TxRecord)>,
    postings: Vec<(i64, rewards_core::ledger::Posting)>,
    /// Each lot the unit changed: as it is now, and as stored before the
    /// unit (`None`: created by the unit, inserted).
    lots: BTreeMap<(i64, TxId), (Lot, Option<Lot>)>,
    counters: BTreeMap<(i64, Arc<str>, String), Decimal>,
    budgets: BTreeMap<Arc<str>, (i64, Option<i64>)>,
    events: Vec<StoredEvent>,
    /// Outbox pointers (member key, event seq), in application order.
    outbox: Vec<(i64, i64)>,
}

impl Writes {
    /// Every ruleset stamp the rows name (postings, records, events): each
    /// is written as its interned key.
    fn stamps(&self) -> impl Iterator<Item = &RulesetStamp> {
        let postings = self.postings.iter().filter_map(|(_, p)| p.ruleset.as_ref());
        let records = self
            .records
            .values()
            .filter_map(|(_, r)| r.ruleset.as_ref());
        let events = self.events.iter().filter_map(|e| e.event.ruleset.as_ref());
        postings.chain(records).chain(events)
    }
}

/// An audit event with what its row keeps beside the JSON body, so that
/// the outbox row can be a pointer to it (migration 5).
struct StoredEvent {
    key: i64,
    event: rewards_core::ledger::AuditEvent,
    /// The member's tier after the entry.
    tier: Option<Arc<str>>,
    /// The seq of the entry's first posting, and how many it made.
    postings: Option<(u64, usize)>,
}

fn pg(context: &'static str) -> impl Fn(tokio_postgres::Error) -> UnitError {
    move |e| UnitError::Pg(PgError::from_pg(context, e))
}

fn record_status(record: &TxRecord) -> (&'static str, Option<DateTime<Utc>>) {
    match &record.status {
        RecordStatus::Posted => ("posted", None),
        RecordStatus::Authorized { expires_at } => ("authorized", Some(*expires_at)),
        RecordStatus::Settled { .. } => ("settled", None),
        RecordStatus::Voided { .. } => ("voided", None),
        RecordStatus::Reference => ("reference", None),
    }
}

fn member_from_row(row: &Row) -> Result<(i64, MemberRecord), PgError> {
    let e = |e| PgError::from_pg("read member row", e);
    let key: i64 = row.try_get(0).map_err(e)?;
    let scheduled: Option<Value> = row.try_get(8).map_err(e)?;
    let tier: Option<String> = row.try_get(6).map_err(e)?;
    let record = MemberRecord {
        member: member_id(row.try_get(1).map_err(e)?, "member id")?,
        version: to_u64(row.try_get(2).map_err(e)?, "member version")?,
        posting_seq: to_u64(row.try_get(3).map_err(e)?, "member posting_seq")?,
        balances: Balances {
            available: points(row.try_get(4).map_err(e)?),
            pending: points(row.try_get(5).map_err(e)?),
        },
        tier: tier.map(Arc::from),
        tier_since: row.try_get(7).map_err(e)?,
        scheduled_tier: scheduled
            .map(|v| from_json(v, "scheduled tier"))
            .transpose()?,
    };
    Ok((key, record))
}

fn lot_from_row(row: &Row, member: &MemberId) -> Result<Lot, PgError> {
    let e = |e| PgError::from_pg("read lot row", e);
    let status: String = row.try_get(5).map_err(e)?;
    Ok(Lot {
        id: tx_id(row.try_get(1).map_err(e)?, "lot id")?,
        member: member.clone(),
        earned_at: row.try_get(2).map_err(e)?,
        available_at: row.try_get(3).map_err(e)?,
        expires_at: row.try_get(4).map_err(e)?,
        status: lot_status(&status)?,
        granted: points(row.try_get(6).map_err(e)?),
        remaining: points(row.try_get(7).map_err(e)?),
        expired: points(row.try_get(8).map_err(e)?),
        expired_forgiven: points(row.try_get(9).map_err(e)?),
    })
}

/// Runs `commands` in one database transaction on `client` and returns one
/// result per command (a refused command writes nothing; the others are
/// committed). On `Err` nothing at all was written.
///
/// `BEGIN` is not a round trip of its own: it is sent in the same pipeline
/// as the loads. The connection is given back to its pool only when the
/// transaction is known to be over (committed or rolled back); if the unit
/// is cancelled or `COMMIT`/`ROLLBACK` fails, the connection is detached
/// from the pool and closed, so no pooled connection is ever left inside a
/// transaction.
pub(crate) async fn run_unit(
    client: deadpool_postgres::Client,
    sql: &Sql,
    config: &LedgerConfig,
    rulesets: &RulesetCache,
    commands: &[Command<'_>],
) -> Result<Vec<Result<Done, Error>>, UnitError> {
    let mut open = OpenTransaction(Some(client));
    let Some(tx) = open.0.as_ref() else {
        return Err(UnitError::Race("no connection"));
    };
    match unit_in(tx, sql, config, rulesets, commands).await {
        Ok((results, new_stamps)) => {
            tx.batch_execute("COMMIT").await.map_err(pg("commit"))?;
            open.ended();
            if !new_stamps.is_empty() {
                let mut cache = rulesets
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                cache.extend(new_stamps);
            }
            Ok(results)
        }
        Err(e) => {
            // Roll back now (not on drop) so that locks are released before
            // the caller retries or falls back to single commands.
            if tx.batch_execute("ROLLBACK").await.is_ok() {
                open.ended();
            }
            Err(e)
        }
    }
}

/// A pooled connection that may be inside a transaction: unless
/// [`OpenTransaction::ended`] was called, dropping it closes the
/// connection instead of returning it to the pool (the server then rolls
/// the transaction back).
struct OpenTransaction(Option<deadpool_postgres::Client>);

impl OpenTransaction {
    /// The transaction is over: the connection may go back to the pool.
    fn ended(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

type UnitOk = (Vec<Result<Done, Error>>, Vec<(RulesetStamp, i32)>);

async fn unit_in(
    tx: &Transaction,
    sql: &Sql,
    config: &LedgerConfig,
    rulesets: &RulesetCache,
    commands: &[Command<'_>],
) -> Result<UnitOk, UnitError> {
    let needs: Vec<Needs> = commands.iter().map(Command::needs).collect();
    let mut member_ids: Vec<&str> = commands.iter().map(|c| c.member().as_str()).collect();
    member_ids.sort_unstable();
    member_ids.dedup();
    let request_ids: Vec<&str> = commands
        .iter()
        .filter_map(|c| c.request_id().map(TxId::as_str))
        .collect();
    let mut original_ids: Vec<&str> = needs
        .iter()
        .filter_map(|n| match &n.records {
            RecordNeed::Original(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    original_ids.sort_unstable();
    original_ids.dedup();
    let lapsed_as_of: Option<DateTime<Utc>> = needs
        .iter()
        .filter_map(|n| match n.records {
            RecordNeed::LapsedAuthorizations(t) => Some(t),
            _ => None,
        })
        .max();
    let lapsed_members: Vec<&str> = commands
        .iter()
        .zip(&needs)
        .filter(|(_, n)| matches!(n.records, RecordNeed::LapsedAuthorizations(_)))
        .map(|(c, _)| c.member().as_str())
        .collect();
    let mut budget_names: Vec<&str> = needs
        .iter()
        .flat_map(|n| n.budgets.iter().map(|b| &**b))
        .collect();
    budget_names.sort_unstable();
    budget_names.dedup();

    // ---- loads: one pipelined burst ----
    let (lock_m, inbox_q, orig_q, lapsed_q, ensure_b, lock_b) = tokio::try_join!(
        tx.prepare_cached(&sql.lock_members),
        tx.prepare_cached(&sql.inbox_rows),
        tx.prepare_cached(&sql.original_rows),
        tx.prepare_cached(&sql.lapsed_records),
        tx.prepare_cached(&sql.ensure_budgets),
        tx.prepare_cached(&sql.lock_budgets),
    )
    .map_err(pg("prepare loads"))?;
    // BEGIN goes first in the same pipeline (futures are first polled in
    // order, and each sends its request on that first poll).
    let ((), mut member_rows, inbox_rows, original_rows, lapsed_rows, _, budget_rows) =
        tokio::try_join!(
            async { tx.batch_execute("BEGIN").await },
            async { tx.query(&lock_m, &[&member_ids]).await },
            async {
                if request_ids.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&inbox_q, &[&request_ids]).await
                }
            },
            async {
                if original_ids.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&orig_q, &[&original_ids]).await
                }
            },
            async {
                match lapsed_as_of {
                    Some(as_of) => tx.query(&lapsed_q, &[&lapsed_members, &as_of]).await,
                    None => Ok(Vec::new()),
                }
            },
            async {
                if budget_names.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&ensure_b, &[&budget_names]).await
                }
            },
            async {
                if budget_names.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&lock_b, &[&budget_names]).await
                }
            },
        )
        .map_err(pg("load member state"))?;

    // Members that do not exist yet are created (one more round trip, only
    // then): most members of a unit exist, and locking them first spares a
    // speculative insert per member. Created after the existing ones are
    // locked, in id order; a new row is locked by its own insert.
    let mut created: Vec<i64> = Vec::new();
    if member_rows.len() < member_ids.len() {
        let mut found: Vec<&str> = Vec::with_capacity(member_rows.len());
        for row in &member_rows {
            found.push(row.try_get(1).map_err(pg("read member id"))?);
        }
        found.sort_unstable();
        let missing: Vec<&str> = member_ids
            .iter()
            .copied()
            .filter(|id| found.binary_search(id).is_err())
            .collect();
        let insert = tx
            .prepare_cached(&sql.insert_members)
            .await
            .map_err(pg("prepare insert members"))?;
        let new_rows = tx
            .query(&insert, &[&missing])
            .await
            .map_err(pg("insert members"))?;
        if new_rows.len() != missing.len() {
            // Created by another unit since the lock: run again (it will
            // be locked in order with the others).
            return Err(UnitError::Pg(PgError::Retry {
                context: "insert members",
                detail: "a member was created concurrently".into(),
            }));
        }
        // Dropped again at the end unless an entry was written for them (a
        // refused request leaves no member behind).
        for row in &new_rows {
            created.push(row.try_get(0).map_err(pg("read new member key"))?);
        }
        member_rows.extend(new_rows);
    }
    let mut members: HashMap<MemberId, Member> = HashMap::with_capacity(member_rows.len());
    let mut by_key: HashMap<i64, MemberId> = HashMap::with_capacity(member_rows.len());
    for row in &member_rows {
        let (key, record) = member_from_row(row)?;
        by_key.insert(key, record.member.clone());
        members.insert(
            record.member.clone(),
            Member {
                key,
                start_version: record.version,
                record,
                lots: BTreeMap::new(),
                records: BTreeMap::new(),
                changed: false,
            },
        );
    }
    if members.len() != member_ids.len() {
        return Err(UnitError::Pg(PgError::corrupt(
            "lock members",
            format!(
                "{} of {} member rows found",
                members.len(),
                member_ids.len()
            ),
        )));
    }

    let mut inbox: HashMap<TxId, Inboxed> = HashMap::with_capacity(inbox_rows.len());
    for row in &inbox_rows {
        let e = |e| PgError::from_pg("read inbox row", e);
        let id = tx_id(row.try_get(0).map_err(e)?, "inbox id")?;
        let fp: Vec<u8> = row.try_get(1).map_err(e)?;
        let fingerprint: [u8; 32] = fp
            .try_into()
            .map_err(|_| PgError::corrupt("inbox fingerprint", "not 32 bytes"))?;
        let receipt: Receipt = from_text(row.try_get(2).map_err(e)?, "inbox receipt")?;
        inbox.insert(
            id,
            Inboxed {
                fingerprint,
                receipt,
            },
        );
    }

    // Owners of the originals (any request id, record or not), and the
    // records themselves, filed under their member.
    let mut owners: HashMap<TxId, MemberId> = HashMap::new();
    let file_records = |rows: &[Row],
                        members: &mut HashMap<MemberId, Member>,
                        owners: &mut HashMap<TxId, MemberId>|
     -> Result<Vec<TxId>, PgError> {
        let mut aliases = Vec::new();
        for row in rows {
            let e = |e| PgError::from_pg("read transaction record", e);
            let id = tx_id(row.try_get(0).map_err(e)?, "record id")?;
            let owner = member_id(row.try_get(1).map_err(e)?, "record member")?;
            let record: Option<&str> = row.try_get(2).map_err(e)?;
            owners.insert(id.clone(), owner.clone());
            if let (Some(record), Some(m)) = (record, members.get_mut(&owner)) {
                let mut record: TxRecord = from_text(record, "transaction record")?;
                if let Some(stamp) = ruleset_stamp(row, 3)? {
                    record.ruleset = Some(stamp);
                }
                if let Some(target) = &record.alias_of {
                    if !m.records.contains_key(target) {
                        aliases.push(target.clone());
                    }
                }
                m.records.insert(id, record);
            }
        }
        Ok(aliases)
    };
    let mut aliases = file_records(&original_rows, &mut members, &mut owners)?;
    file_records(&lapsed_rows, &mut members, &mut owners)?;
    // Follow `alias_of` once (a settlement names its authorization).
    aliases.sort();
    aliases.dedup();
    aliases.retain(|a| !owners.contains_key(a));
    if !aliases.is_empty() {
        let ids: Vec<&str> = aliases.iter().map(TxId::as_str).collect();
        let rows = tx
            .query(&orig_q, &[&ids])
            .await
            .map_err(pg("load aliased records"))?;
        file_records(&rows, &mut members, &mut owners)?;
    }

    // ---- lots: a second round trip, only when a command needs them ----
    // A member whose only open-lot needs are clawbacks loads just the
    // prefix of its spendable lots (in spend order) that the clawbacks can
    // reach; any other open-lot need loads them all.
    let mut open_bounds: BTreeMap<i64, Option<i64>> = BTreeMap::new();
    let mut record_keys: Vec<i64> = Vec::new();
    let mut record_lots: Vec<&str> = Vec::new();
    for (c, n) in commands.iter().zip(&needs) {
        let Some(m) = members.get(c.member()) else {
            continue;
        };
        if n.lots == LotNeed::Open {
            let bound = clawback_bound(c, m, commands);
            open_bounds
                .entry(m.key)
                .and_modify(|b| *b = b.zip(bound).map(|(a, b)| a.saturating_add(b)))
                .or_insert(bound);
        }
        if n.lots != LotNeed::None {
            record_keys.push(m.key);
        }
    }
    for m in members.values() {
        if record_keys.contains(&m.key) {
            record_lots.extend(
                m.records
                    .values()
                    .filter_map(|r| r.lot.as_ref().map(TxId::as_str)),
            );
        }
    }
    let open_keys: Vec<i64> = open_bounds
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(k, _)| *k)
        .collect();
    let (bounded_keys, bounds): (Vec<i64>, Vec<i64>) = open_bounds
        .iter()
        .filter_map(|(k, b)| b.map(|b| (*k, b)))
        .unzip();
    record_keys.sort_unstable();
    record_keys.dedup();
    if !open_keys.is_empty() || !record_lots.is_empty() || !bounded_keys.is_empty() {
        let (lots_q, bounded_q) = tokio::try_join!(
            tx.prepare_cached(&sql.lots),
            tx.prepare_cached(&sql.lots_bounded),
        )
        .map_err(pg("prepare lots"))?;
        let (rows, bounded_rows) = tokio::try_join!(
            async {
                if open_keys.is_empty() && record_lots.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&lots_q, &[&open_keys, &record_keys, &record_lots])
                        .await
                }
            },
            async {
                if bounded_keys.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&bounded_q, &[&bounded_keys, &bounds]).await
                }
            },
        )
        .map_err(pg("load lots"))?;
        for row in rows.iter().chain(&bounded_rows) {
            let key: i64 = row.try_get(0).map_err(pg("read lot row"))?;
            let Some(member) = by_key.get(&key) else {
                continue;
            };
            if let Some(m) = members.get_mut(member) {
                let lot = lot_from_row(row, member)?;
                m.lots.insert(lot.id.clone(), lot);
            }
        }
    }

    let mut budgets: HashMap<Arc<str>, Points> = HashMap::with_capacity(budget_rows.len());
    for row in &budget_rows {
        let e = |e| PgError::from_pg("read budget row", e);
        let name: String = row.try_get(0).map_err(e)?;
        budgets.insert(Arc::from(name), points(row.try_get(1).map_err(e)?));
    }

    // ---- apply, command by command ----
    let mut writes = Writes::default();
    let mut results = Vec::with_capacity(commands.len());
    for (command, needs) in commands.iter().zip(&needs) {
        let result = apply_one(
            command,
            needs,
            config,
            &mut members,
            &mut inbox,
            &mut owners,
            &mut budgets,
            &mut writes,
        );
        results.push(result);
    }

    // ---- write ----
    let new_stamps = resolve_rulesets(tx, sql, rulesets, &writes).await?;
    created.retain(|key| {
        by_key
            .get(key)
            .and_then(|id| members.get(id))
            .is_some_and(|m| !m.changed)
    });
    write_all(tx, sql, rulesets, &new_stamps, &members, &created, writes).await?;
    Ok((results, new_stamps))
}

/// The most points a refund or chargeback can claw back from the member's
/// other lots: what its original (and the authorization a settlement
/// aliases) earned and has not had clawed back yet, or, for an original
/// purchase earlier in this unit, what its outcome awards. `None` when it
/// is another command or the bound is not known: then every open lot is
/// loaded.
fn clawback_bound(command: &Command<'_>, m: &Member, commands: &[Command<'_>]) -> Option<i64> {
    let Command::Transaction { tx, .. } = command else {
        return None;
    };
    if !matches!(tx.kind, TxKind::Refund | TxKind::Chargeback) {
        return None;
    }
    let original = tx.original_id.as_ref()?;
    let unclawed = |r: &TxRecord| {
        r.awards
            .iter()
            .map(|a| a.points.get().saturating_sub(a.clawed.get()).max(0))
            .fold(0i64, i64::saturating_add)
    };
    if let Some(record) = m.records.get(original) {
        let mut bound = unclawed(record);
        if let Some(target) = &record.alias_of {
            bound = bound.saturating_add(unclawed(m.records.get(target)?));
        }
        return Some(bound);
    }
    let in_unit = commands.iter().find_map(|c| match c {
        Command::Transaction { tx: t, outcome } if &t.id == original => Some((t, outcome)),
        _ => None,
    });
    match in_unit {
        Some((t, outcome)) if t.kind == TxKind::Purchase => {
            outcome.total_points().ok().map(|p| p.get().max(0))
        }
        Some(_) => None,
        // Unknown here: the ledger refuses it, and takes nothing.
        None => Some(0),
    }
}

/// Loads nothing and writes nothing: checks, applies and folds one command
/// into the unit's state, queueing its rows.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    command: &Command<'_>,
    needs: &Needs,
    config: &LedgerConfig,
    members: &mut HashMap<MemberId, Member>,
    inbox: &mut HashMap<TxId, Inboxed>,
    owners: &mut HashMap<TxId, MemberId>,
    budgets: &mut HashMap<Arc<str>, Points>,
    writes: &mut Writes,
) -> Result<Done, Error> {
    let member = command.member();
    let m = members
        .get_mut(member)
        .ok_or_else(|| Error::other(format!("member {member} was not loaded"), None))?;
    // A transaction naming an original of another member.
    if let (Command::Transaction { tx, .. }, RecordNeed::Original(original)) =
        (command, &needs.records)
    {
        if !m.records.contains_key(original) {
            if let Some(owner) = owners.get(original) {
                if owner != &tx.member {
                    return Err(Error::reference(
                        &tx.id,
                        original,
                        ReferenceProblem::OtherMember(owner.clone()),
                    ));
                }
            }
        }
    }
    let fingerprint = command.fingerprint()?;
    if let (Some(id), Some(fingerprint)) = (command.request_id(), &fingerprint) {
        let existing = inbox.get(id).map(|row| InboxEntry {
            id: id.clone(),
            member: row.receipt.member.clone(),
            fingerprint: row.fingerprint,
            receipt: row.receipt.clone(),
        });
        if let Some(receipt) = check_inbox(existing.as_ref(), fingerprint)? {
            return Ok(Done::Duplicate(receipt));
        }
    }

    let mut state = MemberState::new(member.clone());
    state.member = m.record.clone();
    match &needs.records {
        RecordNeed::None => {}
        RecordNeed::Original(id) => {
            if let Some(record) = m.records.get(id) {
                if let Some(target) = record.alias_of.as_ref().and_then(|t| m.records.get(t)) {
                    state.records.push(target.clone());
                }
                state.records.push(record.clone());
            }
        }
        RecordNeed::LapsedAuthorizations(as_of) => state.records.extend(
            m.records
                .values()
                .filter(|r| {
                    matches!(r.status, RecordStatus::Authorized { expires_at } if expires_at <= *as_of)
                })
                .cloned(),
        ),
    }
    let of_records = |lot: &Lot| {
        state
            .records
            .iter()
            .any(|r| r.lot.as_ref() == Some(&lot.id))
    };
    state.lots = match needs.lots {
        LotNeed::None => Vec::new(),
        LotNeed::OfRecords => m.lots.values().filter(|l| of_records(l)).cloned().collect(),
        LotNeed::Open => m
            .lots
            .values()
            .filter(|l| l.remaining.get() > 0 || of_records(l))
            .cloned()
            .collect(),
    };
    state.budgets_used = needs
        .budgets
        .iter()
        .map(|b| (b.clone(), budgets.get(b).copied().unwrap_or(Points::ZERO)))
        .collect();

    let Some(entry) = apply(&state, command, config)? else {
        return Ok(Done::Nothing(state.member));
    };
    if entry.expected_version != m.record.version {
        return Err(Error::other(
            format!(
                "entry for {member} expects version {}, the member is at {}",
                entry.expected_version, m.record.version
            ),
            None,
        ));
    }

    // Fold into the unit's state, queue the rows.
    let key = m.key;
    m.record = entry.member.clone();
    m.changed = true;
    for lot in &entry.lots {
        // On a lot's first change in the unit, what `m.lots` held is what
        // the database holds: nothing for a new lot.
        let before = m.lots.insert(lot.id.clone(), lot.clone());
        match writes.lots.entry((key, lot.id.clone())) {
            btree_map::Entry::Occupied(mut o) => o.get_mut().0 = lot.clone(),
            btree_map::Entry::Vacant(v) => {
                v.insert((lot.clone(), before));
            }
        }
    }
    for record in &entry.records {
        m.records.insert(record.id.clone(), record.clone());
        owners.insert(record.id.clone(), member.clone());
        writes
            .records
            .insert(record.id.clone(), (key, record.clone()));
    }
    for (counter, delta) in &entry.counters {
        *writes
            .counters
            .entry((key, counter.name.clone(), counter.window.to_string()))
            .or_default() += *delta;
    }
    for b in &entry.budgets {
        let used = budgets.entry(b.budget.clone()).or_default();
        *used = Points(used.get().saturating_add(b.delta.get()));
        let slot = writes.budgets.entry(b.budget.clone()).or_insert((0, None));
        slot.0 = slot.0.saturating_add(b.delta.get());
        if let Some(limit) = b.limit {
            slot.1 = Some(limit.get());
        }
    }
    if let Some(row) = &entry.inbox {
        owners.insert(row.id.clone(), member.clone());
        inbox.insert(
            row.id.clone(),
            Inboxed {
                fingerprint: row.fingerprint,
                receipt: row.receipt.clone(),
            },
        );
        writes
            .inbox
            .push((row.id.clone(), key, row.fingerprint, row.receipt.clone()));
    }
    writes
        .postings
        .extend(entry.postings.iter().map(|p| (key, p.clone())));
    writes.events.push(StoredEvent {
        key,
        event: entry.event.clone(),
        tier: entry.member.tier.clone(),
        postings: entry
            .postings
            .first()
            .map(|p| (p.seq, entry.postings.len())),
    });
    if entry.inbox.is_some() {
        let seq = to_i64(entry.event.seq, "event seq").map_err(Error::from)?;
        writes.outbox.push((key, seq));
    }
    Ok(Done::Applied(Box::new(entry)))
}

/// Interns the ruleset stamps the postings name that the cache does not
/// know yet (inside the unit: the keys are cached after the commit).
async fn resolve_rulesets(
    tx: &Transaction,
    sql: &Sql,
    rulesets: &RulesetCache,
    writes: &Writes,
) -> Result<Vec<(RulesetStamp, i32)>, UnitError> {
    let mut missing: Vec<&RulesetStamp> = Vec::new();
    {
        let cache = rulesets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stamp in writes.stamps() {
            if !cache.contains_key(stamp) && !missing.contains(&stamp) {
                missing.push(stamp);
            }
        }
    }
    let mut found = Vec::with_capacity(missing.len());
    for stamp in missing {
        let version = i64::from(stamp.version);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&&*stamp.id, &version, &&*stamp.hash];
        let find = tx
            .prepare_cached(&sql.ruleset_find)
            .await
            .map_err(pg("prepare ruleset"))?;
        let mut row = tx
            .query_opt(&find, &params)
            .await
            .map_err(pg("find ruleset"))?;
        if row.is_none() {
            let insert = tx
                .prepare_cached(&sql.ruleset_insert)
                .await
                .map_err(pg("prepare ruleset"))?;
            row = tx
                .query_opt(&insert, &params)
                .await
                .map_err(pg("insert ruleset"))?;
        }
        if row.is_none() {
            // Inserted concurrently since our statement's snapshot.
            row = tx
                .query_opt(&find, &params)
                .await
                .map_err(pg("find ruleset"))?;
        }
        let row = row.ok_or(UnitError::Race("ruleset interned concurrently"))?;
        let key: i32 = row.try_get(0).map_err(pg("read ruleset key"))?;
        found.push((stamp.clone(), key));
    }
    Ok(found)
}

/// Sends every write of the unit in one pipelined burst and checks the row
/// counts.
async fn write_all(
    tx: &Transaction,
    sql: &Sql,
    rulesets: &RulesetCache,
    new_stamps: &[(RulesetStamp, i32)],
    members: &HashMap<MemberId, Member>,
    unused_new_members: &[i64],
    writes: Writes,
) -> Result<(), UnitError> {
    if !unused_new_members.is_empty() {
        let drop = tx
            .prepare_cached(&sql.drop_new_members)
            .await
            .map_err(pg("prepare drop members"))?;
        tx.execute(&drop, &[&unused_new_members])
            .await
            .map_err(pg("drop unused members"))?;
    }
    // Every stamp by its interned key (`resolve_rulesets` interned the new
    // ones in this unit).
    let stamp_keys: HashMap<RulesetStamp, i32> = {
        let cache = rulesets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut keys = HashMap::new();
        for stamp in writes.stamps() {
            if let Some(k) = cache.get(stamp) {
                keys.insert(stamp.clone(), *k);
            }
        }
        for (stamp, k) in new_stamps {
            keys.insert(stamp.clone(), *k);
        }
        keys
    };
    let key_of = |stamp: Option<&RulesetStamp>| -> Result<Option<i32>, UnitError> {
        stamp
            .map(|s| {
                stamp_keys.get(s).copied().ok_or_else(|| {
                    UnitError::Pg(PgError::corrupt("ruleset", "stamp was not interned"))
                })
            })
            .transpose()
    };
    // inbox rows, with the request's own record when it has one; a record's
    // JSON leaves its stamp out (the row's `ruleset_key` names it)
    let mut records = writes.records;
    let n = writes.inbox.len();
    let (mut i_id, mut i_key, mut i_fp, mut i_receipt, mut i_record, mut i_status, mut i_lapse) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut i_ruleset = Vec::with_capacity(n);
    for (id, key, fp, receipt) in &writes.inbox {
        let (record, status, lapse, ruleset) = match records.remove(id) {
            Some((_, mut r)) => {
                let (status, lapse) = record_status(&r);
                let ruleset = key_of(r.ruleset.take().as_ref())?;
                let text = to_text(&r, "transaction record")?;
                (Some(text), Some(status), lapse, ruleset)
            }
            None => (None, None, None, None),
        };
        i_id.push(id.as_str());
        i_key.push(*key);
        i_fp.push(fp.as_slice());
        i_receipt.push(to_text(receipt, "receipt")?);
        i_record.push(record);
        i_status.push(status);
        i_lapse.push(lapse);
        i_ruleset.push(ruleset);
    }
    // records of earlier requests (an authorization its settlement changed)
    let n = records.len();
    let (mut r_id, mut r_key, mut r_record, mut r_status, mut r_lapse) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut r_ruleset = Vec::with_capacity(n);
    for (id, (key, record)) in &mut records {
        let (status, lapse) = record_status(record);
        r_ruleset.push(key_of(record.ruleset.take().as_ref())?);
        r_id.push(id.as_str());
        r_key.push(*key);
        r_record.push(to_text(&*record, "transaction record")?);
        r_status.push(status);
        r_lapse.push(lapse);
    }
    // postings
    let n = writes.postings.len();
    let mut p_key = Vec::with_capacity(n);
    let mut p_seq = Vec::with_capacity(n);
    let mut p_id = Vec::with_capacity(n);
    let mut p_source = Vec::with_capacity(n);
    let mut p_rule = Vec::with_capacity(n);
    let mut p_rule_seq = Vec::with_capacity(n);
    let mut p_kind = Vec::with_capacity(n);
    let mut p_da = Vec::with_capacity(n);
    let mut p_dp = Vec::with_capacity(n);
    let mut p_a = Vec::with_capacity(n);
    let mut p_p = Vec::with_capacity(n);
    let mut p_lot = Vec::with_capacity(n);
    let mut p_ruleset = Vec::with_capacity(n);
    let mut p_at = Vec::with_capacity(n);
    for (key, p) in &writes.postings {
        p_key.push(*key);
        p_seq.push(to_i64(p.seq, "posting seq")?);
        p_id.push(p.id.0.as_slice());
        p_source.push(p.source.as_str());
        p_rule.push(&*p.rule);
        p_rule_seq.push(
            i32::try_from(p.rule_seq)
                .map_err(|_| UnitError::Pg(PgError::corrupt("posting rule_seq", p.rule_seq)))?,
        );
        p_kind.push(posting_kind_str(p.kind));
        p_da.push(p.delta.available.get());
        p_dp.push(p.delta.pending.get());
        p_a.push(p.after.available.get());
        p_p.push(p.after.pending.get());
        p_lot.push(p.lot.as_ref().map(TxId::as_str));
        p_ruleset.push(key_of(p.ruleset.as_ref())?);
        p_at.push(p.time);
    }
    // lots: new ones inserted, changed ones updated
    let mut new_lots = LotColumns::default();
    let mut changed_lots = LotColumns::default();
    for ((key, _), (lot, stored)) in &writes.lots {
        match stored {
            None => new_lots.push(*key, lot),
            Some(stored) if stored != lot => changed_lots.push(*key, lot),
            Some(_) => {}
        }
    }
    // counters
    let n = writes.counters.len();
    let mut c_key = Vec::with_capacity(n);
    let mut c_name = Vec::with_capacity(n);
    let mut c_window = Vec::with_capacity(n);
    let mut c_value = Vec::with_capacity(n);
    for ((key, name, window), value) in &writes.counters {
        c_key.push(*key);
        c_name.push(&**name);
        c_window.push(window.as_str());
        c_value.push(*value);
    }
    // members
    let changed: Vec<&Member> = members.values().filter(|m| m.changed).collect();
    let n = changed.len();
    let mut m_key = Vec::with_capacity(n);
    let mut m_expected = Vec::with_capacity(n);
    let mut m_version = Vec::with_capacity(n);
    let mut m_seq = Vec::with_capacity(n);
    let mut m_a = Vec::with_capacity(n);
    let mut m_p = Vec::with_capacity(n);
    let mut m_tier = Vec::with_capacity(n);
    let mut m_since = Vec::with_capacity(n);
    let mut m_sched = Vec::with_capacity(n);
    let mut m_sched_at = Vec::with_capacity(n);
    for m in &changed {
        let r = &m.record;
        m_key.push(m.key);
        m_expected.push(to_i64(m.start_version, "member version")?);
        m_version.push(to_i64(r.version, "member version")?);
        m_seq.push(to_i64(r.posting_seq, "member posting_seq")?);
        m_a.push(r.balances.available.get());
        m_p.push(r.balances.pending.get());
        m_tier.push(r.tier.as_deref());
        m_since.push(r.tier_since);
        m_sched.push(
            r.scheduled_tier
                .as_ref()
                .map(|t| to_json(t, "scheduled tier"))
                .transpose()?,
        );
        m_sched_at.push(r.scheduled_tier.as_ref().map(|t| t.effective));
    }
    // budgets
    let n = writes.budgets.len();
    let mut b_name = Vec::with_capacity(n);
    let mut b_delta = Vec::with_capacity(n);
    let mut b_lim = Vec::with_capacity(n);
    for (name, (delta, lim)) in &writes.budgets {
        if *delta == 0 {
            continue;
        }
        b_name.push(&**name);
        b_delta.push(*delta);
        b_lim.push(*lim);
    }
    // events
    let n = writes.events.len();
    let mut e_key = Vec::with_capacity(n);
    let mut e_seq = Vec::with_capacity(n);
    let mut e_source = Vec::with_capacity(n);
    let mut e_kind = Vec::with_capacity(n);
    let mut e_at = Vec::with_capacity(n);
    let mut e_da = Vec::with_capacity(n);
    let mut e_dp = Vec::with_capacity(n);
    let mut e_body = Vec::with_capacity(n);
    let mut e_ruleset = Vec::with_capacity(n);
    let mut e_tier = Vec::with_capacity(n);
    let mut e_first = Vec::with_capacity(n);
    let mut e_count = Vec::with_capacity(n);
    let mut events = writes.events;
    for stored in &mut events {
        // the JSON leaves the stamp out: the row's `ruleset_key` names it
        e_ruleset.push(key_of(stored.event.ruleset.take().as_ref())?);
        let e = &stored.event;
        e_key.push(stored.key);
        e_seq.push(to_i64(e.seq, "event seq")?);
        e_source.push(e.source.as_str());
        e_kind.push(entry_kind_str(e.kind));
        e_at.push(e.time);
        e_da.push(e.delta.available.get());
        e_dp.push(e.delta.pending.get());
        e_body.push(to_text(e, "audit event")?);
        e_tier.push(stored.tier.as_deref());
        let (first, count) = match stored.postings {
            Some((first, count)) => (
                Some(to_i64(first, "posting seq")?),
                Some(
                    i32::try_from(count)
                        .map_err(|_| UnitError::Pg(PgError::corrupt("event postings", count)))?,
                ),
            ),
            None => (None, None),
        };
        e_first.push(first);
        e_count.push(count);
    }

    if changed.is_empty() {
        return Ok(());
    }

    let (o_key, o_seq): (Vec<i64>, Vec<i64>) = writes.outbox.iter().copied().unzip();
    let (
        s_inbox,
        s_records,
        s_postings,
        s_new_lots,
        s_changed_lots,
        s_counters,
        s_members,
        s_budgets,
        s_events,
        s_outbox,
    ) = tokio::try_join!(
        tx.prepare_cached(&sql.insert_inbox),
        tx.prepare_cached(&sql.update_records),
        tx.prepare_cached(&sql.insert_postings),
        tx.prepare_cached(&sql.insert_lots),
        tx.prepare_cached(&sql.update_lots),
        tx.prepare_cached(&sql.add_counters),
        tx.prepare_cached(&sql.update_members),
        tx.prepare_cached(&sql.update_budgets),
        tx.prepare_cached(&sql.insert_events),
        tx.prepare_cached(&sql.insert_outbox),
    )
    .map_err(pg("prepare writes"))?;

    // Every result is awaited, then the inbox insert's looked at first: its
    // error is the cause when later statements only report the aborted
    // transaction. The plain inserts run on generic plans (their plan never
    // depends on the data, and planning each execution cost ~10% of their
    // server time); the statements that join a table stay on custom plans.
    let (
        generic,
        inbox_rows,
        postings_n,
        new_lots_n,
        counters_n,
        events_n,
        outbox_n,
        custom,
        records_n,
        changed_lots_n,
        members_n,
        budget_rows,
    ) = tokio::join!(
        async {
            tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
                .await
        },
        async {
            execute_rows(
                tx,
                &s_inbox,
                i_id.len(),
                &[
                    &i_id, &i_key, &i_fp, &i_receipt, &i_record, &i_status, &i_lapse, &i_ruleset,
                ],
            )
            .await
        },
        async {
            execute_rows(
                tx,
                &s_postings,
                p_key.len(),
                &[
                    &p_key,
                    &p_seq,
                    &p_id,
                    &p_source,
                    &p_rule,
                    &p_rule_seq,
                    &p_kind,
                    &p_da,
                    &p_dp,
                    &p_a,
                    &p_p,
                    &p_lot,
                    &p_ruleset,
                    &p_at,
                ],
            )
            .await
        },
        new_lots.execute(tx, &s_new_lots),
        async {
            execute_rows(
                tx,
                &s_counters,
                c_key.len(),
                &[&c_key, &c_name, &c_window, &c_value],
            )
            .await
        },
        async {
            execute_rows(
                tx,
                &s_events,
                e_key.len(),
                &[
                    &e_key, &e_seq, &e_source, &e_kind, &e_at, &e_da, &e_dp, &e_body, &e_ruleset,
                    &e_tier, &e_first, &e_count,
                ],
            )
            .await
        },
        async { execute_rows(tx, &s_outbox, o_key.len(), &[&o_key, &o_seq]).await },
        async {
            tx.batch_execute("SET LOCAL plan_cache_mode = force_custom_plan")
                .await
        },
        async {
            execute_rows(
                tx,
                &s_records,
                r_id.len(),
                &[&r_id, &r_key, &r_record, &r_status, &r_lapse, &r_ruleset],
            )
            .await
        },
        changed_lots.execute(tx, &s_changed_lots),
        async {
            tx.execute(
                &s_members,
                &[
                    &m_key,
                    &m_expected,
                    &m_version,
                    &m_seq,
                    &m_a,
                    &m_p,
                    &m_tier,
                    &m_since,
                    &m_sched,
                    &m_sched_at,
                ],
            )
            .await
        },
        async {
            if b_name.is_empty() {
                Ok(Vec::new())
            } else {
                tx.query(&s_budgets, &[&b_name, &b_delta, &b_lim]).await
            }
        },
    );
    // A plain insert (no speculative `ON CONFLICT`, cheaper): a request id
    // taken meanwhile by another member's unit (whose row the loads could
    // not see) is a unique violation; the unit runs again and then finds
    // the row. (Postings and events are keyed by member and sequence, which
    // the member row lock makes unique.)
    let inbox_rows = inbox_rows.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            UnitError::Race("a request id was written concurrently")
        } else {
            UnitError::Pg(PgError::from_pg("write entries", e))
        }
    })?;
    let w = pg("write entries");
    generic.map_err(&w)?;
    custom.map_err(&w)?;
    let records_n = records_n.map_err(&w)?;
    let members_n = members_n.map_err(&w)?;
    let budget_rows = budget_rows.map_err(&w)?;
    let changed_lots_n = changed_lots_n.map_err(&w)?;
    for n in [postings_n, new_lots_n, counters_n, events_n, outbox_n] {
        n.map_err(&w)?;
    }

    if inbox_rows != i_id.len() as u64 {
        return Err(UnitError::Race("a request id was written concurrently"));
    }
    if members_n != m_key.len() as u64 {
        return Err(UnitError::Race("a member row changed concurrently"));
    }
    if records_n != r_id.len() as u64 {
        return Err(UnitError::Pg(PgError::corrupt(
            "update transaction records",
            format!("{records_n} of {} records found", r_id.len()),
        )));
    }
    if changed_lots_n != changed_lots.key.len() as u64 {
        return Err(UnitError::Pg(PgError::corrupt(
            "update lots",
            format!("{changed_lots_n} of {} lots found", changed_lots.key.len()),
        )));
    }
    if budget_rows.len() != b_name.len() {
        return Err(UnitError::Pg(PgError::corrupt(
            "update budgets",
            "a budget draw would exceed its limit",
        )));
    }
    Ok(())
}

/// Lots as columns for one multi-row statement (`insert_lots`,
/// `update_lots`: the same parameters).
#[derive(Default)]
struct LotColumns<'a> {
    key: Vec<i64>,
    id: Vec<&'a str>,
    earned: Vec<DateTime<Utc>>,
    available_at: Vec<Option<DateTime<Utc>>>,
    expires: Vec<Option<DateTime<Utc>>>,
    status: Vec<&'static str>,
    granted: Vec<i64>,
    remaining: Vec<i64>,
    expired: Vec<i64>,
    forgiven: Vec<i64>,
}

impl<'a> LotColumns<'a> {
    fn push(&mut self, key: i64, lot: &'a Lot) {
        self.key.push(key);
        self.id.push(lot.id.as_str());
        self.earned.push(lot.earned_at);
        self.available_at.push(lot.available_at);
        self.expires.push(lot.expires_at);
        self.status.push(lot_status_str(lot.status));
        self.granted.push(lot.granted.get());
        self.remaining.push(lot.remaining.get());
        self.expired.push(lot.expired.get());
        self.forgiven.push(lot.expired_forgiven.get());
    }

    /// Runs `statement` over the columns (nothing when there are none).
    async fn execute(
        &self,
        tx: &Transaction,
        statement: &tokio_postgres::Statement,
    ) -> Result<u64, tokio_postgres::Error> {
        execute_rows(
            tx,
            statement,
            self.key.len(),
            &[
                &self.key,
                &self.id,
                &self.earned,
                &self.available_at,
                &self.expires,
                &self.status,
                &self.granted,
                &self.remaining,
                &self.expired,
                &self.forgiven,
            ],
        )
        .await
    }
}

/// Runs a multi-row statement over `params` (one array per column) holding
/// `rows` rows; a unit with none of those rows sends nothing.
async fn execute_rows(
    tx: &Transaction,
    statement: &tokio_postgres::Statement,
    rows: usize,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    if rows == 0 {
        return Ok(0);
    }
    tx.execute(statement, params).await
}
