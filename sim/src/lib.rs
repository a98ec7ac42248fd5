//! Deterministic capture generator: writes a realistic hospital pcap and, beside it,
//! `<out>.truth.json` with every device's identity and every flow's exact counters.
//!
//! - Same options (seed included) → byte-identical pcaps and truth file.
//! - Frames carry correct IPv4/UDP/TCP checksums, TCP sessions have handshakes, consistent
//!   sequence numbers and FIN closes; medical payloads follow their standards (DICOM PS3.8
//!   PDUs, HL7 v2 over MLLP, DHCP options 12/55/60/61/81).
//! - The capture streams to disk; memory holds only devices and per-flow counters, so
//!   captures of millions of packets are cheap (`Scale`).
//!
//! Scenarios: `ward` (one flat, untagged ward segment) and `hospital` (several sites, each
//! with datacenter, ward, ICU, radiology, lab, pharmacy, admin, voice and building zones on
//! their own 802.1Q VLANs behind a core switch, plus a routed clinic).
//!
//! # Vantage points and files (hospital)
//!
//! The main capture `<out>` is the core sensor (`"core"`): it sees every campus segment
//! natively and the clinic only on the transit link (VLAN 900) between the clinic's router
//! and the core switch, so clinic hosts there carry the clinic router's MAC. The clinic's
//! access-layer sensor (`"access-<site>"`) writes `<out>.access-<site>.pcap`
//! ([`access_capture_path`]; with the default two campuses
//! `<out>.access-north-clinic.pcap`): the clinic's ARP, DHCP and devices' own MACs. A
//! conversation crossing the transit link is written to both captures with the same IP ids.
//! The ward writes only `<out>`.
//!
//! # Identity cases (hospital) and their truth
//!
//! The truth file ([`GroundTruth`]) lists every capture ([`TruthCapture`]: file, sensor,
//! site, sites seen natively and through which router) and every zone's subnet
//! ([`TruthNetwork`]). Per device ([`TruthDevice`]): `id`, every MAC, every binding
//! ([`TruthBinding`]: MAC, IP, VLAN, site, zone, from, until, announced by DHCPACK, ARP or
//! static), per-sensor sightings ([`TruthSighting`]: native and/or routed, first/last) and
//! history ([`TruthHistoryEvent`]). The cases:
//! - DHCP churn at the clinic: a workstation sends DHCPRELEASE at 35 % of the run and
//!   leaves; another workstation is leased the same address at 50 %. Listed in
//!   `distinct_devices` (never merge; evidence from that address goes to whichever device
//!   holds the binding at the time: [`GroundTruth::owner_of`]).
//! - A portable ultrasound is unplugged at the main campus at 40 % and leased a clinic
//!   address at 45 % (history: `disconnected`, `site_move`, `ip_change`, `vlan_change`).
//! - The main campus's CT has a second NIC on the datacenter VLAN; both send DICOM with the
//!   same AE title and implementation class UID. Listed in `same_device` (merge).
//!
//! The ward's truth keeps its original format byte for byte: the identity fields are empty
//! and omitted.
//!
//! # Risky variant (hospital, [`GenerateOptions::risky`])
//!
//! Labelled risky behaviours late in the run (a pump browsing the web, an SMBv1 server, a
//! Telnet login, TeamViewer on the MRI, HL7 to an unexpected host, a new device on the ICU
//! VLAN, a site move, a traffic spike), each in [`GroundTruth::risky`] ([`TruthRisky`]), and
//! a pump reporting vulnerable firmware; [`GroundTruth::vulnerable`] ([`TruthVulnerable`])
//! lists the advisories expected per device. Without it the output is the clean scenario's,
//! byte for byte. Details in `topology/risky.rs`.
//!
//! Layout, from the wire up:
//! - [`wire`]: Ethernet/IP/TCP/UDP frames, the pcap writer, the emitter (simulated clock,
//!   hosts, captures and how each sees a conversation, TCP connections) and the per-flow
//!   ledger the truth file reports.
//! - [`protocols`]: payload builders, one module per protocol.
//! - [`profiles`]: the device catalogue (what each kind of device is and how it looks).
//! - `topology`: sites, zones, VLANs, addressing and naming of the devices of a scenario,
//!   and the hospital's identity cases (`topology/identity.rs`).
//! - `behaviour`: what each kind of device does on the network, run by a time-ordered
//!   scheduler (activities wait while a device is off the network).
//! - [`truth`]: the ground truth written beside the capture.
//!
//! More in `docs/simulator.md`.

mod behaviour;
pub mod options;
pub mod profiles;
pub mod protocols;
mod topology;
pub mod truth;
pub mod wire;
mod world;

pub use options::{GenerateOptions, Scale, Scenario};
pub use truth::{
    GroundTruth, TruthBinding, TruthCapture, TruthDevice, TruthDistinctDevices, TruthEvidence, TruthFlow,
    TruthHistoryEvent, TruthNetwork, TruthRisky, TruthRoutedSite, TruthSameDevice, TruthSighting, TruthVulnerable,
    RISKY_KINDS,
};

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

/// `<out>.access-<site>.pcap`: where [`generate`] writes the capture of the access-layer
/// sensor of routed site `site`, beside the main capture at `out`.
pub fn access_capture_path(out: &Path, site: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(format!(".access-{site}.pcap"));
    PathBuf::from(s)
}

fn open_capture(path: &Path) -> anyhow::Result<wire::PcapWriter<BufWriter<File>>> {
    let file = File::create(path).with_context(|| format!("creating capture file {}", path.display()))?;
    wire::PcapWriter::new(BufWriter::with_capacity(1 << 20, file))
        .with_context(|| format!("writing pcap header to {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Writes the capture to `out`, one capture per routed site's access-layer sensor to
/// [`access_capture_path`]`(out, site)` (hospital), and the ground truth to
/// [`truth_path`]`(out)`.
pub fn generate(opts: &GenerateOptions, out: &Path) -> anyhow::Result<GroundTruth> {
    opts.validate()?;
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut emitter = wire::Emitter::new(open_capture(out)?, opts.start_time_us, rng);
    let routed = topology::routed_site_names(opts);
    let mut paths = vec![out.to_path_buf()];
    let mut access = Vec::new();
    for site in &routed {
        let path = access_capture_path(out, site);
        access.push(emitter.add_capture(open_capture(&path)?));
        paths.push(path);
    }
    let mut world = topology::build(opts, emitter, &access);
    let activities = behaviour::schedule(&world);
    let end = opts.start_time_us + u64::from(opts.scale.minutes) * 60_000_000;
    behaviour::run(&mut world, activities, opts.start_time_us, end, opts.max_packets)
        .with_context(|| format!("writing capture {}", out.display()))?;
    // The ward keeps its original truth format; the hospital adds identity across sensors.
    let sensors: Vec<String> = if routed.is_empty() {
        Vec::new()
    } else {
        std::iter::once("core".to_string()).chain(routed.iter().map(|s| format!("access-{s}"))).collect()
    };
    let (sites, devices) = truth::devices_of(&world, &sensors);
    let networks = if sensors.is_empty() { Vec::new() } else { truth::networks_of(&world) };
    let views = truth::capture_views(&world, &sensors);
    let (risky, vulnerable) = topology::risky_truth(&world, &devices);
    let mut summaries = world.em.finish().with_context(|| format!("flushing capture {}", out.display()))?;
    let captures = summaries
        .iter_mut()
        .zip(views)
        .zip(&paths)
        .map(|((c, view), path)| truth::TruthCapture {
            file: file_name(path),
            packets: c.packets,
            bytes: c.bytes,
            first_packet_us: c.first_packet_us,
            last_packet_us: c.last_packet_us,
            flows: std::mem::take(&mut c.flows),
            ..view
        })
        .collect::<Vec<_>>();
    let main = summaries.swap_remove(0);
    let (same_device, distinct_devices) = (truth::same_devices(&devices), truth::distinct_devices(&devices));
    let mut captures = captures;
    let flows = if captures.is_empty() { main.flows } else { std::mem::take(&mut captures[0].flows) };
    let truth = GroundTruth {
        scenario: opts.scenario.to_string(),
        seed: opts.seed,
        first_packet_us: main.first_packet_us,
        last_packet_us: main.last_packet_us,
        packets: main.packets,
        bytes: main.bytes,
        sites,
        devices,
        flows,
        captures,
        networks,
        same_device,
        distinct_devices,
        risky,
        vulnerable,
    };
    let tp = truth_path(out);
    let json = serde_json::to_vec_pretty(&truth)?;
    std::fs::write(&tp, json).with_context(|| format!("writing ground truth {}", tp.display()))?;
    Ok(truth)
}

/// CLI convenience: scenario by name, default options otherwise, `scale` as a factor that
/// multiplies device counts and duration.
pub fn generate_named(scenario: &str, seed: u64, scale: u32, out: &Path) -> anyhow::Result<GroundTruth> {
    generate_variant(scenario, seed, scale, false, out)
}

/// [`generate_named`], with the labelled risky behaviours when `risky` (hospital only).
pub fn generate_variant(scenario: &str, seed: u64, scale: u32, risky: bool, out: &Path) -> anyhow::Result<GroundTruth> {
    let sc: Scenario = scenario.parse()?;
    let mut opts = GenerateOptions::new(sc);
    opts.seed = seed;
    opts.scale = Scale::factor(sc, scale);
    opts.risky = risky;
    generate(&opts, out)
}
