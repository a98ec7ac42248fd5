//! HL7 v2 on real captures (/work/shared/pcaps/hl7): MLLP and unframed, MSH routing fields,
//! device ids, the PHI segment count, and proof that no PHI value leaves the dissector.

use crate::dissect_medical_support::*;

use proptest::prelude::*;
use wardline_common::{Field, MacAddr};
use wardline_sensor::dissect::hl7::{self, Framing, Hl7Dissector};
use wardline_sensor::dissect::{Dissector, Finding, Side, Transport};

fn hl7_facts(rel: &str) -> std::collections::BTreeSet<(std::net::IpAddr, Field, String)> {
    let msgs = messages(&read_packets(&pcap(rel)), hl7_framing);
    let (f, errors) = facts(&Hl7Dissector, &msgs);
    assert_eq!(errors, 0, "{rel}: every HL7 message parses");
    f
}

#[test]
fn oru_vitals_routing_device_ids_and_phi_count() {
    let f = hl7_facts("hl7/lab-hl7-oru-vitals.pcap");
    let has = |who: &str, field, v: &str| f.contains(&(ip(who), field, v.to_string()));
    assert!(has("10.77.0.70", Field::Hl7SendingApp, "MONITOR_GW"), "{f:#?}");
    assert!(has("10.77.0.70", Field::Hl7SendingFacility, "ICU3_CENTRAL"));
    assert!(has("10.77.0.62", Field::Hl7ReceivingApp, "EMR_VITALS"));
    assert!(has("10.77.0.62", Field::Hl7ReceivingFacility, "WLGH_MAIN"));
    assert!(has("10.77.0.70", Field::Hl7MessageType, "ORU^R01"));
    assert!(has("10.77.0.70", Field::Hl7Version, "2.6"));
    // The gateway's own EUI-64 from MSH-3; the OBX-18 equipment identifier names the bedside
    // monitor it relays for, not the gateway (see `relayed_equipment_ids_go_to_the_device_they_name`).
    assert!(has("10.77.0.70", Field::Hl7DeviceId, "0009FBFFFE6A1C00"));
    assert!(!f
        .iter()
        .any(|(a, fl, v)| *a == ip("10.77.0.70") && *fl == Field::Hl7DeviceId && v.starts_with("0009FBFFFE6A1C01")));
    assert!(has("10.77.0.71", Field::Hl7SendingApp, "CARESCAPE_GW"));
    assert!(has("10.77.0.71", Field::Hl7DeviceId, "444B5DFFFE0B6500"));
    assert!(!f
        .iter()
        .any(|(a, fl, v)| *a == ip("10.77.0.71") && *fl == Field::Hl7DeviceId && v.starts_with("444B5DFFFE0B6503")));
    // PID + PV1 in each ORU.
    assert!(has("10.77.0.70", Field::Hl7PhiSegments, "2"));
    // The EMR's ACK names itself as sender.
    assert!(has("10.77.0.62", Field::Hl7MessageType, "ACK^R01"));
}

/// Central stations forward their monitors' observations: OBX-18 names the monitor, so its
/// MAC-derived EUI-64 goes to the monitor's MAC, never to the gateway that sent it.
#[test]
fn relayed_equipment_ids_go_to_the_device_they_name() {
    let msgs = messages(&read_packets(&pcap("hl7/lab-hl7-oru-vitals.pcap")), hl7_framing);
    let mut about_monitors = std::collections::BTreeSet::new();
    for m in &msgs {
        let ctx = m.last.ctx();
        let mut out = Vec::new();
        if Hl7Dissector.wants(&ctx, &m.bytes) && Hl7Dissector.dissect(&ctx, &m.bytes, &mut out).is_ok() {
            for f in out.into_iter().filter(|f| f.field == Field::Hl7DeviceId) {
                if let Side::Mac(mac) = f.side {
                    about_monitors.insert((mac.to_string(), f.value));
                }
            }
        }
    }
    let expected: std::collections::BTreeSet<(String, String)> = [
        ("00:09:fb:6a:1c:01", "0009FBFFFE6A1C01^MX450_BED12^0009FBFFFE6A1C01^EUI-64"),
        ("44:4b:5d:0b:65:03", "444B5DFFFE0B6503^B650_BED03^444B5DFFFE0B6503^EUI-64"),
    ]
    .into_iter()
    .map(|(mac, id)| (mac.to_string(), id.to_string()))
    .collect();
    assert_eq!(about_monitors, expected);
}

/// The attribution rule for equipment ids on hand-built messages: the sender's own (equal to
/// MSH-3's universal id, or derived from the frame's source MAC), another device's by MAC,
/// or only relayed when it names no MAC.
#[test]
fn equipment_ids_are_the_senders_only_when_they_name_it() {
    let run = |src_mac: [u8; 6], msh3: &str, obx18: &str| {
        let mut ctx = ctx(Transport::Tcp, 40000, 2575);
        ctx.src_mac = MacAddr(src_mac);
        let mut bytes = vec![0x0b];
        bytes.extend_from_slice(
            format!("MSH|^~\\&|{msh3}|F|EMR|H|20240101||ORU^R01|1|P|2.6\rOBX|1|NM|X^Y^MDC||1||||||R|||||||{obx18}\r")
                .as_bytes(),
        );
        bytes.extend_from_slice(&[0x1c, 0x0d]);
        let mut out = Vec::new();
        Hl7Dissector.dissect(&ctx, &bytes, &mut out).expect("parses");
        out.into_iter()
            .filter(|f| matches!(f.field, Field::Hl7DeviceId | Field::Hl7RelayedDeviceId))
            .map(|f| (f.side, f.field, f.value.split('^').next().unwrap_or("").to_string()))
            .collect::<Vec<_>>()
    };
    let monitor = [0x00, 0x09, 0xfb, 0x00, 0x00, 0x07];
    let station = [0x00, 0x09, 0xfb, 0x00, 0x00, 0x99];
    let id = |s: &str| s.to_string();
    // A monitor sending its own ORU: OBX-18 is derived from the frame's source MAC.
    assert_eq!(
        run(monitor, "MON", "0009FBFFFE000007^MX450^EUI-64"),
        vec![(Side::Src, Field::Hl7DeviceId, id("0009FBFFFE000007"))]
    );
    // A central station forwarding the same monitor's ORU: the id goes to the monitor.
    assert_eq!(
        run(station, "PIIC", "0009FBFFFE000007^MX450^EUI-64"),
        vec![(Side::Mac(MacAddr(monitor)), Field::Hl7DeviceId, id("0009FBFFFE000007"))]
    );
    // An id that names no MAC is the sender's only when MSH-3's universal id is the same.
    assert_eq!(run(station, "PUMP^SN4711^L", "SN4711^PUMP"), vec![(Side::Src, Field::Hl7DeviceId, id("SN4711"))]);
    assert_eq!(run(station, "GW", "SN4711^PUMP"), vec![(Side::Src, Field::Hl7RelayedDeviceId, id("SN4711"))]);
    // Not MAC-derived (no FFFE in the middle): relayed, not mapped to a MAC.
    assert_eq!(
        run(station, "GW", "0009FB0001000007^X^EUI-64"),
        vec![(Side::Src, Field::Hl7RelayedDeviceId, id("0009FB0001000007"))]
    );
}

#[test]
fn eui64_oui_is_the_first_24_bits() {
    assert_eq!(hl7::eui64_oui("0009FBFFFE6A1C01^MX450_BED12^0009FBFFFE6A1C01^EUI-64").as_deref(), Some("00:09:FB"));
    assert_eq!(hl7::eui64_oui("444b5dfffe0b6503").as_deref(), Some("44:4B:5D"));
    assert_eq!(hl7::eui64_oui("MX450"), None);
}

#[test]
fn adt_orm_rde_over_one_connection() {
    let f = hl7_facts("hl7/lab-hl7-adt-orm-rde.pcap");
    let types: Vec<&str> = f
        .iter()
        .filter(|(a, fl, _)| *a == ip("10.77.0.60") && *fl == Field::Hl7MessageType)
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(types, vec!["ADT^A01", "ORM^O01", "RDE^O11"]);
    let apps: Vec<&str> = f
        .iter()
        .filter(|(a, fl, _)| *a == ip("10.77.0.60") && *fl == Field::Hl7SendingApp)
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(apps, vec!["CPOE_ORDERS", "HIS_ADT", "PHARMACY_RX"]);
}

#[test]
fn unframed_msh_payloads_in_syn_packets() {
    let pkts = read_packets(&pcap("hl7/traffic_spike.pcap"));
    let with_data: Vec<_> = pkts.iter().filter(|p| !p.payload.is_empty()).collect();
    assert_eq!(with_data.len(), 51);
    for p in with_data {
        let rec = hl7::parse(&p.payload).expect("unframed MSH parses");
        assert_eq!(rec.messages[0].framing, Framing::Unframed);
        assert_eq!(rec.messages[0].message_type.as_deref(), Some("ORM^O01"));
    }
}

#[test]
fn no_phi_value_ever_appears_in_findings() {
    // hl7.pcap carries PID "MOUSE^MICKEY", MRN 135769, address, phone, SSN 999999999, NK1 "MOUSE^MINNIE".
    let pkts = read_packets(&pcap("hl7/hl7.pcap"));
    let msgs = messages(&pkts, hl7_framing);
    let mut all: Vec<Finding> = Vec::new();
    let mut records = String::new();
    for m in &msgs {
        let c = m.last.ctx();
        if Hl7Dissector.wants(&c, &m.bytes) {
            Hl7Dissector.dissect(&c, &m.bytes, &mut all).unwrap();
            records.push_str(&format!("{:?}", hl7::parse(&m.bytes).unwrap()));
        }
    }
    let payloads =
        String::from_utf8_lossy(&msgs.iter().flat_map(|m| m.bytes.clone()).collect::<Vec<u8>>()).into_owned();
    let phi = [
        "MOUSE",
        "MICKEY",
        "MINNIE",
        "135769",
        "19281118",
        "Main St",
        "Lake Buena Vista",
        "939-5555",
        "ohtoodles",
        "999999999",
        "Penicillin",
        "Cat dander",
    ];
    let rendered = format!("{all:?}");
    for p in phi {
        assert!(payloads.contains(p), "the capture really carries {p}");
        assert!(!rendered.contains(p), "PHI {p} leaked into findings: {rendered}");
        assert!(!records.contains(p), "PHI {p} leaked into the typed record: {records}");
    }
    assert!(
        all.iter().any(|f| f.field == Field::Hl7PhiSegments && f.value == "5"),
        "PID, NK1, PV1 and two AL1 counted: {all:?}"
    );
    assert!(all.iter().any(|f| f.field == Field::Hl7SendingApp && f.value == "SENDING_APPLICATION"));
}

#[test]
fn custom_encoding_characters_are_honoured() {
    let msg = b"\x0bMSH#*!?%#APP*X#FAC#RCV#RFAC#20240101##ADT*A04#1#P#2.5\rPID###SECRET\x1c\x0d";
    let rec = hl7::parse(msg).unwrap();
    let m = &rec.messages[0];
    assert_eq!(m.encoding.component, b'*');
    assert_eq!(m.sending_app.as_deref(), Some("APP"));
    assert_eq!(m.message_type.as_deref(), Some("ADT^A04"));
    assert_eq!(m.phi_segments, 1);
    assert!(!format!("{rec:?}").contains("SECRET"));
}

#[test]
fn not_hl7() {
    assert!(!hl7::looks_like_hl7(b"GET / HTTP/1.1\r\n"));
    assert!(hl7::parse(b"\x0bPID|1\x1c\x0d").is_err());
    assert!(!Hl7Dissector.wants(&ctx(Transport::Udp, 1, 2575), b"MSH|^~\\&|A"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = hl7::parse(&data);
        let mut framed = vec![0x0b];
        framed.extend_from_slice(b"MSH|^~\\&|");
        framed.extend_from_slice(&data);
        let _ = hl7::parse(&framed);
    }

    #[test]
    fn truncations_never_panic(cut in 0usize..1400) {
        let pkts = read_packets(&pcap("hl7/lab-hl7-oru-vitals.pcap"));
        let p = pkts.iter().find(|p| p.payload.len() > 100).unwrap();
        let _ = hl7::parse(&p.payload[..cut.min(p.payload.len())]);
    }

    #[test]
    fn huge_segment_counts_stay_bounded(n in 0usize..20000) {
        let mut m = b"MSH|^~\\&|A|B|C|D|||ORU^R01|1|P|2.5\r".to_vec();
        m.extend(std::iter::repeat_n(b"OBX|1|NM|||||||||||||||||X~Y\r".as_slice(), n).flatten());
        let rec = hl7::parse(&m).unwrap();
        prop_assert!(rec.messages[0].device_ids.len() <= 64);
    }
}

#[test]
fn universal_ids_of_sending_and_receiving_apps() {
    let f = hl7_facts("hl7/lab-hl7-oru-vitals.pcap");
    let has = |who: &str, field, v: &str| f.contains(&(ip(who), field, v.to_string()));
    // IHE PCD gateways name themselves by EUI-64 in MSH-3.2/3.3 ...
    assert!(has("10.77.0.70", Field::Hl7SendingAppUniversalId, "0009FBFFFE6A1C00^EUI-64"), "{f:#?}");
    assert!(has("10.77.0.71", Field::Hl7SendingAppUniversalId, "444B5DFFFE0B6500^EUI-64"));
    // ... and the EMR's ACK names them again in MSH-5, as the receiver.
    assert!(has("10.77.0.70", Field::Hl7ReceivingAppUniversalId, "0009FBFFFE6A1C00^EUI-64"));
    assert!(has("10.77.0.71", Field::Hl7ReceivingAppUniversalId, "444B5DFFFE0B6500^EUI-64"));
    // The EMR's own HD has no universal id: nothing is said about it.
    assert!(!f.iter().any(|(a, fl, _)| *a == ip("10.77.0.62")
        && matches!(fl, Field::Hl7SendingAppUniversalId | Field::Hl7ReceivingAppUniversalId)));
    assert!(has("10.77.0.70", Field::Hl7MessageTypeFull, "ORU^R01^ORU_R01"));
    assert!(has("10.77.0.62", Field::Hl7MessageTypeFull, "ACK^R01^ACK"));
}

#[test]
fn whole_msh9_on_real_captures() {
    let f = hl7_facts("hl7/lab-hl7-adt-orm-rde.pcap");
    let full = |who: &str| -> Vec<String> {
        f.iter()
            .filter(|(a, fl, _)| *a == ip(who) && *fl == Field::Hl7MessageTypeFull)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    assert_eq!(full("10.77.0.60"), vec!["ADT^A01^ADT_A01", "ORM^O01^ORM_O01", "RDE^O11^RDE_O11"]);
    assert_eq!(full("10.77.0.61"), vec!["ACK^A01^ACK", "ACK^O01^ACK", "ACK^O11^ACK"]);
    // Two-component MSH-9 (v2.3): the whole field is code^trigger.
    let f = hl7_facts("hl7/HL7-ORU.pcap");
    assert!(f.iter().any(|(_, fl, v)| *fl == Field::Hl7MessageTypeFull && v == "ORU^R01"), "{f:#?}");
}

fn msh(body: &[u8]) -> hl7::Hl7Message {
    hl7::parse(body).expect("hand-built MSH parses").messages.remove(0)
}

#[test]
fn universal_id_and_msh9_with_custom_separators() {
    // Field '#', component '*', repetition '!', escape '?', subcomponent '%'.
    let m = msh(b"\x0bMSH#*!?%#PUMP_GW*00A0C8FFFE112233*EUI-64#FAC#EMR*2.16.840.1.113883.3.1*ISO#F2#20240101##RDE*O11*RDE_O11#1#P#2.6\rPID###SECRET\x1c\x0d");
    assert_eq!(m.sending_app.as_deref(), Some("PUMP_GW"));
    assert_eq!(m.sending_app_universal_id.as_deref(), Some("00A0C8FFFE112233^EUI-64"));
    assert_eq!(m.receiving_app_universal_id.as_deref(), Some("2.16.840.1.113883.3.1^ISO"));
    assert_eq!(m.message_type_full.as_deref(), Some("RDE^O11^RDE_O11"));
    assert_eq!(m.message_type.as_deref(), Some("RDE^O11"));
    // The message's own separators only: '^' is data here, not a component separator.
    let m = msh(b"MSH|*~\\&|A^B*ID^X*DNS|F|R|RF|||ACK^X*A04|1|P|2.5\r");
    assert_eq!(m.sending_app.as_deref(), Some("A^B"));
    assert_eq!(m.sending_app_universal_id.as_deref(), Some("ID^X^DNS"));
    assert_eq!(m.message_type_full.as_deref(), Some("ACK^X^A04"));
}

#[test]
fn missing_and_empty_components() {
    let m = msh(b"MSH|^~\\&|APP|F|RCV^^ISO|RF|||ACK^^ACK|1|P|2.5\r");
    assert_eq!(m.sending_app_universal_id, None, "no components 2/3");
    assert_eq!(m.receiving_app_universal_id, None, "a type without an id names nothing");
    assert_eq!(m.message_type_full.as_deref(), Some("ACK^^ACK"), "inner empty component kept");
    let m = msh(b"MSH|^~\\&|APP^ID-42|F|^UID^EUI-64~SECOND^X^Y|RF|||ADT^A04^|1|P|2.5\r");
    assert_eq!(m.sending_app_universal_id.as_deref(), Some("ID-42"), "id without a type");
    assert_eq!(m.receiving_app.as_deref(), None);
    assert_eq!(m.receiving_app_universal_id.as_deref(), Some("UID^EUI-64"), "first repetition only");
    assert_eq!(m.message_type_full.as_deref(), Some("ADT^A04"), "trailing empty component dropped");
    // Subcomponents are cut at the subcomponent separator; a missing MSH-9 gives nothing.
    let m = msh(b"MSH|^~\\&|APP^ID&SUB^ISO&X|F|R|RF|||");
    assert_eq!(m.sending_app_universal_id.as_deref(), Some("ID^ISO"));
    assert_eq!(m.message_type_full, None);
    let m = msh(b"MSH|^~\\&|APP|F|R|RF|||^A04^X|1\r");
    assert_eq!(m.message_type_full, None, "no message code: not a message type");
}

#[test]
fn universal_ids_go_to_the_right_ends() {
    let rec =
        hl7::parse(b"MSH|^~\\&|GW^EUI1^EUI-64|F|EMR^OID1^ISO|RF|||ORU^R01^ORU_R01|1|P|2.6\rPID|||SECRET\r").unwrap();
    let mut out = Vec::new();
    hl7::findings(&rec, &ctx(Transport::Tcp, 40000, 2575), &mut out);
    let side = |field: Field| out.iter().find(|f| f.field == field).map(|f| (f.side, f.value.clone()));
    use wardline_sensor::dissect::Side;
    assert_eq!(side(Field::Hl7SendingAppUniversalId), Some((Side::Src, "EUI1^EUI-64".into())));
    assert_eq!(side(Field::Hl7ReceivingAppUniversalId), Some((Side::Dst, "OID1^ISO".into())));
    assert_eq!(side(Field::Hl7MessageTypeFull), Some((Side::Src, "ORU^R01^ORU_R01".into())));
    assert!(!format!("{out:?}").contains("SECRET"));
}

proptest! {
    /// Any separator set and any component texts: the universal id and MSH-9 come back
    /// joined with '^', whatever the message used.
    #[test]
    fn components_rejoined_with_caret(
        seps in proptest::sample::subsequence(b"|^~\\&#*!?%@$".to_vec(), 5).prop_shuffle(),
        ns in "[A-Z0-9_]{1,12}", uid in "[A-Z0-9.]{1,20}", typ in "[A-Z0-9-]{0,8}",
        code in "[A-Z]{3}", trig in "[A-Z0-9]{0,3}", structure in "[A-Z0-9_]{0,7}",
    ) {
        let [f, c, r, e, s] = [seps[0] as char, seps[1] as char, seps[2] as char, seps[3] as char, seps[4] as char];
        let hd = if typ.is_empty() { format!("{ns}{c}{uid}") } else { format!("{ns}{c}{uid}{c}{typ}") };
        let msg = format!("MSH{f}{c}{r}{e}{s}{f}{hd}{f}FAC{f}R{f}RF{f}{f}{f}{code}{c}{trig}{c}{structure}{f}1{f}P{f}2.6\r");
        let m = msh(msg.as_bytes());
        let want_uid = if typ.is_empty() { uid.clone() } else { format!("{uid}^{typ}") };
        prop_assert_eq!(m.sending_app_universal_id, Some(want_uid));
        let parts = [code.as_str(), trig.as_str(), structure.as_str()];
        let used = parts.iter().rposition(|p| !p.is_empty()).unwrap() + 1;
        prop_assert_eq!(m.message_type_full, Some(parts[..used].join("^")));
    }

    #[test]
    fn msh_shaped_garbage_never_panics(fields in proptest::collection::vec("[ -~]{0,40}", 0..14)) {
        let msg = format!("MSH|^~\\&|{}\r", fields.join("|"));
        if let Ok(rec) = hl7::parse(msg.as_bytes()) {
            hl7::findings(&rec, &ctx(Transport::Tcp, 1, 2575), &mut Vec::new());
        }
    }
}
