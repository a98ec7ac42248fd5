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
/// ALPN protocol id of the sensor uplink.
pub const ALPN_UPLINK: &[u8] = b"wardline-uplink/1";

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
    /// sensor's static label table (no allocation per flow); owned after decoding.
    pub app: Cow<'static, str>,
    /// Why the flow record was emitted: "idle", "active", "end", "fin".
    pub end_reason: Cow<'static, str>,
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

#[cfg(test)]
mod tests {
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
    fn rejects_bad_version_and_trailing() {
        let mut f = encode_frame(&sample()).unwrap();
        f[0] = 99;
        assert!(matches!(decode_frame::<Batch>(&f), Err(FrameError::Version(99))));
        let mut f = encode_frame(&sample()).unwrap();
        f.push(0);
        assert!(matches!(decode_frame::<Batch>(&f), Err(FrameError::Trailing(1))));
        assert!(matches!(decode_frame::<Batch>(&[]), Err(FrameError::Empty)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<Batch>(&bytes);
            let _ = decode_frame::<BatchReply>(&bytes);
        }

        #[test]
        fn truncated_frames_are_errors(cut in 0usize..200) {
            let f = encode_frame(&sample()).unwrap();
            let cut = cut.min(f.len() - 1);
            prop_assert!(decode_frame::<Batch>(&f[..cut]).is_err());
        }
    }
}
