//! Ingest limits (decision 0039) against real QUIC on loopback: a slowloris, a connection
//! flood (unauthenticated, stalled and authenticated from one sensor identity) and a sensor
//! over its byte rate, each while a well-behaved sensor keeps delivering; QUIC address
//! validation.

use crate::quic::{flow, open_spool, start_server, uplink_cfg, wait_until, Fleet, LogBuf};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wardline_aggregator::ingest::{codes, BatchHandler, IngestLimits, IngestStats};
use wardline_aggregator::pki::SensorIdentity;
use wardline_common::wire::{self, BatchReply, ALPN_UPLINK};
use wardline_common::Batch;
use wardline_sensor::uplink;

/// A generous bound on one ack of the well-behaved sensor: on loopback an ack takes
/// milliseconds; without per-sensor limits the offender holds the node's whole byte budget
/// and the well-behaved sensor's frames wait for the read deadline (30 s in these tests).
const ACK_BOUND: Duration = Duration::from_secs(10);

/// Acks everything and remembers which sensor sent which seq; sensors in `revoked` are.
#[derive(Default)]
struct Acking {
    seen: Mutex<Vec<(String, u64)>>,
    revoked: Mutex<Vec<String>>,
}

impl Acking {
    fn seqs_of(&self, sensor: &str) -> Vec<u64> {
        self.seen.lock().unwrap().iter().filter(|(s, _)| s == sensor).map(|(_, q)| *q).collect()
    }
}

impl BatchHandler for Acking {
    async fn handle(&self, identity: SensorIdentity, batch: Batch) -> BatchReply {
        self.seen.lock().unwrap().push((identity.sensor_id, batch.seq));
        BatchReply::Ack { batch_id: batch.id, seq: batch.seq, duplicate: false }
    }

    async fn revoked(&self, identity: &SensorIdentity, _serial: &str) -> Option<String> {
        self.revoked.lock().unwrap().contains(&identity.sensor_id).then(|| "test: revoked".to_string())
    }
}

/// A client endpoint holding `sensor_dir`'s certificate, speaking uplink version 1 (one
/// batch per stream, so each stream reserves a whole frame of the node's byte budget).
fn sensor_endpoint(sensor_dir: &Path) -> quinn::Endpoint {
    let tls = wardline_sensor::config::TlsPaths {
        cert: sensor_dir.join("sensor.pem"),
        key: sensor_dir.join("sensor.key"),
        ca: sensor_dir.join("ca.pem"),
    };
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .set_default_client_config(wardline_sensor::tls::quic_client_config_offering(&tls, &[ALPN_UPLINK]).unwrap());
    endpoint
}

async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    tokio::time::timeout(ACK_BOUND, endpoint.connect(addr, "localhost").unwrap()).await.unwrap().unwrap()
}

/// Send one batch on its own stream and wait for its reply, at most `ACK_BOUND`.
async fn send_batch(conn: &quinn::Connection, batch: &Batch) -> BatchReply {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&wire::encode_frame(batch)?).await?;
        send.finish()?;
        anyhow::Ok(wire::decode_frame::<BatchReply>(&recv.read_to_end(64 * 1024).await?)?)
    };
    match tokio::time::timeout(ACK_BOUND, exchange).await {
        Ok(reply) => reply.unwrap(),
        Err(_) => panic!("the well-behaved sensor's batch {} got no reply within {ACK_BOUND:?}", batch.seq),
    }
}

/// Open a stream and send its first byte, then one byte every 200 ms until `stop`: a frame
/// that never completes.
async fn trickle(conn: &quinn::Connection, stop: Arc<AtomicBool>) -> (quinn::RecvStream, tokio::task::JoinHandle<()>) {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&[1]).await.unwrap();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if send.write_all(&[0]).await.is_err() {
                return;
            }
        }
    });
    (recv, task)
}

/// Limits small enough to reach in a test: frames of 64 KiB, a byte budget of 8 frames,
/// 4 frames in flight per sensor (half the budget), 2 connections per sensor.
fn small_limits() -> IngestLimits {
    IngestLimits {
        max_frame_bytes: 64 * 1024,
        max_inflight_bytes: 8 * 64 * 1024,
        max_connections: 16,
        max_connections_per_sensor: 2,
        max_streams_per_connection: 4,
        max_frames_in_flight_per_sensor: 4,
        frame_read_timeout: Duration::from_secs(30),
        max_handshakes: 4,
        handshake_timeout: Duration::from_secs(1),
        ..IngestLimits::default()
    }
}

/// A rustls server-certificate verifier that takes `stall` before it answers: a client whose
/// handshake hangs half-way (the server waits for its Finished).
#[derive(Debug)]
struct Stalling {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    stall: Duration,
}

impl rustls::client::danger::ServerCertVerifier for Stalling {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        // Blocks this client's own runtime thread: nothing more is sent meanwhile.
        std::thread::sleep(self.stall);
        Err(rustls::Error::General("test client gave up".into()))
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client config presenting no certificate; with `stall`, one whose handshake hangs.
fn anonymous_client(fleet: &Fleet, stall: Option<Duration>) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in wardline_aggregator::tls::load_certs(&fleet.path().join("ca/ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap();
    let mut tls = match stall {
        None => builder.with_root_certificates(roots).with_no_client_auth(),
        Some(stall) => {
            let inner =
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Stalling { inner, stall }))
                .with_no_client_auth()
        }
    };
    tls.alpn_protocols = vec![ALPN_UPLINK.to_vec()];
    quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()))
}

/// `n` clients whose handshakes hang for `stall`, each on its own thread (the stall blocks
/// its runtime).
fn stalled_handshakes(fleet: &Fleet, addr: SocketAddr, n: usize, stall: Duration) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let cfg = anonymous_client(fleet, Some(stall));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
                    endpoint.set_default_client_config(cfg);
                    let connecting = endpoint.connect(addr, "localhost").unwrap();
                    let r = tokio::time::timeout(Duration::from_secs(20), connecting).await;
                    assert!(!matches!(r, Ok(Ok(_))), "a stalled handshake must not end in a connection");
                });
            })
        })
        .collect()
}

/// The well-behaved sensor: sends its batches one after the other on one connection until
/// `stop` (and at least `min` of them), each acked within `ACK_BOUND`; returns the seqs sent.
fn well_behaved(
    fleet: &Fleet,
    addr: SocketAddr,
    min: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let dir = fleet.sensor("ca", "calm", "north");
    let spool = open_spool(fleet, "spool-calm");
    tokio::spawn(async move {
        let endpoint = sensor_endpoint(&dir);
        let conn = connect(&endpoint, addr).await;
        let mut sent = Vec::new();
        while sent.len() < min || !stop.load(Ordering::Relaxed) {
            let batch = spool.push(vec![flow(sent.len() as u32)], "calm", "north").unwrap();
            match send_batch(&conn, &batch).await {
                BatchReply::Ack { seq, .. } if seq == batch.seq => {
                    // As the real uplink does: the next batch then gets the next seq.
                    spool.remove_acked(&[seq]).unwrap();
                    sent.push(seq)
                }
                other => panic!("the well-behaved sensor's batch {} was answered {other:?}", batch.seq),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        conn.close(0u32.into(), b"done");
        sent
    })
}

fn hits(stats: &IngestStats, sensor: &str) -> wardline_aggregator::ingest::SensorLimitHits {
    stats.snapshot().sensors_limited.get(sensor).cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_slowloris_and_a_connection_flood_do_not_stall_a_well_behaved_sensor() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    let handler = Arc::new(Acking::default());
    let server = start_server(&fleet, handler.clone(), small_limits());
    let stats = server.stats.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let calm = well_behaved(&fleet, server.addr, 30, stop.clone());

    // The slowloris: a valid sensor certificate, its 2 connections, 4 streams on each
    // (the stream credit), every stream trickling a byte at a time. Alone, 8 streams of
    // one frame each would reserve the node's whole byte budget.
    let bad_dir = fleet.sensor("ca", "bad", "north");
    let bad = sensor_endpoint(&bad_dir);
    // Trickling goes on until the end of the test (a stream the client drops is finished,
    // which would hand its slot back).
    let trickling = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    let mut bad_conns = Vec::new();
    for _ in 0..2 {
        let conn = connect(&bad, server.addr).await;
        for _ in 0..4 {
            slow.push(trickle(&conn, trickling.clone()).await);
        }
        bad_conns.push(conn);
    }
    wait_until("the slowloris streams beyond its 4 frames in flight wait", || hits(&stats, "bad").frames_waited >= 1)
        .await;

    // An authenticated flood from the same identity: refused right after each handshake.
    for _ in 0..4 {
        let conn = connect(&bad, server.addr).await;
        let closed = tokio::time::timeout(ACK_BOUND, conn.closed()).await.expect("the node closes it");
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::SENSOR_CONNECTION_LIMIT.into()),
            "{closed:?}"
        );
    }
    // Unauthenticated: clients without a certificate, refused at the handshake.
    let anonymous = {
        let mut e = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        e.set_default_client_config(anonymous_client(&fleet, None));
        e
    };
    for _ in 0..10 {
        if let Ok(Ok(conn)) =
            tokio::time::timeout(ACK_BOUND, anonymous.connect(server.addr, "localhost").unwrap()).await
        {
            // TLS 1.3: the client may think it is in; the node refuses right after.
            let _ = tokio::time::timeout(ACK_BOUND, conn.closed()).await;
        }
    }
    wait_until("ten anonymous handshakes were refused", || stats.snapshot().refused.handshake_failed >= 10).await;
    // Stalled handshakes: more than the 4 handshake slots, each hanging for 3 s; the node
    // drops them after its 1 s handshake timeout and refuses those over the slots.
    let stalled = stalled_handshakes(&fleet, server.addr, 8, Duration::from_secs(3));
    wait_until("stalled handshakes were timed out", || stats.snapshot().refused.handshake_timeout >= 1).await;

    stop.store(true, Ordering::Relaxed);
    let sent = tokio::time::timeout(Duration::from_secs(120), calm).await.unwrap().unwrap();
    assert!(sent.len() >= 30, "{}", sent.len());
    assert_eq!(handler.seqs_of("calm"), sent, "every batch of the well-behaved sensor arrived, once, in order");
    assert!(handler.seqs_of("bad").is_empty(), "no trickled frame was ever complete");
    assert_eq!(stats.snapshot().frames_rejected, 0, "the slowloris streams were still open throughout");
    for t in stalled {
        t.join().unwrap();
    }

    let s = stats.snapshot();
    assert_eq!(s.refused.sensor_connections, 4, "{s:?}");
    assert_eq!(s.refused.handshake_failed, 10, "{s:?}");
    assert!(s.refused.handshake_timeout >= 1, "{s:?}");
    assert!(s.refused.handshake_capacity >= 1, "8 stalled handshakes for 4 slots: {s:?}");
    assert_eq!(s.refused.node_connections, 0, "unauthenticated peers never held a connection slot: {s:?}");
    assert_eq!(s.connections_accepted, 3, "calm once, bad twice: {s:?}");
    let bad_hits = hits(&stats, "bad");
    assert_eq!(bad_hits.connections_refused, 4, "{bad_hits:?}");
    assert!(bad_hits.frames_waited >= 1, "{bad_hits:?}");
    assert!(!s.sensors_limited.contains_key("calm"), "only the offender ran into limits: {:?}", s.sensors_limited);
    // After the flood a new connection of the well-behaved sensor gets through at once.
    let calm_again = sensor_endpoint(&fleet.path().join("sensor-ca-calm"));
    let conn = connect(&calm_again, server.addr).await;
    let batch = open_spool(&fleet, "spool-calm-2").push(vec![flow(1)], "calm", "north").unwrap();
    assert!(matches!(send_batch(&conn, &batch).await, BatchReply::Ack { .. }));
    conn.close(0u32.into(), b"done");

    let text = logs.text();
    assert!(
        text.contains("refused a connection of sensor bad: it already has 2 connections")
            && text.contains("ingest.max_connections_per_sensor = 2"),
        "the operator learns which sensor and which limit:\n{text}"
    );
    assert!(text.contains("ingest.max_handshakes"), "{text}");
    trickling.store(true, Ordering::Relaxed);
    for (_, task) in slow {
        task.abort();
    }
    for c in bad_conns {
        c.close(0u32.into(), b"done");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_trickling_stream_is_timed_out_and_counted_for_its_sensor() {
    let logs = LogBuf::default();
    let _guard = logs.install();
    let fleet = Fleet::new();
    let handler = Arc::new(Acking::default());
    let limits = IngestLimits { frame_read_timeout: Duration::from_secs(1), ..small_limits() };
    let server = start_server(&fleet, handler.clone(), limits);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = sensor_endpoint(&fleet.sensor("ca", "bad", "north"));
    let conn = connect(&bad, server.addr).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(trickle(&conn, stop.clone()).await);
    }
    for (recv, _) in &mut slow {
        // The node gives up on the stream: the reply side is reset with READ_TIMEOUT.
        let r = tokio::time::timeout(Duration::from_secs(20), recv.read_to_end(1024)).await.unwrap();
        assert!(
            matches!(&r, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) if *code == codes::READ_TIMEOUT.into()),
            "{r:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let s = server.stats.snapshot();
    assert_eq!(s.frames_timed_out, 2, "{s:?}");
    assert_eq!(hits(&server.stats, "bad").streams_timed_out, 2);
    assert!(handler.seqs_of("bad").is_empty());
    // Nothing after a missing batch is applied on that connection; the sensor re-sends on a
    // new one.
    let batch = open_spool(&fleet, "spool-bad").push(vec![flow(1)], "bad", "north").unwrap();
    assert!(matches!(send_batch(&conn, &batch).await, BatchReply::RetryLater { .. }));
    let again = connect(&bad, server.addr).await;
    assert!(matches!(send_batch(&again, &batch).await, BatchReply::Ack { .. }));
    again.close(0u32.into(), b"done");
    let text = logs.text();
    assert!(
        text.contains("sensor bad did not finish sending a batch within 1s (ingest.stream_read_timeout_secs)"),
        "{text}"
    );
    conn.close(0u32.into(), b"done");
    server.stop().await;
}

#[tokio::test]
async fn the_byte_rate_limit_slows_down_only_the_sensor_over_it_and_loses_nothing() {
    let fleet = Fleet::new();
    let handler = Arc::new(Acking::default());
    let rate = 256 * 1024u64;
    let burst = 64 * 1024u64;
    let limits = IngestLimits {
        bytes_per_second_per_sensor: rate,
        burst_bytes_per_sensor: burst,
        max_connections_per_sensor: 2,
        ..IngestLimits::default()
    };
    let server = start_server(&fleet, handler.clone(), limits);
    let stats = server.stats.clone();
    // The fast sensor: about 1 MiB of spooled batches, delivered by the real uplink.
    let fast_dir = fleet.sensor("ca", "fast", "north");
    let spool = open_spool(&fleet, "spool-fast");
    for i in 0..20u32 {
        spool.push((0..500).map(|j| flow(i * 500 + j)).collect(), "fast", "north").unwrap();
    }
    let batches = spool.next_batches(usize::MAX).unwrap();
    let bytes: u64 = batches.iter().map(|b| wire::encode_frame(b).unwrap().len() as u64).sum();
    assert!(bytes > 4 * burst, "the test needs several bursts' worth: {bytes}");
    let stop = Arc::new(AtomicBool::new(false));
    let calm = well_behaved(&fleet, server.addr, 20, stop.clone());

    let started = Instant::now();
    let up = tokio::time::timeout(
        Duration::from_secs(120),
        // Uncompressed (uplink version 2), so the bytes the limit meters are the frame bytes
        // counted above.
        uplink::drain_once(
            spool.clone(),
            uplink::UplinkConfig { compression_level: 0, ..uplink_cfg(server.addr, &fast_dir) },
            std::future::pending(),
        ),
    )
    .await
    .expect("the fast sensor finishes")
    .unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = tokio::time::timeout(Duration::from_secs(60), calm).await.unwrap().unwrap();

    // Slowed, not refused: everything acked once, nothing dead-lettered or retried.
    assert_eq!((up.acked, up.rejected, up.retry_later), (20, 0, 0), "{up:?}");
    assert_eq!(spool.len(), 0);
    assert_eq!(handler.seqs_of("fast"), batches.iter().map(|b| b.seq).collect::<Vec<_>>());
    assert_eq!(handler.seqs_of("calm"), sent);
    // The rate is a floor on the time the bytes beyond the burst took (a lower bound the
    // limit guarantees; the margin covers frame-size rounding).
    let floor = Duration::from_secs_f64((bytes - burst) as f64 / rate as f64 * 0.8);
    assert!(took >= floor, "{bytes} bytes at {rate} B/s took only {took:?}");
    let fast = hits(&stats, "fast");
    assert!(fast.frames_throttled >= 1 && fast.throttled_ms > 0, "{fast:?}");
    assert!(
        !stats.snapshot().sensors_limited.contains_key("calm"),
        "the well-behaved sensor was never slowed: {:?}",
        stats.snapshot().sensors_limited
    );
    server.stop().await;
}

#[tokio::test]
async fn address_validation_makes_every_new_peer_retry_once_and_can_be_turned_off() {
    for validate in [true, false] {
        let fleet = Fleet::new();
        let handler = Arc::new(Acking::default());
        let limits = IngestLimits { address_validation: validate, ..IngestLimits::default() };
        let server = start_server(&fleet, handler.clone(), limits);
        let dir = fleet.sensor("ca", "s1", "north");
        let spool = open_spool(&fleet, "spool");
        for i in 0..3u32 {
            // A new endpoint each time: a new peer address.
            let endpoint = sensor_endpoint(&dir);
            let conn = connect(&endpoint, server.addr).await;
            let batch = spool.push(vec![flow(i)], "s1", "north").unwrap();
            assert!(matches!(send_batch(&conn, &batch).await, BatchReply::Ack { .. }));
            conn.close(0u32.into(), b"done");
        }
        let s = server.stats.snapshot();
        assert_eq!(s.connections_accepted, 3);
        assert_eq!(s.address_validation_retries, if validate { 3 } else { 0 }, "validate = {validate}: {s:?}");
        assert_eq!(handler.seqs_of("s1").len(), 3);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_sensor_whose_stream_waits_for_capacity_is_still_cut_off_when_revoked() {
    let fleet = Fleet::new();
    let handler = Arc::new(Acking::default());
    // The node's byte budget is 4 frames, all of which the hog's trickling streams hold.
    let limits = IngestLimits { max_inflight_bytes: 4 * 64 * 1024, ..small_limits() };
    let server = start_server(&fleet, handler.clone(), limits);
    let trickling = Arc::new(AtomicBool::new(false));
    let hog = sensor_endpoint(&fleet.sensor("ca", "hog", "north"));
    let hog_conn = connect(&hog, server.addr).await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(trickle(&hog_conn, trickling.clone()).await);
    }
    let victim = sensor_endpoint(&fleet.sensor("ca", "victim", "north"));
    let conn = connect(&victim, server.addr).await;
    // Its stream waits for the byte budget (the read deadline is 30 s away).
    let (_waiting, _task) = trickle(&conn, trickling.clone()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    handler.revoked.lock().unwrap().push("victim".into());
    let closed = tokio::time::timeout(ACK_BOUND, conn.closed()).await.expect("the revoked sensor is cut off");
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::REVOKED.into()),
        "{closed:?}"
    );
    assert!(hog_conn.close_reason().is_none(), "the other sensor is not affected");
    trickling.store(true, Ordering::Relaxed);
    for (_, task) in slow {
        task.abort();
    }
    hog_conn.close(0u32.into(), b"done");
    server.stop().await;
}
