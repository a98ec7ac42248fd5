//! Live capture from an interface through libpcap.
//!
//! PASSIVE ONLY: Wardline watches hospital networks where an unexpected frame can upset
//! a clinical device, and the mission forbids transmitting on a monitored network. This
//! module therefore never calls `sendpacket`/`inject` or anything else that writes to
//! the wire; it only opens the interface, sets a filter, and reads.

use super::{CaptureError, CaptureSummary, LinkType, RawPacket};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

/// How to open a live interface.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub iface: String,
    /// BPF filter expression (tcpdump syntax), e.g. `not port 22`.
    pub bpf: Option<String>,
    /// Bytes kept per frame; 262144 keeps whole jumbo frames.
    pub snaplen: i32,
    /// Kernel buffer in bytes; large so bursts on a busy SPAN port are not dropped.
    pub buffer_size: i32,
    /// How long a read may block before we re-check the stop flag.
    pub read_timeout_ms: i32,
}

impl LiveConfig {
    pub fn new(iface: &str, bpf: Option<String>) -> LiveConfig {
        LiveConfig { iface: iface.to_string(), bpf, snaplen: 262_144, buffer_size: 64 << 20, read_timeout_ms: 250 }
    }
}

fn live_err(iface: &str, what: &str, e: impl std::fmt::Display) -> CaptureError {
    CaptureError::Live { iface: iface.to_string(), detail: format!("{what}: {e}") }
}

/// Capture until `stop` is set or the interface goes away, calling `on_packet` per frame.
pub fn run<F>(cfg: &LiveConfig, stop: Option<&AtomicBool>, mut on_packet: F) -> Result<CaptureSummary, CaptureError>
where
    F: FnMut(&RawPacket<'_>) -> ControlFlow<()>,
{
    let iface = cfg.iface.as_str();
    let inactive = pcap::Capture::from_device(iface).map_err(|e| live_err(iface, "no such interface", e))?;
    let mut cap = inactive
        .promisc(true)
        .snaplen(cfg.snaplen)
        .buffer_size(cfg.buffer_size)
        .immediate_mode(true)
        .timeout(cfg.read_timeout_ms)
        .open()
        .map_err(|e| live_err(iface, "cannot open for capture (needs CAP_NET_RAW or root)", e))?;
    if let Some(bpf) = &cfg.bpf {
        cap.filter(bpf, true).map_err(|e| live_err(iface, &format!("invalid BPF filter {bpf:?}"), e))?;
    }
    let linktype = LinkType::from_dlt(cap.get_datalink().0 as u32);
    let mut summary = CaptureSummary::default();
    // libpcap 1.10 keeps polling inside pcap_next_ex on a quiet link instead of returning
    // at the read timeout, so a stop request is delivered by pcap_breakloop (which wakes
    // its poll) from a watcher thread; it ends with the capture.
    let breaker = cap.breakloop_handle();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        if let Some(stop) = stop {
            let (breaker, done) = (&breaker, &done);
            scope.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if stop.load(Ordering::Relaxed) {
                        breaker.breakloop();
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
        let result = loop {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                break Ok(summary);
            }
            match cap.next_packet() {
                Ok(p) => {
                    let ts = p.header.ts;
                    let ts_us =
                        (ts.tv_sec.max(0) as u64).saturating_mul(1_000_000).saturating_add(ts.tv_usec.max(0) as u64);
                    summary.packets += 1;
                    summary.bytes_read += p.data.len() as u64;
                    let raw = RawPacket { ts_us, linktype, data: p.data, orig_len: p.header.len };
                    if on_packet(&raw).is_break() {
                        break Ok(summary);
                    }
                    if summary.packets % 65_536 == 0 {
                        publish_pcap_stats(&mut cap);
                    }
                }
                Err(pcap::Error::TimeoutExpired) => {
                    publish_pcap_stats(&mut cap);
                    continue;
                }
                // Also what pcap_breakloop makes it return.
                Err(pcap::Error::NoMorePackets) => break Ok(summary),
                Err(e) => break Err(live_err(iface, "read failed", e)),
            }
        };
        done.store(true, Ordering::Relaxed);
        publish_pcap_stats(&mut cap);
        result
    })
}

/// libpcap's own counters (received, dropped by the kernel, dropped by the interface) for
/// the metrics endpoint: drops are counted and reported, never hidden.
fn publish_pcap_stats(cap: &mut pcap::Capture<pcap::Active>) {
    if let Ok(s) = cap.stats() {
        crate::telemetry::publish_pcap(s.received, s.dropped, s.if_dropped);
    }
}
