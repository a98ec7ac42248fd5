//! nftables (`nft -f`): one `table inet wardline` holding a named set per group and address
//! family, a base `forward` chain that hands each segment's traffic (its interface and its
//! subnets) to a chain of its own, and in each segment chain the rules in policy order
//! followed by the segment's default. Sources in no segment are decided in the base chain,
//! whose policy is the policy-wide default. Stateful: replies of allowed flows pass.
//!
//! The file first creates and deletes the table, so `nft -f` replaces it atomically and
//! touches nothing else on the host.

use super::{rule_label, scopes, Dst, Exporter};
use crate::error::ExportError;
use crate::model::{Action, Protocol, ResolvedPolicy};
use crate::names::{comment_text, word_char, NameRule, NameTable};
use std::collections::BTreeMap;
use std::fmt::Write;

pub struct Nftables;

const TARGET: &str = "nftables";
/// Set and chain names: the kernel allows more, but short names keep `nft list` readable.
const NAMES: NameRule = NameRule { target: TARGET, max_len: 48, allowed: word_char, replacement: '_', prefix: "" };
/// Rule comments are limited to 128 bytes by nft.
const COMMENT_MAX: usize = 128;

impl Exporter for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }
    fn file_name(&self) -> &'static str {
        "wardline.nft"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        let p = policy.canonical()?;
        let mut groups = NameTable::new(NAMES);
        let mut set_names = BTreeMap::new();
        for g in &p.groups {
            set_names.insert(g.name.as_str(), format!("grp_{}", groups.name(&g.name)?));
        }
        let mut segs = NameTable::new(NAMES);
        for s in &p.segments {
            check_ifname(&s.interface, &s.name)?;
            segs.name(&s.name)?;
        }
        let mut o = String::new();
        writeln!(o, "# {}", p.stamp()).unwrap();
        writeln!(o, "# Load with: nft -f wardline.nft (replaces table inet wardline, nothing else)").unwrap();
        writeln!(o, "table inet wardline").unwrap();
        writeln!(o, "delete table inet wardline").unwrap();
        writeln!(o, "table inet wardline {{").unwrap();
        for g in &p.groups {
            let addrs = g.addresses();
            for (v4, ty, fam) in [(true, "ipv4_addr", "v4"), (false, "ipv6_addr", "v6")] {
                let elems: Vec<String> = addrs.iter().filter(|a| a.is_ipv4() == v4).map(|a| a.to_string()).collect();
                writeln!(o, "\tset {}_{fam} {{", set_names[g.name.as_str()]).unwrap();
                writeln!(o, "\t\ttype {ty}").unwrap();
                writeln!(o, "\t\tcomment \"group {}\"", comment_text(&g.name, 100)).unwrap();
                if !elems.is_empty() {
                    writeln!(o, "\t\telements = {{ {} }}", elems.join(", ")).unwrap();
                }
                writeln!(o, "\t}}").unwrap();
            }
        }
        let scopes = scopes(&p, TARGET)?;
        let mut base = String::new();
        let mut chains = String::new();
        for scope in &scopes {
            let mut body = String::new();
            for e in &scope.entries {
                let src_set = &set_names[e.rule.source.as_str()];
                for v4 in [true, false] {
                    if !e.src.iter().any(|a| a.is_ipv4() == v4) {
                        continue;
                    }
                    let Some(dst) = e.dst.family(v4) else { continue };
                    let (ip, fam) = if v4 { ("ip", "v4") } else { ("ip6", "v6") };
                    let dst = match (&dst, &e.rule.destination) {
                        (Dst::Hosts(_), crate::model::Destination::Group(g)) => {
                            format!("{ip} daddr @{}_{fam}", set_names[g.as_str()])
                        }
                        (Dst::Net(n), _) => format!("{ip} daddr {n}"),
                        _ => unreachable!("scopes() maps groups to hosts and networks to nets"),
                    };
                    let l4 = match e.rule.protocol {
                        Protocol::Any => String::new(),
                        Protocol::Icmp => format!(" meta l4proto {}", if v4 { "icmp" } else { "ipv6-icmp" }),
                        Protocol::Tcp | Protocol::Udp => {
                            let proto = e.rule.protocol.as_str();
                            match e.rule.ports.as_slice() {
                                [] => format!(" meta l4proto {proto}"),
                                [one] => format!(" {proto} dport {one}"),
                                many => format!(
                                    " {proto} dport {{ {} }}",
                                    many.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
                                ),
                            }
                        }
                    };
                    writeln!(
                        body,
                        "\t\t{ip} saddr @{src_set}_{fam} {dst}{l4} accept comment \"{}\"",
                        comment_text(&rule_label(e.rule), COMMENT_MAX)
                    )
                    .unwrap();
                }
            }
            match scope.segment {
                Some(seg) => {
                    let chain = format!("seg_{}", segs.name(&seg.name)?);
                    for v4 in [true, false] {
                        let nets: Vec<String> =
                            seg.subnets.iter().filter(|n| n.is_ipv4() == v4).map(|n| n.to_string()).collect();
                        if !nets.is_empty() {
                            let ip = if v4 { "ip" } else { "ip6" };
                            writeln!(
                                base,
                                "\t\tiifname \"{}\" {ip} saddr {{ {} }} jump {chain}",
                                seg.interface,
                                nets.join(", ")
                            )
                            .unwrap();
                        }
                    }
                    writeln!(chains, "\tchain {chain} {{").unwrap();
                    writeln!(chains, "\t\tcomment \"segment {} (VLAN {})\"", comment_text(&seg.name, 90), seg.vlan)
                        .unwrap();
                    chains.push_str(&body);
                    writeln!(
                        chains,
                        "\t\t{} comment \"default of segment {}\"",
                        verdict(scope.default),
                        comment_text(&seg.name, 90)
                    )
                    .unwrap();
                    writeln!(chains, "\t}}").unwrap();
                }
                None => {
                    // A segment's address arriving on another interface is spoofed or
                    // mis-wired; it must not fall through to the rules for unsegmented sources.
                    for v4 in [true, false] {
                        let nets: Vec<String> = p
                            .segments
                            .iter()
                            .flat_map(|s| s.subnets.iter())
                            .filter(|n| n.is_ipv4() == v4)
                            .map(|n| n.to_string())
                            .collect();
                        if !nets.is_empty() {
                            let ip = if v4 { "ip" } else { "ip6" };
                            writeln!(
                                base,
                                "\t\t{ip} saddr {{ {} }} drop comment \"segment address on the wrong interface\"",
                                nets.join(", ")
                            )
                            .unwrap();
                        }
                    }
                    base.push_str(&body);
                }
            }
        }
        writeln!(o, "\tchain forward {{").unwrap();
        writeln!(o, "\t\ttype filter hook forward priority filter; policy {};", verdict(p.default_action)).unwrap();
        writeln!(o, "\t\tct state established,related accept").unwrap();
        o.push_str(&base);
        writeln!(o, "\t}}").unwrap();
        o.push_str(&chains);
        writeln!(o, "}}").unwrap();
        Ok(o.into_bytes())
    }
}

fn verdict(a: Action) -> &'static str {
    match a {
        Action::Allow => "accept",
        Action::Deny => "drop",
    }
}

/// Linux interface names: at most 15 bytes, no whitespace, quotes or slashes.
pub(crate) fn check_ifname(name: &str, segment: &str) -> Result<(), ExportError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'/' | b'\\'));
    if ok {
        Ok(())
    } else {
        Err(ExportError::unsupported(
            "nftables/iptables",
            format!("segment {segment:?}: interface name {name:?} (Linux names are 1-15 printable bytes)"),
        ))
    }
}
