//! Link layers: Ethernet II / 802.3, Linux SLL and SLL2, BSD NULL/LOOP, raw IP,
//! radiotap + 802.11 data frames; and ARP.

use super::{err, Arp, Bytes, DecodeError, Decoded, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::capture::LinkType;
use std::net::Ipv4Addr;
use wardline_common::MacAddr;

/// Returns (ethertype, offset of the network header, usable end of the frame).
pub(super) fn decode_link(lt: LinkType, frame: &[u8], d: &mut Decoded<'_>) -> Result<(u16, usize, usize), DecodeError> {
    let b = Bytes { data: frame };
    let n = frame.len();
    match lt {
        LinkType::Ethernet => decode_ethernet(frame, 0, d),
        LinkType::LinuxSll => {
            let hatype = b.u16(2).ok_or(err("sll_truncated", 0, n))?;
            let halen = b.u16(4).ok_or(err("sll_truncated", 0, n))?;
            let proto = b.u16(14).ok_or(err("sll_truncated", 0, n))?;
            if hatype == 1 && halen == 6 {
                d.src_mac = b.mac(6).unwrap_or(MacAddr::ZERO);
            }
            Ok((sll_proto(hatype, proto), 16, n))
        }
        LinkType::LinuxSll2 => {
            let proto = b.u16(0).ok_or(err("sll2_truncated", 0, n))?;
            let hatype = b.u16(8).ok_or(err("sll2_truncated", 0, n))?;
            let halen = b.u8(11).ok_or(err("sll2_truncated", 0, n))?;
            if n < 20 {
                return Err(err("sll2_truncated", 0, n));
            }
            if hatype == 1 && halen == 6 {
                d.src_mac = b.mac(12).unwrap_or(MacAddr::ZERO);
            }
            Ok((sll_proto(hatype, proto), 20, n))
        }
        LinkType::Null | LinkType::Loop => {
            let raw = b.array::<4>(0).ok_or(err("null_truncated", 0, n))?;
            let family = if lt == LinkType::Loop {
                u32::from_be_bytes(raw)
            } else {
                // Host byte order of the capturing machine: whichever reading is small.
                let le = u32::from_le_bytes(raw);
                if le > 0xffff {
                    u32::from_be_bytes(raw)
                } else {
                    le
                }
            };
            let et = match family {
                2 => ETHERTYPE_IPV4,
                10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => 0,
            };
            Ok((et, 4, n))
        }
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => {
            let v = b.u8(0).ok_or(err("rawip_truncated", 0, n))? >> 4;
            let et = match v {
                4 => ETHERTYPE_IPV4,
                6 => ETHERTYPE_IPV6,
                _ => return Err(err("rawip_bad_version", 0, n)),
            };
            Ok((et, 0, n))
        }
        LinkType::Radiotap => decode_radiotap(frame, d),
        LinkType::Other(_) => Err(err("unsupported_linktype", 0, n)),
    }
}

/// An Ethernet header at `off` (the frame's start, or inside a GRE/ERSPAN tunnel).
/// Returns (ethertype, offset of the network header, usable end of the frame).
pub(super) fn decode_ethernet(
    frame: &[u8],
    off: usize,
    d: &mut Decoded<'_>,
) -> Result<(u16, usize, usize), DecodeError> {
    let b = Bytes { data: frame };
    let n = frame.len();
    let dst = b.mac(off).ok_or(err("ethernet_truncated", off, n))?;
    let src = b.mac(off + 6).ok_or(err("ethernet_truncated", off, n))?;
    let et = b.u16(off + 12).ok_or(err("ethernet_truncated", off, n))?;
    d.dst_mac = dst;
    d.src_mac = src;
    if et <= 1500 {
        // 802.3 length field: LLC follows (CDP, STP, ...). Drop the padding.
        return Ok((0, off + 14, (off + 14 + et as usize).min(n)));
    }
    Ok((et, off + 14, n))
}

/// SLL protocol field: an ethertype for Ethernet-like devices; small values are
/// Linux-internal (802.2 LLC, CAN, ...) and carry no IP.
fn sll_proto(_hatype: u16, proto: u16) -> u16 {
    if proto < 0x0600 {
        0
    } else {
        proto
    }
}

fn decode_radiotap(frame: &[u8], d: &mut Decoded<'_>) -> Result<(u16, usize, usize), DecodeError> {
    let b = Bytes { data: frame };
    let n = frame.len();
    let version = b.u8(0).ok_or(err("radiotap_truncated", 0, n))?;
    let rt_len = u16::from_le_bytes(b.array::<2>(2).ok_or(err("radiotap_truncated", 0, n))?) as usize;
    if version != 0 || rt_len < 8 || rt_len > n {
        return Err(err("radiotap_bad_header", 0, n));
    }
    // Walk the present bitmaps to find the Flags field (FCS-at-end bit).
    let mut p = 4;
    let first_present = u32::from_le_bytes(b.array::<4>(p).ok_or(err("radiotap_truncated", 0, n))?);
    let mut present = first_present;
    while present & 0x8000_0000 != 0 {
        p += 4;
        if p + 4 > rt_len {
            return Err(err("radiotap_bad_header", 0, n));
        }
        present = u32::from_le_bytes(b.array::<4>(p).ok_or(err("radiotap_truncated", 0, n))?);
    }
    let mut field = p + 4;
    let mut end = n;
    if first_present & 0x1 != 0 {
        field = (field + 7) & !7; // TSFT is 8-byte aligned
        field += 8;
    }
    if first_present & 0x2 != 0 {
        if let Some(flags) = b.u8(field) {
            if flags & 0x10 != 0 && field < rt_len {
                end = n.saturating_sub(4).max(rt_len);
            }
        }
    }
    let w = Bytes { data: &frame[..end] };
    let o = rt_len;
    let fc0 = w.u8(o).ok_or(err("wlan_truncated", o, n))?;
    let fc1 = w.u8(o + 1).ok_or(err("wlan_truncated", o, n))?;
    let ftype = (fc0 >> 2) & 0x3;
    let subtype = fc0 >> 4;
    if ftype != 2 {
        // Management and control frames carry no IP; they are not errors.
        d.src_mac = w.mac(o + 10).unwrap_or(MacAddr::ZERO);
        return Ok((0, end, end));
    }
    let to_ds = fc1 & 0x1 != 0;
    let from_ds = fc1 & 0x2 != 0;
    let protected = fc1 & 0x40 != 0;
    let a1 = w.mac(o + 4).ok_or(err("wlan_truncated", o, n))?;
    let a2 = w.mac(o + 10).ok_or(err("wlan_truncated", o, n))?;
    let a3 = w.mac(o + 16).ok_or(err("wlan_truncated", o, n))?;
    let mut hdr = 24;
    let (sa, da) = match (to_ds, from_ds) {
        (false, false) => (a2, a1),
        (true, false) => (a2, a3),
        (false, true) => (a3, a1),
        (true, true) => {
            hdr += 6;
            (w.mac(o + 24).ok_or(err("wlan_truncated", o, n))?, a3)
        }
    };
    d.src_mac = sa;
    d.dst_mac = da;
    if subtype & 0x8 != 0 {
        hdr += 2; // QoS control
    }
    if subtype & 0x4 != 0 || protected {
        // Null data or encrypted payload: nothing we can read.
        return Ok((0, end, end));
    }
    let llc = o + hdr;
    match w.array::<6>(llc) {
        Some([0xaa, 0xaa, 0x03, 0, 0, 0]) => {
            let et = w.u16(llc + 6).ok_or(err("wlan_truncated", llc, n))?;
            Ok((et, llc + 8, end))
        }
        _ => Ok((0, llc.min(end), end)),
    }
}

pub(super) fn decode_arp(frame: &[u8], off: usize) -> Result<Arp, DecodeError> {
    let b = Bytes { data: frame };
    let n = frame.len();
    let t = |_| err("arp_truncated", off, n);
    let htype = b.u16(off).ok_or(()).map_err(t)?;
    let ptype = b.u16(off + 2).ok_or(()).map_err(t)?;
    let hlen = b.u8(off + 4).ok_or(()).map_err(t)?;
    let plen = b.u8(off + 5).ok_or(()).map_err(t)?;
    if htype != 1 || ptype != ETHERTYPE_IPV4 || hlen != 6 || plen != 4 {
        return Err(err("arp_unsupported", off, n));
    }
    let op = b.u16(off + 6).ok_or(()).map_err(t)?;
    let sha = b.mac(off + 8).ok_or(()).map_err(t)?;
    let spa = b.array::<4>(off + 14).ok_or(()).map_err(t)?;
    let tha = b.mac(off + 18).ok_or(()).map_err(t)?;
    let tpa = b.array::<4>(off + 24).ok_or(()).map_err(t)?;
    Ok(Arp { op, sender_mac: sha, sender_ip: Ipv4Addr::from(spa), target_mac: tha, target_ip: Ipv4Addr::from(tpa) })
}
