//! NetBIOS name service registration (RFC 1002 §4.2.2), as Windows broadcasts at boot.

use std::net::Ipv4Addr;

/// First-level encoding of a 15-character name plus suffix byte.
fn encode_name(name: &str, suffix: u8) -> Vec<u8> {
    let mut raw = [b' '; 16];
    for (o, b) in raw.iter_mut().zip(name.to_ascii_uppercase().bytes().take(15)) {
        *o = b;
    }
    raw[15] = suffix;
    let mut out = Vec::with_capacity(34);
    out.push(32);
    for b in raw {
        out.push(b'A' + (b >> 4));
        out.push(b'A' + (b & 0x0f));
    }
    out.push(0);
    out
}

/// Broadcast NAME REGISTRATION REQUEST for `name<suffix>` at `addr`.
pub fn registration(trn_id: u16, name: &str, suffix: u8, group: bool, addr: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(68);
    p.extend_from_slice(&trn_id.to_be_bytes());
    p.extend_from_slice(&[0x29, 0x10]); // opcode registration, RD, broadcast
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&encode_name(name, suffix));
    p.extend_from_slice(&[0, 0x20, 0, 1]); // NB, IN
    p.extend_from_slice(&[0xc0, 0x0c, 0, 0x20, 0, 1]);
    p.extend_from_slice(&300_000u32.to_be_bytes());
    p.extend_from_slice(&[0, 6]);
    p.extend_from_slice(&(if group { 0x8000u16 } else { 0 }).to_be_bytes());
    p.extend_from_slice(&addr.octets());
    p
}
