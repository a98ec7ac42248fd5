//! IP fragment reassembly through the pipeline: hand-built IPv4 and IPv6 fragments of a
//! DNS query (in order, reversed, overlapping, incomplete) and the corpus capture with
//! fragmented DNS responses checked against tshark.

use crate::dataplane_support::pcap;
use crate::reassembly_support::*;
use std::process::Command;
use wardline_common::Field;
use wardline_sensor::capture::{for_each_packet, LinkType, RawPacket, Source};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};
use wardline_sensor::reassembly::FragConfig;

/// A DNS query for `name` (A, IN).
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

const NAME: &str = "infusion-pump-0042.icu-east.hospital.example";
const SRC: [u8; 4] = [10, 9, 0, 5];
const DST: [u8; 4] = [10, 9, 0, 53];

fn queried(events: &[wardline_common::Event]) -> Vec<String> {
    evidence_of(events, CLIENT_MAC).into_iter().filter(|(f, _)| *f == Field::DnsQuery).map(|(_, v)| v).collect()
}

#[test]
fn fragmented_udp_in_order_is_reassembled_and_dissected() {
    let frags = udp_v4_fragments(SRC, DST, 40000, 53, 77, &dns_query(NAME), 24);
    assert!(frags.len() >= 3);
    let (events, stats) = run_frames(Pipeline::new(PipelineConfig::default()), &frags);
    assert_eq!(queried(&events), vec![NAME.to_string()]);
    assert_eq!(stats.ip_fragments, frags.len() as u64);
    assert_eq!(stats.ip_datagrams_reassembled, 1);
    assert_eq!(stats.dissected.get("dns"), Some(&1));
    assert_eq!(stats.dissect_errors_total(), 0);
    // One flow, one packet: the datagram, counted when it completed (as tshark does).
    let flows: Vec<_> =
        events.iter().filter_map(|e| if let wardline_common::Event::Flow(f) = e { Some(f) } else { None }).collect();
    assert_eq!(flows.len(), 1);
    assert_eq!((flows[0].a_port, flows[0].b_port, flows[0].packets_ab), (40000, 53, 1));
}

#[test]
fn fragments_in_reverse_order_reassemble() {
    let mut frags = udp_v4_fragments(SRC, DST, 40000, 53, 78, &dns_query(NAME), 16);
    frags.reverse();
    let (events, stats) = run_frames(Pipeline::new(PipelineConfig::default()), &frags);
    assert_eq!(queried(&events), vec![NAME.to_string()]);
    assert_eq!(stats.ip_datagrams_reassembled, 1);
}

#[test]
fn overlapping_fragment_keeps_the_first_copy() {
    let query = dns_query(NAME);
    let good = udp_v4_fragments(SRC, DST, 40000, 53, 79, &query, 16);
    // A rogue copy of the second fragment with different bytes arrives after the real one.
    let mut rogue = good[1].clone();
    let n = rogue.len();
    for b in &mut rogue[n - 8..] {
        *b = b'X';
    }
    let mut frames = vec![good[0].clone(), good[1].clone(), rogue];
    frames.extend_from_slice(&good[2..]);
    let (events, stats) = run_frames(Pipeline::new(PipelineConfig::default()), &frames);
    assert_eq!(queried(&events), vec![NAME.to_string()], "the first copy won");
    assert_eq!(stats.ip_fragment_overlaps, 1);
    assert_eq!(stats.ip_datagrams_reassembled, 1);
}

#[test]
fn incomplete_datagrams_time_out_and_memory_is_bounded() {
    let cfg = PipelineConfig {
        ip_frag: FragConfig { timeout_us: 1_000_000, max_datagrams: 64, max_bytes: 64 * 1024 },
        ..Default::default()
    };
    let mut pl = Pipeline::new(cfg);
    // 1000 datagrams each missing their last fragment.
    for id in 0..1000u16 {
        let frags = udp_v4_fragments(SRC, DST, 40000, 53, id, &dns_query(NAME), 16);
        for f in &frags[..frags.len() - 1] {
            pl.process(&RawPacket {
                ts_us: 1_000 + id as u64,
                linktype: LinkType::Ethernet,
                data: f,
                orig_len: f.len() as u32,
            });
        }
    }
    let st = pl.stats();
    assert_eq!(st.ip_datagrams_reassembled, 0);
    assert!(st.ip_fragments_expired >= 1000 - 64, "{st:?}");
    // Packet time moves on: everything left times out.
    let late = udp_v4_fragments(SRC, DST, 40001, 53, 5000, &dns_query(NAME), 1024);
    pl.process(&RawPacket { ts_us: 10_000_000, linktype: LinkType::Ethernet, data: &late[0], orig_len: 100 });
    pl.drain_events(10_000_000);
    let (_, st) = pl.finish();
    assert_eq!(st.ip_fragments_expired, 1000);
    assert_eq!(st.dissected.get("dns"), Some(&1), "the unfragmented query still went through");
}

#[test]
fn ipv6_fragments_reassemble() {
    let mut src = [0u8; 16];
    src[..2].copy_from_slice(&[0xfd, 0x00]);
    src[15] = 5;
    let mut dst = src;
    dst[15] = 53;
    let mut frags = udp_v6_fragments(src, dst, 40000, 53, 0xabcdef, &dns_query(NAME), 32);
    frags.swap(0, 1);
    let (events, stats) = run_frames(Pipeline::new(PipelineConfig::default()), &frags);
    assert_eq!(queried(&events), vec![NAME.to_string()]);
    assert_eq!(stats.ip_datagrams_reassembled, 1);
}

fn tshark_lines(rel: &str, filter: &str, fields: &[&str]) -> Option<Vec<Vec<String>>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap(rel)).args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect())
}

#[test]
fn corpus_fragmented_dns_matches_tshark() {
    let rel = "mixed/DNS.pcap";
    let Some(frag_frames) = tshark_lines(rel, "ip.flags.mf == 1 or ip.frag_offset > 0", &["frame.number"]) else {
        eprintln!("tshark not installed; skipping");
        return;
    };
    // tshark's reassembled datagrams: completing frame, its length, UDP ports.
    let done =
        tshark_lines(rel, "ip.fragment.count", &["frame.number", "frame.len", "udp.srcport", "udp.dstport"]).unwrap();
    assert!(!done.is_empty(), "the capture has fragmented datagrams");
    let wanted: std::collections::BTreeSet<u64> = frag_frames.iter().filter_map(|l| l[0].parse().ok()).collect();
    // Only the fragments go in, so every count below is about them.
    let mut pl = Pipeline::new(PipelineConfig::default());
    let mut n = 0u64;
    for_each_packet(&Source::File(pcap(rel)), None, |p| {
        n += 1;
        if wanted.contains(&n) {
            pl.process(p);
        }
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let (events, stats) = pl.finish();
    assert_eq!(stats.ip_fragments, wanted.len() as u64);
    assert_eq!(stats.ip_datagrams_reassembled, done.len() as u64, "{stats:?}");
    assert_eq!(stats.ip_fragment_overlaps + stats.ip_fragments_malformed + stats.ip_fragments_expired, 0, "{stats:?}");
    assert_eq!(
        stats.dissected.get("dns"),
        Some(&(done.len() as u64)),
        "each datagram is one whole DNS message: {stats:?}"
    );
    assert_eq!(stats.dissect_errors_total(), 0, "{stats:?}");
    // Flow accounting agrees with tshark's: the completing frame carries the datagram.
    let flows: Vec<_> =
        events.iter().filter_map(|e| if let wardline_common::Event::Flow(f) = e { Some(f) } else { None }).collect();
    let ours: (u64, u64) =
        flows.iter().fold((0, 0), |(p, b), f| (p + f.packets_ab + f.packets_ba, b + f.bytes_ab + f.bytes_ba));
    let theirs: u64 = done.iter().map(|l| l[1].parse::<u64>().unwrap()).sum();
    assert_eq!(ours, (done.len() as u64, theirs));
    for l in &done {
        let (sp, dp): (u16, u16) = (l[2].parse().unwrap(), l[3].parse().unwrap());
        assert!(flows.iter().any(|f| (f.a_port, f.b_port) == (sp, dp)), "no flow {sp}->{dp}");
    }
}
