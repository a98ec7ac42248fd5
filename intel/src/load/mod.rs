//! Reading knowledge-base files into the [model](crate::model): the embedded defaults, then
//! a site's own directories (`--kb-dir`).
//!
//! Every file has the same shape (any of `[[vendor]]`, `[[class]]`, `[[os]]`, `[[profile]]`,
//! `[[rule]]`, `[[comm]]`, `[[override]]`), so a site can add or replace any kind of entry
//! by id in any file. Entries later in the load order replace earlier ones with the same id
//! wholesale; a `[[remove]]` entry deletes one. Unknown keys are errors, because a misspelt
//! `wieght` silently ignored would change classifications without anyone noticing.
//!
//! `schema` is the file format; `merge` turns parsed files into one knowledge base.

mod merge;
mod risk;
mod schema;

use crate::model::KnowledgeBase;
use merge::Merger;
use std::path::{Path, PathBuf};

/// The knowledge files compiled into every binary, in load order.
const BUILTIN: &[(&str, &str)] = &[
    ("classes.toml", include_str!("../../kb/classes.toml")),
    ("vendors.toml", include_str!("../../kb/vendors.toml")),
    ("os.toml", include_str!("../../kb/os.toml")),
    ("rules.toml", include_str!("../../kb/rules.toml")),
    ("comms.toml", include_str!("../../kb/comms.toml")),
    ("profiles-medical.toml", include_str!("../../kb/profiles-medical.toml")),
    ("profiles-imaging.toml", include_str!("../../kb/profiles-imaging.toml")),
    ("profiles-infrastructure.toml", include_str!("../../kb/profiles-infrastructure.toml")),
    ("risk.toml", include_str!("../../kb/risk.toml")),
];

/// A knowledge-base file that cannot be used, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("knowledge base file {file}, line {line}, key `{key}`: {message}")]
pub struct KbError {
    pub file: String,
    /// 1-based; 0 when the problem is the file as a whole (unreadable, missing directory).
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl KnowledgeBase {
    /// Only the knowledge compiled into the binary.
    pub fn builtin() -> Result<KnowledgeBase, KbError> {
        Self::load(&[])
    }

    /// The builtin knowledge, parsed once per process and shared (the builtin files are
    /// tested, so the error case means a broken build).
    pub fn shared_builtin() -> Result<&'static KnowledgeBase, &'static KbError> {
        static SHARED: std::sync::OnceLock<Result<KnowledgeBase, KbError>> = std::sync::OnceLock::new();
        SHARED.get_or_init(Self::builtin).as_ref()
    }

    /// The builtin knowledge, then every `*.toml` file of each directory (sorted by name),
    /// later entries replacing earlier ones with the same id.
    pub fn load(extra_dirs: &[PathBuf]) -> Result<KnowledgeBase, KbError> {
        let mut sources: Vec<(String, String)> =
            BUILTIN.iter().map(|(n, t)| (format!("builtin:{n}"), t.to_string())).collect();
        for dir in extra_dirs {
            sources.extend(read_dir_sources(dir)?);
        }
        let refs: Vec<(&str, &str)> = sources.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        Self::from_sources(&refs)
    }

    /// Build from named texts in order (what [`load`](Self::load) does after reading files).
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<KnowledgeBase, KbError> {
        let mut merger = Merger::default();
        for (name, text) in sources {
            merger.merge_file(name, text)?;
        }
        merger.finish()
    }
}

fn read_dir_sources(dir: &Path) -> Result<Vec<(String, String)>, KbError> {
    let whole = |message: String| KbError { file: dir.display().to_string(), line: 0, key: String::new(), message };
    let entries = std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read knowledge-base directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| KbError {
            file: p.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e} (knowledge-base files must be UTF-8 TOML)"),
        })?;
        out.push((p.display().to_string(), text));
    }
    Ok(out)
}
