//! Deterministic capture generator: writes a realistic hospital pcap and, beside it,
//! `<out>.truth.json` with every device's identity and every flow's exact counters.
//!
//! - Same options (seed included) → byte-identical pcap and truth file.
//! - Frames carry correct IPv4/UDP/TCP checksums, TCP sessions have handshakes, consistent
//!   sequence numbers and FIN closes; medical payloads follow their standards (DICOM PS3.8
//!   PDUs, HL7 v2 over MLLP, DHCP options 12/55/60/61/81).
//! - The capture streams to disk; memory holds only devices and per-flow counters, so
//!   captures of millions of packets are cheap (`Scale`).
//!
//! Scenarios: `ward` (issue 2: one flat, untagged ward segment) and `hospital` (issue 4:
//! several sites, each with datacenter, ward, ICU, radiology, lab, pharmacy, admin, voice
//! and building zones on their own 802.1Q VLANs behind a core switch).

pub mod emit;
pub mod frames;
pub mod pcap;
pub mod profiles;
pub mod protocols;
pub mod scenario;
pub mod truth;

pub use truth::{GroundTruth, TruthDevice, TruthEvidence, TruthFlow};

use anyhow::Context;
use rand::SeedableRng;
use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::str::FromStr;

const SCENARIOS: &[&str] = &["ward", "hospital"];

/// Names accepted by [`Scenario::from_str`].
pub fn scenario_names() -> &'static [&'static str] {
    SCENARIOS
}

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
            other => anyhow::bail!(
                "unknown scenario {other:?}: expected one of {}",
                SCENARIOS.join(", ")
            ),
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
        Scale {
            device_multiplier: f,
            minutes: Self::default_minutes(scenario) * f,
        }
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
        }
    }
}

/// `<out>.truth.json`: where [`generate`] writes the ground truth for the capture at `out`.
pub fn truth_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".truth.json");
    PathBuf::from(s)
}

/// Writes the capture to `out` and the ground truth to [`truth_path`]`(out)`.
pub fn generate(opts: &GenerateOptions, out: &Path) -> anyhow::Result<GroundTruth> {
    anyhow::ensure!(opts.scale.minutes > 0, "scale.minutes must be at least 1");
    anyhow::ensure!(
        opts.sites > 0 && opts.sites <= 64,
        "sites must be between 1 and 64, got {}",
        opts.sites
    );
    anyhow::ensure!(
        opts.scale.device_multiplier <= 200,
        "device multiplier {} is too large: zone address plans hold about 200x the default devices",
        opts.scale.device_multiplier
    );
    let file =
        File::create(out).with_context(|| format!("creating capture file {}", out.display()))?;
    let writer = pcap::PcapWriter::new(BufWriter::with_capacity(1 << 20, file))
        .with_context(|| format!("writing pcap header to {}", out.display()))?;
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let em = emit::Emitter::new(writer, opts.start_time_us, rng);
    let mut world = scenario::build(opts, em);
    let acts = scenario::schedule(&world);
    let end = opts.start_time_us + u64::from(opts.scale.minutes) * 60_000_000;
    scenario::run(&mut world, acts, opts.start_time_us, end, opts.max_packets)
        .with_context(|| format!("writing capture {}", out.display()))?;
    let (sites, devices) = scenario::truth_devices(&world);
    let (flows, packets, bytes, first, last, _w) = world
        .em
        .finish()
        .with_context(|| format!("flushing capture {}", out.display()))?;
    let truth = GroundTruth {
        scenario: opts.scenario.to_string(),
        seed: opts.seed,
        first_packet_us: first,
        last_packet_us: last,
        packets,
        bytes,
        sites,
        devices,
        flows,
    };
    let tp = truth_path(out);
    let json = serde_json::to_vec_pretty(&truth)?;
    std::fs::write(&tp, json).with_context(|| format!("writing ground truth {}", tp.display()))?;
    Ok(truth)
}

/// CLI convenience: scenario by name, default options otherwise, `scale` as a factor that
/// multiplies device counts and duration.
pub fn generate_named(
    scenario: &str,
    seed: u64,
    scale: u32,
    out: &Path,
) -> anyhow::Result<GroundTruth> {
    let sc: Scenario = scenario.parse()?;
    let mut opts = GenerateOptions::new(sc);
    opts.seed = seed;
    opts.scale = Scale::factor(sc, scale);
    generate(&opts, out)
}
