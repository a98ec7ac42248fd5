//! Real `wardline-aggregator` processes on loopback for the process tests
//! (`processes.rs`, `backup_processes.rs`), and the CLI run as an operator.

use crate::raft_support::{ca_dir, WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wardline_aggregator::auth::Role;

pub const BIN: &str = env!("CARGO_BIN_EXE_wardline-aggregator");

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Free (API, Raft, QUIC) ports on loopback.
pub fn free_ports() -> (u16, u16, u16) {
    (free_tcp(), free_tcp(), free_udp())
}

/// One node process; killed when dropped.
pub struct Proc {
    pub id: u64,
    /// (API, Raft, QUIC) ports.
    pub ports: (u16, u16, u16),
    pub dir: PathBuf,
    child: Child,
}

impl Proc {
    pub fn start(id: u64, root: &Path, extra: &[&str]) -> Proc {
        Self::start_on(id, root, free_ports(), extra)
    }

    /// Start node `id` with its files under `root/node{id}` (certificate issued once).
    pub fn start_on(id: u64, root: &Path, ports: (u16, u16, u16), extra: &[&str]) -> Proc {
        let dir = root.join(format!("node{id}"));
        if !dir.join("node.pem").exists() {
            wardline_aggregator::pki::issue_node(ca_dir("fleet"), id, &[], &dir).unwrap();
        }
        let child = Self::command(id, &dir, ports, extra).stderr(Stdio::null()).spawn().unwrap();
        Proc { id, ports, dir, child }
    }

    /// The `run` command of node `id` (for tests that expect it to fail).
    pub fn command(id: u64, dir: &Path, (api, raft, quic): (u16, u16, u16), extra: &[&str]) -> Command {
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

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn api(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.0)
    }

    /// `cluster join` arguments naming this node (without `--api`).
    pub fn join_args(&self) -> Vec<String> {
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

    /// `cluster status --json` against this node, once its API answers.
    pub fn status(&self) -> Value {
        self.wait_status("answering", |_| true)
    }

    /// Wait until this node's status satisfies `f`.
    pub fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
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
    pub fn terminate(mut self) -> PathBuf {
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

/// An operator certificate of `role` from the fleet CA (decision 0015).
pub fn operator(role: Role) -> PathBuf {
    let dir = ca_dir("fleet").parent().unwrap().join(format!("operator-{role}"));
    if !dir.join("operator.pem").exists() {
        wardline_aggregator::pki::issue_operator(ca_dir("fleet"), &format!("test-{role}"), role, &dir).unwrap();
    }
    dir
}

fn admin_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| operator(Role::Admin))
}

/// Run the CLI as an admin operator.
pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("WARDLINE_CERT_DIR", admin_dir()).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
