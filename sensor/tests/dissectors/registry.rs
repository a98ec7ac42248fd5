//! The protocol registry (sensor/src/protocols.rs) against the dissectors, the sources and
//! docs/protocols.md: every port a dissector keys on is registered for it, no other module
//! keeps a port list, and the docs table is the registry's.

use crate::dissect_medical_support::ctx;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wardline_sensor::dissect::Transport;
use wardline_sensor::protocols::{self, Recognition, PROTOCOLS};

/// Payloads that pass each dissector's shape test, so that what is left of `wants` is the
/// port test: bytes of no protocol, TLS and DTLS records, DICOM PDUs (association request
/// and P-DATA), an X.224 connection request, a BER SEQUENCE, IntelliVue session and
/// data-export headers, HTTP and SOAP requests, MLLP HL7, an SSH banner, an RFB version,
/// an SMB2 header behind a NetBIOS session header, and a DNS-sized message.
fn probes() -> Vec<Vec<u8>> {
    let mut smb = vec![0, 0, 0, 68, 0xfe, b'S', b'M', b'B', 64, 0];
    smb.resize(72, 0);
    vec![
        b"\x00\x01\x02\x03 payload of no protocol at all".to_vec(),
        vec![0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0],
        vec![0x16, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1, 0, 0, 1, 0],
        [&[1u8, 0, 0, 0, 0, 10][..], &[0; 10]].concat(),
        [&[4u8, 0, 0, 0, 0, 10][..], &[0; 10]].concat(),
        vec![3, 0, 0, 11, 6, 0xE0, 0, 0, 0, 0, 0],
        vec![0x30, 0x0c, 2, 1, 1, 4, 6, b'p', b'u', b'b', b'l', b'i', b'c', 0],
        vec![0x0D, 0x08, 0x05, 0x08, 0x13, 0x01, 0x00, 0x16, 0x01, 0x02],
        vec![0xE1, 0x00, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /dev HTTP/1.1\r\nContent-Type: application/soap+xml\r\n\r\n<s:Envelope/>".to_vec(),
        b"\x0bMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r\x1c\r".to_vec(),
        b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
        b"RFB 003.008\n".to_vec(),
        smb,
        vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1],
    ]
}

/// A port no registry entry names: the other end of every probe.
const EPHEMERAL: u16 = 50000;

#[test]
fn every_port_a_dissector_keys_on_is_registered_for_it() {
    assert!(PROTOCOLS.iter().all(|e| !e.has_port(EPHEMERAL)));
    let probes = probes();
    for entry in PROTOCOLS {
        let Some(d) = entry.dissector else { continue };
        for transport in [Transport::Tcp, Transport::Udp].into_iter().filter(|t| entry.transports.carries(*t)) {
            let wants = |sp, dp, p: &[u8]| d.wants(&ctx(transport, sp, dp), p);
            let mut keyed = BTreeSet::new();
            for p in &probes {
                let off_port = wants(EPHEMERAL, EPHEMERAL, p);
                if matches!(entry.recognition, Recognition::Port | Recognition::PortAndPayload) {
                    assert!(!off_port, "{}: claims a payload on no registered port over {transport:?}", entry.name);
                }
                for port in 1..=u16::MAX {
                    if [wants(port, EPHEMERAL, p), wants(EPHEMERAL, port, p), wants(port, port, p)]
                        .iter()
                        .any(|&w| w != off_port)
                    {
                        keyed.insert(port);
                    }
                }
            }
            let unregistered: Vec<u16> = keyed.iter().copied().filter(|&p| !entry.has_port(p)).collect();
            assert!(
                unregistered.is_empty(),
                "{} keys on unregistered {transport:?} ports {unregistered:?}",
                entry.name
            );
            if matches!(entry.recognition, Recognition::Port | Recognition::PortAndPayload) {
                let registered: Vec<u16> =
                    entry.ports.iter().flat_map(|r| r.first..=r.last).filter(|p| !keyed.contains(p)).collect();
                assert!(registered.is_empty(), "{}: registered ports {registered:?} claim nothing", entry.name);
            }
        }
    }
}

fn sensor_sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// Does this code line name a port by number or declare a port list?
fn names_a_port(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let digit_after = |pat: &str| {
        code.match_indices(pat)
            .any(|(i, _)| code[i + pat.len()..].trim_start().starts_with(|c: char| c.is_ascii_digit()))
    };
    let declares =
        (code.contains("const ") || code.contains("static ")) && (code.contains("PORT:") || code.contains("PORTS:"));
    declares || digit_after("port ==") || digit_after("port !=") || (code.contains("matches!(") && digit_after("port,"))
}

#[test]
fn no_module_but_the_registry_keeps_port_knowledge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let registry = std::fs::read_to_string(src.join("protocols.rs")).unwrap();
    let mut offenders = Vec::new();
    for path in sensor_sources() {
        let rel = path.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        if rel == "protocols.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Unit tests build contexts on literal ports; only shipped code must not.
        let shipped = text.split("#[cfg(test)]").next().unwrap();
        for (n, line) in shipped.lines().enumerate() {
            if names_a_port(line) {
                offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
        // Every dissector is reachable through a registry entry.
        for (i, _) in text.match_indices("impl Dissector for ") {
            let name: String = text[i + 19..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !registry.contains(&format!("::{name}")) {
                offenders.push(format!("{rel}: dissector {name} has no registry entry"));
            }
        }
    }
    assert!(offenders.is_empty(), "port knowledge outside sensor/src/protocols.rs:\n{}", offenders.join("\n"));
}

#[test]
fn names_a_port_catches_the_shapes_removed_from_the_tree() {
    for l in [
        "pub const STREAM_PORTS: [u16; 11] = [104, 80];",
        "ctx.src_port == 53 || ctx.dst_port == 53",
        "&& matches!(ctx.src_port, 67 | 68)",
        "const FTP_PORT: u16 = 21;",
    ] {
        assert!(names_a_port(l), "{l}");
    }
    assert!(!names_a_port("if ctx.src_port == port {"));
    assert!(!names_a_port("// port == 53 in a comment"));
}

/// The table between the markers in docs/protocols.md is `protocols::markdown_table()`.
/// `WARDLINE_BLESS=1` rewrites it after a registry change.
#[test]
fn docs_table_is_the_registry() {
    const BEGIN: &str = "<!-- registry table: generated from sensor/src/protocols.rs -->\n";
    const END: &str = "<!-- end of registry table -->";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocols.md");
    let doc = std::fs::read_to_string(&path).expect("docs/protocols.md");
    let start = doc.find(BEGIN).expect("docs/protocols.md has the begin marker") + BEGIN.len();
    let end = start + doc[start..].find(END).expect("docs/protocols.md has the end marker");
    let table = protocols::markdown_table();
    if std::env::var_os("WARDLINE_BLESS").is_some() {
        std::fs::write(&path, format!("{}{}{}", &doc[..start], table, &doc[end..])).unwrap();
        return;
    }
    assert!(
        doc[start..end] == table,
        "docs/protocols.md is out of date with the registry; rerun with WARDLINE_BLESS=1 to regenerate"
    );
}
