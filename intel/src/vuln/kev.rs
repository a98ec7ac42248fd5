//! CISA's Known Exploited Vulnerabilities catalog (known_exploited_vulnerabilities.json):
//! which CVEs attackers are known to use, and what CISA requires be done by when.

use super::FeedError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KevEntry {
    #[serde(rename = "cveID")]
    pub cve_id: String,
    #[serde(rename = "vendorProject", default)]
    pub vendor_project: String,
    #[serde(default)]
    pub product: String,
    #[serde(rename = "vulnerabilityName", default)]
    pub vulnerability_name: String,
    /// YYYY-MM-DD.
    #[serde(rename = "dateAdded", default)]
    pub date_added: String,
    /// YYYY-MM-DD.
    #[serde(rename = "dueDate", default)]
    pub due_date: String,
    /// "Known" or "Unknown".
    #[serde(rename = "knownRansomwareCampaignUse", default)]
    pub known_ransomware_campaign_use: String,
    #[serde(rename = "requiredAction", default)]
    pub required_action: String,
}

impl KevEntry {
    /// Used in ransomware campaigns, as far as CISA knows.
    pub fn ransomware(&self) -> bool {
        self.known_ransomware_campaign_use.eq_ignore_ascii_case("known")
    }
}

#[derive(Deserialize)]
struct KevFile {
    #[serde(rename = "catalogVersion", default)]
    catalog_version: String,
    #[serde(rename = "dateReleased", default)]
    date_released: String,
    vulnerabilities: Vec<KevEntry>,
}

/// The catalog: a set of CVE ids with their details.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KevCatalog {
    pub catalog_version: String,
    pub date_released: String,
    by_cve: HashMap<String, KevEntry>,
}

impl KevCatalog {
    /// Parses the catalog JSON; `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<KevCatalog, FeedError> {
        let f: KevFile = super::from_json(bytes, source)?;
        let by_cve = f.vulnerabilities.into_iter().map(|e| (e.cve_id.trim().to_ascii_uppercase(), e)).collect();
        Ok(KevCatalog { catalog_version: f.catalog_version, date_released: f.date_released, by_cve })
    }

    /// Reads and parses the catalog file.
    pub fn load(path: &Path) -> Result<KevCatalog, FeedError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bytes = std::fs::read(path)
            .map_err(|e| FeedError::file(&path.display().to_string(), format!("cannot read: {e}")))?;
        Self::parse(&bytes, &name)
    }

    /// The entry for a CVE id (case-insensitive), if CISA lists it as exploited.
    pub fn get(&self, cve: &str) -> Option<&KevEntry> {
        self.by_cve.get(&cve.trim().to_ascii_uppercase())
    }

    pub fn contains(&self, cve: &str) -> bool {
        self.get(cve).is_some()
    }

    pub fn len(&self) -> usize {
        self.by_cve.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cve.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_looks_up_case_insensitively() {
        let j = br#"{"catalogVersion": "1", "dateReleased": "d", "count": 1, "vulnerabilities": [
            {"cveID": "CVE-2019-0708", "vendorProject": "Microsoft", "product": "RDS", "dateAdded": "2021-11-03",
             "dueDate": "2022-05-03", "knownRansomwareCampaignUse": "Known", "requiredAction": "Apply updates.",
             "cwes": ["CWE-416"], "newField": true}]}"#;
        let k = KevCatalog::parse(j, "kev.json").unwrap();
        assert_eq!(k.len(), 1);
        let e = k.get("cve-2019-0708").unwrap();
        assert!(e.ransomware());
        assert_eq!(e.due_date, "2022-05-03");
        assert!(!k.contains("CVE-2019-0709"));
    }

    #[test]
    fn entry_without_cve_id_names_its_index() {
        let e = KevCatalog::parse(br#"{"vulnerabilities": [{"cveID": "CVE-1"}, {"product": "x"}]}"#, "kev.json")
            .unwrap_err();
        assert_eq!(e.pointer, "/vulnerabilities/1");
        assert!(e.message.contains("cveID"), "{}", e.message);
    }
}
