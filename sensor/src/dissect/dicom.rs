//! DICOM upper layer (PS3.8 §9.3): association negotiation, release, abort and P-DATA volume.
//!
//! What identifies a device here is the association: AE titles (set per site), the
//! application context, the SOP classes it offers, and above all the implementation class
//! UID and version name of its DICOM stack. P-DATA carries images and patient data, so it is
//! only counted (PDVs and bytes); nothing of its content is kept.
//!
//! Also here: DICOM over TLS (port 2762, PS3.15 Annex B) recognised by port plus a TLS record
//! header, since its content is encrypted.

use super::*;
use crate::protocols::{DICOM, DICOM_TLS};

/// PDU header: type (1), reserved (1), length (4, big endian, excludes the header).
const PDU_HEADER_LEN: usize = 6;
/// Fixed part of A-ASSOCIATE-RQ/AC after the PDU header: version, reserved, two AE titles,
/// 32 reserved bytes.
const ASSOC_FIXED_LEN: usize = 68;
/// UIDs are at most 64 characters (PS3.5 §9.1); a little slack for padding and broken peers.
const MAX_UID_LEN: usize = 128;
/// Bound on the abstract/transfer syntaxes kept per association (a real SCU offers < 128).
const MAX_SYNTAXES: usize = 256;
/// Bound on the PDUs examined in one payload so a payload of tiny PDUs costs little.
const MAX_PDUS_PER_PAYLOAD: usize = 256;

/// One DICOM upper-layer PDU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DicomPdu {
    AssociateRq(Association),
    AssociateAc(Association),
    AssociateRj {
        result: u8,
        source: u8,
        reason: u8,
    },
    /// P-DATA-TF: only the volume. `truncated` is set when the PDU ran past the payload
    /// (PDVs counted up to there; `pdv_bytes` sums the declared PDV lengths).
    PData {
        pdv_count: u32,
        pdv_bytes: u64,
        truncated: bool,
    },
    ReleaseRq,
    ReleaseRp,
    Abort {
        source: u8,
        reason: u8,
    },
}

/// The negotiable parts of an A-ASSOCIATE-RQ or -AC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Association {
    pub protocol_version: u16,
    /// AE titles with the space padding removed (PS3.8: leading/trailing spaces are not significant).
    pub called_ae: String,
    pub calling_ae: String,
    pub app_context: Option<String>,
    /// Abstract syntaxes (SOP class UIDs) offered, in order, without duplicates (RQ only).
    pub abstract_syntaxes: Vec<String>,
    /// Transfer syntaxes proposed (RQ) or accepted (AC), without duplicates.
    pub transfer_syntaxes: Vec<String>,
    /// (presentation context id, result) pairs from an AC; result 0 = acceptance.
    pub context_results: Vec<(u8, u8)>,
    pub max_pdu_len: Option<u32>,
    pub impl_class_uid: Option<String>,
    pub impl_version: Option<String>,
}

/// Every PDU found in one payload (a reassembled TCP message may hold several).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DicomRecord {
    pub pdus: Vec<DicomPdu>,
}

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(Proto::Dicom, kind, detail)
}

/// Total length (header included) of the PDU starting at `prefix`, so a TCP reassembler
/// knows when a message is complete. `None` while fewer than 6 bytes are available or when
/// the first byte is not a PDU type (1..=7): the stream is then not at a PDU boundary.
pub fn pdu_len(prefix: &[u8]) -> Option<usize> {
    if prefix.len() < PDU_HEADER_LEN || !(1..=7).contains(&prefix[0]) {
        return None;
    }
    let body = u32::from_be_bytes([prefix[2], prefix[3], prefix[4], prefix[5]]) as usize;
    Some(PDU_HEADER_LEN + body)
}

/// Cheap shape test: a PDU type, a zero reserved byte, and a body length that fits the PDU
/// type (fixed-size PDUs must have their exact length; associations need their fixed part).
pub fn looks_like_pdu(payload: &[u8]) -> bool {
    let Some(total) = pdu_len(payload) else {
        return false;
    };
    if payload[1] != 0 {
        return false;
    }
    let body = total - PDU_HEADER_LEN;
    match payload[0] {
        1 | 2 => {
            body >= ASSOC_FIXED_LEN && payload.len() >= 8 && u16::from_be_bytes([payload[6], payload[7]]) & 0x0001 == 1
        }
        3 | 5 | 6 | 7 => body == 4,
        4 => body >= 6,
        _ => false,
    }
}

/// Parse every PDU in `payload`. The first PDU must be complete unless it is a P-DATA-TF
/// (whose volume is counted as far as it goes); a trailing partial PDU after complete ones
/// is ignored, since the reassembler delivers it again once complete.
pub fn parse(payload: &[u8]) -> Result<DicomRecord, DissectError> {
    if payload.len() < PDU_HEADER_LEN {
        return Err(DissectError::truncated(
            Proto::Dicom,
            format!("{} bytes, a PDU header needs 6; wait for more of the stream", payload.len()),
        ));
    }
    let mut rec = DicomRecord::default();
    let mut rest = payload;
    while rest.len() >= PDU_HEADER_LEN && rec.pdus.len() < MAX_PDUS_PER_PAYLOAD {
        let first = rec.pdus.is_empty();
        match parse_pdu(rest) {
            Ok((pdu, used)) => {
                rec.pdus.push(pdu);
                rest = &rest[used.min(rest.len())..];
            }
            Err(e) if first => return Err(e),
            Err(_) => break,
        }
    }
    Ok(rec)
}

/// Parse one PDU at the start of `buf`; returns it and the bytes it used.
pub fn parse_pdu(buf: &[u8]) -> Result<(DicomPdu, usize), DissectError> {
    let total = pdu_len(buf).ok_or_else(|| {
        err(
            "bad_pdu_type",
            format!("first byte {:#04x} is not a DICOM PDU type (1..=7)", buf.first().copied().unwrap_or(0)),
        )
    })?;
    let pdu_type = buf[0];
    if pdu_type == 4 {
        return Ok(parse_pdata(buf, total));
    }
    if buf.len() < total {
        return Err(DissectError::truncated(
            Proto::Dicom,
            format!("PDU type {pdu_type:#04x} declares {total} bytes, payload has {}", buf.len()),
        ));
    }
    let body = &buf[PDU_HEADER_LEN..total];
    let pdu = match pdu_type {
        1 | 2 => {
            let assoc = parse_association(body, pdu_type == 1)?;
            if pdu_type == 1 {
                DicomPdu::AssociateRq(assoc)
            } else {
                DicomPdu::AssociateAc(assoc)
            }
        }
        3 => {
            let b = fixed4(body, "A-ASSOCIATE-RJ")?;
            DicomPdu::AssociateRj { result: b[1], source: b[2], reason: b[3] }
        }
        5 => {
            fixed4(body, "A-RELEASE-RQ")?;
            DicomPdu::ReleaseRq
        }
        6 => {
            fixed4(body, "A-RELEASE-RP")?;
            DicomPdu::ReleaseRp
        }
        _ => {
            let b = fixed4(body, "A-ABORT")?;
            DicomPdu::Abort { source: b[2], reason: b[3] }
        }
    };
    Ok((pdu, total))
}

fn fixed4<'a>(body: &'a [u8], what: &str) -> Result<&'a [u8], DissectError> {
    if body.len() != 4 {
        return Err(err("bad_length", format!("{what} body must be 4 bytes, header says {}", body.len())));
    }
    Ok(body)
}

/// P-DATA-TF: walk the PDV items (length u32, context id, control header, data) and count.
fn parse_pdata(buf: &[u8], total: usize) -> (DicomPdu, usize) {
    let end = total.min(buf.len());
    let truncated = buf.len() < total;
    let mut pos = PDU_HEADER_LEN;
    let mut pdv_count = 0u32;
    let mut pdv_bytes = 0u64;
    while pos + 4 <= end {
        let item_len = u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as u64;
        pdv_count = pdv_count.saturating_add(1);
        // The item length covers the context id and control header; the data is the rest.
        pdv_bytes = pdv_bytes.saturating_add(item_len.saturating_sub(2));
        pos = pos.saturating_add(4).saturating_add(item_len as usize);
    }
    (DicomPdu::PData { pdv_count, pdv_bytes, truncated }, total)
}

fn ae_title(raw: &[u8]) -> String {
    // ISO 646 with space padding; anything else is shown escaped rather than trusted.
    let text: String = raw.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '\u{FFFD}' }).collect();
    text.trim_matches(|c| c == ' ' || c == '\u{FFFD}').to_string()
}

/// UIDs are NUL padded to even length; keep at most MAX_UID_LEN printable characters.
fn uid(raw: &[u8]) -> String {
    raw.iter()
        .take(MAX_UID_LEN)
        .map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '\u{FFFD}' })
        .collect::<String>()
        .trim_matches(|c: char| c == ' ' || c == '\u{FFFD}')
        .to_string()
}

/// Iterate (item type, item body) over a run of items with a 1-byte type, 1 reserved byte
/// and a 2-byte length. Stops with an error at an item that overruns its container.
fn items<'a>(
    mut buf: &'a [u8],
    container: &'static str,
) -> impl Iterator<Item = Result<(u8, &'a [u8]), DissectError>> + 'a {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < 4 {
            let e = err(
                "bad_item",
                format!("{} trailing bytes in {container} are too short for an item header", buf.len()),
            );
            buf = &[];
            return Some(Err(e));
        }
        let kind = buf[0];
        let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
        if buf.len() < 4 + len {
            let e = err(
                "bad_item",
                format!("item {kind:#04x} in {container} declares {len} bytes, {} remain", buf.len() - 4),
            );
            buf = &[];
            return Some(Err(e));
        }
        let body = &buf[4..4 + len];
        buf = &buf[4 + len..];
        Some(Ok((kind, body)))
    })
}

fn push_unique(list: &mut Vec<String>, value: String) {
    if !value.is_empty() && list.len() < MAX_SYNTAXES && !list.contains(&value) {
        list.push(value);
    }
}

fn parse_association(body: &[u8], is_request: bool) -> Result<Association, DissectError> {
    if body.len() < ASSOC_FIXED_LEN {
        return Err(DissectError::truncated(
            Proto::Dicom,
            format!("association body is {} bytes, the fixed part needs {ASSOC_FIXED_LEN}", body.len()),
        ));
    }
    let mut a = Association {
        protocol_version: u16::from_be_bytes([body[0], body[1]]),
        called_ae: ae_title(&body[4..20]),
        calling_ae: ae_title(&body[20..36]),
        ..Default::default()
    };
    for item in items(&body[ASSOC_FIXED_LEN..], "association") {
        let (kind, item) = item?;
        match kind {
            0x10 => a.app_context = Some(uid(item)),
            // Presentation context: id (1), reserved (1), result/reason (1, AC only), reserved (1).
            0x20 | 0x21 => {
                if item.len() < 4 {
                    return Err(err("bad_item", format!("presentation context item of {} bytes, needs 4", item.len())));
                }
                if kind == 0x21 && !is_request && a.context_results.len() < MAX_SYNTAXES {
                    a.context_results.push((item[0], item[2]));
                }
                for sub in items(&item[4..], "presentation context") {
                    let (sub_kind, sub) = sub?;
                    match sub_kind {
                        0x30 => push_unique(&mut a.abstract_syntaxes, uid(sub)),
                        0x40 => push_unique(&mut a.transfer_syntaxes, uid(sub)),
                        _ => {}
                    }
                }
            }
            0x50 => {
                for sub in items(item, "user information") {
                    let (sub_kind, sub) = sub?;
                    match sub_kind {
                        0x51 if sub.len() == 4 => {
                            a.max_pdu_len = Some(u32::from_be_bytes([sub[0], sub[1], sub[2], sub[3]]))
                        }
                        0x52 => a.impl_class_uid = Some(uid(sub)),
                        0x55 => a.impl_version = Some(ae_title(sub)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

/// What the PDUs say about each end. A-ASSOCIATE-RQ: the requestor (Src) is the calling AE
/// and runs the offered stack; the Dst is the called AE. A-ASSOCIATE-AC: the acceptor (Src)
/// answers as the called AE with its own implementation UID/version.
pub fn findings(rec: &DicomRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    for pdu in &rec.pdus {
        match pdu {
            DicomPdu::AssociateRq(a) => {
                push_nonempty(out, Side::Src, Field::DicomCallingAe, &a.calling_ae);
                push_nonempty(out, Side::Dst, Field::DicomCalledAe, &a.called_ae);
                if let Some(ctx) = &a.app_context {
                    push_nonempty(out, Side::Src, Field::DicomAppContext, ctx);
                }
                for s in &a.abstract_syntaxes {
                    out.push(Finding::src(Field::DicomAbstractSyntax, s.clone()));
                }
                stack(out, a);
            }
            DicomPdu::AssociateAc(a) => {
                push_nonempty(out, Side::Src, Field::DicomCalledAe, &a.called_ae);
                push_nonempty(out, Side::Dst, Field::DicomCallingAe, &a.calling_ae);
                if let Some(ctx) = &a.app_context {
                    push_nonempty(out, Side::Src, Field::DicomAppContext, ctx);
                }
                stack(out, a);
            }
            _ => {}
        }
    }
}

fn stack(out: &mut Vec<Finding>, a: &Association) {
    if let Some(u) = &a.impl_class_uid {
        push_nonempty(out, Side::Src, Field::DicomImplClassUid, u);
    }
    if let Some(v) = &a.impl_version {
        push_nonempty(out, Side::Src, Field::DicomImplVersion, v);
    }
}

fn push_nonempty(out: &mut Vec<Finding>, side: Side, field: Field, value: &str) {
    if !value.is_empty() {
        out.push(Finding { side, field, value: value.to_string() });
    }
}

/// DICOM upper layer over plain TCP: a well-formed PDU on a DICOM port, or an
/// A-ASSOCIATE-RQ/AC shape on any port (PACS often listen on site-chosen ports).
pub struct DicomDissector;

impl Dissector for DicomDissector {
    fn proto(&self) -> Proto {
        Proto::Dicom
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        if ctx.transport != Transport::Tcp || !looks_like_pdu(payload) {
            return false;
        }
        DICOM.claims(ctx) || matches!(payload[0], 1 | 2)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload)?;
        findings(&rec, ctx, out);
        Ok(())
    }
}

/// A TLS record header: content type 20..=23 (change cipher spec, alert, handshake,
/// application data), major version 3, minor 0..=4.
pub fn is_tls_record(payload: &[u8]) -> bool {
    payload.len() >= 5 && (20..=23).contains(&payload[0]) && payload[1] == 3 && payload[2] <= 4
}

/// DICOM over TLS: only port 2762 plus a TLS record header; the content is encrypted.
pub struct DicomTlsDissector;

impl Dissector for DicomTlsDissector {
    fn proto(&self) -> Proto {
        Proto::Dicom
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && DICOM_TLS.claims(ctx) && is_tls_record(payload)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        if !is_tls_record(payload) {
            return Err(err("not_tls", "payload on the DICOM TLS port does not start with a TLS record header"));
        }
        // The end on 2762 is the DICOM TLS service; the other end is its client.
        let Some(port) = DICOM_TLS.port_used(ctx) else {
            return Err(err("off_port", "payload is on no DICOM TLS port"));
        };
        let side = if ctx.src_port == port { Side::Src } else { Side::Dst };
        out.push(Finding { side, field: Field::DicomTls, value: format!("tcp/{port}") });
        // This dissector runs before the generic TLS one, so collect the ClientHello/ServerHello
        // identity (SNI, JA3, JA4, certificate) too; a non-handshake record simply adds nothing.
        let _ = super::tls::TlsDissector.dissect(ctx, payload, out);
        Ok(())
    }
}
