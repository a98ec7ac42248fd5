//! The ClickHouse flow sink against a real ClickHouse server (Debian's 18.16 package),
//! started by the harness on free loopback ports.
//!
//! The harness talks blocking HTTP, so each test drives the async sink through its own
//! runtime and calls the harness only outside `block_on`.

use crate::sink_support::{flows, sums, T0_US};
use std::path::Path;
use std::time::{Duration, Instant};
use ulid::Ulid;
use wardline_aggregator::sink::clickhouse::{schema_statements, ClickHouseSink};
use wardline_aggregator::sink::{open_sink, FlowQuery, FlowSink, FlowTotals, SinkError};
use wardline_chaos_tests::clickhouse::ClickHouseServer;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn all_rows() -> FlowQuery {
    FlowQuery { limit: Some(10_000), ..Default::default() }
}

fn schema_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/schema.sql");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Statements of a SQL file: `--` comments dropped, split on `;`, whitespace collapsed.
fn statements(sql: &str) -> Vec<String> {
    let code: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    code.split(';').map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|s| !s.is_empty()).collect()
}

#[test]
fn deploy_schema_file_matches_the_schema_the_aggregator_creates() {
    let from_code: Vec<String> =
        schema_statements("wardline").iter().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(statements(&schema_file()), from_code);
}

#[test]
fn schema_write_query_totals_and_idempotence_on_real_clickhouse() {
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let version = ch.query("SELECT version()").unwrap();
    eprintln!("ClickHouse {}", version.trim());

    // deploy/clickhouse/schema.sql runs as-is on this server...
    for stmt in statements(&schema_file()) {
        ch.query(&stmt).unwrap_or_else(|e| panic!("schema.sql statement failed: {e}"));
    }
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // ...and the aggregator creates the identical table in a database of its own.
    let sink = rt.block_on(open_sink(Some(&ch.http_url), "wardline_test", dir.path())).expect("open ClickHouse sink");
    assert!(sink.describe().contains(&ch.http_url), "{}", sink.describe());
    let embedded_files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(embedded_files, 0, "a ClickHouse sink must not create an embedded store");
    let deploy_table = ch.query("SHOW CREATE TABLE wardline.flows").unwrap();
    let code_table = ch.query("SHOW CREATE TABLE wardline_test.flows").unwrap();
    assert_eq!(code_table.replace("wardline_test.", "wardline."), deploy_table);
    assert!(code_table.contains("ReplacingMergeTree"), "{code_table}");
    // Opening again (a restarted aggregator) finds the schema and keeps going.
    let sink2 = rt.block_on(open_sink(Some(&ch.http_url), "wardline_test", dir.path())).unwrap();

    let batch_a = Ulid::from_parts(1_700_000_000_000, 1);
    let batch_b = Ulid::from_parts(1_700_000_000_001, 2);
    let flows_a = flows(30, 1);
    let flows_b = flows(12, 2);
    let (pa, ba) = sums(&flows_a);
    let (pb, bb) = sums(&flows_b);
    let expected = FlowTotals { rows: 42, packets: pa + pb, bytes: ba + bb };

    rt.block_on(async {
        assert_eq!(sink.totals().await.unwrap(), FlowTotals::default());
        sink.write_batch(batch_a, "bldg-a-1", "north", &flows_a).await.unwrap();
        sink.write_batch(batch_b, "bldg-b-1", "south", &flows_b).await.unwrap();
        sink.write_batch(Ulid::new(), "bldg-b-1", "south", &[]).await.unwrap();
        assert_eq!(sink.totals().await.unwrap(), expected);
    });

    let rows = rt.block_on(sink.query_flows(&all_rows())).unwrap();
    assert_eq!(rows.len(), 42);
    assert!(rows.windows(2).all(|w| w[0].first_seen_us >= w[1].first_seen_us), "not newest first");
    // Every field survives the round trip through RowBinary and the table.
    let a7 = rows.iter().find(|r| r.batch_id == batch_a.to_string() && r.idx == 7).unwrap();
    let f7 = &flows_a[7];
    assert_eq!((a7.sensor_id.as_str(), a7.site.as_str()), ("bldg-a-1", "north"));
    assert_eq!(a7.a_mac, f7.a_mac.to_string());
    assert_eq!(a7.a_ip, f7.a_ip.to_string());
    assert_eq!((a7.a_port, a7.b_port, a7.vlan), (f7.a_port, f7.b_port, f7.vlan));
    assert_eq!((a7.packets_ab, a7.bytes_ba, a7.tcp_flags_ab), (f7.packets_ab, f7.bytes_ba, f7.tcp_flags_ab));
    assert_eq!((a7.first_seen_us, a7.last_seen_us), (f7.first_seen_us, f7.last_seen_us));
    assert_eq!((a7.app.as_str(), a7.end_reason.as_str()), ("hl7", "fin"));
    let a0 = rows.iter().find(|r| r.batch_id == batch_a.to_string() && r.idx == 0).unwrap();
    assert_eq!(a0.vlan, Some(20));
    // Derived columns hold what Grafana groups by.
    let derived = ch
        .query(&format!(
            "SELECT toString(day), toString(first_seen), vlan FROM wardline_test.flows FINAL \
             WHERE batch_id = '{batch_a}' AND idx = 1"
        ))
        .unwrap();
    assert_eq!(derived.trim(), "2023-11-14\t2023-11-14 22:13:21\t0");

    // Filters: MAC (any case and separator), IP, sensor, app, limit.
    let q = |q: FlowQuery| rt.block_on(sink.query_flows(&q)).unwrap();
    let ct = q(FlowQuery { mac: Some("00-1A-2B-00-00-01".into()), limit: Some(1000), ..Default::default() });
    assert_eq!(ct.len(), 10 + 4, "dicom flows of both batches");
    assert!(ct.iter().all(|r| r.app == "dicom" && r.a_mac == "00:1a:2b:00:00:01"));
    let by_ip = q(FlowQuery { ip: Some("10.0.0.1".into()), sensor_id: Some("bldg-b-1".into()), ..Default::default() });
    assert_eq!(by_ip.len(), 4);
    let v6 = q(FlowQuery { ip: Some("fd00:0:0::1:5".into()), ..Default::default() });
    assert_eq!(v6.len(), 1, "IPv6 filter uses the canonical form");
    assert_eq!(v6[0].a_ip, "fd00::1:5");
    let hl7 = q(FlowQuery { app: Some("hl7".into()), limit: Some(5), ..Default::default() });
    assert_eq!(hl7.len(), 5);
    assert_eq!(hl7[0].first_seen_us, T0_US + 29 * 1_000_000, "newest hl7 flow first");
    let default_limit = q(FlowQuery::default());
    assert_eq!(default_limit.len(), 42);
    // Filter values are bound, not spliced: a quote is just a value that matches nothing.
    let hostile = q(FlowQuery { app: Some("x' OR 1=1 OR app='".into()), ..Default::default() });
    assert!(hostile.is_empty());
    let bad = rt.block_on(sink.query_flows(&FlowQuery { limit: Some(10_001), ..Default::default() }));
    assert!(matches!(bad, Err(SinkError::InvalidQuery(_))), "{bad:?}");

    // The same batch again (a sensor re-sent it after a crash): nothing changes.
    rt.block_on(async {
        sink.write_batch(batch_a, "bldg-a-1", "north", &flows_a).await.unwrap();
        assert_eq!(sink.totals().await.unwrap(), expected);
        assert_eq!(sink.query_flows(&all_rows()).await.unwrap(), rows);
        // A second aggregator (its own client) sees the same and may re-write it too.
        assert_eq!(sink2.totals().await.unwrap(), expected);
        assert_eq!(sink2.query_flows(&all_rows()).await.unwrap(), rows);
        sink2.write_batch(batch_b, "bldg-b-1", "south", &flows_b).await.unwrap();
        assert_eq!(sink.totals().await.unwrap(), expected);
    });

    // Physical duplicates (a batch inserted twice before merges ran) are hidden by FINAL.
    ch.query(&format!(
        "INSERT INTO wardline_test.flows SELECT * FROM wardline_test.flows WHERE batch_id = '{batch_a}'"
    ))
    .unwrap();
    let raw: u64 = ch.query("SELECT count() FROM wardline_test.flows").unwrap().trim().parse().unwrap();
    assert_eq!(raw, 72, "the raw table really holds the duplicates");
    assert_eq!(rt.block_on(sink.totals()).unwrap(), expected);
    assert_eq!(rt.block_on(sink.query_flows(&all_rows())).unwrap(), rows);
    ch.query("OPTIMIZE TABLE wardline_test.flows FINAL").unwrap();
    let merged: u64 = ch.query("SELECT count() FROM wardline_test.flows").unwrap().trim().parse().unwrap();
    assert_eq!(merged, 42, "merges collapse the duplicates");

    // A batch whose first write died half-way is completed by the re-send, counted once.
    let batch_c = Ulid::from_parts(1_700_000_000_002, 3);
    let flows_c = flows(20, 3);
    let (pc, bc) = sums(&flows_c);
    rt.block_on(async {
        sink.write_batch(batch_c, "bldg-c-1", "west", &flows_c[..8]).await.unwrap();
        sink.write_batch(batch_c, "bldg-c-1", "west", &flows_c).await.unwrap();
        let t = sink.totals().await.unwrap();
        assert_eq!(t, FlowTotals { rows: 62, packets: expected.packets + pc, bytes: expected.bytes + bc });
    });
}

#[test]
fn sink_reports_a_killed_server_clearly_and_recovers_after_restart() {
    let mut ch = ClickHouseServer::start().expect("start ClickHouse");
    let rt = runtime();
    let sink =
        rt.block_on(ClickHouseSink::connect(&ch.http_url, "wardline")).unwrap().with_timeout(Duration::from_secs(10));
    let batch = Ulid::from_parts(1_700_000_000_000, 9);
    let fl = flows(25, 4);
    rt.block_on(sink.write_batch(batch, "s1", "north", &fl)).unwrap();

    ch.stop_kill9();
    let started = Instant::now();
    let err = rt.block_on(sink.write_batch(Ulid::new(), "s1", "north", &fl)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(err, SinkError::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
    eprintln!("killed-server error: {err}");
    let text = err.to_string();
    assert!(text.contains(&ch.http_url) && text.contains("clickhouse-server running"), "{text}");

    // Data written before the crash is still there, and writing works again.
    ch.restart().unwrap();
    let (p, b) = sums(&fl);
    rt.block_on(async {
        sink.write_batch(batch, "s1", "north", &fl).await.unwrap();
        assert_eq!(sink.totals().await.unwrap(), FlowTotals { rows: 25, packets: p, bytes: b });
    });
}

#[test]
fn sink_pointed_at_a_closed_port_fails_fast_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let started = Instant::now();
    let err = rt.block_on(open_sink(Some(&url), "wardline", dir.path())).err().expect("must fail");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    let text = format!("{err:#}");
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("clickhouse-server running"), "{text}");
    assert!(text.to_lowercase().contains("refused"), "{text}");
    eprintln!("closed-port error: {text}");
    let sink_err = err.downcast_ref::<SinkError>().expect("a SinkError");
    assert!(matches!(sink_err, SinkError::Unreachable { .. }), "{sink_err}");

    // The same for calls on a sink built without touching the server.
    let sink = ClickHouseSink::new(&url, "wardline").unwrap();
    for res in [
        rt.block_on(sink.totals()).map(|_| ()),
        rt.block_on(sink.query_flows(&FlowQuery::default())).map(|_| ()),
        rt.block_on(sink.write_batch(Ulid::new(), "s", "x", &flows(3, 0))),
    ] {
        assert!(matches!(res, Err(SinkError::Unreachable { .. })), "{res:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn sink_facing_a_server_that_never_answers_times_out_with_a_clear_error() {
    // A listener that is never accepted from: connections open, requests get no answer.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let rt = runtime();
    let sink = ClickHouseSink::new(&url, "wardline").unwrap().with_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let err = rt.block_on(sink.totals()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(err, SinkError::Timeout { seconds: 2, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("flow totals"), "{text}");
}
