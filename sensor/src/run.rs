//! `wardline-sensor run`: capture → pipeline → batcher → spool, with the uplink draining
//! the spool to the aggregator in the background.
//!
//! Exactly-once across sensor crashes, for capture files: the pipeline is deterministic in
//! capture time, and the batcher sorts each drain before cutting it into batches, so
//! reprocessing the same files yields the same batches in the same order. The spool stores,
//! in the same transaction as each batch, how many batches this set of files has produced.
//! After a kill -9 the sensor reprocesses the files and skips that many batches instead of
//! spooling them again: nothing is lost (unsent batches are still in the spool) and nothing
//! is counted twice. Live capture cannot be replayed; what was in memory at a crash is lost
//! and the restart is logged.

use crate::capture::{self, RawPacket, Source};
use crate::config::SensorConfig;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::spool::Spool;
use crate::uplink::{self, UplinkConfig};
use anyhow::{Context, Result};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing::{info, warn};
use wardline_common::{Event, SensorStats};

/// Cuts drained events into batches and spools them, skipping batches a previous run of
/// the same capture files already spooled.
pub struct Batcher {
    spool: Arc<Spool>,
    sensor_id: String,
    site: String,
    max_events: usize,
    /// Checkpoint key naming the capture files, None for live capture.
    checkpoint: Option<String>,
    /// Batches of this source produced so far in this run (spooled or skipped).
    produced: u64,
    /// Batches a previous run already spooled.
    already: u64,
    pub spooled: u64,
}

impl Batcher {
    pub fn new(spool: Arc<Spool>, cfg: &SensorConfig, checkpoint: Option<String>) -> Result<Self> {
        let already = match &checkpoint {
            Some(k) => spool.checkpoint(k)?.unwrap_or(0),
            None => 0,
        };
        if already > 0 {
            info!(batches = already, "these capture files were partly processed before; resuming without re-sending");
        }
        Ok(Batcher {
            spool,
            sensor_id: cfg.sensor_id.clone(),
            site: cfg.site.clone(),
            max_events: cfg.batch.max_events,
            checkpoint,
            produced: 0,
            already,
            spooled: 0,
        })
    }

    pub fn emit(&mut self, mut events: Vec<Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        sort_events(&mut events);
        // Inventory and reports first, in batches of their own: the spool sends (and keeps
        // under pressure) them before flow detail (decision 0022). The sort puts flows after
        // devices, hosts and bindings and before stats.
        let (flows, inventory): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|e| matches!(e, Event::Flow(_)));
        for part in [inventory, flows] {
            for chunk in part.chunks(self.max_events) {
                self.produced += 1;
                if self.produced <= self.already {
                    continue;
                }
                let ckpt = self.checkpoint.as_deref().map(|k| (k, self.produced));
                self.spool
                    .push_checkpointed(chunk.to_vec(), &self.sensor_id, &self.site, ckpt)
                    .context("cannot write a batch to the spool")?;
                self.spooled += 1;
            }
        }
        Ok(())
    }
}

/// Deterministic order: devices by MAC, hosts by address, bindings, flows by start and
/// endpoints, stats last.
fn sort_events(events: &mut [Event]) {
    fn rank(e: &Event) -> u8 {
        match e {
            Event::Device(_) => 0,
            Event::Host(_) => 1,
            Event::Binding(_) => 2,
            Event::Flow(_) => 3,
            Event::Stats(_) => 4,
            Event::SpoolReport(_) => 5,
        }
    }
    events.sort_by(|a, b| match (a, b) {
        (Event::Device(x), Event::Device(y)) => x.mac.cmp(&y.mac),
        (Event::Host(x), Event::Host(y)) => (x.ip, x.vlan).cmp(&(y.ip, y.vlan)),
        (Event::Binding(x), Event::Binding(y)) => {
            (x.seen_us, x.ip, x.mac, x.vlan, x.source).cmp(&(y.seen_us, y.ip, y.mac, y.vlan, y.source))
        }
        (Event::Flow(x), Event::Flow(y)) => (x.first_seen_us, x.a_ip, x.a_port, x.b_ip, x.b_port, x.ip_proto, x.vlan)
            .cmp(&(y.first_seen_us, y.a_ip, y.a_port, y.b_ip, y.b_port, y.ip_proto, y.vlan))
            .then(x.last_seen_us.cmp(&y.last_seen_us)),
        _ => rank(a).cmp(&rank(b)),
    });
}

/// Checkpoint key for a set of capture files: their paths, sizes and modification times.
fn files_checkpoint_key(files: &[std::path::PathBuf]) -> Result<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in files {
        let meta = std::fs::metadata(f).with_context(|| format!("capture {}: cannot read", f.display()))?;
        let canon = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        ctx.update(canon.to_string_lossy().as_bytes());
        ctx.update(&meta.len().to_be_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        ctx.update(&mtime.to_be_bytes());
    }
    Ok(format!("files:{}", hex::encode(&ctx.finish().as_ref()[..16])))
}

/// Ended flows held in memory before a drain is forced.
const MAX_PENDING_FLOWS: usize = 32_768;

pub struct RunOptions {
    /// Exit once every capture file is processed and the spool is empty.
    pub exit_when_drained: bool,
}

/// Run the sensor until the capture ends (files) or it is stopped (live).
pub fn run(cfg: SensorConfig, opts: RunOptions) -> Result<()> {
    cfg.validate()?;
    let spool = Arc::new(Spool::open(&cfg.spool_dir, cfg.spool_bound()).with_context(|| {
        format!("cannot open the spool at {} — is another sensor using it?", cfg.spool_dir.display())
    })?);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if let Some(metrics) = &cfg.metrics {
        crate::telemetry::start(metrics, spool.clone(), &rt)?;
    }
    let resolve = |name: &str| -> Result<std::net::SocketAddr> {
        rt.block_on(tokio::net::lookup_host(name))
            .with_context(|| format!("cannot resolve aggregator address {name}"))?
            .next()
            .with_context(|| format!("aggregator address {name} resolves to nothing"))
    };
    let server = resolve(&cfg.uplink.server)?;
    let fallback_addrs = cfg.uplink.fallback_servers.iter().map(|s| resolve(s)).collect::<Result<Vec<_>>>()?;
    let mut uplink_cfg = UplinkConfig::new(
        server,
        cfg.uplink.server_name.clone(),
        cfg.tls.cert.clone(),
        cfg.tls.key.clone(),
        cfg.tls.ca.clone(),
    );
    uplink_cfg.fallback_addrs = fallback_addrs;
    uplink_cfg.max_in_flight = cfg.uplink.max_in_flight.max(1);
    uplink_cfg.max_frame_batches = cfg.uplink.max_frame_batches.max(1);
    uplink_cfg.compression_level = cfg.uplink.compression_level;
    let stop = Arc::new(AtomicBool::new(false));
    let (up_stop_tx, up_stop_rx) = tokio::sync::watch::channel(false);
    let health = Arc::new(uplink::UplinkHealth::default());
    spawn_certificate_watch(&cfg, &rt, up_stop_rx.clone());
    let heartbeat_task = (cfg.uplink.heartbeat_interval_secs > 0).then(|| {
        let every = std::time::Duration::from_secs(cfg.uplink.heartbeat_interval_secs);
        let source = heartbeat_source(&cfg, spool.clone(), health.clone());
        rt.spawn(uplink::run_heartbeats(uplink_cfg.clone(), every, source, health.clone(), up_stop_rx.clone()))
    });
    let uplink_task = {
        let (spool, health) = (spool.clone(), health.clone());
        rt.spawn(uplink::supervise(spool, uplink_cfg, health, up_stop_rx.clone()))
    };
    {
        let stop = stop.clone();
        rt.spawn(async move {
            let signal = wait_for_stop_signal().await;
            info!("stopping on {signal}: finishing the current packet and writing live flows and devices to the spool");
            stop.store(true, Ordering::Relaxed);
        });
    }

    let (sources, checkpoint) = match &cfg.capture.interface {
        Some(iface) => (vec![Source::Live { iface: iface.clone(), bpf: cfg.capture.bpf.clone() }], None),
        None => (
            cfg.capture.files.iter().cloned().map(Source::File).collect::<Vec<_>>(),
            Some(files_checkpoint_key(&cfg.capture.files)?),
        ),
    };
    let mut batcher = Batcher::new(spool.clone(), &cfg, checkpoint)?;
    let capture_result = capture_all(&cfg, &sources, &stop, &mut batcher);
    if let Err(e) = &capture_result {
        warn!("{e:#}");
    }
    info!(batches = batcher.spooled, spool_pending = spool.len(), "capture finished");

    if opts.exit_when_drained || cfg.capture.interface.is_none() {
        rt.block_on(async {
            while !spool.is_empty() && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        if spool.is_empty() {
            info!("spool drained: every batch is acknowledged by the cluster");
        }
    }
    let _ = up_stop_tx.send(true);
    let _ = rt.block_on(uplink_task);
    if let Some(task) = heartbeat_task {
        let _ = rt.block_on(task);
    }
    info!(uplink = ?health.state(), spool_pending = spool.len(), "sensor stopped");
    capture_result
}

/// Reload the sensor certificate, key and CA bundle when they change on disk or on SIGHUP, and
/// warn about expiry (decision 0040); ends with the uplink on `stop`.
fn spawn_certificate_watch(
    cfg: &SensorConfig,
    rt: &tokio::runtime::Runtime,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _runtime = rt.enter();
    rt.spawn(wardline_common::tls_reload::watch(cfg.certificates.clone(), async move {
        let _ = stop.changed().await;
    }));
}

/// What each heartbeat reports (decision 0038): the spool's depth and losses, libpcap's
/// drop counters, the uplink's state, this build's version and the certificate's end (read
/// each time, so a renewed certificate shows).
fn heartbeat_source(
    cfg: &SensorConfig,
    spool: Arc<Spool>,
    health: Arc<uplink::UplinkHealth>,
) -> uplink::HeartbeatSource {
    let (sensor_id, site, cert) = (cfg.sensor_id.clone(), cfg.site.clone(), cfg.tls.cert.clone());
    Arc::new(move || {
        let mut hb = wardline_common::wire::SensorHeartbeat {
            sensor_id: sensor_id.clone(),
            site: site.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        };
        match spool.stats() {
            Ok(s) => {
                hb.spool_batches = s.pending_batches;
                hb.spool_bytes = s.pending_bytes;
                hb.spool_max_bytes = s.max_bytes;
                hb.spool_batches_evicted = s.dropped_batches;
                hb.spool_flows_rolled_up = s.flows_rolled_up;
                hb.spool_records_quarantined = s.records_quarantined;
            }
            Err(e) => warn!("heartbeat: cannot read the spool's counters: {e:#}"),
        }
        (hb.capture_received, hb.capture_kernel_dropped, hb.capture_interface_dropped, hb.capture_reopens) =
            crate::telemetry::pcap_counters();
        let state = health.state();
        hb.uplink_connected = matches!(state, uplink::UplinkState::Connected(_));
        hb.uplink_state = match state {
            uplink::UplinkState::Starting => "starting".into(),
            uplink::UplinkState::Connected(at) => format!("connected to {at}"),
            uplink::UplinkState::Retrying(why) => format!("retrying: {why}"),
            uplink::UplinkState::Restarting(why) => format!("restarting: {why}"),
            uplink::UplinkState::Stopped => "stopped".into(),
        };
        hb.uplink_restarts = health.restarts();
        hb.cert_not_after_s = certificate_not_after(&cert);
        hb
    })
}

/// When the first certificate in the PEM file `path` stops being valid (s since the epoch).
fn certificate_not_after(path: &std::path::Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let der = rustls_pemfile::certs(&mut pem.as_slice()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Resolves on SIGINT or SIGTERM (a service manager's stop), naming which.
async fn wait_for_stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                warn!("cannot install a SIGTERM handler ({e}); only SIGINT stops the sensor gracefully");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Frames the kernel or the interface dropped before the sensor read them are counted in the
/// metrics as they happen; at the end of a live capture they are also said in the log.
fn report_capture_losses(source: &Source, s: &capture::CaptureSummary) {
    if s.kernel_dropped + s.interface_dropped > 0 {
        warn!(
            kernel_dropped = s.kernel_dropped,
            interface_dropped = s.interface_dropped,
            received = s.kernel_received,
            "{source}: frames were dropped before the sensor read them (the host could not keep up): \
             raise capture buffer or CPU, or narrow the BPF filter"
        );
    }
    if s.reopens > 0 {
        info!(reopens = s.reopens, "{source}: the interface went down and was reopened during the capture");
    }
}

/// Read `sources` in order through one pipeline into `batcher`'s spool: batches every
/// `batch.interval_secs` of capture time, then the remaining flows, devices and the stats.
pub fn capture_all(cfg: &SensorConfig, sources: &[Source], stop: &AtomicBool, batcher: &mut Batcher) -> Result<()> {
    let interval_us = cfg.batch.interval_secs.max(1) * 1_000_000;
    let mut pcfg = PipelineConfig::default();
    pcfg.devices.local_networks = cfg.local_networks()?;
    pcfg.devices.remote_sites = cfg.remote_sites()?;
    pcfg.devices.counter_report_interval_us = cfg.batch.counter_report_interval_secs.saturating_mul(1_000_000);
    let mut pipeline = Pipeline::new(pcfg);
    let mut next_drain: Option<u64> = None;
    let mut first_err: Option<anyhow::Error> = None;
    for source in sources {
        info!("reading {source}");
        let mut emit_err: Option<anyhow::Error> = None;
        let res = capture::for_each_packet(source, Some(stop), |pkt: &RawPacket<'_>| {
            pipeline.process(pkt);
            let due = *next_drain.get_or_insert(pkt.ts_us + interval_us);
            // Also drain when ended flows pile up between intervals (bounded memory); both
            // conditions depend only on the packets, so a replay cuts the same batches.
            if pkt.ts_us >= due || pipeline.pending_flows() >= MAX_PENDING_FLOWS {
                next_drain = Some(pkt.ts_us + interval_us);
                crate::telemetry::publish_pipeline(&pipeline);
                if let Err(e) = batcher.emit(pipeline.drain_events(pkt.ts_us)) {
                    emit_err = Some(e);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Some(e) = emit_err {
            return Err(e);
        }
        if let Ok(summary) = &res {
            report_capture_losses(source, summary);
        }
        if let Err(e) = res {
            // Earlier packets were processed; the rest of the sources still are.
            let e = anyhow::Error::new(e);
            if first_err.is_none() {
                first_err = Some(e);
            } else {
                warn!("{e:#}");
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    if stop.load(Ordering::Relaxed) && cfg.capture.interface.is_none() {
        // Interrupted mid-file: keep in-memory flows out of the spool. The restart
        // reprocesses the files and produces exactly the batches a full run would.
        info!("stopped before the end of the capture files; a restart resumes where the spool left off");
        return first_err.map_or(Ok(()), Err);
    }
    let (mut events, stats) = pipeline.finish();
    crate::telemetry::publish_final_stats(&stats);
    if stats.devices_over_limit + stats.hosts_over_limit + stats.bindings_over_limit > 0 {
        // The tables are bounded; what a bound turned away is only counted, so say so.
        warn!(
            devices = stats.devices_over_limit,
            hosts = stats.hosts_over_limit,
            bindings = stats.bindings_over_limit,
            "the device, host or binding table was full: these were counted but not tracked; \
             raise the limits or narrow local_networks"
        );
    }
    events.push(Event::Stats(SensorStats {
        packets: stats.packets,
        bytes: stats.bytes,
        decode_errors: stats.decode_errors_total(),
        flows_evicted: stats.flows_evicted,
        // Written in by the spool when it stores the batch: it counts what it drops.
        batches_dropped: 0,
    }));
    batcher.emit(events)?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
