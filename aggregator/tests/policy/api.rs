//! The policy routes behind the production HTTPS server with operator certificates: an
//! analyst validates (errors with lines) and triages violations, only an admin applies and
//! rolls back, viewers read versions, diffs and hits, every change is in the audit log, and
//! the CLI speaks the same API.

use crate::raft_support::{answer, SecureApiNode};
use crate::{traffic, POLICY_V1, PUMP, T0_US};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wardline_aggregator::auth::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_apply_analysts_validate_and_triage_viewers_read_and_all_is_audited() {
    let node = SecureApiNode::start("policy test fleet").await;
    let (raft, base) = (node.raft.clone(), node.base.clone());
    let op = |role: Role| node.operator(role);
    let url = |path: &str| node.url(path);

    let (status, body) = answer(op(Role::Viewer).get(url("/api/v1/policy"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no policy yet: {body}");

    // Validation: every problem with its line; nothing stored.
    let broken = POLICY_V1.replace("to = [\"servers\"]", "to = [\"server\"]").replace("ports = [23]", "ports = [0]");
    let (status, v) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/validate")).json(&json!({"text": broken}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert!(
        errors.iter().any(|e| e["line"] == 17 && e["message"].as_str().unwrap().contains("unknown group \"server\"")),
        "{v}"
    );
    assert!(errors.iter().any(|e| e["line"] == 27), "{v}");
    let (status, v) =
        answer(op(Role::Viewer).post(url("/api/v1/policy/validate")).json(&json!({"text": POLICY_V1}))).await;
    assert_eq!((status, v["required_role"].as_str()), (StatusCode::FORBIDDEN, Some("analyst")), "{v}");

    // Apply: admins only; a broken text is refused with its lines.
    let apply = |text: &str, message: &str| json!({"text": text, "message": message});
    let (status, v) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/apply")).json(&apply(POLICY_V1, "first"))).await;
    assert_eq!((status, v["required_role"].as_str()), (StatusCode::FORBIDDEN, Some("admin")), "{v}");
    let (status, v) = answer(op(Role::Admin).post(url("/api/v1/policy/apply")).json(&apply(&broken, "broken"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("line 17"), "{v}");
    let (status, v) = answer(op(Role::Admin).post(url("/api/v1/policy/apply")).json(&apply(POLICY_V1, "first"))).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!((v["version"].as_u64(), v["author"].as_str()), (Some(1), Some("op-admin")), "{v}");
    assert_eq!(v["groups"][0]["members"], json!([PUMP.to_string()]), "{v}");

    // Monitor mode over ingested traffic, then the violation triaged.
    raft.propose(traffic(1, T0_US)).await.unwrap();
    let (_, v) = answer(op(Role::Viewer).get(url("/api/v1/policy"))).await;
    assert_eq!((v["hits"]["flows"].as_u64(), v["hits"]["violations"].as_u64()), (Some(4), Some(2)), "{v}");
    assert_eq!(v["hits"]["rules"][1], json!({"name": "no telnet", "hits": 2}), "{v}");
    let (_, alerts) = answer(op(Role::Viewer).get(url("/api/v1/alerts?kind=policy_violation"))).await;
    let id = alerts["alerts"][0]["id"].as_u64().unwrap();
    let act = |a: &str| url(&format!("/api/v1/policy/violations/{id}/{a}"));
    assert_eq!(answer(op(Role::Viewer).post(act("investigate"))).await.0, StatusCode::FORBIDDEN);
    let (status, v) = answer(op(Role::Analyst).post(act("ignore")).json(&json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "ignoring needs a reason: {v}");
    let (status, v) =
        answer(op(Role::Analyst).post(act("investigate")).json(&json!({"note": "who uses telnet?"}))).await;
    assert_eq!((status, v["alert"]["state"].as_str()), (StatusCode::OK, Some("acknowledged")), "{v}");
    let (status, v) =
        answer(op(Role::Analyst).post(act("add-to-policy")).json(&json!({"note": "biomed needs it"}))).await;
    assert_eq!((status, v["alert"]["state"].as_str()), (StatusCode::OK, Some("resolved")), "{v}");
    assert!(v["draft"]["toml"].as_str().unwrap().contains("ports = [23]"), "{v}");
    let (_, drafts) = answer(op(Role::Viewer).get(url("/api/v1/policy/drafts"))).await;
    assert_eq!(drafts["count"], 1, "{drafts}");

    // The CLI: apply v2 from a file, list, diff, roll back.
    let cli = |role: Role, args: Vec<String>| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardline-aggregator"));
        c.args(args).args(["--api", base.as_str()]).env("WARDLINE_CERT_DIR", node.operator_dir(role));
        c.env_remove("WARDLINE_TOKEN").env("RUST_LOG", "warn").output()
    };
    let file = node.data.path().join("v2.toml");
    std::fs::write(&file, crate::policy_v2()).unwrap();
    let file = file.display().to_string();
    let args = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let out = cli(Role::Analyst, args(&["policy", "validate", &file])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("+ rule pumps stay inside"));
    let out = cli(Role::Admin, args(&["policy", "apply", &file, "-m", "pumps stay inside", "--json"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["version"], 2);
    let out = cli(Role::Viewer, args(&["policy", "diff", "--json"])).await.unwrap();
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((diff["from"].as_u64(), diff["to"].as_u64()), (Some(1), Some(2)), "{diff}");
    assert!(diff["changes"][0].as_str().unwrap().starts_with("+ rule pumps stay inside"), "{diff}");
    let out = cli(Role::Analyst, args(&["policy", "rollback", "1"])).await.unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs role admin"));
    let out = cli(Role::Admin, args(&["policy", "rollback", "1", "--json"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, versions) = answer(op(Role::Viewer).get(url("/api/v1/policy/versions"))).await;
    assert_eq!(versions["active"], 3, "{versions}");
    assert_eq!(versions["versions"][0]["rollback_of"], 1, "{versions}");
    let (_, v1) = answer(op(Role::Viewer).get(url("/api/v1/policy/versions/1"))).await;
    let (_, v3) = answer(op(Role::Viewer).get(url("/api/v1/policy/versions/3"))).await;
    assert_eq!(v1["text"], v3["text"]);
    let out = cli(Role::Viewer, args(&["policy", "versions"])).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("rollback to version 1"));

    // The audit log: each change once, with who and what, committed with the change.
    let (_, audit) = answer(op(Role::Admin).get(url("/api/v1/audit?limit=200"))).await;
    let entries = audit["entries"].as_array().unwrap();
    let details = |path: &str, outcome: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["path"] == path && e["outcome"] == outcome)
            .map(|e| format!("{} {}", e["who"].as_str().unwrap(), e["detail"].as_str().unwrap()))
            .collect()
    };
    let applied = details("/api/v1/policy/apply", "ok");
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert!(
        applied.iter().any(|d| d.starts_with("op-admin applied a policy version (v1") && d.ends_with("first")),
        "{applied:?}"
    );
    assert_eq!(details("/api/v1/policy/apply", "refused").len(), 1, "the analyst's attempt");
    assert!(details("/api/v1/policy/rollback", "ok")[0].contains("rolled the policy back to version 1"));
    assert!(details(&format!("/api/v1/policy/violations/{id}/add-to-policy"), "ok")[0].contains("added a draft rule"));

    node.stop().await;
}
