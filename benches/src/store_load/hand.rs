//! The hand-written baseline of the issue, measured in the same run: a
//! minimal write path of the same shape as the store's (inbox row,
//! postings, balance upsert, audit row), prepared multi-row statements over
//! `unnest` arrays, pipelined, `per_tx` outcomes per database transaction,
//! workers partitioned by member. No rule evaluation, no member view, no
//! ledger logic: only the writes, so the store's figures can be read as a
//! ratio to what the server allows for that shape.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rewards_core::Transaction;
use rewards_store::postgres::PgStore;

use super::BoxError;

/// The baseline's tables, in the mode's own schema.
pub(super) async fn create_tables(pg: &PgStore, schema: &str) -> Result<(), BoxError> {
    let client = pg.primary_pool().get().await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.hw_inbox (id text PRIMARY KEY, member text NOT NULL, \
                                             points bigint NOT NULL); \
             CREATE TABLE {schema}.hw_postings (member text NOT NULL, seq bigint NOT NULL, \
                                             tx_id text NOT NULL, points bigint NOT NULL, \
                                             at timestamptz NOT NULL, PRIMARY KEY (member, seq)); \
             CREATE TABLE {schema}.hw_balances (member text PRIMARY KEY, points bigint NOT NULL, \
                                             version bigint NOT NULL) WITH (fillfactor = 70); \
             CREATE TABLE {schema}.hw_audit (member text NOT NULL, seq bigint NOT NULL, \
                                             body text NOT NULL, PRIMARY KEY (member, seq));"
        ))
        .await?;
    Ok(())
}

/// The points the baseline credits: one per whole currency unit.
fn points_of(tx: &Transaction) -> i64 {
    tx.amount.amount.trunc().mantissa().try_into().unwrap_or(0)
}

/// One worker: its transactions, `per_tx` per database transaction.
/// Returns (outcomes written, store-call latencies in µs).
pub(super) async fn worker(
    pg: Arc<PgStore>,
    schema: String,
    txs: Vec<Transaction>,
    per_tx: usize,
    deadline: Instant,
    done: Arc<AtomicU64>,
) -> Result<(u64, Vec<u64>), BoxError> {
    let client = pg.primary_pool().get().await?;
    let s = &schema;
    let inbox = client
        .prepare(&format!(
            "INSERT INTO {s}.hw_inbox (id, member, points) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])"
        ))
        .await?;
    let postings = client
        .prepare(&format!(
            "INSERT INTO {s}.hw_postings (member, seq, tx_id, points, at) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], \
                                  $5::timestamptz[])"
        ))
        .await?;
    let balances = client
        .prepare(&format!(
            "INSERT INTO {s}.hw_balances AS b (member, points, version) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
             ON CONFLICT (member) DO UPDATE SET points = b.points + EXCLUDED.points, \
                                                version = EXCLUDED.version"
        ))
        .await?;
    let audit = client
        .prepare(&format!(
            "INSERT INTO {s}.hw_audit (member, seq, body) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])"
        ))
        .await?;
    // Each member's next sequence number (the worker owns its members).
    let mut seqs: HashMap<String, i64> = HashMap::new();
    let mut written = 0u64;
    let mut latencies = Vec::new();
    let mut queue = txs.into_iter().peekable();
    while queue.peek().is_some() && Instant::now() < deadline {
        let chunk: Vec<Transaction> = queue.by_ref().take(per_tx).collect();
        let n = chunk.len();
        let mut ids = Vec::with_capacity(n);
        let mut member = Vec::with_capacity(n);
        let mut points = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut body = Vec::with_capacity(n);
        // One balance row per member (an upsert may touch a row once).
        let mut totals: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for tx in &chunk {
            let next = seqs.entry(tx.member.as_str().to_owned()).or_insert(0);
            *next += 1;
            let p = points_of(tx);
            ids.push(tx.id.as_str());
            member.push(tx.member.as_str());
            points.push(p);
            seq.push(*next);
            at.push(tx.time);
            body.push(format!(
                r#"{{"tx":"{}","member":"{}","points":{p},"seq":{}}}"#,
                tx.id, tx.member, *next
            ));
            let total = totals.entry(tx.member.as_str()).or_insert((0, 0));
            total.0 += p;
            total.1 = *next;
        }
        let b_member: Vec<&str> = totals.keys().copied().collect();
        let b_points: Vec<i64> = totals.values().map(|t| t.0).collect();
        let b_version: Vec<i64> = totals.values().map(|t| t.1).collect();
        let started = Instant::now();
        let results = tokio::try_join!(
            async { client.batch_execute("BEGIN").await },
            async { client.execute(&inbox, &[&ids, &member, &points]).await },
            async {
                client
                    .execute(&postings, &[&member, &seq, &ids, &points, &at])
                    .await
            },
            async {
                client
                    .execute(&balances, &[&b_member, &b_points, &b_version])
                    .await
            },
            async { client.execute(&audit, &[&member, &seq, &body]).await },
            async { client.batch_execute("COMMIT").await },
        );
        if let Err(e) = results {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Box::new(e));
        }
        latencies.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        written += n as u64;
        done.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok((written, latencies))
}

/// Checks the baseline's own bookkeeping: one inbox row per outcome, and
/// every balance equal to the sum of its postings. Returns (inbox rows,
/// members whose balance differs).
pub(super) async fn reconcile(pg: &PgStore, schema: &str) -> Result<(u64, u64), BoxError> {
    let client = pg.primary_pool().get().await?;
    let s = schema;
    let inbox: i64 = client
        .query_one(&format!("SELECT count(*) FROM {s}.hw_inbox"), &[])
        .await?
        .try_get(0)?;
    let drift: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM {s}.hw_balances b \
                 LEFT JOIN (SELECT member, sum(points)::bigint AS p FROM {s}.hw_postings \
                            GROUP BY member) p ON p.member = b.member \
                 WHERE b.points IS DISTINCT FROM coalesce(p.p, 0)"
            ),
            &[],
        )
        .await?
        .try_get(0)?;
    Ok((
        u64::try_from(inbox).unwrap_or(0),
        u64::try_from(drift).unwrap_or(0),
    ))
}
