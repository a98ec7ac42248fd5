//! The alert rules shipped in deploy/prometheus pass `promtool check rules` and their unit
//! tests (`promtool test rules`).

use std::path::PathBuf;
use std::process::Command;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool is installed (Debian package prometheus)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn alert_rules_are_valid() {
    let (ok, out) = promtool(&["check", "rules", "wardline-rules.yml"]);
    assert!(ok, "promtool check rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "wardline-rules.test.yml"]);
    assert!(ok, "promtool test rules failed:\n{out}");
}

#[test]
fn every_metric_named_in_the_rules_is_documented() {
    let rules = std::fs::read_to_string(rules_dir().join("wardline-rules.yml")).unwrap();
    let docs = std::fs::read_to_string(rules_dir().join("../../docs/metrics.md")).unwrap();
    let mut names: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wardline_"))
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "the rules should use the exported metrics: {names:?}");
    for name in names {
        assert!(docs.contains(name), "docs/metrics.md does not describe {name}, used in wardline-rules.yml");
    }
}
