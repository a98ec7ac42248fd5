//! A device's flows in clinical context: which stored rows are the device's, which side of
//! each it is on, who the peer is, and what the knowledge base says about the flow.

use super::classify::classify_record;
use super::devices::NO_MAC;
use super::views::{DeviceFlowsView, FlowInContext};
use super::{QueryError, QueryService};
use crate::sink::{FlowQuery, FlowRow};
use crate::state::{DeviceId, DeviceRecord};
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::{FlowRecord, MacAddr};
use wardline_intel::{flow_context, Classification, FlowSpec};

/// Flows of one device returned when the request names no `limit`.
pub const DEFAULT_DEVICE_FLOWS_LIMIT: u32 = 100;
/// Largest `limit` of a device's flows: each row costs a peer lookup and a flow-context
/// evaluation, and the device's every address is queried with the limit.
pub const MAX_DEVICE_FLOWS_LIMIT: u32 = 1_000;

impl QueryService {
    /// The newest flows of device `id`, each with its peer and clinical context.
    pub async fn device_flows(&self, id: &DeviceId, limit: Option<u32>) -> Result<DeviceFlowsView, QueryError> {
        let limit = limit.unwrap_or(DEFAULT_DEVICE_FLOWS_LIMIT);
        if !(1..=MAX_DEVICE_FLOWS_LIMIT).contains(&limit) {
            return Err(QueryError::Invalid(format!(
                "limit {limit} is outside 1..={MAX_DEVICE_FLOWS_LIMIT} for a device's flows; the newest \
                 come first, so a smaller limit keeps the most recent (GET /api/v1/flows?mac= pages \
                 raw rows up to 10000)"
            )));
        }
        let snapshot = self.snapshot(id, false).await?;
        let device = snapshot.merged();
        let rows = self.rows_of(&device, limit).await?;
        let records: Vec<Option<FlowRecord>> =
            rows.iter().map(|row| row.to_record().map(|rec| place_device(rec, &device))).collect();
        let peers = self.peers_of(&device, &records).await;

        let class = classify_record(&self.kb, &device);
        // A busy server is the peer of many rows: classify each peer once.
        let mut peer_classes: BTreeMap<MacAddr, Classification> = BTreeMap::new();
        let flows: Vec<FlowInContext> = rows
            .into_iter()
            .zip(records)
            .zip(peers)
            .map(|((flow, record), peer)| {
                let peer_class = peer
                    .as_ref()
                    .map(|p| peer_classes.entry(p.mac).or_insert_with(|| classify_record(&self.kb, p)).clone());
                let context = record
                    .as_ref()
                    .and_then(|rec| FlowSpec::from_record(rec, &device.mac))
                    .map(|spec| flow_context(&self.kb, &class, peer_class.as_ref(), &spec));
                FlowInContext {
                    flow,
                    peer_mac: peer.map(|p| p.mac.to_string()),
                    peer_class: peer_class.map(|c| c.class.value),
                    context,
                }
            })
            .collect();
        Ok(DeviceFlowsView {
            class: class.class.value,
            count: flows.len(),
            flows,
            id: id.to_string(),
            mac: snapshot.mac().map(|m| m.to_string()),
        })
    }

    /// The device's newest `limit` rows. Flows name it by MAC on its own segment and only by
    /// address when routed, so its MAC and each of its addresses are asked for.
    pub(super) async fn rows_of(&self, device: &DeviceRecord, limit: u32) -> Result<Vec<FlowRow>, QueryError> {
        // An IP-keyed device (classified under the group address NO_MAC) has no MAC to ask for.
        let by_mac = (device.mac != NO_MAC).then(|| FlowQuery {
            mac: Some(device.mac.to_string()),
            limit: Some(limit),
            ..Default::default()
        });
        let by_ip = device.ips.keys().map(|ip| FlowQuery {
            ip: Some(ip.to_string()),
            limit: Some(limit),
            ..Default::default()
        });
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        for query in by_mac.into_iter().chain(by_ip) {
            for row in self.sink.query_flows(&query).await? {
                if seen.insert((row.batch_id.clone(), row.idx)) {
                    rows.push(row);
                }
            }
        }
        // Newest last packet first; the row key breaks ties so every node lists the same order.
        rows.sort_by(|a, b| (b.last_seen_us, &b.batch_id, b.idx).cmp(&(a.last_seen_us, &a.batch_id, a.idx)));
        rows.truncate(limit as usize);
        Ok(rows)
    }

    /// The known device at the far end of each flow: by address first (a routed peer is
    /// behind the router's MAC), then by MAC. Index lookups under one short hold of the
    /// state lock.
    pub(super) async fn peers_of(
        &self,
        device: &DeviceRecord,
        records: &[Option<FlowRecord>],
    ) -> Vec<Option<Arc<DeviceRecord>>> {
        let ends: Vec<Option<(IpAddr, MacAddr)>> =
            records.iter().map(|r| r.as_ref().map(|rec| far_end(rec, device))).collect();
        self.raft
            .read_state(|s| {
                ends.iter()
                    .map(|end| end.and_then(|(ip, mac)| s.device_with_ip(&ip).or_else(|| s.device(&mac)).cloned()))
                    .collect()
            })
            .await
    }
}

/// A routed flow carries the router's MAC on the device's side: put the device there by
/// its address, so the flow's direction is judged from the device.
pub(super) fn place_device(mut rec: FlowRecord, device: &DeviceRecord) -> FlowRecord {
    if device.ips.contains_key(&rec.a_ip) {
        rec.a_mac = device.mac;
    } else if device.ips.contains_key(&rec.b_ip) {
        rec.b_mac = device.mac;
    }
    rec
}

/// Address and MAC of the end that is not `device`.
fn far_end(rec: &FlowRecord, device: &DeviceRecord) -> (IpAddr, MacAddr) {
    if rec.a_mac == device.mac {
        (rec.b_ip, rec.b_mac)
    } else {
        (rec.a_ip, rec.a_mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::IpSeen;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x00, 0x1a, 0x2b, 0x3c, 0x4d, last])
    }

    fn flow(a_mac: MacAddr, a_ip: &str, b_mac: MacAddr, b_ip: &str) -> FlowRecord {
        FlowRecord {
            ip_proto: 6,
            vlan: None,
            a_mac,
            b_mac,
            a_ip: a_ip.parse().unwrap(),
            b_ip: b_ip.parse().unwrap(),
            a_port: 40_000,
            b_port: 2575,
            first_seen_us: 1,
            last_seen_us: 2,
            packets_ab: 1,
            packets_ba: 1,
            bytes_ab: 60,
            bytes_ba: 60,
            tcp_flags_ab: 0,
            tcp_flags_ba: 0,
            app: "hl7".into(),
            end_reason: "fin".into(),
        }
    }

    #[test]
    fn a_routed_device_is_placed_by_address_and_the_peer_is_the_other_end() {
        let mut device = DeviceRecord::new(mac(1));
        device.ips.insert("10.20.0.5".parse().unwrap(), IpSeen { first_seen_us: 1, last_seen_us: 2 });
        let router = mac(0xfe);
        // Seen on the server's segment: the device's side carries the router's MAC.
        let routed = place_device(flow(router, "10.20.0.5", mac(9), "10.30.0.9"), &device);
        assert_eq!(routed.a_mac, mac(1));
        assert_eq!(far_end(&routed, &device), ("10.30.0.9".parse().unwrap(), mac(9)));
        // The device answered: it is the b side.
        let inbound = place_device(flow(mac(9), "10.30.0.9", router, "10.20.0.5"), &device);
        assert_eq!((inbound.a_mac, inbound.b_mac), (mac(9), mac(1)));
        assert_eq!(far_end(&inbound, &device), ("10.30.0.9".parse().unwrap(), mac(9)));
        // Neither address is the device's: nothing moves.
        let other = flow(router, "10.20.0.6", mac(9), "10.30.0.9");
        assert_eq!(place_device(other.clone(), &device), other);
    }
}
