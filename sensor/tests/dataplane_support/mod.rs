//! Shared helpers for the data-plane tests: where the real captures live, and listing them.
#![allow(dead_code)]

use std::path::PathBuf;

/// Root of the shared capture corpus: $WARDLINE_PCAPS or <workspace>/../shared/pcaps.
#[path = "../corpus/mod.rs"]
mod corpus;
#[allow(unused_imports)]
pub use corpus::{pcap, pcaps_dir};

/// Every .pcap/.pcapng file in the corpus, sorted.
pub fn all_pcaps() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![pcaps_dir()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no captures under {} (set WARDLINE_PCAPS)", pcaps_dir().display());
    out
}

pub fn tshark_available() -> bool {
    std::process::Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success())
}
