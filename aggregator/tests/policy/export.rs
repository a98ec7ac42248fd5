//! Served exports: the nftables export of the active policy, fetched over the API, equals
//! the export crate's rendering of the same policy written out by hand; the Palo Alto EDL
//! of a group is served at a stable URL; a policy the export model cannot express is
//! refused with what to change, and an earlier version can still be exported.

use crate::raft_support::{config, ServedNode, WAIT};
use crate::{traffic, POLICY_V1, PUMP, PUMP_IP, SERVER, SERVER_IP, T0_US};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use wardline_aggregator::auth::client::{api_client, ApiAuth};
use wardline_aggregator::auth::Role;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::{api, pki};
use wardline_export::{Action, Destination, Exporter, Group, Member, PortRange, Protocol, ResolvedPolicy, Rule};
use wardline_intel::KnowledgeBase;

const EXPORTABLE: &str = r#"
[policy]
name = "ward-export"
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

[[rule]]
name = "pumps to vendor"
from = ["pumps"]
to = ["10.9.0.0/24"]
protocol = "tcp"
ports = [443, "8000-8010"]
"#;

/// What the served export must be built from, written out by hand.
fn expected(version: u64) -> ResolvedPolicy {
    let member =
        |mac, ip: &str| Member { mac, addresses: vec![ip.parse().unwrap()], vlan: Some(40), site: Some("ward".into()) };
    ResolvedPolicy {
        name: "ward-export".into(),
        version,
        default_action: Action::Deny,
        groups: vec![
            Group { name: "pumps".into(), description: None, members: vec![member(PUMP, PUMP_IP)] },
            Group { name: "servers".into(), description: None, members: vec![member(SERVER, SERVER_IP)] },
        ],
        segments: vec![],
        rules: vec![
            Rule {
                id: "pumps to servers".into(),
                source: "pumps".into(),
                destination: Destination::Group("servers".into()),
                protocol: Protocol::Tcp,
                ports: vec![PortRange::single(2575)],
                application: None,
            },
            Rule {
                id: "pumps to vendor".into(),
                source: "pumps".into(),
                destination: Destination::Cidr("10.9.0.0/24".parse().unwrap()),
                protocol: Protocol::Tcp,
                ports: vec![PortRange::single(443), PortRange { start: 8000, end: 8010 }],
                application: None,
            },
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_nftables_export_and_edl_equal_the_export_crates_rendering() {
    let fleet = tempfile::tempdir().unwrap();
    let p = fleet.path();
    pki::init_ca(&p.join("ca"), "export test fleet").unwrap();
    pki::issue_node(&p.join("ca"), 1, &[], &p.join("node1")).unwrap();
    for role in [Role::Viewer, Role::Admin] {
        pki::issue_operator(&p.join("ca"), &format!("op-{role}"), role, &p.join(format!("op-{role}"))).unwrap();
    }
    let op = |role: Role| {
        api_client(&ApiAuth { token: None, cert_dir: Some(p.join(format!("op-{role}"))), ca: None }).unwrap()
    };
    let data = tempfile::tempdir().unwrap();
    let served = ServedNode::start(1, &data.path().join("raft"), config(1000)).await;
    let raft = served.node.clone();
    raft.initialize_single_if_new().await.unwrap();
    raft.wait_for_leader(WAIT).await.unwrap();
    let sink = Arc::new(EmbeddedSink::open(&data.path().join("flows")).unwrap());
    let kb = Arc::new(KnowledgeBase::builtin().unwrap());
    let query = QueryService::new(raft.clone(), sink, kb, Arc::new(IngestStats::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let url = |path: &str| format!("{base}{path}");
    let tls = TlsPaths::in_dir(&p.join("node1"), "node");
    let router = api::router(Arc::new(query));
    let server_raft = raft.clone();
    let server = tokio::spawn(async move {
        wardline_aggregator::auth::server::serve(listener, router, &tls, server_raft, std::future::pending())
            .await
            .unwrap()
    });
    let text = |req: reqwest::RequestBuilder| async move {
        let resp = req.send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    };

    raft.propose(traffic(1, T0_US)).await.unwrap();
    let apply = |t: &str| json!({"text": t, "message": "export test"});
    let (status, _) = text(op(Role::Admin).post(url("/api/v1/policy/apply")).json(&apply(EXPORTABLE))).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, served_nft) = text(op(Role::Viewer).get(url("/api/v1/policy/export/nftables"))).await;
    assert_eq!(status, StatusCode::OK, "{served_nft}");
    let nft = wardline_export::targets::nftables::Nftables;
    let rendered = String::from_utf8(nft.render(&expected(1)).unwrap()).unwrap();
    assert_eq!(served_nft, rendered);
    assert!(served_nft.contains(PUMP_IP) && served_nft.contains("2575"), "{served_nft}");

    let (status, edl) = text(op(Role::Viewer).get(url("/api/v1/policy/edl/pumps.txt"))).await;
    assert_eq!(status, StatusCode::OK, "{edl}");
    let files = wardline_export::targets::paloalto::PaloAlto.render_all(&expected(1)).unwrap();
    let want = files.iter().find(|f| f.path == "edl/wl-pumps.txt").unwrap();
    assert_eq!(edl.as_bytes(), want.bytes.as_slice());
    assert!(edl.starts_with(&format!("{PUMP_IP} ")), "{edl}");
    let (status, body) = text(op(Role::Viewer).get(url("/api/v1/policy/edl/nurses.txt"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = text(op(Role::Viewer).get(url("/api/v1/policy/export/nosuch"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("nftables"), "the answer lists the targets: {body}");

    // A default-allow policy with a deny rule cannot be an allow-list: refused, saying why;
    // version 1 still exports as before.
    let (status, _) = text(op(Role::Admin).post(url("/api/v1/policy/apply")).json(&apply(POLICY_V1))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = text(op(Role::Viewer).get(url("/api/v1/policy/export/nftables"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["error"].as_str().unwrap().contains(r#"default = "deny""#), "{body}");
    let (status, v1) = text(op(Role::Viewer).get(url("/api/v1/policy/export/nftables?version=1"))).await;
    assert_eq!((status, v1), (StatusCode::OK, rendered));

    server.abort();
    let _ = server.await;
    served.stop().await;
}
