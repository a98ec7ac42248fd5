//! The API's authentication, authorization and audit over real TLS on loopback: operator
//! certificates of each role, sensor/node certificates refused as operators, a foreign CA
//! refused at the handshake, bearer tokens (create, use, revoke, hash-only storage), and an
//! audit log that is identical on both nodes of a two-node Raft cluster.

#[path = "../raft_support/mod.rs"]
mod raft_support;

use raft_support::{answer, config, ServedNode, WAIT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wardline_aggregator::auth::client::{api_client, ApiAuth};
use wardline_aggregator::auth::{token, Role};
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::IngestStats;
use wardline_aggregator::query::QueryService;
use wardline_aggregator::raft::RaftNode;
use wardline_aggregator::sink::embedded::EmbeddedSink;
use wardline_aggregator::{api, pki};
use wardline_intel::KnowledgeBase;

/// A fleet CA with node, sensor and operator certificates, plus a second, foreign CA.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        pki::init_ca(&p.join("ca"), "test fleet").unwrap();
        for id in [1, 2] {
            pki::issue_node(&p.join("ca"), id, &[], &p.join(format!("node{id}"))).unwrap();
        }
        pki::issue_sensor(&p.join("ca"), "ward-a-1", "ward-a", &p.join("sensor")).unwrap();
        for role in Role::ALL {
            pki::issue_operator(&p.join("ca"), &format!("op-{role}"), role, &p.join(format!("op-{role}"))).unwrap();
        }
        pki::init_ca(&p.join("other-ca"), "someone else").unwrap();
        pki::issue_operator(&p.join("other-ca"), "mallory", Role::Admin, &p.join("mallory")).unwrap();
        Fleet { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca/ca.pem")
    }

    /// A client presenting the operator certificate of `role`.
    fn operator(&self, role: Role) -> reqwest::Client {
        api_client(&ApiAuth { token: None, cert_dir: Some(self.path(&format!("op-{role}"))), ca: None }).unwrap()
    }

    fn token(&self, token: &str) -> reqwest::Client {
        api_client(&ApiAuth { token: Some(token.into()), cert_dir: None, ca: Some(self.ca()) }).unwrap()
    }

    /// No credential at all, trusting the fleet CA.
    fn anonymous(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(self.ca()).unwrap()).unwrap())
            .build()
            .unwrap()
    }

    /// A client presenting any certificate/key pair from `dir` (sensor, node, foreign operator).
    fn with_cert(&self, dir: &str, stem: &str) -> reqwest::Client {
        let d = self.path(dir);
        let mut pem = std::fs::read(d.join(format!("{stem}.pem"))).unwrap();
        pem.extend(std::fs::read(d.join(format!("{stem}.key"))).unwrap());
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(self.ca()).unwrap()).unwrap())
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }
}

/// A Raft node (Raft RPC over mutual TLS as in the other tests) whose API is served
/// by the production HTTPS server with authentication.
struct SecureNode {
    served: ServedNode,
    api: String,
    server: tokio::task::JoinHandle<()>,
}

impl SecureNode {
    async fn start(fleet: &Fleet, id: u64, data: &Path) -> SecureNode {
        let served = ServedNode::start(id, &data.join("raft"), config(1000)).await;
        let raft: Arc<RaftNode> = served.node.clone();
        let sink = Arc::new(EmbeddedSink::open(&data.join("flows")).unwrap());
        let kb = Arc::new(KnowledgeBase::builtin().unwrap());
        let query = QueryService::new(raft.clone(), sink, kb, Arc::new(IngestStats::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let tls = TlsPaths::in_dir(&fleet.path(&format!("node{id}")), "node");
        let router = api::router(Arc::new(query));
        let server = tokio::spawn(async move {
            wardline_aggregator::auth::server::serve(listener, router, &tls, raft, std::future::pending())
                .await
                .unwrap()
        });
        SecureNode { served, api, server }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.served.stop().await;
    }
}

async fn single(fleet: &Fleet, data: &Path) -> SecureNode {
    let n = SecureNode::start(fleet, 1, data).await;
    n.served.node.initialize_single_if_new().await.unwrap();
    n.served.node.wait_for_leader(WAIT).await.unwrap();
    n
}

async fn create_token(n: &SecureNode, admin: &reqwest::Client, name: &str, role: &str) -> Value {
    let (status, body) = answer(admin.post(n.url("/api/v1/tokens")).json(&json!({"name": name, "role": role}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_roles_and_refusals() {
    let fleet = Fleet::new();
    let data = tempfile::tempdir().unwrap();
    let n = single(&fleet, data.path()).await;
    let inv = n.url("/api/v1/inventory");

    // Open: liveness.
    assert_eq!(answer(fleet.anonymous().get(n.url("/healthz"))).await.0, StatusCode::OK);

    // No credential: 401 naming what to send and the role needed.
    let (status, body) = answer(fleet.anonymous().get(&inv)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no credential"), "{body}");
    assert_eq!(body["required_role"], "viewer");

    // Bad tokens: well-formed but unknown, and malformed.
    let unknown = token::generate().unwrap().text;
    let (status, body) = answer(fleet.token(&unknown).get(&inv)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown or revoked"), "{body}");
    let (status, body) = answer(fleet.anonymous().get(&inv).header("Authorization", "Bearer hunter2")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("wlt_"), "{body}");

    // Operator certificates of each role.
    for role in Role::ALL {
        let c = fleet.operator(role);
        assert_eq!(answer(c.get(&inv)).await.0, StatusCode::OK, "{role} reads the inventory");
        let (status, body) = answer(c.get(n.url("/api/v1/audit"))).await;
        let expected = if role == Role::Admin { StatusCode::OK } else { StatusCode::FORBIDDEN };
        assert_eq!(status, expected, "{role} on the audit log: {body}");
        if role != Role::Admin {
            let msg = body["error"].as_str().unwrap();
            assert!(msg.contains("needs role admin") && msg.contains(&format!("has role {role}")), "{body}");
            assert_eq!(body["required_role"], "admin");
        }
    }
    // Unknown non-GET routes default to admin: an analyst is refused, an admin gets the 404.
    let (status, body) = answer(fleet.operator(Role::Analyst).post(n.url("/api/v1/cluster/join"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(answer(fleet.operator(Role::Admin).post(n.url("/api/v1/cluster/join"))).await.0, StatusCode::NOT_FOUND);

    // Valid fleet certificates that are not operators: 403 saying what they are.
    let (status, body) = answer(fleet.with_cert("sensor", "sensor").get(&inv)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("sensor certificate (sensor ward-a-1@ward-a)"), "{body}");
    let (status, body) = answer(fleet.with_cert("node2", "node").get(&inv)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("node certificate (node 2)"), "{body}");

    // A certificate from another CA never gets past the handshake.
    let err = fleet.with_cert("mallory", "operator").get(&inv).send().await.expect_err("foreign CA must be refused");
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // Refusals by authorization are audited (newest first), the anonymous 401s are not.
    let (_, audit) = answer(fleet.operator(Role::Admin).get(n.url("/api/v1/audit?limit=1000"))).await;
    let entries = audit["entries"].as_array().unwrap();
    let refused: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["status"] == 403)
        .map(|e| (e["who"].as_str().unwrap(), e["path"].as_str().unwrap()))
        .collect();
    assert!(refused.contains(&("op-viewer", "/api/v1/audit")), "{audit}");
    assert!(refused.contains(&("op-analyst", "/api/v1/cluster/join")), "{audit}");
    assert!(refused.contains(&("sensor ward-a-1@ward-a", "/api/v1/inventory")), "{audit}");
    assert!(refused.contains(&("node 2", "/api/v1/inventory")), "{audit}");
    assert!(entries.iter().all(|e| e["status"] != 401), "{audit}");
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    let admin_404 = entries.iter().find(|e| e["who"] == "op-admin").expect("the admin's POST is audited");
    assert_eq!(admin_404["outcome"], "failed");
    assert_eq!(admin_404["credential"]["kind"], "certificate");
    assert!(admin_404["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{admin_404}");
    assert_eq!(
        answer(fleet.operator(Role::Admin).get(n.url("/api/v1/audit?limit=0"))).await.0,
        StatusCode::BAD_REQUEST
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_round_trip_and_only_their_hash_is_stored() {
    let fleet = Fleet::new();
    let data = tempfile::tempdir().unwrap();
    let n = single(&fleet, data.path()).await;
    let admin = fleet.operator(Role::Admin);

    let created = create_token(&n, &admin, "grafana", "viewer").await;
    let text = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["role"], "viewer");
    // The same name twice is a conflict; a bad role or name is a 400.
    let (status, body) =
        answer(admin.post(n.url("/api/v1/tokens")).json(&json!({"name": "grafana", "role": "admin"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = answer(admin.post(n.url("/api/v1/tokens")).json(&json!({"name": "x", "role": "root"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) =
        answer(admin.post(n.url("/api/v1/tokens")).json(&json!({"name": "a b", "role": "viewer"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The viewer token reads, but may not manage tokens.
    let viewer = fleet.token(&text);
    assert_eq!(answer(viewer.get(n.url("/api/v1/inventory"))).await.0, StatusCode::OK);
    let (status, body) =
        answer(viewer.post(n.url("/api/v1/tokens")).json(&json!({"name": "x", "role": "admin"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&format!("token {id} (grafana) has role viewer")), "{body}");
    assert_eq!(answer(viewer.get(n.url("/api/v1/tokens"))).await.0, StatusCode::FORBIDDEN);

    // An admin token made by the certificate admin can itself manage tokens.
    let admin_token = create_token(&n, &admin, "ci", "admin").await["token"].as_str().unwrap().to_string();
    let ci = fleet.token(&admin_token);
    let (status, list) = answer(ci.get(n.url("/api/v1/tokens"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["count"], 2, "{list}");
    let listed = list["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!(listed["created_by"], "op-admin");
    assert!(!list.to_string().contains(&text[token::TOKEN_PREFIX.len() + token::ID_HEX + 1..]), "{list}");

    // The replicated state holds the SHA-256 of the secret and nothing from which the token follows.
    let secret = token::parse_token(&text).unwrap();
    let record = n.served.node.read_state(|s| s.tokens().get(&id).cloned()).await.unwrap();
    assert_eq!(record.secret_sha256, token::sha256(&secret.secret));
    let state_bytes =
        n.served.node.read_state(|s| bincode::serde::encode_to_vec(s, bincode::config::standard())).await.unwrap();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&state_bytes, &record.secret_sha256), "the hash is in the state");
    assert!(!contains(&state_bytes, &secret.secret), "the raw secret must not be in the state");
    assert!(!contains(&state_bytes, text.as_bytes()), "the token text must not be in the state");

    // Revoke by name through the admin token; the token is then refused.
    let (status, body) = answer(ci.delete(n.url("/api/v1/tokens/grafana"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], id.as_str());
    let (status, body) = answer(viewer.get(n.url("/api/v1/inventory"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"].as_str().unwrap().contains("unknown or revoked"), "{body}");
    assert_eq!(answer(ci.delete(n.url("/api/v1/tokens/grafana"))).await.0, StatusCode::NOT_FOUND);

    // Each change is audited with who, credential kind and what changed.
    let (_, audit) = answer(ci.get(n.url("/api/v1/audit"))).await;
    let entries = audit["entries"].as_array().unwrap();
    let revoke = entries.iter().find(|e| e["method"] == "DELETE" && e["status"] == 200).expect("revoke audited");
    assert_eq!(revoke["who"], "ci");
    assert_eq!(revoke["role"], "admin");
    assert_eq!(revoke["credential"]["kind"], "token");
    assert_eq!(revoke["detail"], format!("revoked token {id} (grafana)"));
    let revoked = format!("revoked token {id} (grafana)");
    assert_eq!(entries.iter().filter(|e| e["detail"] == revoked).count(), 1, "one entry per change: {audit}");
    let create = entries.iter().find(|e| e["detail"] == format!("created token {id} (grafana, role viewer)"));
    assert_eq!(create.expect("create audited")["who"], "op-admin");
    assert!(entries.iter().any(|e| e["status"] == 403 && e["who"] == "grafana"), "{audit}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_is_identical_on_both_nodes_of_a_cluster() {
    let fleet = Fleet::new();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let n1 = single(&fleet, d1.path()).await;
    let n2 = SecureNode::start(&fleet, 2, d2.path()).await;
    n1.served.node.add_learner(2, n2.served.member(), true).await.unwrap();
    n1.served.node.change_membership(BTreeSet::from([1, 2]), false).await.unwrap();

    let admin = fleet.operator(Role::Admin);
    let created = create_token(&n1, &admin, "ops-bot", "analyst").await;
    let analyst = fleet.token(created["token"].as_str().unwrap());
    assert_eq!(answer(analyst.delete(n1.url("/api/v1/tokens/ops-bot"))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        answer(fleet.with_cert("sensor", "sensor").post(n1.url("/api/v1/tokens"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(answer(admin.delete(n1.url("/api/v1/tokens/ops-bot"))).await.0, StatusCode::OK);

    // The follower applies the same log: its token store and audit log equal the leader's.
    let index = n1.served.node.applied_index().await.unwrap();
    n2.served.node.wait_for_applied(index, WAIT).await.unwrap();
    let log1 = n1.served.node.read_state(|s| s.audit().clone()).await;
    let log2 = n2.served.node.read_state(|s| s.audit().clone()).await;
    assert_eq!(log1, log2);
    assert_eq!(log1.recorded(), 4, "create, two refusals, revoke: {log1:?}");
    assert!(n2.served.node.read_state(|s| s.tokens().is_empty()).await);

    // And the follower's API answers the same entries (read from its own state).
    let (s1, a1) = answer(admin.get(n1.url("/api/v1/audit"))).await;
    let (s2, a2) = answer(admin.get(n2.url("/api/v1/audit"))).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(a1["entries"], a2["entries"]);
    let whats: Vec<(String, u64)> = a2["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!(
                    "{} {} {}",
                    e["who"].as_str().unwrap(),
                    e["method"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                ),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        whats,
        [
            ("op-admin DELETE /api/v1/tokens/ops-bot".to_string(), 200),
            ("sensor ward-a-1@ward-a POST /api/v1/tokens".to_string(), 403),
            ("ops-bot DELETE /api/v1/tokens/ops-bot".to_string(), 403),
            ("op-admin POST /api/v1/tokens".to_string(), 201),
        ]
    );
    // Node ids and times come from the proposing node, inside the command.
    assert!(a2["entries"].as_array().unwrap().iter().all(|e| e["node_id"] == 1 && e["at_ms"].as_u64().unwrap() > 0));

    // A refusal at the follower reaches the replicated log: the follower forwards its entry
    // to the leader over the Raft listener.
    assert_eq!(answer(analyst.get(n2.url("/api/v1/audit"))).await.0, StatusCode::UNAUTHORIZED, "revoked token");
    let viewer = fleet.operator(Role::Viewer);
    assert_eq!(answer(viewer.get(n2.url("/api/v1/audit"))).await.0, StatusCode::FORBIDDEN);
    let index = n1.served.node.applied_index().await.unwrap();
    n2.served.node.wait_for_applied(index, WAIT).await.unwrap();
    let newest = n2.served.node.read_state(|s| s.audit().newest(1).next().cloned()).await.unwrap();
    assert_eq!((newest.who.as_str(), newest.status, newest.node_id), ("op-viewer", 403, 2), "{newest:?}");
    assert_eq!(n2.served.node.read_state(|s| s.audit().recorded()).await, 5);
    n2.stop().await;
    n1.stop().await;
}

/// The operator's path end to end with the real binary: an offline admin certificate, a
/// token created with `admin token create`, `inventory` with the token from the
/// environment, `token list`, `token revoke`, then the same token refused.
#[test]
fn cli_issue_operator_token_create_use_and_revoke() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_wardline-aggregator");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(bin).args(args).env_remove("WARDLINE_TOKEN").envs(env.iter().copied()).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    let (ca, node, alice) = (s(p.join("ca")), s(p.join("node")), s(p.join("alice")));
    assert!(run(&["admin", "ca-init", "--dir", &ca], &[]).0);
    assert!(run(&["admin", "issue-node", "--ca-dir", &ca, "--node-id", "1", "--out-dir", &node], &[]).0);
    let (ok, _, err) = run(
        &["admin", "issue-operator", "--ca-dir", &ca, "--name", "alice", "--role", "root", "--out-dir", &alice],
        &[],
    );
    assert!(!ok && err.contains("unknown role"), "{err}");
    assert!(
        run(
            &["admin", "issue-operator", "--ca-dir", &ca, "--name", "alice", "--role", "admin", "--out-dir", &alice],
            &[]
        )
        .0
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let raft = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = format!("https://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["run", "--init", "--node-id", "1", "--data-dir", &s(p.join("data")), "--tls-dir", &node])
        .args(["--listen-api", &format!("127.0.0.1:{port}"), "--listen-quic", &format!("127.0.0.1:{quic}")])
        .args(["--listen-raft", &format!("127.0.0.1:{raft}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    let deadline = std::time::Instant::now() + WAIT;
    while !run(&["inventory", "--api", &api, "--cert-dir", &alice, "--wait-leader"], &[]).0 {
        assert!(std::time::Instant::now() < deadline, "the node did not come up");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Without a credential the CLI says what to give.
    let (ok, _, err) = run(&["inventory", "--api", &api, "--ca", &s(p.join("ca/ca.pem"))], &[]);
    assert!(!ok && err.contains("needs a credential"), "{err}");

    let (ok, token, err) = run(
        &["admin", "token", "create", "--name", "grafana", "--role", "viewer", "--api", &api, "--cert-dir", &alice],
        &[],
    );
    assert!(ok, "{err}");
    let token = token.trim().to_string();
    assert!(token::parse_token(&token).is_ok(), "stdout is exactly the token: {token:?}");
    let ca_pem = s(p.join("ca/ca.pem"));
    let env = [("WARDLINE_TOKEN", token.as_str())];
    let (ok, out, err) = run(&["inventory", "--api", &api, "--ca", &ca_pem, "--json"], &env);
    assert!(ok, "{err}");
    assert!(out.contains("\"count\": 0"), "{out}");
    let (ok, _, err) = run(&["admin", "token", "list", "--api", &api, "--ca", &ca_pem], &env);
    assert!(!ok && err.contains("403") && err.contains("needs role admin"), "{err}");
    let (ok, out, _) = run(&["admin", "token", "list", "--api", &api, "--cert-dir", &alice], &[]);
    assert!(ok && out.contains("grafana") && out.contains("alice"), "{out}");
    assert!(run(&["admin", "token", "revoke", "--id", "grafana", "--api", &api, "--cert-dir", &alice], &[]).0);
    let (ok, _, err) = run(&["inventory", "--api", &api, "--ca", &ca_pem], &env);
    assert!(!ok && err.contains("401") && err.contains("unknown or revoked"), "{err}");
    let (ok, out, _) = run(&["admin", "audit", "--limit", "5", "--api", &api, "--cert-dir", &alice], &[]);
    assert!(ok && out.contains("revoked token") && out.contains("\"dropped\": 0"), "{out}");

    // Every other command of this path also answers the API's JSON with --json.
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--api", &api, "--cert-dir", &alice, "--json"]);
        let (ok, out, err) = run(&all, &[]);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    };
    let created = json(&["admin", "token", "create", "--name", "ci", "--role", "analyst"]);
    assert!(token::parse_token(created["token"].as_str().unwrap()).is_ok(), "{created}");
    let list = json(&["admin", "token", "list"]);
    assert_eq!(list["count"], 1, "{list}");
    assert_eq!(json(&["admin", "token", "revoke", "--id", "ci"])["name"], "ci");
    let node = json(&["cluster", "node"]);
    assert!(node.is_object() && node.to_string().contains('1'), "{node}");
    let (ok, out, err) = run(&["cluster", "node", "--api", &api, "--cert-dir", &alice], &[]);
    assert!(ok && !out.trim().is_empty(), "{err}");
    let detectors = json(&["alerts", "detectors"]);
    assert!(detectors.is_object() && !detectors.as_object().unwrap().is_empty(), "{detectors}");
    let revocations = json(&["admin", "revocations"]);
    assert_eq!(revocations["count"], 0, "{revocations}");
}

/// The read commands of the CLI (`device show|history|flows`, `flows list|totals`,
/// `sensors`) against a node holding one device, as a viewer: tables by default, the API's
/// JSON with `--json`, and a clear error for an unknown device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_read_commands_show_what_the_api_answers() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    let n = single(&fleet, dir.path()).await;
    assert!(n.served.node.propose(raft_support::batch("ward-3-a", 1, 7)).await.unwrap().applied);
    let viewer = fleet.path("op-viewer").display().to_string();
    let api = n.api.clone();
    let run = move |args: Vec<&str>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wardline-aggregator"))
            .args(&args)
            .args(["--api", &api, "--cert-dir", &viewer])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mac = raft_support::mac(7).to_string();
    let results = tokio::task::spawn_blocking(move || {
        (
            run(vec!["device", "show", &mac]),
            run(vec!["device", "show", &mac, "--json"]),
            run(vec!["device", "history", &mac]),
            run(vec!["device", "flows", &mac, "--json"]),
            run(vec!["device", "show", "00:00:00:00:00:99"]),
            run(vec!["flows", "totals", "--json"]),
            run(vec!["flows", "list", "--limit", "5"]),
            run(vec!["sensors"]),
            run(vec!["sensors", "--json"]),
        )
    })
    .await
    .unwrap();
    let (show, show_json, history, flows, unknown, totals, list, sensors, sensors_json) = results;
    let mac = raft_support::mac(7).to_string();
    assert!(show.0, "{show:?}");
    assert!(show.1.contains(&mac) && show.1.contains("PUMP-07") && show.1.contains("10.3.0.7"), "{}", show.1);
    let v: Value = serde_json::from_str(&show_json.1).unwrap();
    assert_eq!(v["mac"], mac.as_str());
    assert!(history.0 && history.1.contains("connected"), "{history:?}");
    let v: Value = serde_json::from_str(&flows.1).unwrap();
    assert_eq!(v["count"], 0, "the embedded store holds no flows for this node");
    assert!(!unknown.0 && unknown.2.contains("404"), "{unknown:?}");
    let v: Value = serde_json::from_str(&totals.1).unwrap();
    assert_eq!(v["replicated"]["flows"], 2, "{v}");
    assert!(list.0 && list.1.starts_with("0 flows"), "{list:?}");
    assert!(sensors.0 && sensors.1.contains("ward-3-a") && sensors.1.contains("ward-3"), "{sensors:?}");
    let v: Value = serde_json::from_str(&sensors_json.1).unwrap();
    assert_eq!(v["sensors"]["ward-3-a"]["last_seq"], 1);
    n.stop().await;
}
