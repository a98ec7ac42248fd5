//! `wardline-sensor analyze FILE...`: run the pipeline over capture files and report one
//! line per flow, then, per device, every identity attribute with the evidence behind it,
//! then counters.
//!
//! `--json` output is JSON lines, one object per line, each with a `type`:
//! - `{"type":"device","mac","vendor","ips":[..],"vlans":[..],"first_seen_us","last_seen_us",
//!    "packets","bytes","evidence":[{"field","value","proto","ts_us"}],"classification":{..}}`
//! - `{"type":"flow","ip_proto","vlan","a_mac","b_mac","a_ip","b_ip","a_port","b_port",
//!    "first_seen_us","last_seen_us","packets_ab","packets_ba","bytes_ab","bytes_ba",
//!    "tcp_flags_ab","tcp_flags_ba","app","end_reason"}`
//! - `{"type":"error","file","message"}` for a capture that could not be read to the end
//! - `{"type":"stats", ...PipelineStats}` last.
//!
//! Flow lines are written as the flows end, while the capture is read; device reports follow
//! the last flow, when their evidence is complete. Nothing is spilled to disk and memory
//! stays bounded on captures with millions of flows.

use crate::capture::file::FileReader;
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats};
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use wardline_common::wire::HostObservation;
use wardline_common::{DeviceObservation, Event, Evidence, FlowRecord, MacAddr};
use wardline_intel::{classify, Classification, DeviceFacts, KnowledgeBase};

/// Files larger than this get a progress bar on stderr.
const PROGRESS_MIN_BYTES: u64 = 50 * 1024 * 1024;
/// Write buffer of the report: stdout is line-buffered, and a million flow lines pass through.
const OUT_BUFFER: usize = 1 << 20;
/// Drain finished flows and device news every this much packet time.
const DRAIN_INTERVAL_US: u64 = 10_000_000;
/// ... or as soon as this many ended flows are waiting, so their records never pile up.
const DRAIN_PENDING_FLOWS: usize = 32_768;

/// IEEE OUI vendor of a MAC, when the registry knows it.
pub fn vendor_of(mac: &MacAddr) -> Option<&'static str> {
    wardline_intel::oui::lookup(mac)
}

#[derive(Default)]
struct DeviceReport {
    ips: Vec<IpAddr>,
    vlans: Vec<u16>,
    first_us: u64,
    last_us: u64,
    packets: u64,
    bytes: u64,
    evidence: Vec<Evidence>,
}

fn merge(devs: &mut BTreeMap<MacAddr, DeviceReport>, o: DeviceObservation) {
    let d = devs.entry(o.mac).or_insert_with(|| DeviceReport { first_us: o.first_seen_us, ..Default::default() });
    d.first_us = d.first_us.min(o.first_seen_us);
    d.last_us = d.last_us.max(o.last_seen_us);
    d.packets += o.packets;
    d.bytes += o.bytes;
    for ip in o.ips {
        if !d.ips.contains(&ip) {
            d.ips.push(ip);
        }
    }
    for v in o.vlans {
        if !d.vlans.contains(&v) {
            d.vlans.push(v);
        }
    }
    d.evidence.extend(o.evidence);
}

/// A host known only by address, merged over the run.
struct HostReport {
    /// A remote site's name; None for the analysed capture's own site.
    site: Option<String>,
    via_mac: Option<MacAddr>,
    first_us: u64,
    last_us: u64,
    packets: u64,
    bytes: u64,
    evidence: Vec<Evidence>,
}

/// (remote site or None, IP, VLAN): the sort puts the own site's hosts first.
type HostKey = (Option<String>, IpAddr, Option<u16>);

fn merge_host(hosts: &mut BTreeMap<HostKey, HostReport>, o: HostObservation) {
    let h = hosts.entry((o.site.clone(), o.ip, o.vlan)).or_insert_with(|| HostReport {
        site: o.site.clone(),
        via_mac: o.via_mac,
        first_us: o.first_seen_us,
        last_us: o.last_seen_us,
        packets: 0,
        bytes: 0,
        evidence: Vec::new(),
    });
    h.via_mac = h.via_mac.or(o.via_mac);
    h.first_us = h.first_us.min(o.first_seen_us);
    h.last_us = h.last_us.max(o.last_seen_us);
    h.packets += o.packets;
    h.bytes += o.bytes;
    h.evidence.extend(o.evidence);
}

/// The MAC a host's facts are classified under: locally administered, so it names no
/// vendor (the router's MAC must not lend the host its vendor) and matches no override.
const HOST_FACTS_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0]);

/// Seconds.micros since the epoch, as tshark's `frame.time_epoch` prints it.
fn ts(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

// The String-building reference for `write_flow_line`, kept to test it against.
#[cfg(test)]
fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => format!("ip/{n}"),
    }
}

#[cfg(test)]
fn flags_str(f: u8) -> String {
    const NAMES: [(u8, char); 8] =
        [(0x02, 'S'), (0x10, 'A'), (0x08, 'P'), (0x01, 'F'), (0x04, 'R'), (0x20, 'U'), (0x40, 'E'), (0x80, 'C')];
    let s: String = NAMES.iter().filter(|(b, _)| f & b != 0).map(|(_, c)| *c).collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

#[cfg(test)]
fn endpoint(ip: &IpAddr, port: u16, proto: u8) -> String {
    let with_port = proto == 6 || proto == 17;
    match (ip, with_port) {
        (IpAddr::V6(v6), true) => format!("[{v6}]:{port}"),
        (ip, true) => format!("{ip}:{port}"),
        (ip, false) => ip.to_string(),
    }
}

#[cfg(test)]
fn flow_line(f: &FlowRecord) -> String {
    let vlan = f.vlan.map(|v| format!(" vlan {v}")).unwrap_or_default();
    format!(
        "{} {} -> {}{vlan} app={} pkts={}/{} bytes={}/{} flags={}/{} first={} dur={:.3}s end={}",
        proto_name(f.ip_proto),
        endpoint(&f.a_ip, f.a_port, f.ip_proto),
        endpoint(&f.b_ip, f.b_port, f.ip_proto),
        f.app,
        f.packets_ab,
        f.packets_ba,
        f.bytes_ab,
        f.bytes_ba,
        flags_str(f.tcp_flags_ab),
        flags_str(f.tcp_flags_ba),
        ts(f.first_seen_us),
        f.last_seen_us.saturating_sub(f.first_seen_us) as f64 / 1e6,
        f.end_reason,
    )
}

/// [`push_flow_line`] into a writer (the form the tests compare with `flow_line`).
#[cfg(test)]
fn write_flow_line(w: &mut impl Write, f: &FlowRecord) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(160);
    push_flow_line(&mut line, f);
    w.write_all(&line)
}

/// `flow_line` appended to `out` with hand-rolled number formatting: `core::fmt` cost
/// about a tenth of `analyze`'s time on a million flows.
fn push_flow_line(out: &mut Vec<u8>, f: &FlowRecord) {
    fn push_ep(out: &mut Vec<u8>, ip: &IpAddr, port: u16, proto: u8) {
        let with_port = proto == 6 || proto == 17;
        match ip {
            IpAddr::V4(v4) => {
                for (i, o) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    push_u64(out, *o as u64);
                }
            }
            IpAddr::V6(v6) => {
                // Rare next to IPv4; std's formatter applies the RFC 5952 compression rules.
                if with_port {
                    out.push(b'[');
                }
                let _ = write!(out, "{v6}");
                if with_port {
                    out.push(b']');
                }
            }
        }
        if with_port {
            out.push(b':');
            push_u64(out, port as u64);
        }
    }
    fn push_flags(out: &mut Vec<u8>, f: u8) {
        const NAMES: [(u8, u8); 8] = [
            (0x02, b'S'),
            (0x10, b'A'),
            (0x08, b'P'),
            (0x01, b'F'),
            (0x04, b'R'),
            (0x20, b'U'),
            (0x40, b'E'),
            (0x80, b'C'),
        ];
        if f == 0 {
            out.push(b'-');
        }
        for (b, c) in NAMES {
            if f & b != 0 {
                out.push(c);
            }
        }
    }
    match f.ip_proto {
        1 => out.extend_from_slice(b"icmp"),
        6 => out.extend_from_slice(b"tcp"),
        17 => out.extend_from_slice(b"udp"),
        58 => out.extend_from_slice(b"icmpv6"),
        n => {
            out.extend_from_slice(b"ip/");
            push_u64(out, n as u64);
        }
    }
    out.push(b' ');
    push_ep(out, &f.a_ip, f.a_port, f.ip_proto);
    out.extend_from_slice(b" -> ");
    push_ep(out, &f.b_ip, f.b_port, f.ip_proto);
    if let Some(v) = f.vlan {
        out.extend_from_slice(b" vlan ");
        push_u64(out, v as u64);
    }
    out.extend_from_slice(b" app=");
    out.extend_from_slice(f.app.as_bytes());
    out.extend_from_slice(b" pkts=");
    push_u64(out, f.packets_ab);
    out.push(b'/');
    push_u64(out, f.packets_ba);
    out.extend_from_slice(b" bytes=");
    push_u64(out, f.bytes_ab);
    out.push(b'/');
    push_u64(out, f.bytes_ba);
    out.extend_from_slice(b" flags=");
    push_flags(out, f.tcp_flags_ab);
    out.push(b'/');
    push_flags(out, f.tcp_flags_ba);
    out.extend_from_slice(b" first=");
    push_u64(out, f.first_seen_us / 1_000_000);
    out.push(b'.');
    push_padded(out, f.first_seen_us % 1_000_000, 6);
    out.extend_from_slice(b" dur=");
    push_secs_3(out, f.last_seen_us.saturating_sub(f.first_seen_us));
    out.extend_from_slice(b"s end=");
    out.extend_from_slice(f.end_reason.as_bytes());
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let digits = crate::digits::decimal_bytes(n, &mut buf);
    // Byte pushes, not extend_from_slice: a libc memcpy call per number cost more than
    // the copy itself (a few digits).
    out.reserve(digits.len());
    for &b in digits {
        out.push(b);
    }
}

/// `n` with leading zeros to `width` digits (n < 10^width).
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut m = n;
    let mut i = width;
    while i > 0 {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    for &b in &buf[..width] {
        out.push(b);
    }
}

/// Microseconds as seconds with 3 decimals, exactly as `format!("{:.3}", us as f64 / 1e6)`.
/// Integer rounding gives the same digits except on an exact half millisecond, where the
/// float's binary value decides, and for absurd spans where the float has lost precision:
/// those go through the float formatter.
fn push_secs_3(out: &mut Vec<u8>, us: u64) {
    let rem = us % 1000;
    if rem == 500 || us >= 1 << 52 {
        let _ = write!(out, "{:.3}", us as f64 / 1e6);
        return;
    }
    let ms = us / 1000 + u64::from(rem > 500);
    push_u64(out, ms / 1000);
    out.push(b'.');
    push_padded(out, ms % 1000, 3);
}

fn flow_json(f: &FlowRecord) -> serde_json::Value {
    json!({
        "type": "flow",
        "ip_proto": f.ip_proto,
        "vlan": f.vlan,
        "a_mac": f.a_mac.to_string(),
        "b_mac": f.b_mac.to_string(),
        "a_ip": f.a_ip.to_string(),
        "b_ip": f.b_ip.to_string(),
        "a_port": f.a_port,
        "b_port": f.b_port,
        "first_seen_us": f.first_seen_us,
        "last_seen_us": f.last_seen_us,
        "packets_ab": f.packets_ab,
        "packets_ba": f.packets_ba,
        "bytes_ab": f.bytes_ab,
        "bytes_ba": f.bytes_ba,
        "tcp_flags_ab": f.tcp_flags_ab,
        "tcp_flags_ba": f.tcp_flags_ba,
        "app": f.app,
        "end_reason": f.end_reason,
    })
}

/// Flows are written as they end; devices are merged and reported after the last flow,
/// when their evidence is complete. Nothing is held back or spilled to disk, so the report
/// of a capture with millions of flows needs no temporary space and starts at once.
struct Sink<W: Write> {
    json: bool,
    devices: BTreeMap<MacAddr, DeviceReport>,
    hosts: BTreeMap<HostKey, HostReport>,
    /// Binding events received (ARP, DHCPACK, NDP; de-duplicated per interval).
    bindings: u64,
    flows: W,
    /// Reused buffer for one flow line.
    line: Vec<u8>,
}

impl<W: Write> Sink<W> {
    fn take(&mut self, e: Event) -> Result<()> {
        match e {
            Event::Device(o) => merge(&mut self.devices, o),
            Event::Host(h) => merge_host(&mut self.hosts, h),
            Event::Binding(_) => self.bindings += 1,
            Event::Flow(f) => {
                if self.json {
                    serde_json::to_writer(&mut self.flows, &flow_json(&f))?;
                    self.flows.write_all(b"\n")?;
                } else {
                    self.line.clear();
                    self.line.extend_from_slice(b"  ");
                    push_flow_line(&mut self.line, &f);
                    self.line.push(b'\n');
                    self.flows.write_all(&self.line)?;
                }
            }
            Event::Stats(_) | Event::SpoolReport(_) => {}
        }
        Ok(())
    }
}

/// Analyze capture files in order (one continuous packet clock) and write the report.
/// A file that cannot be read to the end is reported (what was read before the bad
/// record still counts) and the error is returned after the full report is written.
pub fn run_analyze(files: &[PathBuf], json: bool, out: impl Write) -> Result<PipelineStats> {
    run_analyze_with(files, &AnalyzeOptions { json, ..Default::default() }, out)
}

/// How `analyze` reports.
#[derive(Clone, Debug, Default)]
pub struct AnalyzeOptions {
    pub json: bool,
    /// Print, per device, which evidence gave which attribute with what weight.
    pub explain: bool,
    /// Site knowledge-base folders loaded after the built-in one.
    pub kb_dirs: Vec<PathBuf>,
    /// The site's networks (`--local-net`); empty means the defaults (private ranges).
    pub local_networks: Vec<crate::devices::IpNet>,
    /// Other sites' networks seen only through a router (`--remote-net SITE=CIDR`).
    pub remote_sites: Vec<crate::devices::RemoteSite>,
}

pub fn run_analyze_with(files: &[PathBuf], opts: &AnalyzeOptions, out: impl Write) -> Result<PipelineStats> {
    // Stdout is line-buffered: unbuffered, every device line and every chunk of the flow
    // list would be its own write call.
    let mut out = std::io::BufWriter::with_capacity(OUT_BUFFER, out);
    let json = opts.json;
    let kb = KnowledgeBase::load(&opts.kb_dirs).context("cannot load the knowledge base")?;
    let mut pcfg = PipelineConfig::default();
    if !opts.local_networks.is_empty() {
        pcfg.devices.local_networks = opts.local_networks.clone();
    }
    pcfg.devices.remote_sites = opts.remote_sites.clone();
    let mut pipeline = Pipeline::new(pcfg);
    if !json {
        writeln!(out, "flows:")?;
    }
    let mut sink =
        Sink { json, devices: BTreeMap::new(), hosts: BTreeMap::new(), bindings: 0, flows: out, line: Vec::new() };
    let mut errors: Vec<(PathBuf, anyhow::Error)> = Vec::new();
    let mut next_drain: Option<u64> = None;
    let mut peak_flows: usize = 0;
    for path in files {
        let mut reader = match FileReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                errors.push((path.clone(), e.into()));
                continue;
            }
        };
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let bar = (size > PROGRESS_MIN_BYTES).then(|| {
            let pb = indicatif::ProgressBar::new(size);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_message(path.display().to_string());
            pb
        });
        let mut n: u64 = 0;
        loop {
            let pkt = match reader.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    errors.push((path.clone(), e.into()));
                    break;
                }
            };
            let ts = pkt.ts_us;
            pipeline.process(&pkt);
            n += 1;
            let due = *next_drain.get_or_insert(ts.saturating_add(DRAIN_INTERVAL_US));
            if ts >= due || pipeline.pending_flows() >= DRAIN_PENDING_FLOWS {
                next_drain = Some(ts.saturating_add(DRAIN_INTERVAL_US));
                // The first write error stops the run (reported after the drain).
                let mut failed = None;
                pipeline.drain_events_with(ts, |e| {
                    if failed.is_none() {
                        failed = sink.take(e).err();
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            if n.is_multiple_of(4_096) {
                // Sampled: the flow-table high-water mark, reported with the counters.
                peak_flows = peak_flows.max(pipeline.active_flows());
            }
            if n.is_multiple_of(65_536) {
                if let Some(pb) = &bar {
                    pb.set_position(reader.offset());
                }
            }
        }
        if let Some(pb) = bar {
            pb.finish_and_clear();
        }
    }
    peak_flows = peak_flows.max(pipeline.active_flows());
    // Streamed in slices: materialising every remaining flow at once doubled peak memory.
    let stats = pipeline.finish_each(|e| sink.take(e))?;
    let Sink { devices, hosts, bindings, flows: mut out, .. } = sink;
    debug_assert_eq!(bindings, stats.bindings, "every binding recorded is reported once");

    write_devices(&mut out, &kb, opts, &devices)?;
    write_hosts(&mut out, &kb, opts, &hosts)?;

    // Errors and counters.
    for (path, e) in &errors {
        if json {
            serde_json::to_writer(
                &mut out,
                &json!({"type": "error", "file": path.display().to_string(), "message": format!("{e:#}")}),
            )?;
            writeln!(out)?;
        } else {
            writeln!(out, "error: {e:#}")?;
        }
    }
    if json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("type".into(), json!("stats"));
            o.insert("peak_active_flows".into(), json!(peak_flows));
            o.insert("decode_errors_total".into(), json!(stats.decode_errors_total()));
        }
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "counters:")?;
        writeln!(out, "  packets={} bytes={}", stats.packets, stats.bytes)?;
        writeln!(
            out,
            "  flows={} flows_evicted={} peak_active_flows={peak_flows}",
            stats.flows_emitted, stats.flows_evicted
        )?;
        writeln!(out, "  decode_errors={} {:?}", stats.decode_errors_total(), stats.decode_errors)?;
        writeln!(out, "  dissect_errors={} {:?}", stats.dissect_errors_total(), stats.dissect_errors)?;
        writeln!(out, "  dissected={:?}", stats.dissected)?;
        writeln!(
            out,
            "  ip_fragments={} non_ip_frames={} tunnelled_frames={}",
            stats.ip_fragments, stats.non_ip_frames, stats.tunnelled_frames
        )?;
        writeln!(
            out,
            "  hosts={} bindings={} findings_unattributed={}",
            stats.hosts, stats.bindings, stats.findings_unattributed
        )?;
    }
    out.flush()?;
    if let Some((_, e)) = errors.into_iter().next() {
        return Err(e.context(format!("analysis incomplete ({} packets processed)", stats.packets)));
    }
    Ok(stats)
}

/// The MAC devices: one line (or JSON object) each with their classification and evidence.
fn write_devices(
    out: &mut impl Write,
    kb: &KnowledgeBase,
    opts: &AnalyzeOptions,
    devices: &BTreeMap<MacAddr, DeviceReport>,
) -> Result<()> {
    let json = opts.json;
    if !json {
        writeln!(out, "devices ({}):", devices.len())?;
    }
    for (mac, d) in devices {
        let vendor = vendor_of(mac);
        let class = classify(kb, &DeviceFacts::from_evidence(*mac, d.evidence.clone()));
        if json {
            let ev = evidence_json(&d.evidence);
            let line = json!({
                "type": "device",
                "mac": mac.to_string(),
                "vendor": vendor,
                "ips": d.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                "vlans": d.vlans,
                "first_seen_us": d.first_us,
                "last_seen_us": d.last_us,
                "packets": d.packets,
                "bytes": d.bytes,
                "evidence": ev,
                "classification": class,
            });
            let mut line = line;
            if mac.is_local() {
                // Only when set: reports of captures without such MACs stay as they were.
                line["randomized_mac"] = json!(true);
            }
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
        } else {
            let ips: Vec<String> = d.ips.iter().map(|i| i.to_string()).collect();
            writeln!(
                out,
                "  {mac}  vendor={}  ips=[{}]{}  packets={} bytes={} first={} last={}{}",
                vendor.unwrap_or("?"),
                ips.join(", "),
                if d.vlans.is_empty() { String::new() } else { format!("  vlans={:?}", d.vlans) },
                d.packets,
                d.bytes,
                ts(d.first_us),
                ts(d.last_us),
                if mac.is_local() { "  randomized_mac" } else { "" },
            )?;
            write_class_and_evidence(out, &class, &d.evidence, opts.explain)?;
        }
    }
    Ok(())
}

/// A device's or host's evidence as JSON objects.
fn evidence_json(evidence: &[Evidence]) -> Vec<serde_json::Value> {
    evidence
        .iter()
        .map(|e| json!({"field": e.field.as_str(), "value": e.value, "proto": e.proto.as_str(), "ts_us": e.ts_us}))
        .collect()
}

/// The text report's classification line, evidence lines and (with --explain) the reasons.
fn write_class_and_evidence(
    out: &mut impl Write,
    class: &Classification,
    evidence: &[Evidence],
    explain: bool,
) -> Result<()> {
    writeln!(
        out,
        "      class={} ({:.2})  category={}  criticality={}{}",
        class.class.value,
        class.class.confidence,
        class.category.value.as_str(),
        class.criticality.value.as_str(),
        class.profile.as_ref().map(|p| format!("  profile={}", p.value)).unwrap_or_default(),
    )?;
    for e in evidence {
        writeln!(out, "      {} = {:?}  ({}, packet time {})", e.field, e.value, e.proto, ts(e.ts_us))?;
    }
    if explain {
        for line in class.explain().lines().skip(1) {
            writeln!(out, "    explain:{line}")?;
        }
    }
    Ok(())
}

/// Devices known only by address, after the MAC devices: keyed by (site, IP, VLAN), with the
/// router MAC that carried them or "no L2", classified over their own evidence.
fn write_hosts(
    out: &mut impl Write,
    kb: &KnowledgeBase,
    opts: &AnalyzeOptions,
    hosts: &BTreeMap<HostKey, HostReport>,
) -> Result<()> {
    if hosts.is_empty() {
        return Ok(());
    }
    if !opts.json {
        writeln!(out, "hosts known by address ({}):", hosts.len())?;
    }
    for ((_, ip, vlan), h) in hosts {
        let class = classify(kb, &DeviceFacts::from_evidence(HOST_FACTS_MAC, h.evidence.clone()));
        if opts.json {
            let ev = evidence_json(&h.evidence);
            let line = json!({
                "type": "host",
                "ip": ip.to_string(),
                "vlan": vlan,
                "site": h.site,
                "via_mac": h.via_mac.map(|m| m.to_string()),
                "first_seen_us": h.first_us,
                "last_seen_us": h.last_us,
                "packets": h.packets,
                "bytes": h.bytes,
                "evidence": ev,
                "classification": class,
            });
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
            continue;
        }
        writeln!(
            out,
            "  {ip}{}{}  via={}  packets={} bytes={} first={} last={}",
            h.site.as_ref().map(|s| format!("  site={s}")).unwrap_or_default(),
            vlan.map(|v| format!("  vlan={v}")).unwrap_or_default(),
            h.via_mac.map(|m| format!("router {m}")).unwrap_or_else(|| "no L2".into()),
            h.packets,
            h.bytes,
            ts(h.first_us),
            ts(h.last_us),
        )?;
        write_class_and_evidence(out, &class, &h.evidence, opts.explain)?;
    }
    Ok(())
}

#[cfg(test)]
mod flow_line_tests {
    use super::*;

    fn rec(ip_proto: u8, a: &str, b: &str, vlan: Option<u16>, first: u64, last: u64, flags: (u8, u8)) -> FlowRecord {
        FlowRecord {
            ip_proto,
            vlan,
            a_mac: MacAddr([0, 1, 2, 3, 4, 5]),
            b_mac: MacAddr([0, 1, 2, 3, 4, 6]),
            a_ip: a.parse().unwrap(),
            b_ip: b.parse().unwrap(),
            a_port: 51000,
            b_port: 443,
            first_seen_us: first,
            last_seen_us: last,
            packets_ab: 3,
            packets_ba: 2,
            bytes_ab: 300,
            bytes_ba: 12345,
            tcp_flags_ab: flags.0,
            tcp_flags_ba: flags.1,
            app: "tls".into(),
            end_reason: "fin".into(),
        }
    }

    #[test]
    fn streamed_flow_line_matches_the_string_version() {
        let cases = [
            rec(6, "10.0.0.1", "10.0.0.2", None, 1_710_230_400_000_001, 1_710_230_401_234_567, (0x1b, 0x12)),
            rec(17, "fe80::1", "ff02::fb", Some(20), 5, 5, (0, 0)),
            rec(1, "192.168.1.1", "192.168.1.2", None, 0, 1_000_500, (0, 0)),
            rec(58, "::1", "::2", None, 7, 2_500, (0xff, 0x04)),
            rec(47, "10.1.1.1", "10.2.2.2", Some(4094), 1, 999_999_999, (0, 0)),
            rec(6, "0.0.0.0", "255.255.255.255", Some(0), 0, 1_500, (0, 0)),
            rec(17, "2001:db8::1", "10.0.0.1", None, 1_000_000, 1_002_500, (0x02, 0x12)),
            rec(6, "10.0.0.1", "10.0.0.2", None, 0, 999_999_999_999, (0, 0)),
            rec(6, "10.0.0.1", "10.0.0.2", None, 0, u64::MAX, (0, 0)),
        ];
        for f in &cases {
            let mut v = Vec::new();
            write_flow_line(&mut v, f).unwrap();
            assert_eq!(String::from_utf8(v).unwrap(), flow_line(f));
        }
        // Durations: every sub-second rounding case, plus ties, around a few offsets.
        for base in [0u64, 1_000_000, 86_400_000_000, (1 << 52) - 2_000] {
            for d in (0..2_000).chain([499, 500, 501, 999_499, 999_500, 999_501, 1_000_500]) {
                let f = rec(6, "10.0.0.1", "10.0.0.2", None, 7, 7 + base + d, (0, 0));
                let mut v = Vec::new();
                write_flow_line(&mut v, &f).unwrap();
                assert_eq!(String::from_utf8(v).unwrap(), flow_line(&f), "duration {} us", base + d);
            }
        }
    }
}
