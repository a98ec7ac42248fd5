//! Fortinet FortiOS CLI: address objects per member address (`firewall address` and
//! `address6`), one per external network and FQDN, an address group per policy group and
//! family, a custom service per rule with ports, and firewall policies in policy order:
//! one per rule, then per segment its default (source interface the segment's, addresses
//! `all`), then, when the policy-wide default is allow, a final accept from any interface.
//! FortiGate sessions are stateful, so replies need no entries. Policy ids start at
//! 10000, a range kept for Wardline so a reload overwrites its own policies only.
//!
//! Interfaces: a rule's `srcintf` is the interfaces of the segments its source members sit
//! in (`any` if one sits in none); `dstintf` likewise for a group destination and `any` for
//! networks and domains.

use super::{rule_label, Exporter};
use crate::error::ExportError;
use crate::model::{Action, Destination, IpCidr, Protocol, ResolvedPolicy};
use crate::names::{comment_text, NameRule, NameTable};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

pub struct FortiOs;

const TARGET: &str = "FortiOS";
fn fortios_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}
/// Address, group and service names: up to 79 characters.
const OBJECTS: NameRule =
    NameRule { target: TARGET, max_len: 79, allowed: fortios_char, replacement: '_', prefix: "wl-" };
/// Policy names: up to 35 characters.
const POLICIES: NameRule =
    NameRule { target: TARGET, max_len: 35, allowed: fortios_char, replacement: '_', prefix: "wl-" };
const FIRST_POLICY_ID: u32 = 10000;

impl Exporter for FortiOs {
    fn name(&self) -> &'static str {
        "fortios"
    }
    fn file_name(&self) -> &'static str {
        "fortios.conf"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        let p = policy.canonical()?;
        let mut objs = NameTable::new(OBJECTS);
        let mut pols = NameTable::new(POLICIES);
        let stamp = comment_text(&p.stamp_plain(), 200);
        let mut o = String::new();
        writeln!(o, "# {}", p.stamp()).unwrap();

        // Addresses: every member address, every network and domain a rule names.
        let mut hosts: BTreeSet<IpAddr> = p.groups.iter().flat_map(|g| g.addresses()).collect();
        let mut nets: BTreeSet<IpCidr> = BTreeSet::new();
        let mut fqdns: BTreeSet<&str> = BTreeSet::new();
        for r in &p.rules {
            match &r.destination {
                Destination::Cidr(n) if n.is_host() => {
                    hosts.insert(n.addr);
                }
                Destination::Cidr(n) => {
                    nets.insert(*n);
                }
                Destination::Domain(d) => {
                    fqdns.insert(d);
                }
                Destination::Group(_) => {}
            }
        }
        let host_name = |objs: &mut NameTable, a: &IpAddr| objs.name(&a.to_string());
        let net_name = |objs: &mut NameTable, n: &IpCidr| objs.name(&format!("net-{}", n));
        for v4 in [true, false] {
            let mut block = String::new();
            for a in hosts.iter().filter(|a| a.is_ipv4() == v4) {
                let name = host_name(&mut objs, a)?;
                writeln!(block, "    edit \"{name}\"").unwrap();
                if v4 {
                    writeln!(block, "        set subnet {a} 255.255.255.255").unwrap();
                } else {
                    writeln!(block, "        set ip6 {a}/128").unwrap();
                }
                writeln!(block, "        set comment \"{stamp}\"").unwrap();
                writeln!(block, "    next").unwrap();
            }
            for n in nets.iter().filter(|n| n.is_ipv4() == v4) {
                let name = net_name(&mut objs, n)?;
                writeln!(block, "    edit \"{name}\"").unwrap();
                match n.netmask_v4() {
                    Some(m) => writeln!(block, "        set subnet {} {m}", n.addr).unwrap(),
                    None => writeln!(block, "        set ip6 {n}").unwrap(),
                }
                writeln!(block, "        set comment \"{stamp}\"").unwrap();
                writeln!(block, "    next").unwrap();
            }
            if v4 {
                for d in &fqdns {
                    let name = objs.name(&format!("fqdn-{d}"))?;
                    writeln!(block, "    edit \"{name}\"").unwrap();
                    writeln!(block, "        set type fqdn").unwrap();
                    writeln!(block, "        set fqdn \"{d}\"").unwrap();
                    writeln!(block, "        set comment \"{stamp}\"").unwrap();
                    writeln!(block, "    next").unwrap();
                }
            }
            if !block.is_empty() {
                writeln!(o, "config firewall {}", if v4 { "address" } else { "address6" }).unwrap();
                o.push_str(&block);
                writeln!(o, "end").unwrap();
            }
        }
        // Address groups, one per group and family that has members (FortiOS refuses empty groups).
        for v4 in [true, false] {
            let mut block = String::new();
            for g in &p.groups {
                let members: Vec<String> = g
                    .addresses()
                    .iter()
                    .filter(|a| a.is_ipv4() == v4)
                    .map(|a| host_name(&mut objs, a).map(|n| format!("\"{n}\"")))
                    .collect::<Result<_, _>>()?;
                if members.is_empty() {
                    continue;
                }
                let name = objs.name(&format!("grp-{}{}", g.name, if v4 { "" } else { "-v6" }))?;
                writeln!(block, "    edit \"{name}\"").unwrap();
                writeln!(block, "        set member {}", members.join(" ")).unwrap();
                writeln!(block, "        set comment \"{stamp} group {}\"", comment_text(&g.name, 100)).unwrap();
                writeln!(block, "    next").unwrap();
            }
            if !block.is_empty() {
                writeln!(o, "config firewall {}", if v4 { "addrgrp" } else { "addrgrp6" }).unwrap();
                o.push_str(&block);
                writeln!(o, "end").unwrap();
            }
        }
        // Services for rules with ports.
        let mut block = String::new();
        for r in p.rules.iter().filter(|r| matches!(r.protocol, Protocol::Tcp | Protocol::Udp)) {
            if r.ports.is_empty() {
                continue;
            }
            let name = objs.name(&format!("svc-{}", r.id))?;
            let ranges: Vec<String> = r.ports.iter().map(|x| x.to_string()).collect();
            writeln!(block, "    edit \"{name}\"").unwrap();
            writeln!(block, "        set {}-portrange {}", r.protocol.as_str(), ranges.join(" ")).unwrap();
            writeln!(block, "        set comment \"{}\"", comment_text(&rule_label(r), 200)).unwrap();
            writeln!(block, "    next").unwrap();
        }
        if !block.is_empty() {
            writeln!(o, "config firewall service custom").unwrap();
            o.push_str(&block);
            writeln!(o, "end").unwrap();
        }

        writeln!(o, "config firewall policy").unwrap();
        let mut id = FIRST_POLICY_ID;
        let intfs_of = |addrs: &[IpAddr]| -> String {
            let mut set = BTreeSet::new();
            for a in addrs {
                match p.segment_of(*a) {
                    Some(s) => set.insert(s.interface.as_str()),
                    None => return "\"any\"".to_string(),
                };
            }
            if set.is_empty() {
                return "\"any\"".to_string();
            }
            set.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(" ")
        };
        for r in &p.rules {
            let src = p.group(&r.source).expect("validated");
            let src_addrs = src.addresses();
            let mut addr_lines = Vec::new();
            let (dst_addrs, dstintf): (Vec<IpAddr>, String) = match &r.destination {
                Destination::Group(g) => {
                    let a = p.group(g).expect("validated").addresses();
                    let i = intfs_of(&a);
                    (a, i)
                }
                _ => (vec![], "\"any\"".into()),
            };
            for v4 in [true, false] {
                let (suffix, six) = if v4 { ("", "") } else { ("-v6", "6") };
                if !src_addrs.iter().any(|a| a.is_ipv4() == v4) {
                    continue;
                }
                let dst = match &r.destination {
                    Destination::Group(g) if dst_addrs.iter().any(|a| a.is_ipv4() == v4) => {
                        Some(objs.name(&format!("grp-{g}{suffix}"))?)
                    }
                    Destination::Group(_) => None,
                    Destination::Cidr(n) if n.is_ipv4() == v4 && n.is_host() => Some(host_name(&mut objs, &n.addr)?),
                    Destination::Cidr(n) if n.is_ipv4() == v4 => Some(net_name(&mut objs, n)?),
                    Destination::Cidr(_) => None,
                    Destination::Domain(d) if v4 => Some(objs.name(&format!("fqdn-{d}"))?),
                    Destination::Domain(_) => None,
                };
                if let Some(dst) = dst {
                    let srcname = objs.name(&format!("grp-{}{suffix}", src.name))?;
                    addr_lines.push(format!("        set srcaddr{six} \"{srcname}\""));
                    addr_lines.push(format!("        set dstaddr{six} \"{dst}\""));
                }
            }
            if addr_lines.is_empty() {
                // No address family shared by source and destination: nothing can match.
                writeln!(o, "    # {} skipped: source and destination share no address family", rule_label(r)).unwrap();
                continue;
            }
            let service = match r.protocol {
                Protocol::Any => "\"ALL\"".to_string(),
                Protocol::Icmp => "\"ALL_ICMP\" \"ALL_ICMP6\"".to_string(),
                Protocol::Tcp | Protocol::Udp if r.ports.is_empty() => {
                    format!("\"ALL_{}\"", r.protocol.as_str().to_uppercase())
                }
                Protocol::Tcp | Protocol::Udp => format!("\"{}\"", objs.name(&format!("svc-{}", r.id))?),
            };
            writeln!(o, "    edit {id}").unwrap();
            writeln!(o, "        set name \"{}\"", pols.name(&r.id)?).unwrap();
            writeln!(o, "        set srcintf {}", intfs_of(&src_addrs)).unwrap();
            writeln!(o, "        set dstintf {dstintf}").unwrap();
            for l in addr_lines {
                writeln!(o, "{l}").unwrap();
            }
            writeln!(o, "        set action accept").unwrap();
            writeln!(o, "        set schedule \"always\"").unwrap();
            writeln!(o, "        set service {service}").unwrap();
            writeln!(o, "        set comments \"{} - {stamp}\"", comment_text(&rule_label(r), 200)).unwrap();
            writeln!(o, "    next").unwrap();
            id += 1;
        }
        let mut defaults: Vec<(String, String, Action, String)> = p
            .segments
            .iter()
            .map(|s| (format!("default-{}", s.name), format!("\"{}\"", s.interface), s.default_action, s.name.clone()))
            .collect();
        if p.default_action == Action::Allow {
            defaults.push(("default".into(), "\"any\"".into(), Action::Allow, "sources in no segment".into()));
        }
        let has_v6 = p.segments.iter().any(|s| s.subnets.iter().any(|n| !n.is_ipv4()))
            || p.groups.iter().any(|g| g.addresses().iter().any(|a| a.is_ipv6()));
        for (name, srcintf, action, what) in defaults {
            writeln!(o, "    edit {id}").unwrap();
            writeln!(o, "        set name \"{}\"", pols.name(&name)?).unwrap();
            writeln!(o, "        set srcintf {srcintf}").unwrap();
            writeln!(o, "        set dstintf \"any\"").unwrap();
            writeln!(o, "        set srcaddr \"all\"").unwrap();
            writeln!(o, "        set dstaddr \"all\"").unwrap();
            if has_v6 {
                writeln!(o, "        set srcaddr6 \"all\"").unwrap();
                writeln!(o, "        set dstaddr6 \"all\"").unwrap();
            }
            writeln!(o, "        set action {}", if action == Action::Allow { "accept" } else { "deny" }).unwrap();
            writeln!(o, "        set schedule \"always\"").unwrap();
            writeln!(o, "        set service \"ALL\"").unwrap();
            writeln!(o, "        set comments \"default of {} - {stamp}\"", comment_text(&what, 100)).unwrap();
            writeln!(o, "    next").unwrap();
            id += 1;
        }
        writeln!(o, "end").unwrap();
        Ok(o.into_bytes())
    }
}
