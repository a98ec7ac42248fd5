//! VNC / RFB presence (RFC 6143 §7.1.1): both ends open with a 12-byte ProtocolVersion
//! message "RFB xxx.yyy\n".

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VncRecord {
    /// "003.008", "003.003", "003.889" (Apple), ...
    pub version: String,
}

/// Exactly "RFB ddd.ddd\n".
pub fn looks_like_rfb(payload: &[u8]) -> bool {
    payload.len() == 12
        && payload.starts_with(b"RFB ")
        && payload[11] == b'\n'
        && payload[7] == b'.'
        && payload[4..7].iter().chain(&payload[8..11]).all(u8::is_ascii_digit)
}

pub fn parse(payload: &[u8]) -> Result<VncRecord, DissectError> {
    if !looks_like_rfb(payload) {
        return Err(DissectError::new(
            Proto::Vnc,
            "bad_version_message",
            format!("{} bytes; an RFB ProtocolVersion message is exactly \"RFB ddd.ddd\\n\"", payload.len()),
        ));
    }
    Ok(VncRecord { version: String::from_utf8_lossy(&payload[4..11]).into_owned() })
}

/// The sender speaks RFB at that version.
pub fn findings(rec: &VncRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    out.push(Finding::src(Field::VncInUse, rec.version.clone()));
}

/// Recognised by the version message on any port (it is unambiguous), which also catches
/// VNC on non-standard ports.
pub struct VncDissector;

impl Dissector for VncDissector {
    fn proto(&self) -> Proto {
        Proto::Vnc
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        ctx.transport == Transport::Tcp && looks_like_rfb(payload)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload)?;
        findings(&rec, ctx, out);
        Ok(())
    }
}
