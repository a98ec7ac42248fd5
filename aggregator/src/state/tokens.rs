//! API bearer tokens in the replicated state: public id, name, role and SHA-256 of the
//! secret — never the secret itself, so a snapshot, a backup or a Raft log leaks no usable
//! credential. Created and revoked by admins through Raft commands (decision 0015).

use crate::auth::Role;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tokens kept at most; creating one more is refused (revoke unused ones first).
pub const MAX_TOKENS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (16 hex digits), part of the token text.
    pub id: String,
    /// Who or what uses it, unique among live tokens.
    pub name: String,
    pub role: Role,
    /// SHA-256 of the 32-byte secret.
    pub secret_sha256: [u8; 32],
    /// Proposing node's clock, ms since the epoch (inside the command, so every node agrees).
    pub created_at_ms: u64,
    /// The operator who created it.
    pub created_by: String,
}

/// Why a token command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    NameTaken,
    IdTaken,
    Full,
    Unknown,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenStore {
    by_id: BTreeMap<String, TokenRecord>,
}

impl TokenStore {
    pub fn get(&self, id: &str) -> Option<&TokenRecord> {
        self.by_id.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TokenRecord> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether `create(record)` would be refused, and why.
    pub fn check_create(&self, record: &TokenRecord) -> Result<(), TokenRefusal> {
        if self.by_id.contains_key(&record.id) {
            return Err(TokenRefusal::IdTaken);
        }
        if self.by_id.values().any(|t| t.name == record.name) {
            return Err(TokenRefusal::NameTaken);
        }
        if self.by_id.len() >= MAX_TOKENS {
            return Err(TokenRefusal::Full);
        }
        Ok(())
    }

    pub fn create(&mut self, record: &TokenRecord) -> Result<(), TokenRefusal> {
        self.check_create(record)?;
        self.by_id.insert(record.id.clone(), record.clone());
        Ok(())
    }

    /// Revoke by id or by name.
    pub fn revoke(&mut self, id_or_name: &str) -> Result<TokenRecord, TokenRefusal> {
        let id = match self.by_id.get(id_or_name) {
            Some(t) => t.id.clone(),
            None => {
                self.by_id.values().find(|t| t.name == id_or_name).map(|t| t.id.clone()).ok_or(TokenRefusal::Unknown)?
            }
        };
        self.by_id.remove(&id).ok_or(TokenRefusal::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            name: name.into(),
            role: Role::Viewer,
            secret_sha256: [7; 32],
            created_at_ms: 1,
            created_by: "alice".into(),
        }
    }

    #[test]
    fn names_and_ids_are_unique_and_revoke_works_by_either() {
        let mut s = TokenStore::default();
        assert!(s.create(&rec("a1", "grafana")).is_ok());
        assert_eq!(s.create(&rec("a1", "other")), Err(TokenRefusal::IdTaken));
        assert_eq!(s.create(&rec("a2", "grafana")), Err(TokenRefusal::NameTaken));
        assert!(s.create(&rec("a2", "ci")).is_ok());
        assert_eq!(s.revoke("grafana").unwrap().id, "a1");
        assert_eq!(s.revoke("a2").unwrap().name, "ci");
        assert_eq!(s.revoke("a2"), Err(TokenRefusal::Unknown));
        assert!(s.is_empty());
        for i in 0..MAX_TOKENS {
            s.create(&rec(&format!("id{i}"), &format!("n{i}"))).unwrap();
        }
        assert_eq!(s.create(&rec("more", "more")), Err(TokenRefusal::Full));
    }
}
