//! The Redis cache adapter: a versioned projection of each member's balance,
//! tier and recent transactions, on one server or on a Redis Cluster.
//!
//! Redis is never the source of truth: every entry can be rebuilt from the
//! ledger store. Each entry carries the version of the last posting applied
//! to it, and every write is a compare-and-set done by a Lua script in one
//! round trip (see [`scripts`]), so a stale or out-of-order write never
//! overwrites a newer one. Key layout: [`keys`].
//!
//! Every operation is bounded by [`RedisCacheConfig::op_timeout`]; the
//! connection is opened lazily (the cache can start while Redis is down)
//! and replaced after a connection failure.

mod conn;
mod error;
pub mod keys;
pub mod scripts;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::{ErrorKind, IntoConnectionInfo, RedisError, RedisResult, Script, ScriptInvocation};

pub use conn::RedisTarget;
use conn::{Conn, Connector};
pub use error::RedisCacheError;
pub use keys::{KeyLayout, PrefixError};
use rewards_core::ledger::{Balances, RecentEntry};
use rewards_core::store::{CachePut, CachedMember};
use rewards_core::{MemberId, Points};
use scripts::{encode_version, Scripts};

use async_trait::async_trait;
use rewards_core::error::BoxError;
use rewards_core::store::BalanceCache;

use crate::cached::{ApplyOutcome, CacheBackend, CommitUpdate};

/// How to reach Redis and how to keep entries.
#[derive(Debug, Clone)]
pub struct RedisCacheConfig {
    /// One server or a cluster.
    pub target: RedisTarget,
    /// Prefix of every key (see [`keys`]); lets several deployments or tests
    /// share one server without seeing each other's keys.
    pub key_prefix: String,
    /// Time to live of an entry, renewed on every write (`None`: entries
    /// live until evicted).
    pub entry_ttl: Option<Duration>,
    /// Time to live of a tombstone left by an eviction.
    pub tombstone_ttl: Duration,
    /// How many recent entries an entry keeps (1 to `MAX_PAGE_ROWS`).
    pub recent_max: usize,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// Bound on one operation (one round trip, or one key-space scan step).
    pub op_timeout: Duration,
}

impl RedisCacheConfig {
    /// Defaults for one server at `url`.
    pub fn single(url: impl Into<String>) -> RedisCacheConfig {
        RedisCacheConfig::with_target(RedisTarget::Single(url.into()))
    }

    /// Defaults for a cluster reached through `nodes` (`host:port` each).
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> RedisCacheConfig {
        RedisCacheConfig::with_target(RedisTarget::Cluster(
            nodes.into_iter().map(Into::into).collect(),
        ))
    }

    /// Defaults for `target`: prefix `rewards`, entries kept 24 hours,
    /// tombstones 10 minutes, 20 recent transactions, 500 ms to connect,
    /// 250 ms per operation.
    pub fn with_target(target: RedisTarget) -> RedisCacheConfig {
        RedisCacheConfig {
            target,
            key_prefix: "rewards".to_owned(),
            entry_ttl: Some(Duration::from_secs(24 * 3600)),
            tombstone_ttl: Duration::from_secs(600),
            recent_max: 20,
            connect_timeout: Duration::from_millis(500),
            op_timeout: Duration::from_millis(250),
        }
    }

    /// The same with another key prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> RedisCacheConfig {
        self.key_prefix = prefix.into();
        self
    }
}

/// The Redis cache: single server or cluster, under one key prefix.
pub struct RedisCache {
    connector: Connector,
    layout: KeyLayout,
    scripts: Scripts,
    entry_ttl_ms: u64,
    tombstone_ttl_ms: u64,
    recent_max: usize,
    connect_timeout: Duration,
    op_timeout: Duration,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("target", self.connector.target())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Whether an error means the connection itself is suspect (as opposed to
/// the server answering with an error).
fn breaks_connection(e: &RedisError) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::ResponseError
            | ErrorKind::TypeError
            | ErrorKind::ExecAbortError
            | ErrorKind::NoScriptError
            | ErrorKind::CrossSlot
    )
}

impl RedisCache {
    /// A cache for `config` (checks the prefix; connects on first use).
    pub fn new(config: RedisCacheConfig) -> Result<RedisCache, RedisCacheError> {
        let layout = KeyLayout::new(config.key_prefix)?;
        Ok(RedisCache {
            connector: Connector::new(config.target, config.connect_timeout, config.op_timeout),
            layout,
            scripts: Scripts::new(),
            entry_ttl_ms: config.entry_ttl.map_or(0, millis),
            tombstone_ttl_ms: millis(config.tombstone_ttl),
            recent_max: config
                .recent_max
                .clamp(1, rewards_core::store::MAX_PAGE_ROWS),
            connect_timeout: config.connect_timeout,
            op_timeout: config.op_timeout,
        })
    }

    /// A cache for `config`, checked with a `PING`.
    pub async fn connect(config: RedisCacheConfig) -> Result<RedisCache, RedisCacheError> {
        let cache = RedisCache::new(config)?;
        cache.ping().await?;
        Ok(cache)
    }

    /// Its key layout.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// Where it connects.
    pub fn target(&self) -> &RedisTarget {
        self.connector.target()
    }

    /// How many recent transactions an entry keeps.
    pub fn recent_max(&self) -> usize {
        self.recent_max
    }

    /// Runs one operation on the shared connection, bounded by the
    /// operation timeout; a connection failure drops the connection.
    async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisCacheError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.connector.get().await?;
        match tokio::time::timeout(self.op_timeout, f(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if breaks_connection(&e) {
                    self.connector.discard(generation).await;
                }
                Err(e.into())
            }
            Err(_) => {
                self.connector.discard(generation).await;
                Err(RedisCacheError::Timeout {
                    op,
                    after: self.op_timeout,
                })
            }
        }
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), RedisCacheError> {
        self.run("ping", |mut conn| async move {
            ::redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(drop)
    }

    /// The cached entry of `member`; `None` on a miss or a tombstone.
    pub async fn get(&self, member: &MemberId) -> Result<Option<CachedMember>, RedisCacheError> {
        let id = member.as_str();
        let (bal, recent) = (self.layout.balance(id), self.layout.recent(id));
        let (fields, items): (Vec<String>, Vec<String>) = self
            .run("get", |mut conn| async move {
                self.scripts
                    .read
                    .key(bal)
                    .key(recent)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        parse_entry(member, fields, &items)
    }

    /// Stores a complete snapshot unless the cache holds or guards a newer
    /// version. Only the first [`RedisCache::recent_max`] recent entries
    /// are kept.
    pub async fn put(&self, entry: &CachedMember) -> Result<CachePut, RedisCacheError> {
        let id = entry.member.as_str();
        let (bal, recent) = (self.layout.balance(id), self.layout.recent(id));
        let items = encode_recent(&entry.member, entry.recent.iter().take(self.recent_max))?;
        let (written, version): (i64, String) = self
            .run("put", |mut conn| async move {
                let mut call = self.scripts.put.key(bal);
                call.key(recent)
                    .arg(encode_version(entry.version))
                    .arg(entry.balances.available.get())
                    .arg(entry.balances.pending.get())
                    .arg(if entry.tier.is_some() { "1" } else { "0" })
                    .arg(entry.tier.as_deref().unwrap_or(""))
                    .arg(self.entry_ttl_ms);
                for item in &items {
                    call.arg(item.as_str());
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        if written == 1 {
            Ok(CachePut::Written)
        } else {
            Ok(CachePut::Stale {
                current: parse_version(&entry.member, &version)?,
            })
        }
    }

    /// Writes one commit through in one round trip: balances and tier, and
    /// its new recent entries pushed onto the list (then trimmed to the
    /// bound), when the cache holds the member complete at exactly
    /// `update.base_version`; otherwise guards the member with a tombstone
    /// at `update.version` (see [`scripts`]).
    pub async fn apply_commit(
        &self,
        update: &CommitUpdate<'_>,
    ) -> Result<ApplyOutcome, RedisCacheError> {
        let id = update.member.as_str();
        let (bal, recent) = (self.layout.balance(id), self.layout.recent(id));
        let skip = update.new_recent.len().saturating_sub(self.recent_max);
        let items = encode_recent(update.member, update.new_recent.iter().skip(skip))?;
        let (code, version): (i64, String) = self
            .run("apply", |mut conn| async move {
                let mut call = self.scripts.apply.key(bal);
                call.key(recent)
                    .arg(encode_version(update.version))
                    .arg(update.balances.available.get())
                    .arg(update.balances.pending.get())
                    .arg(if update.tier.is_some() { "1" } else { "0" })
                    .arg(update.tier.unwrap_or(""))
                    .arg(self.entry_ttl_ms)
                    .arg(self.recent_max)
                    .arg(encode_version(update.base_version))
                    .arg(self.tombstone_ttl_ms);
                for item in &items {
                    call.arg(item.as_str());
                }
                call.invoke_async(&mut conn).await
            })
            .await?;
        match code {
            1 => Ok(ApplyOutcome::Written),
            2 => Ok(ApplyOutcome::Guarded),
            _ => Ok(ApplyOutcome::Stale {
                current: parse_version(update.member, &version)?,
            }),
        }
    }

    /// [`RedisCache::apply_commit`] for several commits in one pipelined
    /// round trip (on a cluster: one pipeline per hash slot, sent
    /// concurrently), applied in order; one outcome per update. Updates of
    /// one member run in the order given (one connection per node, and a
    /// member's keys share one slot), each checked against the version the
    /// previous one left.
    pub async fn apply_commits(
        &self,
        updates: &[CommitUpdate<'_>],
    ) -> Result<Vec<ApplyOutcome>, RedisCacheError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::with_capacity(updates.len());
        let mut items = Vec::with_capacity(updates.len());
        for update in updates {
            let id = update.member.as_str();
            keys.push((self.layout.balance(id), self.layout.recent(id)));
            let skip = update.new_recent.len().saturating_sub(self.recent_max);
            items.push(encode_recent(
                update.member,
                update.new_recent.iter().skip(skip),
            )?);
        }
        let calls: Vec<ScriptInvocation<'_>> = updates
            .iter()
            .zip(&keys)
            .zip(&items)
            .map(|((update, (bal, recent)), items)| {
                let mut call = self.scripts.apply.prepare_invoke();
                call.key(bal)
                    .key(recent)
                    .arg(encode_version(update.version))
                    .arg(update.balances.available.get())
                    .arg(update.balances.pending.get())
                    .arg(if update.tier.is_some() { "1" } else { "0" })
                    .arg(update.tier.unwrap_or(""))
                    .arg(self.entry_ttl_ms)
                    .arg(self.recent_max)
                    .arg(encode_version(update.base_version))
                    .arg(self.tombstone_ttl_ms);
                for item in items {
                    call.arg(item.as_str());
                }
                call
            })
            .collect();
        let slots: Vec<&str> = keys.iter().map(|(bal, _)| bal.as_str()).collect();
        let replies: Vec<(i64, String)> = self
            .run_scripts("apply batch", &self.scripts.apply, &calls, &slots)
            .await?;
        updates
            .iter()
            .zip(replies)
            .map(|(update, (code, version))| match code {
                1 => Ok(ApplyOutcome::Written),
                2 => Ok(ApplyOutcome::Guarded),
                _ => Ok(ApplyOutcome::Stale {
                    current: parse_version(update.member, &version)?,
                }),
            })
            .collect()
    }

    /// [`RedisCache::put`] for several entries in one pipelined round trip
    /// (per hash slot on a cluster), applied in order; one result each.
    pub async fn put_many(
        &self,
        entries: &[CachedMember],
    ) -> Result<Vec<CachePut>, RedisCacheError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = Vec::with_capacity(entries.len());
        let mut items = Vec::with_capacity(entries.len());
        for entry in entries {
            let id = entry.member.as_str();
            keys.push((self.layout.balance(id), self.layout.recent(id)));
            items.push(encode_recent(
                &entry.member,
                entry.recent.iter().take(self.recent_max),
            )?);
        }
        let calls: Vec<ScriptInvocation<'_>> = entries
            .iter()
            .zip(&keys)
            .zip(&items)
            .map(|((entry, (bal, recent)), items)| {
                let mut call = self.scripts.put.prepare_invoke();
                call.key(bal)
                    .key(recent)
                    .arg(encode_version(entry.version))
                    .arg(entry.balances.available.get())
                    .arg(entry.balances.pending.get())
                    .arg(if entry.tier.is_some() { "1" } else { "0" })
                    .arg(entry.tier.as_deref().unwrap_or(""))
                    .arg(self.entry_ttl_ms);
                for item in items {
                    call.arg(item.as_str());
                }
                call
            })
            .collect();
        let slots: Vec<&str> = keys.iter().map(|(bal, _)| bal.as_str()).collect();
        let replies: Vec<(i64, String)> = self
            .run_scripts("put batch", &self.scripts.put, &calls, &slots)
            .await?;
        entries
            .iter()
            .zip(replies)
            .map(|(entry, (written, version))| {
                if written == 1 {
                    Ok(CachePut::Written)
                } else {
                    Ok(CachePut::Stale {
                        current: parse_version(&entry.member, &version)?,
                    })
                }
            })
            .collect()
    }

    /// Sends script calls as pipelines (`EVALSHA`): one pipeline on a single
    /// server; on a cluster one per hash slot (`slots[i]` is a key of call
    /// `i`), all sent at once, each to its slot's master. Replies come back
    /// in call order. When the server does not know the script yet
    /// (`NOSCRIPT`: nothing of the batch ran), it is loaded and the batch
    /// sent once more. The whole exchange is one bounded operation.
    async fn run_scripts<T>(
        &self,
        op: &'static str,
        script: &Script,
        calls: &[ScriptInvocation<'_>],
        slots: &[&str],
    ) -> Result<Vec<T>, RedisCacheError>
    where
        T: ::redis::FromRedisValue + Send + 'static,
    {
        // One pipeline per group of call indexes.
        let mut groups: Vec<(Vec<usize>, ::redis::Pipeline)> = Vec::new();
        match self.connector.target() {
            RedisTarget::Single(_) => {
                let mut pipe = ::redis::pipe();
                for call in calls {
                    pipe.invoke_script(call);
                }
                groups.push(((0..calls.len()).collect(), pipe));
            }
            RedisTarget::Cluster(_) => {
                let mut by_slot: std::collections::BTreeMap<u16, usize> =
                    std::collections::BTreeMap::new();
                for (i, (call, key)) in calls.iter().zip(slots).enumerate() {
                    let slot = ::redis::cluster_routing::get_slot(key.as_bytes());
                    let g = *by_slot.entry(slot).or_insert_with(|| {
                        groups.push((Vec::new(), ::redis::pipe()));
                        groups.len() - 1
                    });
                    groups[g].0.push(i);
                    groups[g].1.invoke_script(call);
                }
            }
        }
        let groups = Arc::new(groups);
        let n = calls.len();
        self.run(op, |conn| async move {
            match send_groups(conn.clone(), groups.clone(), n).await {
                Err(e) if e.kind() == ErrorKind::NoScriptError => {
                    let mut c = conn.clone();
                    script.prepare_invoke().load_async(&mut c).await?;
                    send_groups(conn, groups, n).await
                }
                other => other,
            }
        })
        .await
    }

    /// [`RedisCache::evict`] for several members in one pipelined round
    /// trip (per hash slot on a cluster); returns each guarded version.
    pub async fn evict_many(
        &self,
        members: &[(&MemberId, u64)],
    ) -> Result<Vec<u64>, RedisCacheError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(String, String)> = members
            .iter()
            .map(|(m, _)| {
                (
                    self.layout.balance(m.as_str()),
                    self.layout.recent(m.as_str()),
                )
            })
            .collect();
        let calls: Vec<ScriptInvocation<'_>> = members
            .iter()
            .zip(&keys)
            .map(|((_, min_version), (bal, recent))| {
                let mut call = self.scripts.evict.prepare_invoke();
                call.key(bal)
                    .key(recent)
                    .arg(encode_version(*min_version))
                    .arg(self.tombstone_ttl_ms);
                call
            })
            .collect();
        let slots: Vec<&str> = keys.iter().map(|(bal, _)| bal.as_str()).collect();
        let replies: Vec<String> = self
            .run_scripts("evict batch", &self.scripts.evict, &calls, &slots)
            .await?;
        members
            .iter()
            .zip(replies)
            .map(|((m, _), v)| parse_version(m, &v))
            .collect()
    }

    /// Drops `member`'s entry, leaving a tombstone that refuses later puts
    /// older than `min_version` (or than the version the entry had, when
    /// newer). Returns the guarded version (0: nothing guarded).
    pub async fn evict(&self, member: &MemberId, min_version: u64) -> Result<u64, RedisCacheError> {
        let id = member.as_str();
        let (bal, recent) = (self.layout.balance(id), self.layout.recent(id));
        let guarded: String = self
            .run("evict", |mut conn| async move {
                self.scripts
                    .evict
                    .key(bal)
                    .key(recent)
                    .arg(encode_version(min_version))
                    .arg(self.tombstone_ttl_ms)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        parse_version(member, &guarded)
    }

    /// Deletes every key under the prefix, on every master of a cluster.
    /// Returns how many keys were deleted.
    pub async fn clear(&self) -> Result<u64, RedisCacheError> {
        let pattern = self.layout.scan_pattern();
        let mut deleted = 0;
        match self.connector.target() {
            RedisTarget::Single(_) => {
                let (generation, conn) = self.connector.get().await?;
                match self.clear_node(conn, &pattern).await {
                    Ok(n) => deleted += n,
                    Err(e) => {
                        self.connector.discard(generation).await;
                        return Err(e);
                    }
                }
            }
            RedisTarget::Cluster(nodes) => {
                for conn in self.master_connections(nodes).await? {
                    deleted += self.clear_node(conn, &pattern).await?;
                }
            }
        }
        Ok(deleted)
    }

    /// Members that have an entry (or a tombstone) under the prefix, on
    /// every node: for tests and operators (it scans the key space).
    pub async fn cached_members(&self) -> Result<Vec<String>, RedisCacheError> {
        let pattern = format!("{}:{{m:*}}:bal", self.layout.prefix());
        let mut keys = Vec::new();
        match self.connector.target() {
            RedisTarget::Single(_) => {
                let (generation, conn) = self.connector.get().await?;
                if let Err(e) = self.scan_node(conn, &pattern, &mut keys).await {
                    self.connector.discard(generation).await;
                    return Err(e);
                }
            }
            RedisTarget::Cluster(nodes) => {
                for conn in self.master_connections(nodes).await? {
                    self.scan_node(conn, &pattern, &mut keys).await?;
                }
            }
        }
        let mut members: Vec<String> = keys
            .iter()
            .filter_map(|k| self.layout.member_of_balance_key(k))
            .map(str::to_owned)
            .collect();
        members.sort();
        members.dedup();
        Ok(members)
    }

    /// A direct connection to each reachable master of the cluster (a key
    /// space scan is per node), with the credentials of the first address.
    async fn master_connections(
        &self,
        nodes: &[String],
    ) -> Result<Vec<MultiplexedConnection>, RedisCacheError> {
        let listing: String = self
            .run("cluster nodes", |mut conn| async move {
                ::redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let template = RedisTarget::cluster_urls(nodes)
            .into_iter()
            .next()
            .ok_or_else(|| {
                RedisCacheError::Redis(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "a cluster target needs at least one node",
                )))
            })?
            .into_connection_info()?;
        let mut conns = Vec::new();
        for (host, port) in cluster_masters(&listing) {
            let mut info = template.clone();
            info.addr = ::redis::ConnectionAddr::Tcp(host, port);
            let client = ::redis::Client::open(info)?;
            let conn = tokio::time::timeout(
                self.connect_timeout,
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| RedisCacheError::Timeout {
                op: "connect",
                after: self.connect_timeout,
            })??;
            conns.push(conn);
        }
        Ok(conns)
    }

    /// One bounded `SCAN` step on one node.
    async fn scan_step<C>(
        &self,
        conn: &mut C,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>), RedisCacheError>
    where
        C: ConnectionLike + Send,
    {
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        let step = scan.query_async::<(u64, Vec<String>)>(conn);
        Ok(tokio::time::timeout(self.op_timeout, step)
            .await
            .map_err(|_| RedisCacheError::Timeout {
                op: "scan",
                after: self.op_timeout,
            })??)
    }

    /// Collects one node's keys matching `pattern`.
    async fn scan_node<C>(
        &self,
        mut conn: C,
        pattern: &str,
        found: &mut Vec<String>,
    ) -> Result<(), RedisCacheError>
    where
        C: ConnectionLike + Send,
    {
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_step(&mut conn, cursor, pattern).await?;
            found.extend(keys);
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Unlinks one node's keys matching `pattern`, one key per command
    /// (keys of different members may sit in different slots).
    async fn clear_node<C>(&self, mut conn: C, pattern: &str) -> Result<u64, RedisCacheError>
    where
        C: ConnectionLike + Send,
    {
        let mut cursor = 0;
        let mut deleted = 0;
        loop {
            let (next, keys) = self.scan_step(&mut conn, cursor, pattern).await?;
            if !keys.is_empty() {
                let mut pipe = ::redis::pipe();
                for key in &keys {
                    pipe.cmd("UNLINK").arg(key);
                }
                let counts =
                    tokio::time::timeout(self.op_timeout, pipe.query_async::<Vec<u64>>(&mut conn))
                        .await
                        .map_err(|_| RedisCacheError::Timeout {
                            op: "unlink",
                            after: self.op_timeout,
                        })??;
                deleted += counts.iter().sum::<u64>();
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// Sends each group's pipeline (concurrently when there are several) and
/// puts the replies back in call order.
async fn send_groups<T>(
    conn: Conn,
    groups: Arc<Vec<(Vec<usize>, ::redis::Pipeline)>>,
    n: usize,
) -> RedisResult<Vec<T>>
where
    T: ::redis::FromRedisValue + Send + 'static,
{
    let mut replies: Vec<Option<T>> = (0..n).map(|_| None).collect();
    if groups.len() == 1 {
        let mut c = conn;
        let (indexes, pipe) = &groups[0];
        let got: Vec<T> = pipe.query_async(&mut c).await?;
        for (i, reply) in indexes.iter().zip(got) {
            replies[*i] = Some(reply);
        }
    } else {
        let mut tasks = tokio::task::JoinSet::new();
        for g in 0..groups.len() {
            let mut c = conn.clone();
            let groups = groups.clone();
            tasks.spawn(async move {
                let got: RedisResult<Vec<T>> = groups[g].1.query_async(&mut c).await;
                (g, got)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (g, got) = joined.map_err(|e| {
                RedisError::from((
                    ErrorKind::IoError,
                    "a pipelined cache task failed",
                    e.to_string(),
                ))
            })?;
            for (i, reply) in groups[g].0.iter().zip(got?) {
                replies[*i] = Some(reply);
            }
        }
    }
    replies
        .into_iter()
        .map(|r| {
            r.ok_or_else(|| {
                RedisError::from((ErrorKind::TypeError, "a pipelined call got no reply"))
            })
        })
        .collect()
}

impl From<RedisCacheError> for rewards_core::Error {
    fn from(e: RedisCacheError) -> rewards_core::Error {
        let message = e.to_string();
        match e {
            RedisCacheError::Malformed { .. } | RedisCacheError::Prefix(_) => {
                rewards_core::Error::other(message, Some(Box::new(e) as BoxError))
            }
            _ => rewards_core::Error::unavailable(message, Some(Box::new(e) as BoxError)),
        }
    }
}

#[async_trait]
impl BalanceCache for RedisCache {
    async fn get(&self, member: &MemberId) -> rewards_core::error::Result<Option<CachedMember>> {
        Ok(RedisCache::get(self, member).await?)
    }

    async fn put(&self, entry: &CachedMember) -> rewards_core::error::Result<CachePut> {
        Ok(RedisCache::put(self, entry).await?)
    }

    async fn put_many(
        &self,
        entries: &[CachedMember],
    ) -> rewards_core::error::Result<Vec<CachePut>> {
        Ok(RedisCache::put_many(self, entries).await?)
    }

    async fn evict(&self, member: &MemberId, min_version: u64) -> rewards_core::error::Result<()> {
        RedisCache::evict(self, member, min_version).await?;
        Ok(())
    }

    async fn clear(&self) -> rewards_core::error::Result<()> {
        RedisCache::clear(self).await?;
        Ok(())
    }
}

#[async_trait]
impl CacheBackend for RedisCache {
    fn recent_capacity(&self) -> usize {
        self.recent_max
    }

    async fn ping(&self) -> rewards_core::error::Result<()> {
        Ok(RedisCache::ping(self).await?)
    }

    async fn apply_commit(
        &self,
        update: &CommitUpdate<'_>,
    ) -> rewards_core::error::Result<ApplyOutcome> {
        Ok(RedisCache::apply_commit(self, update).await?)
    }

    async fn apply_commits(
        &self,
        updates: &[CommitUpdate<'_>],
    ) -> rewards_core::error::Result<Vec<ApplyOutcome>> {
        Ok(RedisCache::apply_commits(self, updates).await?)
    }

    async fn evict_many(&self, members: &[(&MemberId, u64)]) -> rewards_core::error::Result<()> {
        RedisCache::evict_many(self, members).await?;
        Ok(())
    }
}

/// The reachable masters listed by `CLUSTER NODES`.
fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let host_port = addr.split('@').next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

fn malformed(member: &MemberId, reason: impl Into<String>) -> RedisCacheError {
    RedisCacheError::Malformed {
        member: member.to_string(),
        reason: reason.into(),
    }
}

fn parse_version(member: &MemberId, text: &str) -> Result<u64, RedisCacheError> {
    text.parse::<u64>()
        .map_err(|e| malformed(member, format!("version {text:?}: {e}")))
}

fn parse_points(member: &MemberId, what: &str, text: &str) -> Result<Points, RedisCacheError> {
    text.parse::<i64>()
        .map(Points)
        .map_err(|e| malformed(member, format!("{what} {text:?}: {e}")))
}

/// JSON-encodes recent entries for the list.
fn encode_recent<'a>(
    member: &MemberId,
    entries: impl Iterator<Item = &'a RecentEntry>,
) -> Result<Vec<String>, RedisCacheError> {
    entries
        .map(|e| {
            serde_json::to_string(e)
                .map_err(|err| malformed(member, format!("recent entry {}: {err}", e.id)))
        })
        .collect()
}

/// Builds an entry from the `READ` script's reply; `None` on a miss or a
/// tombstone.
fn parse_entry(
    member: &MemberId,
    fields: Vec<String>,
    items: &[String],
) -> Result<Option<CachedMember>, RedisCacheError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut version = None;
    let mut available = None;
    let mut pending = None;
    let mut tier = None;
    let mut pairs = fields.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        match name.as_str() {
            "v" => version = Some(parse_version(member, &value)?),
            "av" => available = Some(parse_points(member, "available", &value)?),
            "pe" => pending = Some(parse_points(member, "pending", &value)?),
            "tier" => tier = Some(Arc::<str>::from(value)),
            "x" => return Ok(None),
            _ => {}
        }
    }
    let version = version.ok_or_else(|| malformed(member, "no version"))?;
    let available = available.ok_or_else(|| malformed(member, "no available balance"))?;
    let pending = pending.ok_or_else(|| malformed(member, "no pending balance"))?;
    let recent = items
        .iter()
        .map(|item| {
            serde_json::from_str::<RecentEntry>(item)
                .map_err(|e| malformed(member, format!("recent entry {item:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(CachedMember {
        member: member.clone(),
        version,
        balances: Balances { available, pending },
        tier,
        recent,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@31004,host-a slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
aaaa 127.0.0.1:30009@31009 master,fail - 0 0 1 disconnected
";
        assert_eq!(
            cluster_masters(text),
            vec![
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30003),
                ("127.0.0.1".to_owned(), 30001),
            ]
        );
    }

    #[test]
    fn entries_parse_and_tombstones_miss() {
        let m = MemberId::new("m-1").unwrap();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let recent = RecentEntry {
            id: rewards_core::TxId::new("tx-1").unwrap(),
            kind: rewards_core::ledger::EntryKind::Purchase,
            time: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            delta: Balances {
                available: Points(5),
                pending: Points(0),
            },
            version: 7,
        };
        let items = encode_recent(&m, [&recent].into_iter()).unwrap();
        let entry = parse_entry(
            &m,
            s(&[
                "v",
                "00000000000000000007",
                "av",
                "-12",
                "pe",
                "3",
                "tier",
                "gold",
            ]),
            &items,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            entry,
            CachedMember {
                member: m.clone(),
                version: 7,
                balances: Balances {
                    available: Points(-12),
                    pending: Points(3),
                },
                tier: Some("gold".into()),
                recent: vec![recent],
            }
        );
        assert_eq!(
            parse_entry(&m, s(&["v", "9", "x", "1"]), &[]).unwrap(),
            None
        );
        assert_eq!(parse_entry(&m, vec![], &[]).unwrap(), None);
        assert!(matches!(
            parse_entry(&m, s(&["v", "nine", "av", "1", "pe", "0"]), &[]),
            Err(RedisCacheError::Malformed { .. })
        ));
        assert!(matches!(
            parse_entry(&m, s(&["v", "1", "av", "1", "pe", "0"]), &s(&["{"])),
            Err(RedisCacheError::Malformed { .. })
        ));
    }
}
