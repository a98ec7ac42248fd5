//! SNMP dissector on real captures. Also proves the community string is never stored.
use crate::dissect_common::*;
use proptest::prelude::*;
use wardline_common::Field;
use wardline_sensor::dissect::{snmp, Side};

#[test]
fn v2c_agent_reports_sysdescr_and_object_id() {
    let (found, errors) = run_dissector(&pcap("discovery/lab-snmp-v2c-sysdescr.pcap"), &snmp::SnmpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    let agent = |field: Field| -> Vec<String> {
        found
            .iter()
            .filter(|(c, f)| {
                f.field == field
                    && f.side == Side::Src
                    && c.src_ip.map(|i| i.to_string()).as_deref() == Some("10.77.0.92")
            })
            .map(|(_, f)| f.value.clone())
            .collect()
    };
    assert!(agent(Field::SnmpSysDescr)
        .contains(&"APC Smart-UPS 1500 LAB network management card (net-snmp agent)".to_string()));
    assert!(agent(Field::SnmpSysObjectId).contains(&"1.3.6.1.4.1.318.1.3.27".to_string()));
    assert_eq!(values(&found, Field::SnmpCommunityInUse), vec!["public (default)".to_string()]);
    // The manager's requests (null values) never produce sysDescr evidence.
    assert!(found.iter().all(|(c, f)| f.field != Field::SnmpSysDescr || c.src_port == 161));
}

#[test]
fn v3_engine_id_and_user() {
    let (found, errors) = run_dissector(&pcap("discovery/snmpv3_get_next.pcap"), &snmp::SnmpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(values(&found, Field::SnmpV3EngineId), vec!["80001f8880a9498e5e3a2c3043".to_string()]);
    assert_eq!(values(&found, Field::SnmpV3User), vec!["username".to_string()]);
}

#[test]
fn non_default_community_is_reduced_to_its_length() {
    // v1 GetRequest, community "hospital-ro" (11 bytes), one varbind sysDescr = NULL.
    let mut msg = vec![0x30, 0x00, 0x02, 0x01, 0x00, 0x04, 11];
    msg.extend_from_slice(b"hospital-ro");
    msg.extend_from_slice(&[
        0xa0, 0x19, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 6,
        1, 2, 1, 1, 1, 0, 0x05, 0x00,
    ]);
    msg[1] = (msg.len() - 2) as u8;
    let rec = snmp::parse(&msg).unwrap();
    let mut out = Vec::new();
    snmp::findings(&rec, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].value, "non-default (len 11)");
    assert!(!format!("{rec:?}{out:?}").contains("hospital"), "the community must not be kept anywhere");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = snmp::parse(&bytes);
    }

    #[test]
    fn ber_shaped_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut m = vec![0x30, 0x82, (body.len() >> 8) as u8, body.len() as u8];
        m.extend_from_slice(&body);
        let _ = snmp::parse(&m);
    }
}
