//! Test support for the discovery dissector tests: read real captures with the sensor's FileReader,
//! decode link/IP/UDP/TCP just far enough to hand payloads to dissectors, and reassemble
//! each TCP direction into one byte stream (in sequence order, stopping at the first gap).
//! This is deliberately small and separate from the sensor's capture/decode modules so
//! the dissector tests do not depend on them.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use wardline_common::MacAddr;
use wardline_sensor::dissect::{PacketCtx, Transport};

#[path = "../corpus/mod.rs"]
mod corpus;
#[allow(unused_imports)]
pub use corpus::{pcap, pcaps_dir};

/// Every capture file under the folder, sorted.
pub fn all_captures() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![pcaps_dir()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())).flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub struct Frame {
    pub ts_us: u64,
    pub linktype: u32,
    pub data: Vec<u8>,
}

/// Every frame of a capture, read with the sensor's own capture reader.
pub fn read_frames(path: &Path) -> Vec<Frame> {
    let mut r = wardline_sensor::capture::file::FileReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    while let Ok(Some(p)) = r.next_packet() {
        out.push(Frame { ts_us: p.ts_us, linktype: p.linktype.dlt(), data: p.data.to_vec() });
    }
    out
}

/// A decoded packet: UDP datagram, TCP segment or non-IP frame.
pub struct Packet {
    pub ctx: PacketCtx,
    pub payload: Vec<u8>,
    pub tcp_seq: u32,
    pub tcp_syn: bool,
}

fn ctx(ts_us: u64, src_mac: MacAddr, dst_mac: MacAddr, vlan: Option<u16>) -> PacketCtx {
    PacketCtx { ts_us, src_mac, dst_mac, vlan, src_ip: None, dst_ip: None, src_port: 0, dst_port: 0, transport: Transport::L2 { ethertype: 0 } }
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

pub fn decode(f: &Frame) -> Option<Packet> {
    let d = &f.data[..];
    let mut c = ctx(f.ts_us, MacAddr::ZERO, MacAddr::ZERO, None);
    let (ethertype, l3) = match f.linktype {
        1 => {
            let mut dst = [0u8; 6];
            let mut src = [0u8; 6];
            dst.copy_from_slice(d.get(0..6)?);
            src.copy_from_slice(d.get(6..12)?);
            c.dst_mac = MacAddr(dst);
            c.src_mac = MacAddr(src);
            let mut off = 12;
            let mut et = be16(d, off)?;
            while et == 0x8100 || et == 0x88a8 {
                c.vlan = Some(be16(d, off + 2)? & 0x0fff);
                off += 4;
                et = be16(d, off)?;
            }
            if et <= 1500 {
                // 802.3 length field: LLC/SNAP frame.
                let body = d.get(off + 2..)?;
                let body = &body[..body.len().min(et as usize)];
                return Some(Packet { ctx: c, payload: body.to_vec(), tcp_seq: 0, tcp_syn: false });
            }
            (et, d.get(off + 2..)?)
        }
        0 => {
            let fam = u32::from_le_bytes(d.get(0..4)?.try_into().ok()?);
            let fam = if fam > 0xffff { fam.swap_bytes() } else { fam };
            (if fam == 2 { 0x0800 } else { 0x86dd }, d.get(4..)?)
        }
        101 | 12 | 14 | 228 | 229 => (if d.first()? >> 4 == 4 { 0x0800 } else { 0x86dd }, d),
        113 => (be16(d, 14)?, d.get(16..)?),
        276 => (be16(d, 0)?, d.get(20..)?),
        _ => return None,
    };
    let (proto, l4) = match ethertype {
        0x0800 => {
            let ihl = ((*l3.first()? & 0x0f) as usize) * 4;
            let total = be16(l3, 2)? as usize;
            let frag = be16(l3, 6)?;
            if frag & 0x3fff != 0 {
                return None; // fragments: not reassembled here
            }
            c.src_ip = Some(IpAddr::V4(Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15])));
            c.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19])));
            let end = total.min(l3.len()).max(ihl);
            (l3[9], l3.get(ihl..end)?)
        }
        0x86dd => {
            let plen = be16(l3, 4)? as usize;
            let mut nh = *l3.get(6)?;
            let s: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            let t: [u8; 16] = l3.get(24..40)?.try_into().ok()?;
            c.src_ip = Some(IpAddr::V6(Ipv6Addr::from(s)));
            c.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(t)));
            let body = l3.get(40..(40 + plen).min(l3.len()))?;
            let mut off = 0;
            while matches!(nh, 0 | 43 | 44 | 60) {
                if nh == 44 {
                    return None;
                }
                let next = *body.get(off)?;
                off += (*body.get(off + 1)? as usize + 1) * 8;
                nh = next;
            }
            (nh, body.get(off..)?)
        }
        et => {
            c.transport = Transport::L2 { ethertype: et };
            return Some(Packet { ctx: c, payload: l3.to_vec(), tcp_seq: 0, tcp_syn: false });
        }
    };
    match proto {
        17 => {
            c.src_port = be16(l4, 0)?;
            c.dst_port = be16(l4, 2)?;
            let len = be16(l4, 4)? as usize;
            c.transport = Transport::Udp;
            let end = if len >= 8 { len.min(l4.len()) } else { l4.len() };
            Some(Packet { ctx: c, payload: l4.get(8..end)?.to_vec(), tcp_seq: 0, tcp_syn: false })
        }
        6 => {
            c.src_port = be16(l4, 0)?;
            c.dst_port = be16(l4, 2)?;
            let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
            let doff = ((*l4.get(12)? >> 4) as usize) * 4;
            let flags = *l4.get(13)?;
            c.transport = Transport::Tcp;
            Some(Packet { ctx: c, payload: l4.get(doff..)?.to_vec(), tcp_seq: seq, tcp_syn: flags & 0x02 != 0 })
        }
        _ => None,
    }
}

/// One reassembled TCP direction.
pub struct Stream {
    pub ctx: PacketCtx,
    pub data: Vec<u8>,
}

const STREAM_CAP: usize = 4 << 20;

/// Everything in a capture: UDP and L2 packets in order, TCP as per-direction streams.
pub struct Capture {
    pub datagrams: Vec<Packet>,
    pub streams: Vec<Stream>,
}

pub fn load(path: &Path) -> Capture {
    let mut datagrams = Vec::new();
    type Key = (Option<IpAddr>, u16, Option<IpAddr>, u16);
    let mut order: Vec<Key> = Vec::new();
    let mut segs: HashMap<Key, (PacketCtx, Option<u32>, Vec<(u32, Vec<u8>)>)> = HashMap::new();
    for f in read_frames(path) {
        let Some(p) = decode(&f) else { continue };
        if p.ctx.transport != Transport::Tcp {
            datagrams.push(p);
            continue;
        }
        let key = (p.ctx.src_ip, p.ctx.src_port, p.ctx.dst_ip, p.ctx.dst_port);
        let e = segs.entry(key).or_insert_with(|| {
            order.push(key);
            (p.ctx.clone(), None, Vec::new())
        });
        if p.tcp_syn {
            e.1 = Some(p.tcp_seq.wrapping_add(1));
        }
        if !p.payload.is_empty() {
            e.2.push((p.tcp_seq, p.payload));
        }
    }
    let mut streams = Vec::new();
    for key in order {
        let (ctx, isn, mut list) = segs.remove(&key).unwrap();
        if list.is_empty() {
            continue;
        }
        let base = isn.unwrap_or(list[0].0);
        // Segments before the ISN (keep-alives) are dropped by the wrap into huge offsets.
        list.sort_by_key(|(s, _)| s.wrapping_sub(base));
        let mut data = Vec::new();
        for (seq, payload) in list {
            let off = seq.wrapping_sub(base) as usize;
            if off > data.len() || off > STREAM_CAP {
                break; // gap
            }
            let skip = data.len() - off;
            if skip < payload.len() {
                data.extend_from_slice(&payload[skip..]);
            }
        }
        streams.push(Stream { ctx, data });
    }
    Capture { datagrams, streams }
}

/// Run one dissector over a capture the way the pipeline would: every datagram/frame and
/// every reassembled TCP direction it wants. Returns (ctx, finding) pairs and the errors.
pub fn run_dissector(
    path: &Path,
    d: &dyn wardline_sensor::dissect::Dissector,
) -> (Vec<(PacketCtx, wardline_sensor::dissect::Finding)>, Vec<wardline_sensor::dissect::DissectError>) {
    let cap = load(path);
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let inputs = cap.datagrams.iter().map(|p| (&p.ctx, &p.payload[..])).chain(cap.streams.iter().map(|s| (&s.ctx, &s.data[..])));
    for (ctx, payload) in inputs {
        if !d.wants(ctx, payload) {
            continue;
        }
        let mut out = Vec::new();
        match d.dissect(ctx, payload, &mut out) {
            Ok(()) => found.extend(out.into_iter().map(|f| (ctx.clone(), f))),
            Err(e) => errors.push(e),
        }
    }
    (found, errors)
}

/// Values of one field found on the given side.
pub fn values(found: &[(PacketCtx, wardline_sensor::dissect::Finding)], field: wardline_common::Field) -> Vec<String> {
    let mut v: Vec<String> = found.iter().filter(|(_, f)| f.field == field).map(|(_, f)| f.value.clone()).collect();
    v.sort();
    v.dedup();
    v
}
