//! The API's error answers: one shape (`{"error": ...}`), 400 for a request to fix, 404 for
//! what does not exist, 503 while the flow store is down (the inventory still answers).

use crate::raft_support::{config, ServedNode, WAIT};
use std::sync::Arc;
use std::time::Duration;
use wardline_aggregator::sink::clickhouse::ClickHouseSink;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_change_and_a_down_store_is_503() {
    let dir = tempfile::tempdir().unwrap();
    // A ClickHouse sink whose server is not running: a port that was just free.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let sink =
        ClickHouseSink::new(&format!("http://{closed}"), "wardline").unwrap().with_timeout(Duration::from_secs(5));
    let node = ServedNode::start_with_api(1, dir.path(), config(100), Arc::new(sink)).await;
    node.node.initialize_single_if_new().await.unwrap();
    node.node.wait_for_leader(WAIT).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let cases: [(&str, u16, &str); 9] = [
        ("/api/v1/devices/00:1a:2b", 400, "00:1a:2b"),
        ("/api/v1/devices/00:1a:2b:3c:4d:5e", 404, "GET /api/v1/inventory lists"),
        ("/api/v1/devices/00:1a:2b:3c:4d:5e/flows?limit=1001", 400, "1..=1000"),
        ("/api/v1/devices/00:1a:2b:3c:4d:5e/flows?since=1", 400, "accepted parameters: limit"),
        ("/api/v1/flows?limit=10001", 400, "1..=10000"),
        ("/api/v1/flows?ip=10.0.0.300", 400, "10.0.0.300"),
        ("/api/v1/flows?vlan=20", 400, "accepted parameters: mac, ip, sensor, app, limit"),
        ("/api/v1/flows", 503, "Retry once it is back"),
        ("/api/v2/anything", 404, "docs/api.md"),
    ];
    for (path, status, hint) in cases {
        let resp = client.get(format!("http://{}{path}", node.addr)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["error"], "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(hint), "{path}: {body}");
    }
    let totals = client.get(format!("http://{}/api/v1/flows/totals", node.addr)).send().await.unwrap();
    assert_eq!(totals.status().as_u16(), 503);

    // Routes that need only the replicated state keep answering.
    let inventory: serde_json::Value =
        client.get(format!("http://{}/api/v1/inventory", node.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(inventory["count"], 0);
    let cluster: serde_json::Value =
        client.get(format!("http://{}/api/v1/cluster", node.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(cluster["membership"], serde_json::json!([{"addr": node.addr, "id": 1, "voter": true}]));
    assert_eq!(cluster["state"], "Leader");
    node.stop().await;
}
