//! What to generate: the scenario, its size and the seed.

use std::fmt;
use std::str::FromStr;

/// Names accepted by [`Scenario::from_str`].
const SCENARIOS: &[&str] = &["ward", "hospital"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Ward,
    Hospital,
}

impl FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "ward" => Ok(Scenario::Ward),
            "hospital" => Ok(Scenario::Hospital),
            other => anyhow::bail!("unknown scenario {other:?}: expected one of {}", SCENARIOS.join(", ")),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Ward => "ward",
            Scenario::Hospital => "hospital",
        })
    }
}

/// How big a capture to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// Multiplies the per-bed/per-desk device counts (pumps, monitors, phones, ...);
    /// servers and infrastructure stay one per site.
    pub device_multiplier: u32,
    /// Simulated traffic duration.
    pub minutes: u32,
}

impl Scale {
    /// `factor` multiplies both device counts and duration (factor 1 = the default size).
    pub fn factor(scenario: Scenario, factor: u32) -> Scale {
        let f = factor.max(1);
        Scale { device_multiplier: f, minutes: Self::default_minutes(scenario) * f }
    }
    pub fn default_minutes(scenario: Scenario) -> u32 {
        match scenario {
            Scenario::Ward => 5,
            Scenario::Hospital => 10,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    pub scenario: Scenario,
    pub seed: u64,
    pub scale: Scale,
    /// Number of sites (ward: copies of the ward, each its own subnet; hospital: campuses).
    pub sites: u32,
    /// Timestamp of the simulation start, microseconds since the Unix epoch.
    pub start_time_us: u64,
    /// Stop once this many packets are written (for benchmarks needing an exact size).
    pub max_packets: Option<u64>,
    /// Add the labelled risky behaviours and a vulnerable-firmware pump (hospital only; see
    /// `topology/risky.rs`). Off: the output is exactly the clean scenario's.
    pub risky: bool,
}

impl GenerateOptions {
    /// Defaults for `scenario`: seed 1, scale 1, one site for the ward and two for the
    /// hospital, starting 2024-03-12T08:00:00Z.
    pub fn new(scenario: Scenario) -> Self {
        GenerateOptions {
            scenario,
            seed: 1,
            scale: Scale::factor(scenario, 1),
            sites: match scenario {
                Scenario::Ward => 1,
                Scenario::Hospital => 2,
            },
            start_time_us: 1_710_230_400_000_000,
            max_packets: None,
            risky: false,
        }
    }

    /// Refuses sizes the address plans cannot hold.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.scale.minutes > 0, "scale.minutes must be at least 1");
        anyhow::ensure!(self.sites > 0 && self.sites <= 64, "sites must be between 1 and 64, got {}", self.sites);
        anyhow::ensure!(
            self.scale.device_multiplier <= 200,
            "device multiplier {} is too large: zone address plans hold about 200x the default devices",
            self.scale.device_multiplier
        );
        anyhow::ensure!(
            !self.risky || self.scenario == Scenario::Hospital,
            "risky behaviours need the hospital scenario (lab analyzer, MRI, clinical VLANs, several sites); \
             use --scenario hospital --risky"
        );
        Ok(())
    }
}
