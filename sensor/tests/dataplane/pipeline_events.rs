//! Pipeline end to end on real captures: device identity from DHCP, flow labels from the
//! dissector, deterministic replay, drain semantics, and hostile payloads counted.

use crate::dataplane_support::pcap;
use wardline_common::{Event, Field, MacAddr};
use wardline_sensor::capture::{for_each_packet, LinkType, RawPacket, Source};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

fn run(files: &[&str]) -> (Vec<Event>, wardline_sensor::pipeline::PipelineStats) {
    let mut pl = Pipeline::new(PipelineConfig::default());
    let mut events = Vec::new();
    for f in files {
        for_each_packet(&Source::File(pcap(f)), None, |p| {
            pl.process(p);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        events.extend(pl.drain_events(u64::MAX / 2));
    }
    let (rest, stats) = pl.finish();
    events.extend(rest);
    (events, stats)
}

#[test]
fn dhcp_identity_lands_on_the_client_mac() {
    let (events, stats) = run(&["dhcp/dhcp-mud.pcap"]);
    let pi: MacAddr = "b8:27:eb:b8:53:c8".parse().unwrap();
    let ev: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Device(d) if d.mac == pi => Some(d.evidence.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let get = |f: Field| ev.iter().find(|e| e.field == f).map(|e| e.value.clone());
    assert_eq!(get(Field::Hostname).as_deref(), Some("raspberrypi"));
    assert_eq!(get(Field::DhcpVendorClass).as_deref(), Some("dhcpcd-6.11.5:Linux-4.1.18-v7+:armv7l:BCM2709"));
    // The frames came through a relay: the relay's MAC is not credited with the hostname.
    for e in &events {
        if let Event::Device(d) = e {
            if d.mac != pi {
                assert!(d.evidence.iter().all(|e| e.field != Field::Hostname), "{d:?}");
            }
        }
    }
    let flows: Vec<_> = events.iter().filter_map(|e| if let Event::Flow(f) = e { Some(f) } else { None }).collect();
    assert!(flows.iter().all(|f| f.app == "dhcp"));
    assert_eq!(stats.packets, 2);
    assert_eq!(stats.dissected.get("dhcp"), Some(&2));
}

#[test]
fn replay_is_deterministic_and_evidence_is_not_resent() {
    let files = ["dhcp/dhcp_flood.pcap", "http/get.pcap", "mixed/DNS.pcap"];
    let (a, sa) = run(&files);
    let (b, sb) = run(&files);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    // dhcp_flood repeats the same client options 250 times; each value is reported once.
    let mut seen = std::collections::HashSet::new();
    for e in &a {
        if let Event::Device(d) = e {
            for ev in &d.evidence {
                assert!(seen.insert((d.mac, ev.field, ev.value.clone())), "re-sent {ev:?} for {}", d.mac);
            }
        }
    }
}

#[test]
fn tcp_close_and_timeouts_end_flows() {
    let (events, _) = run(&["http/get.pcap"]);
    let flows: Vec<_> = events.iter().filter_map(|e| if let Event::Flow(f) = e { Some(f) } else { None }).collect();
    assert_eq!(flows.len(), 1);
    let f = flows[0];
    assert_eq!((f.a_port, f.b_port), (59856, 80));
    assert_eq!((f.packets_ab, f.packets_ba, f.bytes_ab + f.bytes_ba), (7, 7, 6087));
    assert_eq!(f.end_reason, "fin");
    assert_eq!(f.tcp_flags_ab & 0x03, 0x03, "SYN and FIN from the client");
    assert_eq!(f.app, "http");
}

#[test]
fn hostile_frames_are_counted_never_fatal() {
    let mut pl = Pipeline::new(PipelineConfig::default());
    // 64 KB of garbage as an Ethernet frame, as raw IP, and as DHCP payload.
    let garbage: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    pl.process(&RawPacket { ts_us: 1, linktype: LinkType::Ethernet, data: &garbage, orig_len: 65_536 });
    pl.process(&RawPacket { ts_us: 2, linktype: LinkType::RawIp, data: &garbage, orig_len: 65_536 });
    pl.process(&RawPacket { ts_us: 3, linktype: LinkType::Ethernet, data: &[0u8; 5], orig_len: 5 });
    let mut dhcp =
        vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 255, 255, 255, 255, 0, 68, 0, 67, 0, 0, 0, 0];
    dhcp.extend_from_slice(&garbage[..1200]);
    let total = dhcp.len() as u16;
    dhcp[2..4].copy_from_slice(&total.to_be_bytes());
    let ulen = (total - 20).to_be_bytes();
    dhcp[24..26].copy_from_slice(&ulen);
    pl.process(&RawPacket { ts_us: 4, linktype: LinkType::RawIp, data: &dhcp, orig_len: total as u32 });
    let s = pl.stats();
    assert_eq!(s.packets, 4);
    assert!(s.decode_errors.get("ethernet_truncated") == Some(&1), "{:?}", s.decode_errors);
    assert_eq!(s.dissect_errors.get("dhcp"), Some(&1), "{:?}", s.dissect_errors);
}

#[test]
fn flow_table_bound_evicts_and_counts() {
    use wardline_sensor::flow::FlowConfig;
    let cfg = PipelineConfig { flow: FlowConfig { max_flows: 10, ..Default::default() }, ..Default::default() };
    let mut pl = Pipeline::new(cfg);
    for_each_packet(&Source::File(pcap("mixed/DNS.pcap")), None, |p| {
        pl.process(p);
        assert!(pl.active_flows() <= 10);
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    let s = pl.stats();
    assert!(s.flows_evicted > 0);
    let (ev, s2) = pl.finish();
    assert!(ev.iter().any(|e| matches!(e, Event::Flow(f) if f.end_reason == "evicted")));
    assert_eq!(s2.flows_evicted, s.flows_evicted);
}

#[test]
fn analyze_json_lines_and_truncated_file_report() {
    let mut out = Vec::new();
    let stats = wardline_sensor::analyze::run_analyze(&[pcap("dhcp/dhcp-mud.pcap")], true, &mut out).unwrap();
    assert_eq!(stats.packets, 2);
    let lines: Vec<serde_json::Value> =
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let pi = lines.iter().find(|l| l["type"] == "device" && l["mac"] == "b8:27:eb:b8:53:c8").expect("pi device line");
    assert!(pi["evidence"].as_array().unwrap().iter().any(|e| e["field"] == "hostname" && e["value"] == "raspberrypi"));
    assert!(lines.iter().any(|l| l["type"] == "flow" && l["app"] == "dhcp"));
    assert_eq!(lines.last().unwrap()["type"], "stats");

    // A truncated copy: the report covers the packets before the cut, then the error.
    let src = std::fs::read(pcap("http/http-packets2.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("ward.pcap");
    std::fs::write(&cut, &src[..30_000]).unwrap();
    let mut out = Vec::new();
    let err = wardline_sensor::analyze::run_analyze(&[cut], false, &mut out).unwrap_err();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("packets=88"), "{text}");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("ward.pcap: record at byte offset 29960 is truncated (header says 777 bytes, 24 remain)"),
        "{msg}"
    );
}
