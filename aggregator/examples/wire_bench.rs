//! Wire efficiency of the sensor uplink (docs/benchmarks.md, "Uplink bytes on the wire";
//! decision 0041). Run by `scripts/bench-wire.sh`.
//!
//! 1. The sensor's own capture path (`run::capture_all` with the default batch settings)
//!    spools a capture; the spool's bytes, devices and capture span give spool bytes per
//!    device per day.
//! 2. The spooled batches are written to a file (each batch's bincode body, u32
//!    little-endian length first) for the codec comparison (`common/examples/wire_codecs.rs`).
//! 3. Two copies of the spool are drained over real QUIC + mutual TLS into one ingest
//!    server whose handler acks every batch (the transport alone: no Raft, no ClickHouse),
//!    once with uplink version 2 (frames uncompressed) and once with version 3 (zstd at
//!    the default level): QUIC bytes per flow from quinn's connection statistics on the
//!    sensor, frame bytes before and after compression, batches per second.
//!
//! Usage: wire_bench CAPTURE.pcap OUT_DIR

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use wardline_aggregator::config::TlsPaths;
use wardline_aggregator::ingest::{BatchHandler, IngestLimits, IngestServer, IngestStats};
use wardline_aggregator::pki::{self, SensorIdentity};
use wardline_common::wire::{encode_batch_body, BatchReply, DEFAULT_COMPRESSION_LEVEL};
use wardline_common::{Batch, Event};
use wardline_sensor::capture::Source;
use wardline_sensor::config::SensorConfig;
use wardline_sensor::run::{capture_all, Batcher};
use wardline_sensor::spool::Spool;
use wardline_sensor::uplink::{self, UplinkConfig};

/// Acks every batch and counts what it was given.
#[derive(Default)]
struct Counting {
    batches: AtomicU64,
    flows: AtomicU64,
}

impl BatchHandler for Counting {
    async fn handle(&self, _identity: SensorIdentity, batch: Batch) -> BatchReply {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.flows.fetch_add(batch.flows().count() as u64, Ordering::Relaxed);
        BatchReply::Ack { batch_id: batch.id, seq: batch.seq, duplicate: false }
    }
}

fn sensor_config(dir: &Path, capture: &Path) -> Result<SensorConfig> {
    let text = format!(
        "sensor_id = \"bench-1\"\nsite = \"north\"\nspool_dir = {:?}\n[uplink]\nserver = \"127.0.0.1:9\"\n\
         [tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n[capture]\nfiles = [{:?}]\n",
        dir.join("spool-a"),
        dir.join("sensor/sensor.pem"),
        dir.join("sensor/sensor.key"),
        dir.join("sensor/ca.pem"),
        capture
    );
    let path = dir.join("sensor.toml");
    std::fs::write(&path, text)?;
    SensorConfig::load(&path)
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() => total += du(&e.path()),
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.metadata()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

struct Drained {
    stats: uplink::UplinkStats,
    secs: f64,
    flows: u64,
    batches: u64,
}

async fn drain(
    dir: &Path,
    spool_dir: &Path,
    server: std::net::SocketAddr,
    level: i32,
    handler: &Counting,
) -> Result<Drained> {
    let spool = Arc::new(Spool::open(spool_dir, 64 << 30)?);
    let (b0, f0) = (handler.batches.load(Ordering::Relaxed), handler.flows.load(Ordering::Relaxed));
    let mut cfg = UplinkConfig::new(
        server,
        "localhost".into(),
        dir.join("sensor/sensor.pem"),
        dir.join("sensor/sensor.key"),
        dir.join("sensor/ca.pem"),
    );
    cfg.compression_level = level;
    let t = Instant::now();
    let stats = uplink::drain_once(spool.clone(), cfg, std::future::pending()).await?;
    let secs = t.elapsed().as_secs_f64();
    if !spool.is_empty() {
        bail!("the drain left {} batches in the spool: {stats:?}", spool.len());
    }
    Ok(Drained {
        stats,
        secs,
        flows: handler.flows.load(Ordering::Relaxed) - f0,
        batches: handler.batches.load(Ordering::Relaxed) - b0,
    })
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: wire_bench CAPTURE.pcap OUT_DIR";
    let capture = PathBuf::from(args.next().context(usage)?);
    let out = PathBuf::from(args.next().context(usage)?);
    let capture = capture.canonicalize().with_context(|| format!("no capture at {}", capture.display()))?;
    std::fs::create_dir_all(&out)?;
    let work = tempfile::tempdir_in(&out)?;
    let dir = work.path();
    pki::init_ca(&dir.join("ca"), "bench fleet")?;
    pki::issue_node(&dir.join("ca"), 1, &[], &dir.join("node1"))?;
    pki::issue_sensor(&dir.join("ca"), "bench-1", "north", &dir.join("sensor"))?;

    // 1. Spool the capture the way `wardline-sensor run` does.
    let cfg = sensor_config(dir, &capture)?;
    let spool = Arc::new(Spool::open(&cfg.spool_dir, 64 << 30)?);
    let mut batcher = Batcher::new(spool.clone(), &cfg, None)?;
    let t = Instant::now();
    capture_all(&cfg, &[Source::File(capture.clone())], &AtomicBool::new(false), &mut batcher)?;
    let spool_secs = t.elapsed().as_secs_f64();
    let batches = spool.next_batches(usize::MAX)?;
    let spool_bytes = spool.bytes();
    let (mut flows, mut events) = (0u64, 0u64);
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut devices = HashSet::new();
    let mut hosts = HashSet::new();
    let mut bodies = std::io::BufWriter::new(std::fs::File::create(out.join("batches.bin"))?);
    for b in &batches {
        let body = encode_batch_body(b)?;
        bodies.write_all(&(body.len() as u32).to_le_bytes())?;
        bodies.write_all(&body)?;
        for e in &b.events {
            events += 1;
            match e {
                Event::Flow(f) => {
                    flows += 1;
                    first = first.min(f.first_seen_us);
                    last = last.max(f.last_seen_us);
                }
                Event::Device(d) => {
                    devices.insert(d.mac);
                }
                Event::Host(h) => {
                    hosts.insert((h.ip, h.vlan, h.site.clone()));
                }
                _ => {}
            }
        }
    }
    bodies.flush()?;
    drop(bodies);
    drop(batcher);
    drop(spool);
    let span_secs = last.saturating_sub(first) as f64 / 1e6;
    let inventory = (devices.len() + hosts.len()) as f64;
    let per_device_day = spool_bytes as f64 / inventory * 86_400.0 / span_secs.max(1.0);
    println!(
        "spool: {} batches, {events} events, {flows} flows, {} devices + {} hosts, capture span {span_secs:.0} s, \
         spooled in {spool_secs:.1} s",
        batches.len(),
        devices.len(),
        hosts.len()
    );
    println!(
        "spool: {spool_bytes} record bytes ({:.1} B per flow), {} bytes on disk (sled files); \
         {per_device_day:.0} record bytes per device per day",
        spool_bytes as f64 / flows.max(1) as f64,
        du(&cfg.spool_dir)
    );
    drop(batches);
    copy_dir(&cfg.spool_dir, &dir.join("spool-b"))?;

    // 2. Drain both copies over QUIC: version 2 (uncompressed), then version 3.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let handler = Arc::new(Counting::default());
        let stats = Arc::new(IngestStats::default());
        let node = TlsPaths::in_dir(&dir.join("node1"), "node");
        let server =
            IngestServer::bind("127.0.0.1:0".parse()?, &node, handler.clone(), stats.clone(), IngestLimits::default())?;
        let addr = server.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stop_rx.await;
        }));
        for (name, spool_dir, level) in
            [("v2", dir.join("spool-a"), 0), ("v3", dir.join("spool-b"), DEFAULT_COMPRESSION_LEVEL)]
        {
            let d = drain(dir, &spool_dir, addr, level, &handler).await?;
            let s = &d.stats;
            let per_flow = |b: u64| b as f64 / d.flows.max(1) as f64;
            println!(
                "{name} (zstd level {level}): {} flows in {} batches, {:.2} s = {:.0} batches/s, {:.0} flows/s; \
                 frames {} B ({:.1} B/flow) -> streams {} B ({:.1} B/flow); QUIC sent {} B + received {} B = \
                 {:.1} B/flow",
                d.flows,
                d.batches,
                d.secs,
                d.batches as f64 / d.secs,
                d.flows as f64 / d.secs,
                s.frame_bytes,
                per_flow(s.frame_bytes),
                s.stream_bytes,
                per_flow(s.stream_bytes),
                s.quic_tx_bytes,
                s.quic_rx_bytes,
                per_flow(s.quic_tx_bytes + s.quic_rx_bytes)
            );
        }
        let s = stats.snapshot();
        println!(
            "node: {} frames ({} compressed: {} B decompressed to {} B), {} refused",
            s.multi_batch_frames,
            s.compressed_frames,
            s.compressed_frame_bytes,
            s.decompressed_frame_bytes,
            s.frames_rejected
        );
        let _ = stop_tx.send(());
        task.await??;
        anyhow::Ok(())
    })?;
    Ok(())
}
