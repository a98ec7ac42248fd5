//! Cisco ISE: per group, a downloadable ACL (the DACL an authorization profile hands to the
//! switch for each endpoint of the group) and an endpoint identity group holding the
//! group's MACs. The main output is the list of ERS API calls that create them, in order;
//! each DACL's text is also written on its own (`dacl/<name>.txt`) for review or pasting
//! into the ISE GUI.
//!
//! ERS formats (`/ers/config/downloadableacl`, `/ers/config/endpointgroup`,
//! `/ers/config/endpoint`) follow Cisco's ERS API. An endpoint needs its group's UUID,
//! which ISE assigns on creation: `groupId` carries the placeholder
//! `{{endpointgroup:<name>}}`, resolved with `GET /ers/config/endpointgroup/name/<name>`.
//!
//! A DACL filters what its endpoint sends, statelessly: it starts by permitting replies of
//! TCP sessions, lists the group's rules with source `any` (the endpoint itself), adds
//! explicit reply entries for UDP and ICMP flows toward the group, and ends with the
//! group's default.

use super::{group_default, group_of_mac, ExportFile, Exporter};
use crate::error::ExportError;
use crate::model::{Action, Destination, IpCidr, PortRange, Protocol, ResolvedPolicy};
use crate::names::{comment_text, NameRule, NameTable};
use serde_json::json;
use std::net::IpAddr;

pub struct CiscoIse;

const TARGET: &str = "Cisco ISE";
/// ISE accepts `[\w\d_\-\. ]` in DACL and group names; spaces are avoided so names survive
/// URLs and CLIs unquoted.
const NAMES: NameRule = NameRule {
    target: TARGET,
    max_len: 64,
    allowed: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'),
    replacement: '_',
    prefix: "WL_",
};

impl Exporter for CiscoIse {
    fn name(&self) -> &'static str {
        "cisco-ise"
    }
    fn file_name(&self) -> &'static str {
        "ise-ers.json"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Ok(self.render_all(policy)?.remove(0).bytes)
    }
    fn render_all(&self, policy: &ResolvedPolicy) -> Result<Vec<ExportFile>, ExportError> {
        let p = policy.canonical()?;
        let macs = group_of_mac(&p, TARGET)?;
        let mut names = NameTable::new(NAMES);
        let mut requests = Vec::new();
        let mut files = Vec::new();
        for g in &p.groups {
            let name = names.name(&g.name)?;
            let lines = dacl_lines(&p, &g.name)?;
            let v6 = g.addresses().iter().any(|a| a.is_ipv6());
            let text = lines.join("\n");
            files.push(ExportFile { path: format!("dacl/{name}.txt"), bytes: format!("{text}\n").into_bytes() });
            let description = comment_text(&format!("{} - group {}", p.stamp_plain(), g.name), 200);
            requests.push(json!({
                "method": "POST",
                "path": "/ers/config/downloadableacl",
                "body": { "DownloadableAcl": {
                    "name": name,
                    "description": description,
                    "dacl": text,
                    "daclType": if v6 { "IP_AGNOSTIC" } else { "IPV4" },
                }},
            }));
            requests.push(json!({
                "method": "POST",
                "path": "/ers/config/endpointgroup",
                "body": { "EndPointGroup": { "name": name, "description": description } },
            }));
        }
        for (mac, (g, m)) in &macs {
            let group = names.name(&g.name)?;
            let mut description = format!("{} - group {}", p.stamp_plain(), g.name);
            if let Some(site) = &m.site {
                description.push_str(&format!(" - site {site}"));
            }
            requests.push(json!({
                "method": "POST",
                "path": "/ers/config/endpoint",
                "body": { "ERSEndPoint": {
                    "name": ise_mac(mac),
                    "mac": ise_mac(mac),
                    "description": comment_text(&description, 200),
                    "groupId": format!("{{{{endpointgroup:{group}}}}}"),
                    "staticGroupAssignment": true,
                }},
            }));
        }
        let doc = json!({
            "wardline": { "policy": p.name, "version": p.version, "target": "cisco-ise" },
            "requests": requests,
        });
        let mut main = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        main.push('\n');
        files.insert(0, ExportFile { path: self.file_name().into(), bytes: main.into_bytes() });
        Ok(files)
    }
}

/// `00:1A:2B:00:01:10`, the form ISE shows.
fn ise_mac(mac: &wardline_common::MacAddr) -> String {
    mac.to_string().to_uppercase()
}

fn dacl_lines(p: &ResolvedPolicy, group: &str) -> Result<Vec<String>, ExportError> {
    let g = p.group(group).expect("validated");
    // The stamp travels in the DACL itself (a `remark` entry) so a switch's
    // `show access-lists` names the policy version it enforces.
    let mut out = vec![
        format!("remark {}", comment_text(&format!("{} group {}", p.stamp_plain(), g.name), 90)),
        "permit tcp any any established".to_string(),
    ];
    // Only address families the group's endpoints use: they send nothing else.
    let own = g.addresses();
    let fam = |a: &IpAddr| own.iter().any(|o| o.is_ipv4() == a.is_ipv4());
    for r in p.rules.iter().filter(|r| r.source == group) {
        let dsts: Vec<String> = match &r.destination {
            Destination::Group(d) => p
                .group(d)
                .expect("validated")
                .addresses()
                .iter()
                .filter(|a| fam(a))
                .map(|a| format!("host {a}"))
                .collect(),
            Destination::Cidr(n) if fam(&n.addr) => vec![net(n)],
            Destination::Cidr(_) => vec![],
            Destination::Domain(d) => {
                return Err(ExportError::unsupported(
                    TARGET,
                    format!("rule {:?}: domain destination {d:?} in a downloadable ACL", r.id),
                ))
            }
        };
        for d in dsts {
            for ports in port_specs(r.protocol, &r.ports) {
                out.push(format!("permit {} any {d}{ports}", proto_word(r.protocol)));
            }
        }
    }
    // Replies this group's endpoints send back to flows that other rules allow toward them.
    for r in p.rules.iter().filter(|r| matches!(&r.destination, Destination::Group(d) if d == group)) {
        let srcs: Vec<IpAddr> = p.group(&r.source).expect("validated").addresses().into_iter().filter(fam).collect();
        let mut ret = Vec::new();
        for s in &srcs {
            match r.protocol {
                Protocol::Tcp => {}
                Protocol::Udp => {
                    for ports in port_specs(Protocol::Udp, &r.ports) {
                        ret.push(format!("permit udp any{ports} host {s}"));
                    }
                }
                Protocol::Icmp => ret.push(format!("permit icmp any host {s} echo-reply")),
                Protocol::Any => {
                    return Err(ExportError::unsupported(
                        TARGET,
                        format!("rule {:?}: protocol any toward group {group:?} (a DACL cannot tell its replies from new traffic)", r.id),
                    ))
                }
            }
        }
        out.extend(ret);
    }
    out.push(match group_default(p, g, TARGET)? {
        Action::Allow => "permit ip any any".into(),
        Action::Deny => "deny ip any any".into(),
    });
    Ok(out)
}

fn net(n: &IpCidr) -> String {
    match n.wildcard_v4() {
        _ if n.is_host() => format!("host {}", n.addr),
        Some(w) => format!("{} {w}", n.addr),
        None => n.to_string(),
    }
}

fn proto_word(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Any => "ip",
    }
}

fn port_specs(p: Protocol, ports: &[PortRange]) -> Vec<String> {
    if !matches!(p, Protocol::Tcp | Protocol::Udp) || ports.is_empty() {
        return vec![String::new()];
    }
    ports
        .iter()
        .map(|r| if r.is_single() { format!(" eq {}", r.start) } else { format!(" range {} {}", r.start, r.end) })
        .collect()
}
