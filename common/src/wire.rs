//! What travels between a sensor and the aggregator cluster, and how it is framed.
//!
//! Frame = one version byte followed by a bincode 2 (standard config) body. The version
//! byte lets an aggregator refuse a sensor speaking a newer format with a clear error
//! instead of mis-decoding it. Decoding enforces a byte limit so a hostile peer cannot
//! make the receiver allocate without bound.

use crate::evidence::Evidence;
use crate::net::MacAddr;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::IpAddr;
use ulid::Ulid;

/// Current wire format version. Bump on any incompatible change to these types.
/// Version 2 appended `Event::Host` and `Event::Binding`; a version-1 frame is a valid
/// version-2 body (bincode numbers enum variants in order), so both are accepted.
/// Version 3 appended `Event::SpoolReport` (decision 0022); version 1 and 2 frames are
/// valid version-3 bodies. An older node answers a version-3 frame RetryLater (the batch
/// stays spooled until the node is upgraded).
pub const WIRE_VERSION: u8 = 3;
/// Oldest wire version this build still decodes.
pub const MIN_WIRE_VERSION: u8 = 1;
/// Largest frame a receiver accepts (a batch is normally far smaller).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// ALPN protocol id of the sensor uplink: one batch per stream ([`Batch`] frame in,
/// [`BatchReply`] frame out).
pub const ALPN_UPLINK: &[u8] = b"wardline-uplink/1";
/// ALPN protocol id of uplink version 2 (decision 0034): each stream carries a 4-byte
/// big-endian length followed by one multi-batch frame (a `Vec<Batch>` of 1 to
/// [`MAX_FRAME_BATCHES`] batches of one sensor, seqs never decreasing), and the reply is one
/// frame holding a `Vec<BatchReply>`, one per batch in frame order — or a single reply with
/// a nil batch id when the frame as a whole was refused. A sensor offers both ids and the
/// node picks version 2 when it knows it, so an older node or an older sensor keeps
/// speaking version 1 on the same port.
pub const ALPN_UPLINK_V2: &[u8] = b"wardline-uplink/2";
/// Most batches in one multi-batch frame (the frame is bounded by [`MAX_FRAME_BYTES`] too).
pub const MAX_FRAME_BATCHES: usize = 256;
/// Bytes of the length that precedes a multi-batch frame on a version-2 stream.
pub const FRAME_LENGTH_PREFIX: usize = 4;
/// ALPN protocol id of uplink version 3 (decision 0041): version 2 with the multi-batch
/// frame compressed. Each stream carries a [`CompressedHeader`] (stored length, codec,
/// decoded length) and then the stored bytes; decompressed, they are exactly a version-2
/// frame. Replies are as in version 2 (uncompressed). A sensor offers 3, 2 and 1, a node
/// picks the highest it knows.
pub const ALPN_UPLINK_V3: &[u8] = b"wardline-uplink/3";
/// Bytes of the [`CompressedHeader`] that precedes a frame on a version-3 stream.
pub const COMPRESSED_HEADER_BYTES: usize = 9;
/// Default zstd level of a sensor's uplink frames (decision 0041 has the measurements).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// Is `id` a valid sensor id or site name: 1 to 64 characters from A-Z, a-z, 0-9, '.', '_'
/// and '-'? They end up in certificate URNs (':' separated), file names, log lines and
/// ClickHouse rows, so the certificate authority, the sensor's configuration and the
/// cluster all hold them to this one alphabet.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A unit of delivery: applied at most once by the cluster, identified by `id` and by
/// the per-sensor monotonically increasing `seq`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: Ulid,
    pub sensor_id: String,
    pub site: String,
    /// Starts at 1, increases by one for every batch the sensor creates.
    pub seq: u64,
    pub events: Vec<Event>,
}

impl Batch {
    pub fn flows(&self) -> impl Iterator<Item = &FlowRecord> {
        self.events.iter().filter_map(|e| match e {
            Event::Flow(f) => Some(f),
            _ => None,
        })
    }
    pub fn devices(&self) -> impl Iterator<Item = &DeviceObservation> {
        self.events.iter().filter_map(|e| match e {
            Event::Device(d) => Some(d),
            _ => None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Device(DeviceObservation),
    Flow(FlowRecord),
    Stats(SensorStats),
    /// A device the sensor knows only by address (seen through a router, or on a link
    /// without MAC addresses). Appended in wire version 2.
    Host(HostObservation),
    /// A MAC–IP binding the sensor saw announced. Appended in wire version 2.
    Binding(AddressBinding),
    /// What the sensor's spool gave up (evicted, quarantined) or condensed (rolled up), as
    /// cumulative totals plus the losses not yet acknowledged. Appended in wire version 3.
    SpoolReport(SpoolReport),
}

/// The sensor spool's account of what it could not deliver as recorded (decision 0022).
/// Totals are cumulative since the spool was created (`spool_epoch`): a later report
/// supersedes an earlier one, so a lost or repeated report never miscounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolReport {
    /// Random id (ULID) created with the spool; a wiped or reinstalled sensor has a new one.
    pub spool_epoch: Ulid,
    /// Whole batches evicted to stay within the spool's byte bound.
    pub batches_evicted: u64,
    /// Events inside them, the flow records among them, and those flows' traffic bytes.
    pub events_evicted: u64,
    pub flows_evicted: u64,
    pub flow_bytes_evicted: u64,
    /// Flow records condensed into per-(device pair, app, server port, hour) summaries, and
    /// how many summaries replaced them (their totals are kept, their detail is not).
    pub flows_rolled_up: u64,
    pub rollups_created: u64,
    /// Stored records that failed their checksum or did not decode (set aside on disk).
    pub records_quarantined: u64,
    /// The individual losses not yet acknowledged by the cluster, oldest first (bounded).
    pub losses: Vec<SpoolLoss>,
}

/// One batch the spool gave up, or one corrupt record it set aside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolLoss {
    /// Id of the batch (nil for a record too damaged to tell).
    pub batch_id: Ulid,
    /// Its sequence number, if it had been given one before it was lost.
    pub seq: Option<u64>,
    pub kind: SpoolLossKind,
    pub events: u64,
    pub flows: u64,
    pub flow_bytes: u64,
    /// Packet-time range of the lost flows (µs since the epoch), 0 when it held none.
    pub first_seen_us: u64,
    pub last_seen_us: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpoolLossKind {
    /// Flow detail given up (its flows were not rolled up).
    EvictedFlowDetail,
    /// Flow summaries (roll-ups) given up.
    EvictedFlowSummaries,
    /// Inventory or sensor reports given up: the spool held nothing less important.
    EvictedInventory,
    /// A stored record failed its checksum or did not decode.
    Quarantined,
}

/// What a sensor learned about one device on its own segment (keyed by its own MAC)
/// since its last report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceObservation {
    pub mac: MacAddr,
    pub ips: Vec<IpAddr>,
    pub vlans: Vec<u16>,
    /// Packet times, microseconds since the Unix epoch.
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
    pub evidence: Vec<Evidence>,
}

/// What a sensor learned about a host it never saw with its own MAC, since its last report:
/// its frames arrived through a router (`via_mac`), or the link carries no MACs at all
/// (raw IP, loopback, Linux cooked captures without an address). Keyed by its site (`site`,
/// else the batch's), `ip` and `vlan`; the cluster merges it into a MAC-keyed device through bindings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostObservation {
    pub ip: IpAddr,
    /// 802.1Q tag of the segment where the sensor saw it (outermost), if any.
    pub vlan: Option<u16>,
    /// The router MAC its frames carried, when the link had MACs.
    pub via_mac: Option<MacAddr>,
    /// Packet times, microseconds since the Unix epoch.
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets: u64,
    pub bytes: u64,
    pub evidence: Vec<Evidence>,
    /// The site the host belongs to when its address is in a remote site's network (the
    /// sensor's `remote_sites`), seen here only through a router; `vlan` is then None, the
    /// VLAN seen being the transit link's. None: the reporting sensor's (batch's) site.
    pub site: Option<String>,
}

/// How a sensor learned that an address belongs to a MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BindingSource {
    /// ARP request or reply sender (IPv4), including gratuitous ARP.
    Arp,
    /// DHCPACK from a server (`yiaddr` for `chaddr`), with the lease time when given.
    DhcpAck,
    /// IPv6 neighbour advertisement or solicitation with a link-layer address option.
    Ndp,
}

/// One sighting of a MAC–IP binding at the sensor's site. The cluster keeps bindings as
/// time intervals: from `seen_us` until the address is bound to another MAC (or until
/// `valid_until_us` for a DHCP lease that is not renewed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressBinding {
    pub mac: MacAddr,
    pub ip: IpAddr,
    pub vlan: Option<u16>,
    pub source: BindingSource,
    /// Packet time of the sighting, microseconds since the Unix epoch.
    pub seen_us: u64,
    /// End of a DHCP lease (`seen_us` + lease time), when the server said.
    pub valid_until_us: Option<u64>,
}

/// A bidirectional flow summary. `a` is the side that sent the first packet seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub ip_proto: u8,
    pub vlan: Option<u16>,
    pub a_mac: MacAddr,
    pub b_mac: MacAddr,
    pub a_ip: IpAddr,
    pub b_ip: IpAddr,
    pub a_port: u16,
    pub b_port: u16,
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub packets_ab: u64,
    pub packets_ba: u64,
    pub bytes_ab: u64,
    pub bytes_ba: u64,
    pub tcp_flags_ab: u8,
    pub tcp_flags_ba: u8,
    /// Application protocol label ("dicom", "hl7", "unknown", ...). Borrowed from the
    /// static label table (no allocation per flow), also when decoded; owned only for a
    /// label this version does not know.
    #[serde(deserialize_with = "flow_label::deserialize")]
    pub app: Cow<'static, str>,
    /// Why the flow record was emitted: one of [`flow_label::END_REASONS`].
    #[serde(deserialize_with = "flow_label::deserialize")]
    pub end_reason: Cow<'static, str>,
}

/// Flow labels decoded into the static table: every node decodes each flow several times
/// (replication, its log, apply) and clones it into the outbox, and two owned strings per
/// flow were a tenth of a node's CPU in its allocator.
pub mod flow_label {
    use crate::evidence::Proto;
    use serde::de::{Deserializer, Error, Visitor};
    use std::borrow::Cow;

    /// Flow end reasons the sensor emits: no packet for the idle timeout; counters of a
    /// long flow reported while it goes on; still open when the capture ended; closed (FIN
    /// or RST); an hourly summary of flows the spool rolled up to stay in its bound.
    pub const IDLE: &str = "idle";
    pub const ACTIVE: &str = "active";
    pub const END: &str = "end";
    pub const FIN: &str = "fin";
    pub const ROLLUP: &str = "rollup";
    pub const END_REASONS: [&str; 5] = [IDLE, ACTIVE, END, FIN, ROLLUP];

    /// The static copy of a known label (application or end reason).
    pub fn known(label: &str) -> Option<&'static str> {
        Proto::from_label(label).map(|p| p.as_str()).or_else(|| END_REASONS.iter().copied().find(|r| *r == label))
    }

    struct Label;

    impl Visitor<'_> for Label {
        type Value = Cow<'static, str>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a flow label string")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(known(v).map_or_else(|| Cow::Owned(v.to_owned()), Cow::Borrowed))
        }

        fn visit_string<E: Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(known(&v).map_or(Cow::Owned(v), Cow::Borrowed))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
        d.deserialize_str(Label)
    }
}

/// Counters a sensor reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorStats {
    pub packets: u64,
    pub bytes: u64,
    pub decode_errors: u64,
    pub flows_evicted: u64,
    pub batches_dropped: u64,
}

/// Aggregator → sensor reply to one batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BatchReply {
    /// Durably committed (now or earlier); the sensor may delete it from its spool.
    Ack { batch_id: Ulid, seq: u64, duplicate: bool },
    /// Refused for good (bad content, wrong identity); retrying will not help.
    Rejected { batch_id: Ulid, seq: u64, reason: String },
    /// Not accepted now (no leader, sink down); keep it and retry later.
    RetryLater { batch_id: Ulid, seq: u64, reason: String },
}

/// How a `RetryLater` reason starts when the node is not the Raft leader; a sensor seeing
/// it moves on to the leader named by [`leader_ingest_hint`], or else to its next
/// configured aggregator address.
pub const RETRY_NOT_LEADER: &str = "this node is not the Raft leader";

/// What follows [`RETRY_NOT_LEADER`] when the follower knows the leader's ingest address.
const LEADER_INGEST: &str = " (leader ingest: ";

/// The `RetryLater` reason a follower gives: names the leader's QUIC ingest address when it
/// knows it. The hint lives in the reason text so replies stay readable by older sensors
/// (no wire version change).
pub fn not_leader_reason(leader_ingest: Option<&str>) -> String {
    match leader_ingest {
        Some(addr) => format!("{RETRY_NOT_LEADER}{LEADER_INGEST}{addr})"),
        None => format!("{RETRY_NOT_LEADER} (leader unknown, an election may be in progress)"),
    }
}

/// The leader's ingest address from a follower's `RetryLater` reason, if it names one.
pub fn leader_ingest_hint(reason: &str) -> Option<std::net::SocketAddr> {
    let rest = reason.strip_prefix(RETRY_NOT_LEADER)?.strip_prefix(LEADER_INGEST)?;
    rest.split(')').next()?.trim().parse().ok()
}

/// ALPN protocol id of sensor health (decision 0038): a connection of its own, beside the
/// uplink's, on the same port. Each bidirectional stream carries one [`SensorHeartbeat`]
/// frame and is answered with one [`HeartbeatReply`] frame. A separate ALPN id keeps an
/// older node (which does not offer it) from ever seeing a heartbeat on a batch stream: its
/// handshake refuses the id and the sensor's batches go on as before.
pub const ALPN_HEALTH: &[u8] = b"wardline-health/1";
/// Largest heartbeat or heartbeat reply frame.
pub const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;

/// A sensor's periodic account of its own health (decision 0038): not a batch (no spool, no
/// sequence), sent every `uplink.heartbeat_interval_secs` and right after connecting. Who
/// sent it is the connection's certificate; `sensor_id`/`site` must match it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorHeartbeat {
    pub sensor_id: String,
    pub site: String,
    /// The sensor's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The sensor's clock when it sent this heartbeat, µs since the Unix epoch.
    pub sent_us: u64,
    /// Clock offset the sensor measured in its previous exchange (aggregator clock minus
    /// sensor clock, µs; NTP-style, assuming the round trip is symmetric), and that round
    /// trip (µs). None before the first exchange of a connection.
    pub clock_offset_us: Option<i64>,
    pub round_trip_us: Option<u64>,
    /// Spool depth now: batches waiting, their bytes, and the spool's byte bound.
    pub spool_batches: u64,
    pub spool_bytes: u64,
    pub spool_max_bytes: u64,
    /// Spool totals since it was created: batches evicted, flows rolled up, records quarantined.
    pub spool_batches_evicted: u64,
    pub spool_flows_rolled_up: u64,
    pub spool_records_quarantined: u64,
    /// libpcap's counters of the live capture since the sensor started (`ps_recv`,
    /// `ps_drop`, `ps_ifdrop`) and how often the interface was reopened; 0 for files.
    pub capture_received: u64,
    pub capture_kernel_dropped: u64,
    pub capture_interface_dropped: u64,
    pub capture_reopens: u64,
    /// Whether the uplink's last exchange with an aggregator succeeded, its state in words,
    /// and how many times the uplink task failed and was restarted since the sensor started.
    pub uplink_connected: bool,
    pub uplink_state: String,
    pub uplink_restarts: u64,
    /// When the sensor's own certificate stops being valid, seconds since the Unix epoch
    /// (None if it could not be read).
    pub cert_not_after_s: Option<i64>,
}

/// The node's answer to a heartbeat: its clock when the heartbeat arrived and when the reply
/// left (µs since the Unix epoch), so the sensor computes the offset as
/// ((received − sent) + (replied − back)) / 2, and whether the cluster records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub received_us: u64,
    pub replied_us: u64,
    /// What the node does with the heartbeat: "recorded", "unchanged" (nothing new to
    /// record yet), "not-leader", "not-recorded: ..." (why). Words, for logs.
    pub outcome: String,
    /// When this node is not the leader: the leader's QUIC ingest address, if known.
    pub leader_ingest: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame: the peer closed the stream before sending anything")]
    Empty,
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(usize, usize),
    #[error(
        "unsupported wire version {0} (this build speaks {MIN_WIRE_VERSION} to {WIRE_VERSION}); upgrade the older side"
    )]
    Version(u8),
    #[error("undecodable frame body: {0}")]
    Decode(String),
    #[error("frame has {0} trailing bytes after the body")]
    Trailing(usize),
    #[error("cannot encode frame: {0}")]
    Encode(String),
    #[error("multi-batch frame holds {0} batches; 1 to {MAX_FRAME_BATCHES} are allowed")]
    BatchCount(usize),
    #[error(
        "multi-batch frame is out of order: batch {index} (seq {seq}) follows seq {previous}; a frame carries \
         one sensor's batches in seq order"
    )]
    Order { index: usize, seq: u64, previous: u64 },
    #[error("compressed frame header declares a length of 0 bytes; a frame holds at least one batch")]
    ZeroLength,
    #[error("unknown frame codec {0} (this build knows 0 = stored and 1 = zstd)")]
    Codec(u8),
    #[error("compressed frame would decode to {0} bytes and exceeds the {1}-byte limit; send fewer batches per frame")]
    ExpandsTooFar(usize, usize),
    #[error(
        "compressed frame declares {declared} decoded bytes but holds {}",
        actual.map_or("more".to_string(), |n| n.to_string())
    )]
    Expansion { declared: usize, actual: Option<usize> },
    #[error("compressed frame declares {declared} stored bytes but {actual} arrived")]
    Truncated { declared: usize, actual: usize },
    #[error("cannot decompress frame: {0}")]
    Decompress(String),
}

/// How the bytes after a [`CompressedHeader`] encode the version-2 frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// Stored as is (compression would not have made it smaller).
    Stored,
    /// One or more zstd frames (RFC 8878), no dictionary.
    Zstd,
}

impl Codec {
    fn byte(self) -> u8 {
        match self {
            Codec::Stored => 0,
            Codec::Zstd => 1,
        }
    }
}

/// What precedes a compressed frame on a version-3 stream: 4 bytes big-endian stored length
/// (the bytes that follow the header), 1 byte codec, 4 bytes big-endian decoded length. The
/// receiver learns both sizes before reading a byte of the frame, so it can refuse a frame
/// that claims too much and reserve memory for what it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressedHeader {
    pub stored: usize,
    pub codec: Codec,
    pub decoded: usize,
}

impl CompressedHeader {
    pub fn to_bytes(&self) -> [u8; COMPRESSED_HEADER_BYTES] {
        let mut out = [0u8; COMPRESSED_HEADER_BYTES];
        out[..4].copy_from_slice(&(self.stored as u32).to_be_bytes());
        out[4] = self.codec.byte();
        out[5..].copy_from_slice(&(self.decoded as u32).to_be_bytes());
        out
    }

    /// Read a header and check it against `max_frame_bytes` (the receiver's limit on both
    /// the stored and the decoded frame). Never panics.
    pub fn parse(bytes: &[u8; COMPRESSED_HEADER_BYTES], max_frame_bytes: usize) -> Result<Self, FrameError> {
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let (stored, decoded) = (word(0), word(5));
        let codec = match bytes[4] {
            0 => Codec::Stored,
            1 => Codec::Zstd,
            other => return Err(FrameError::Codec(other)),
        };
        if stored == 0 || decoded == 0 {
            return Err(FrameError::ZeroLength);
        }
        if stored > max_frame_bytes {
            return Err(FrameError::TooLarge(stored, max_frame_bytes));
        }
        if decoded > max_frame_bytes {
            return Err(FrameError::ExpandsTooFar(decoded, max_frame_bytes));
        }
        if codec == Codec::Stored && stored != decoded {
            return Err(FrameError::Expansion { declared: decoded, actual: Some(stored) });
        }
        Ok(CompressedHeader { stored, codec, decoded })
    }
}

/// A version-2 frame made ready for a version-3 stream: the header followed by the frame
/// compressed with zstd at `level`, or stored as is when that would not be smaller. The
/// caller checked the frame against [`MAX_FRAME_BYTES`] already (it was assembled).
pub fn compress_frame(frame: &[u8], level: i32) -> Result<Vec<u8>, FrameError> {
    if frame.is_empty() || frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(frame.len(), MAX_FRAME_BYTES));
    }
    let packed = zstd::bulk::compress(frame, level).map_err(|e| FrameError::Encode(format!("zstd: {e}")))?;
    let (codec, body) = if packed.len() < frame.len() { (Codec::Zstd, &packed[..]) } else { (Codec::Stored, frame) };
    let header = CompressedHeader { stored: body.len(), codec, decoded: frame.len() };
    let mut out = Vec::with_capacity(COMPRESSED_HEADER_BYTES + body.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// The version-2 frame held in `stored` (the bytes after `header`). Decompression writes
/// into a buffer of exactly `header.decoded` bytes, which [`CompressedHeader::parse`]
/// bounded by the receiver's limit: a frame that would expand further is an error, never
/// a larger allocation. Never panics.
pub fn decompress_frame(header: &CompressedHeader, stored: &[u8]) -> Result<Vec<u8>, FrameError> {
    if stored.len() != header.stored {
        return Err(FrameError::Truncated { declared: header.stored, actual: stored.len() });
    }
    match header.codec {
        Codec::Stored => Ok(stored.to_vec()),
        Codec::Zstd => {
            let mut out = Vec::with_capacity(header.decoded);
            let mut zstd = zstd::bulk::Decompressor::new().map_err(|e| FrameError::Decompress(e.to_string()))?;
            // Into the Vec's spare capacity: never more than `decoded` bytes are written.
            let written = zstd.decompress_to_buffer(stored, &mut out).map_err(|e| {
                // zstd says "Destination buffer is too small" when the content expands past
                // what the header declared.
                if e.to_string().contains("too small") {
                    FrameError::Expansion { declared: header.decoded, actual: None }
                } else {
                    FrameError::Decompress(e.to_string())
                }
            })?;
            if written != header.decoded {
                return Err(FrameError::Expansion { declared: header.decoded, actual: Some(written) });
            }
            Ok(out)
        }
    }
}

/// Decode what a version-3 stream carries (header, then stored bytes) into its batches,
/// with `max_frame_bytes` bounding both the stored and the decoded frame. Never panics.
pub fn decode_compressed_batches_frame(bytes: &[u8], max_frame_bytes: usize) -> Result<Vec<Batch>, FrameError> {
    let (header, stored) = bytes.split_first_chunk::<COMPRESSED_HEADER_BYTES>().ok_or(FrameError::Empty)?;
    let header = CompressedHeader::parse(header, max_frame_bytes)?;
    decode_batches_frame(&decompress_frame(&header, stored)?)
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// Encode a value as a versioned frame.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![WIRE_VERSION];
    let body = bincode::serde::encode_to_vec(value, bincode_config()).map_err(|e| FrameError::Encode(e.to_string()))?;
    out.extend_from_slice(&body);
    if out.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(out.len(), MAX_FRAME_BYTES));
    }
    Ok(out)
}

/// Decode a versioned frame; never panics on arbitrary input.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, FrameError> {
    let (&version, body) = bytes.split_first().ok_or(FrameError::Empty)?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len(), MAX_FRAME_BYTES));
    }
    if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
        return Err(FrameError::Version(version));
    }
    let (value, used) =
        bincode::serde::decode_from_slice(body, bincode_config()).map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// The bincode body of one batch as it appears inside a multi-batch frame, so a sender can
/// size a frame batch by batch and encode each batch once ([`assemble_batches_frame`]).
pub fn encode_batch_body(batch: &Batch) -> Result<Vec<u8>, FrameError> {
    bincode::serde::encode_to_vec(batch, bincode_config()).map_err(|e| FrameError::Encode(e.to_string()))
}

/// The multi-batch frame (`Vec<Batch>`) made of bodies from [`encode_batch_body`]: byte for
/// byte what `encode_frame(&batches)` gives (a sequence is its varint length and then its
/// elements), without encoding the batches again.
pub fn assemble_batches_frame(bodies: &[Vec<u8>]) -> Result<Vec<u8>, FrameError> {
    if bodies.is_empty() || bodies.len() > MAX_FRAME_BATCHES {
        return Err(FrameError::BatchCount(bodies.len()));
    }
    let count = bincode::serde::encode_to_vec(bodies.len() as u64, bincode_config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let size = 1 + count.len() + bodies.iter().map(Vec::len).sum::<usize>();
    if size > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(size, MAX_FRAME_BYTES));
    }
    let mut out = Vec::with_capacity(size);
    out.push(WIRE_VERSION);
    out.extend_from_slice(&count);
    for body in bodies {
        out.extend_from_slice(body);
    }
    Ok(out)
}

/// Decode a multi-batch frame (without its length prefix) and check its shape: 1 to
/// [`MAX_FRAME_BATCHES`] batches whose seqs never decrease. (A repeated seq is let through:
/// the cluster acks the repeat as a duplicate.) Whose batches they are is the receiver's
/// check (it knows the peer's certificate). Never panics on arbitrary input.
pub fn decode_batches_frame(bytes: &[u8]) -> Result<Vec<Batch>, FrameError> {
    let batches: Vec<Batch> = decode_frame(bytes)?;
    if batches.is_empty() || batches.len() > MAX_FRAME_BATCHES {
        return Err(FrameError::BatchCount(batches.len()));
    }
    for (index, pair) in batches.windows(2).enumerate() {
        if pair[1].seq < pair[0].seq {
            return Err(FrameError::Order { index: index + 1, seq: pair[1].seq, previous: pair[0].seq });
        }
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    #[test]
    fn flow_labels_decode_into_the_static_table_and_unknown_ones_stay_owned() {
        use super::FlowRecord;
        use std::borrow::Cow;
        let flow = |app: &str, end_reason: &str| FlowRecord {
            ip_proto: 6,
            vlan: Some(40),
            a_mac: crate::net::MacAddr([0, 9, 0xfb, 0, 0, 1]),
            b_mac: crate::net::MacAddr([0, 9, 0xfb, 0, 0, 2]),
            a_ip: "198.18.0.1".parse().unwrap(),
            b_ip: "198.18.0.2".parse().unwrap(),
            a_port: 50_000,
            b_port: 104,
            first_seen_us: 1,
            last_seen_us: 2,
            packets_ab: 3,
            packets_ba: 4,
            bytes_ab: 5,
            bytes_ba: 6,
            tcp_flags_ab: 0x12,
            tcp_flags_ba: 0x10,
            app: Cow::Owned(app.to_string()),
            end_reason: Cow::Owned(end_reason.to_string()),
        };
        let config = bincode::config::standard();
        for p in crate::evidence::Proto::ALL {
            for reason in super::flow_label::END_REASONS {
                let f = flow(p.as_str(), reason);
                let bytes = bincode::serde::encode_to_vec(&f, config).unwrap();
                let (back, _): (FlowRecord, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
                assert_eq!(back, f);
                assert!(matches!(back.app, Cow::Borrowed(_)), "{p} decodes without an allocation");
                assert!(matches!(back.end_reason, Cow::Borrowed(_)), "{reason} decodes without an allocation");
            }
        }
        // A label from a newer sensor still decodes, as its own string.
        let f = flow("future_protocol", "evicted");
        let bytes = bincode::serde::encode_to_vec(&f, config).unwrap();
        let (back, _): (FlowRecord, usize) = bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, f);
        assert!(matches!(back.app, Cow::Owned(_)) && matches!(back.end_reason, Cow::Owned(_)));
        // Self-describing formats too (owned strings from an escaped JSON text).
        let json = serde_json::to_string(&flow("dicom", "fin")).unwrap().replace("\"dicom\"", "\"dic\\u006fm\"");
        let back: FlowRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.app, "dicom");
        assert!(matches!(back.app, Cow::Borrowed(_)));
        assert!(serde_json::from_str::<FlowRecord>(&json.replace("\"fin\"", "7")).is_err(), "a label is a string");
    }

    #[test]
    fn leader_hint_round_trips_and_tolerates_other_reasons() {
        let r = super::not_leader_reason(Some("127.0.0.1:4433"));
        assert_eq!(super::leader_ingest_hint(&r), Some("127.0.0.1:4433".parse().unwrap()));
        assert_eq!(super::leader_ingest_hint(&super::not_leader_reason(None)), None);
        assert_eq!(super::leader_ingest_hint("cluster could not commit: timeout"), None);
        assert_eq!(
            super::leader_ingest_hint(&super::not_leader_reason(Some("[::1]:7"))),
            Some("[::1]:7".parse().unwrap())
        );
        assert_eq!(
            super::leader_ingest_hint(&super::not_leader_reason(Some("node-2:4433"))),
            None,
            "names are not dialled"
        );
    }

    use super::*;
    use crate::evidence::{Field, Proto};
    use proptest::prelude::*;

    fn sample() -> Batch {
        Batch {
            id: Ulid::from_parts(1_700_000_000_000, 42),
            sensor_id: "bldg-a-1".into(),
            site: "north".into(),
            seq: 7,
            events: vec![
                Event::Device(DeviceObservation {
                    mac: MacAddr([0, 0x1a, 0x2b, 3, 4, 5]),
                    ips: vec!["10.1.2.3".parse().unwrap()],
                    vlans: vec![20],
                    first_seen_us: 1,
                    last_seen_us: 2,
                    packets: 3,
                    bytes: 400,
                    evidence: vec![Evidence::new(Field::Hostname, "PUMP-01", Proto::Dhcp, 1)],
                }),
                Event::Stats(SensorStats { packets: 10, ..Default::default() }),
                Event::Host(HostObservation {
                    ip: "10.9.0.7".parse().unwrap(),
                    vlan: Some(30),
                    via_mac: Some(MacAddr([0, 0x11, 0x22, 0x33, 0x44, 0x55])),
                    first_seen_us: 5,
                    last_seen_us: 6,
                    packets: 2,
                    bytes: 120,
                    evidence: vec![Evidence::new(Field::SnmpSysName, "ups-3a", Proto::Snmp, 5)],
                    site: Some("north-clinic".into()),
                }),
                Event::Binding(AddressBinding {
                    mac: MacAddr([0, 0x1a, 0x2b, 3, 4, 5]),
                    ip: "10.1.2.3".parse().unwrap(),
                    vlan: Some(20),
                    source: BindingSource::DhcpAck,
                    seen_us: 1,
                    valid_until_us: Some(86_400_000_001),
                }),
            ],
        }
    }

    #[test]
    fn roundtrip() {
        let b = sample();
        let f = encode_frame(&b).unwrap();
        assert_eq!(f[0], WIRE_VERSION);
        let back: Batch = decode_frame(&f).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn version_1_frames_still_decode() {
        let mut f = encode_frame(&sample()).unwrap();
        f[0] = 1;
        assert_eq!(decode_frame::<Batch>(&f).unwrap(), sample());
        f[0] = 2;
        assert_eq!(decode_frame::<Batch>(&f).unwrap(), sample());
        f[0] = WIRE_VERSION + 1;
        assert!(matches!(decode_frame::<Batch>(&f), Err(FrameError::Version(_))));
    }

    #[test]
    fn spool_report_round_trips() {
        let mut b = sample();
        b.events.push(Event::SpoolReport(SpoolReport {
            spool_epoch: Ulid::from_parts(1_700_000_000_000, 7),
            batches_evicted: 3,
            events_evicted: 40,
            flows_evicted: 38,
            flow_bytes_evicted: 123_456,
            flows_rolled_up: 900,
            rollups_created: 12,
            records_quarantined: 1,
            losses: vec![SpoolLoss {
                batch_id: Ulid::from_parts(1_700_000_000_001, 9),
                seq: Some(17),
                kind: SpoolLossKind::EvictedFlowDetail,
                events: 20,
                flows: 20,
                flow_bytes: 5000,
                first_seen_us: 10,
                last_seen_us: 20,
            }],
        }));
        let f = encode_frame(&b).unwrap();
        assert_eq!(f[0], 3);
        assert_eq!(decode_frame::<Batch>(&f).unwrap(), b);
    }

    #[test]
    fn heartbeat_and_reply_round_trip() {
        let hb = SensorHeartbeat {
            sensor_id: "bldg-a-1".into(),
            site: "north".into(),
            version: "0.1.0".into(),
            sent_us: 1_700_000_000_000_000,
            clock_offset_us: Some(-2_500_000),
            round_trip_us: Some(800),
            spool_batches: 3,
            spool_bytes: 4096,
            spool_max_bytes: 1 << 30,
            capture_kernel_dropped: 12,
            uplink_connected: true,
            uplink_state: "connected to 127.0.0.1:4433".into(),
            cert_not_after_s: Some(1_800_000_000),
            ..Default::default()
        };
        let f = encode_frame(&hb).unwrap();
        assert!(f.len() < MAX_HEARTBEAT_BYTES);
        assert_eq!(decode_frame::<SensorHeartbeat>(&f).unwrap(), hb);
        let reply = HeartbeatReply { received_us: 5, replied_us: 6, outcome: "recorded".into(), leader_ingest: None };
        assert_eq!(decode_frame::<HeartbeatReply>(&encode_frame(&reply).unwrap()).unwrap(), reply);
        // A heartbeat is not a batch: a node never mistakes one for the other.
        assert!(decode_frame::<Batch>(&f).is_err());
    }

    #[test]
    fn rejects_bad_version_and_trailing() {
        let mut f = encode_frame(&sample()).unwrap();
        f[0] = 99;
        assert!(matches!(decode_frame::<Batch>(&f), Err(FrameError::Version(99))));
        let mut f = encode_frame(&sample()).unwrap();
        f.push(0);
        assert!(matches!(decode_frame::<Batch>(&f), Err(FrameError::Trailing(1))));
        assert!(matches!(decode_frame::<Batch>(&[]), Err(FrameError::Empty)));
    }

    fn numbered(seq: u64) -> Batch {
        Batch { seq, id: Ulid::from_parts(1_700_000_000_000 + seq, seq.into()), ..sample() }
    }

    #[test]
    fn assembled_multi_batch_frame_is_the_encoded_vector() {
        for n in [1u64, 2, 5, 130] {
            let batches: Vec<Batch> = (1..=n).map(numbered).collect();
            let bodies: Vec<Vec<u8>> = batches.iter().map(|b| encode_batch_body(b).unwrap()).collect();
            let frame = assemble_batches_frame(&bodies).unwrap();
            assert_eq!(frame, encode_frame(&batches).unwrap(), "{n} batches");
            assert_eq!(decode_batches_frame(&frame).unwrap(), batches);
        }
    }

    #[test]
    fn multi_batch_frame_shape_is_checked() {
        assert!(matches!(assemble_batches_frame(&[]), Err(FrameError::BatchCount(0))));
        let body = encode_batch_body(&numbered(1)).unwrap();
        let too_many = vec![body; MAX_FRAME_BATCHES + 1];
        assert!(matches!(assemble_batches_frame(&too_many), Err(FrameError::BatchCount(257))));
        let empty: Vec<Batch> = Vec::new();
        assert!(matches!(decode_batches_frame(&encode_frame(&empty).unwrap()), Err(FrameError::BatchCount(0))));
        let many: Vec<Batch> = (0..=MAX_FRAME_BATCHES as u64).map(numbered).collect();
        assert!(matches!(decode_batches_frame(&encode_frame(&many).unwrap()), Err(FrameError::BatchCount(257))));
        let backwards = vec![numbered(3), numbered(4), numbered(2)];
        let e = decode_batches_frame(&encode_frame(&backwards).unwrap()).unwrap_err();
        assert!(matches!(e, FrameError::Order { index: 2, seq: 2, previous: 4 }), "{e}");
        assert!(e.to_string().contains("(seq 2) follows seq 4"), "{e}");
        // A repeat is the cluster's to deduplicate, not a malformed frame.
        let repeated = vec![numbered(3), numbered(3)];
        assert_eq!(decode_batches_frame(&encode_frame(&repeated).unwrap()).unwrap().len(), 2);
        // A single-batch (version 1 stream) frame is not a multi-batch frame.
        assert!(decode_batches_frame(&encode_frame(&numbered(1)).unwrap()).is_err());
    }

    #[test]
    fn oversized_multi_batch_frame_is_not_assembled() {
        let mut big = numbered(1);
        big.site = "x".repeat(MAX_FRAME_BYTES / 2);
        let body = encode_batch_body(&big).unwrap();
        let e = assemble_batches_frame(&[body.clone(), body]).unwrap_err();
        assert!(matches!(e, FrameError::TooLarge(_, MAX_FRAME_BYTES)), "{e}");
    }

    fn compressed(batches: &[Batch], level: i32) -> Vec<u8> {
        let frame = encode_frame(&batches.to_vec()).unwrap();
        compress_frame(&frame, level).unwrap()
    }

    #[test]
    fn compressed_frames_round_trip_and_shrink() {
        let batches: Vec<Batch> = (1..=40).map(numbered).collect();
        let plain = encode_frame(&batches).unwrap();
        let packed = compressed(&batches, DEFAULT_COMPRESSION_LEVEL);
        let header =
            CompressedHeader::parse(packed[..COMPRESSED_HEADER_BYTES].try_into().unwrap(), MAX_FRAME_BYTES).unwrap();
        assert_eq!(header.codec, Codec::Zstd);
        assert_eq!((header.stored, header.decoded), (packed.len() - COMPRESSED_HEADER_BYTES, plain.len()));
        assert!(packed.len() * 4 < plain.len(), "{} of {} bytes", packed.len(), plain.len());
        assert_eq!(decompress_frame(&header, &packed[COMPRESSED_HEADER_BYTES..]).unwrap(), plain);
        assert_eq!(decode_compressed_batches_frame(&packed, MAX_FRAME_BYTES).unwrap(), batches);
    }

    #[test]
    fn a_frame_compression_cannot_shrink_is_stored() {
        // A tiny frame: zstd's own header makes it larger.
        let frame = vec![WIRE_VERSION, 1, 0];
        let out = compress_frame(&frame, DEFAULT_COMPRESSION_LEVEL).unwrap();
        assert_eq!(out[4], 0, "stored");
        assert_eq!(&out[COMPRESSED_HEADER_BYTES..], &frame[..]);
        let batches = vec![numbered(1)];
        let mut stored = CompressedHeader { stored: 0, codec: Codec::Stored, decoded: 0 };
        let plain = encode_frame(&batches).unwrap();
        (stored.stored, stored.decoded) = (plain.len(), plain.len());
        let bytes = [&stored.to_bytes()[..], &plain].concat();
        assert_eq!(decode_compressed_batches_frame(&bytes, MAX_FRAME_BYTES).unwrap(), batches);
    }

    #[test]
    fn compressed_headers_are_checked_against_the_limit() {
        let header = |stored: u32, codec: u8, decoded: u32| {
            let mut b = [0u8; COMPRESSED_HEADER_BYTES];
            b[..4].copy_from_slice(&stored.to_be_bytes());
            b[4] = codec;
            b[5..].copy_from_slice(&decoded.to_be_bytes());
            b
        };
        let limit = 1 << 20;
        assert!(CompressedHeader::parse(&header(100, 1, 5000), limit).is_ok());
        assert!(matches!(CompressedHeader::parse(&header(100, 7, 5000), limit), Err(FrameError::Codec(7))));
        assert!(matches!(CompressedHeader::parse(&header(0, 1, 5000), limit), Err(FrameError::ZeroLength)));
        assert!(matches!(CompressedHeader::parse(&header(100, 1, 0), limit), Err(FrameError::ZeroLength)));
        let e = CompressedHeader::parse(&header(100, 1, limit as u32 + 1), limit).unwrap_err();
        assert!(matches!(e, FrameError::ExpandsTooFar(_, _)), "{e}");
        assert!(e.to_string().contains("exceeds the 1048576-byte limit"), "{e}");
        assert!(matches!(
            CompressedHeader::parse(&header(limit as u32 + 1, 1, 10), limit),
            Err(FrameError::TooLarge(..))
        ));
        assert!(matches!(
            CompressedHeader::parse(&header(10, 0, 11), limit),
            Err(FrameError::Expansion { declared: 11, actual: Some(10) })
        ));
        let h = CompressedHeader { stored: 12, codec: Codec::Zstd, decoded: 99 };
        assert_eq!(CompressedHeader::parse(&h.to_bytes(), limit).unwrap(), h);
    }

    #[test]
    fn a_zip_bomb_is_refused_without_expanding_it() {
        // 64 MiB of zeros packs into a few KiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let claim = |decoded: usize| {
            let h = CompressedHeader { stored: bomb.len(), codec: Codec::Zstd, decoded };
            [&h.to_bytes()[..], &bomb].concat()
        };
        // Claiming its true size: refused by the header check, before any decompression.
        let e = decode_compressed_batches_frame(&claim(64 << 20), MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(e, FrameError::ExpandsTooFar(..)), "{e}");
        // Claiming a small size: decompression stops at the claim.
        let e = decode_compressed_batches_frame(&claim(4096), MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(e, FrameError::Expansion { declared: 4096, actual: None }), "{e}");
        // Claiming more than it holds.
        let small = zstd::bulk::compress(&[1u8; 100], 3).unwrap();
        let h = CompressedHeader { stored: small.len(), codec: Codec::Zstd, decoded: 200 };
        let e = decompress_frame(&h, &small).unwrap_err();
        assert!(matches!(e, FrameError::Expansion { declared: 200, actual: Some(100) }), "{e}");
    }

    #[test]
    fn truncated_and_garbled_compressed_frames_are_errors() {
        let packed = compressed(&(1..=5).map(numbered).collect::<Vec<_>>(), 3);
        let e = decode_compressed_batches_frame(&packed[..packed.len() - 1], MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(e, FrameError::Truncated { .. }), "{e}");
        let mut garbled = packed.clone();
        for b in &mut garbled[COMPRESSED_HEADER_BYTES..COMPRESSED_HEADER_BYTES + 4] {
            *b ^= 0xff; // the zstd magic number
        }
        let e = decode_compressed_batches_frame(&garbled, MAX_FRAME_BYTES).unwrap_err();
        assert!(matches!(e, FrameError::Decompress(_)), "{e}");
        assert!(decode_compressed_batches_frame(&[], MAX_FRAME_BYTES).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<Batch>(&bytes);
            let _ = decode_frame::<BatchReply>(&bytes);
            let _ = decode_batches_frame(&bytes);
            let _ = decode_frame::<Vec<BatchReply>>(&bytes);
            let _ = decode_frame::<SensorHeartbeat>(&bytes);
            let _ = decode_frame::<HeartbeatReply>(&bytes);
        }

        #[test]
        fn multi_batch_frames_round_trip_and_truncations_are_errors(
            seqs in proptest::collection::vec(1u64..1_000, 1..8),
            cut in 0usize..4096,
            flip in any::<(usize, u8)>(),
        ) {
            let mut seqs = seqs;
            seqs.sort_unstable();
            let batches: Vec<Batch> = seqs.iter().map(|&s| numbered(s)).collect();
            let bodies: Vec<Vec<u8>> = batches.iter().map(|b| encode_batch_body(b).unwrap()).collect();
            let frame = assemble_batches_frame(&bodies).unwrap();
            prop_assert_eq!(&decode_batches_frame(&frame).unwrap(), &batches);
            let cut = cut.min(frame.len() - 1);
            prop_assert!(decode_batches_frame(&frame[..cut]).is_err());
            // A flipped byte may still decode (a string changes), but never panics, and what
            // decodes still has the promised shape.
            let mut flipped = frame.clone();
            let at = flip.0 % flipped.len();
            flipped[at] ^= flip.1 | 1;
            if let Ok(back) = decode_batches_frame(&flipped) {
                prop_assert!(!back.is_empty() && back.len() <= MAX_FRAME_BATCHES);
                prop_assert!(back.windows(2).all(|w| w[0].seq <= w[1].seq));
            }
        }

        #[test]
        fn arbitrary_compressed_frames_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..1024),
            limit in 1usize..100_000,
        ) {
            if let Ok(batches) = decode_compressed_batches_frame(&bytes, limit) {
                prop_assert!(!batches.is_empty() && batches.len() <= MAX_FRAME_BATCHES);
            }
            // Behind a valid zstd header too, so the decoder itself is exercised.
            let header = CompressedHeader { stored: bytes.len().max(1), codec: Codec::Zstd, decoded: limit };
            let mut framed = header.to_bytes().to_vec();
            framed.extend_from_slice(&zstd::bulk::compress(&bytes, 1).unwrap()[..4]);
            framed.extend_from_slice(&bytes);
            let _ = decode_compressed_batches_frame(&framed, limit);
        }

        #[test]
        fn compressed_frames_round_trip_and_damage_is_an_error_or_well_formed(
            seqs in proptest::collection::vec(1u64..1_000, 1..8),
            level in 1i32..10,
            cut in 0usize..4096,
            flip in any::<(usize, u8)>(),
        ) {
            let mut seqs = seqs;
            seqs.sort_unstable();
            let batches: Vec<Batch> = seqs.iter().map(|&s| numbered(s)).collect();
            let packed = compressed(&batches, level);
            prop_assert_eq!(&decode_compressed_batches_frame(&packed, MAX_FRAME_BYTES).unwrap(), &batches);
            let cut = cut.min(packed.len() - 1);
            prop_assert!(decode_compressed_batches_frame(&packed[..cut], MAX_FRAME_BYTES).is_err());
            let mut flipped = packed.clone();
            let at = flip.0 % flipped.len();
            flipped[at] ^= flip.1 | 1;
            if let Ok(back) = decode_compressed_batches_frame(&flipped, MAX_FRAME_BYTES) {
                prop_assert!(!back.is_empty() && back.len() <= MAX_FRAME_BATCHES);
                prop_assert!(back.windows(2).all(|w| w[0].seq <= w[1].seq));
            }
        }

        #[test]
        fn truncated_frames_are_errors(cut in 0usize..200) {
            let f = encode_frame(&sample()).unwrap();
            let cut = cut.min(f.len() - 1);
            prop_assert!(decode_frame::<Batch>(&f[..cut]).is_err());
        }
    }
}
