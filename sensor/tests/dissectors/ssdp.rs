//! SSDP dissector on real captures.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::{ssdp, Dissector};

#[test]
fn tomato_router_server_header() {
    let (found, errors) = run_dissector(&pcap("discovery/ssdp.pcap"), &ssdp::SsdpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        values(&found, Field::SsdpServer),
        vec!["UPnP/Tomato 1.28.7500 MIPSR2Toastman-RT K26 USB Ext UPnP/1.0 MiniUPnPd/1.6".to_string()]
    );
    assert!(!values(&found, Field::SsdpUsn).is_empty());
    assert!(values(&found, Field::SsdpLocation).iter().all(|l| l.starts_with("http://")));
}

#[test]
fn m_search_on_a_non_standard_port_is_recognised_by_payload() {
    let cap = load(&pcap("discovery/ssdp-m-search.pcap"));
    let p = cap.datagrams.iter().find(|p| p.payload.starts_with(b"M-SEARCH")).expect("an M-SEARCH");
    assert!(p.ctx.dst_port != 1900);
    assert!(ssdp::SsdpDissector.wants(&p.ctx, &p.payload));
    let rec = ssdp::parse(&p.payload).unwrap();
    assert_eq!(rec.kind, ssdp::SsdpKind::MSearch);
    // This sender puts only the request line in the datagram; no headers, no findings.
    assert!(rec.st.is_none() && rec.head.headers.is_empty());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ssdp::parse(&bytes);
    }
}
