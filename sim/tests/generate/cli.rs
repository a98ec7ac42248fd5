//! The `wardline-sim` binary: writes the same files as the library, and refuses bad input
//! with an operator-readable error.

use std::process::Command;
use wardline_sim::{generate, truth_path, GenerateOptions, Scale, Scenario};

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wardline-sim"))
}

#[test]
fn binary_writes_the_capture_and_truth_the_library_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let by_cli = dir.path().join("cli.pcap");
    let run = sim()
        .args(["--scenario", "ward", "--seed", "3", "--scale", "2", "--out"])
        .arg(&by_cli)
        .output()
        .expect("run wardline-sim");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "wardline-sim failed: {stderr}");
    assert!(stderr.starts_with("wrote "), "stderr: {stderr}");

    let by_lib = dir.path().join("lib.pcap");
    let mut opts = GenerateOptions::new(Scenario::Ward);
    opts.seed = 3;
    opts.scale = Scale::factor(Scenario::Ward, 2);
    generate(&opts, &by_lib).expect("generate");

    let read = |p: &std::path::Path| std::fs::read(p).expect("read");
    assert_eq!(read(&by_cli), read(&by_lib), "pcap differs");
    assert_eq!(read(&truth_path(&by_cli)), read(&truth_path(&by_lib)), "ground truth differs");
}

#[test]
fn unknown_scenario_is_refused_with_the_accepted_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.pcap");
    let result = sim().args(["--scenario", "clinic", "--out"]).arg(&out).output().expect("run wardline-sim");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("unknown scenario \"clinic\": expected one of ward, hospital"), "stderr: {stderr}");
    assert!(!out.exists(), "no capture is written for a refused scenario");
}

#[test]
fn risky_needs_the_hospital_and_writes_its_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("ward.pcap");
    let result = sim().args(["--scenario", "ward", "--risky", "--out"]).arg(&out).output().expect("run wardline-sim");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("risky behaviours need the hospital scenario"), "stderr: {stderr}");
    assert!(!out.exists(), "no capture is written for a refused variant");

    // The flag reaches the generator: the truth lists the behaviours (checked in `risky`).
    let out = dir.path().join("hospital.pcap");
    let run = sim().args(["--scenario", "hospital", "--risky", "--out"]).arg(&out).output().expect("run wardline-sim");
    assert!(run.status.success(), "wardline-sim failed: {}", String::from_utf8_lossy(&run.stderr));
    let truth = wardline_sim::GroundTruth::load(&truth_path(&out)).expect("truth");
    assert_eq!(truth.risky.len(), wardline_sim::RISKY_KINDS.len());
    assert!(truth.vulnerable.iter().any(|v| v.firmware.as_deref() == Some("9.19")));
}
