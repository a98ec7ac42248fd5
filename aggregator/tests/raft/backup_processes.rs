//! Backup, restore and certificate rotation with real `wardline-aggregator` processes,
//! driven by the operator commands of docs/operations.md: `cluster backup` (admin only),
//! `admin backup` of a stopped node (refused while it runs), `run --init --restore` (a new
//! cluster with the backup's state; a corrupt file refused), and a rolling restart that
//! gives one node of three a new certificate while the cluster keeps committing.

use crate::node_process::{cli, free_ports, operator, stderr, Proc, BIN};
use crate::raft_support::ca_dir;
use std::process::{Command, Output, Stdio};
use wardline_aggregator::auth::Role;
use wardline_aggregator::cluster::backup;

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
    let refused = Proc::command(5, &dir5, free_ports(), &["--init", "--restore"])
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
