//! Real QUIC + mutual TLS between the real ingest server and the real sensor uplink, with
//! certificates from a temporary fleet CA.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::{BatchHandler, IngestLimits, IngestServer, IngestStats};
use wardline_aggregator::pki::{self, SensorIdentity};
use wardline_common::wire::BatchReply;
use wardline_common::{Batch, DeviceObservation, Event, FlowRecord, MacAddr};
use wardline_sensor::spool::Spool;
use wardline_sensor::uplink::{self, UplinkConfig};

/// Records every batch it is given and answers with a fixed kind of reply.
pub(crate) struct Recorder {
    seen: Mutex<Vec<(SensorIdentity, Batch)>>,
    retry_later: bool,
    /// Answer like a Raft follower (RetryLater naming the leader).
    not_leader: bool,
    /// The leader's ingest address a follower names.
    leader_hint: Mutex<Option<String>>,
}

impl Recorder {
    fn acking() -> Arc<Self> {
        Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            retry_later: false,
            not_leader: false,
            leader_hint: Mutex::new(None),
        })
    }
    fn follower() -> Arc<Self> {
        Arc::new(Recorder {
            seen: Mutex::new(Vec::new()),
            retry_later: false,
            not_leader: true,
            leader_hint: Mutex::new(None),
        })
    }
    fn seen(&self) -> Vec<(SensorIdentity, Batch)> {
        self.seen.lock().unwrap().clone()
    }
}

impl BatchHandler for Recorder {
    async fn handle(&self, identity: SensorIdentity, batch: Batch) -> BatchReply {
        let (batch_id, seq) = (batch.id, batch.seq);
        self.seen.lock().unwrap().push((identity, batch));
        if self.not_leader {
            let reason = wardline_common::wire::not_leader_reason(self.leader_hint.lock().unwrap().as_deref());
            BatchReply::RetryLater { batch_id, seq, reason }
        } else if self.retry_later {
            BatchReply::RetryLater { batch_id, seq, reason: "test: cluster has no leader".into() }
        } else {
            BatchReply::Ack { batch_id, seq, duplicate: false }
        }
    }
}

pub(crate) struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    pub(crate) fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        pki::init_ca(&dir.path().join("ca"), "test fleet").unwrap();
        pki::issue_node(&dir.path().join("ca"), 1, &[], &dir.path().join("node1")).unwrap();
        Fleet { dir }
    }
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
    fn node_tls(&self) -> TlsPaths {
        TlsPaths::in_dir(&self.path().join("node1"), "node")
    }
    pub(crate) fn sensor(&self, ca: &str, id: &str, site: &str) -> PathBuf {
        let out = self.path().join(format!("sensor-{ca}-{id}"));
        pki::issue_sensor(&self.path().join(ca), id, site, &out).unwrap();
        out
    }
}

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) stats: Arc<IngestStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), self.task).await.unwrap().unwrap().unwrap();
    }
}

pub(crate) fn start_server<H: BatchHandler>(fleet: &Fleet, handler: Arc<H>, limits: IngestLimits) -> Server {
    let stats = Arc::new(IngestStats::default());
    let server =
        IngestServer::bind("127.0.0.1:0".parse().unwrap(), &fleet.node_tls(), handler, stats.clone(), limits).unwrap();
    let addr = server.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    Server { addr, stats, stop: Some(tx), task }
}

pub(crate) fn uplink_cfg(addr: SocketAddr, sensor_dir: &Path) -> UplinkConfig {
    let mut cfg = UplinkConfig::new(
        addr,
        "localhost".into(),
        sensor_dir.join("sensor.pem"),
        sensor_dir.join("sensor.key"),
        sensor_dir.join("ca.pem"),
    );
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(400);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg
}

pub(crate) fn device(n: u8) -> Event {
    Event::Device(DeviceObservation {
        mac: MacAddr([0x00, 0x1a, 0x2b, 0, 0, n]),
        ips: vec![[10, 0, 0, n].into()],
        vlans: vec![],
        first_seen_us: 1,
        last_seen_us: 2,
        packets: 1,
        bytes: 60,
        evidence: vec![],
    })
}

/// A bare QUIC client with the sensor certificates in `sensor_dir`, offering only `alpn`:
/// for tests that write frames by hand.
pub(crate) fn raw_client(sensor_dir: &Path, alpn: &[u8]) -> quinn::Endpoint {
    let tls = wardline_sensor::config::TlsPaths {
        cert: sensor_dir.join("sensor.pem"),
        key: sensor_dir.join("sensor.key"),
        ca: sensor_dir.join("ca.pem"),
    };
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(wardline_sensor::tls::quic_client_config_offering(&tls, &[alpn]).unwrap());
    endpoint
}

pub(crate) fn flow(n: u32) -> Event {
    Event::Flow(FlowRecord {
        ip_proto: 6,
        vlan: Some(20),
        a_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        b_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        a_ip: [10, 0, 0, 1].into(),
        b_ip: [10, 0, 0, 2].into(),
        a_port: (n % 60000) as u16,
        b_port: 104,
        first_seen_us: n as u64,
        last_seen_us: n as u64 + 10,
        packets_ab: 10,
        packets_ba: 9,
        bytes_ab: 1000,
        bytes_ba: 900,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: "dicom".into(),
        end_reason: "fin".into(),
    })
}

pub(crate) fn open_spool(fleet: &Fleet, name: &str) -> Arc<Spool> {
    Arc::new(Spool::open(&fleet.path().join(name), 1 << 30).unwrap())
}

/// Captures log lines of the current thread (tests run on a current-thread runtime, so the
/// server's tasks log here too).
#[derive(Clone, Default)]
pub(crate) struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    pub(crate) fn install(&self) -> tracing::subscriber::DefaultGuard {
        let w = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn batches_are_delivered_in_order_and_removed_after_ack() {
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "bldg-a-1", "north");
    let spool = open_spool(&fleet, "spool");
    let mut pushed = Vec::new();
    for i in 0..5u8 {
        pushed.push(spool.push(vec![device(i), flow(i as u32)], "bldg-a-1", "north").unwrap());
    }

    let stats = tokio::time::timeout(
        Duration::from_secs(30),
        uplink::drain_once(spool.clone(), uplink_cfg(server.addr, &sensor), std::future::pending()),
    )
    .await
    .expect("drain finishes")
    .unwrap();

    assert_eq!(stats.acked, 5);
    assert_eq!(stats.rejected, 0);
    assert_eq!(spool.len(), 0, "acked batches leave the spool");
    let seen = handler.seen();
    assert_eq!(seen.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(), pushed, "same batches, in seq order");
    for (identity, _) in &seen {
        assert_eq!(identity, &SensorIdentity { sensor_id: "bldg-a-1".into(), site: "north".into() });
    }
    let s = server.stats.snapshot();
    assert_eq!(s.connections_accepted, 1);
    assert_eq!(s.connections_refused, 0);
    assert_eq!((s.batches_received, s.batches_acked), (5, 5));
    server.stop().await;
}

/// A node that answers every batch RetryLater, a spool with seq 1 and 2, and an uplink with
/// `max_in_flight` run until the node has been sent three batches. The fleet (the spool's
/// folder) is returned to outlive the spool.
async fn against_retry_later(max_in_flight: Option<usize>) -> (Fleet, Arc<Recorder>, uplink::UplinkStats, Arc<Spool>) {
    // With one frame in flight, frames of one batch (uplink version 1): the window is what
    // this tests, and a multi-batch frame would carry seq 2 along with seq 1.
    let frame_batches = if max_in_flight == Some(1) { 1 } else { uplink::DEFAULT_FRAME_BATCHES };
    let fleet = Fleet::new();
    let handler = Arc::new(Recorder {
        seen: Mutex::new(Vec::new()),
        retry_later: true,
        not_leader: false,
        leader_hint: Mutex::new(None),
    });
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s1", "north").unwrap();
    spool.push(vec![device(2)], "s1", "north").unwrap();
    let mut cfg = uplink_cfg(server.addr, &sensor);
    if let Some(n) = max_in_flight {
        cfg.max_in_flight = n;
    }
    cfg.max_frame_batches = frame_batches;
    let h = handler.clone();
    // Stopped once the node saw six sends: the sensor sends again only after it took the
    // replies of the round before, so at least three RetryLater replies were counted
    // whichever way the stop races the last reply (it stopped on "seen 3" with only two
    // counted once).
    let stats = uplink::run_uplink(spool.clone(), cfg, async move {
        wait_until("the batch was retried", || h.seen().len() >= 6).await;
    })
    .await
    .unwrap();
    server.stop().await;
    (fleet, handler, stats, spool)
}

#[tokio::test]
async fn retry_later_keeps_the_batch_and_never_skips_ahead() {
    let (_fleet, handler, stats, spool) = against_retry_later(None).await;
    assert!(stats.retry_later >= 3);
    assert_eq!(stats.acked, 0);
    assert_eq!(spool.len(), 2, "nothing leaves the spool without an ack");
    // Several batches are in flight, but every round restarts from seq 1 and hands seq 2
    // on only right after seq 1: nothing is applied past a batch that was not accepted.
    let seqs: Vec<u64> = handler.seen().iter().map(|(_, b)| b.seq).collect();
    assert_eq!(seqs[0], 1, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[1] == 1 || w[1] == w[0] + 1), "skipped ahead: {seqs:?}");
}

#[tokio::test]
async fn with_one_batch_in_flight_retry_later_never_sends_the_next_one() {
    let (_fleet, handler, stats, spool) = against_retry_later(Some(1)).await;
    assert!(stats.retry_later >= 3);
    assert_eq!(spool.len(), 2);
    assert!(handler.seen().iter().all(|(_, b)| b.seq == 1), "seq 2 is never sent before seq 1 is acked");
}

#[tokio::test]
async fn sensor_from_another_ca_is_refused_with_a_clear_log_line() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    pki::init_ca(&fleet.path().join("rogue-ca"), "someone else").unwrap();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    // Same id and site as a real sensor, but signed by another CA; it trusts our node CA
    // so the handshake gets as far as the server checking the client certificate.
    let rogue = fleet.sensor("rogue-ca", "s1", "north");
    std::fs::copy(fleet.path().join("ca/ca.pem"), rogue.join("ca.pem")).unwrap();
    let spool = open_spool(&fleet, "spool");
    spool.push(vec![device(1)], "s1", "north").unwrap();

    let stats_handle = server.stats.clone();
    let stats = uplink::run_uplink(spool.clone(), uplink_cfg(server.addr, &rogue), async move {
        wait_until("the server refused the sensor twice", || stats_handle.snapshot().connections_refused >= 2).await;
    })
    .await
    .unwrap();

    assert!(handler.seen().is_empty(), "no batch from an unknown CA reaches the handler");
    let s = server.stats.snapshot();
    assert!(s.connections_refused >= 2);
    assert_eq!(s.connections_accepted, 0);
    assert_eq!(s.batches_received, 0);
    assert_eq!(spool.len(), 1, "the sensor keeps its batch");
    assert_eq!(stats.acked, 0);
    assert!(stats.connect_failures + stats.send_failures >= 1);
    let text = logs.text();
    assert!(
        text.contains("refused sensor connection from 127.0.0.1:")
            && text.contains("client certificate is not signed by the fleet CA (UnknownIssuer)")
            && text.contains("wardline-aggregator admin issue-sensor"),
        "operator-facing refusal line missing from logs:\n{text}"
    );
    assert!(text.contains("refused this sensor's TLS handshake"), "sensor side explains too:\n{text}");
    server.stop().await;
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());

    let mut roots = rustls::RootCertStore::empty();
    for c in wardline_aggregator::tls::load_certs(&fleet.path().join("ca/ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![wardline_common::wire::ALPN_UPLINK.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    // The client may believe the handshake finished; the server refuses right after.
    if let Ok(conn) = endpoint.connect(server.addr, "localhost").unwrap().await {
        let r = async {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(b"\x01anything").await?;
            send.finish()?;
            anyhow::Ok(recv.read_to_end(1024).await?)
        }
        .await;
        assert!(r.is_err(), "a certificate-less client must not get a reply");
    }
    let stats = server.stats.clone();
    wait_until("the refusal is counted", || stats.snapshot().connections_refused >= 1).await;
    assert!(handler.seen().is_empty());
    assert_eq!(server.stats.snapshot().connections_accepted, 0);
    let text = logs.text();
    assert!(text.contains("presented no client certificate"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn batch_claiming_another_sensor_is_rejected_and_dead_lettered() {
    // One batch per stream: each claim is judged once.
    claims_of_another_sensor(1, 2, 2).await;
}

#[tokio::test]
async fn multi_batch_frame_claiming_another_sensor_is_refused_whole_then_judged_batch_by_batch() {
    // The frame of three is refused as a whole (2 claims, 1 rejection), then each batch
    // goes alone: the same 2 dead letters as with one batch per stream, the honest one acked.
    claims_of_another_sensor(uplink::DEFAULT_FRAME_BATCHES, 4, 3).await;
}

async fn claims_of_another_sensor(frame_batches: usize, mismatches: u64, rejections: u64) {
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    let forged = spool.push(vec![device(1)], "s2", "north").unwrap();
    let other_site = spool.push(vec![device(2)], "s1", "south").unwrap();
    let honest = spool.push(vec![device(3)], "s1", "north").unwrap();
    let mut cfg = uplink_cfg(server.addr, &sensor);
    cfg.max_frame_batches = frame_batches;

    let stats =
        tokio::time::timeout(Duration::from_secs(30), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .unwrap()
            .unwrap();

    assert_eq!((stats.rejected, stats.acked), (2, 1));
    assert_eq!(spool.len(), 0);
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![Some(forged.seq), Some(other_site.seq)]);
    assert_eq!(dead[0].batch_id, Some(forged.id));
    assert!(dead[0].reason.contains("\"s2\"") && dead[0].reason.contains("certificate names"), "{}", dead[0].reason);
    let seen = handler.seen();
    assert_eq!(seen.len(), 1, "only the honest batch reaches the handler");
    assert_eq!(seen[0].1, honest);
    let s = server.stats.snapshot();
    assert_eq!(s.identity_mismatches, mismatches);
    assert_eq!(s.batches_rejected, rejections);
    server.stop().await;
}

#[tokio::test]
async fn oversized_frame_is_rejected_and_the_server_keeps_serving() {
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let limits = IngestLimits { max_frame_bytes: 64 * 1024, ..IngestLimits::default() };
    let server = start_server(&fleet, handler.clone(), limits);
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    // Several hundred KiB: far over the 64 KiB limit of this server.
    let big = spool.push((0..5000).map(flow).collect(), "s1", "north").unwrap();
    let small = spool.push(vec![device(1)], "s1", "north").unwrap();
    // Uplink version 1 (one batch per stream); version 2: oversized_multi_batch_frame_*.
    let mut cfg = uplink_cfg(server.addr, &sensor);
    cfg.max_frame_batches = 1;

    let stats =
        tokio::time::timeout(Duration::from_secs(60), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .unwrap()
            .unwrap();

    assert_eq!((stats.rejected, stats.acked), (1, 1));
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, Some(big.seq));
    assert!(dead[0].reason.contains("exceeds the 65536-byte limit"), "{}", dead[0].reason);
    let seen = handler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, small, "the next batch still gets through");
    let s = server.stats.snapshot();
    assert_eq!((s.frames_oversized, s.frames_rejected), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn several_sensors_at_once() {
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let mut runs = Vec::new();
    for i in 0..4 {
        let id = format!("s{i}");
        let dir = fleet.sensor("ca", &id, "east");
        let spool = open_spool(&fleet, &format!("spool-{id}"));
        for j in 0..10u8 {
            spool.push(vec![device(j)], &id, "east").unwrap();
        }
        let cfg = uplink_cfg(server.addr, &dir);
        runs.push(tokio::spawn(async move {
            let st = uplink::drain_once(spool.clone(), cfg, std::future::pending()).await.unwrap();
            (st, spool.len())
        }));
    }
    for r in runs {
        let (st, left) = tokio::time::timeout(Duration::from_secs(60), r).await.unwrap().unwrap();
        assert_eq!((st.acked, left), (10, 0));
    }
    let seen = handler.seen();
    assert_eq!(seen.len(), 40);
    for i in 0..4 {
        let seqs: Vec<u64> =
            seen.iter().filter(|(id, _)| id.sensor_id == format!("s{i}")).map(|(_, b)| b.seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "per-sensor order kept for s{i}");
    }
    assert_eq!(server.stats.snapshot().connections_accepted, 4);
    server.stop().await;
}

#[tokio::test]
async fn a_connections_streams_are_handled_in_open_order_even_when_a_later_one_arrives_first() {
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "bldg-a-1", "north");
    let spool = open_spool(&fleet, "spool");
    let b1 = spool.push(vec![device(1), flow(1)], "bldg-a-1", "north").unwrap();
    let b2 = spool.push(vec![device(2), flow(2)], "bldg-a-1", "north").unwrap();

    let tls = wardline_sensor::config::TlsPaths {
        cert: sensor.join("sensor.pem"),
        key: sensor.join("sensor.key"),
        ca: sensor.join("ca.pem"),
    };
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(wardline_sensor::tls::quic_client_config(&tls).unwrap());
    let conn = endpoint.connect(server.addr, "localhost").unwrap().await.unwrap();
    // Stream 1 is opened first (lower id) but its bytes are sent after stream 2's.
    let (mut send1, mut recv1) = conn.open_bi().await.unwrap();
    let (mut send2, mut recv2) = conn.open_bi().await.unwrap();
    send2.write_all(&wardline_common::wire::encode_frame(&b2).unwrap()).await.unwrap();
    send2.finish().unwrap();
    let reply2 = tokio::spawn(async move { recv2.read_to_end(64 * 1024).await.unwrap() });
    // Give the server time to read batch 2 completely before batch 1 exists.
    wait_until("batch 2 arrived", || server.stats.snapshot().batches_received == 1).await;
    assert!(handler.seen().is_empty(), "batch 2 was handled before batch 1 arrived");
    send1.write_all(&wardline_common::wire::encode_frame(&b1).unwrap()).await.unwrap();
    send1.finish().unwrap();
    let reply1 = recv1.read_to_end(64 * 1024).await.unwrap();
    let reply2 = reply2.await.unwrap();
    for (bytes, b) in [(reply1, &b1), (reply2, &b2)] {
        let r: BatchReply = wardline_common::wire::decode_frame(&bytes).unwrap();
        assert_eq!(r, BatchReply::Ack { batch_id: b.id, seq: b.seq, duplicate: false });
    }
    let order: Vec<u64> = handler.seen().iter().map(|(_, b)| b.seq).collect();
    assert_eq!(order, vec![1, 2], "handled out of stream order");
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

#[tokio::test]
async fn a_failed_stream_stops_the_later_ones_of_its_connection() {
    let fleet = Fleet::new();
    let handler = Recorder::acking();
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "bldg-a-1", "north");
    let spool = open_spool(&fleet, "spool");
    let _b1 = spool.push(vec![device(1)], "bldg-a-1", "north").unwrap();
    let b2 = spool.push(vec![device(2)], "bldg-a-1", "north").unwrap();
    let tls = wardline_sensor::config::TlsPaths {
        cert: sensor.join("sensor.pem"),
        key: sensor.join("sensor.key"),
        ca: sensor.join("ca.pem"),
    };
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(wardline_sensor::tls::quic_client_config(&tls).unwrap());
    let conn = endpoint.connect(server.addr, "localhost").unwrap().await.unwrap();
    let (mut send1, _recv1) = conn.open_bi().await.unwrap();
    let (mut send2, mut recv2) = conn.open_bi().await.unwrap();
    // Batch 1 is abandoned half-way; batch 2 must not be applied past it.
    send1.write_all(b"WL").await.unwrap();
    send1.reset(0u32.into()).unwrap();
    send2.write_all(&wardline_common::wire::encode_frame(&b2).unwrap()).await.unwrap();
    send2.finish().unwrap();
    let r: BatchReply = wardline_common::wire::decode_frame(&recv2.read_to_end(64 * 1024).await.unwrap()).unwrap();
    assert!(matches!(&r, BatchReply::RetryLater { seq: 2, reason, .. } if reason.contains("earlier batch")), "{r:?}");
    assert!(handler.seen().is_empty());
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

#[tokio::test]
async fn sensor_fails_over_past_a_dead_address_and_a_follower() {
    let fleet = Fleet::new();
    let follower = Recorder::follower();
    let leader = Recorder::acking();
    let follower_server = start_server(&fleet, follower.clone(), IngestLimits::default());
    let leader_server = start_server(&fleet, leader.clone(), IngestLimits::default());
    // Nothing listens here: the port was bound and released.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let sensor = fleet.sensor("ca", "bldg-a-1", "north");
    let spool = open_spool(&fleet, "spool");
    let mut pushed = Vec::new();
    for i in 0..20u8 {
        pushed.push(spool.push(vec![device(i), flow(i as u32)], "bldg-a-1", "north").unwrap());
    }
    // Behind a backlog a batch gets its seq when it is next to be sent (decision 0022).
    let pushed = spool.next_batches(usize::MAX).unwrap();
    let mut cfg = uplink_cfg(dead, &sensor);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.fallback_addrs = vec![follower_server.addr, leader_server.addr];
    let stats =
        tokio::time::timeout(Duration::from_secs(30), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .expect("drain finishes")
            .unwrap();
    assert_eq!(stats.acked, 20, "{stats:?}");
    assert!(stats.connect_failures >= 1 && stats.failovers >= 2, "{stats:?}");
    assert_eq!(spool.len(), 0);
    assert!(!follower.seen().is_empty(), "the follower was tried");
    let delivered: Vec<Batch> = leader.seen().into_iter().map(|(_, b)| b).collect();
    assert_eq!(delivered, pushed, "each batch once, in seq order, at the leader");
    follower_server.stop().await;
    leader_server.stop().await;
}

#[tokio::test]
async fn sensor_goes_straight_to_the_leader_a_follower_names() {
    let fleet = Fleet::new();
    let first = Recorder::follower();
    let second = Recorder::follower();
    let leader = Recorder::acking();
    let first_server = start_server(&fleet, first.clone(), IngestLimits::default());
    let second_server = start_server(&fleet, second.clone(), IngestLimits::default());
    let leader_server = start_server(&fleet, leader.clone(), IngestLimits::default());
    *first.leader_hint.lock().unwrap() = Some(leader_server.addr.to_string());
    let sensor = fleet.sensor("ca", "bldg-a-1", "north");
    let spool = open_spool(&fleet, "spool");
    let mut pushed = Vec::new();
    for i in 0..5u8 {
        pushed.push(spool.push(vec![device(i), flow(i as u32)], "bldg-a-1", "north").unwrap());
    }
    let mut cfg = uplink_cfg(first_server.addr, &sensor);
    // The leader is listed last: rotating would try the second follower first.
    cfg.fallback_addrs = vec![second_server.addr, leader_server.addr];
    let stats =
        tokio::time::timeout(Duration::from_secs(30), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .expect("drain finishes")
            .unwrap();
    assert_eq!(stats.acked, 5, "{stats:?}");
    assert_eq!(stats.failovers, 1, "one hop, from the follower to the leader it named: {stats:?}");
    assert!(second.seen().is_empty(), "the follower that was not named is skipped");
    let delivered: Vec<Batch> = leader.seen().into_iter().map(|(_, b)| b).collect();
    assert_eq!(delivered, pushed);
    for s in [first_server, second_server, leader_server] {
        s.stop().await;
    }
}

// ---- Uplink version 2: multi-batch frames (decision 0034) ----

/// Applies a sensor's batches at most once by (sensor, seq) watermark, as the cluster's
/// state machine does, decided when `handle` is called (call order is frame order). The
/// batch with seq `stall_at` is applied but its reply comes only after `stall`, so the
/// sensor gives up on that frame mid-way and re-sends it on a new connection.
struct Watermarked {
    last_seq: Mutex<std::collections::HashMap<String, u64>>,
    applied: Mutex<Vec<u64>>,
    duplicates: Mutex<Vec<u64>>,
    stall_at: Option<u64>,
    stall: Duration,
}

impl Watermarked {
    fn new(stall_at: Option<u64>, stall: Duration) -> Arc<Self> {
        Arc::new(Watermarked {
            last_seq: Default::default(),
            applied: Default::default(),
            duplicates: Default::default(),
            stall_at,
            stall,
        })
    }
}

impl BatchHandler for Watermarked {
    fn handle(&self, identity: SensorIdentity, batch: Batch) -> impl std::future::Future<Output = BatchReply> + Send {
        let (batch_id, seq) = (batch.id, batch.seq);
        let mut marks = self.last_seq.lock().unwrap();
        let mark = marks.entry(identity.sensor_id).or_insert(0);
        let duplicate = seq <= *mark;
        if duplicate {
            self.duplicates.lock().unwrap().push(seq);
        } else {
            *mark = seq;
            self.applied.lock().unwrap().push(seq);
        }
        let stall = if self.stall_at == Some(seq) && !duplicate { self.stall } else { Duration::ZERO };
        async move {
            tokio::time::sleep(stall).await;
            BatchReply::Ack { batch_id, seq, duplicate }
        }
    }
}

fn push_flows(spool: &Spool, batches: u32, flows_each: u32) {
    for i in 0..batches {
        let events = (0..flows_each).map(|j| flow(i * flows_each + j)).collect();
        spool.push(events, "s1", "north").unwrap();
    }
}

#[tokio::test]
async fn a_backlog_travels_in_multi_batch_frames_each_batch_applied_once_in_order() {
    let fleet = Fleet::new();
    let handler = Watermarked::new(None, Duration::ZERO);
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    push_flows(&spool, 300, 26);
    let stats = tokio::time::timeout(
        Duration::from_secs(60),
        uplink::drain_once(spool.clone(), uplink_cfg(server.addr, &sensor), std::future::pending()),
    )
    .await
    .expect("drain finishes")
    .unwrap();
    assert_eq!((stats.acked, stats.duplicates, stats.rejected), (300, 0, 0), "{stats:?}");
    assert_eq!(spool.len(), 0);
    assert_eq!(*handler.applied.lock().unwrap(), (1..=300).collect::<Vec<u64>>());
    let s = server.stats.snapshot();
    assert_eq!((s.batches_received, s.batches_acked), (300, 300));
    // 300 batches in frames of at most 64: at least 5 frames, and far fewer than 300.
    assert!((5..=60).contains(&s.multi_batch_frames), "{s:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_sensor_limited_to_uplink_version_1_still_delivers_one_batch_per_stream() {
    let fleet = Fleet::new();
    let handler = Watermarked::new(None, Duration::ZERO);
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    push_flows(&spool, 40, 3);
    let mut cfg = uplink_cfg(server.addr, &sensor);
    cfg.max_frame_batches = 1;
    let stats =
        tokio::time::timeout(Duration::from_secs(60), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(stats.acked, 40);
    assert_eq!(*handler.applied.lock().unwrap(), (1..=40).collect::<Vec<u64>>());
    let s = server.stats.snapshot();
    assert_eq!((s.batches_received, s.multi_batch_frames), (40, 0), "version 1 streams only: {s:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_frame_cut_off_mid_way_is_resent_and_nothing_is_applied_twice() {
    let fleet = Fleet::new();
    // Seq 70 sits inside the second frame: batches 65..=70 are applied, the reply to that
    // frame never arrives in time, the sensor reconnects and sends 65.. again.
    let handler = Watermarked::new(Some(70), Duration::from_secs(3));
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    push_flows(&spool, 200, 5);
    let mut cfg = uplink_cfg(server.addr, &sensor);
    cfg.reply_timeout = Duration::from_millis(700);
    let stats =
        tokio::time::timeout(Duration::from_secs(60), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .expect("drain finishes")
            .unwrap();
    assert_eq!(spool.len(), 0, "every batch acked: {stats:?}");
    assert!(stats.send_failures >= 1, "the cut-off frame was noticed: {stats:?}");
    assert!(stats.duplicates >= 6, "batches applied before the cut were acked as duplicates: {stats:?}");
    assert_eq!(
        *handler.applied.lock().unwrap(),
        (1..=200).collect::<Vec<u64>>(),
        "each batch applied exactly once, in order"
    );
    let dups = handler.duplicates.lock().unwrap().clone();
    assert!(dups.contains(&65) && dups.contains(&70), "{dups:?}");
    assert!(spool.dead_letters().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn oversized_multi_batch_frame_is_refused_whole_and_its_batches_go_alone() {
    let fleet = Fleet::new();
    let handler = Watermarked::new(None, Duration::ZERO);
    let limits = IngestLimits { max_frame_bytes: 64 * 1024, ..IngestLimits::default() };
    let server = start_server(&fleet, handler.clone(), limits);
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    // Ten batches of ~10 KiB (under the limit alone, ~100 KiB together) around one of
    // several hundred KiB.
    push_flows(&spool, 5, 100);
    let big = spool.push((0..5000).map(flow).collect(), "s1", "north").unwrap();
    push_flows(&spool, 5, 100);
    let stats = tokio::time::timeout(
        Duration::from_secs(60),
        uplink::drain_once(spool.clone(), uplink_cfg(server.addr, &sensor), std::future::pending()),
    )
    .await
    .expect("drain finishes")
    .unwrap();
    assert_eq!((stats.acked, stats.rejected), (10, 1), "{stats:?}");
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "only the batch too large alone is dead-lettered");
    assert_eq!(dead[0].batch_id, Some(big.id));
    assert!(dead[0].reason.contains("exceeds the 65536-byte limit"), "{}", dead[0].reason);
    let applied = handler.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 10);
    assert!(!applied.contains(&big.seq));
    let s = server.stats.snapshot();
    // The whole frame, then the big batch alone.
    assert!(s.frames_oversized >= 2 && s.frames_rejected == s.frames_oversized, "{s:?}");
    server.stop().await;
}

/// Sends `frame` with a declared length on a fresh uplink-version-2 stream and returns the
/// decoded replies.
async fn send_raw_v2(conn: &quinn::Connection, declared: u32, frame: &[u8]) -> Vec<BatchReply> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&declared.to_be_bytes()).await.unwrap();
    // The node may stop reading early (frame too large); its reply says why.
    let _ = send.write_all(frame).await;
    let _ = send.finish();
    wardline_common::wire::decode_frame(&recv.read_to_end(1 << 20).await.unwrap()).unwrap()
}

fn refusal(replies: &[BatchReply]) -> String {
    match replies {
        [BatchReply::Rejected { batch_id, reason, .. }] if batch_id.is_nil() => reason.clone(),
        other => panic!("expected a refusal of the whole frame, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_multi_batch_frames_are_refused_with_a_reason_and_counted() {
    use wardline_common::wire::{encode_frame, ALPN_UPLINK_V2};
    let fleet = Fleet::new();
    let handler = Watermarked::new(None, Duration::ZERO);
    let limits = IngestLimits { max_frame_bytes: 64 * 1024, ..IngestLimits::default() };
    let server = start_server(&fleet, handler.clone(), limits);
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    push_flows(&spool, 3, 2);
    let batches = spool.next_batches(3).unwrap();
    let endpoint = raw_client(&sensor, ALPN_UPLINK_V2);
    let conn = endpoint.connect(server.addr, "localhost").unwrap().await.unwrap();

    let garbage = b"\x03\x05not a batch at all";
    let r = refusal(&send_raw_v2(&conn, garbage.len() as u32, garbage).await);
    assert!(r.contains("undecodable multi-batch frame"), "{r}");

    let backwards = encode_frame(&vec![batches[1].clone(), batches[0].clone()]).unwrap();
    let r = refusal(&send_raw_v2(&conn, backwards.len() as u32, &backwards).await);
    assert!(r.contains("out of order") && r.contains("(seq 1) follows seq 2"), "{r}");

    let good = encode_frame(&batches).unwrap();
    let r = refusal(&send_raw_v2(&conn, good.len() as u32 + 10, &good).await);
    assert!(r.contains(&format!("ended after {} of the {} bytes", good.len(), good.len() + 10)), "{r}");

    let r = refusal(&send_raw_v2(&conn, 16 << 20, &good).await);
    assert!(r.contains("exceeds the 65536-byte limit"), "{r}");

    let r = refusal(&send_raw_v2(&conn, 0, &[]).await);
    assert!(r.contains("length of 0 bytes"), "{r}");

    assert!(handler.applied.lock().unwrap().is_empty(), "nothing of a refused frame is applied");
    let s = server.stats.snapshot();
    assert_eq!((s.frames_rejected, s.frames_oversized, s.batches_rejected), (5, 1, 5), "{s:?}");

    // The refused frames' batches will come again one per frame: nothing after them on this
    // connection may be applied first.
    let after = send_raw_v2(&conn, good.len() as u32, &good).await;
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|r| matches!(r, BatchReply::RetryLater { reason, .. } if reason.contains("earlier batch"))),
        "{after:?}"
    );
    conn.close(0u32.into(), b"done");
    // A new connection: the frame is applied whole.
    let conn = endpoint.connect(server.addr, "localhost").unwrap().await.unwrap();
    let replies = send_raw_v2(&conn, good.len() as u32, &good).await;
    let expected: Vec<BatchReply> =
        batches.iter().map(|b| BatchReply::Ack { batch_id: b.id, seq: b.seq, duplicate: false }).collect();
    assert_eq!(replies, expected);
    // The same frame again: every batch acked as a duplicate, none applied twice.
    let again = send_raw_v2(&conn, good.len() as u32, &good).await;
    assert!(again.iter().all(|r| matches!(r, BatchReply::Ack { duplicate: true, .. })), "{again:?}");
    assert_eq!(*handler.applied.lock().unwrap(), vec![1, 2, 3]);
    assert_eq!(server.stats.snapshot().multi_batch_frames, 3, "only well-formed frames count as received");
    conn.close(0u32.into(), b"done");
    server.stop().await;
}
