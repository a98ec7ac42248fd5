//! `wardline-aggregator policy ...`: show, list, diff, validate, apply and roll back the
//! segmentation policy through a running node's API (decision 0025); recommend, replay,
//! drafts, exports and EDLs, membership refresh and violation triage (decision 0030).
//! Every command prints text or, with `--json`, the API's JSON.

use super::{cell, client, delete_json, get_json, get_text, post_json, print_json, ApiError, ApiTarget, READ_TIMEOUT};
use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Timeout of recommend and replay: both read the whole flow history.
pub const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(600);

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
    /// Propose a least-privilege policy from the stored flows and the knowledge base
    /// (analyst). Prints the policy text with its justifications as comments.
    Recommend {
        #[command(flatten)]
        target: ApiTarget,
        /// `[policy] name` of the proposal (default "recommended").
        #[arg(long)]
        name: Option<String>,
        /// Only flows first seen since: a duration before now (`30d`, `12h`, `90m`, `45s`)
        /// or microseconds since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Only flows first seen before (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Store the proposal in the draft area.
        #[arg(long)]
        save_draft: bool,
        /// Note kept with the draft.
        #[arg(long)]
        note: Option<String>,
        /// Write the policy text to this file (the summary goes to standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// What a candidate would have blocked over the stored flows, by clinical workflow, and
    /// optionally how it differs from a stored version (analyst; needs ClickHouse).
    Replay {
        #[command(flatten)]
        target: ApiTarget,
        #[command(flatten)]
        candidate: Candidate,
        /// Compare with this stored version.
        #[arg(long)]
        against: Option<u64>,
        /// Only flows first seen since (as for `recommend`).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// Workflows listed at most (1 to 1000, default 100).
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// The draft area: list, show, delete.
    #[command(subcommand)]
    Drafts(DraftsCmd),
    /// Render a version for an enforcement target (nftables, iptables, cisco-ios, cisco-ise,
    /// paloalto, fortios, clearpass, packetfence).
    Export {
        #[command(flatten)]
        target: ApiTarget,
        /// The export target.
        #[arg(value_name = "TARGET")]
        format: String,
        /// Export this version instead of the active one.
        #[arg(long)]
        version: Option<u64>,
        /// A companion file of the export (`edl/wl-pumps.txt`) instead of the main one.
        #[arg(long)]
        file: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// `{"target", "version", "file", "text"}` instead of the text.
        #[arg(long)]
        json: bool,
    },
    /// A group's Palo Alto external dynamic list, or without a group the EDL URL of every
    /// group of the active version (for the firewall's EDL objects).
    Edl {
        #[command(flatten)]
        target: ApiTarget,
        group: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Recompute the active version's group membership from the inventory now (admin).
    Refresh {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
    /// Policy violations: list and triage.
    #[command(subcommand)]
    Violations(ViolationsCmd),
}

/// The candidate of a replay: exactly one.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Candidate {
    /// A policy file.
    #[arg(long)]
    file: Option<PathBuf>,
    /// A stored version.
    #[arg(long)]
    version: Option<u64>,
    /// A draft (a whole policy, or a fragment placed before the active version's rules).
    #[arg(long)]
    draft: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum DraftsCmd {
    /// List the drafts.
    List {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
    /// Print one draft's TOML.
    Show {
        #[command(flatten)]
        target: ApiTarget,
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Delete a draft (analyst).
    Delete {
        #[command(flatten)]
        target: ApiTarget,
        id: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ViolationsCmd {
    /// The policy-violation alerts.
    List {
        #[command(flatten)]
        target: ApiTarget,
        /// Only alerts in this state (open, acknowledged, resolved, suppressed).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Triage one violation (analyst): add it to the drafts, investigate it, or ignore it.
    Triage {
        #[command(flatten)]
        target: ApiTarget,
        /// The alert id.
        id: u64,
        action: TriageAction,
        /// Why (required to ignore).
        #[arg(long, alias = "note")]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum TriageAction {
    /// Resolve it and store a draft rule allowing it.
    Add,
    /// Acknowledge it.
    Investigate,
    /// Suppress it (needs --reason).
    Ignore,
}

impl TriageAction {
    fn path(self) -> &'static str {
        match self {
            TriageAction::Add => "add-to-policy",
            TriageAction::Investigate => "investigate",
            TriageAction::Ignore => "ignore",
        }
    }
}

/// `--since` / `--until`: a duration before `now_us` (`30d`, `12h`, `90m`, `45s`) or
/// microseconds since the epoch.
pub fn time_arg(text: &str, now_us: u64) -> Result<u64> {
    let t = text.trim();
    if let Ok(us) = t.parse::<u64>() {
        return Ok(us);
    }
    let unit = t.chars().last().unwrap_or(' ');
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 0,
    };
    let n = t[..t.len() - unit.len_utf8().min(t.len())].parse::<u64>().ok().filter(|_| seconds > 0);
    let n = n.ok_or_else(|| {
        anyhow::anyhow!(
            "{text:?} is not a time: give a duration before now (30d, 12h, 90m, 45s) or microseconds since the epoch"
        )
    })?;
    Ok(now_us.saturating_sub(n.saturating_mul(seconds).saturating_mul(1_000_000)))
}

fn now_us() -> u64 {
    crate::auth::now_ms().saturating_mul(1000)
}

fn window(body: &mut Value, since: Option<String>, until: Option<String>) -> Result<()> {
    let now = now_us();
    if let Some(s) = since {
        body["from_us"] = json!(time_arg(&s, now)?);
    }
    if let Some(u) = until {
        body["to_us"] = json!(time_arg(&u, now)?);
    }
    Ok(())
}

/// Seconds since the epoch as an RFC 3339 time.
fn at(seconds: &Value) -> String {
    match seconds.as_u64() {
        Some(s) => crate::siem::syslog::rfc3339_ms(s.saturating_mul(1000)),
        None => cell(seconds),
    }
}

fn percent(c: &Value) -> String {
    format!(
        "{:.1}% ({} of {} flows)",
        c["share"].as_f64().unwrap_or(1.0) * 100.0,
        cell(&c["count_allowed"]),
        cell(&c["count"])
    )
}

/// The recommendation's summary as TOML comments (so summary and text together still parse).
fn recommendation_summary(v: &Value) -> String {
    let mut out = Vec::new();
    let o = &v["observed"];
    out.push(format!(
        "# recommended from {} conversation(s), {} flow(s), in the {}{}",
        cell(&o["conversations"]),
        cell(&o["flows"]),
        cell(&o["store"]),
        if o["truncated"] == Value::Bool(true) { " (the smallest conversations were left out)" } else { "" }
    ));
    out.push(format!(
        "# coverage: required {}, acceptable {}",
        percent(&v["coverage"]["required"]),
        percent(&v["coverage"]["acceptable"])
    ));
    let val = &v["validation"];
    out.push(format!(
        "# validation: {}",
        if val["valid"] == Value::Bool(true) { "valid".to_string() } else { format!("NOT valid: {}", val["errors"]) }
    ));
    for r in v["rules"].as_array().into_iter().flatten() {
        let j = &r["justification"];
        let entries: Vec<String> = j["kb_entries"].as_array().into_iter().flatten().map(cell).collect();
        out.push(format!(
            "# rule {:?}: {} -> {} {}/{}; knowledge base: {}",
            cell(&r["name"]),
            r["from"].as_array().into_iter().flatten().map(cell).collect::<Vec<_>>().join(", "),
            r["to"].as_array().into_iter().flatten().map(cell).collect::<Vec<_>>().join(", "),
            cell(&r["protocol"]),
            r["ports"]
                .as_array()
                .filter(|p| !p.is_empty())
                .map_or("any".into(), |p| { p.iter().map(cell).collect::<Vec<_>>().join(",") }),
            if entries.is_empty() { "-".into() } else { entries.join(", ") }
        ));
        let observed = j["observed"].as_array().filter(|o| !o.is_empty());
        match observed {
            None => out.push("#   not observed yet: required by the knowledge base".into()),
            Some(obs) => {
                for e in obs {
                    out.push(format!(
                        "#   port {}: {} flow(s) in {} conversation(s), {} to {}",
                        cell(&e["port"]),
                        cell(&e["count"]),
                        cell(&e["aggregates"]),
                        at(&e["first_seen"]),
                        at(&e["last_seen"])
                    ));
                }
            }
        }
    }
    for l in v["left_out"].as_array().into_iter().flatten() {
        out.push(format!(
            "# left out: {} -> {} {}/{}: {} flow(s): {}",
            cell(&l["src"]),
            cell(&l["dst"]),
            cell(&l["transport"]),
            cell(&l["port"]),
            cell(&l["count"]),
            cell(&l["reason"])
        ));
    }
    if let Some(id) = v["draft"].as_u64() {
        out.push(format!("# stored as draft {id}"));
    }
    out.join("\n")
}

fn print_replay(v: &Value) {
    let b = &v["blocked"];
    let listed = b["workflows"].as_array().map_or(0, |w| w.len());
    println!(
        "{} would block {} flow(s) in {} workflow(s){} ({})",
        cell(&v["candidate"]),
        cell(&b["flows"]),
        listed,
        if b["truncated"] == Value::Bool(true) { ", more not listed" } else { "" },
        cell(&v["store"])
    );
    for w in b["workflows"].as_array().into_iter().flatten() {
        let examples: Vec<String> = w["examples"].as_array().into_iter().flatten().map(cell).collect();
        println!("{:>10}  {}  e.g. {}", cell(&w["flows"]), cell(&w["workflow"]), examples.join("; "));
    }
    let c = &v["comparison"];
    if c.is_object() {
        println!(
            "compared with version {}: {} flow(s) blocked only by the candidate, {} only by version {}",
            cell(&c["against"]),
            cell(&c["only_candidate"]),
            cell(&c["only_against"]),
            cell(&c["against"])
        );
        for w in c["workflows"].as_array().into_iter().flatten() {
            println!(
                "{:>10} {:>10}  {}",
                format!("+{}", cell(&w["only_candidate"])),
                format!("-{}", cell(&w["only_against"])),
                cell(&w["workflow"])
            );
        }
    }
}

fn write_out(path: &PathBuf, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
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
        PolicyCmd::Recommend { target, name, since, until, save_draft, note, out, json } => {
            let c = client(&target.auth, ANALYSIS_TIMEOUT)?;
            let mut body = json!({ "save_draft": save_draft });
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(n) = note {
                body["note"] = json!(n);
            }
            window(&mut body, since, until)?;
            let v = post_json(&c, &target.api, "/api/v1/policy/recommend", &body).await?;
            let text = v["text"].as_str().unwrap_or_default().to_string();
            if let Some(path) = &out {
                write_out(path, &text)?;
            }
            if json {
                return print_json(&v);
            }
            println!("{}", recommendation_summary(&v));
            match &out {
                Some(path) => println!("# the policy is in {}", path.display()),
                None => print!("\n{text}"),
            }
        }
        PolicyCmd::Replay { target, candidate, against, since, until, limit, json } => {
            let c = client(&target.auth, ANALYSIS_TIMEOUT)?;
            let mut body = match (candidate.file, candidate.version, candidate.draft) {
                (Some(f), _, _) => json!({ "text": read_file(&f)? }),
                (_, Some(n), _) => json!({ "version": n }),
                (_, _, Some(id)) => json!({ "draft": id }),
                _ => anyhow::bail!("give --file, --version or --draft"),
            };
            if let Some(n) = against {
                body["against"] = json!(n);
            }
            if let Some(n) = limit {
                body["limit"] = json!(n);
            }
            window(&mut body, since, until)?;
            let v = post_json(&c, &target.api, "/api/v1/policy/replay", &body).await?;
            if json {
                return print_json(&v);
            }
            print_replay(&v);
        }
        PolicyCmd::Drafts(cmd) => drafts(cmd).await?,
        PolicyCmd::Export { target, format, version, file, out, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let mut q: Vec<String> = Vec::new();
            q.extend(version.map(|n| format!("version={n}")));
            q.extend(file.as_ref().map(|f| format!("file={}", urlencode(f))));
            let mut path = format!("/api/v1/policy/export/{}", urlencode(&format));
            if !q.is_empty() {
                path = format!("{path}?{}", q.join("&"));
            }
            let text = get_text(&c, &target.api, &path).await?;
            if let Some(p) = &out {
                write_out(p, &text)?;
            }
            if json {
                return print_json(&json!({ "target": format, "version": version, "file": file, "text": text }));
            }
            if out.is_none() {
                print!("{text}");
            }
        }
        PolicyCmd::Edl { target, group, out, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            match group {
                Some(g) => {
                    let text = get_text(&c, &target.api, &format!("/api/v1/policy/edl/{}.txt", urlencode(&g))).await?;
                    if let Some(p) = &out {
                        write_out(p, &text)?;
                    }
                    if json {
                        let addresses: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                        return print_json(&json!({ "group": g, "addresses": addresses, "text": text }));
                    }
                    if out.is_none() {
                        print!("{text}");
                    }
                }
                None => {
                    let v = get_json(&c, &target.api, "/api/v1/policy").await?;
                    let base = target.api.trim_end_matches('/');
                    let urls: Vec<Value> = v["groups"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|g| {
                            let name = cell(&g["group"]);
                            json!({ "group": name, "url": format!("{base}/api/v1/policy/edl/{}.txt", urlencode(&name)) })
                        })
                        .collect();
                    let listing = json!({ "version": v["version"], "edls": urls });
                    if let Some(p) = &out {
                        write_out(p, &serde_json::to_string_pretty(&listing)?)?;
                    }
                    if json {
                        return print_json(&listing);
                    }
                    for u in &urls {
                        println!("{:<24} {}", cell(&u["group"]), cell(&u["url"]));
                    }
                }
            }
        }
        PolicyCmd::Refresh { target, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = post_json(&c, &target.api, "/api/v1/policy/refresh", &json!({})).await?;
            if json {
                return print_json(&v);
            }
            let what = if v["changed"] == Value::Bool(true) { "changed" } else { "unchanged" };
            println!("membership of version {} recomputed: {what}", cell(&v["version"]));
        }
        PolicyCmd::Violations(cmd) => violations(cmd).await?,
    }
    Ok(())
}

/// Percent-encode a path segment or query value (group and file names are user text).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b'/' => "%2F".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn drafts(cmd: DraftsCmd) -> Result<()> {
    match cmd {
        DraftsCmd::List { target, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = get_json(&c, &target.api, "/api/v1/policy/drafts").await?;
            if json {
                return print_json(&v);
            }
            println!("{} draft(s)", cell(&v["count"]));
            for d in v["drafts"].as_array().into_iter().flatten() {
                let first = d["toml"].as_str().unwrap_or_default().lines().count();
                println!(
                    "{:>5}  {:<16}  alert {:<6}  {} line(s)  {}",
                    cell(&d["id"]),
                    cell(&d["author"]),
                    cell(&d["alert"]),
                    first,
                    cell(&d["note"])
                );
            }
        }
        DraftsCmd::Show { target, id, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = get_json(&c, &target.api, &format!("/api/v1/policy/drafts/{id}")).await?;
            if json {
                return print_json(&v);
            }
            println!("# draft {id} by {}, alert {}: {}", cell(&v["author"]), cell(&v["alert"]), cell(&v["note"]));
            print!("{}", v["toml"].as_str().unwrap_or_default());
        }
        DraftsCmd::Delete { target, id, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let v = delete_json(&c, &target.api, &format!("/api/v1/policy/drafts/{id}")).await?;
            if json {
                return print_json(&v);
            }
            println!("draft {id} deleted");
        }
    }
    Ok(())
}

async fn violations(cmd: ViolationsCmd) -> Result<()> {
    match cmd {
        ViolationsCmd::List { target, state, json } => {
            let c = client(&target.auth, READ_TIMEOUT)?;
            let mut path = "/api/v1/alerts?kind=policy_violation".to_string();
            if let Some(s) = state {
                path.push_str(&format!("&state={}", urlencode(&s)));
            }
            let v = get_json(&c, &target.api, &path).await?;
            if json {
                return print_json(&v);
            }
            for a in v["alerts"].as_array().into_iter().flatten() {
                println!(
                    "{:>6}  {:<13}  {:<24}  {:<28}  {}",
                    cell(&a["id"]),
                    cell(&a["state"]),
                    cell(&a["device"]),
                    cell(&a["target"]),
                    cell(&a["count"])
                );
            }
        }
        ViolationsCmd::Triage { target, id, action, reason, json } => {
            if matches!(action, TriageAction::Ignore) && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                anyhow::bail!("ignoring a violation needs --reason");
            }
            let c = client(&target.auth, READ_TIMEOUT)?;
            let body = json!({ "note": reason.unwrap_or_default() });
            let path = format!("/api/v1/policy/violations/{id}/{}", action.path());
            let v = post_json(&c, &target.api, &path, &body).await?;
            if json {
                return print_json(&v);
            }
            println!("violation {id}: {}", cell(&v["alert"]["state"]));
            if let Some(toml) = v["draft"]["toml"].as_str() {
                println!("draft {}:\n{toml}", cell(&v["draft"]["id"]));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_durations_before_now_or_microseconds() {
        let now = 10 * 86_400 * 1_000_000;
        assert_eq!(time_arg("30d", now).unwrap(), 0, "saturates at the epoch");
        assert_eq!(time_arg("1d", now).unwrap(), now - 86_400 * 1_000_000);
        assert_eq!(time_arg("12h", now).unwrap(), now - 12 * 3600 * 1_000_000);
        assert_eq!(time_arg("90m", now).unwrap(), now - 90 * 60 * 1_000_000);
        assert_eq!(time_arg(" 45s ", now).unwrap(), now - 45 * 1_000_000);
        assert_eq!(time_arg("1767225600000000", now).unwrap(), 1_767_225_600_000_000);
        for bad in ["", "d", "5x", "-3d", "3.5h", "ü", "99999999999999999999d"] {
            let e = time_arg(bad, now).unwrap_err().to_string();
            assert!(e.contains("30d"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(urlencode("pumps"), "pumps");
        assert_eq!(urlencode("edl/wl-pumps.txt"), "edl%2Fwl-pumps.txt");
        assert_eq!(urlencode("a b?&#"), "a%20b%3F%26%23");
    }
}
