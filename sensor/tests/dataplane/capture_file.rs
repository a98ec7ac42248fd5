//! Capture reader on the real corpus: every file reads to the end with the packet count
//! capinfos reports, and damaged files fail with the file name and the bad record's offset
//! after delivering every packet before it.

use crate::dataplane_support::{all_pcaps, pcap};
use std::path::Path;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::{for_each_packet, CaptureError, LinkType, Source};

fn read_all(path: &Path) -> (Vec<(u64, usize, u32, LinkType)>, Option<CaptureError>) {
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
    let o = std::process::Command::new("tshark").args(["-r"]).arg(&p).args(["-T", "fields", "-e", "frame.time_epoch"]).output();
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
