//! Aggregator node configuration: a TOML file, every key overridable on the command line.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
pub use wardline_common::tls_files::TlsPaths;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id, unique in the cluster, > 0.
    pub node_id: u64,
    /// Where the Raft log, state machine and embedded flow store live.
    pub data_dir: PathBuf,
    /// UDP address the QUIC ingest listens on for sensors.
    #[serde(default = "default_quic")]
    pub listen_quic: SocketAddr,
    /// TCP address of the HTTP API.
    #[serde(default = "default_api")]
    pub listen_api: SocketAddr,
    /// Address other nodes use to reach this node's API; defaults to listen_api.
    #[serde(default)]
    pub advertise_api: Option<String>,
    /// TCP address of Raft RPC between nodes (HTTPS, mutual TLS with node certificates).
    #[serde(default = "default_raft")]
    pub listen_raft: SocketAddr,
    /// Address other nodes use to reach this node's Raft listener; defaults to listen_raft.
    #[serde(default)]
    pub advertise_raft: Option<String>,
    /// Address sensors use to reach this node's QUIC ingest; defaults to listen_quic.
    #[serde(default)]
    pub advertise_quic: Option<String>,
    /// The cluster this node must belong to: a node whose data belongs to another cluster
    /// refuses to start. Optional (`cluster status` shows the id).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Node certificate, key and the fleet CA (from `wardline-aggregator admin issue-node`).
    pub tls: TlsPaths,
    /// ClickHouse HTTP URL (e.g. http://127.0.0.1:8123). Without it flows go to the embedded store.
    #[serde(default)]
    pub clickhouse_url: Option<String>,
    #[serde(default = "default_db")]
    pub clickhouse_database: String,
    /// Days of flows, rollups and violations kept in ClickHouse; older partitions are
    /// dropped (decision 0023). Unset keeps everything.
    #[serde(default)]
    pub clickhouse_retention_days: Option<u32>,
    /// Write to a ClickHouse cluster (`[clickhouse_cluster]`: name, replica URLs) instead of
    /// the one server of `clickhouse_url` (decision 0028).
    #[serde(default)]
    pub clickhouse_cluster: Option<crate::sink::clickhouse_cluster::ClusterConfig>,
    /// Initialise a new one-node cluster on first start (`run --init`; ignored once the node
    /// has state). Without it a fresh node waits until a cluster adds it (`cluster join`).
    #[serde(default)]
    pub bootstrap: bool,
    /// `run --init --restore FILE`: found a new cluster whose state starts as this backup's
    /// (an empty data_dir only; see `crate::cluster::backup`). A flag, not a config key.
    #[serde(skip)]
    pub restore: Option<PathBuf>,
    /// Site knowledge-base folders (extra profiles, rules, operator overrides), loaded
    /// after the built-in knowledge base; see docs/knowledge-base.md.
    #[serde(default)]
    pub kb_dirs: Vec<PathBuf>,
    /// Bound of the flow outbox in (estimated) bytes: flow rows committed through Raft but
    /// not yet in the flow store. When full, sensors are told to retry later (decision 0016).
    #[serde(default = "default_outbox_max_bytes")]
    pub outbox_max_bytes: u64,
    /// Largest forward jump of a sensor's sequence number one batch may make past its
    /// watermark; a batch beyond it is refused with the reason (decision 0036).
    #[serde(default = "default_max_seq_jump")]
    pub max_seq_jump: u64,
    /// Forward alert events to a SIEM as syslog (`[siem]`; decision 0024). Off without it.
    #[serde(default)]
    pub siem: Option<crate::siem::SiemConfig>,
    /// Reports the leader writes into a folder at intervals (`[reports]`; decision 0027).
    #[serde(default)]
    pub reports: Option<crate::risk::schedule::ReportSchedule>,
}

fn default_max_seq_jump() -> u64 {
    crate::state::epochs::DEFAULT_MAX_SEQ_JUMP
}

fn default_outbox_max_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_quic() -> SocketAddr {
    "127.0.0.1:4433".parse().expect("literal")
}
pub fn default_raft() -> SocketAddr {
    "127.0.0.1:7443".parse().expect("literal")
}
fn default_api() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("literal")
}
fn default_db() -> String {
    "wardline".into()
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read aggregator config {}", path.display()))?;
        let cfg: NodeConfig =
            toml::from_str(&text).with_context(|| format!("invalid aggregator config {}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.node_id == 0 {
            bail!("node_id must be greater than 0 (Raft reserves no id, but 0 is easy to leave by mistake)");
        }
        self.tls.check_exist("wardline-aggregator admin issue-node").map_err(anyhow::Error::msg)?;
        if let Some(siem) = &self.siem {
            siem.validate().map_err(anyhow::Error::msg)?;
        }
        if let Some(reports) = &self.reports {
            reports.validate()?;
        }
        if let Some(url) = &self.clickhouse_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("clickhouse_url {url:?} must be an http:// or https:// URL of the ClickHouse HTTP interface");
            }
        }
        if let Some(cluster) = &self.clickhouse_cluster {
            cluster.validate().map_err(anyhow::Error::msg)?;
            if self.clickhouse_url.is_some() {
                bail!("give either clickhouse_url (one server) or [clickhouse_cluster] (replicas), not both");
            }
        }
        if self.clickhouse_retention_days == Some(0) {
            bail!("clickhouse_retention_days = 0 would drop today's flows; give at least 1, or leave it out to keep everything");
        }
        Ok(())
    }

    pub fn advertised_api(&self) -> String {
        self.advertise_api.clone().unwrap_or_else(|| self.listen_api.to_string())
    }

    /// How peers reach this node (replicated in the cluster membership).
    pub fn cluster_node(&self) -> crate::raft::ClusterNode {
        crate::raft::ClusterNode {
            raft_addr: self.advertise_raft.clone().unwrap_or_else(|| self.listen_raft.to_string()),
            api_addr: self.advertised_api(),
            ingest_addr: self.advertise_quic.clone().unwrap_or_else(|| self.listen_quic.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_zero_id_are_refused() {
        let bad = "node_id = 1\ndata_dir = \"/tmp/x\"\ntypo = 3\n[tls]\ncert=\"a\"\nkey=\"b\"\nca=\"c\"\n";
        let err = toml::from_str::<NodeConfig>(bad).unwrap_err().to_string();
        assert!(err.contains("typo"), "{err}");
        let zero = "node_id = 0\ndata_dir = \"/tmp/x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nca=\"c\"\n";
        let cfg: NodeConfig = toml::from_str(zero).unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("node_id"));
    }

    #[test]
    fn a_clickhouse_cluster_is_a_table_of_replicas_and_excludes_clickhouse_url() {
        let base = "node_id = 1\ndata_dir = \"/tmp/x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nca=\"c\"\n";
        let text = format!("{base}[clickhouse_cluster]\nname = \"wl\"\nreplicas = [\"http://10.0.0.1:8123\", \"http://10.0.0.2:8123\"]\n");
        let cfg: NodeConfig = toml::from_str(&text).unwrap();
        let cluster = cfg.clickhouse_cluster.as_ref().unwrap();
        assert_eq!((cluster.name.as_str(), cluster.replicas.len()), ("wl", 2));
        assert_eq!(cluster.replicated_database(&cfg.clickhouse_database), "wardline_local");
        let both = format!("clickhouse_url = \"http://127.0.0.1:8123\"\n{text}");
        let mut cfg: NodeConfig = toml::from_str(&both).unwrap();
        // validate() checks the TLS files first.
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c"] {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        cfg.tls = TlsPaths { cert: dir.path().join("a"), key: dir.path().join("b"), ca: dir.path().join("c") };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("not both"), "{err}");
        cfg.clickhouse_url = None;
        cfg.validate().unwrap();
        cfg.clickhouse_cluster.as_mut().unwrap().replicas.clear();
        assert!(cfg.validate().unwrap_err().to_string().contains("clickhouse_cluster.replicas"));
        let typo = format!("{text}replica = 3\n");
        assert!(toml::from_str::<NodeConfig>(&typo).unwrap_err().to_string().contains("replica"));
    }

    #[test]
    fn a_node_does_not_found_a_cluster_unless_told_and_raft_listens_on_loopback() {
        let text = "node_id = 2\ndata_dir = \"/tmp/x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nca=\"c\"\n";
        let cfg: NodeConfig = toml::from_str(text).unwrap();
        assert!(!cfg.bootstrap);
        assert!(cfg.listen_raft.ip().is_loopback());
        assert_eq!(cfg.cluster_node().raft_addr, cfg.listen_raft.to_string());
    }
}
