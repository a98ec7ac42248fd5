//! `wardline-aggregator`: run a cluster node, or administer the fleet PKI.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use wardline_aggregator::auth::client::ApiTarget;
use wardline_aggregator::auth::Role;
use wardline_aggregator::cli::alerts::AlertsCmd;
use wardline_aggregator::cli::cluster::ClusterCmd;
use wardline_aggregator::cli::policy::PolicyCmd;
use wardline_aggregator::cli::risk::{ReportArgs, RiskCmd, VulnCmd};
use wardline_aggregator::config::{NodeConfig, TlsPaths};
use wardline_aggregator::{node, pki};

#[derive(Parser)]
#[command(name = "wardline-aggregator", version, about = "Wardline aggregator cluster node and fleet administration")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a cluster node: QUIC ingest, Raft, flow sink and HTTP API.
    Run(Box<RunArgs>),
    /// Fleet administration: certificate authority and certificates.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Cluster lifecycle through a running node's API: init, join, leave, replace, status.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// One device through a running node's API: show, history, flows (tables, or JSON with --json).
    #[command(subcommand)]
    Device(wardline_aggregator::cli::devices::DeviceCmd),
    /// Stored flows through a running node's API: list (filters) and totals.
    #[command(subcommand)]
    Flows(wardline_aggregator::cli::devices::FlowsCmd),
    /// The sensors a running node knows: watermark, batches, flows, drops, last packet.
    Sensors {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
    /// What a sensor's spool gave up while it could not deliver: totals and each lost batch.
    SensorLosses {
        #[command(flatten)]
        target: ApiTarget,
        /// Sensor id.
        sensor: String,
        #[arg(long)]
        json: bool,
    },
    /// Alerts through a running node's API: list, show, ack, resolve, suppress, rules, settings.
    #[command(subcommand)]
    Alerts(AlertsCmd),
    /// Segmentation policy through a running node's API: show, versions, diff, validate, apply, rollback,
    /// recommend, replay, drafts, export, edl, refresh, violations.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Groups of the active policy through a running node's API: list, show, history.
    #[command(subcommand)]
    Groups(wardline_aggregator::cli::groups::GroupsCmd),
    /// What a device or group member reaches now and under a candidate policy, by criticality.
    Blast(wardline_aggregator::cli::blast::BlastArgs),
    /// Vulnerability feeds through a running node's API: import CSAF/KEV files, list them.
    #[command(subcommand)]
    Vuln(VulnCmd),
    /// Device risk through a running node's API: top devices, one device, roll-ups.
    #[command(subcommand)]
    Risk(RiskCmd),
    /// Fetch a report (inventory, risk, vulnerable, alerts) as CSV or HTML.
    Report(ReportArgs),
    /// Print the inventory of a running node (a table, or the API's JSON with --json).
    Inventory {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
        /// Fail unless the node knows a Raft leader (used by scripts to wait for start-up).
        #[arg(long)]
        wait_leader: bool,
    },
    /// Write this binary's man pages and bash, zsh and fish completions into a folder
    /// (OUT_DIR/man/man1, OUT_DIR/completions/SHELL); the Debian packages install them.
    GenerateDocs {
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// TOML config file; flags given below override its keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long)]
    node_id: Option<u64>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    listen_quic: Option<SocketAddr>,
    #[arg(long)]
    listen_api: Option<SocketAddr>,
    #[arg(long)]
    advertise_api: Option<String>,
    /// Raft RPC listener (HTTPS, mutual TLS between nodes); default 127.0.0.1:7443.
    #[arg(long)]
    listen_raft: Option<SocketAddr>,
    /// Address other nodes reach this node's Raft listener by; default --listen-raft.
    #[arg(long)]
    advertise_raft: Option<String>,
    /// Address sensors reach this node's QUIC ingest by; default --listen-quic.
    #[arg(long)]
    advertise_quic: Option<String>,
    /// Refuse to start unless this node's data belongs to this cluster id.
    #[arg(long)]
    cluster_id: Option<String>,
    /// Initialise a new one-node cluster on first start if this node has no state (a node
    /// never initialises twice). Without it a fresh node waits for `cluster join`.
    #[arg(long)]
    init: bool,
    /// With --init on an EMPTY data dir: found a NEW cluster (new id) whose state starts as
    /// this backup file's (from `cluster backup` or `admin backup`).
    #[arg(long, requires = "init")]
    restore: Option<PathBuf>,
    /// Folder holding node.pem, node.key and ca.pem (as written by `admin issue-node`).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// ClickHouse HTTP URL; without it flows go to the embedded store under data_dir.
    #[arg(long, env = "WARDLINE_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    #[arg(long)]
    clickhouse_database: Option<String>,
    /// Days of data kept in ClickHouse; older partitions are dropped (docs/dashboards.md).
    #[arg(long)]
    clickhouse_retention_days: Option<u32>,
    /// Do not initialise a cluster even if the config file says `bootstrap = true`.
    #[arg(long, conflicts_with = "init")]
    no_bootstrap: bool,
    /// Site knowledge-base folder (profiles, rules, overrides); repeatable.
    #[arg(long = "kb-dir")]
    kb_dirs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create the fleet certificate authority (ca.pem, ca.key) in a folder.
    CaInit {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "Wardline fleet CA")]
        name: String,
    },
    /// Issue a sensor certificate naming its sensor id and site.
    IssueSensor {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        sensor_id: String,
        #[arg(long)]
        site: String,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Issue an aggregator node certificate.
    IssueNode {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        node_id: u64,
        /// Extra DNS names or IP addresses the node is reached by (localhost and 127.0.0.1 are always included).
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Issue an operator client certificate (name and role) for the API; needs only the CA
    /// folder, so it is how the first admin is made.
    IssueOperator {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// viewer, analyst or admin.
        #[arg(long)]
        role: Role,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// API bearer tokens (through the API of a running node; needs an admin credential).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Back up a STOPPED node's state from its data dir (stored snapshot + log after it).
    /// For a running node use `cluster backup`.
    Backup {
        /// The stopped node's data_dir (holds raft.sled).
        #[arg(long)]
        data_dir: PathBuf,
        /// Backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// Also apply log entries this node appended but did not know committed (salvage
        /// after losing a majority; they may never have been committed by the cluster).
        #[arg(long)]
        include_uncommitted: bool,
    },
    /// Print the newest audit log entries (JSON; needs an admin credential).
    Audit {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Revoke a sensor (every certificate) or one certificate of it (--serial): every node
    /// refuses it at the handshake and closes its live connections within seconds.
    RevokeSensor {
        #[arg(long)]
        sensor_id: String,
        /// One certificate's serial (hex, as `issue-sensor` prints it); without it, every
        /// certificate of the sensor is revoked.
        #[arg(long)]
        serial: Option<String>,
        /// Why (kept with the revocation and in the audit log).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        target: ApiTarget,
    },
    /// Import a sneakernet bundle written by `wardline-sensor spool export`: every batch is
    /// verified against the sensor's certificate and applied exactly once (send it to the
    /// leader; importing twice or the link coming back later counts nothing twice).
    ImportBundle {
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        target: ApiTarget,
        /// The API's JSON report instead of a summary line.
        #[arg(long)]
        json: bool,
    },
    /// List revoked sensors and sensor certificates.
    Revocations {
        #[command(flatten)]
        target: ApiTarget,
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Lift a revocation (the same --sensor-id and --serial it was made with).
    LiftRevocation {
        #[arg(long)]
        sensor_id: String,
        #[arg(long)]
        serial: Option<String>,
        #[command(flatten)]
        target: ApiTarget,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; prints it once on stdout (only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// viewer, analyst or admin.
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        target: ApiTarget,
        /// Print the API's JSON answer (it holds the token) instead of the token alone.
        #[arg(long)]
        json: bool,
    },
    /// List live tokens (ids, names, roles; never secrets).
    List {
        #[command(flatten)]
        target: ApiTarget,
        /// The API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name.
    Revoke {
        /// Token id or name.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        target: ApiTarget,
        /// The API's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

fn build_config(a: RunArgs) -> Result<NodeConfig> {
    let mut cfg = match &a.config {
        Some(p) => NodeConfig::load(p)?,
        None => {
            let tls_dir =
                a.tls_dir.clone().context("give --config FILE or at least --node-id, --data-dir and --tls-dir")?;
            NodeConfig {
                node_id: a.node_id.unwrap_or(1),
                data_dir: a.data_dir.clone().context("--data-dir is required without --config")?,
                listen_quic: "127.0.0.1:4433".parse()?,
                listen_api: "127.0.0.1:8080".parse()?,
                advertise_api: None,
                listen_raft: wardline_aggregator::config::default_raft(),
                advertise_raft: None,
                advertise_quic: None,
                cluster_id: None,
                tls: TlsPaths::in_dir(&tls_dir, "node"),
                certificates: Default::default(),
                clickhouse_url: None,
                clickhouse_database: "wardline".into(),
                clickhouse_retention_days: None,
                bootstrap: false,
                restore: None,
                kb_dirs: Vec::new(),
                outbox_max_bytes: 256 * 1024 * 1024,
                max_seq_jump: wardline_aggregator::state::epochs::DEFAULT_MAX_SEQ_JUMP,
                siem: None,
                reports: None,
                clickhouse_cluster: None,
                ingest: Default::default(),
            }
        }
    };
    if let Some(v) = a.node_id {
        cfg.node_id = v;
    }
    if let Some(v) = a.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = a.listen_quic {
        cfg.listen_quic = v;
    }
    if let Some(v) = a.listen_api {
        cfg.listen_api = v;
    }
    if let Some(v) = a.advertise_api {
        cfg.advertise_api = Some(v);
    }
    if let Some(d) = a.tls_dir {
        cfg.tls = TlsPaths::in_dir(&d, "node");
    }
    if let Some(v) = a.clickhouse_url {
        cfg.clickhouse_url = Some(v);
    }
    if let Some(v) = a.clickhouse_database {
        cfg.clickhouse_database = v;
    }
    if let Some(v) = a.clickhouse_retention_days {
        cfg.clickhouse_retention_days = Some(v);
    }
    if let Some(v) = a.listen_raft {
        cfg.listen_raft = v;
    }
    if let Some(v) = a.advertise_raft {
        cfg.advertise_raft = Some(v);
    }
    if let Some(v) = a.advertise_quic {
        cfg.advertise_quic = Some(v);
    }
    if let Some(v) = a.cluster_id {
        cfg.cluster_id = Some(v);
    }
    if a.init {
        cfg.bootstrap = true;
    }
    if let Some(v) = a.restore {
        cfg.restore = Some(v);
    }
    if a.no_bootstrap {
        cfg.bootstrap = false;
    }
    if !a.kb_dirs.is_empty() {
        cfg.kb_dirs = a.kb_dirs;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() {
    wardline_common::logging::init("info,openraft=warn,sled=warn,quinn=warn,rustls=warn");
    if let Err(e) = real_main() {
        eprintln!("wardline-aggregator: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run(a) => {
            let cfg = build_config(*a)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                let node = node::Node::open(cfg).await?;
                node::serve(node).await
            })
        }
        Cmd::GenerateDocs { out_dir } => {
            let files = wardline_common::cli_docs::generate(Cli::command(), &out_dir)
                .with_context(|| format!("cannot write man pages and completions into {}", out_dir.display()))?;
            println!("wrote {} files under {}", files.len(), out_dir.display());
            Ok(())
        }
        Cmd::Cluster(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::cluster::run(c))
        }
        Cmd::Device(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::devices::device(c))
        }
        Cmd::Flows(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::devices::flows(c))
        }
        Cmd::Sensors { target, json } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::devices::sensors(target, json))
        }
        Cmd::SensorLosses { target, sensor, json } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::devices::sensor_losses(target, sensor, json))
        }
        Cmd::Alerts(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::alerts::run(c))
        }
        Cmd::Policy(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::policy::run(c))
        }
        Cmd::Groups(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::groups::run(c))
        }
        Cmd::Blast(a) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::blast::run(a))
        }
        Cmd::Vuln(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::risk::run_vuln(c))
        }
        Cmd::Risk(c) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::risk::run_risk(c))
        }
        Cmd::Report(a) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::risk::run_report(a))
        }
        Cmd::Inventory { target: ApiTarget { api, auth }, json, wait_leader } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::print_inventory(&api, &auth, json, wait_leader))
        }
        Cmd::Admin(AdminCmd::IssueOperator { ca_dir, name, role, out_dir }) => {
            let p = pki::issue_operator(&ca_dir, &name, role, &out_dir)?;
            println!("operator certificate for {name} (role {role}) written to {}", p.display());
            Ok(())
        }
        Cmd::Admin(AdminCmd::Token(cmd)) => {
            use wardline_aggregator::auth::client as api;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(async move {
                match cmd {
                    TokenCmd::Create { name, role, target: ApiTarget { api: url, auth }, json } => {
                        api::token_create(&url, &auth, &name, role, json).await
                    }
                    TokenCmd::List { target: ApiTarget { api: url, auth }, json } => {
                        api::token_list(&url, &auth, json).await
                    }
                    TokenCmd::Revoke { id, target: ApiTarget { api: url, auth }, json } => {
                        api::token_revoke(&url, &auth, &id, json).await
                    }
                }
            })
        }
        Cmd::Admin(AdminCmd::RevokeSensor { sensor_id, serial, reason, target }) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::revocations::revoke(&target, &sensor_id, serial.as_deref(), &reason))
        }
        Cmd::Admin(AdminCmd::ImportBundle { file, target, json }) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::bundle::import(&target, &file, json))
        }
        Cmd::Admin(AdminCmd::Revocations { target, json }) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::revocations::list(&target, json))
        }
        Cmd::Admin(AdminCmd::LiftRevocation { sensor_id, serial, target }) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::revocations::lift(&target, &sensor_id, serial.as_deref()))
        }
        Cmd::Admin(AdminCmd::Audit { target: ApiTarget { api, auth }, limit }) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::auth::client::audit(&api, &auth, limit))
        }
        Cmd::Admin(AdminCmd::Backup { data_dir, out, include_uncommitted }) => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            rt.block_on(wardline_aggregator::cli::cluster::offline_backup(&data_dir, &out, include_uncommitted))
        }
        Cmd::Admin(AdminCmd::CaInit { dir, name }) => {
            pki::init_ca(&dir, &name)?;
            println!("fleet CA written to {} (keep ca.key offline)", dir.display());
            Ok(())
        }
        Cmd::Admin(AdminCmd::IssueSensor { ca_dir, sensor_id, site, out_dir }) => {
            let p = pki::issue_sensor(&ca_dir, &sensor_id, &site, &out_dir)?;
            let (serial, expiry) = pki::pem_serial_and_expiry(&p)?;
            println!(
                "sensor certificate for {sensor_id} at site {site} written to {} (serial {serial}, expires {} UTC)",
                p.display(),
                pki::date_of(expiry)
            );
            Ok(())
        }
        Cmd::Admin(AdminCmd::IssueNode { ca_dir, node_id, hosts, out_dir }) => {
            let p = pki::issue_node(&ca_dir, node_id, &hosts, &out_dir)?;
            println!("node certificate for node {node_id} written to {}", p.display());
            Ok(())
        }
    }
}
