//! DNS, mDNS (UDP 5353) and LLMNR (UDP 5355): one wire format, three meanings.
//!
//! - Queries: every question name is a name the sender looked up (`DnsQuery`, Src).
//! - mDNS responses announce the sender's own names and services: A/AAAA owners and SRV
//!   targets are host names (`MdnsName`), PTR owners like `_ipp._tcp.local` are service
//!   types (`MdnsService`) and their targets service instances (`MdnsName`), TXT strings
//!   such as `ty=...`, `model=...`, `usb_MDL=...` become `MdnsTxt`.
//! - LLMNR responses answer for the responder's own name (`Hostname`, Src).
//! - Unicast DNS answers describe third parties, so they produce no findings.
//!
//! Names are decoded with compression; pointer chains are bounded ([`MAX_POINTER_JUMPS`])
//! and must point strictly backwards, so loops and forward tricks end in an error.

use super::text::{be16, be32, display};
use super::*;
use crate::protocols::{DNS, LLMNR, MDNS};
use std::net::{Ipv4Addr, Ipv6Addr};

const PROTO: Proto = Proto::Dns;
/// Compression pointers followed while reading one name before giving up (loop guard).
pub const MAX_POINTER_JUMPS: usize = 64;
/// Longest presentation name kept; RFC 1035 allows 255 octets on the wire.
const MAX_NAME_CHARS: usize = 1024;
/// Records read per section; a 64 KB datagram cannot hold more than this many anyway.
const MAX_RECORDS: usize = 4096;
/// TXT strings kept per record and announced per message (bounded evidence).
const MAX_TXT_STRINGS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuestion {
    pub name: String,
    pub qtype: u16,
    /// Class with the mDNS unicast-response bit (0x8000) removed.
    pub qclass: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Ptr(String),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    /// Each character-string of the TXT record, as display text.
    Txt(Vec<String>),
    /// Any other type: only its length is kept.
    Other {
        len: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRr {
    pub section: Section,
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: RData,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    pub id: u16,
    pub is_response: bool,
    pub opcode: u8,
    pub rcode: u8,
    pub questions: Vec<DnsQuestion>,
    pub records: Vec<DnsRr>,
}

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(PROTO, kind, detail)
}

/// Read the labels of a (possibly compressed) name at `off` in `msg`. Returns the raw
/// labels and the offset just past the name in the original position.
pub fn read_labels(msg: &[u8], off: usize) -> Result<(Vec<Vec<u8>>, usize), DissectError> {
    let mut labels = Vec::new();
    let next = walk_labels(msg, off, |l| labels.push(l.to_vec()))?;
    Ok((labels, next))
}

/// Walk the labels of a name, handing each to `label` in order; returns the offset just
/// past the name. Borrows the labels from `msg` so callers need not allocate per label.
fn walk_labels<'m>(msg: &'m [u8], off: usize, mut label_fn: impl FnMut(&'m [u8])) -> Result<usize, DissectError> {
    let mut pos = off;
    let mut end_after: Option<usize> = None;
    let mut jumps = 0usize;
    let mut total = 0usize;
    loop {
        let len = *msg.get(pos).ok_or_else(|| {
            DissectError::truncated(PROTO, format!("name at offset {off} runs past the end ({} bytes)", msg.len()))
        })?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Ok(end_after.unwrap_or(pos + 1));
                }
                let start = pos + 1;
                let label = msg.get(start..start + len as usize).ok_or_else(|| {
                    DissectError::truncated(PROTO, format!("label of {len} bytes at offset {pos} runs past the end"))
                })?;
                total += label.len() + 1;
                if total > MAX_NAME_CHARS {
                    return Err(err("name_too_long", format!("name at offset {off} exceeds {MAX_NAME_CHARS} bytes")));
                }
                label_fn(label);
                pos = start + len as usize;
            }
            0xc0 => {
                let lo = *msg.get(pos + 1).ok_or_else(|| {
                    DissectError::truncated(PROTO, format!("compression pointer at offset {pos} cut short"))
                })?;
                let target = (((len & 0x3f) as usize) << 8) | lo as usize;
                jumps += 1;
                // Backwards-only pointers make loops impossible; the jump cap bounds work.
                if target >= pos || jumps > MAX_POINTER_JUMPS {
                    return Err(err(
                        "pointer_loop",
                        format!("compression pointer at offset {pos} to {target} is a loop or forward reference"),
                    ));
                }
                if end_after.is_none() {
                    end_after = Some(pos + 2);
                }
                pos = target;
            }
            _ => return Err(err("bad_label_type", format!("label type 0x{len:02x} at offset {pos} is not supported"))),
        }
    }
}

/// Presentation form of a name: labels joined by '.', root as `<Root>` (as tshark shows it).
pub fn labels_to_string(labels: &[Vec<u8>]) -> String {
    if labels.is_empty() {
        return "<Root>".to_string();
    }
    let mut s = String::new();
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(&display_label(l));
    }
    s
}

fn display_label(l: &[u8]) -> String {
    let mut s = String::new();
    push_display_label(&mut s, l);
    s
}

fn push_display_label(out: &mut String, l: &[u8]) {
    // Printable ASCII (nearly every label) is copied as is, without the UTF-8 walk.
    if l.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.reserve(l.len());
        for &b in l {
            out.push(b as char);
        }
        return;
    }
    // Wireshark keeps valid UTF-8 and escapes other bytes; do the same so names compare.
    match std::str::from_utf8(l) {
        Ok(s) if !s.chars().any(|c| c.is_control()) => out.push_str(s),
        _ => {
            for &b in l {
                if (0x20..0x7f).contains(&b) {
                    out.push(b as char);
                } else {
                    let _ = std::fmt::Write::write_fmt(out, format_args!("\\x{b:02x}"));
                }
            }
        }
    }
}

/// A name in presentation form, built in one String (no per-label allocation): names are
/// read for every DNS datagram, the sensor's most common payload.
fn read_name(msg: &[u8], off: usize) -> Result<(String, usize), DissectError> {
    // Room for a typical host name up front: growing 8 → 16 → 32 → 64 cost reallocs.
    let mut name = String::with_capacity(48);
    let mut first = true;
    let next = walk_labels(msg, off, |l| {
        if !first {
            name.push('.');
        }
        first = false;
        push_display_label(&mut name, l);
    })?;
    if first {
        name.push_str("<Root>");
    }
    Ok((name, next))
}

/// Parse a DNS message as carried over UDP.
pub fn parse(payload: &[u8]) -> Result<DnsRecord, DissectError> {
    parse_with(payload, true)
}

/// Check a DNS message exactly as [`parse`] does (same result, same error) without
/// building any name or record: for unicast responses, which describe third parties and
/// yield no findings, only whether the message is well formed matters.
pub fn validate(payload: &[u8]) -> Result<(), DissectError> {
    parse_with(payload, false).map(|_| ())
}

/// [`parse`], keeping questions and records only when `keep` (otherwise they are walked
/// and checked, and the returned record has none).
fn parse_with(payload: &[u8], keep: bool) -> Result<DnsRecord, DissectError> {
    if payload.len() < 12 {
        return Err(DissectError::truncated(PROTO, format!("header needs 12 bytes, got {}", payload.len())));
    }
    let id = be16(payload, 0).unwrap_or(0);
    let flags = be16(payload, 2).unwrap_or(0);
    let counts = [4usize, 6, 8, 10].map(|o| be16(payload, o).unwrap_or(0) as usize);
    // Every question takes at least 5 bytes: reject absurd counts before looping. Records
    // are only stored once parsed, so memory stays bounded by the payload size.
    if counts[0] * 5 > payload.len() - 12 || counts.iter().any(|&c| c > MAX_RECORDS) {
        return Err(err("bad_count", format!("counts {counts:?} cannot fit in {} bytes", payload.len())));
    }
    let mut rec = DnsRecord {
        id,
        is_response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rcode: (flags & 0x0f) as u8,
        questions: Vec::with_capacity(if keep { counts[0].min(64) } else { 0 }),
        records: Vec::new(),
    };
    let mut pos = 12;
    for _ in 0..counts[0] {
        let (name, next) = name_at(payload, pos, keep)?;
        let qtype = be16(payload, next)
            .ok_or_else(|| DissectError::truncated(PROTO, format!("question type at offset {next}")))?;
        let qclass = be16(payload, next + 2)
            .ok_or_else(|| DissectError::truncated(PROTO, format!("question class at offset {}", next + 2)))?;
        if keep {
            rec.questions.push(DnsQuestion { name, qtype, qclass: qclass & 0x7fff });
        }
        pos = next + 4;
    }
    let sections = [(Section::Answer, counts[1]), (Section::Authority, counts[2]), (Section::Additional, counts[3])];
    for (section, n) in sections {
        for _ in 0..n {
            let (rr, next) = read_rr(payload, pos, section, keep)?;
            if keep {
                rec.records.push(rr);
            }
            pos = next;
        }
    }
    Ok(rec)
}

/// [`read_name`] when `keep`, else the same checks with an empty name (no allocation).
fn name_at(msg: &[u8], off: usize, keep: bool) -> Result<(String, usize), DissectError> {
    if keep {
        read_name(msg, off)
    } else {
        Ok((String::new(), walk_labels(msg, off, |_| {})?))
    }
}

/// Best-effort question names from a message [`parse`] rejected (absurd counts, broken
/// later sections, snaplen-truncated answers): the questions decoded before the first
/// failure, at most 64. For salvaging evidence and for comparing with tools that show
/// partial messages; the error itself should still be counted.
pub fn salvage_questions(payload: &[u8]) -> Vec<DnsQuestion> {
    let mut out = Vec::new();
    let qd = be16(payload, 4).unwrap_or(0) as usize;
    let mut pos = 12;
    for _ in 0..qd.min(64) {
        let Ok((name, next)) = read_name(payload, pos) else {
            break;
        };
        let (Some(qtype), Some(qclass)) = (be16(payload, next), be16(payload, next + 2)) else {
            out.push(DnsQuestion { name, qtype: 0, qclass: 0 });
            break;
        };
        out.push(DnsQuestion { name, qtype, qclass: qclass & 0x7fff });
        pos = next + 4;
    }
    out
}

/// Parse a DNS message as carried over TCP (two-byte length prefix).
pub fn parse_tcp(payload: &[u8]) -> Result<DnsRecord, DissectError> {
    parse(tcp_body(payload)?)
}

/// The message inside a DNS-over-TCP payload (after its two-byte length prefix).
fn tcp_body(payload: &[u8]) -> Result<&[u8], DissectError> {
    let len = be16(payload, 0).ok_or_else(|| DissectError::truncated(PROTO, "TCP length prefix missing"))? as usize;
    payload.get(2..2 + len).ok_or_else(|| {
        DissectError::truncated(
            PROTO,
            format!("TCP message says {len} bytes, {} present", payload.len().saturating_sub(2)),
        )
    })
}

/// One resource record at `off`; with `keep` false its names and strings are checked but
/// not built.
fn read_rr(msg: &[u8], off: usize, section: Section, keep: bool) -> Result<(DnsRr, usize), DissectError> {
    let (name, p) = name_at(msg, off, keep)?;
    let hdr =
        msg.get(p..p + 10).ok_or_else(|| DissectError::truncated(PROTO, format!("record header at offset {p}")))?;
    let rtype = u16::from_be_bytes([hdr[0], hdr[1]]);
    let class = u16::from_be_bytes([hdr[2], hdr[3]]) & 0x7fff;
    let ttl = be32(hdr, 4).unwrap_or(0);
    let rdlen = u16::from_be_bytes([hdr[8], hdr[9]]) as usize;
    let start = p + 10;
    let rd = msg.get(start..start + rdlen).ok_or_else(|| {
        DissectError::truncated(PROTO, format!("rdata of {rdlen} bytes at offset {start} runs past the end"))
    })?;
    let rdata = match rtype {
        TYPE_A if rdlen == 4 => RData::A(Ipv4Addr::new(rd[0], rd[1], rd[2], rd[3])),
        TYPE_AAAA if rdlen == 16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(rd);
            RData::Aaaa(Ipv6Addr::from(a))
        }
        TYPE_PTR => RData::Ptr(name_at(msg, start, keep)?.0),
        TYPE_CNAME => RData::Cname(name_at(msg, start, keep)?.0),
        TYPE_SRV if rdlen >= 7 => RData::Srv {
            priority: be16(rd, 0).unwrap_or(0),
            weight: be16(rd, 2).unwrap_or(0),
            port: be16(rd, 4).unwrap_or(0),
            target: name_at(msg, start + 6, keep)?.0,
        },
        TYPE_TXT => {
            let mut strings = Vec::new();
            let mut kept = 0;
            let mut i = 0;
            while i < rd.len() && kept < MAX_TXT_STRINGS {
                let l = rd[i] as usize;
                let s = rd.get(i + 1..i + 1 + l).ok_or_else(|| {
                    DissectError::truncated(PROTO, format!("TXT string of {l} bytes at offset {}", start + i))
                })?;
                if !s.is_empty() {
                    kept += 1;
                    if keep {
                        strings.push(display(s));
                    }
                }
                i += 1 + l;
            }
            RData::Txt(strings)
        }
        _ => RData::Other { len: rdlen },
    };
    Ok((DnsRr { section, name, rtype, class, ttl, rdata }, start + rdlen))
}

/// A DNS-SD service type such as `_ipp._tcp.local` (not an instance of one).
pub fn is_service_type(name: &str) -> bool {
    let mut labels = name.split('.');
    let first = labels.next().unwrap_or("");
    let second = labels.next().unwrap_or("");
    first.starts_with('_') && (second == "_tcp" || second == "_udp" || second == "_sub")
        || (first == "_services" && second == "_dns-sd")
}

/// Which of DNS, mDNS or LLMNR a packet is, by its ports.
pub fn flavor(ctx: &PacketCtx) -> Proto {
    if MDNS.claims(ctx) {
        Proto::Mdns
    } else if LLMNR.claims(ctx) {
        Proto::Llmnr
    } else {
        Proto::Dns
    }
}

/// Findings for a message of the given flavor (see the module docs for the meaning).
pub fn findings(rec: &DnsRecord, flavor: Proto, out: &mut Vec<Finding>) {
    // De-duplicate what this call adds: a linear scan while few (a unicast query adds one
    // finding; no allocation), a set once many (an mDNS response can hold thousands).
    const LINEAR_MAX: usize = 16;
    let start = out.len();
    let mut seen: Option<std::collections::HashSet<(Field, String)>> = None;
    let mut push = |out: &mut Vec<Finding>, f: Finding| {
        let fresh = match &mut seen {
            Some(set) => set.insert((f.field, f.value.clone())),
            None => {
                let dup = out[start..].iter().any(|g| g.field == f.field && g.value == f.value);
                if !dup && out.len() - start >= LINEAR_MAX {
                    let mut set: std::collections::HashSet<(Field, String)> =
                        out[start..].iter().map(|g| (g.field, g.value.clone())).collect();
                    set.insert((f.field, f.value.clone()));
                    seen = Some(set);
                }
                !dup
            }
        };
        if fresh {
            out.push(f);
        }
    };
    if !rec.is_response {
        for q in &rec.questions {
            if q.name != "<Root>" {
                push(out, Finding::src(Field::DnsQuery, q.name.clone()));
            }
        }
        // mDNS probes carry the names being claimed in the authority section.
        if flavor == Proto::Mdns {
            for rr in rec.records.iter().filter(|r| r.section == Section::Authority) {
                announce(rr, out, &mut push);
            }
        }
        return;
    }
    match flavor {
        Proto::Mdns => {
            for rr in &rec.records {
                announce(rr, out, &mut push);
            }
        }
        Proto::Llmnr => {
            for rr in rec.records.iter().filter(|r| r.section == Section::Answer) {
                if matches!(rr.rdata, RData::A(_) | RData::Aaaa(_)) {
                    push(out, Finding::src(Field::Hostname, rr.name.clone()));
                }
            }
        }
        _ => {}
    }
}

fn announce(rr: &DnsRr, out: &mut Vec<Finding>, push: &mut impl FnMut(&mut Vec<Finding>, Finding)) {
    match &rr.rdata {
        RData::A(_) | RData::Aaaa(_) => push(out, Finding::src(Field::MdnsName, rr.name.clone())),
        RData::Ptr(target) => {
            if is_service_type(&rr.name) {
                push(out, Finding::src(Field::MdnsService, rr.name.clone()));
                if rr.name.starts_with("_services.") {
                    push(out, Finding::src(Field::MdnsService, target.clone()));
                } else {
                    push(out, Finding::src(Field::MdnsName, target.clone()));
                }
            } else {
                // Reverse mapping (x.in-addr.arpa → host.local): the target is our name.
                push(out, Finding::src(Field::MdnsName, target.clone()));
            }
        }
        RData::Srv { target, .. } => {
            push(out, Finding::src(Field::MdnsName, rr.name.clone()));
            push(out, Finding::src(Field::MdnsName, target.clone()));
        }
        RData::Txt(strings) => {
            for s in strings.iter().filter(|s| s.contains('=')) {
                push(out, Finding::src(Field::MdnsTxt, s.clone()));
            }
        }
        _ => {}
    }
}

/// One dissector per flavor so the flow gets the right application label.
pub struct DnsDissector;
pub struct MdnsDissector;
pub struct LlmnrDissector;

fn dissect_any(ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
    let flavor = flavor(ctx);
    // A unicast DNS response names third parties and yields no finding (see `findings`):
    // check it is well formed, as `parse` would, without building its names.
    let body = if ctx.transport == Transport::Tcp { tcp_body(payload)? } else { payload };
    if flavor == Proto::Dns && body.len() >= 12 && body[2] & 0x80 != 0 {
        return validate(body);
    }
    let qdcount = be16(body, 4).unwrap_or(0) as usize;
    if flavor == Proto::Dns && body.len() >= 12 && qdcount <= 16 {
        // The common case, a unicast query: what `findings` gives (its question names,
        // de-duplicated), read straight from the message once it is known to be well
        // formed, with no record built for the rest of it (an EDNS OPT record, say).
        validate(body)?;
        let start = out.len();
        let mut pos = 12;
        for _ in 0..qdcount {
            let (name, next) = read_name(body, pos)?;
            pos = next + 4;
            if name != "<Root>" && !out[start..].iter().any(|g| g.field == Field::DnsQuery && g.value == name) {
                out.push(Finding::src(Field::DnsQuery, name));
            }
        }
        return Ok(());
    }
    let rec = parse(body)?;
    findings(&rec, flavor, out);
    Ok(())
}

impl Dissector for DnsDissector {
    fn proto(&self) -> Proto {
        Proto::Dns
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        matches!(ctx.transport, Transport::Udp | Transport::Tcp) && DNS.claims(ctx) && payload.len() >= 12
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        dissect_any(ctx, payload, out)
    }
}

impl Dissector for MdnsDissector {
    fn proto(&self) -> Proto {
        Proto::Mdns
    }
    fn wants(&self, ctx: &PacketCtx, _payload: &[u8]) -> bool {
        ctx.transport == Transport::Udp && MDNS.claims(ctx)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        dissect_any(ctx, payload, out)
    }
}

impl Dissector for LlmnrDissector {
    fn proto(&self) -> Proto {
        Proto::Llmnr
    }
    fn wants(&self, ctx: &PacketCtx, _payload: &[u8]) -> bool {
        ctx.transport == Transport::Udp && LLMNR.claims(ctx)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        dissect_any(ctx, payload, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The printable-ASCII shortcut gives what the general rule gives.
        #[test]
        fn label_display_shortcut_matches_the_general_rule(l in proptest::collection::vec(proptest::prop_oneof![0x1fu8..0x81, proptest::prelude::any::<u8>()], 0..64)) {
            let general = match std::str::from_utf8(&l) {
                Ok(s) if !s.chars().any(|c| c.is_control()) => s.to_string(),
                _ => l.iter().map(|&b| if (0x20..0x7f).contains(&b) { (b as char).to_string() } else { format!("\\x{b:02x}") }).collect(),
            };
            proptest::prop_assert_eq!(display_label(&l), general);
        }
    }

    #[test]
    fn read_name_matches_labels_to_string() {
        // "ab.c\x01d" at 0, then a name "x" + pointer to 0 at 10, then the root at 15.
        let msg = [2, b'a', b'b', 3, b'c', 0x01, b'd', 0, 0xff, 0xff, 1, b'x', 0xc0, 0x00, 0xff, 0];
        for off in [0usize, 10, 15] {
            let (labels, next_a) = read_labels(&msg, off).unwrap();
            let (name, next_b) = read_name(&msg, off).unwrap();
            assert_eq!(name, labels_to_string(&labels), "offset {off}");
            assert_eq!(next_a, next_b);
        }
        assert_eq!(read_name(&msg, 10).unwrap().0, "x.ab.c\\x01d");
        assert_eq!(read_name(&msg, 15).unwrap().0, "<Root>");
        assert!(read_name(&msg, 8).is_err(), "a forward pointer is rejected");
    }

    /// `validate` must accept and reject exactly what `parse` does, with the same error:
    /// checked on every truncation and many byte mutations of messages with each record type.
    #[test]
    fn validate_agrees_with_parse() {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 6, 0, 0, 0, 1];
        m.extend_from_slice(&[
            7, b'p', b'r', b'i', b'n', b't', b'e', b'r', 5, b'l', b'o', b'c', b'a', b'l', 0, 0, 1, 0, 1,
        ]);
        // A, AAAA, PTR, CNAME, SRV, TXT (with an empty string), then an OPT-like other type.
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9]);
        m.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        m.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        m.extend_from_slice(&[0xc0, 20, 0, 12, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 20]);
        m.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60, 0, 8, 0, 1, 0, 2, 0, 80, 0xc0, 12]);
        m.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 9, 3, b'a', b'=', b'1', 0, 3, b'b', b'=', b'2']);
        m.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 2, 0xab, 0xcd]);
        assert!(parse(&m).is_ok(), "{:?}", parse(&m));
        let same = |msg: &[u8]| {
            let (p, v) = (parse(msg).map(|_| ()), validate(msg));
            assert_eq!(p, v, "message {msg:02x?}");
        };
        for len in 0..=m.len() {
            same(&m[..len]);
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..20_000 {
            let mut msg = m.clone();
            for _ in 0..1 + (x % 3) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % msg.len();
                msg[i] = (x >> 8) as u8;
            }
            same(&msg);
        }
    }

    #[test]
    fn pointer_loop_is_an_error_not_a_hang() {
        // Header with one question whose name is a pointer to itself.
        let mut m = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let e = parse(&m).unwrap_err();
        assert_eq!(e.kind, "pointer_loop");
    }

    #[test]
    fn compressed_names_decode() {
        let mut m = vec![0, 1, 0x84, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        // answer 1: printer.local A 10.0.0.9
        m.extend_from_slice(&[7]);
        m.extend_from_slice(b"printer");
        m.extend_from_slice(&[5]);
        m.extend_from_slice(b"local");
        m.extend_from_slice(&[0, 0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4, 10, 0, 0, 9]);
        // answer 2: _ipp._tcp.local PTR → "x" + pointer to printer.local... uses pointer to "local" (offset 20)
        m.extend_from_slice(&[4]);
        m.extend_from_slice(b"_ipp");
        m.extend_from_slice(&[4]);
        m.extend_from_slice(b"_tcp");
        m.extend_from_slice(&[0xc0, 20, 0, 12, 0, 1, 0, 0, 0, 120, 0, 2, 0xc0, 12]);
        let rec = parse(&m).unwrap();
        assert_eq!(rec.records[0].name, "printer.local");
        assert_eq!(rec.records[1].name, "_ipp._tcp.local");
        assert_eq!(rec.records[1].rdata, RData::Ptr("printer.local".into()));
        let mut out = Vec::new();
        findings(&rec, Proto::Mdns, &mut out);
        assert!(out.contains(&Finding::src(Field::MdnsService, "_ipp._tcp.local")));
        assert!(out.contains(&Finding::src(Field::MdnsName, "printer.local")));
    }
}
