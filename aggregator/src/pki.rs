//! Fleet PKI: one CA per fleet signs every sensor and node certificate.
//!
//! Identity is cryptographic: a sensor certificate carries the SAN URI
//! `urn:wardline:sensor:<site>:<sensor_id>` (and CN = sensor id, OU = site for humans
//! reading `openssl x509 -text`); the ingest server derives the sender of every batch from
//! that URI, never from the batch itself. Node certificates carry
//! `urn:wardline:node:<id>` plus the DNS names and IPs sensors dial.
//!
//! Files (PEM): `ca.pem` + `ca.key` in the CA folder; `sensor.pem`/`sensor.key`/`ca.pem`
//! or `node.pem`/`node.key`/`ca.pem` in an issued folder. Private keys are written 0600.

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const SENSOR_URN_PREFIX: &str = "urn:wardline:sensor:";
const NODE_URN_PREFIX: &str = "urn:wardline:node:";

/// Who sent a batch, as proven by the client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SensorIdentity {
    pub sensor_id: String,
    pub site: String,
}

impl std::fmt::Display for SensorIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.sensor_id, self.site)
    }
}

/// Sensor ids and sites: `[A-Za-z0-9._-]{1,64}`. They end up in a URN (':' separated),
/// file names, log lines and ClickHouse rows, so anything else is refused up front.
pub fn validate_id(what: &str, value: &str) -> Result<()> {
    if !wardline_common::wire::is_valid_id(value) {
        bail!("invalid {what} {value:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

/// Create a new fleet CA in `dir` (ca.pem, ca.key). Refuses to overwrite an existing CA:
/// replacing it would silently orphan every certificate issued so far.
pub fn init_ca(dir: &Path, name: &str) -> Result<()> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    for p in [&cert_path, &key_path] {
        if p.exists() {
            bail!(
                "a fleet CA already exists at {} — refusing to overwrite it (every issued sensor and node \
                 certificate depends on it); choose another folder or remove it deliberately",
                p.display()
            );
        }
    }
    if name.trim().is_empty() {
        bail!("the CA name must not be empty");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create CA folder {}", dir.display()))?;
    let key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "Wardline fleet");
    // Path length 0: the fleet CA signs leaf certificates only.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 25);
    let cert = params.self_signed(&key).context("cannot self-sign the CA certificate")?;
    // Key first, exclusively: a crash in between leaves no usable-looking half CA.
    write_private(&key_path, &key.serialize_pem(), true)?;
    write_public(&cert_path, &cert.pem())?;
    Ok(())
}

/// The CA as loaded for signing.
struct LoadedCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: String,
}

fn load_ca(ca_dir: &Path) -> Result<LoadedCa> {
    let cert_path = ca_dir.join("ca.pem");
    let key_path = ca_dir.join("ca.key");
    let pem = std::fs::read_to_string(&cert_path).with_context(|| {
        format!(
            "cannot read the fleet CA certificate {} — create it with `wardline-aggregator admin ca-init`",
            cert_path.display()
        )
    })?;
    let key_pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("cannot read the fleet CA key {}", key_path.display()))?;
    let key =
        KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let params = CertificateParams::from_ca_cert_pem(&pem)
        .with_context(|| format!("{} is not a PEM CA certificate", cert_path.display()))?;
    // Re-signing the parsed params yields an issuer with the original subject and key id,
    // which is all rcgen needs to sign leaves that chain to the original ca.pem.
    let cert = params.self_signed(&key).with_context(|| {
        format!("the key {} does not match the CA certificate {}", key_path.display(), cert_path.display())
    })?;
    // A key that does not belong to the certificate would sign leaves nobody can verify.
    let ca_der = pem_der(&pem, &cert_path)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&ca_der)
        .map_err(|e| anyhow::anyhow!("cannot parse {}: {e}", cert_path.display()))?;
    if parsed.public_key().raw != key.public_key_der().as_slice() {
        bail!("the key {} does not belong to the CA certificate {}", key_path.display(), cert_path.display());
    }
    Ok(LoadedCa { cert, key, pem })
}

fn pem_der(pem: &str, path: &Path) -> Result<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let der = rustls_pemfile::certs(&mut reader)
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))?
        .with_context(|| format!("{} is not valid PEM", path.display()))?;
    Ok(der.to_vec())
}

/// Issue a sensor certificate; writes sensor.pem, sensor.key and ca.pem into `out_dir` and
/// returns the path of sensor.pem.
pub fn issue_sensor(ca_dir: &Path, sensor_id: &str, site: &str, out_dir: &Path) -> Result<PathBuf> {
    validate_id("sensor id", sensor_id)?;
    validate_id("site", site)?;
    let ca = load_ca(ca_dir)?;
    let key = KeyPair::generate().context("cannot generate the sensor key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, sensor_id);
    params.distinguished_name.push(DnType::OrganizationalUnitName, site);
    params.subject_alt_names = vec![SanType::URI(
        format!("{SENSOR_URN_PREFIX}{site}:{sensor_id}").try_into().context("sensor URN is not ASCII")?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client only: a stolen sensor key cannot impersonate an aggregator node.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, 5);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).context("cannot sign the sensor certificate")?;
    write_leaf(out_dir, "sensor", &cert.pem(), &key.serialize_pem(), &ca.pem)
}

/// Issue an aggregator node certificate (server and client auth, for ingest and for
/// node-to-node traffic); writes node.pem, node.key and ca.pem and returns node.pem's path.
/// "localhost", 127.0.0.1 and ::1 are always included so loopback setups work.
pub fn issue_node(ca_dir: &Path, node_id: u64, hosts: &[String], out_dir: &Path) -> Result<PathBuf> {
    let ca = load_ca(ca_dir)?;
    let key = KeyPair::generate().context("cannot generate the node key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("wardline-node-{node_id}"));
    params.distinguished_name.push(DnType::OrganizationalUnitName, "aggregator");
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        let h = h.trim();
        if h.is_empty() {
            continue;
        }
        if !names.iter().any(|n| n.eq_ignore_ascii_case(h)) {
            names.push(h.to_string());
        }
    }
    let mut sans = Vec::with_capacity(names.len() + 1);
    for n in &names {
        sans.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                let valid = n.len() <= 253
                    && n.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                    });
                if !valid {
                    bail!("invalid host {n:?} for the node certificate: give a DNS name or an IP address");
                }
                SanType::DnsName(n.as_str().try_into().with_context(|| format!("host {n:?} is not ASCII"))?)
            }
        });
    }
    sans.push(SanType::URI(format!("{NODE_URN_PREFIX}{node_id}").try_into().context("node URN is not ASCII")?));
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, 5);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).context("cannot sign the node certificate")?;
    write_leaf(out_dir, "node", &cert.pem(), &key.serialize_pem(), &ca.pem)
}

/// The sensor a (chain-verified) client certificate names, from its SAN URI.
pub fn sensor_identity(cert_der: &[u8]) -> Result<SensorIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("cannot parse the client certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("malformed subjectAltName extension: {e}"))?
        .context("certificate has no subjectAltName, so it names no sensor")?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(rest) = uri.strip_prefix(SENSOR_URN_PREFIX) {
                if found.is_some() {
                    bail!("certificate names more than one sensor");
                }
                found = Some(rest.to_string());
            }
        }
    }
    let rest = found.with_context(|| {
        format!("certificate has no `{SENSOR_URN_PREFIX}<site>:<sensor_id>` URI, so it is not a sensor certificate")
    })?;
    let (site, sensor_id) = rest
        .split_once(':')
        .with_context(|| format!("sensor URI {SENSOR_URN_PREFIX}{rest} lacks the `<site>:<sensor_id>` part"))?;
    validate_id("sensor id in certificate", sensor_id)?;
    validate_id("site in certificate", site)?;
    Ok(SensorIdentity { sensor_id: sensor_id.to_string(), site: site.to_string() })
}

/// The node id a node certificate names, from its SAN URI.
pub fn node_identity(cert_der: &[u8]) -> Result<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("cannot parse the node certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("malformed subjectAltName extension: {e}"))?
        .context("certificate has no subjectAltName, so it names no node")?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(rest) = uri.strip_prefix(NODE_URN_PREFIX) {
                return rest.parse().with_context(|| format!("node URI {uri} does not end in a number"));
            }
        }
    }
    bail!("certificate has no `{NODE_URN_PREFIX}<id>` URI, so it is not a node certificate")
}

const OPERATOR_URN_PREFIX: &str = "urn:wardline:operator:";

/// An operator as named by a client certificate (decision 0015).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorIdentity {
    pub name: String,
    pub role: crate::auth::Role,
    /// Certificate serial number, hex (audited, so a certificate can be told from a re-issue).
    pub serial: String,
}

/// Issue an operator client certificate carrying `urn:wardline:operator:<role>:<name>`;
/// writes operator.pem, operator.key and ca.pem into `out_dir` and returns operator.pem's
/// path. Needs only the CA folder, so it is also how the very first admin comes to exist.
pub fn issue_operator(ca_dir: &Path, name: &str, role: crate::auth::Role, out_dir: &Path) -> Result<PathBuf> {
    validate_id("operator name", name)?;
    let ca = load_ca(ca_dir)?;
    let key = KeyPair::generate().context("cannot generate the operator key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationalUnitName, "operator");
    params.subject_alt_names = vec![SanType::URI(
        format!("{OPERATOR_URN_PREFIX}{role}:{name}").try_into().context("operator URN is not ASCII")?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Client only: an operator key cannot pose as a node.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    // Shorter than machines: people leave, roles change.
    set_validity(&mut params, 2);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).context("cannot sign the operator certificate")?;
    write_leaf(out_dir, "operator", &cert.pem(), &key.serialize_pem(), &ca.pem)
}

/// The operator a (chain-verified) client certificate names. A sensor or node certificate
/// is refused with a message saying what it is instead.
pub fn operator_identity(cert_der: &[u8]) -> Result<OperatorIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("cannot parse the client certificate: {e}"))?;
    let serial = hex::encode(cert.raw_serial());
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("malformed subjectAltName extension: {e}"))?
        .context("the client certificate has no subjectAltName, so it names no operator")?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(rest) = uri.strip_prefix(OPERATOR_URN_PREFIX) {
                if found.is_some() {
                    bail!("the client certificate names more than one operator");
                }
                found = Some(rest.to_string());
            }
        }
    }
    let Some(rest) = found else {
        if let Ok(s) = sensor_identity(cert_der) {
            bail!("the client certificate is a sensor certificate (sensor {s}), not an operator certificate");
        }
        if let Ok(n) = node_identity(cert_der) {
            bail!("the client certificate is an aggregator node certificate (node {n}), not an operator certificate");
        }
        bail!("the client certificate has no `{OPERATOR_URN_PREFIX}<role>:<name>` URI, so it is not an operator certificate");
    };
    let (role, name) = rest
        .split_once(':')
        .with_context(|| format!("operator URI {OPERATOR_URN_PREFIX}{rest} lacks the `<role>:<name>` part"))?;
    let role: crate::auth::Role = role.parse().map_err(anyhow::Error::msg)?;
    validate_id("operator name in certificate", name)?;
    Ok(OperatorIdentity { name: name.to_string(), role, serial })
}

fn write_leaf(out_dir: &Path, stem: &str, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let cert_path = out_dir.join(format!("{stem}.pem"));
    write_private(&out_dir.join(format!("{stem}.key")), key_pem, false)?;
    write_public(&cert_path, cert_pem)?;
    write_public(&out_dir.join("ca.pem"), ca_pem)?;
    Ok(cert_path)
}

fn write_public(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Write a private key readable by its owner only. `exclusive` refuses an existing file.
fn write_private(path: &Path, text: &str, exclusive: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if exclusive {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("cannot create key file {}", path.display()))?;
    // An existing file keeps its old mode on open; tighten it explicitly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write key file {}", path.display()))?;
    f.sync_all().with_context(|| format!("cannot sync key file {}", path.display()))?;
    Ok(())
}

/// Validity from January 1st of last year (tolerates clock skew between hosts) for
/// `years` years.
/// Valid from a day ago (clocks of sensors and nodes may lag) for `years` years plus a
/// random 0–30 days, so certificates issued together do not all expire on the same day:
/// renewals spread out instead of arriving in one wave.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let now_days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) / 86_400;
    let mut jitter = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jitter);
    let date = |days: u64| {
        let (y, m, d) = civil_from_days(days as i64);
        rcgen::date_time_ymd(y, m, d)
    };
    params.not_before = date(now_days.saturating_sub(1));
    params.not_after = date(now_days + years as u64 * 365 + u64::from(jitter[0] % 31));
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// YYYY-MM-DD of a time in seconds since the epoch (UTC), for messages about expiry.
pub fn date_of(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Serial number of a certificate (lowercase hex), as `admin revoke-sensor --serial` takes it.
pub fn certificate_serial(cert_der: &[u8]) -> Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| anyhow::anyhow!("cannot parse the certificate: {e}"))?;
    Ok(hex::encode(cert.raw_serial()))
}

/// Serial and expiry (seconds since the epoch) of the first certificate in a PEM file.
pub fn pem_serial_and_expiry(path: &Path) -> Result<(String, i64)> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let der = pem_der(&pem, path)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| anyhow::anyhow!("cannot parse {}: {e}", path.display()))?;
    Ok((hex::encode(cert.raw_serial()), cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_794), (2026, 12, 7));
    }

    #[test]
    fn certificates_issued_together_expire_on_spread_days_years_ahead() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(&dir.path().join("ca"), "test").unwrap();
        let mut expiries = std::collections::BTreeSet::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        for i in 0..12 {
            let out = dir.path().join(format!("s{i}"));
            let pem = issue_sensor(&dir.path().join("ca"), &format!("s{i}"), "site", &out).unwrap();
            let (serial, expiry) = pem_serial_and_expiry(&pem).unwrap();
            assert!(!serial.is_empty());
            let years = (expiry - now) as f64 / (365.0 * 86_400.0);
            assert!((4.99..5.1).contains(&years), "sensor certificate valid for {years} years");
            expiries.insert(expiry / 86_400);
        }
        assert!(expiries.len() > 1, "12 certificates issued together all expire on one day");
    }

    #[test]
    fn id_validation() {
        assert!(validate_id("sensor id", "bldg-a_1.x").is_ok());
        assert!(validate_id("sensor id", "").is_err());
        assert!(validate_id("sensor id", "a:b").is_err());
        assert!(validate_id("sensor id", "a b").is_err());
        assert!(validate_id("sensor id", &"x".repeat(65)).is_err());
        assert!(validate_id("sensor id", &"x".repeat(64)).is_ok());
        assert!(validate_id("sensor id", "é").is_err());
    }

    #[test]
    fn operator_certificates_name_operator_and_role_and_others_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "t").unwrap();
        let der = |p: PathBuf| pem_der(&std::fs::read_to_string(&p).unwrap(), &p).unwrap();
        let op = der(issue_operator(&ca, "alice", crate::auth::Role::Analyst, &dir.path().join("alice")).unwrap());
        let id = operator_identity(&op).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("alice", crate::auth::Role::Analyst));
        assert!(!id.serial.is_empty());
        assert!(sensor_identity(&op).is_err() && node_identity(&op).is_err());
        let sensor = der(issue_sensor(&ca, "s1", "ward", &dir.path().join("s")).unwrap());
        assert!(operator_identity(&sensor).unwrap_err().to_string().contains("sensor certificate (sensor s1@ward)"));
        let node = der(issue_node(&ca, 3, &[], &dir.path().join("n")).unwrap());
        assert!(operator_identity(&node).unwrap_err().to_string().contains("node certificate (node 3)"));
        assert!(issue_operator(&ca, "a:b", crate::auth::Role::Admin, &dir.path().join("x")).is_err());
    }

    proptest::proptest! {
        /// The operator parser sees client certificates (chain-checked, but still bytes from
        /// the network): garbage is an error, never a panic.
        #[test]
        fn operator_identity_of_garbage_is_an_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            proptest::prop_assert!(operator_identity(&bytes).is_err());
        }
    }
}
