//! Decoder: hand-built frames for each layer, and no panic on random bytes or on any
//! truncation of real packets.

use crate::dataplane_support::{all_pcaps, pcap};
use proptest::prelude::*;
use std::net::IpAddr;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::LinkType;
use wardline_sensor::decode::{decode, Fragment, Net, L4};

const MAC_A: [u8; 6] = [0x00, 0x1b, 0x21, 0x0a, 0x0b, 0x0c];
const MAC_B: [u8; 6] = [0x00, 0x50, 0x56, 0x01, 0x02, 0x03];

fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut v = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, 17, 0, 0];
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

fn eth(tags: &[(u16, u16)], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    for (tpid, id) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn qinq_udp_with_ethernet_padding() {
    let ip = ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], 5000, 53, b"hi");
    let mut f = eth(&[(0x88a8, 0x2000 | 100), (0x8100, 20)], 0x0800, &ip);
    f.extend_from_slice(&[0u8; 12]); // padding to the 64-byte minimum must not leak into the payload
    let d = decode(LinkType::Ethernet, &f).unwrap();
    assert_eq!(d.vlan, Some(100));
    assert_eq!(d.inner_vlan, Some(20));
    assert_eq!(d.src_mac.0, MAC_A);
    assert_eq!(d.dst_mac.0, MAC_B);
    assert_eq!(d.l4, L4::Udp { src_port: 5000, dst_port: 53 });
    assert_eq!(d.payload, b"hi");
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    // IPv6 → hop-by-hop (8) → dest opts (8) → TCP.
    let mut tcp = vec![0x04, 0xd2, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
    tcp.extend_from_slice(b"GET");
    let mut ext = vec![60, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0];
    ext.extend_from_slice(&tcp);
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[0, 64]);
    ip6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    ip6.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    ip6.extend_from_slice(&ext);
    let d = decode(LinkType::RawIp, &ip6).unwrap();
    let Net::Ip(h) = d.net else { panic!("not ip") };
    assert_eq!(h.proto, 6);
    assert_eq!(h.src, "fe80::1".parse::<IpAddr>().unwrap());
    match d.l4 {
        L4::Tcp(t) => {
            assert_eq!((t.src_port, t.dst_port, t.seq, t.flags), (1234, 80, 1, 0x02));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.payload, b"GET");

    // A later fragment: counted as such, no transport header read.
    let mut fragd = ip6.clone();
    fragd[6] = 44;
    fragd.truncate(40);
    fragd.extend_from_slice(&[6, 0, 0x00, 0x10, 0, 0, 0, 7]);
    fragd.extend_from_slice(b"rest of datagram");
    let len = (fragd.len() - 40) as u16;
    fragd[4..6].copy_from_slice(&len.to_be_bytes());
    let d = decode(LinkType::RawIp, &fragd).unwrap();
    assert_eq!(d.ip().unwrap().fragment, Fragment::Later);
    assert_eq!(d.l4, L4::None);
}

#[test]
fn arp_sll_null_and_errors() {
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&[192, 168, 1, 7]);
    arp.extend_from_slice(&MAC_B);
    arp.extend_from_slice(&[192, 168, 1, 1]);
    let frame = eth(&[], 0x0806, &arp);
    let d = decode(LinkType::Ethernet, &frame).unwrap();
    match d.net {
        Net::Arp(a) => {
            assert_eq!(a.sender_mac.0, MAC_A);
            assert_eq!(a.sender_ip.octets(), [192, 168, 1, 7]);
            assert_eq!(a.op, 2);
        }
        other => panic!("{other:?}"),
    }

    // Linux cooked v1: packet type, ARPHRD_ETHER, addr len 6, addr, protocol.
    let mut sll = vec![0, 0, 0, 1, 0, 6];
    sll.extend_from_slice(&MAC_A);
    sll.extend_from_slice(&[0, 0, 0x08, 0x00]);
    sll.extend_from_slice(&ipv4_udp([10, 1, 1, 1], [10, 1, 1, 2], 68, 67, b"x"));
    let d = decode(LinkType::LinuxSll, &sll).unwrap();
    assert_eq!(d.src_mac.0, MAC_A);
    assert_eq!(d.ports(), (68, 67));

    // SLL2.
    let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6];
    sll2.extend_from_slice(&MAC_A);
    sll2.extend_from_slice(&[0, 0]);
    sll2.extend_from_slice(&ipv4_udp([10, 1, 1, 1], [10, 1, 1, 2], 1, 2, b"y"));
    let d = decode(LinkType::LinuxSll2, &sll2).unwrap();
    assert_eq!((d.src_mac.0, d.payload), (MAC_A, &b"y"[..]));

    // BSD NULL, little-endian AF_INET.
    let mut null = vec![2, 0, 0, 0];
    null.extend_from_slice(&ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 3, 4, b"z"));
    assert_eq!(decode(LinkType::Null, &null).unwrap().payload, b"z");

    // Errors carry stable kinds.
    assert_eq!(decode(LinkType::Ethernet, &[1, 2, 3]).unwrap_err().kind, "ethernet_truncated");
    let mut bad = ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 3, 4, b"z");
    bad[0] = 0x43;
    assert_eq!(decode(LinkType::RawIp, &bad).unwrap_err().kind, "ipv4_bad_ihl");
    let short = ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 3, 4, b"");
    assert_eq!(decode(LinkType::RawIp, &short[..24]).unwrap_err().kind, "udp_truncated");
    assert_eq!(decode(LinkType::Other(999), &short).unwrap_err().kind, "unsupported_linktype");
    // LLDP is not an error: a non-IP frame with its L2 payload.
    let lldp = eth(&[], 0x88cc, &[2, 7, 4]);
    let d = decode(LinkType::Ethernet, &lldp).unwrap();
    assert_eq!((d.net, d.ethertype, d.payload), (Net::Other, 0x88cc, &[2u8, 7, 4][..]));
}

#[test]
fn real_tcp_packet_fields_match_tshark() {
    let p = pcap("http/get.pcap");
    let mut r = FileReader::open(&p).unwrap();
    let first = r.next_packet().unwrap().unwrap();
    let d = decode(first.linktype, first.data).unwrap();
    // tshark: 141.142.228.5:59856 -> 192.150.187.43:80, SYN, seq raw 2981446536 ... only check stable parts.
    assert_eq!(d.ip().unwrap().src, "141.142.228.5".parse::<IpAddr>().unwrap());
    assert_eq!(d.ports(), (59856, 80));
    match d.l4 {
        L4::Tcp(t) => assert_eq!(t.flags, 0x02),
        other => panic!("{other:?}"),
    }
}

/// Every real frame of a few captures, every prefix of it: no panic.
#[test]
fn truncations_of_real_packets_never_panic() {
    let mut frames = 0;
    for p in all_pcaps().into_iter().step_by(7) {
        let mut r = FileReader::open(&p).unwrap();
        let mut n = 0;
        while let Ok(Some(pkt)) = r.next_packet() {
            for cut in 0..pkt.data.len().min(200) {
                let _ = decode(pkt.linktype, &pkt.data[..cut]);
            }
            let _ = decode(pkt.linktype, pkt.data);
            n += 1;
            frames += 1;
            if n > 40 {
                break;
            }
        }
    }
    assert!(frames > 100);
}

fn linktypes() -> impl Strategy<Value = LinkType> {
    prop_oneof![
        Just(LinkType::Ethernet),
        Just(LinkType::RawIp),
        Just(LinkType::Null),
        Just(LinkType::Loop),
        Just(LinkType::LinuxSll),
        Just(LinkType::LinuxSll2),
        Just(LinkType::Radiotap),
        Just(LinkType::Ipv4),
        Just(LinkType::Ipv6),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn random_bytes_never_panic(lt in linktypes(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(lt, &bytes);
    }

    /// Random bytes behind a valid Ethernet + IPv4/IPv6 start exercise the deeper layers.
    #[test]
    fn random_ip_bodies_never_panic(v6 in any::<bool>(), proto in prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(0), Just(44), Just(43), any::<u8>()],
                                    body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut f = eth(&[], if v6 { 0x86dd } else { 0x0800 }, &[]);
        if v6 {
            f.extend_from_slice(&[0x60, 0, 0, 0, 0, body.len() as u8, proto, 64]);
            f.extend_from_slice(&[0u8; 32]);
        } else {
            f.extend_from_slice(&[0x45, 0, 0, (20 + body.len()) as u8, 0, 0, 0, 0, 64, proto, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        }
        f.extend_from_slice(&body);
        let _ = decode(LinkType::Ethernet, &f);
    }
}
