//! How CLI commands reach the API: HTTPS trusting only the fleet CA, authenticated with a
//! bearer token or an operator certificate. Every command builds its client with
//! [`api_client`].

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Credentials and trust for talking to the API (flattened into every API command).
#[derive(Args, Clone, Debug, Default)]
pub struct ApiAuth {
    /// Bearer token from `admin token create`.
    #[arg(long, env = "WARDLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Folder with operator.pem, operator.key and ca.pem (from `admin issue-operator`).
    #[arg(long, env = "WARDLINE_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Fleet CA certificate the node's certificate must chain to (default: ca.pem in --cert-dir).
    #[arg(long, env = "WARDLINE_CA")]
    pub ca: Option<PathBuf>,
}

/// Which node's API a command calls and with which credential (flattened into every
/// API command, so each has the same `--api` and credential flags).
#[derive(Args, Clone, Debug)]
pub struct ApiTarget {
    /// The node's API URL (for membership changes any member: a follower redirects to the
    /// leader).
    #[arg(long, default_value = "https://127.0.0.1:8080")]
    pub api: String,
    #[command(flatten)]
    pub auth: ApiAuth,
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// An HTTPS client for the API that trusts only the fleet CA and presents the operator's
/// certificate (if `--cert-dir`) or token (if `--token`) on every request.
pub fn api_client(auth: &ApiAuth) -> Result<reqwest::Client> {
    api_client_with_timeout(auth, Duration::from_secs(10))
}

/// [`api_client`] with a request timeout of `timeout` (membership changes wait for a
/// new node to catch up).
pub fn api_client_with_timeout(auth: &ApiAuth, timeout: Duration) -> Result<reqwest::Client> {
    let ca_path = match (&auth.ca, &auth.cert_dir) {
        (Some(ca), _) => ca.clone(),
        (None, Some(dir)) => dir.join("ca.pem"),
        (None, None) => bail!(
            "give --ca FILE (the fleet CA certificate, ca.pem) so the node's certificate can be checked, \
             or --cert-dir DIR holding operator.pem, operator.key and ca.pem"
        ),
    };
    if auth.token.is_none() && auth.cert_dir.is_none() {
        bail!(
            "the API needs a credential: give --token (or WARDLINE_TOKEN) from `wardline-aggregator admin token \
             create`, or --cert-dir with an operator certificate from `wardline-aggregator admin issue-operator`"
        );
    }
    let ca = reqwest::Certificate::from_pem(&read(&ca_path, "the fleet CA certificate")?)
        .with_context(|| format!("{} is not a PEM certificate", ca_path.display()))?;
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .https_only(true);
    if let Some(dir) = &auth.cert_dir {
        let mut pem = read(&dir.join("operator.pem"), "the operator certificate")?;
        pem.push(b'\n');
        pem.extend(read(&dir.join("operator.key"), "the operator key")?);
        let identity = reqwest::Identity::from_pem(&pem)
            .with_context(|| format!("{} does not hold a usable operator certificate and key", dir.display()))?;
        builder = builder.identity(identity);
    }
    if let Some(token) = &auth.token {
        let token = token.trim();
        super::token::parse_token(token).map_err(anyhow::Error::msg).context("--token / WARDLINE_TOKEN")?;
        let mut headers = reqwest::header::HeaderMap::new();
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token contains characters a header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    builder.build().context("cannot build the HTTPS client")
}

/// Send one request and return its JSON answer, or an error naming the status and the
/// API's own message (401/403 say which credential or role is needed).
pub async fn call(req: reqwest::RequestBuilder, what: &str) -> Result<serde_json::Value> {
    let resp = req.send().await.with_context(|| {
        format!("cannot reach the aggregator API for {what} — is the node up, and is the URL https://?")
    })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.with_context(|| format!("{what}: the API did not answer JSON"))?;
    if !status.is_success() {
        bail!("{what}: the API answered {status}: {}", body["error"].as_str().unwrap_or("no detail"));
    }
    Ok(body)
}

/// `admin token create`: prints the token once (stdout, alone on its line, so scripts can
/// capture it) and what it is on stderr.
pub async fn token_create(api: &str, auth: &ApiAuth, name: &str, role: super::Role, json: bool) -> Result<()> {
    let client = api_client(auth)?;
    let url = format!("{}/api/v1/tokens", api.trim_end_matches('/'));
    let body = serde_json::json!({ "name": name, "role": role });
    let created = call(client.post(&url).json(&body), "creating a token").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&created)?);
        return Ok(());
    }
    eprintln!(
        "token {} for {name} (role {role}) created; it is shown only now — store it safely",
        created["id"].as_str().unwrap_or("?")
    );
    println!("{}", created["token"].as_str().context("the API answer lacks the token")?);
    Ok(())
}

pub async fn token_list(api: &str, auth: &ApiAuth, json: bool) -> Result<()> {
    let client = api_client(auth)?;
    let url = format!("{}/api/v1/tokens", api.trim_end_matches('/'));
    let list = call(client.get(&url), "listing tokens").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<16}  {:<24}  {:<8}  {:<16}  CREATED (ms since epoch)", "ID", "NAME", "ROLE", "CREATED BY");
    for t in list["tokens"].as_array().cloned().unwrap_or_default() {
        let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        println!(
            "{:<16}  {:<24}  {:<8}  {:<16}  {}",
            s("id"),
            s("name"),
            s("role"),
            s("created_by"),
            t["created_at_ms"]
        );
    }
    Ok(())
}

pub async fn token_revoke(api: &str, auth: &ApiAuth, id_or_name: &str, json: bool) -> Result<()> {
    let client = api_client(auth)?;
    let url = format!("{}/api/v1/tokens/{id_or_name}", api.trim_end_matches('/'));
    let r = call(client.delete(&url), "revoking a token").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("revoked token {} ({})", r["revoked"].as_str().unwrap_or("?"), r["name"].as_str().unwrap_or("?"));
    Ok(())
}

/// `admin audit`: the newest entries as JSON.
pub async fn audit(api: &str, auth: &ApiAuth, limit: usize) -> Result<()> {
    let client = api_client(auth)?;
    let url = format!("{}/api/v1/audit?limit={limit}", api.trim_end_matches('/'));
    let log = call(client.get(&url), "reading the audit log").await?;
    println!("{}", serde_json::to_string_pretty(&log)?);
    Ok(())
}
