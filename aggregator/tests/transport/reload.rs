//! Certificates replaced on disk without a restart (decision 0040), over real QUIC with
//! mutual TLS on loopback: a sensor keeps delivering while its certificate is re-issued and
//! its next connection presents the new serial; a node's new certificate is presented by new
//! ingest handshakes while an existing connection carries on; a CA added to the bundle is
//! trusted at once; broken, mismatched, foreign or other-identity files are refused and the
//! old credentials keep working.

use crate::quic::{device, open_spool, start_server, uplink_cfg, wait_until, Fleet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::{BatchHandler, IngestLimits};
use wardline_aggregator::pki::{self, SensorIdentity};
use wardline_common::tls_reload::{CredentialStore, ReloadOutcome};
use wardline_common::wire::BatchReply;
use wardline_common::Batch;
use wardline_sensor::uplink;

/// Acks every batch; records the serial of every sensor handshake (the revocation check at
/// the handshake sees it) and refuses revoked serials.
#[derive(Default)]
struct SerialWatcher {
    seen: Mutex<Vec<u64>>,
    handshake_serials: Mutex<Vec<String>>,
    revoked: Mutex<Vec<String>>,
}

impl BatchHandler for SerialWatcher {
    async fn handle(&self, _identity: SensorIdentity, batch: Batch) -> BatchReply {
        self.seen.lock().unwrap().push(batch.seq);
        BatchReply::Ack { batch_id: batch.id, seq: batch.seq, duplicate: false }
    }

    async fn revoked(&self, _identity: &SensorIdentity, serial: &str) -> Option<String> {
        let mut serials = self.handshake_serials.lock().unwrap();
        if serials.last().map(String::as_str) != Some(serial) {
            serials.push(serial.to_string());
        }
        self.revoked.lock().unwrap().iter().any(|s| s == serial).then(|| "rotated out".to_string())
    }
}

fn sensor_paths(dir: &Path) -> TlsPaths {
    TlsPaths::in_dir(dir, "sensor")
}

fn serial_of(pem: &Path) -> String {
    pki::pem_serial_and_expiry(pem).unwrap().0
}

/// Move `stem`.pem and `stem`.key of `from` over those in `to`, each by an atomic rename,
/// as docs/operations.md tells operators to.
fn install(from: &Path, to: &Path, stem: &str) {
    for ext in ["key", "pem"] {
        std::fs::rename(from.join(format!("{stem}.{ext}")), to.join(format!("{stem}.{ext}"))).unwrap();
    }
}

/// Re-issue the sensor certificate of `dir` (same id and site) from `ca` and install it.
fn reissue_sensor(fleet: &Fleet, ca: &str, id: &str, site: &str, dir: &Path) -> String {
    let staging = fleet.path().join(format!("staging-{}", ulid::Ulid::new()));
    pki::issue_sensor(&fleet.path().join(ca), id, site, &staging).unwrap();
    install(&staging, dir, "sensor");
    serial_of(&dir.join("sensor.pem"))
}

#[tokio::test]
async fn a_sensor_keeps_delivering_while_its_certificate_is_rotated_and_reconnects_with_the_new_serial() {
    let fleet = Fleet::new();
    let node = Arc::new(SerialWatcher::default());
    let server = start_server(&fleet, node.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let old_serial = serial_of(&sensor.join("sensor.pem"));
    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s1", "north").unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let uplink = tokio::spawn(uplink::run_uplink(spool.clone(), uplink_cfg(server.addr, &sensor), async move {
        let _ = stop_rx.await;
    }));
    wait_until("batch 1 is acked", || spool.is_empty()).await;

    // Re-issued on disk while connected: the store swaps it in, the live connection goes on.
    let new_serial = reissue_sensor(&fleet, "ca", "s1", "north", &sensor);
    assert_ne!(new_serial, old_serial);
    let store = CredentialStore::shared("sensor", &sensor_paths(&sensor)).unwrap();
    assert_eq!(store.current().serial, new_serial, "the re-issued certificate is in use for new handshakes");
    assert_eq!(store.status().reloads, 1);
    // The sensor's /metrics shows the certificate in use and the reload.
    let metrics = wardline_sensor::telemetry::render();
    assert!(
        metrics.contains(&format!("wardline_tls_certificate_info{{role=\"sensor\",serial=\"{new_serial}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("wardline_tls_certificate_expiry_seconds{role=\"sensor\"}"), "{metrics}");
    spool.push(vec![device(2)], "s1", "north").unwrap();
    wait_until("batch 2 is acked over the existing connection", || spool.is_empty()).await;
    assert_eq!(*node.handshake_serials.lock().unwrap(), vec![old_serial.clone()], "no reconnection was needed");

    // The old certificate is revoked: its connection is closed, and the sensor's next
    // connection presents the new serial and keeps delivering.
    node.revoked.lock().unwrap().push(old_serial.clone());
    let stats = server.stats.clone();
    wait_until("the node closes the old certificate's connection", || stats.snapshot().connections_active == 0).await;
    spool.push(vec![device(3)], "s1", "north").unwrap();
    wait_until("batch 3 is acked over a new connection", || {
        spool.is_empty() && node.handshake_serials.lock().unwrap().contains(&new_serial)
    })
    .await;
    let serials = node.handshake_serials.lock().unwrap().clone();
    assert_eq!(serials.first(), Some(&old_serial), "{serials:?}");
    assert!(serials.iter().all(|s| *s == old_serial || *s == new_serial), "{serials:?}");
    assert_eq!(*node.seen.lock().unwrap(), vec![1, 2, 3], "every batch applied once, in order");
    let _ = stop_tx.send(());
    uplink.await.unwrap().unwrap();
    server.stop().await;
}

/// Open a QUIC connection to ingest as the sensor in `sensor_dir` and return it with the
/// serial of the certificate the node presented.
async fn handshake(addr: SocketAddr, sensor_dir: &Path) -> (quinn::Endpoint, quinn::Connection, String) {
    let cfg = wardline_sensor::tls::quic_client_config(&sensor_paths(sensor_dir)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(cfg);
    let conn = endpoint.connect(addr, "localhost").unwrap().await.unwrap();
    let chain = conn.peer_identity().unwrap().downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().unwrap();
    let serial = pki::certificate_serial(chain[0].as_ref()).unwrap();
    (endpoint, conn, serial)
}

#[tokio::test]
async fn a_node_certificate_replaced_on_disk_is_presented_by_new_ingest_handshakes_only() {
    let fleet = Fleet::new();
    let node_dir = fleet.path().join("node1");
    let node_tls = TlsPaths::in_dir(&node_dir, "node");
    let old_serial = serial_of(&node_tls.cert);
    let server = start_server(&fleet, Arc::new(SerialWatcher::default()), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let (_e1, before, presented) = handshake(server.addr, &sensor).await;
    assert_eq!(presented, old_serial);

    let staging = fleet.path().join("node1-new");
    pki::issue_node(&fleet.path().join("ca"), 1, &[], &staging).unwrap();
    install(&staging, &node_dir, "node");
    let new_serial = serial_of(&node_tls.cert);
    let store = CredentialStore::shared("node", &node_tls).unwrap();
    assert_eq!(store.current().serial, new_serial);

    let (_e2, after, presented) = handshake(server.addr, &sensor).await;
    assert_eq!(presented, new_serial, "a new handshake presents the new node certificate");
    assert!(before.close_reason().is_none(), "the connection made before the swap is still open");
    after.close(0u32.into(), b"done");
    before.close(0u32.into(), b"done");
    server.stop().await;
}

#[tokio::test]
async fn a_ca_added_to_the_bundle_is_trusted_by_new_handshakes() {
    let fleet = Fleet::new();
    let node_dir = fleet.path().join("node1");
    let server = start_server(&fleet, Arc::new(SerialWatcher::default()), IngestLimits::default());

    // CA rotation, step 1: a second CA; its sensor trusts both CAs (its node is still from the first).
    pki::init_ca(&fleet.path().join("ca2"), "next fleet CA").unwrap();
    let sensor = fleet.sensor("ca2", "s9", "north");
    let bundle = [fleet.path().join("ca/ca.pem"), fleet.path().join("ca2/ca.pem")]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    std::fs::write(sensor.join("ca.pem"), &bundle).unwrap();
    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s9", "north").unwrap();
    let refused = server.stats.clone();
    let refused_before = refused.snapshot().connections_refused;
    uplink::run_uplink(spool.clone(), uplink_cfg(server.addr, &sensor), async move {
        wait_until("the node refuses the new CA's sensor", || refused.snapshot().connections_refused > refused_before)
            .await;
    })
    .await
    .unwrap();
    assert_eq!(spool.len(), 1);

    // Step 2: the node's bundle gets the new CA too; without a restart its sensors get in.
    let tmp = node_dir.join("ca.pem.new");
    std::fs::write(&tmp, &bundle).unwrap();
    std::fs::rename(&tmp, node_dir.join("ca.pem")).unwrap();
    let store = CredentialStore::shared("node", &TlsPaths::in_dir(&node_dir, "node")).unwrap();
    assert!(store.status().last_error.is_none(), "{:?}", store.status().last_error);
    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        uplink::drain_once(spool.clone(), uplink_cfg(server.addr, &sensor), std::future::pending()),
    )
    .await
    .expect("the new CA's sensor delivers once the node trusts that CA")
    .unwrap();
    assert_eq!(stats.acked, 1);
    server.stop().await;
}

/// Write `text` to `path` by an atomic rename.
fn replace(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn refused(outcome: ReloadOutcome) -> String {
    match outcome {
        ReloadOutcome::Refused(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_replacements_are_refused_counted_and_the_old_certificate_keeps_working() {
    let fleet = Fleet::new();
    let node = Arc::new(SerialWatcher::default());
    let server = start_server(&fleet, node.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let paths = sensor_paths(&sensor);
    let serial = serial_of(&paths.cert);
    let store = CredentialStore::shared("sensor", &paths).unwrap();
    let (good_cert, good_key) = (std::fs::read(&paths.cert).unwrap(), std::fs::read(&paths.key).unwrap());
    let other = fleet.sensor("ca", "s2", "north");
    pki::init_ca(&fleet.path().join("rogue"), "someone else").unwrap();
    let foreign = fleet.sensor("rogue", "s1", "north");

    // A key that belongs to another certificate.
    replace(&paths.key, &std::fs::read(other.join("sensor.key")).unwrap());
    let why = refused(store.reload(false));
    assert!(why.contains("does not belong to the certificate") && why.contains("sensor.key"), "{why}");
    // The same bad content is reported once, not at every check; SIGHUP (force) asks again.
    assert_eq!(store.reload(false), ReloadOutcome::Unchanged);
    assert_eq!(store.status().reload_failures, 1);
    refused(store.reload(true));
    assert_eq!(store.status().reload_failures, 2);

    // A certificate (and its key) from another CA.
    replace(&paths.cert, &std::fs::read(foreign.join("sensor.pem")).unwrap());
    replace(&paths.key, &std::fs::read(foreign.join("sensor.key")).unwrap());
    let why = refused(store.reload(false));
    assert!(why.contains("not accepted by the CA bundle"), "{why}");

    // A valid certificate of another sensor: the identity may not change under a running process.
    replace(&paths.cert, &std::fs::read(other.join("sensor.pem")).unwrap());
    replace(&paths.key, &std::fs::read(other.join("sensor.key")).unwrap());
    let why = refused(store.reload(false));
    assert!(why.contains("urn:wardline:sensor:north:s2") && why.contains("urn:wardline:sensor:north:s1"), "{why}");

    // Not PEM at all.
    replace(&paths.cert, b"this is not a certificate\n");
    let why = refused(store.reload(false));
    assert!(why.contains("sensor.pem") && why.contains("no PEM certificate"), "{why}");

    let status = store.status();
    assert_eq!((status.serial.as_str(), status.reload_failures, status.reloads), (serial.as_str(), 5, 0));
    assert!(status.last_error.is_some());

    // Meanwhile the old credentials still connect and deliver.
    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s1", "north").unwrap();
    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        uplink::drain_once(spool.clone(), uplink_cfg(server.addr, &sensor), std::future::pending()),
    )
    .await
    .expect("the old certificate still delivers")
    .unwrap();
    assert_eq!(stats.acked, 1);
    assert_eq!(*node.handshake_serials.lock().unwrap(), vec![serial.clone()]);

    // The good files back: nothing to swap, and the refusal is over.
    replace(&paths.cert, &good_cert);
    replace(&paths.key, &good_key);
    assert_eq!(store.reload(false), ReloadOutcome::Unchanged);
    assert!(store.status().last_error.is_none());
    // A proper re-issue is then taken.
    let new_serial = reissue_sensor(&fleet, "ca", "s1", "north", &sensor);
    assert_eq!(store.reload(false), ReloadOutcome::Reloaded { old_serial: serial, new_serial });
    server.stop().await;
}

#[tokio::test]
async fn the_periodic_check_swaps_in_files_changed_on_disk_without_a_signal() {
    let fleet = Fleet::new();
    let sensor = fleet.sensor("ca", "s1", "north");
    let store = CredentialStore::shared("sensor", &sensor_paths(&sensor)).unwrap();
    let old_serial = store.current().serial.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let checks = wardline_common::tls_files::CertificateChecks { check_interval_secs: 1, expiry_warning_days: 30 };
    let watcher = tokio::spawn(wardline_common::tls_reload::watch_stores(vec![store.clone()], checks, async move {
        let _ = stop_rx.await;
    }));
    let new_serial = reissue_sensor(&fleet, "ca", "s1", "north", &sensor);
    assert_ne!(new_serial, old_serial);
    wait_until("the periodic check swaps in the re-issued certificate", || store.current().serial == new_serial).await;
    assert_eq!((store.status().reloads, store.status().reload_failures), (1, 0));
    let _ = stop_tx.send(());
    watcher.await.unwrap();
}

#[tokio::test]
async fn expiry_within_the_warning_window_is_logged_once_a_day_with_what_to_do() {
    let logs = crate::quic::LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    let sensor = fleet.sensor("ca", "s1", "north");
    let store = CredentialStore::shared("sensor", &sensor_paths(&sensor)).unwrap();
    // Five years ahead is outside 30 days: nothing said.
    store.check_expiry(30);
    assert!(!logs.text().contains("certificate expires on"), "{}", logs.text());
    // Inside a (deliberately wide) window: one warning naming the date, the file and the fix.
    store.check_expiry(3000);
    store.check_expiry(3000);
    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("certificate expires on")).collect();
    assert_eq!(warnings.len(), 1, "once a day, not at every check:\n{text}");
    let expires = wardline_common::tls_reload::date_of(store.current().not_after);
    assert!(
        warnings[0].contains(&expires)
            && warnings[0].contains("sensor.pem")
            && warnings[0].contains("wardline-aggregator admin issue-sensor"),
        "{}",
        warnings[0]
    );
}
