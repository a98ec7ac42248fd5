//! Flow sinks: where flow records from applied batches end up.
//!
//! Delivery into a sink is at-least-once (a batch may be re-sent after a crash between
//! write and ack), so every row is keyed by (batch id, index within the batch) and a
//! rewrite of the same batch replaces rather than adds: ClickHouse collapses duplicates in a
//! `ReplacingMergeTree` and every read uses `FINAL`; the embedded store overwrites the key.
//!
//! Two implementations: [`clickhouse::ClickHouseSink`] (production, Grafana reads the same
//! table) and [`embedded::EmbeddedSink`] (sled on the node, for demos and ClickHouse-less nodes);
//! [`clickhouse_cluster::ClickHouseClusterSink`] spreads the ClickHouse one over the replicas
//! of a cluster (decision 0028).

pub mod aggregates;
pub mod clickhouse;
pub mod clickhouse_cluster;
pub mod clickhouse_retention;
pub mod clickhouse_rollup;
pub mod embedded;
pub mod replay;
mod row;

pub use row::FlowRow;

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use ulid::Ulid;
use wardline_common::net::MacAddr;
use wardline_common::FlowRecord;

/// Largest `limit` a flow query may ask for.
pub const MAX_QUERY_LIMIT: u32 = 10_000;
/// `limit` used when a query names none.
pub const DEFAULT_QUERY_LIMIT: u32 = 100;

/// The future every sink method returns (boxed so the trait can be used as `dyn FlowSink`).
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

/// A durable, idempotent store of flow rows.
pub trait FlowSink: Send + Sync {
    /// Store `flows` as rows (`batch_id`, 0..n). Idempotent: writing the same batch again
    /// leaves one copy. Resolves only once the rows are durable (ClickHouse acknowledged the
    /// INSERT / sled flushed to disk), so the caller may then ack the batch.
    fn write_batch<'a>(
        &'a self,
        batch_id: Ulid,
        sensor_id: &'a str,
        site: &'a str,
        flows: &'a [FlowRecord],
    ) -> SinkFuture<'a, ()>;

    /// Store already-built rows in one large write (the outbox drain, decision 0016).
    /// Idempotent by row key (sensor, batch id, index) like `write_batch`; resolves once
    /// the rows are durable.
    fn write_rows<'a>(&'a self, rows: &'a [FlowRow]) -> SinkFuture<'a, ()>;

    /// Flows matching every given filter, newest (`first_seen_us`) first.
    fn query_flows<'a>(&'a self, q: &'a FlowQuery) -> SinkFuture<'a, Vec<FlowRow>>;

    /// Row, packet and byte totals over all stored flows, each row counted once.
    fn totals(&self) -> SinkFuture<'_, FlowTotals>;

    /// Where the rows go, for logs ("ClickHouse at http://…", "embedded store at /var/…").
    fn describe(&self) -> String;
}

/// Filters of a flow query; all optional, combined with AND. Deserializable so the HTTP API
/// can take it straight from a query string.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowQuery {
    /// Either end's MAC (any case, `:` or `-` separated).
    pub mac: Option<String>,
    /// Either end's IP address (v4 or v6).
    pub ip: Option<String>,
    pub sensor_id: Option<String>,
    pub app: Option<String>,
    /// 1 to [`MAX_QUERY_LIMIT`]; [`DEFAULT_QUERY_LIMIT`] when absent.
    pub limit: Option<u32>,
}

/// A [`FlowQuery`] checked and put in canonical form, as the sinks use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NormalizedQuery {
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub sensor_id: Option<String>,
    pub app: Option<String>,
    pub limit: u32,
}

impl FlowQuery {
    /// Parse the filters (query strings are untrusted) into the forms rows are stored in.
    pub(crate) fn normalize(&self) -> Result<NormalizedQuery, SinkError> {
        let mac = match self.mac.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<MacAddr>().map_err(|e| SinkError::InvalidQuery(e.to_string()))?.to_string()),
        };
        let ip = match self.ip.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| {
                        SinkError::InvalidQuery(format!("invalid IP address {s:?}: expected e.g. 10.1.2.3 or fe80::1"))
                    })?
                    .to_string(),
            ),
        };
        let limit = self.limit.unwrap_or(DEFAULT_QUERY_LIMIT);
        if !(1..=MAX_QUERY_LIMIT).contains(&limit) {
            return Err(SinkError::InvalidQuery(format!(
                "limit {limit} is outside 1..={MAX_QUERY_LIMIT}; ask for fewer rows and narrow \
                 the result with the mac, ip, sensor or app filters"
            )));
        }
        let non_empty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(NormalizedQuery { mac, ip, sensor_id: non_empty(&self.sensor_id), app: non_empty(&self.app), limit })
    }
}

impl NormalizedQuery {
    /// Whether a row passes every filter (the embedded store filters in memory).
    pub fn matches(&self, r: &FlowRow) -> bool {
        self.mac.as_ref().is_none_or(|m| r.a_mac == *m || r.b_mac == *m)
            && self.ip.as_ref().is_none_or(|ip| r.a_ip == *ip || r.b_ip == *ip)
            && self.sensor_id.as_ref().is_none_or(|s| r.sensor_id == *s)
            && self.app.as_ref().is_none_or(|a| r.app == *a)
    }
}

/// Deduplicated totals over all stored flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTotals {
    pub rows: u64,
    /// Packets in both directions.
    pub packets: u64,
    /// Bytes in both directions.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("ClickHouse at {url}: {detail} — is clickhouse-server running and reachable at that address?")]
    Unreachable { url: String, detail: String },
    #[error("ClickHouse at {url}: {operation} failed: {detail}")]
    ClickHouse { url: String, operation: String, detail: String },
    #[error("ClickHouse at {url}: {operation} gave no answer within {seconds}s — is the server overloaded or hung?")]
    Timeout { url: String, operation: String, seconds: u64 },
    #[error("embedded flow store at {dir}: {operation} failed: {detail}")]
    Embedded { dir: String, operation: String, detail: String },
    #[error("invalid flow query: {0}")]
    InvalidQuery(String),
    #[error("invalid sink configuration: {0}")]
    Config(String),
}

impl SinkError {
    /// True when retrying the same call later may succeed (the store is down or slow),
    /// false when the request itself is wrong.
    pub fn is_transient(&self) -> bool {
        !matches!(self, SinkError::InvalidQuery(_) | SinkError::Config(_))
    }
}

/// Open the flow sink: ClickHouse when a URL is given (creating database and table if
/// missing), otherwise the embedded store under `embedded_dir`.
pub async fn open_sink(
    clickhouse_url: Option<&str>,
    database: &str,
    embedded_dir: &Path,
) -> anyhow::Result<Arc<dyn FlowSink>> {
    match clickhouse_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => {
            let sink = clickhouse::ClickHouseSink::connect(url, database).await?;
            Ok(Arc::new(sink))
        }
        None => {
            let sink = embedded::EmbeddedSink::open(embedded_dir)?;
            Ok(Arc::new(sink))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_normalizes_and_rejects_bad_input() {
        let q = FlowQuery {
            mac: Some("00-1A-2B-3C-4D-5E".into()),
            ip: Some("fe80:0:0::1".into()),
            sensor_id: Some(String::new()),
            ..Default::default()
        };
        let n = q.normalize().unwrap();
        assert_eq!(n.mac.as_deref(), Some("00:1a:2b:3c:4d:5e"));
        assert_eq!(n.ip.as_deref(), Some("fe80::1"));
        assert_eq!(n.sensor_id, None);
        assert_eq!(n.limit, DEFAULT_QUERY_LIMIT);

        let bad_mac = FlowQuery { mac: Some("00:1a".into()), ..Default::default() };
        assert!(matches!(bad_mac.normalize(), Err(SinkError::InvalidQuery(m)) if m.contains("00:1a")));
        let bad_ip = FlowQuery { ip: Some("10.0.0.300".into()), ..Default::default() };
        assert!(matches!(bad_ip.normalize(), Err(SinkError::InvalidQuery(m)) if m.contains("10.0.0.300")));
        let big = FlowQuery { limit: Some(MAX_QUERY_LIMIT + 1), ..Default::default() };
        assert!(matches!(big.normalize(), Err(SinkError::InvalidQuery(m)) if m.contains("10000")));
        let zero = FlowQuery { limit: Some(0), ..Default::default() };
        assert!(matches!(zero.normalize(), Err(SinkError::InvalidQuery(m)) if m.contains("limit 0")));
        let max = FlowQuery { limit: Some(MAX_QUERY_LIMIT), ..Default::default() };
        assert_eq!(max.normalize().unwrap().limit, MAX_QUERY_LIMIT);
    }
}
