//! Revocation at the ingest: a revoked sensor is refused at the handshake, and a live
//! connection of a sensor revoked while it delivers is closed within seconds; its batches
//! stay in its spool (nothing lost), and lifting the revocation lets them through.

use crate::quic::{device, open_spool, start_server, uplink_cfg, wait_until, Fleet, LogBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wardline_aggregator::ingest::{BatchHandler, IngestLimits};
use wardline_aggregator::pki::{self, SensorIdentity};
use wardline_common::wire::BatchReply;
use wardline_common::Batch;
use wardline_sensor::uplink;

/// Acks every batch unless the sensor's certificate is on its revocation list (sensor id
/// with serial "" for the whole sensor, or one serial).
#[derive(Default)]
struct RevocableNode {
    seen: Mutex<Vec<u64>>,
    revoked: Mutex<Vec<(String, String)>>,
}

impl BatchHandler for RevocableNode {
    async fn handle(&self, _identity: SensorIdentity, batch: Batch) -> BatchReply {
        self.seen.lock().unwrap().push(batch.seq);
        BatchReply::Ack { batch_id: batch.id, seq: batch.seq, duplicate: false }
    }

    async fn revoked(&self, identity: &SensorIdentity, serial: &str) -> Option<String> {
        let list = self.revoked.lock().unwrap();
        list.iter()
            .any(|(id, s)| *id == identity.sensor_id && (s.is_empty() || s == serial))
            .then(|| "reported stolen".to_string())
    }
}

fn serial_of(dir: &std::path::Path) -> String {
    pki::pem_serial_and_expiry(&dir.join("sensor.pem")).unwrap().0
}

#[tokio::test]
async fn a_sensor_revoked_mid_stream_is_cut_off_keeps_its_batches_and_resumes_when_lifted() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    let node = Arc::new(RevocableNode::default());
    let server = start_server(&fleet, node.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s1", "north").unwrap();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let uplink = tokio::spawn(uplink::run_uplink(spool.clone(), uplink_cfg(server.addr, &sensor), async move {
        let _ = stop_rx.await;
    }));
    wait_until("batch 1 is acked", || spool.is_empty()).await;

    // Revoked while connected: the node closes the live connection within seconds.
    node.revoked.lock().unwrap().push(("s1".into(), String::new()));
    wait_until("the live connection is closed", || logs.text().contains("closing a revoked sensor's connection")).await;
    spool.push(vec![device(2)], "s1", "north").unwrap();
    wait_until("the reconnecting sensor is refused at the handshake", || {
        logs.text().contains("refused a revoked sensor")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*node.seen.lock().unwrap(), vec![1], "a batch of a revoked sensor reached the handler");
    assert_eq!(spool.len(), 1, "the refused sensor keeps its batch");
    assert!(server.stats.snapshot().connections_refused >= 1);
    let text = logs.text();
    assert!(text.contains("reported stolen"), "the node's log says why:\n{text}");

    // Lifted: the kept batch is delivered, once.
    node.revoked.lock().unwrap().clear();
    wait_until("batch 2 is delivered after the revocation is lifted", || spool.is_empty()).await;
    assert_eq!(*node.seen.lock().unwrap(), vec![1, 2]);
    let _ = stop_tx.send(());
    uplink.await.unwrap().unwrap();
    server.stop().await;
}

#[tokio::test]
async fn revoking_one_certificate_leaves_the_sensors_rotated_certificate_working() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    let node = Arc::new(RevocableNode::default());
    let server = start_server(&fleet, node.clone(), IngestLimits::default());
    let old = fleet.sensor("ca", "s1", "north");
    let new = fleet.path().join("rotated");
    pki::issue_sensor(&fleet.path().join("ca"), "s1", "north", &new).unwrap();
    assert_ne!(serial_of(&old), serial_of(&new), "a re-issued certificate has its own serial");
    node.revoked.lock().unwrap().push(("s1".into(), serial_of(&old)));

    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s1", "north").unwrap();
    let refused = server.stats.clone();
    uplink::run_uplink(spool.clone(), uplink_cfg(server.addr, &old), async move {
        wait_until("the old certificate is refused", || refused.snapshot().connections_refused >= 1).await;
    })
    .await
    .unwrap();
    assert!(node.seen.lock().unwrap().is_empty() && spool.len() == 1);

    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        uplink::drain_once(spool.clone(), uplink_cfg(server.addr, &new), std::future::pending()),
    )
    .await
    .expect("the rotated certificate delivers")
    .unwrap();
    assert_eq!(stats.acked, 1);
    assert_eq!(*node.seen.lock().unwrap(), vec![1]);
    server.stop().await;
}
