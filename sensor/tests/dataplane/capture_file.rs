//! Capture reader on the real corpus: every file reads to the end with the packet count
//! capinfos reports, and damaged files fail with the file name and the bad record's offset
//! after delivering every packet before it.

use crate::dataplane_support::{all_pcaps, pcap};
use std::path::Path;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::{for_each_packet, CaptureError, LinkType, Source};

/// What the tests compare of each packet: timestamp, captured length, original length, link type.
type PacketSummary = (u64, usize, u32, LinkType);

fn read_all(path: &Path) -> (Vec<PacketSummary>, Option<CaptureError>) {
    let mut out = Vec::new();
    let mut r = match FileReader::open(path) {
        Ok(r) => r,
        Err(e) => return (out, Some(e)),
    };
    loop {
        match r.next_packet() {
            Ok(Some(p)) => out.push((p.ts_us, p.data.len(), p.orig_len, p.linktype)),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn capinfos_count(path: &Path) -> Option<u64> {
    let o = std::process::Command::new("capinfos").args(["-c", "-M", "-T", "-r"]).arg(path).output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout);
    s.lines().last()?.split('\t').nth(1)?.trim().parse().ok()
}

#[test]
fn every_corpus_file_reads_fully_with_capinfos_count() {
    let mut checked = 0;
    for p in all_pcaps() {
        let (pkts, err) = read_all(&p);
        assert!(err.is_none(), "{}: {}", p.display(), err.unwrap());
        if let Some(n) = capinfos_count(&p) {
            assert_eq!(pkts.len() as u64, n, "{}: packet count differs from capinfos", p.display());
            checked += 1;
        }
    }
    assert!(checked > 50, "capinfos compared only {checked} files");
}

#[test]
fn pcapng_timestamps_are_microseconds() {
    // tshark prints frame.time_epoch; our ts_us must match it to the microsecond.
    let p = pcap("dhcp/dhcp_inlease_renewal.pcapng");
    let (pkts, err) = read_all(&p);
    assert!(err.is_none());
    let o = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&p)
        .args(["-T", "fields", "-e", "frame.time_epoch"])
        .output();
    if let Ok(o) = o {
        let want: Vec<u64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let (s, f) = l.trim().split_once('.')?;
                Some(s.parse::<u64>().ok()? * 1_000_000 + f[..6].parse::<u64>().ok()?)
            })
            .collect();
        assert_eq!(pkts.iter().map(|p| p.0).collect::<Vec<_>>(), want);
    }
    assert!(pkts[0].0 > 1_000_000_000_000_000, "timestamp {} is not in microseconds since 1970", pkts[0].0);
}

#[test]
fn null_linktype_is_reported() {
    let (pkts, err) = read_all(&pcap("tls/tls-alpn-h2.pcap"));
    assert!(err.is_none());
    assert!(pkts.iter().all(|p| p.3 == LinkType::Null));
}

/// Offsets of each record in a classic pcap: 24-byte header, then 16 + caplen per record.
fn pcap_record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        v.push((off, incl));
        off += 16 + incl;
    }
    v
}

#[test]
fn truncated_pcap_names_file_and_offset_after_processing_earlier_packets() {
    let src = std::fs::read(pcap("http/http-packets2.pcap")).unwrap();
    let recs = pcap_record_offsets(&src);
    assert!(recs.len() > 100);
    let (cut_rec, incl) = recs[100];
    let cut = cut_rec + 16 + incl / 2;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.pcap");
    std::fs::write(&path, &src[..cut]).unwrap();

    let mut seen = 0u64;
    let err = for_each_packet(&Source::File(path.clone()), None, |_| {
        seen += 1;
        std::ops::ControlFlow::Continue(())
    })
    .unwrap_err();
    assert_eq!(seen, 100, "the 100 complete records before the cut are delivered");
    match &err {
        CaptureError::Truncated { offset, needed, remain, .. } => {
            assert_eq!(*offset, cut_rec as u64);
            assert_eq!(*needed, incl as u64);
            assert_eq!(*remain, (incl / 2) as u64);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("ward.pcap"), "{msg}");
    assert!(msg.contains(&format!("byte offset {cut_rec}")), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn truncated_pcapng_and_garbage_are_clear_errors() {
    let src = std::fs::read(pcap("http/http_google.pcapng")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.pcapng");
    std::fs::write(&path, &src[..src.len() - 7]).unwrap();
    let (pkts, err) = read_all(&path);
    let total = read_all(&pcap("http/http_google.pcapng")).0.len();
    assert_eq!(pkts.len(), total - 1);
    let msg = err.expect("truncated pcapng must fail").to_string();
    assert!(msg.contains("cut.pcapng") && msg.contains("byte offset") && msg.contains("truncated"), "{msg}");

    // A record header claiming 1 GB is corrupt, not a reason to allocate.
    let mut bad = std::fs::read(pcap("dhcp/dhcp.pcap")).unwrap();
    bad[24 + 8..24 + 12].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let path = dir.path().join("huge.pcap");
    std::fs::write(&path, &bad).unwrap();
    let (pkts, err) = read_all(&path);
    assert!(pkts.is_empty());
    assert!(matches!(err, Some(CaptureError::Corrupt { offset: 24, .. })), "{err:?}");

    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"this is not a capture file at all, just text").unwrap();
    let msg = FileReader::open(&path).err().expect("text is not a capture").to_string();
    assert!(msg.contains("notes.txt") && msg.contains("not a pcap or pcapng"), "{msg}");

    let missing = dir.path().join("missing.pcap");
    assert!(matches!(FileReader::open(&missing), Err(CaptureError::Open { .. })));
}

// ---- Mapped and streamed reading agree -------------------------------------------------
//
// `FileReader::open` maps regular files; `from_reader` streams through a buffer. Both run
// the same parsers, so every packet and every error (offset, text) must be identical.

use proptest::prelude::*;
use wardline_sensor::capture::file::OpenOptions;

/// Smallest release interval the mapping accepts: corpus files of a few hundred KiB
/// already cross several releases with it.
const TINY_RELEASE: usize = 64 << 10;

/// One packet as a reader reports it.
#[derive(Debug, PartialEq)]
struct Packet {
    ts_us: u64,
    linktype: LinkType,
    data: Vec<u8>,
    orig_len: u32,
    wire_len: u64,
}

/// Everything a reader reports for one file: its packets, then how it ended (the offset
/// it reached, or the error's text and fields).
#[derive(Debug, PartialEq)]
struct Outcome {
    packets: Vec<Packet>,
    end: Result<u64, String>,
}

fn describe(e: &CaptureError) -> String {
    format!("{e} / {e:?}")
}

fn drain(opened: Result<FileReader, CaptureError>) -> Outcome {
    let mut packets = Vec::new();
    let mut r = match opened {
        Ok(r) => r,
        Err(e) => return Outcome { packets, end: Err(describe(&e)) },
    };
    loop {
        match r.next_packet() {
            Ok(Some(p)) => packets.push(Packet {
                ts_us: p.ts_us,
                linktype: p.linktype,
                data: p.data.to_vec(),
                orig_len: p.orig_len,
                wire_len: p.wire_len(),
            }),
            Ok(None) => return Outcome { packets, end: Ok(r.offset()) },
            Err(e) => return Outcome { packets, end: Err(describe(&e)) },
        }
    }
}

/// Read `path` through a mapping; also says whether it really was mapped (`None` when
/// the file header was already rejected, which leaves no reader to ask).
fn read_mapped(path: &Path, release_every: usize) -> (Option<bool>, Outcome) {
    let opened = FileReader::open_with(path, OpenOptions { mmap: true, release_every });
    let mapped = opened.as_ref().ok().map(|r| r.is_mapped());
    (mapped, drain(opened))
}

/// Read the same bytes as a stream, named like the file so error texts can match.
fn read_streamed(path: &Path, bytes: Vec<u8>) -> Outcome {
    drain(FileReader::from_reader(&path.display().to_string(), std::io::Cursor::new(bytes)))
}

/// Where mapping is available at all; elsewhere `open` streams and only agreement is checked.
const MAPS: bool = cfg!(all(unix, target_pointer_width = "64"));

#[test]
fn mapped_and_streamed_readers_agree_on_every_corpus_capture() {
    let mut packets = 0;
    for p in all_pcaps() {
        let bytes = std::fs::read(&p).unwrap();
        let (mapped, via_map) = read_mapped(&p, TINY_RELEASE);
        assert_eq!(mapped, Some(MAPS), "{}: a non-empty regular file is mapped", p.display());
        let via_stream = read_streamed(&p, bytes.clone());
        assert!(via_map == via_stream, "{}: mapped and streamed readers differ", p.display());
        assert_eq!(via_map.end, Ok(bytes.len() as u64), "{}: clean end at the file's length", p.display());
        // The default options (what `analyze` uses) read the same packets too.
        let (_, via_default) = read_mapped(&p, OpenOptions::default().release_every);
        assert!(via_default == via_stream, "{}: default mapping differs", p.display());
        packets += via_map.packets.len();
    }
    assert!(packets > 10_000, "only {packets} packets compared");
}

#[test]
fn stream_option_and_special_files_use_the_stream_path() {
    let p = pcap("dhcp/Dhcp3.pcap");
    let streamed = FileReader::open_with(&p, OpenOptions { mmap: false, ..OpenOptions::default() }).unwrap();
    assert!(!streamed.is_mapped());
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let (mapped, outcome) = read_mapped(&empty, TINY_RELEASE);
    assert_eq!(mapped, None, "an empty file is not a capture");
    assert_eq!(outcome, read_streamed(&empty, Vec::new()));
    assert!(outcome.end.unwrap_err().contains("file is only 0 bytes long"));

    // A FIFO cannot be mapped: it is streamed, with the same packets as the file.
    #[cfg(unix)]
    {
        let fifo = dir.path().join("live.pcap");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let bytes = std::fs::read(&p).unwrap();
            let writer = {
                let (fifo, bytes) = (fifo.clone(), bytes.clone());
                std::thread::spawn(move || std::fs::write(fifo, bytes).unwrap())
            };
            let opened = FileReader::open_with(&fifo, OpenOptions { mmap: true, release_every: TINY_RELEASE });
            assert!(!opened.as_ref().unwrap().is_mapped(), "a FIFO is streamed");
            let via_fifo = drain(opened);
            writer.join().unwrap();
            assert_eq!(via_fifo, read_streamed(&fifo, bytes));
        }
    }
}

/// Offsets at which to cut a file: every byte of the headers and first records, a spread
/// over the whole file, and around the end.
fn cut_points(len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..len.min(96)).collect();
    cuts.extend((1..24).map(|k| len * k / 24));
    cuts.extend([len.saturating_sub(1), len.saturating_sub(4), len.saturating_sub(17), len.saturating_sub(200)]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|&c| c < len);
    cuts
}

#[test]
fn truncated_copies_fail_the_same_way_mapped_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut cuts_checked, mut errors, mut mapped_cuts) = (0, 0, 0);
    for (i, p) in all_pcaps().into_iter().enumerate() {
        let bytes = std::fs::read(&p).unwrap();
        let name = p.extension().unwrap().to_string_lossy().into_owned();
        let cut_path = dir.path().join(format!("cut-{i}.{name}"));
        for cut in cut_points(bytes.len()) {
            std::fs::write(&cut_path, &bytes[..cut]).unwrap();
            let (mapped, via_map) = read_mapped(&cut_path, TINY_RELEASE);
            assert!(mapped.is_none_or(|m| m == MAPS), "{} cut at {cut}", p.display());
            let via_stream = read_streamed(&cut_path, bytes[..cut].to_vec());
            assert!(via_map == via_stream, "{} cut at {cut}: {:?} vs {:?}", p.display(), via_map.end, via_stream.end);
            cuts_checked += 1;
            errors += usize::from(via_map.end.is_err());
            mapped_cuts += usize::from(mapped == Some(true));
        }
        std::fs::remove_file(&cut_path).unwrap();
    }
    assert!(cuts_checked > 5_000, "only {cuts_checked} cuts");
    // Cuts inside the file header fail before a reader exists; all others were mapped.
    if MAPS {
        assert!(mapped_cuts * 2 > cuts_checked, "only {mapped_cuts} of {cuts_checked} cuts were read mapped");
    }
    // Most cuts land inside a record; a few fall on a record boundary and end cleanly.
    assert!(errors * 10 > cuts_checked * 8, "{errors} errors in {cuts_checked} cuts");
}

/// A classic little-endian microsecond pcap of `n` Ethernet-sized records whose bytes and
/// sizes follow from their index.
fn synthetic_pcap(n: u32) -> (Vec<u8>, Vec<(u64, Vec<u8>)>) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut want = Vec::new();
    for i in 0..n {
        let len = 60 + (i.wrapping_mul(2_654_435_761) % 1_455) as usize;
        let data: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
        let (sec, usec) = (1_700_000_000 + i / 1000, (i % 1000) * 997);
        out.extend_from_slice(&sec.to_le_bytes());
        out.extend_from_slice(&usec.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&(len as u32 + 4).to_le_bytes());
        out.extend_from_slice(&data);
        want.push((sec as u64 * 1_000_000 + usec as u64, data));
    }
    (out, want)
}

#[test]
fn a_file_larger_than_the_release_interval_reads_fully_across_releases() {
    let (bytes, want) = synthetic_pcap(14_000);
    assert!(bytes.len() > 2 * OpenOptions::default().release_every, "{} bytes", bytes.len());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pcap");
    std::fs::write(&path, &bytes).unwrap();
    for release_every in [TINY_RELEASE, 1 << 20, OpenOptions::default().release_every] {
        let (mapped, got) = read_mapped(&path, release_every);
        assert_eq!(mapped, Some(MAPS));
        assert_eq!(got.end, Ok(bytes.len() as u64));
        assert_eq!(got.packets.len(), want.len());
        for (i, (p, (ts, data))) in got.packets.iter().zip(&want).enumerate() {
            assert!(p.ts_us == *ts && p.data == *data, "packet {i} differs after releases every {release_every}");
            assert_eq!(p.wire_len, data.len() as u64 + 4);
        }
        assert!(got == read_streamed(&path, bytes.clone()));
    }
}

/// Resident size of this process's mappings of `path`, from /proc/self/smaps (Linux).
#[cfg(target_os = "linux")]
fn mapped_rss_kib(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.display().to_string();
    let (mut inside, mut total) = (false, 0);
    for line in smaps.lines() {
        let is_header = line.split_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':'));
        if is_header {
            inside = line.ends_with(&name);
        } else if inside {
            if let Some(kb) = line.strip_prefix("Rss:") {
                total += kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

/// Parsed pages are handed back: the mapping's resident size stays near one release
/// interval instead of growing to the file's size.
#[cfg(target_os = "linux")]
#[test]
fn released_pages_leave_the_resident_set() {
    let (bytes, _) = synthetic_pcap(40_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resident.pcap");
    std::fs::write(&path, &bytes).unwrap();
    let file_kib = bytes.len() as u64 / 1024;
    let peak_rss = |release_every: usize| {
        let mut r = FileReader::open_with(&path, OpenOptions { mmap: true, release_every }).unwrap();
        assert!(r.is_mapped());
        let (mut n, mut peak) = (0u64, 0);
        while let Some(p) = r.next_packet().unwrap() {
            std::hint::black_box(p.data.iter().map(|&b| b as u64).sum::<u64>());
            n += 1;
            if n % 500 == 0 {
                peak = peak.max(mapped_rss_kib(&path));
            }
        }
        peak.max(mapped_rss_kib(&path))
    };
    // Control: without releases every touched page stays resident, so the probe sees them.
    let unreleased = peak_rss(usize::MAX);
    assert!(unreleased > file_kib * 3 / 4, "probe saw {unreleased} KiB of a {file_kib} KiB mapping");
    let released = peak_rss(1 << 20);
    // One interval plus the kernel's fault-around and folio granularity.
    assert!(
        released < 4 * 1024,
        "{released} KiB resident with releases every 1 MiB, {unreleased} KiB without ({file_kib} KiB file)"
    );
}

// ---- Random files: both paths agree ------------------------------------------------------

/// A little-endian pcap header with a random link type and time unit, then records whose
/// declared and real lengths may disagree.
fn pcap_like() -> impl Strategy<Value = Vec<u8>> {
    let record = (any::<u32>(), any::<u32>(), 0u32..300, any::<u32>(), 0usize..320);
    (any::<bool>(), 0u32..300, prop::collection::vec(record, 0..8), prop::collection::vec(any::<u8>(), 0..40)).prop_map(
        |(nanos, dlt, records, tail)| {
            let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
            let mut v = magic.to_le_bytes().to_vec();
            v.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0]);
            v.extend_from_slice(&dlt.to_le_bytes());
            for (sec, frac, incl, orig, real) in records {
                for x in [sec, frac, incl, orig] {
                    v.extend_from_slice(&x.to_le_bytes());
                }
                v.extend((0..real).map(|j| j as u8));
            }
            v.extend(tail);
            v
        },
    )
}

/// A real small capture (pcap or pcapng) with a few bytes overwritten and maybe cut.
fn damaged_real() -> impl Strategy<Value = Vec<u8>> {
    let sources =
        ["dhcp/Dhcp3.pcap", "dhcp/dhcp_nolease_initialization.pcapng", "discovery/lldp.pcap", "http/http.pcapng"];
    let originals: Vec<Vec<u8>> = sources.iter().map(|s| std::fs::read(pcap(s)).unwrap()).collect();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6);
    (0..originals.len(), edits, any::<prop::sample::Index>()).prop_map(move |(which, edits, cut)| {
        let mut v = originals[which].clone();
        for (at, byte) in edits {
            // Half the edits hit the first 64 bytes, where the headers and lengths are.
            let i = if byte & 1 == 0 { at.index(v.len().min(64)) } else { at.index(v.len()) };
            v[i] = byte;
        }
        let keep = v.len() - cut.index(v.len() / 2 + 1).min(v.len());
        v.truncate(if cut.index(3) == 0 { keep } else { v.len() });
        v
    })
}

fn any_capture_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..200), pcap_like(), damaged_real()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_files_read_the_same_mapped_and_streamed(bytes in any_capture_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("random.cap");
        std::fs::write(&path, &bytes).unwrap();
        let (mapped, via_map) = read_mapped(&path, TINY_RELEASE);
        prop_assert!(mapped.is_none_or(|m| m == MAPS));
        let via_stream = read_streamed(&path, bytes);
        prop_assert_eq!(via_map, via_stream);
    }
}
