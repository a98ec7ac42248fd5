//! Two voting nodes, the real feeds imported through the leader's API: both nodes answer
//! the same device risk, roll-ups, feed listing and reports, byte for byte; a newer revision
//! replaces the older one; a damaged file is reported by name and field while the rest
//! import.

use crate::raft_support::{self, config, post_api, ServedNode, WAIT};
use crate::{feeds_dir, kev_file, pump_batch, telnet_flow, PUMP, PUMP_IP, SERVER, T0_US};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use ulid::Ulid;
use wardline_aggregator::cli::risk::import_requests;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::sink::FlowSink;

async fn get(node: &ServedNode, path: &str) -> (u16, Vec<u8>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("http://{}{path}", node.addr)).send().await.unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

async fn get_json(node: &ServedNode, path: &str) -> Value {
    let (status, body) = get(node, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|m| m["advisory_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_answer_the_same_risk_from_the_imported_real_feeds() {
    let icsma = feeds_dir().join("icsma");
    let files = std::fs::read_dir(&icsma)
        .unwrap_or_else(|e| panic!("the real feeds are needed at {} ($WARDLINE_VULNFEEDS): {e}", icsma.display()))
        .count();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let sink = Arc::new(EmbeddedSink::open(dirs[2].path()).unwrap());
    let n1 = ServedNode::start_with_api(1, dirs[0].path(), config(100), sink.clone()).await;
    let n2 = ServedNode::start_with_api(2, dirs[1].path(), config(100), sink.clone()).await;
    assert!(n1.node.initialize_single_if_new().await.unwrap());
    n1.node.wait_for_leader(WAIT).await.unwrap();
    n1.node.add_learner(2, n2.member(), true).await.unwrap();
    n1.node.change_membership(BTreeSet::from([1, 2]), false).await.unwrap();

    // Import every real advisory and the KEV catalog through the leader.
    let requests = import_requests(&icsma, Some(&kev_file())).unwrap();
    assert_eq!(requests.len(), 1, "the 2017–2022 ICSMA set fits one request");
    let (status, answer) = post_api(&n1, "/api/v1/vuln/import", &serde_json::to_value(&requests[0]).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], Value::Array(vec![]), "every real file parses: {answer}");
    assert_eq!(answer["imported"], files + 1, "{answer}");
    assert_eq!(answer["record"]["added"], files, "{answer}");
    assert_eq!(answer["record"]["kev_imported"], true);

    // The pump and its telnet flow.
    assert!(n1.node.propose(pump_batch()).await.unwrap().applied);
    sink.write_batch(Ulid::from_parts(1, 42), "ward-1", "ward", &[telnet_flow(T0_US)]).await.unwrap();
    // A policy whose groups hold the pump and the server (static members), for `by=group`.
    let policy = format!(
        "[policy]\nname = \"ward\"\ndefault = \"allow\"\n\n[[group]]\nname = \"pumps\"\nmembers = [\"{PUMP}\"]\n\n\
         [[group]]\nname = \"servers\"\nmembers = [\"{SERVER}\"]\n\n[[rule]]\nname = \"pumps to servers\"\n\
         from = [\"pumps\"]\nto = [\"servers\"]\nprotocol = \"tcp\"\nports = [2575]\naction = \"allow\"\n"
    );
    let (status, answer) =
        post_api(&n1, "/api/v1/policy/apply", &serde_json::json!({"text": policy, "message": "groups"})).await;
    assert_eq!(status, 201, "{answer}");
    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();

    let risk_path = format!("/api/v1/devices/{PUMP}/risk");
    for path in [
        risk_path.as_str(),
        "/api/v1/vuln/feeds",
        "/api/v1/risk?by=class&top=5",
        "/api/v1/risk?by=site",
        "/api/v1/risk?by=group",
        "/api/v1/reports/risk.csv",
        "/api/v1/reports/inventory.csv",
        "/api/v1/reports/risk.html",
        "/api/v1/reports/vulnerable.csv",
        "/api/v1/reports/alerts.csv",
    ] {
        let (a, b) = (get(&n1, path).await, get(&n2, path).await);
        assert_eq!(a.0, 200, "{path}: {}", String::from_utf8_lossy(&a.1));
        assert_eq!(a, b, "{path} answers the same bytes on both nodes");
    }

    let risk = get_json(&n2, &risk_path).await;
    eprintln!("{}", risk["explain"].as_str().unwrap_or_default());
    assert_eq!(
        ids(&risk["vulnerabilities"]),
        BTreeSet::from(["ICSMA-17-017-02".to_string(), "ICSMA-20-170-06".into(), "ICSMA-20-317-01".into()]),
        "{risk:#}"
    );
    for m in risk["vulnerabilities"].as_array().unwrap() {
        assert_eq!(m["confidence"], "version_unknown", "no firmware in the evidence: {m}");
        assert!(m["cvss_vector"].as_str().unwrap().starts_with("CVSS:"), "{m}");
        assert!(m["cvss_score"].as_f64().unwrap() > 0.0, "{m}");
    }
    let factors: BTreeSet<&str> =
        risk["factors"].as_array().unwrap().iter().map(|f| f["factor"].as_str().unwrap()).collect();
    assert!(factors.contains("vulnerability"), "{factors:?}");
    let vuln = risk["factors"].as_array().unwrap().iter().find(|f| f["factor"] == "vulnerability").unwrap();
    assert!(vuln["points"].as_f64().unwrap() > 0.0 && !vuln["evidence"].as_array().unwrap().is_empty(), "{vuln}");
    assert_eq!(risk["flows"]["included"], true, "{}", risk["flows"]);
    assert_eq!(risk["flows"]["rows"], 1);
    assert_eq!(risk["as_of"], "2026-01-01", "the day of the last packet, not the wall clock");
    assert!(risk["score"].as_f64().unwrap() > 0.0 && risk["explain"].as_str().unwrap().contains("vulnerability"));

    let feeds = get_json(&n1, "/api/v1/vuln/feeds").await;
    assert_eq!(feeds["advisory_count"], files);
    assert!(feeds["kev"]["entries"].as_u64().unwrap() > 1000, "{}", feeds["kev"]);
    let rollup = get_json(&n1, "/api/v1/risk?by=class&top=5").await;
    assert_eq!(rollup["top"][0]["id"], PUMP.to_string(), "the pump is the riskiest device: {rollup:#}");
    assert!(!rollup["top"][0]["reasons"].as_array().unwrap().is_empty());
    // By policy group: each group holds its member, with the member's score as its max.
    let by_group = get_json(&n1, "/api/v1/risk?by=group&top=5").await;
    let groups = by_group["groups"].as_array().unwrap();
    let keys: Vec<&str> = groups.iter().map(|g| g["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["pumps", "servers"], "{by_group:#}");
    assert_eq!((groups[0]["devices"].as_u64(), groups[0]["max_device"].as_str()), (Some(1), Some(&*PUMP.to_string())));
    assert_eq!(groups[0]["max"], rollup["top"][0]["score"], "{by_group:#}");
    assert_eq!(groups[1]["max_device"], SERVER.to_string());
    assert_eq!(by_group["top"][0]["groups"], serde_json::json!(["pumps"]));
    assert_eq!(get(&n1, "/api/v1/risk?by=vlan").await.0, 400);
    let risk_csv = String::from_utf8(get(&n1, "/api/v1/reports/risk.csv").await.1).unwrap();
    assert!(risk_csv.starts_with("rank,id,site,class,groups,score,reasons,vulnerabilities\r\n"), "{risk_csv}");
    assert!(risk_csv.lines().any(|l| l.starts_with(&format!("1,{PUMP},ward,")) && l.contains(",pumps,")), "{risk_csv}");
    let risk_html = String::from_utf8(get(&n1, "/api/v1/reports/risk.html").await.1).unwrap();
    assert!(risk_html.contains("group pumps: 1 devices"), "{risk_html}");

    // `risky_peer` reads a peer's base score (the roll-up's: evidence and vulnerabilities,
    // no flows, so no feedback between peers; decision 0033). The pump's is under
    // `peer_score_threshold` (40) although its final score, with its telnet flow, is over:
    // its telnet peer, the server, gains nothing from it.
    let pump_base = rollup["top"][0]["score"].as_f64().unwrap();
    assert!(pump_base <= 40.0 && risk["score"].as_f64().unwrap() > 40.0, "base {pump_base}, final {}", risk["score"]);
    let server_path = format!("/api/v1/devices/{SERVER}/risk");
    let server = get_json(&n1, &server_path).await;
    assert!(server["factors"].as_array().unwrap().iter().all(|f| f["factor"] != "risky_peer"), "{server:#}");
    // Then the pump turns out to accept Telnet logins (evidence, so its base score rises
    // over the threshold): the server's risk gains from its riskier peer, alike on both
    // nodes, and the pump gains nothing back from the server.
    let telnet_server = raft_support::device_on_vlan_40(
        PUMP,
        PUMP_IP,
        T0_US + 1,
        wardline_common::Proto::Telnet,
        &[(wardline_common::Field::ListeningPort, "tcp/23"), (wardline_common::Field::CleartextLogin, "telnet")],
    );
    let mut summary =
        wardline_aggregator::state::BatchSummary::empty(Ulid::from_parts(2, 42), "ward-1".into(), "ward".into(), 2);
    summary.devices = vec![telnet_server];
    let batch = wardline_aggregator::state::IngestBatch { summary, flows: vec![] };
    let cmd = wardline_aggregator::state::Command::ApplyBatches(vec![batch]);
    assert!(n1.node.propose(cmd).await.unwrap().applied);
    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    let rollup = get_json(&n1, "/api/v1/risk?by=class&top=5").await;
    let pump_base = rollup["top"][0]["score"].as_f64().unwrap();
    assert!(pump_base > 40.0, "the pump's base score is now over the threshold: {rollup:#}");
    let (a, b) = (get(&n1, &server_path).await, get(&n2, &server_path).await);
    assert_eq!(a, b, "{server_path} answers the same bytes on both nodes");
    let server_after = get_json(&n1, &server_path).await;
    let factors = server_after["factors"].as_array().unwrap();
    let peer = factors.iter().find(|f| f["factor"] == "risky_peer").unwrap_or_else(|| panic!("{server_after:#}"));
    assert!(peer["points"].as_f64().unwrap() > 0.0, "{peer}");
    assert!(peer["evidence"].to_string().contains(PUMP_IP), "{peer}");
    assert!(server_after["score"].as_f64() > server["score"].as_f64(), "{server_after:#}");
    let pump = get_json(&n1, &risk_path).await;
    assert!(pump["factors"].as_array().unwrap().iter().all(|f| f["factor"] != "risky_peer"), "{pump:#}");

    // Reports: a header row, then the expected rows.
    let csv = String::from_utf8(get(&n1, "/api/v1/reports/vulnerable.csv").await.1).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,site,class,product,finding,advisory,cve,cvss,kev,confidence,remediation"));
    let pump_rows: Vec<&str> = csv.lines().filter(|l| l.starts_with(&PUMP.to_string())).collect();
    assert!(pump_rows.iter().any(|l| l.contains(",ICSMA-20-317-01,")), "{csv}");
    assert!(pump_rows.iter().all(|l| l.contains(",vulnerability,")), "{csv}");
    let inventory = String::from_utf8(get(&n1, "/api/v1/reports/inventory.csv").await.1).unwrap();
    assert!(inventory.starts_with("class,site,id,mac,ips,category,criticality,vendor,model,os\r\n"));
    assert_eq!(inventory.lines().count(), 3, "header, pump, server: {inventory}");
    assert!(inventory.lines().any(|l| l.contains(&PUMP.to_string()) && l.contains(",ward,")), "{inventory}");
    let html = String::from_utf8(get(&n1, "/api/v1/reports/risk.html").await.1).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains(&format!("<td>{PUMP}</td>")), "{html}");
    assert_eq!(get(&n1, "/api/v1/reports/secrets.csv").await.0, 400);
    // PDF: the HTML report printed by Debian's headless chromium (needed on this machine:
    // apt-get install chromium). The page title travels as the PDF's /Title; the body text
    // is in compressed, font-encoded streams.
    let (status, pdf) = get(&n1, "/api/v1/reports/risk.pdf").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&pdf));
    assert!(pdf.starts_with(b"%PDF-"), "{:?}", String::from_utf8_lossy(&pdf[..pdf.len().min(32)]));
    let pdf_text = String::from_utf8_lossy(&pdf);
    assert!(pdf_text.contains("/Title (Wardline: Top risks)"), "no title in the PDF");
    assert_eq!(get(&n1, "/api/v1/reports/secrets.pdf").await.0, 400);

    // A newer revision of one advisory replaces the held one; a damaged copy of another is
    // refused by name and field while the rest import.
    let copy = tempfile::tempdir().unwrap();
    let mut newer: Value = serde_json::from_slice(&std::fs::read(icsma.join("icsma-20-317-01.json")).unwrap()).unwrap();
    newer["document"]["tracking"]["version"] = "99".into();
    newer["document"]["tracking"]["current_release_date"] = "2030-01-01T00:00:00Z".into();
    std::fs::write(copy.path().join("icsma-20-317-01-r99.json"), newer.to_string()).unwrap();
    let mut broken: Value =
        serde_json::from_slice(&std::fs::read(icsma.join("icsma-17-017-02.json")).unwrap()).unwrap();
    let (vi, _) = broken["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, v)| v["scores"][0]["cvss_v3"].is_object())
        .expect("a scored vulnerability");
    broken["vulnerabilities"][vi]["scores"][0]["cvss_v3"]["baseScore"] = "high".into();
    std::fs::write(copy.path().join("icsma-17-017-02.json"), broken.to_string()).unwrap();
    std::fs::copy(icsma.join("icsma-18-156-01.json"), copy.path().join("icsma-18-156-01.json")).unwrap();

    let requests = import_requests(copy.path(), None).unwrap();
    let (status, answer) = post_api(&n1, "/api/v1/vuln/import", &serde_json::to_value(&requests[0]).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{answer}");
    assert_eq!(errors[0]["file"], "icsma-17-017-02.json");
    assert_eq!(errors[0]["pointer"], format!("/vulnerabilities/{vi}/scores/0/cvss_v3/baseScore"));
    assert!(errors[0]["message"].as_str().unwrap().contains("expected a number"), "{answer}");
    assert_eq!((answer["imported"].as_u64(), answer["record"]["replaced"].as_u64()), (Some(2), Some(1)), "{answer}");
    assert_eq!(answer["record"]["unchanged"], 1, "the same revision of ICSMA-18-156-01 changes nothing");

    let index = n1.node.applied_index().await.unwrap();
    n2.node.wait_for_applied(index, WAIT).await.unwrap();
    let (a, b) = (get(&n1, "/api/v1/vuln/feeds").await, get(&n2, "/api/v1/vuln/feeds").await);
    assert_eq!(a, b);
    let feeds: Value = serde_json::from_slice(&a.1).unwrap();
    let held = feeds["advisories"].as_array().unwrap().iter().find(|a| a["id"] == "ICSMA-20-317-01").unwrap();
    assert_eq!((held["revision"].as_str(), held["source"].as_str()), (Some("99"), Some("icsma-20-317-01-r99.json")));
    let damaged = feeds["advisories"].as_array().unwrap().iter().find(|a| a["id"] == "ICSMA-17-017-02").unwrap();
    assert_eq!(damaged["source"], "icsma-17-017-02.json", "the earlier good revision stays");
    assert_eq!(feeds["imports"][0]["errors"][0]["file"], "icsma-17-017-02.json", "the import record keeps the error");
    let (a, b) = (get(&n1, &risk_path).await, get(&n2, &risk_path).await);
    assert_eq!(a, b, "risk after the re-import alike");
    n2.stop().await;
    n1.stop().await;
}
