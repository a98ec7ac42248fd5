//! The embedded (sled) flow sink: idempotent writes, durability across reopen, queries.

use crate::sink_support::{flows, sums, T0_US};
use ulid::Ulid;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::{open_sink, FlowQuery, FlowSink, FlowTotals, SinkError};

fn all_rows() -> FlowQuery {
    FlowQuery { limit: Some(10_000), ..Default::default() }
}

#[tokio::test]
async fn rewrites_do_not_double_count_and_rows_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows");
    let batch_a = Ulid::from_parts(1_700_000_000_000, 1);
    let batch_b = Ulid::from_parts(1_700_000_000_001, 2);
    let flows_a = flows(30, 1);
    let flows_b = flows(12, 2);
    let (pa, ba) = sums(&flows_a);
    let (pb, bb) = sums(&flows_b);
    let expected = FlowTotals { rows: 42, packets: pa + pb, bytes: ba + bb };

    let rows = {
        let sink = open_sink(None, "wardline", &path).await.unwrap();
        assert!(sink.describe().contains("embedded"), "{}", sink.describe());
        assert_eq!(sink.totals().await.unwrap(), FlowTotals::default());
        sink.write_batch(batch_a, "bldg-a-1", "north", &flows_a).await.unwrap();
        sink.write_batch(batch_b, "bldg-b-1", "south", &flows_b).await.unwrap();
        assert_eq!(sink.totals().await.unwrap(), expected);
        let rows = sink.query_flows(&all_rows()).await.unwrap();
        assert_eq!(rows.len(), 42);

        // Re-sent batches, and a batch first written only in part, are stored once.
        sink.write_batch(batch_a, "bldg-a-1", "north", &flows_a).await.unwrap();
        sink.write_batch(batch_b, "bldg-b-1", "south", &flows_b[..5]).await.unwrap();
        sink.write_batch(batch_b, "bldg-b-1", "south", &flows_b).await.unwrap();
        assert_eq!(sink.totals().await.unwrap(), expected);
        assert_eq!(sink.query_flows(&all_rows()).await.unwrap(), rows);
        rows
    };

    // The sink flushed before returning, so a reopened store (a restarted node) has it all.
    let sink = EmbeddedSink::open(&path).unwrap();
    assert_eq!(sink.totals().await.unwrap(), expected);
    assert_eq!(sink.query_flows(&all_rows()).await.unwrap(), rows);
    sink.write_batch(batch_a, "bldg-a-1", "north", &flows_a).await.unwrap();
    assert_eq!(sink.totals().await.unwrap(), expected);
}

#[tokio::test]
async fn queries_filter_order_and_limit_like_the_clickhouse_sink() {
    let dir = tempfile::tempdir().unwrap();
    let sink = EmbeddedSink::open(dir.path()).unwrap();
    let flows_a = flows(30, 1);
    let flows_b = flows(12, 2);
    sink.write_batch(Ulid::from_parts(1, 1), "bldg-a-1", "north", &flows_a).await.unwrap();
    sink.write_batch(Ulid::from_parts(2, 2), "bldg-b-1", "south", &flows_b).await.unwrap();

    let rows = sink.query_flows(&all_rows()).await.unwrap();
    assert!(rows.windows(2).all(|w| w[0].first_seen_us >= w[1].first_seen_us), "not newest first");
    let r7 = rows.iter().find(|r| r.sensor_id == "bldg-a-1" && r.idx == 7).unwrap();
    assert_eq!(r7.a_mac, flows_a[7].a_mac.to_string());
    assert_eq!((r7.vlan, r7.packets_ab, r7.app.as_str()), (None, flows_a[7].packets_ab, "hl7"));
    assert_eq!(rows.iter().find(|r| r.idx == 0).unwrap().vlan, Some(20));

    let q = |q: FlowQuery| {
        let sink = &sink;
        async move { sink.query_flows(&q).await.unwrap() }
    };
    let ct = q(FlowQuery { mac: Some("00-1A-2B-00-00-01".into()), limit: Some(1000), ..Default::default() }).await;
    assert_eq!(ct.len(), 14);
    let by_ip =
        q(FlowQuery { ip: Some("10.0.0.1".into()), sensor_id: Some("bldg-b-1".into()), ..Default::default() }).await;
    assert_eq!(by_ip.len(), 4);
    let v6 = q(FlowQuery { ip: Some("fd00:0:0::1:5".into()), ..Default::default() }).await;
    assert_eq!(v6.len(), 1);
    let hl7 = q(FlowQuery { app: Some("hl7".into()), limit: Some(5), ..Default::default() }).await;
    assert_eq!(hl7.len(), 5);
    assert_eq!(hl7[0].first_seen_us, T0_US + 29 * 1_000_000);

    for bad in [
        FlowQuery { mac: Some("not-a-mac".into()), ..Default::default() },
        FlowQuery { ip: Some("10.0.0".into()), ..Default::default() },
        FlowQuery { limit: Some(50_000), ..Default::default() },
        FlowQuery { limit: Some(0), ..Default::default() },
    ] {
        let err = sink.query_flows(&bad).await.unwrap_err();
        assert!(matches!(err, SinkError::InvalidQuery(_)) && !err.is_transient(), "{err}");
    }
}

#[test]
fn flow_row_serializes_for_the_json_api() {
    let row =
        wardline_aggregator::sink::FlowRow::from_record(Ulid::from_parts(1, 1), 3, "s1", "north", &flows(1, 1)[0]);
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(json["a_mac"], "00:1a:2b:00:00:01");
    assert_eq!(json["a_ip"], "10.0.0.1");
    assert_eq!(json["vlan"], 20);
    assert_eq!(json["idx"], 3);
    let q: FlowQuery = serde_json::from_str(r#"{"mac":"00:1a:2b:00:00:01"}"#).unwrap();
    assert_eq!((q.limit, q.ip), (None, None));
}

#[test]
fn a_second_opener_of_the_same_directory_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedSink::open(dir.path()).unwrap();
    match EmbeddedSink::open(dir.path()) {
        Err(err) => {
            let text = err.to_string();
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
        }
        Ok(_) => panic!("sled let two handles open the same directory"),
    }
}
