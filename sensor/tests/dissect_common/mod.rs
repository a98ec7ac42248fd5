//! Test support for the discovery dissector tests: read real captures with the sensor's FileReader,
//! decode them with the sensor's decoder, and reassemble each TCP direction into one byte
//! stream (in sequence order, stopping at the first gap) with a deliberately simple
//! reassembler, so the dissectors are tested apart from the sensor's stream reassembly.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use wardline_sensor::dissect::{PacketCtx, Transport};

#[allow(unused_imports)]
pub use crate::corpus::{all_pcaps, pcap, pcaps_dir};

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

/// The sensor's decoder (tested on its own in the dataplane and tshark_diff tests) turns a
/// frame into a payload and its context; IP fragments and non-TCP/UDP IP packets are skipped.
pub fn decode(f: &Frame) -> Option<Packet> {
    use wardline_sensor::decode::{Fragment, Net, L4};
    let d = wardline_sensor::decode::decode(wardline_sensor::capture::LinkType::from_dlt(f.linktype), &f.data).ok()?;
    let ctx = PacketCtx::of(&d, f.ts_us);
    let (mut tcp_seq, mut tcp_syn) = (0, false);
    if let Net::Ip(h) = d.net {
        if h.fragment != Fragment::Whole {
            return None;
        }
        match d.l4 {
            L4::Udp { .. } => {}
            L4::Tcp(t) => (tcp_seq, tcp_syn) = (t.seq, t.flags & 0x02 != 0),
            _ => return None,
        }
    }
    Some(Packet { ctx, payload: d.payload.to_vec(), tcp_seq, tcp_syn })
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
    /// A direction's context, its initial sequence number if the SYN was seen, and its
    /// (sequence number, payload) segments.
    type Segments = (PacketCtx, Option<u32>, Vec<(u32, Vec<u8>)>);
    let mut segs: HashMap<Key, Segments> = HashMap::new();
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
    let inputs =
        cap.datagrams.iter().map(|p| (&p.ctx, &p.payload[..])).chain(cap.streams.iter().map(|s| (&s.ctx, &s.data[..])));
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
