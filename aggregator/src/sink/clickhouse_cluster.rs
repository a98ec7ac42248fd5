//! Flow sink over a ClickHouse cluster of one shard and several replicas (decision 0028).
//!
//! Every table of the schema exists twice: a `Replicated*MergeTree` copy in the *replicated
//! database* (`<database>_local` unless configured; ZooKeeper path
//! `/clickhouse/tables/{shard}/<replicated database>/<table>`, replica `{replica}`, both
//! macros from each server's config) and a `Distributed` table under the usual name in the
//! usual database, so the API, Grafana and policy replay read `wardline.flows` as before.
//!
//! Writes go straight into the replicated `flows` of one live replica (the last one that
//! worked, initially the first listed) and fail over to the next when it cannot be reached.
//! They are sent with `insert_deduplicate = 0`: ClickHouse's replicated block deduplication
//! would drop a re-sent block whose hash another replica had recorded in ZooKeeper, and the
//! replica answering "OK" then does not hold the rows: if the replica that wrote them was
//! killed right after committing, they stay invisible until it returns (and are lost with
//! its disk). Without it, a re-sent block is written again where it is acknowledged, and the
//! copies collapse in `ReplacingMergeTree` like re-sent outbox tails on one server (0016):
//! every read uses `FINAL`.
//!
//! Rollups and retention run on one live replica's replicated database; replication
//! carries their inserts and partition drops to the others.

use super::clickhouse::{schema_statements, ClickHouseSink, FLOWS_TABLE};
use super::clickhouse_retention::{maintenance_pass, MaintenanceConfig};
use super::{FlowQuery, FlowRow, FlowSink, FlowTotals, SinkError, SinkFuture};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::{info, warn};
use ulid::Ulid;
use wardline_common::FlowRecord;

/// `[clickhouse_cluster]` in the node config: write to a cluster instead of `clickhouse_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name in the servers' `<remote_servers>` (one shard, every server a replica).
    pub name: String,
    /// HTTP URLs of the replicas (`http://host:8123`), tried in this order.
    pub replicas: Vec<String>,
    /// Database of the replicated tables; `<clickhouse_database>_local` when unset.
    #[serde(default)]
    pub replicated_database: Option<String>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl ClusterConfig {
    /// Check what can be checked without a server.
    pub fn validate(&self) -> Result<(), String> {
        if !is_identifier(&self.name) {
            return Err(format!(
                "clickhouse_cluster.name {:?} must be a plain identifier (letters, digits, _), as in <remote_servers>",
                self.name
            ));
        }
        if self.replicas.is_empty() {
            return Err("clickhouse_cluster.replicas is empty: list every replica's HTTP URL".into());
        }
        for url in &self.replicas {
            if !url.trim().starts_with("http://") {
                return Err(format!(
                    "clickhouse_cluster.replicas: {url:?} must start with http:// (the HTTP interface, port 8123 by default)"
                ));
            }
        }
        if let Some(db) = &self.replicated_database {
            if !is_identifier(db) {
                return Err(format!("clickhouse_cluster.replicated_database {db:?} must be a plain identifier"));
            }
        }
        Ok(())
    }

    /// The database holding the replicated tables for `database`.
    pub fn replicated_database(&self, database: &str) -> String {
        self.replicated_database.clone().unwrap_or_else(|| format!("{database}_local"))
    }
}

/// The DDL for a cluster member: `database` with `Distributed` tables over the replicated
/// tables in `local`, whose engines become `Replicated*` with the ZooKeeper path
/// `/clickhouse/tables/{shard}/<local>/<table>` and replica `{replica}`. The materialized
/// view stays in `local`: it fires on the replica that took the insert.
pub fn cluster_schema_statements(database: &str, local: &str, cluster: &str) -> Vec<String> {
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS {database}")];
    for stmt in schema_statements(local) {
        let Some(rest) = stmt.strip_prefix("CREATE TABLE IF NOT EXISTS ") else {
            out.push(stmt);
            continue;
        };
        let table = rest.split_whitespace().next().unwrap_or_default().trim_start_matches(&format!("{local}."));
        out.push(replicated_engine(&stmt, local, table));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS {database}.{table} AS {local}.{table} \
             ENGINE = Distributed({cluster}, {local}, {table})"
        ));
    }
    out
}

/// `ENGINE = X(args)` → `ENGINE = ReplicatedX('<path>', '{replica}'[, args])`.
fn replicated_engine(stmt: &str, local: &str, table: &str) -> String {
    const ENGINE: &str = "ENGINE = ";
    let Some(at) = stmt.find(ENGINE) else { return stmt.to_string() };
    let engine_start = at + ENGINE.len();
    let Some(open) = stmt[engine_start..].find('(').map(|i| engine_start + i) else { return stmt.to_string() };
    let Some(close) = stmt[open..].find(')').map(|i| open + i) else { return stmt.to_string() };
    let engine = &stmt[engine_start..open];
    let args = stmt[open + 1..close].trim();
    let mut replicated = format!("Replicated{engine}('/clickhouse/tables/{{shard}}/{local}/{table}', '{{replica}}'");
    if !args.is_empty() {
        replicated.push_str(", ");
        replicated.push_str(args);
    }
    replicated.push(')');
    format!("{}{replicated}{}", &stmt[..engine_start], &stmt[close + 1..])
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ClusterShape {
    replicas: u64,
    shards: u64,
}

/// Tries per replica when creating the schema.
const SCHEMA_ATTEMPTS: u32 = 3;

/// Which replicas [`ClickHouseClusterSink::create_schema`] prepared, and why not the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaReport {
    /// URLs of the replicas that have every table.
    pub ready: Vec<String>,
    /// `"<url>: <error>"` for each replica that could not be prepared.
    pub failed: Vec<String>,
}

/// One replica as the sink talks to it.
struct Replica {
    url: String,
    /// Inserts into the replicated `flows`, deduplication off (see the module comment).
    writer: ClickHouseSink,
    /// Reads through the `Distributed` tables.
    reader: ClickHouseSink,
    /// The replicated database (rollups, retention).
    local: ClickHouseSink,
    /// DDL with fully qualified names (a client naming a missing database is refused).
    bare: ClickHouseSink,
}

/// Flow sink over a one-shard ClickHouse cluster; see the module comment.
#[derive(Clone)]
pub struct ClickHouseClusterSink {
    inner: Arc<Inner>,
}

struct Inner {
    cluster: String,
    database: String,
    local: String,
    replicas: Vec<Replica>,
    /// Index of the replica that answered last; calls start there.
    preferred: AtomicUsize,
}

impl ClickHouseClusterSink {
    /// A sink that has not talked to any replica yet.
    pub fn new(config: &ClusterConfig, database: &str) -> Result<Self, SinkError> {
        config.validate().map_err(SinkError::Config)?;
        let local = config.replicated_database(database);
        if local == database {
            return Err(SinkError::Config(format!(
                "clickhouse_cluster.replicated_database must differ from clickhouse_database ({database}): \
                 the Distributed tables there keep the usual names"
            )));
        }
        let replicas = config
            .replicas
            .iter()
            .map(|url| {
                Ok(Replica {
                    url: url.trim().trim_end_matches('/').to_string(),
                    writer: ClickHouseSink::new(url, &local)?.with_setting("insert_deduplicate", "0"),
                    reader: ClickHouseSink::new(url, database)?,
                    local: ClickHouseSink::new(url, &local)?,
                    bare: ClickHouseSink::new(url, "default")?,
                })
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        Ok(ClickHouseClusterSink {
            inner: Arc::new(Inner {
                cluster: config.name.clone(),
                database: database.to_string(),
                local,
                replicas,
                preferred: AtomicUsize::new(0),
            }),
        })
    }

    /// [`new`](Self::new), then check the cluster and create the schema on every replica
    /// that answers. Fails when none does, or when a replica's cluster is not as configured.
    pub async fn connect(config: &ClusterConfig, database: &str) -> Result<Self, SinkError> {
        let sink = Self::new(config, database)?;
        let report = sink.create_schema().await?;
        info!(
            ready = report.ready.len(),
            "ClickHouse cluster {}: schema ready on {}",
            sink.inner.cluster,
            report.ready.join(", ")
        );
        Ok(sink)
    }

    /// The database of the replicated tables.
    pub fn replicated_database(&self) -> &str {
        &self.inner.local
    }

    /// Create the schema on every replica that answers (a replica that was down gets it on a
    /// later call: the maintenance task calls this every pass). An error when none answered,
    /// or for a wrong cluster definition on any.
    pub async fn create_schema(&self) -> Result<SchemaReport, SinkError> {
        let inner = &self.inner;
        let statements = cluster_schema_statements(&inner.database, &inner.local, &inner.cluster);
        let mut report = SchemaReport::default();
        let mut last_error = None;
        for r in &inner.replicas {
            match self.create_schema_on(r, &statements).await {
                Ok(()) => report.ready.push(r.url.clone()),
                Err(e @ SinkError::Config(_)) => return Err(e),
                Err(e) => {
                    warn!("ClickHouse cluster {}: cannot prepare replica {}: {e}", inner.cluster, r.url);
                    report.failed.push(format!("{}: {e}", r.url));
                    last_error = Some(e);
                }
            }
        }
        match (report.ready.is_empty(), last_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(report),
        }
    }

    /// [`create_schema_on_once`](Self::create_schema_on_once), tried again after a short
    /// pause on a transient error (a server just started, a ZooKeeper session being set up):
    /// every statement is `IF NOT EXISTS`.
    async fn create_schema_on(&self, r: &Replica, statements: &[String]) -> Result<(), SinkError> {
        let mut attempt = 1;
        loop {
            match self.create_schema_on_once(r, statements).await {
                Err(e) if e.is_transient() && attempt < SCHEMA_ATTEMPTS => {
                    warn!(
                        "ClickHouse cluster {}: preparing replica {} (attempt {attempt}): {e}",
                        self.inner.cluster, r.url
                    );
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    async fn create_schema_on_once(&self, r: &Replica, statements: &[String]) -> Result<(), SinkError> {
        let cluster = &self.inner.cluster;
        let shape: Vec<ClusterShape> = r
            .bare
            .fetch_raw(
                &format!("reading cluster {cluster} from system.clusters"),
                &format!(
                    "SELECT count() AS replicas, uniqExact(shard_num) AS shards FROM system.clusters \
                     WHERE cluster = '{cluster}'"
                ),
            )
            .await?;
        let shape = shape.first().map_or((0, 0), |s| (s.replicas, s.shards));
        if shape.0 == 0 {
            return Err(SinkError::Config(format!(
                "ClickHouse at {} has no cluster {cluster:?} in its <remote_servers>; define it there \
                 (one shard, every replica listed) or fix clickhouse_cluster.name",
                r.url
            )));
        }
        if shape.1 != 1 {
            return Err(SinkError::Config(format!(
                "cluster {cluster:?} on ClickHouse at {} has {} shards; Wardline writes to one shard \
                 with several replicas (decision 0028)",
                r.url, shape.1
            )));
        }
        for sql in statements {
            let object = sql.split_whitespace().find(|w| w.contains('.')).unwrap_or("the database").to_string();
            r.bare.execute_raw(&format!("creating {object}"), sql).await?;
        }
        Ok(())
    }

    /// Run `call` on the preferred replica, then on each other in turn while the error is
    /// transient; the replica that answered becomes the preferred one.
    async fn on_some_replica<'a, T, F, Fut>(&'a self, what: &str, call: F) -> Result<T, SinkError>
    where
        F: Fn(&'a Replica) -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>> + 'a,
    {
        let inner = &self.inner;
        let n = inner.replicas.len();
        let start = inner.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let r = &inner.replicas[i];
            match call(r).await {
                Ok(v) => {
                    if k > 0 {
                        inner.preferred.store(i, Ordering::Relaxed);
                        warn!(
                            "ClickHouse cluster {}: {what} failed over to replica {} after: {}",
                            inner.cluster,
                            r.url,
                            failures.join("; ")
                        );
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() && k + 1 < n => failures.push(e.to_string()),
                Err(e) if e.is_transient() => {
                    failures.push(e.to_string());
                    return Err(SinkError::ClickHouse {
                        url: inner.replicas.iter().map(|r| r.url.as_str()).collect::<Vec<_>>().join(", "),
                        operation: format!("{what} on cluster {}", inner.cluster),
                        detail: format!("no replica could do it: {}", failures.join("; ")),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(SinkError::Config(format!("ClickHouse cluster {} lists no replica", inner.cluster)))
    }

    /// A sink on the replicated database of a replica that answers, for the rollup and
    /// retention passes.
    pub async fn live_replica(&self) -> Result<ClickHouseSink, SinkError> {
        self.on_some_replica("pinging", |r| async move {
            r.local.fetch_raw::<u8>("pinging", "SELECT toUInt8(1)").await.map(|_| r.local.clone())
        })
        .await
    }

    /// A sink on the `Distributed` tables of a replica that answers (e.g. for policy replay).
    pub async fn live_reader(&self) -> Result<ClickHouseSink, SinkError> {
        self.on_some_replica("pinging", |r| async move {
            r.reader.fetch_raw::<u8>("pinging", "SELECT toUInt8(1)").await.map(|_| r.reader.clone())
        })
        .await
    }

    async fn insert_rows(&self, rows: &[FlowRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let what = format!("inserting {} flow rows", rows.len());
        self.on_some_replica(&what, |r| r.writer.write_rows(rows)).await
    }
}

impl FlowSink for ClickHouseClusterSink {
    fn write_batch<'a>(
        &'a self,
        batch_id: Ulid,
        sensor_id: &'a str,
        site: &'a str,
        flows: &'a [FlowRecord],
    ) -> SinkFuture<'a, ()> {
        Box::pin(async move {
            let rows: Vec<FlowRow> =
                (0u32..).zip(flows).map(|(i, f)| FlowRow::from_record(batch_id, i, sensor_id, site, f)).collect();
            self.insert_rows(&rows).await
        })
    }

    fn write_rows<'a>(&'a self, rows: &'a [FlowRow]) -> SinkFuture<'a, ()> {
        Box::pin(self.insert_rows(rows))
    }

    fn query_flows<'a>(&'a self, q: &'a FlowQuery) -> SinkFuture<'a, Vec<FlowRow>> {
        Box::pin(self.on_some_replica("querying flows", move |r| r.reader.query_flows(q)))
    }

    fn totals(&self) -> SinkFuture<'_, FlowTotals> {
        Box::pin(self.on_some_replica("computing flow totals", |r| r.reader.totals()))
    }

    fn describe(&self) -> String {
        let urls: Vec<&str> = self.inner.replicas.iter().map(|r| r.url.as_str()).collect();
        format!(
            "ClickHouse cluster {} ({}; table {}.{FLOWS_TABLE} over {}.{FLOWS_TABLE})",
            self.inner.cluster,
            urls.join(", "),
            self.inner.database,
            self.inner.local
        )
    }
}

/// The maintenance task on a cluster: each pass creates the schema on replicas that lack it
/// (one that was down at start), then refreshes rollups and applies retention on a live
/// replica's replicated tables, until `stop` turns true.
pub async fn run_maintenance(
    sink: ClickHouseClusterSink,
    config: MaintenanceConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut watermark: Option<u32> = None;
    loop {
        if let Err(e) = sink.create_schema().await {
            warn!("ClickHouse cluster {}: schema check failed, retrying next pass: {e}", sink.inner.cluster);
        }
        match sink.live_replica().await {
            Ok(replica) => maintenance_pass(&replica, &mut watermark, &config).await,
            Err(e) => warn!("ClickHouse rollups and retention skipped this pass: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_becomes_replicated_behind_a_distributed_table_of_the_same_name() {
        let stmts = cluster_schema_statements("wardline", "wardline_local", "wl");
        let flows = stmts.iter().find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS wardline_local.flows\n")).unwrap();
        assert!(
            flows.contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/wardline_local/flows', '{replica}')"
            ),
            "{flows}"
        );
        let rollup = stmts.iter().find(|s| s.contains("wardline_local.device_hourly\n")).unwrap();
        assert!(rollup.contains("wardline_local/device_hourly', '{replica}', version)"), "{rollup}");
        let touched = stmts.iter().find(|s| s.contains("wardline_local.flows_hours_touched\n")).unwrap();
        assert!(touched.contains("ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/wardline_local/flows_hours_touched', '{replica}')\n"), "{touched}");
        for table in [
            "flows",
            "flows_hours_touched",
            "device_hourly",
            "segment_pair_hourly",
            "rollup_watermark",
            "policy_violations",
        ] {
            let dist = format!(
                "CREATE TABLE IF NOT EXISTS wardline.{table} AS wardline_local.{table} ENGINE = Distributed(wl, wardline_local, {table})"
            );
            assert!(stmts.contains(&dist), "missing {dist}");
        }
        let view = stmts.iter().find(|s| s.contains("MATERIALIZED VIEW")).unwrap();
        assert!(view.contains("wardline_local.flows_hours_touched_mv TO wardline_local.flows_hours_touched"), "{view}");
        assert!(view.contains("FROM wardline_local.flows"), "{view}");
        assert!(stmts.iter().all(|s| !s.contains("MergeTree()") || s.contains("Replicated")), "{stmts:#?}");
    }

    #[test]
    fn bad_cluster_configs_are_refused_with_the_key_named() {
        let ok = ClusterConfig {
            name: "wl".into(),
            replicas: vec!["http://127.0.0.1:8123".into()],
            replicated_database: None,
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.replicated_database("wardline"), "wardline_local");
        let cases = [
            (ClusterConfig { name: "a-b".into(), ..ok.clone() }, "clickhouse_cluster.name"),
            (ClusterConfig { replicas: vec![], ..ok.clone() }, "replicas is empty"),
            (ClusterConfig { replicas: vec!["127.0.0.1:8123".into()], ..ok.clone() }, "http://"),
            (ClusterConfig { replicated_database: Some("x;y".into()), ..ok.clone() }, "replicated_database"),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let same = ClusterConfig { replicated_database: Some("wardline".into()), ..ok };
        assert!(
            matches!(ClickHouseClusterSink::new(&same, "wardline"), Err(SinkError::Config(m)) if m.contains("differ"))
        );
    }
}
