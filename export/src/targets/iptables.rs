//! iptables-restore (and ip6tables-restore for the IPv6 half): no ipsets are assumed, so
//! every rule names its addresses explicitly, one rule per source address and destination.
//! Layout mirrors the nftables export: `FORWARD` accepts replies, hands each segment's
//! traffic (its interface and subnets) to a `WL-<segment>` chain that ends in the segment's
//! default, and decides sources in no segment itself; its policy is the policy-wide default.
//!
//! Loading replaces the whole `filter` table (iptables-restore flushes it), which is what a
//! dedicated router wants; INPUT and OUTPUT keep their policies.

use super::nftables::check_ifname;
use super::{rule_label, scopes, Dst, Entry, ExportFile, Exporter};
use crate::error::ExportError;
use crate::model::{Action, PortRange, Protocol, ResolvedPolicy};
use crate::names::{comment_text, word_or_dash, NameRule, NameTable};
use std::fmt::Write;
use std::net::IpAddr;

pub struct Iptables;

const TARGET: &str = "iptables";
/// Chain names are limited to 28 characters by xtables.
const CHAINS: NameRule =
    NameRule { target: TARGET, max_len: 28, allowed: word_or_dash, replacement: '_', prefix: "WL-" };
/// `-m comment` takes up to 256 bytes.
const COMMENT_MAX: usize = 200;
/// `-m multiport` takes at most 15 ports, a range counting as two.
const MULTIPORT_SLOTS: usize = 15;

impl Exporter for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }
    fn file_name(&self) -> &'static str {
        "wardline.iptables"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        render_family(policy, true)
    }
    fn render_all(&self, policy: &ResolvedPolicy) -> Result<Vec<ExportFile>, ExportError> {
        Ok(vec![
            ExportFile { path: self.file_name().into(), bytes: render_family(policy, true)? },
            ExportFile { path: "wardline.ip6tables".into(), bytes: render_family(policy, false)? },
        ])
    }
}

/// The IPv4 (`iptables-restore`) or IPv6 (`ip6tables-restore`) file.
pub fn render_family(policy: &ResolvedPolicy, v4: bool) -> Result<Vec<u8>, ExportError> {
    let p = policy.canonical()?;
    let mut names = NameTable::new(CHAINS);
    let scopes = scopes(&p, TARGET)?;
    let mut o = String::new();
    let tool = if v4 { "iptables-restore" } else { "ip6tables-restore" };
    writeln!(o, "# {}", p.stamp()).unwrap();
    writeln!(o, "# Load with: {tool} < this file (replaces the filter table)").unwrap();
    writeln!(o, "*filter").unwrap();
    writeln!(o, ":FORWARD {} [0:0]", target(p.default_action)).unwrap();
    let mut chain_of = Vec::new();
    for s in &p.segments {
        check_ifname(&s.interface, &s.name)?;
        let chain = names.name(&s.name)?;
        writeln!(o, ":{chain} - [0:0]").unwrap();
        chain_of.push(chain);
    }
    writeln!(o, "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT").unwrap();
    for (s, chain) in p.segments.iter().zip(&chain_of) {
        for n in s.subnets.iter().filter(|n| n.is_ipv4() == v4) {
            writeln!(o, "-A FORWARD -i {} -s {n} -j {chain}", s.interface).unwrap();
        }
    }
    for n in p.segments.iter().flat_map(|s| s.subnets.iter()).filter(|n| n.is_ipv4() == v4) {
        writeln!(o, "-A FORWARD -s {n} -m comment --comment \"segment address on the wrong interface\" -j DROP")
            .unwrap();
    }
    for scope in &scopes {
        let chain = match scope.segment {
            Some(seg) => names.name(&seg.name)?,
            None => "FORWARD".to_string(),
        };
        for e in &scope.entries {
            rules_for(&mut o, &chain, e, v4);
        }
        if let Some(seg) = scope.segment {
            writeln!(
                o,
                "-A {chain} -m comment --comment \"default of segment {}\" -j {}",
                comment_text(&seg.name, 100),
                target(scope.default)
            )
            .unwrap();
        }
    }
    writeln!(o, "COMMIT").unwrap();
    Ok(o.into_bytes())
}

fn rules_for(o: &mut String, chain: &str, e: &Entry, v4: bool) {
    let srcs: Vec<IpAddr> = e.src.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
    let Some(dst) = e.dst.family(v4) else { return };
    let dsts: Vec<String> = match dst {
        Dst::Hosts(h) => h.iter().map(|a| host(*a)).collect(),
        Dst::Net(n) => vec![n.to_string()],
    };
    let proto_parts: Vec<String> = match e.rule.protocol {
        Protocol::Any => vec![String::new()],
        Protocol::Icmp => vec![if v4 { " -p icmp".into() } else { " -p ipv6-icmp".into() }],
        Protocol::Tcp | Protocol::Udp => {
            let proto = e.rule.protocol.as_str();
            if e.rule.ports.is_empty() {
                vec![format!(" -p {proto}")]
            } else if let [one] = e.rule.ports.as_slice() {
                vec![format!(" -p {proto} -m {proto} --dport {}", colon(one))]
            } else {
                multiport_chunks(&e.rule.ports)
                    .into_iter()
                    .map(|chunk| format!(" -p {proto} -m multiport --dports {chunk}"))
                    .collect()
            }
        }
    };
    let comment = comment_text(&rule_label(e.rule), COMMENT_MAX);
    for s in &srcs {
        for d in &dsts {
            for l4 in &proto_parts {
                writeln!(o, "-A {chain} -s {} -d {d}{l4} -m comment --comment \"{comment}\" -j ACCEPT", host(*s))
                    .unwrap();
            }
        }
    }
}

fn host(a: IpAddr) -> String {
    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
}

fn colon(r: &PortRange) -> String {
    if r.is_single() {
        r.start.to_string()
    } else {
        format!("{}:{}", r.start, r.end)
    }
}

/// Port lists split so each fits one `-m multiport` match.
fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut used = 0;
    for r in ports {
        let cost = if r.is_single() { 1 } else { 2 };
        if used + cost > MULTIPORT_SLOTS {
            chunks.push(cur.join(","));
            cur.clear();
            used = 0;
        }
        cur.push(colon(r));
        used += cost;
    }
    if !cur.is_empty() {
        chunks.push(cur.join(","));
    }
    chunks
}

fn target(a: Action) -> &'static str {
    match a {
        Action::Allow => "ACCEPT",
        Action::Deny => "DROP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_port_lists_are_split_for_multiport() {
        let ports: Vec<PortRange> = (1..=20).map(|p| PortRange::single(p * 10)).collect();
        let chunks = multiport_chunks(&ports);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].split(',').count(), 15);
        let ranges: Vec<PortRange> = (0..8).map(|i| PortRange { start: i * 100 + 1, end: i * 100 + 50 }).collect();
        assert!(multiport_chunks(&ranges).iter().all(|c| c.split(',').count() * 2 <= 15));
    }
}
