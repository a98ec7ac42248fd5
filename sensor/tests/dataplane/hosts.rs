//! Devices known only by address, on real captures: a DICOM association captured on
//! loopback (DLT_NULL), the same capture re-framed as raw IP and as Linux cooked (with and
//! without link-layer addresses), a browser's ClientHello from a host outside the default
//! local ranges, and a routed segment where one router MAC carries the modalities.
//!
//! The raw-IP, cooked and routed captures are built here from a real Ethernet capture by
//! rewriting only the link layer, so the evidence each host gets can be compared with what
//! the same host got by MAC on the original: nothing lost, nothing added.

use crate::dataplane_support::pcap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use wardline_common::wire::HostObservation;
use wardline_common::{Event, Field, MacAddr};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::{LinkType, RawPacket};
use wardline_sensor::devices::IpNet;
use wardline_sensor::pipeline::{Pipeline, PipelineConfig, PipelineStats};

struct Frame {
    ts_us: u64,
    data: Vec<u8>,
}

fn read(rel: &str) -> (LinkType, Vec<Frame>) {
    let mut r = FileReader::open(&pcap(rel)).unwrap();
    let mut lt = LinkType::Ethernet;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        lt = p.linktype;
        out.push(Frame { ts_us: p.ts_us, data: p.data.to_vec() });
    }
    (lt, out)
}

fn run(lt: LinkType, frames: &[Frame], local: &[&str]) -> (Vec<Event>, PipelineStats) {
    let mut cfg = PipelineConfig::default();
    if !local.is_empty() {
        cfg.devices.local_networks = local.iter().map(|n| n.parse::<IpNet>().unwrap()).collect();
    }
    let mut pl = Pipeline::new(cfg);
    for f in frames {
        pl.process(&RawPacket { ts_us: f.ts_us, linktype: lt, data: &f.data, orig_len: f.data.len() as u32 });
    }
    pl.finish()
}

type Facts = BTreeSet<(Field, String)>;

/// Evidence per host (IP), merged over all its observations; every report of a host has
/// the same `via_mac`.
fn hosts(events: &[Event]) -> BTreeMap<IpAddr, (Option<MacAddr>, Facts)> {
    let mut out: BTreeMap<IpAddr, (Option<MacAddr>, Facts)> = BTreeMap::new();
    for e in events {
        if let Event::Host(HostObservation { ip, via_mac, evidence, .. }) = e {
            let entry = out.entry(*ip).or_insert((*via_mac, Facts::new()));
            assert_eq!(entry.0, *via_mac);
            entry.1.extend(evidence.iter().map(|e| (e.field, e.value.clone())));
        }
    }
    out
}

fn devices(events: &[Event]) -> BTreeMap<MacAddr, Facts> {
    let mut out: BTreeMap<MacAddr, Facts> = BTreeMap::new();
    for e in events {
        if let Event::Device(d) = e {
            out.entry(d.mac).or_default().extend(d.evidence.iter().map(|e| (e.field, e.value.clone())));
        }
    }
    out
}

fn has(facts: &Facts, field: Field, value: &str) -> bool {
    facts.contains(&(field, value.to_string()))
}

const STORE: &str = "dicom/lab-dicom-dcmtk-store.pcap";
const CT: &str = "44:4b:5d:1a:2b:01";
const US: &str = "88:b4:36:07:5e:33";
const PACS: &str = "00:1d:4a:3c:00:10";

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Evidence by IP of the original Ethernet capture's devices (each sends from one address).
fn by_ip_on_ethernet() -> BTreeMap<IpAddr, Facts> {
    let (lt, frames) = read(STORE);
    let (events, _) = run(lt, &frames, &[]);
    let devs = devices(&events);
    [(CT, "10.77.0.21"), (US, "10.77.0.31"), (PACS, "10.77.0.10")]
        .into_iter()
        .map(|(m, a)| (ip(a), devs[&mac(m)].clone()))
        .collect()
}

#[test]
fn loopback_dicom_association_yields_a_host_with_its_identity() {
    let (lt, frames) = read("dicom/dicom_arq_1_find_testclient.pcap");
    assert_eq!(lt, LinkType::Null);
    let (events, stats) = run(lt, &frames, &[]);
    assert!(devices(&events).is_empty(), "a loopback capture has no MAC devices");
    let h = hosts(&events);
    let (via, facts) = &h[&ip("127.0.0.1")];
    assert_eq!(*via, None);
    assert!(has(facts, Field::DicomCallingAe, "testclient"), "{facts:?}");
    assert!(has(facts, Field::DicomCalledAe, "testserver"));
    assert!(has(facts, Field::DicomImplClassUid, "1.2.826.0.1.3680043.9.7133.1.1"));
    assert!(has(facts, Field::DicomImplVersion, "GODICOM_1_1"));
    assert_eq!((stats.hosts, stats.findings_unattributed), (1, 0));
}

/// An Ethernet frame's IP packet, for the frames that carry one (ARP dropped).
fn ip_packets(frames: &[Frame]) -> Vec<(u64, &[u8])> {
    frames.iter().filter(|f| f.data.get(12..14) == Some(&[0x08, 0x00])).map(|f| (f.ts_us, &f.data[14..])).collect()
}

#[test]
fn raw_ip_capture_yields_hosts_with_the_evidence_their_macs_had() {
    let (_, frames) = read(STORE);
    let raw: Vec<Frame> = ip_packets(&frames).into_iter().map(|(ts_us, p)| Frame { ts_us, data: p.to_vec() }).collect();
    let (events, _) = run(LinkType::RawIp, &raw, &[]);
    assert!(devices(&events).is_empty());
    let h = hosts(&events);
    let expected = by_ip_on_ethernet();
    assert_eq!(h.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (a, facts) in &expected {
        assert_eq!(&h[a].1, facts, "host {a}");
        assert_eq!(h[a].0, None);
    }
    assert!(has(&h[&ip("10.77.0.21")].1, Field::DicomCallingAe, "CT_ROOM2"));
}

/// Linux cooked v1 header: packet type, ARPHRD type, address length and address, protocol.
fn sll(hatype: u16, src: Option<&[u8]>, ethertype: u16, packet: &[u8]) -> Vec<u8> {
    let mut h = vec![0, 0];
    h.extend_from_slice(&hatype.to_be_bytes());
    let mut addr = [0u8; 8];
    if let Some(m) = src {
        addr[..6].copy_from_slice(m);
    }
    h.extend_from_slice(&(if src.is_some() { 6u16 } else { 0 }).to_be_bytes());
    h.extend_from_slice(&addr);
    h.extend_from_slice(&ethertype.to_be_bytes());
    h.extend_from_slice(packet);
    h
}

#[test]
fn cooked_capture_without_link_addresses_yields_hosts_and_with_them_macs() {
    let (_, frames) = read(STORE);
    // A tunnel interface (ARPHRD_NONE): no link-layer addresses at all.
    let none: Vec<Frame> =
        ip_packets(&frames).into_iter().map(|(ts_us, p)| Frame { ts_us, data: sll(0xfffe, None, 0x0800, p) }).collect();
    let (events, _) = run(LinkType::LinuxSll, &none, &[]);
    assert!(devices(&events).is_empty());
    let h = hosts(&events);
    let expected = by_ip_on_ethernet();
    for (a, facts) in &expected {
        assert_eq!(&h[a].1, facts, "host {a}");
    }
    assert_eq!(h.len(), expected.len());
    // An Ethernet interface in a Linux "any" capture: source MACs only. Every sender is
    // a MAC device; the missing destination MAC does not make a host of a known address.
    let eth: Vec<Frame> = frames
        .iter()
        .filter(|f| f.data.get(12..14) == Some(&[0x08, 0x00]))
        .map(|f| Frame { ts_us: f.ts_us, data: sll(1, Some(&f.data[6..12]), 0x0800, &f.data[14..]) })
        .collect();
    let (events, _) = run(LinkType::LinuxSll, &eth, &[]);
    assert!(hosts(&events).is_empty(), "{:?}", hosts(&events));
    let devs = devices(&events);
    for (m, a) in [(CT, "10.77.0.21"), (US, "10.77.0.31"), (PACS, "10.77.0.10")] {
        assert_eq!(devs[&mac(m)], expected[&ip(a)], "device {m}");
    }
}

#[test]
fn client_hello_from_outside_the_default_ranges_needs_the_site_network() {
    let (lt, frames) = read("tls/tls-alpn-h2.pcap");
    let (events, stats) = run(lt, &frames, &[]);
    assert!(hosts(&events).is_empty(), "an Internet address is not a device by default");
    assert!(stats.findings_unattributed > 0);
    let (events, _) = run(lt, &frames, &["2001:4998::/32"]);
    let h = hosts(&events);
    assert_eq!(h.len(), 1, "{h:?}");
    let (via, facts) = &h[&ip("2001:4998:ef83:14:8000::100d")];
    assert_eq!(*via, None);
    assert!(has(facts, Field::TlsSni, "www.cloudflare.com"));
    assert!(has(facts, Field::Ja3, "3faa4ad39f690c4ef1c3160caa375465"));
    assert!(has(facts, Field::Ja4, "t12d4605h2_85626a9a5f7f_aaf95bb78ec9"));
}

#[test]
fn a_router_mac_carrying_several_hosts_yields_one_host_per_address_and_nothing_on_the_router() {
    let (_, frames) = read(STORE);
    let router = mac("00:00:0c:9f:f0:01");
    let (ct, us) = (mac(CT), mac(US));
    let mut routed: Vec<Frame> = Vec::new();
    // The router first forwards for five other hosts of the remote site: a gateway.
    let t0 = frames[0].ts_us - 1_000;
    for i in 1..=5u8 {
        let mut f = Vec::new();
        f.extend_from_slice(&mac(PACS).0);
        f.extend_from_slice(&router.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 63, 17, 0, 0, 10, 77, 9, i, 10, 77, 0, 10]);
        f.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
        routed.push(Frame { ts_us: t0 + i as u64, data: f });
    }
    // The modalities sit behind it: their frames carry its MAC, and their ARP stays on
    // their own segment.
    for f in frames.iter().filter(|f| f.data.get(12..14) == Some(&[0x08, 0x00])) {
        let mut d = f.data.clone();
        for field in [0..6, 6..12] {
            let m = MacAddr(d[field.clone()].try_into().unwrap());
            if m == ct || m == us {
                d[field].copy_from_slice(&router.0);
            }
        }
        routed.push(Frame { ts_us: f.ts_us, data: d });
    }
    let (events, stats) = run(LinkType::Ethernet, &routed, &[]);
    let h = hosts(&events);
    let expected = by_ip_on_ethernet();
    for a in ["10.77.0.21", "10.77.0.31"] {
        let (via, facts) = &h[&ip(a)];
        assert_eq!(*via, Some(router));
        assert_eq!(facts, &expected[&ip(a)], "host {a}");
    }
    assert!(has(&h[&ip("10.77.0.21")].1, Field::DicomCallingAe, "CT_ROOM2"));
    assert!(has(&h[&ip("10.77.0.31")].1, Field::DicomCallingAe, "US_WARD5"));
    // The fifth forwarded source made it a gateway: that one is a host; the PACS, on its
    // own segment, stays a MAC device with what it had.
    assert!(h.contains_key(&ip("10.77.9.5")));
    assert!(!h.contains_key(&ip("10.77.0.10")));
    assert_eq!(h.len(), 3);
    let devs = devices(&events);
    assert!(devs.get(&router).is_none_or(|f| f.is_empty()), "router got {:?}", devs.get(&router));
    assert_eq!(devs[&mac(PACS)], expected[&ip("10.77.0.10")]);
    assert_eq!((stats.hosts, stats.findings_unattributed), (3, 0));
    // Every packet the modalities sent is theirs.
    let packets = |a: &str| {
        events
            .iter()
            .filter_map(|e| if let Event::Host(o) = e { (o.ip == ip(a)).then_some(o.packets) } else { None })
            .sum::<u64>()
    };
    let sent = |m: &str| frames.iter().filter(|f| f.data[6..12] == mac(m).0 && f.data[12..14] == [8, 0]).count() as u64;
    assert_eq!(packets("10.77.0.21"), sent(CT));
    assert_eq!(packets("10.77.0.31"), sent(US));
}
