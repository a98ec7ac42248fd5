//! p0f-style TCP SYN / SYN+ACK signatures (p0f v3 `ver:ittl:olen:mss:wsize,scale:olayout:quirks`,
//! p0f README §5 "Signature format"), computed from the TCP header of a host's handshake packet.
//!
//! Differences from p0f, all because only the TTL, IP version and TCP header are passed in:
//! `olen` (IP options length) is always 0, the IP-level quirks (df, id+, id-, flow, 0+) are
//! absent, `ittl` is the guessed initial TTL without p0f's "+distance" suffix (distance
//! depends on where the sensor sits, the signature should not), and the payload class field
//! is omitted. Wiring this into the pipeline (which has the TCP header) is the pipeline's job.

use super::*;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

/// TCP option kinds (IANA "TCP Option Kind Numbers").
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WS: u8 = 3;
const OPT_SACK_OK: u8 = 4;
const OPT_SACK: u8 = 5;
const OPT_TS: u8 = 8;

/// p0f's initial TTL guess: the next common default at or above the observed TTL.
pub fn guess_initial_ttl(ttl: u8) -> u8 {
    match ttl {
        0..=32 => 32,
        33..=64 => 64,
        65..=128 => 128,
        _ => 255,
    }
}

/// The signature of a SYN or SYN+ACK, or `None` if the header is not one (or is too short).
/// `tcp_header` is the TCP header including options (extra payload bytes are ignored).
pub fn syn_signature(ip_ttl: u8, ip_version: u8, tcp_header: &[u8]) -> Option<String> {
    if tcp_header.len() < 20 || !matches!(ip_version, 4 | 6) {
        return None;
    }
    let flags = tcp_header[13];
    if flags & SYN == 0 || flags & FIN != 0 {
        return None;
    }
    let data_offset = (tcp_header[12] >> 4) as usize * 4;
    if data_offset < 20 || data_offset > tcp_header.len() {
        return None;
    }
    let seq = u32::from_be_bytes([tcp_header[4], tcp_header[5], tcp_header[6], tcp_header[7]]);
    let ack = u32::from_be_bytes([tcp_header[8], tcp_header[9], tcp_header[10], tcp_header[11]]);
    let window = u16::from_be_bytes([tcp_header[14], tcp_header[15]]);
    let urg_ptr = u16::from_be_bytes([tcp_header[18], tcp_header[19]]);

    let mut layout: Vec<String> = Vec::new();
    let mut quirks: Vec<&'static str> = Vec::new();
    let mut mss: Option<u16> = None;
    let mut scale: Option<u8> = None;
    let opts = &tcp_header[20..data_offset];
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        match kind {
            OPT_EOL => {
                let pad = &opts[i + 1..];
                layout.push(format!("eol+{}", pad.len()));
                if pad.iter().any(|&b| b != 0) {
                    quirks.push("opt+");
                }
                break;
            }
            OPT_NOP => {
                layout.push("nop".into());
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(i + 1) else {
            quirks.push("bad");
            break;
        };
        let len = len as usize;
        if len < 2 || i + len > opts.len() {
            quirks.push("bad");
            break;
        }
        let body = &opts[i + 2..i + len];
        match kind {
            OPT_MSS => {
                layout.push("mss".into());
                if body.len() == 2 {
                    mss = Some(u16::from_be_bytes([body[0], body[1]]));
                } else {
                    quirks.push("bad");
                }
            }
            OPT_WS => {
                layout.push("ws".into());
                match body.first() {
                    Some(&s) if body.len() == 1 => {
                        scale = Some(s);
                        if s > 14 {
                            quirks.push("exws");
                        }
                    }
                    _ => quirks.push("bad"),
                }
            }
            OPT_SACK_OK => layout.push("sok".into()),
            OPT_SACK => layout.push("sack".into()),
            OPT_TS => {
                layout.push("ts".into());
                if body.len() == 8 {
                    let own = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let peer = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    if own == 0 {
                        quirks.push("ts1-");
                    }
                    // A peer timestamp on an initial SYN (no ACK yet) should be zero.
                    if peer != 0 && flags & ACK == 0 {
                        quirks.push("ts2+");
                    }
                } else {
                    quirks.push("bad");
                }
            }
            other => layout.push(format!("?{other}")),
        }
        i += len;
    }

    if flags & (ECE | CWR) != 0 {
        quirks.push("ecn");
    }
    if seq == 0 {
        quirks.push("seq-");
    }
    if flags & ACK != 0 {
        if ack == 0 {
            quirks.push("ack-");
        }
    } else if ack != 0 {
        quirks.push("ack+");
    }
    if flags & URG != 0 {
        quirks.push("urgf+");
    } else if urg_ptr != 0 {
        quirks.push("uptr+");
    }
    if flags & PSH != 0 {
        quirks.push("pushf+");
    }
    quirks.dedup();

    // Window as a multiple of MSS or of MTU (MSS + IP + TCP headers) when it is one, as p0f writes it.
    let ip_tcp_headers: u32 = if ip_version == 4 { 40 } else { 60 };
    let wsize = match mss.map(u32::from).filter(|&m| m > 0) {
        Some(m) if window != 0 && u32::from(window) % m == 0 => format!("mss*{}", u32::from(window) / m),
        Some(m) if window != 0 && u32::from(window) % (m + ip_tcp_headers) == 0 => {
            format!("mtu*{}", u32::from(window) / (m + ip_tcp_headers))
        }
        _ => window.to_string(),
    };
    Some(format!(
        "{}:{}:0:{}:{},{}:{}:{}",
        ip_version,
        guess_initial_ttl(ip_ttl),
        mss.map_or_else(|| "*".to_string(), |m| m.to_string()),
        wsize,
        scale.unwrap_or(0),
        layout.join(","),
        quirks.join(","),
    ))
}

/// The finding for the host that sent the SYN (or SYN+ACK), for pipeline use.
pub fn finding(ip_ttl: u8, ip_version: u8, tcp_header: &[u8]) -> Option<Finding> {
    syn_signature(ip_ttl, ip_version, tcp_header).map(|s| Finding::src(Field::TcpSynSignature, s))
}
