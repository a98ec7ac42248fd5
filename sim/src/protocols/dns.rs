//! DNS queries and answers (RFC 1035), A records only.

use std::net::Ipv4Addr;

fn qname(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len().min(63) as u8);
        out.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    out.push(0);
}

pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    qname(&mut p, name);
    p.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    p
}

/// Answer to [`query`]: one A record, or NXDOMAIN when `addr` is None.
pub fn response(id: u16, name: &str, addr: Option<Ipv4Addr>) -> Vec<u8> {
    let mut p = Vec::with_capacity(80);
    p.extend_from_slice(&id.to_be_bytes());
    let rcode = if addr.is_some() { 0x80 } else { 0x83 };
    p.extend_from_slice(&[0x81, rcode, 0, 1, 0, u8::from(addr.is_some()), 0, 0, 0, 0]);
    qname(&mut p, name);
    p.extend_from_slice(&[0, 1, 0, 1]);
    if let Some(a) = addr {
        p.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        p.extend_from_slice(&300u32.to_be_bytes());
        p.extend_from_slice(&[0, 4]);
        p.extend_from_slice(&a.octets());
    }
    p
}
