//! Hand-built frames for the reassembly tests: Ethernet + IPv4/IPv6 + TCP/UDP.
#![allow(dead_code)]

use wardline_common::Event;
use wardline_sensor::capture::{LinkType, RawPacket};
use wardline_sensor::pipeline::{Pipeline, PipelineStats};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

fn ether(src: [u8; 6], dst: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header; `frag` is the flags+offset field (offset in 8-byte units).
fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, id: u16, frag: u16, payload_len: usize) -> Vec<u8> {
    let total = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// TCP header (20 bytes, or with `options` appended; options must be a multiple of 4).
pub fn tcp_header(sp: u16, dp: u16, seq: u32, ack: u32, flags: u8, options: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sp.to_be_bytes());
    t.extend_from_slice(&dp.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push((((20 + options.len()) / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(options);
    t
}

pub struct Conn {
    pub client: [u8; 4],
    pub server: [u8; 4],
    pub cport: u16,
    pub sport: u16,
}

impl Conn {
    /// A TCP frame from the client (`to_server`) or the server.
    pub fn tcp(&self, to_server: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        self.tcp_opts(to_server, seq, flags, &[], payload)
    }
    pub fn tcp_opts(&self, to_server: bool, seq: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let (smac, dmac, sip, dip, sp, dp) = if to_server {
            (CLIENT_MAC, SERVER_MAC, self.client, self.server, self.cport, self.sport)
        } else {
            (SERVER_MAC, CLIENT_MAC, self.server, self.client, self.sport, self.cport)
        };
        let t = tcp_header(sp, dp, seq, 0, flags, options);
        let mut f = ether(smac, dmac, 0x0800);
        f.extend(ipv4(sip, dip, 6, 1, 0x4000, t.len() + payload.len()));
        f.extend(t);
        f.extend_from_slice(payload);
        f
    }
}

/// IPv4 fragments of one UDP datagram, cut every `chunk` bytes (a multiple of 8).
pub fn udp_v4_fragments(
    src: [u8; 4],
    dst: [u8; 4],
    sp: u16,
    dp: u16,
    id: u16,
    payload: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sp.to_be_bytes());
    udp.extend_from_slice(&dp.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut out = Vec::new();
    let mut off = 0;
    while off < udp.len() {
        let end = (off + chunk).min(udp.len());
        let more = end < udp.len();
        let frag = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
        let mut f = ether(CLIENT_MAC, SERVER_MAC, 0x0800);
        f.extend(ipv4(src, dst, 17, id, frag, end - off));
        f.extend_from_slice(&udp[off..end]);
        out.push(f);
        off = end;
    }
    out
}

/// IPv6 fragments (Fragment header right after the fixed header) of one UDP datagram.
pub fn udp_v6_fragments(
    src: [u8; 16],
    dst: [u8; 16],
    sp: u16,
    dp: u16,
    id: u32,
    payload: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sp.to_be_bytes());
    udp.extend_from_slice(&dp.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut out = Vec::new();
    let mut off = 0;
    while off < udp.len() {
        let end = (off + chunk).min(udp.len());
        let more = end < udp.len();
        let mut f = ether(CLIENT_MAC, SERVER_MAC, 0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + end - off) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&((off as u16) | more as u16).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&udp[off..end]);
        out.push(f);
        off = end;
    }
    out
}

/// Run frames (1 ms apart) through a fresh pipeline; all events and the final stats.
pub fn run_frames(pl: Pipeline, frames: &[Vec<u8>]) -> (Vec<Event>, PipelineStats) {
    let mut pl = pl;
    for (i, f) in frames.iter().enumerate() {
        pl.process(&RawPacket {
            ts_us: 1_700_000_000_000_000 + i as u64 * 1000,
            linktype: LinkType::Ethernet,
            data: f,
            orig_len: f.len() as u32,
        });
    }
    pl.finish()
}

/// Every (field, value) of the device with `mac`.
pub fn evidence_of(events: &[Event], mac: [u8; 6]) -> Vec<(wardline_common::Field, String)> {
    let mut out = Vec::new();
    for e in events {
        if let Event::Device(d) = e {
            if d.mac.0 == mac {
                out.extend(d.evidence.iter().map(|e| (e.field, e.value.clone())));
            }
        }
    }
    out
}
