//! Groups and blast radius behind the production HTTPS server (decision 0031): an Alaris
//! pump joins "vulnerable infusion pumps" by itself on the leader's refresh after a real
//! advisory is imported, the history says when and why; a workstation's blast radius now
//! and under a stricter stored version; viewers read; unknown names are 404 with a message;
//! the CLI prints the same.

use crate::raft_support::{answer, SecureApiNode};
use crate::{batch, flow, T0_US};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use wardline_aggregator::auth::Role;
use wardline_aggregator::cli::risk::import_requests;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::policy::refresh::refresh_once;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_common::{Field, MacAddr, Proto};
use wardline_intel::KnowledgeBase;

/// A BD Alaris PC unit 8015 (named by ICSMA-20-317-01) and a second one.
pub const PUMP: MacAddr = MacAddr([0x00, 0xd0, 0x75, 0x30, 0x00, 0x01]);
pub const PUMP2: MacAddr = MacAddr([0x00, 0xd0, 0x75, 0x30, 0x00, 0x02]);
pub const WS: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x30, 0x00, 0x03]);
const SERVER: MacAddr = MacAddr([0x00, 0x15, 0x5d, 0x30, 0x00, 0x04]);

pub const VULNERABLE: &str = "vulnerable-infusion-pumps";

pub fn policy(deny_workstation_to_pumps: bool) -> String {
    let mut t = format!(
        r#"
[policy]
name = "ward-3a"
default = "allow"
[[group]]
name = "pumps"
match = 'class == "infusion_pump"'
exclude = ["{PUMP2}"]
[[group]]
name = "quiet-pumps"
match = 'class == "infusion_pump"'
exclude_match = 'vulnerable'
[[group]]
name = "{VULNERABLE}"
match = 'class == "infusion_pump" and vulnerable'
[[group]]
name = "workstations"
members = ["{WS}"]
"#
    );
    if deny_workstation_to_pumps {
        t.push_str(
            "[[rule]]\nname = \"no workstation to pumps\"\nfrom = [\"workstations\"]\nto = [\"pumps\", \"vulnerable-infusion-pumps\"]\nprotocol = \"any\"\naction = \"deny\"\n",
        );
    }
    t
}

fn alaris(mac: MacAddr, ip: &str) -> wardline_common::DeviceObservation {
    crate::raft_support::device_on_vlan_40(
        mac,
        ip,
        T0_US,
        Proto::Dhcp,
        &[
            (Field::DhcpVendorClass, "CareFusion Alaris PCU 8015"),
            (Field::Hostname, "ALARIS-8015-0042"),
            (Field::ListeningPort, "tcp/3613"),
        ],
    )
}

pub fn enc(name: &str) -> String {
    wardline_aggregator::cli::groups::path_segment(name)
}

/// Ward 3A: two Alaris pumps, a workstation that talks to pump 1 and a server; all on VLAN 40.
pub fn ward_batch() -> wardline_aggregator::state::Command {
    let ws = crate::raft_support::device_on_vlan_40(WS, "10.0.40.30", T0_US, Proto::Dhcp, &[]);
    let server = crate::raft_support::device_on_vlan_40(
        SERVER,
        "10.0.40.40",
        T0_US,
        Proto::Dhcp,
        &[(Field::ListeningPort, "tcp/2575")],
    );
    let flows = vec![
        flow((WS, "10.0.40.30"), (PUMP, "10.0.40.31"), 3613, T0_US + 10),
        flow((WS, "10.0.40.30"), (SERVER, "10.0.40.40"), 2575, T0_US + 20),
    ];
    batch(1, vec![alaris(PUMP, "10.0.40.31"), alaris(PUMP2, "10.0.40.32"), ws, server], flows)
}

/// An import request holding one real advisory naming the Alaris 8015 (ICSMA-20-317-01).
pub fn alaris_advisory_import() -> wardline_aggregator::risk::import::ImportRequest {
    let feeds = tempfile::tempdir().unwrap();
    let icsma = std::env::var_os("WARDLINE_VULNFEEDS")
        .map(|d| std::path::PathBuf::from(d).join("icsma"))
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vulnfeeds/icsma"));
    std::fs::copy(icsma.join("icsma-20-317-01.json"), feeds.path().join("icsma-20-317-01.json"))
        .unwrap_or_else(|e| panic!("the real feeds are needed at {} ($WARDLINE_VULNFEEDS): {e}", icsma.display()));
    import_requests(feeds.path(), None).unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pump_joins_vulnerable_pumps_by_itself_and_the_blast_radius_compares_versions() {
    let node = SecureApiNode::start("groups test fleet").await;
    let (raft, base) = (node.raft.clone(), node.base.clone());
    let viewer = node.operator(Role::Viewer);
    let admin = node.operator(Role::Admin);
    let url = |path: &str| node.url(path);

    assert!(raft.propose(ward_batch()).await.unwrap().applied);

    // No policy yet: groups are empty, a group is 404 with what to do, the blast radius is
    // everything observed plus the segment.
    let (status, v) = answer(viewer.get(url("/api/v1/groups"))).await;
    assert_eq!((status, v["version"].clone(), v["groups"].clone()), (StatusCode::OK, Value::Null, json!([])), "{v}");
    let (status, v) = answer(viewer.get(url("/api/v1/groups/pumps"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no policy is active"), "{v}");
    let (status, open) = answer(viewer.get(url(&format!("/api/v1/blast?device={WS}")))).await;
    assert_eq!(status, StatusCode::OK, "{open}");
    assert_eq!(open["now"]["name"], "no policy", "{open}");
    let reached: Vec<&str> =
        open["now"]["reach"]["reached"].as_array().unwrap().iter().map(|r| r["mac"].as_str().unwrap()).collect();
    assert_eq!(reached.len(), 3, "both pumps and the server: {open}");
    let pump1 = open["now"]["reach"]["reached"].as_array().unwrap().iter().find(|r| r["mac"] == PUMP.to_string());
    assert_eq!(pump1.unwrap()["observed"], true, "{open}");
    assert_eq!(pump1.unwrap()["services"], json!(["tcp/3613"]), "{open}");

    // v1 denies the workstation to pumps, v2 (active) allows everything.
    for (deny, message) in [(true, "closed"), (false, "open")] {
        let (status, v) =
            answer(admin.post(url("/api/v1/policy/apply")).json(&json!({"text": policy(deny), "message": message})))
                .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let (_, groups) = answer(viewer.get(url("/api/v1/groups"))).await;
    assert_eq!(groups["version"], 2, "{groups}");
    let counts: Vec<(String, u64)> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap().to_string(), g["members"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        counts,
        [("pumps".into(), 1), ("quiet-pumps".into(), 2), (VULNERABLE.into(), 0), ("workstations".into(), 1)],
        "no feed yet, so no pump is vulnerable; pump 2 is excluded from pumps: {groups}"
    );
    assert_eq!(groups["groups"][0]["excluded"], json!([PUMP2.to_string()]), "{groups}");
    let (_, pumps) = answer(viewer.get(url("/api/v1/groups/pumps"))).await;
    assert_eq!(pumps["members"][0]["why"], "matched", "{pumps}");
    assert_eq!(pumps["members"][0]["class"], "infusion_pump", "{pumps}");
    assert_eq!(pumps["kept_out"], json!([{"mac": PUMP2.to_string(), "why": "excluded"}]), "{pumps}");

    // Import one real advisory naming the Alaris 8015; the leader's refresh (what it runs
    // every 60 s) moves both pumps into the vulnerable group without an edit.
    let request = alaris_advisory_import();
    let (status, v) = answer(admin.post(url("/api/v1/vuln/import")).json(&request)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let sink = Arc::new(EmbeddedSink::open(&node.data.path().join("refresh-flows")).unwrap());
    let kb = Arc::new(KnowledgeBase::builtin().unwrap());
    let query = QueryService::new(raft.clone(), sink, kb, Arc::new(IngestStats::default()));
    assert!(refresh_once(&query).await.unwrap(), "the import changed membership");
    assert!(!refresh_once(&query).await.unwrap(), "and only once");

    let (status, g) = answer(viewer.get(url(&format!("/api/v1/groups/{}", enc(VULNERABLE))))).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let members: Vec<(&str, &str)> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mac"].as_str().unwrap(), m["why"].as_str().unwrap()))
        .collect();
    let (p1, p2) = (PUMP.to_string(), PUMP2.to_string());
    assert_eq!(members, [(p1.as_str(), "matched"), (p2.as_str(), "matched")], "{g}");
    assert!(g["members"][0]["vulns"].as_u64().unwrap() >= 1, "{g}");
    let (status, h) = answer(viewer.get(url(&format!("/api/v1/groups/{}/history", enc(VULNERABLE))))).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let entries = h["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{h}");
    for e in entries {
        assert_eq!(
            (e["change"].as_str(), e["reason"].as_str(), e["version"].as_u64()),
            (Some("joined"), Some("matched"), Some(2)),
            "{h}"
        );
        assert_eq!(e["rule"], r#"class == "infusion_pump" and vulnerable"#, "{h}");
    }
    // The same refresh took both out of "quiet-pumps" (exclude_match = vulnerable).
    let (_, q) = answer(viewer.get(url("/api/v1/groups/quiet-pumps"))).await;
    assert_eq!(q["members"], json!([]), "{q}");
    assert_eq!(q["kept_out"], json!([{"mac": p1, "why": "exclude_rule"}, {"mac": p2, "why": "exclude_rule"}]), "{q}");
    let (_, h) = answer(viewer.get(url("/api/v1/groups/quiet-pumps/history"))).await;
    let newest: Vec<(&str, &str)> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|e| (e["change"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(newest, [("left", "no_longer_matches"), ("left", "no_longer_matches")], "{h}");
    let (_, h) = answer(viewer.get(url("/api/v1/groups/pumps/history?limit=1"))).await;
    assert_eq!(
        (h["kept"].as_u64(), h["entries"][0]["version"].as_u64()),
        (Some(1), Some(1)),
        "pump 1 joined at v1; v2 kept the same members, so nothing more: {h}"
    );
    let (status, v) = answer(viewer.get(url("/api/v1/groups/nope/history"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = answer(viewer.get(url("/api/v1/groups/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("its groups: pumps, quiet-pumps, vulnerable-infusion-pumps, workstations"),
        "{v}"
    );
    let (status, v) = answer(viewer.get(url("/api/v1/groups/pumps/history?limit=x"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    // Blast radius: now (v2 allows all) vs version 1 (workstation to pumps denied).
    let (status, b) = answer(viewer.get(url(&format!("/api/v1/blast?device={WS}&candidate=1")))).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["now"]["name"], "policy version 2", "{b}");
    let class_devices = |r: &Value, class: &str| {
        r["reach"]["by_class"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["class"] == class)
            .map_or(0, |c| c["devices"].as_u64().unwrap())
    };
    assert_eq!(class_devices(&b["now"], "infusion_pump"), 2, "{b}");
    assert_eq!(class_devices(&b["candidate"], "infusion_pump"), 0, "{b}");
    assert_eq!(b["diff"]["no_longer_reached"], json!([PUMP.to_string(), PUMP2.to_string()]), "{b}");
    assert_eq!(b["diff"]["score_change"], -20, "{b}");
    let headline = b["headline"].as_str().unwrap();
    assert!(headline.contains("2 of them infusion_pump; under version 1: none infusion_pump"), "{headline}");

    // A group as the source: the vulnerable pumps reach the server and the workstation.
    let (status, b) = answer(viewer.get(url(&format!("/api/v1/blast?group={}", enc(VULNERABLE))))).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["sources"], json!([PUMP.to_string(), PUMP2.to_string()]), "{b}");
    assert_eq!(b["now"]["reach"]["devices"], 2, "{b}");

    // Bad input.
    for (query, status, says) in [
        ("", StatusCode::BAD_REQUEST, "exactly one of"),
        (&format!("device={WS}&group=pumps") as &str, StatusCode::BAD_REQUEST, "exactly one of"),
        ("device=02:00:00:00:00:99", StatusCode::NOT_FOUND, "no device 02:00:00:00:00:99"),
        ("device=not-a-mac", StatusCode::BAD_REQUEST, "not a device id"),
        ("device=ward:10.0.40.30", StatusCode::BAD_REQUEST, "IP-keyed"),
        ("group=nope", StatusCode::NOT_FOUND, "no group \"nope\""),
        (&format!("device={WS}&candidate=99") as &str, StatusCode::NOT_FOUND, "version 99 is not kept"),
        (&format!("device={WS}&draft=5") as &str, StatusCode::NOT_FOUND, "no draft 5"),
        (&format!("device={WS}&candidate=x") as &str, StatusCode::BAD_REQUEST, "bad query"),
    ] {
        let (got, v) = answer(viewer.get(url(&format!("/api/v1/blast?{query}")))).await;
        assert_eq!(got, status, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{query}: {v}");
    }

    // The CLI.
    let cli = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardline-aggregator"));
        c.args(args).args(["--api", base.as_str()]).env("WARDLINE_CERT_DIR", node.operator_dir(Role::Viewer));
        c.env_remove("WARDLINE_TOKEN").env("RUST_LOG", "warn").output()
    };
    let out = cli(&["groups", "history", VULNERABLE]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&PUMP.to_string()) && text.contains("joined") && text.contains("matched"), "{text}");
    let out = cli(&["groups", "list", "--json"]).await.unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["groups"][2]["members"], 2, "{v}");
    let out = cli(&["groups", "show", "pumps"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kept out: ") && text.contains("infusion_pump"), "{text}");
    let out = cli(&["blast", "--device", &WS.to_string(), "--candidate", "1"]).await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.lines().next().unwrap().contains("under version 1: none infusion_pump"), "{text}");
    assert!(text.contains("difference: 2 no longer reached"), "{text}");
    let out = cli(&["blast", "--group", "nope"]).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no group \"nope\""));
    node.stop().await;
}
