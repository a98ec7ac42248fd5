//! Retention (dropping old partitions) and the rollup maintenance loop against a real
//! ClickHouse 18.16 started by the harness.

use crate::sink_support::flows;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use ulid::Ulid;
use wardline_aggregator::sink::clickhouse::schema_statements;
use wardline_aggregator::sink::clickhouse::ClickHouseSink;
use wardline_aggregator::sink::clickhouse_retention::{
    apply_retention, drop_partition_sql, drop_partitions_before, partitions_sql, run_maintenance, MaintenanceConfig,
    RETENTION_TABLES,
};
use wardline_aggregator::sink::clickhouse_rollup::{refresh_statements, refresh_touched_hours};
use wardline_aggregator::sink::{FlowSink, FlowTotals};
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::FlowRecord;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Days since the Unix epoch of a UTC date.
fn day(y: i64, m: i64, d: i64) -> u16 {
    // Inverse of the civil-from-days algorithm (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    u16::try_from(era * 146_097 + doe - 719_468).unwrap()
}

/// `n` flows starting on `day` at 10:00 UTC.
fn flows_on(day: u16, n: usize, salt: u8) -> Vec<FlowRecord> {
    let start_us = (u64::from(day) * 86_400 + 10 * 3600) * 1_000_000;
    let mut fl = flows(n, salt);
    for (i, f) in fl.iter_mut().enumerate() {
        f.first_seen_us = start_us + i as u64 * 1_000_000;
        f.last_seen_us = f.first_seen_us + 500;
    }
    fl
}

fn count(ch: &ClickHouseServer, sql: &str) -> u64 {
    ch.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).trim().parse().unwrap()
}

#[test]
fn retention_drops_only_partitions_wholly_older_than_the_cutoff() {
    assert_eq!(day(1970, 1, 1), 0);
    assert_eq!(day(2023, 11, 14), 19_675);
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let rt = runtime();
    let sink = rt.block_on(ClickHouseSink::connect(&ch.http_url, "wardline")).unwrap();
    let (sep, oct, nov) = (day(2023, 9, 10), day(2023, 10, 20), day(2023, 11, 14));
    let batches = [(sep, 5u8, 7usize), (oct, 6, 9), (nov, 7, 11)];
    rt.block_on(async {
        for (i, (d, salt, n)) in batches.iter().enumerate() {
            sink.write_batch(Ulid::from_parts(1, i as u128), "s1", "north", &flows_on(*d, *n, *salt)).await.unwrap();
        }
        refresh_touched_hours(&sink, 0).await.unwrap();
    });
    for d in [sep, nov] {
        ch.query(&format!(
            "INSERT INTO wardline.policy_violations (violation_id, day, detected_at, rule_id) \
             VALUES ('v{d}', toDate({d}), toDateTime({d} * 86400), 'r')"
        ))
        .unwrap();
    }
    assert!(count(&ch, &format!("SELECT count() FROM wardline.device_hourly FINAL WHERE day = toDate({sep})")) > 0);

    // Cutoff 2023-10-25: September and October (newest day 10-20) go, November stays.
    let dropped = rt.block_on(drop_partitions_before(&sink, day(2023, 10, 25))).unwrap();
    let mut got: Vec<(String, u16)> = dropped.iter().map(|d| (d.table.clone(), d.newest_day)).collect();
    got.sort();
    let mut want = vec![
        ("device_hourly".to_string(), sep),
        ("device_hourly".to_string(), oct),
        ("flows".to_string(), sep),
        ("flows".to_string(), oct),
        ("flows_hours_touched".to_string(), sep),
        ("flows_hours_touched".to_string(), oct),
        ("policy_violations".to_string(), sep),
        ("segment_pair_hourly".to_string(), sep),
        ("segment_pair_hourly".to_string(), oct),
    ];
    want.sort();
    assert_eq!(got, want, "{dropped:?}");
    let nov_flows = flows_on(nov, 11, 7);
    let (p, b) = crate::sink_support::sums(&nov_flows);
    assert_eq!(rt.block_on(sink.totals()).unwrap(), FlowTotals { rows: 11, packets: p, bytes: b });
    assert_eq!(count(&ch, "SELECT count() FROM wardline.policy_violations FINAL"), 1);
    assert_eq!(count(&ch, &format!("SELECT count() FROM wardline.device_hourly FINAL WHERE day < toDate({nov})")), 0);
    assert!(count(&ch, "SELECT count() FROM wardline.segment_pair_hourly FINAL") > 0);

    // A partition whose newest day is the cutoff day itself is kept; running again is a no-op.
    assert!(rt.block_on(drop_partitions_before(&sink, nov)).unwrap().is_empty());
    // Relative to the server's today: a century keeps everything, one day drops 2023.
    assert!(rt.block_on(apply_retention(&sink, 36_500)).unwrap().is_empty());
    let dropped = rt.block_on(apply_retention(&sink, 1)).unwrap();
    assert_eq!(dropped.len(), 5, "November of every table: {dropped:?}");
    assert_eq!(rt.block_on(sink.totals()).unwrap(), FlowTotals::default());
    // The tables are still there and take new rows.
    rt.block_on(sink.write_batch(Ulid::from_parts(9, 9), "s1", "north", &flows_on(nov, 2, 8))).unwrap();
    assert_eq!(rt.block_on(sink.totals()).unwrap().rows, 2);
}

#[test]
fn maintenance_loop_keeps_rollups_current_without_double_counting() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sink = rt.block_on(ClickHouseSink::connect(&ch.http_url, "wardline")).unwrap();
    let nov = day(2023, 11, 14);
    // Flows stored before the rollups existed (an upgraded install): the touched-hours view
    // never saw them, yet the first pass rolls them up.
    ch.query("DROP TABLE wardline.flows_hours_touched_mv").unwrap();
    let older = flows_on(nov - 1, 3, 3);
    rt.block_on(sink.write_batch(Ulid::from_parts(1, 0), "s1", "north", &older)).unwrap();
    assert_eq!(count(&ch, "SELECT count() FROM wardline.flows_hours_touched"), 0);
    rt.block_on(sink.create_schema()).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let config = MaintenanceConfig { retention_days: None, interval: Duration::from_millis(200) };
    let task = rt.spawn(run_maintenance(sink.clone(), config, stop_rx));
    let rollup_flows = || count(&ch, "SELECT sum(flows) FROM wardline.segment_pair_hourly FINAL");
    let wait_for = |want: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = rollup_flows();
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "rollup shows {got} flows, expected {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    wait_for(3);
    let first = flows_on(nov, 6, 1);
    rt.block_on(sink.write_batch(Ulid::from_parts(1, 1), "s1", "north", &first)).unwrap();
    wait_for(9);
    // More flows in the same hour, and the first batch re-sent through the outbox path:
    // the hour is recomputed from deduplicated flows, so 3 + 6 + 4, not 3 + 6 + 4 + 6.
    let second = flows_on(nov, 4, 2);
    rt.block_on(async {
        sink.write_batch(Ulid::from_parts(1, 2), "s1", "north", &second).await.unwrap();
        let again: Vec<_> = first
            .iter()
            .enumerate()
            .map(|(i, f)| {
                wardline_aggregator::sink::FlowRow::from_record(Ulid::from_parts(1, 1), i as u32, "s1", "north", f)
            })
            .collect();
        sink.write_rows(&again).await.unwrap();
    });
    wait_for(13);
    // Each flow counts once for each of its two ends. The two rollups are separate
    // statements: a pass can recompute device_hourly before the second write and
    // segment_pair_hourly after it, so this one may need the next pass.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let device_flows = count(&ch, "SELECT sum(flows) FROM wardline.device_hourly FINAL");
        if device_flows == 26 {
            break;
        }
        assert!(Instant::now() < deadline, "device rollup shows {device_flows} flow ends, expected 26");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The watermark is stored, so a restarted node resumes instead of starting over.
    assert!(count(&ch, "SELECT toUInt32(max(watermark)) FROM wardline.rollup_watermark") > 0);

    stop_tx.send(true).unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(40), task).await })
        .expect("the loop stops when told")
        .unwrap();
}

#[test]
fn retention_sql_runs_on_current_clickhouse_too() {
    // chDB (a current ClickHouse): the partition listing and DROP PARTITION ID the retention
    // job issues, over the same schema and rollups.
    let (sep, oct) = (day(2023, 9, 10), day(2023, 10, 20));
    let mut statements = schema_statements("wardline");
    let mut hours = Vec::new();
    for (i, d) in [sep, sep, oct].iter().enumerate() {
        let t = u64::from(*d) * 86_400 + 36_000 + i as u64;
        hours.push((t / 3600 * 3600) as u32);
        statements.push(format!(
            "INSERT INTO wardline.flows (batch_id, idx, sensor_id, site, day, first_seen, first_seen_us, \
             a_mac, b_mac, a_ip, b_ip, bytes_ab, app) VALUES ('b{i}', 0, 's1', 'north', toDate({d}), \
             toDateTime({t}), {t}000000, '00:1a:2b:00:00:01', '00:50:56:00:09:09', '10.0.0.1', 'fd00::9', 100, 'dicom')"
        ));
        statements.push(format!(
            "INSERT INTO wardline.policy_violations (violation_id, day, detected_at, rule_id) \
             VALUES ('v{i}', toDate({d}), toDateTime({t}), 'r')"
        ));
    }
    hours.dedup();
    statements.extend(refresh_statements("wardline", &hours));
    let sep_ids = [("flows", "202309"), ("flows_hours_touched", "202309"), ("policy_violations", "202309")];
    for table in RETENTION_TABLES {
        let id = sep_ids.iter().find(|(t, _)| *t == table).map_or("20230910", |(_, id)| id);
        statements.push(drop_partition_sql("wardline", table, id));
    }
    let queries = BTreeMap::from([
        ("parts".to_string(), partitions_sql("wardline")),
        ("flows".to_string(), "SELECT count() FROM wardline.flows FINAL".to_string()),
    ]);
    let Some((version, results)) = crate::grafana_panels::run_on_chdb(&statements, &queries) else { return };
    eprintln!("chDB (ClickHouse {version})");
    let parts = results["parts"].as_ref().unwrap_or_else(|e| panic!("partition listing on {version}: {e}"));
    let listed: Vec<Vec<&str>> = parts.lines().map(|l| l.split('\t').collect()).collect();
    let oct_day = oct.to_string();
    let want: Vec<Vec<&str>> = [
        ("device_hourly", "20231020"),
        ("flows", "202310"),
        ("flows_hours_touched", "202310"),
        ("policy_violations", "202310"),
        ("segment_pair_hourly", "20231020"),
    ]
    .iter()
    .map(|(t, id)| vec![*t, *id, oct_day.as_str()])
    .collect();
    let got: Vec<Vec<&str>> = listed.iter().map(|r| vec![r[0], r[1], r[3]]).collect();
    assert_eq!(got, want, "{parts}");
    assert_eq!(results["flows"].as_deref().map(str::trim), Ok("1"));
}
