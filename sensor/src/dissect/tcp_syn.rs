//! p0f-style TCP SYN / SYN+ACK signatures (p0f v3 `ver:ittl:olen:mss:wsize,scale:olayout:quirks`,
//! p0f README §5 "Signature format"), computed from the TCP header of a host's handshake packet.
//!
//! Differences from p0f, all because only the TTL, IP version and TCP header are passed in:
//! `olen` (IP options length) is always 0, the IP-level quirks (df, id+, id-, flow, 0+) are
//! absent, `ittl` is the guessed initial TTL without p0f's "+distance" suffix (distance
//! depends on where the sensor sits, the signature should not), and the payload class field
//! is omitted. Wiring this into the pipeline (which has the TCP header) is the pipeline's job.

use super::*;
use crate::digits::push_decimal;

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

    // Built in place (one String for the layout, one for the result): every SYN and
    // SYN+ACK of the capture comes through here.
    let mut layout = String::with_capacity(32);
    let mut push_layout = |item: &str, n: Option<u64>| {
        if !layout.is_empty() {
            layout.push(',');
        }
        layout.push_str(item);
        if let Some(n) = n {
            push_decimal(&mut layout, n);
        }
    };
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
                push_layout("eol+", Some(pad.len() as u64));
                if pad.iter().any(|&b| b != 0) {
                    quirks.push("opt+");
                }
                break;
            }
            OPT_NOP => {
                push_layout("nop", None);
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
                push_layout("mss", None);
                if body.len() == 2 {
                    mss = Some(u16::from_be_bytes([body[0], body[1]]));
                } else {
                    quirks.push("bad");
                }
            }
            OPT_WS => {
                push_layout("ws", None);
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
            OPT_SACK_OK => push_layout("sok", None),
            OPT_SACK => push_layout("sack", None),
            OPT_TS => {
                push_layout("ts", None);
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
            other => push_layout("?", Some(other as u64)),
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
    let mut sig = String::with_capacity(48 + layout.len());
    push_decimal(&mut sig, ip_version as u64);
    sig.push(':');
    push_decimal(&mut sig, guess_initial_ttl(ip_ttl) as u64);
    sig.push_str(":0:");
    match mss {
        Some(m) => push_decimal(&mut sig, m as u64),
        None => sig.push('*'),
    }
    sig.push(':');
    match mss.map(u32::from).filter(|&m| m > 0) {
        Some(m) if window != 0 && u32::from(window) % m == 0 => {
            sig.push_str("mss*");
            push_decimal(&mut sig, (u32::from(window) / m) as u64);
        }
        Some(m) if window != 0 && u32::from(window) % (m + ip_tcp_headers) == 0 => {
            sig.push_str("mtu*");
            push_decimal(&mut sig, (u32::from(window) / (m + ip_tcp_headers)) as u64);
        }
        _ => push_decimal(&mut sig, window as u64),
    }
    sig.push(',');
    push_decimal(&mut sig, scale.unwrap_or(0) as u64);
    sig.push(':');
    sig.push_str(&layout);
    sig.push(':');
    for (k, q) in quirks.iter().enumerate() {
        if k > 0 {
            sig.push(',');
        }
        sig.push_str(q);
    }
    Some(sig)
}

/// The finding for the host that sent the SYN (or SYN+ACK), for pipeline use.
pub fn finding(ip_ttl: u8, ip_version: u8, tcp_header: &[u8]) -> Option<Finding> {
    syn_signature(ip_ttl, ip_version, tcp_header).map(|s| Finding::src(Field::TcpSynSignature, s))
}

#[cfg(test)]
mod in_place_tests {
    use super::*;

    // The format!-based version this module used before building the signature in place.
    #[allow(clippy::all)]
    fn syn_signature_format(ip_ttl: u8, ip_version: u8, tcp_header: &[u8]) -> Option<String> {
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

    /// Same signature as the formatter version for every flag/option mix generated here.
    #[test]
    fn in_place_signature_matches_the_format_version() {
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let opts: [&[u8]; 9] = [
            &[2, 4, 5, 0xb4],
            &[1],
            &[3, 3, 7],
            &[4, 2],
            &[8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
            &[5, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            &[0, 0, 1],
            &[30, 2],
            &[2, 3, 1],
        ];
        for _ in 0..20_000 {
            let mut h = vec![0u8; 20];
            for b in h.iter_mut() {
                *b = next() as u8;
            }
            let mut o = Vec::new();
            for _ in 0..next() % 6 {
                o.extend_from_slice(opts[next() as usize % opts.len()]);
            }
            o.truncate(40);
            while o.len() % 4 != 0 {
                o.push(0);
            }
            h[12] = (((20 + o.len()) / 4) as u8) << 4;
            h[13] = (next() as u8 & !FIN) | SYN;
            if next() % 4 == 0 {
                h[14] = 0;
                h[15] = 0;
            }
            if next() % 3 == 0 {
                // A window that is a multiple of the MSS (1460) or of the MTU.
                let w: u16 = if next() % 2 == 0 { 1460 * 4 } else { 1500 * 2 };
                h[14..16].copy_from_slice(&w.to_be_bytes());
            }
            h.extend_from_slice(&o);
            let (ttl, ver) = (next() as u8, if next() % 2 == 0 { 4 } else { 6 });
            assert_eq!(syn_signature(ttl, ver, &h), syn_signature_format(ttl, ver, &h), "header {h:02x?}");
        }
    }
}
