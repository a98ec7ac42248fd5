//! Uplink version 3 (decision 0041): compressed multi-batch frames between the real sensor
//! uplink and the real ingest server, negotiation with version-2 peers both ways, and
//! hostile compressed frames.

use super::quic::{open_spool, start_server, uplink_cfg, Fleet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wardline_aggregator::ingest::{BatchHandler, IngestLimits, IngestServer, IngestStats};
use wardline_aggregator::pki::SensorIdentity;
use wardline_common::wire::{
    self, BatchReply, Codec, CompressedHeader, ALPN_UPLINK, ALPN_UPLINK_V2, ALPN_UPLINK_V3, COMPRESSED_HEADER_BYTES,
};
use wardline_common::{Batch, Event, FlowRecord, MacAddr};
use wardline_sensor::spool::Spool;
use wardline_sensor::uplink::{self, UplinkStats};

/// Applies each (sensor, seq) once and acks re-sends as duplicates; remembers what it applied.
#[derive(Default)]
struct Applying {
    applied: Mutex<Vec<u64>>,
    flows: Mutex<Vec<FlowRecord>>,
}

impl BatchHandler for Applying {
    async fn handle(&self, _identity: SensorIdentity, batch: Batch) -> BatchReply {
        let mut applied = self.applied.lock().unwrap();
        let duplicate = applied.last().is_some_and(|&last| batch.seq <= last);
        if !duplicate {
            applied.push(batch.seq);
            self.flows.lock().unwrap().extend(batch.flows().cloned());
        }
        BatchReply::Ack { batch_id: batch.id, seq: batch.seq, duplicate }
    }
}

/// Flows like a hospital's: a few hundred device pairs, clinical and IT protocols, times
/// that advance, varied counters.
fn hospital_flow(n: u32) -> Event {
    let client = (n * 7919) % 300;
    let (app, port) = [("dicom", 104u16), ("hl7", 2575), ("dns", 53), ("https", 443), ("smb", 445)][(n % 5) as usize];
    Event::Flow(FlowRecord {
        ip_proto: if app == "dns" { 17 } else { 6 },
        vlan: Some(20 + (client % 4) as u16),
        a_mac: MacAddr([0x00, 0x1b, 0x44, 0x11, (client >> 8) as u8, client as u8]),
        b_mac: MacAddr([0x00, 0x50, 0x56, 0x9a, 0x00, (n % 5) as u8]),
        a_ip: IpAddr::from([10, 20, (client >> 8) as u8, client as u8]),
        b_ip: IpAddr::from([10, 1, 0, 10 + (n % 5) as u8]),
        a_port: 49152 + ((n * 31) % 16000) as u16,
        b_port: port,
        first_seen_us: 1_710_230_400_000_000 + n as u64 * 3_217,
        last_seen_us: 1_710_230_400_000_000 + n as u64 * 3_217 + (n as u64 % 97) * 10_000,
        packets_ab: 3 + (n % 40) as u64,
        packets_ba: 2 + (n % 37) as u64,
        bytes_ab: 180 + (n as u64 * 97) % 20_000,
        bytes_ba: 120 + (n as u64 * 53) % 90_000,
        tcp_flags_ab: 0x1b,
        tcp_flags_ba: 0x1b,
        app: app.into(),
        end_reason: if n.is_multiple_of(3) { "idle".into() } else { "fin".into() },
    })
}

fn push_hospital_flows(spool: &Spool, batches: u32, flows_each: u32) {
    for i in 0..batches {
        let events = (0..flows_each).map(|j| hospital_flow(i * flows_each + j)).collect();
        spool.push(events, "s1", "north").unwrap();
    }
}

async fn drain(spool: &Arc<Spool>, addr: std::net::SocketAddr, sensor: &std::path::Path, level: i32) -> UplinkStats {
    let mut cfg = uplink_cfg(addr, sensor);
    cfg.compression_level = level;
    let stats =
        tokio::time::timeout(Duration::from_secs(60), uplink::drain_once(spool.clone(), cfg, std::future::pending()))
            .await
            .expect("drain finishes")
            .unwrap();
    assert_eq!(spool.len(), 0, "{stats:?}");
    stats
}

#[tokio::test]
async fn a_compressed_backlog_arrives_whole_and_puts_far_fewer_bytes_on_the_wire() {
    let fleet = Fleet::new();
    let handler = Arc::new(Applying::default());
    let server = start_server(&fleet, handler.clone(), IngestLimits::default());
    let sensor = fleet.sensor("ca", "s1", "north");

    // The same backlog twice: compressed (version 3, the default), then as an older sensor
    // sends it (compression off: version 2).
    let compressed = open_spool(&fleet, "spool-v3");
    push_hospital_flows(&compressed, 200, 13);
    let v3 = drain(&compressed, server.addr, &sensor, wire::DEFAULT_COMPRESSION_LEVEL).await;
    let after_v3 = server.stats.snapshot();
    assert_eq!((v3.acked, v3.batches_sent, v3.duplicates), (200, 200, 0), "{v3:?}");
    assert_eq!(*handler.applied.lock().unwrap(), (1..=200).collect::<Vec<u64>>());
    let expected: Vec<FlowRecord> = (0..2600)
        .map(|n| match hospital_flow(n) {
            Event::Flow(f) => f,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(*handler.flows.lock().unwrap(), expected, "every flow arrives as it was spooled");
    assert!(after_v3.compressed_frames >= 4, "{after_v3:?}");
    assert_eq!(after_v3.compressed_frames, after_v3.multi_batch_frames, "{after_v3:?}");
    assert_eq!(after_v3.decompressed_frame_bytes, v3.frame_bytes, "the node decodes exactly what was framed");
    assert_eq!(
        after_v3.compressed_frame_bytes + after_v3.compressed_frames * COMPRESSED_HEADER_BYTES as u64,
        v3.stream_bytes
    );
    assert!(v3.stream_bytes * 2 < v3.frame_bytes, "zstd shrinks flow frames over 2×: {v3:?}");

    handler.applied.lock().unwrap().clear();
    handler.flows.lock().unwrap().clear();
    let plain = open_spool(&fleet, "spool-v2");
    push_hospital_flows(&plain, 200, 13);
    let v2 = drain(&plain, server.addr, &sensor, 0).await;
    let after_v2 = server.stats.snapshot();
    assert_eq!(v2.acked, 200);
    assert_eq!(*handler.flows.lock().unwrap(), expected);
    assert_eq!(after_v2.compressed_frames, after_v3.compressed_frames, "an uncompressed sensor speaks version 2");
    assert!(after_v2.multi_batch_frames > after_v3.multi_batch_frames);
    assert_eq!(v2.stream_bytes, v2.frame_bytes + 4 * (after_v2.multi_batch_frames - after_v3.multi_batch_frames));
    // What quinn counted on the sensor's UDP socket: handshake, headers, acks and replies too.
    assert!(v3.quic_tx_bytes > v3.stream_bytes && v2.quic_tx_bytes > v2.stream_bytes, "{v3:?} {v2:?}");
    assert!(v3.quic_rx_bytes > 0 && v2.quic_rx_bytes > 0);
    assert!(v3.quic_tx_bytes * 2 < v2.quic_tx_bytes, "compressed {v3:?} against plain {v2:?}");
    assert_eq!(server.stats.snapshot().frames_rejected, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_compressing_sensor_speaks_version_2_to_a_node_that_does_not_know_version_3() {
    let fleet = Fleet::new();
    let handler = Arc::new(Applying::default());
    let stats = Arc::new(IngestStats::default());
    // An older node: versions 2 and 1 only.
    let node = wardline_aggregator::config::TlsPaths::in_dir(&fleet.path().join("node1"), "node");
    let server = IngestServer::bind_speaking(
        "127.0.0.1:0".parse().unwrap(),
        &node,
        handler.clone(),
        stats.clone(),
        IngestLimits::default(),
        &[ALPN_UPLINK_V2, ALPN_UPLINK],
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    push_hospital_flows(&spool, 100, 13);
    let st = drain(&spool, addr, &sensor, wire::DEFAULT_COMPRESSION_LEVEL).await;
    assert_eq!(st.acked, 100);
    assert_eq!(*handler.applied.lock().unwrap(), (1..=100).collect::<Vec<u64>>());
    let s = stats.snapshot();
    assert!(s.multi_batch_frames >= 2 && s.compressed_frames == 0, "{s:?}");
    assert_eq!(st.stream_bytes, st.frame_bytes + 4 * s.multi_batch_frames, "uncompressed, length-prefixed: {st:?}");
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap().unwrap();
}

/// Sends `bytes` (a compressed header and what follows) on a fresh version-3 stream and
/// returns the decoded replies.
async fn send_raw_v3(conn: &quinn::Connection, bytes: &[u8]) -> Vec<BatchReply> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The node may stop reading early (a refused header); its reply says why.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    wire::decode_frame(&recv.read_to_end(1 << 20).await.unwrap()).unwrap()
}

fn refusal(replies: &[BatchReply]) -> String {
    match replies {
        [BatchReply::Rejected { batch_id, reason, .. }] if batch_id.is_nil() => reason.clone(),
        other => panic!("expected a refusal of the whole frame, got {other:?}"),
    }
}

fn with_header(codec: Codec, decoded: usize, stored: &[u8]) -> Vec<u8> {
    let h = CompressedHeader { stored: stored.len(), codec, decoded };
    [&h.to_bytes()[..], stored].concat()
}

#[tokio::test]
async fn hostile_compressed_frames_are_refused_with_a_reason_counted_and_never_applied() {
    let fleet = Fleet::new();
    let handler = Arc::new(Applying::default());
    // A small frame limit, and an in-flight budget of one frame: a compressed frame reserves
    // its stored and its decoded size, and must still be served within that budget.
    let limits = IngestLimits { max_frame_bytes: 64 * 1024, max_inflight_bytes: 0, ..IngestLimits::default() };
    let server = start_server(&fleet, handler.clone(), limits);
    let sensor = fleet.sensor("ca", "s1", "north");
    let spool = open_spool(&fleet, "spool");
    push_hospital_flows(&spool, 3, 250);
    let batches = spool.next_batches(3).unwrap();
    let endpoint = crate::quic::raw_client(&sensor, ALPN_UPLINK_V3);
    let connect = || async { endpoint.connect(server.addr, "localhost").unwrap().await.unwrap() };
    let plain = wire::encode_frame(&batches).unwrap();
    let good = wire::compress_frame(&plain, 3).unwrap();
    assert!(plain.len() <= 64 * 1024 && plain.len() + good.len() > 64 * 1024, "{} {}", plain.len(), good.len());
    // 16 MiB of zeros: a few hundred bytes compressed.
    let bomb = wire::compress_frame(&vec![0u8; wire::MAX_FRAME_BYTES], 3).unwrap()[COMPRESSED_HEADER_BYTES..].to_vec();
    assert!(bomb.len() < 4096);
    // Refused frames stop every later stream of their connection: one connection each.
    let mut refused = Vec::new();
    for (what, bytes) in [
        ("unknown codec", {
            let mut b = good.clone();
            b[4] = 9;
            b
        }),
        // Honest about its size: refused before it is read.
        ("claims too much", with_header(Codec::Zstd, wire::MAX_FRAME_BYTES, &bomb)),
        // The same bomb claiming 4 KiB: decompression stops at the claim.
        ("expands past its claim", with_header(Codec::Zstd, 4096, &bomb)),
        ("corrupt", {
            let mut b = good.clone();
            for x in &mut b[COMPRESSED_HEADER_BYTES..COMPRESSED_HEADER_BYTES + 8] {
                *x ^= 0x5a;
            }
            b
        }),
        ("stored but not a frame", with_header(Codec::Stored, 6, b"\x03\x01junk")),
        ("truncated", good[..good.len() - 3].to_vec()),
    ] {
        let conn = connect().await;
        refused.push((what, refusal(&send_raw_v3(&conn, &bytes).await)));
        conn.close(0u32.into(), b"next");
    }
    let reasons: Vec<String> = refused.iter().map(|(w, r)| format!("{w}: {r}")).collect();
    assert!(refused[0].1.contains("unknown frame codec 9"), "{reasons:#?}");
    assert!(refused[1].1.contains("would decode to 16777216 bytes and exceeds the 65536-byte limit"), "{reasons:#?}");
    assert!(refused[2].1.contains("declares 4096 decoded bytes but holds more"), "{reasons:#?}");
    assert!(
        refused[3].1.contains("undecodable compressed frame") && refused[3].1.contains("decompress"),
        "{reasons:#?}"
    );
    assert!(refused[4].1.contains("undecodable multi-batch frame"), "{reasons:#?}");
    assert!(refused[5].1.contains("ended after"), "{reasons:#?}");
    assert!(handler.applied.lock().unwrap().is_empty(), "nothing of a refused frame is applied");
    let s = server.stats.snapshot();
    assert_eq!((s.frames_rejected, s.frames_bad_compression, s.frames_oversized), (6, 4, 1), "{s:?}");
    assert_eq!(s.compressed_frames, 1, "the stored non-frame decoded (as itself) before its body was refused");

    // A good frame near the limit (stored + decoded above the one-frame budget) is served.
    let conn = connect().await;
    let replies = send_raw_v3(&conn, &good).await;
    assert!(replies.iter().all(|r| matches!(r, BatchReply::Ack { duplicate: false, .. })), "{replies:?}");
    assert_eq!(*handler.applied.lock().unwrap(), vec![1, 2, 3]);
    conn.close(0u32.into(), b"done");
    server.stop().await;
}
