//! The chaos suite's short (CI) runs: each nemesis that works on the cluster we can build
//! today, a few seconds of fault, the checker's full verdict. `just chaos` runs the long
//! version (`full_suite`, ignored here); docs/chaos.md says what each nemesis does.
//!
//! Replay a run with `WARDLINE_CHAOS_SEED=N` (every result line prints its seed).

use std::io::Write;
use std::time::Duration;
use wardline_chaos_tests::nemesis::Nemesis;
use wardline_chaos_tests::run::{run, seed_from_env, RunSpec};

/// Where result lines are appended as well as printed (`just chaos` reads it back).
const REPORT_ENV: &str = "WARDLINE_CHAOS_REPORT";

fn report(line: &str) {
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(REPORT_ENV) {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn short(nemesis: Nemesis) {
    let seed = seed_from_env();
    let out = run(&RunSpec::short(nemesis, seed)).unwrap_or_else(|e| panic!("{nemesis} seed {seed}: {e:#}"));
    report(&out.line);
    assert!(
        out.verdict.problems.is_empty(),
        "{nemesis} (replay: WARDLINE_CHAOS_SEED={seed}):\n{}",
        out.verdict.problems.join("\n")
    );
    if out.skipped.is_none() {
        assert!(out.verdict.acked > 0, "{nemesis}: no batch was acked: {}", out.line);
    }
}

#[test]
fn chaos_kill_leader() {
    short(Nemesis::KillLeader);
}

#[test]
fn chaos_kill_follower() {
    short(Nemesis::KillFollower);
}

#[test]
fn chaos_membership_change() {
    short(Nemesis::MembershipChange);
}

#[test]
fn chaos_partition_leader() {
    short(Nemesis::PartitionLeader);
}

#[test]
fn chaos_isolate_minority() {
    short(Nemesis::IsolateMinority);
}

#[test]
fn chaos_pause_leader() {
    short(Nemesis::PauseLeader);
}

#[test]
fn chaos_flaky_links() {
    short(Nemesis::FlakyLinks);
}

#[test]
fn chaos_partition_sensors() {
    short(Nemesis::PartitionSensors);
}

#[test]
fn chaos_clickhouse_restart() {
    short(Nemesis::ClickHouseRestart);
}

#[test]
fn chaos_full_disk() {
    short(Nemesis::FullDisk);
}

#[test]
fn chaos_clock_jump() {
    short(Nemesis::ClockJump);
}

#[test]
fn chaos_random_pair() {
    short(Nemesis::Random);
}

/// `just chaos`: every nemesis for WARDLINE_CHAOS_FAULT_SECS (default 60) of fault, one
/// line each; `just chaos-long` repeats random combinations for WARDLINE_CHAOS_ROUNDS.
/// WARDLINE_CHAOS_NEMESIS runs one nemesis only, WARDLINE_CHAOS_NODES sets the cluster size.
#[test]
#[ignore = "minutes long; run by `just chaos` / `just chaos-long`"]
fn full_suite() {
    let fault_secs: u64 = std::env::var("WARDLINE_CHAOS_FAULT_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let rounds: u64 = std::env::var("WARDLINE_CHAOS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let only: Option<Nemesis> = std::env::var("WARDLINE_CHAOS_NEMESIS").ok().map(|s| s.parse().unwrap());
    let first_seed = seed_from_env();
    let plan: Vec<(Nemesis, u64)> = if rounds > 0 {
        (0..rounds).map(|r| (only.unwrap_or(Nemesis::Random), first_seed + r)).collect()
    } else {
        Nemesis::ALL.into_iter().filter(|n| only.is_none_or(|o| o == *n)).map(|n| (n, first_seed)).collect()
    };
    let mut failed = Vec::new();
    for (nemesis, seed) in plan {
        let mut spec = RunSpec::short(nemesis, seed);
        spec.fault_for = Duration::from_secs(fault_secs);
        if let Some(n) = std::env::var("WARDLINE_CHAOS_NODES").ok().and_then(|s| s.parse().ok()) {
            spec.nodes = n;
        }
        // A bigger capture so the sensors still stream when a long fault ends.
        spec.scale = (fault_secs / 20).clamp(1, 4) as u32;
        match run(&spec) {
            Ok(out) => {
                report(&out.line);
                for p in &out.verdict.problems {
                    report(&format!("    {p}"));
                }
                if !out.verdict.problems.is_empty() {
                    failed.push(format!("{nemesis} seed {seed}"));
                }
            }
            Err(e) => {
                report(&format!("{nemesis:<18} seed={seed:<20} ERROR {e:#}"));
                failed.push(format!("{nemesis} seed {seed}"));
            }
        }
    }
    assert!(failed.is_empty(), "failed runs (replay each with WARDLINE_CHAOS_SEED): {failed:?}");
}
