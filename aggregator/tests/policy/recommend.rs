//! Recommendation and replay through the API and the CLI over a real ClickHouse 18.16
//! server (decision 0030). A simulated hospital (`wardline-sim`) goes through the real sensor
//! path; its batches are applied through Raft (the inventory) and written to ClickHouse
//! (the flow history), plus a few risky flows. Then:
//!
//! - the conversations the `GROUP BY` pushed down to ClickHouse computes equal the same
//!   reduction done in memory over the written rows;
//! - `POST /api/v1/policy/recommend` returns a policy that validates and applies, whose
//!   rules allow every required device-to-device flow of the capture (checked flow by flow
//!   with the evaluator), and whose justifications and left-out flows account for exactly
//!   the TCP/UDP flows stored;
//! - `POST /api/v1/policy/replay` answers what `sink::replay::blocked_by_workflow` answers
//!   for the same candidate, and a comparison counts exactly the flows on which two
//!   policies' verdicts differ, each way (checked with `sink::replay::verdicts`);
//! - bad input gets a clear 4xx, viewers get 403, and the CLI's `--json` output parses.

use crate::raft_support::{answer, config, ServedNode, WAIT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use ulid::Ulid;
use wardline_aggregator::auth::Role;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::policy::resolve;
use wardline_aggregator::query::classify::classify_record;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::raft::RaftNode;
use wardline_aggregator::sink::aggregates::{aggregate_rows, conversations, FlowStore};
use wardline_aggregator::sink::clickhouse::ClickHouseSink;
use wardline_aggregator::sink::replay::{blocked_by_workflow, verdicts, ReplayContext};
use wardline_aggregator::sink::{FlowRow, FlowSink};
use wardline_aggregator::state::{BatchSummary, Command, IngestBatch};
use wardline_aggregator::{api, pki};
use wardline_chaos_tests::clickhouse::ClickHouseServer;
use wardline_common::{Batch, FlowRecord, MacAddr};
use wardline_intel::policy::{parse_policy, Action, CompiledPolicy, DecidedBy, Flow, FlowEnd};
use wardline_intel::{flow_context, FlowSpec, FlowTag, KnowledgeBase};
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scenario};

/// A one-node cluster behind the production HTTPS API with operator certificates for every
/// role, reading flows from `store` (as `wardline-aggregator run` does).
pub struct StoreNode {
    pub raft: Arc<RaftNode>,
    pub base: String,
    pub data: tempfile::TempDir,
    fleet: tempfile::TempDir,
    served: ServedNode,
    server: tokio::task::JoinHandle<()>,
}

impl StoreNode {
    pub async fn start(store: impl FnOnce(&Path) -> FlowStore) -> StoreNode {
        let fleet = tempfile::tempdir().unwrap();
        let p = fleet.path();
        pki::init_ca(&p.join("ca"), "recommend test fleet").unwrap();
        pki::issue_node(&p.join("ca"), 1, &[], &p.join("node1")).unwrap();
        for role in Role::ALL {
            pki::issue_operator(&p.join("ca"), &format!("op-{role}"), role, &p.join(format!("op-{role}"))).unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let served = ServedNode::start(1, &data.path().join("raft"), config(1000)).await;
        let raft = served.node.clone();
        raft.initialize_single_if_new().await.unwrap();
        raft.wait_for_leader(WAIT).await.unwrap();
        let store = store(data.path());
        let kb = Arc::new(KnowledgeBase::builtin().unwrap());
        let query =
            QueryService::new(raft.clone(), store.sink(), kb, Arc::new(IngestStats::default())).with_flow_store(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let tls = TlsPaths::in_dir(&p.join("node1"), "node");
        let router = api::router(Arc::new(query));
        let server_raft = raft.clone();
        let server = tokio::spawn(async move {
            wardline_aggregator::auth::server::serve(listener, router, &tls, server_raft, std::future::pending())
                .await
                .unwrap()
        });
        StoreNode { raft, base, data, fleet, served, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn operator(&self, role: Role) -> reqwest::Client {
        use wardline_aggregator::auth::client::{api_client, ApiAuth};
        let dir = self.fleet.path().join(format!("op-{role}"));
        api_client(&ApiAuth { token: None, cert_dir: Some(dir), ca: None }).unwrap()
    }

    /// Run `wardline-aggregator <args> --api <node>` as `role`.
    pub async fn cli(&self, role: Role, args: &[&str]) -> std::process::Output {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_wardline-aggregator"));
        c.args(args).args(["--api", self.base.as_str()]);
        c.env("WARDLINE_CERT_DIR", self.fleet.path().join(format!("op-{role}")));
        c.env_remove("WARDLINE_TOKEN").env("RUST_LOG", "warn");
        c.output().await.unwrap()
    }

    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.served.stop().await;
    }
}

/// The command's standard output as JSON, failing with its standard error.
pub fn json_out(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "the command failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// A simulated hospital (seed 7) through the real sensor path: the truth and every spooled
/// batch, oldest first per capture.
fn simulated_hospital(dir: &Path) -> (GroundTruth, Vec<Batch>) {
    let mut opts = GenerateOptions::new(Scenario::Hospital);
    opts.seed = 7;
    let truth = generate(&opts, &dir.join("hospital.pcap")).expect("generate the hospital");
    let mut batches = Vec::new();
    for capture in &truth.captures {
        batches.extend(crate::raft_support::truth_sensor_batches(dir, &truth, capture));
    }
    assert!(!batches.is_empty(), "the sensor spooled nothing");
    (truth, batches)
}

/// Flows no knowledge base allows: telnet between two ward devices and a device's
/// connection to an Internet address, a few times each.
fn risky_flows(a: (MacAddr, IpAddr), b: (MacAddr, IpAddr), router: MacAddr, ts: u64) -> Vec<FlowRecord> {
    let flow = |to: (MacAddr, IpAddr), port: u16, i: u64| {
        let mut f = crate::flow((a.0, "10.0.0.1"), (to.0, "10.0.0.2"), port, ts + i * 1_000_000);
        f.a_ip = a.1;
        f.b_ip = to.1;
        f
    };
    let internet: IpAddr = "203.0.113.80".parse().unwrap();
    (0..3).map(|i| flow(b, 23, i)).chain((0..2).map(|i| flow((router, internet), 6667, 10 + i))).collect()
}

/// Every stored flow's client and server (the side swap of `FlowSpec::from_record`).
fn sides(f: &FlowRecord) -> ((MacAddr, IpAddr), (MacAddr, IpAddr), u16) {
    if f.a_port < 1024 && f.b_port >= 1024 {
        ((f.b_mac, f.b_ip), (f.a_mac, f.a_ip), f.a_port)
    } else {
        ((f.a_mac, f.a_ip), (f.b_mac, f.b_ip), f.b_port)
    }
}

#[test]
fn recommend_and_replay_over_a_simulated_hospital_on_clickhouse() {
    // The server's handle is dropped outside the runtime (it blocks on shutdown).
    let ch = ClickHouseServer::start().expect("start ClickHouse");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(recommend_and_replay(&ch));
}

async fn recommend_and_replay(ch: &ClickHouseServer) {
    let sink = ClickHouseSink::connect(&ch.http_url, "wardline_recommend").await.expect("ClickHouse sink");
    let store_sink = sink.clone();
    let node = StoreNode::start(move |_| FlowStore::ClickHouse(Box::new(store_sink))).await;
    let op = |role: Role| node.operator(role);
    let url = |path: &str| node.url(path);

    // The hospital: inventory through Raft, flows into ClickHouse.
    let scratch = tempfile::tempdir().unwrap();
    let (truth, batches) = simulated_hospital(scratch.path());
    let mut written: Vec<FlowRow> = Vec::new();
    for b in &batches {
        let flows: Vec<FlowRecord> = b.flows().cloned().collect();
        let ingest = IngestBatch { summary: BatchSummary::from_batch(b), flows: flows.clone() };
        assert!(node.raft.propose(Command::ApplyBatches(vec![ingest])).await.unwrap().applied);
        sink.write_batch(b.id, &b.sensor_id, &b.site, &flows).await.unwrap();
        written.extend(
            flows.iter().enumerate().map(|(i, f)| FlowRow::from_record(b.id, i as u32, &b.sensor_id, &b.site, f)),
        );
    }
    let records = node.raft.read_state(resolve::records).await;
    let kb = KnowledgeBase::builtin().unwrap();
    let devices = resolve::policy_devices(&records, &kb, "2026-12-07");
    // Two devices whose flows no life-sustaining scope monitors.
    let with_ip: Vec<&wardline_intel::policy::PolicyDevice> = devices
        .iter()
        .filter(|d| !d.ips.is_empty() && d.criticality != wardline_intel::Criticality::LifeSustaining)
        .collect();
    assert!(with_ip.len() >= 4, "the hospital has devices with addresses: {}", devices.len());
    let (a, b) = (with_ip[0], with_ip[1]);
    let router = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
    let extra = risky_flows((a.mac, a.ips[0]), (b.mac, b.ips[0]), router, truth.last_packet_us);
    let extra_id = Ulid::from_parts(1, 99);
    sink.write_batch(extra_id, "ward-extra", "ward", &extra).await.unwrap();
    written.extend(
        extra.iter().enumerate().map(|(i, f)| FlowRow::from_record(extra_id, i as u32, "ward-extra", "ward", f)),
    );

    // The GROUP BY on ClickHouse equals the same reduction in memory.
    let store = FlowStore::ClickHouse(Box::new(sink.clone()));
    let pushed = conversations(&store, 0, u64::MAX, 200_000).await.unwrap();
    assert!(!pushed.truncated);
    assert_eq!(pushed.rows, aggregate_rows(written.iter()));
    assert!(
        pushed.rows.len() < written.len(),
        "conversations reduce the rows: {} of {}",
        pushed.rows.len(),
        written.len()
    );
    let window = conversations(&store, truth.last_packet_us, u64::MAX, 200_000).await.unwrap();
    let late: Vec<FlowRow> = written.iter().filter(|r| r.first_seen_us >= truth.last_packet_us).cloned().collect();
    assert_eq!(window.rows, aggregate_rows(late.iter()));

    // Recommend: viewers may not; an analyst gets a proposal that validates.
    let (status, v) = answer(op(Role::Viewer).post(url("/api/v1/policy/recommend")).json(&json!({}))).await;
    assert_eq!((status, v["required_role"].as_str()), (StatusCode::FORBIDDEN, Some("analyst")), "{v}");
    let (status, v) = answer(op(Role::Analyst).post(url("/api/v1/policy/recommend")).json(&json!({"bogus": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("bogus"), "{v}");
    let (status, rec) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/recommend")).json(&json!({"name": "ward-rec"}))).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert_eq!(rec["validation"]["valid"], true, "{}", rec["validation"]);
    assert_eq!(rec["observed"]["flows"].as_u64(), Some(written.len() as u64), "{}", rec["observed"]);
    let text = rec["text"].as_str().unwrap().to_string();
    let (_, validated) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/validate")).json(&json!({"text": text}))).await;
    assert_eq!(validated["valid"], true, "{validated}");

    // Justifications and left-out flows account for exactly the TCP/UDP flows stored, with
    // first/last seen inside the capture.
    let tcp_udp = written.iter().filter(|r| matches!(r.ip_proto, 6 | 17)).count() as u64;
    let rules = rec["rules"].as_array().unwrap();
    let mut justified = 0;
    let (first_s, last_s) = (truth.first_packet_us / 1_000_000, truth.last_packet_us / 1_000_000 + 60);
    for r in rules {
        for e in r["justification"]["observed"].as_array().unwrap() {
            let (count, first, last) =
                (e["count"].as_u64().unwrap(), e["first_seen"].as_u64().unwrap(), e["last_seen"].as_u64().unwrap());
            assert!(count > 0 && first_s <= first && first <= last && last <= last_s, "{r}");
            justified += count;
        }
        assert!(
            !r["justification"]["observed"].as_array().unwrap().is_empty()
                || !r["justification"]["kb_entries"].as_array().unwrap().is_empty(),
            "every rule is justified: {r}"
        );
    }
    let left: u64 = rec["left_out"].as_array().unwrap().iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(justified + left, tcp_udp, "rules' evidence {justified} + left out {left} = TCP/UDP flows");
    assert!(justified > 0, "{rec}");
    let telnet = rec["left_out"].as_array().unwrap().iter().find(|l| l["port"] == 23).expect("telnet left out");
    assert_eq!(telnet["count"], 3, "{telnet}");
    assert!(telnet["reason"].as_str().unwrap().starts_with("risky"), "{telnet}");

    // Every required device-to-device flow of the capture is allowed by a rule.
    let policy = parse_policy("recommended", &text).unwrap();
    let compiled = CompiledPolicy::compile(&policy, &devices);
    let by_ip: HashMap<IpAddr, MacAddr> =
        devices.iter().rev().flat_map(|d| d.ips.iter().map(move |ip| (*ip, d.mac))).collect();
    let by_mac: BTreeMap<MacAddr, _> = records.iter().map(|r| (r.mac, r.clone())).collect();
    let mut required = 0;
    for row in &written {
        let f = row.to_record().unwrap();
        let ((_, client_ip), (_, server_ip), port) = sides(&f);
        let (Some(client), Some(server)) = (by_ip.get(&client_ip), by_ip.get(&server_ip)) else { continue };
        let Some(transport) = wardline_intel::Transport::from_ip_proto(f.ip_proto) else { continue };
        let spec = FlowSpec {
            transport,
            port,
            direction: wardline_intel::Direction::Outbound,
            peer_external: wardline_intel::flow_context::is_external(&server_ip),
        };
        let (cc, sc) = (classify_record(&kb, &by_mac[client]), classify_record(&kb, &by_mac[server]));
        if flow_context(&kb, &cc, Some(&sc), &spec).tag != FlowTag::Required {
            continue;
        }
        required += 1;
        let verdict = compiled.evaluate(&Flow {
            src: FlowEnd { device: compiled.device(client), ip: Some(client_ip) },
            dst: FlowEnd { device: compiled.device(server), ip: Some(server_ip) },
            ip_proto: f.ip_proto,
            dst_port: port,
            app: None,
            dst_domain: None,
        });
        assert!(
            verdict.action == Action::Allow && matches!(verdict.decided_by, DecidedBy::Rule(_)),
            "required flow {client_ip} -> {server_ip} {}/{port} is not allowed by a rule: {verdict:?}",
            f.ip_proto
        );
    }
    assert!(required > 0, "the hospital has required flows");
    assert!(rec["coverage"]["required"]["count"].as_u64().unwrap() >= required, "{}", rec["coverage"]);

    // Stored as a draft, applied as version 1.
    let (status, drafted) = answer(
        op(Role::Analyst)
            .post(url("/api/v1/policy/recommend"))
            .json(&json!({"name": "ward-rec", "save_draft": true, "note": "first proposal"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{drafted}");
    let draft_id = drafted["draft"].as_u64().expect("a draft id");
    let (_, draft) = answer(op(Role::Viewer).get(url(&format!("/api/v1/policy/drafts/{draft_id}")))).await;
    assert_eq!((draft["toml"].as_str(), draft["note"].as_str()), (Some(text.as_str()), Some("first proposal")));
    let (status, v) = answer(
        op(Role::Admin).post(url("/api/v1/policy/apply")).json(&json!({"text": text, "message": "recommended"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");

    // Replay of version 1 equals the sink's replay of the same candidate.
    let ctx = ReplayContext::from_devices(&policy, &devices);
    let direct = blocked_by_workflow(&sink, &policy, &ctx, 0, u64::MAX, 101).await.unwrap();
    let (status, replay) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&json!({"version": 1}))).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    let listed = replay["blocked"]["workflows"].as_array().unwrap();
    assert_eq!(listed.len(), direct.len(), "{replay}");
    for (got, want) in listed.iter().zip(&direct) {
        assert_eq!(
            (got["src_class"].as_str(), got["dst_class"].as_str(), got["app"].as_str(), got["flows"].as_u64()),
            (Some(want.src_class.as_str()), Some(want.dst_class.as_str()), Some(want.app.as_str()), Some(want.flows))
        );
        assert_eq!(got["examples"], json!(want.examples));
        assert!(got["workflow"].as_str().unwrap().contains(" → "), "{got}");
    }
    let blocked: u64 = direct.iter().map(|w| w.flows).sum();
    assert_eq!(replay["blocked"]["flows"].as_u64(), Some(blocked));
    assert!(blocked >= 5, "the risky flows are blocked: {replay}");
    // The same through the draft.
    let (_, by_draft) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&json!({"draft": draft_id}))).await;
    assert_eq!(by_draft["blocked"], replay["blocked"]);
    // A triage-style fragment allowing the telnet flows is replayed before version 1's rules:
    // exactly those three flows are no longer blocked.
    let fragment = format!(
        "[[group]]\nname = \"draft-telnet-source\"\nmembers = [\"{}\"]\n\n[[rule]]\nname = \"allow telnet\"\n\
         from = [\"draft-telnet-source\"]\nto = [\"{}\"]\nprotocol = \"tcp\"\nports = [23]\naction = \"allow\"\n",
        a.mac, b.ips[0]
    );
    let d = wardline_aggregator::state::policy::DraftRule {
        id: 0,
        alert: None,
        author: "op-analyst".into(),
        at_ms: 1,
        toml: fragment,
        note: String::new(),
    };
    assert!(node.raft.propose(Command::PolicyAddDraft(d)).await.unwrap().applied);
    let (status, by_fragment) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&json!({"draft": draft_id + 1}))).await;
    assert_eq!(status, StatusCode::OK, "{by_fragment}");
    assert_eq!(by_fragment["candidate"], format!("draft {}", draft_id + 1));
    assert_eq!(by_fragment["blocked"]["flows"].as_u64(), Some(blocked - 3), "{by_fragment}");

    // Compare with a candidate that allows by default and denies the busiest observed
    // service: each side counts exactly the flows only it blocks.
    let busiest = rules
        .iter()
        .flat_map(|r| r["justification"]["observed"].as_array().unwrap().iter().map(move |e| (r, e)))
        .max_by_key(|(_, e)| e["count"].as_u64().unwrap())
        .unwrap();
    let candidate_text = format!(
        "[[rule]]\nname = \"deny busiest\"\nfrom = [\"any\"]\nto = [\"any\"]\nprotocol = {}\nports = [{}]\naction = \"deny\"\n\n{}",
        busiest.0["protocol"],
        busiest.1["port"],
        text.replace("default = \"deny\"", "default = \"allow\"").replace(
            "life_sustaining_override = false",
            "life_sustaining_override = true\noverride_reason = \"replay comparison test\""
        )
    );
    let candidate = parse_policy("candidate", &candidate_text).unwrap();
    let (status, cmp) = answer(
        op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&json!({"text": candidate_text, "against": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cmp}");
    let va: BTreeMap<(String, u32), String> =
        verdicts(&sink, &policy, &ctx).await.unwrap().into_iter().map(|v| ((v.batch_id, v.idx), v.action)).collect();
    let cctx = ReplayContext::from_devices(&candidate, &devices);
    let vb = verdicts(&sink, &candidate, &cctx).await.unwrap();
    let only_candidate = vb.iter().filter(|v| v.action == "deny" && va[&(v.batch_id.clone(), v.idx)] != "deny").count();
    let only_v1 = vb.iter().filter(|v| v.action != "deny" && va[&(v.batch_id.clone(), v.idx)] == "deny").count();
    let c = &cmp["comparison"];
    assert_eq!(
        (c["only_candidate"].as_u64(), c["only_against"].as_u64()),
        (Some(only_candidate as u64), Some(only_v1 as u64)),
        "{c}"
    );
    assert!(only_candidate > 0 && only_v1 > 0, "both sides block something the other does not: {c}");
    let per_workflow: (u64, u64) =
        c["workflows"].as_array().unwrap().iter().fold((0, 0), |t, w| {
            (t.0 + w["only_candidate"].as_u64().unwrap(), t.1 + w["only_against"].as_u64().unwrap())
        });
    assert_eq!(per_workflow, (only_candidate as u64, only_v1 as u64));
    // Swapping the roles swaps the counts.
    let (status, v) = answer(
        op(Role::Admin)
            .post(url("/api/v1/policy/apply"))
            .json(&json!({"text": candidate_text, "message": "candidate"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (_, swapped) =
        answer(op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&json!({"version": 1, "against": 2}))).await;
    let s = &swapped["comparison"];
    assert_eq!(
        (s["only_candidate"].as_u64(), s["only_against"].as_u64()),
        (Some(only_v1 as u64), Some(only_candidate as u64)),
        "{s}"
    );

    // Bad input: a clear 4xx each.
    let bad = |body: Value| answer(op(Role::Analyst).post(url("/api/v1/policy/replay")).json(&body));
    let (status, v) = bad(json!({"version": 99})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no policy version 99"), "{v}");
    let (status, v) = bad(json!({"version": 1, "against": 42})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = bad(json!({"draft": 777})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = bad(json!({"text": "[policy]\nname = \"x\"\ndefault = \"deny\"\n[[rule]]\nname = \"r\"\nfrom = [\"nobody\"]\nto = [\"any\"]\n"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("line 6") && v["error"].as_str().unwrap().contains("nobody"), "{v}");
    let (status, v) = bad(json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = bad(json!({"version": 1, "draft": draft_id})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = bad(json!({"version": 1, "limit": 0})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = bad(json!({"text": "x".repeat(3 << 20)})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (status, v) = answer(op(Role::Viewer).post(url("/api/v1/policy/replay")).json(&json!({"version": 1}))).await;
    assert_eq!((status, v["required_role"].as_str()), (StatusCode::FORBIDDEN, Some("analyst")), "{v}");

    // The CLI: recommend to a file, replay with a comparison, each --json parsing.
    let out_file = node.data.path().join("recommended.toml");
    let out_path = out_file.display().to_string();
    let v = json_out(
        &node.cli(Role::Analyst, &["policy", "recommend", "--name", "ward-rec", "--out", &out_path, "--json"]).await,
    );
    assert_eq!(v["text"].as_str(), Some(text.as_str()));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), text);
    let plain = node.cli(Role::Analyst, &["policy", "recommend", "--name", "ward-rec"]).await;
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(plain.contains("# left out:") && plain.contains("flow(s) in"), "{plain}");
    assert!(parse_policy("stdout", &plain).is_ok(), "the printed summary and policy parse as one file");
    let v =
        json_out(&node.cli(Role::Analyst, &["policy", "replay", "--version", "1", "--against", "2", "--json"]).await);
    assert_eq!(v["comparison"], swapped["comparison"]);
    let v = json_out(
        &node.cli(Role::Analyst, &["policy", "replay", "--file", &out_path, "--since", "3650d", "--json"]).await,
    );
    assert_eq!(v["blocked"], replay["blocked"]);
    let out = node.cli(Role::Analyst, &["policy", "replay", "--version", "99"]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no policy version 99"));

    eprintln!(
        "{} flows in {} conversations: {} rules, {} left out, {required} required device flows allowed; \
         replay blocks {blocked}; comparison {only_candidate} / {only_v1}",
        written.len(),
        pushed.rows.len(),
        rules.len(),
        rec["left_out"].as_array().unwrap().len()
    );
    node.stop().await;
}
