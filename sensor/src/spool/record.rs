//! On-disk form of one spooled batch: a format byte, the record as a wire frame, and a
//! checksum over both, so a damaged record is recognised (and quarantined) instead of
//! being sent or mis-decoded.

use serde::{Deserialize, Serialize};
use ulid::Ulid;
use wardline_common::wire::{decode_frame, encode_frame, Batch, Event, FrameError};

/// First byte of a record. Outside the wire versions (1..=3), so a record written by an
/// older sensor (a bare wire frame) is still recognised after an upgrade.
pub const RECORD_FORMAT: u8 = 0xA5;
/// Checksum length: the first bytes of SHA-256 over the format byte and the frame.
pub const CHECKSUM_BYTES: usize = 8;

/// Delivery priority, most important first; sent by class, then age. Eviction takes the
/// last class first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Class {
    /// Inventory changes (devices, hosts, bindings) and sensor reports (stats, spool losses).
    Inventory = 0,
    /// Flow summaries: flow detail rolled up per device pair, application, server port, hour.
    FlowSummary = 1,
    /// Flow detail, one record per flow.
    FlowDetail = 2,
}

impl Class {
    pub fn of(events: &[Event]) -> Class {
        let mut class = Class::FlowSummary;
        for e in events {
            match e {
                Event::Flow(f) if f.end_reason == crate::spool::rollup::ROLLUP_REASON => {}
                Event::Flow(_) => class = Class::FlowDetail,
                _ => return Class::Inventory,
            }
        }
        class
    }

    pub fn from_u8(b: u8) -> Option<Class> {
        match b {
            0 => Some(Class::Inventory),
            1 => Some(Class::FlowSummary),
            2 => Some(Class::FlowDetail),
            _ => None,
        }
    }
}

/// One batch as the spool keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpoolRecord {
    pub id: Ulid,
    pub sensor_id: String,
    pub site: String,
    pub class: Class,
    /// Wire sequence number; 0 while queued (assigned when it is next to be sent).
    pub seq: u64,
    /// When it was spooled (ms since the Unix epoch).
    pub created_ms: u64,
    /// Loss entries up to this index travel in this batch's `SpoolReport` (0: none).
    pub report_through: u64,
    pub events: Vec<Event>,
}

impl SpoolRecord {
    pub fn to_batch(&self) -> Batch {
        Batch {
            id: self.id,
            sensor_id: self.sensor_id.clone(),
            site: self.site.clone(),
            seq: self.seq,
            events: self.events.clone(),
        }
    }

    /// The batch to send, taking the decoded events instead of copying them (read path).
    pub fn into_batch(self) -> Batch {
        Batch { id: self.id, sensor_id: self.sensor_id, site: self.site, seq: self.seq, events: self.events }
    }

    /// Flow records, their traffic bytes and packet-time range.
    pub fn flow_totals(&self) -> (u64, u64, u64, u64) {
        let (mut n, mut bytes, mut first, mut last) = (0u64, 0u64, u64::MAX, 0u64);
        for e in &self.events {
            if let Event::Flow(f) = e {
                n += 1;
                bytes = bytes.saturating_add(f.bytes_ab.saturating_add(f.bytes_ba));
                first = first.min(f.first_seen_us);
                last = last.max(f.last_seen_us);
            }
        }
        (n, bytes, if n == 0 { 0 } else { first }, last)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is too short to hold a checksum")]
    Short(usize),
    #[error("checksum mismatch (stored {stored}, computed {computed}): the record was damaged on disk")]
    Checksum { stored: String, computed: String },
    #[error("unknown record format byte {0:#04x}")]
    Format(u8),
    #[error("record body does not decode: {0}")]
    Frame(#[from] FrameError),
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; CHECKSUM_BYTES];
    out.copy_from_slice(&digest.as_ref()[..CHECKSUM_BYTES]);
    out
}

pub fn encode(record: &SpoolRecord) -> Result<Vec<u8>, FrameError> {
    let frame = encode_frame(record)?;
    let mut out = Vec::with_capacity(1 + frame.len() + CHECKSUM_BYTES);
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&frame);
    let sum = checksum(&out);
    out.extend_from_slice(&sum);
    Ok(out)
}

/// Decode a stored record; never panics. A bare wire frame (written by a sensor before
/// decision 0022) is read as a record of its batch.
pub fn decode(bytes: &[u8]) -> Result<SpoolRecord, RecordError> {
    match bytes.first() {
        None => Err(RecordError::Short(0)),
        Some(&RECORD_FORMAT) => {
            if bytes.len() < 1 + CHECKSUM_BYTES {
                return Err(RecordError::Short(bytes.len()));
            }
            let (body, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
            let computed = checksum(body);
            if computed != stored {
                return Err(RecordError::Checksum { stored: hex::encode(stored), computed: hex::encode(computed) });
            }
            Ok(decode_frame::<SpoolRecord>(&body[1..])?)
        }
        Some(&v) if (wardline_common::wire::MIN_WIRE_VERSION..=wardline_common::wire::WIRE_VERSION).contains(&v) => {
            let b: Batch = decode_frame(bytes)?;
            Ok(SpoolRecord {
                class: Class::of(&b.events),
                id: b.id,
                sensor_id: b.sensor_id,
                site: b.site,
                seq: b.seq,
                created_ms: b.id.timestamp_ms(),
                report_through: 0,
                events: b.events,
            })
        }
        Some(&v) => Err(RecordError::Format(v)),
    }
}
