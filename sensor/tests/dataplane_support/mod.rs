//! Shared helpers for the data-plane tests: where the real captures live, and listing them.
#![allow(dead_code)]

/// Root of the shared capture corpus: $WARDLINE_PCAPS or <workspace>/../shared/pcaps.
#[path = "../corpus/mod.rs"]
mod corpus;
#[allow(unused_imports)]
pub use corpus::{all_pcaps, pcap, pcaps_dir};

pub fn tshark_available() -> bool {
    std::process::Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}
