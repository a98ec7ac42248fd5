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

/// BER TLV with a definite length (short or two-byte long form).
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    match body.len() {
        n @ 0..=127 => v.push(n as u8),
        n @ 128..=255 => v.extend_from_slice(&[0x81, n as u8]),
        n => v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    v.extend_from_slice(body);
    v
}

/// BER encoding of a 1.3.6.1.2.1.1.N.0 name (every arc below 128).
fn system_oid(n: u8) -> Vec<u8> {
    tlv(0x06, &[0x2b, 6, 1, 2, 1, 1, n, 0])
}

/// A v2c message of the given PDU tag (0xa2 response, 0xa3 set, 0xa7 trap, 0xa8 report)
/// carrying (system scalar number, OCTET STRING value) varbinds.
fn v2c(pdu_tag: u8, varbinds: &[(u8, &[u8])]) -> Vec<u8> {
    let list: Vec<u8> =
        varbinds.iter().flat_map(|(n, v)| tlv(0x30, &[system_oid(*n), tlv(0x04, v)].concat())).collect();
    let pdu = tlv(pdu_tag, &[tlv(0x02, &[7]), tlv(0x02, &[0]), tlv(0x02, &[0]), tlv(0x30, &list)].concat());
    tlv(0x30, &[tlv(0x02, &[1]), tlv(0x04, b"public"), pdu].concat())
}

/// An agent's entPhysicalSerialNum instances are its serial numbers; a manager's request
/// for them, an empty value or the column without an instance says nothing.
#[test]
fn entity_mib_serial_numbers_from_agents_only() {
    let serial_oid = |index: &[u8]| tlv(0x06, &[&[0x2b, 6, 1, 2, 1, 47, 1, 1, 1, 1, 11][..], index].concat());
    let message = |pdu_tag: u8, varbinds: &[(Vec<u8>, &[u8])]| {
        let list: Vec<u8> =
            varbinds.iter().flat_map(|(oid, v)| tlv(0x30, &[oid.clone(), tlv(0x04, v)].concat())).collect();
        let pdu = tlv(pdu_tag, &[tlv(0x02, &[7]), tlv(0x02, &[0]), tlv(0x02, &[0]), tlv(0x30, &list)].concat());
        tlv(0x30, &[tlv(0x02, &[1]), tlv(0x04, b"public"), pdu].concat())
    };
    let varbinds: Vec<(Vec<u8>, &[u8])> = vec![
        (serial_oid(&[1]), b"FOC1234X0AB"),
        // Instance 1001 (BER 0x87 0x69): unset.
        (serial_oid(&[0x87, 0x69]), b""),
        (serial_oid(&[]), b"column-only"),
        (serial_oid(&[2]), b"PSU-99812"),
    ];
    assert_eq!(
        agent_findings(&message(0xa2, &varbinds)),
        vec![
            (Side::Src, Field::SerialNumber, "FOC1234X0AB".to_string()),
            (Side::Src, Field::SerialNumber, "PSU-99812".to_string()),
        ]
    );
    assert_eq!(agent_findings(&message(0xa0, &varbinds)), vec![], "a GetRequest names what it asks for");
}

fn agent_findings(msg: &[u8]) -> Vec<(Side, Field, String)> {
    let mut out = Vec::new();
    snmp::findings(&snmp::parse(msg).expect("hand-built message parses"), &mut out);
    out.into_iter().filter(|f| f.field != Field::SnmpCommunityInUse).map(|f| (f.side, f.field, f.value)).collect()
}

/// (capture, agent IP, the system-group values it reports).
type AgentCase = (&'static str, &'static str, &'static [(Field, &'static str)]);

/// sysName, sysLocation and sysContact of the responding agent, on three real captures.
#[test]
fn system_group_name_location_contact_of_the_agent() {
    let cases: [AgentCase; 3] = [
        (
            "discovery/lab-snmp-v2c-sysdescr.pcap",
            "10.77.0.92",
            &[
                (Field::SnmpSysName, "UPS-ICU3-RACK1"),
                (Field::SnmpSysLocation, "WLGH Building A ICU3 comms closet"),
                (Field::SnmpSysContact, "biomed@wlgh.lab"),
            ],
        ),
        (
            "discovery/snmpv1_get.pcap",
            "172.31.19.73",
            &[(Field::SnmpSysName, "B6300"), (Field::SnmpSysLocation, "Chandra's cube")],
        ),
        (
            "discovery/snmp.pcap",
            "130.70.149.185",
            &[
                (Field::SnmpSysName, "R1.lab.local"),
                (Field::SnmpSysLocation, "GlobomanticsHQ"),
                (Field::SnmpSysContact, "nick@globomantics.com"),
            ],
        ),
    ];
    for (file, agent, expected) in cases {
        let (found, errors) = run_dissector(&pcap(file), &snmp::SnmpDissector);
        assert!(errors.is_empty(), "{file}: {errors:?}");
        for (field, value) in expected {
            let senders: Vec<String> = found
                .iter()
                .filter(|(_, f)| f.field == *field && f.value == *value)
                .map(|(c, f)| {
                    assert_eq!(f.side, Side::Src, "{file}: {field:?} describes the responding agent");
                    c.src_ip.map(|i| i.to_string()).unwrap_or_default()
                })
                .collect();
            assert!(senders.iter().any(|s| s == agent), "{file}: {field:?}={value:?} from {agent}, got {senders:?}");
        }
        // Requests carry the same names with NULL values: only responses speak.
        assert!(found
            .iter()
            .filter(|(_, f)| matches!(f.field, Field::SnmpSysName | Field::SnmpSysLocation | Field::SnmpSysContact))
            .all(|(c, _)| c.src_port == 161));
    }
}

#[test]
fn v3_report_and_empty_location_give_no_system_evidence() {
    // The v3 get-next answer holds an empty sysLocation: unset, so nothing to say.
    let (found, errors) = run_dissector(&pcap("discovery/snmpv3_get_next.pcap"), &snmp::SnmpDissector);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(values(&found, Field::SnmpSysLocation).is_empty(), "{found:?}");
}

#[test]
fn only_agent_pdus_are_evidence() {
    let vbs: &[(u8, &[u8])] = &[(5, b"pump-gw-7"), (6, b"Ward 4B, rack 2"), (4, b"biomed x4411")];
    let expect = vec![
        (Side::Src, Field::SnmpSysName, "pump-gw-7".to_string()),
        (Side::Src, Field::SnmpSysLocation, "Ward 4B, rack 2".to_string()),
        (Side::Src, Field::SnmpSysContact, "biomed x4411".to_string()),
    ];
    for pdu in [0xa2, 0xa7, 0xa8] {
        assert_eq!(agent_findings(&v2c(pdu, vbs)), expect, "PDU tag {pdu:#x}");
    }
    // A manager's SetRequest writing sysLocation says nothing the agent confirmed.
    assert_eq!(agent_findings(&v2c(0xa3, vbs)), vec![]);
}

#[test]
fn empty_padded_and_non_instance_values() {
    // Empty and blank values are unset; trailing NULs/spaces are dropped.
    let got = agent_findings(&v2c(0xa2, &[(5, b""), (6, b"   "), (4, b"ops\0\0")]));
    assert_eq!(got, vec![(Side::Src, Field::SnmpSysContact, "ops".to_string())]);
    // sysName without the .0 instance (a column, not the scalar) is not sysName.
    let list = tlv(0x30, &[tlv(0x06, &[0x2b, 6, 1, 2, 1, 1, 5]), tlv(0x04, b"x")].concat());
    let pdu = tlv(0xa2, &[tlv(0x02, &[1]), tlv(0x02, &[0]), tlv(0x02, &[0]), tlv(0x30, &list)].concat());
    let msg = tlv(0x30, &[tlv(0x02, &[1]), tlv(0x04, b"public"), pdu].concat());
    assert_eq!(agent_findings(&msg), vec![]);
}

#[test]
fn truncated_varbinds_are_errors_never_panics() {
    let msg = v2c(0xa2, &[(5, b"UPS-ICU3-RACK1"), (6, b"closet")]);
    for cut in 0..msg.len() {
        // Every cut breaks a length: the message is refused (and counted), not half-read.
        let e = snmp::parse(&msg[..cut]).expect_err("a cut message is malformed");
        assert!(matches!(e.kind, "truncated" | "bad_ber"), "cut {cut}: {e}");
    }
    // A varbind whose value overruns its SEQUENCE is malformed too.
    let mut bad = v2c(0xa2, &[(5, b"abc")]);
    let n = bad.len();
    bad[n - 4] = 0x7f;
    assert!(snmp::parse(&bad).is_err());
}

proptest! {
    #[test]
    fn any_display_string_round_trips(name in "[ -~]{0,200}", loc in proptest::collection::vec(any::<u8>(), 0..300)) {
        let got = agent_findings(&v2c(0xa2, &[(5, name.as_bytes()), (6, &loc)]));
        let want_name = wardline_sensor::dissect::text::display(name.as_bytes());
        let want_loc = wardline_sensor::dissect::text::display(&loc);
        let mut want = Vec::new();
        if !want_name.is_empty() { want.push((Side::Src, Field::SnmpSysName, want_name)); }
        if !want_loc.is_empty() { want.push((Side::Src, Field::SnmpSysLocation, want_loc)); }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn cut_or_corrupted_responses_never_panic(cut in 0usize..400, at in 0usize..400, byte in any::<u8>()) {
        let mut msg = v2c(0xa2, &[(1, b"Smart-UPS"), (5, b"UPS-ICU3-RACK1"), (6, b"ICU3 comms closet"), (4, b"biomed@wlgh.lab")]);
        let n = msg.len();
        msg[at % n] = byte;
        if let Ok(rec) = snmp::parse(&msg[..cut.min(n)]) {
            snmp::findings(&rec, &mut Vec::new());
        }
    }
}
