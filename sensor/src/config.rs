//! Sensor configuration: a TOML file, every key overridable on the command line.

use crate::devices::sites::check_remote_sites;
use crate::devices::{IpNet, RemoteSite};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
pub use wardline_common::tls_files::TlsPaths;

/// One `--remote-net SITE=CIDR` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteNet {
    pub site: String,
    pub network: IpNet,
}

impl std::str::FromStr for RemoteNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (site, net) =
            s.split_once('=').ok_or_else(|| format!("{s:?}: give SITE=CIDR, e.g. north-clinic=10.41.0.0/16"))?;
        validate_id("site", site).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(RemoteNet { site: site.to_owned(), network: net.parse()? })
    }
}

/// `--remote-net` arguments grouped by site (in first-seen order) and checked against the
/// `--local-net` networks given (none: the defaults, which remote sites may carve from).
pub fn remote_sites_from_args(nets: &[RemoteNet], explicit_local: &[IpNet]) -> Result<Vec<RemoteSite>> {
    let mut out: Vec<RemoteSite> = Vec::new();
    for n in nets {
        match out.iter_mut().find(|r| r.site == n.site) {
            Some(r) => r.networks.push(n.network),
            None => out.push(RemoteSite { site: n.site.clone(), networks: vec![n.network] }),
        }
    }
    check_remote_sites(explicit_local, &out).map_err(|e| anyhow::anyhow!("--remote-net: {e}"))?;
    Ok(out)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Must equal the sensor id in this sensor's certificate.
    pub sensor_id: String,
    /// Must equal the site in this sensor's certificate.
    pub site: String,
    /// Durable spool (sled) of batches not yet acknowledged by the cluster.
    pub spool_dir: PathBuf,
    /// Byte bound of the spool (older spelling of `spool.max_bytes`, which wins when set).
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// `[spool] max_bytes = ...`: the hard byte bound over everything the spool holds;
    /// past it flow detail is rolled up, then the lowest class is evicted (decision 0022).
    #[serde(default)]
    pub spool: SpoolSection,
    pub uplink: UplinkSection,
    pub tls: TlsPaths,
    /// `[certificates]`: how often the tls files are checked for a replacement and how early
    /// expiry is warned about (decision 0040).
    #[serde(default)]
    pub certificates: wardline_common::tls_files::CertificateChecks,
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub batch: BatchSection,
    /// Networks whose addresses belong to the MAC that sends from them (CIDR list).
    /// Outside them a source address is a remote host behind a gateway. Default: RFC 1918,
    /// CGNAT, link-local and IPv6 ULA/link-local. Add a hospital's public blocks here.
    #[serde(default)]
    pub local_networks: Option<Vec<String>>,
    /// Other sites' networks, which this sensor sees only through their router (a core
    /// sensor seeing a routed clinic). Their hosts are reported as hosts of that site, never
    /// as evidence of the router, and a MAC sending from their addresses is a router.
    #[serde(default)]
    pub remote_sites: Vec<RemoteSiteSection>,
    /// Prometheus `/metrics` listener (decision 0026); none without this section.
    #[serde(default)]
    pub metrics: Option<crate::telemetry::MetricsSection>,
}

/// `[[remote_sites]] site = "north-clinic"  networks = ["10.41.0.0/16"]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSiteSection {
    pub site: String,
    pub networks: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// Aggregator QUIC address, host:port.
    pub server: String,
    /// Name in the aggregator's node certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// The cluster's other aggregator nodes (host:port), tried in order after `server` when
    /// a node cannot be reached or is not the Raft leader. Their certificates must carry
    /// `server_name` too.
    #[serde(default)]
    pub fallback_servers: Vec<String>,
    /// Frames outstanding at once, each on its own QUIC stream (at most 16 are used: the
    /// streams an aggregator grants one connection).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most spooled batches sent together in one frame when the node speaks uplink version
    /// 2 (decision 0034; 1 to 256); 1 sends one batch per stream (version 1).
    #[serde(default = "default_max_frame_batches")]
    pub max_frame_batches: usize,
    /// Seconds between health heartbeats (decision 0038; also one right after connecting);
    /// 0 sends none.
    #[serde(default = "default_heartbeat_interval_secs")]
    pub heartbeat_interval_secs: u64,
    /// zstd level of frames when the node speaks uplink version 3 (decision 0041; 1 to 19,
    /// default 3); 0 sends frames uncompressed (version 2).
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
}

fn default_heartbeat_interval_secs() -> u64 {
    crate::uplink::DEFAULT_HEARTBEAT_INTERVAL.as_secs()
}

fn default_compression_level() -> i32 {
    wardline_common::wire::DEFAULT_COMPRESSION_LEVEL
}

fn default_max_frame_batches() -> usize {
    crate::uplink::DEFAULT_FRAME_BATCHES
}

fn default_max_in_flight() -> usize {
    crate::uplink::DEFAULT_MAX_IN_FLIGHT
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    pub max_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// Live interface (SPAN/TAP port). Mutually exclusive with `files`.
    pub interface: Option<String>,
    /// BPF filter for live capture, e.g. "not port 4433".
    pub bpf: Option<String>,
    /// pcap/pcapng files to read instead of an interface.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Most events in one batch.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// How often (capture time) expired flows and changed devices are batched.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Capture-time seconds between two reports of a device whose only news is traffic
    /// (packet and byte counts, last seen); new facts and a device's first sighting are
    /// reported at once, and everything pending at the end of a capture. 0 reports every
    /// busy device in every batch. Keep it well under 900: the aggregator marks a device
    /// disconnected after 15 minutes without packets.
    #[serde(default = "default_counter_report_interval")]
    pub counter_report_interval_secs: u64,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_events: default_max_events(),
            interval_secs: default_interval(),
            counter_report_interval_secs: default_counter_report_interval(),
        }
    }
}

fn default_spool_max() -> u64 {
    1 << 30
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_counter_report_interval() -> u64 {
    crate::devices::DEFAULT_COUNTER_REPORT_INTERVAL_US / 1_000_000
}
fn default_max_events() -> usize {
    2000
}
fn default_interval() -> u64 {
    5
}

/// Ids travel in certificates and ClickHouse keys: keep them to a safe alphabet.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    if !wardline_common::wire::is_valid_id(id) {
        bail!("{what} {id:?} must be 1-64 characters of letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

impl SensorConfig {
    /// The spool's byte bound: `spool.max_bytes`, else `spool_max_bytes`.
    pub fn spool_bound(&self) -> u64 {
        self.spool.max_bytes.unwrap_or(self.spool_max_bytes)
    }

    /// The parsed `local_networks`, or the defaults.
    pub fn local_networks(&self) -> Result<Vec<crate::devices::IpNet>> {
        match &self.local_networks {
            None => Ok(crate::devices::default_local_networks()),
            Some(list) => {
                list.iter().map(|n| n.parse().map_err(|e: String| anyhow::anyhow!("local_networks: {e}"))).collect()
            }
        }
    }

    /// The parsed `remote_sites`, checked against the own site and `local_networks` (when
    /// configured: the default private ranges may hold remote sites, which then win).
    pub fn remote_sites(&self) -> Result<Vec<RemoteSite>> {
        let mut out = Vec::with_capacity(self.remote_sites.len());
        for (i, r) in self.remote_sites.iter().enumerate() {
            let entry = format!("remote_sites[{i}] (site {:?})", r.site);
            validate_id(&format!("{entry}: site"), &r.site)?;
            if r.site == self.site {
                bail!("{entry}: this is the sensor's own site; its networks belong in local_networks");
            }
            let networks = r
                .networks
                .iter()
                .map(|n| n.parse().map_err(|e: String| anyhow::anyhow!("{entry}: {e}")))
                .collect::<Result<Vec<_>>>()?;
            out.push(RemoteSite { site: r.site.clone(), networks });
        }
        let explicit_local = match &self.local_networks {
            Some(_) => self.local_networks()?,
            None => Vec::new(),
        };
        check_remote_sites(&explicit_local, &out).map_err(|e| anyhow::anyhow!("remote_sites: {e}"))?;
        Ok(out)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read sensor config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid sensor config {}", path.display()))
    }

    pub fn validate(&self) -> Result<()> {
        validate_id("sensor_id", &self.sensor_id)?;
        validate_id("site", &self.site)?;
        if self.capture.interface.is_some() && !self.capture.files.is_empty() {
            bail!("capture: give either an interface or files, not both");
        }
        if self.capture.interface.is_none() && self.capture.files.is_empty() {
            bail!("capture: nothing to capture — set capture.interface (live) or capture.files (pcap/pcapng)");
        }
        self.local_networks()?;
        self.remote_sites()?;
        if self.batch.max_events == 0 {
            bail!("batch.max_events must be at least 1");
        }
        if !(0..=19).contains(&self.uplink.compression_level) {
            bail!(
                "uplink.compression_level is {}; use 1 to 19 (3 is the default, higher levels cost more CPU for a few \
                 bytes) or 0 to send uncompressed",
                self.uplink.compression_level
            );
        }
        self.tls.check_exist("wardline-aggregator admin issue-sensor").map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("sensor_id", "ward-a.1_x").is_ok());
        assert!(validate_id("sensor_id", "").is_err());
        assert!(validate_id("sensor_id", "a/b").is_err());
        assert!(validate_id("site", &"x".repeat(65)).is_err());
    }

    #[test]
    fn compression_level_defaults_to_3_and_is_bounded() {
        let with = |extra: &str| -> SensorConfig {
            toml::from_str(&format!(
                "sensor_id='a'\nsite='b'\nspool_dir='/s'\n[uplink]\nserver='x:1'\n{extra}\n[tls]\ncert='/nonexistent/c'\n\
                 key='k'\nca='a'\n[capture]\nfiles=['f.pcap']\n"
            ))
            .unwrap()
        };
        assert_eq!(with("").uplink.compression_level, 3);
        // Valid levels pass this check (validation then stops at the missing TLS files).
        for ok in ["compression_level = 0", "compression_level = 19"] {
            let e = with(ok).validate().unwrap_err().to_string();
            assert!(!e.contains("compression_level"), "{ok}: {e}");
        }
        for bad in ["compression_level = 20", "compression_level = -1"] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("uplink.compression_level is") && e.contains("0 to send uncompressed"), "{bad}: {e}");
        }
    }

    #[test]
    fn local_networks_parse_or_explain() {
        let base =
            "sensor_id='a'\nsite='b'\nspool_dir='/s'\n[uplink]\nserver='x:1'\n[tls]\ncert='c'\nkey='k'\nca='a'\n";
        let cfg: SensorConfig =
            toml::from_str(&format!("local_networks=['10.0.0.0/8','2001:db8::/32']\n{base}")).unwrap();
        assert_eq!(cfg.local_networks().unwrap().len(), 2);
        let bad: SensorConfig = toml::from_str(&format!("local_networks=['10.0.0.0']\n{base}")).unwrap();
        assert!(bad.local_networks().unwrap_err().to_string().contains("10.0.0.0"));
        let none: SensorConfig = toml::from_str(base).unwrap();
        assert!(none.local_networks().unwrap().len() >= 5);
    }

    #[test]
    fn remote_sites_parse_or_name_the_entry() {
        let base =
            "sensor_id='a'\nsite='campus'\nspool_dir='/s'\n[uplink]\nserver='x:1'\n[tls]\ncert='c'\nkey='k'\nca='a'\n";
        let with =
            |head: &str, sites: &str| -> SensorConfig { toml::from_str(&format!("{head}\n{base}{sites}")).unwrap() };
        let ok = with(
            "",
            "[[remote_sites]]\nsite='north-clinic'\nnetworks=['10.41.0.0/16','fd41::/16']\n[[remote_sites]]\nsite='lab'\nnetworks=['10.42.0.0/16']\n",
        );
        let r = ok.remote_sites().unwrap();
        assert_eq!((r.len(), r[0].networks.len(), r[1].site.as_str()), (2, 2, "lab"));
        let bad_net = with("", "[[remote_sites]]\nsite='clinic'\nnetworks=['10.41.0.0']\n");
        let err = bad_net.remote_sites().unwrap_err().to_string();
        assert!(err.contains("remote_sites[0]") && err.contains("clinic") && err.contains("10.41.0.0"), "{err}");
        let own = with("", "[[remote_sites]]\nsite='campus'\nnetworks=['10.41.0.0/16']\n");
        assert!(own.remote_sites().unwrap_err().to_string().contains("own site"));
        let overlap =
            with("local_networks=['10.0.0.0/8']", "[[remote_sites]]\nsite='clinic'\nnetworks=['10.41.0.0/16']\n");
        let err = overlap.remote_sites().unwrap_err().to_string();
        assert!(err.contains("10.41.0.0/16") && err.contains("10.0.0.0/8"), "{err}");
        let bad_id = with("", "[[remote_sites]]\nsite='a b'\nnetworks=['10.41.0.0/16']\n");
        assert!(bad_id.remote_sites().unwrap_err().to_string().contains("remote_sites[0]"));
    }

    #[test]
    fn remote_net_arguments_group_by_site() {
        let nets: Vec<RemoteNet> = ["clinic=10.41.0.0/16", "lab=10.42.0.0/16", "clinic=fd41::/16"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let r = remote_sites_from_args(&nets, &[]).unwrap();
        assert_eq!(
            r.iter().map(|r| (r.site.as_str(), r.networks.len())).collect::<Vec<_>>(),
            [("clinic", 2), ("lab", 1)]
        );
        assert!("10.41.0.0/16".parse::<RemoteNet>().unwrap_err().contains("SITE=CIDR"));
        assert!("clinic=10.41.0.0".parse::<RemoteNet>().is_err());
        let local: Vec<IpNet> = vec!["10.41.128.0/17".parse().unwrap()];
        assert!(remote_sites_from_args(&nets, &local).unwrap_err().to_string().contains("--remote-net"));
    }

    /// The deployment example parses, with its commented remote site switched on.
    #[test]
    fn the_deployment_example_parses_with_a_remote_site() {
        let text = include_str!("../../deploy/config/sensor.toml")
            .replace("# [[remote_sites]]", "[[remote_sites]]")
            .replace("# site = \"north-clinic\"", "site = \"north-clinic\"")
            .replace("# networks = [\"10.41.0.0/16\"]", "networks = [\"10.41.0.0/16\"]");
        let cfg: SensorConfig = toml::from_str(&text).unwrap();
        let sites = cfg.remote_sites().unwrap();
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].networks, vec!["10.41.0.0/16".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "sensor_id='a'\nsite='b'\nspool_dir='/s'\nbogus=1\n[uplink]\nserver='x:1'\n[tls]\ncert='c'\nkey='k'\nca='a'\n";
        let err = toml::from_str::<SensorConfig>(text).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn spool_bound_prefers_the_spool_section() {
        let base = "sensor_id='a'\nsite='b'\nspool_dir='/s'\nspool_max_bytes=100\n";
        let rest = "[uplink]\nserver='x:1'\n[tls]\ncert='c'\nkey='k'\nca='a'\n";
        let old: SensorConfig = toml::from_str(&format!("{base}{rest}")).unwrap();
        assert_eq!(old.spool_bound(), 100);
        let new: SensorConfig = toml::from_str(&format!("{base}{rest}[spool]\nmax_bytes=5000\n")).unwrap();
        assert_eq!(new.spool_bound(), 5000);
    }
}
