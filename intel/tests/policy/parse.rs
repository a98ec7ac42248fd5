//! The policy file: parsing, validation errors with lines, canonical text and diffs.

use super::support::policy;
use wardline_intel::policy::{diff, parse_policy, Action, Change, Endpoint, PortRange};
use wardline_intel::Transport;

pub const EXAMPLE: &str = r#"# St Mary's, first enforcement
[policy]
name = "st-mary"
default = "deny"

[[group]]
name = "pumps"
match = 'class in ["infusion_pump", "pca_pump"]'

[[group]]
name = "pump_servers"
match = 'class == "pump_server"'
members = ["00:1b:00:00:00:63"]

[[group]]
name = "vulnerable_pumps"
match = 'class == "infusion_pump" and vulnerable'
exclude = ["00:1b:00:00:00:01"]

[[scope]]
group = "pumps"
default = "monitor"

[[rule]]
name = "pumps to server"
from = "pumps"
to = ["pump_servers"]
protocol = "tcp"
ports = [3613]
app = "Alaris"

[[rule]]
name = "vendor cloud"
from = ["pump_servers"]
to = ["domain:updates.vendor.example", "203.0.113.0/24"]
protocol = "tcp"
ports = [443, "8443-8450", 8444]

[[rule]]
name = "no telnet"
from = "any"
to = ["pumps", "any"]
protocol = "tcp"
ports = ["23"]
action = "deny"
"#;

#[test]
fn example_parses_to_the_expected_policy() {
    let p = policy(EXAMPLE);
    assert_eq!(p.name, "st-mary");
    assert_eq!(p.default, Action::Deny);
    assert!(!p.life_sustaining_override);
    let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["pump_servers", "pumps", "vulnerable_pumps"]);
    assert_eq!(p.scopes[0].group, "pumps");
    assert_eq!(p.scopes[0].default, Action::Monitor);
    let r = &p.rules[0];
    assert_eq!(
        (r.name.as_str(), r.line, r.protocol, r.app.as_deref()),
        ("pumps to server", 24, Transport::Tcp, Some("alaris"))
    );
    assert_eq!(r.from, vec![Endpoint::Group("pumps".into())]);
    let cloud = &p.rules[1];
    assert_eq!(cloud.ports, vec![PortRange { lo: 443, hi: 443 }, PortRange { lo: 8443, hi: 8450 }]);
    assert_eq!(cloud.to.len(), 2);
    assert!(cloud.to.contains(&Endpoint::Domain("updates.vendor.example".into())));
    // `any` beside other endpoints is just `any`.
    assert_eq!(p.rules[2].to, vec![Endpoint::Any]);
    assert_eq!(p.rules[2].action, Action::Deny);
    assert_eq!(p.rules[2].protocol, Transport::Tcp);
}

/// Replace `from` with `to` in the example (exactly once) and return the errors.
fn errors_after(from: &str, to: &str) -> Vec<(usize, String)> {
    assert_eq!(EXAMPLE.matches(from).count(), 1, "{from:?} must occur once");
    let text = EXAMPLE.replace(from, to);
    let e = parse_policy("site.toml", &text).expect_err("invalid policy");
    let shown = e.to_string();
    assert!(shown.contains("nothing was applied") && shown.contains("site.toml:"), "{shown}");
    e.errors.into_iter().map(|e| (e.line, e.message)).collect()
}

fn assert_one(errors: Vec<(usize, String)>, line: usize, needle: &str) {
    assert!(
        errors.iter().any(|(l, m)| *l == line && m.contains(needle)),
        "expected line {line} containing {needle:?}, got {errors:?}"
    );
}

#[test]
fn validation_errors_name_the_line_and_the_problem() {
    assert_one(
        errors_after(r#"to = ["pump_servers"]"#, r#"to = ["pump_server"]"#),
        27,
        "unknown group \"pump_server\"",
    );
    assert_one(errors_after(r#""203.0.113.0/24""#, r#""203.0.113/24""#), 35, "not an IP network");
    assert_one(errors_after("ports = [3613]", "ports = [0]"), 29, "port 0 is outside 1-65535");
    assert_one(errors_after("ports = [3613]", "ports = [70000]"), 29, "outside 1-65535");
    assert_one(errors_after(r#""8443-8450""#, r#""8450-8443""#), 37, "runs backwards");
    assert_one(errors_after(r#"ports = ["23"]"#, r#"ports = ["telnet"]"#), 44, "not a port number");
    assert_one(errors_after(r#"name = "vendor cloud""#, r#"name = "pumps to server""#), 33, "used twice");
    assert_one(errors_after(r#"name = "vulnerable_pumps""#, r#"name = "pumps""#), 16, "defined twice");
    assert_one(
        errors_after(
            r#"protocol = "tcp"
ports = [3613]"#,
            r#"protocol = "icmp"
ports = [3613]"#,
        ),
        28,
        "protocol \"icmp\"",
    );
    assert_one(errors_after(r#"action = "deny""#, r#"action = "block""#), 45, "not an action");
    assert_one(errors_after(r#"default = "monitor""#, r#"default = "maybe""#), 22, "not an action");
    assert_one(errors_after(r#"group = "pumps""#, r#"group = "pumpz""#), 21, "scope: unknown group");
    assert_one(errors_after("and vulnerable", "and vulnerabel"), 17, "unknown attribute `vulnerabel`");
    assert_one(
        errors_after(r#"exclude = ["00:1b:00:00:00:01"]"#, r#"exclude = ["00:1b:00:00:01"]"#),
        18,
        "invalid MAC",
    );
    assert_one(errors_after(r#"from = "pumps""#, r#"from = "domain:x.example""#), 26, "only be a destination");
    assert_one(errors_after(r#"from = "pumps""#, "from = []"), 26, "is empty");
    assert_one(errors_after("ports = [3613]", "ports = []"), 29, "allows nothing");
    assert_one(errors_after(r#"name = "pumps""#, r#"name = "any""#), 7, "not any, external or internal");
    // Unknown keys (a misspelt field) and TOML syntax errors come from the TOML parser,
    // located by its span.
    assert_one(errors_after("app = \"Alaris\"", "aplication = \"Alaris\""), 30, "unknown field `aplication`");
    assert_one(errors_after(r#"default = "deny""#, r#"default = "deny"#), 4, "");
    assert_one(
        errors_after(
            r#"default = "deny""#,
            r#"default = "deny"
life_sustaining_override = true"#,
        ),
        2,
        "needs override_reason",
    );
    let e = parse_policy("x", "[[group]]\nname = \"a\"\nmembers = [\"00:00:00:00:00:01\"]\n").expect_err("no header");
    assert!(e.errors[0].message.contains("no [policy] table"), "{e}");
    let e = parse_policy("x", "[policy]\nname = \"p\"\ndefault = \"deny\"\n[[group]]\nname = \"g\"\n")
        .expect_err("empty group");
    assert_eq!(e.errors[0].line, 4, "{e}");
    assert!(e.errors[0].message.contains("neither match nor members"), "{e}");
}

#[test]
fn all_problems_are_reported_together() {
    let text = EXAMPLE.replace("ports = [3613]", "ports = [0]").replace(r#"to = ["pump_servers"]"#, r#"to = ["nope"]"#);
    let e = parse_policy("x", &text).expect_err("two problems");
    let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [27, 29], "{e}");
}

#[test]
fn override_with_reason_is_accepted() {
    let text = EXAMPLE.replace(
        r#"default = "deny""#,
        "default = \"deny\"\nlife_sustaining_override = true\noverride_reason = \"pumps move to wired VLAN 40, CE on call (J. Doe)\"",
    );
    let p = policy(&text);
    assert!(p.life_sustaining_override);
    assert!(p.override_reason.as_deref().is_some_and(|r| r.contains("J. Doe")));
}

#[test]
fn canonical_text_is_stable_and_round_trips() {
    let p = policy(EXAMPLE);
    let canon = p.to_canonical();
    let again = policy(&canon);
    assert_eq!(again.to_canonical(), canon);
    assert!(diff(&p, &again).is_empty());
    // Comments, key order, group order, list order, port spelling and expression spacing
    // do not change the canonical text.
    let shuffled = r#"
[[group]]
match = '   class=="pump_server"'
members = ["00:1B:00:00:00:63"]
name = "pump_servers"

[[group]]
name = "vulnerable_pumps"
exclude = ["00-1b-00-00-00-01"]
match = 'CLASS == "infusion_pump" AND vulnerable'

[[group]]
name = "pumps"
match = 'class in ["infusion_pump", "pca_pump"]'

[policy]
default = "deny"
name = "st-mary"

[[scope]]
default = "monitor"
group = "pumps"

[[rule]]
name = "pumps to server"
to = "pump_servers"
from = ["pumps"]
ports = ["3613-3613"]
protocol = "tcp"
app = "ALARIS"

[[rule]]
name = "vendor cloud"
from = ["pump_servers"]
to = ["203.0.113.9/24", "domain:Updates.Vendor.Example."]
protocol = "tcp"
ports = ["8444-8450", 443, 8443]

[[rule]]
name = "no telnet"
action = "deny"
from = "any"
to = ["any"]
protocol = "tcp"
ports = [23]
"#;
    assert_eq!(policy(shuffled).to_canonical(), canon);
    assert!(canon.starts_with("[policy]\nname = \"st-mary\"\n"), "{canon}");
}

#[test]
fn diff_lists_what_changed() {
    let before = policy(EXAMPLE);
    let text = EXAMPLE
        .replace(r#"default = "deny""#, r#"default = "monitor""#)
        .replace("ports = [3613]", "ports = [3613, 3614]")
        .replace(r#"match = 'class == "pump_server"'"#, r#"match = 'class == "pump_server" or tag == "pumps"'"#)
        .replace("[[rule]]\nname = \"no telnet\"", "[[rule]]\nname = \"dns\"\nfrom = \"any\"\nto = \"internal\"\nprotocol = \"udp\"\nports = [53]\n\n[[rule]]\nname = \"no telnet\"")
        .replace("[[group]]\nname = \"vulnerable_pumps\"\nmatch = 'class == \"infusion_pump\" and vulnerable'\nexclude = [\"00:1b:00:00:00:01\"]\n", "");
    let after = policy(&text);
    let d = diff(&before, &after);
    let shown = d.to_string();
    assert!(
        d.changes.contains(&Change::Setting { key: "default".into(), before: "deny".into(), after: "monitor".into() }),
        "{shown}"
    );
    assert!(d.changes.contains(&Change::GroupRemoved { name: "vulnerable_pumps".into() }), "{shown}");
    assert!(
        d.changes.contains(&Change::RuleChanged {
            name: "pumps to server".into(),
            key: "ports".into(),
            before: "3613".into(),
            after: "3613-3614".into()
        }),
        "{shown}"
    );
    assert!(
        shown.contains(
            "~ group pump_servers match: class == \"pump_server\" -> class == \"pump_server\" or tag == \"pumps\""
        ),
        "{shown}"
    );
    assert!(shown.contains("+ rule dns (#3): any -> internal udp/53 allow"), "{shown}");
    // Swapping two rules is a change in meaning (first match decides).
    let swapped = EXAMPLE.replace("[[rule]]\nname = \"no telnet\"\nfrom = \"any\"\nto = [\"pumps\", \"any\"]\nprotocol = \"tcp\"\nports = [\"23\"]\naction = \"deny\"\n", "");
    let swapped = swapped.replace("[[rule]]\nname = \"pumps to server\"", "[[rule]]\nname = \"no telnet\"\nfrom = \"any\"\nto = \"any\"\nprotocol = \"tcp\"\nports = [23]\naction = \"deny\"\n\n[[rule]]\nname = \"pumps to server\"");
    let d = diff(&before, &policy(&swapped));
    assert!(d.changes.contains(&Change::RuleMoved { name: "no telnet".into(), before: 3, after: 1 }), "{d}");
    assert!(diff(&before, &before).is_empty());
    assert_eq!(diff(&before, &before).to_string(), "no changes");
}

#[test]
fn groups_naming_ids_the_knowledge_base_lacks_are_warned_about() {
    let text = EXAMPLE.replace(
        r#"match = 'class == "pump_server"'"#,
        r#"match = 'class == "pump_servers" or (vendor == "BD" and not os == "windows_95_medical")'"#,
    );
    let p = policy(&text);
    let w = wardline_intel::policy::kb_warnings(&p, super::support::kb());
    let shown: Vec<String> = w.iter().map(|e| format!("{}: {}", e.line, e.message)).collect();
    assert_eq!(w.len(), 2, "{shown:?}");
    assert!(
        shown[0].starts_with("10: group \"pump_servers\": class \"pump_servers\" is not in the knowledge base"),
        "{shown:?}"
    );
    assert!(shown[1].contains("os \"windows_95_medical\""), "{shown:?}");
    assert!(wardline_intel::policy::kb_warnings(&policy(EXAMPLE), super::support::kb()).is_empty());
}
