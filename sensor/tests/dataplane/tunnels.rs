//! GRE and ERSPAN: a real capture wrapped in each tunnel decodes as the packet inside, the
//! pipeline learns the same devices and flows from an ERSPAN copy as from the original,
//! tshark reads the same inner addresses and ports, and hostile tunnels are errors.

use crate::dataplane_support::{pcap, tshark_available};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use wardline_common::Event;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::{LinkType, RawPacket};
use wardline_sensor::decode::{decode, Decoded, Net, TunnelKind, L4};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};
use wardline_sim::wire::PcapWriter;

const SWITCH_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x5c];
const COLLECTOR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc0];
const SWITCH_V4: [u8; 4] = [192, 0, 2, 1];
const COLLECTOR_V4: [u8; 4] = [192, 0, 2, 2];
const SWITCH_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const COLLECTOR_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

#[derive(Clone, Copy, Debug)]
enum Wrap {
    ErspanI,
    ErspanII {
        session: u16,
    },
    ErspanIII {
        session: u16,
        subheader: bool,
    },
    /// Transparent Ethernet bridging over GRE with a key, outer IPv6.
    GreTebV6 {
        key: u32,
    },
    /// Bare IP over GRE with checksum and sequence; the inner Ethernet header is dropped.
    GreIp,
}

const WRAPS: [Wrap; 6] = [
    Wrap::ErspanI,
    Wrap::ErspanII { session: 7 },
    Wrap::ErspanIII { session: 300, subheader: false },
    Wrap::ErspanIII { session: 1, subheader: true },
    Wrap::GreTebV6 { key: 0xdead_beef },
    Wrap::GreIp,
];

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn gre(flags: u16, proto: u16, optional: &[u32], body: &[u8]) -> Vec<u8> {
    let mut g = Vec::new();
    g.extend_from_slice(&flags.to_be_bytes());
    g.extend_from_slice(&proto.to_be_bytes());
    for word in optional {
        g.extend_from_slice(&word.to_be_bytes());
    }
    g.extend_from_slice(body);
    g
}

fn outer_v4(gre: &[u8]) -> Vec<u8> {
    let total = (20 + gre.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 47, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&SWITCH_V4);
    ip.extend_from_slice(&COLLECTOR_V4);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = [&COLLECTOR_MAC[..], &SWITCH_MAC[..], &[0x08, 0x00]].concat();
    f.extend_from_slice(&ip);
    f.extend_from_slice(gre);
    f
}

fn outer_v6(gre: &[u8]) -> Vec<u8> {
    let mut f = [&COLLECTOR_MAC[..], &SWITCH_MAC[..], &[0x86, 0xdd]].concat();
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(gre.len() as u16).to_be_bytes());
    f.extend_from_slice(&[47, 64]);
    f.extend_from_slice(&SWITCH_V6);
    f.extend_from_slice(&COLLECTOR_V6);
    f.extend_from_slice(gre);
    f
}

/// The frame inside the tunnel, or None when this wrap cannot carry it (GRE with bare IP
/// carries only untagged IP frames).
fn wrap(frame: &[u8], w: Wrap, seq: u32) -> Option<Vec<u8>> {
    Some(match w {
        Wrap::ErspanI => outer_v4(&gre(0, 0x88be, &[], frame)),
        Wrap::ErspanII { session } => {
            // ver 1, vlan 0, cos 0, en 0, t 0, session; reserved + index.
            let mut h = vec![0x10, 0x00];
            h.extend_from_slice(&(session & 0x3ff).to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0x2a]);
            h.extend_from_slice(frame);
            outer_v4(&gre(0x1000, 0x88be, &[seq], &h))
        }
        Wrap::ErspanIII { session, subheader } => {
            let mut h = vec![0x20, 0x00];
            h.extend_from_slice(&(session & 0x3ff).to_be_bytes());
            h.extend_from_slice(&seq.to_be_bytes()); // timestamp
            h.extend_from_slice(&[0, 0, 0, if subheader { 1 } else { 0 }]);
            if subheader {
                h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
            }
            h.extend_from_slice(frame);
            outer_v4(&gre(0x1000, 0x22eb, &[seq], &h))
        }
        Wrap::GreTebV6 { key } => outer_v6(&gre(0x2000, 0x6558, &[key], frame)),
        Wrap::GreIp => {
            let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
            if et != 0x0800 && et != 0x86dd {
                return None;
            }
            let mut g = gre(0x9000, et, &[0, seq], &frame[14..]);
            let c = checksum(&g);
            g[4..6].copy_from_slice(&c.to_be_bytes());
            outer_v4(&g)
        }
    })
}

fn frames(rel: &str) -> Vec<(u64, Vec<u8>)> {
    let mut r = FileReader::open(&pcap(rel)).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        assert_eq!(p.linktype, LinkType::Ethernet);
        out.push((p.ts_us, p.data.to_vec()));
    }
    out
}

/// What a decoded frame says about the traffic inside any tunnel.
fn inner_view(d: &Decoded<'_>) -> (Net, L4, Vec<u8>, u16) {
    (d.net, d.l4, d.payload.to_vec(), d.ethertype)
}

#[test]
fn each_tunnel_decodes_as_the_packet_inside() {
    let frames = frames("mixed/many-protocols.pcap");
    for w in WRAPS {
        let mut compared = 0;
        for (i, (_, f)) in frames.iter().enumerate() {
            let Ok(plain) = decode(LinkType::Ethernet, f) else { continue };
            let Some(wrapped) = wrap(f, w, i as u32) else { continue };
            let d = decode(LinkType::Ethernet, &wrapped).unwrap_or_else(|e| panic!("{w:?} frame {}: {e}", i + 1));
            assert_eq!(inner_view(&d), inner_view(&plain), "{w:?} frame {}", i + 1);
            let t = d.tunnel.unwrap_or_else(|| panic!("{w:?} frame {}: no tunnel recorded", i + 1));
            assert_eq!(t.depth, 1);
            match w {
                Wrap::GreTebV6 { .. } => assert_eq!(t.outer_src, IpAddr::from(SWITCH_V6)),
                _ => assert_eq!(t.outer_src, IpAddr::from(SWITCH_V4)),
            }
            match (w, t.kind) {
                (Wrap::ErspanI, TunnelKind::Erspan { version: 1, .. }) => {}
                (Wrap::ErspanII { session }, TunnelKind::Erspan { version: 2, session: s }) => assert_eq!(s, session),
                (Wrap::ErspanIII { session, .. }, TunnelKind::Erspan { version: 3, session: s }) => {
                    assert_eq!(s, session)
                }
                (Wrap::GreTebV6 { .. } | Wrap::GreIp, TunnelKind::Gre) => {}
                other => panic!("{w:?}: tunnel kind {other:?}"),
            }
            if matches!(w, Wrap::GreIp) {
                // Bare IP keeps the carrier's link layer and counts as captured.
                assert_eq!(d.src_mac.0, SWITCH_MAC);
                assert_eq!(t.inner_frame_at, None);
                assert_eq!(d.accounted_len(wrapped.len() as u64), wrapped.len() as u64);
            } else {
                assert_eq!((d.src_mac, d.dst_mac, d.vlan), (plain.src_mac, plain.dst_mac, plain.vlan));
                assert_eq!(d.accounted_len(wrapped.len() as u64), f.len() as u64, "mirroring overhead is not traffic");
            }
            compared += 1;
        }
        assert!(compared > 4000, "{w:?}: only {compared} frames compared");
    }
}

fn run(frames: &[(u64, Vec<u8>)]) -> (Vec<Event>, u64, u64) {
    let mut pl = Pipeline::new(PipelineConfig::default());
    for (ts, f) in frames {
        pl.process(&RawPacket { ts_us: *ts, linktype: LinkType::Ethernet, data: f, orig_len: f.len() as u32 });
    }
    let (events, stats) = pl.finish();
    (events, stats.decode_errors_total(), stats.tunnelled_frames)
}

#[test]
fn erspan_copy_gives_the_same_devices_and_flows() {
    let plain = frames("mixed/many-protocols.pcap");
    let mirrored: Vec<_> = plain
        .iter()
        .enumerate()
        .map(|(i, (ts, f))| (*ts, wrap(f, Wrap::ErspanII { session: 7 }, i as u32).unwrap()))
        .collect();
    let (a, a_errors, a_tunnelled) = run(&plain);
    let (b, b_errors, b_tunnelled) = run(&mirrored);
    assert_eq!(a_errors, b_errors);
    assert_eq!(
        (a_tunnelled, b_tunnelled),
        (0, mirrored.len() as u64 - a_errors),
        "every decodable frame came through the tunnel"
    );
    let flows = a.iter().filter(|e| matches!(e, Event::Flow(_))).count();
    let devices = a.iter().filter(|e| matches!(e, Event::Device(_))).count();
    assert!(flows > 100 && devices >= 5, "{flows} flows, {devices} devices");
    // Same devices (MACs, IPs, evidence, packet and byte counters) and same flows.
    assert_eq!(a, b);
}

#[test]
fn gre_ip_tunnel_gives_the_same_flows() {
    let plain: Vec<_> = frames("mixed/many-protocols.pcap")
        .into_iter()
        .filter(|(_, f)| matches!(f.get(12..14), Some([0x08, 0x00] | [0x86, 0xdd])))
        .collect();
    let tunnelled: Vec<_> =
        plain.iter().enumerate().map(|(i, (ts, f))| (*ts, wrap(f, Wrap::GreIp, i as u32).unwrap())).collect();
    let key = |events: &[Event]| -> BTreeMap<String, (u64, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Flow(f) => Some((
                    format!("{}:{}-{}:{}/{}", f.a_ip, f.a_port, f.b_ip, f.b_port, f.ip_proto),
                    (f.packets_ab, f.packets_ba),
                )),
                _ => None,
            })
            .collect()
    };
    let (a, _, _) = run(&plain);
    let (b, _, _) = run(&tunnelled);
    assert!(key(&a).len() > 100);
    assert_eq!(key(&a), key(&b));
}

/// tshark, an independent decoder, reads the same inner addresses and ports from each
/// tunnel (its last occurrence of each field is the innermost).
#[test]
fn inner_addresses_and_ports_match_tshark() {
    if !tshark_available() {
        panic!("tshark is required (scripts/setup.sh installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let frames = frames("mixed/many-protocols.pcap");
    for w in WRAPS {
        let path = dir.path().join("tunnel.pcap");
        let mut writer = PcapWriter::new(std::io::BufWriter::new(std::fs::File::create(&path).unwrap())).unwrap();
        let mut ours = Vec::new();
        for (i, (ts, f)) in frames.iter().enumerate() {
            let Some(wrapped) = wrap(f, w, i as u32) else { continue };
            writer.write(*ts, &wrapped).unwrap();
            let row = match decode(LinkType::Ethernet, &wrapped) {
                Ok(d) => {
                    let (sp, dp) = d.ports();
                    let ip = d.ip().map(|h| (h.src.to_string(), h.dst.to_string())).unwrap_or_default();
                    let ports = match d.l4 {
                        L4::Tcp(_) | L4::Udp { .. } => (sp.to_string(), dp.to_string()),
                        _ => Default::default(),
                    };
                    (ip.0, ip.1, ports.0, ports.1)
                }
                Err(_) => Default::default(),
            };
            ours.push(row);
        }
        writer.finish().unwrap().flush().unwrap();
        let out = std::process::Command::new("tshark")
            .args(["-r", path.to_str().unwrap(), "-T", "fields", "-E", "occurrence=l", "-E", "separator=|"])
            .args(["-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst"])
            .args([
                "-e",
                "tcp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "frame.protocols",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), ours.len(), "{w:?}: frame count");
        let mut compared = 0;
        let mut disagreements = Vec::new();
        for (i, (row, mine)) in rows.iter().zip(&ours).enumerate() {
            let c: Vec<&str> = row.split('|').collect();
            let protocols = c[8];
            // Frames where tshark and Wardline legitimately stop at different layers:
            // ICMP errors quote an inner header (tshark reports its ports), IP fragments.
            if protocols.contains("icmp") || mine.0.is_empty() {
                continue;
            }
            // The innermost IP header is the last of ip/ipv6 in the protocol stack.
            let v6_last = protocols.rfind(":ipv6").unwrap_or(0) > protocols.rfind(":ip:").unwrap_or(0);
            let (src, dst) = if v6_last { (c[2], c[3]) } else { (c[0], c[1]) };
            let (sp, dp) = if protocols.contains(":tcp") {
                (c[4], c[5])
            } else if protocols.contains(":udp") {
                (c[6], c[7])
            } else {
                ("", "")
            };
            let theirs = (src.to_string(), dst.to_string(), sp.to_string(), dp.to_string());
            if &theirs != mine {
                disagreements.push(format!("frame {}: tshark {theirs:?} wardline {mine:?} ({protocols})", i + 1));
            }
            compared += 1;
        }
        assert!(
            disagreements.is_empty(),
            "{w:?}: {} disagreements:\n{}",
            disagreements.len(),
            disagreements.join("\n")
        );
        assert!(compared > 3000, "{w:?}: only {compared} frames compared");
    }
}

#[test]
fn hostile_tunnels_are_counted_errors() {
    let inner = frames("mixed/many-protocols.pcap").into_iter().find(|(_, f)| f[12..14] == [0x08, 0x00]).unwrap().1;
    // Three ERSPAN layers: past the nesting bound.
    let mut f = inner.clone();
    for i in 0..3 {
        f = wrap(&f, Wrap::ErspanII { session: i }, i as u32).unwrap();
    }
    assert_eq!(decode(LinkType::Ethernet, &f).unwrap_err().kind, "tunnel_too_deep");
    let two = wrap(&wrap(&inner, Wrap::ErspanI, 0).unwrap(), Wrap::ErspanI, 1).unwrap();
    assert_eq!(decode(LinkType::Ethernet, &two).unwrap().tunnel.unwrap().depth, 2);
    // Truncated ERSPAN III header; wrong ERSPAN version.
    let e3 = wrap(&inner, Wrap::ErspanIII { session: 1, subheader: true }, 0).unwrap();
    let mut cut = e3[..14 + 20 + 8 + 6].to_vec();
    let ip_len = (cut.len() - 14) as u16;
    cut[16..18].copy_from_slice(&ip_len.to_be_bytes());
    assert_eq!(decode(LinkType::Ethernet, &cut).unwrap_err().kind, "erspan_truncated");
    let mut bad = wrap(&inner, Wrap::ErspanII { session: 1 }, 0).unwrap();
    bad[14 + 20 + 8] = 0x70;
    assert_eq!(decode(LinkType::Ethernet, &bad).unwrap_err().kind, "erspan_bad_header");
    // PPTP's enhanced GRE (version 1) is not unwrapped: an opaque IP protocol.
    let mut pptp = wrap(&inner, Wrap::ErspanI, 0).unwrap();
    pptp[14 + 20 + 1] |= 1;
    let d = decode(LinkType::Ethernet, &pptp).unwrap();
    assert_eq!((d.l4, d.tunnel), (L4::Other, None));
}

proptest! {
    /// Any bytes after a GRE header of any type decode or fail with a kind; never a panic,
    /// never a payload outside the frame.
    #[test]
    fn random_tunnel_payloads_never_panic(
        flags in any::<u16>(),
        proto in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x6558), Just(0x88be), Just(0x22eb), any::<u16>()],
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut g = flags.to_be_bytes().to_vec();
        g.extend_from_slice(&proto.to_be_bytes());
        g.extend_from_slice(&body);
        for frame in [outer_v4(&g), outer_v6(&g)] {
            match decode(LinkType::Ethernet, &frame) {
                Ok(d) => {
                    let (start, end) = (frame.as_ptr() as usize, frame.as_ptr() as usize + frame.len());
                    let p = d.payload.as_ptr() as usize;
                    prop_assert!(d.payload.is_empty() || (p >= start && p + d.payload.len() <= end));
                    prop_assert!(d.accounted_len(frame.len() as u64) <= frame.len() as u64);
                }
                Err(e) => prop_assert!(!e.kind.is_empty()),
            }
        }
    }
}
