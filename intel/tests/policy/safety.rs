//! The life-sustaining safety check against the knowledge base's required communications.

use super::support::{device, kb, mac, policy};
use wardline_intel::policy::{safety_check, CompiledPolicy, PolicyDevice, SafetyReport};

const PUMP_COMM: &str = "bd_alaris_pcu_8015#comm1";

fn pump(n: u32, ip: &str) -> PolicyDevice {
    let mut d = device(n, "infusion_pump", ip);
    d.profile = Some("bd_alaris_pcu_8015".into());
    d
}

fn server(n: u32, ip: &str) -> PolicyDevice {
    let mut d = device(n, "pump_server", ip);
    d.profile = Some("bd_alaris_systems_manager".into());
    d
}

const BASE: &str = r#"
[policy]
name = "ward"
default = "deny"

[[group]]
name = "pumps"
match = 'class == "infusion_pump"'

[[group]]
name = "servers"
match = 'class == "pump_server"'
"#;

const ALLOW: &str = r#"
[[rule]]
name = "pump status"
from = "pumps"
to = "servers"
protocol = "tcp"
ports = [3613]
"#;

fn run(text: &str, devices: &[PolicyDevice]) -> SafetyReport {
    let p = policy(text);
    let c = CompiledPolicy::compile(&p, devices);
    safety_check(kb(), &p, devices, &c)
}

#[test]
fn default_deny_without_the_pump_rule_is_refused_loudly() {
    let devices = vec![pump(1, "10.1.0.1"), pump(2, "10.1.0.2"), server(9, "10.2.0.9")];
    let r = run(BASE, &devices);
    assert!(r.blocks());
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    let f = &r.findings[0];
    assert_eq!(f.comm, PUMP_COMM);
    assert_eq!(f.device_class, "infusion_pump");
    assert_eq!(f.devices, vec![mac(1), mac(2)]);
    assert_eq!(f.ports, vec!["tcp/3613"]);
    assert_eq!(f.denied_by, vec!["the policy default (deny)"]);
    let shown = f.to_string();
    assert!(shown.starts_with("LIFE-SUSTAINING DEVICES CUT OFF: 2 infusion_pump"), "{shown}");
    assert!(shown.contains("pump_server") && shown.contains("Systems Manager"), "{shown}");
}

#[test]
fn the_allow_rule_or_a_monitor_scope_satisfies_the_check() {
    let devices = vec![pump(1, "10.1.0.1"), server(9, "10.2.0.9")];
    assert!(run(&format!("{BASE}{ALLOW}"), &devices).findings.is_empty());
    let monitored = format!("{BASE}\n[[scope]]\ngroup = \"pumps\"\ndefault = \"monitor\"\n");
    assert!(run(&monitored, &devices).findings.is_empty());
}

#[test]
fn a_deny_rule_ahead_of_the_allow_is_named_with_its_line() {
    let devices = vec![pump(1, "10.1.0.1"), server(9, "10.2.0.9")];
    let text = format!(
        "{BASE}\n[[rule]]\nname = \"quarantine pumps\"\nfrom = \"pumps\"\nto = \"any\"\naction = \"deny\"\n{ALLOW}"
    );
    let r = run(&text, &devices);
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].denied_by, vec!["rule \"quarantine pumps\" (line 14)"]);
}

#[test]
fn the_override_lets_it_through_but_the_findings_stay_visible() {
    let devices = vec![pump(1, "10.1.0.1"), server(9, "10.2.0.9")];
    let text = BASE.replace(
        "default = \"deny\"",
        "default = \"deny\"\nlife_sustaining_override = true\noverride_reason = \"pumps run standalone this week (biomed)\"",
    );
    let r = run(&text, &devices);
    assert!(!r.blocks());
    assert!(r.overridden);
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn one_reachable_server_is_enough_and_missing_peers_are_reported_unchecked() {
    let devices = vec![pump(1, "10.1.0.1"), server(8, "10.2.0.8"), server(9, "10.2.0.9")];
    let text = format!("{BASE}{}", ALLOW.replace("to = \"servers\"", "to = \"10.2.0.9\""));
    assert!(run(&text, &devices).findings.is_empty());
    // Only the other server reachable by address: still fine; none reachable: cut off.
    let text = format!("{BASE}{}", ALLOW.replace("to = \"servers\"", "to = \"10.2.0.7\""));
    assert_eq!(run(&text, &devices).findings.len(), 1);
    let alone = run(BASE, &[pump(1, "10.1.0.1")]);
    assert!(alone.findings.is_empty());
    assert!(
        alone.unchecked.iter().any(|u| u.contains(PUMP_COMM) && u.contains("no pump_server")),
        "{:?}",
        alone.unchecked
    );
}
