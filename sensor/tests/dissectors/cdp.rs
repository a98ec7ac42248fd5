//! CDP dissector on real captures.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::cdp;

#[test]
fn cisco_1601_router() {
    let (found, errors) = run_dissector(&pcap("discovery/cdp-v1.pcap"), &cdp::CdpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(values(&found, Field::CdpDeviceId), vec!["R1".to_string()]);
    assert_eq!(values(&found, Field::CdpPlatform), vec!["cisco 1601".to_string()]);
    assert!(values(&found, Field::CdpSoftwareVersion)[0].contains("Cisco Internetwork Operating System"));
    assert!(!values(&found, Field::CdpPortId).is_empty());
}

#[test]
fn catalyst_cdp_v2_has_native_vlan_and_management_address() {
    let (found, errors) = run_dissector(&pcap("discovery/LLDP_and_CDP.pcap"), &cdp::CdpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(values(&found, Field::CdpDeviceId).iter().any(|d| d.starts_with("S1")));
    assert!(!values(&found, Field::CdpNativeVlan).is_empty());
    assert!(values(&found, Field::CdpManagementAddress).iter().any(|a| a.parse::<std::net::IpAddr>().is_ok()));
}

#[test]
fn dtp_on_the_same_multicast_is_not_cdp() {
    let cap = load(&pcap("discovery/DTP.pcap"));
    for p in &cap.datagrams {
        if p.payload.starts_with(&[0xaa, 0xaa, 0x03]) {
            assert!(!cdp::is_cdp_snap(&p.payload));
            assert_eq!(cdp::parse(&p.payload).unwrap_err().kind, "not_cdp");
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = cdp::parse(&bytes);
    }
}
