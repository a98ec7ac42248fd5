//! Zero-copy frame decoding: link layer (Ethernet, 802.1Q/QinQ, Linux SLL/SLL2, BSD
//! NULL/LOOP, raw IP, radiotap+802.11 data frames), ARP, IPv4, IPv6 with extension
//! headers, TCP, UDP, ICMP/ICMPv6, and GRE/ERSPAN tunnels (decoded as the packet inside).
//!
//! [`decode`] never panics on any input: every read goes through bounds-checked helpers
//! and a malformed header yields a [`DecodeError`] whose `kind` is a short stable label
//! the pipeline counts. A frame that is merely not IP (LLDP, CDP, STP, ...) is not an
//! error: it decodes with `net == Net::Other` and `payload` set to the L2 payload.

mod ip;
mod l4;
mod link;
mod tunnel;

use crate::capture::LinkType;
use std::net::IpAddr;
use wardline_common::MacAddr;

pub use l4::tcp_flags;
pub use tunnel::{Tunnel, TunnelKind};

/// A frame that could not be decoded. `kind` is stable (used as a counter label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (layer at byte {offset}, frame of {len} bytes)")]
pub struct DecodeError {
    pub kind: &'static str,
    /// Byte offset in the frame of the layer that failed.
    pub offset: usize,
    pub len: usize,
}

/// Network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Net {
    /// Not IP or ARP (LLDP, CDP, STP, 802.11 management, ...).
    Other,
    Arp(Arp),
    Ip(IpHeader),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: std::net::Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: std::net::Ipv4Addr,
}

/// Where an IP packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// First fragment (offset 0, more fragments): transport header is present.
    First,
    /// A later fragment: no transport header; counted but not decoded further.
    Later,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub ttl: u8,
    pub fragment: Fragment,
}

/// Transport layer of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    None,
    Tcp(TcpHeader),
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Icmp {
        icmp_type: u8,
        code: u8,
    },
    Icmpv6 {
        icmp_type: u8,
        code: u8,
    },
    /// Another IP protocol (GRE, ESP, SCTP, ...), not decoded further.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Header length in bytes (data offset * 4), options included.
    pub header_len: u8,
}

/// A decoded frame. Everything borrowed from the captured bytes.
#[derive(Clone, Copy, Debug)]
pub struct Decoded<'a> {
    /// ZERO when the link layer carries no such address (raw IP, NULL, SLL destination).
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// Outermost VLAN id (the service tag in QinQ).
    pub vlan: Option<u16>,
    /// Inner (customer) VLAN id in QinQ.
    pub inner_vlan: Option<u16>,
    /// Ethertype after VLAN tags; 0 for 802.3/LLC frames (payload then starts at the LLC header).
    pub ethertype: u16,
    pub net: Net,
    pub l4: L4,
    /// Transport payload for TCP/UDP (IP padding removed, possibly cut by the snap length),
    /// the IP payload for other IP protocols, or the L2 payload for non-IP frames.
    pub payload: &'a [u8],
    /// The GRE/ERSPAN tunnel the packet was unwrapped from; every other field describes
    /// the packet inside it.
    pub tunnel: Option<Tunnel>,
}

impl Decoded<'_> {
    pub fn ip(&self) -> Option<&IpHeader> {
        match &self.net {
            Net::Ip(h) => Some(h),
            _ => None,
        }
    }
    /// The length to account for this frame: a mirrored frame inside ERSPAN or transparent
    /// bridging counts as the frame the monitored port carried, without the mirroring
    /// overhead; anything else counts as captured.
    pub fn accounted_len(&self, wire_len: u64) -> u64 {
        match self.tunnel.and_then(|t| t.inner_frame_at) {
            Some(at) => wire_len.saturating_sub(at as u64),
            None => wire_len,
        }
    }

    pub fn ports(&self) -> (u16, u16) {
        match self.l4 {
            L4::Tcp(t) => (t.src_port, t.dst_port),
            L4::Udp { src_port, dst_port } => (src_port, dst_port),
            _ => (0, 0),
        }
    }
}

/// Bounds-checked cursor over a frame; every read returns None past the end.
#[derive(Clone, Copy)]
pub(crate) struct Bytes<'a> {
    pub data: &'a [u8],
}

impl<'a> Bytes<'a> {
    #[inline]
    pub fn u8(&self, at: usize) -> Option<u8> {
        self.data.get(at).copied()
    }
    #[inline]
    pub fn u16(&self, at: usize) -> Option<u16> {
        let b = self.data.get(at..at.checked_add(2)?)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    #[inline]
    pub fn u32(&self, at: usize) -> Option<u32> {
        let b = self.data.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    #[inline]
    pub fn mac(&self, at: usize) -> Option<MacAddr> {
        let b = self.data.get(at..at.checked_add(6)?)?;
        Some(MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]))
    }
    #[inline]
    pub fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let b = self.data.get(at..at.checked_add(N)?)?;
        b.try_into().ok()
    }
}

pub(crate) fn err(kind: &'static str, offset: usize, len: usize) -> DecodeError {
    DecodeError { kind, offset, len }
}

/// Decode one captured frame of the given link type.
pub fn decode(linktype: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let mut d = Decoded {
        src_mac: MacAddr::ZERO,
        dst_mac: MacAddr::ZERO,
        vlan: None,
        inner_vlan: None,
        ethertype: 0,
        net: Net::Other,
        l4: L4::None,
        payload: &[],
        tunnel: None,
    };
    let (ethertype, off, end) = link::decode_link(linktype, frame, &mut d)?;
    decode_ethertype(ethertype, &frame[..end.min(frame.len())], off, &mut d)?;
    Ok(d)
}

/// Ethertypes that carry a VLAN tag: 802.1Q, 802.1ad (QinQ service tag), and the legacy 0x9100.
pub const VLAN_ETHERTYPES: [u16; 3] = [0x8100, 0x88a8, 0x9100];
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Most tags we unwrap before calling the frame malformed (QinQ is two; allow some slack).
const MAX_VLAN_TAGS: usize = 4;

/// Continue decoding at `off` in `frame` given the ethertype that announced it.
pub(crate) fn decode_ethertype<'a>(
    mut ethertype: u16,
    frame: &'a [u8],
    mut off: usize,
    d: &mut Decoded<'a>,
) -> Result<(), DecodeError> {
    let b = Bytes { data: frame };
    let mut tags = 0;
    // `matches!` rather than `VLAN_ETHERTYPES.contains`: a compare chain, not a slice call, per frame.
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Err(err("vlan_too_many_tags", off, frame.len()));
        }
        let tci = b.u16(off).ok_or(err("vlan_truncated", off, frame.len()))?;
        let next = b.u16(off + 2).ok_or(err("vlan_truncated", off, frame.len()))?;
        let id = tci & 0x0fff;
        if d.vlan.is_none() {
            d.vlan = Some(id);
        } else if d.inner_vlan.is_none() {
            d.inner_vlan = Some(id);
        }
        ethertype = next;
        off += 4;
    }
    d.ethertype = ethertype;
    let rest = frame.get(off..).unwrap_or(&[]);
    match ethertype {
        ETHERTYPE_IPV4 => ip::decode_ipv4(frame, off, d),
        ETHERTYPE_IPV6 => ip::decode_ipv6(frame, off, d),
        ETHERTYPE_ARP => {
            d.net = Net::Arp(link::decode_arp(frame, off)?);
            d.payload = rest;
            Ok(())
        }
        _ => {
            d.payload = rest;
            Ok(())
        }
    }
}
