//! Flow sink backed by ClickHouse over HTTP (the `clickhouse` crate, RowBinary format).
//!
//! Written for ClickHouse 18.16 (Debian's package) and current releases alike: validation is
//! off because 18.16 lacks `RowBinaryWithNamesAndTypes`, so [`FlowRow`] must match the
//! table's column order and types exactly (the tests run against a real server).
//! Rows are keyed (sensor_id, batch_id, idx) in a `ReplacingMergeTree`; a re-sent batch adds
//! duplicate rows that merges collapse later, and every read uses `FINAL` so results never
//! count them twice in the meantime.

use super::{FlowQuery, FlowRow, FlowSink, FlowTotals, SinkError, SinkFuture};
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;
use ulid::Ulid;
use wardline_common::FlowRecord;

/// Name of the flows table inside the configured database.
pub const FLOWS_TABLE: &str = "flows";

/// Default bound on any single ClickHouse call, so a hung server surfaces as an error the
/// ingest path can turn into "retry later" instead of stalling a sensor's stream forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// DDL for database `database`, one statement per element (the HTTP interface runs one
/// statement per request). `deploy/clickhouse/schema.sql` holds the same text for
/// `wardline`; a test keeps the two equal.
///
/// Types are limited to those ClickHouse 18.16 has (no IPv4/IPv6, DateTime64, TTL or
/// LowCardinality). The partition key derives only from the row's own content, so duplicates
/// of a row always land in the same partition, where ReplacingMergeTree can collapse them.
pub fn schema_statements(database: &str) -> Vec<String> {
    // deploy/clickhouse/schema.sql is the single source; it names the database `wardline`.
    SCHEMA_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|stmt| !stmt.is_empty())
        .map(|stmt| {
            // Every table reference is qualified `wardline.` (views name their source and target too).
            stmt.replace("wardline.", &format!("{database}."))
                .replace("DATABASE IF NOT EXISTS wardline", &format!("DATABASE IF NOT EXISTS {database}"))
        })
        .collect()
}

const SCHEMA_SQL: &str = include_str!("../../../deploy/clickhouse/schema.sql");

#[derive(Debug, clickhouse::Row, Deserialize)]
struct TotalsRow {
    rows: u64,
    packets: u64,
    bytes: u64,
}

/// Flow sink writing to `<database>.flows` on one ClickHouse server.
#[derive(Clone)]
pub struct ClickHouseSink {
    client: clickhouse::Client,
    url: String,
    database: String,
    timeout: Duration,
}

fn check_database_name(database: &str) -> Result<(), SinkError> {
    // Interpolated into DDL, so only plain identifiers are accepted.
    let mut chars = database.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SinkError::Config(format!(
            "ClickHouse database name {database:?} must be a plain identifier (letters, digits, _)"
        )))
    }
}

/// The error and all its sources, so "connection refused" is not hidden behind "network error".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl ClickHouseSink {
    /// Connect to the server at `url` (e.g. `http://127.0.0.1:8123`) and create the database
    /// and flows table if missing. Fails when the server cannot be reached.
    pub async fn connect(url: &str, database: &str) -> Result<Self, SinkError> {
        let sink = Self::new(url, database)?;
        sink.create_schema().await?;
        Ok(sink)
    }

    /// A sink that has not talked to the server yet (no schema creation).
    pub fn new(url: &str, database: &str) -> Result<Self, SinkError> {
        check_database_name(database)?;
        let url = url.trim().trim_end_matches('/').to_string();
        if !url.starts_with("http://") {
            return Err(SinkError::Config(format!(
                "ClickHouse URL {url:?} must start with http:// (its HTTP interface, port 8123 by default)"
            )));
        }
        let client = clickhouse::Client::default().with_url(url.clone()).with_database(database).with_validation(false);
        Ok(ClickHouseSink { client, url, database: database.to_string(), timeout: DEFAULT_TIMEOUT })
    }

    /// Bound every server call by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send ClickHouse setting `name` = `value` with every call (e.g. `insert_deduplicate`).
    pub fn with_setting(mut self, name: &str, value: &str) -> Self {
        self.client = self.client.with_setting(name, value);
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Run CREATE DATABASE / CREATE TABLE IF NOT EXISTS.
    pub async fn create_schema(&self) -> Result<(), SinkError> {
        let statements = schema_statements(&self.database);
        // The database may not exist yet, and a client naming it would be refused, so the
        // DDL goes through a client without a default database.
        let bare = clickhouse::Client::default().with_url(self.url.clone()).with_validation(false);
        for sql in statements {
            let op = if sql.starts_with("CREATE DATABASE") {
                format!("creating database {}", self.database)
            } else {
                // "CREATE TABLE IF NOT EXISTS db.name" / "CREATE MATERIALIZED VIEW ...": name the object.
                let object = sql.split_whitespace().find(|w| w.starts_with(&format!("{}.", self.database)));
                format!("creating {}", object.unwrap_or(FLOWS_TABLE))
            };
            // query_raw: the DDL contains no bind placeholders.
            self.run(&op, || bare.query_raw(&sql).execute()).await?;
        }
        Ok(())
    }

    /// Run one server call under the timeout. A network error is retried once after a short
    /// pause: a pooled keep-alive connection may have been closed by a restarted server, and
    /// every call here is safe to repeat (inserts are idempotent by key).
    async fn run<T, F, Fut>(&self, operation: &str, call: F) -> Result<T, SinkError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        let mut retried = false;
        loop {
            match tokio::time::timeout(self.timeout, call()).await {
                Err(_) => {
                    return Err(SinkError::Timeout {
                        url: self.url.clone(),
                        operation: operation.to_string(),
                        seconds: self.timeout.as_secs(),
                    })
                }
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(clickhouse::error::Error::Network(_))) if !retried => {
                    retried = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Err(e)) => return Err(self.map_error(operation, e)),
            }
        }
    }

    fn map_error(&self, operation: &str, e: clickhouse::error::Error) -> SinkError {
        let detail = error_chain(&e);
        match e {
            clickhouse::error::Error::Network(_) => {
                SinkError::Unreachable { url: self.url.clone(), detail: format!("{operation}: {detail}") }
            }
            _ => SinkError::ClickHouse { url: self.url.clone(), operation: operation.to_string(), detail },
        }
    }

    /// Run one statement that returns no rows (INSERT … SELECT, ALTER) under the sink's
    /// timeout and error mapping; for the rollup and retention jobs. `sql` holds no bind
    /// placeholders.
    pub(crate) async fn execute_raw(&self, operation: &str, sql: &str) -> Result<(), SinkError> {
        self.run(operation, || self.client.query_raw(sql).execute()).await
    }

    /// Run one query and read its rows (RowBinary, so `T` must match the selected columns).
    pub(crate) async fn fetch_raw<T>(&self, operation: &str, sql: &str) -> Result<Vec<T>, SinkError>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        self.run(operation, || self.client.query_raw(sql).fetch_all::<T>()).await
    }

    /// Number of distinct rows already stored for this batch.
    async fn stored_rows(&self, sensor_id: &str, batch_id: &str) -> Result<u64, SinkError> {
        let op = format!("counting stored rows of batch {batch_id}");
        let query = || {
            self.client
                .query("SELECT count() FROM flows FINAL WHERE sensor_id = ? AND batch_id = ?")
                .bind(sensor_id)
                .bind(batch_id)
                .fetch_one::<u64>()
        };
        self.run(&op, query).await
    }

    async fn write_rows(
        &self,
        batch_id: Ulid,
        sensor_id: &str,
        site: &str,
        flows: &[FlowRecord],
    ) -> Result<(), SinkError> {
        if flows.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(flows.len()).map_err(|_| {
            SinkError::Config(format!("batch {batch_id} has {} flows, more than a batch may carry", flows.len()))
        })?;
        let batch = batch_id.to_string();
        // A re-sent batch that is already complete is skipped, so retries do not even create
        // duplicate parts; a partial one is rewritten whole and FINAL hides the overlap.
        if self.stored_rows(sensor_id, &batch).await? >= u64::from(n) {
            return Ok(());
        }
        let op = format!("inserting {n} flows of batch {batch} from sensor {sensor_id}");
        let write_all = || async {
            let mut insert = self.client.insert::<FlowRow>(FLOWS_TABLE).await?;
            for (idx, f) in (0..n).zip(flows) {
                let row = FlowRow::from_record(batch_id, idx, sensor_id, site, f);
                insert.write(&row).await?;
            }
            // One INSERT per batch; `end` returns once the server acknowledged the whole insert.
            insert.end().await
        };
        self.run(&op, write_all).await
    }

    /// One INSERT of many rows. No "already stored?" check: a repeated tail after a leader
    /// change adds parts that `ReplacingMergeTree` collapses, and every read uses `FINAL`.
    async fn insert_rows(&self, rows: &[FlowRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let op = format!("inserting {} flow rows from the outbox", rows.len());
        let write_all = || async {
            let mut insert = self.client.insert::<FlowRow>(FLOWS_TABLE).await?;
            for row in rows {
                insert.write(row).await?;
            }
            insert.end().await
        };
        self.run(&op, write_all).await
    }

    async fn fetch_flows(&self, q: &FlowQuery) -> Result<Vec<FlowRow>, SinkError> {
        let q = q.normalize()?;
        let mut sql = String::from("SELECT ?fields FROM flows FINAL WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        if let Some(mac) = &q.mac {
            sql.push_str(" AND (a_mac = ? OR b_mac = ?)");
            binds.extend([mac.clone(), mac.clone()]);
        }
        if let Some(ip) = &q.ip {
            sql.push_str(" AND (a_ip = ? OR b_ip = ?)");
            binds.extend([ip.clone(), ip.clone()]);
        }
        if let Some(sensor) = &q.sensor_id {
            sql.push_str(" AND sensor_id = ?");
            binds.push(sensor.clone());
        }
        if let Some(app) = &q.app {
            sql.push_str(" AND app = ?");
            binds.push(app.clone());
        }
        // Ties broken by the row key so the order is stable across calls.
        sql.push_str(&format!(" ORDER BY first_seen_us DESC, batch_id DESC, idx DESC LIMIT {}", q.limit));
        let query = || {
            let mut query = self.client.query(&sql);
            for b in &binds {
                // Bound values are escaped by the client; filters are untrusted API input.
                query = query.bind(b.as_str());
            }
            query.fetch_all::<FlowRow>()
        };
        self.run("querying flows", query).await
    }

    async fn fetch_totals(&self) -> Result<FlowTotals, SinkError> {
        let query = || {
            self.client
                .query(
                    "SELECT count() AS rows, sum(packets_ab + packets_ba) AS packets, \
                     sum(bytes_ab + bytes_ba) AS bytes FROM flows FINAL",
                )
                .fetch_one::<TotalsRow>()
        };
        let t = self.run("computing flow totals", query).await?;
        Ok(FlowTotals { rows: t.rows, packets: t.packets, bytes: t.bytes })
    }
}

impl FlowSink for ClickHouseSink {
    fn write_batch<'a>(
        &'a self,
        batch_id: Ulid,
        sensor_id: &'a str,
        site: &'a str,
        flows: &'a [FlowRecord],
    ) -> SinkFuture<'a, ()> {
        Box::pin(self.write_rows(batch_id, sensor_id, site, flows))
    }

    fn write_rows<'a>(&'a self, rows: &'a [FlowRow]) -> SinkFuture<'a, ()> {
        Box::pin(self.insert_rows(rows))
    }

    fn query_flows<'a>(&'a self, q: &'a FlowQuery) -> SinkFuture<'a, Vec<FlowRow>> {
        Box::pin(self.fetch_flows(q))
    }

    fn totals(&self) -> SinkFuture<'_, FlowTotals> {
        Box::pin(self.fetch_totals())
    }

    fn describe(&self) -> String {
        format!("ClickHouse at {} (table {}.{FLOWS_TABLE})", self.url, self.database)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unsafe_database_names_and_non_http_urls() {
        assert!(ClickHouseSink::new("http://127.0.0.1:8123", "wardline").is_ok());
        assert!(ClickHouseSink::new("http://127.0.0.1:8123", "_w2").is_ok());
        for bad in ["", "1db", "a-b", "x; DROP TABLE y", "a.b"] {
            let err = ClickHouseSink::new("http://127.0.0.1:8123", bad).err().expect(bad);
            assert!(matches!(err, SinkError::Config(_)), "{bad}: {err}");
        }
        let err = ClickHouseSink::new("127.0.0.1:8123", "wardline").err().unwrap();
        assert!(err.to_string().contains("http://"), "{err}");
    }
}
