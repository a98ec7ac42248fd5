//! DNS / mDNS / LLMNR dissector on real captures, plus robustness properties.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::{dns, Side};

#[test]
fn mdns_printer_announces_host_services_and_txt() {
    let (found, errors) = run_dissector(&pcap("discovery/lab-mdns-avahi-printer.pcap"), &dns::MdnsDissector);
    assert!(errors.is_empty(), "{errors:?}");
    let printer: Vec<_> = found
        .iter()
        .filter(|(c, f)| f.side == Side::Src && c.src_ip.map(|i| i.to_string()) == Some("10.77.0.90".into()))
        .map(|(_, f)| f.clone())
        .collect();
    let has = |field: Field, v: &str| printer.iter().any(|f| f.field == field && f.value == v);
    assert!(has(Field::MdnsName, "LXK-MS621-ICU3.local"), "{printer:?}");
    assert!(has(Field::MdnsService, "_ipp._tcp.local"));
    assert!(has(Field::MdnsName, "Lexmark MS621dn ICU3 Nurse Station._ipp._tcp.local"));
    assert!(has(Field::MdnsTxt, "ty=Lexmark MS621dn"));
    assert!(has(Field::MdnsTxt, "product=(Lexmark MS621dn)"));
    // The printer never claims the browsing PC's name.
    assert!(!has(Field::MdnsName, "NURSE-PC-ICU3.local"));
}

#[test]
fn mdns_queries_are_attributed_to_the_querier() {
    let (found, _) = run_dissector(&pcap("discovery/mdns-no-assoc.pcap"), &dns::MdnsDissector);
    let q = values(&found, Field::DnsQuery);
    assert!(q.contains(&"initial-query-a.local".to_string()), "{q:?}");
}

#[test]
fn unicast_dns_queries_from_a_mixed_capture() {
    let (found, errors) = run_dissector(&pcap("tls/latest.pcapng"), &dns::DnsDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!values(&found, Field::DnsQuery).is_empty());
    // Plain DNS answers describe third parties: no mDNS-style announcements.
    assert!(values(&found, Field::MdnsName).is_empty());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = dns::parse(&bytes);
        let _ = dns::parse_tcp(&bytes);
        let _ = dns::salvage_questions(&bytes);
    }

    #[test]
    fn truncations_of_a_real_message_error_cleanly(cut in 0usize..400) {
        // A real mDNS response: every prefix either parses or returns a counted error.
        let cap = load(&pcap("discovery/lab-mdns-avahi-printer.pcap"));
        let msg = &cap.datagrams.iter().find(|p| p.ctx.src_port == 5353 && p.payload.len() > 200).unwrap().payload;
        let cut = cut.min(msg.len());
        match dns::parse(&msg[..cut]) {
            Ok(_) => prop_assert!(cut == msg.len() || cut >= 12),
            Err(e) => prop_assert!(!e.kind.is_empty()),
        }
    }
}

#[test]
fn huge_garbage_payload_is_an_error() {
    let mut g = vec![0xffu8; 64 * 1024];
    g[4] = 0x7f;
    assert!(dns::parse(&g).is_err());
}
