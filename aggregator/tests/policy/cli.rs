//! The policy CLI against a live node storing flows in the embedded store (decision 0030):
//! violations listed and triaged, drafts listed, shown and deleted, every export target and
//! the EDLs equal to what the API serves, membership refresh, a recommendation from the
//! embedded store, and replay refused with 501 saying ClickHouse is needed. Every command's
//! `--json` output parses.

use crate::raft_support::answer;
use crate::recommend::{json_out, StoreNode};
use crate::{traffic, PUMP_IP, T0_US};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wardline_aggregator::auth::Role;
use wardline_aggregator::sink::aggregates::{aggregate_rows, FlowStore};
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::{FlowQuery, FlowSink};
use wardline_aggregator::state::Command;

const EXPORTABLE: &str = r#"
[policy]
name = "ward-cli"
default = "deny"

[[group]]
name = "pumps"
members = ["00:09:fb:10:00:01"]

[[group]]
name = "servers"
members = ["00:15:5d:10:00:02"]

[[rule]]
name = "pumps to servers"
from = ["pumps"]
to = ["servers"]
protocol = "tcp"
ports = [2575]
"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_cli_covers_triage_drafts_exports_edls_refresh_and_recommend() {
    let flows_dir = tempfile::tempdir().unwrap();
    let sink = EmbeddedSink::open(flows_dir.path()).unwrap();
    let store_sink = sink.clone();
    let node = StoreNode::start(move |_| FlowStore::Embedded(store_sink)).await;
    let op = |role: Role| node.operator(role);
    let url = |path: &str| node.url(path);

    let file = node.data.path().join("policy.toml");
    std::fs::write(&file, EXPORTABLE).unwrap();
    let file = file.display().to_string();
    let v = json_out(&node.cli(Role::Admin, &["policy", "apply", &file, "-m", "cli test", "--json"]).await);
    assert_eq!(v["version"], 1);
    // Traffic through Raft (monitor mode: telnet and the Internet flow are violations) and
    // into the flow store.
    let cmd = traffic(1, T0_US);
    let Command::ApplyBatches(batches) = &cmd else { unreachable!() };
    let b = &batches[0];
    sink.write_batch(b.summary.batch_id, &b.summary.sensor_id, &b.summary.site, &b.flows).await.unwrap();
    node.raft.propose(cmd.clone()).await.unwrap();

    // Violations: listed, then triaged.
    let v = json_out(&node.cli(Role::Viewer, &["policy", "violations", "list", "--json"]).await);
    let alerts = v["alerts"].as_array().unwrap();
    let telnet = alerts.iter().find(|a| a["target"].as_str().unwrap().ends_with("tcp/23")).expect("telnet violation");
    let id = telnet["id"].as_u64().unwrap().to_string();
    let out = node.cli(Role::Analyst, &["policy", "violations", "triage", &id, "ignore"]).await;
    assert!(!out.status.success() && stderr(&out).contains("--reason"), "{}", stderr(&out));
    let out = node.cli(Role::Viewer, &["policy", "violations", "triage", &id, "investigate"]).await;
    assert!(!out.status.success() && stderr(&out).contains("needs role analyst"), "{}", stderr(&out));
    let v = json_out(
        &node
            .cli(Role::Analyst, &["policy", "violations", "triage", &id, "investigate", "--reason", "who?", "--json"])
            .await,
    );
    assert_eq!(v["alert"]["state"], "acknowledged", "{v}");
    let v = json_out(&node.cli(Role::Analyst, &["policy", "violations", "triage", &id, "add", "--json"]).await);
    assert_eq!(v["alert"]["state"], "resolved", "{v}");
    let draft = v["draft"]["id"].as_u64().unwrap().to_string();
    let v = json_out(&node.cli(Role::Viewer, &["policy", "violations", "list", "--state", "resolved", "--json"]).await);
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1, "{v}");
    let other = alerts.iter().find(|a| a["id"] != telnet["id"]).expect("the Internet violation");
    let other_id = other["id"].as_u64().unwrap().to_string();
    let v = json_out(
        &node
            .cli(
                Role::Analyst,
                &["policy", "violations", "triage", &other_id, "ignore", "--reason", "vendor cloud", "--json"],
            )
            .await,
    );
    assert_eq!(v["alert"]["state"], "suppressed", "{v}");

    // Drafts: list, show, delete.
    let v = json_out(&node.cli(Role::Viewer, &["policy", "drafts", "list", "--json"]).await);
    assert_eq!(v["count"], 1, "{v}");
    let v = json_out(&node.cli(Role::Viewer, &["policy", "drafts", "show", &draft, "--json"]).await);
    assert!(v["toml"].as_str().unwrap().contains("ports = [23]"), "{v}");
    let out = node.cli(Role::Viewer, &["policy", "drafts", "show", &draft]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("[[rule]]"));
    // Replay needs ClickHouse: 501 with what to configure, from the API and the CLI.
    let (status, v) = answer(op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&json!({"version": 1}))).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("clickhouse_url"), "{v}");
    let out = node.cli(Role::Analyst, &["policy", "replay", "--draft", &draft]).await;
    assert!(!out.status.success() && stderr(&out).contains("clickhouse_url"), "{}", stderr(&out));
    let out = node.cli(Role::Viewer, &["policy", "drafts", "delete", &draft]).await;
    assert!(!out.status.success() && stderr(&out).contains("needs role analyst"), "{}", stderr(&out));
    let v = json_out(&node.cli(Role::Analyst, &["policy", "drafts", "delete", &draft, "--json"]).await);
    assert_eq!(v["deleted"].to_string(), draft);
    let out = node.cli(Role::Analyst, &["policy", "drafts", "show", &draft]).await;
    assert!(!out.status.success() && stderr(&out).contains(&format!("no draft {draft}")), "{}", stderr(&out));

    // Every export target: the CLI prints what the API serves.
    for exporter in wardline_export::all_exporters() {
        let name = exporter.name();
        let resp = op(Role::Viewer).get(url(&format!("/api/v1/policy/export/{name}"))).send().await.unwrap();
        let (status, served) = (resp.status(), resp.text().await.unwrap());
        let out = node.cli(Role::Viewer, &["policy", "export", name, "--json"]).await;
        if status == StatusCode::OK {
            let v = json_out(&out);
            assert_eq!(v["text"].as_str(), Some(served.as_str()), "{name}");
            assert_eq!(v["target"], name);
        } else {
            let error: Value = serde_json::from_str(&served).unwrap();
            assert!(stderr(&out).contains(error["error"].as_str().unwrap()), "{name}: {}", stderr(&out));
        }
    }
    let nft_file = node.data.path().join("wardline.nft");
    let out = node.cli(Role::Viewer, &["policy", "export", "nftables", "--out", &nft_file.display().to_string()]).await;
    assert!(out.status.success() && out.stdout.is_empty(), "{}", stderr(&out));
    let served =
        op(Role::Viewer).get(url("/api/v1/policy/export/nftables")).send().await.unwrap().text().await.unwrap();
    assert_eq!(std::fs::read_to_string(&nft_file).unwrap(), served);
    let out = node.cli(Role::Viewer, &["policy", "export", "nosuch"]).await;
    assert!(
        !out.status.success() && stderr(&out).contains("nftables"),
        "the error lists the targets: {}",
        stderr(&out)
    );

    // EDLs: one group's list, and the URL of every group's.
    let v = json_out(&node.cli(Role::Viewer, &["policy", "edl", "pumps", "--json"]).await);
    assert_eq!(v["addresses"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["addresses"][0].as_str().unwrap().starts_with(PUMP_IP), "{v}");
    let v = json_out(&node.cli(Role::Viewer, &["policy", "edl", "--json"]).await);
    let edls = v["edls"].as_array().unwrap();
    assert_eq!(edls.len(), 2, "{v}");
    let pumps = edls.iter().find(|e| e["group"] == "pumps").unwrap();
    let resp = op(Role::Viewer).get(pumps["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), v_text(&node.cli(Role::Viewer, &["policy", "edl", "pumps"]).await));

    // Refresh: admins only.
    let out = node.cli(Role::Analyst, &["policy", "refresh"]).await;
    assert!(!out.status.success() && stderr(&out).contains("needs role admin"), "{}", stderr(&out));
    let v = json_out(&node.cli(Role::Admin, &["policy", "refresh", "--json"]).await);
    assert_eq!((v["version"].as_u64(), v["changed"].as_bool()), (Some(1), Some(false)), "{v}");

    // A recommendation from the embedded store: the conversations of its rows.
    let rows = sink.query_flows(&FlowQuery { limit: Some(10_000), ..Default::default() }).await.unwrap();
    let v = json_out(&node.cli(Role::Analyst, &["policy", "recommend", "--json"]).await);
    assert!(v["observed"]["store"].as_str().unwrap().contains("embedded"), "{v}");
    assert_eq!(v["observed"]["flows"].as_u64(), Some(rows.len() as u64), "{v}");
    assert_eq!(v["observed"]["conversations"].as_u64(), Some(aggregate_rows(rows.iter()).len() as u64), "{v}");
    assert!(v["text"].as_str().unwrap().contains("[policy]"), "{v}");
    let left: u64 = v["left_out"].as_array().unwrap().iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert!(left >= 2, "the telnet flows are left out: {v}");

    node.stop().await;
}

fn v_text(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}
