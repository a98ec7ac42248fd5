//! `wardline-aggregator cluster ...`: cluster lifecycle through a running node's API.
//!
//! Membership changes must run on the leader; sent to a follower they come back with the
//! leader's API address, and the command retries there once.

use super::{client, get_json, post_json, print_json, ApiAuth, ApiError, ApiTarget, READ_TIMEOUT};
use crate::cluster::backup;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Time allowed for join/replace: the new node must catch up first.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create a new one-node cluster on a running node that has no state yet (prints the
    /// new cluster id). `run --init` does the same at start-up.
    Init {
        #[command(flatten)]
        target: ApiTarget,
        /// Print the API's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Add a running node (started without --init) to the cluster: it joins as a learner,
    /// catches up, then becomes a voter.
    Join {
        #[command(flatten)]
        target: ApiTarget,
        #[command(flatten)]
        node: NewNode,
        /// Print the API's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node (voter or learner) from the cluster.
    Leave {
        #[command(flatten)]
        target: ApiTarget,
        #[arg(long)]
        node_id: u64,
        /// Print the API's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Replace voter --old by a new running node --new: the new node catches up (from a
    /// snapshot if needed), then one membership change swaps them.
    Replace {
        #[command(flatten)]
        target: ApiTarget,
        /// The node to remove.
        #[arg(long)]
        old: u64,
        /// The node that takes its place.
        #[arg(long = "new")]
        new_id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        api_addr: String,
        #[arg(long)]
        ingest_addr: String,
        /// Print the API's JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Download a backup of a running node's applied state (admin). Restore it with
    /// `run --init --restore FILE`; a stopped node is backed up with `admin backup`.
    Backup {
        #[command(flatten)]
        target: ApiTarget,
        /// File to write (written as FILE.partial, verified, then renamed).
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// This node's own view (`GET /api/v1/cluster`): its id, role, term, leader, applied
    /// index and members, as it sees them (a follower may lag the leader).
    Node {
        #[command(flatten)]
        target: ApiTarget,
        /// Print the API's JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Show cluster id, members, leader, term, indexes and refused Raft RPCs.
    Status {
        #[command(flatten)]
        target: ApiTarget,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The node being added, as its peers reach it.
#[derive(Args, Debug)]
pub struct NewNode {
    /// Node id of the new node (as in its node certificate).
    #[arg(long)]
    pub node_id: u64,
    /// Its Raft address host:port (its `listen_raft` / `advertise_raft`).
    #[arg(long)]
    pub raft_addr: String,
    /// Its API address host:port.
    #[arg(long)]
    pub api_addr: String,
    /// Its QUIC ingest address host:port.
    #[arg(long)]
    pub ingest_addr: String,
}

pub async fn run(cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Init { target: ApiTarget { api, auth }, json } => {
            let v = post_json(&client(&auth, READ_TIMEOUT)?, &api, "/api/v1/cluster/init", &json!({})).await?;
            if json {
                return print_json(&v);
            }
            println!("initialised cluster {} on node {}", v["cluster_id"].as_str().unwrap_or("?"), v["node_id"]);
            Ok(())
        }
        ClusterCmd::Join { target: ApiTarget { api, auth }, node, json } => {
            let body = json!({"node_id": node.node_id, "raft_addr": node.raft_addr, "api_addr": node.api_addr,
                              "ingest_addr": node.ingest_addr});
            let v = on_leader(&api, &auth, "/api/v1/cluster/join", &body).await?;
            if json {
                return print_json(&v);
            }
            println!("node {} joined as a voter", node.node_id);
            print_status(&v);
            Ok(())
        }
        ClusterCmd::Leave { target: ApiTarget { api, auth }, node_id, json } => {
            let v = on_leader(&api, &auth, "/api/v1/cluster/leave", &json!({ "node_id": node_id })).await?;
            if json {
                return print_json(&v);
            }
            println!("node {node_id} removed");
            print_status(&v);
            Ok(())
        }
        ClusterCmd::Replace {
            target: ApiTarget { api, auth },
            old,
            new_id,
            raft_addr,
            api_addr,
            ingest_addr,
            json,
        } => {
            let body = json!({"old": old, "new": {"node_id": new_id, "raft_addr": raft_addr, "api_addr": api_addr,
                              "ingest_addr": ingest_addr}});
            let v = on_leader(&api, &auth, "/api/v1/cluster/replace", &body).await?;
            if json {
                return print_json(&v);
            }
            println!("node {old} replaced by node {new_id}");
            print_status(&v);
            Ok(())
        }
        ClusterCmd::Backup { target: ApiTarget { api, auth }, out } => online_backup(&api, &auth, &out).await,
        ClusterCmd::Node { target: ApiTarget { api, auth }, json } => {
            let v = get_json(&client(&auth, READ_TIMEOUT)?, &api, "/api/v1/cluster").await?;
            if json {
                return print_json(&v);
            }
            let fields: Vec<String> = v
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, x)| !x.is_object() && !x.is_array())
                .map(|(k, x)| format!("{k}: {}", super::cell(x)))
                .collect();
            println!("{}", fields.join("\n"));
            Ok(())
        }
        ClusterCmd::Status { target: ApiTarget { api, auth }, json } => {
            let v = get_json(&client(&auth, READ_TIMEOUT)?, &api, "/api/v1/cluster/status").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(())
        }
    }
}

/// Time allowed to download a backup (a large state is hundreds of MB).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(1800);

/// `cluster backup`: stream the node's backup to FILE.partial, verify it, rename to FILE.
async fn online_backup(api: &str, auth: &ApiAuth, out: &Path) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let client = client(auth, BACKUP_TIMEOUT)?;
    let url = format!("{}/api/v1/cluster/backup", api.trim_end_matches('/'));
    let mut resp = super::request(&client, reqwest::Method::GET, api, "/api/v1/cluster/backup")
        .send()
        .await
        .with_context(|| format!("cannot reach the aggregator API at {url} — is `wardline-aggregator run` up?"))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or("no detail").to_string();
        return Err(ApiError { url, status: status.as_u16(), message, body }.into());
    }
    let tmp = backup::tmp_path(out);
    let mut file = tokio::fs::File::create(&tmp).await.with_context(|| format!("cannot create {}", tmp.display()))?;
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("the download from {url} broke off"))? {
        file.write_all(&chunk).await.with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    file.sync_all().await.with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(file);
    // Verify before it takes the final name: a file called FILE is always a whole backup.
    let b = backup::read_file(&tmp)?;
    tokio::fs::rename(&tmp, out)
        .await
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
    println!(
        "backup of node {} (cluster {}, log index {}) written to {} (SHA-256 {})",
        b.header.node_id,
        b.header.cluster_id.as_deref().unwrap_or("-"),
        b.header.last_applied.map_or_else(|| "-".into(), |l| l.index.to_string()),
        out.display(),
        b.sha256
    );
    Ok(())
}

/// `admin backup`: back up a stopped node from its data directory.
pub async fn offline_backup(data_dir: &Path, out: &Path, include_uncommitted: bool) -> Result<()> {
    let (bytes, r) = backup::offline(data_dir, include_uncommitted).await?;
    backup::write_file(out, &bytes)?;
    let pos = |p: Option<backup::LogPosition>| p.map_or_else(|| "none".into(), |l| l.index.to_string());
    println!(
        "node {} of cluster {}: snapshot at log index {}, then {} committed log entries applied",
        r.node_id,
        r.cluster_id.as_deref().unwrap_or("-"),
        pos(r.snapshot),
        r.committed_entries
    );
    if r.uncommitted_entries > 0 {
        if r.included_uncommitted {
            println!(
                "{} entries appended here but not known committed were INCLUDED (--include-uncommitted)",
                r.uncommitted_entries
            );
        } else {
            println!(
                "{} entries appended here but not known committed were left out (add --include-uncommitted to \
                 salvage them after losing a majority)",
                r.uncommitted_entries
            );
        }
    } else {
        println!("no entries were only appended locally");
    }
    println!("backup (log index {}) written to {}", pos(r.last_applied), out.display());
    Ok(())
}

/// POST a membership change; if the node is a follower, retry once at the leader it names.
async fn on_leader(api: &str, auth: &ApiAuth, path: &str, body: &Value) -> Result<Value> {
    let client = client(auth, CHANGE_TIMEOUT)?;
    match post_json(&client, api, path, body).await {
        Err(e) => {
            let leader = e
                .downcast_ref::<ApiError>()
                .filter(|a| a.status == 421)
                .and_then(|a| a.body["leader_api_addr"].as_str().map(str::to_string));
            match leader {
                Some(addr) => {
                    let leader_api = format!("{}://{addr}", api.split("://").next().unwrap_or("https"));
                    eprintln!("{api} is not the leader; sending to the leader at {leader_api}");
                    post_json(&client, &leader_api, path, body).await.context("the leader refused the change")
                }
                None => Err(e),
            }
        }
        ok => ok,
    }
}

fn print_status(v: &Value) {
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!("Cluster {}", s(&v["cluster_id"]));
    println!(
        "This node: {} ({})  leader: {}  term: {}  log: {}  committed: {}  applied: {}",
        s(&v["node_id"]),
        s(&v["state"]),
        s(&v["leader_id"]),
        s(&v["current_term"]),
        s(&v["last_log_index"]),
        s(&v["committed_index"]),
        s(&v["applied_index"])
    );
    println!("{:<6}  {:<8}  {:<22}  {:<22}  INGEST", "NODE", "ROLE", "RAFT", "API");
    for m in v["members"].as_array().into_iter().flatten() {
        println!(
            "{:<6}  {:<8}  {:<22}  {:<22}  {}",
            s(&m["id"]),
            s(&m["role"]),
            s(&m["raft_addr"]),
            s(&m["api_addr"]),
            s(&m["ingest_addr"])
        );
    }
    if let Some(r) = v["refused_rpcs"].as_object() {
        let parts: Vec<String> = r.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("Refused Raft RPCs: {}", parts.join(", "));
    }
    print_certificate(&v["certificate"]);
}

/// The node certificate in use and its reloads (decision 0040).
fn print_certificate(c: &Value) {
    if c.is_null() {
        return;
    }
    println!(
        "Node certificate: serial {}  expires {}  reloads {}  refused {}",
        c["serial"].as_str().unwrap_or("-"),
        c["expires"].as_str().unwrap_or("-"),
        c["reloads"],
        c["reload_failures"]
    );
    if let Some(why) = c["refused_files"].as_str() {
        println!("Certificate files on disk NOT in use: {why}");
    }
}
