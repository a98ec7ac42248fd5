//! The read side of a node, between the replicated state and the flow sink on one side and
//! the HTTP API on the other: device views, flows in clinical context, peer lookup,
//! sensors, flow totals and Raft status. The API only parses requests and renders these
//! answers.
//!
//! Reads hold the state lock only to copy out what they need: `Arc`s of device records
//! (the state changes them copy-on-write), the small sensor map, a few sums, or index
//! lookups. Classification, flow-store queries and flow context run after the lock is
//! released; `apply` takes the same lock for writing, so a long read would stall ingest.
//!
//! Every answer about devices is a function of the applied state (and the knowledge base),
//! so two nodes that applied the same index answer the same (decision 0011).

pub mod classify;
pub mod devices;
mod flows;
pub mod risk;
pub mod views;

use crate::ingest::IngestStats;
use crate::raft::RaftNode;
use crate::sink::{FlowQuery, FlowSink, SinkError};
use crate::state::{DeviceId, DeviceRecord};
use classify::classify_record;
use devices::DeviceSnapshot;
use std::sync::Arc;
use views::{
    ClusterView, DeviceView, FlowsView, HealthView, HistoryView, InventoryView, MemberView, ReplicatedFlowTotals,
    SensorEpochTotals, SensorsView, TotalsView,
};
use wardline_intel::KnowledgeBase;

pub use flows::{DEFAULT_DEVICE_FLOWS_LIMIT, MAX_DEVICE_FLOWS_LIMIT};

/// Why a read could not be answered. The message tells the caller what to do.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// What was asked for does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// A store the answer needs is down or slow; the same request may work later (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<SinkError> for QueryError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::InvalidQuery(m) => QueryError::Invalid(m),
            other => QueryError::Unavailable(format!(
                "the flow store cannot answer: {other}. Retry once it is back; the inventory, \
                 device and sensor routes do not need it"
            )),
        }
    }
}

/// Answers every read the API serves, from this node's applied state and flow sink.
pub struct QueryService {
    raft: Arc<RaftNode>,
    sink: Arc<dyn FlowSink>,
    kb: Arc<KnowledgeBase>,
    ingest_stats: Arc<IngestStats>,
    /// Compiled vulnerability feeds, per replicated feed version (decision 0027).
    feeds: crate::risk::FeedCache,
    /// The flow store by kind, for analyses over the whole history (policy recommendation
    /// and replay, decision 0030); `None` when the node was built without one.
    store: Option<crate::sink::aggregates::FlowStore>,
}

impl QueryService {
    /// The Raft node the reads come from (for read barriers).
    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    /// This node's knowledge base (policy resolution and risk scoring classify devices with it).
    pub fn kb(&self) -> &Arc<KnowledgeBase> {
        &self.kb
    }

    pub fn new(
        raft: Arc<RaftNode>,
        sink: Arc<dyn FlowSink>,
        kb: Arc<KnowledgeBase>,
        ingest_stats: Arc<IngestStats>,
    ) -> Self {
        QueryService { raft, sink, kb, ingest_stats, feeds: Default::default(), store: None }
    }

    /// The same service with the flow store the policy analyses read (decision 0030).
    pub fn with_flow_store(mut self, store: crate::sink::aggregates::FlowStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The flow store by kind, if the node has one.
    pub fn flow_store(&self) -> Option<&crate::sink::aggregates::FlowStore> {
        self.store.as_ref()
    }

    /// Every device, classified: MAC devices (with the routed pieces attributed to them),
    /// then IP-keyed devices with pieces no binding attributes to a MAC.
    pub async fn inventory(&self) -> InventoryView {
        let snapshots: Vec<DeviceSnapshot> = self
            .raft
            .read_state(|s| {
                let macs = s.devices().keys().map(|m| DeviceId::Mac(*m));
                let hosts = s.hosts().values().filter(|h| h.has_unowned()).map(|h| DeviceId::Host(h.key.clone()));
                macs.chain(hosts).filter_map(|id| DeviceSnapshot::take(s, &id, false)).collect()
            })
            .await;
        let devices: Vec<DeviceView> = snapshots.iter().map(|snap| self.device_view(snap)).collect();
        InventoryView { count: devices.len(), devices }
    }

    /// One device, classified.
    pub async fn device(&self, id: &DeviceId) -> Result<DeviceView, QueryError> {
        let snapshot = self.snapshot(id, false).await?;
        Ok(self.device_view(&snapshot))
    }

    /// One device's history: connections, disconnections, address, VLAN and site changes.
    pub async fn history(&self, id: &DeviceId) -> Result<HistoryView, QueryError> {
        Ok(self.snapshot(id, true).await?.history())
    }

    /// Flows matching `query` (filters checked by the sink), newest first.
    pub async fn flows(&self, query: &FlowQuery) -> Result<FlowsView, QueryError> {
        let flows = self.sink.query_flows(query).await?;
        Ok(FlowsView { count: flows.len(), flows })
    }

    /// The flow store's totals next to the counters replicated through Raft.
    pub async fn totals(&self) -> Result<TotalsView, QueryError> {
        let store = self.sink.totals().await?;
        let (replicated, outbox) = self
            .raft
            .read_state(|s| {
                let totals = s.sensors().values().fold(ReplicatedFlowTotals::default(), |t, r| ReplicatedFlowTotals {
                    flows: t.flows.saturating_add(r.flows),
                    packets: t.packets.saturating_add(r.flow_packets),
                    bytes: t.bytes.saturating_add(r.flow_bytes),
                });
                (totals, self.ingest_stats.outbox.view_at(s.outbox()))
            })
            .await;
        Ok(TotalsView { replicated, store, outbox })
    }

    /// Replicated sensor records and this node's ingest counters.
    pub async fn sensors(&self) -> SensorsView {
        // Sensors number in the tens to hundreds: copying the map is a short hold.
        let (sensors, health, spool_losses, sensor_epochs, epochs, foreign_observations) = self
            .raft
            .read_state(|s| {
                let health = s.sensor_health().sensors().iter().map(|(id, r)| (id.clone(), r.view())).collect();
                let losses = s.spool_losses().sensors().iter().map(|(id, a)| (id.clone(), a.total())).collect();
                let e = s.epochs();
                let totals = SensorEpochTotals {
                    changes: e.changes,
                    stale_refused: e.stale_refused,
                    jumps_refused: e.jumps_refused,
                    retired_forgotten: e.retired_forgotten(),
                };
                let records = e.iter().map(|(id, r)| (id.clone(), r.clone())).collect();
                (s.sensors().clone(), health, losses, records, totals, s.homes().foreign_by_sensor.clone())
            })
            .await;
        SensorsView {
            ingest: self.ingest_stats.snapshot(),
            sensors,
            health,
            spool_losses,
            sensor_epochs,
            epochs,
            foreign_observations,
        }
    }

    /// What one sensor's spool gave up (decision 0045); empty for a sensor that lost nothing,
    /// not found for one the cluster never heard from.
    pub async fn sensor_losses(&self, sensor_id: &str) -> Result<views::SensorLossesView, QueryError> {
        let (known, account) = self
            .raft
            .read_state(|s| (s.sensors().contains_key(sensor_id), s.spool_losses().of(sensor_id).cloned()))
            .await;
        if !known && account.is_none() {
            return Err(QueryError::NotFound(format!("no sensor {sensor_id:?} has delivered a batch to this cluster")));
        }
        let account = account.unwrap_or_default();
        Ok(views::SensorLossesView { sensor_id: sensor_id.to_string(), total: account.total(), account })
    }

    /// Liveness: "ok", or "raft-stopped" with the reason once a storage or internal error
    /// has stopped the Raft core (the node then exits so its supervisor restarts it).
    pub fn health(&self) -> HealthView {
        let m = self.raft.metrics();
        let (status, error) = match &m.running_state {
            Ok(()) => ("ok", None),
            Err(fatal) => ("raft-stopped", Some(fatal.to_string())),
        };
        HealthView { leader: m.current_leader, node_id: self.raft.node_id(), status, error }
    }

    /// This node's view of Raft: role, term, leader, applied index, members.
    pub fn cluster(&self) -> ClusterView {
        let m = self.raft.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        ClusterView {
            current_leader: m.current_leader,
            current_term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index),
            membership: membership
                .nodes()
                .map(|(id, node)| MemberView { addr: node.api_addr.clone(), id: *id, voter: voters.contains(id) })
                .collect(),
            node_id: self.raft.node_id(),
            state: format!("{:?}", m.state),
            outbox: self.ingest_stats.outbox.view(),
        }
    }

    /// What an answer about `id` needs, copied out under the state lock.
    async fn snapshot(&self, id: &DeviceId, with_timelines: bool) -> Result<DeviceSnapshot, QueryError> {
        self.raft.read_state(|s| DeviceSnapshot::take(s, id, with_timelines)).await.ok_or_else(|| {
            QueryError::NotFound(match id {
                DeviceId::Mac(mac) => format!(
                    "no device with MAC {mac} in this node's inventory; GET /api/v1/inventory lists the known devices"
                ),
                DeviceId::Host(key) => format!(
                    "no IP-keyed device {key} in this node's inventory (its evidence may belong to a MAC device \
                     through an address binding: try GET /api/v1/devices/{{mac}}); GET /api/v1/inventory lists \
                     the known devices"
                ),
            })
        })
    }

    fn device_view(&self, snapshot: &DeviceSnapshot) -> DeviceView {
        let record: DeviceRecord = snapshot.merged();
        DeviceView::new(snapshot, &record, classify_record(&self.kb, &record))
    }
}
