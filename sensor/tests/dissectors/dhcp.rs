//! DHCPv4 dissector on every DHCP capture, compared with tshark field by field
//! (hostname, vendor class, parameter request list in order, max message size,
//! requested address), plus the documented raspberrypi example.

use crate::dataplane_support::{all_pcaps, pcap, tshark_available};
use std::process::Command;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::decode::{decode, L4};
use wardline_sensor::dissect::dhcp;

/// One row per DHCP-bearing UDP frame: (frame number, parsed record or error kind).
fn ours(p: &std::path::Path) -> Vec<(usize, Result<dhcp::DhcpRecord, &'static str>)> {
    let mut out = Vec::new();
    let mut r = FileReader::open(p).unwrap();
    let mut n = 0;
    while let Ok(Some(pkt)) = r.next_packet() {
        n += 1;
        let Ok(d) = decode(pkt.linktype, pkt.data) else { continue };
        if let L4::Udp { src_port, dst_port } = d.l4 {
            if matches!(src_port, 67 | 68) && matches!(dst_port, 67 | 68) {
                out.push((n, dhcp::parse(d.payload).map_err(|e| e.kind)));
            }
        }
    }
    out
}

#[test]
fn dhcp_mud_raspberry_pi() {
    let rows = ours(&pcap("dhcp/dhcp-mud.pcap"));
    let rec = rows[0].1.as_ref().unwrap();
    assert_eq!(rec.client_mac().unwrap().to_string(), "b8:27:eb:b8:53:c8");
    assert_eq!(rec.hostname.as_deref(), Some("raspberrypi"));
    assert_eq!(rec.vendor_class.as_deref(), Some("dhcpcd-6.11.5:Linux-4.1.18-v7+:armv7l:BCM2709"));
    assert_eq!(rec.param_list_string().as_deref(), Some("1,121,33,3,6,12,15,28,42,51,54,58,59,100,101,119"));
    assert_eq!(hex::encode(rec.client_id.as_ref().unwrap()), "01b827ebb853c8");
    assert_eq!(rec.max_msg_size, Some(1472));
}

#[test]
fn bad_cookie_is_an_error_not_a_panic() {
    let rows = ours(&pcap("dhcp/dhcp_bad_cookie_option_retention.pcap"));
    assert!(rows.iter().any(|(_, r)| r.as_ref().err() == Some(&"bad_magic_cookie")), "{rows:?}");
}

#[test]
fn overload_option_is_honoured() {
    let rows = ours(&pcap("dhcp/suricata-verify_dhcp-option-52-overload-both_input.pcap"));
    let rec = rows[0].1.as_ref().unwrap();
    assert_eq!(rec.overload, Some(3));
}

#[test]
fn fields_match_tshark_on_every_dhcp_capture() {
    if !tshark_available() {
        eprintln!("tshark not installed; skipping");
        return;
    }
    let mut disagreements = Vec::new();
    let mut compared = 0;
    for p in all_pcaps().into_iter().filter(|p| p.to_string_lossy().contains("/dhcp/")) {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&p)
            .args(["-Y", "dhcp", "-T", "fields", "-E", "separator=/t", "-E", "aggregator=,"])
            .args(["-e", "frame.number", "-e", "dhcp.option.hostname", "-e", "dhcp.option.vendor_class_id"])
            .args(["-e", "dhcp.option.request_list_item", "-e", "dhcp.option.dhcp_max_message_size"])
            .args(["-e", "dhcp.option.requested_ip_address"])
            .output()
            .unwrap();
        let ours = ours(&p);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let frame: usize = f[0].parse().unwrap();
            let Some((_, Ok(rec))) = ours.iter().find(|(n, _)| *n == frame) else { continue };
            let mine = [
                rec.hostname.clone().unwrap_or_default(),
                rec.vendor_class.clone().unwrap_or_default(),
                rec.param_list_string().unwrap_or_default(),
                rec.max_msg_size.map(|v| v.to_string()).unwrap_or_default(),
                rec.requested_ip.map(|v| v.to_string()).unwrap_or_default(),
            ];
            for (i, name) in
                ["hostname", "vendor_class", "param_list", "max_msg_size", "requested_ip"].iter().enumerate()
            {
                let theirs = f.get(i + 1).copied().unwrap_or("");
                compared += 1;
                if mine[i] != theirs {
                    disagreements.push(format!(
                        "{} frame {frame} {name}: wardline {:?} tshark {:?}",
                        p.display(),
                        mine[i],
                        theirs
                    ));
                }
            }
        }
    }
    for d in &disagreements {
        eprintln!("{d}");
    }
    assert!(compared > 100, "compared only {compared} values");
    assert!(disagreements.is_empty(), "{} disagreements with tshark", disagreements.len());
}
