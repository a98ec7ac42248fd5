//! NetBIOS name service (NBNS, UDP 137).
//!
//! Names travel in "first-level encoding": 16 bytes (15 name characters padded with
//! spaces plus one suffix byte) each split into two nibbles offset from 'A', giving a
//! 32-character label. The suffix says what the name is for (<00> workstation, <20> file
//! server, <1c> domain controllers...). We show names as `NAME<xx>` like Wireshark.
//!
//! Findings (all about Src): names the sender registers, refreshes or releases, names it
//! answers positive queries for, and every name in a node-status answer. Plain queries
//! say nothing about the querier's own name, so they produce no finding.

use super::dns::read_labels;
use super::text::be16;
use super::*;
use crate::protocols::NETBIOS_NAME;

const PROTO: Proto = Proto::Netbios;
const MAX_RECORDS: usize = 512;

pub const OP_QUERY: u8 = 0;
pub const OP_REGISTRATION: u8 = 5;
pub const OP_RELEASE: u8 = 6;
pub const OP_REFRESH: u8 = 8;
pub const OP_REFRESH_ALT: u8 = 9;
pub const OP_MULTIHOMED_REGISTRATION: u8 = 15;
const TYPE_NB: u16 = 0x20;
const TYPE_NBSTAT: u16 = 0x21;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbName {
    /// Name without padding, e.g. "XSTREAM_HY".
    pub name: String,
    pub suffix: u8,
    /// NetBIOS scope (the labels after the encoded name), usually empty.
    pub scope: String,
}

impl NbName {
    /// `NAME<xx>` as Wireshark shows it.
    pub fn display(&self) -> String {
        format!("{}<{:02x}>", self.name, self.suffix)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbnsRecord {
    pub transaction_id: u16,
    pub is_response: bool,
    pub opcode: u8,
    pub rcode: u8,
    pub questions: Vec<NbName>,
    /// Owner names of answer/authority/additional records.
    pub record_names: Vec<(NbName, u16)>,
    /// Names listed in node-status (NBSTAT) answers.
    pub node_status_names: Vec<NbName>,
}

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(PROTO, kind, detail)
}

/// Decode a first-level encoded label (32 bytes 'A'..'P') into name and suffix.
pub fn decode_first_level(label: &[u8]) -> Result<(String, u8), DissectError> {
    if label.len() != 32 {
        return Err(err("bad_name", format!("encoded name is {} bytes, expected 32", label.len())));
    }
    let mut raw = [0u8; 16];
    for (i, pair) in label.chunks_exact(2).enumerate() {
        let hi = pair[0].wrapping_sub(b'A');
        let lo = pair[1].wrapping_sub(b'A');
        if hi > 15 || lo > 15 {
            return Err(err("bad_name", format!("byte {:?} outside the 'A'..'P' encoding alphabet", pair)));
        }
        raw[i] = (hi << 4) | lo;
    }
    Ok((name_text(&raw[..15]), raw[15]))
}

fn name_text(raw: &[u8]) -> String {
    let trimmed = match raw.iter().rposition(|&b| b != b' ') {
        Some(p) => &raw[..=p],
        None => &raw[..0],
    };
    trimmed
        .iter()
        .map(|&b| if (0x20..0x7f).contains(&b) { (b as char).to_string() } else { format!("<{b:02x}>") })
        .collect()
}

fn read_nb_name(msg: &[u8], off: usize) -> Result<(NbName, usize), DissectError> {
    let (labels, next) = read_labels(msg, off).map_err(|e| DissectError::new(PROTO, e.kind, e.detail))?;
    let first = labels.first().ok_or_else(|| err("bad_name", format!("empty name at offset {off}")))?;
    let (name, suffix) = decode_first_level(first)?;
    let scope = labels[1..].iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join(".");
    Ok((NbName { name, suffix, scope }, next))
}

pub fn parse(payload: &[u8]) -> Result<NbnsRecord, DissectError> {
    if payload.len() < 12 {
        return Err(DissectError::truncated(PROTO, format!("header needs 12 bytes, got {}", payload.len())));
    }
    let flags = be16(payload, 2).unwrap_or(0);
    let counts = [4usize, 6, 8, 10].map(|o| be16(payload, o).unwrap_or(0) as usize);
    if counts.iter().any(|&c| c > MAX_RECORDS) {
        return Err(err("bad_count", format!("record counts {counts:?} are absurd for one datagram")));
    }
    let mut rec = NbnsRecord {
        transaction_id: be16(payload, 0).unwrap_or(0),
        is_response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        rcode: (flags & 0x0f) as u8,
        questions: Vec::new(),
        record_names: Vec::new(),
        node_status_names: Vec::new(),
    };
    let mut pos = 12;
    for _ in 0..counts[0] {
        let (name, next) = read_nb_name(payload, pos)?;
        rec.questions.push(name);
        pos = next + 4;
        if pos > payload.len() {
            return Err(DissectError::truncated(PROTO, "question type/class cut short"));
        }
    }
    for _ in 0..counts[1] + counts[2] + counts[3] {
        let (name, p) = read_nb_name(payload, pos)?;
        let rtype =
            be16(payload, p).ok_or_else(|| DissectError::truncated(PROTO, format!("record type at offset {p}")))?;
        let rdlen = be16(payload, p + 8)
            .ok_or_else(|| DissectError::truncated(PROTO, format!("record length at offset {}", p + 8)))?
            as usize;
        let rd = payload
            .get(p + 10..p + 10 + rdlen)
            .ok_or_else(|| DissectError::truncated(PROTO, format!("rdata of {rdlen} bytes at offset {}", p + 10)))?;
        if rtype == TYPE_NBSTAT && rec.is_response {
            // NODE_NAME_ARRAY: count, then 18 bytes per name (15 name, suffix, 2 flags).
            let n = *rd.first().unwrap_or(&0) as usize;
            for entry in rd.get(1..).unwrap_or(&[]).chunks_exact(18).take(n) {
                rec.node_status_names.push(NbName {
                    name: name_text(&entry[..15]),
                    suffix: entry[15],
                    scope: String::new(),
                });
            }
        }
        rec.record_names.push((name, rtype));
        pos = p + 10 + rdlen;
    }
    Ok(rec)
}

pub fn findings(rec: &NbnsRecord, out: &mut Vec<Finding>) {
    let mut names: Vec<String> = Vec::new();
    let registering =
        matches!(rec.opcode, OP_REGISTRATION | OP_RELEASE | OP_REFRESH | OP_REFRESH_ALT | OP_MULTIHOMED_REGISTRATION);
    if !rec.is_response && registering {
        // Registration requests carry the name twice (question and additional record).
        names.extend(rec.questions.iter().map(NbName::display));
        names.extend(rec.record_names.iter().map(|(n, _)| n.display()));
    }
    if rec.is_response && rec.opcode == OP_QUERY && rec.rcode == 0 {
        names.extend(rec.record_names.iter().filter(|(_, t)| *t == TYPE_NB).map(|(n, _)| n.display()));
        names.extend(rec.node_status_names.iter().map(NbName::display));
    }
    names.sort();
    names.dedup();
    out.extend(names.into_iter().filter(|n| !n.starts_with('*')).map(|n| Finding::src(Field::NetbiosName, n)));
}

pub struct NetbiosDissector;

impl Dissector for NetbiosDissector {
    fn proto(&self) -> Proto {
        Proto::Netbios
    }
    fn wants(&self, ctx: &PacketCtx, _payload: &[u8]) -> bool {
        ctx.transport == Transport::Udp && NETBIOS_NAME.claims(ctx)
    }
    fn dissect(&self, _ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        findings(&parse(payload)?, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_level_roundtrip() {
        // "FRED" padded, suffix 0x20: F=0x46 → "EG", R=0x52 → "FC", ...
        let mut raw = *b"FRED           \x20";
        raw[15] = 0x20;
        let enc: Vec<u8> = raw.iter().flat_map(|b| [b'A' + (b >> 4), b'A' + (b & 0x0f)]).collect();
        assert_eq!(decode_first_level(&enc).unwrap(), ("FRED".to_string(), 0x20));
        assert!(decode_first_level(b"ZZ").is_err());
    }
}
