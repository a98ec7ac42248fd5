//! Retention for the ClickHouse tables: whole partitions whose newest day is older than the
//! configured number of days are dropped (ClickHouse 18.16 has no TTL; dropping a partition
//! is a cheap metadata operation). Also the periodic maintenance task that runs the rollup
//! refresh and retention (decision 0023).
//!
//! Granularity follows each table's partitioning: `flows`, `flows_hours_touched` and
//! `policy_violations` are partitioned by month, so a month goes only once its last day is
//! past the cutoff; the hourly rollups are partitioned by day.

use super::clickhouse::ClickHouseSink;
use super::clickhouse_rollup::{read_watermark, refresh_touched_hours};
use super::SinkError;
use serde::Deserialize;
use std::time::Duration;

/// Tables under retention.
pub const RETENTION_TABLES: [&str; 5] =
    ["flows", "flows_hours_touched", "device_hourly", "segment_pair_hourly", "policy_violations"];

/// A partition that was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedPartition {
    pub table: String,
    /// ClickHouse's partition value as text (e.g. `202311` or `'2023-11-14'`).
    pub partition: String,
    /// Newest day in the partition, days since the Unix epoch.
    pub newest_day: u16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct PartRow {
    table: String,
    partition_id: String,
    partition: String,
    newest_day: u16,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Today {
    today: u16,
}

/// The query listing the retention tables' partitions of `database` with their newest day
/// (table, partition_id, partition, newest_day). `database` must be a checked identifier.
pub fn partitions_sql(database: &str) -> String {
    let tables = RETENTION_TABLES.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT table, partition_id, any(partition) AS partition, toUInt16(max(max_date)) AS newest_day \
         FROM system.parts WHERE database = '{database}' AND active AND table IN ({tables}) \
         GROUP BY table, partition_id ORDER BY table, partition_id"
    )
}

/// The statement dropping one partition. By id: the id is plain text for any partition key,
/// while the partition value would need key-specific quoting.
pub fn drop_partition_sql(database: &str, table: &str, partition_id: &str) -> String {
    let id = partition_id.replace(['\'', '\\'], "");
    format!("ALTER TABLE {database}.{table} DROP PARTITION ID '{id}'")
}

/// Drop every partition of the retention tables whose rows are all older than `cutoff_day`
/// (days since the Unix epoch): its newest day is before the cutoff. Returns what was dropped.
pub async fn drop_partitions_before(
    sink: &ClickHouseSink,
    cutoff_day: u16,
) -> Result<Vec<DroppedPartition>, SinkError> {
    let db = sink.database();
    let parts: Vec<PartRow> = sink.fetch_raw("listing partitions for retention", &partitions_sql(db)).await?;
    let mut dropped = Vec::new();
    for p in parts.into_iter().filter(|p| p.newest_day < cutoff_day) {
        let op = format!(
            "dropping partition {} of {db}.{} (newest day {}) for retention",
            p.partition, p.table, p.newest_day
        );
        sink.execute_raw(&op, &drop_partition_sql(db, &p.table, &p.partition_id)).await?;
        dropped.push(DroppedPartition { table: p.table, partition: p.partition, newest_day: p.newest_day });
    }
    Ok(dropped)
}

/// Keep `retention_days` whole days before the server's today; drop partitions entirely
/// older than that.
pub async fn apply_retention(sink: &ClickHouseSink, retention_days: u32) -> Result<Vec<DroppedPartition>, SinkError> {
    let today: Vec<Today> = sink.fetch_raw("reading the server date", "SELECT toUInt16(today()) AS today").await?;
    let today = today.first().map_or(0, |t| t.today);
    let cutoff = u32::from(today).saturating_sub(retention_days);
    drop_partitions_before(sink, u16::try_from(cutoff).unwrap_or(u16::MAX)).await
}

/// What the maintenance task does and how often.
#[derive(Clone, Debug)]
pub struct MaintenanceConfig {
    /// Days of data to keep; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Pause between passes.
    pub interval: Duration,
}

/// Run rollup refresh and retention every `interval` until `stop` turns true. Errors are
/// logged and the pass retried next time: the rollups catch up from their watermark, and
/// retention is idempotent.
pub async fn run_maintenance(
    sink: ClickHouseSink,
    config: MaintenanceConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut watermark: Option<u32> = None;
    loop {
        maintenance_pass(&sink, &mut watermark, &config).await;
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            changed = stop.changed() => {
                // The sender is gone: nobody can stop this loop any more, so it ends now.
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

/// One maintenance pass on `sink`: refresh the rollups from `watermark` (read from the
/// database when `None`, advanced on success) and apply retention. Errors are logged; the
/// next pass retries.
pub(crate) async fn maintenance_pass(sink: &ClickHouseSink, watermark: &mut Option<u32>, config: &MaintenanceConfig) {
    let since = match *watermark {
        Some(w) => Ok(w),
        None => read_watermark(sink).await,
    };
    match since {
        Ok(since) => match refresh_touched_hours(sink, since).await {
            Ok(report) => {
                if !report.hours.is_empty() {
                    tracing::debug!(hours = report.hours.len(), "recomputed ClickHouse hourly rollups");
                }
                *watermark = Some(report.next_watermark);
            }
            Err(e) => tracing::warn!("ClickHouse rollup refresh failed, retrying next pass: {e}"),
        },
        Err(e) => tracing::warn!("ClickHouse rollup refresh cannot read its watermark, retrying next pass: {e}"),
    }
    if let Some(days) = config.retention_days {
        match apply_retention(sink, days).await {
            Ok(dropped) => {
                for d in dropped {
                    tracing::info!(
                        table = %d.table,
                        partition = %d.partition,
                        "dropped a ClickHouse partition older than clickhouse_retention_days = {days}"
                    );
                }
            }
            Err(e) => tracing::warn!("ClickHouse retention failed, retrying next pass: {e}"),
        }
    }
}
