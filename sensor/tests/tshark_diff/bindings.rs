//! Differential test against tshark for MAC–IP bindings (issue 9), on every capture in the
//! corpus: the set of (MAC, IP, source) the pipeline reports as `Event::Binding` equals
//! what tshark decodes from
//! - ARP: `arp.src.hw_mac` / `arp.src.proto_ipv4` of requests, replies and gratuitous ARP
//!   (a probe's 0.0.0.0 sender binds nothing);
//! - DHCPACK (`dhcp.option.dhcp == 5`): `dhcp.hw.mac_addr` (Ethernet `chaddr`) /
//!   `dhcp.ip.your`, and the lease `dhcp.option.ip_address_lease_time` as `valid_until_us`
//!   minus the packet time;
//! - NDP: a solicitation's `ipv6.src` with its source link-layer option, an advertisement's
//!   `icmpv6.nd.na.target_address` with its target link-layer option (`icmpv6.opt.linkaddr`).
//!
//! Group and zero MACs and addresses that name no single host are left out on both sides.
//! Skips (passes with a note) when tshark is not installed.

use crate::dataplane_support::{all_pcaps, tshark_available};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use wardline_common::wire::BindingSource;
use wardline_common::{Event, MacAddr};
use wardline_sensor::capture::{for_each_packet, Source};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

type Bindings = BTreeSet<(MacAddr, IpAddr, BindingSource)>;

const FIELDS: [&str; 12] = [
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "dhcp.option.dhcp",
    "dhcp.hw.type",
    "dhcp.hw.mac_addr",
    "dhcp.ip.your",
    "dhcp.option.ip_address_lease_time",
    "icmpv6.type",
    "ipv6.src",
    "icmpv6.nd.na.target_address",
    "icmpv6.opt.type",
    "icmpv6.opt.linkaddr",
];

fn names_one_host(mac: &MacAddr, ip: &IpAddr) -> bool {
    let host = match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    mac.is_device() && host
}

/// tshark's bindings, and the lease seconds of each DHCPACK binding.
fn tshark_bindings(path: &Path) -> (Bindings, BTreeMap<(MacAddr, IpAddr), BTreeSet<u64>>) {
    let mut args = vec!["-n", "-r"];
    let p = path.to_str().unwrap();
    args.push(p);
    args.extend(["-Y", "arp || dhcp.option.dhcp == 5 || icmpv6.type == 135 || icmpv6.type == 136", "-T", "fields"]);
    for f in FIELDS {
        args.extend(["-e", f]);
    }
    let out = Command::new("tshark").args(&args).output().expect("run tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut set, mut leases) = (Bindings::new(), BTreeMap::<(MacAddr, IpAddr), BTreeSet<u64>>::new());
    for line in text.lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let col = |i: usize| c.get(i).copied().unwrap_or("");
        let mut add = |mac: &str, ip: &str, src: BindingSource| {
            if let (Ok(m), Ok(a)) = (mac.parse::<MacAddr>(), ip.parse::<IpAddr>()) {
                if names_one_host(&m, &a) {
                    set.insert((m, a, src));
                    return Some((m, a));
                }
            }
            None
        };
        if !col(0).is_empty() {
            // Inside a tunnel or a mirror copy tshark lists every layer; the innermost is the frame's.
            let mac = col(0).rsplit(',').next().unwrap();
            let ip = col(1).rsplit(',').next().unwrap();
            add(mac, ip, BindingSource::Arp);
        }
        if col(2) == "5" && col(3) == "0x01" {
            if let Some(k) = add(col(4), col(5), BindingSource::DhcpAck) {
                if let Ok(secs) = col(6).parse::<u64>() {
                    leases.entry(k).or_default().insert(secs);
                }
            }
        }
        // Link-layer address options in order, paired with their option types.
        let types: Vec<&str> = col(10).split(',').filter(|t| *t == "1" || *t == "2").collect();
        let addrs: Vec<&str> = col(11).split(',').filter(|a| !a.is_empty()).collect();
        let lladdr = |want: &str| types.iter().zip(&addrs).find(|(t, _)| **t == want).map(|(_, a)| *a);
        match col(7) {
            "135" => {
                if let Some(m) = lladdr("1") {
                    add(m, col(8).rsplit(',').next().unwrap(), BindingSource::Ndp);
                }
            }
            "136" => {
                if let Some(m) = lladdr("2") {
                    add(m, col(9), BindingSource::Ndp);
                }
            }
            _ => {}
        }
    }
    (set, leases)
}

fn wardline_bindings(path: &Path) -> (Bindings, BTreeMap<(MacAddr, IpAddr), BTreeSet<u64>>) {
    let mut pl = Pipeline::new(PipelineConfig::default());
    // A capture cut short still reports what it read; tshark does the same.
    let _ = for_each_packet(&Source::File(path.to_path_buf()), None, |p| {
        pl.process(p);
        std::ops::ControlFlow::Continue(())
    });
    let (events, stats) = pl.finish();
    let (mut set, mut leases) = (Bindings::new(), BTreeMap::<(MacAddr, IpAddr), BTreeSet<u64>>::new());
    let mut n = 0;
    for e in events {
        if let Event::Binding(b) = e {
            n += 1;
            assert!(set.insert((b.mac, b.ip, b.source)), "{} reported {b:?} twice in one interval", path.display());
            if let Some(until) = b.valid_until_us {
                leases.entry((b.mac, b.ip)).or_default().insert((until - b.seen_us) / 1_000_000);
            }
        }
    }
    assert_eq!(n, stats.bindings);
    (set, leases)
}

#[test]
fn bindings_match_tshark_on_every_capture() {
    if !tshark_available() {
        eprintln!("tshark not installed: skipping");
        return;
    }
    let (mut captures_with, mut total) = (0, 0);
    let mut by_source: BTreeMap<BindingSource, usize> = BTreeMap::new();
    for path in all_pcaps() {
        let (want, want_leases) = tshark_bindings(&path);
        let (got, got_leases) = wardline_bindings(&path);
        assert_eq!(
            got,
            want,
            "{}: only wardline {:?}, only tshark {:?}",
            path.display(),
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        );
        for (k, secs) in &got_leases {
            assert!(want_leases.get(k).is_some_and(|w| secs.is_subset(w)), "{}: lease of {k:?}", path.display());
        }
        for b in &got {
            *by_source.entry(b.2).or_default() += 1;
        }
        captures_with += usize::from(!got.is_empty());
        total += got.len();
    }
    // The corpus has ARP, DHCP and NDP in dozens of captures: an empty result is a bug.
    // (91 distinct bindings in 40 captures when this was written.)
    assert!(captures_with >= 35 && total >= 80, "{captures_with} captures, {total} bindings");
    assert!(by_source.len() == 3, "every source seen: {by_source:?}");
    eprintln!("bindings: {total} in {captures_with} captures ({by_source:?}), all as tshark decodes them");
}
