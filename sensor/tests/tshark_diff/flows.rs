//! Flow accounting against tshark: for each capture, per-conversation packets and bytes
//! in each direction must equal what tshark's per-frame fields add up to.
//!
//! tshark's `-z conv` prints large byte counts rounded ("26 kB"), so the reference is
//! built from `-T fields` (frame.len, addresses, ports) summed per canonical endpoint pair.
//! Frames tshark decodes differently on purpose (IP fragments it reassembles, ICMP errors
//! quoting inner headers, tunnels) are excluded from the files compared.

use crate::dataplane_support::{all_pcaps, tshark_available};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use wardline_common::Event;
use wardline_sensor::capture::{for_each_packet, Source};
use wardline_sensor::flow::FlowConfig;
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

/// (proto, lo endpoint, hi endpoint) → [packets lo→hi, packets hi→lo, bytes lo→hi, bytes hi→lo]
type Conv = BTreeMap<(u8, String, String), [u64; 4]>;

fn add(conv: &mut Conv, proto: u8, src: String, dst: String, len: u64, packets: u64) {
    let (key, fwd) = if src <= dst { ((proto, src, dst), true) } else { ((proto, dst, src), false) };
    let e = conv.entry(key).or_insert([0; 4]);
    if fwd {
        e[0] += packets;
        e[2] += len;
    } else {
        e[1] += packets;
        e[3] += len;
    }
}

fn ep(ip: &str, port: &str) -> String {
    format!("{ip}|{port}")
}

fn tshark_conv(p: &Path) -> Option<Conv> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(p)
        .args(["-Y", "(tcp or udp) and not icmp and not icmpv6"])
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"])
        .args(["-e", "frame.len", "-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst"])
        .args(["-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "udp.srcport", "-e", "udp.dstport"])
        .output()
        .ok()?;
    let mut conv = Conv::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 9 {
            continue;
        }
        let len: u64 = f[0].parse().ok()?;
        let (src, dst) = if !f[1].is_empty() { (f[1], f[2]) } else { (f[3], f[4]) };
        let (proto, sp, dp) = if !f[5].is_empty() { (6, f[5], f[6]) } else { (17, f[7], f[8]) };
        add(&mut conv, proto, ep(src, sp), ep(dst, dp), len, 1);
    }
    Some(conv)
}

/// Files where tshark and a flow meter legitimately disagree: fragments, tunnels, ICMP quotes.
fn has_special_frames(p: &Path) -> bool {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(p)
        .args(["-Y", "ip.flags.mf == 1 or ip.frag_offset > 0 or ipv6.fragment or gre or ip.proto == 4 or ip.proto == 41 or teredo or vxlan or ((icmp or icmpv6) and (udp or tcp)) or _ws.malformed or frame.len > frame.cap_len"])
        .output();
    match out {
        Ok(o) => !o.stdout.is_empty(),
        Err(_) => true,
    }
}

fn wardline_conv(p: &Path) -> Conv {
    // Timeouts far beyond any capture's span: compare whole conversations.
    let cfg = PipelineConfig {
        flow: FlowConfig { idle_timeout_us: u64::MAX / 4, active_timeout_us: u64::MAX / 4, ..Default::default() },
        ..Default::default()
    };
    let mut pl = Pipeline::new(cfg);
    let _ = for_each_packet(&Source::File(p.to_path_buf()), None, |pkt| {
        pl.process(pkt);
        std::ops::ControlFlow::Continue(())
    });
    let (events, _) = pl.finish();
    let mut conv = Conv::new();
    for e in events {
        if let Event::Flow(f) = e {
            if f.ip_proto != 6 && f.ip_proto != 17 {
                continue;
            }
            let a = ep(&f.a_ip.to_string(), &f.a_port.to_string());
            let b = ep(&f.b_ip.to_string(), &f.b_port.to_string());
            add(&mut conv, f.ip_proto, a.clone(), b.clone(), f.bytes_ab, f.packets_ab);
            add(&mut conv, f.ip_proto, b, a, f.bytes_ba, f.packets_ba);
        }
    }
    conv.retain(|_, v| v.iter().any(|x| *x > 0));
    conv
}

#[test]
fn flow_counts_match_tshark_on_the_corpus() {
    if !tshark_available() {
        eprintln!("tshark not installed; skipping the differential flow test");
        return;
    }
    let mut compared = 0;
    let mut disagreements = Vec::new();
    for p in all_pcaps() {
        if has_special_frames(&p) {
            continue;
        }
        let Some(want) = tshark_conv(&p) else { continue };
        let got = wardline_conv(&p);
        compared += 1;
        if got != want {
            let keys: std::collections::BTreeSet<_> = got.keys().chain(want.keys()).cloned().collect();
            for k in keys {
                let (g, w) = (got.get(&k), want.get(&k));
                if g != w {
                    disagreements.push(format!("{}: {:?}: wardline {:?} tshark {:?}", p.display(), k, g, w));
                }
            }
        }
    }
    for d in disagreements.iter().take(40) {
        eprintln!("{d}");
    }
    assert!(compared >= 40, "only {compared} captures compared");
    assert!(disagreements.is_empty(), "{} conversation disagreements with tshark", disagreements.len());
}
