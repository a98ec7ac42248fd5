//! `wardline-aggregator policy ...`: show, list, diff, validate, apply and roll back the
//! segmentation policy through a running node's API (decision 0025). Every command prints
//! text or, with `--json`, the API's JSON.

use super::{cell, client, get_json, post_json, print_json, ApiError, ApiTarget, READ_TIMEOUT};
use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Show the active version: text, groups with members, monitor-mode hits.
    Show {
        #[command(flatten)]
        target: ApiTarget,
        /// Show this version instead of the active one.
        #[arg(long)]
        version: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// List the stored versions, newest first.
    Versions {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
    /// The changes between two versions (default: the active one and its predecessor).
    Diff {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Check a policy file against the active version and the inventory (analyst).
    Validate {
        #[command(flatten)]
        target: ApiTarget,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make a policy file the active version (admin).
    Apply {
        #[command(flatten)]
        target: ApiTarget,
        file: PathBuf,
        /// Why (kept with the version and in the audit log).
        #[arg(long, short)]
        message: String,
        #[arg(long)]
        json: bool,
    },
    /// Make an earlier version's text active again, as a new version (admin).
    Rollback {
        #[command(flatten)]
        target: ApiTarget,
        to: u64,
        #[arg(long, short)]
        message: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn read_file(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read the policy file {}", path.display()))
}

fn print_validation(v: &Value, file: &str) {
    for e in v["errors"].as_array().into_iter().flatten() {
        println!("{file}:{}: error: {}", cell(&e["line"]), cell(&e["message"]));
    }
    for e in v["warnings"].as_array().into_iter().flatten() {
        println!("{file}:{}: warning: {}", cell(&e["line"]), cell(&e["message"]));
    }
    for f in v["safety"]["findings"].as_array().into_iter().flatten() {
        println!("safety: {}", cell(f));
    }
    for c in v["changes"].as_array().into_iter().flatten() {
        println!("{}", cell(c));
    }
    for g in v["groups"].as_array().into_iter().flatten() {
        println!("group {}: {} member(s)", cell(&g["group"]), cell(&g["members"]));
    }
}

fn print_version(v: &Value) {
    println!(
        "policy version {} by {} at {} ms: {}",
        cell(&v["version"]),
        cell(&v["author"]),
        cell(&v["at_ms"]),
        cell(&v["message"])
    );
    if let Some(groups) = v["groups"].as_array() {
        for g in groups {
            let members = g["members"].as_array().map_or(0, |m| m.len());
            println!(
                "  group {}: {members} member(s), flows from {} to {}",
                cell(&g["group"]),
                cell(&g["flows_from"]),
                cell(&g["flows_to"])
            );
        }
        let h = &v["hits"];
        println!(
            "  monitor mode: {} flows, {} allowed, {} denied ({} violations), {} monitored",
            cell(&h["flows"]),
            cell(&h["allowed"]),
            cell(&h["denied"]),
            cell(&h["violations"]),
            cell(&h["monitored"])
        );
        for r in h["rules"].as_array().into_iter().flatten() {
            println!("  rule {:?}: {} hit(s)", cell(&r["name"]), cell(&r["hits"]));
        }
    }
    println!("\n{}", cell(&v["text"]));
}

pub async fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Show { target, version, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let path = match version {
                Some(n) => format!("/api/v1/policy/versions/{n}"),
                None => "/api/v1/policy".to_string(),
            };
            let v = get_json(&c, &target.api, &path).await?;
            if json {
                return print_json(&v);
            }
            print_version(&v);
        }
        PolicyCmd::Versions { target, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = get_json(&c, &target.api, "/api/v1/policy/versions").await?;
            if json {
                return print_json(&v);
            }
            println!(
                "active version: {} ({} kept, {} dropped)",
                cell(&v["active"]),
                cell(&v["kept"]),
                cell(&v["dropped"])
            );
            for x in v["versions"].as_array().into_iter().flatten() {
                println!(
                    "{:>5}  {:<16}  {:>14}  {}",
                    cell(&x["version"]),
                    cell(&x["author"]),
                    cell(&x["at_ms"]),
                    cell(&x["message"])
                );
            }
        }
        PolicyCmd::Diff { target, from, to, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let mut q: Vec<String> = Vec::new();
            q.extend(from.map(|n| format!("from={n}")));
            q.extend(to.map(|n| format!("to={n}")));
            let path = if q.is_empty() {
                "/api/v1/policy/diff".into()
            } else {
                format!("/api/v1/policy/diff?{}", q.join("&"))
            };
            let v = get_json(&c, &target.api, &path).await?;
            if json {
                return print_json(&v);
            }
            println!("from version {} to version {}:", cell(&v["from"]), cell(&v["to"]));
            for c in v["changes"].as_array().into_iter().flatten() {
                println!("{}", cell(c));
            }
        }
        PolicyCmd::Validate { target, file, json } => {
            let text = read_file(&file)?;
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = post_json(&c, &target.api, "/api/v1/policy/validate", &json!({ "text": text })).await?;
            if json {
                print_json(&v)?;
            } else {
                print_validation(&v, &file.display().to_string());
            }
            if v["valid"] != Value::Bool(true) {
                anyhow::bail!("{} cannot be applied as it stands", file.display());
            }
            if !json {
                println!("{} is valid", file.display());
            }
        }
        PolicyCmd::Apply { target, file, message, json } => {
            let text = read_file(&file)?;
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = post_json(&c, &target.api, "/api/v1/policy/apply", &json!({ "text": text, "message": message }))
                .await
                .inspect_err(|e| {
                    if let Some(api) = e.downcast_ref::<ApiError>() {
                        if !json {
                            print_validation(&api.body["validation"], &file.display().to_string());
                        }
                    }
                })?;
            if json {
                return print_json(&v);
            }
            println!("{} is active as version {}", file.display(), cell(&v["version"]));
        }
        PolicyCmd::Rollback { target, to, message, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let mut body = json!({ "to": to });
            if let Some(m) = message {
                body["message"] = json!(m);
            }
            let v = post_json(&c, &target.api, "/api/v1/policy/rollback", &body).await?;
            if json {
                return print_json(&v);
            }
            println!("version {to} is active again as version {}", cell(&v["version"]));
        }
    }
    Ok(())
}
