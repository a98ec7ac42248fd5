//! LLDP dissector on real captures.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::lldp;

#[test]
fn cisco_switch_lldp() {
    let (found, errors) = run_dissector(&pcap("discovery/LLDP_and_CDP.pcap"), &lldp::LldpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    let names = values(&found, Field::LldpSystemName);
    assert!(names.contains(&"S2.cisco.com".to_string()) && names.contains(&"S1.cisco.com".to_string()), "{names:?}");
    assert!(values(&found, Field::LldpSystemDescription).iter().any(|d| d.starts_with("Cisco IOS Software, C3560")));
    assert!(!values(&found, Field::LldpPortId).is_empty());
    assert!(!values(&found, Field::LldpCapabilities).is_empty());
}

#[test]
fn smc_switch_lldp_fields() {
    let cap = load(&pcap("discovery/lldp.pcap"));
    let p = cap
        .datagrams
        .iter()
        .find(|p| p.ctx.transport == wardline_sensor::dissect::Transport::L2 { ethertype: 0x88cc })
        .unwrap();
    let r = lldp::parse(&p.payload).unwrap();
    assert_eq!(r.system_name.as_deref(), Some("SMCGS8P-Smart"));
    assert!(r.system_description.as_deref().unwrap_or("").contains("SMCGS8P-Smart"));
    assert!(r.ttl.is_some());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = lldp::parse(&bytes);
    }
}
