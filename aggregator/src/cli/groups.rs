//! `wardline-aggregator groups list|show NAME|history NAME [--json]`: the active policy's
//! groups, their members with why, and who joined and left when (decision 0031).

use super::{cell, client, get_json, print_json, ApiTarget, READ_TIMEOUT};
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

#[derive(Subcommand, Debug)]
pub enum GroupsCmd {
    /// Every group of the active policy: rule, static members, exclusions, member count.
    List {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
    /// One group's members and why each is one, and the devices its exclusions keep out.
    Show {
        #[command(flatten)]
        target: ApiTarget,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Joins and leaves of one group, newest first.
    History {
        #[command(flatten)]
        target: ApiTarget,
        name: String,
        /// List at most this many (the API lists at most 1,000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// A path segment with everything but unreserved characters percent-encoded (group names
/// have spaces: "vulnerable infusion pumps").
pub fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn list_of(v: &Value) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(cell).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

pub async fn run(cmd: GroupsCmd) -> Result<()> {
    match cmd {
        GroupsCmd::List { target, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = get_json(&c, &target.api, "/api/v1/groups").await?;
            if json {
                return print_json(&v);
            }
            println!(
                "policy version: {}   history: {} entries kept, {} dropped",
                cell(&v["version"]),
                cell(&v["history_kept"]),
                cell(&v["history_dropped"])
            );
            println!("{:<28} {:>7}  {:<40} {:<18} EXCLUDED", "GROUP", "MEMBERS", "RULE", "STATIC");
            for g in v["groups"].as_array().into_iter().flatten() {
                println!(
                    "{:<28} {:>7}  {:<40} {:<18} {}",
                    cell(&g["name"]),
                    cell(&g["members"]),
                    cell(&g["rule"]),
                    list_of(&g["static_members"]),
                    list_of(&g["excluded"])
                );
            }
        }
        GroupsCmd::Show { target, name, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = get_json(&c, &target.api, &format!("/api/v1/groups/{}", path_segment(&name))).await?;
            if json {
                return print_json(&v);
            }
            let g = &v["group"];
            println!(
                "group {} (policy version {}): {} members",
                cell(&g["name"]),
                cell(&v["version"]),
                cell(&g["members"])
            );
            println!("rule: {}   exclude rule: {}", cell(&g["rule"]), cell(&g["exclude_rule"]));
            println!(
                "{:<18} {:<8} {:<22} {:<17} {:>6} {:>5}  IPS",
                "MAC", "WHY", "CLASS", "CRITICALITY", "RISK", "VULNS"
            );
            for m in v["members"].as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:<8} {:<22} {:<17} {:>6} {:>5}  {}",
                    cell(&m["mac"]),
                    cell(&m["why"]),
                    cell(&m["class"]),
                    cell(&m["criticality"]),
                    m["risk"].as_f64().map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into()),
                    cell(&m["vulns"]),
                    list_of(&m["ips"])
                );
            }
            for k in v["kept_out"].as_array().into_iter().flatten() {
                println!("kept out: {} ({})", cell(&k["mac"]), cell(&k["why"]));
            }
        }
        GroupsCmd::History { target, name, limit, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let path = format!("/api/v1/groups/{}/history?limit={limit}", path_segment(&name));
            let v = get_json(&c, &target.api, &path).await?;
            if json {
                return print_json(&v);
            }
            println!(
                "group {}: {} entries kept ({} dropped across all groups)",
                cell(&v["group"]),
                cell(&v["kept"]),
                cell(&v["dropped"])
            );
            println!("{:>6} {:<24} {:>7} {:<18} {:<7} {:<18} RULE", "SEQ", "WHEN", "VERSION", "MAC", "CHANGE", "WHY");
            for e in v["entries"].as_array().into_iter().flatten() {
                let when = e["at_ms"].as_u64().map(crate::siem::syslog::rfc3339_ms).unwrap_or_else(|| "-".into());
                println!(
                    "{:>6} {:<24} {:>7} {:<18} {:<7} {:<18} {}",
                    cell(&e["seq"]),
                    when,
                    cell(&e["version"]),
                    cell(&e["mac"]),
                    cell(&e["change"]),
                    cell(&e["reason"]),
                    cell(&e["rule"])
                );
            }
        }
    }
    Ok(())
}
