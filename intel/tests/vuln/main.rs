//! Vulnerability feeds: the real CISA files, matching the simulator's devices, and parser
//! properties. The feeds are read at run time from $WARDLINE_VULNFEEDS, else
//! <workspace>/../shared/vulnfeeds (never copied into the repository).

mod feeds;
mod matching;
mod props;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wardline_intel::vuln::{load_advisory_dir, Advisory, KevCatalog, VulnIndex};

pub fn feeds_dir() -> PathBuf {
    match std::env::var_os("WARDLINE_VULNFEEDS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vulnfeeds"),
    }
}

pub fn icsma_dir() -> PathBuf {
    let d = feeds_dir().join("icsma");
    assert!(d.is_dir(), "advisories {} not found; set WARDLINE_VULNFEEDS to the shared vulnfeeds folder", d.display());
    d
}

/// Every real advisory, loaded once per test binary; every file must parse.
pub fn advisories() -> &'static [Advisory] {
    static ADV: OnceLock<Vec<Advisory>> = OnceLock::new();
    ADV.get_or_init(|| {
        let (ok, errors) = load_advisory_dir(&icsma_dir()).expect("list advisories");
        assert!(errors.is_empty(), "real advisories failed to load: {errors:#?}");
        ok
    })
}

pub fn kev() -> &'static KevCatalog {
    static KEV: OnceLock<KevCatalog> = OnceLock::new();
    KEV.get_or_init(|| {
        let p = feeds_dir().join("known_exploited_vulnerabilities.json");
        KevCatalog::load(&p).unwrap_or_else(|e| panic!("{e}; set WARDLINE_VULNFEEDS to the shared vulnfeeds folder"))
    })
}

pub fn index() -> &'static VulnIndex {
    static IDX: OnceLock<VulnIndex> = OnceLock::new();
    IDX.get_or_init(|| VulnIndex::build(advisories().to_vec(), kev().clone()))
}
