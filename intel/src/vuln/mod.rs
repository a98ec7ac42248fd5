//! Offline vulnerability feeds and matching devices against them.
//!
//! Hospitals cannot let a sensor fetch feeds from the internet, so the feeds are files an
//! operator copies in: CISA's CSAF 2.0 ICS Medical Advisories ([`csaf`]) and the Known
//! Exploited Vulnerabilities catalog ([`kev`]). Newer files of the same formats load without
//! code changes. [`VulnIndex`] compiles both; [`VulnIndex::match_device`] answers which
//! advisories apply to a device (vendor, model, firmware, OS) and how sure that is.
//! See docs/vulnerabilities.md.
//!
//! - [`version`]: firmware versions and `vers:`/CISA-text version ranges.
//! - [`names`]: vendor and product name normalization.
//! - [`csaf`], [`kev`]: the loaders (the only code that reads files).
//! - [`matcher`]: the compiled index and the match rules.

pub mod csaf;
pub mod kev;
pub mod matcher;
pub mod names;
pub mod version;

pub use csaf::{load_advisory_dir, load_advisory_file, parse_advisory, Advisory, Product, Vulnerability};
pub use kev::{KevCatalog, KevEntry};
pub use matcher::{Confidence, DeviceQuery, VulnIndex, VulnMatch};
pub use version::{Version, VersionSpec};

use serde::de::DeserializeOwned;

/// A feed file that cannot be used: which file, where in it (JSON pointer), what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{message}", if pointer.is_empty() { String::new() } else { format!("{pointer}: ") })]
pub struct FeedError {
    /// File name (or the path when the file itself cannot be read).
    pub file: String,
    /// JSON pointer of the offending field ("/vulnerabilities/2/scores/0/cvss_v3/baseScore");
    /// empty when the file as a whole is the problem.
    pub pointer: String,
    pub message: String,
}

impl FeedError {
    pub(crate) fn file(file: &str, message: String) -> FeedError {
        FeedError { file: file.to_string(), pointer: String::new(), message }
    }
}

/// serde_json with the path of the failing field, as a JSON pointer.
pub(crate) fn from_json<T: DeserializeOwned>(bytes: &[u8], source: &str) -> Result<T, FeedError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let mut pointer = String::new();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
                serde_path_to_error::Segment::Map { key } => {
                    pointer.push('/');
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                }
                serde_path_to_error::Segment::Enum { variant } => pointer.push_str(&format!("/{variant}")),
                serde_path_to_error::Segment::Unknown => pointer.push_str("/?"),
            }
        }
        FeedError { file: source.to_string(), pointer, message: operator_message(e.inner()) }
    })?;
    // Bytes after the document are as wrong as a truncated one.
    de.end().map_err(|e| FeedError::file(source, operator_message(&e)))?;
    Ok(value)
}

/// serde's wording, with its Rust type names replaced by JSON ones.
fn operator_message(e: &serde_json::Error) -> String {
    let mut m = e.to_string();
    for (rust, json) in [
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected u64", "expected a number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected an object"),
        ("struct ", "an object "),
    ] {
        m = m.replace(rust, json);
    }
    m
}
