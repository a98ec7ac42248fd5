//! The one shape of a stored flow: a row of the ClickHouse `flows` table, the value of the
//! embedded store, and the `flow` the HTTP API returns. Conversion from and to the wire
//! [`FlowRecord`] happens here and nowhere else.
//!
//! The fields follow the table's column order exactly (deploy/clickhouse/schema.sql):
//! ClickHouse 18.16 cannot check a RowBinary layout against the table, so the order is the
//! contract, and the sink tests run it against a real server.

use serde::{Deserialize, Serialize};
use ulid::Ulid;
use wardline_common::net::ip_text;
use wardline_common::FlowRecord;

const MICROS_PER_SECOND: u64 = 1_000_000;
const MICROS_PER_DAY: u64 = 86_400 * MICROS_PER_SECOND;

/// A flow as stored (ClickHouse, embedded store) and served by the JSON API.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct FlowRow {
    pub batch_id: String,
    /// Position of the flow within its batch; with `batch_id` the row's identity.
    pub idx: u32,
    pub sensor_id: String,
    pub site: String,
    /// Day of `first_seen_us`, in days since the Unix epoch (the table's partition key).
    pub day: u16,
    /// `first_seen_us` in whole seconds (a `DateTime` column for time filters in Grafana).
    pub first_seen: u32,
    /// Microseconds since the Unix epoch.
    pub first_seen_us: u64,
    pub last_seen_us: u64,
    pub ip_proto: u8,
    /// 802.1Q VLAN id; `None` when untagged. Stored as 0 (the table has no Nullable column,
    /// for ClickHouse 18.16), so a priority tag of 0 reads back as none.
    #[serde(with = "vlan_zero_is_untagged")]
    pub vlan: Option<u16>,
    /// Canonical text forms (lower-case colon MACs, `IpAddr` display) so filters match exactly.
    pub a_mac: String,
    pub b_mac: String,
    pub a_ip: String,
    pub b_ip: String,
    pub a_port: u16,
    pub b_port: u16,
    pub packets_ab: u64,
    pub packets_ba: u64,
    pub bytes_ab: u64,
    pub bytes_ba: u64,
    pub tcp_flags_ab: u8,
    pub tcp_flags_ba: u8,
    pub app: String,
    pub end_reason: String,
}

impl FlowRow {
    /// The row a wire flow record becomes as flow `idx` of batch `batch_id`.
    pub fn from_record(batch_id: Ulid, idx: u32, sensor_id: &str, site: &str, f: &FlowRecord) -> Self {
        // Sensor clocks are untrusted input: clamp instead of overflowing the narrow columns.
        let day = u16::try_from(f.first_seen_us / MICROS_PER_DAY).unwrap_or(u16::MAX);
        let first_seen = u32::try_from(f.first_seen_us / MICROS_PER_SECOND).unwrap_or(u32::MAX);
        FlowRow {
            batch_id: batch_id.to_string(),
            idx,
            sensor_id: sensor_id.to_string(),
            site: site.to_string(),
            day,
            first_seen,
            first_seen_us: f.first_seen_us,
            last_seen_us: f.last_seen_us,
            ip_proto: f.ip_proto,
            vlan: f.vlan.filter(|v| *v != 0),
            a_mac: f.a_mac.to_text(),
            b_mac: f.b_mac.to_text(),
            a_ip: ip_text(&f.a_ip),
            b_ip: ip_text(&f.b_ip),
            a_port: f.a_port,
            b_port: f.b_port,
            packets_ab: f.packets_ab,
            packets_ba: f.packets_ba,
            bytes_ab: f.bytes_ab,
            bytes_ba: f.bytes_ba,
            tcp_flags_ab: f.tcp_flags_ab,
            tcp_flags_ba: f.tcp_flags_ba,
            app: f.app.to_string(),
            end_reason: f.end_reason.to_string(),
        }
    }

    /// The wire record back, for the knowledge base's flow analysis; `None` when an address
    /// column does not parse (a row another tool wrote into the table).
    pub fn to_record(&self) -> Option<FlowRecord> {
        Some(FlowRecord {
            ip_proto: self.ip_proto,
            vlan: self.vlan,
            a_mac: self.a_mac.parse().ok()?,
            b_mac: self.b_mac.parse().ok()?,
            a_ip: self.a_ip.parse().ok()?,
            b_ip: self.b_ip.parse().ok()?,
            a_port: self.a_port,
            b_port: self.b_port,
            first_seen_us: self.first_seen_us,
            last_seen_us: self.last_seen_us,
            packets_ab: self.packets_ab,
            packets_ba: self.packets_ba,
            bytes_ab: self.bytes_ab,
            bytes_ba: self.bytes_ba,
            tcp_flags_ab: self.tcp_flags_ab,
            tcp_flags_ba: self.tcp_flags_ba,
            app: self.app.clone().into(),
            end_reason: self.end_reason.clone().into(),
        })
    }

    pub fn packets(&self) -> u64 {
        self.packets_ab.saturating_add(self.packets_ba)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes_ab.saturating_add(self.bytes_ba)
    }
}

/// `vlan` in JSON is a number or null; in the binary encodings (ClickHouse RowBinary, the
/// embedded store's bincode) it is the `UInt16` column, 0 meaning untagged.
mod vlan_zero_is_untagged {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(vlan: &Option<u16>, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            vlan.serialize(s)
        } else {
            vlan.unwrap_or(0).serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        let vlan = if d.is_human_readable() { Option::<u16>::deserialize(d)? } else { Some(u16::deserialize(d)?) };
        Ok(vlan.filter(|v| *v != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardline_common::MacAddr;

    fn record(first_seen_us: u64, vlan: Option<u16>) -> FlowRecord {
        FlowRecord {
            ip_proto: 6,
            vlan,
            a_mac: MacAddr([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e]),
            b_mac: MacAddr([0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5f]),
            a_ip: "10.0.0.1".parse().unwrap(),
            b_ip: "fe80::2".parse().unwrap(),
            a_port: 40_000,
            b_port: 104,
            first_seen_us,
            last_seen_us: first_seen_us + 1_000_000,
            packets_ab: 3,
            packets_ba: 4,
            bytes_ab: 100,
            bytes_ba: 200,
            tcp_flags_ab: 0x1b,
            tcp_flags_ba: 0x12,
            app: "dicom".into(),
            end_reason: "fin".into(),
        }
    }

    #[test]
    fn narrow_time_columns_clamp_instead_of_overflowing() {
        let r = FlowRow::from_record(Ulid::nil(), 0, "s", "x", &record(1_700_000_000_123_456, Some(20)));
        assert_eq!(r.first_seen, 1_700_000_000);
        assert_eq!(r.day, 19_675); // 2023-11-14
        let r = FlowRow::from_record(Ulid::nil(), 0, "s", "x", &record(u64::MAX - 1_000_000, None));
        assert_eq!((r.day, r.first_seen), (u16::MAX, u32::MAX));
    }

    #[test]
    fn record_survives_the_row_and_both_encodings() {
        let rec = record(1_700_000_000_000_000, Some(30));
        let row = FlowRow::from_record(Ulid::from_parts(1, 2), 7, "ward-a-1", "north", &rec);
        assert_eq!(row.to_record().as_ref(), Some(&rec));
        assert_eq!((row.packets(), row.bytes()), (7, 300));

        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(json["vlan"], 30);
        assert_eq!(json["b_ip"], "fe80::2");
        let bytes = bincode::serde::encode_to_vec(&row, bincode::config::standard()).unwrap();
        let (back, _): (FlowRow, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn untagged_is_null_in_json_and_zero_in_binary() {
        for vlan in [None, Some(0)] {
            let row = FlowRow::from_record(Ulid::nil(), 0, "s", "x", &record(1, vlan));
            assert_eq!(row.vlan, None);
            assert_eq!(serde_json::to_value(&row).unwrap()["vlan"], serde_json::Value::Null);
            let back: FlowRow = serde_json::from_value(serde_json::to_value(&row).unwrap()).unwrap();
            assert_eq!(back, row);
            let bytes = bincode::serde::encode_to_vec(&row, bincode::config::standard()).unwrap();
            let (back, _): (FlowRow, usize) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            assert_eq!(back, row);
        }
    }

    #[test]
    fn a_row_with_an_unparsable_address_has_no_record() {
        let mut row = FlowRow::from_record(Ulid::nil(), 0, "s", "x", &record(1, None));
        row.a_ip = "not an address".into();
        assert_eq!(row.to_record(), None);
    }
}
