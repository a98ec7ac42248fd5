//! Operator commands that talk to a running node over its HTTP API. Every request is
//! built by `request` (one place to add authentication to), sent by `send`.

pub mod alerts;
pub mod blast;
pub mod bundle;
pub mod cluster;
pub mod devices;
pub mod groups;
pub mod inventory;
pub mod policy;
pub mod revocations;
pub mod risk;

pub use inventory::print_inventory;

pub use crate::auth::client::{ApiAuth, ApiTarget};
use anyhow::{Context, Result};
use serde_json::Value;
use std::time::Duration;

/// Timeout of ordinary reads.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTPS client of operator commands: trusts only the fleet CA and carries the
/// operator's credential (decision 0015).
pub fn client(auth: &ApiAuth, timeout: Duration) -> Result<reqwest::Client> {
    crate::auth::client::api_client_with_timeout(auth, timeout)
}

/// Start a request to `{api}{path}`: the one place every CLI request is built.
pub fn request(client: &reqwest::Client, method: reqwest::Method, api: &str, path: &str) -> reqwest::RequestBuilder {
    client.request(method, format!("{}{path}", api.trim_end_matches('/')))
}

/// A non-2xx answer of the API, with its JSON body.
#[derive(Debug, thiserror::Error)]
#[error("{url} answered {status}: {message}")]
pub struct ApiError {
    pub url: String,
    pub status: u16,
    pub message: String,
    pub body: Value,
}

/// Send a request and return the JSON body of a 2xx answer; any other answer is an
/// `ApiError` (inside the anyhow error) carrying the API's `error` text.
pub async fn send(req: reqwest::RequestBuilder) -> Result<Value> {
    let (client, req) = req.build_split();
    let req = req.context("cannot build the HTTP request")?;
    let url = req.url().to_string();
    let resp = client
        .execute(req)
        .await
        .with_context(|| format!("cannot reach the aggregator API at {url} — is `wardline-aggregator run` up?"))?;
    let status = resp.status();
    let body: Value = resp.json().await.with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no detail").to_string();
        return Err(ApiError { url, status: status.as_u16(), message, body }.into());
    }
    Ok(body)
}

/// A JSON value as a table cell: strings unquoted, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(t) => t.clone(),
        other => other.to_string(),
    }
}

/// The API's answer as the `--json` output of a command.
pub fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// GET `{api}{path}` as JSON.
pub async fn get_json(client: &reqwest::Client, api: &str, path: &str) -> Result<Value> {
    send(request(client, reqwest::Method::GET, api, path)).await
}

/// POST `body` as JSON to `{api}{path}`; returns the JSON answer.
pub async fn post_json(client: &reqwest::Client, api: &str, path: &str, body: &Value) -> Result<Value> {
    send(request(client, reqwest::Method::POST, api, path).json(body)).await
}

/// DELETE `{api}{path}`; returns the JSON answer.
pub async fn delete_json(client: &reqwest::Client, api: &str, path: &str) -> Result<Value> {
    send(request(client, reqwest::Method::DELETE, api, path)).await
}

/// GET `{api}{path}` as text (exports); a non-2xx answer is an `ApiError` with the API's
/// `error` text.
pub async fn get_text(client: &reqwest::Client, api: &str, path: &str) -> Result<String> {
    let (client, req) = request(client, reqwest::Method::GET, api, path).build_split();
    let req = req.context("cannot build the HTTP request")?;
    let url = req.url().to_string();
    let resp = client
        .execute(req)
        .await
        .with_context(|| format!("cannot reach the aggregator API at {url} — is `wardline-aggregator run` up?"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("cannot read the answer of {url}"))?;
    if !status.is_success() {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or(text.as_str()).to_string();
        return Err(ApiError { url, status: status.as_u16(), message, body }.into());
    }
    Ok(text)
}
