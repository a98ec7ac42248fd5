//! The named entries of the knowledge base: vendors, device classes, product profiles and
//! operator overrides, each remembering where it was defined.

use super::comms::Comm;
use super::rules::Rule;
use super::{Category, Criticality};
use regex::Regex;
use std::fmt;
use std::sync::Arc;
use wardline_common::MacAddr;

/// Where an entry was defined, for explanations and error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub medical: bool,
    /// Explicit IEEE blocks: hex, upper case, 6 (MA-L), 7 (MA-M) or 9 (MA-S) digits.
    pub ouis: Vec<String>,
    pub org_patterns: Vec<Regex>,
    /// Weight of "the MAC's block belongs to this vendor" as vendor evidence.
    pub oui_weight: f64,
    pub sources: Vec<String>,
    pub origin: Loc,
}

#[derive(Clone, Debug)]
pub struct Class {
    pub id: String,
    pub name: String,
    pub category: Category,
    pub criticality: Criticality,
    pub clinical_function: Option<String>,
    pub comms: Vec<Comm>,
    pub sources: Vec<String>,
    pub origin: Loc,
}

/// A product family (vendor + model), with the rules that recognise it.
#[derive(Clone, Debug)]
pub struct Profile {
    pub id: String,
    pub vendor: String,
    pub model_family: String,
    pub class: String,
    /// The class's when the entry leaves it out.
    pub category: Category,
    /// The class's when the entry leaves it out.
    pub criticality: Criticality,
    pub clinical_function: Option<String>,
    pub os: Option<String>,
    pub rules: Vec<Rule>,
    pub comms: Vec<Comm>,
    pub sources: Vec<String>,
    pub origin: Loc,
}

/// An operator's decision about one device; always wins over evidence.
#[derive(Clone, Debug)]
pub struct Override {
    pub mac: MacAddr,
    pub profile: Option<String>,
    pub class: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub category: Option<Category>,
    pub criticality: Option<Criticality>,
    pub clinical_function: Option<String>,
    pub os: Option<String>,
    pub note: Option<String>,
    pub by: Option<String>,
    pub origin: Loc,
}
