//! Vulnerability feeds replicated through Raft (decision 0027): the CSAF advisories and the
//! KEV catalog an operator imported, so every node matches devices against the same feeds.
//!
//! The receiving node parses the files (refusing the ones that do not parse, by file and
//! field) and proposes what parsed as [`FeedImport`] parts: each advisory's id, revision
//! and release date (which `apply` uses to keep the newest revision) with its JSON text,
//! minified; the KEV catalog likewise. Nodes compile the stored text into a
//! `wardline_intel::vuln::VulnIndex` at read time, cached per [`VulnFeeds::version`].
//!
//! Keeping the source text (not a parsed structure) means the replicated content is exactly
//! what CISA published, so a later Wardline release re-reads it with its own parser.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use wardline_intel::vuln::Version;

/// Advisories kept at most (all of CISA's OT advisories 2010–2025 are about 4,000).
pub const MAX_ADVISORIES: usize = 50_000;
/// Largest advisory or KEV text accepted, in bytes (the biggest ICSMA file is ~200 KB, the
/// KEV catalog ~1.3 MB).
pub const MAX_FEED_TEXT_BYTES: usize = 16 * 1024 * 1024;
/// Import records kept (newest); older ones are counted in `imports_dropped`.
pub const MAX_IMPORT_RECORDS: usize = 32;
/// File errors kept per import record; further ones are counted.
pub const MAX_ERRORS_PER_IMPORT: usize = 256;

/// One advisory as imported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedAdvisory {
    /// document.tracking.id ("ICSMA-20-317-01").
    pub id: String,
    /// document.tracking.version.
    pub revision: String,
    /// document.tracking.current_release_date.
    pub release_date: String,
    pub title: String,
    /// The file it came from (name only).
    pub source: String,
    /// The CSAF document, minified JSON.
    pub json: String,
}

/// The KEV catalog as imported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedKev {
    pub catalog_version: String,
    pub date_released: String,
    pub entries: u64,
    pub source: String,
    /// The catalog, minified JSON.
    pub json: String,
}

/// A file that could not be imported: which, where in it (JSON pointer), what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFileError {
    pub file: String,
    pub pointer: String,
    pub message: String,
}

/// One part of an import, as proposed (large imports come in several parts so no log entry
/// nears the Raft append limit; each part applies on its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedImport {
    /// The import's id (a ULID made by the receiving node).
    pub import_id: String,
    /// 1-based part number of `parts`.
    pub part: u32,
    pub parts: u32,
    /// When and by whom (proposing node's clock; informational only).
    pub at_ms: u64,
    pub by: String,
    /// Files offered in the whole import (carried by every part).
    pub files: u64,
    pub advisories: Vec<FeedAdvisory>,
    pub kev: Option<FeedKev>,
    /// Files refused by the parser (carried by part 1).
    pub errors: Vec<FeedFileError>,
}

/// What one import did, for `GET /api/v1/vuln/feeds`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub import_id: String,
    pub at_ms: u64,
    pub by: String,
    pub parts: u32,
    pub parts_applied: u32,
    pub files: u64,
    /// Advisories new to the cluster.
    pub added: u64,
    /// Advisories that replaced an older revision.
    pub replaced: u64,
    /// Advisories already held at this or a newer revision.
    pub unchanged: u64,
    /// The KEV catalog was (re)placed by this import.
    pub kev_imported: bool,
    pub errors: Vec<FeedFileError>,
    pub errors_dropped: u64,
}

/// The imported feeds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VulnFeeds {
    /// Grows by one with every applied change of the feed content; nodes cache their
    /// compiled index under it.
    version: u64,
    advisories: BTreeMap<String, FeedAdvisory>,
    kev: Option<FeedKev>,
    imports: VecDeque<ImportRecord>,
    imports_dropped: u64,
}

/// Why an import part was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedRefusal {
    TooLarge(String),
    Full,
    BadPart,
}

impl VulnFeeds {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn advisories(&self) -> &BTreeMap<String, FeedAdvisory> {
        &self.advisories
    }

    pub fn kev(&self) -> Option<&FeedKev> {
        self.kev.as_ref()
    }

    /// Newest first.
    pub fn imports(&self) -> impl Iterator<Item = &ImportRecord> {
        self.imports.iter().rev()
    }

    pub fn imports_dropped(&self) -> u64 {
        self.imports_dropped
    }

    /// Whether `part` would be refused as a whole (checked before proposing, and on apply).
    pub fn check(&self, part: &FeedImport) -> Result<(), FeedRefusal> {
        if part.part == 0 || part.part > part.parts {
            return Err(FeedRefusal::BadPart);
        }
        let too_big = |what: &str, len: usize| {
            (len > MAX_FEED_TEXT_BYTES)
                .then(|| FeedRefusal::TooLarge(format!("{what} is {len} bytes, more than {MAX_FEED_TEXT_BYTES}")))
        };
        for a in &part.advisories {
            if let Some(r) = too_big(&a.source, a.json.len()) {
                return Err(r);
            }
        }
        if let Some(r) = part.kev.as_ref().and_then(|k| too_big(&k.source, k.json.len())) {
            return Err(r);
        }
        let new = part.advisories.iter().filter(|a| !self.advisories.contains_key(&a.id)).count();
        if self.advisories.len() + new > MAX_ADVISORIES {
            return Err(FeedRefusal::Full);
        }
        Ok(())
    }

    /// Apply one part: each advisory replaces an older revision of the same id, a KEV
    /// catalog replaces the held one. Returns false (nothing changed) when refused.
    pub fn apply(&mut self, part: &FeedImport) -> bool {
        if self.check(part).is_err() {
            return false;
        }
        let mut added = 0;
        let mut replaced = 0;
        let mut unchanged = 0;
        for a in &part.advisories {
            match self.advisories.get(&a.id) {
                None => added += 1,
                Some(old) if is_newer(a, old) => replaced += 1,
                Some(_) => {
                    unchanged += 1;
                    continue;
                }
            }
            self.advisories.insert(a.id.clone(), a.clone());
        }
        if let Some(k) = &part.kev {
            self.kev = Some(k.clone());
        }
        if added + replaced > 0 || part.kev.is_some() {
            self.version += 1;
        }
        let record = match self.imports.iter_mut().find(|r| r.import_id == part.import_id) {
            Some(r) => r,
            None => {
                if self.imports.len() == MAX_IMPORT_RECORDS {
                    self.imports.pop_front();
                    self.imports_dropped += 1;
                }
                self.imports.push_back(ImportRecord {
                    import_id: part.import_id.clone(),
                    at_ms: part.at_ms,
                    by: part.by.clone(),
                    parts: part.parts,
                    files: part.files,
                    ..Default::default()
                });
                self.imports.back_mut().expect("just pushed")
            }
        };
        record.parts_applied += 1;
        record.added += added;
        record.replaced += replaced;
        record.unchanged += unchanged;
        record.kev_imported |= part.kev.is_some();
        for e in &part.errors {
            if record.errors.len() < MAX_ERRORS_PER_IMPORT {
                record.errors.push(e.clone());
            } else {
                record.errors_dropped += 1;
            }
        }
        true
    }
}

/// Later release date wins; on the same date, the higher tracking version (the rule of
/// `VulnIndex::build`, so the stored revision is the one the index would keep).
pub fn is_newer(a: &FeedAdvisory, b: &FeedAdvisory) -> bool {
    match a.release_date.cmp(&b.release_date) {
        std::cmp::Ordering::Equal => match (Version::parse(&a.revision), Version::parse(&b.revision)) {
            (Some(x), Some(y)) => x > y,
            _ => a.revision > b.revision,
        },
        o => o == std::cmp::Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(id: &str, rev: &str, date: &str) -> FeedAdvisory {
        FeedAdvisory {
            id: id.into(),
            revision: rev.into(),
            release_date: date.into(),
            title: String::new(),
            source: format!("{id}-{rev}.json"),
            json: format!("{{\"rev\":\"{rev}\"}}"),
        }
    }

    fn part(id: &str, advisories: Vec<FeedAdvisory>) -> FeedImport {
        FeedImport {
            import_id: id.into(),
            part: 1,
            parts: 1,
            at_ms: 1,
            by: "op".into(),
            files: advisories.len() as u64,
            advisories,
            kev: None,
            errors: vec![FeedFileError { file: "bad.json".into(), pointer: "/document".into(), message: "x".into() }],
        }
    }

    #[test]
    fn newer_revisions_replace_older_ones_and_older_ones_change_nothing() {
        let mut f = VulnFeeds::default();
        assert!(f.apply(&part("i1", vec![adv("A", "1", "2020-01-01"), adv("B", "2", "2020-01-01")])));
        assert_eq!(f.version(), 1);
        assert!(f.apply(&part("i2", vec![adv("A", "2", "2021-01-01"), adv("B", "1", "2019-01-01")])));
        assert_eq!(f.advisories()["A"].revision, "2");
        assert_eq!(f.advisories()["B"].revision, "2", "an older file does not replace a newer one");
        assert_eq!(f.version(), 2);
        let r = f.imports().next().unwrap();
        assert_eq!((r.import_id.as_str(), r.added, r.replaced, r.unchanged), ("i2", 0, 1, 1));
        assert_eq!(r.errors[0].file, "bad.json");
        // Re-importing the same files changes nothing but the record.
        assert!(f.apply(&part("i3", vec![adv("A", "2", "2021-01-01")])));
        assert_eq!(f.version(), 2);
    }

    #[test]
    fn an_audited_import_applies_and_survives_a_snapshot() {
        use crate::state::audit::AuditEntry;
        use crate::state::{ClusterState, Command};
        let mut st = ClusterState::new();
        let entry = AuditEntry {
            seq: 0,
            at_ms: 1,
            node_id: 1,
            who: "op".into(),
            role: None,
            credential: crate::auth::Credential::token("t1"),
            method: "POST".into(),
            path: "/api/v1/vuln/import".into(),
            status: 200,
            outcome: String::new(),
            detail: "vulnerability feed import i1 part 1/1".into(),
            peer: "127.0.0.1:1".into(),
        };
        let cmd = Command::Audited {
            entry,
            command: Box::new(Command::ImportVulnFeed(part("i1", vec![adv("A", "1", "2020-01-01")]))),
        };
        assert!(st.apply(&cmd).applied);
        assert_eq!(st.vulnfeeds().advisories().len(), 1);
        assert_eq!(st.audit().newest(1).next().unwrap().outcome, "ok");
        let bytes = crate::raft::codec::encode(&st).unwrap();
        let back: ClusterState = crate::raft::codec::decode(&bytes).unwrap();
        assert_eq!(back.vulnfeeds(), st.vulnfeeds());
        // The command itself round-trips through the log encoding.
        let bytes = crate::raft::codec::encode(&cmd).unwrap();
        assert_eq!(crate::raft::codec::decode::<Command>(&bytes).unwrap(), cmd);
    }

    #[test]
    fn bad_parts_and_oversized_text_are_refused_whole() {
        let mut f = VulnFeeds::default();
        let mut p = part("i1", vec![adv("A", "1", "2020-01-01")]);
        p.part = 2;
        assert!(!f.apply(&p));
        let mut big = adv("B", "1", "2020-01-01");
        big.json = "x".repeat(MAX_FEED_TEXT_BYTES + 1);
        assert!(!f.apply(&part("i2", vec![adv("A", "1", "2020-01-01"), big])));
        assert!(f.advisories().is_empty());
        assert_eq!(f.imports().count(), 0);
    }
}
