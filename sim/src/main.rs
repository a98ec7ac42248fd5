//! `wardline-sim`: writes a deterministic synthetic hospital capture and its ground truth.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "wardline-sim",
    version,
    about = "Write a deterministic synthetic hospital capture (pcap) and its ground truth (<out>.truth.json)",
    long_about = "Write a deterministic synthetic hospital capture (pcap) and, beside it, \
<out>.truth.json with every device's identity and every flow's exact counters. \
The same scenario, seed and scale always give byte-identical files.\n\n\
Files: <out> is the main (core) sensor's capture. The hospital also has a clinic reached \
through its router: the core sees it only behind the router's MAC, and its access-layer \
sensor's capture is written to <out>.access-<site>.pcap (north-clinic by default). The \
truth file lists every capture with its sensor id and site.\n\n\
Example: wardline-sim --scenario hospital --seed 1 --out hospital.pcap\n\
  writes hospital.pcap, hospital.pcap.access-north-clinic.pcap, hospital.pcap.truth.json"
)]
struct Cli {
    /// Scenario: "ward" (one flat ward segment) or "hospital" (two campuses with zones on
    /// VLANs, plus a routed clinic with its own access capture).
    #[arg(long, default_value = "ward")]
    scenario: String,
    /// Random seed; the same seed gives the same capture.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Multiplies devices and traffic duration.
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Main capture file to write; the ground truth goes to <out>.truth.json and each
    /// routed site's access capture to <out>.access-<site>.pcap.
    #[arg(long)]
    out: PathBuf,
    /// Add labelled risky behaviours (a pump browsing the web, SMBv1, a Telnet login,
    /// TeamViewer on the MRI, HL7 to an unexpected host, a new device on the ICU VLAN, a
    /// site move, a traffic spike) and a pump with vulnerable firmware, all listed in the
    /// truth's `risky` and `vulnerable` entries. Hospital only.
    #[arg(long)]
    risky: bool,
}

fn main() {
    let cli = Cli::parse();
    match wardline_sim::generate_variant(&cli.scenario, cli.seed, cli.scale, cli.risky, &cli.out) {
        Ok(truth) => {
            eprintln!(
                "wrote {} ({} devices, {} packets) and {}",
                cli.out.display(),
                truth.devices.len(),
                truth.packets,
                wardline_sim::truth_path(&cli.out).display()
            );
            for cap in truth.captures.iter().skip(1) {
                eprintln!(
                    "wrote {} (sensor {}, {} packets)",
                    cli.out.with_file_name(&cap.file).display(),
                    cap.sensor,
                    cap.packets
                );
            }
        }
        Err(e) => {
            eprintln!("wardline-sim: error: {e:#}");
            std::process::exit(1);
        }
    }
}
