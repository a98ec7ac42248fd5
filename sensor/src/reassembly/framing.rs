//! Application message framing over one reassembled TCP direction.
//!
//! The reassembler hands in-order bytes to a [`Framer`], which cuts them into whole
//! messages for the dissectors: DICOM PDUs (6-byte header with a 32-bit length), HL7 over
//! MLLP (0x0B … 0x1C 0x0D), HTTP heads (start line and headers up to CRLF CRLF, body
//! skipped by Content-Length), TLS handshakes (records gathered until the handshake
//! messages inside end on a record boundary, so a ClientHello spanning records arrives
//! whole), and NetBIOS session messages (4-byte header, SMB inside). Bytes that are not
//! at a message start of the direction's protocol are passed on as one chunk, which is
//! what a dissector saw before reassembly existed.
//!
//! Large messages whose head says everything (DICOM P-DATA, SMB reads and writes) are
//! delivered as a bounded prefix and the rest is skipped without buffering.

use crate::dissect::{dicom, http};

/// The framing a direction uses, chosen from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Not recognised yet; each contiguous chunk is delivered as is and re-examined.
    Unknown,
    Dicom,
    Mllp,
    Http,
    Tls,
    NetBios,
}

/// What [`frame`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framed {
    /// A message header is incomplete, or its end is not buffered yet.
    Need,
    /// A message of `len` bytes, of which the first `deliver` go to the dissector (the
    /// rest is skipped).
    Message { len: usize, deliver: usize },
    /// `len` bytes of no interest (TLS alerts, NetBIOS keepalives).
    Skip(usize),
    /// Nothing after this point is cleartext (TLS ChangeCipherSpec or application data).
    Done,
    /// The bytes are not a message start of this protocol.
    NotAMessage,
}

/// Bounds applied while framing.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message buffered whole; longer ones are delivered as this many bytes.
    pub max_message: usize,
    /// Bytes delivered of messages whose head is all a dissector reads.
    pub head_prefix: usize,
}

const MLLP_START: u8 = 0x0b;
const MLLP_END: [u8; 2] = [0x1c, 0x0d];
const DICOM_PDATA: u8 = 4;

/// Pick the framing from a direction's first bytes (and whether it is on an SMB port).
pub fn detect(bytes: &[u8], netbios_port: bool) -> Kind {
    let Some(&first) = bytes.first() else {
        return Kind::Unknown;
    };
    if first == MLLP_START {
        return Kind::Mllp;
    }
    if dicom::is_tls_record(bytes) {
        return Kind::Tls;
    }
    if bytes.len() >= 2 && (1..=7).contains(&first) && bytes[1] == 0 {
        return Kind::Dicom;
    }
    if matches!(first, 0x00 | 0x81..=0x85) && (netbios_port || smb_magic(bytes)) {
        return Kind::NetBios;
    }
    if http::looks_like_http(bytes) {
        return Kind::Http;
    }
    Kind::Unknown
}

fn smb_magic(bytes: &[u8]) -> bool {
    matches!(bytes.get(4..8), Some([0xfd..=0xff, b'S', b'M', b'B']))
}

/// Find the first message at the start of `buf` under framing `kind`.
pub fn frame(kind: Kind, buf: &[u8], lim: Limits) -> Framed {
    match kind {
        Kind::Unknown => Framed::NotAMessage,
        Kind::Dicom => frame_dicom(buf, lim),
        Kind::Mllp => frame_mllp(buf),
        Kind::Http => frame_http(buf),
        Kind::Tls => frame_tls(buf, lim),
        Kind::NetBios => frame_netbios(buf, lim),
    }
}

fn frame_dicom(buf: &[u8], lim: Limits) -> Framed {
    match buf {
        [] => Framed::Need,
        [t, ..] if !(1..=7).contains(t) => Framed::NotAMessage,
        [_, r, ..] if *r != 0 => Framed::NotAMessage,
        _ => match dicom::pdu_len(buf) {
            None => Framed::Need,
            Some(len) if buf[0] == DICOM_PDATA => Framed::Message { len, deliver: len.min(lim.head_prefix) },
            Some(len) => Framed::Message { len, deliver: len.min(lim.max_message) },
        },
    }
}

fn frame_mllp(buf: &[u8]) -> Framed {
    if buf.first() != Some(&MLLP_START) {
        return Framed::NotAMessage;
    }
    match buf.windows(2).position(|w| w == MLLP_END) {
        Some(i) => Framed::Message { len: i + 2, deliver: i + 2 },
        None => Framed::Need,
    }
}

fn frame_http(buf: &[u8]) -> Framed {
    if !http::looks_like_http(buf) {
        // A start line cut after a few bytes is still a start line.
        let short_prefix = buf.len() < 8 && buf.iter().all(|b| b.is_ascii_uppercase() || *b == b'/');
        return if short_prefix { Framed::Need } else { Framed::NotAMessage };
    }
    let Some(i) = find(buf, b"\r\n\r\n") else {
        return Framed::Need;
    };
    let head = &buf[..i + 4];
    Framed::Message { len: head.len().saturating_add(http_body_len(head)), deliver: head.len() }
}

/// Body bytes following an HTTP head, when the head says so with Content-Length.
/// Chunked bodies and responses without a length are left to resynchronise at the
/// next segment that starts with a start line.
fn http_body_len(head: &[u8]) -> usize {
    if head.starts_with(b"HTTP/1.") {
        // 1xx, 204 and 304 never carry a body, whatever their headers say.
        let status = head.get(9..12).unwrap_or(b"000");
        if status[0] == b'1' || status == b"204" || status == b"304" {
            return 0;
        }
    }
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
            return v.parse::<usize>().unwrap_or(0);
        }
    }
    0
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const TLS_ALERT: u8 = 21;
const TLS_HANDSHAKE: u8 = 22;

fn frame_tls(buf: &[u8], lim: Limits) -> Framed {
    if buf.len() < 5 {
        return match buf {
            [t, ..] if !(20..=24).contains(t) => Framed::NotAMessage,
            [_, v, ..] if *v != 3 => Framed::NotAMessage,
            _ => Framed::Need,
        };
    }
    if !(20..=24).contains(&buf[0]) || buf[1] != 3 {
        return Framed::NotAMessage;
    }
    let rec_len = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
    match buf[0] {
        TLS_HANDSHAKE => {}
        TLS_ALERT => return Framed::Skip(rec_len),
        // ChangeCipherSpec, application data, heartbeat: the rest is encrypted.
        _ => return Framed::Done,
    }
    // Gather handshake records until the handshake messages inside end at a record end.
    let mut pos = 0;
    let mut msg_left = 0usize; // bytes of the current handshake message still to come
    let mut hdr = [0u8; 4];
    let mut hdr_have = 0usize;
    loop {
        if pos + 5 > buf.len() {
            return Framed::Need;
        }
        if buf[pos] != TLS_HANDSHAKE || buf[pos + 1] != 3 {
            // The handshake message was cut short by another record type: deliver what we have.
            return Framed::Message { len: pos, deliver: pos.min(lim.max_message) };
        }
        let end = pos + 5 + u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
        if end > buf.len() {
            if end > lim.max_message && pos > 0 {
                return Framed::Message { len: pos, deliver: pos.min(lim.max_message) };
            }
            return Framed::Need;
        }
        let mut p = pos + 5;
        while p < end {
            if msg_left > 0 {
                let take = msg_left.min(end - p);
                msg_left -= take;
                p += take;
            } else {
                hdr[hdr_have] = buf[p];
                hdr_have += 1;
                p += 1;
                if hdr_have == 4 {
                    msg_left = ((hdr[1] as usize) << 16) | ((hdr[2] as usize) << 8) | hdr[3] as usize;
                    hdr_have = 0;
                }
            }
        }
        pos = end;
        if msg_left == 0 && hdr_have == 0 {
            return Framed::Message { len: pos, deliver: pos.min(lim.max_message) };
        }
        if pos >= lim.max_message {
            return Framed::Message { len: pos, deliver: lim.max_message };
        }
    }
}

fn frame_netbios(buf: &[u8], lim: Limits) -> Framed {
    let Some(&ty) = buf.first() else {
        return Framed::Need;
    };
    if !matches!(ty, 0x00 | 0x81..=0x85) {
        return Framed::NotAMessage;
    }
    if buf.len() < 4 {
        return Framed::Need;
    }
    // Direct SMB (445) uses a 24-bit length; NetBIOS (139) 17 bits with the other flag
    // bits zero, so reading 24 bits fits both.
    let len = 4 + (((buf[1] as usize) << 16) | ((buf[2] as usize) << 8) | buf[3] as usize);
    if ty == 0x00 {
        Framed::Message { len, deliver: len.min(lim.head_prefix) }
    } else {
        Framed::Skip(len)
    }
}

/// Per-direction framing state: the chosen kind, an incomplete message, bytes to skip.
#[derive(Debug)]
pub struct Framer {
    pub kind: Kind,
    netbios_port: bool,
    /// Head of a message whose end has not arrived.
    pending: Vec<u8>,
    /// Bytes still to discard (a message body or the unwanted tail of a large message).
    skip: u64,
    /// Nothing more of interest will come in this direction.
    done: bool,
}

impl Framer {
    pub fn new(netbios_port: bool) -> Framer {
        Framer { kind: Kind::Unknown, netbios_port, pending: Vec::new(), skip: 0, done: false }
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    pub fn netbios_port(&self) -> bool {
        self.netbios_port
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Feed in-order bytes; whole messages (or unframed chunks) go to `out`.
    pub fn feed(&mut self, data: &[u8], lim: Limits, out: &mut dyn FnMut(&[u8])) {
        if self.done {
            return;
        }
        if self.pending.is_empty() {
            // Fast path: frame straight from the segment, copy only an incomplete tail.
            let used = self.process(data, lim, out);
            if used < data.len() {
                self.pending.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            let used = self.process(&buf, lim, out);
            buf.drain(..used);
            self.pending = buf;
        }
    }

    /// Returns how many bytes of `buf` were consumed; the rest is an incomplete message.
    fn process(&mut self, buf: &[u8], lim: Limits, out: &mut dyn FnMut(&[u8])) -> usize {
        let mut pos = 0;
        loop {
            if self.done {
                return buf.len();
            }
            if self.skip > 0 {
                let n = self.skip.min((buf.len() - pos) as u64);
                pos += n as usize;
                self.skip -= n;
            }
            let rest = &buf[pos..];
            if rest.is_empty() {
                return pos;
            }
            if self.kind == Kind::Unknown {
                self.kind = detect(rest, self.netbios_port);
            }
            match frame(self.kind, rest, lim) {
                Framed::Message { len, deliver } => {
                    let deliver = deliver.min(len);
                    if rest.len() < deliver {
                        return pos;
                    }
                    if deliver > 0 {
                        out(&rest[..deliver]);
                    }
                    pos += deliver;
                    self.skip = (len - deliver) as u64;
                    if len == 0 {
                        // Defensive: a zero-length frame would loop forever.
                        out(rest);
                        return buf.len();
                    }
                }
                Framed::Need => {
                    if rest.len() >= lim.max_message {
                        out(rest);
                        return buf.len();
                    }
                    return pos;
                }
                Framed::Skip(n) => self.skip = n.max(1) as u64,
                Framed::Done => {
                    self.done = true;
                    self.pending = Vec::new();
                    return buf.len();
                }
                Framed::NotAMessage => {
                    out(rest);
                    return buf.len();
                }
            }
        }
    }

    /// `len` bytes of the stream are missing. Inside a skipped body framing survives;
    /// otherwise the incomplete message is dropped (returned as dropped bytes) and the
    /// next bytes are taken as they come.
    pub fn gap(&mut self, len: u64) -> usize {
        if self.skip >= len && self.pending.is_empty() {
            self.skip -= len;
            return 0;
        }
        self.skip = 0;
        let dropped = self.pending.len();
        self.pending = Vec::new();
        dropped
    }

    /// The direction ended: deliver an incomplete message as it is (the dissector decides
    /// whether a truncated message still says something).
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) {
        if !self.pending.is_empty() && !self.done {
            out(&self.pending);
        }
        self.pending = Vec::new();
        self.skip = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits { max_message: 65536, head_prefix: 4096 };

    fn collect(f: &mut Framer, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for p in parts {
            f.feed(p, LIM, &mut |m| got.push(m.to_vec()));
        }
        got
    }

    #[test]
    fn mllp_message_split_three_ways_arrives_whole() {
        let msg = b"\x0bMSH|^~\\&|A|B|C|D|20240101||ADT^A01|1|P|2.5\r\x1c\x0d";
        let mut f = Framer::new(false);
        let got = collect(&mut f, &[&msg[..5], &msg[5..20], &msg[20..]]);
        assert_eq!(got, vec![msg.to_vec()]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn http_body_is_skipped_by_content_length() {
        let a = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut f = Framer::new(false);
        let got = collect(&mut f, &[&a[..10], &a[10..]]);
        assert_eq!(got.len(), 2);
        assert!(got[0].starts_with(b"POST") && got[0].ends_with(b"\r\n\r\n"));
        assert!(got[1].starts_with(b"GET"));
    }

    #[test]
    fn tls_handshake_spanning_two_records_is_one_message() {
        // A 10-byte handshake message split over two records of 6 and 8 bytes (4 + 10 = 14).
        let hs: Vec<u8> = [1u8, 0, 0, 10].iter().copied().chain(0..10u8).collect();
        let mut wire = vec![22, 3, 1, 0, 6];
        wire.extend_from_slice(&hs[..6]);
        wire.extend_from_slice(&[22, 3, 1, 0, 8]);
        wire.extend_from_slice(&hs[6..]);
        wire.extend_from_slice(&[23, 3, 3, 0, 2, 9, 9]);
        let mut f = Framer::new(false);
        let got = collect(&mut f, &[&wire[..7], &wire[7..]]);
        assert_eq!(got, vec![wire[..24].to_vec()]);
        assert!(f.is_done(), "application data ends the cleartext");
    }

    #[test]
    fn large_dicom_pdata_delivers_a_prefix_and_skips_the_rest() {
        let mut pdu = vec![4u8, 0];
        pdu.extend_from_slice(&(100_000u32).to_be_bytes());
        pdu.resize(6 + 100_000, 7);
        let assoc_release = [5u8, 0, 0, 0, 0, 4, 0, 0, 0, 0];
        let mut wire = pdu.clone();
        wire.extend_from_slice(&assoc_release);
        let mut f = Framer::new(false);
        let parts: Vec<&[u8]> = wire.chunks(1460).collect();
        let got = collect(&mut f, &parts);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], pdu[..4096].to_vec());
        assert_eq!(got[1], assoc_release.to_vec());
        assert!(f.buffered() < 4096);
    }

    #[test]
    fn unframed_bytes_pass_through_as_chunks() {
        let mut f = Framer::new(false);
        let got = collect(&mut f, &[b"SSH-2.0-OpenSSH_9.6\r\n", b"more"]);
        assert_eq!(got, vec![b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), b"more".to_vec()]);
    }
}
