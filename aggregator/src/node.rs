//! One aggregator node: wires QUIC ingest → flow sink → Raft, and serves the HTTP API.
//!
//! Order of a batch's effects (why: an ack must mean durable, and a re-sent batch must not
//! double count):
//! 1. already applied (seq ≤ the sensor's replicated watermark)? → ack as duplicate;
//! 2. write its flows to the sink, keyed by (batch id, index) so a repeat collapses;
//! 3. propose the batch summary (device deltas, counts, watermark) through Raft;
//! 4. ack only after the Raft entry is committed and applied.
//!
//! A crash between 2 and 3 makes the sensor re-send; step 2 then rewrites the same keys.

use crate::config::NodeConfig;
use crate::ingest::{self, BatchHandler, IngestStats};
use crate::pki::SensorIdentity;
use crate::query::QueryService;
use crate::raft::{ProposeError, RaftConfig, RaftNode};
use crate::sink::{open_sink, FlowSink};
use crate::state::{BatchSummary, Command};
use anyhow::{Context, Result};
use std::sync::Arc;
use tracing::{info, warn};
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
        let sink = open_sink(
            config.clickhouse_url.as_deref(),
            &config.clickhouse_database,
            &config.data_dir.join("flows.sled"),
        )
        .await
        .context("cannot open the flow sink")?;
        let ingest_stats = Arc::new(IngestStats::default());
        let query = Arc::new(QueryService::new(raft.clone(), sink.clone(), kb, ingest_stats.clone()));
        Ok(Arc::new(Node { config, raft, sink, ingest_stats, query }))
    }

    /// Apply one batch with the effects in the documented order.
    pub async fn accept_batch(&self, batch: Batch) -> BatchReply {
        let (id, seq) = (batch.id, batch.seq);
        let already = self.raft.read_state(|s| s.is_applied(&batch.sensor_id, seq, &batch.id)).await;
        if already {
            return BatchReply::Ack { batch_id: id, seq, duplicate: true };
        }
        let flows: Vec<_> = batch.flows().cloned().collect();
        if let Err(e) = self.sink.write_batch(id, &batch.sensor_id, &batch.site, &flows).await {
            warn!(sensor = %batch.sensor_id, seq, "flow sink write failed, sensor will retry: {e}");
            return BatchReply::RetryLater { batch_id: id, seq, reason: format!("flow store unavailable: {e}") };
        }
        crash_point(CrashPoint::AggregatorAfterSink, seq);
        // Raft carries device deltas and counts, not per-flow detail.
        let summary = BatchSummary::from_batch(&batch);
        match self.raft.propose(Command::ApplyBatch(summary)).await {
            Ok(resp) => {
                crash_point(CrashPoint::AggregatorAfterCommit, seq);
                BatchReply::Ack { batch_id: id, seq, duplicate: !resp.applied }
            }
            Err(ProposeError::NotLeader { leader_addr, .. }) => BatchReply::RetryLater {
                batch_id: id,
                seq,
                reason: format!(
                    "this node is not the Raft leader (leader: {})",
                    leader_addr.unwrap_or_else(|| "unknown, election in progress".into())
                ),
            },
            Err(e) => {
                warn!(sensor = %batch.sensor_id, seq, "raft proposal failed, sensor will retry: {e}");
                BatchReply::RetryLater { batch_id: id, seq, reason: format!("cluster could not commit: {e}") }
            }
        }
    }
}

struct IngestHandler(Arc<Node>);

impl BatchHandler for IngestHandler {
    async fn handle(&self, _identity: SensorIdentity, batch: Batch) -> BatchReply {
        self.0.accept_batch(batch).await
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
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
        tokio::spawn(async move {
            ingest::serve(addr, &tls, handler, stats, async move {
                let _ = rx.changed().await;
            })
            .await
        })
    };
    shutdown_signal().await;
    info!("shutting down: finishing in-flight batches");
    let _ = stop_tx.send(true);
    let _ = ingest.await;
    let _ = api.await;
    let _ = raft_rpc.await;
    node.raft.shutdown().await;
    Ok(())
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
