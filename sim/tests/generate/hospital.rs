//! The whole-hospital scenario: many device profiles across two sites on 802.1Q
//! zones, every frame valid for tshark, every flow counted exactly, and scale controls.

use crate::generate_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;
use wardline_common::Field;
use wardline_sim::{generate, GenerateOptions, GroundTruth, Scale, Scenario};

/// One hospital capture shared by the tests of this file (generated once per run).
fn hospital() -> &'static (PathBuf, GroundTruth) {
    static H: OnceLock<(PathBuf, GroundTruth)> = OnceLock::new();
    H.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("generate_hospital");
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let pcap = dir.join("hospital.pcap");
        let mut opts = GenerateOptions::new(Scenario::Hospital);
        opts.scale.minutes = 4;
        let truth = generate(&opts, &pcap).expect("generate hospital");
        (pcap, truth)
    })
}

#[test]
fn hospital_has_25_profiles_two_sites_and_all_categories() {
    let (_, truth) = hospital();
    let profiles: BTreeSet<&str> = truth.devices.iter().map(|d| d.profile.as_str()).collect();
    assert!(profiles.len() >= 25, "only {} device profiles: {profiles:?}", profiles.len());
    let classes: BTreeSet<&str> = truth.devices.iter().map(|d| d.class.as_str()).collect();
    for want in [
        "infusion_pump",
        "pca_pump",
        "patient_monitor",
        "central_station",
        "telemetry",
        "ventilator",
        "anesthesia_machine",
        "defibrillator",
        "ct",
        "mr",
        "xray",
        "ultrasound",
        "pacs",
        "modality_worklist",
        "lab_analyzer",
        "blood_gas",
        "medication_cabinet",
        "nurse_call",
        "rtls",
        "badge_reader",
        "camera",
        "bms_hvac",
        "printer",
        "voip_phone",
        "thin_client",
        "workstation",
        "server",
        "network_gear",
    ] {
        assert!(classes.contains(want), "no {want} in the hospital: {classes:?}");
    }
    let cats: BTreeSet<&str> = truth.devices.iter().map(|d| d.category.as_str()).collect();
    assert_eq!(cats, ["it", "iot", "medical", "ot"].into_iter().collect());
    assert_eq!(truth.sites, ["main-campus", "east-campus", "north-clinic"].map(String::from).to_vec());
    for site in &truth.captures[0].native_sites {
        let zones: BTreeSet<&str> = truth.devices.iter().filter(|d| &d.site == site).map(|d| d.zone.as_str()).collect();
        for z in ["datacenter", "ward", "icu", "radiology", "lab", "pharmacy", "admin", "voice", "building"] {
            assert!(zones.contains(z), "{site} lacks zone {z}");
        }
    }
    let registry = oui_registry();
    for d in &truth.devices {
        for mac in &d.macs {
            let oui = format!("{:02X}-{:02X}-{:02X}", mac.0[0], mac.0[1], mac.0[2]);
            assert_eq!(
                registry.get(&oui),
                Some(&d.vendor),
                "{} ({}): vendor must be the IEEE name of {oui}",
                d.name,
                d.profile
            );
        }
    }
    let macs: BTreeSet<_> = truth.devices.iter().flat_map(|d| d.macs.iter()).collect();
    assert_eq!(macs.len(), truth.devices.iter().map(|d| d.macs.len()).sum::<usize>(), "MACs must be unique");
}

/// Each capture shows a device's MACs only on the VLANs of its bindings at the sites that
/// capture sees natively, and every such binding's MAC transmits there.
#[test]
fn every_device_transmits_with_its_mac_on_its_vlan() {
    if !have_tshark() {
        return;
    }
    let (pcap, truth) = hospital();
    for cap in &truth.captures {
        let file = pcap.with_file_name(&cap.file);
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in tshark_fields(&file, "frame", &["eth.src", "vlan.id"], &[]) {
            seen.entry(r[0].clone()).or_default().insert(r[1].clone());
        }
        for d in &truth.devices {
            let here: Vec<_> = d.bindings.iter().filter(|b| cap.native_sites.contains(&b.site)).collect();
            for mac in &d.macs {
                let want: BTreeSet<String> = here
                    .iter()
                    .filter(|b| b.mac == *mac && b.announced_by != "static")
                    .map(|b| b.vlan.map(|v| v.to_string()).unwrap_or_default())
                    .collect();
                let got = seen.get(&mac.to_string());
                if d.class == "network_gear" {
                    assert!(
                        here.is_empty() || got.is_some_and(|v| !v.is_empty()),
                        "{} silent on {}",
                        d.name,
                        cap.sensor
                    );
                    continue;
                }
                if want.is_empty() {
                    assert!(got.is_none(), "{} ({mac}) appears on {} where it has no binding", d.name, cap.sensor);
                } else {
                    assert_eq!(
                        got,
                        Some(&want),
                        "{} ({mac}) on {}: VLANs differ from its bindings",
                        d.name,
                        cap.sensor
                    );
                }
            }
        }
    }
}

#[test]
fn hospital_frames_are_valid_and_flows_are_counted_exactly() {
    if !have_tshark() {
        return;
    }
    let (pcap, truth) = hospital();
    assert_eq!(tshark_count(pcap, "frame", &[]), truth.packets);
    assert_eq!(
        tshark_count(
            pcap,
            "ip.checksum.status == \"Bad\" || tcp.checksum.status == \"Bad\" || udp.checksum.status == \"Bad\"",
            &[]
        ),
        0
    );
    assert_eq!(
        tshark_count(pcap, "_ws.malformed || _ws.expert.severity == \"Error\"", &["-d", "tcp.port==2575,hl7"]),
        0
    );
    assert_eq!(tshark_count(pcap, "tcp.analysis.flags && !tcp.analysis.window_update", &[]), 0);
    for (proto, ip_proto) in [("tcp", 6u8), ("udp", 17u8)] {
        assert_eq!(
            tshark_conversations(pcap, proto),
            truth_conversations(&truth.flows, ip_proto),
            "{proto} conversations differ from the truth"
        );
    }
    // The access-layer captures too, against their own flows.
    for cap in &truth.captures[1..] {
        let file = pcap.with_file_name(&cap.file);
        assert_eq!(tshark_count(&file, "frame", &[]), cap.packets, "{}", cap.file);
        let size = std::fs::metadata(&file).expect("stat").len();
        assert_eq!(size, 24 + 16 * cap.packets + cap.bytes, "{}: truth counts match the file", cap.file);
        assert_eq!(tshark_count(&file, "_ws.malformed || _ws.expert.severity == \"Error\"", &[]), 0);
        assert_eq!(tshark_count(&file, "tcp.analysis.flags && !tcp.analysis.window_update", &[]), 0);
        for (proto, ip_proto) in [("tcp", 6u8), ("udp", 17u8)] {
            assert_eq!(
                tshark_conversations(&file, proto),
                truth_conversations(&cap.flows, ip_proto),
                "{}: {proto} conversations differ from the truth",
                cap.file
            );
        }
    }
}

#[test]
fn hospital_protocols_decode_as_their_standards() {
    if !have_tshark() {
        return;
    }
    let (pcap, truth) = hospital();
    let by_ip = |ip: &str| truth.device_by_ip(ip.parse().expect("ip")).map(|d| d.class.clone()).unwrap_or_default();
    // Lab analyzers send HL7 results to the LIS.
    let lab = tshark_fields(pcap, "hl7.message.type == \"ORU\"", &["ip.src", "ip.dst"], &["-d", "tcp.port==2575,hl7"]);
    assert!(lab.iter().any(|r| by_ip(&r[0]) == "lab_analyzer" && by_ip(&r[1]) == "lis"));
    // Modalities query the worklist (C-FIND) and store to the PACS.
    let assoc = tshark_fields(pcap, "dicom.pdu.type == 1", &["ip.src", "ip.dst", "dicom.pctx.abss.syntax"], &[]);
    for modality in ["ct", "mr", "xray", "ultrasound"] {
        assert!(assoc.iter().any(|r| by_ip(&r[0]) == modality && by_ip(&r[1]) == "pacs"), "{modality} → PACS");
        assert!(
            assoc.iter().any(|r| by_ip(&r[0]) == modality && r[2].contains("1.2.840.10008.5.1.4.31")),
            "{modality} → MWL"
        );
    }
    let counts = [
        ("bacapp.confirmed_service == 12", "BACnet ReadProperty"),
        ("sip.Method == \"REGISTER\"", "SIP REGISTER"),
        ("rtsp.method == \"DESCRIBE\"", "RTSP DESCRIBE"),
        ("lldp.tlv.system.name", "LLDP system name"),
        ("tls.handshake.extensions_server_name", "TLS SNI"),
        ("rdp.neg_type || cotp", "RDP X.224"),
        ("smb2.cmd == 0", "SMB2 negotiate"),
        ("ntp", "NTP"),
        ("telnet", "Telnet to the PCA pump"),
    ];
    for (filter, what) in counts {
        assert!(tshark_count(pcap, filter, &[]) > 0, "no {what} ({filter})");
    }
    // Every DHCP client's identity in the truth is what its DISCOVER carries, in the
    // capture that sees the segment of each of its DHCP bindings.
    for cap in &truth.captures {
        let disc = tshark_fields(
            &pcap.with_file_name(&cap.file),
            "dhcp.option.dhcp == 1",
            &["dhcp.hw.mac_addr", "dhcp.option.hostname", "dhcp.option.vendor_class_id"],
            &[],
        );
        for d in truth.devices.iter().filter(|d| d.dhcp) {
            let leased_here =
                d.bindings.iter().any(|b| b.announced_by == "dhcp_ack" && cap.native_sites.contains(&b.site));
            if !leased_here {
                continue;
            }
            let r = disc
                .iter()
                .find(|r| r[0].split(',').next() == Some(d.mac.to_string().as_str()))
                .unwrap_or_else(|| panic!("no DISCOVER from {} on {}", d.name, cap.sensor));
            assert_eq!(Some(r[1].as_str()), d.hostname.as_deref());
            assert_eq!(r[2], ev(d, Field::DhcpVendorClass));
        }
    }
}

#[test]
fn scale_multiplies_devices_and_traffic_and_max_packets_caps_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |mult: u32, minutes: u32, max: Option<u64>, name: &str| {
        let mut opts = GenerateOptions::new(Scenario::Hospital);
        opts.scale = Scale { device_multiplier: mult, minutes };
        opts.max_packets = max;
        generate(&opts, &dir.path().join(name)).expect("generate")
    };
    let one = run(1, 2, None, "one.pcap");
    let two = run(2, 2, None, "two.pcap");
    let longer = run(1, 4, None, "longer.pcap");
    assert!(two.devices.len() > one.devices.len() * 3 / 2, "{} vs {} devices", two.devices.len(), one.devices.len());
    assert!(two.packets > one.packets * 3 / 2);
    assert!(longer.packets > one.packets * 3 / 2);
    let capped = run(1, 2, Some(5000), "capped.pcap");
    // The cap stops at the end of the exchange that crosses it.
    assert!(capped.packets >= 5000 && capped.packets < 5000 + 1000, "{} packets", capped.packets);
    let size = std::fs::metadata(dir.path().join("capped.pcap")).expect("stat").len();
    assert_eq!(size, 24 + 16 * capped.packets + capped.bytes, "truth counts match the file");
}

/// Throughput check for benchmarks: run with
/// `cargo test --release -p wardline-sim --test generate hospital:: -- --ignored --nocapture`.
#[test]
#[ignore]
fn generator_writes_over_500k_packets_per_second_in_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = GenerateOptions::new(Scenario::Hospital);
    opts.scale = Scale { device_multiplier: 10, minutes: 10 };
    opts.max_packets = Some(3_000_000);
    let t0 = std::time::Instant::now();
    let truth = generate(&opts, &dir.path().join("big.pcap")).expect("generate");
    let secs = t0.elapsed().as_secs_f64();
    let pps = truth.packets as f64 / secs;
    eprintln!("{} packets, {} bytes in {secs:.2}s = {pps:.0} packets/s", truth.packets, truth.bytes);
    assert!(truth.packets >= 1_000_000);
    assert!(pps > 500_000.0, "{pps:.0} packets/s");
}
