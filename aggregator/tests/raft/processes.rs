//! Real `wardline-aggregator` processes on loopback, driven with the `cluster` commands as
//! an operator would: `run --init` on the first node, `cluster join` (once through a
//! follower, which redirects to the leader), `cluster status`, `cluster leave`, and a node
//! whose data belongs to another cluster refused at start.

use crate::node_process::{cli, free_ports, stderr, Proc};
use serde_json::Value;
use std::process::Stdio;

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

    let api1 = n1.api();
    let mut args2 = n2.join_args();
    args2.extend(["--api".to_string(), api1.clone()]);
    let join2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let out = cli(&join2);
    assert!(out.status.success(), "{}", stderr(&out));
    // Node 3 joins through node 2, a follower, which names the leader.
    let api2 = n2.api();
    let mut args3 = n3.join_args();
    args3.extend(["--api".to_string(), api2.clone()]);
    let join3: Vec<&str> = args3.iter().map(String::as_str).collect();
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
    let out = Proc::command(3, &dir3, free_ports(), &["--cluster-id", "01HOTHERCLUSTER0000000000"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("belongs to cluster {cluster_id}")), "{err}");
}
