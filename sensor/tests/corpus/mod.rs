//! Where the real captures are, for every sensor test that reads them:
//! $WARDLINE_PCAPS, else <workspace>/../shared/pcaps (never copied into the repository),
//! and listing them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn pcaps_dir() -> PathBuf {
    match std::env::var_os("WARDLINE_PCAPS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps"),
    }
}

/// One capture by its path under the folder; fails clearly when it is missing.
pub fn pcap(rel: &str) -> PathBuf {
    let p = pcaps_dir().join(rel);
    assert!(p.exists(), "capture {} not found; set WARDLINE_PCAPS to the shared pcaps folder", p.display());
    p
}

/// Every .pcap/.pcapng file under the folder, sorted; fails clearly when there is none.
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

/// Every capture file in one subfolder (`dicom`, `hl7`, ...), sorted.
pub fn pcaps_in(sub: &str) -> Vec<PathBuf> {
    let dir = pcaps_dir().join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}; set WARDLINE_PCAPS", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng")))
        .collect();
    v.sort();
    v
}
