//! `GET|PUT /api/v1/alerts/detectors` (decision 0033): settings in operator units go
//! through Raft into the replicated state, absent fields take their defaults, and bad
//! settings are refused with a message before anything is proposed.

use crate::raft_support::{config, ServedNode, WAIT};
use serde_json::{json, Value};
use std::sync::Arc;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::FlowSink;
use wardline_aggregator::state::anomaly::detectors::{DetectorConfig, SegmentExpectation};

async fn call(node: &ServedNode, method: reqwest::Method, body: Option<Value>) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.request(method, format!("http://{}/api/v1/alerts/detectors", node.addr));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_settings_are_replicated_in_operator_units_and_bad_ones_refused() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink: Arc<dyn FlowSink> = Arc::new(EmbeddedSink::open(dirs[1].path()).unwrap());
    let n1 = ServedNode::start_with_api(1, dirs[0].path(), config(100), sink).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();

    let (status, text) = call(&n1, reqwest::Method::GET, None).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((v["spike_bucket_secs"].as_u64(), v["sensor_silent_after_secs"].as_u64()), (Some(3600), Some(900)));
    assert_eq!(v["counters"]["ticks"], 0);

    let body = json!({
        "spike_bucket_secs": 600,
        "spike_factor_percent": 800,
        "phi_expected_receivers": ["10.20.0.15"],
        "sensor_silent_after_secs": 120,
        "segment_expectations": [{"group": "pumps", "site": "north", "vlans": [40, 41]}]
    });
    let (status, text) = call(&n1, reqwest::Method::PUT, Some(body)).await;
    assert_eq!(status, 200, "{text}");
    let config = n1.node.read_state(|s| s.detectors().config().clone()).await;
    assert_eq!(
        config,
        DetectorConfig {
            spike_bucket_us: 600_000_000,
            spike_factor_percent: 800,
            phi_expected_receivers: vec!["10.20.0.15".parse().unwrap()],
            sensor_silent_after_ms: 120_000,
            segment_expectations: vec![SegmentExpectation {
                group: "pumps".into(),
                site: Some("north".into()),
                vlans: vec![40, 41]
            }],
            ..DetectorConfig::default()
        },
        "absent fields take their defaults"
    );

    for (bad, says) in [
        (json!({"spike_factor_percent": 50}), "at least 100"),
        (json!({"spike_bucket_secs": 0}), "at least 1"),
        (json!({"segment_expectations": [{"group": "pumps", "vlans": [5000]}]}), "not a VLAN id"),
        (json!({"spike_buckets": 1}), "spike_bucket_secs"),
    ] {
        let (status, text) = call(&n1, reqwest::Method::PUT, Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {text}");
        assert!(text.contains(says), "{bad}: {text}");
    }
    let unchanged = n1.node.read_state(|s| s.detectors().config().spike_factor_percent).await;
    assert_eq!(unchanged, 800, "nothing refused was applied");
}
