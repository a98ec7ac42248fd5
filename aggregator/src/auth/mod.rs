//! Operator authentication and authorization of the HTTP API (decision 0015).
//!
//! Two credentials name an operator and a role:
//! - a client certificate from the fleet CA carrying `urn:wardline:operator:<role>:<name>`
//!   (`wardline-aggregator admin issue-operator`; the offline bootstrap path, since it needs
//!   only the CA folder);
//! - a bearer token `wlt_<id>_<secret>` created by an admin through the API; the replicated
//!   state keeps only the SHA-256 of its secret.
//!
//! Which role a request needs is [`required_role`]: one table of declared routes, then a
//! default (GET/HEAD → viewer, anything else → admin) so a route added later is never open
//! by accident. Every refusal and every successful change is audited through Raft
//! ([`crate::state::audit`]).

pub mod admin;
pub mod client;
pub mod layer;
pub mod server;
pub mod token;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// What an operator may do. Ordered: a higher role includes every lower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything except credentials and the audit log.
    Viewer,
    /// Viewer plus triage writes (routes that declare `Analyst`).
    Analyst,
    /// Everything: tokens, audit log, cluster membership.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Analyst, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may use a route that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use viewer, analyst or admin")),
        }
    }
}

/// How a route is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credential needed (liveness probes).
    Open,
    Needs(Role),
}

/// Routes whose role differs from the default. First match wins; `None` as method means
/// any method; a path ending in `/` is a prefix. Add a line here when a route needs
/// something else than GET/HEAD → viewer, other methods → admin (for example an analyst
/// triage write).
pub const DECLARED_ROUTES: &[(Option<Method>, &str, Access)] = &[
    (Some(Method::GET), "/healthz", Access::Open),
    (Some(Method::HEAD), "/healthz", Access::Open),
    // Credentials and the audit trail are an admin's business even to read.
    (None, "/api/v1/tokens", Access::Needs(Role::Admin)),
    (None, "/api/v1/tokens/", Access::Needs(Role::Admin)),
    (None, "/api/v1/audit", Access::Needs(Role::Admin)),
    // A backup holds the whole state, token hashes and audit log included.
    (None, "/api/v1/cluster/backup", Access::Needs(Role::Admin)),
    // Alert triage and suppression rules are analysts' work (decision 0024); the
    // detectors' settings (PUT /api/v1/alerts/settings) stay with admins by default.
    (Some(Method::POST), "/api/v1/alerts/", Access::Needs(Role::Analyst)),
    (Some(Method::DELETE), "/api/v1/alerts/rules/", Access::Needs(Role::Analyst)),
    // Segmentation policy (decision 0025): analysts validate candidates, triage violations
    // and manage drafts; a new active version (apply, rollback, refresh) is an admin's,
    // since its exports configure enforcement on clinical networks.
    // Tagging devices (the `tag` of group conditions) is an analyst's work.
    (Some(Method::PUT), "/api/v1/devices/", Access::Needs(Role::Analyst)),
    (Some(Method::POST), "/api/v1/policy/validate", Access::Needs(Role::Analyst)),
    // Recommendation and replay read the flow history and change nothing but the draft
    // area (decision 0030).
    (Some(Method::POST), "/api/v1/policy/recommend", Access::Needs(Role::Analyst)),
    (Some(Method::POST), "/api/v1/policy/replay", Access::Needs(Role::Analyst)),
    (Some(Method::POST), "/api/v1/policy/violations/", Access::Needs(Role::Analyst)),
    (Some(Method::DELETE), "/api/v1/policy/drafts/", Access::Needs(Role::Analyst)),
    (Some(Method::POST), "/api/v1/policy/apply", Access::Needs(Role::Admin)),
    (Some(Method::POST), "/api/v1/policy/rollback", Access::Needs(Role::Admin)),
];

/// What `method path` needs: the first [`DECLARED_ROUTES`] match, else the default rule
/// (GET/HEAD read → viewer; every other method changes something → admin).
pub fn required_access(method: &Method, path: &str) -> Access {
    for (m, route, access) in DECLARED_ROUTES {
        if m.as_ref().is_some_and(|m| m != method) {
            continue;
        }
        let hit = match route.strip_suffix('/') {
            Some(prefix) => path.starts_with(route) && path.len() > prefix.len() + 1,
            None => path == *route,
        };
        if hit {
            return *access;
        }
    }
    if method == Method::GET || method == Method::HEAD {
        Access::Needs(Role::Viewer)
    } else {
        Access::Needs(Role::Admin)
    }
}

/// Which kind of credential proved an operator's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    Token,
    Certificate,
}

/// The credential of a request, as audited. (A plain struct, not a tagged enum: the
/// replicated state is bincode, which cannot decode internally tagged enums.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub kind: CredentialKind,
    /// Token id, or certificate serial number (hex).
    pub id: String,
}

impl Credential {
    pub fn token(id: impl Into<String>) -> Self {
        Credential { kind: CredentialKind::Token, id: id.into() }
    }

    pub fn certificate(serial: impl Into<String>) -> Self {
        Credential { kind: CredentialKind::Certificate, id: serial.into() }
    }
}

/// An authenticated operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub credential: Credential,
}

/// Milliseconds since the Unix epoch on this (the proposing) node.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rule_and_declared_routes() {
        let r = |m: Method, p: &str| required_access(&m, p);
        assert_eq!(r(Method::GET, "/healthz"), Access::Open);
        assert_eq!(r(Method::POST, "/healthz"), Access::Needs(Role::Admin));
        assert_eq!(r(Method::GET, "/api/v1/inventory"), Access::Needs(Role::Viewer));
        assert_eq!(r(Method::HEAD, "/api/v1/inventory"), Access::Needs(Role::Viewer));
        assert_eq!(r(Method::POST, "/api/v1/cluster/join"), Access::Needs(Role::Admin));
        assert_eq!(r(Method::PUT, "/api/v1/something-new"), Access::Needs(Role::Admin));
        assert_eq!(r(Method::GET, "/api/v1/tokens"), Access::Needs(Role::Admin));
        assert_eq!(r(Method::DELETE, "/api/v1/tokens/abc"), Access::Needs(Role::Admin));
        assert_eq!(r(Method::GET, "/api/v1/audit"), Access::Needs(Role::Admin));
        // Not a prefix match on a longer word.
        assert_eq!(r(Method::GET, "/api/v1/tokensx"), Access::Needs(Role::Viewer));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Analyst));
        assert!(Role::Analyst.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Analyst));
        assert!(!Role::Analyst.allows(Role::Admin));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }
}
