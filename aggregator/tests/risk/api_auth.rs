//! The feed and risk routes behind the production HTTPS server with operator certificates,
//! driven through the CLI: a viewer reads risk, feeds and reports but cannot import; an
//! admin imports, and the import is in the audit log with what it did.

use crate::raft_support::SecureApiNode;
use crate::{feeds_dir, kev_file, pump_batch, PUMP};
use serde_json::Value;
use wardline_aggregator::auth::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_risk_and_reports_only_admins_import_and_imports_are_audited() {
    let node = SecureApiNode::start("risk test fleet").await;
    let (raft, base) = (node.raft.clone(), node.base.clone());
    raft.propose(pump_batch()).await.unwrap();

    let cli = |role: Role, args: Vec<String>| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardline-aggregator"));
        c.args(args).args(["--api", base.as_str()]).env("WARDLINE_CERT_DIR", node.operator_dir(role));
        c.env_remove("WARDLINE_TOKEN").env("RUST_LOG", "warn").output()
    };
    let import: Vec<String> = [
        "vuln",
        "import",
        "--dir",
        feeds_dir().join("icsma").to_str().unwrap(),
        "--kev",
        kev_file().to_str().unwrap(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let out = cli(Role::Viewer, import.clone()).await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs role admin"), "{stderr}");
    let viewer = node.operator(Role::Viewer);
    let feeds: Value = viewer.get(format!("{base}/api/v1/vuln/feeds")).send().await.unwrap().json().await.unwrap();
    assert_eq!(feeds["advisory_count"], 0, "the refused import changed nothing: {feeds}");

    let out = cli(Role::Admin, import).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(answers[0]["record"]["added"].as_u64().unwrap() > 100, "{answers}");

    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let out = cli(Role::Viewer, args(&["risk", "device", &PUMP.to_string(), "--json"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let risk: Value = serde_json::from_slice(&out.stdout).unwrap();
    let advisories: std::collections::BTreeSet<&str> =
        risk["vulnerabilities"].as_array().unwrap().iter().map(|m| m["advisory_id"].as_str().unwrap()).collect();
    assert_eq!(advisories.len(), 3, "the three Alaris PC unit advisories: {risk}");
    let out = cli(Role::Viewer, args(&["risk", "top"])).await.unwrap();
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && top.contains(&PUMP.to_string()) && top.contains("vulnerability"), "{top}");
    let report = node.data.path().join("vulnerable.csv");
    let out = cli(Role::Viewer, args(&["report", "vulnerable", "--format", "csv", "--out", report.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(&report).unwrap();
    assert!(csv.starts_with("id,site,class,product,finding,") && csv.contains("ICSMA-20-317-01"), "{csv}");

    let admin = node.operator(Role::Admin);
    let audit: Value = admin.get(format!("{base}/api/v1/audit?limit=100")).send().await.unwrap().json().await.unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let on_import = |who: &str, outcome: &str| {
        entries.iter().find(|e| e["who"] == who && e["path"] == "/api/v1/vuln/import" && e["outcome"] == outcome)
    };
    let done = on_import("op-admin", "ok").expect("the import is audited");
    assert!(done["detail"].as_str().unwrap().contains("vulnerability feed import"), "{done}");
    assert!(done["detail"].as_str().unwrap().contains("and the KEV catalog"), "{done}");
    assert_eq!(on_import("op-viewer", "refused").expect("the refusal is audited")["status"], 403);

    node.stop().await;
}
