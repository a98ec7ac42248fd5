//! Reassembly through the whole pipeline: a DICOM association request split over TCP
//! segments in a real capture, hand-built HL7/MLLP streams out of order and
//! retransmitted, p0f-style SYN signatures, and bulk flows left untouched.

use crate::dataplane_support::pcap;
use crate::reassembly_support::*;
use std::process::Command;
use wardline_common::{Event, Field};
use wardline_sensor::capture::{for_each_packet, LinkType, RawPacket, Source};
use wardline_sensor::decode::tcp_flags::{ACK, FIN, PSH, SYN};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig, PipelineStats};

/// Loopback captures carry no MAC addresses, so no device could hold the evidence:
/// re-frame their IPv4 packets as Ethernet, the DICOM server (port 104) at SERVER_MAC.
fn relink_loopback(p: &RawPacket<'_>) -> Option<Vec<u8>> {
    let ip = p.data.get(4..)?;
    let ihl = (ip.first()? & 0x0f) as usize * 4;
    let sport = u16::from_be_bytes([*ip.get(ihl)?, *ip.get(ihl + 1)?]);
    let (src, dst) = if sport == 104 { (SERVER_MAC, CLIENT_MAC) } else { (CLIENT_MAC, SERVER_MAC) };
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    Some(f)
}

fn run_pcap(rel: &str) -> (Vec<Event>, PipelineStats) {
    let mut pl = Pipeline::new(PipelineConfig::default());
    for_each_packet(&Source::File(pcap(rel)), None, |p| {
        match (p.linktype, relink_loopback(p)) {
            (LinkType::Null, Some(frame)) => pl.process(&RawPacket {
                ts_us: p.ts_us,
                linktype: LinkType::Ethernet,
                data: &frame,
                orig_len: frame.len() as u32,
            }),
            _ => pl.process(p),
        }
        std::ops::ControlFlow::Continue(())
    })
    .unwrap_or_else(|e| panic!("reading {rel}: {e}"));
    pl.finish()
}

fn all_evidence(events: &[Event]) -> Vec<(Field, String)> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::Device(d) = e {
                Some(d.evidence.iter().map(|e| (e.field, e.value.clone())))
            } else {
                None
            }
        })
        .flatten()
        .collect()
}

/// tshark's value of one field over a capture (first occurrence per frame), trimmed.
fn tshark_values(rel: &str, field: &str) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap(rel))
        .args(["-T", "fields", "-E", "occurrence=f", "-e", field])
        .output()
        .expect("tshark runs");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

#[test]
fn dicom_associate_rq_split_over_two_segments_yields_titles_and_uid() {
    let rel = "dicom/dicom_arq_2_get_testclient.pcap";
    let (events, stats) = run_pcap(rel);
    let ev = all_evidence(&events);
    let get = |f: Field| ev.iter().find(|(g, _)| *g == f).map(|(_, v)| v.trim().to_string());
    // tshark reassembles the 16509-byte PDU from #1 (16332) and #2 (177).
    let calling = tshark_values(rel, "dicom.assoc.item.calling_ae");
    let want_calling = calling.first().cloned().unwrap_or_else(|| "testclient".into());
    assert_eq!(get(Field::DicomCallingAe).as_deref(), Some(want_calling.as_str()), "{ev:?}");
    assert_eq!(get(Field::DicomCalledAe).as_deref(), Some("testserver"));
    assert_eq!(get(Field::DicomImplClassUid).as_deref(), Some("1.2.826.0.1.3680043.9.7133.1.1"));
    assert_eq!(get(Field::DicomImplVersion).as_deref(), Some("GODICOM_1_1"));
    assert_eq!(stats.dissected.get("dicom"), Some(&1), "one whole PDU, not two fragments: {stats:?}");
    assert_eq!(stats.dissect_errors.get("dicom"), None);
}

fn hl7_conn() -> Conn {
    Conn { client: [10, 1, 0, 5], server: [10, 1, 0, 9], cport: 40123, sport: 2575 }
}

const HL7: &[u8] = b"\x0bMSH|^~\\&|PUMP_GW|ICU_EAST|EMR|HOSP|20240101120000||ORU^R01|42|P|2.6\rPID|1||12345\rOBX|1|NM|BP||120|||||F|||||||DEV-77\r\x1c\x0d";

#[test]
fn hl7_message_out_of_order_and_retransmitted_is_dissected_once() {
    let c = hl7_conn();
    let isn = 7_000u32;
    let (a, b, d) = (&HL7[..30], &HL7[30..70], &HL7[70..]);
    let frames = vec![
        c.tcp(true, isn, SYN, &[]),
        c.tcp(false, 90_000, SYN | ACK, &[]),
        c.tcp(true, isn + 1, ACK, &[]),
        c.tcp(true, isn + 1 + 70, ACK | PSH, d),
        c.tcp(true, isn + 1, ACK, a),
        c.tcp(true, isn + 1, ACK, a),
        c.tcp(true, isn + 1 + 30, ACK, b),
        c.tcp(true, isn + 1 + HL7.len() as u32, FIN | ACK, &[]),
    ];
    let (events, stats) = run_frames(Pipeline::new(PipelineConfig::default()), &frames);
    let ev = evidence_of(&events, CLIENT_MAC);
    assert!(ev.contains(&(Field::Hl7SendingApp, "PUMP_GW".into())), "{ev:?}");
    assert!(ev.contains(&(Field::Hl7MessageType, "ORU^R01".into())), "{ev:?}");
    assert_eq!(stats.dissected.get("hl7"), Some(&1), "{stats:?}");
    assert_eq!(stats.dissect_errors_total(), 0, "{stats:?}");
    assert_eq!(stats.tcp_out_of_order, 1);
    assert_eq!(stats.tcp_retransmitted_bytes, 30);
    assert_eq!(stats.tcp_gaps, 0);
}

#[test]
fn hl7_segments_without_reassembly_would_not_parse() {
    // Control for the test above: the middle segment alone is not an HL7 message, and
    // the first alone is cut short; only the reassembled stream yields MSH fields.
    let c = hl7_conn();
    let frames = vec![c.tcp(true, 1, ACK, &HL7[30..70])];
    let (events, stats) = run_frames(Pipeline::new(PipelineConfig::default()), &frames);
    assert!(evidence_of(&events, CLIENT_MAC).iter().all(|(f, _)| *f != Field::Hl7SendingApp));
    assert_eq!(stats.dissected.get("hl7"), None);
}

#[test]
fn syn_and_syn_ack_signatures_are_recorded_once_per_device() {
    let c = Conn { client: [10, 2, 0, 5], server: [10, 2, 0, 9], cport: 50000, sport: 443 };
    // MSS 1460, NOP, WS 7, NOP, NOP, SACK permitted
    let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2];
    let frames = vec![
        c.tcp_opts(true, 1, SYN, &opts, &[]),
        c.tcp_opts(false, 500, SYN | ACK, &opts[..4], &[]),
        c.tcp_opts(true, 1, SYN, &opts, &[]),
    ];
    let (events, _) = run_frames(Pipeline::new(PipelineConfig::default()), &frames);
    let sigs = |mac| -> Vec<String> {
        evidence_of(&events, mac).into_iter().filter(|(f, _)| *f == Field::TcpSynSignature).map(|(_, v)| v).collect()
    };
    let client = sigs(CLIENT_MAC);
    assert_eq!(client.len(), 1, "{client:?}");
    assert!(client[0].starts_with("4:64:0:1460:"), "{client:?}");
    assert!(client[0].contains("mss,nop,ws,nop,nop,sok"), "{client:?}");
    let server = sigs(SERVER_MAC);
    assert_eq!(server.len(), 1, "{server:?}");
    assert!(server[0].contains(":mss:"), "{server:?}");
}

#[test]
fn bulk_flows_no_dissector_wants_are_not_reassembled() {
    let c = Conn { client: [10, 3, 0, 5], server: [10, 3, 0, 9], cport: 50000, sport: 5001 };
    let mut pl = Pipeline::new(PipelineConfig::default());
    let mut frames = vec![c.tcp(true, 0, SYN, &[])];
    let chunk = vec![0x5au8; 1400];
    for i in 0..200u32 {
        frames.push(c.tcp(true, 1 + i * 1400, ACK, &chunk));
    }
    for (i, f) in frames.iter().enumerate() {
        pl.process(&wardline_sensor::capture::RawPacket {
            ts_us: 1_000 + i as u64,
            linktype: wardline_sensor::capture::LinkType::Ethernet,
            data: f,
            orig_len: f.len() as u32,
        });
        assert_eq!(pl.reassembly_usage(), (0, 0), "no stream state for an unwanted flow");
    }
    // The same bytes on a port a dissector reassembles are tracked.
    let c2 = Conn { sport: 104, ..c };
    pl.process(&wardline_sensor::capture::RawPacket {
        ts_us: 9_000,
        linktype: wardline_sensor::capture::LinkType::Ethernet,
        data: &c2.tcp(true, 0, SYN, &[]),
        orig_len: 60,
    });
    assert_eq!(pl.reassembly_usage().0, 1);
}

#[test]
fn every_dicom_capture_still_dissects_without_errors() {
    for rel in [
        "dicom/dicom_arq_1_find_testclient.pcap",
        "dicom/lab-dicom-dcmtk-store.pcap",
        "dicom/lab-dicom-dcmtk-mwl.pcap",
        "dicom/lab-dicom-pynetdicom.pcap",
        "dicom/lab-dicom-orthanc.pcap",
    ] {
        let (events, stats) = run_pcap(rel);
        assert_eq!(stats.dissect_errors.get("dicom"), None, "{rel}: {stats:?}");
        let ev = all_evidence(&events);
        assert!(ev.iter().any(|(f, _)| *f == Field::DicomCallingAe), "{rel}: no calling AE");
        assert_eq!(stats.tcp_gaps, 0, "{rel}");
    }
}
