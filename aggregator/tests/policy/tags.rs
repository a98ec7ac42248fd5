//! Operators' tags behind the production HTTPS server: an analyst tags a pump, the group
//! `tag == "icu"` gains it on the next membership refresh and its history says so; removing
//! the tag takes it out again; viewers read but cannot tag; bad tags and unknown devices are
//! refused with a message; the audit log names who tagged what.

use crate::blast::{ward_batch, PUMP, PUMP2};
use crate::raft_support::{answer, SecureApiNode};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use wardline_aggregator::auth::Role;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::policy::refresh::refresh_once;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_intel::KnowledgeBase;

const POLICY: &str = r#"
[policy]
name = "icu"
default = "allow"
[[group]]
name = "icu-devices"
match = 'tag == "icu"'
"#;

fn members(v: &Value) -> Vec<String> {
    v["members"].as_array().unwrap().iter().map(|m| m["mac"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_tagged_device_joins_its_group_on_the_next_refresh_and_leaves_when_untagged() {
    let node = SecureApiNode::start("tags test fleet").await;
    let raft = node.raft.clone();
    let (viewer, analyst, admin) =
        (node.operator(Role::Viewer), node.operator(Role::Analyst), node.operator(Role::Admin));
    let url = |path: &str| node.url(path);
    assert!(raft.propose(ward_batch()).await.unwrap().applied);
    let (status, v) =
        answer(admin.post(url("/api/v1/policy/apply")).json(&json!({"text": POLICY, "message": "icu"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (_, g) = answer(viewer.get(url("/api/v1/groups/icu-devices"))).await;
    assert!(members(&g).is_empty(), "nothing is tagged yet: {g}");

    let tags = url(&format!("/api/v1/devices/{PUMP}/tags"));
    let (status, v) = answer(viewer.put(&tags).json(&json!({"tags": ["icu"]}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer cannot tag: {v}");
    let (status, v) = answer(analyst.put(&tags).json(&json!({"tags": ["ICU", "ward-3a", "icu"]}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["tags"], json!(["icu", "ward-3a"]), "lowercase, sorted, once each: {v}");
    let (_, v) = answer(viewer.get(&tags)).await;
    assert_eq!(v["tags"], json!(["icu", "ward-3a"]), "{v}");

    for (body, why) in [
        (json!({"tags": ["has space"]}), "not valid"),
        (json!({"tags": vec!["t"; 33]}), "at most 32"),
        (json!({"labels": ["icu"]}), "expected"),
    ] {
        let (status, v) = answer(analyst.put(&tags).json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{body}: {v}");
    }
    let (status, v) =
        answer(analyst.put(url("/api/v1/devices/02:00:00:00:00:99/tags")).json(&json!({"tags": []}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = answer(analyst.put(url("/api/v1/devices/not-a-mac/tags")).json(&json!({"tags": []}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // The leader's refresh (every 60 s) moves the pump into the group, and only the pump.
    let sink = Arc::new(EmbeddedSink::open(&node.data.path().join("refresh-flows")).unwrap());
    let query = QueryService::new(
        raft.clone(),
        sink,
        Arc::new(KnowledgeBase::builtin().unwrap()),
        Arc::new(IngestStats::default()),
    );
    assert!(refresh_once(&query).await.unwrap(), "the tag changed membership");
    let (_, g) = answer(viewer.get(url("/api/v1/groups/icu-devices"))).await;
    assert_eq!(members(&g), [PUMP.to_string()], "{g}");
    assert!(!members(&g).contains(&PUMP2.to_string()));

    // Untagged: it leaves; the history has both moves.
    let (status, _) = answer(analyst.put(&tags).json(&json!({"tags": []}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(refresh_once(&query).await.unwrap());
    let (_, g) = answer(viewer.get(url("/api/v1/groups/icu-devices"))).await;
    assert!(members(&g).is_empty(), "{g}");
    let (_, h) = answer(viewer.get(url("/api/v1/groups/icu-devices/history"))).await;
    let moves: Vec<(String, String)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["mac"].as_str().unwrap().to_string(), e["change"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(moves, [(PUMP.to_string(), "left".into()), (PUMP.to_string(), "joined".into())], "newest first: {h}");

    let (_, audit) = answer(admin.get(url("/api/v1/audit"))).await;
    let text = audit.to_string();
    assert!(text.contains(&format!("tagged device {PUMP}: icu, ward-3a")), "{text}");
    assert!(text.contains(&format!("removed the tags of device {PUMP}")), "{text}");
    node.stop().await;
}
