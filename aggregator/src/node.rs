//! One aggregator node: wires QUIC ingest → group commit through Raft → flow outbox →
//! flow sink, and serves the HTTP API.
//!
//! Order of a batch's effects (decision 0016; why: an ack must mean durable, and a re-sent
//! batch must not double count):
//! 1. already applied (seq ≤ the sensor's replicated watermark)? → ack as duplicate;
//! 2. propose it, grouped with the batches that arrived meanwhile, as one Raft entry that
//!    carries the summaries (device deltas, counts, watermark) and the flow records;
//! 3. ack once the entry is committed and applied: the flows are then in the replicated
//!    outbox on a quorum;
//! 4. independently, the leader drains the outbox into the flow sink in large inserts,
//!    keyed by (batch id, index) so a repeated tail collapses.
use crate::config::NodeConfig;
use crate::ingest::{self, BatchHandler, IngestStats};
use crate::outbox::group_commit::GroupCommitter;
use crate::outbox::{OutboxConfig, OutboxDrainer};
use crate::pki::SensorIdentity;
use crate::query::QueryService;
use crate::raft::{RaftConfig, RaftNode};
use crate::sink::FlowSink;
use anyhow::{Context, Result};
use std::sync::Arc;
use tracing::info;
use wardline_common::fault::{crash_point, CrashPoint};
use wardline_common::wire::BatchReply;
use wardline_common::Batch;
use wardline_intel::KnowledgeBase;

/// Everything a running node holds; shared by ingest and the API.
pub struct Node {
    pub config: NodeConfig,
    pub raft: Arc<RaftNode>,
    pub sink: Arc<dyn FlowSink>,
    pub ingest_stats: Arc<IngestStats>,
    /// The read side the API serves from (classifies with the built-in knowledge base plus
    /// the site's folders).
    pub query: Arc<QueryService>,
    /// Proposes concurrently arriving batches as one Raft entry.
    pub committer: GroupCommitter,
    /// Prometheus metrics served at `GET /metrics` (decision 0026).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Sensor heartbeats: answered here, recorded by the leader (decision 0038).
    pub heartbeats: Arc<crate::heartbeat::Heartbeats>,
}

impl Node {
    pub async fn open(config: NodeConfig) -> Result<Arc<Node>> {
        let kb = Arc::new(KnowledgeBase::load(&config.kb_dirs).context("cannot load the knowledge base")?);
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
        let restore = match &config.restore {
            Some(file) => {
                Some(crate::cluster::backup::prepare_restore(&config.data_dir, file, config.cluster_id.as_deref())?)
            }
            None => None,
        };
        let raft =
            RaftNode::open(config.node_id, &config.data_dir, config.cluster_node(), RaftConfig::default(), &config.tls)
                .await
                .context("cannot start the Raft node")?;
        if let Some(expected) = &config.cluster_id {
            crate::cluster::check_expected_cluster(&raft, expected, &config.data_dir)?;
        }
        if config.bootstrap {
            if let Some(id) = crate::cluster::init_if_new(&raft).await? {
                info!(cluster = %id, "initialised a new one-node cluster (run --init)");
                if let Some(r) = &restore {
                    crate::cluster::backup::finish_restore(&raft).await?;
                    info!("{}", crate::cluster::backup::describe_restore(r, &id));
                }
            } else if let Some(r) = &restore {
                if raft.metrics().snapshot.is_none() {
                    crate::cluster::backup::finish_restore(&raft).await?;
                }
                info!("data_dir was already restored from {}; resuming", r.file.display());
            }
        }
        let store = match &config.clickhouse_cluster {
            Some(cluster) => {
                crate::sink::aggregates::FlowStore::open_cluster(cluster, &config.clickhouse_database).await
            }
            None => {
                crate::sink::aggregates::FlowStore::open(
                    config.clickhouse_url.as_deref(),
                    &config.clickhouse_database,
                    &config.data_dir.join("flows.sled"),
                )
                .await
            }
        }
        .context("cannot open the flow sink")?;
        let sink = store.sink();
        let ingest_stats = Arc::new(IngestStats::default());
        let telemetry = crate::telemetry::Telemetry::new(raft.clone(), ingest_stats.clone(), config.tls.cert.clone());
        let sink = telemetry.wrap_sink(sink);
        let query =
            Arc::new(QueryService::new(raft.clone(), sink.clone(), kb, ingest_stats.clone()).with_flow_store(store));
        let committer = GroupCommitter::start(
            raft.clone(),
            config.outbox_max_bytes,
            config.max_seq_jump,
            ingest_stats.group_commit.clone(),
        );
        let heartbeats = crate::heartbeat::Heartbeats::new(raft.clone(), ingest_stats.clone());
        Ok(Arc::new(Node { config, raft, sink, ingest_stats, query, committer, telemetry, heartbeats }))
    }

    /// Apply one batch with the effects in the documented order. The batch is queued when
    /// this is called (not when the future is first polled), so calls made in a sensor's seq
    /// order are proposed in that order.
    pub fn accept_batch(&self, batch: Batch) -> impl std::future::Future<Output = BatchReply> + Send + 'static {
        let seq = batch.seq;
        let reply = self.committer.submit(batch);
        async move {
            let reply = reply.await;
            if matches!(reply, BatchReply::Ack { duplicate: false, .. }) {
                crash_point(CrashPoint::AggregatorAfterCommit, seq);
            }
            reply
        }
    }

    /// Start draining the flow outbox into the sink (only while this node leads) until
    /// `stop` turns true.
    pub fn spawn_outbox_drainer(&self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let config = OutboxConfig { max_bytes: self.config.outbox_max_bytes, ..OutboxConfig::default() };
        let drainer =
            OutboxDrainer::new(self.raft.clone(), self.sink.clone(), config, self.ingest_stats.outbox.clone());
        tokio::spawn(drainer.run(stop))
    }
}

impl Node {
    /// With ClickHouse configured: refresh the hourly rollups and apply retention every
    /// minute until `stop` turns true (decision 0023).
    pub fn spawn_clickhouse_maintenance(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(cluster) = &self.config.clickhouse_cluster {
            return self.spawn_cluster_maintenance(cluster, stop);
        }
        let url = self.config.clickhouse_url.as_deref().map(str::trim).filter(|u| !u.is_empty())?;
        let sink = match crate::sink::clickhouse::ClickHouseSink::new(url, &self.config.clickhouse_database) {
            Ok(sink) => sink,
            Err(e) => {
                tracing::error!("ClickHouse rollups and retention are off: {e}");
                return None;
            }
        };
        let config = crate::sink::clickhouse_retention::MaintenanceConfig {
            retention_days: self.config.clickhouse_retention_days,
            interval: std::time::Duration::from_secs(60),
        };
        Some(tokio::spawn(crate::sink::clickhouse_retention::run_maintenance(sink, config, stop)))
    }

    /// The same on a ClickHouse cluster (decision 0028).
    fn spawn_cluster_maintenance(
        &self,
        cluster: &crate::sink::clickhouse_cluster::ClusterConfig,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        use crate::sink::clickhouse_cluster::{run_maintenance, ClickHouseClusterSink};
        let sink = match ClickHouseClusterSink::new(cluster, &self.config.clickhouse_database) {
            Ok(sink) => sink,
            Err(e) => {
                tracing::error!("ClickHouse rollups and retention are off: {e}");
                return None;
            }
        };
        let config = crate::sink::clickhouse_retention::MaintenanceConfig {
            retention_days: self.config.clickhouse_retention_days,
            interval: std::time::Duration::from_secs(60),
        };
        Some(tokio::spawn(run_maintenance(sink, config, stop)))
    }
}

struct IngestHandler(Arc<Node>);

impl BatchHandler for IngestHandler {
    fn handle(&self, identity: SensorIdentity, batch: Batch) -> impl std::future::Future<Output = BatchReply> + Send {
        let telemetry = self.0.telemetry.clone();
        telemetry.batch_received(&identity.sensor_id);
        let reply = self.0.accept_batch(batch);
        async move {
            let reply = reply.await;
            telemetry.batch_answered(&identity.sensor_id, &reply);
            reply
        }
    }

    fn revoked(
        &self,
        identity: &SensorIdentity,
        serial: &str,
    ) -> impl std::future::Future<Output = Option<String>> + Send {
        let (raft, id, serial) = (self.0.raft.clone(), identity.sensor_id.clone(), serial.to_string());
        async move {
            raft.read_state(move |s| {
                s.revocations().check(&id, &serial).map(|r| match &r.serial {
                    Some(serial) => format!("certificate {serial} revoked by {}: {}", r.revoked_by, r.reason),
                    None => format!("sensor {} revoked by {}: {}", r.sensor_id, r.revoked_by, r.reason),
                })
            })
            .await
        }
    }

    fn heartbeat(
        &self,
        identity: &SensorIdentity,
        heartbeat: wardline_common::wire::SensorHeartbeat,
        cert_not_after_s: Option<i64>,
        received_us: u64,
    ) -> impl std::future::Future<Output = crate::heartbeat::Outcome> + Send {
        let (heartbeats, identity) = (self.0.heartbeats.clone(), identity.clone());
        async move { heartbeats.receive(&identity, heartbeat, cert_not_after_s, received_us).await }
    }
}

/// Run ingest and the API until ctrl-c / SIGTERM.
pub async fn serve(node: Arc<Node>) -> Result<()> {
    let api_listener = tokio::net::TcpListener::bind(node.config.listen_api)
        .await
        .with_context(|| format!("cannot listen for the API on {}", node.config.listen_api))?;
    info!(
        node_id = node.config.node_id,
        api = %node.config.listen_api,
        raft = %node.config.listen_raft,
        quic = %node.config.listen_quic,
        sink = node.sink.describe(),
        "aggregator node up"
    );
    let raft_listener = tokio::net::TcpListener::bind(node.config.listen_raft)
        .await
        .with_context(|| format!("cannot listen for Raft RPC on {}", node.config.listen_raft))?;
    let router = crate::api::router(node.query.clone())
        .merge(crate::cluster::api::router(node.raft.clone()))
        .merge(crate::bundle::router(node.clone()))
        .merge(crate::telemetry::router(node.telemetry.clone()))
        .layer(axum::middleware::from_fn_with_state(node.telemetry.clone(), crate::telemetry::track_api))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let drain = node.spawn_outbox_drainer(stop_rx.clone());
    spawn_certificate_watch(&node, stop_rx.clone());
    let maintenance = node.spawn_clickhouse_maintenance(stop_rx.clone());
    // Alert events to the SIEM, sent by whichever node leads (decision 0024).
    let siem = node
        .config
        .siem
        .clone()
        .map(|c| tokio::spawn(crate::siem::Forwarder::new(node.raft.clone(), c).run(stop_rx.clone())));
    // The active policy's group membership follows the inventory (decision 0025); the task
    // ends with the others on `stop_rx`.
    tokio::spawn(crate::policy::refresh::run(node.query.clone(), crate::policy::refresh::INTERVAL, stop_rx.clone()));
    // Silent sensors raise and resolve alerts through the leader's tick (decision 0033).
    tokio::spawn(crate::alerts::sensor_watch::run(
        node.query.clone(),
        crate::alerts::sensor_watch::INTERVAL,
        stop_rx.clone(),
    ));
    // Risk history: the leader records scores that moved (decision 0043).
    if let Some(every) = crate::risk::history::interval() {
        tokio::spawn(crate::risk::history::run(node.query.clone(), every, stop_rx.clone()));
    }
    // Scheduled reports, written by whichever node leads (decision 0027).
    let reports = node
        .config
        .reports
        .clone()
        .map(|r| tokio::spawn(crate::risk::schedule::run(node.query.clone(), r, stop_rx.clone())));
    let api = {
        let mut rx = stop_rx.clone();
        let (tls, raft) = (node.config.tls.clone(), node.raft.clone());
        // HTTPS with operator authentication and audit (decision 0015).
        tokio::spawn(async move {
            crate::auth::server::serve(api_listener, router, &tls, raft, async move {
                let _ = rx.changed().await;
            })
            .await
        })
    };
    let raft_rpc = {
        let mut rx = stop_rx.clone();
        let raft = node.raft.clone();
        tokio::spawn(async move {
            let res = crate::raft::network::serve(raft_listener, raft, async move {
                let _ = rx.changed().await;
            })
            .await;
            if let Err(e) = &res {
                tracing::error!("the Raft RPC listener failed: {e:#}");
            }
            res
        })
    };
    let ingest = {
        let mut rx = stop_rx.clone();
        let handler = Arc::new(IngestHandler(node.clone()));
        let tls = node.config.tls.clone();
        let addr = node.config.listen_quic;
        let stats = node.ingest_stats.clone();
        let limits = node.config.ingest.limits();
        tokio::spawn(async move {
            ingest::IngestServer::bind(addr, &tls, handler, stats, limits)?
                .run(async move {
                    let _ = rx.changed().await;
                })
                .await
        })
    };
    // A stopped Raft core (a storage error such as a full disk) never restarts inside the
    // process, and the node would answer every batch "retry later" forever: exit instead,
    // so the service manager restarts it over its data once the cause is fixed.
    let raft_failure = tokio::select! {
        _ = shutdown_signal() => None,
        fatal = raft_stopped(node.raft.clone()) => Some(fatal),
    };
    if let Some(reason) = &raft_failure {
        tracing::error!(
            "the Raft core stopped: {reason}; this node exits so its service manager restarts it \
             (check the data disk of {}: full, read-only or failing?)",
            node.config.data_dir.display()
        );
    }
    info!("shutting down: finishing in-flight batches");
    let _ = stop_tx.send(true);
    let _ = ingest.await;
    let _ = api.await;
    let _ = raft_rpc.await;
    let _ = drain.await;
    if let Some(m) = maintenance {
        // Every pass is idempotent, so one cut short is simply redone after restart.
        m.abort();
    }
    if let Some(siem) = siem {
        let _ = siem.await;
    }
    if let Some(reports) = reports {
        let _ = reports.await;
    }
    node.raft.shutdown().await;
    match raft_failure {
        Some(reason) => Err(anyhow::anyhow!("the Raft core stopped: {reason}")),
        None => Ok(()),
    }
}

/// Reload the node certificate, key and CA bundle when they change on disk or on SIGHUP, and
/// warn about expiry (decision 0040); ends with the other tasks on `stop`.
fn spawn_certificate_watch(node: &Node, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(wardline_common::tls_reload::watch(node.config.certificates.clone(), async move {
        let _ = stop.changed().await;
    }));
}

/// Resolves with the reason once the Raft core has stopped on its own (not by `shutdown`).
async fn raft_stopped(raft: Arc<RaftNode>) -> String {
    let mut rx = raft.raft().metrics();
    loop {
        if let Err(fatal) = &rx.borrow().running_state {
            return fatal.to_string();
        }
        if rx.changed().await.is_err() {
            return "the Raft core ended".into();
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
