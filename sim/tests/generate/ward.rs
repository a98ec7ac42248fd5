//! The ward capture generator, checked with an independent decoder (tshark): checksums,
//! TCP sequence consistency, DICOM/HL7/DHCP fields and per-conversation counters must all
//! match the ground truth written beside the capture.

use crate::generate_common::*;
use std::collections::BTreeSet;
use wardline_common::Field;
use wardline_sim::{generate, truth_path, GenerateOptions, GroundTruth, Scenario};

#[test]
fn same_seed_gives_byte_identical_files_and_another_seed_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = GenerateOptions::new(Scenario::Ward);
    opts.seed = 7;
    let (a, b, c) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"), dir.path().join("c.pcap"));
    generate(&opts, &a).expect("generate a");
    generate(&opts, &b).expect("generate b");
    opts.seed = 8;
    generate(&opts, &c).expect("generate c");
    let read = |p: &std::path::Path| std::fs::read(p).expect("read");
    assert_eq!(read(&a), read(&b), "same seed must give the same pcap bytes");
    assert_eq!(read(&truth_path(&a)), read(&truth_path(&b)), "same seed must give the same truth file");
    assert_ne!(read(&a), read(&c), "a different seed must change the capture");
}

#[test]
fn truth_file_round_trips_and_matches_returned_truth() {
    let (dir, pcap, truth) = ward(3);
    let loaded = GroundTruth::load(&truth_path(&pcap)).expect("load truth");
    assert_eq!(loaded, truth);
    let size = std::fs::metadata(&pcap).expect("stat").len();
    // 24-byte global header + 16 bytes per record + frame bytes.
    assert_eq!(size, 24 + 16 * truth.packets + truth.bytes);
    drop(dir);
}

#[test]
fn ward_has_the_issue_2_devices_with_registry_vendors() {
    let (_dir, _pcap, truth) = ward(1);
    let classes: BTreeSet<&str> = truth.devices.iter().map(|d| d.class.as_str()).collect();
    for want in [
        "infusion_pump",
        "pump_server",
        "ct",
        "pacs",
        "hl7_interface_engine",
        "patient_monitor",
        "central_station",
        "workstation",
        "printer",
    ] {
        assert!(classes.contains(want), "ward lacks a {want}: {classes:?}");
    }
    let registry = oui_registry();
    for d in &truth.devices {
        let oui = format!("{:02X}-{:02X}-{:02X}", d.mac.0[0], d.mac.0[1], d.mac.0[2]);
        let name = registry
            .get(&oui)
            .unwrap_or_else(|| panic!("{} ({}) uses OUI {oui} not in the IEEE registry", d.name, d.profile));
        assert_eq!(name, &d.vendor, "{}: truth vendor differs from the registry's name for {oui}", d.name);
    }
    let macs: BTreeSet<_> = truth.devices.iter().map(|d| d.mac).collect();
    assert_eq!(macs.len(), truth.devices.len(), "device MACs must be unique");
}

#[test]
fn tshark_finds_no_bad_checksums_malformed_packets_or_tcp_anomalies() {
    if !have_tshark() {
        return;
    }
    let (_dir, pcap, truth) = ward(1);
    let total = tshark_count(&pcap, "frame", &[]);
    assert_eq!(total, truth.packets, "tshark sees a different packet count");
    assert_eq!(
        tshark_count(
            &pcap,
            "ip.checksum.status == \"Bad\" || tcp.checksum.status == \"Bad\" || udp.checksum.status == \"Bad\"",
            &[]
        ),
        0
    );
    // The checks above are only meaningful if the checksums were actually verified.
    assert!(tshark_count(&pcap, "tcp.checksum.status == \"Good\"", &[]) > 100);
    assert!(tshark_count(&pcap, "udp.checksum.status == \"Good\"", &[]) > 100);
    assert_eq!(
        tshark_count(&pcap, "_ws.malformed || _ws.expert.severity == \"Error\"", &["-d", "tcp.port==2575,hl7"]),
        0
    );
    assert_eq!(tshark_count(&pcap, "frame.time_delta < 0", &[]), 0, "timestamps never go back");
    // Retransmissions, lost segments, unseen ACKs, out-of-order: any means broken seq/ack.
    assert_eq!(tshark_count(&pcap, "tcp.analysis.flags && !tcp.analysis.window_update", &[]), 0);
    let syns = tshark_count(&pcap, "tcp.flags.syn == 1 && tcp.flags.ack == 0", &[]);
    let fins = tshark_count(&pcap, "tcp.flags.fin == 1", &[]);
    let sessions: u64 = truth.flows.iter().map(|f| u64::from(f.tcp_sessions)).sum();
    assert_eq!(syns, sessions, "one SYN per TCP session in the truth");
    assert_eq!(fins, 2 * sessions, "every session closes with a FIN from each side");
}

#[test]
fn tshark_conversations_match_truth_flow_counters() {
    if !have_tshark() {
        return;
    }
    let (_dir, pcap, truth) = ward(1);
    for (proto, ip_proto) in [("tcp", 6u8), ("udp", 17u8)] {
        let conv = tshark_conversations(&pcap, proto);
        let want = truth_conversations(&truth.flows, ip_proto);
        assert_eq!(conv.len(), want.len(), "{proto}: conversation count");
        for (key, counts) in &want {
            let got = conv.get(key).unwrap_or_else(|| panic!("{proto} conversation {key:?} missing in tshark output"));
            assert_eq!(got, counts, "{proto} conversation {key:?}: (packets, bytes) total");
        }
    }
}

#[test]
fn tshark_decodes_dicom_association_fields_as_generated() {
    if !have_tshark() {
        return;
    }
    let (_dir, pcap, truth) = ward(1);
    let ct = truth.devices.iter().find(|d| d.class == "ct").expect("ct in truth");
    let pacs = truth.devices.iter().find(|d| d.class == "pacs").expect("pacs in truth");
    let rows = tshark_fields(
        &pcap,
        "dicom.pdu.type == 1",
        &[
            "ip.src",
            "dicom.assoc.ae.called",
            "dicom.assoc.ae.calling",
            "dicom.pctx.abss.syntax",
            "dicom.pctx.xfer.syntax",
            "dicom.userinfo.uid",
            "dicom.userinfo.version",
            "dicom.assoc.item.type",
        ],
        &[],
    );
    assert!(!rows.is_empty(), "no A-ASSOCIATE-RQ decoded");
    for r in &rows {
        assert_eq!(r[0], ct.ips[0].to_string());
        assert_eq!(r[1].trim(), ev(pacs, Field::DicomCalledAe));
        assert_eq!(r[2].trim(), ev(ct, Field::DicomCallingAe));
        assert!(r[3].contains("1.2.840.10008.5.1.4.1.1.2"), "abstract syntax: {}", r[3]);
        assert!(r[4].contains("1.2.840.10008.1.2.1"), "transfer syntaxes: {}", r[4]);
        assert!(r[5].starts_with("1.2.840.113619"), "GE implementation class UID: {}", r[5]);
        assert_eq!(r[5], ev(ct, Field::DicomImplClassUid));
        assert_eq!(r[6], ev(ct, Field::DicomImplVersion));
        // application context (0x10), presentation contexts (0x20), user info (0x50)
        for item in ["0x10", "0x20", "0x50"] {
            assert!(
                r[7].split(',').any(|t| t.trim().eq_ignore_ascii_case(item) || t.trim() == &item[2..]),
                "item {item} in {}",
                r[7]
            );
        }
    }
    let ac = tshark_fields(&pcap, "dicom.pdu.type == 2", &["ip.src", "dicom.userinfo.uid", "dicom.pctx.result"], &[]);
    assert_eq!(ac.len(), rows.len(), "one A-ASSOCIATE-AC per request");
    assert!(ac.iter().all(|r| r[0] == pacs.ips[0].to_string() && r[1] == ev(pacs, Field::DicomImplClassUid)));
    let pdata = tshark_count(&pcap, "dicom.pdu.type == 4", &[]);
    assert!(pdata >= 4 * rows.len() as u64, "P-DATA-TF PDUs carry the images");
    assert_eq!(tshark_count(&pcap, "dicom.pdu.type == 5", &[]), rows.len() as u64, "A-RELEASE-RQ");
    assert_eq!(tshark_count(&pcap, "dicom.pdu.type == 6", &[]), rows.len() as u64, "A-RELEASE-RP");
    // The reassembled data sets carry the modality's manufacturer.
    let tags = tshark_fields(&pcap, "dicom.pdu.type == 4", &["dicom.tag.value.str"], &["-o", "dicom.tag_tree:TRUE"]);
    assert!(tags.iter().any(|r| r[0].contains("GE MEDICAL SYSTEMS")), "Manufacturer (0008,0070) not decoded");
    assert!(tags.iter().any(|r| r[0].contains(&ct.name)), "Station Name (0008,1010) not decoded");
}

#[test]
fn tshark_decodes_hl7_msh_and_obx18_as_generated() {
    if !have_tshark() {
        return;
    }
    let (_dir, pcap, truth) = ward(1);
    let rows = tshark_fields(
        &pcap,
        "hl7",
        &["ip.src", "hl7.raw.segment"],
        &["-d", "tcp.port==2575,hl7", "-o", "hl7.display_raw:TRUE"],
    );
    assert!(!rows.is_empty(), "no HL7 decoded on 2575");
    let mut orus = 0;
    let mut acks = 0;
    for r in &rows {
        let sender = truth.device_by_ip(r[0].parse().expect("ip")).expect("HL7 sender is a known device");
        // tshark shows each segment with a literal "\r" terminator, segments joined by ','.
        let segs: Vec<&str> = r[1].split(',').map(|s| s.trim_end_matches("\\r")).collect();
        let msh: Vec<&str> = segs.iter().find(|s| s.starts_with("MSH")).expect("MSH segment").split('|').collect();
        match msh[8] {
            "ORU^R01^ORU_R01" => {
                orus += 1;
                assert_eq!(
                    msh[2].split('^').next(),
                    Some(ev(sender, Field::Hl7SendingApp).as_str()),
                    "MSH-3 of {}",
                    sender.name
                );
                assert!(!msh[4].is_empty() && !msh[5].is_empty(), "MSH-5/6 receiving app and facility");
                assert_eq!(msh[11], "2.6");
                let obx = segs.iter().find(|s| s.starts_with("OBX")).expect("OBX");
                let dev_id = obx.split('|').nth(18).expect("OBX-18");
                let eui = dev_id.split('^').next().unwrap_or("");
                // The EUI-64 starts with the reporting monitor's OUI.
                let monitor = truth
                    .devices
                    .iter()
                    .find(|d| d.evidence.iter().any(|e| e.field == Field::Hl7DeviceId && e.value == eui))
                    .unwrap_or_else(|| panic!("OBX-18 {eui} names no device in the truth"));
                assert_eq!(monitor.class, "patient_monitor");
                assert!(eui.starts_with(&format!(
                    "{:02X}{:02X}{:02X}FFFE",
                    monitor.mac.0[0], monitor.mac.0[1], monitor.mac.0[2]
                )));
            }
            "ACK^R01^ACK" => acks += 1,
            other => panic!("unexpected HL7 message type {other}"),
        }
    }
    assert!(orus > 0);
    assert_eq!(orus, acks, "every ORU is acknowledged");
    assert_eq!(rows.len() as u64, truth.flows_with_app("hl7").map(|f| u64::from(f.tcp_sessions) * 2).sum::<u64>());
}

#[test]
fn tshark_decodes_dhcp_fingerprints_as_generated() {
    if !have_tshark() {
        return;
    }
    let (_dir, pcap, truth) = ward(1);
    let rows = tshark_fields(
        &pcap,
        "dhcp.option.dhcp == 1",
        &["dhcp.hw.mac_addr", "dhcp.option.hostname", "dhcp.option.vendor_class_id", "dhcp.option.request_list_item"],
        &[],
    );
    let clients: Vec<_> = truth.devices.iter().filter(|d| d.dhcp).collect();
    assert!(clients.len() >= 5, "pumps, monitors, workstation and printer use DHCP");
    assert_eq!(rows.len(), clients.len(), "one DISCOVER per DHCP client");
    for d in clients {
        let r = rows
            .iter()
            .find(|r| r[0].split(',').next() == Some(d.mac.to_string().as_str()))
            .unwrap_or_else(|| panic!("no DISCOVER from {}", d.mac));
        assert_eq!(Some(r[1].as_str()), d.hostname.as_deref(), "option 12 of {}", d.name);
        assert_eq!(r[2], ev(d, Field::DhcpVendorClass), "option 60 of {}", d.name);
        assert_eq!(r[3], ev(d, Field::DhcpParamList), "option 55 of {}", d.name);
        if d.os == "Windows 7" {
            assert_eq!(r[2], "MSFT 5.0");
            // Option 61 (type 1 + MAC) decodes as a second client MAC address field.
            assert_eq!(r[0].split(',').count(), 2, "Windows sends option 61");
        }
    }
    // Every client also completes REQUEST and ACK.
    assert_eq!(tshark_count(&pcap, "dhcp.option.dhcp == 5", &[]), rows.len() as u64);
}

#[test]
fn tshark_sees_the_workstation_and_printer_identities() {
    if !have_tshark() {
        return;
    }
    let (_dir, pcap, truth) = ward(1);
    let ws = truth.devices.iter().find(|d| d.os == "Windows 7").expect("Windows 7 workstation");
    let uas = tshark_fields(&pcap, "http.user_agent", &["ip.src", "http.user_agent"], &[]);
    assert!(uas.iter().any(|r| r[0] == ws.ips[0].to_string() && r[1].contains("Windows NT 6.1")));
    let nb = tshark_fields(&pcap, "nbns.flags.opcode == 5", &["nbns.name"], &[]);
    assert!(
        nb.iter().any(|r| r[0].starts_with(&ws.name.to_uppercase())),
        "NetBIOS registration of {}: {nb:?}",
        ws.name
    );
    assert!(tshark_count(&pcap, "smb2.cmd == 0 && smb2.dialect == 0x0210", &[]) > 0, "SMB2 negotiate");
    assert!(tshark_count(&pcap, "dns.flags.response == 1 && dns.a", &[]) > 0);
    let printer = truth.devices.iter().find(|d| d.class == "printer").expect("printer");
    let servers = tshark_fields(&pcap, "http.server", &["ip.src", "http.server"], &[]);
    assert!(servers.iter().any(|r| r[0] == printer.ips[0].to_string() && r[1].starts_with("HP HTTP Server")));
    assert!(tshark_count(&pcap, "ipp", &[]) > 0, "IPP print job");
    let snmp = tshark_fields(&pcap, "snmp.value.octets", &["ip.src", "snmp.value.octets"], &[]);
    assert!(snmp.iter().any(|r| r[0] == printer.ips[0].to_string()), "SNMP sysDescr from printer");
    let alaris = tshark_count(&pcap, "tcp.dstport == 3613 && tcp.len > 0", &[]);
    assert!(alaris > 0, "pump talks to its server on TCP 3613");
    let intellivue = tshark_count(&pcap, "udp.port == 24105", &[]);
    assert!(intellivue > 100, "IntelliVue data export polls every second");
}
