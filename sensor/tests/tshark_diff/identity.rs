//! Differential tests against tshark for the identity fields of issue 9: the SNMP system
//! group of an agent and the device a DHCP name belongs to. (HL7's MSH-3/MSH-5 universal
//! ids and whole MSH-9 are compared in `medical`.)
//!
//! - SNMP: for every capture with SNMP, the set of (agent IP, field, value) for sysDescr,
//!   sysObjectID, sysContact, sysName and sysLocation taken from get-response, report and
//!   trap PDUs. tshark's side comes from PDML (`snmp.name` followed by its `snmp.value.*`);
//!   OCTET STRING bytes are rendered to text with Wardline's own `text::display` (trailing
//!   NUL/space dropped, control characters escaped), so the comparison is over which bytes of
//!   which varbind of which agent, not over two text renderings. Empty strings are unset
//!   values on both sides.
//! - DHCP: for every DHCPv4 frame in the corpus (and a capture built here of server replies
//!   that echo the client's name, which no public capture has), the set of (device MAC,
//!   field, value) for option 12 and option 81: tshark's `dhcp.option.hostname` /
//!   `dhcp.fqdn.name` go to `dhcp.hw.mac_addr` (chaddr) — for replies only OFFER and ACK,
//!   for requests also to the frame's source when chaddr is not an Ethernet MAC. Wardline's
//!   side is where the dissector's findings point.
//!
//! Skips (passes with a note) when tshark is not installed.

use crate::dataplane_support::{all_pcaps, tshark_available};
use crate::dissect_common::run_dissector;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use wardline_common::{Field, MacAddr};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::decode::{decode, L4};
use wardline_sensor::dissect::{dhcp, snmp, text, Dissector, PacketCtx, Side};

type Facts = BTreeSet<(String, Field, String)>;

fn tshark(path: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark").arg("-n").arg("-r").arg(path).args(args).output().expect("run tshark");
    assert!(out.status.success(), "tshark failed on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn system_field(oid: &str) -> Option<Field> {
    Some(match oid {
        snmp::SYS_DESCR => Field::SnmpSysDescr,
        snmp::SYS_OBJECT_ID => Field::SnmpSysObjectId,
        snmp::SYS_CONTACT => Field::SnmpSysContact,
        snmp::SYS_NAME => Field::SnmpSysName,
        snmp::SYS_LOCATION => Field::SnmpSysLocation,
        _ => return None,
    })
}

/// tshark's system-group varbinds of agent PDUs, per packet source address.
fn tshark_snmp_facts(path: &Path) -> Facts {
    let pdml = tshark(path, &["-Y", "snmp", "-T", "pdml"]);
    let mut facts = Facts::new();
    let (mut src, mut from_agent, mut oid) = (String::new(), false, None::<Field>);
    for line in pdml.lines() {
        match attr(line, "name") {
            Some("ip.src" | "ipv6.src") => src = attr(line, "show").unwrap_or("").to_string(),
            // snmp.data: 2 get-response, 4 trap (v1), 7 snmpV2-trap, 8 report.
            Some("snmp.data") => from_agent = matches!(attr(line, "show"), Some("2" | "4" | "7" | "8")),
            Some("snmp.name") => oid = attr(line, "show").and_then(system_field),
            Some(value) if value.starts_with("snmp.value.") => {
                let Some(field) = oid.take().filter(|_| from_agent) else { continue };
                let v = match value {
                    "snmp.value.octets" => {
                        text::display(&hex::decode(attr(line, "value").unwrap_or("")).unwrap_or_default())
                    }
                    "snmp.value.oid" => attr(line, "show").unwrap_or("").to_string(),
                    _ => continue,
                };
                // sysObjectID is an OID; a text scalar of another type is not evidence.
                let oid_typed = field == Field::SnmpSysObjectId;
                if !v.is_empty() && oid_typed == (value == "snmp.value.oid") {
                    facts.insert((src.clone(), field, v));
                }
            }
            _ => {}
        }
    }
    facts
}

fn wardline_snmp_facts(path: &Path) -> Facts {
    let (found, _) = run_dissector(path, &snmp::SnmpDissector);
    let system = |f: Field| {
        matches!(
            f,
            Field::SnmpSysDescr
                | Field::SnmpSysObjectId
                | Field::SnmpSysContact
                | Field::SnmpSysName
                | Field::SnmpSysLocation
        )
    };
    found
        .into_iter()
        .filter(|(_, f)| system(f.field))
        .map(|(c, f)| {
            assert_eq!(f.side, Side::Src, "system group evidence describes the sending agent");
            (c.src_ip.map(|i| i.to_string()).unwrap_or_default(), f.field, f.value)
        })
        .collect()
}

#[test]
fn snmp_system_group_matches_tshark() {
    if !tshark_available() {
        eprintln!("tshark not installed: differential test skipped");
        return;
    }
    let mut disagreements = Vec::new();
    let mut agreed = BTreeSet::new();
    for file in all_pcaps() {
        let theirs = tshark_snmp_facts(&file);
        let ours = wardline_snmp_facts(&file);
        for d in theirs.symmetric_difference(&ours) {
            let who = if theirs.contains(d) { "tshark" } else { "wardline" };
            disagreements.push(format!("{}: only {who}: {d:?}", file.display()));
        }
        for (_, field, _) in theirs.intersection(&ours) {
            agreed.insert((file.display().to_string(), *field));
        }
    }
    for d in &disagreements {
        eprintln!("DISAGREE {d}");
    }
    eprintln!("SNMP system group: (capture, field) pairs agreed with tshark: {agreed:?}");
    assert!(disagreements.is_empty(), "{} disagreements with tshark (listed above)", disagreements.len());
    for field in [Field::SnmpSysName, Field::SnmpSysLocation, Field::SnmpSysContact] {
        let files = agreed.iter().filter(|(_, f)| *f == field).count();
        assert!(files >= 2, "{field} agreed on only {files} captures");
    }
}

/// (frame number, context, payload) of every DHCPv4 datagram in a capture.
fn dhcp_frames(path: &Path) -> Vec<(usize, PacketCtx, Vec<u8>)> {
    let mut out = Vec::new();
    let mut r = FileReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut n = 0;
    while let Ok(Some(pkt)) = r.next_packet() {
        n += 1;
        let Ok(d) = decode(pkt.linktype, pkt.data) else { continue };
        if matches!(d.l4, L4::Udp { src_port: 67 | 68, dst_port: 67 | 68 }) {
            out.push((n, PacketCtx::of(&d, pkt.ts_us), d.payload.to_vec()));
        }
    }
    out
}

/// Where Wardline's option 12/81 findings point: (MAC, field, value).
fn wardline_dhcp_names(path: &Path) -> Facts {
    let mut facts = Facts::new();
    for (_, ctx, payload) in dhcp_frames(path) {
        let mut out = Vec::new();
        if dhcp::DhcpDissector.dissect(&ctx, &payload, &mut out).is_err() {
            continue;
        }
        for f in out.into_iter().filter(|f| matches!(f.field, Field::Hostname | Field::DhcpFqdn)) {
            let mac = match f.side {
                Side::Src => ctx.src_mac,
                Side::Dst => ctx.dst_mac,
                Side::Mac(m) => m,
            };
            facts.insert((mac.to_string(), f.field, f.value));
        }
    }
    facts
}

/// Where tshark's decode says the names belong (rules in the module doc).
fn tshark_dhcp_names(path: &Path) -> Facts {
    let fields = [
        "eth.src",
        "dhcp.type",
        "dhcp.option.dhcp",
        "dhcp.hw.type",
        "dhcp.hw.len",
        "dhcp.hw.mac_addr",
        "dhcp.option.hostname",
        "dhcp.fqdn.name",
    ];
    let mut args = vec!["-Y", "dhcp && !icmp", "-T", "fields", "-E", "occurrence=f"];
    fields.iter().for_each(|f| args.extend(["-e", f]));
    let mut facts = Facts::new();
    for line in tshark(path, &args).lines() {
        let c: Vec<&str> = line.split('\t').collect();
        let col = |i: usize| c.get(i).copied().unwrap_or("");
        let chaddr = col(5)
            .parse::<MacAddrText>()
            .ok()
            .filter(|_| col(3) == "0x01" && col(4) == "6")
            .map(|m| m.0)
            .filter(|m| m.is_device());
        let reply = col(1) == "2";
        let owner = match (reply, chaddr) {
            (true, Some(m)) if matches!(col(2), "2" | "5") => m.to_string(),
            (true, _) => continue,
            (false, Some(m)) => m.to_string(),
            (false, None) => col(0).to_string(),
        };
        for (i, field) in [(6, Field::Hostname), (7, Field::DhcpFqdn)] {
            if !col(i).is_empty() {
                facts.insert((owner.clone(), field, col(i).to_string()));
            }
        }
    }
    facts
}

/// tshark prints MACs as aa:bb:cc:dd:ee:ff.
struct MacAddrText(MacAddr);

impl std::str::FromStr for MacAddrText {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let b: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16)).collect::<Result<_, _>>().map_err(|_| ())?;
        Ok(MacAddrText(MacAddr(b.try_into().map_err(|_| ())?)))
    }
}

/// A classic pcap of Ethernet/IPv4/UDP frames from the DHCP server 00:1b:21:00:00:01.
fn write_server_replies(path: &Path, payloads: &[Vec<u8>]) {
    let mut f = vec![];
    for v in [0xa1b2c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        // magic, version 2.4 (major and minor as little-endian u16s), thiszone, sigfigs, snaplen, DLT_EN10MB
        f.extend_from_slice(&v.to_le_bytes());
    }
    for (i, p) in payloads.iter().enumerate() {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[0x00, 0x1b, 0x21, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 8 + p.len()) as u16;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            i as u8,
            0,
            0,
            64,
            17,
            0,
            0,
            10,
            77,
            0,
            1,
            255,
            255,
            255,
            255,
        ];
        let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
        let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        let ulen = (8 + p.len()) as u16;
        frame.extend_from_slice(&[0, 67, 0, 68, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        frame.extend_from_slice(p);
        for v in [1_700_000_000 + i as u32, 0, frame.len() as u32, frame.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&frame);
    }
    std::fs::write(path, f).unwrap();
}

/// OFFER / ACK / NAK replies echoing names, for chaddrs Ethernet and not.
fn echoing_replies() -> Vec<Vec<u8>> {
    let reply = |htype: u8, chaddr: [u8; 6], options: &[u8]| {
        let mut p = vec![0u8; 236];
        (p[0], p[1], p[2]) = (2, htype, 6);
        p[16..20].copy_from_slice(&[10, 77, 0, 150]);
        p[28..34].copy_from_slice(&chaddr);
        p.extend_from_slice(&[99, 130, 83, 99]);
        p.extend_from_slice(options);
        p.push(255);
        p
    };
    let fqdn = |flags: u8, name: &[u8]| [&[81, 3 + name.len() as u8, flags, 0, 0][..], name].concat();
    vec![
        reply(1, [0x00, 0x09, 0xfb, 0x6a, 0x1c, 0x01], &[&[53, 1, 2, 12, 9][..], b"pump-4b-7"].concat()),
        reply(
            1,
            [0x00, 0x09, 0xfb, 0x6a, 0x1c, 0x01],
            &[&[53, 1, 5][..], &fqdn(0x04, b"\x07pump-4b\x07wlgh-ad\x00")].concat(),
        ),
        reply(
            1,
            [0x44, 0x4b, 0x5d, 0x0b, 0x65, 0x03],
            &[&[53, 1, 5, 12, 5][..], b"b650a", &fqdn(0x00, b"b650a.icu")].concat(),
        ),
        reply(1, [0x44, 0x4b, 0x5d, 0x0b, 0x65, 0x04], &[&[53, 1, 6, 12, 5][..], b"nakme"].concat()),
        reply(6, [0x44, 0x4b, 0x5d, 0x0b, 0x65, 0x05], &[&[53, 1, 5, 12, 6][..], b"tokrng"].concat()),
    ]
}

#[test]
fn dhcp_names_belong_to_chaddr_as_tshark_decodes_them() {
    if !tshark_available() {
        eprintln!("tshark not installed: differential test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("dhcp-replies-echoing-names.pcap");
    write_server_replies(&built, &echoing_replies());
    let mut files: Vec<_> = all_pcaps().into_iter().filter(|p| !dhcp_frames(p).is_empty()).collect();
    files.push(built.clone());
    let mut disagreements = Vec::new();
    let mut agreed = 0;
    for file in &files {
        let (theirs, ours) = (tshark_dhcp_names(file), wardline_dhcp_names(file));
        agreed += theirs.intersection(&ours).count();
        for d in theirs.symmetric_difference(&ours) {
            let who = if theirs.contains(d) { "tshark" } else { "wardline" };
            disagreements.push(format!("{}: only {who}: {d:?}", file.display()));
        }
    }
    for d in &disagreements {
        eprintln!("DISAGREE {d}");
    }
    eprintln!("DHCP names: {agreed} (device, field, value) facts agreed with tshark over {} captures", files.len());
    assert!(disagreements.is_empty(), "{} disagreements with tshark (listed above)", disagreements.len());
    // The built capture's three name-bearing OFFER/ACKs for Ethernet clients, and the real
    // clients' own requests (raspberrypi, ubuntu2, pop-os, ...).
    let built_names = tshark_dhcp_names(&built);
    assert_eq!(built_names.len(), 4, "{built_names:?}");
    assert!(built_names.iter().all(|(mac, _, _)| mac != "00:1b:21:00:00:01"), "never the server");
    assert!(agreed >= 10, "only {agreed} names agreed");
}
