//! The sensor runs on small boxes in every building: it must not pull in the cluster's
//! consensus or database clients.

use std::process::Command;

#[test]
fn sensor_dependency_tree_has_no_openraft_or_clickhouse() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "wardline-sensor", "-e", "normal,build", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("quinn"), "sanity: the tree should list the sensor's own dependencies:\n{tree}");
    // The capture generator (wardline-sim) is for tests and demos, not for the sensor.
    for banned in ["openraft", "clickhouse", "wardline-aggregator", "axum", "wardline-sim"] {
        let hit = tree.lines().find(|l| l.split_whitespace().next() == Some(banned));
        assert!(hit.is_none(), "wardline-sensor depends on {banned}: {}", hit.unwrap_or_default());
    }
}
