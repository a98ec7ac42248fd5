//! Object names under each target's rules: allowed characters, length limits, and a check
//! that two policy names never collapse into one target name.

use crate::error::ExportError;
use std::collections::BTreeMap;

/// A target's naming rule.
#[derive(Debug, Clone, Copy)]
pub struct NameRule {
    pub target: &'static str,
    pub max_len: usize,
    pub allowed: fn(char) -> bool,
    /// Replaces every character `allowed` rejects.
    pub replacement: char,
    /// Put in front of every name (also keeps names from starting with a digit).
    pub prefix: &'static str,
}

impl NameRule {
    /// `prefix + name`, with rejected characters replaced; names over the limit are cut and
    /// end in 8 hex digits of a hash of the full name, so they stay distinct and reproducible.
    pub fn apply(&self, name: &str) -> String {
        let body: String = name.chars().map(|c| if (self.allowed)(c) { c } else { self.replacement }).collect();
        let full = format!("{}{}", self.prefix, body);
        if full.chars().count() <= self.max_len {
            return full;
        }
        let tag = format!("{}{:08x}", self.replacement, fnv1a(name.as_bytes()) as u32);
        let keep = self.max_len.saturating_sub(tag.chars().count());
        let mut cut: String = full.chars().take(keep).collect();
        cut.push_str(&tag);
        cut
    }
}

/// Names handed out for one output; a second policy name mapping to a taken name is an error.
pub struct NameTable {
    rule: NameRule,
    by_target: BTreeMap<String, String>,
}

impl NameTable {
    pub fn new(rule: NameRule) -> NameTable {
        NameTable { rule, by_target: BTreeMap::new() }
    }

    pub fn name(&mut self, policy_name: &str) -> Result<String, ExportError> {
        let name = self.rule.apply(policy_name);
        match self.by_target.get(&name) {
            Some(first) if first != policy_name => Err(ExportError::NameClash {
                target: self.rule.target,
                first: first.clone(),
                second: policy_name.to_string(),
                name,
            }),
            Some(_) => Ok(name),
            None => {
                self.by_target.insert(name.clone(), policy_name.to_string());
                Ok(name)
            }
        }
    }
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `[A-Za-z0-9_]`.
pub fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `[A-Za-z0-9_-]`.
pub fn word_or_dash(c: char) -> bool {
    word_char(c) || c == '-'
}

/// Text inside a double-quoted comment: printable ASCII without quotes or backslashes.
pub fn comment_text(s: &str, max_len: usize) -> String {
    let clean: String =
        s.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    clean.chars().take(max_len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: NameRule =
        NameRule { target: "test", max_len: 12, allowed: word_char, replacement: '_', prefix: "wl_" };

    #[test]
    fn names_are_cleaned_cut_and_kept_apart() {
        assert_eq!(RULE.apply("ICU pumps"), "wl_ICU_pumps");
        let long = RULE.apply("radiology modalities");
        assert_eq!(long.len(), 12);
        assert_ne!(long, RULE.apply("radiology modalities 2"));
        let mut t = NameTable::new(RULE);
        assert_eq!(t.name("a b").unwrap(), "wl_a_b");
        assert_eq!(t.name("a b").unwrap(), "wl_a_b");
        assert!(matches!(t.name("a-b"), Err(ExportError::NameClash { .. })));
    }
}
