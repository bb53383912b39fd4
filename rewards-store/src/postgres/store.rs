//! [`PgStore`]: the [`LedgerStore`] on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rewards_core::error::{Error, Result};
use rewards_core::ledger::{member_view, MemberRecord};
use rewards_core::ledger::{
    Adjustment, AuditEvent, Balances, Command, Drift, LedgerConfig, MemberBalance, Posting,
    PostingId, Receipt, RecentEntry, ReconcileReport, Redemption, SweepReport, TierReview,
};
use rewards_core::store::{
    LedgerStore, OutboxEvent, OutboxPosting, TierView, MAX_BATCH_ITEMS, MAX_PAGE_ROWS,
};
use rewards_core::{
    CounterKey, MemberId, MemberProfile, MemberView, Outcome, Points, Transaction, WindowKey,
};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_postgres::Row;

use super::codec::{
    attributes_from_json, attributes_to_json, entry_kind, from_json, from_text, member_id, points,
    posting_kind, ruleset_stamp, to_i64, to_u64, tx_id,
};
use super::config::PgConfig;
use super::engine::{run_unit, Done, RulesetCache, UnitError};
use super::error::PgError;
use super::migrate::{migrate_with_config, MigrationReport};
use super::pool::{build_pool, Role};
use super::sql::Sql;

/// How often a unit is run again after a serialization failure, a deadlock
/// or a concurrent write of the same request id.
const MAX_ATTEMPTS: usize = 4;
/// Members per database transaction in the store-wide sweeps.
const SWEEP_CHUNK: usize = 256;

impl From<PgError> for Error {
    fn from(e: PgError) -> Error {
        if e.is_transient() {
            Error::unavailable(e.to_string(), Some(Box::new(e) as _))
        } else {
            Error::other(e.to_string(), Some(Box::new(e) as _))
        }
    }
}

/// The PostgreSQL [`LedgerStore`]: pooled connections to the primary (and
/// an optional read replica), every statement prepared, one database
/// transaction per unit of work.
pub struct PgStore {
    primary: Pool,
    replica: Option<Pool>,
    sql: Arc<Sql>,
    config: PgConfig,
    ledger: LedgerConfig,
    rulesets: RulesetCache,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.config.schema)
            .field("replica", &self.replica.is_some())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Builds the pools and, when `config.migrate_on_start`, applies pending
    /// migrations (which also proves the primary is reachable: a dead
    /// server is an `Unavailable` error within the connect timeout).
    pub async fn connect(config: PgConfig, ledger: LedgerConfig) -> Result<PgStore, PgError> {
        config.validate()?;
        if config.migrate_on_start {
            migrate_with_config(&config).await?;
        }
        let primary = build_pool(&config, &config.url, Role::Primary)?;
        let replica = config
            .replica_url
            .as_deref()
            .map(|url| build_pool(&config, url, Role::Replica))
            .transpose()?;
        Ok(PgStore {
            primary,
            replica,
            sql: Arc::new(Sql::new(&config.schema)),
            config,
            ledger,
            rulesets: RulesetCache::default(),
        })
    }

    /// [`PgStore::connect`] with defaults: the URL of the primary and the
    /// schema (migrated on start), the default ledger settings.
    pub async fn from_url(url: &str, schema: &str) -> Result<PgStore, PgError> {
        PgStore::connect(
            PgConfig::new(url).with_schema(schema),
            LedgerConfig::default(),
        )
        .await
    }

    /// Applies pending migrations (idempotent; safe from several processes).
    pub async fn migrate(&self) -> Result<MigrationReport, PgError> {
        migrate_with_config(&self.config).await
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// The ledger settings.
    pub fn ledger_config(&self) -> &LedgerConfig {
        &self.ledger
    }

    /// The pool of the primary (for tools and benchmarks).
    pub fn primary_pool(&self) -> &Pool {
        &self.primary
    }

    /// The views (with scheduled tier changes) of `requests`, in request
    /// order, in one round trip.
    async fn load_views(&self, requests: &[(MemberId, Vec<CounterKey>)]) -> Result<Vec<TierView>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.writer().await?;
        let (s_members, s_counters) = tokio::try_join!(
            client.prepare_cached(&self.sql.view_members),
            client.prepare_cached(&self.sql.view_counters_many),
        )
        .map_err(pg_err("prepare member views"))?;
        let mut ids: Vec<&str> = requests.iter().map(|(m, _)| m.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut wanted: Vec<(&str, &str, String)> = requests
            .iter()
            .flat_map(|(m, keys)| {
                keys.iter()
                    .map(move |k| (m.as_str(), &*k.name, k.window.to_string()))
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let c_members: Vec<&str> = wanted.iter().map(|w| w.0).collect();
        let c_names: Vec<&str> = wanted.iter().map(|w| w.1).collect();
        let c_windows: Vec<&str> = wanted.iter().map(|w| w.2.as_str()).collect();
        let (rows, counter_rows) =
            tokio::try_join!(async { client.query(&s_members, &[&ids]).await }, async {
                if wanted.is_empty() {
                    Ok(Vec::new())
                } else {
                    client
                        .query(&s_counters, &[&c_members, &c_names, &c_windows, &ids])
                        .await
                }
            },)
            .map_err(pg_err("load member views"))?;
        drop(client);
        let e = pg_err("read member views");
        let mut members: HashMap<String, (MemberRecord, MemberProfile)> =
            HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get(1).map_err(&e)?;
            let member = member_id(id.clone(), "member id")?;
            members.insert(id, view_row(row, &member)?);
        }
        let mut values: HashMap<(String, CounterKey), Decimal> =
            HashMap::with_capacity(counter_rows.len());
        for r in &counter_rows {
            let member: String = r.try_get(0).map_err(&e)?;
            let name: String = r.try_get(1).map_err(&e)?;
            let window: String = r.try_get(2).map_err(&e)?;
            let value: Decimal = r.try_get(3).map_err(&e)?;
            values.insert((member, counter_key(name, &window)?), value);
        }
        let mut views = Vec::with_capacity(requests.len());
        for (member, keys) in requests {
            let Some((record, profile)) = members.get(member.as_str()) else {
                views.push(TierView {
                    view: member_view(None, None, HashMap::new()),
                    scheduled: None,
                });
                continue;
            };
            let mut own = HashMap::with_capacity(keys.len());
            for k in keys {
                if let Some(v) = values.get(&(member.as_str().to_owned(), k.clone())) {
                    own.insert(k.clone(), *v);
                }
            }
            let scheduled = record.scheduled_tier.clone();
            let record = (record.version > 0).then_some(record);
            views.push(TierView {
                view: member_view(record, Some(profile), own),
                scheduled,
            });
        }
        Ok(views)
    }

    async fn writer(&self) -> Result<deadpool_postgres::Client, PgError> {
        self.primary
            .get()
            .await
            .map_err(|e| PgError::from_pool("get a primary connection", e))
    }

    async fn reader(&self) -> Result<deadpool_postgres::Client, PgError> {
        match &self.replica {
            Some(pool) => pool
                .get()
                .await
                .map_err(|e| PgError::from_pool("get a replica connection", e)),
            None => self.writer().await,
        }
    }

    /// Runs `commands` as one unit, again after a retryable failure, and
    /// falls back to one unit per command when a batch cannot commit whole
    /// (so that one bad item never fails the others).
    async fn run(&self, commands: &[Command<'_>]) -> Result<Vec<Result<Done>>> {
        let mut last: Option<PgError> = None;
        for attempt in 0..MAX_ATTEMPTS {
            let client = self.writer().await?;
            match run_unit(client, &self.sql, &self.ledger, &self.rulesets, commands).await {
                Ok(results) => return Ok(results),
                Err(UnitError::Pg(e))
                    if e.is_transient() && !matches!(e, PgError::Retry { .. }) =>
                {
                    return Err(e.into());
                }
                Err(UnitError::Pg(e)) if matches!(e, PgError::Retry { .. }) => {
                    tracing::debug!(attempt, error = %e, "postgres unit retried");
                    last = Some(e);
                }
                Err(UnitError::Race(why)) if commands.len() == 1 => {
                    tracing::debug!(attempt, why, "postgres unit raced; retried");
                    last = Some(PgError::Retry {
                        context: "append",
                        detail: why.to_string(),
                    });
                }
                Err(UnitError::Race(why)) => {
                    tracing::debug!(why, "postgres batch raced; one unit per item");
                    return self.run_each(commands).await;
                }
                Err(UnitError::Pg(e)) if commands.len() > 1 => {
                    tracing::warn!(error = %e, "postgres batch failed; one unit per item");
                    return self.run_each(commands).await;
                }
                Err(UnitError::Pg(e)) => return Err(e.into()),
            }
        }
        Err(last
            .unwrap_or(PgError::Retry {
                context: "append",
                detail: "no attempt made".into(),
            })
            .into())
    }

    /// One unit per command; a command whose unit fails gets that error.
    async fn run_each(&self, commands: &[Command<'_>]) -> Result<Vec<Result<Done>>> {
        let mut results = Vec::with_capacity(commands.len());
        for command in commands {
            let result = match Box::pin(self.run(std::slice::from_ref(command))).await {
                Ok(mut one) => one
                    .pop()
                    .unwrap_or_else(|| Err(Error::other("a unit returned no result", None))),
                Err(e) if e.kind().is_transient() => return Err(e),
                Err(e) => Err(e),
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn run_one(&self, command: Command<'_>) -> Result<Done> {
        self.run(std::slice::from_ref(&command))
            .await?
            .pop()
            .unwrap_or_else(|| Err(Error::other("a unit returned no result", None)))
    }

    async fn sweep<'a>(
        &self,
        due: &str,
        as_of: DateTime<Utc>,
        make: impl Fn(&'a MemberId) -> Command<'a>,
        members: &'a mut Vec<MemberId>,
    ) -> Result<SweepReport> {
        let client = self.writer().await?;
        let stmt = client
            .prepare_cached(due)
            .await
            .map_err(|e| PgError::from_pg("prepare sweep", e))?;
        let rows = client
            .query(&stmt, &[&as_of])
            .await
            .map_err(|e| PgError::from_pg("find due members", e))?;
        drop(client);
        for row in rows {
            let id: String = row
                .try_get(0)
                .map_err(|e| PgError::from_pg("read due member", e))?;
            members.push(member_id(id, "due member")?);
        }
        let members: &'a [MemberId] = members;
        let mut report = SweepReport::default();
        for chunk in members.chunks(SWEEP_CHUNK) {
            let commands: Vec<Command<'a>> = chunk.iter().map(&make).collect();
            for done in self.run(&commands).await? {
                if let Done::Applied(entry) = done? {
                    report.members += 1;
                    report.postings += entry.postings.len() as u64;
                    report.delta = report.delta.checked_add(entry.event.delta)?;
                }
            }
        }
        Ok(report)
    }
}

fn receipt_of(done: Done) -> Result<Receipt> {
    match done {
        Done::Applied(entry) => entry
            .receipt()
            .cloned()
            .ok_or_else(|| Error::other("a request entry without a receipt", None)),
        Done::Duplicate(receipt) => Ok(receipt),
        Done::Nothing(_) => Err(Error::other("a request produced no entry", None)),
    }
}

fn pg_err(context: &'static str) -> impl Fn(tokio_postgres::Error) -> Error {
    move |e| PgError::from_pg(context, e).into()
}

fn page(limit: usize) -> i64 {
    i64::try_from(limit.min(MAX_PAGE_ROWS)).unwrap_or(0)
}

/// The record and profile of a `view_member(s)` row.
fn view_row(row: &tokio_postgres::Row, member: &MemberId) -> Result<(MemberRecord, MemberProfile)> {
    let e = pg_err("read member view");
    let version: i64 = row.try_get(2).map_err(&e)?;
    let tier: Option<String> = row.try_get(6).map_err(&e)?;
    let record = MemberRecord {
        member: member.clone(),
        version: to_u64(version, "member version")?,
        posting_seq: to_u64(row.try_get(3).map_err(&e)?, "member posting_seq")?,
        balances: Balances {
            available: points(row.try_get(4).map_err(&e)?),
            pending: points(row.try_get(5).map_err(&e)?),
        },
        tier: tier.map(Arc::from),
        tier_since: row.try_get(7).map_err(&e)?,
        scheduled_tier: row
            .try_get::<_, Option<Value>>(8)
            .map_err(&e)?
            .map(|v| from_json(v, "scheduled tier"))
            .transpose()?,
    };
    let attributes: Value = row.try_get(9).map_err(&e)?;
    let profile = MemberProfile {
        member: member.clone(),
        attributes: attributes_from_json(&attributes)?,
    };
    Ok((record, profile))
}

fn counter_key(name: String, window: &str) -> Result<CounterKey> {
    let window =
        WindowKey::parse(window).ok_or_else(|| PgError::corrupt("counter window", window))?;
    Ok(CounterKey::new(name, window))
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn member_view(&self, member: &MemberId, counters: &[CounterKey]) -> Result<MemberView> {
        let client = self.writer().await?;
        let (s_member, s_counters) = tokio::try_join!(
            client.prepare_cached(&self.sql.view_member),
            client.prepare_cached(&self.sql.view_counters),
        )
        .map_err(pg_err("prepare member view"))?;
        let names: Vec<&str> = counters.iter().map(|k| &*k.name).collect();
        let windows: Vec<String> = counters.iter().map(|k| k.window.to_string()).collect();
        let (row, counter_rows) = tokio::try_join!(
            async { client.query_opt(&s_member, &[&member.as_str()]).await },
            async {
                if counters.is_empty() {
                    Ok(Vec::new())
                } else {
                    client
                        .query(&s_counters, &[&member.as_str(), &names, &windows])
                        .await
                }
            },
        )
        .map_err(pg_err("load member view"))?;
        let Some(row) = row else {
            return Ok(member_view(None, None, HashMap::new()));
        };
        let (record, profile) = view_row(&row, member)?;
        let e = pg_err("read member view");
        let mut values = HashMap::with_capacity(counter_rows.len());
        for r in &counter_rows {
            let name: String = r.try_get(0).map_err(&e)?;
            let window: String = r.try_get(1).map_err(&e)?;
            let value: Decimal = r.try_get(2).map_err(&e)?;
            values.insert(counter_key(name, &window)?, value);
        }
        let record = (record.version > 0).then_some(&record);
        Ok(member_view(record, Some(&profile), values))
    }

    async fn member_views(
        &self,
        requests: &[(MemberId, Vec<CounterKey>)],
    ) -> Result<Vec<MemberView>> {
        Ok(self
            .load_views(requests)
            .await?
            .into_iter()
            .map(|v| v.view)
            .collect())
    }

    async fn outbox_fetch(&self, limit: usize) -> Result<Vec<OutboxEvent>> {
        let client = self.writer().await?;
        let stmt = client
            .prepare_cached(&self.sql.outbox_fetch)
            .await
            .map_err(pg_err("prepare outbox fetch"))?;
        let rows = client
            .query(&stmt, &[&page(limit)])
            .await
            .map_err(pg_err("read the outbox"))?;
        let e = pg_err("read the outbox");
        // Each row is a pointer to its audit event (or, written before
        // migration 5, a copy of the event): the event's postings are read
        // in a second query, all rows at once.
        let mut events = Vec::with_capacity(rows.len());
        let (mut p_key, mut p_first, mut p_count, mut p_event) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let seq = to_u64(row.try_get(0).map_err(&e)?, "outbox seq")?;
            if let Some(body) = row.try_get::<_, Option<&str>>(1).map_err(&e)? {
                let mut event: OutboxEvent = from_text(body, "outbox event")?;
                event.seq = seq;
                events.push(event);
                continue;
            }
            let body: Option<&str> = row.try_get(2).map_err(&e)?;
            let body =
                body.ok_or_else(|| PgError::corrupt("outbox row", "its event is missing"))?;
            let audit = audit_event(body, row, 3)?;
            let tier: Option<String> = row.try_get(6).map_err(&e)?;
            let first: Option<i64> = row.try_get(8).map_err(&e)?;
            let count: Option<i32> = row.try_get(9).map_err(&e)?;
            if let (Some(first), Some(count)) = (first, count) {
                p_key.push(row.try_get::<_, i64>(7).map_err(&e)?);
                p_first.push(first);
                p_count.push(i64::from(count));
                p_event.push(events.len());
            }
            events.push(OutboxEvent {
                seq,
                tx_id: audit.source,
                member: audit.member,
                kind: audit.kind,
                time: audit.time,
                version: audit.seq,
                points: audit.delta,
                balances: audit.balances,
                tier: tier.map(Arc::from),
                postings: Vec::new(),
                ruleset: audit.ruleset,
            });
        }
        if !p_key.is_empty() {
            let stmt = client
                .prepare_cached(&self.sql.outbox_postings)
                .await
                .map_err(pg_err("prepare outbox postings"))?;
            let rows = client
                .query(&stmt, &[&p_key, &p_first, &p_count])
                .await
                .map_err(pg_err("read outbox postings"))?;
            for row in &rows {
                let n: i64 = row.try_get(0).map_err(&e)?;
                let event = usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| p_event.get(i))
                    .and_then(|&i| events.get_mut(i))
                    .ok_or_else(|| PgError::corrupt("outbox postings", n))?;
                let kind: &str = row.try_get(2).map_err(&e)?;
                let rule: &str = row.try_get(1).map_err(&e)?;
                event.postings.push(OutboxPosting {
                    rule: Arc::from(rule),
                    kind: posting_kind(kind)?,
                    points: Balances {
                        available: points(row.try_get(3).map_err(&e)?),
                        pending: points(row.try_get(4).map_err(&e)?),
                    },
                    lot: row
                        .try_get::<_, Option<String>>(5)
                        .map_err(&e)?
                        .map(|l| tx_id(l, "posting lot"))
                        .transpose()?,
                });
            }
            for (&i, &count) in p_event.iter().zip(&p_count) {
                let got = events.get(i).map_or(0, |ev| ev.postings.len());
                if i64::try_from(got).ok() != Some(count) {
                    return Err(PgError::corrupt(
                        "outbox postings",
                        format!("{got} of {count} postings found"),
                    )
                    .into());
                }
            }
        }
        Ok(events)
    }

    async fn outbox_ack(&self, seqs: &[u64]) -> Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = seqs
            .iter()
            .map(|s| to_i64(*s, "outbox seq"))
            .collect::<std::result::Result<_, _>>()?;
        let client = self.writer().await?;
        let stmt = client
            .prepare_cached(&self.sql.outbox_ack)
            .await
            .map_err(pg_err("prepare outbox ack"))?;
        Ok(client
            .execute(&stmt, &[&seqs])
            .await
            .map_err(pg_err("acknowledge outbox events"))?)
    }

    async fn append(&self, tx: &Transaction, outcome: &Outcome) -> Result<Receipt> {
        receipt_of(self.run_one(Command::Transaction { tx, outcome }).await?)
    }

    async fn append_batch(&self, items: &[(Transaction, Outcome)]) -> Result<Vec<Result<Receipt>>> {
        if items.len() > MAX_BATCH_ITEMS {
            return Err(Error::Invalid(format!(
                "a batch holds at most {MAX_BATCH_ITEMS} items, not {}",
                items.len()
            )));
        }
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(self.config.batch_len.max(1)) {
            let commands: Vec<Command<'_>> = chunk
                .iter()
                .map(|(tx, outcome)| Command::Transaction { tx, outcome })
                .collect();
            for done in self.run(&commands).await? {
                results.push(done.and_then(receipt_of));
            }
        }
        Ok(results)
    }

    async fn redeem(&self, redemption: &Redemption) -> Result<Receipt> {
        receipt_of(self.run_one(Command::Redeem(redemption)).await?)
    }

    async fn adjust(&self, adjustment: &Adjustment) -> Result<Receipt> {
        receipt_of(self.run_one(Command::Adjust(adjustment)).await?)
    }

    async fn expire_due(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let mut members = Vec::new();
        self.sweep(
            &self.sql.due_expiry,
            as_of,
            |member| Command::ExpireLots { member, as_of },
            &mut members,
        )
        .await
    }

    async fn release_pending(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let mut members = Vec::new();
        self.sweep(
            &self.sql.due_release,
            as_of,
            |member| Command::ReleasePending { member, as_of },
            &mut members,
        )
        .await
    }

    async fn expire_authorizations(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let mut members = Vec::new();
        self.sweep(
            &self.sql.due_authorizations,
            as_of,
            |member| Command::ExpireAuthorizations { member, as_of },
            &mut members,
        )
        .await
    }

    async fn review_tier(&self, review: &TierReview) -> Result<MemberBalance> {
        let record = match self.run_one(Command::ReviewTier(review)).await? {
            Done::Applied(entry) => entry.member,
            Done::Nothing(record) => record,
            Done::Duplicate(_) => return Err(Error::other("a tier review has no inbox row", None)),
        };
        Ok(MemberBalance {
            member: record.member.clone(),
            balances: record.balances,
            tier: record.tier.clone(),
            version: record.version,
        })
    }

    async fn apply_scheduled_tiers(&self, as_of: DateTime<Utc>) -> Result<SweepReport> {
        let mut members = Vec::new();
        self.sweep(
            &self.sql.due_tiers,
            as_of,
            |member| Command::ApplyScheduledTier { member, as_of },
            &mut members,
        )
        .await
    }

    async fn members_after(&self, after: Option<&MemberId>, limit: usize) -> Result<Vec<MemberId>> {
        let limit = page(limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // From the primary: a walk that follows writes must not lag behind.
        let client = self.writer().await?;
        let rows = match after {
            None => {
                let stmt = client
                    .prepare_cached(&self.sql.members_first)
                    .await
                    .map_err(pg_err("prepare members"))?;
                client.query(&stmt, &[&limit]).await
            }
            Some(after) => {
                let stmt = client
                    .prepare_cached(&self.sql.members_after)
                    .await
                    .map_err(pg_err("prepare members"))?;
                client.query(&stmt, &[&after.as_str(), &limit]).await
            }
        }
        .map_err(pg_err("read members"))?;
        let e = pg_err("read members");
        rows.iter()
            .map(|row| member_id(row.try_get(0).map_err(&e)?, "member id").map_err(Error::from))
            .collect()
    }

    async fn tier_views(
        &self,
        members: &[MemberId],
        counters: &[CounterKey],
    ) -> Result<Vec<TierView>> {
        rewards_core::store::check_tier_view_request(members.len())?;
        let requests: Vec<(MemberId, Vec<CounterKey>)> = members
            .iter()
            .map(|m| (m.clone(), counters.to_vec()))
            .collect();
        self.load_views(&requests).await
    }

    async fn balance(&self, member: &MemberId) -> Result<MemberBalance> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(&self.sql.balance)
            .await
            .map_err(pg_err("prepare balance"))?;
        let row = client
            .query_opt(&stmt, &[&member.as_str()])
            .await
            .map_err(pg_err("read balance"))?
            .ok_or_else(|| Error::not_found(format!("member {member}")))?;
        let e = pg_err("read balance");
        let tier: Option<String> = row.try_get(3).map_err(&e)?;
        Ok(MemberBalance {
            member: member.clone(),
            version: to_u64(row.try_get(0).map_err(&e)?, "member version")?,
            balances: Balances {
                available: points(row.try_get(1).map_err(&e)?),
                pending: points(row.try_get(2).map_err(&e)?),
            },
            tier: tier.map(Arc::from),
        })
    }

    async fn recent(&self, member: &MemberId, limit: usize) -> Result<Vec<RecentEntry>> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(&self.sql.recent)
            .await
            .map_err(pg_err("prepare recent"))?;
        let rows = client
            .query(&stmt, &[&member.as_str(), &page(limit)])
            .await
            .map_err(pg_err("read recent"))?;
        if rows.is_empty() {
            return Err(Error::not_found(format!("member {member}")));
        }
        let e = pg_err("read recent");
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(source) = row.try_get::<_, Option<String>>(0).map_err(&e)? else {
                continue;
            };
            let kind: String = row.try_get(1).map_err(&e)?;
            out.push(RecentEntry {
                id: tx_id(source, "event source")?,
                kind: entry_kind(&kind)?,
                time: row.try_get(2).map_err(&e)?,
                delta: Balances {
                    available: points(row.try_get(3).map_err(&e)?),
                    pending: points(row.try_get(4).map_err(&e)?),
                },
                version: to_u64(row.try_get(5).map_err(&e)?, "event seq")?,
            });
        }
        Ok(out)
    }

    async fn history(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Posting>> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(&self.sql.history)
            .await
            .map_err(pg_err("prepare history"))?;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&member.as_str(), &after, &page(limit)])
            .await
            .map_err(pg_err("read history"))?;
        if rows.is_empty() {
            return Err(Error::not_found(format!("member {member}")));
        }
        let e = pg_err("read history");
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(seq) = row.try_get::<_, Option<i64>>(0).map_err(&e)? else {
                continue;
            };
            let id: Vec<u8> = row.try_get(1).map_err(&e)?;
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| PgError::corrupt("posting id", "not 16 bytes"))?;
            let kind: String = row.try_get(5).map_err(&e)?;
            let delta = Balances {
                available: points(row.try_get(6).map_err(&e)?),
                pending: points(row.try_get(7).map_err(&e)?),
            };
            let after = Balances {
                available: points(row.try_get(8).map_err(&e)?),
                pending: points(row.try_get(9).map_err(&e)?),
            };
            let lot: Option<String> = row.try_get(10).map_err(&e)?;
            let ruleset = ruleset_stamp(&row, 11)?;
            let rule: String = row.try_get(3).map_err(&e)?;
            let rule_seq: i32 = row.try_get(4).map_err(&e)?;
            out.push(Posting {
                id: PostingId(id),
                member: member.clone(),
                seq: to_u64(seq, "posting seq")?,
                source: tx_id(row.try_get(2).map_err(&e)?, "posting source")?,
                rule: Arc::from(rule),
                rule_seq: u32::try_from(rule_seq)
                    .map_err(|_| PgError::corrupt("posting rule_seq", rule_seq))?,
                kind: posting_kind(&kind)?,
                delta,
                before: after.checked_sub(delta)?,
                after,
                lot: lot.map(|l| tx_id(l, "posting lot")).transpose()?,
                ruleset,
                time: row.try_get(14).map_err(&e)?,
            });
        }
        Ok(out)
    }

    async fn audit(
        &self,
        member: &MemberId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>> {
        let client = self.reader().await?;
        let stmt = client
            .prepare_cached(&self.sql.audit)
            .await
            .map_err(pg_err("prepare audit"))?;
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&member.as_str(), &after, &page(limit)])
            .await
            .map_err(pg_err("read audit"))?;
        if rows.is_empty() {
            return Err(Error::not_found(format!("member {member}")));
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let body: Option<&str> = row.try_get(0).map_err(pg_err("read audit"))?;
            if let Some(body) = body {
                out.push(audit_event(body, &row, 1)?);
            }
        }
        Ok(out)
    }

    async fn put_profile(&self, profile: &MemberProfile) -> Result<()> {
        let client = self.writer().await?;
        let stmt = client
            .prepare_cached(&self.sql.put_profile)
            .await
            .map_err(pg_err("prepare profile"))?;
        client
            .execute(
                &stmt,
                &[
                    &profile.member.as_str(),
                    &attributes_to_json(&profile.attributes),
                ],
            )
            .await
            .map_err(pg_err("write profile"))?;
        Ok(())
    }

    async fn profile(&self, member: &MemberId) -> Result<MemberProfile> {
        let client = self.writer().await?;
        let stmt = client
            .prepare_cached(&self.sql.profile)
            .await
            .map_err(pg_err("prepare profile"))?;
        let row = client
            .query_opt(&stmt, &[&member.as_str()])
            .await
            .map_err(pg_err("read profile"))?
            .ok_or_else(|| Error::not_found(format!("profile {member}")))?;
        let attributes: Value = row.try_get(0).map_err(pg_err("read profile"))?;
        Ok(MemberProfile {
            member: member.clone(),
            attributes: attributes_from_json(&attributes)?,
        })
    }

    async fn budget_used(&self, budget: &str) -> Result<Points> {
        let client = self.writer().await?;
        let stmt = client
            .prepare_cached(&self.sql.budget_used)
            .await
            .map_err(pg_err("prepare budget"))?;
        let row = client
            .query_opt(&stmt, &[&budget])
            .await
            .map_err(pg_err("read budget"))?;
        match row {
            Some(row) => Ok(points(row.try_get(0).map_err(pg_err("read budget"))?)),
            None => Ok(Points::ZERO),
        }
    }

    async fn reconcile(&self) -> Result<ReconcileReport> {
        let mut client = self.writer().await?;
        // One snapshot for the totals and the drift.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err("begin reconcile"))?;
        let totals = tx
            .query_one(&self.sql.reconcile_totals, &[])
            .await
            .map_err(pg_err("reconcile totals"))?;
        let rows = tx
            .query(&self.sql.reconcile_drift, &[])
            .await
            .map_err(pg_err("reconcile drift"))?;
        tx.commit().await.map_err(pg_err("end reconcile"))?;
        let e = pg_err("read reconcile");
        let members: i64 = totals.try_get(0).map_err(&e)?;
        let postings: i64 = totals.try_get(1).map_err(&e)?;
        let mut report = ReconcileReport {
            members: to_u64(members, "member count")?,
            postings: to_u64(postings, "posting count")?,
            drift: Vec::with_capacity(rows.len()),
        };
        let pair = |row: &tokio_postgres::Row, a: usize, p: usize| -> Result<Balances> {
            Ok(Balances {
                available: points(row.try_get(a).map_err(&e)?),
                pending: points(row.try_get(p).map_err(&e)?),
            })
        };
        for row in &rows {
            report.drift.push(Drift {
                member: member_id(row.try_get(0).map_err(&e)?, "member id")?,
                stored: pair(row, 1, 2)?,
                from_postings: pair(row, 3, 4)?,
                from_lots: pair(row, 5, 6)?,
            });
        }
        Ok(report)
    }
}

/// An audit event from its JSON `body` and the stamp joined at columns
/// `at..at + 3` (migration 5: the JSON leaves the stamp out; an event
/// written before keeps it in the JSON and joins none).
fn audit_event(body: &str, row: &Row, at: usize) -> Result<AuditEvent, PgError> {
    let mut event: AuditEvent = from_text(body, "audit event")?;
    if let Some(stamp) = ruleset_stamp(row, at)? {
        event.ruleset = Some(stamp);
    }
    Ok(event)
}
