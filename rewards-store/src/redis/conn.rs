//! One Redis connection type for a single server and for a Redis Cluster,
//! connected lazily and replaced after a connection failure.
//!
//! The single server goes through the `redis` crate's `ConnectionManager`
//! (multiplexed, reconnecting); the cluster through its async cluster
//! connection (slot map, MOVED/ASK redirects). Both implement
//! `redis::aio::ConnectionLike`, so scripts and commands run the same way on
//! either; commands whose keys share one hash tag are routed to the slot's
//! node by the cluster client.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

use super::error::RedisCacheError;

/// Where the cache lives.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server, by URL (`redis://127.0.0.1:6379`, `redis://:pw@host/2`).
    Single(String),
    /// A Redis Cluster, by the addresses of some of its nodes
    /// (`127.0.0.1:7000` or `redis://127.0.0.1:7000`); the others are
    /// discovered from the slot map.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// A cluster from a comma-separated address list
    /// (`127.0.0.1:7000,127.0.0.1:7001`).
    pub fn cluster_from_list(list: &str) -> RedisTarget {
        RedisTarget::Cluster(
            list.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// Node URLs of a cluster target (a bare `host:port` gets `redis://`).
    pub(crate) fn cluster_urls(nodes: &[String]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| {
                if n.contains("://") {
                    n.clone()
                } else {
                    format!("redis://{n}")
                }
            })
            .collect()
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }
}

impl fmt::Debug for RedisTarget {
    // URLs may carry a password: show only host parts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn redact(url: &str) -> String {
            match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://***@{}", &url[..scheme], &url[at + 1..])
                }
                _ => url.to_owned(),
            }
        }
        match self {
            RedisTarget::Single(url) => write!(f, "Single({:?})", redact(url)),
            RedisTarget::Cluster(nodes) => f
                .debug_tuple("Cluster")
                .field(&nodes.iter().map(|n| redact(n)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// A live connection to either kind of target (cheap to clone: both kinds
/// are handles onto a shared multiplexed connection).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(Box<ConnectionManager>),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens connections lazily (the cache may start while Redis is down) and
/// drops a connection after a failure, so the next use connects afresh.
pub(crate) struct Connector {
    target: RedisTarget,
    connect_timeout: Duration,
    response_timeout: Duration,
    slot: Mutex<Option<(u64, Conn)>>,
    generation: AtomicU64,
}

impl Connector {
    pub(crate) fn new(
        target: RedisTarget,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Connector {
        Connector {
            target,
            connect_timeout,
            response_timeout,
            slot: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The current connection (opening one if needed), with its generation
    /// for [`Connector::discard`].
    pub(crate) async fn get(&self) -> Result<(u64, Conn), RedisCacheError> {
        let mut slot = self.slot.lock().await;
        if let Some((generation, conn)) = slot.as_ref() {
            return Ok((*generation, conn.clone()));
        }
        let conn = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| RedisCacheError::Timeout {
                op: "connect",
                after: self.connect_timeout,
            })??;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Forgets the connection of `generation` after it failed (a newer one
    /// opened meanwhile is kept).
    pub(crate) async fn discard(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    async fn open(&self) -> Result<Conn, RedisCacheError> {
        match &self.target {
            RedisTarget::Single(url) => {
                let client = ::redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.connect_timeout)
                    .set_response_timeout(self.response_timeout)
                    .set_number_of_retries(1)
                    .set_factor(10)
                    .set_max_delay(100);
                Ok(Conn::Single(Box::new(
                    ConnectionManager::new_with_config(client, config).await?,
                )))
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(RedisTarget::cluster_urls(nodes))
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_lists_parse_and_passwords_stay_hidden() {
        let t = RedisTarget::cluster_from_list(" 127.0.0.1:7000, ,127.0.0.1:7001");
        assert_eq!(
            t,
            RedisTarget::Cluster(vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()])
        );
        assert!(t.is_cluster());
        assert_eq!(
            RedisTarget::cluster_urls(&["h:1".into(), "rediss://h:2".into()]),
            vec!["redis://h:1".to_string(), "rediss://h:2".to_string()]
        );
        let shown = format!(
            "{:?}",
            RedisTarget::Single("redis://:s3cret@host:6379/1".into())
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("host:6379/1"), "{shown}");
    }
}
