//! Vendor protocols by port and shape, and p0f-style SYN signatures on real captures.

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::tcp_syn;
use wardline_sensor::dissect::vendor::{self, Match, VendorDissector, VendorProtocol};
use wardline_sensor::dissect::{registry, Dissector, Side, Transport};

#[test]
fn intellivue_needs_port_and_shape() {
    // Association request session header CN_SPDU_SI 0x0D with LI covering the datagram (PIPG p.67, 298).
    let mut assoc = vec![0x0D, 0x08];
    assoc.extend_from_slice(&[0x05, 0x08, 0x13, 0x01, 0x00, 0x16, 0x01, 0x02]);
    let c = ctx(Transport::Udp, 40000, 24105);
    let rec = vendor::parse(&c, &assoc).expect("IntelliVue association");
    assert_eq!(rec.protocol, VendorProtocol::IntellivueDataExport);
    assert_eq!(rec.matched, Match::PortAndShape("session-header"));
    // SPpdu 0xE100 ctx 2, ROapdus ROIV length 0.
    let cmd = [0xE1, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00];
    assert_eq!(vendor::parse(&c, &cmd).unwrap().matched, Match::PortAndShape("sppdu-roapdu"));
    assert!(vendor::parse(&c, b"hello world").is_none(), "random bytes on 24105 are not IntelliVue");
    assert!(vendor::parse(&ctx(Transport::Udp, 40000, 24106), &assoc).is_none());
    let mut out = Vec::new();
    VendorDissector(VendorProtocol::IntellivueDataExport).dissect(&c, &assoc, &mut out).unwrap();
    assert!(out.iter().any(|f| f.side == Side::Dst
        && f.field == Field::VendorProtocol
        && f.value == "philips-intellivue-data-export"));
    assert!(out.iter().any(|f| f.side == Side::Dst && f.field == Field::ListeningPort && f.value == "udp/24105"));
}

#[test]
fn sdc_needs_tls_or_soap_on_6464() {
    let c = ctx(Transport::Tcp, 40000, 6464);
    assert_eq!(vendor::parse(&c, &[0x16, 3, 1, 0, 5, 1]).unwrap().protocol, VendorProtocol::Sdc);
    let soap = b"POST /dev HTTP/1.1\r\nContent-Type: application/soap+xml\r\n\r\n<s:Envelope/>";
    assert_eq!(vendor::parse(&c, soap).unwrap().matched, Match::PortAndShape("http-soap"));
    assert!(vendor::parse(&c, b"GET / HTTP/1.1\r\n\r\n").is_none());
}

#[test]
fn port_only_protocols_say_so() {
    let a = vendor::parse(&ctx(Transport::Tcp, 3613, 50000), b"\x01\x02").unwrap();
    assert_eq!(
        (a.protocol, a.matched, a.service_sides.clone()),
        (VendorProtocol::Alaris, Match::PortOnly, vec![Side::Src])
    );
    let g = vendor::parse(&ctx(Transport::Udp, 7000, 7000), b"x").unwrap();
    assert_eq!((g.protocol, g.service_sides.len()), (VendorProtocol::Carescape, 2));
    assert!(
        vendor::parse(&ctx(Transport::Tcp, 2000, 50000), b"x").is_none(),
        "CARESCAPE ports are UDP; TCP 2000 is Cisco SCCP"
    );
}

#[test]
fn registry_dispatches_medical_payloads_by_shape_before_port_matches() {
    let reg = registry();
    let pick =
        |c: &wardline_sensor::dissect::PacketCtx, p: &[u8]| reg.iter().find(|d| d.wants(c, p)).map(|d| d.proto());
    use wardline_common::Proto;
    // HL7 on the Alaris port is still HL7 (payload beats port).
    assert_eq!(pick(&ctx(Transport::Tcp, 50000, 3613), b"\x0bMSH|^~\\&|A|B|C|D"), Some(Proto::Hl7));
    assert_eq!(pick(&ctx(Transport::Tcp, 50000, 3613), b"\x00\x01"), Some(Proto::Alaris));
    assert_eq!(pick(&ctx(Transport::Tcp, 50000, 2762), &[0x16, 3, 1, 0, 5]), Some(Proto::Dicom));
    assert_eq!(pick(&ctx(Transport::Tcp, 5901, 50000), b"RFB 003.008\n"), Some(Proto::Vnc));
}

#[test]
fn syn_signatures_of_the_lab_telnet_handshake() {
    // tshark on this capture: client SYN ttl 64 win 64240 mss 1460 ws 10 options 2,4,8,1,3;
    // server SYN+ACK ttl 64 win 65160, same options.
    let pkts = read_packets(&pcap("mgmt/lab-mgmt-telnet-login.pcap"));
    let sigs: Vec<(std::net::IpAddr, String)> = pkts
        .iter()
        .filter(|p| p.transport == Transport::Tcp)
        .filter_map(|p| tcp_syn::syn_signature(p.ttl, p.ip_version, &p.tcp_header).map(|s| (p.src_ip, s)))
        .collect();
    assert_eq!(
        sigs,
        vec![
            (ip("10.77.0.102"), "4:64:0:1460:mss*44,10:mss,sok,ts,nop,ws:".to_string()),
            (ip("10.77.0.103"), "4:64:0:1460:65160,10:mss,sok,ts,nop,ws:".to_string()),
        ]
    );
}

#[test]
fn syn_quirks_and_rejections() {
    // SYN, seq 0, ack 1 without ACK, URG ptr without URG, window 8192, options: MSS 1380, WS 15, EOL + junk.
    let mut h = vec![0x04, 0xd2, 0x00, 0x17, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x02, 0x20, 0x00, 0, 0, 0, 5];
    h.extend_from_slice(&[2, 4, 0x05, 0x64, 3, 3, 15, 0, 9, 0, 0, 0]);
    assert_eq!(
        tcp_syn::syn_signature(120, 4, &h).as_deref(),
        Some("4:128:0:1380:8192,15:mss,ws,eol+4:exws,opt+,seq-,ack+,uptr+")
    );
    h[13] = 0x10; // plain ACK: not a handshake packet
    assert_eq!(tcp_syn::syn_signature(64, 4, &h), None);
    assert_eq!(tcp_syn::syn_signature(64, 4, &h[..19]), None);
    h[13] = 0x02;
    h[12] = 0xF0; // data offset 60 > header bytes
    assert_eq!(tcp_syn::syn_signature(64, 4, &h), None);
}

proptest! {
    #[test]
    fn vendor_and_syn_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), sport in any::<u16>(), dport in prop::sample::select(vec![3613u16, 24105, 6464, 2000, 7000, 80]), udp in any::<bool>(), ttl in any::<u8>()) {
        let t = if udp { Transport::Udp } else { Transport::Tcp };
        let _ = vendor::parse(&ctx(t, sport, dport), &data);
        let _ = tcp_syn::syn_signature(ttl, 4, &data);
        let _ = tcp_syn::syn_signature(ttl, 6, &data);
    }
}
