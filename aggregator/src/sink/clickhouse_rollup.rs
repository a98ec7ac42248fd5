//! Hourly rollups of the ClickHouse flows table for Grafana: per device (`device_hourly`)
//! and per segment pair (`segment_pair_hourly`), schema in deploy/clickhouse/schema.sql.
//!
//! Why not plain insert-triggered materialized views: a view sees every inserted block,
//! including the duplicate rows a re-sent batch adds before `ReplacingMergeTree` collapses
//! them, and would count those twice forever. Instead a view only records which hours were
//! written (`flows_hours_touched`), and this job recomputes each such hour whole from
//! `flows FINAL` (deduplicated) into `ReplacingMergeTree(version)` tables: a recomputed hour
//! replaces the previous one, so recomputing is idempotent (decision 0023).

use super::clickhouse::ClickHouseSink;
use super::SinkError;
use serde::Deserialize;

/// Tables this job writes.
pub const ROLLUP_TABLES: [&str; 2] = ["device_hourly", "segment_pair_hourly"];

/// Hours recomputed per statement, so the IN list stays small.
const HOURS_PER_STATEMENT: usize = 240;

/// An insert whose `now()` was read before a pass started may commit after the pass read
/// the touched hours; each pass therefore re-reads this many seconds before its start.
pub const WATERMARK_MARGIN_SECS: u32 = 300;

/// The job's progress, kept in the database so a restarted node resumes where it stopped.
const WATERMARK_JOB: &str = "rollups";

/// What one refresh pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollupReport {
    /// Hours recomputed (Unix seconds of the hour start), ascending.
    pub hours: Vec<u32>,
    /// Hours touched at or after this time (Unix seconds) are read by the next pass.
    pub next_watermark: u32,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Hour {
    hour: u32,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Now {
    now: u32,
}

/// Network of an address column as text: IPv4 /24 ("10.20.0.0/24") or IPv6 /64. Each
/// branch only parses values of its own family: current ClickHouse rejects an IPv6 text
/// given to IPv4StringToNum (18.16 returned 0), and `if` evaluates both branches.
fn network_of(column: &str) -> String {
    format!(
        "if(position({column}, ':') > 0, \
         concat(cutIPv6(IPv6StringToNum(if(position({column}, ':') > 0, {column}, '::')), 8, 0), '/64'), \
         concat(IPv4NumToString(bitAnd(IPv4StringToNum(if(position({column}, ':') > 0, '0.0.0.0', {column})), 4294967040)), '/24'))"
    )
}

/// The INSERT … SELECT statements that recompute `hours` (Unix seconds, each the start of
/// an hour) in every rollup table of `database`. Plain SQL for ClickHouse 18.16 and current
/// releases alike; the version is the server's `now()`, so a later recompute wins.
pub fn refresh_statements(database: &str, hours: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in hours.chunks(HOURS_PER_STATEMENT) {
        let (Some(first), Some(last)) = (chunk.iter().min(), chunk.iter().max()) else { continue };
        let list = chunk.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        // The day range lets the server skip partitions; the hour list selects exactly.
        let filter = format!(
            "day >= toDate(toDateTime({first})) AND day <= toDate(toDateTime({last})) \
             AND toUInt32(toStartOfHour(first_seen)) IN ({list})"
        );
        out.push(format!(
            "INSERT INTO {database}.device_hourly \
             SELECT toDate(hour) AS day, hour, site, mac, min(ip), count(), sum(p_out), sum(p_in), \
             sum(b_out), sum(b_in), uniqExact(peer), toUInt64(now()) \
             FROM (SELECT toStartOfHour(first_seen) AS hour, site, \
             arrayJoin([(a_mac, a_ip, packets_ab, packets_ba, bytes_ab, bytes_ba, b_mac), \
             (b_mac, b_ip, packets_ba, packets_ab, bytes_ba, bytes_ab, a_mac)]) AS side, \
             tupleElement(side, 1) AS mac, tupleElement(side, 2) AS ip, tupleElement(side, 3) AS p_out, \
             tupleElement(side, 4) AS p_in, tupleElement(side, 5) AS b_out, tupleElement(side, 6) AS b_in, \
             tupleElement(side, 7) AS peer \
             FROM {database}.flows FINAL WHERE {filter}) \
             GROUP BY hour, site, mac"
        ));
        out.push(format!(
            "INSERT INTO {database}.segment_pair_hourly \
             SELECT toDate(hour) AS day, hour, site, vlan, a_net, b_net, count(), sum(packets), sum(bytes), \
             toUInt64(now()) \
             FROM (SELECT toStartOfHour(first_seen) AS hour, site, vlan, {a_net} AS a_net, {b_net} AS b_net, \
             packets_ab + packets_ba AS packets, bytes_ab + bytes_ba AS bytes \
             FROM {database}.flows FINAL WHERE {filter}) \
             GROUP BY hour, site, vlan, a_net, b_net",
            a_net = network_of("a_ip"),
            b_net = network_of("b_ip"),
        ));
    }
    out
}

/// Where the last completed pass left off (0 before the first one).
pub async fn read_watermark(sink: &ClickHouseSink) -> Result<u32, SinkError> {
    let db = sink.database();
    let rows: Vec<Hour> = sink
        .fetch_raw(
            "reading the rollup watermark",
            &format!(
                "SELECT toUInt32(max(watermark)) AS hour FROM {db}.rollup_watermark WHERE job = '{WATERMARK_JOB}'"
            ),
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.hour))
}

/// One pass: recompute every hour touched at or after `since` (Unix seconds; 0 = every
/// hour with flows), then record the next watermark. Safe to run on several nodes at once (each recompute is whole).
pub async fn refresh_touched_hours(sink: &ClickHouseSink, since: u32) -> Result<RollupReport, SinkError> {
    let db = sink.database();
    let now: Vec<Now> = sink.fetch_raw("reading the server clock", "SELECT toUInt32(now()) AS now").await?;
    let started = now.first().map_or(0, |n| n.now);
    // No pass ever completed (a new install, or one upgraded from before the rollups, whose
    // older rows the touched-hours view never saw): every hour that holds flows.
    let listing = if since == 0 {
        format!("SELECT DISTINCT toUInt32(toStartOfHour(first_seen)) AS hour FROM {db}.flows ORDER BY hour")
    } else {
        format!(
            "SELECT DISTINCT toUInt32(hour) AS hour FROM {db}.flows_hours_touched \
             WHERE touched_at >= toDateTime({since}) ORDER BY hour"
        )
    };
    let hours: Vec<Hour> = sink.fetch_raw("listing hours with new flows", &listing).await?;
    let hours: Vec<u32> = hours.into_iter().map(|h| h.hour).collect();
    for (i, sql) in refresh_statements(db, &hours).iter().enumerate() {
        let table = ROLLUP_TABLES[i % ROLLUP_TABLES.len()];
        sink.execute_raw(&format!("recomputing {db}.{table} for {} hour(s)", hours.len()), sql).await?;
    }
    let next_watermark = started.saturating_sub(WATERMARK_MARGIN_SECS).max(since);
    sink.execute_raw(
        "recording the rollup watermark",
        &format!(
            "INSERT INTO {db}.rollup_watermark (job, watermark, written_at) \
             VALUES ('{WATERMARK_JOB}', toDateTime({next_watermark}), now())"
        ),
    )
    .await?;
    Ok(RollupReport { hours, next_watermark })
}
