//! Turning operator-supplied feed files into replicated import parts.
//!
//! The CLI reads the files and sends their text; the receiving node parses every one with
//! the same parsers the index uses, so a file that cannot be used is reported (file, JSON
//! pointer, message) and left out, and only files that parse enter the Raft log. Texts are
//! minified and packed into parts of at most [`PART_BUDGET_BYTES`], far below the Raft
//! append limit (`raft::network::MAX_APPEND_BYTES`, 64 MiB), so one import of CISA's whole
//! OT collection is a few entries and no entry nears the limit.

use crate::state::vulnfeeds::{FeedAdvisory, FeedFileError, FeedImport, FeedKev};
use serde::{Deserialize, Serialize};
use wardline_intel::vuln::{parse_advisory, FeedError, KevCatalog};

/// Feed text per proposed part (the KEV catalog, ~1.3 MB, always fits one part).
pub const PART_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// Largest import request body the API accepts; the CLI splits bigger imports.
pub const MAX_REQUEST_BYTES: usize = 48 * 1024 * 1024;

/// One file as the CLI sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileText {
    /// File name (shown in errors and the feed listing).
    pub file: String,
    pub content: String,
}

/// `POST /api/v1/vuln/import` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    #[serde(default)]
    pub advisories: Vec<FileText>,
    #[serde(default)]
    pub kev: Option<FileText>,
    /// Files the client could not read (reported with the rest).
    #[serde(default)]
    pub errors: Vec<FeedFileError>,
}

/// The parts to propose, and what was refused.
pub struct Prepared {
    pub parts: Vec<FeedImport>,
    pub files: u64,
    pub parsed: usize,
    pub errors: Vec<FeedFileError>,
}

fn file_error(e: FeedError) -> FeedFileError {
    FeedFileError { file: e.file, pointer: e.pointer, message: e.message }
}

/// The text minified, when the minified text parses the same way; else as given.
fn minified<T: PartialEq>(text: &str, parse: impl Fn(&[u8]) -> Option<T>, original: &T) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else { return text.to_string() };
    let small = value.to_string();
    if parse(small.as_bytes()).as_ref() == Some(original) {
        small
    } else {
        text.to_string()
    }
}

/// Parse every file of `req` and pack what parsed into parts of one import.
pub fn prepare(req: ImportRequest, import_id: &str, at_ms: u64, by: &str) -> Prepared {
    let files = (req.advisories.len() + usize::from(req.kev.is_some()) + req.errors.len()) as u64;
    let mut errors = req.errors;
    let mut advisories = Vec::new();
    for f in &req.advisories {
        match parse_advisory(f.content.as_bytes(), &f.file) {
            Ok(a) => {
                let json = minified(&f.content, |b| parse_advisory(b, &f.file).ok(), &a);
                advisories.push(FeedAdvisory {
                    id: a.id,
                    revision: a.version,
                    release_date: a.current_release_date,
                    title: a.title,
                    source: f.file.clone(),
                    json,
                });
            }
            Err(e) => errors.push(file_error(e)),
        }
    }
    let kev = req.kev.as_ref().and_then(|f| match KevCatalog::parse(f.content.as_bytes(), &f.file) {
        Ok(c) => Some(FeedKev {
            catalog_version: c.catalog_version.clone(),
            date_released: c.date_released.clone(),
            entries: c.len() as u64,
            source: f.file.clone(),
            json: minified(&f.content, |b| KevCatalog::parse(b, &f.file).ok(), &c),
        }),
        Err(e) => {
            errors.push(file_error(e));
            None
        }
    });
    let parsed = advisories.len() + usize::from(kev.is_some());

    // Pack: the KEV catalog and the first advisories in part 1, then by budget.
    let mut groups: Vec<Vec<FeedAdvisory>> = vec![Vec::new()];
    let mut used = kev.as_ref().map_or(0, |k| k.json.len());
    for a in advisories {
        let len = a.json.len();
        if used + len > PART_BUDGET_BYTES && !groups.last().is_some_and(Vec::is_empty) {
            groups.push(Vec::new());
            used = 0;
        }
        used += len;
        groups.last_mut().expect("one group at least").push(a);
    }
    let count = groups.len() as u32;
    let mut kev = kev;
    let mut first_errors = errors.clone();
    let parts = groups
        .into_iter()
        .enumerate()
        .map(|(i, advisories)| FeedImport {
            import_id: import_id.to_string(),
            part: i as u32 + 1,
            parts: count,
            at_ms,
            by: by.to_string(),
            files,
            advisories,
            kev: kev.take(),
            errors: std::mem::take(&mut first_errors),
        })
        .collect();
    Prepared { parts, files, parsed, errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADV: &str = r#"{
      "document": {"title": "T", "tracking": {"id": "ICSMA-99-001-01", "version": "2",
                   "current_release_date": "2024-01-02T00:00:00Z"}},
      "vulnerabilities": [{"cve": "CVE-2024-0001",
         "scores": [{"products": ["P1"], "cvss_v3": {"version": "3.1", "vectorString": "CVSS:3.1/AV:N",
            "baseScore": 9.8}}]}]
    }"#;

    #[test]
    fn parsed_files_are_minified_into_parts_and_bad_ones_reported_by_field() {
        let bad = ADV.replace("\"baseScore\": 9.8", "\"baseScore\": \"high\"");
        let req = ImportRequest {
            advisories: vec![
                FileText { file: "good.json".into(), content: ADV.into() },
                FileText { file: "bad.json".into(), content: bad },
            ],
            kev: Some(FileText { file: "kev.json".into(), content: r#"{"vulnerabilities": []}"#.into() }),
            errors: vec![],
        };
        let p = prepare(req, "01J", 5, "op");
        assert_eq!((p.files, p.parsed, p.parts.len()), (3, 2, 1));
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].file, "bad.json");
        assert_eq!(p.errors[0].pointer, "/vulnerabilities/0/scores/0/cvss_v3/baseScore");
        let part = &p.parts[0];
        assert_eq!(part.advisories[0].id, "ICSMA-99-001-01");
        assert!(part.advisories[0].json.len() < ADV.len() && !part.advisories[0].json.contains('\n'));
        assert_eq!(part.kev.as_ref().unwrap().entries, 0);
        assert_eq!(part.errors, p.errors);
    }

    proptest::proptest! {
        /// Arbitrary file texts (and damaged copies of a real-shaped advisory) never panic,
        /// and every file is either imported or reported.
        #[test]
        fn every_file_is_imported_or_reported(
            texts in proptest::collection::vec(".{0,200}", 0..6),
            cut in 0usize..400,
        ) {
            let mut advisories: Vec<FileText> =
                texts.iter().enumerate().map(|(i, t)| FileText { file: format!("f{i}.json"), content: t.clone() }).collect();
            let cut = cut.min(ADV.len());
            advisories.push(FileText { file: "cut.json".into(), content: ADV[..cut].to_string() });
            let n = advisories.len();
            let p = prepare(ImportRequest { advisories, kev: None, errors: vec![] }, "01J", 1, "op");
            let imported: usize = p.parts.iter().map(|x| x.advisories.len()).sum();
            proptest::prop_assert_eq!(imported + p.errors.len(), n);
            proptest::prop_assert_eq!(imported, p.parsed);
            for e in &p.errors {
                proptest::prop_assert!(e.file.ends_with(".json"));
            }
        }
    }

    #[test]
    fn big_imports_are_split_into_parts_under_the_budget() {
        // Three texts fit one part: seven make three parts (3, 3, 1).
        let filler = "x".repeat(PART_BUDGET_BYTES / 3 - 1000);
        let text = ADV.replace("\"title\": \"T\"", &format!("\"title\": \"{filler}\""));
        let req = ImportRequest {
            advisories: (0..7)
                .map(|i| FileText {
                    file: format!("a{i}.json"),
                    content: text.replace("ICSMA-99-001-01", &format!("ICSMA-99-001-0{i}")),
                })
                .collect(),
            ..Default::default()
        };
        let p = prepare(req, "01J", 5, "op");
        assert_eq!(p.parts.len(), 3);
        for (i, part) in p.parts.iter().enumerate() {
            assert_eq!((part.part, part.parts), (i as u32 + 1, 3));
            assert!(part.advisories.iter().map(|a| a.json.len()).sum::<usize>() <= PART_BUDGET_BYTES);
        }
        assert_eq!(p.parts.iter().map(|x| x.advisories.len()).sum::<usize>(), 7);
    }
}
