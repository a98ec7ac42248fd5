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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ClusterState, Command};

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_ms: 1_700_000_000_000 + i,
            node_id: 1,
            who: format!("op-{i}"),
            role: Some(Role::Admin),
            credential: Credential::token("0123456789abcdef"),
            method: "POST".into(),
            path: "/api/v1/tokens".into(),
            status: 201,
            outcome: "ok".into(),
            detail: "é".repeat(MAX_FIELD_CHARS + 10),
            peer: "127.0.0.1:5000".into(),
        }
    }

    #[test]
    fn a_change_and_its_entry_apply_together_with_the_outcome_of_the_change() {
        let mut state = ClusterState::new();
        let token = crate::state::tokens::TokenRecord {
            id: "a1".into(),
            name: "grafana".into(),
            role: Role::Viewer,
            secret_sha256: [7; 32],
            created_at_ms: 1,
            created_by: "op-1".into(),
        };
        let audited =
            |e: AuditEntry| Command::Audited { entry: e, command: Box::new(Command::CreateToken(token.clone())) };
        assert!(state.apply(&audited(entry(1))).applied);
        assert_eq!(state.tokens().iter().count(), 1);
        // The same name again: the change is refused, the attempt is still on record.
        assert!(!state.apply(&audited(entry(2))).applied);
        let newest: Vec<(u16, String, String)> =
            state.audit().newest(2).map(|e| (e.status, e.outcome.clone(), e.who.clone())).collect();
        assert_eq!(
            newest,
            [(409, "not applied".to_string(), "op-2".to_string()), (201, "ok".to_string(), "op-1".to_string())]
        );
    }

    #[test]
    fn bounded_with_dropped_count_and_newest_first() {
        let mut state = ClusterState::new();
        let extra = 7;
        for i in 1..=(MAX_AUDIT_ENTRIES as u64 + extra) {
            assert!(state.apply(&Command::Audit(entry(i))).applied);
        }
        let log = state.audit();
        assert_eq!(log.kept(), MAX_AUDIT_ENTRIES);
        assert_eq!(log.dropped(), extra);
        assert_eq!(log.recorded(), MAX_AUDIT_ENTRIES as u64 + extra);
        let newest: Vec<u64> = log.newest(3).map(|e| e.seq).collect();
        let last = MAX_AUDIT_ENTRIES as u64 + extra;
        assert_eq!(newest, [last, last - 1, last - 2]);
        assert_eq!(log.newest(usize::MAX).last().unwrap().seq, extra + 1, "the oldest kept follows the dropped ones");
        let e = log.newest(1).next().unwrap();
        assert_eq!(e.who, format!("op-{last}"));
        assert_eq!(e.detail.chars().count(), MAX_FIELD_CHARS, "long fields are cut on a char boundary");

        // The log survives a snapshot round trip.
        let bytes = bincode::serde::encode_to_vec(&state, bincode::config::standard()).unwrap();
        let (back, _): (ClusterState, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back.audit(), state.audit());
    }
}
