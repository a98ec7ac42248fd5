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
//! Scenarios: `ward` (one flat, untagged ward segment) and `hospital` (several sites, each
//! with datacenter, ward, ICU, radiology, lab, pharmacy, admin, voice and building zones on
//! their own 802.1Q VLANs behind a core switch).
//!
//! Layout, from the wire up:
//! - [`wire`]: Ethernet/IP/TCP/UDP frames, the pcap writer, the emitter (simulated clock,
//!   hosts, TCP connections) and the per-flow ledger the truth file reports.
//! - [`protocols`]: payload builders, one module per protocol.
//! - [`profiles`]: the device catalogue (what each kind of device is and how it looks).
//! - `topology`: sites, zones, VLANs, addressing and naming of the devices of a scenario.
//! - `behaviour`: what each kind of device does on the network, run by a time-ordered
//!   scheduler.
//! - [`truth`]: the ground truth written beside the capture.

mod behaviour;
pub mod options;
pub mod profiles;
pub mod protocols;
mod topology;
pub mod truth;
pub mod wire;
mod world;

pub use options::{GenerateOptions, Scale, Scenario};
pub use truth::{GroundTruth, TruthDevice, TruthEvidence, TruthFlow};

use anyhow::Context;
use rand::SeedableRng;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// `<out>.truth.json`: where [`generate`] writes the ground truth for the capture at `out`.
pub fn truth_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".truth.json");
    PathBuf::from(s)
}

/// Writes the capture to `out` and the ground truth to [`truth_path`]`(out)`.
pub fn generate(opts: &GenerateOptions, out: &Path) -> anyhow::Result<GroundTruth> {
    opts.validate()?;
    let file = File::create(out).with_context(|| format!("creating capture file {}", out.display()))?;
    let writer = wire::PcapWriter::new(BufWriter::with_capacity(1 << 20, file))
        .with_context(|| format!("writing pcap header to {}", out.display()))?;
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let emitter = wire::Emitter::new(writer, opts.start_time_us, rng);
    let mut world = topology::build(opts, emitter);
    let activities = behaviour::schedule(&world);
    let end = opts.start_time_us + u64::from(opts.scale.minutes) * 60_000_000;
    behaviour::run(&mut world, activities, opts.start_time_us, end, opts.max_packets)
        .with_context(|| format!("writing capture {}", out.display()))?;
    let (sites, devices) = truth::devices_of(&world);
    let capture = world.em.finish().with_context(|| format!("flushing capture {}", out.display()))?;
    let truth = GroundTruth {
        scenario: opts.scenario.to_string(),
        seed: opts.seed,
        first_packet_us: capture.first_packet_us,
        last_packet_us: capture.last_packet_us,
        packets: capture.packets,
        bytes: capture.bytes,
        sites,
        devices,
        flows: capture.flows,
    };
    let tp = truth_path(out);
    let json = serde_json::to_vec_pretty(&truth)?;
    std::fs::write(&tp, json).with_context(|| format!("writing ground truth {}", tp.display()))?;
    Ok(truth)
}

/// CLI convenience: scenario by name, default options otherwise, `scale` as a factor that
/// multiplies device counts and duration.
pub fn generate_named(scenario: &str, seed: u64, scale: u32, out: &Path) -> anyhow::Result<GroundTruth> {
    let sc: Scenario = scenario.parse()?;
    let mut opts = GenerateOptions::new(sc);
    opts.seed = seed;
    opts.scale = Scale::factor(sc, scale);
    generate(&opts, out)
}
