//! Cisco IOS / IOS XE: one named extended ACL per segment, applied inbound on the segment's
//! VLAN interface (`interface Vlan<id>`), plus an IPv6 ACL when the segment has IPv6 sources.
//! Sources in no segment get an ACL `WL-UNSEGMENTED-IN` (and `-IN6`) that is defined but
//! not applied: the operator applies it to the uplink those sources arrive on.
//!
//! IOS ACLs are stateless. Replies of allowed TCP sessions pass through
//! `permit tcp any any established` at the top of every ACL; replies of allowed UDP and
//! ICMP flows whose destination sits in a segment get an explicit return entry in that
//! segment's ACL. A rule with protocol `any` toward a segment cannot be told apart from
//! new traffic, so it is refused.

use super::{rule_label, scopes, Dst, Exporter};
use crate::error::ExportError;
use crate::model::{Action, Destination, IpCidr, Protocol, ResolvedPolicy};
use crate::names::{comment_text, word_or_dash, NameRule, NameTable};
use std::fmt::Write;
use std::net::IpAddr;

pub struct CiscoIos;

const TARGET: &str = "Cisco IOS";
/// ACL names: letters, digits, `_` and `-`, starting with a letter; kept to 64 characters.
const ACLS: NameRule = NameRule { target: TARGET, max_len: 60, allowed: word_or_dash, replacement: '_', prefix: "WL-" };
/// `remark` text is limited to 100 characters.
const REMARK_MAX: usize = 100;

impl Exporter for CiscoIos {
    fn name(&self) -> &'static str {
        "cisco-ios"
    }
    fn file_name(&self) -> &'static str {
        "wardline-ios.txt"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        let p = policy.canonical()?;
        let scopes = scopes(&p, TARGET)?;
        let mut names = NameTable::new(ACLS);
        let mut o = String::new();
        writeln!(o, "! {}", p.stamp()).unwrap();
        writeln!(o, "! Paste in configuration mode (configure terminal) or copy to running-config.").unwrap();
        for scope in &scopes {
            let base = match scope.segment {
                Some(s) => names.name(&s.name)?,
                None => names.name("UNSEGMENTED")?,
            };
            for v4 in [true, false] {
                let in_scope = |a: &IpAddr| match scope.segment {
                    Some(s) => s.subnets.iter().any(|n| n.contains(*a)),
                    None => p.segment_of(*a).is_none(),
                };
                let mut aces = Vec::new();
                for e in &scope.entries {
                    let Some(dst) = e.dst.family(v4) else { continue };
                    let srcs: Vec<IpAddr> = e.src.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
                    if srcs.is_empty() {
                        continue;
                    }
                    aces.push(format!(" remark {}", comment_text(&rule_label(e.rule), REMARK_MAX - 1)));
                    let dsts: Vec<String> = match &dst {
                        Dst::Hosts(h) => h.iter().map(|a| format!("host {a}")).collect(),
                        Dst::Net(n) => vec![net(n)],
                    };
                    for s in &srcs {
                        for d in &dsts {
                            for l4 in l4_specs(e.rule.protocol, &e.rule.ports) {
                                let (proto, ports) = l4;
                                aces.push(format!(" permit {} host {s} {d}{ports}", proto_word(proto, v4)));
                            }
                        }
                    }
                }
                // Return entries for stateless UDP/ICMP replies from destinations in this scope.
                for other in &scopes {
                    for e in &other.entries {
                        let Destination::Group(g) = &e.rule.destination else { continue };
                        let dst_here: Vec<IpAddr> = p
                            .group(g)
                            .expect("validated")
                            .addresses()
                            .into_iter()
                            .filter(|a| a.is_ipv4() == v4 && in_scope(a))
                            .collect();
                        let srcs: Vec<IpAddr> = e.src.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
                        if dst_here.is_empty() || srcs.is_empty() {
                            continue;
                        }
                        let mut ret = Vec::new();
                        for d in &dst_here {
                            for s in &srcs {
                                match e.rule.protocol {
                                    Protocol::Tcp => {}
                                    Protocol::Udp => {
                                        for r in ports_or_all(&e.rule.ports) {
                                            ret.push(format!(" permit udp host {d}{r} host {s}"));
                                        }
                                    }
                                    Protocol::Icmp => ret.push(format!(" permit icmp host {d} host {s} echo-reply")),
                                    Protocol::Any => {
                                        return Err(ExportError::unsupported(
                                            TARGET,
                                            format!(
                                                "rule {:?}: protocol any toward a segment (stateless ACLs cannot \
                                                 tell its replies from new traffic)",
                                                e.rule.id
                                            ),
                                        ))
                                    }
                                }
                            }
                        }
                        if !ret.is_empty() {
                            aces.push(format!(
                                " remark replies of {}",
                                comment_text(&rule_label(e.rule), REMARK_MAX - 12)
                            ));
                            aces.extend(ret);
                        }
                    }
                }
                let has_subnets = scope.segment.is_some_and(|s| s.subnets.iter().any(|n| n.is_ipv4() == v4));
                if !has_subnets && aces.is_empty() {
                    continue;
                }
                let (kind, name, any_word, filter) = if v4 {
                    ("ip access-list extended", format!("{base}-IN"), "ip", "ip access-group")
                } else {
                    ("ipv6 access-list", format!("{base}-IN6"), "ipv6", "ipv6 traffic-filter")
                };
                writeln!(o, "!").unwrap();
                writeln!(o, "no {kind} {name}").unwrap();
                writeln!(o, "{kind} {name}").unwrap();
                let what = match scope.segment {
                    Some(s) => format!("segment {} VLAN {}", s.name, s.vlan),
                    None => "sources in no segment; apply inbound on the uplink".into(),
                };
                writeln!(o, " remark {}", comment_text(&format!("{} - {what}", p.stamp_plain()), REMARK_MAX - 1))
                    .unwrap();
                writeln!(o, " remark replies of allowed TCP sessions").unwrap();
                writeln!(o, " permit tcp any any established").unwrap();
                for a in aces {
                    writeln!(o, "{a}").unwrap();
                }
                if !v4 {
                    // An explicit final deny would also drop neighbour discovery, which the
                    // implicit IPv6 ACL end permits.
                    writeln!(o, " remark neighbour discovery").unwrap();
                    for nd in ["nd-na", "nd-ns", "router-solicitation"] {
                        writeln!(o, " permit icmp any any {nd}").unwrap();
                    }
                }
                let verb = if scope.default == Action::Allow { "permit" } else { "deny" };
                writeln!(o, " remark default").unwrap();
                writeln!(o, " {verb} {any_word} any any").unwrap();
                if let Some(s) = scope.segment {
                    writeln!(o, "!").unwrap();
                    writeln!(o, "interface Vlan{}", s.vlan).unwrap();
                    writeln!(o, " {filter} {name} in").unwrap();
                }
            }
        }
        writeln!(o, "end").unwrap();
        Ok(o.into_bytes())
    }
}

fn net(n: &IpCidr) -> String {
    match n.wildcard_v4() {
        Some(_) if n.is_host() => format!("host {}", n.addr),
        Some(w) => format!("{} {w}", n.addr),
        None if n.is_host() => format!("host {}", n.addr),
        None => n.to_string(),
    }
}

fn proto_word(p: Protocol, v4: bool) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Any if v4 => "ip",
        Protocol::Any => "ipv6",
    }
}

/// ` eq 443`, ` range 8000 8080`, or nothing for every port.
fn ports_or_all(ports: &[crate::model::PortRange]) -> Vec<String> {
    if ports.is_empty() {
        return vec![String::new()];
    }
    ports
        .iter()
        .map(|r| if r.is_single() { format!(" eq {}", r.start) } else { format!(" range {} {}", r.start, r.end) })
        .collect()
}

fn l4_specs(p: Protocol, ports: &[crate::model::PortRange]) -> Vec<(Protocol, String)> {
    match p {
        Protocol::Tcp | Protocol::Udp => ports_or_all(ports).into_iter().map(|s| (p, s)).collect(),
        _ => vec![(p, String::new())],
    }
}
