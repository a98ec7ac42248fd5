//! Sensor configuration: a TOML file, every key overridable on the command line.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
pub use wardline_common::tls_files::TlsPaths;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Must equal the sensor id in this sensor's certificate.
    pub sensor_id: String,
    /// Must equal the site in this sensor's certificate.
    pub site: String,
    /// Durable spool (sled) of batches not yet acknowledged by the cluster.
    pub spool_dir: PathBuf,
    /// Disk bound of the spool; past it, flow-only batches are dropped oldest first (counted).
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    pub uplink: UplinkSection,
    pub tls: TlsPaths,
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub batch: BatchSection,
    /// Networks whose addresses belong to the MAC that sends from them (CIDR list).
    /// Outside them a source address is a remote host behind a gateway. Default: RFC 1918,
    /// CGNAT, link-local and IPv6 ULA/link-local. Add a hospital's public blocks here.
    #[serde(default)]
    pub local_networks: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// Aggregator QUIC address, host:port.
    pub server: String,
    /// Name in the aggregator's node certificate.
    #[serde(default = "default_server_name")]
    pub server_name: String,
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
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection { max_events: default_max_events(), interval_secs: default_interval() }
    }
}

fn default_spool_max() -> u64 {
    1 << 30
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_max_events() -> usize {
    2000
}
fn default_interval() -> u64 {
    5
}

/// Ids travel in certificates and ClickHouse keys: keep them to a safe alphabet.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("{what} {id:?} must be 1-64 characters of letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

impl SensorConfig {
    /// The parsed `local_networks`, or the defaults.
    pub fn local_networks(&self) -> Result<Vec<crate::devices::IpNet>> {
        match &self.local_networks {
            None => Ok(crate::devices::default_local_networks()),
            Some(list) => {
                list.iter().map(|n| n.parse().map_err(|e: String| anyhow::anyhow!("local_networks: {e}"))).collect()
            }
        }
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
        if self.batch.max_events == 0 {
            bail!("batch.max_events must be at least 1");
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
    fn unknown_keys_are_refused() {
        let text = "sensor_id='a'\nsite='b'\nspool_dir='/s'\nbogus=1\n[uplink]\nserver='x:1'\n[tls]\ncert='c'\nkey='k'\nca='a'\n";
        let err = toml::from_str::<SensorConfig>(text).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}
