//! Benchmark helper (not part of the sensor): builds the large benchmark capture and
//! measures the read-only floor. Driven by scripts/build-bench-capture.sh and
//! scripts/bench.sh; see docs/benchmarks.md.
//!
//! `build-capture`: every input capture (pcap or pcapng, any link type the sensor reads
//! except 802.11) is converted to Ethernet, its timeline rebased to 0 with long silences
//! shortened, all inputs are overlaid into one base sequence, and `--copies` copies of the
//! base are merged in time order, copy k shifted by k * `--shift-ms` and with its MAC and
//! IP addresses rewritten by a per-copy bijection (IPv4/IPv6 header and TCP/UDP/ICMPv6
//! checksums updated incrementally, so a valid checksum stays valid), so every copy's flows
//! and devices are distinct. Each input's timeline is also squeezed into `--span-s` seconds
//! so the copies' flows are alive at the same time. `--dns-flows N` adds N short UDP DNS
//! lookups (query + answer, each its own flow, from 20,000 clients) spread over
//! `--dns-span-s` seconds: the many-short-flows load of a busy resolver, which is what
//! drives the flow table towards its one-million-flow bound.
//!
//! `floor FILE`: iterate the file's records with the sensor's reader and nothing else.

use anyhow::{bail, Context, Result};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::LinkType;

const USAGE: &str = "usage:
  wardline-bench build-capture --out FILE [--copies K] [--shift-ms MS] [--max-gap-ms MS]
                               [--span-s S] [--dns-flows N] [--dns-span-s S] INPUT...
      INPUT is a capture file or a folder searched recursively for *.pcap / *.pcapng
  wardline-bench floor FILE...";

/// 2024-03-12 08:00:00 UTC: where the benchmark timeline starts.
const EPOCH_US: u64 = 1_710_230_400_000_000;

fn main() {
    if let Err(e) = real_main() {
        eprintln!("wardline-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build-capture") => build_capture(&args[1..]),
        Some("floor") => floor(&args[1..]),
        _ => bail!("{USAGE}"),
    }
}

/// The read-only floor: the cheapest possible pass over the records (the sensor's own
/// reader, so it is the ceiling any analysis built on it can reach).
fn floor(files: &[String]) -> Result<()> {
    anyhow::ensure!(!files.is_empty(), "{USAGE}");
    let start = std::time::Instant::now();
    let (mut packets, mut bytes, mut check) = (0u64, 0u64, 0u64);
    for f in files {
        let mut r = FileReader::open(Path::new(f))?;
        while let Some(p) = r.next_packet()? {
            packets += 1;
            bytes += p.data.len() as u64;
            // Touch the timestamp so the loop cannot be optimised away.
            check = check.wrapping_add(p.ts_us);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "packets={packets} bytes={bytes} seconds={secs:.3} pps={:.0} check={check:x}",
        packets as f64 / secs.max(1e-9)
    );
    Ok(())
}

struct BuildArgs {
    out: PathBuf,
    copies: u32,
    shift_us: u64,
    max_gap_us: u64,
    span_us: u64,
    dns_flows: u64,
    dns_span_us: u64,
    inputs: Vec<PathBuf>,
}

fn parse_build_args(a: &[String]) -> Result<BuildArgs> {
    let mut b = BuildArgs {
        out: PathBuf::new(),
        copies: 1,
        shift_us: 250_000,
        max_gap_us: 100_000,
        span_us: u64::MAX,
        dns_flows: 0,
        dns_span_us: 55_000_000,
        inputs: Vec::new(),
    };
    let mut it = a.iter();
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().cloned().with_context(|| format!("{name} needs a value\n{USAGE}"));
        match x.as_str() {
            "--out" => b.out = PathBuf::from(val("--out")?),
            "--copies" => b.copies = val("--copies")?.parse().context("--copies must be a number")?,
            "--shift-ms" => {
                b.shift_us = val("--shift-ms")?.parse::<u64>().context("--shift-ms must be a number")? * 1000
            }
            "--max-gap-ms" => {
                b.max_gap_us = val("--max-gap-ms")?.parse::<u64>().context("--max-gap-ms must be a number")? * 1000
            }
            "--span-s" => b.span_us = val("--span-s")?.parse::<u64>().context("--span-s must be a number")? * 1_000_000,
            "--dns-flows" => b.dns_flows = val("--dns-flows")?.parse().context("--dns-flows must be a number")?,
            "--dns-span-s" => {
                b.dns_span_us =
                    val("--dns-span-s")?.parse::<u64>().context("--dns-span-s must be a number")? * 1_000_000
            }
            s if s.starts_with("--") => bail!("unknown option {s}\n{USAGE}"),
            s => b.inputs.push(PathBuf::from(s)),
        }
    }
    anyhow::ensure!(!b.out.as_os_str().is_empty(), "--out is required\n{USAGE}");
    anyhow::ensure!(!b.inputs.is_empty(), "give at least one input capture or folder\n{USAGE}");
    anyhow::ensure!(b.copies >= 1, "--copies must be at least 1");
    Ok(b)
}

fn collect_inputs(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if p.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            collect_inputs(&e, out)?;
        }
    } else {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".pcap") || name.ends_with(".pcapng") || name.ends_with(".cap") {
            out.push(p.to_path_buf());
        }
    }
    Ok(())
}

/// The base sequence: Ethernet frames with timestamps relative to 0, in time order.
#[derive(Default)]
struct Base {
    arena: Vec<u8>,
    /// (ts_us, start, len, orig_len)
    pkts: Vec<(u64, u32, u32, u32)>,
}

/// Locally administered MACs for link types that carry none (raw IP, NULL, SLL peer).
const SYNTH_SRC: [u8; 6] = [0x02, 0x57, 0x4c, 0x00, 0x00, 0x01];
const SYNTH_DST: [u8; 6] = [0x02, 0x57, 0x4c, 0x00, 0x00, 0x02];

/// Convert one frame to Ethernet; None for link types with no Ethernet equivalent.
fn to_ethernet(lt: LinkType, f: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let eth = |out: &mut Vec<u8>, dst: &[u8], src: &[u8], et: u16, payload: &[u8]| {
        out.extend_from_slice(dst);
        out.extend_from_slice(src);
        out.extend_from_slice(&et.to_be_bytes());
        out.extend_from_slice(payload);
    };
    match lt {
        LinkType::Ethernet => out.extend_from_slice(f),
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => {
            let et = match f.first()? >> 4 {
                4 => 0x0800,
                6 => 0x86dd,
                _ => return None,
            };
            eth(out, &SYNTH_DST, &SYNTH_SRC, et, f);
        }
        LinkType::Null | LinkType::Loop => {
            let raw: [u8; 4] = f.get(..4)?.try_into().ok()?;
            let fam = if lt == LinkType::Loop || u32::from_le_bytes(raw) > 0xffff {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw)
            };
            let et = match fam {
                2 => 0x0800,
                10 | 24 | 28 | 30 => 0x86dd,
                _ => return None,
            };
            eth(out, &SYNTH_DST, &SYNTH_SRC, et, &f[4..]);
        }
        LinkType::LinuxSll => {
            let proto = u16::from_be_bytes([*f.get(14)?, *f.get(15)?]);
            let halen = u16::from_be_bytes([*f.get(4)?, *f.get(5)?]);
            let src = if halen == 6 { f.get(6..12)? } else { &SYNTH_SRC[..] };
            if proto < 0x0600 {
                return None;
            }
            eth(out, &SYNTH_DST, src, proto, f.get(16..)?);
        }
        LinkType::LinuxSll2 => {
            let proto = u16::from_be_bytes([*f.first()?, *f.get(1)?]);
            let halen = *f.get(11)?;
            let src = if halen == 6 { f.get(12..18)? } else { &SYNTH_SRC[..] };
            if proto < 0x0600 {
                return None;
            }
            eth(out, &SYNTH_DST, src, proto, f.get(20..)?);
        }
        LinkType::Radiotap | LinkType::Other(_) => return None,
    }
    Some(())
}

fn load_base(inputs: &[PathBuf], max_gap_us: u64, span_us: u64) -> Result<(Base, Vec<String>)> {
    let mut base = Base::default();
    let mut notes = Vec::new();
    for path in inputs {
        let mut r = match FileReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                notes.push(format!("skipped {}: {e}", path.display()));
                continue;
            }
        };
        let (mut prev_in, mut t_out, mut n, mut skipped) = (None::<u64>, 0u64, 0u64, 0u64);
        let first_of_file = base.pkts.len();
        loop {
            let p = match r.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    notes.push(format!("{}: stopped early: {e}", path.display()));
                    break;
                }
            };
            // Rebase to 0 and shorten silences so every source overlaps the others.
            if let Some(prev) = prev_in {
                t_out += p.ts_us.saturating_sub(prev).min(max_gap_us);
            }
            prev_in = Some(p.ts_us);
            let start = base.arena.len();
            if to_ethernet(p.linktype, p.data, &mut base.arena).is_none() {
                base.arena.truncate(start);
                skipped += 1;
                continue;
            }
            let len = base.arena.len() - start;
            let orig = (p.orig_len as usize).max(p.data.len()) + len - p.data.len();
            base.pkts.push((t_out, start as u32, len as u32, orig as u32));
            n += 1;
        }
        // Squeeze the file's timeline into the span so all sources overlap.
        let file_span = base.pkts[first_of_file..].last().map(|p| p.0).unwrap_or(0);
        if file_span > span_us {
            for p in &mut base.pkts[first_of_file..] {
                p.0 = ((p.0 as u128 * span_us as u128) / file_span as u128) as u64;
            }
        }
        if skipped > 0 {
            notes.push(format!("{}: {skipped} frames of link type {:?} skipped", path.display(), r.pcap_linktype()));
        }
        notes.push(format!("{}: {n} packets", path.display()));
    }
    anyhow::ensure!(base.arena.len() < u32::MAX as usize, "inputs too large for one base (over 4 GiB)");
    base.pkts.sort_by_key(|p| p.0);
    Ok((base, notes))
}

/// Per-copy 32-bit key; copy 0 keeps the original addresses.
fn copy_key(k: u32) -> u32 {
    if k == 0 {
        return 0;
    }
    let mut z = (k as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let v = (z ^ (z >> 31)) as u32;
    v.max(1)
}

fn rewrite_mac(m: &mut [u8], key: u32) {
    // Keep the OUI (vendor lookups) and group addresses (broadcast/multicast).
    if m[0] & 1 == 0 && m.iter().any(|&b| b != 0) {
        let k = key.to_be_bytes();
        m[3] ^= k[1];
        m[4] ^= k[2];
        m[5] ^= k[3];
    }
}

/// IPv4 bijection that keeps the address class: private ranges stay private.
fn rewrite_v4(a: &mut [u8], key: u32) {
    let v = u32::from_be_bytes([a[0], a[1], a[2], a[3]]);
    if v == 0 || v == u32::MAX || (224..=239).contains(&a[0]) || a[0] == 127 {
        return;
    }
    let mask = if a[0] == 192 && a[1] == 168 {
        0xffff
    } else if a[0] == 172 && (16..32).contains(&a[1]) {
        0x000f_ffff
    } else if a[0] == 169 && a[1] == 254 {
        0xffff
    } else {
        0x00ff_ffff
    };
    a.copy_from_slice(&(v ^ (key & mask)).to_be_bytes());
}

fn rewrite_v6(a: &mut [u8], key: u32) {
    if a[0] == 0xff || a.iter().all(|&b| b == 0) || (a[..15].iter().all(|&b| b == 0) && a[15] == 1) {
        return;
    }
    let k = key.to_be_bytes();
    for i in 0..4 {
        a[12 + i] ^= k[i];
    }
}

/// One's-complement sum of 16-bit words.
fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    sum
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// RFC 1624 incremental update of the checksum at `at` for address bytes `old` → `new`.
fn csum_update(pkt: &mut [u8], at: usize, old: &[u8], new: &[u8]) {
    let Some(c) = pkt.get(at..at + 2) else { return };
    let hc = u16::from_be_bytes([c[0], c[1]]);
    let mut sum = (!hc) as u32;
    for w in old.chunks(2) {
        sum += (!u16::from_be_bytes([w[0], w[1]])) as u32;
    }
    sum = csum_add(sum, new);
    let v = !fold(sum);
    pkt[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Rewrite the addresses of one Ethernet frame for copy `key` (0: unchanged).
fn rewrite_frame(f: &mut [u8], key: u32) {
    if key == 0 || f.len() < 14 {
        return;
    }
    rewrite_mac(&mut f[0..6], key);
    rewrite_mac(&mut f[6..12], key);
    let mut off = 12;
    let mut et = u16::from_be_bytes([f[12], f[13]]);
    let mut tags = 0;
    while matches!(et, 0x8100 | 0x88a8 | 0x9100) && tags < 4 && f.len() >= off + 6 {
        off += 4;
        et = u16::from_be_bytes([f[off], f[off + 1]]);
        tags += 1;
    }
    let l3 = off + 2;
    match et {
        0x0800 if f.len() >= l3 + 20 => {
            let ihl = ((f[l3] & 0x0f) as usize) * 4;
            if ihl < 20 || f.len() < l3 + ihl {
                return;
            }
            let old: [u8; 8] = f[l3 + 12..l3 + 20].try_into().unwrap_or([0; 8]);
            rewrite_v4(&mut f[l3 + 12..l3 + 16], key);
            rewrite_v4(&mut f[l3 + 16..l3 + 20], key);
            let new: [u8; 8] = f[l3 + 12..l3 + 20].try_into().unwrap_or([0; 8]);
            csum_update(f, l3 + 10, &old, &new);
            let frag_off = u16::from_be_bytes([f[l3 + 6], f[l3 + 7]]) & 0x1fff;
            let l4 = l3 + ihl;
            if frag_off == 0 {
                match f[l3 + 9] {
                    6 => csum_update(f, l4 + 16, &old, &new),
                    17 if f.get(l4 + 6..l4 + 8).is_some_and(|c| c != [0, 0]) => csum_update(f, l4 + 6, &old, &new),
                    _ => {}
                }
            }
        }
        0x86dd if f.len() >= l3 + 40 => {
            let old: [u8; 32] = f[l3 + 8..l3 + 40].try_into().unwrap_or([0; 32]);
            rewrite_v6(&mut f[l3 + 8..l3 + 24], key);
            rewrite_v6(&mut f[l3 + 24..l3 + 40], key);
            let new: [u8; 32] = f[l3 + 8..l3 + 40].try_into().unwrap_or([0; 32]);
            let l4 = l3 + 40;
            // Only when no extension header sits in between (the common case).
            match f[l3 + 6] {
                6 => csum_update(f, l4 + 16, &old, &new),
                17 => csum_update(f, l4 + 6, &old, &new),
                58 => csum_update(f, l4 + 2, &old, &new),
                _ => {}
            }
        }
        0x0806 if f.len() >= l3 + 28 && f[l3 + 4] == 6 && f[l3 + 5] == 4 => {
            rewrite_mac(&mut f[l3 + 8..l3 + 14], key);
            rewrite_v4(&mut f[l3 + 14..l3 + 18], key);
            rewrite_mac(&mut f[l3 + 18..l3 + 24], key);
            rewrite_v4(&mut f[l3 + 24..l3 + 28], key);
        }
        _ => {}
    }
}

fn build_capture(a: &[String]) -> Result<()> {
    let args = parse_build_args(a)?;
    let mut files = Vec::new();
    for p in &args.inputs {
        collect_inputs(p, &mut files)?;
    }
    anyhow::ensure!(!files.is_empty(), "no *.pcap / *.pcapng found in the inputs");
    let (base, notes) = load_base(&files, args.max_gap_us, args.span_us)?;
    for n in &notes {
        eprintln!("  {n}");
    }
    anyhow::ensure!(!base.pkts.is_empty(), "the inputs hold no packets");
    let base_span = base.pkts.last().map(|p| p.0).unwrap_or(0);
    eprintln!(
        "base: {} packets, {:.1} s after shortening silences to {} ms; writing {} copies shifted {} ms apart",
        base.pkts.len(),
        base_span as f64 / 1e6,
        args.max_gap_us / 1000,
        args.copies,
        args.shift_us / 1000
    );

    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut w = BufWriter::with_capacity(4 << 20, file);
    // Classic pcap, microseconds, little-endian, snaplen 256 KiB, Ethernet.
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&0i32.to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    w.write_all(&262_144u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;

    // k-way merge of the shifted copies by timestamp: (ts, copy, index in base).
    let mut heap: BinaryHeap<Reverse<(u64, u32, usize)>> =
        (0..args.copies).map(|k| Reverse((base.pkts[0].0 + k as u64 * args.shift_us, k, 0usize))).collect();
    let keys: Vec<u32> = (0..args.copies).map(copy_key).collect();
    // The DNS stream is one more merge input, numbered after the copies.
    let dns = DnsLoad { flows: args.dns_flows, span_us: args.dns_span_us };
    let dns_stream = args.copies;
    if dns.flows > 0 {
        heap.push(Reverse((dns.ts(0), dns_stream, 0)));
    }
    let mut frame = Vec::with_capacity(65_536);
    let mut written: u64 = 0;
    while let Some(Reverse((ts, k, i))) = heap.pop() {
        frame.clear();
        let orig = if k == dns_stream {
            dns.frame(i as u64, &mut frame);
            if (i as u64) + 1 < dns.flows * 2 {
                heap.push(Reverse((dns.ts(i as u64 + 1), k, i + 1)));
            }
            frame.len() as u32
        } else {
            let (_, start, len, orig) = base.pkts[i];
            frame.extend_from_slice(&base.arena[start as usize..(start + len) as usize]);
            rewrite_frame(&mut frame, keys[k as usize]);
            if let Some(next) = base.pkts.get(i + 1) {
                heap.push(Reverse((next.0 + k as u64 * args.shift_us, k, i + 1)));
            }
            orig
        };
        let t = EPOCH_US + ts;
        w.write_all(&((t / 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&((t % 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&(frame.len() as u32).to_le_bytes())?;
        w.write_all(&orig.to_le_bytes())?;
        w.write_all(&frame)?;
        written += 1;
    }
    w.flush()?;
    eprintln!("wrote {} ({} packets)", args.out.display(), written);
    Ok(())
}

/// Short DNS lookups: flow i is a query from client i % CLIENTS (10.200.0.0/16) with its
/// own source port to one of two resolvers, answered half a slot later.
struct DnsLoad {
    flows: u64,
    span_us: u64,
}

const DNS_CLIENTS: u64 = 20_000;

impl DnsLoad {
    /// Packet j (2i = query of flow i, 2i+1 = its answer).
    fn ts(&self, j: u64) -> u64 {
        let slot = self.span_us / self.flows.max(1);
        (j / 2) * slot + (j % 2) * (slot / 2).max(1)
    }

    fn frame(&self, j: u64, out: &mut Vec<u8>) {
        let i = j / 2;
        let answer = j % 2 == 1;
        let c = i % DNS_CLIENTS;
        let client_ip = [10, 200, (c >> 8) as u8, (c & 0xff) as u8];
        // Dell OUI so the device table resolves a vendor, like a real client fleet.
        let client_mac = [0x00, 0x14, 0x22, 0x20, (c >> 8) as u8, (c & 0xff) as u8];
        let r = (i % 2) as u8;
        let resolver_ip = [10, 0, r, 53];
        let resolver_mac = [0x00, 0x50, 0x56, 0x00, 0x00, 0x53 + r];
        let port = 1024 + ((i / DNS_CLIENTS) * 7919 % 64_000) as u16;
        let id = (i & 0xffff) as u16;
        let mut dns = Vec::with_capacity(64);
        dns.extend_from_slice(&id.to_be_bytes());
        dns.extend_from_slice(if answer { &[0x81, 0x80] } else { &[0x01, 0x00] });
        dns.extend_from_slice(&[0, 1, 0, if answer { 1 } else { 0 }, 0, 0, 0, 0]);
        let host = format!("ws{}", i % 5_000);
        for label in [host.as_str(), "clinical", "hospital", "org"] {
            dns.push(label.len() as u8);
            dns.extend_from_slice(label.as_bytes());
        }
        dns.extend_from_slice(&[0, 0, 1, 0, 1]);
        if answer {
            let h = (i % 5_000) as u16;
            dns.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 10, 30]);
            dns.extend_from_slice(&h.to_be_bytes());
        }
        let (smac, dmac, sip, dip, sp, dp) = if answer {
            (resolver_mac, client_mac, resolver_ip, client_ip, 53, port)
        } else {
            (client_mac, resolver_mac, client_ip, resolver_ip, port, 53)
        };
        out.extend_from_slice(&dmac);
        out.extend_from_slice(&smac);
        out.extend_from_slice(&[0x08, 0x00]);
        let ip = out.len();
        let total = (20 + 8 + dns.len()) as u16;
        out.extend_from_slice(&[0x45, 0]);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&[0x40, 0, 64, 17, 0, 0]);
        out.extend_from_slice(&sip);
        out.extend_from_slice(&dip);
        let c = !fold(csum_add(0, &out[ip..ip + 20]));
        out[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        let udp = out.len();
        let ulen = (8 + dns.len()) as u16;
        out.extend_from_slice(&sp.to_be_bytes());
        out.extend_from_slice(&dp.to_be_bytes());
        out.extend_from_slice(&ulen.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&dns);
        let mut sum = csum_add(0, &out[ip + 12..ip + 20]);
        sum += 17 + ulen as u32;
        let c = !fold(csum_add(sum, &out[udp..]));
        let c = if c == 0 { 0xffff } else { c };
        out[udp + 6..udp + 8].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(data: &[u8]) -> bool {
        fold(csum_add(0, data)) == 0xffff
    }

    #[test]
    fn rewrite_keeps_ipv4_and_udp_checksums_valid_and_addresses_distinct() {
        // Ethernet + IPv4 + UDP with correct checksums, built by hand.
        let mut f = vec![0u8; 14 + 20 + 8 + 4];
        f[0..6].copy_from_slice(&[0x00, 0x1b, 0x21, 1, 2, 3]);
        f[6..12].copy_from_slice(&[0x00, 0x1b, 0x21, 4, 5, 6]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = 14;
        f[ip] = 0x45;
        f[ip + 2..ip + 4].copy_from_slice(&32u16.to_be_bytes());
        f[ip + 8] = 64;
        f[ip + 9] = 17;
        f[ip + 12..ip + 16].copy_from_slice(&[10, 1, 2, 3]);
        f[ip + 16..ip + 20].copy_from_slice(&[192, 168, 7, 9]);
        let c = !fold(csum_add(0, &f[ip..ip + 20]));
        f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        let u = ip + 20;
        f[u..u + 2].copy_from_slice(&5000u16.to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&53u16.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&12u16.to_be_bytes());
        f[u + 8..].copy_from_slice(b"abcd");
        let pseudo = |f: &[u8]| {
            let mut s = csum_add(0, &f[ip + 12..ip + 20]);
            s += 17 + 12;
            csum_add(s, &f[u..])
        };
        let c = !fold(pseudo(&f));
        f[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
        assert!(checksum_ok(&f[ip..ip + 20]));
        assert_eq!(fold(pseudo(&f)), 0xffff);

        let mut g = f.clone();
        rewrite_frame(&mut g, copy_key(7));
        assert_ne!(g[ip + 12..ip + 20], f[ip + 12..ip + 20], "addresses change per copy");
        assert_eq!(g[ip + 12], 10, "10/8 stays 10/8");
        assert_eq!(g[ip + 16..ip + 18], [192, 168], "192.168/16 stays private");
        assert_eq!(g[0..3], f[0..3], "OUI kept");
        assert_ne!(g[3..6], f[3..6]);
        assert!(checksum_ok(&g[ip..ip + 20]), "IPv4 header checksum still valid");
        assert_eq!(fold(pseudo(&g)), 0xffff, "UDP checksum still valid");
        let mut h = f.clone();
        rewrite_frame(&mut h, copy_key(8));
        assert_ne!(g[ip + 12..ip + 20], h[ip + 12..ip + 20], "copies differ from each other");
    }

    #[test]
    fn raw_ip_gets_an_ethernet_header() {
        let mut out = Vec::new();
        assert!(to_ethernet(LinkType::RawIp, &[0x45, 0, 0, 20], &mut out).is_some());
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        assert_eq!(out.len(), 18);
        assert!(to_ethernet(LinkType::Radiotap, &[0; 40], &mut out).is_none());
    }
}
