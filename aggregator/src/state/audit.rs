//! The append-only audit log in the replicated state: who did what, when, from where, and
//! how it ended. Entries come from `Command::Audit`, stamped by the proposing node, so
//! every node holds the same log. Memory is bounded: the newest [`MAX_AUDIT_ENTRIES`] are
//! kept and older ones are counted in `dropped` (shown by `GET /api/v1/audit`), never
//! silently lost.

use crate::auth::{Credential, Role};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Entries kept in the replicated state.
pub const MAX_AUDIT_ENTRIES: usize = 10_000;
/// Longest text kept per field (paths, details); longer text is cut at a char boundary.
pub const MAX_FIELD_CHARS: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log since the cluster began (assigned on apply; 0 in a proposal).
    pub seq: u64,
    /// Proposing node's clock, ms since the epoch.
    pub at_ms: u64,
    /// Node that served the request.
    pub node_id: u64,
    /// Operator name (or what the refused credential named, e.g. `sensor ward-a-1@ward-a`).
    pub who: String,
    pub role: Option<Role>,
    pub credential: Credential,
    pub method: String,
    pub path: String,
    /// HTTP status answered.
    pub status: u16,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// What changed or why it was refused.
    pub detail: String,
    /// Client address as seen by the node.
    pub peer: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditLog {
    entries: VecDeque<AuditEntry>,
    /// Entries ever appended (the next entry's seq is this + 1).
    recorded: u64,
    /// Oldest entries pushed out by the bound.
    dropped: u64,
}

fn cut(text: &mut String) {
    if let Some((i, _)) = text.char_indices().nth(MAX_FIELD_CHARS) {
        text.truncate(i);
    }
}

impl AuditLog {
    pub fn append(&mut self, entry: &AuditEntry) {
        let mut e = entry.clone();
        self.recorded += 1;
        e.seq = self.recorded;
        for field in [&mut e.who, &mut e.method, &mut e.path, &mut e.outcome, &mut e.detail, &mut e.peer] {
            cut(field);
        }
        self.entries.push_back(e);
        while self.entries.len() > MAX_AUDIT_ENTRIES {
            self.entries.pop_front();
            self.dropped += 1;
        }
    }

    /// The newest `limit` entries, newest first.
    pub fn newest(&self, limit: usize) -> impl Iterator<Item = &AuditEntry> {
        self.entries.iter().rev().take(limit)
    }

    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn kept(&self) -> usize {
        self.entries.len()
    }
}
