//! Packet sources: capture files (pcap, pcapng) and live interfaces (libpcap, feature `live`).
//!
//! Every source hands the pipeline the same [`RawPacket`]: capture time, link type and the
//! captured bytes, borrowed from the reader's buffer so the hot path copies nothing.
//! [`for_each_packet`] is the packet loop of the sensor run (files and live capture);
//! `analyze` reads its files with [`file::FileReader`] directly, one file after another.

pub mod file;
#[cfg(feature = "live")]
pub mod live;
mod mapped;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Link-layer header type of a capture (libpcap DLT / LINKTYPE numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// DLT_NULL (0): 4-byte address family in the capturing host's byte order (BSD loopback).
    Null,
    /// DLT_EN10MB (1).
    Ethernet,
    /// DLT_RAW (101, also 12 and 14 on some platforms): bare IPv4 or IPv6 packet.
    RawIp,
    /// DLT_LOOP (108): like NULL but the family is always big-endian (OpenBSD).
    Loop,
    /// DLT_LINUX_SLL (113): Linux "any" cooked capture v1.
    LinuxSll,
    /// DLT_IEEE802_11_RADIO (127): radiotap header then an 802.11 frame.
    Radiotap,
    /// DLT_IPV4 (228).
    Ipv4,
    /// DLT_IPV6 (229).
    Ipv6,
    /// DLT_LINUX_SLL2 (276): Linux cooked capture v2.
    LinuxSll2,
    /// Anything else; counted as an unsupported link type by the decoder.
    Other(u32),
}

impl LinkType {
    pub fn from_dlt(dlt: u32) -> LinkType {
        match dlt {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::RawIp,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            127 => LinkType::Radiotap,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            other => LinkType::Other(other),
        }
    }

    pub fn dlt(&self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::RawIp => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Radiotap => 127,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
            LinkType::Other(n) => *n,
        }
    }
}

/// One captured frame. `data` is what was captured (at most the snap length); `orig_len`
/// is the frame's length on the wire, which is what flow byte counters use.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture time, microseconds since the Unix epoch.
    pub ts_us: u64,
    pub linktype: LinkType,
    pub data: &'a [u8],
    pub orig_len: u32,
}

impl RawPacket<'_> {
    /// Wire length, never less than what was captured (some writers leave orig_len at 0).
    pub fn wire_len(&self) -> u64 {
        (self.orig_len as u64).max(self.data.len() as u64)
    }
}

/// Where packets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// A live interface, opened promiscuous and read-only, with an optional BPF filter.
    Live {
        iface: String,
        bpf: Option<String>,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "capture {}", p.display()),
            Source::Live { iface, .. } => write!(f, "interface {iface}"),
        }
    }
}

/// Why a source stopped delivering packets. Packets delivered before the error were
/// already handed to the callback, so callers keep what they learned from them.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture {path}: cannot open: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("capture {path}: read failed at byte offset {offset}: {source}")]
    Io { path: String, offset: u64, source: std::io::Error },
    #[error(
        "capture {path}: not a pcap or pcapng file ({detail}); convert it with `editcap -F pcap` or check the path"
    )]
    Format { path: String, detail: String },
    #[error(
        "capture {path}: record at byte offset {offset} is truncated (header says {needed} bytes, {remain} remain) \
         — the file was cut short; packets before it were processed"
    )]
    Truncated { path: String, offset: u64, needed: u64, remain: u64 },
    #[error("capture {path}: record at byte offset {offset} is corrupt ({detail}); packets before it were processed")]
    Corrupt { path: String, offset: u64, detail: String },
    #[error("interface {iface}: {detail}")]
    Live { iface: String, detail: String },
    #[error("live capture on {iface} needs the `live` cargo feature (libpcap); this build has it disabled")]
    LiveUnsupported { iface: String },
}

/// What a finished source reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    pub packets: u64,
    /// Bytes of the capture consumed (file offset reached), for progress reporting.
    pub bytes_read: u64,
    /// Live capture only, summed over every reopen: frames the kernel delivered to the
    /// capture socket, frames it dropped because the buffer was full, and frames the
    /// interface dropped. `packets` = `kernel_received` − `kernel_dropped` when the
    /// capture ran to the end.
    pub kernel_received: u64,
    pub kernel_dropped: u64,
    pub interface_dropped: u64,
    /// Live capture only: times the interface went down or away and was reopened.
    pub reopens: u64,
}

/// Run `on_packet` for every packet of `source`, in capture order, until the source ends,
/// the callback returns `ControlFlow::Break`, or `stop` becomes true (live capture).
pub fn for_each_packet<F>(
    source: &Source,
    stop: Option<&AtomicBool>,
    mut on_packet: F,
) -> Result<CaptureSummary, CaptureError>
where
    F: FnMut(&RawPacket<'_>) -> ControlFlow<()>,
{
    match source {
        Source::File(path) => {
            let mut reader = file::FileReader::open(path)?;
            let mut summary = CaptureSummary::default();
            while let Some(pkt) = reader.next_packet()? {
                summary.packets += 1;
                if on_packet(&pkt).is_break() {
                    break;
                }
                if let Some(s) = stop {
                    if s.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                }
            }
            summary.bytes_read = reader.offset();
            Ok(summary)
        }
        #[cfg(feature = "live")]
        Source::Live { iface, bpf } => live::run(&live::LiveConfig::new(iface, bpf.clone()), stop, on_packet),
        #[cfg(not(feature = "live"))]
        Source::Live { iface, .. } => Err(CaptureError::LiveUnsupported { iface: iface.clone() }),
    }
}
