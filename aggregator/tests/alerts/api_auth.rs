//! The alert routes behind the production HTTPS server with operator certificates: a viewer
//! reads but cannot triage, an analyst triages and manages suppression rules, only an admin
//! changes the detectors' settings, and every change and refusal is in the audit log.

use crate::raft_support::{answer, SecureApiNode};
use crate::scenario;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wardline_aggregator::auth::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_analysts_triage_admins_configure_and_all_is_audited() {
    let node = SecureApiNode::start("alerts test fleet").await;
    let (raft, base) = (node.raft.clone(), node.base.clone());
    let op = |role: Role| node.operator(role);
    let url = |path: &str| node.url(path);
    for cmd in scenario() {
        raft.propose(cmd).await.unwrap();
    }

    let (status, list) = answer(op(Role::Viewer).get(url("/api/v1/alerts?kind=cleartext_credentials"))).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["matched"], 1, "{list}");
    let id = list["alerts"][0]["id"].as_u64().unwrap();
    let ack = url(&format!("/api/v1/alerts/{id}/ack"));

    let (status, body) = answer(op(Role::Viewer).post(&ack).json(&json!({"note": "mine"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["required_role"], "analyst");
    let (_, alert) = answer(op(Role::Viewer).get(url(&format!("/api/v1/alerts/{id}")))).await;
    assert_eq!(alert["state"], "open", "the refused ack changed nothing");

    let (status, alert) = answer(op(Role::Analyst).post(&ack).json(&json!({"note": "calling biomed"}))).await;
    assert_eq!(status, StatusCode::OK, "{alert}");
    assert_eq!(alert["state"], "acknowledged");
    let last = alert["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["by"].as_str()), (Some("acknowledged"), Some("op-analyst")));
    let (status, body) = answer(op(Role::Analyst).post(&ack)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap().contains("acknowledged"), "{body}");
    let (status, body) = answer(op(Role::Analyst).post(url("/api/v1/alerts/999/resolve"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Suppression rules: analysts add and delete them, viewers only read.
    let rule = json!({"kind": "new_protocol", "site": "ward", "reason": "pump vendor's maintenance port"});
    let (status, body) = answer(op(Role::Viewer).post(url("/api/v1/alerts/rules")).json(&rule)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, added) = answer(op(Role::Analyst).post(url("/api/v1/alerts/rules")).json(&rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["author"], "op-analyst");
    let (status, body) =
        answer(op(Role::Analyst).post(url("/api/v1/alerts/rules")).json(&json!({"reason": "everything"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a rule matching everything is refused: {body}");
    let (_, rules) = answer(op(Role::Viewer).get(url("/api/v1/alerts/rules"))).await;
    assert_eq!(rules["count"], 1, "{rules}");
    let rule_url = url(&format!("/api/v1/alerts/rules/{}", added["id"]));
    assert_eq!(answer(op(Role::Viewer).delete(&rule_url)).await.0, StatusCode::FORBIDDEN);
    assert_eq!(answer(op(Role::Analyst).delete(&rule_url)).await.0, StatusCode::OK);

    // Settings: admins only.
    let settings = json!({"learning_secs": 3600, "clinical_vlans": [{"site": "ward", "vlan": 40}]});
    let (status, body) = answer(op(Role::Analyst).put(url("/api/v1/alerts/settings")).json(&settings)).await;
    assert_eq!((status, body["required_role"].as_str()), (StatusCode::FORBIDDEN, Some("admin")), "{body}");
    assert_eq!(answer(op(Role::Admin).put(url("/api/v1/alerts/settings")).json(&settings)).await.0, StatusCode::OK);
    let (_, now) = answer(op(Role::Viewer).get(url("/api/v1/alerts/settings"))).await;
    assert_eq!(now["learning_secs"], 3600, "{now}");
    let detectors = json!({"sensor_silent_after_secs": 300});
    let (status, body) = answer(op(Role::Analyst).put(url("/api/v1/alerts/detectors")).json(&detectors)).await;
    assert_eq!((status, body["required_role"].as_str()), (StatusCode::FORBIDDEN, Some("admin")), "{body}");
    assert_eq!(answer(op(Role::Admin).put(url("/api/v1/alerts/detectors")).json(&detectors)).await.0, StatusCode::OK);
    let (_, now) = answer(op(Role::Viewer).get(url("/api/v1/alerts/detectors"))).await;
    assert_eq!(now["sensor_silent_after_secs"], 300, "{now}");

    // The CLI over the same API, with the same roles.
    let cli = |role: Role, args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardline-aggregator"));
        c.args(args).args(["--api", base.as_str()]).env("WARDLINE_CERT_DIR", node.operator_dir(role));
        c.env_remove("WARDLINE_TOKEN").env("RUST_LOG", "warn").output()
    };
    let out = cli(Role::Viewer, &["alerts", "list", "--json", "--state", "acknowledged"]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((listed["matched"].as_u64(), listed["alerts"][0]["id"].as_u64()), (Some(1), Some(id)), "{listed}");
    let id_text = id.to_string();
    let resolve = ["alerts", "resolve", id_text.as_str(), "--note", "patched", "--json"];
    let out = cli(Role::Viewer, &resolve).await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs role analyst"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(Role::Analyst, &resolve).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["state"], "resolved");
    let out = cli(Role::Viewer, &["alerts", "show", id_text.as_str()]).await.unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("resolved by op-analyst") && shown.contains("patched"), "{shown}");

    // The audit log names who did what to which alert, and the refusals.
    let (_, audit) = answer(op(Role::Admin).get(url("/api/v1/audit?limit=100"))).await;
    let entries = audit["entries"].as_array().unwrap();
    let find = |who: &str, path: &str, outcome: &str| {
        entries.iter().find(|e| e["who"] == who && e["path"] == path && e["outcome"] == outcome).cloned()
    };
    let acked = find("op-analyst", &format!("/api/v1/alerts/{id}/ack"), "ok").expect("the ack is audited");
    assert!(acked["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("alert {id} acknowledged by op-analyst: calling biomed")));
    let refused = find("op-viewer", &format!("/api/v1/alerts/{id}/ack"), "refused").expect("the refusal is audited");
    assert_eq!(refused["status"], 403);
    assert!(find("op-analyst", "/api/v1/alerts/rules", "ok").unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains("added suppression rule"));
    assert!(find("op-admin", "/api/v1/alerts/settings", "ok").is_some());
    let audited = find("op-admin", "/api/v1/alerts/detectors", "ok").expect("the detector settings are audited");
    assert!(audited["detail"].as_str().unwrap().contains("sensor silent after 300 s"), "{audited}");

    node.stop().await;
}
