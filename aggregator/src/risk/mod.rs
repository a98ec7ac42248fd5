//! Vulnerability feeds and device risk served by the cluster (issue 11, decision 0027).
//!
//! - [`import`]: parse operator-supplied CSAF and KEV files into replicated feed parts.
//! - [`CompiledFeeds`]: the replicated feeds compiled into a `VulnIndex`, cached per feed
//!   version (the compiled index is a pure function of the replicated text).
//! - [`api`]: the routes (`/api/v1/vuln/...`, `/api/v1/devices/{id}/risk`, `/api/v1/risk`).
//! - [`reports`]: inventory, risk, vulnerable-device and alert reports as CSV and HTML;
//!   [`pdf`] prints the HTML to PDF with Debian's headless chromium when it is installed.
//!
//! The per-device computation lives in `crate::query::risk`, next to classification: risk
//! is, like classification, a function of the merged device, its flows and the replicated
//! feeds at read time.

pub mod api;
pub mod class_segments;
pub mod history;
pub mod import;
pub mod pdf;
pub mod reports;
pub mod schedule;

use crate::state::vulnfeeds::{FeedAdvisory, FeedFileError, FeedKev};
use std::sync::{Arc, Mutex};
use wardline_intel::risk::IsoDate;
use wardline_intel::vuln::{parse_advisory, KevCatalog, VulnIndex};

/// The replicated feeds, compiled.
pub struct CompiledFeeds {
    /// `VulnFeeds::version` this was compiled from.
    pub version: u64,
    pub index: VulnIndex,
    /// Stored texts this build's parser refuses (possible only after an upgrade changed the
    /// parser): left out of matching and listed in `GET /api/v1/vuln/feeds`.
    pub stale: Vec<FeedFileError>,
}

impl CompiledFeeds {
    /// Compile stored feed texts (deterministic: the same texts give the same index).
    pub fn compile(version: u64, advisories: &[FeedAdvisory], kev: Option<&FeedKev>) -> CompiledFeeds {
        let mut stale = Vec::new();
        let mut parsed = Vec::with_capacity(advisories.len());
        for a in advisories {
            match parse_advisory(a.json.as_bytes(), &a.source) {
                Ok(p) => parsed.push(p),
                Err(e) => stale.push(FeedFileError { file: e.file, pointer: e.pointer, message: e.message }),
            }
        }
        let catalog = match kev.map(|k| KevCatalog::parse(k.json.as_bytes(), &k.source)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                stale.push(FeedFileError { file: e.file, pointer: e.pointer, message: e.message });
                KevCatalog::default()
            }
            None => KevCatalog::default(),
        };
        CompiledFeeds { version, index: VulnIndex::build(parsed, catalog), stale }
    }
}

/// The last compiled feeds of this node.
#[derive(Default)]
pub struct FeedCache(Mutex<Option<Arc<CompiledFeeds>>>);

impl FeedCache {
    /// The cached compilation if it is of `version`.
    pub fn get(&self, version: u64) -> Option<Arc<CompiledFeeds>> {
        let held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.as_ref().filter(|c| c.version == version).cloned()
    }

    pub fn put(&self, compiled: Arc<CompiledFeeds>) {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_ref().is_none_or(|c| c.version <= compiled.version) {
            *held = Some(compiled);
        }
    }
}

/// The calendar day (UTC) of a capture time in microseconds since the Unix epoch.
pub fn day_of_us(us: u64) -> IsoDate {
    let days = (us / 86_400_000_000) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    IsoDate::new(year, month, day).unwrap_or_else(|| IsoDate::new(1970, 1, 1).expect("a valid date"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_times_become_utc_days() {
        assert_eq!(day_of_us(0).to_string(), "1970-01-01");
        // 2026-01-01T00:00:00Z and one microsecond before it.
        assert_eq!(day_of_us(1_767_225_600_000_000).to_string(), "2026-01-01");
        assert_eq!(day_of_us(1_767_225_599_999_999).to_string(), "2025-12-31");
        assert_eq!(day_of_us(951_782_400_000_000).to_string(), "2000-02-29");
        for d in [0u64, 1, 59, 60, 365, 10_000, 20_000, 40_000] {
            let date = day_of_us(d * 86_400_000_000);
            assert_eq!(date.days_since_epoch(), d as i64, "{date}");
        }
    }
}
