//! Shared by the medical/management dissector tests: read real captures with the sensor's FileReader,
//! decode them with the sensor's decoder, and reassemble TCP streams into application
//! messages (in-order, retransmissions trimmed, gaps reset) with a deliberately simple
//! reassembler, so the dissectors are tested apart from the sensor's stream reassembly.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use wardline_common::MacAddr;
use wardline_sensor::dissect::{PacketCtx, Transport};

#[allow(unused_imports)]
pub use crate::corpus::{pcap, pcaps_dir, pcaps_in};

#[derive(Clone, Debug)]
pub struct Packet {
    /// 1-based frame number, as tshark counts.
    pub frame: usize,
    pub ts_us: u64,
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<u16>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub ttl: u8,
    pub ip_version: u8,
    pub transport: Transport,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_seq: u32,
    pub tcp_flags: u8,
    /// TCP header bytes (with options); empty for UDP.
    pub tcp_header: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Packet {
    pub fn ctx(&self) -> PacketCtx {
        PacketCtx {
            ts_us: self.ts_us,
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            vlan: self.vlan,
            src_ip: Some(self.src_ip),
            dst_ip: Some(self.dst_ip),
            src_port: self.src_port,
            dst_port: self.dst_port,
            transport: self.transport,
        }
    }
}

/// Read all IP/TCP/UDP packets of a pcap or pcapng file.
pub fn read_packets(path: &Path) -> Vec<Packet> {
    // The sensor's own capture reader (pcap and pcapng, every link type the corpus has).
    let mut r = wardline_sensor::capture::file::FileReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let mut frames: Vec<(u32, u64, Vec<u8>)> = Vec::new();
    while let Some(p) = r.next_packet().unwrap_or_else(|e| panic!("{e}")) {
        frames.push((p.linktype.dlt(), p.ts_us, p.data.to_vec()));
    }
    frames.iter().enumerate().filter_map(|(i, (lt, ts, data))| decode(i + 1, *lt, *ts, data)).collect()
}

/// One TCP or UDP packet, decoded by the sensor's decoder (tested on its own in the
/// dataplane and tshark_diff tests).
fn decode(frame: usize, linktype: u32, ts_us: u64, data: &[u8]) -> Option<Packet> {
    use wardline_sensor::decode::{Net, L4};
    let d = wardline_sensor::decode::decode(wardline_sensor::capture::LinkType::from_dlt(linktype), data).ok()?;
    let Net::Ip(h) = d.net else { return None };
    let (transport, src_port, dst_port, tcp_seq, tcp_flags, tcp_header) = match d.l4 {
        L4::Tcp(t) => {
            // The header is the bytes just before the payload.
            let end = (d.payload.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
            let header = data.get(end.checked_sub(t.header_len as usize)?..end)?.to_vec();
            (Transport::Tcp, t.src_port, t.dst_port, t.seq, t.flags, header)
        }
        L4::Udp { src_port, dst_port } => (Transport::Udp, src_port, dst_port, 0, 0, Vec::new()),
        _ => return None,
    };
    Some(Packet {
        frame,
        ts_us,
        src_mac: d.src_mac,
        dst_mac: d.dst_mac,
        vlan: d.vlan,
        src_ip: h.src,
        dst_ip: h.dst,
        ttl: h.ttl,
        ip_version: if h.src.is_ipv4() { 4 } else { 6 },
        transport,
        src_port,
        dst_port,
        tcp_seq,
        tcp_flags,
        tcp_header,
        payload: d.payload.to_vec(),
    })
}

/// What a framing function says about the start of a stream buffer.
pub enum Frame {
    Complete(usize),
    NeedMore,
    /// The buffer does not start at a message boundary (mid-stream capture start, gap).
    NotAtBoundary,
}

/// A reassembled application message with the packet that completed it.
pub struct Message {
    pub last: Packet,
    pub bytes: Vec<u8>,
}

const MAX_STREAM_BUFFER: usize = 8 << 20;

/// Reassemble every TCP direction into messages with `framing`; UDP datagrams pass as they are.
pub fn messages(pkts: &[Packet], framing: impl Fn(&[u8]) -> Frame) -> Vec<Message> {
    type Key = (IpAddr, u16, IpAddr, u16);
    struct Stream {
        next_seq: Option<u32>,
        buf: Vec<u8>,
    }
    let mut streams: HashMap<Key, Stream> = HashMap::new();
    let mut out = Vec::new();
    for p in pkts {
        if p.transport != Transport::Tcp {
            if !p.payload.is_empty() {
                out.push(Message { last: p.clone(), bytes: p.payload.clone() });
            }
            continue;
        }
        let s = streams
            .entry((p.src_ip, p.src_port, p.dst_ip, p.dst_port))
            .or_insert(Stream { next_seq: None, buf: Vec::new() });
        let syn = p.tcp_flags & 0x02 != 0;
        let data_seq = if syn { p.tcp_seq.wrapping_add(1) } else { p.tcp_seq };
        if syn && p.payload.is_empty() {
            s.next_seq = Some(data_seq);
            s.buf.clear();
            continue;
        }
        if p.payload.is_empty() {
            continue;
        }
        let data: &[u8] = match s.next_seq {
            None => &p.payload,
            Some(next) => {
                let ahead = data_seq.wrapping_sub(next) as i32;
                if ahead > 0 {
                    s.buf.clear(); // gap: restart at this segment
                    &p.payload
                } else {
                    let dup = (-ahead) as usize;
                    if dup >= p.payload.len() {
                        continue; // pure retransmission
                    }
                    &p.payload[dup..]
                }
            }
        };
        s.next_seq = Some(data_seq.wrapping_add(p.payload.len() as u32));
        s.buf.extend_from_slice(data);
        loop {
            match framing(&s.buf) {
                Frame::Complete(n) if n <= s.buf.len() && n > 0 => {
                    let rest = s.buf.split_off(n);
                    out.push(Message { last: p.clone(), bytes: std::mem::replace(&mut s.buf, rest) });
                }
                Frame::NotAtBoundary => {
                    s.buf.clear();
                    break;
                }
                _ => break,
            }
        }
        if s.buf.len() > MAX_STREAM_BUFFER {
            s.buf.clear();
        }
    }
    out
}

pub fn dicom_framing(b: &[u8]) -> Frame {
    if b.is_empty() {
        return Frame::NeedMore;
    }
    match wardline_sensor::dissect::dicom::pdu_len(b) {
        Some(n) if n <= b.len() => Frame::Complete(n),
        Some(_) => Frame::NeedMore,
        None if b.len() < 6 && (1..=7).contains(&b[0]) => Frame::NeedMore,
        None => Frame::NotAtBoundary,
    }
}

pub fn smb_framing(b: &[u8]) -> Frame {
    if b.len() < 4 {
        return if b.is_empty() || matches!(b[0], 0x00 | 0x81..=0x85) { Frame::NeedMore } else { Frame::NotAtBoundary };
    }
    if !matches!(b[0], 0x00 | 0x81..=0x85) || b[1] & 0xFE != 0 {
        return Frame::NotAtBoundary;
    }
    let n = 4 + ((((b[1] & 1) as usize) << 16) | u16::from_be_bytes([b[2], b[3]]) as usize);
    if n <= b.len() {
        Frame::Complete(n)
    } else {
        Frame::NeedMore
    }
}

pub fn hl7_framing(b: &[u8]) -> Frame {
    match b.first() {
        None => Frame::NeedMore,
        Some(0x0B) => match b.windows(2).position(|w| w == [0x1C, 0x0D]) {
            Some(p) => Frame::Complete(p + 2),
            None => Frame::NeedMore,
        },
        // Unframed HL7 has no end marker: each segment's payload is one message.
        Some(b'M') if b.starts_with(b"MSH") => Frame::Complete(b.len()),
        _ => Frame::NotAtBoundary,
    }
}

/// One message per TCP segment / datagram (no reassembly).
pub fn per_packet(b: &[u8]) -> Frame {
    if b.is_empty() {
        Frame::NeedMore
    } else {
        Frame::Complete(b.len())
    }
}

use std::collections::BTreeSet;
use wardline_common::Field;
use wardline_sensor::dissect::{Dissector, Finding, Side};

/// Run `d` on every message it wants; findings keyed by the IP of the end they describe.
/// Returns the facts and the number of dissect errors.
pub fn facts(d: &dyn Dissector, msgs: &[Message]) -> (BTreeSet<(IpAddr, Field, String)>, usize) {
    let mut set = BTreeSet::new();
    let mut errors = 0;
    for m in msgs {
        let ctx = m.last.ctx();
        if !d.wants(&ctx, &m.bytes) {
            continue;
        }
        let mut out: Vec<Finding> = Vec::new();
        if d.dissect(&ctx, &m.bytes, &mut out).is_err() {
            errors += 1;
        }
        for f in out {
            // A device named in the payload by its MAC is neither end: listed under the
            // unspecified address.
            let ip = match f.side {
                Side::Src => m.last.src_ip,
                Side::Dst => m.last.dst_ip,
                Side::Mac(_) => IpAddr::from([0u8; 4]),
            };
            set.insert((ip, f.field, f.value));
        }
    }
    (set, errors)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP literal")
}

/// A context for hand-built payloads.
pub fn ctx(transport: Transport, src_port: u16, dst_port: u16) -> PacketCtx {
    PacketCtx {
        ts_us: 0,
        src_mac: MacAddr([0; 6]),
        dst_mac: MacAddr([0; 6]),
        vlan: None,
        src_ip: Some(ip("10.0.0.1")),
        dst_ip: Some(ip("10.0.0.2")),
        src_port,
        dst_port,
        transport,
    }
}
