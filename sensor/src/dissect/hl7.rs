//! HL7 v2 over MLLP (0x0B message 0x1C 0x0D), and unframed `MSH|` payloads as some
//! devices and test tools send them.
//!
//! Kept: the MSH routing header (MSH-3..6 component 1, MSH-9 type^trigger and the whole
//! MSH-9 code^trigger^structure, MSH-12 version), the universal ids of the sending and
//! receiving applications (MSH-3/MSH-5 components 2^3), device identifiers (OBX-18 equipment instance, PRT-10 participation device, PRT-16 UDI,
//! and an EUI-64 in MSH-3), and the COUNT of PHI-bearing segments. No other segment content
//! is ever copied out of the payload: patient segments are recognised by their 3-letter
//! name only.

use super::*;

/// MLLP framing bytes (HL7 v2 Implementation Guide, Appendix C).
const MLLP_START: u8 = 0x0B;
const MLLP_END: [u8; 2] = [0x1C, 0x0D];
/// Bounds: messages per payload, segments per message, device ids per message, field length kept.
const MAX_MESSAGES: usize = 64;
const MAX_SEGMENTS: usize = 10_000;
const MAX_DEVICE_IDS: usize = 64;
const MAX_VALUE_LEN: usize = 256;

/// Segments that carry patient, visit, guarantor or insurance data (HL7 v2.x chapters 3 and 6).
/// Only their count leaves the dissector.
pub const PHI_SEGMENTS: [&str; 13] =
    ["PID", "PD1", "NK1", "PV1", "PV2", "GT1", "IN1", "IN2", "IN3", "MRG", "DG1", "AL1", "ACC"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Mllp,
    Unframed,
}

/// MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub field: u8,
    pub component: u8,
    pub repetition: u8,
    pub escape: u8,
    pub subcomponent: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hl7Message {
    pub framing: Framing,
    pub encoding: Encoding,
    /// Component 1 (namespace id) of the HD fields MSH-3..6.
    pub sending_app: Option<String>,
    pub sending_facility: Option<String>,
    pub receiving_app: Option<String>,
    pub receiving_facility: Option<String>,
    /// MSH-3 universal id and its type (components 2 and 3) joined with `^`
    /// ("0009FBFFFE6A1C00^EUI-64"); just the id when the type is empty.
    pub sending_app_universal_id: Option<String>,
    /// MSH-5 components 2 and 3, as `sending_app_universal_id`.
    pub receiving_app_universal_id: Option<String>,
    /// MSH-9 message code and trigger event joined with `^` ("ORU^R01"; "ACK" when no trigger).
    pub message_type: Option<String>,
    /// The whole MSH-9: code ^ trigger ^ message structure ("ACK^A04^ACK"), trailing empty
    /// components dropped, inner empty ones kept ("ACK^^ACK").
    pub message_type_full: Option<String>,
    /// MSH-12 version id (component 1).
    pub version: Option<String>,
    /// Device identifiers, each a full field repetition with components joined by `^`.
    pub device_ids: Vec<String>,
    pub segment_count: u32,
    pub phi_segments: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hl7Record {
    pub messages: Vec<Hl7Message>,
}

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(Proto::Hl7, kind, detail)
}

/// Does the payload start like an HL7 v2 message (MLLP-framed or bare)?
pub fn looks_like_hl7(payload: &[u8]) -> bool {
    let body = payload.strip_prefix(&[MLLP_START]).unwrap_or(payload);
    // Some senders put a newline between messages; tolerate leading CR/LF.
    let body = trim_leading_newlines(body);
    body.len() >= 8 && body.starts_with(b"MSH") && is_separator(body[3])
}

fn trim_leading_newlines(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
    &b[n..]
}

fn is_separator(b: u8) -> bool {
    b.is_ascii_punctuation()
}

/// Parse every HL7 message in the payload.
pub fn parse(payload: &[u8]) -> Result<Hl7Record, DissectError> {
    let mut rec = Hl7Record::default();
    let mut rest = payload;
    while !rest.is_empty() && rec.messages.len() < MAX_MESSAGES {
        rest = trim_leading_newlines(rest);
        if rest.is_empty() {
            break;
        }
        let (framing, body, next) = if rest[0] == MLLP_START {
            let inner = &rest[1..];
            // A message without its end marker (last TCP segment not yet seen) is parsed as far as it goes.
            match inner.windows(2).position(|w| w == MLLP_END) {
                Some(end) => (Framing::Mllp, &inner[..end], &inner[end + 2..]),
                None => {
                    let end = inner.iter().position(|&b| b == MLLP_END[0]).unwrap_or(inner.len());
                    (Framing::Mllp, &inner[..end], &inner[inner.len()..])
                }
            }
        } else {
            // Unframed: one message per payload up to an MLLP end byte if any.
            let end = rest.iter().position(|&b| b == MLLP_END[0]).unwrap_or(rest.len());
            (Framing::Unframed, &rest[..end], &rest[rest.len()..])
        };
        match parse_message(body, framing) {
            Ok(m) => rec.messages.push(m),
            Err(e) if rec.messages.is_empty() => return Err(e),
            Err(_) => break,
        }
        rest = next;
    }
    if rec.messages.is_empty() {
        return Err(err("no_message", "payload holds no MSH segment"));
    }
    Ok(rec)
}

/// Split `body` into segments on CR, LF or CRLF.
fn segments(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\r' || b == b'\n').filter(|s| !s.is_empty())
}

fn text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(&raw[..raw.len().min(MAX_VALUE_LEN)]);
    s.trim().to_string()
}

fn parse_message(body: &[u8], framing: Framing) -> Result<Hl7Message, DissectError> {
    if body.len() < 8 || !body.starts_with(b"MSH") {
        return Err(err("no_msh", format!("message does not start with MSH ({} bytes)", body.len())));
    }
    let field = body[3];
    if !is_separator(field) {
        return Err(err("bad_encoding", format!("MSH-1 field separator {field:#04x} is not punctuation")));
    }
    let mut segs = segments(body);
    let msh = segs.next().unwrap_or(&[]);
    let msh_fields: Vec<&[u8]> = msh.split(|&b| b == field).take(32).collect();
    // msh_fields[0] = "MSH", [1] = MSH-2 (encoding characters), [n] = MSH-(n+1).
    let enc = msh_fields.get(1).copied().unwrap_or(&[]);
    let pick = |i: usize, d: u8| enc.get(i).copied().filter(|&c| c != field).unwrap_or(d);
    let encoding = Encoding {
        field,
        component: pick(0, b'^'),
        repetition: pick(1, b'~'),
        escape: pick(2, b'\\'),
        subcomponent: pick(3, b'&'),
    };
    let msh_n = |n: usize| msh_fields.get(n - 1).copied().unwrap_or(&[]);
    let component = |raw: &[u8], i: usize| -> Option<String> {
        let first_rep = raw.split(|&b| b == encoding.repetition).next().unwrap_or(&[]);
        let c = first_rep.split(|&b| b == encoding.component).nth(i).unwrap_or(&[]);
        let c = c.split(|&b| b == encoding.subcomponent).next().unwrap_or(&[]);
        Some(text(c)).filter(|s| !s.is_empty())
    };
    let message_type = component(msh_n(9), 0).map(|code| match component(msh_n(9), 1) {
        Some(trigger) => format!("{code}^{trigger}"),
        None => code,
    });
    // Components are re-joined with `^` whatever the message's own separator, so values
    // compare across senders.
    let joined = |raw: &[u8], parts: &[usize]| -> Option<String> {
        let comps: Vec<String> = parts.iter().map(|&i| component(raw, i).unwrap_or_default()).collect();
        let used = comps.iter().rposition(|c| !c.is_empty())? + 1;
        Some(comps[..used].join("^"))
    };
    // A universal id type without the id names nothing.
    let universal_id = |raw: &[u8]| component(raw, 1).and_then(|_| joined(raw, &[1, 2]));
    let mut msg = Hl7Message {
        framing,
        encoding,
        sending_app: component(msh_n(3), 0),
        sending_facility: component(msh_n(4), 0),
        receiving_app: component(msh_n(5), 0),
        receiving_facility: component(msh_n(6), 0),
        sending_app_universal_id: universal_id(msh_n(3)),
        receiving_app_universal_id: universal_id(msh_n(5)),
        message_type_full: component(msh_n(9), 0).and_then(|_| joined(msh_n(9), &[0, 1, 2])),
        message_type,
        version: component(msh_n(12), 0),
        device_ids: Vec::new(),
        segment_count: 1,
        phi_segments: 0,
    };
    // IHE PCD: an EUI-64 in MSH-3 component 2 with universal id type "EUI-64" names the sender.
    if component(msh_n(3), 2).as_deref() == Some("EUI-64") {
        if let Some(id) = component(msh_n(3), 1) {
            push_device(&mut msg.device_ids, id);
        }
    }
    for seg in segs.take(MAX_SEGMENTS) {
        msg.segment_count += 1;
        let name = &seg[..seg.len().min(3)];
        if PHI_SEGMENTS.iter().any(|p| p.as_bytes() == name) {
            msg.phi_segments += 1;
            continue; // never look inside
        }
        let wanted: &[usize] = match name {
            b"OBX" => &[18],
            b"PRT" => &[10, 16],
            _ => continue,
        };
        // fields[0] is the segment name, fields[n] is SEG-n.
        for (n, raw) in seg.split(|&b| b == field).enumerate().take(32) {
            if !wanted.contains(&n) || raw.is_empty() {
                continue;
            }
            for rep in raw.split(|&b| b == encoding.repetition) {
                let joined: Vec<u8> = rep.iter().map(|&b| if b == encoding.component { b'^' } else { b }).collect();
                let id = text(&joined);
                if !id.trim_matches('^').is_empty() {
                    push_device(&mut msg.device_ids, id);
                }
            }
        }
    }
    Ok(msg)
}

fn push_device(list: &mut Vec<String>, id: String) {
    if list.len() < MAX_DEVICE_IDS && !list.contains(&id) {
        list.push(id);
    }
}

/// The OUI (first 24 bits) of an EUI-64 written as 16 hex digits, as "00:09:FB".
/// Accepts a device id field ("0009FBFFFE6A1C01^MX450_BED12^...") by looking at component 1.
pub fn eui64_oui(device_id: &str) -> Option<String> {
    let first = device_id.split('^').next()?;
    if first.len() != 16 || !first.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let up = first.to_ascii_uppercase();
    Some(format!("{}:{}:{}", &up[0..2], &up[2..4], &up[4..6]))
}

/// The MAC an EUI-64 equipment id was derived from (OUI, then `FFFE`, then the NIC's three
/// bytes, as IEEE 11073 / IHE PCD devices form theirs from their Ethernet address). Accepts
/// a device id field by looking at component 1; `None` for any other id.
pub fn eui64_mac(device_id: &str) -> Option<MacAddr> {
    let first = device_id.split('^').next()?;
    if first.len() != 16 || !first.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 8];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&first[2 * i..2 * i + 2], 16).ok()?;
    }
    if bytes[3..5] != [0xff, 0xfe] {
        return None;
    }
    let mac = MacAddr([bytes[0], bytes[1], bytes[2], bytes[5], bytes[6], bytes[7]]);
    mac.is_device().then_some(mac)
}

/// The sender (Src) is the sending application/facility (and its universal id) and the
/// source of the PHI-bearing segments; the receiver (Dst) is the receiving application/
/// facility (and its universal id).
///
/// Equipment ids (decision 0013) go to the device they name, not blindly to the sender: a
/// central station or gateway forwards many devices' observations, and OBX-18 / PRT name
/// the device that measured. So an id equal to MSH-3's universal id (the sender naming
/// itself) is the sender's; an EUI-64 derived from a MAC is the device with that MAC
/// (the sender when it is the frame's source); any other id is reported on the sender
/// only as one it relays (`Hl7RelayedDeviceId`), never as its own identity.
pub fn findings(rec: &Hl7Record, ctx: &PacketCtx, out: &mut Vec<Finding>) {
    for m in &rec.messages {
        let mut put = |side, field, v: &Option<String>| {
            if let Some(v) = v {
                out.push(Finding { side, field, value: v.clone() });
            }
        };
        put(Side::Src, Field::Hl7SendingApp, &m.sending_app);
        put(Side::Src, Field::Hl7SendingFacility, &m.sending_facility);
        put(Side::Dst, Field::Hl7ReceivingApp, &m.receiving_app);
        put(Side::Dst, Field::Hl7ReceivingFacility, &m.receiving_facility);
        put(Side::Src, Field::Hl7MessageType, &m.message_type);
        put(Side::Src, Field::Hl7Version, &m.version);
        put(Side::Src, Field::Hl7SendingAppUniversalId, &m.sending_app_universal_id);
        put(Side::Dst, Field::Hl7ReceivingAppUniversalId, &m.receiving_app_universal_id);
        put(Side::Src, Field::Hl7MessageTypeFull, &m.message_type_full);
        let own = m.sending_app_universal_id.as_deref().and_then(|u| u.split('^').next());
        for id in &m.device_ids {
            let first = id.split('^').next();
            let finding = if first == own {
                Finding::src(Field::Hl7DeviceId, id.clone())
            } else {
                match eui64_mac(id) {
                    Some(mac) if mac == ctx.src_mac => Finding::src(Field::Hl7DeviceId, id.clone()),
                    Some(mac) => Finding::about(mac, Field::Hl7DeviceId, id.clone()),
                    None => Finding::src(Field::Hl7RelayedDeviceId, id.clone()),
                }
            };
            out.push(finding);
        }
        if m.phi_segments > 0 {
            out.push(Finding::src(Field::Hl7PhiSegments, m.phi_segments.to_string()));
        }
    }
}

/// HL7 v2: recognised by payload shape (MLLP start byte or `MSH` plus a separator) on any port.
pub struct Hl7Dissector;

impl Dissector for Hl7Dissector {
    fn proto(&self) -> Proto {
        Proto::Hl7
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && looks_like_hl7(payload)
    }
    /// Only MLLP-framed HL7 (starting with the 0x0b block byte) is reassembled.
    fn starts_stream(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        payload.first() == Some(&0x0b) && self.wants(ctx, payload)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload)?;
        findings(&rec, ctx, out);
        Ok(())
    }
}
