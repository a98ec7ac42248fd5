//! Real `wardline-aggregator` processes on loopback, driven with the `cluster` commands as
//! an operator would: `run --init` on the first node, `cluster join` (once through a
//! follower, which redirects to the leader), `cluster status`, `cluster leave`, and a node
//! whose data belongs to another cluster refused at start.

use crate::raft_support::{ca_dir, WAIT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wardline-aggregator");

fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Proc {
    id: u64,
    api: u16,
    raft: u16,
    quic: u16,
    dir: PathBuf,
    child: Child,
}

impl Proc {
    fn start(id: u64, root: &Path, extra: &[&str]) -> Proc {
        let dir = root.join(format!("node{id}"));
        if !dir.join("node.pem").exists() {
            wardline_aggregator::pki::issue_node(ca_dir("fleet"), id, &[], &dir).unwrap();
        }
        let (api, raft, quic) = (free_tcp(), free_tcp(), free_udp());
        let child = Self::command(id, &dir, api, raft, quic, extra).stderr(Stdio::null()).spawn().unwrap();
        Proc { id, api, raft, quic, dir, child }
    }

    fn command(id: u64, dir: &Path, api: u16, raft: u16, quic: u16, extra: &[&str]) -> Command {
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
        format!("http://127.0.0.1:{}", self.api)
    }

    fn join_args(&self) -> Vec<String> {
        vec![
            "--node-id".into(),
            self.id.to_string(),
            "--raft-addr".into(),
            format!("127.0.0.1:{}", self.raft),
            "--api-addr".into(),
            format!("127.0.0.1:{}", self.api),
            "--ingest-addr".into(),
            format!("127.0.0.1:{}", self.quic),
        ]
    }

    /// `cluster status --json` against this node, once its API answers.
    fn status(&self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = cli(&["cluster", "status", "--json", "--api", &self.api()]);
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).unwrap();
            }
            assert!(Instant::now() < deadline, "node {} API never answered: {}", self.id, stderr(&out));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until this node's status satisfies `f`.
    fn wait_status(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "node {}: never {what}: {s}", self.id);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn voters(s: &Value) -> Vec<u64> {
    s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn operator_commands_form_change_and_guard_a_cluster_of_processes() {
    let root = tempfile::tempdir().unwrap();
    let n1 = Proc::start(1, root.path(), &["--init"]);
    let n2 = Proc::start(2, root.path(), &[]);
    let n3 = Proc::start(3, root.path(), &[]);
    let s1 = n1.wait_status("leader of a new cluster", |s| s["leader_id"] == 1 && s["cluster_id"].is_string());
    let cluster_id = s1["cluster_id"].as_str().unwrap().to_string();
    assert!(n2.status()["cluster_id"].is_null(), "a node started without --init waits");

    let mut join2 = vec!["cluster", "join", "--api"];
    let api1 = n1.api();
    join2.push(&api1);
    let args2 = n2.join_args();
    join2.extend(args2.iter().map(String::as_str));
    let out = cli(&join2);
    assert!(out.status.success(), "{}", stderr(&out));
    // Node 3 joins through node 2, a follower, which names the leader.
    let api2 = n2.api();
    let args3 = n3.join_args();
    let mut join3 = vec!["cluster", "join", "--api", api2.as_str()];
    join3.extend(args3.iter().map(String::as_str));
    let out = cli(&join3);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not the leader"), "{}", stderr(&out));

    for n in [&n1, &n2, &n3] {
        let s = n.wait_status("three voters", |s| voters(s) == [1, 2, 3] && s["leader_id"] == 1);
        assert_eq!(s["cluster_id"], Value::from(cluster_id.clone()));
        assert_eq!(s["refused_rpcs"]["not_member"], 0, "{s}");
    }
    let out = cli(&["cluster", "status", "--api", &api1]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&cluster_id) && table.contains("voter"), "{table}");

    // Node 3 leaves; the others carry on as a two-node cluster.
    let out = cli(&["cluster", "leave", "--api", &api1, "--node-id", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    n2.wait_status("two voters", |s| voters(s) == [1, 2]);

    // Node 3's data belongs to this cluster: started for another cluster id, it refuses.
    let dir3 = n3.dir.clone();
    drop(n3);
    let out =
        Proc::command(3, &dir3, free_tcp(), free_tcp(), free_udp(), &["--cluster-id", "01HOTHERCLUSTER0000000000"])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("belongs to cluster {cluster_id}")), "{err}");
}
