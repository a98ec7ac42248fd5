//! `wardline-sensor spool export`: the spool's batches in one signed bundle, for a site with
//! no link at all (sneakernet). The bundle format is `wardline_common::bundle`; here it is
//! filled from the spool and signed with the sensor's own key (the key of its certificate,
//! ECDSA P-256), so the aggregator that imports it knows which sensor wrote every batch.
//!
//! The spool keeps its batches: if the link comes back after the bundle was imported, they
//! are sent again and acked as duplicates (the aggregator's watermark), never counted twice;
//! if the bundle is lost on the way, nothing is lost.

use crate::config::SensorConfig;
use crate::spool::Spool;
use anyhow::{bail, Context, Result};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::io::Write;
use std::path::Path;
use wardline_common::bundle::{BundleWriter, Manifest, BUNDLE_FORMAT};

/// Batches read from the spool at a time while exporting (bounded memory).
const CHUNK: usize = 256;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub batches: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub bytes: u64,
    /// Spool records that could not be read and were left out (named in the log).
    pub unreadable: u64,
}

/// The sensor's signing key: the PKCS#8 private key of its certificate.
fn signing_key(path: &Path) -> Result<EcdsaKeyPair> {
    let der = wardline_common::tls_files::load_key(path)
        .with_context(|| format!("cannot load the sensor key {}", path.display()))?;
    let rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8) = der else {
        bail!(
            "the sensor key {} is not a PKCS#8 key; re-issue it with `wardline-aggregator admin issue-sensor`",
            path.display()
        );
    };
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.secret_pkcs8_der(),
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "the sensor key {} is not an ECDSA P-256 key ({e}); re-issue it with `admin issue-sensor`",
            path.display()
        )
    })
}

/// Write every spooled batch with a sequence number ≥ `from_seq` into a bundle at `out`
/// (written beside it and renamed when complete, so a half-written bundle never exists
/// under the final name). The sensor must be stopped: the spool has one user at a time.
pub fn export(cfg: &SensorConfig, out: &Path, from_seq: u64) -> Result<ExportSummary> {
    let spool = Spool::open(&cfg.spool_dir, cfg.spool_bound()).with_context(|| {
        format!(
            "cannot open the spool at {} — stop the sensor first (systemctl stop wardline-sensor): \
             only one process can use the spool",
            cfg.spool_dir.display()
        )
    })?;
    let key = signing_key(&cfg.tls.key)?;
    let certificate_pem = std::fs::read_to_string(&cfg.tls.cert)
        .with_context(|| format!("cannot read the sensor certificate {}", cfg.tls.cert.display()))?;
    // Numbers for everything first: the bundle carries batches as the cluster will see them.
    spool.seal_all()?;
    let mut summary = ExportSummary::default();
    let mut next = from_seq;
    loop {
        let (batches, corrupt) = spool.sealed_from(next, CHUNK)?;
        for c in &corrupt {
            tracing::warn!("left out of the bundle: {c}");
        }
        summary.unreadable += corrupt.len() as u64;
        let Some(last) = batches.last() else { break };
        if summary.batches == 0 {
            summary.first_seq = batches[0].seq;
        }
        summary.batches += batches.len() as u64;
        summary.last_seq = last.seq;
        next = last.seq + 1;
    }
    if summary.batches == 0 {
        bail!("the spool at {} holds no batches from seq {from_seq} on: nothing to export", cfg.spool_dir.display());
    }
    let manifest = Manifest {
        format: BUNDLE_FORMAT,
        sensor_id: cfg.sensor_id.clone(),
        site: cfg.site.clone(),
        epoch: spool.epoch().to_string(),
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        batches: summary.batches,
        first_seq: summary.first_seq,
        last_seq: summary.last_seq,
        certificate_pem,
    };
    let partial = out.with_extension("partial");
    let file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let rng = ring::rand::SystemRandom::new();
    let sign = |m: &[u8]| key.sign(&rng, m).map(|s| s.as_ref().to_vec()).unwrap_or_default();
    let mut writer = BundleWriter::start(std::io::BufWriter::new(file), &manifest, sign)?;
    let (mut next, mut written) = (summary.first_seq, 0u64);
    while written < summary.batches {
        let (batches, _) = spool.sealed_from(next, CHUNK)?;
        let Some(last) = batches.last() else { break };
        next = last.seq + 1;
        for b in batches.iter().take((summary.batches - written) as usize) {
            writer.record(b).with_context(|| format!("cannot write batch {} to {}", b.seq, partial.display()))?;
            written += 1;
        }
    }
    if written != summary.batches {
        bail!("the spool changed during the export ({written} of {} batches written); export again", summary.batches);
    }
    let (buf, _) = writer.finish()?;
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().with_context(|| format!("cannot write {} to disk", partial.display()))?;
    summary.bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    std::fs::File::open(out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .ok();
    let _ = std::io::stdout().flush();
    Ok(summary)
}
