//! IPv4 and IPv6 (with extension headers).

use super::{err, l4, Bytes, DecodeError, Decoded, Fragment, IpHeader, Net, L4};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most IPv6 extension headers we walk before calling the chain malformed.
const MAX_IPV6_EXT: usize = 16;

pub(super) fn decode_ipv4<'a>(frame: &'a [u8], off: usize, d: &mut Decoded<'a>) -> Result<(), DecodeError> {
    let b = Bytes { data: frame };
    let n = frame.len();
    let vihl = b.u8(off).ok_or(err("ipv4_truncated", off, n))?;
    if vihl >> 4 != 4 {
        return Err(err("ipv4_bad_version", off, n));
    }
    let ihl = (vihl & 0x0f) as usize * 4;
    if ihl < 20 {
        return Err(err("ipv4_bad_ihl", off, n));
    }
    if off + ihl > n {
        return Err(err("ipv4_truncated", off, n));
    }
    let total = b.u16(off + 2).unwrap_or(0) as usize;
    // total == 0 happens with TCP segmentation offload captures: trust the frame.
    let end = if total == 0 {
        n
    } else if total < ihl {
        return Err(err("ipv4_bad_length", off, n));
    } else {
        (off + total).min(n)
    };
    let frag = b.u16(off + 6).unwrap_or(0);
    let frag_off = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let fragment = if frag_off != 0 {
        Fragment::Later
    } else if more {
        Fragment::First
    } else {
        Fragment::Whole
    };
    let ttl = b.u8(off + 8).unwrap_or(0);
    let proto = b.u8(off + 9).unwrap_or(0);
    let src = Ipv4Addr::from(b.array::<4>(off + 12).unwrap_or([0; 4]));
    let dst = Ipv4Addr::from(b.array::<4>(off + 16).unwrap_or([0; 4]));
    d.net = Net::Ip(IpHeader { src: IpAddr::V4(src), dst: IpAddr::V4(dst), proto, ttl, fragment });
    let body = &frame[..end];
    if fragment == Fragment::Later {
        d.l4 = L4::None;
        d.payload = body.get(off + ihl..).unwrap_or(&[]);
        return Ok(());
    }
    l4::decode_l4(proto, false, body, off + ihl, d)
}

pub(super) fn decode_ipv6<'a>(frame: &'a [u8], off: usize, d: &mut Decoded<'a>) -> Result<(), DecodeError> {
    let b = Bytes { data: frame };
    let n = frame.len();
    let v = b.u8(off).ok_or(err("ipv6_truncated", off, n))?;
    if v >> 4 != 6 {
        return Err(err("ipv6_bad_version", off, n));
    }
    if off + 40 > n {
        return Err(err("ipv6_truncated", off, n));
    }
    let plen = b.u16(off + 4).unwrap_or(0) as usize;
    let end = if plen == 0 { n } else { (off + 40 + plen).min(n) };
    let mut next = b.u8(off + 6).unwrap_or(59);
    let hop = b.u8(off + 7).unwrap_or(0);
    let src = Ipv6Addr::from(b.array::<16>(off + 8).unwrap_or([0; 16]));
    let dst = Ipv6Addr::from(b.array::<16>(off + 24).unwrap_or([0; 16]));
    let body = &frame[..end];
    let bb = Bytes { data: body };
    let mut p = off + 40;
    let mut fragment = Fragment::Whole;
    let mut walked = 0;
    loop {
        match next {
            // hop-by-hop, routing, destination options, mobility, HIP, shim6
            0 | 43 | 60 | 135 | 139 | 140 => {
                let nh = bb.u8(p).ok_or(err("ipv6_ext_truncated", p, n))?;
                let len = (bb.u8(p + 1).ok_or(err("ipv6_ext_truncated", p, n))? as usize + 1) * 8;
                next = nh;
                p += len;
            }
            44 => {
                let nh = bb.u8(p).ok_or(err("ipv6_ext_truncated", p, n))?;
                let fo = bb.u16(p + 2).ok_or(err("ipv6_ext_truncated", p, n))?;
                let frag_off = fo >> 3;
                let more = fo & 1 != 0;
                fragment = if frag_off != 0 {
                    Fragment::Later
                } else if more {
                    Fragment::First
                } else {
                    Fragment::Whole // atomic fragment
                };
                next = nh;
                p += 8;
            }
            51 => {
                // Authentication header: length in 4-byte units minus 2.
                let nh = bb.u8(p).ok_or(err("ipv6_ext_truncated", p, n))?;
                let len = (bb.u8(p + 1).ok_or(err("ipv6_ext_truncated", p, n))? as usize + 2) * 4;
                next = nh;
                p += len;
            }
            _ => break,
        }
        if p > body.len() {
            return Err(err("ipv6_ext_truncated", p.min(n), n));
        }
        walked += 1;
        if walked > MAX_IPV6_EXT {
            return Err(err("ipv6_ext_too_many", p, n));
        }
        if fragment == Fragment::Later {
            break;
        }
    }
    d.net = Net::Ip(IpHeader { src: IpAddr::V6(src), dst: IpAddr::V6(dst), proto: next, ttl: hop, fragment });
    if fragment == Fragment::Later {
        d.l4 = L4::None;
        d.payload = body.get(p..).unwrap_or(&[]);
        return Ok(());
    }
    if next == 59 {
        d.l4 = L4::None;
        return Ok(());
    }
    l4::decode_l4(next, true, body, p, d)
}
