//! Why an export failed, phrased for the operator who has to fix the policy or pick another
//! target.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportError {
    /// The policy itself is inconsistent (unknown group, overlapping segments, …).
    Invalid(String),
    /// The policy is fine but this target cannot express part of it.
    Unsupported { target: &'static str, what: String },
    /// Two different policy names map to the same name on the target after sanitizing.
    NameClash { target: &'static str, first: String, second: String, name: String },
}

impl ExportError {
    pub fn invalid(what: String) -> ExportError {
        ExportError::Invalid(what)
    }
    pub fn unsupported(target: &'static str, what: String) -> ExportError {
        ExportError::Unsupported { target, what }
    }
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExportError::Invalid(what) => write!(f, "policy is invalid: {what}; fix the policy and export again"),
            ExportError::Unsupported { target, what } => {
                write!(f, "{target} cannot express {what}; change the rule or export to a target that can")
            }
            ExportError::NameClash { target, first, second, name } => write!(
                f,
                "{target}: {first:?} and {second:?} both become {name:?} under the target's naming rules; rename one"
            ),
        }
    }
}

impl std::error::Error for ExportError {}
