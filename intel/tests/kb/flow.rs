//! Flow context: a classified device's flows labelled from its profile's, its class's and
//! the global expected communications, and from the peer's side.

use std::net::{IpAddr, Ipv4Addr};
use wardline_common::{Evidence, Field, FlowRecord, MacAddr, Proto};
use wardline_intel::{classify, flow_context, Classification, DeviceFacts, FlowSpec, FlowTag, KnowledgeBase, PortRef};
use wardline_intel::{Direction, Transport};

fn kb() -> KnowledgeBase {
    KnowledgeBase::builtin().expect("builtin KB")
}

fn device(
    kb: &KnowledgeBase,
    mac: &str,
    ev: &[(Field, &str)],
    listening: &[PortRef],
    connects: &[PortRef],
) -> Classification {
    let mut f = DeviceFacts::new(mac.parse().expect("mac"));
    f.evidence = ev.iter().map(|(k, v)| Evidence::new(*k, *v, Proto::Unknown, 0)).collect();
    f.listening = listening.to_vec();
    f.connects_to = connects.to_vec();
    classify(kb, &f)
}

fn spec(t: Transport, port: u16, direction: Direction, peer_external: bool) -> FlowSpec {
    FlowSpec { transport: t, port, direction, peer_external }
}

#[test]
fn pump_flows() {
    let kb = kb();
    let pump = device(&kb, "00:d0:75:00:00:01", &[(Field::Hostname, "ALARIS-8015-1")], &[], &[PortRef::tcp(3613)]);
    let server = device(&kb, "d4:be:d9:00:00:02", &[(Field::Hostname, "ALARIS-SM")], &[PortRef::tcp(3613)], &[]);
    let ws = device(&kb, "18:66:da:00:00:03", &[(Field::DhcpVendorClass, "MSFT 5.0")], &[], &[]);
    assert_eq!(pump.class.value, "infusion_pump");
    assert_eq!(server.class.value, "pump_server");

    let to_server = flow_context(&kb, &pump, Some(&server), &spec(Transport::Tcp, 3613, Direction::Outbound, false));
    assert_eq!(to_server.tag, FlowTag::Required, "{}", to_server.reason);
    assert!(to_server.reason.contains("Systems Manager"), "{}", to_server.reason);
    assert!(to_server.comm.is_some() && to_server.source.is_some());

    // Same port to something that is not the pump server.
    let elsewhere = flow_context(&kb, &pump, Some(&ws), &spec(Transport::Tcp, 3613, Direction::Outbound, false));
    assert_eq!(elsewhere.tag, FlowTag::Risky, "{}", elsewhere.reason);

    // Telnet into the pump: risky by the global list.
    let telnet = flow_context(&kb, &pump, Some(&ws), &spec(Transport::Tcp, 23, Direction::Inbound, false));
    assert_eq!(telnet.tag, FlowTag::Risky);
    // Web to the internet from a pump: risky. From a workstation: acceptable (class wins).
    assert_eq!(
        flow_context(&kb, &pump, None, &spec(Transport::Tcp, 443, Direction::Outbound, true)).tag,
        FlowTag::Risky
    );
    assert_eq!(
        flow_context(&kb, &ws, None, &spec(Transport::Tcp, 443, Direction::Outbound, true)).tag,
        FlowTag::Acceptable
    );
    // DNS inside: acceptable; NTP: acceptable.
    assert_eq!(
        flow_context(&kb, &pump, None, &spec(Transport::Udp, 53, Direction::Outbound, false)).tag,
        FlowTag::Acceptable
    );
    assert_eq!(
        flow_context(&kb, &pump, None, &spec(Transport::Udp, 123, Direction::Outbound, false)).tag,
        FlowTag::Acceptable
    );
    // Nothing known about this one.
    let odd = flow_context(&kb, &pump, Some(&ws), &spec(Transport::Tcp, 40000, Direction::Outbound, false));
    assert_eq!(odd.tag, FlowTag::Unknown);
    assert!(odd.reason.contains("infusion_pump") && odd.reason.contains("tcp/40000"), "{}", odd.reason);

    // The server's side of the pump flow is required too.
    let inbound = flow_context(&kb, &server, Some(&pump), &spec(Transport::Tcp, 3613, Direction::Inbound, false));
    assert_eq!(inbound.tag, FlowTag::Required, "{}", inbound.reason);
}

#[test]
fn imaging_flows_use_the_peers_expectations_too() {
    let kb = kb();
    let ct = device(
        &kb,
        "44:4b:5d:00:00:01",
        &[
            (Field::DicomImplClassUid, "1.2.840.113619.6.374"),
            (Field::DicomImplVersion, "REVOLUTION_CT_1"),
            (Field::DicomAbstractSyntax, "1.2.840.10008.5.1.4.1.1.2"),
        ],
        &[],
        &[],
    );
    let pacs = device(&kb, "f8:b1:56:00:00:02", &[(Field::DicomCalledAe, "PACS_ARCHIVE")], &[PortRef::tcp(104)], &[]);
    let mwl = device(&kb, "b0:83:fe:00:00:03", &[(Field::DicomCalledAe, "MWL_SCP")], &[PortRef::tcp(104)], &[]);
    assert_eq!(
        (ct.class.value.as_str(), pacs.class.value.as_str(), mwl.class.value.as_str()),
        ("ct", "pacs", "modality_worklist")
    );
    assert_eq!(
        flow_context(&kb, &ct, Some(&pacs), &spec(Transport::Tcp, 104, Direction::Outbound, false)).tag,
        FlowTag::Required
    );
    assert_eq!(
        flow_context(&kb, &ct, Some(&mwl), &spec(Transport::Tcp, 104, Direction::Outbound, false)).tag,
        FlowTag::Required
    );
    // An X-ray without a profile comm list: the PACS class expects stores from modalities.
    let dx = device(
        &kb,
        "00:1d:4a:00:00:04",
        &[(Field::DicomAbstractSyntax, "1.2.840.10008.5.1.4.1.1.1.1"), (Field::DicomCallingAe, "DRX_EVO01")],
        &[],
        &[],
    );
    assert_eq!(dx.class.value, "xray");
    let c = flow_context(&kb, &pacs, Some(&dx), &spec(Transport::Tcp, 104, Direction::Inbound, false));
    assert_eq!(c.tag, FlowTag::Required, "{}", c.reason);
    // A workstation storing to the PACS is not something either side expects.
    let ws = device(&kb, "18:66:da:00:00:05", &[(Field::DhcpVendorClass, "MSFT 5.0")], &[], &[]);
    let c = flow_context(&kb, &ws, Some(&pacs), &spec(Transport::Tcp, 104, Direction::Outbound, false));
    assert_eq!(c.tag, FlowTag::Unknown, "{}", c.reason);
}

#[test]
fn flow_spec_from_a_flow_record() {
    let pump: MacAddr = "00:d0:75:00:00:01".parse().expect("mac");
    let server: MacAddr = "d4:be:d9:00:00:02".parse().expect("mac");
    let rec = FlowRecord {
        ip_proto: 6,
        vlan: None,
        a_mac: pump,
        b_mac: server,
        a_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        b_ip: IpAddr::V4(Ipv4Addr::new(52, 1, 2, 3)),
        a_port: 40001,
        b_port: 3613,
        first_seen_us: 0,
        last_seen_us: 1,
        packets_ab: 1,
        packets_ba: 1,
        bytes_ab: 60,
        bytes_ba: 60,
        tcp_flags_ab: 0x02,
        tcp_flags_ba: 0x12,
        app: "alaris".into(),
        end_reason: "fin".into(),
    };
    let s = FlowSpec::from_record(&rec, &pump).expect("pump is an end");
    assert_eq!((s.transport, s.port, s.direction, s.peer_external), (Transport::Tcp, 3613, Direction::Outbound, true));
    let s = FlowSpec::from_record(&rec, &server).expect("server is an end");
    assert_eq!((s.port, s.direction, s.peer_external), (3613, Direction::Inbound, false));
    assert!(FlowSpec::from_record(&rec, &MacAddr::ZERO).is_none());
    // Capture started mid-conversation: the first packet seen came from the server port.
    let mut mid = rec.clone();
    std::mem::swap(&mut mid.a_mac, &mut mid.b_mac);
    std::mem::swap(&mut mid.a_ip, &mut mid.b_ip);
    mid.a_port = 443;
    mid.b_port = 40001;
    let s = FlowSpec::from_record(&mid, &pump).expect("pump");
    assert_eq!((s.port, s.direction), (443, Direction::Outbound));
    let icmp = FlowRecord { ip_proto: 1, ..rec };
    assert!(FlowSpec::from_record(&icmp, &pump).is_none());
}
