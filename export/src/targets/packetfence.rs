//! PacketFence: each group is a role (node category) and each member MAC a node assigned
//! to it, through the PacketFence v1 API. The main output lists the calls in order:
//! `POST /api/v1/nodes` creating each node with its role (answered 409 when the node
//! exists), then per role `POST /api/v1/nodes/bulk_apply_role` moving existing nodes into
//! it (it reevaluates their access). Roles are referenced by id, which PacketFence assigns:
//! `category_id` carries the placeholder `{{node_category:<role>}}`, resolved with
//! `GET /api/v1/node_categories`. The roles themselves are created once in the admin GUI
//! (Configuration > Policies and Access Control > Roles) with the names listed here.

use super::{group_of_mac, Exporter};
use crate::error::ExportError;
use crate::model::ResolvedPolicy;
use crate::names::{comment_text, word_or_dash, NameRule, NameTable};
use serde_json::json;
use std::collections::BTreeMap;

pub struct PacketFence;

const TARGET: &str = "PacketFence";
const ROLES: NameRule =
    NameRule { target: TARGET, max_len: 64, allowed: word_or_dash, replacement: '_', prefix: "WL_" };

impl Exporter for PacketFence {
    fn name(&self) -> &'static str {
        "packetfence"
    }
    fn file_name(&self) -> &'static str {
        "packetfence-roles.json"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        let p = policy.canonical()?;
        let mut names = NameTable::new(ROLES);
        let mut roles = Vec::new();
        for g in &p.groups {
            roles.push(names.name(&g.name)?);
        }
        let mut requests = Vec::new();
        let mut by_role: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (mac, (g, _)) in group_of_mac(&p, TARGET)? {
            let role = names.name(&g.name)?;
            requests.push(json!({
                "method": "POST",
                "path": "/api/v1/nodes",
                "body": {
                    "mac": mac.to_string(),
                    "pid": "default",
                    "status": "reg",
                    "category_id": placeholder(&role),
                    "notes": comment_text(&format!("{} - group {}", p.stamp_plain(), g.name), 200),
                },
            }));
            by_role.entry(role).or_default().push(mac.to_string());
        }
        for (role, macs) in by_role {
            requests.push(json!({
                "method": "POST",
                "path": "/api/v1/nodes/bulk_apply_role",
                "body": { "items": macs, "category_id": placeholder(&role) },
            }));
        }
        let doc = json!({
            "wardline": { "policy": p.name, "version": p.version, "target": "packetfence" },
            "roles": roles,
            "requests": requests,
        });
        let mut out = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        out.push('\n');
        Ok(out.into_bytes())
    }
}

fn placeholder(role: &str) -> String {
    format!("{{{{node_category:{role}}}}}")
}
