//! Frame builders: Ethernet (optionally 802.1Q-tagged), ARP, IPv4, UDP and TCP with
//! correct IPv4 header and UDP/TCP checksums. Every builder clears and fills a caller-owned
//! buffer so the generator reuses one allocation for millions of packets.

use std::net::Ipv4Addr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_LLDP: u16 = 0x88cc;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// Shortest Ethernet frame without FCS; a SPAN port shows short frames padded to it.
const MIN_FRAME: usize = 60;

/// Layer-2 addressing of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub vlan: Option<u16>,
}

/// Layer-3 fields of one IPv4 packet.
#[derive(Clone, Copy, Debug)]
pub struct Ip4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub id: u16,
}

/// TCP header fields other than ports.
#[derive(Clone, Copy, Debug)]
pub struct TcpHdr<'a> {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Raw option bytes; must be a multiple of 4 long.
    pub options: &'a [u8],
}

/// RFC 1071 one's-complement sum, not yet folded or inverted.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(data, 0))
}

fn write_eth(buf: &mut Vec<u8>, l2: &L2, ethertype: u16) {
    buf.clear();
    buf.extend_from_slice(&l2.dst);
    buf.extend_from_slice(&l2.src);
    if let Some(vid) = l2.vlan {
        buf.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        buf.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    buf.extend_from_slice(&ethertype.to_be_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    if buf.len() < MIN_FRAME {
        buf.resize(MIN_FRAME, 0);
    }
}

/// Writes the IPv4 header for a payload of `l4_len` bytes; returns the header offset.
fn write_ip4(buf: &mut Vec<u8>, ip: &Ip4, proto: u8, l4_len: usize) -> usize {
    let off = buf.len();
    let total = (20 + l4_len) as u16;
    buf.extend_from_slice(&[0x45, 0x00]);
    buf.extend_from_slice(&total.to_be_bytes());
    buf.extend_from_slice(&ip.id.to_be_bytes());
    buf.extend_from_slice(&[0x40, 0x00]); // DF, as every modern stack sets
    buf.push(ip.ttl);
    buf.push(proto);
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&ip.src.octets());
    buf.extend_from_slice(&ip.dst.octets());
    let c = checksum(&buf[off..off + 20]);
    buf[off + 10..off + 12].copy_from_slice(&c.to_be_bytes());
    off
}

fn pseudo_sum(ip: &Ip4, proto: u8, len: usize) -> u32 {
    let mut acc = sum16(&ip.src.octets(), 0);
    acc = sum16(&ip.dst.octets(), acc);
    acc + u32::from(proto) + len as u32
}

/// A complete UDP/IPv4 frame.
pub fn udp(buf: &mut Vec<u8>, l2: &L2, ip: &Ip4, sport: u16, dport: u16, payload: &[u8]) {
    write_eth(buf, l2, ETHERTYPE_IPV4);
    let l4_len = 8 + payload.len();
    write_ip4(buf, ip, IPPROTO_UDP, l4_len);
    let off = buf.len();
    buf.extend_from_slice(&sport.to_be_bytes());
    buf.extend_from_slice(&dport.to_be_bytes());
    buf.extend_from_slice(&(l4_len as u16).to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(payload);
    let mut c = fold(sum16(&buf[off..], pseudo_sum(ip, IPPROTO_UDP, l4_len)));
    if c == 0 {
        c = 0xffff; // zero means "no checksum" in UDP
    }
    buf[off + 6..off + 8].copy_from_slice(&c.to_be_bytes());
    pad(buf);
}

/// A complete TCP/IPv4 frame.
pub fn tcp(buf: &mut Vec<u8>, l2: &L2, ip: &Ip4, sport: u16, dport: u16, h: &TcpHdr, payload: &[u8]) {
    debug_assert!(h.options.len() & 3 == 0, "TCP options pad to 32-bit words");
    write_eth(buf, l2, ETHERTYPE_IPV4);
    let hdr_len = 20 + h.options.len();
    let l4_len = hdr_len + payload.len();
    write_ip4(buf, ip, IPPROTO_TCP, l4_len);
    let off = buf.len();
    buf.extend_from_slice(&sport.to_be_bytes());
    buf.extend_from_slice(&dport.to_be_bytes());
    buf.extend_from_slice(&h.seq.to_be_bytes());
    buf.extend_from_slice(&h.ack.to_be_bytes());
    buf.push(((hdr_len / 4) as u8) << 4);
    buf.push(h.flags);
    buf.extend_from_slice(&h.window.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    buf.extend_from_slice(h.options);
    buf.extend_from_slice(payload);
    let c = fold(sum16(&buf[off..], pseudo_sum(ip, IPPROTO_TCP, l4_len)));
    buf[off + 16..off + 18].copy_from_slice(&c.to_be_bytes());
    pad(buf);
}

/// An ARP request (`op` 1) or reply (`op` 2). A gratuitous ARP has `spa == tpa`.
pub fn arp(buf: &mut Vec<u8>, l2: &L2, op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) {
    write_eth(buf, l2, ETHERTYPE_ARP);
    buf.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]);
    buf.extend_from_slice(&op.to_be_bytes());
    buf.extend_from_slice(&sha);
    buf.extend_from_slice(&spa.octets());
    buf.extend_from_slice(&tha);
    buf.extend_from_slice(&tpa.octets());
    pad(buf);
}

/// A non-IP frame (e.g. LLDP) with the given ethertype and body.
pub fn raw(buf: &mut Vec<u8>, l2: &L2, ethertype: u16, body: &[u8]) {
    write_eth(buf, l2, ethertype);
    buf.extend_from_slice(body);
    pad(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_checksum_verifies_to_zero() {
        let mut buf = Vec::new();
        let l2 = L2 { src: [0, 1, 2, 3, 4, 5], dst: [0xff; 6], vlan: Some(20) };
        let ip = Ip4 { src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 0, 2), ttl: 64, id: 7 };
        udp(&mut buf, &l2, &ip, 1000, 2000, b"hello");
        // 18 bytes of tagged Ethernet, then the IPv4 header: summing it with its checksum gives 0.
        assert_eq!(checksum(&buf[18..38]), 0);
        // UDP: pseudo header + segment sums to 0 as well.
        let seg = &buf[38..38 + 13];
        assert_eq!(fold(sum16(seg, pseudo_sum(&ip, IPPROTO_UDP, 13))), 0);
        assert_eq!(buf.len(), 60);
    }

    #[test]
    fn odd_length_tcp_checksum_verifies() {
        let mut buf = Vec::new();
        let l2 = L2 { src: [0, 1, 2, 3, 4, 5], dst: [6, 7, 8, 9, 10, 11], vlan: None };
        let ip = Ip4 { src: Ipv4Addr::new(192, 168, 1, 1), dst: Ipv4Addr::new(192, 168, 1, 2), ttl: 128, id: 1 };
        let h = TcpHdr { seq: 1, ack: 2, flags: TCP_ACK | TCP_PSH, window: 8192, options: &[] };
        tcp(&mut buf, &l2, &ip, 49152, 445, &h, b"abcdefghijklmnopqrstuvwxyz0");
        let seg = &buf[34..];
        assert_eq!(fold(sum16(seg, pseudo_sum(&ip, IPPROTO_TCP, seg.len()))), 0);
    }
}
