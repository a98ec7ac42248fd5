//! A node certificate replaced on disk in a running three-node cluster of real
//! `wardline-aggregator` processes (decision 0040): after SIGHUP, new handshakes on the
//! node's API, Raft and ingest listeners present the new certificate (its serial is checked
//! on each), without a restart; the cluster keeps its leader and term, and commits through
//! the rotated node. A key that does not belong to the certificate is refused: the node keeps
//! presenting the certificate it has and says why in `cluster status` and `/metrics`.

use crate::node_process::{cli, operator, stderr, Proc};
use crate::raft_support::{ca_dir, WAIT};
use rustls::pki_types::CertificateDer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wardline_aggregator::auth::Role;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::pki;
use wardline_common::tls_files::{load_certs, load_key, load_roots};

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn hangup(node: &Proc) {
    assert!(Command::new("kill").args(["-HUP", &node.pid().to_string()]).status().unwrap().success());
}

/// A TLS session with the listener on loopback `port`, as the operator in `client` (the Raft
/// listener wants a client certificate; the API takes one).
fn tls_session(port: u16, client: &Path) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tls = TlsPaths::in_dir(client, "operator");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(load_roots(&tls.ca).unwrap())
        .with_client_auth_cert(load_certs(&tls.cert).unwrap(), load_key(&tls.key).unwrap())
        .unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    rustls::StreamOwned::new(conn, tcp)
}

/// Serial of the certificate a new TLS handshake with loopback `port` (TCP) shows.
fn tcp_serial(port: u16, client: &Path) -> String {
    let session = tls_session(port, client);
    let chain = session.conn.peer_certificates().unwrap();
    pki::certificate_serial(chain[0].as_ref()).unwrap()
}

/// Serial of the node certificate a new QUIC handshake with ingest on loopback `port` shows,
/// as the sensor in `sensor`.
fn quic_serial(port: u16, sensor: &Path) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let cfg = wardline_sensor::tls::quic_client_config(&TlsPaths::in_dir(sensor, "sensor")).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(cfg);
        let conn = endpoint.connect(SocketAddr::from(([127, 0, 0, 1], port)), "localhost").unwrap().await.unwrap();
        let chain = conn.peer_identity().unwrap().downcast::<Vec<CertificateDer<'static>>>().unwrap();
        let serial = pki::certificate_serial(chain[0].as_ref()).unwrap();
        conn.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        serial
    })
}

/// The serials new handshakes with `node`'s API, Raft and ingest listeners show.
fn presented(node: &Proc, sensor: &Path) -> [String; 3] {
    let viewer = operator(Role::Viewer);
    let (api, raft, quic) = node.ports;
    [tcp_serial(api, &viewer), tcp_serial(raft, &viewer), quic_serial(quic, sensor)]
}

/// `GET /metrics` of `node` as a viewer.
fn metrics(node: &Proc) -> String {
    let mut session = tls_session(node.ports.0, &operator(Role::Viewer));
    session.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    // The server closes without close_notify sometimes; what arrived is what counts.
    let _ = session.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Move node.pem and node.key of `from` over those in `to`, each by an atomic rename.
fn install(from: &Path, to: &Path) {
    for f in ["node.key", "node.pem"] {
        std::fs::rename(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn a_node_certificate_replaced_on_disk_is_presented_by_new_handshakes_after_sighup_and_the_leader_stays() {
    let root = tempfile::tempdir().unwrap();
    let n1 = Proc::start(1, root.path(), &["--init"]);
    let n2 = Proc::start(2, root.path(), &[]);
    let n3 = Proc::start(3, root.path(), &[]);
    n1.wait_status("leader", |s| s["leader_id"] == 1);
    for n in [&n2, &n3] {
        let mut args = n.join_args();
        args.extend(["--api".to_string(), n1.api()]);
        ok(cli(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    let term = n1
        .wait_status("leader of three", |s| s["leader_id"] == 1 && s["members"].as_array().unwrap().len() == 3)
        ["current_term"]
        .clone();
    let sensor = root.path().join("sensor");
    pki::issue_sensor(ca_dir("fleet"), "rot-s1", "north", &sensor).unwrap();
    let old_serial = pki::pem_serial_and_expiry(&n2.dir.join("node.pem")).unwrap().0;
    assert_eq!(presented(&n2, &sensor), [old_serial.clone(), old_serial.clone(), old_serial.clone()]);

    // A new certificate for node 2 (same node id, same fleet CA) put in place, then SIGHUP.
    let staging = root.path().join("node2-new");
    pki::issue_node(ca_dir("fleet"), 2, &[], &staging).unwrap();
    install(&staging, &n2.dir);
    let new_serial = pki::pem_serial_and_expiry(&n2.dir.join("node.pem")).unwrap().0;
    assert_ne!(new_serial, old_serial);
    hangup(&n2);
    wait_for("node 2's API presents the new certificate", || {
        tcp_serial(n2.ports.0, &operator(Role::Viewer)) == new_serial
    });
    assert_eq!(presented(&n2, &sensor), [new_serial.clone(), new_serial.clone(), new_serial.clone()]);
    let s2 = n2.status();
    assert_eq!(s2["certificate"]["serial"], new_serial.as_str(), "{s2}");
    assert_eq!(
        (s2["certificate"]["reloads"].as_u64(), s2["certificate"]["reload_failures"].as_u64()),
        (Some(1), Some(0))
    );

    // The cluster kept its leader and term; with node 3 gone every commit needs node 2, whose
    // new Raft connections present the new certificate.
    let s1 = n1.status();
    assert_eq!((&s1["leader_id"], &s1["current_term"]), (&serde_json::json!(1), &term), "{s1}");
    drop(n3);
    ok(cli(&["admin", "token", "create", "--name", "after-rotation", "--role", "viewer", "--api", &n1.api()]));
    let s1 = n1.wait_status("committed with node 2", |s| s["leader_id"] == 1);
    assert_eq!(s1["current_term"], term, "no election happened: {s1}");
    n2.wait_status("caught up", |s| s["applied_index"] == s1["applied_index"]);
    for s in [&s1, &n2.status()] {
        assert!(s["refused_rpcs"].as_object().unwrap().values().all(|v| v == 0), "{s}");
    }

    // A key that does not belong to the certificate: refused, counted, shown; the node keeps
    // presenting the certificate it has.
    let good_key = std::fs::read(n2.dir.join("node.key")).unwrap();
    let other = root.path().join("other");
    pki::issue_node(ca_dir("fleet"), 2, &[], &other).unwrap();
    std::fs::rename(other.join("node.key"), n2.dir.join("node.key")).unwrap();
    hangup(&n2);
    let s2 = n2.wait_status("refusing the mismatched key", |s| s["certificate"]["reload_failures"] == 1);
    let why = s2["certificate"]["refused_files"].as_str().unwrap();
    assert!(why.contains("does not belong to the certificate") && why.contains("node.key"), "{why}");
    assert_eq!(presented(&n2, &sensor), [new_serial.clone(), new_serial.clone(), new_serial.clone()]);
    let text = ok(cli(&["cluster", "status", "--api", &n2.api()]));
    assert!(text.contains(&format!("Node certificate: serial {new_serial}")), "{text}");
    assert!(text.contains("Certificate files on disk NOT in use"), "{text}");
    let m = metrics(&n2);
    assert!(m.contains(&format!("wardline_tls_certificate_info{{role=\"node\",serial=\"{new_serial}\"}} 1")), "{m}");
    assert!(m.contains("wardline_tls_certificate_reloads_total{role=\"node\",result=\"refused\"} 1"), "{m}");
    assert!(m.contains("wardline_tls_certificate_files_refused 1"), "{m}");
    assert!(m.contains("wardline_tls_certificate_expiry_seconds{role=\"node\"}"), "{m}");

    // The right key back: the refusal is over, nothing to swap.
    let tmp = n2.dir.join("node.key.tmp");
    std::fs::write(&tmp, good_key).unwrap();
    std::fs::rename(&tmp, n2.dir.join("node.key")).unwrap();
    hangup(&n2);
    let s2 = n2.wait_status("files accepted again", |s| s["certificate"]["refused_files"].is_null());
    assert_eq!(s2["certificate"]["serial"], new_serial.as_str());
    assert_eq!(n1.status()["leader_id"], 1);
}
