//! What the aggregator's scale benches share: their scale knobs from the environment, the
//! process's resident memory, and the packet-time origin of generated data.
#![allow(dead_code)]

/// 2026-01-01T00:00:00Z in µs, the packet time generated data starts at.
pub const T0_US: u64 = 1_767_225_600_000_000;
pub const HOUR_US: u64 = 3_600_000_000;

/// `name` from the environment as a whole number, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory of this process in KiB (`VmRSS` of /proc/self/status; 0 if unreadable).
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
