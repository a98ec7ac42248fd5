//! SMB1 and SMB2/3 over the NetBIOS session service (RFC 1002 §4.3; direct TCP 445 uses the
//! same 4-byte header, MS-SMB2 §2.1).
//!
//! Kept: the SMB1 negotiate dialect strings ([MS-CIFS] 2.2.4.52), SMB1 Session Setup AndX
//! native OS / native LAN manager strings ([MS-CIFS] 2.2.4.53, [MS-SMB] 2.2.4.6), the SMB2
//! negotiate dialects offered and the one the server chose ([MS-SMB2] 2.2.3, 2.2.4), and
//! whether SMBv1 is actually in use. The account name and passwords in a Session Setup are
//! skipped over, never copied.

use super::*;

const MAX_MESSAGES: usize = 32;
const MAX_DIALECTS: usize = 64;
const MAX_STRING_CHARS: usize = 256;
const SMB1_HEADER_LEN: usize = 32;
const SMB2_HEADER_LEN: usize = 64;

/// SMB1 Flags2 bit: strings are UTF-16LE.
const FLAGS2_UNICODE: u16 = 0x8000;
/// SMB1 Flags bit: this is a reply.
const FLAGS_REPLY: u8 = 0x80;
/// SMB2 Flags bit: this is a response.
const SMB2_FLAGS_RESPONSE: u32 = 0x0000_0001;

const SMB1_NEGOTIATE: u8 = 0x72;
const SMB1_SESSION_SETUP_ANDX: u8 = 0x73;
const SMB2_NEGOTIATE: u16 = 0x0000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmbMessage {
    Smb1(Smb1Message),
    Smb2(Smb2Message),
    /// SMB3 transform header (0xFD 'SMB'): encrypted, nothing readable.
    Smb3Encrypted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smb1Message {
    pub command: u8,
    pub is_reply: bool,
    /// Negotiate request: dialect strings offered, in order.
    pub dialects: Vec<String>,
    /// Negotiate reply: index of the chosen dialect in the request's list (0xFFFF = none).
    pub dialect_index: Option<u16>,
    pub native_os: Option<String>,
    pub native_lanman: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Smb2Message {
    pub command: u16,
    pub is_response: bool,
    /// Negotiate request: dialect revisions offered (0x0202, 0x0210, 0x0300, 0x0302, 0x0311...).
    pub dialects: Vec<u16>,
    /// Negotiate response: the revision the server selected (0x02FF = wildcard, "use SMB2").
    pub chosen_dialect: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmbRecord {
    pub messages: Vec<SmbMessage>,
}

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(Proto::Smb, kind, detail)
}

/// tshark's spelling of an SMB2 dialect revision ("0x0311").
pub fn dialect_name(revision: u16) -> String {
    format!("0x{revision:04x}")
}

/// NetBIOS session message header followed by an SMB1, SMB2 or SMB3-transform signature.
pub fn looks_like_smb(payload: &[u8]) -> bool {
    payload.len() >= 8
        && payload[0] == 0x00
        && payload[1] & 0xFE == 0
        && matches!(&payload[4..8], [0xFD..=0xFF, b'S', b'M', b'B'])
}

/// Parse every NetBIOS-framed SMB message in the payload. The first must be readable;
/// a trailing partial message is left for the reassembler.
pub fn parse(payload: &[u8]) -> Result<SmbRecord, DissectError> {
    let mut rec = SmbRecord::default();
    let mut rest = payload;
    while rest.len() >= 4 && rec.messages.len() < MAX_MESSAGES {
        let first = rec.messages.is_empty();
        if rest[0] != 0x00 {
            if first {
                return Err(err(
                    "bad_netbios",
                    format!("NetBIOS session type {:#04x} is not a session message", rest[0]),
                ));
            }
            break;
        }
        // 17-bit length: the low bit of the flags byte extends the 16-bit length.
        let len = (((rest[1] & 1) as usize) << 16) | u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let avail = rest.len() - 4;
        let msg = &rest[4..4 + len.min(avail)];
        match parse_smb(msg) {
            Ok(m) => rec.messages.push(m),
            Err(e) if first => return Err(e),
            Err(_) => break,
        }
        if len > avail {
            break;
        }
        rest = &rest[4 + len..];
    }
    if rec.messages.is_empty() {
        return Err(DissectError::truncated(
            Proto::Smb,
            format!("{} bytes, no complete NetBIOS header", payload.len()),
        ));
    }
    Ok(rec)
}

/// Parse one SMB message (without the NetBIOS header).
pub fn parse_smb(msg: &[u8]) -> Result<SmbMessage, DissectError> {
    match msg.get(..4) {
        Some([0xFF, b'S', b'M', b'B']) => parse_smb1(msg).map(SmbMessage::Smb1),
        Some([0xFE, b'S', b'M', b'B']) => parse_smb2(msg).map(SmbMessage::Smb2),
        Some([0xFD, b'S', b'M', b'B']) => Ok(SmbMessage::Smb3Encrypted),
        _ => Err(err("bad_signature", "message does not start with \\xffSMB, \\xfeSMB or \\xfdSMB")),
    }
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

fn parse_smb1(msg: &[u8]) -> Result<Smb1Message, DissectError> {
    if msg.len() < SMB1_HEADER_LEN + 1 {
        return Err(DissectError::truncated(
            Proto::Smb,
            format!("SMB1 message of {} bytes, header needs 33", msg.len()),
        ));
    }
    let command = msg[4];
    let is_reply = msg[9] & FLAGS_REPLY != 0;
    let unicode = u16le(msg, 10).unwrap_or(0) & FLAGS2_UNICODE != 0;
    let mut m = Smb1Message {
        command,
        is_reply,
        dialects: Vec::new(),
        dialect_index: None,
        native_os: None,
        native_lanman: None,
    };
    let word_count = msg[SMB1_HEADER_LEN] as usize;
    let words_at = SMB1_HEADER_LEN + 1;
    let byte_count_at = words_at + 2 * word_count;
    let word = |i: usize| u16le(msg, words_at + 2 * i);
    let bytes_at = byte_count_at + 2;
    let byte_count = u16le(msg, byte_count_at).map(usize::from);
    // Bytes are bounded by both ByteCount and what actually arrived.
    let bytes = match byte_count {
        Some(n) if bytes_at <= msg.len() => &msg[bytes_at..(bytes_at + n).min(msg.len())],
        _ => &[][..],
    };
    match (command, is_reply) {
        (SMB1_NEGOTIATE, false) => {
            // Each dialect: buffer format 0x02, then a NUL-terminated OEM string.
            let mut rest = bytes;
            while let Some((&0x02, tail)) = rest.split_first() {
                let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                if m.dialects.len() < MAX_DIALECTS {
                    m.dialects.push(oem_string(&tail[..end]));
                }
                rest = tail.get(end + 1..).unwrap_or(&[]);
            }
        }
        (SMB1_NEGOTIATE, true) => m.dialect_index = word(0),
        (SMB1_SESSION_SETUP_ANDX, _) => {
            // Offset of each string region from the SMB header start, for Unicode alignment.
            let (skip, strings_before) = match (is_reply, word_count) {
                // Request, extended security: SecurityBlobLength = word 7; then OS, LanMan.
                (false, 12) => (word(7).unwrap_or(0) as usize, 0),
                // Request, LM/NTLM: two password lengths (words 7, 8); then account, domain, OS, LanMan.
                (false, 13) => (word(7).unwrap_or(0) as usize + word(8).unwrap_or(0) as usize, 2),
                // Reply, extended security: SecurityBlobLength = word 3; then OS, LanMan, domain.
                (true, 4) => (word(3).unwrap_or(0) as usize, 0),
                (true, 3) => (0, 0),
                _ => return Ok(m),
            };
            let mut pos = skip.min(bytes.len());
            let mut strings = Vec::with_capacity(strings_before + 2);
            for _ in 0..strings_before + 2 {
                let (s, used) = if unicode {
                    // Unicode strings start on an even offset from the SMB header.
                    if (bytes_at + pos) % 2 == 1 && pos < bytes.len() {
                        pos += 1;
                    }
                    utf16_string(&bytes[pos.min(bytes.len())..])
                } else {
                    let tail = &bytes[pos.min(bytes.len())..];
                    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
                    (oem_string(&tail[..end]), (end + 1).min(tail.len()))
                };
                strings.push(s);
                pos += used;
            }
            // Drop the account name and domain (request LM/NTLM form) without ever storing them.
            let mut it = strings.into_iter().skip(strings_before);
            m.native_os = it.next().filter(|s| !s.is_empty());
            m.native_lanman = it.next().filter(|s| !s.is_empty());
        }
        _ => {}
    }
    Ok(m)
}

fn oem_string(raw: &[u8]) -> String {
    raw.iter().take(MAX_STRING_CHARS).map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '\u{FFFD}' }).collect()
}

/// A NUL-terminated UTF-16LE string and the bytes it used (terminator included if present).
fn utf16_string(raw: &[u8]) -> (String, usize) {
    let mut units = Vec::new();
    let mut used = 0;
    for pair in raw.chunks_exact(2) {
        used += 2;
        let u = u16::from_le_bytes([pair[0], pair[1]]);
        if u == 0 {
            break;
        }
        if units.len() < MAX_STRING_CHARS {
            units.push(u);
        }
    }
    (String::from_utf16_lossy(&units), used)
}

fn parse_smb2(msg: &[u8]) -> Result<Smb2Message, DissectError> {
    if msg.len() < SMB2_HEADER_LEN {
        return Err(DissectError::truncated(
            Proto::Smb,
            format!("SMB2 message of {} bytes, header needs 64", msg.len()),
        ));
    }
    let command = u16le(msg, 12).unwrap_or(0xFFFF);
    let is_response = u32le(msg, 16).unwrap_or(0) & SMB2_FLAGS_RESPONSE != 0;
    let mut m = Smb2Message { command, is_response, dialects: Vec::new(), chosen_dialect: None };
    if command != SMB2_NEGOTIATE {
        return Ok(m);
    }
    let body = &msg[SMB2_HEADER_LEN..];
    let structure_size = u16le(body, 0);
    if is_response {
        // Error responses use the 9-byte error body; only a real negotiate response (65) has a dialect.
        if structure_size == Some(65) {
            m.chosen_dialect = u16le(body, 4);
        }
    } else if structure_size == Some(36) {
        let count = u16le(body, 2).unwrap_or(0) as usize;
        for i in 0..count.min(MAX_DIALECTS) {
            match u16le(body, 36 + 2 * i) {
                Some(d) => m.dialects.push(d),
                None => break,
            }
        }
    }
    Ok(m)
}

/// Negotiate dialects go to the sender (offered by a client, chosen by a server). SMBv1 is
/// "in use" when an SMB1 message other than a multi-protocol negotiate request that also
/// offers SMB2 is seen: a modern client's first negotiate is SMB1-framed only to discover
/// SMB2, which is not SMBv1 use. Requests flag the client as Src; replies flag the server.
pub fn findings(rec: &SmbRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    for m in &rec.messages {
        match m {
            SmbMessage::Smb1(s) => {
                for d in &s.dialects {
                    out.push(Finding::src(Field::SmbDialect, d.clone()));
                }
                let offers_smb2 = s.dialects.iter().any(|d| d.starts_with("SMB 2."));
                let probe_only = s.command == SMB1_NEGOTIATE && !s.is_reply && offers_smb2;
                if !probe_only {
                    let (me, peer) = if s.is_reply { ("server", "client") } else { ("client", "server") };
                    out.push(Finding::src(Field::Smb1InUse, me));
                    out.push(Finding::dst(Field::Smb1InUse, peer));
                }
                if let Some(os) = &s.native_os {
                    out.push(Finding::src(Field::SmbNativeOs, os.clone()));
                }
                if let Some(lm) = &s.native_lanman {
                    out.push(Finding::src(Field::SmbNativeLanman, lm.clone()));
                }
            }
            SmbMessage::Smb2(s) => {
                for d in &s.dialects {
                    out.push(Finding::src(Field::SmbDialect, dialect_name(*d)));
                }
                if let Some(d) = s.chosen_dialect {
                    out.push(Finding::src(Field::SmbDialect, dialect_name(d)));
                }
            }
            SmbMessage::Smb3Encrypted => {}
        }
    }
}

/// SMB over NetBIOS session service / direct TCP: recognised by the framing and SMB
/// signature on any port (shape is specific enough).
pub struct SmbDissector;

impl Dissector for SmbDissector {
    fn proto(&self) -> Proto {
        Proto::Smb
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && looks_like_smb(payload)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload)?;
        findings(&rec, ctx, out);
        Ok(())
    }
}
