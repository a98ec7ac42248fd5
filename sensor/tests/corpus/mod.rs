//! Where the real captures are, for every sensor test that reads them:
//! $WARDLINE_PCAPS, else <workspace>/../shared/pcaps (never copied into the repository).
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
