//! `wardline-aggregator vuln|risk|report ...` through a running node's API (decision 0027):
//! import vulnerability feeds, list them, show device risk and roll-ups, fetch reports.

use super::{cell, client, get_json, post_json, print_json, request, ApiError, ApiTarget, READ_TIMEOUT};
use crate::risk::import::{FileText, ImportRequest};
use crate::state::vulnfeeds::FeedFileError;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Feed text sent per import request (the API accepts up to 48 MiB of body); a larger
/// folder is sent as several imports, each replicated on its own.
pub const REQUEST_BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// An import parses and commits megabytes: allow it more than an ordinary read.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Subcommand, Debug)]
pub enum VulnCmd {
    /// Import CSAF advisories (every *.json below --dir) and the KEV catalog into the
    /// cluster (admin). Files that cannot be used are listed by file and field; the rest are
    /// imported. Newer revisions replace older ones.
    Import {
        #[command(flatten)]
        target: ApiTarget,
        /// Folder of CSAF 2.0 advisories (searched recursively).
        #[arg(long)]
        dir: PathBuf,
        /// CISA's known_exploited_vulnerabilities.json.
        #[arg(long)]
        kev: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// What is imported: advisories, KEV catalog, recent imports and their errors.
    Feeds {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RiskCmd {
    /// The riskiest devices with their reasons.
    Top {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// One device's risk: score, factors with evidence, matched vulnerabilities.
    Device {
        #[command(flatten)]
        target: ApiTarget,
        /// MAC, site:ip or site:ip@vlan.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Risk per site, class, category or policy group.
    Rollup {
        #[command(flatten)]
        target: ApiTarget,
        /// site, class, category or group (the active policy's groups; a device in two
        /// groups counts in both, one in none under "(no group)").
        #[arg(long, default_value = "site")]
        by: String,
        #[arg(long)]
        json: bool,
    },
    /// Risk over time: one device's recorded scores with the reason of each move, or the
    /// site roll-ups over time (decision 0043).
    History {
        #[command(flatten)]
        target: ApiTarget,
        /// MAC, site:ip or site:ip@vlan; without it, every site's roll-up history.
        id: Option<String>,
        /// Only this site's roll-up history.
        #[arg(long, conflicts_with = "id")]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    target: ApiTarget,
    /// inventory, risk, vulnerable or alerts.
    name: String,
    /// csv, html or pdf (pdf needs chromium on the node).
    #[arg(long, default_value = "csv")]
    format: String,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Every `*.json` file below `dir`, sorted by path, except `skip`.
fn json_files(dir: &Path, skip: Option<&Path>) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let skip = skip.and_then(|p| p.canonicalize().ok());
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).with_context(|| format!("cannot list the advisory folder {}", d.display()))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("json"))
                && (skip.is_none() || p.canonicalize().ok() != skip)
            {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

/// A file's text, or the error to report for it.
fn read_text(p: &Path) -> std::result::Result<FileText, FeedFileError> {
    let err = |message: String| FeedFileError { file: file_name(p), pointer: String::new(), message };
    let bytes = std::fs::read(p).map_err(|e| err(format!("cannot read {}: {e}", p.display())))?;
    let content = String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
    Ok(FileText { file: file_name(p), content })
}

/// The import requests for `dir` and `kev`, each at most [`REQUEST_BUDGET_BYTES`] of text.
pub fn import_requests(dir: &Path, kev: Option<&Path>) -> Result<Vec<ImportRequest>> {
    let mut first = ImportRequest::default();
    let mut used = 0;
    if let Some(k) = kev {
        match read_text(k) {
            Ok(t) => {
                used = t.content.len();
                first.kev = Some(t);
            }
            Err(e) => first.errors.push(e),
        }
    }
    let mut requests = vec![first];
    for p in json_files(dir, kev)? {
        match read_text(&p) {
            Ok(t) => {
                if used + t.content.len() > REQUEST_BUDGET_BYTES
                    && !requests.last().is_some_and(|r| r.advisories.is_empty())
                {
                    requests.push(ImportRequest::default());
                    used = 0;
                }
                used += t.content.len();
                requests.last_mut().expect("one request at least").advisories.push(t);
            }
            Err(e) => requests.last_mut().expect("one request at least").errors.push(e),
        }
    }
    Ok(requests)
}

pub async fn run_vuln(cmd: VulnCmd) -> Result<()> {
    match cmd {
        VulnCmd::Import { target, dir, kev, json } => {
            let requests = import_requests(&dir, kev.as_deref())?;
            if requests.iter().all(|r| r.advisories.is_empty() && r.kev.is_none() && r.errors.is_empty()) {
                bail!("no *.json files under {} and no --kev file: nothing to import", dir.display());
            }
            let c = client(&target.auth, IMPORT_TIMEOUT)?;
            let mut answers = Vec::new();
            for r in &requests {
                let body = serde_json::to_value(r)?;
                match post_json(&c, &target.api, "/api/v1/vuln/import", &body).await {
                    Ok(v) => answers.push(v),
                    Err(e) if e.downcast_ref::<ApiError>().is_none() => {
                        // A node refusing the credential answers before reading a body of
                        // megabytes and closes the connection, which the upload sees as a
                        // broken pipe: ask again without a body to show the node's answer.
                        let probe = post_json(&c, &target.api, "/api/v1/vuln/import", &serde_json::json!({})).await;
                        return match probe {
                            Err(p) if p.downcast_ref::<ApiError>().is_some_and(|a| matches!(a.status, 401 | 403)) => {
                                Err(p)
                            }
                            _ => Err(e),
                        };
                    }
                    Err(e) => return Err(e),
                }
            }
            if json {
                return print_json(&Value::Array(answers));
            }
            for v in &answers {
                let rec = &v["record"];
                println!(
                    "import {}: {} files, {} imported ({} new, {} replaced, {} unchanged{}), {} refused",
                    cell(&v["import_id"]),
                    cell(&v["files"]),
                    cell(&v["imported"]),
                    cell(&rec["added"]),
                    cell(&rec["replaced"]),
                    cell(&rec["unchanged"]),
                    if rec["kev_imported"] == Value::Bool(true) { ", KEV catalog" } else { "" },
                    v["errors"].as_array().map_or(0, Vec::len)
                );
                for e in v["errors"].as_array().into_iter().flatten() {
                    let pointer = e["pointer"].as_str().unwrap_or("");
                    let at = if pointer.is_empty() { String::new() } else { format!("{pointer}: ") };
                    println!("  refused {}: {at}{}", cell(&e["file"]), cell(&e["message"]));
                }
            }
            Ok(())
        }
        VulnCmd::Feeds { target, json } => {
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, "/api/v1/vuln/feeds").await?;
            if json {
                return print_json(&v);
            }
            println!("feed version {}: {} advisories", cell(&v["version"]), cell(&v["advisory_count"]));
            match v["kev"].as_object() {
                Some(k) => println!(
                    "KEV catalog {} of {} ({} entries, {})",
                    cell(&k["catalog_version"]),
                    cell(&k["date_released"]),
                    cell(&k["entries"]),
                    cell(&k["source"])
                ),
                None => println!("no KEV catalog imported"),
            }
            for a in v["advisories"].as_array().into_iter().flatten() {
                println!(
                    "  {:<18} rev {:<6} {:<26} {}",
                    cell(&a["id"]),
                    cell(&a["revision"]),
                    cell(&a["release_date"]),
                    cell(&a["title"])
                );
            }
            for i in v["imports"].as_array().into_iter().flatten() {
                println!(
                    "import {} by {}: {} new, {} replaced, {} unchanged, {} errors",
                    cell(&i["import_id"]),
                    cell(&i["by"]),
                    cell(&i["added"]),
                    cell(&i["replaced"]),
                    cell(&i["unchanged"]),
                    i["errors"].as_array().map_or(0, Vec::len)
                );
            }
            Ok(())
        }
    }
}

pub async fn run_risk(cmd: RiskCmd) -> Result<()> {
    match cmd {
        RiskCmd::Top { target, top, json } => {
            let v =
                get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &format!("/api/v1/risk?top={top}")).await?;
            if json {
                return print_json(&v);
            }
            println!("{:>6}  {:<24}  {:<12}  {:<20}  REASONS", "SCORE", "DEVICE", "SITE", "CLASS");
            for d in v["top"].as_array().into_iter().flatten() {
                let reasons: Vec<String> = d["reasons"].as_array().into_iter().flatten().map(cell).collect();
                println!(
                    "{:>6}  {:<24}  {:<12}  {:<20}  {}",
                    cell(&d["score"]),
                    cell(&d["id"]),
                    cell(&d["site"]),
                    cell(&d["class"]),
                    reasons.join("; ")
                );
            }
            Ok(())
        }
        RiskCmd::Device { target, id, json } => {
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &format!("/api/v1/devices/{id}/risk"))
                .await?;
            if json {
                return print_json(&v);
            }
            print!("{}", cell(&v["explain"]));
            for m in v["vulnerabilities"].as_array().into_iter().flatten() {
                println!(
                    "  {} {} CVSS {} {}{} ({})",
                    cell(&m["advisory_id"]),
                    cell(&m["cve"]),
                    cell(&m["cvss_score"]),
                    cell(&m["cvss_vector"]),
                    if m["kev"] == Value::Bool(true) { " KEV" } else { "" },
                    cell(&m["confidence"])
                );
            }
            Ok(())
        }
        RiskCmd::History { target, id, site, json } => {
            let path = match (&id, &site) {
                (Some(id), _) => format!("/api/v1/devices/{id}/risk/history"),
                (None, Some(site)) => format!("/api/v1/risk/history?site={}", urlencoding_site(site)),
                (None, None) => "/api/v1/risk/history".to_string(),
            };
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &path).await?;
            if json {
                return print_json(&v);
            }
            if id.is_some() {
                println!("{:<24}  {:>6}  {:<10}  REASON", "RECORDED (ms)", "SCORE", "AS OF");
                for p in v["points"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24}  {:>6}  {:<10}  {}",
                        cell(&p["at_ms"]),
                        cell(&p["score"]),
                        cell(&p["as_of"]),
                        cell(&p["reason"])
                    );
                }
                return Ok(());
            }
            println!(
                "{:<16}  {:<24}  {:>7}  {:>6}  {:>6}  ABOVE THRESHOLDS",
                "SITE", "RECORDED (ms)", "DEVICES", "MAX", "MEAN"
            );
            for s in v["sites"].as_array().into_iter().flatten() {
                for p in s["points"].as_array().into_iter().flatten() {
                    let above: Vec<String> = p["above"].as_array().into_iter().flatten().map(cell).collect();
                    println!(
                        "{:<16}  {:<24}  {:>7}  {:>6}  {:>6}  {}",
                        cell(&s["site"]),
                        cell(&p["at_ms"]),
                        cell(&p["devices"]),
                        cell(&p["max"]),
                        cell(&p["mean"]),
                        above.join(" / ")
                    );
                }
            }
            Ok(())
        }
        RiskCmd::Rollup { target, by, json } => {
            let v = get_json(&client(&target.auth, READ_TIMEOUT)?, &target.api, &format!("/api/v1/risk?by={by}&top=0"))
                .await?;
            if json {
                return print_json(&v);
            }
            println!("{:<24}  {:>7}  {:>6}  {:>6}  TOP DEVICE", by.to_uppercase(), "DEVICES", "MAX", "MEAN");
            for g in v["groups"].as_array().into_iter().flatten() {
                println!(
                    "{:<24}  {:>7}  {:>6}  {:>6}  {}",
                    cell(&g["key"]),
                    cell(&g["devices"]),
                    cell(&g["max"]),
                    cell(&g["mean"]),
                    cell(&g["max_device"])
                );
            }
            Ok(())
        }
    }
}

pub async fn run_report(args: ReportArgs) -> Result<()> {
    let c = client(&args.target.auth, READ_TIMEOUT)?;
    let path = format!("/api/v1/reports/{}.{}", args.name, args.format);
    let resp = request(&c, reqwest::Method::GET, &args.target.api, &path)
        .send()
        .await
        .with_context(|| format!("cannot reach the aggregator API at {}", args.target.api))?;
    let status = resp.status();
    let body = resp.bytes().await.context("the report answer broke off")?;
    if !status.is_success() {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        bail!("{path} answered {status}: {}", v["error"].as_str().unwrap_or("no detail"));
    }
    match args.out {
        Some(out) => {
            std::fs::write(&out, &body).with_context(|| format!("cannot write the report to {}", out.display()))?;
            println!("wrote {} ({} bytes)", out.display(), body.len());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&body)?;
        }
    }
    Ok(())
}

/// A site name as a query value (sites are operator-chosen names: escape everything but
/// unreserved characters).
fn urlencoding_site(site: &str) -> String {
    site.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
