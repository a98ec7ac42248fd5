//! Backup, restore and certificate rotation with real `wardline-aggregator` processes,
//! driven by the operator commands of docs/operations.md: `cluster backup` (admin only),
//! `admin backup` of a stopped node (refused while it runs), `run --init --restore` (a new
//! cluster with the backup's state; a corrupt file refused), and a rolling restart that
//! gives one node of three a new certificate while the cluster keeps committing.

use crate::raft_support::{ca_dir, WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wardline_aggregator::auth::Role;
use wardline_aggregator::cluster::backup;

const BIN: &str = env!("CARGO_BIN_EXE_wardline-aggregator");

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc {
    id: u64,
    ports: (u16, u16, u16),
    dir: PathBuf,
    child: Child,
}

impl Proc {
    fn start(id: u64, root: &Path, extra: &[&str]) -> Proc {
        Self::start_on(id, root, (free_tcp(), free_tcp(), free_udp()), extra)
    }

    /// Start node `id` with its files under `root/node{id}` (certificate issued once).
    fn start_on(id: u64, root: &Path, ports: (u16, u16, u16), extra: &[&str]) -> Proc {
        let dir = root.join(format!("node{id}"));
        if !dir.join("node.pem").exists() {
            wardline_aggregator::pki::issue_node(ca_dir("fleet"), id, &[], &dir).unwrap();
        }
        let child = Self::command(id, &dir, ports, extra).stderr(Stdio::null()).spawn().unwrap();
        Proc { id, ports, dir, child }
    }

    fn command(id: u64, dir: &Path, (api, raft, quic): (u16, u16, u16), extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--node-id", &id.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .arg("--tls-dir")
            .arg(dir)
            .args(["--listen-api", &format!("127.0.0.1:{api}")])
            .args(["--listen-raft", &format!("127.0.0.1:{raft}")])
            .args(["--listen-quic", &format!("127.0.0.1:{quic}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        cmd
    }

    fn api(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.0)
    }

    fn join_args(&self) -> Vec<String> {
        let (api, raft, quic) = self.ports;
        [
            "cluster",
            "join",
            "--node-id",
            &self.id.to_string(),
            "--raft-addr",
            &format!("127.0.0.1:{raft}"),
            "--api-addr",
            &format!("127.0.0.1:{api}"),
            "--ingest-addr",
            &format!("127.0.0.1:{quic}"),
        ]
        .map(String::from)
        .to_vec()
    }

    fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = cli(&["cluster", "status", "--json", "--api", &self.api()]);
            if out.status.success() {
                let s: Value = serde_json::from_slice(&out.stdout).unwrap();
                if f(&s) {
                    return s;
                }
                assert!(Instant::now() < deadline, "node {}: never {what}: {s}", self.id);
            } else {
                assert!(Instant::now() < deadline, "node {} API never answered: {}", self.id, stderr(&out));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop as an operator would (SIGTERM) and wait for the process to exit.
    fn terminate(mut self) -> PathBuf {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "node {} exited with {status}", self.id);
        self.dir.clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn operator(role: Role) -> PathBuf {
    let dir = ca_dir("fleet").parent().unwrap().join(format!("backup-operator-{role}"));
    wardline_aggregator::pki::issue_operator(ca_dir("fleet"), &format!("test-{role}"), role, &dir).unwrap();
    dir
}

fn admin_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| operator(Role::Admin))
}

/// Run the CLI as an admin operator.
fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("WARDLINE_CERT_DIR", admin_dir()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn create_token(api: &str, name: &str) {
    ok(cli(&["admin", "token", "create", "--name", name, "--role", "viewer", "--api", api]));
}

#[test]
fn backup_commands_and_restore_as_a_new_cluster() {
    let root = tempfile::tempdir().unwrap();
    let n1 = Proc::start(1, root.path(), &["--init"]);
    let s = n1.wait_status("leader of a new cluster", |s| s["leader_id"] == 1 && s["cluster_id"].is_string());
    let old_cluster = s["cluster_id"].as_str().unwrap().to_string();
    create_token(&n1.api(), "grafana");

    // A viewer may not take a backup (it holds token hashes and the audit log).
    let viewer = Command::new(BIN)
        .args(["cluster", "backup", "--api", &n1.api(), "--out"])
        .arg(root.path().join("viewer.wlbackup"))
        .env("WARDLINE_CERT_DIR", operator(Role::Viewer))
        .output()
        .unwrap();
    assert!(!viewer.status.success());
    assert!(stderr(&viewer).contains("403") && stderr(&viewer).contains("needs role admin"), "{}", stderr(&viewer));

    let online_file = root.path().join("online.wlbackup");
    let out = ok(cli(&["cluster", "backup", "--api", &n1.api(), "--out", online_file.to_str().unwrap()]));
    assert!(out.contains(&old_cluster), "{out}");
    let online = backup::read_file(&online_file).unwrap();
    assert!(online.state.tokens().iter().any(|t| t.name == "grafana"));

    // Offline backup is refused while the node runs, and equals the online one once it stopped.
    let data1 = n1.dir.join("data");
    let offline_file = root.path().join("offline.wlbackup");
    let running =
        cli(&["admin", "backup", "--data-dir", data1.to_str().unwrap(), "--out", offline_file.to_str().unwrap()]);
    assert!(!running.status.success());
    assert!(stderr(&running).contains("in use by a running aggregator"), "{}", stderr(&running));
    n1.terminate();
    let out =
        ok(cli(&["admin", "backup", "--data-dir", data1.to_str().unwrap(), "--out", offline_file.to_str().unwrap()]));
    assert!(out.contains("committed log entries applied"), "{out}");
    let offline = backup::read_file(&offline_file).unwrap();
    assert_eq!(offline.state, online.state);
    assert_eq!(offline.header.last_applied, online.header.last_applied);

    // A corrupt file is refused by name and reason; the data dir stays empty.
    let corrupt = root.path().join("corrupt.wlbackup");
    let mut bytes = std::fs::read(&online_file).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x01;
    std::fs::write(&corrupt, bytes).unwrap();
    let dir5 = root.path().join("node5");
    wardline_aggregator::pki::issue_node(ca_dir("fleet"), 5, &[], &dir5).unwrap();
    let refused = Proc::command(5, &dir5, (free_tcp(), free_tcp(), free_udp()), &["--init", "--restore"])
        .arg(&corrupt)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains(corrupt.to_str().unwrap()) && err.contains("checksum mismatch"), "{err}");

    // Restore: a new cluster whose state is the backup's (the token is there).
    let n5 = Proc::start(5, root.path(), &["--init", "--restore", online_file.to_str().unwrap()]);
    let s = n5.wait_status("leader of the restored cluster", |s| s["leader_id"] == 5 && s["cluster_id"].is_string());
    assert_ne!(s["cluster_id"].as_str().unwrap(), old_cluster);
    let tokens = ok(cli(&["admin", "token", "list", "--api", &n5.api()]));
    assert!(tokens.contains("grafana"), "{tokens}");
    // The download was audited before the state was captured, so the backup records it.
    let audit = ok(cli(&["admin", "audit", "--limit", "20", "--api", &n5.api()]));
    assert!(audit.contains("/api/v1/cluster/backup") && audit.contains("test-admin"), "{audit}");
}

#[test]
fn a_node_certificate_is_rotated_by_a_rolling_restart() {
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
    create_token(&n1.api(), "before");

    // Node 2: a new certificate with the same node id from the fleet CA, then a restart.
    let ports = n2.ports;
    let dir2 = n2.terminate();
    let old_cert = std::fs::read(dir2.join("node.pem")).unwrap();
    create_token(&n1.api(), "while-node2-is-down");
    wardline_aggregator::pki::issue_node(ca_dir("fleet"), 2, &[], &dir2).unwrap();
    assert_ne!(std::fs::read(dir2.join("node.pem")).unwrap(), old_cert);
    let n2 = Proc::start_on(2, root.path(), ports, &[]);
    let applied = n1.wait_status("leader", |s| s["leader_id"] == 1)["applied_index"].as_u64().unwrap();
    n2.wait_status("caught up", |s| s["applied_index"].as_u64() >= Some(applied));

    // With node 3 gone, every commit needs node 2 and its new certificate.
    drop(n3);
    create_token(&n1.api(), "after-rotation");
    let s1 = n1.wait_status("committed with node 2", |s| s["leader_id"] == 1);
    let s2 = n2.wait_status("caught up", |s| s["applied_index"] == s1["applied_index"]);
    for s in [&s1, &s2] {
        assert!(s["refused_rpcs"].as_object().unwrap().values().all(|v| v == 0), "{s}");
    }
    let tokens = ok(cli(&["admin", "token", "list", "--api", &n2.api()]));
    assert!(tokens.contains("after-rotation"), "{tokens}");
}
