//! Observed-flow aggregates for the least-privilege recommendation (issue 12, decision 0030):
//! the stored flow history reduced to conversations — client, server, protocol, service
//! port and application label, with the number of flows and the first and last time seen —
//! computed where the flows are. On ClickHouse that is one `GROUP BY` pushed down as SQL,
//! so a month of flows is never downloaded; the embedded store scans its rows (demo sizes).
//!
//! The client is the `a` side (the end that sent the first packet), except when the flow
//! went from a well-known port to an ephemeral one: the capture then most likely started
//! mid-conversation and the sides are swapped, as `wardline_intel::FlowSpec::from_record`
//! does. Client ports are not kept (they are ephemeral), which is what makes the reduction.
//!
//! [`FlowStore`] is the node's flow store by kind, next to the `dyn FlowSink` the ingest
//! path writes through: analyses over the whole history (these aggregates, policy replay)
//! need the concrete store.

use super::clickhouse::ClickHouseSink;
use super::clickhouse_cluster::{ClickHouseClusterSink, ClusterConfig};
use super::embedded::EmbeddedSink;
use super::{FlowRow, FlowSink, SinkError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The flow store a node writes to, by kind.
#[derive(Clone)]
pub enum FlowStore {
    /// Boxed: the client is large next to the embedded store's handles.
    ClickHouse(Box<ClickHouseSink>),
    /// A ClickHouse cluster (decision 0028): reads go to a live replica's Distributed tables.
    Cluster(ClickHouseClusterSink),
    Embedded(EmbeddedSink),
}

impl FlowStore {
    /// Open the store as [`super::open_sink`] does: ClickHouse when a URL is given (creating
    /// database and table if missing), otherwise the embedded store under `embedded_dir`.
    pub async fn open(clickhouse_url: Option<&str>, database: &str, embedded_dir: &Path) -> Result<Self, SinkError> {
        match clickhouse_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Ok(FlowStore::ClickHouse(Box::new(ClickHouseSink::connect(url, database).await?))),
            None => Ok(FlowStore::Embedded(EmbeddedSink::open(embedded_dir)?)),
        }
    }

    /// Open a ClickHouse cluster (creating its replicated and Distributed tables if missing).
    pub async fn open_cluster(config: &ClusterConfig, database: &str) -> Result<Self, SinkError> {
        Ok(FlowStore::Cluster(ClickHouseClusterSink::connect(config, database).await?))
    }

    /// A ClickHouse client to query stored flows with: the server, or a live replica of the
    /// cluster; None for the embedded store.
    pub async fn clickhouse_reader(&self) -> Option<Result<ClickHouseSink, SinkError>> {
        match self {
            FlowStore::ClickHouse(s) => Some(Ok(s.as_ref().clone())),
            FlowStore::Cluster(c) => Some(c.live_reader().await),
            FlowStore::Embedded(_) => None,
        }
    }

    /// The same store as the ingest path's sink.
    pub fn sink(&self) -> Arc<dyn FlowSink> {
        match self {
            FlowStore::ClickHouse(s) => Arc::new(s.as_ref().clone()),
            FlowStore::Cluster(c) => Arc::new(c.clone()),
            FlowStore::Embedded(s) => Arc::new(s.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            FlowStore::ClickHouse(s) => s.describe(),
            FlowStore::Cluster(c) => c.describe(),
            FlowStore::Embedded(s) => s.describe(),
        }
    }
}

/// Flows of one conversation (client, server, protocol, service port, app).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clickhouse::Row)]
pub struct Conversation {
    pub client_mac: String,
    pub client_ip: String,
    pub server_mac: String,
    pub server_ip: String,
    pub ip_proto: u8,
    /// The server's port (0 for protocols without ports).
    pub port: u16,
    pub app: String,
    pub flows: u64,
    /// Microseconds since the epoch (capture time).
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

/// The conversations of a time window, most flows first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversations {
    pub rows: Vec<Conversation>,
    /// More conversations exist than the limit; the smallest were left out.
    pub truncated: bool,
}

/// Most conversations one answer holds.
pub const MAX_CONVERSATIONS: u32 = 200_000;

/// The side expressions (client, server) in SQL: swapped when the first packet went from a
/// well-known port to an ephemeral one.
fn sides_sql() -> String {
    let swapped = "(a_port < 1024 AND b_port >= 1024)";
    format!(
        "if({swapped}, b_mac, a_mac) AS client_mac, if({swapped}, b_ip, a_ip) AS client_ip, \
         if({swapped}, a_mac, b_mac) AS server_mac, if({swapped}, a_ip, b_ip) AS server_ip, ip_proto, \
         if({swapped}, a_port, b_port) AS port, app"
    )
}

/// The conversations of the flows first seen in `[from_us, to_us)`, at most `limit` (most
/// flows first; ties by the key, so every node answers the same).
pub async fn conversations(
    store: &FlowStore,
    from_us: u64,
    to_us: u64,
    limit: u32,
) -> Result<Conversations, SinkError> {
    let limit = limit.clamp(1, MAX_CONVERSATIONS);
    let mut rows = match store.clickhouse_reader().await {
        Some(sink) => {
            let sink = sink?;
            // Aliases differ from column names: ClickHouse 18.16 reads `min(x) AS x` as a
            // cyclic alias.
            let sql = format!(
                "SELECT {sides}, count() AS n, min(first_seen_us) AS first_us, max(last_seen_us) AS last_us \
                 FROM flows FINAL WHERE first_seen_us >= {from_us} AND first_seen_us < {to_us} \
                 GROUP BY client_mac, client_ip, server_mac, server_ip, ip_proto, port, app \
                 ORDER BY n DESC, client_mac, client_ip, server_mac, server_ip, ip_proto, port, app LIMIT {}",
                limit as u64 + 1,
                sides = sides_sql(),
            );
            sink.fetch_raw("aggregating flows into conversations", &sql).await?
        }
        None => {
            let FlowStore::Embedded(sink) = store else { unreachable!("only the embedded store has no reader") };
            let mut rows = Vec::new();
            for row in sink.scan() {
                let row = row?;
                if (from_us..to_us).contains(&row.first_seen_us) {
                    rows.push(row);
                }
            }
            aggregate_rows(rows.iter())
        }
    };
    let truncated = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(Conversations { rows, truncated })
}

type Key = (String, String, String, String, u8, u16, String);

/// What the SQL computes, in memory: conversations of `rows`, most flows first.
pub fn aggregate_rows<'a>(rows: impl Iterator<Item = &'a FlowRow>) -> Vec<Conversation> {
    let mut by_key: BTreeMap<Key, (u64, u64, u64)> = BTreeMap::new();
    for r in rows {
        let swapped = r.a_port < 1024 && r.b_port >= 1024;
        let key = if swapped {
            (r.b_mac.clone(), r.b_ip.clone(), r.a_mac.clone(), r.a_ip.clone(), r.ip_proto, r.a_port, r.app.clone())
        } else {
            (r.a_mac.clone(), r.a_ip.clone(), r.b_mac.clone(), r.b_ip.clone(), r.ip_proto, r.b_port, r.app.clone())
        };
        let e = by_key.entry(key).or_insert((0, u64::MAX, 0));
        e.0 += 1;
        e.1 = e.1.min(r.first_seen_us);
        e.2 = e.2.max(r.last_seen_us);
    }
    let mut out: Vec<Conversation> = by_key
        .into_iter()
        .map(|((client_mac, client_ip, server_mac, server_ip, ip_proto, port, app), (flows, first, last))| {
            Conversation {
                client_mac,
                client_ip,
                server_mac,
                server_ip,
                ip_proto,
                port,
                app,
                flows,
                first_seen_us: first,
                last_seen_us: last,
            }
        })
        .collect();
    // The map iterates by key, and the sort is stable: most flows first, ties by key.
    out.sort_by_key(|c| std::cmp::Reverse(c.flows));
    out
}
