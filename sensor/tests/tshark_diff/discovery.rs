//! Differential test: for every capture in the shared pcaps folder, the discovery fields
//! Wardline's dissectors extract must equal tshark's, compared as value sets per file.
//!
//! Fields: dns.qry.name (DNS/mDNS/LLMNR questions), http.user_agent and http.server
//! (HTTP over TCP and SSDP over UDP, which tshark dissects with its HTTP dissector),
//! lldp.tlv.system.name, cdp.deviceid, cdp.platform, SNMP sysDescr (from tshark's
//! verbose varbind line, since its fields cannot pair names with values),
//! tls.handshake.extensions_server_name, tls.handshake.ja3 and ssh.protocol.
//!
//! Documented normalisations (where the two legitimately differ in representation or
//! scope) are in `normalise` and `tshark_scope` below; every other difference fails.
//! Run with `cargo test -p wardline-sensor --test tshark_diff discovery:: -- --nocapture`
//! to see the per-file report. Skips (passes with a note) when tshark is not installed.

use crate::dissect_common::{all_pcaps, load, Capture};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use wardline_sensor::dissect::{cdp, dns, http, lldp, snmp, ssdp, ssh, tls, Transport};

type Sets = BTreeMap<&'static str, BTreeSet<String>>;
/// (protocol as tshark names it in frame.protocols, lower port, higher port).
type Scope = BTreeSet<(String, u16, u16)>;

const FIELDS: &[&str] = &[
    "dns.qry.name",
    "http.user_agent",
    "http.server",
    "lldp.tlv.system.name",
    "cdp.deviceid",
    "cdp.platform",
    "tls.handshake.extensions_server_name",
    "tls.handshake.ja3",
    "ssh.protocol",
];
const SYSDESCR: &str = "snmp.sysDescr";
const AGG: u8 = 0x1f;
/// Leading tshark columns before FIELDS.
const META: &[&str] = &["quic.version", "snmp.name", "frame.protocols", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport"];

/// Encapsulations the test's small frame reader does not unwrap (GTP, IP-in-IP, GRE,
/// VXLAN) and STARTTLS upgrades (TLS that does not start the TCP stream): values tshark
/// finds inside them are out of scope for this comparison.
const OUT_OF_SCOPE_LAYERS: &[&str] = &["gtp", "ipv6:ip:", "ip:ipv6:", "gre", "vxlan", "erspan", "socks"];
/// Ports of protocols that upgrade a cleartext TCP stream to TLS in the middle (FTP AUTH
/// TLS, SMTP/submission, POP3, IMAP, LDAP StartTLS, XMPP, SOCKS, HTTP CONNECT): the TLS
/// dissector is handed streams that start at a TLS record, so these are out of scope.
const UPGRADE_PORTS: &[u16] = &[21, 25, 110, 143, 389, 587, 1080, 3128, 5222, 5269];

/// Invalid UTF-8 in DNS names: tshark and Rust replace invalid sequences with U+FFFD at
/// different granularity, so runs of replacement characters compare as one.
fn collapse_replacements(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if !(c == '\u{fffd}' && out.ends_with('\u{fffd}')) {
            out.push(c);
        }
    }
    out
}

fn tshark_available() -> bool {
    Command::new("tshark").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// tshark prints non-printable bytes of DNS names as `\ooo` (octal) and everything else
/// raw; Wardline prints valid UTF-8 as is and other bytes as `\xNN`. Both are turned
/// back into bytes and compared as lossy UTF-8.
fn unescape(v: &[u8], octal: bool) -> String {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' {
            if octal && i + 3 < v.len() && v[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
                let n = (v[i + 1] - b'0') as u32 * 64 + (v[i + 2] - b'0') as u32 * 8 + (v[i + 3] - b'0') as u32;
                out.push(n as u8);
                i += 4;
                continue;
            }
            if !octal && v.get(i + 1) == Some(&b'x') {
                if let Some(b) = v.get(i + 2..i + 4).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(v[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// tshark's value sets for one file, and the flows it dissected per protocol.
fn tshark_sets(path: &Path) -> (Sets, Scope) {
    let mut cmd = Command::new("tshark");
    // Out-of-order reassembly puts tshark on the same footing as Wardline's reassembler.
    cmd.args(["-n", "-o", "tcp.reassemble_out_of_order:TRUE", "-r"]).arg(path);
    cmd.args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=\u{1f}"]);
    for f in META.iter().chain(FIELDS) {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    let mut sets: Sets = BTreeMap::new();
    let mut scope = Scope::new();
    let mut saw_snmp = false;
    for line in out.stdout.split(|&b| b == b'\n') {
        let cols: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
        if cols.len() < META.len() {
            continue;
        }
        let col = |i: usize| String::from_utf8_lossy(cols[i]).into_owned();
        let quic = !cols[0].is_empty();
        saw_snmp |= !cols[1].is_empty();
        let layers = col(2);
        let port = |i: usize| col(i).split('\u{1f}').next().and_then(|p| p.parse::<u16>().ok());
        let ports = port(3).zip(port(4)).or(port(5).zip(port(6)));
        if let Some((a, b)) = ports {
            for l in layers.split(':') {
                scope.insert((l.to_string(), a.min(b), a.max(b)));
            }
        }
        if OUT_OF_SCOPE_LAYERS.iter().any(|l| layers.contains(l)) {
            continue;
        }
        for (i, field) in FIELDS.iter().enumerate() {
            let Some(c) = cols.get(i + META.len()) else { continue };
            if c.is_empty() {
                continue;
            }
            // Wardline does not decrypt QUIC Initial packets, so QUIC ClientHellos are out of scope.
            if quic && field.starts_with("tls.") {
                continue;
            }
            if field.starts_with("tls.") && ports.is_some_and(|(a, b)| UPGRADE_PORTS.contains(&a) || UPGRADE_PORTS.contains(&b)) {
                continue;
            }
            // Wardline dispatches DNS by its ports (53, 5353, 5355); tshark also follows
            // conversations to other ports.
            if *field == "dns.qry.name" && !ports.is_some_and(|(a, b)| [a, b].iter().any(|p| [53, 5353, 5355].contains(p))) {
                continue;
            }
            for v in c.split(|&b| b == AGG) {
                let v = collapse_replacements(&unescape(v, *field == "dns.qry.name"));
                // tshark's placeholders for names Wardline rejects as malformed (counted as errors).
                if v == "<Name too long>" || v == "<Unknown extended label>" {
                    continue;
                }
                sets.entry(field).or_default().insert(v);
            }
        }
    }
    if saw_snmp {
        // Varbind lines in verbose output look like `1.3.6.1.2.1.1.1.0: "text"`.
        let out = Command::new("tshark").args(["-n", "-r"]).arg(path).args(["-O", "snmp", "-V"]).output().expect("run tshark -V");
        let needle = format!("{}: \"", snmp::SYS_DESCR);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix(&needle) {
                if let Some(v) = rest.strip_suffix('"') {
                    sets.entry(SYSDESCR).or_default().insert(v.to_string());
                }
            }
        }
    }
    (sets, scope)
}

/// One extracted value with the flow it came from: (tshark protocol name, lower port,
/// higher port), or None for link-layer protocols.
type Found = Vec<(&'static str, String, Option<(&'static str, u16, u16)>)>;

#[derive(Default)]
struct ErrorTally(BTreeMap<String, (usize, String)>);

impl ErrorTally {
    fn count(&mut self, file: &Path, e: &wardline_sensor::dissect::DissectError) {
        let entry = self.0.entry(format!("{}/{}", e.proto, e.kind)).or_insert_with(|| (0, format!("{}: {}", file.display(), e.detail)));
        entry.0 += 1;
    }
}

fn dns_name(n: &str) -> String {
    collapse_replacements(&unescape(n.as_bytes(), false))
}

/// Names from DNS messages Wardline rejected as malformed: tshark still shows what it
/// decoded before giving up. These are recorded under a separate key so a tshark-only
/// name found here is reported as information, not as a disagreement.
fn salvaged(payload: &[u8], found: &mut Found) {
    for q in dns::salvage_questions(payload) {
        found.push((SALVAGED_DNS, dns_name(&q.name), None));
    }
}

const SALVAGED_DNS: &str = "dns.qry.name(salvaged from malformed)";

/// Wardline's values for one file, straight from the dissectors' typed records.
fn wardline_found(file: &Path, cap: &Capture, errors: &mut ErrorTally) -> Found {
    let mut found: Found = Vec::new();
    for p in &cap.datagrams {
        let c = &p.ctx;
        let flow = |proto: &'static str| Some((proto, c.src_port.min(c.dst_port), c.src_port.max(c.dst_port)));
        match c.transport {
            Transport::L2 { ethertype: lldp::ETHERTYPE } => match lldp::parse(&p.payload) {
                Ok(r) => r.system_name.into_iter().for_each(|n| found.push(("lldp.tlv.system.name", n, None))),
                Err(e) => errors.count(file, &e),
            },
            Transport::L2 { .. } if cdp::is_cdp_snap(&p.payload) => match cdp::parse(&p.payload) {
                Ok(r) => {
                    r.device_id.into_iter().for_each(|v| found.push(("cdp.deviceid", v, None)));
                    r.platform.into_iter().for_each(|v| found.push(("cdp.platform", v, None)));
                }
                Err(e) => errors.count(file, &e),
            },
            Transport::Udp => {
                let ports = [c.src_port, c.dst_port];
                if ports.iter().any(|p| [53, 5353, 5355].contains(p)) {
                    let proto = match dns::flavor(c) {
                        wardline_common::Proto::Mdns => "mdns",
                        wardline_common::Proto::Llmnr => "llmnr",
                        _ => "dns",
                    };
                    match dns::parse(&p.payload) {
                        Ok(r) => r.questions.into_iter().for_each(|q| found.push(("dns.qry.name", dns_name(&q.name), flow(proto)))),
                        Err(e) => {
                            errors.count(file, &e);
                            salvaged(&p.payload, &mut found);
                        }
                    }
                } else if ports.iter().any(|p| [161, 162].contains(p)) {
                    match snmp::parse(&p.payload) {
                        Ok(r) => {
                            for vb in r.varbinds.iter().filter(|v| v.oid == snmp::SYS_DESCR) {
                                if let snmp::Value::OctetString(b) = &vb.value {
                                    found.push((SYSDESCR, String::from_utf8_lossy(b).into_owned(), flow("snmp")));
                                }
                            }
                        }
                        Err(e) => errors.count(file, &e),
                    }
                } else if ports.contains(&1900) || ssdp::looks_like_ssdp(&p.payload) {
                    match ssdp::parse(&p.payload) {
                        Ok(r) => {
                            r.user_agent.into_iter().for_each(|v| found.push(("http.user_agent", v, flow("ssdp"))));
                            r.server.into_iter().for_each(|v| found.push(("http.server", v, flow("ssdp"))));
                        }
                        Err(e) => errors.count(file, &e),
                    }
                }
            }
            _ => {}
        }
    }
    for s in &cap.streams {
        let d = &s.data[..];
        let c = &s.ctx;
        let flow = |proto: &'static str| Some((proto, c.src_port.min(c.dst_port), c.src_port.max(c.dst_port)));
        if d.starts_with(b"SSH-") {
            match ssh::parse(d) {
                Ok(r) => found.push(("ssh.protocol", r.banner, flow("ssh"))),
                Err(e) => errors.count(file, &e),
            }
        } else if tls::looks_like_tls(d) {
            match tls::parse(d) {
                Ok(r) => {
                    for ch in r.client_hellos {
                        if let Some(sni) = &ch.sni {
                            found.push(("tls.handshake.extensions_server_name", sni.clone(), flow("tls")));
                        }
                        found.push(("tls.handshake.ja3", ch.ja3_hash(), flow("tls")));
                    }
                }
                Err(e) => errors.count(file, &e),
            }
        } else if http::looks_like_http(d) {
            for r in http::parse_stream(d) {
                match r {
                    Ok(r) => {
                        if r.is_request() {
                            r.header("user-agent").into_iter().for_each(|v| found.push(("http.user_agent", v.to_string(), flow("http"))));
                        } else {
                            r.header("server").into_iter().for_each(|v| found.push(("http.server", v.to_string(), flow("http"))));
                        }
                    }
                    Err(e) => errors.count(file, &e),
                }
            }
        } else if c.src_port == 53 || c.dst_port == 53 {
            let mut pos = 0;
            while pos + 2 <= d.len() {
                let len = u16::from_be_bytes([d[pos], d[pos + 1]]) as usize;
                match dns::parse_tcp(&d[pos..]) {
                    Ok(r) => r.questions.into_iter().for_each(|q| found.push(("dns.qry.name", dns_name(&q.name), flow("dns")))),
                    Err(e) => {
                        errors.count(file, &e);
                        salvaged(d.get(pos + 2..).unwrap_or(&[]), &mut found);
                        break;
                    }
                }
                pos += 2 + len;
            }
        }
    }
    found
}

#[test]
fn discovery_fields_match_tshark() {
    if !tshark_available() {
        eprintln!("tshark not installed: differential test skipped");
        return;
    }
    let files = all_pcaps();
    assert!(!files.is_empty(), "no captures found under {}", crate::dissect_common::pcaps_dir().display());
    let mut disagreements = Vec::new();
    let mut beyond_tshark = Vec::new();
    let mut agreed = 0usize;
    let mut errors = ErrorTally::default();
    for f in &files {
        let (t, scope) = tshark_sets(f);
        let found = wardline_found(f, &load(f), &mut errors);
        for field in FIELDS.iter().chain([&SYSDESCR]) {
            let ts = t.get(field).cloned().unwrap_or_default();
            let ws: BTreeSet<String> = found.iter().filter(|(fl, _, _)| fl == field).map(|(_, v, _)| v.clone()).collect();
            agreed += ts.intersection(&ws).count();
            for v in ts.difference(&ws) {
                let salvaged = *field == "dns.qry.name" && found.iter().any(|(fl, val, _)| *fl == SALVAGED_DNS && val == v);
                if salvaged {
                    beyond_tshark.push(format!("{}: {field}: tshark shows {v:?} from a message Wardline rejects as malformed", f.display()));
                    continue;
                }
                disagreements.push(format!("{}: {field}: tshark only: {v:?}", f.display()));
            }
            for v in ws.difference(&ts) {
                // tshark picks dissectors by port; Wardline by payload. A value from a flow
                // tshark did not dissect as that protocol at all is extra coverage, not a
                // disagreement (listed for information).
                let in_scope = found.iter().filter(|(fl, val, _)| fl == field && val == v).any(|(_, _, flow)| match flow {
                    None => true,
                    Some((proto, a, b)) => scope.contains(&(proto.to_string(), *a, *b)),
                });
                if in_scope {
                    disagreements.push(format!("{}: {field}: wardline only: {v:?}", f.display()));
                } else {
                    beyond_tshark.push(format!("{}: {field}: wardline found {v:?} on a flow tshark did not dissect as this protocol", f.display()));
                }
            }
        }
    }
    eprintln!("{agreed} values agreed over {} captures", files.len());
    for (k, (n, example)) in &errors.0 {
        eprintln!("dissector errors {k}: {n} (first: {example})");
    }
    for b in &beyond_tshark {
        eprintln!("INFO (not a disagreement) {b}");
    }
    for d in &disagreements {
        eprintln!("DISAGREE {d}");
    }
    assert!(disagreements.is_empty(), "{} disagreements with tshark (listed above)", disagreements.len());
    assert!(agreed > 100, "suspiciously few values agreed ({agreed})");
}
