//! Tunnels a monitoring port carries: GRE (RFC 2784, keys and sequence numbers of RFC 2890)
//! with IPv4, IPv6 or transparent Ethernet inside, and ERSPAN types I, II and III (a remote
//! switch port mirrored to the sensor inside GRE).
//!
//! The frame decodes as its innermost packet: addresses, ports and payload are the mirrored
//! or tunnelled traffic's, so flows and devices are the hosts', not the tunnel endpoints'.
//! [`Tunnel`] keeps what the outer layers said. Nesting is bounded so a hostile frame of
//! tunnels inside tunnels cannot recurse deeply.

use super::{decode_ethertype, err, link, Bytes, DecodeError, Decoded, Net, L4};
use std::net::IpAddr;

pub(super) const IPPROTO_GRE: u8 = 47;
/// Tunnels unwrapped per frame (ERSPAN inside GRE over a WAN is two).
const MAX_DEPTH: u8 = 2;

const GRE_CHECKSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQUENCE: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

const PROTO_TEB: u16 = 0x6558;
const PROTO_ERSPAN_1_2: u16 = 0x88be;
const PROTO_ERSPAN_3: u16 = 0x22eb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    /// GRE carrying IP or Ethernet (transparent bridging).
    Gre,
    /// ERSPAN type I, II or III; `session` is the mirror session id (0 for type I).
    Erspan { version: u8, session: u16 },
}

/// The outermost tunnel a frame arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    pub kind: TunnelKind,
    /// Tunnel endpoints: for ERSPAN, the mirroring switch and the collector.
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    /// Tunnels unwrapped so far (1 for a plain ERSPAN frame).
    pub depth: u8,
    /// Where the carried Ethernet frame starts in the captured frame (ERSPAN, transparent
    /// bridging); None when the tunnel carries bare IP.
    pub inner_frame_at: Option<usize>,
}

/// Unwrap the GRE packet at `off` in `body` (an IP packet's bytes, padding removed) into
/// the frame's inner layers. Returns false, leaving `d` alone, for GRE this decoder does not
/// unwrap (PPTP's enhanced GRE, source routing, other payload types): the caller counts it as
/// an opaque IP protocol.
pub(super) fn decode_gre<'a>(body: &'a [u8], off: usize, d: &mut Decoded<'a>) -> Result<bool, DecodeError> {
    let b = Bytes { data: body };
    let n = body.len();
    let flags = b.u16(off).ok_or(err("gre_truncated", off, n))?;
    let proto = b.u16(off + 2).ok_or(err("gre_truncated", off, n))?;
    if flags & GRE_VERSION != 0 || flags & GRE_ROUTING != 0 {
        return Ok(false);
    }
    if !matches!(proto, 0x0800 | 0x86dd | PROTO_TEB | PROTO_ERSPAN_1_2 | PROTO_ERSPAN_3) {
        return Ok(false);
    }
    let depth = d.tunnel.map_or(0, |t| t.depth);
    if depth >= MAX_DEPTH {
        return Err(err("tunnel_too_deep", off, n));
    }
    let optional = [GRE_CHECKSUM, GRE_KEY, GRE_SEQUENCE].iter().filter(|&&bit| flags & bit != 0).count();
    let mut inner = off + 4 + 4 * optional;
    if inner > n {
        return Err(err("gre_truncated", off, n));
    }
    let (outer_src, outer_dst) = match d.net {
        Net::Ip(h) => (h.src, h.dst),
        _ => return Ok(false),
    };
    let mut erspan_vlan = None;
    let kind = match proto {
        PROTO_ERSPAN_1_2 if flags & GRE_SEQUENCE == 0 => TunnelKind::Erspan { version: 1, session: 0 },
        PROTO_ERSPAN_1_2 => {
            // Type II: ver(4) vlan(12) cos(3) en(2) t(1) session(10), reserved(12) index(20).
            let w = b.u16(inner).ok_or(err("erspan_truncated", inner, n))?;
            let s = b.u16(inner + 2).ok_or(err("erspan_truncated", inner, n))?;
            if w >> 12 != 1 || inner + 8 > n {
                return Err(err("erspan_bad_header", inner, n));
            }
            erspan_vlan = Some(w & 0x0fff).filter(|v| *v != 0);
            inner += 8;
            TunnelKind::Erspan { version: 2, session: s & 0x03ff }
        }
        PROTO_ERSPAN_3 => {
            // Type III: ver(4) vlan(12) cos/bso/t(6) session(10), timestamp(32), sgt(16),
            // p/ft/hw id/d/gra/o(16); o = an 8-byte platform sub-header follows.
            let w = b.u16(inner).ok_or(err("erspan_truncated", inner, n))?;
            let s = b.u16(inner + 2).ok_or(err("erspan_truncated", inner, n))?;
            let last = b.u8(inner + 11).ok_or(err("erspan_truncated", inner, n))?;
            if w >> 12 != 2 {
                return Err(err("erspan_bad_header", inner, n));
            }
            erspan_vlan = Some(w & 0x0fff).filter(|v| *v != 0);
            inner += if last & 0x01 != 0 { 20 } else { 12 };
            if inner > n {
                return Err(err("erspan_truncated", inner.min(n), n));
            }
            TunnelKind::Erspan { version: 3, session: s & 0x03ff }
        }
        _ => TunnelKind::Gre,
    };
    let outer = d.tunnel.map_or((outer_src, outer_dst), |t| (t.outer_src, t.outer_dst));
    let carries_ethernet = !matches!(proto, 0x0800 | 0x86dd);
    // Every layer's `body` is a prefix of the captured frame: offsets are frame offsets.
    let inner_frame_at = carries_ethernet.then_some(inner);
    d.tunnel = Some(Tunnel { kind, outer_src: outer.0, outer_dst: outer.1, depth: depth + 1, inner_frame_at });
    d.net = Net::Other;
    d.l4 = L4::None;
    d.payload = &[];
    if !carries_ethernet {
        // IP inside GRE: the link layer (MACs, VLAN) stays the carrier's.
        decode_ethertype(proto, body, inner, d)?;
        return Ok(true);
    }
    // A whole Ethernet frame inside: its MACs and VLAN tags are the hosts'.
    d.vlan = None;
    d.inner_vlan = None;
    let (ethertype, next, end) = link::decode_ethernet(body, inner, d)?;
    decode_ethertype(ethertype, &body[..end], next, d)?;
    if d.vlan.is_none() {
        // ERSPAN strips the mirrored frame's tag into its own header.
        d.vlan = erspan_vlan;
    }
    Ok(true)
}
