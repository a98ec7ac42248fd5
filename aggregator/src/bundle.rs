//! Sneakernet import: `POST /api/v1/bundles` (admin) takes a bundle written by
//! `wardline-sensor spool export` (format in `wardline_common::bundle`) as a streamed body
//! and applies its batches through the same path as QUIC ingest, so the exactly-once rule is
//! the same: a batch at or below its sensor's watermark is acked as a duplicate. Importing
//! twice, or the link coming back after an import, counts nothing twice.
//!
//! Before any batch is applied: the certificate in the bundle must chain to the fleet CA,
//! name the sensor and site of the manifest, and not be revoked; the manifest's signature
//! must verify with its key. Then every record is verified on its own (signature bound to
//! the manifest and to its position) right before it is applied, so memory stays bounded by
//! one batch, and a tampered or truncated bundle stops at the first bad record with an error
//! naming it (the records before it are applied exactly once, and importing a good copy
//! later adds only the rest).

use crate::auth::layer::AuditDetail;
use crate::node::Node;
use crate::pki::{self, SensorIdentity};
use crate::raft::ProposeError;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::BodyExt;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
use serde::Serialize;
use std::sync::Arc;
use wardline_common::bundle::{self, BundleError, BundleParser, Item, Manifest};
use wardline_common::wire::BatchReply;

/// Largest bundle accepted in one request (records are applied as they stream in; this only
/// stops a runaway upload).
pub const MAX_BUNDLE_BYTES: u64 = 64 << 30;
/// Rejected batches listed in the answer at most (all are counted).
const MAX_LISTED: usize = 20;

pub fn router(node: Arc<Node>) -> Router {
    Router::new().route("/api/v1/bundles", post(import).layer(DefaultBodyLimit::disable())).with_state(node)
}

#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    pub sensor_id: String,
    pub site: String,
    pub epoch: String,
    pub certificate_serial: String,
    /// Records the manifest announces.
    pub batches_in_bundle: u64,
    /// Records verified and handed to the cluster.
    pub verified: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub rejected_batches: Vec<String>,
    /// Every record was read, verified and answered, and the end mark matched.
    pub complete: bool,
    /// Why the import stopped early, if it did.
    pub error: Option<String>,
}

struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal(StatusCode::UNPROCESSABLE_ENTITY, msg.into())
}

/// The sensor a bundle's manifest speaks for, after checking its certificate and signature.
struct Signer {
    identity: SensorIdentity,
    serial: String,
    key: Vec<u8>,
    manifest_signature: Vec<u8>,
}

impl Signer {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.key).verify(message, signature).is_ok()
    }
}

async fn check_manifest(node: &Node, manifest: &Manifest, raw: &[u8], signature: &[u8]) -> Result<Signer, Refusal> {
    let mut reader = std::io::BufReader::new(manifest.certificate_pem.as_bytes());
    let chain: Vec<_> = rustls_pemfile::certs(&mut reader)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("the bundle's certificate is not valid PEM: {e}")))?;
    let (leaf, intermediates) = chain.split_first().ok_or_else(|| bad("the bundle carries no certificate"))?;
    let roots = Arc::new(
        wardline_common::tls_files::load_roots(&node.config.tls.ca)
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot load the fleet CA: {e}")))?,
    );
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, crate::tls::provider()).build().map_err(
            |e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot build a certificate verifier: {e}")),
        )?;
    verifier.verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now()).map_err(|e| {
        bad(format!(
            "the bundle's certificate is not a valid certificate of this fleet ({e}); \
             only bundles written by this fleet's sensors are imported"
        ))
    })?;
    let identity = pki::sensor_identity(leaf.as_ref()).map_err(|e| bad(format!("the bundle's certificate: {e:#}")))?;
    if identity.sensor_id != manifest.sensor_id || identity.site != manifest.site {
        return Err(bad(format!(
            "the manifest speaks for sensor {}@{} but its certificate names {identity}",
            manifest.sensor_id, manifest.site
        )));
    }
    let serial = pki::certificate_serial(leaf.as_ref()).map_err(|e| bad(format!("{e:#}")))?;
    let revoked = {
        let (id, serial) = (identity.sensor_id.clone(), serial.clone());
        node.raft.read_state(move |s| s.revocations().check(&id, &serial).map(|r| r.reason.clone())).await
    };
    if let Some(reason) = revoked {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            format!("sensor {identity} (certificate {serial}) is revoked ({reason}); its bundle is refused"),
        ));
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| bad(format!("cannot parse the bundle's certificate: {e}")))?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    let signer = Signer { identity, serial, key, manifest_signature: signature.to_vec() };
    if !signer.verify(&bundle::manifest_message(raw), signature) {
        return Err(bad(
            "the bundle's manifest signature does not verify: the file was altered or not written by this sensor",
        ));
    }
    Ok(signer)
}

async fn import(State(node): State<Arc<Node>>, body: Body) -> Response {
    match run_import(&node, body).await {
        Ok(report) => {
            let status = if report.complete { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            let detail = format!(
                "imported a bundle of sensor {}@{}: {} applied, {} duplicates, {} rejected{}",
                report.sensor_id,
                report.site,
                report.applied,
                report.duplicates,
                report.rejected,
                report.error.as_ref().map(|e| format!("; stopped: {e}")).unwrap_or_default()
            );
            let mut resp = (status, Json(report)).into_response();
            resp.extensions_mut().insert(AuditDetail(detail));
            resp
        }
        Err(r) => {
            let detail = format!("bundle refused: {}", r.1);
            let mut resp = r.into_response();
            resp.extensions_mut().insert(AuditDetail(detail));
            resp
        }
    }
}

async fn run_import(node: &Node, body: Body) -> Result<ImportReport, Refusal> {
    // A follower would answer every batch "not the leader"; say where to send it instead.
    if let Err(e) = node.raft.ensure_linearizable(std::time::Duration::from_secs(5)).await {
        return Err(match e {
            ProposeError::NotLeader { leader_addr, .. } => Refusal(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "bundles are imported on the leader; send it to {}",
                    leader_addr.unwrap_or_else(|| "the leader".into())
                ),
            ),
            other => Refusal(StatusCode::SERVICE_UNAVAILABLE, format!("the cluster cannot apply batches now: {other}")),
        });
    }
    let mut body = body;
    let mut parser = BundleParser::default();
    let mut report = ImportReport::default();
    let mut signer: Option<Signer> = None;
    let mut received = 0u64;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Err(e)) => {
                report.error = Some(format!("the upload broke off: {e}"));
                return Ok(report);
            }
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else { continue };
        received += data.len() as u64;
        if received > MAX_BUNDLE_BYTES {
            report.error = Some(format!("the bundle exceeds {MAX_BUNDLE_BYTES} bytes"));
            return Ok(report);
        }
        parser.push(&data);
        loop {
            let item = match parser.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => return stop(signer.is_some(), report, e),
            };
            match item {
                Item::Manifest { manifest, raw, signature } => {
                    let s = check_manifest(node, &manifest, &raw, &signature).await?;
                    report.sensor_id = manifest.sensor_id.clone();
                    report.site = manifest.site.clone();
                    report.epoch = manifest.epoch.clone();
                    report.certificate_serial = s.serial.clone();
                    report.batches_in_bundle = manifest.batches;
                    signer = Some(s);
                }
                Item::Record { index, frame, signature } => {
                    let s = signer.as_ref().expect("the parser yields the manifest first");
                    if !s.verify(&bundle::record_message(&s.manifest_signature, index, &frame), &signature) {
                        report.error = Some(format!(
                            "record {index}: its signature does not verify (the bundle was altered); \
                             the {} records before it were imported",
                            index
                        ));
                        return Ok(report);
                    }
                    let batch = match bundle::decode_record(index, &frame) {
                        Ok(b) => b,
                        Err(e) => {
                            report.error = Some(e);
                            return Ok(report);
                        }
                    };
                    if batch.sensor_id != s.identity.sensor_id || batch.site != s.identity.site {
                        report.error = Some(format!(
                            "record {index} (seq {}) claims sensor {}@{}, not the bundle's {}",
                            batch.seq, batch.sensor_id, batch.site, s.identity
                        ));
                        return Ok(report);
                    }
                    report.verified += 1;
                    let seq = batch.seq;
                    match node.accept_batch(batch).await {
                        BatchReply::Ack { duplicate: false, .. } => report.applied += 1,
                        BatchReply::Ack { duplicate: true, .. } => report.duplicates += 1,
                        BatchReply::Rejected { reason, .. } => {
                            report.rejected += 1;
                            if report.rejected_batches.len() < MAX_LISTED {
                                report.rejected_batches.push(format!("seq {seq}: {reason}"));
                            }
                        }
                        BatchReply::RetryLater { reason, .. } => {
                            report.error = Some(format!(
                                "the cluster could not apply seq {seq} now ({reason}); import the bundle again \
                                 later: what was applied is recognised and not counted twice"
                            ));
                            return Ok(report);
                        }
                    }
                }
                Item::End { .. } => report.complete = true,
            }
        }
    }
    if let Err(e) = parser.finish() {
        return stop(signer.is_some(), report, e);
    }
    Ok(report)
}

/// A framing error: before the manifest, the request is refused; after it, the records so
/// far stand and the report says where the bundle broke.
fn stop(started: bool, mut report: ImportReport, e: BundleError) -> Result<ImportReport, Refusal> {
    if !started {
        return Err(bad(format!("{e}; give a file written by `wardline-sensor spool export`")));
    }
    report.complete = false;
    report.error = Some(e.to_string());
    Ok(report)
}
