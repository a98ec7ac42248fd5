//! Operating systems and their end of vendor support, as the risk model needs them.

use serde::{Deserialize, Serialize};

/// One operating system release from `os.toml`: the facts plus where they come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsEntry {
    #[serde(flatten)]
    pub info: OsInfo,
    pub sources: Vec<String>,
}

impl OsEntry {
    pub fn unsupported_on(&self, today: &str) -> bool {
        self.info.unsupported_on(today)
    }
}

/// The OS facts a classification carries along, so consumers need not consult the KB.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    pub id: String,
    pub name: String,
    /// "windows", "linux", "vxworks", "qnx", ...
    pub family: String,
    pub version: Option<String>,
    /// Last day of (extended) vendor support, YYYY-MM-DD; `None` while supported or unknown.
    pub end_of_support: Option<String>,
    /// Embedded/RTOS variant, typical of medical and OT devices.
    pub embedded: bool,
}

impl OsInfo {
    /// Whether support has ended on `today` (YYYY-MM-DD). ISO dates compare as strings,
    /// which keeps this free of a calendar dependency.
    pub fn unsupported_on(&self, today: &str) -> bool {
        self.end_of_support.as_deref().is_some_and(|eos| eos < today)
    }
}
