//! Shared helpers for the data-plane tests: where the real captures live, and listing them.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use crate::corpus::{all_pcaps, pcap, pcaps_dir};

pub fn tshark_available() -> bool {
    std::process::Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}
