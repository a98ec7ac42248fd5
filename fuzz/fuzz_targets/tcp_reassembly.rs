//! cargo fuzz run tcp_reassembly — arbitrary segment sequences (both directions, any
//! flags, seq numbers near one another so they overlap and leave holes) into the TCP
//! reassembler and its message framing. Checks: no panic, the sensor-wide budget holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_sensor::flow::{Dir, FlowRef};
use wardline_sensor::reassembly::{Segment, TcpReassembler, TcpReassemblyConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = TcpReassemblyConfig {
        max_buffered_per_dir: 4096,
        max_total_bytes: 16 * 1024,
        idle_timeout_us: 1000,
        head_prefix: 256,
    };
    let budget = cfg.max_total_bytes;
    let mut r = TcpReassembler::new(cfg);
    // Ports from the first byte pick the NetBIOS framing hint or not.
    let ports = if data.first().is_some_and(|b| b & 1 == 1) { (40000, 445) } else { (40000, 104) };
    let mut rest = data.get(1..).unwrap_or(&[]);
    let mut ts = 0u64;
    // Each op: stream (1 byte), flags (1), seq delta (2), length (1), then the bytes.
    while rest.len() >= 5 {
        let (hdr, tail) = rest.split_at(5);
        let len = (hdr[4] as usize).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        ts += 1;
        let idx = (hdr[0] & 0x07) as u32;
        let dir = if hdr[0] & 0x80 != 0 { Dir::BtoA } else { Dir::AtoB };
        let f = FlowRef { idx, gen: (hdr[0] >> 3 & 1) as u32, dir };
        if !r.is_tracked(f) {
            r.track(f, ports, ts);
        }
        let seq = u16::from_be_bytes([hdr[2], hdr[3]]) as u32;
        let mut delivered = 0usize;
        r.segment(f, &Segment { ts_us: ts, seq: seq.wrapping_mul(3), flags: hdr[1], payload }, &mut |m: &[u8]| {
            delivered += m.len()
        });
        assert!(r.charged_bytes() <= budget.max(4096 * 2 + 1024 * 4), "budget exceeded: {}", r.charged_bytes());
        if hdr[1] == 0xff {
            r.expire(ts + 2000);
        }
    }
    r.clear();
    assert_eq!(r.charged_bytes(), 0);
});
