//! Certificates replaced on disk take effect without a restart (decision 0040).
//!
//! A [`CredentialStore`] holds the validated certificate, key and CA bundle of one
//! [`TlsPaths`]. Every rustls config built from it (server or client) asks the store at each
//! handshake, so a new certificate or CA is used by every NEW connection the moment it is
//! swapped in, while established connections carry on with what they negotiated.
//!
//! [`watch`] checks the files every `check_interval_secs` (a content hash, so a touch is not a
//! reload) and at once on SIGHUP. New files are validated before the swap: the key belongs
//! to the certificate, the certificate chains to the (new) CA bundle and is valid now, and it
//! names the same Wardline identity (`urn:wardline:...` URIs: sensor id and site, or node
//! id) as the certificate the process started with. Files that fail keep the old
//! credentials in use; the failure is logged once per content (which file, why, what to
//! do) and counted.
//!
//! Stores are shared per process by path ([`CredentialStore::shared`]): a node's ingest,
//! API and Raft listeners and its Raft client use one store, so one reload (and one log
//! line) covers them all.

use crate::tls_files::{parse_certs, parse_key, parse_roots, read, CertificateChecks, TlsPaths};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedProtocolVersion};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::{error, info, warn};

/// Changed files are read again after this long and only swapped in when they stayed the
/// same, so a certificate and key written one after the other are seen as a pair.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Identities are the certificate's SAN URIs with this prefix.
const IDENTITY_PREFIX: &str = "urn:wardline:";

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// One validated set: what handshakes present and which CAs they trust.
pub struct Credentials {
    pub certified: Arc<CertifiedKey>,
    /// Serial of the certificate, lowercase hex.
    pub serial: String,
    /// When the certificate stops being valid, seconds since the Unix epoch.
    pub not_after: i64,
    /// The certificate's `urn:wardline:` URIs, sorted.
    pub identity: Vec<String>,
    required: Arc<dyn ClientCertVerifier>,
    optional: Arc<dyn ClientCertVerifier>,
    server: Arc<WebPkiServerVerifier>,
    fingerprint: u64,
}

/// The three files as read at one moment.
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl Files {
    fn read(paths: &TlsPaths) -> Result<Files, CredentialError> {
        let r = |p| read(p).map_err(|e| CredentialError(e.to_string()));
        Ok(Files { cert: r(&paths.cert)?, key: r(&paths.key)?, ca: r(&paths.ca)? })
    }

    /// A hash of the contents, to notice a change (not a security check).
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.cert, &self.key, &self.ca).hash(&mut h);
        h.finish()
    }
}

/// Parse and check `files`. `Ok((credentials, Some(problem)))`: usable, but the certificate
/// does not chain to the CA bundle or is not valid now (the peer will refuse it).
fn validate(
    paths: &TlsPaths,
    files: &Files,
    provider: &Arc<CryptoProvider>,
) -> Result<(Credentials, Option<String>), CredentialError> {
    let fail = |e: &dyn std::fmt::Display| CredentialError(e.to_string());
    let certs = parse_certs(&files.cert, &paths.cert).map_err(|e| fail(&e))?;
    let key = parse_key(&files.key, &paths.key).map_err(|e| fail(&e))?;
    let roots = Arc::new(parse_roots(&files.ca, &paths.ca).map_err(|e| fail(&e))?);
    let certified = CertifiedKey::from_der(certs.clone(), key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CredentialError(format!(
            "the key {} does not belong to the certificate {} — install the key issued together with this \
             certificate (both files come from the same `admin issue-…` run)",
            paths.key.display(),
            paths.cert.display()
        )),
        other => CredentialError(format!(
            "the key {} cannot be used with the certificate {}: {other}",
            paths.key.display(),
            paths.cert.display()
        )),
    })?;
    let (serial, not_after, identity) = describe(&certs[0])
        .map_err(|e| CredentialError(format!("cannot parse the certificate {}: {e}", paths.cert.display())))?;
    let verifier_error =
        |e: &dyn std::fmt::Display| CredentialError(format!("the CA bundle {} is not usable: {e}", paths.ca.display()));
    let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| verifier_error(&e))?;
    let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| verifier_error(&e))?;
    let server =
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build().map_err(|e| verifier_error(&e))?;
    // Every Wardline certificate allows client authentication, so the client verifier checks
    // the chain, the validity period and the CA's signature for sensor and node alike.
    let chain_problem = required.verify_client_cert(&certs[0], &certs[1..], UnixTime::now()).err().map(|e| {
        format!(
            "the certificate {} is not accepted by the CA bundle {} ({e}) — peers will refuse it; issue it from \
             the fleet CA in that bundle and make sure it is valid now",
            paths.cert.display(),
            paths.ca.display()
        )
    });
    let creds = Credentials {
        certified: Arc::new(certified),
        serial,
        not_after,
        identity,
        required,
        optional,
        server,
        fingerprint: files.fingerprint(),
    };
    Ok((creds, chain_problem))
}

/// Serial (hex), expiry (Unix seconds) and `urn:wardline:` URIs of a certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(String, i64, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let serial: String = cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
    let mut identity = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                if uri.starts_with(IDENTITY_PREFIX) {
                    identity.push(uri.to_string());
                }
            }
        }
    }
    identity.sort();
    Ok((serial, cert.validity().not_after.timestamp(), identity))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// YYYY-MM-DD of Unix seconds (UTC), for log lines.
pub fn date_of(secs: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold what is in use (or the same bad content already reported).
    Unchanged,
    /// New credentials are in use; the serials before and after.
    Reloaded { old_serial: String, new_serial: String },
    /// The new files were refused (why); the old credentials stay in use.
    Refused(String),
}

/// The state of one store, for metrics and status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialStatus {
    pub role: &'static str,
    pub paths: TlsPaths,
    pub serial: String,
    pub not_after: i64,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Refused reloads since start (each distinct bad content once, each SIGHUP again).
    pub reload_failures: u64,
    /// Why the files on disk are not in use, while they are not.
    pub last_error: Option<String>,
}

/// The validated credentials of one set of files, swapped when the files change.
pub struct CredentialStore {
    role: &'static str,
    paths: TlsPaths,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Credentials>>,
    /// What every later certificate must name (taken from the first).
    pinned_identity: Vec<String>,
    /// Fingerprint of the files last looked at, good or bad: unchanged content is not
    /// validated (or complained about) again.
    seen: Mutex<u64>,
    reloads: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Days left when expiry was last warned about (one warning a day).
    warned_days: AtomicI64,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialStore").field("role", &self.role).field("cert", &self.paths.cert).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

static STORES: Mutex<Vec<Arc<CredentialStore>>> = Mutex::new(Vec::new());

/// The Prometheus families of one store (decision 0040), for both binaries' `/metrics`:
/// seconds to expiry, the serial in use, reloads and refusals, labelled by role; with
/// `timestamp`, also the expiry as Unix time (the node exports that one itself).
pub fn encode_certificate_metrics(
    enc: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    s: &CredentialStatus,
    timestamp: bool,
) -> std::fmt::Result {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use prometheus_client::metrics::MetricType;
    let role = s.role;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut family = enc.encode_descriptor(
        "wardline_tls_certificate_expiry_seconds",
        "Seconds until the certificate in use expires (negative once expired), by role",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new((s.not_after - now) as f64).encode(family.encode_family(&[("role", role)])?)?;
    if timestamp {
        let mut family = enc.encode_descriptor(
            "wardline_tls_certificate_expiry_timestamp_seconds",
            "When the certificate in use expires, Unix time, by role",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(s.not_after as f64).encode(family.encode_family(&[("role", role)])?)?;
    }
    let mut family = enc.encode_descriptor(
        "wardline_tls_certificate_info",
        "The certificate in use: 1 with its serial (hex) as a label, by role",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1.0).encode(family.encode_family(&[("role", role), ("serial", s.serial.as_str())])?)?;
    let mut family = enc.encode_descriptor(
        "wardline_tls_certificate_reloads",
        "Certificate reloads: new files swapped in (ok) or refused and the old kept (refused), by role",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(s.reloads).encode(family.encode_family(&[("role", role), ("result", "ok")])?)?;
    ConstCounter::new(s.reload_failures).encode(family.encode_family(&[("role", role), ("result", "refused")])?)?;
    ConstGauge::new(s.last_error.is_some() as u8 as f64).encode(enc.encode_descriptor(
        "wardline_tls_certificate_files_refused",
        "1 while the certificate files on disk are refused and the old certificate stays in use",
        None,
        MetricType::Gauge,
    )?)
}

/// Every store of this process.
pub fn stores() -> Vec<Arc<CredentialStore>> {
    lock(&STORES).clone()
}

impl CredentialStore {
    /// Load and validate `paths` (ring provider). A certificate that does not chain to the
    /// CA bundle is still loaded, with a warning: at start the peer's refusal, with its
    /// reason, is the clearer message.
    pub fn open(role: &'static str, paths: &TlsPaths) -> Result<CredentialStore, CredentialError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = Files::read(paths)?;
        let (creds, chain_problem) = validate(paths, &files, &provider)?;
        if let Some(problem) = &chain_problem {
            warn!(role, "{problem}");
        }
        info!(
            role,
            cert = %paths.cert.display(),
            serial = %creds.serial,
            expires = %date_of(creds.not_after),
            "loaded the {role} certificate (replacing its files later takes effect without a restart)"
        );
        Ok(CredentialStore {
            role,
            paths: paths.clone(),
            provider,
            pinned_identity: creds.identity.clone(),
            seen: Mutex::new(creds.fingerprint),
            current: RwLock::new(Arc::new(creds)),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            warned_days: AtomicI64::new(i64::MIN),
        })
    }

    /// The process's store for `paths`, created on first use. A later call reloads changed
    /// files first (as [`Self::reload`]), so a config built now uses what is on disk if valid.
    pub fn shared(role: &'static str, paths: &TlsPaths) -> Result<Arc<CredentialStore>, CredentialError> {
        let mut all = lock(&STORES);
        if let Some(store) = all.iter().find(|s| s.paths == *paths) {
            store.reload(false);
            return Ok(store.clone());
        }
        let store = Arc::new(CredentialStore::open(role, paths)?);
        all.push(store.clone());
        Ok(store)
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    pub fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }

    /// The credentials new handshakes use now.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn status(&self) -> CredentialStatus {
        let c = self.current();
        CredentialStatus {
            role: self.role,
            paths: self.paths.clone(),
            serial: c.serial.clone(),
            not_after: c.not_after,
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.failures.load(Ordering::Relaxed),
            last_error: lock(&self.last_error).clone(),
        }
    }

    /// Fingerprint of the files on disk now; `None` when one cannot be read.
    fn disk_fingerprint(&self) -> Option<u64> {
        Files::read(&self.paths).ok().map(|f| f.fingerprint())
    }

    /// Read the files and swap them in if they changed and pass validation. `force` (SIGHUP)
    /// validates and reports even content already seen.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let files = Files::read(&self.paths);
        let fingerprint = files.as_ref().map_or(0, Files::fingerprint);
        {
            let mut seen = lock(&self.seen);
            if !force && *seen == fingerprint {
                return ReloadOutcome::Unchanged;
            }
            *seen = fingerprint;
        }
        let old = self.current();
        if fingerprint == old.fingerprint {
            // Back to what is in use (e.g. a bad replacement was undone).
            *lock(&self.last_error) = None;
            return ReloadOutcome::Unchanged;
        }
        let checked =
            files.and_then(|files| validate(&self.paths, &files, &self.provider)).and_then(
                |(new, chain)| match chain {
                    Some(problem) => Err(CredentialError(problem)),
                    None if new.identity != self.pinned_identity => Err(CredentialError(format!(
                        "the certificate {} names {} but this {} runs as {} — a certificate for another identity is \
                     never swapped in; issue one for this identity, or restart the process deliberately",
                        self.paths.cert.display(),
                        show_identity(&new.identity),
                        self.role,
                        show_identity(&self.pinned_identity)
                    ))),
                    None => Ok(new),
                },
            );
        match checked {
            Ok(new) => {
                let new = Arc::new(new);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = None;
                self.warned_days.store(i64::MIN, Ordering::Relaxed);
                info!(
                    role = self.role,
                    cert = %self.paths.cert.display(),
                    old_serial = %old.serial,
                    new_serial = %new.serial,
                    expires = %date_of(new.not_after),
                    "reloaded the {} certificate and CA bundle: new connections present serial {} (existing \
                     connections keep theirs)",
                    self.role,
                    new.serial
                );
                ReloadOutcome::Reloaded { old_serial: old.serial.clone(), new_serial: new.serial.clone() }
            }
            Err(CredentialError(why)) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *lock(&self.last_error) = Some(why.clone());
                warn!(
                    role = self.role,
                    serial = %old.serial,
                    "refused the new {} certificate files: {why}; still using serial {} (expires {}). Fix the \
                     files (write each to a temporary name and rename it into place) — they are checked again \
                     when they change and on SIGHUP",
                    self.role,
                    old.serial,
                    date_of(old.not_after)
                );
                ReloadOutcome::Refused(why)
            }
        }
    }

    /// Log once a day while the certificate in use expires within `warn_days` (an error once
    /// it has expired).
    pub fn check_expiry(&self, warn_days: u32) {
        let c = self.current();
        let left = c.not_after - unix_now();
        let days = left.div_euclid(86_400);
        if days >= i64::from(warn_days) || self.warned_days.swap(days, Ordering::Relaxed) == days {
            return;
        }
        let what = issue_command(self.role);
        if left <= 0 {
            error!(
                role = self.role, serial = %c.serial, cert = %self.paths.cert.display(),
                "the {} certificate expired on {}: peers refuse new connections — issue a new one with `{what}` \
                 and put it in place of {} and its key; it is reloaded without a restart",
                self.role, date_of(c.not_after), self.paths.cert.display()
            );
        } else {
            warn!(
                role = self.role, serial = %c.serial, cert = %self.paths.cert.display(),
                "the {} certificate expires on {} (in {days} days): issue a new one with `{what}` and put it in \
                 place of {} and its key; it is reloaded without a restart",
                self.role, date_of(c.not_after), self.paths.cert.display()
            );
        }
    }
}

fn issue_command(role: &str) -> &'static str {
    match role {
        "sensor" => "wardline-aggregator admin issue-sensor",
        _ => "wardline-aggregator admin issue-node",
    }
}

fn show_identity(ids: &[String]) -> String {
    if ids.is_empty() {
        "no Wardline identity".to_string()
    } else {
        ids.join(", ")
    }
}

/// Check every store of the process each `checks.check_interval()` and on SIGHUP, and warn
/// about expiry, until `shutdown` resolves. The SIGHUP handler is installed when this is
/// called (inside a tokio runtime), so a SIGHUP sent once the caller went on is never taken
/// for the default "terminate".
pub fn watch(checks: CertificateChecks, shutdown: impl Future<Output = ()>) -> impl Future<Output = ()> {
    let hangup = Hangup::install();
    watch_loop(checks, hangup, None, shutdown)
}

/// [`watch`] limited to `only` (tests that share a process with other stores).
pub fn watch_stores(
    only: Vec<Arc<CredentialStore>>,
    checks: CertificateChecks,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let hangup = Hangup::install();
    watch_loop(checks, hangup, Some(only), shutdown)
}

async fn watch_loop(
    checks: CertificateChecks,
    mut hangup: Hangup,
    only: Option<Vec<Arc<CredentialStore>>>,
    shutdown: impl Future<Output = ()>,
) {
    let watched = || only.clone().unwrap_or_else(stores);
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(checks.check_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                for store in watched() {
                    let before = store.disk_fingerprint();
                    if before != Some(*lock(&store.seen)) {
                        tokio::time::sleep(SETTLE).await;
                        if store.disk_fingerprint() != before {
                            // Still being written: look again at the next check.
                            continue;
                        }
                        store.reload(false);
                    }
                    store.check_expiry(checks.expiry_warning_days);
                }
            }
            _ = hangup.recv() => {
                info!("SIGHUP: reloading certificates, keys and CA bundles");
                for store in watched() {
                    if store.reload(true) == ReloadOutcome::Unchanged {
                        info!(role = store.role, serial = %store.current().serial, "SIGHUP: the {} certificate files are unchanged", store.role);
                    }
                    store.check_expiry(checks.expiry_warning_days);
                }
            }
        }
    }
}

/// SIGHUP where there is one; elsewhere a signal that never comes.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Hangup {
        #[cfg(unix)]
        {
            let signal = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(
                        "cannot install a SIGHUP handler ({e}); certificates are reloaded by the periodic check only"
                    );
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Server side: presents the store's current certificate.
#[derive(Debug)]
struct CurrentServerCert(Arc<CredentialStore>);

impl ResolvesServerCert for CurrentServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

/// Client side: presents the store's current certificate.
#[derive(Debug)]
struct CurrentClientCert(Arc<CredentialStore>);

impl ResolvesClientCert for CurrentClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies client certificates against the store's current CA bundle.
#[derive(Debug)]
struct CurrentClientVerifier {
    store: Arc<CredentialStore>,
    mandatory: bool,
}

impl CurrentClientVerifier {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let c = self.store.current();
        if self.mandatory {
            c.required.clone()
        } else {
            c.optional.clone()
        }
    }
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No CA names are hinted (they change with the bundle): a client then sends the
    /// certificate it has, which is what every Wardline client does anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// Verifies server certificates against the store's current CA bundle.
#[derive(Debug)]
struct CurrentServerVerifier(Arc<CredentialStore>);

impl ServerCertVerifier for CurrentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().server.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().server.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().server.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().server.supported_verify_schemes()
    }
}

/// A rustls server config presenting `store`'s certificate and verifying client
/// certificates (required or optional) against its CA bundle, both as of each handshake.
pub fn server_config(
    store: &Arc<CredentialStore>,
    client_certs_required: bool,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, rustls::Error> {
    let verifier = Arc::new(CurrentClientVerifier { store: store.clone(), mandatory: client_certs_required });
    Ok(rustls::ServerConfig::builder_with_provider(store.provider())
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CurrentServerCert(store.clone()))))
}

/// A rustls client config presenting `store`'s certificate and trusting only its CA bundle,
/// both as of each handshake. Session resumption is off: a resumed session would carry the
/// certificate of the session it resumes, and a rotated certificate must show on every new
/// connection (a full handshake costs one signature).
pub fn client_config(
    store: &Arc<CredentialStore>,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(store.provider())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CurrentServerVerifier(store.clone())))
        .with_client_cert_resolver(Arc::new(CurrentClientCert(store.clone())));
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_of_unix_seconds() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(1_796_601_599), "2026-12-06");
        assert_eq!(date_of(-1), "1969-12-31");
    }

    #[test]
    fn checks_default_to_thirty_seconds_and_thirty_days_and_never_spin() {
        let c: CertificateChecks = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CertificateChecks { check_interval_secs: 30, expiry_warning_days: 30 });
        let zero = CertificateChecks { check_interval_secs: 0, ..c };
        assert_eq!(zero.check_interval(), Duration::from_secs(1));
    }
}
