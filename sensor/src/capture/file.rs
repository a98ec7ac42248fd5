//! pcap and pcapng file reader with byte offsets in every error.
//!
//! Bytes come from one of two sources. [`FileReader::open`] maps a regular file read-only
//! into memory (`capture/mapped.rs`) so records are parsed straight from the page
//! cache; anything else (a pipe, `/dev/stdin`, an empty file, a 32-bit target, a failed
//! mapping, and every [`FileReader::from_reader`] stream) is read through one growable
//! buffer. The same parsers run over both: they see one byte slice and a window
//! `start..end` of it, and the stream source refills the window on demand.
//!
//! Each record's header is peeked first so we know its length before asking the
//! `pcap-file` parsers to frame it. That gives (a) the byte offset of every record for
//! error messages, (b) a bound on memory (a record claiming more than
//! [`MAX_PCAP_RECORD`]/[`MAX_PCAPNG_BLOCK`] bytes is corrupt, not a reason to allocate),
//! and (c) zero-copy packets borrowed from the buffer or the mapping.
//!
//! Mapping a file has one hazard: if another process truncates the file while this one
//! reads it, the process dies of SIGBUS instead of reporting a truncated record (ripgrep
//! accepts the same trade-off). A file still being appended to is read up to its size at
//! open. Set [`NO_MMAP_ENV`] (`WARDLINE_NO_MMAP=1`) to always stream; see
//! docs/decisions/0009-mapped-capture-files.md.
//!
//! pcapng Enhanced Packet Block bodies are decoded here rather than by `pcap-file`,
//! because pcap-file 2.0 reads every EPB timestamp as nanoseconds and ignores the
//! interface's `if_tsresol` (microseconds by default), which would skew packet times 1000x.

use super::mapped::{MappedFile, RELEASE_EVERY};
use super::{CaptureError, LinkType, RawPacket};
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::PcapNgParser;
use pcap_file::{Endianness, PcapError, TsResolution};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest pcap record accepted; libpcap and Wireshark use the same 256 KiB ceiling.
pub const MAX_PCAP_RECORD: u64 = 262_144;
/// Largest pcapng block accepted (a packet block plus generous options).
pub const MAX_PCAPNG_BLOCK: u64 = 16 * 1024 * 1024;
const READ_CHUNK: usize = 1 << 20;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 1;
const PCAPNG_PB: u32 = 2;
const PCAPNG_SPB: u32 = 3;
const PCAPNG_EPB: u32 = 6;

#[derive(Clone, Copy, Debug)]
enum TsUnit {
    /// 10^-n seconds.
    Decimal(u32),
    /// 2^-n seconds.
    Binary(u32),
}

#[derive(Clone, Copy, Debug)]
struct IfaceInfo {
    linktype: LinkType,
    unit: TsUnit,
    offset_s: u64,
    snaplen: u32,
}

enum Format {
    Pcap { le: bool, nanos: bool, linktype: LinkType },
    PcapNg { parser: Box<PcapNgParser>, le: bool, ifaces: Vec<IfaceInfo>, last_ts_us: u64 },
}

/// Environment variable that, set to anything but empty or `0`, makes
/// [`FileReader::open`] stream files instead of mapping them.
pub const NO_MMAP_ENV: &str = "WARDLINE_NO_MMAP";

/// How [`FileReader::open_with`] reads a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Map regular files into memory instead of copying them through a buffer.
    pub mmap: bool,
    /// With a mapping, hand the parsed pages back to the kernel every this many bytes
    /// (at least 64 KiB), which bounds the mapping's share of resident memory.
    pub release_every: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { mmap: true, release_every: RELEASE_EVERY }
    }
}

impl OpenOptions {
    /// The defaults, with mapping turned off when [`NO_MMAP_ENV`] asks for it.
    pub fn from_env() -> Self {
        OpenOptions { mmap: !no_mmap_requested(std::env::var_os(NO_MMAP_ENV).as_deref()), ..Self::default() }
    }
}

fn no_mmap_requested(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Where the reader's bytes come from. Offsets `start..end` index [`Source::bytes`].
enum Source {
    /// Any byte stream, copied into `buf` as the parsers ask for bytes.
    Stream { file: Box<dyn Read + Send>, buf: Vec<u8> },
    /// A mapped regular file: every byte is present from the start.
    #[cfg_attr(not(all(unix, target_pointer_width = "64")), allow(dead_code))]
    Mapped(MappedFile),
}

impl Source {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Stream { buf, .. } => buf,
            Source::Mapped(m) => m.bytes(),
        }
    }
}

/// Reader for one capture file, streamed or mapped.
pub struct FileReader {
    path: String,
    source: Source,
    /// Unread bytes are `source.bytes()[start..end]`.
    start: usize,
    end: usize,
    /// File offset of `source.bytes()[0]` (always 0 for a mapping).
    base: u64,
    /// No byte past `end` will ever come (always true for a mapping).
    eof: bool,
    format: Format,
}

fn rd_u32(b: &[u8], le: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

fn rd_u16(b: &[u8], le: bool) -> u16 {
    let a = [b[0], b[1]];
    if le {
        u16::from_le_bytes(a)
    } else {
        u16::from_be_bytes(a)
    }
}

impl FileReader {
    /// Open a capture and read its file header. Errors name the file and what is wrong.
    /// Regular files are mapped unless [`NO_MMAP_ENV`] is set (see the module docs).
    pub fn open(path: &Path) -> Result<FileReader, CaptureError> {
        Self::open_with(path, OpenOptions::from_env())
    }

    /// [`FileReader::open`] with explicit options instead of the environment's.
    /// Packets and errors are the same whichever way the file is read.
    pub fn open_with(path: &Path, opts: OpenOptions) -> Result<FileReader, CaptureError> {
        let path_s = path.display().to_string();
        let file = File::open(path).map_err(|source| CaptureError::Open { path: path_s.clone(), source })?;
        if opts.mmap {
            if let Some(map) = MappedFile::map(&file, opts.release_every) {
                let end = map.bytes().len();
                return Self::with_source(&path_s, Source::Mapped(map), end, true);
            }
        }
        Self::from_reader(&path_s, file)
    }

    /// Read a capture from any byte stream (`name` is used in error messages).
    pub fn from_reader(name: &str, reader: impl Read + Send + 'static) -> Result<FileReader, CaptureError> {
        let source = Source::Stream { file: Box::new(reader), buf: vec![0; READ_CHUNK] };
        Self::with_source(name, source, 0, false)
    }

    /// Whether the bytes come from a memory mapping rather than a stream.
    pub fn is_mapped(&self) -> bool {
        matches!(self.source, Source::Mapped(_))
    }

    /// Read the file header from `source`, whose first `end` bytes are already present.
    fn with_source(name: &str, source: Source, end: usize, eof: bool) -> Result<FileReader, CaptureError> {
        let mut r = FileReader {
            path: name.to_string(),
            source,
            start: 0,
            end,
            base: 0,
            eof,
            format: Format::Pcap { le: true, nanos: false, linktype: LinkType::Ethernet },
        };
        r.fill(24)?;
        let head = &r.source.bytes()[r.start..r.end];
        if head.len() < 4 {
            return Err(CaptureError::Format {
                path: r.path,
                detail: format!("file is only {} bytes long", head.len()),
            });
        }
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if magic == PCAPNG_SHB {
            r.fill(12)?;
            let head = &r.source.bytes()[r.start..r.end];
            if head.len() < 12 {
                return Err(r.truncated(0, 12, head.len() as u64));
            }
            let le = head[8..12] == [0x4D, 0x3C, 0x2B, 0x1A];
            let len = rd_u32(&head[4..8], le) as u64;
            if !(28..=MAX_PCAPNG_BLOCK).contains(&len) {
                return Err(r.corrupt(0, format!("section header block length {len} is invalid")));
            }
            r.fill(len as usize)?;
            let avail = (r.end - r.start) as u64;
            if avail < len {
                return Err(r.truncated(0, len, avail));
            }
            let (rem, parser) = PcapNgParser::new(&r.source.bytes()[r.start..r.end]).map_err(|e| {
                CaptureError::Format { path: r.path.clone(), detail: format!("bad pcapng section header: {e}") }
            })?;
            let used = (r.end - r.start) - rem.len();
            r.start += used;
            let le = parser.section().endianness == Endianness::Little;
            r.format = Format::PcapNg { parser: Box::new(parser), le, ifaces: Vec::new(), last_ts_us: 0 };
            return Ok(r);
        }
        let head = &r.source.bytes()[r.start..r.end];
        if head.len() < 24 {
            return Err(CaptureError::Format {
                path: r.path,
                detail: format!("file is {} bytes, shorter than the 24-byte pcap header", head.len()),
            });
        }
        let (_, parser) = PcapParser::new(head).map_err(|e| CaptureError::Format {
            path: r.path.clone(),
            detail: match e {
                PcapError::InvalidField(_) => format!("unknown magic number {magic:#010x}"),
                other => other.to_string(),
            },
        })?;
        let h = parser.header();
        r.format = Format::Pcap {
            le: h.endianness == Endianness::Little,
            nanos: h.ts_resolution == TsResolution::NanoSecond,
            linktype: LinkType::from_dlt(u32::from(h.datalink)),
        };
        r.start += 24;
        Ok(r)
    }

    /// File offset of the next unread record.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The link type of a classic pcap file (pcapng carries one per interface).
    pub fn pcap_linktype(&self) -> Option<LinkType> {
        match self.format {
            Format::Pcap { linktype, .. } => Some(linktype),
            Format::PcapNg { .. } => None,
        }
    }

    fn truncated(&self, offset: u64, needed: u64, remain: u64) -> CaptureError {
        CaptureError::Truncated { path: self.path.clone(), offset, needed, remain }
    }

    fn corrupt(&self, offset: u64, detail: String) -> CaptureError {
        CaptureError::Corrupt { path: self.path.clone(), offset, detail }
    }

    /// Make at least `need` unread bytes available, unless the file ends first.
    /// A mapping has every byte already (`eof` is set), so this returns at once; inlined,
    /// so the parsers pay one comparison per record when nothing is to be read.
    #[inline]
    fn fill(&mut self, need: usize) -> Result<(), CaptureError> {
        if self.end - self.start >= need || self.eof {
            return Ok(());
        }
        self.refill(need)
    }

    #[inline(never)]
    fn refill(&mut self, need: usize) -> Result<(), CaptureError> {
        let Source::Stream { file, buf } = &mut self.source else {
            return Ok(());
        };
        if self.start > 0 {
            buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
        }
        if buf.len() < need {
            buf.resize(need.next_power_of_two(), 0);
        }
        while self.end < need {
            match file.read(&mut buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        path: self.path.clone(),
                        offset: self.base + self.end as u64,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// The next packet, `Ok(None)` at a clean end of file, or an error naming the offset
    /// of the bad record. After an error the reader should not be used again.
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        if let Source::Mapped(map) = &mut self.source {
            // The previous packet's borrow has ended: bytes below `start` are done with.
            map.advance(self.start);
        }
        let is_pcap = matches!(self.format, Format::Pcap { .. });
        if is_pcap {
            self.next_pcap()
        } else {
            self.next_pcapng()
        }
    }

    fn next_pcap(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        let (le, nanos, linktype) = match self.format {
            Format::Pcap { le, nanos, linktype } => (le, nanos, linktype),
            Format::PcapNg { .. } => return Ok(None),
        };
        let off = self.offset();
        self.fill(16)?;
        let avail = self.end - self.start;
        if avail == 0 {
            return Ok(None);
        }
        if avail < 16 {
            return Err(self.truncated(off, 16, avail as u64));
        }
        let h = &self.source.bytes()[self.start..self.start + 16];
        let ts_sec = rd_u32(&h[0..4], le) as u64;
        let ts_frac = rd_u32(&h[4..8], le) as u64;
        let incl = rd_u32(&h[8..12], le) as u64;
        let orig = rd_u32(&h[12..16], le);
        if incl > MAX_PCAP_RECORD {
            return Err(self.corrupt(
                off,
                format!("header says {incl} captured bytes, more than the {MAX_PCAP_RECORD}-byte maximum"),
            ));
        }
        let total = 16 + incl as usize;
        self.fill(total)?;
        let avail = self.end - self.start;
        if avail < total {
            return Err(self.truncated(off, incl, (avail - 16) as u64));
        }
        let frac_us = if nanos { ts_frac / 1000 } else { ts_frac };
        let data_start = self.start + 16;
        self.start += total;
        Ok(Some(RawPacket {
            ts_us: ts_sec.saturating_mul(1_000_000).saturating_add(frac_us),
            linktype,
            data: &self.source.bytes()[data_start..data_start + incl as usize],
            orig_len: orig,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        loop {
            let off = self.offset();
            self.fill(12)?;
            let avail = self.end - self.start;
            if avail == 0 {
                return Ok(None);
            }
            if avail < 12 {
                return Err(self.truncated(off, 12, avail as u64));
            }
            let cur_le = match &self.format {
                Format::PcapNg { le, .. } => *le,
                Format::Pcap { .. } => return Ok(None),
            };
            let h = &self.source.bytes()[self.start..self.start + 12];
            let btype_be = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            // A new section may switch byte order; its magic tells which.
            let le = if btype_be == PCAPNG_SHB { h[8..12] == [0x4D, 0x3C, 0x2B, 0x1A] } else { cur_le };
            let btype = if btype_be == PCAPNG_SHB { PCAPNG_SHB } else { rd_u32(&h[0..4], le) };
            let len = rd_u32(&h[4..8], le) as u64;
            if len < 12 || !len.is_multiple_of(4) || len > MAX_PCAPNG_BLOCK {
                return Err(self.corrupt(off, format!("block type {btype:#x} has invalid length {len}")));
            }
            self.fill(len as usize)?;
            let avail = (self.end - self.start) as u64;
            if avail < len {
                return Err(self.truncated(off, len, avail));
            }
            let block_start = self.start;
            let block_end = self.start + len as usize;
            let Format::PcapNg { parser, le: fmt_le, ifaces, last_ts_us } = &mut self.format else {
                return Ok(None);
            };
            // pcap-file validates framing (trailer length) and tracks sections/interfaces.
            let framed = parser.next_raw_block(&self.source.bytes()[block_start..block_end]);
            if let Err(e) = framed {
                let detail = format!("block type {btype:#x}: {e}");
                return Err(CaptureError::Corrupt { path: self.path.clone(), offset: off, detail });
            }
            self.start = block_end;
            match btype {
                PCAPNG_SHB => {
                    *fmt_le = parser.section().endianness == Endianness::Little;
                    ifaces.clear();
                }
                PCAPNG_IDB => {
                    if let Some(idb) = parser.interfaces().last() {
                        let mut info = IfaceInfo {
                            linktype: LinkType::from_dlt(u32::from(idb.linktype)),
                            unit: TsUnit::Decimal(6),
                            offset_s: 0,
                            snaplen: idb.snaplen,
                        };
                        for opt in &idb.options {
                            match opt {
                                InterfaceDescriptionOption::IfTsResol(r) => {
                                    info.unit = if r & 0x80 != 0 {
                                        TsUnit::Binary((r & 0x7f) as u32)
                                    } else {
                                        TsUnit::Decimal(*r as u32)
                                    };
                                }
                                InterfaceDescriptionOption::IfTsOffset(s) => info.offset_s = *s,
                                _ => {}
                            }
                        }
                        ifaces.push(info);
                    }
                }
                PCAPNG_EPB | PCAPNG_PB => {
                    let body = &self.source.bytes()[block_start + 8..block_end - 4];
                    if body.len() < 20 {
                        return Err(CaptureError::Corrupt {
                            path: self.path.clone(),
                            offset: off,
                            detail: "packet block shorter than its 20-byte header".into(),
                        });
                    }
                    let iface_id =
                        if btype == PCAPNG_EPB { rd_u32(&body[0..4], le) } else { rd_u16(&body[0..2], le) as u32 };
                    let ts = ((rd_u32(&body[4..8], le) as u64) << 32) | rd_u32(&body[8..12], le) as u64;
                    let caplen = rd_u32(&body[12..16], le) as usize;
                    let orig_len = rd_u32(&body[16..20], le);
                    if caplen > body.len() - 20 {
                        return Err(CaptureError::Corrupt {
                            path: self.path.clone(),
                            offset: off,
                            detail: format!(
                                "captured length {caplen} exceeds the block body ({} bytes)",
                                body.len() - 20
                            ),
                        });
                    }
                    let Some(info) = ifaces.get(iface_id as usize).copied() else {
                        return Err(CaptureError::Corrupt {
                            path: self.path.clone(),
                            offset: off,
                            detail: format!(
                                "packet names interface {iface_id} but only {} are described",
                                ifaces.len()
                            ),
                        });
                    };
                    let ts_us = ts_to_us(ts, info.unit).saturating_add(info.offset_s.saturating_mul(1_000_000));
                    *last_ts_us = ts_us;
                    let data_start = block_start + 8 + 20;
                    return Ok(Some(RawPacket {
                        ts_us,
                        linktype: info.linktype,
                        data: &self.source.bytes()[data_start..data_start + caplen],
                        orig_len,
                    }));
                }
                PCAPNG_SPB => {
                    let body = &self.source.bytes()[block_start + 8..block_end - 4];
                    let Some(info) = ifaces.first().copied() else {
                        return Err(CaptureError::Corrupt {
                            path: self.path.clone(),
                            offset: off,
                            detail: "simple packet block before any interface description".into(),
                        });
                    };
                    if body.len() < 4 {
                        return Err(CaptureError::Corrupt {
                            path: self.path.clone(),
                            offset: off,
                            detail: "simple packet block shorter than 4 bytes".into(),
                        });
                    }
                    let orig_len = rd_u32(&body[0..4], le);
                    let mut caplen = (orig_len as usize).min(body.len() - 4);
                    if info.snaplen > 0 {
                        caplen = caplen.min(info.snaplen as usize);
                    }
                    let data_start = block_start + 12;
                    // SPBs carry no timestamp; reuse the last one so flow timing stays monotonic.
                    return Ok(Some(RawPacket {
                        ts_us: *last_ts_us,
                        linktype: info.linktype,
                        data: &self.source.bytes()[data_start..data_start + caplen],
                        orig_len,
                    }));
                }
                _ => {} // statistics, name resolution, custom blocks: nothing to decode.
            }
        }
    }
}

fn ts_to_us(ts: u64, unit: TsUnit) -> u64 {
    let v = match unit {
        TsUnit::Decimal(6) => return ts,
        TsUnit::Decimal(n) if n < 6 => (ts as u128) * 10u128.pow(6 - n),
        TsUnit::Decimal(n) => (ts as u128) / 10u128.pow((n - 6).min(30)),
        TsUnit::Binary(n) => ((ts as u128) * 1_000_000) >> n.min(127),
    };
    u64::try_from(v).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_mmap_variable_values() {
        use std::ffi::OsStr;
        assert!(!no_mmap_requested(None));
        assert!(!no_mmap_requested(Some(OsStr::new(""))));
        assert!(!no_mmap_requested(Some(OsStr::new("0"))));
        assert!(no_mmap_requested(Some(OsStr::new("1"))));
        assert!(no_mmap_requested(Some(OsStr::new("yes"))));
    }

    #[test]
    fn ts_units() {
        assert_eq!(ts_to_us(5, TsUnit::Decimal(6)), 5);
        assert_eq!(ts_to_us(5_000, TsUnit::Decimal(9)), 5);
        assert_eq!(ts_to_us(5, TsUnit::Decimal(3)), 5_000);
        assert_eq!(ts_to_us(1 << 20, TsUnit::Binary(20)), 1_000_000);
    }
}
