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
    /// `[certificates]`: how often the tls files are checked for a replacement and how early
    /// expiry is warned about (decision 0040).
    #[serde(default)]
    pub certificates: wardline_common::tls_files::CertificateChecks,
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
    /// Limits of QUIC ingest, node-wide and per sensor (`[ingest]`; decision 0039).
    #[serde(default)]
    pub ingest: IngestConfig,
}

/// `[ingest]`: bounds on what sensors (and anyone reaching the QUIC port) may hold on this
/// node. Every key is optional; docs/operations.md ("Ingest limits") explains each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Authenticated sensor connections at once (a slot is taken after the handshake).
    pub max_connections: usize,
    /// Connections one sensor may hold open at once.
    pub max_connections_per_sensor: usize,
    /// Streams (frames in flight) one connection may open: QUIC stream credit.
    pub max_streams_per_connection: u32,
    /// Frames of one sensor read or handled at once, over all its connections.
    pub max_frames_in_flight_per_sensor: usize,
    /// Sustained frame bytes per second of one sensor; above it reads slow down.
    pub bytes_per_second_per_sensor: u64,
    /// Bytes a sensor may send at once above its rate.
    pub burst_bytes_per_sensor: u64,
    /// TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// Seconds a peer may take to complete the handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a sensor may take to send one frame (ends trickling streams).
    pub stream_read_timeout_secs: u64,
    /// QUIC address validation (a Retry round trip before the handshake).
    pub address_validation: bool,
    /// Largest frame accepted, at most the wire protocol's 16 MiB.
    pub max_frame_bytes: usize,
    /// Frame bytes read or handled at once over all sensors (ingest memory bound).
    pub max_inflight_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let l = crate::ingest::IngestLimits::default();
        IngestConfig {
            max_connections: l.max_connections,
            max_connections_per_sensor: l.max_connections_per_sensor,
            max_streams_per_connection: l.max_streams_per_connection,
            max_frames_in_flight_per_sensor: l.max_frames_in_flight_per_sensor,
            bytes_per_second_per_sensor: l.bytes_per_second_per_sensor,
            burst_bytes_per_sensor: l.burst_bytes_per_sensor,
            max_handshakes: l.max_handshakes,
            handshake_timeout_secs: l.handshake_timeout.as_secs(),
            stream_read_timeout_secs: l.frame_read_timeout.as_secs(),
            address_validation: l.address_validation,
            max_frame_bytes: l.max_frame_bytes,
            max_inflight_bytes: l.max_inflight_bytes,
        }
    }
}

impl IngestConfig {
    /// Refuse values that would disable a bound or make ingest unusable, saying what to set.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let range = |key: &str, value: u64, min: u64, max: u64, why: &str| {
            if value < min || value > max {
                Err(format!("ingest.{key} = {value} is out of range: give {min}..={max} ({why})"))
            } else {
                Ok(())
            }
        };
        let wire_max = wardline_common::wire::MAX_FRAME_BYTES as u64;
        range("max_connections", self.max_connections as u64, 1, 1_000_000, "authenticated sensor connections")?;
        range(
            "max_connections_per_sensor",
            self.max_connections_per_sensor as u64,
            1,
            self.max_connections as u64,
            "at most ingest.max_connections",
        )?;
        range(
            "max_streams_per_connection",
            self.max_streams_per_connection as u64,
            1,
            1024,
            "sensors open at most 16; more only costs memory",
        )?;
        range(
            "max_frames_in_flight_per_sensor",
            self.max_frames_in_flight_per_sensor as u64,
            1,
            4096,
            "frames of one sensor at once",
        )?;
        range(
            "bytes_per_second_per_sensor",
            self.bytes_per_second_per_sensor,
            1024,
            u64::MAX,
            "at least 1 KiB/s, or a sensor could never catch up",
        )?;
        range("burst_bytes_per_sensor", self.burst_bytes_per_sensor, 64 * 1024, u64::MAX, "at least one 64 KiB read")?;
        range("max_handshakes", self.max_handshakes as u64, 1, 65_536, "handshakes in progress at once")?;
        range("handshake_timeout_secs", self.handshake_timeout_secs, 1, 300, "a handshake takes a few round trips")?;
        range("stream_read_timeout_secs", self.stream_read_timeout_secs, 1, 3600, "time to send one frame")?;
        range("max_frame_bytes", self.max_frame_bytes as u64, 1024, wire_max, "the wire protocol's frame limit")?;
        range(
            "max_inflight_bytes",
            self.max_inflight_bytes as u64,
            self.max_frame_bytes as u64,
            1 << 40,
            "at least one frame of ingest.max_frame_bytes",
        )?;
        // A version-1 stream reserves a whole frame: one sensor's frames in flight must leave
        // at least half of the byte budget to the others.
        let one_sensor = self.max_frames_in_flight_per_sensor as u64 * self.max_frame_bytes as u64;
        if one_sensor > self.max_inflight_bytes as u64 / 2 {
            return Err(format!(
                "ingest.max_frames_in_flight_per_sensor ({}) × ingest.max_frame_bytes ({}) = {one_sensor} bytes is more \
                 than half of ingest.max_inflight_bytes ({}): one sensor could hold the ingest memory of all; lower \
                 the frames per sensor or raise max_inflight_bytes",
                self.max_frames_in_flight_per_sensor, self.max_frame_bytes, self.max_inflight_bytes
            ));
        }
        Ok(())
    }

    /// The ingest server's limits.
    pub fn limits(&self) -> crate::ingest::IngestLimits {
        crate::ingest::IngestLimits {
            max_frame_bytes: self.max_frame_bytes,
            max_connections: self.max_connections,
            max_inflight_bytes: self.max_inflight_bytes,
            frame_read_timeout: std::time::Duration::from_secs(self.stream_read_timeout_secs),
            max_connections_per_sensor: self.max_connections_per_sensor,
            max_streams_per_connection: self.max_streams_per_connection,
            max_frames_in_flight_per_sensor: self.max_frames_in_flight_per_sensor,
            bytes_per_second_per_sensor: self.bytes_per_second_per_sensor,
            burst_bytes_per_sensor: self.burst_bytes_per_sensor,
            max_handshakes: self.max_handshakes,
            handshake_timeout: std::time::Duration::from_secs(self.handshake_timeout_secs),
            address_validation: self.address_validation,
            ..crate::ingest::IngestLimits::default()
        }
    }
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
        self.ingest.validate().map_err(anyhow::Error::msg)?;
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
    fn ingest_limits_have_documented_defaults_and_bad_values_are_refused_with_the_key() {
        let base = "node_id = 1\ndata_dir = \"/tmp/x\"\n[tls]\ncert=\"a\"\nkey=\"b\"\nca=\"c\"\n";
        let cfg: NodeConfig = toml::from_str(base).unwrap();
        assert_eq!(cfg.ingest, IngestConfig::default());
        cfg.ingest.validate().expect("the defaults are valid");
        let l = cfg.ingest.limits();
        assert!(l.address_validation);
        assert_eq!((l.max_connections_per_sensor, l.max_streams_per_connection), (8, 16));
        assert_eq!(l.frame_read_timeout, std::time::Duration::from_secs(60));

        let set = |extra: &str| toml::from_str::<NodeConfig>(&format!("{base}[ingest]\n{extra}\n"));
        let cfg =
            set("max_connections_per_sensor = 2\nbytes_per_second_per_sensor = 1048576\naddress_validation = false")
                .unwrap();
        cfg.ingest.validate().unwrap();
        let l = cfg.ingest.limits();
        assert_eq!((l.max_connections_per_sensor, l.bytes_per_second_per_sensor), (2, 1 << 20));
        assert!(!l.address_validation);
        assert!(set("max_conections = 3").unwrap_err().to_string().contains("max_conections"));
        for (bad, says) in [
            ("max_connections_per_sensor = 0", "ingest.max_connections_per_sensor = 0 is out of range"),
            ("max_connections = 4\nmax_connections_per_sensor = 5", "at most ingest.max_connections"),
            ("bytes_per_second_per_sensor = 10", "ingest.bytes_per_second_per_sensor"),
            ("handshake_timeout_secs = 0", "ingest.handshake_timeout_secs"),
            ("max_frame_bytes = 999999999", "the wire protocol's frame limit"),
            ("max_inflight_bytes = 33554432", "more than half of ingest.max_inflight_bytes"),
        ] {
            let err = set(bad).unwrap().ingest.validate().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_example_config_lists_the_real_ingest_defaults() {
        let text = include_str!("../../deploy/config/aggregator.toml");
        let cfg: NodeConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.ingest, IngestConfig::default());
        // Its commented [ingest] block, uncommented, changes nothing.
        let block: Vec<&str> =
            text.lines().skip_while(|l| *l != "# [ingest]").map_while(|l| l.strip_prefix("# ")).collect();
        assert!(block.len() > 10, "{block:?}");
        let cfg: NodeConfig = toml::from_str(&format!("{text}\n{}\n", block.join("\n"))).unwrap();
        assert_eq!(cfg.ingest, IngestConfig::default());
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
