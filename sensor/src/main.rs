//! `wardline-sensor`: passive capture and fingerprinting for one building.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use wardline_sensor::config::{BatchSection, CaptureSection, SensorConfig, TlsPaths, UplinkSection};

// The data plane allocates and frees small records (flow records, findings, evidence) at
// packet rate; mimalloc's per-thread free lists make that markedly cheaper than glibc's
// malloc (see docs/decisions/0008-sensor-memory-and-allocation.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wardline-sensor",
    version,
    about = "Wardline passive sensor: capture, fingerprint, ship to the aggregator"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Capture (interface or files), fingerprint devices, spool and ship batches to the cluster.
    Run(RunArgs),
    /// Analyse capture files offline and print devices, evidence, flows and counters.
    Analyze {
        files: Vec<PathBuf>,
        /// JSON lines instead of text (schema in docs/analyze-json.md).
        #[arg(long)]
        json: bool,
        /// Show, per device, which evidence gave which attribute and with what weight.
        #[arg(long)]
        explain: bool,
        /// Site knowledge-base folder (profiles, rules, overrides); repeatable.
        #[arg(long = "kb-dir")]
        kb_dirs: Vec<PathBuf>,
        /// A network of the site, e.g. 10.0.0.0/8 (repeatable; replaces the default private
        /// ranges). Hosts in these networks seen behind a router or on a link without MACs
        /// are reported by address.
        #[arg(long = "local-net", value_name = "CIDR")]
        local_nets: Vec<wardline_sensor::devices::IpNet>,
        /// A network of another site seen only through its router, e.g.
        /// north-clinic=10.41.0.0/16 (repeatable). Its hosts are reported as hosts of that
        /// site and a MAC sending from it is a router.
        #[arg(long = "remote-net", value_name = "SITE=CIDR")]
        remote_nets: Vec<wardline_sensor::config::RemoteNet>,
    },
    /// The spool of a stopped sensor: export its batches as a signed bundle for a site with no
    /// link (an admin imports it with `wardline-aggregator admin import-bundle`).
    #[command(subcommand)]
    Spool(SpoolCmd),
    /// Write this binary's man pages and bash, zsh and fish completions into a folder
    /// (OUT_DIR/man/man1, OUT_DIR/completions/SHELL); the Debian packages install them.
    GenerateDocs {
        #[arg(long)]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// Write every spooled batch (from --from-seq on) into one bundle signed with the
    /// sensor's key. Stop the sensor first. The spool keeps its batches: when the link comes
    /// back they are acked as duplicates, never counted twice.
    Export {
        /// The sensor's config file (spool_dir, sensor_id, site, tls).
        #[arg(long, short)]
        config: PathBuf,
        /// Bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Leave out batches below this sequence number (already imported elsewhere).
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
    },
}

#[derive(Args)]
struct RunArgs {
    /// TOML config file; flags below override its keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long)]
    sensor_id: Option<String>,
    #[arg(long)]
    site: Option<String>,
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Aggregator QUIC address host:port.
    #[arg(long)]
    server: Option<String>,
    #[arg(long)]
    server_name: Option<String>,
    /// Folder holding sensor.pem, sensor.key and ca.pem (from `admin issue-sensor`).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Live interface to capture on (passive; nothing is ever sent on it).
    #[arg(long, conflicts_with = "pcap")]
    interface: Option<String>,
    /// BPF filter for live capture.
    #[arg(long)]
    bpf: Option<String>,
    /// Capture files (pcap or pcapng) to read instead of an interface.
    #[arg(long, num_args = 1..)]
    pcap: Vec<PathBuf>,
    /// Exit once the capture is processed and every batch is acknowledged.
    #[arg(long)]
    exit_when_drained: bool,
}

fn build_config(a: &RunArgs) -> Result<SensorConfig> {
    let mut cfg = match &a.config {
        Some(p) => SensorConfig::load(p)?,
        None => SensorConfig {
            sensor_id: a.sensor_id.clone().context("--sensor-id is required without --config")?,
            site: a.site.clone().context("--site is required without --config")?,
            spool_dir: a.spool_dir.clone().context("--spool-dir is required without --config")?,
            spool_max_bytes: 1 << 30,
            spool: Default::default(),
            uplink: UplinkSection {
                server: a.server.clone().context("--server is required without --config")?,
                server_name: "localhost".into(),
                fallback_servers: Vec::new(),
                max_in_flight: wardline_sensor::uplink::DEFAULT_MAX_IN_FLIGHT,
                max_frame_batches: wardline_sensor::uplink::DEFAULT_FRAME_BATCHES,
                heartbeat_interval_secs: wardline_sensor::uplink::DEFAULT_HEARTBEAT_INTERVAL.as_secs(),
                compression_level: wardline_common::wire::DEFAULT_COMPRESSION_LEVEL,
            },
            tls: TlsPaths::in_dir(a.tls_dir.as_deref().context("--tls-dir is required without --config")?, "sensor"),
            certificates: Default::default(),
            capture: CaptureSection::default(),
            batch: BatchSection::default(),
            local_networks: None,
            remote_sites: Vec::new(),
            metrics: None,
        },
    };
    if let Some(v) = &a.sensor_id {
        cfg.sensor_id = v.clone();
    }
    if let Some(v) = &a.site {
        cfg.site = v.clone();
    }
    if let Some(v) = &a.spool_dir {
        cfg.spool_dir = v.clone();
    }
    if let Some(v) = &a.server {
        // `--server a:4433,b:4433,c:4433`: the first, then the others as fallbacks.
        let mut list = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from);
        cfg.uplink.server = list.next().unwrap_or_default();
        let rest: Vec<String> = list.collect();
        if !rest.is_empty() {
            cfg.uplink.fallback_servers = rest;
        }
    }
    if let Some(v) = &a.server_name {
        cfg.uplink.server_name = v.clone();
    }
    if let Some(d) = &a.tls_dir {
        cfg.tls = TlsPaths::in_dir(d, "sensor");
    }
    if let Some(i) = &a.interface {
        cfg.capture.interface = Some(i.clone());
        cfg.capture.files.clear();
    }
    if a.bpf.is_some() {
        cfg.capture.bpf = a.bpf.clone();
    }
    if !a.pcap.is_empty() {
        cfg.capture.files = a.pcap.clone();
        cfg.capture.interface = None;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn main() {
    // Before the heap grows: whether its pages may be 2 MiB ones (module docs say why not).
    wardline_sensor::hugepages::configure_process();
    wardline_common::logging::init("info,sled=warn,quinn=warn,rustls=warn");
    if let Err(e) = real_main() {
        eprintln!("wardline-sensor: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => {
            let cfg = build_config(&a)?;
            wardline_sensor::run::run(cfg, wardline_sensor::run::RunOptions { exit_when_drained: a.exit_when_drained })
        }
        Cmd::Spool(SpoolCmd::Export { config, out, from_seq }) => {
            let cfg = SensorConfig::load(&config)?;
            let s = wardline_sensor::bundle::export(&cfg, &out, from_seq)?;
            println!(
                "wrote {}: {} batches (seq {} to {}), {} bytes, signed by sensor {} of site {}{}",
                out.display(),
                s.batches,
                s.first_seq,
                s.last_seq,
                s.bytes,
                cfg.sensor_id,
                cfg.site,
                if s.unreadable > 0 {
                    format!("; {} unreadable spool records left out", s.unreadable)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Cmd::GenerateDocs { out_dir } => {
            let files = wardline_common::cli_docs::generate(Cli::command(), &out_dir)
                .with_context(|| format!("cannot write man pages and completions into {}", out_dir.display()))?;
            println!("wrote {} files under {}", files.len(), out_dir.display());
            Ok(())
        }
        Cmd::Analyze { files, json, explain, kb_dirs, local_nets, remote_nets } => {
            anyhow::ensure!(!files.is_empty(), "give at least one capture file to analyze");
            let stdout = std::io::stdout();
            let remote_sites = wardline_sensor::config::remote_sites_from_args(&remote_nets, &local_nets)?;
            let opts = wardline_sensor::analyze::AnalyzeOptions {
                json,
                explain,
                kb_dirs,
                local_networks: local_nets,
                remote_sites,
            };
            wardline_sensor::analyze::run_analyze_with(&files, &opts, stdout.lock())?;
            Ok(())
        }
    }
}
