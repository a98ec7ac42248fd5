//! Aruba ClearPass Policy Manager: one endpoint per member MAC, created through the
//! ClearPass REST API (`POST /api/endpoint`), status `Known`, with the group, site, VLAN
//! and policy stamp as endpoint attributes. Enforcement policies then map the
//! `Wardline Group` attribute to a role or enforcement profile. The attributes must exist
//! in ClearPass's Endpoint dictionary (Administration > Dictionaries > Attributes).

use super::{group_of_mac, Exporter};
use crate::error::ExportError;
use crate::model::ResolvedPolicy;
use crate::names::comment_text;
use serde_json::json;

pub struct ClearPass;

const TARGET: &str = "Aruba ClearPass";

impl Exporter for ClearPass {
    fn name(&self) -> &'static str {
        "clearpass"
    }
    fn file_name(&self) -> &'static str {
        "clearpass-endpoints.json"
    }
    fn render(&self, policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        let p = policy.canonical()?;
        let mut requests = Vec::new();
        for (mac, (g, m)) in group_of_mac(&p, TARGET)? {
            let mut attributes = serde_json::Map::new();
            attributes.insert("Wardline Group".into(), json!(g.name));
            attributes.insert("Wardline Policy".into(), json!(p.name));
            attributes.insert("Wardline Policy Version".into(), json!(p.version.to_string()));
            if let Some(site) = &m.site {
                attributes.insert("Wardline Site".into(), json!(site));
            }
            if let Some(vlan) = m.vlan {
                attributes.insert("Wardline VLAN".into(), json!(vlan.to_string()));
            }
            requests.push(json!({
                "method": "POST",
                "path": "/api/endpoint",
                "body": {
                    // ClearPass stores MACs as 12 lower-case hex digits.
                    "mac_address": mac.to_string().replace(':', ""),
                    "status": "Known",
                    "description": comment_text(&format!("{} - group {}", p.stamp_plain(), g.name), 200),
                    "attributes": attributes,
                },
            }));
        }
        let doc = json!({
            "wardline": { "policy": p.name, "version": p.version, "target": "clearpass" },
            "requests": requests,
        });
        let mut out = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
        out.push('\n');
        Ok(out.into_bytes())
    }
}
