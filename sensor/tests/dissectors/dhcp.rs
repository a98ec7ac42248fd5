//! DHCPv4 dissector on every DHCP capture, compared with tshark field by field
//! (hostname, vendor class, parameter request list in order, max message size,
//! requested address), plus the documented raspberrypi example.

use crate::dataplane_support::{all_pcaps, pcap, tshark_available};
use proptest::prelude::*;
use std::process::Command;
use wardline_common::{Field, MacAddr};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::decode::{decode, L4};
use wardline_sensor::dissect::{dhcp, Dissector, Finding, PacketCtx, Side, Transport};

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

const CLIENT: [u8; 6] = [0x00, 0x09, 0xfb, 0x6a, 0x1c, 0x01];

/// A BOOTP message (op 1 request, 2 reply) for `CLIENT` with the given options after the
/// magic cookie; `htype` 1 is Ethernet.
fn bootp(op: u8, htype: u8, options: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = op;
    p[1] = htype;
    p[2] = 6;
    p[16..20].copy_from_slice(&[10, 77, 0, 150]); // yiaddr
    p[28..34].copy_from_slice(&CLIENT);
    p.extend_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(options);
    p.push(255);
    p
}

/// A packet from the DHCP server (MAC 00:1b:21:00:00:01, 10.77.0.1, port 67 → 68).
fn server_ctx(dst_mac: MacAddr) -> PacketCtx {
    PacketCtx {
        ts_us: 0,
        src_mac: MacAddr([0x00, 0x1b, 0x21, 0, 0, 1]),
        dst_mac,
        vlan: None,
        src_ip: Some("10.77.0.1".parse().unwrap()),
        dst_ip: Some("255.255.255.255".parse().unwrap()),
        src_port: 67,
        dst_port: 68,
        transport: Transport::Udp,
    }
}

/// Findings of a message sent by the DHCP server.
fn from_server(payload: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    dhcp::DhcpDissector.dissect(&server_ctx(MacAddr::BROADCAST), payload, &mut out).expect("hand-built reply parses");
    out
}

fn about_client(field: Field, v: &str) -> Finding {
    Finding::about(MacAddr(CLIENT), field, v)
}

#[test]
fn offer_and_ack_echoing_the_name_describe_the_client() {
    let offer = bootp(2, 1, &[53, 1, 2, 12, 9, b'p', b'u', b'm', b'p', b'-', b'4', b'b', b'-', b'7']);
    assert_eq!(from_server(&offer), vec![about_client(Field::Hostname, "pump-4b-7")]);
    // ACK: the assigned address plus the client's FQDN (option 81, wire encoding).
    let name = b"\x07pump-4b\x07wlgh-ad\x00";
    let mut opts = vec![53, 1, 5, 81, 3 + name.len() as u8, 0x04, 0xff, 0xff];
    opts.extend_from_slice(name);
    let ack = bootp(2, 1, &opts);
    assert_eq!(
        from_server(&ack),
        vec![about_client(Field::IpAddress, "10.77.0.150"), about_client(Field::DhcpFqdn, "pump-4b.wlgh-ad")]
    );
}

#[test]
fn server_replies_never_describe_the_server() {
    let name = [12, 3, b'p', b'c', b'1'];
    // NAK and other replies: the name is not an assignment; nothing.
    for t in [6u8, 13] {
        let f = from_server(&bootp(2, 1, &[&[53, 1, t][..], &name].concat()));
        assert!(f.iter().all(|f| f.field != Field::Hostname), "type {t}: {f:?}");
    }
    // A reply whose chaddr is not an Ethernet MAC names no device: nothing, and never the sender.
    assert_eq!(from_server(&bootp(2, 6, &[&[53, 1, 5][..], &name].concat())), vec![]);
    // An empty echoed name says nothing.
    assert_eq!(from_server(&bootp(2, 1, &[53, 1, 2, 12, 0])), vec![]);
}

#[test]
fn every_reply_finding_on_real_captures_is_about_chaddr() {
    let mut replies = 0;
    for p in all_pcaps().into_iter().filter(|p| p.to_string_lossy().contains("/dhcp/")) {
        for (_, rec) in ours(&p).into_iter().filter_map(|(n, r)| Some((n, r.ok()?))).filter(|(_, r)| r.op == 2) {
            replies += 1;
            let mut out = Vec::new();
            dhcp::findings(&rec, &server_ctx(MacAddr::BROADCAST), &mut out);
            let chaddr = rec.client_mac();
            assert!(out.iter().all(|f| Some(f.side) == chaddr.map(Side::Mac)), "{}: {out:?}", p.display());
        }
    }
    assert!(replies > 20, "only {replies} replies in the DHCP captures");
}

proptest! {
    #[test]
    fn echoed_names_go_to_chaddr(
        name in "[a-z0-9-]{1,40}", mac in any::<[u8; 6]>(), t in prop_oneof![Just(2u8), Just(5u8)], wire in any::<bool>(),
    ) {
        let mut p = bootp(2, 1, &[]);
        p.pop(); // END
        p[28..34].copy_from_slice(&mac);
        p.extend_from_slice(&[53, 1, t, 12, name.len() as u8]);
        p.extend_from_slice(name.as_bytes());
        if wire {
            p.extend_from_slice(&[81, name.len() as u8 + 5, 0x04, 0, 0, name.len() as u8]);
            p.extend_from_slice(name.as_bytes());
            p.push(0);
        }
        p.push(255);
        let mut out = Vec::new();
        let rec = dhcp::parse(&p).unwrap();
        dhcp::findings(&rec, &server_ctx(MacAddr(mac)), &mut out);
        let client = MacAddr(mac);
        let named: Vec<&Finding> = out.iter().filter(|f| matches!(f.field, Field::Hostname | Field::DhcpFqdn)).collect();
        if client.is_device() {
            prop_assert_eq!(named.len(), 1 + usize::from(wire));
            prop_assert!(named.iter().all(|f| f.side == Side::Mac(client) && f.value == name));
        } else {
            prop_assert!(out.is_empty(), "no device to describe: {:?}", out);
        }
    }

    #[test]
    fn garbage_reply_options_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut p = bootp(2, 1, &[]);
        p.pop();
        p.extend_from_slice(&tail);
        if let Ok(rec) = dhcp::parse(&p) {
            let mut out = Vec::new();
            dhcp::findings(&rec, &server_ctx(MacAddr::BROADCAST), &mut out);
            prop_assert!(out.iter().all(|f| f.side == Side::Mac(MacAddr(CLIENT))), "{:?}", out);
        }
    }
}
