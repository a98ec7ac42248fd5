//! The certificate, key and CA files a sensor or node presents, and (feature `tls`) loading
//! them for rustls. Both binaries read the same PEM files written by
//! `wardline-aggregator admin`, so one loader serves both.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsPaths {
    /// The names the admin commands write into one folder: `<stem>.pem`, `<stem>.key`,
    /// `ca.pem` (stem "sensor" or "node").
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        TlsPaths { cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")), ca: dir.join("ca.pem") }
    }

    /// Every file exists; otherwise say which and how to make it.
    pub fn check_exist(&self, make_with: &str) -> Result<(), String> {
        for (what, p) in [("tls.cert", &self.cert), ("tls.key", &self.key), ("tls.ca", &self.ca)] {
            if !p.exists() {
                return Err(format!("{what} file {} does not exist — create it with `{make_with}`", p.display()));
            }
        }
        Ok(())
    }
}

/// `[certificates]` of a sensor's or node's config: how often the files above are checked
/// for a replacement and how early an expiry is warned about (decision 0040).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateChecks {
    /// Seconds between checks of the certificate, key and CA files for new content (SIGHUP
    /// checks at once). At least 1.
    pub check_interval_secs: u64,
    /// Warn in the log (once a day) when the certificate in use expires within this many days.
    pub expiry_warning_days: u32,
}

impl Default for CertificateChecks {
    fn default() -> Self {
        CertificateChecks { check_interval_secs: 30, expiry_warning_days: 30 }
    }
}

impl CertificateChecks {
    pub fn check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.check_interval_secs.max(1))
    }
}

#[cfg(feature = "tls")]
pub use load::*;

#[cfg(feature = "tls")]
mod load {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::path::Path;

    #[derive(Debug, thiserror::Error)]
    pub enum PemError {
        #[error("cannot read {0}: {1}")]
        Read(String, std::io::Error),
        #[error("{0} is not valid PEM: {1}")]
        Parse(String, std::io::Error),
        #[error("{0} holds no PEM certificate")]
        NoCertificate(String),
        #[error("{0} holds no private key")]
        NoKey(String),
        #[error("{0} is not a usable CA certificate: {1}")]
        BadCa(String, rustls::Error),
    }

    pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
        std::fs::read(path).map_err(|e| PemError::Read(path.display().to_string(), e))
    }

    pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
        parse_certs(&read(path)?, path)
    }

    /// The certificates in `bytes`, read from `path` (named in errors).
    pub fn parse_certs(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
        let certs = rustls_pemfile::certs(&mut &bytes[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PemError::Parse(path.display().to_string(), e))?;
        if certs.is_empty() {
            return Err(PemError::NoCertificate(path.display().to_string()));
        }
        Ok(certs)
    }

    pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
        parse_key(&read(path)?, path)
    }

    /// The private key in `bytes`, read from `path` (named in errors).
    pub fn parse_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
        rustls_pemfile::private_key(&mut &bytes[..])
            .map_err(|e| PemError::Parse(path.display().to_string(), e))?
            .ok_or_else(|| PemError::NoKey(path.display().to_string()))
    }

    /// A root store holding exactly the certificates in `path` (the fleet CA).
    pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
        parse_roots(&read(path)?, path)
    }

    /// A root store holding exactly the certificates in `bytes`, read from `path`.
    pub fn parse_roots(bytes: &[u8], path: &Path) -> Result<rustls::RootCertStore, PemError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in parse_certs(bytes, path)? {
            roots.add(cert).map_err(|e| PemError::BadCa(path.display().to_string(), e))?;
        }
        Ok(roots)
    }
}
