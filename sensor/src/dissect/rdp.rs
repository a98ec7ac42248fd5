//! RDP presence ([MS-RDPBCGR] 2.2.1.1 / 2.2.1.2): TPKT (RFC 1006) + X.224 Connection
//! Request / Confirm, with the optional `Cookie: mstshash=` and RDP negotiation request.
//! The cookie carries a user name, so only its presence is recorded.

use super::*;
use crate::protocols::RDP;

const X224_CR: u8 = 0xE0;
const X224_CC: u8 = 0xD0;
const COOKIE: &[u8] = b"Cookie: mstshash=";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RdpRecord {
    ConnectionRequest {
        cookie_present: bool,
        /// RDP_NEG_REQ requestedProtocols: 0 = standard RDP security, 1 = TLS, 2 = CredSSP, 8 = RDSTLS...
        requested_protocols: Option<u32>,
    },
    ConnectionConfirm {
        /// RDP_NEG_RSP selectedProtocol.
        selected_protocol: Option<u32>,
        /// RDP_NEG_FAILURE failureCode.
        failure_code: Option<u32>,
    },
}

fn err(kind: &'static str, detail: impl Into<String>) -> DissectError {
    DissectError::new(Proto::Rdp, kind, detail)
}

/// TPKT version 3 with a plausible length, then an X.224 CR or CC TPDU.
pub fn looks_like_x224_connect(payload: &[u8]) -> bool {
    payload.len() >= 11
        && payload[0] == 3
        && payload[1] == 0
        && u16::from_be_bytes([payload[2], payload[3]]) as usize >= 11
        && matches!(payload[5] & 0xF0, X224_CR | X224_CC)
        && payload[4] as usize + 5 <= u16::from_be_bytes([payload[2], payload[3]]) as usize
}

pub fn parse(payload: &[u8]) -> Result<RdpRecord, DissectError> {
    if payload.len() < 11 {
        return Err(DissectError::truncated(
            Proto::Rdp,
            format!("{} bytes, TPKT + X.224 connect needs 11", payload.len()),
        ));
    }
    if payload[0] != 3 || payload[1] != 0 {
        return Err(err("bad_tpkt", format!("TPKT version {} reserved {} (want 3, 0)", payload[0], payload[1])));
    }
    let tpkt_len = u16::from_be_bytes([payload[2], payload[3]]) as usize;
    let end = tpkt_len.min(payload.len());
    // X.224 LI counts the bytes after itself in the header: code, dst-ref, src-ref, class, then variable part.
    let li = payload[4] as usize;
    let code = payload[5] & 0xF0;
    let after_fixed = 11.min(end);
    let var = payload.get(after_fixed..(5 + li).min(end).max(after_fixed)).unwrap_or(&[]);
    // Negotiation structures are 8 bytes: type, flags, length (LE, = 8), value (LE u32).
    let neg = |want_type: u8| -> Option<u32> {
        let at = var.len().checked_sub(8)?;
        let n = &var[at..];
        (n[0] == want_type && u16::from_le_bytes([n[2], n[3]]) == 8)
            .then(|| u32::from_le_bytes([n[4], n[5], n[6], n[7]]))
    };
    match code {
        X224_CR => Ok(RdpRecord::ConnectionRequest {
            cookie_present: var.windows(COOKIE.len()).any(|w| w == COOKIE),
            requested_protocols: neg(0x01),
        }),
        X224_CC => Ok(RdpRecord::ConnectionConfirm { selected_protocol: neg(0x02), failure_code: neg(0x03) }),
        other => Err(err("not_connect", format!("X.224 TPDU code {other:#04x} is not a connection request/confirm"))),
    }
}

/// A connection request shows the server (Dst) offers RDP and the client (Src) uses it; a
/// confirm shows it for the server (Src).
pub fn findings(rec: &RdpRecord, _ctx: &PacketCtx, out: &mut Vec<Finding>) {
    match rec {
        RdpRecord::ConnectionRequest { .. } => {
            out.push(Finding::dst(Field::RdpInUse, "present"));
            out.push(Finding::src(Field::RdpInUse, "present"));
        }
        RdpRecord::ConnectionConfirm { .. } => out.push(Finding::src(Field::RdpInUse, "present")),
    }
}

pub struct RdpDissector;

impl Dissector for RdpDissector {
    fn proto(&self) -> Proto {
        Proto::Rdp
    }
    fn wants(&self, ctx: &PacketCtx, payload: &[u8]) -> bool {
        if ctx.transport != Transport::Tcp || !looks_like_x224_connect(payload) {
            return false;
        }
        // Off port 3389 only with the RDP-specific cookie, since TPKT/X.224 also carries S7comm, ICCP, ...
        RDP.claims(ctx) || payload.windows(COOKIE.len()).any(|w| w == COOKIE)
    }
    fn dissect(&self, ctx: &PacketCtx, payload: &[u8], out: &mut Vec<Finding>) -> Result<(), DissectError> {
        let rec = parse(payload)?;
        findings(&rec, ctx, out);
        Ok(())
    }
}
