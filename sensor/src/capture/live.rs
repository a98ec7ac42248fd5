//! Live capture from an interface through libpcap.
//!
//! PASSIVE ONLY: Wardline watches hospital networks where an unexpected frame can upset
//! a clinical device, and the mission forbids transmitting on a monitored network. This
//! module therefore never calls `sendpacket`/`inject` or anything else that writes to
//! the wire; it only opens the interface, sets a filter, and reads.

use super::{CaptureError, CaptureSummary, LinkType, RawPacket};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{debug, info, warn};

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

/// First wait before reopening an interface that failed; doubled up to [`REOPEN_MAX_WAIT`].
const REOPEN_FIRST_WAIT: Duration = Duration::from_millis(100);
const REOPEN_MAX_WAIT: Duration = Duration::from_secs(5);

/// libpcap's counters summed over every handle of one capture. Each handle starts at zero and
/// its counters are 32-bit, so they are added as wrapping deltas: nothing is lost to a reopen
/// or to a wrap after 4 G packets.
#[derive(Default)]
struct PcapCounters {
    last: (u32, u32, u32),
    received: u64,
    dropped: u64,
    if_dropped: u64,
}

impl PcapCounters {
    fn update(&mut self, cap: &mut pcap::Capture<pcap::Active>) {
        if let Ok(s) = cap.stats() {
            self.received += u64::from(s.received.wrapping_sub(self.last.0));
            self.dropped += u64::from(s.dropped.wrapping_sub(self.last.1));
            self.if_dropped += u64::from(s.if_dropped.wrapping_sub(self.last.2));
            self.last = (s.received, s.dropped, s.if_dropped);
            crate::telemetry::publish_pcap(self.received, self.dropped, self.if_dropped);
        }
    }

    /// The next handle counts from zero again.
    fn new_handle(&mut self) {
        self.last = (0, 0, 0);
    }
}

fn open(cfg: &LiveConfig) -> Result<pcap::Capture<pcap::Active>, CaptureError> {
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
    Ok(cap)
}

/// Capture until `stop` is set, calling `on_packet` per frame. The first open must succeed
/// (a wrong interface name or missing capability is a configuration error to report at
/// once); after that, an interface that goes down or away is reopened with backoff until it
/// is back or `stop` is set, because a sensor that silently stops capturing is the worst
/// failure it can have. Without a stop flag (tests, one-shot use) a read error ends the run.
pub fn run<F>(cfg: &LiveConfig, stop: Option<&AtomicBool>, mut on_packet: F) -> Result<CaptureSummary, CaptureError>
where
    F: FnMut(&RawPacket<'_>) -> ControlFlow<()>,
{
    let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let mut summary = CaptureSummary::default();
    let mut counters = PcapCounters::default();
    let mut cap = open(cfg)?;
    loop {
        counters.new_handle();
        let ended = read_until_error(cfg, &mut cap, stop, &mut summary, &mut counters, &mut on_packet);
        summary.kernel_received = counters.received;
        summary.kernel_dropped = counters.dropped;
        summary.interface_dropped = counters.if_dropped;
        let err = match ended {
            ReadEnd::Stopped => return Ok(summary),
            ReadEnd::Failed(e) if stop.is_none() => return Err(e),
            ReadEnd::Failed(e) => e,
        };
        warn!("{err}; capture paused, reopening the interface until it is back");
        crate::telemetry::record_capture_reopen();
        let mut wait = REOPEN_FIRST_WAIT;
        cap = loop {
            if sleep_unless_stopped(wait, stop) || stopped() {
                return Ok(summary);
            }
            match open(cfg) {
                Ok(cap) => break cap,
                Err(e) => {
                    debug!("{e}; retrying in {wait:?}");
                    wait = (wait * 2).min(REOPEN_MAX_WAIT);
                }
            }
        };
        summary.reopens += 1;
        info!(iface = %cfg.iface, reopens = summary.reopens, "interface reopened; capture resumed");
    }
}

/// Sleep `wait` in short steps; true if `stop` was set meanwhile.
fn sleep_unless_stopped(wait: Duration, stop: Option<&AtomicBool>) -> bool {
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20).min(wait));
    }
    false
}

enum ReadEnd {
    /// `stop` was set or the callback asked to end.
    Stopped,
    Failed(CaptureError),
}

/// Read one handle until the stop flag, the callback's break, or a read error.
fn read_until_error<F>(
    cfg: &LiveConfig,
    cap: &mut pcap::Capture<pcap::Active>,
    stop: Option<&AtomicBool>,
    summary: &mut CaptureSummary,
    counters: &mut PcapCounters,
    on_packet: &mut F,
) -> ReadEnd
where
    F: FnMut(&RawPacket<'_>) -> ControlFlow<()>,
{
    let linktype = LinkType::from_dlt(cap.get_datalink().0 as u32);
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
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        let result = loop {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                break ReadEnd::Stopped;
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
                        break ReadEnd::Stopped;
                    }
                    // Every 65,536 packets, so a busy link still updates the counters.
                    if summary.packets & 0xFFFF == 0 {
                        counters.update(cap);
                    }
                }
                Err(pcap::Error::TimeoutExpired) => {
                    counters.update(cap);
                    continue;
                }
                // Also what pcap_breakloop makes it return.
                Err(pcap::Error::NoMorePackets) => break ReadEnd::Stopped,
                Err(e) => break ReadEnd::Failed(live_err(&cfg.iface, "read failed", e)),
            }
        };
        done.store(true, Ordering::Relaxed);
        // libpcap keeps the counters of a handle whose interface went down readable.
        counters.update(cap);
        result
    })
}
