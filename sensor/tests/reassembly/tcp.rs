//! TCP stream reassembly on hand-built segment sequences: order, retransmission,
//! overlap (first copy wins), gaps, and memory bounds under a flood of streams.

use proptest::prelude::*;
use wardline_sensor::decode::tcp_flags::{ACK, FIN, SYN};
use wardline_sensor::flow::{Dir, FlowRef};
use wardline_sensor::reassembly::{Segment, TcpReassembler, TcpReassemblyConfig};

fn flow(idx: u32) -> FlowRef {
    FlowRef { idx, gen: 0, dir: Dir::AtoB }
}

/// Feed segments (seq, flags, bytes) of one direction; returns everything delivered.
fn feed(r: &mut TcpReassembler, f: FlowRef, segs: &[(u32, u8, Vec<u8>)]) -> Vec<u8> {
    let mut got = Vec::new();
    for (i, (seq, flags, bytes)) in segs.iter().enumerate() {
        let seg = Segment { ts_us: i as u64, seq: *seq, flags: *flags, payload: bytes };
        assert!(r.segment(f, &seg, &mut |m: &[u8]| got.extend_from_slice(m)));
    }
    got
}

/// Stream bytes no framer recognises (lowercase letters), so chunks pass through as is.
fn text(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| b'a' + ((i * 7 + salt as usize) % 26) as u8).collect()
}

fn tracked(cfg: TcpReassemblyConfig) -> (TcpReassembler, FlowRef) {
    let mut r = TcpReassembler::new(cfg);
    let f = flow(1);
    r.track(f, (40000, 9999), 0);
    (r, f)
}

#[test]
fn out_of_order_segments_are_put_in_order() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    let data = text(300, 1);
    let isn = 1000u32;
    let got = feed(
        &mut r,
        f,
        &[
            (isn, SYN, vec![]),
            (isn + 201, ACK, data[200..].to_vec()),
            (isn + 1, ACK, data[..100].to_vec()),
            (isn + 101, ACK, data[100..200].to_vec()),
        ],
    );
    assert_eq!(got, data);
    assert_eq!(r.stats().out_of_order, 1);
    assert_eq!(r.stats().gaps, 0);
}

#[test]
fn retransmissions_are_delivered_once_and_counted() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    let data = text(200, 2);
    let got = feed(
        &mut r,
        f,
        &[
            (0, SYN, vec![]),
            (1, ACK, data[..100].to_vec()),
            (1, ACK, data[..100].to_vec()),
            (51, ACK, data[50..150].to_vec()),
            (101, ACK, data[100..].to_vec()),
        ],
    );
    assert_eq!(got, data);
    // 100 repeated whole, 50 old bytes in the overlapping copy, and 50 of the last
    // segment that the overlapping copy had already delivered.
    assert_eq!(r.stats().retransmitted_bytes, 200);
}

#[test]
fn overlapping_out_of_order_data_keeps_the_first_copy() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    // Bytes 5..15 arrive first as 'B'; then 0..10 as 'A': bytes 5..10 stay 'B'.
    let got = feed(&mut r, f, &[(99, SYN, vec![]), (105, ACK, vec![b'b'; 10]), (100, ACK, vec![b'a'; 10])]);
    assert_eq!(got, b"aaaaabbbbbbbbbb".to_vec());
    assert_eq!(r.stats().retransmitted_bytes, 5);
    assert_eq!(r.stats().out_of_order, 1);
}

#[test]
fn overlap_spanning_two_held_pieces_fills_only_the_hole() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    let got = feed(
        &mut r,
        f,
        &[
            (0, SYN, vec![]),
            (5, ACK, vec![b'x'; 3]),
            (11, ACK, vec![b'y'; 3]),
            (3, ACK, vec![b'z'; 12]),
            (1, ACK, vec![b'w'; 2]),
        ],
    );
    // offsets 0..2 w, 2..4 z, 4..7 x, 7..10 z, 10..13 y, 13..14 z
    assert_eq!(got, b"wwzzxxxzzzyyyz".to_vec());
    assert_eq!(r.stats().retransmitted_bytes, 6);
}

#[test]
fn a_gap_is_skipped_once_the_buffer_bound_is_reached() {
    let cfg = TcpReassemblyConfig { max_buffered_per_dir: 2048, ..Default::default() };
    let (mut r, f) = tracked(cfg);
    let head = text(100, 3);
    let mut segs = vec![(0u32, SYN, vec![]), (1, ACK, head.clone())];
    // Bytes 101..=600 never arrive; 500-byte segments after the hole pile up past 2 KiB.
    let tail = text(3000, 4);
    for (i, c) in tail.chunks(500).enumerate() {
        segs.push((601 + (i * 500) as u32, ACK, c.to_vec()));
    }
    let got = feed(&mut r, f, &segs);
    let mut want = head;
    want.extend_from_slice(&tail);
    assert_eq!(got, want, "everything but the hole, in order");
    assert_eq!(r.stats().gaps, 1);
    assert!(r.charged_bytes() < 2048 + 1024);
}

#[test]
fn mid_stream_pickup_starts_at_the_first_segment_seen() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    let data = text(90, 5);
    let got = feed(
        &mut r,
        f,
        &[(5000, ACK, data[..30].to_vec()), (5060, ACK, data[60..].to_vec()), (5030, ACK, data[30..60].to_vec())],
    );
    assert_eq!(got, data);
}

#[test]
fn sequence_numbers_wrap() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    let data = text(64, 6);
    let isn = u32::MAX - 20;
    let got = feed(
        &mut r,
        f,
        &[
            (isn, SYN, vec![]),
            (isn.wrapping_add(33), ACK, data[32..].to_vec()),
            (isn.wrapping_add(1), ACK, data[..32].to_vec()),
        ],
    );
    assert_eq!(got, data);
}

#[test]
fn fin_delivers_an_incomplete_message_and_rst_drops_the_stream() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    // An MLLP message with no end marker: held until FIN, then delivered as it is.
    let msg = b"\x0bMSH|^~\\&|LAB|WARD".to_vec();
    let mut got = Vec::new();
    for (seq, flags, p) in [(0u32, SYN, vec![]), (1, ACK, msg.clone())] {
        r.segment(f, &Segment { ts_us: 0, seq, flags, payload: &p }, &mut |m: &[u8]| got.push(m.to_vec()));
    }
    assert!(got.is_empty(), "incomplete MLLP message is held");
    r.segment(
        f,
        &Segment { ts_us: 1, seq: 1 + msg.len() as u32, flags: FIN | ACK, payload: &[] },
        &mut |m: &[u8]| got.push(m.to_vec()),
    );
    assert_eq!(got, vec![msg]);
    let back = FlowRef { dir: Dir::BtoA, ..f };
    r.segment(
        back,
        &Segment { ts_us: 2, seq: 7, flags: wardline_sensor::decode::tcp_flags::RST, payload: &[] },
        &mut |_: &[u8]| {},
    );
    assert!(!r.is_tracked(f), "RST ends the stream");
    assert_eq!(r.charged_bytes(), 0);
}

#[test]
fn a_reused_flow_slot_starts_a_fresh_stream() {
    let (mut r, f) = tracked(TcpReassemblyConfig::default());
    feed(&mut r, f, &[(0, SYN, vec![]), (11, ACK, text(10, 1))]);
    let newer = FlowRef { gen: 1, ..f };
    assert!(!r.is_tracked(newer));
    let mut got = Vec::new();
    assert!(!r.segment(newer, &Segment { ts_us: 9, seq: 1, flags: ACK, payload: b"x" }, &mut |m: &[u8]| got
        .extend_from_slice(m)));
    r.track(newer, (1, 2), 9);
    assert_eq!(r.len(), 1, "the stale stream was replaced");
}

#[test]
fn memory_stays_bounded_under_a_flood_of_streams_with_huge_gaps() {
    let cfg = TcpReassemblyConfig::default();
    let budget = cfg.max_total_bytes;
    let per_dir = cfg.max_buffered_per_dir;
    let mut r = TcpReassembler::new(cfg);
    let payload = text(1400, 7);
    let mut delivered = 0usize;
    let mut peak = 0usize;
    for s in 0..10_000u32 {
        let f = flow(s);
        r.track(f, (40000, 104), s as u64);
        r.segment(f, &Segment { ts_us: s as u64, seq: 0, flags: SYN, payload: &[] }, &mut |_: &[u8]| {});
        // Every segment sits behind its own hole, a megabyte in.
        for i in 0..50u32 {
            let seq = 1_000_000 + i * 3000;
            r.segment(f, &Segment { ts_us: s as u64, seq, flags: ACK, payload: &payload }, &mut |m: &[u8]| {
                delivered += m.len()
            });
        }
        peak = peak.max(r.charged_bytes());
    }
    let st = r.stats();
    assert!(peak <= budget, "peak {peak} over the {budget} budget");
    assert!(st.evictions > 0, "10k x 64 KiB cannot fit in 64 MiB: {st:?}");
    assert!(st.gaps >= 10_000, "each stream skipped holes once over {per_dir}: {st:?}");
    assert!(st.out_of_order >= 10_000 * 49);
    assert!(delivered > 0);
    r.clear();
    assert_eq!(r.charged_bytes(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any permutation and duplication of a stream's segments, with no byte missing,
    /// reassembles to the original bytes.
    #[test]
    fn permuted_and_duplicated_segments_reassemble(
        len in 1usize..6000,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        dups in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..20),
        order in any::<prop::sample::Index>(),
        isn in any::<u32>(),
        salt in any::<u8>(),
    ) {
        let data = text(len, salt);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(len)).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        points.dedup();
        let mut segs: Vec<(usize, usize)> = points.windows(2).map(|w| (w[0], w[1])).collect();
        // Duplicates: arbitrary sub-ranges (retransmissions that re-cut the data).
        for (a, b) in &dups {
            let (x, y) = (a.index(len), b.index(len + 1));
            let (x, y) = (x.min(y), x.max(y));
            if y > x {
                segs.push((x, y));
            }
        }
        // A deterministic shuffle driven by `order`.
        let mut k = order.index(usize::MAX / 2) | 1;
        for i in (1..segs.len()).rev() {
            k = k.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            segs.swap(i, (k >> 33) % (i + 1));
        }
        let (mut r, f) = tracked(TcpReassemblyConfig::default());
        let mut input = vec![(isn, SYN, vec![])];
        input.extend(segs.iter().map(|&(s, e)| (isn.wrapping_add(1 + s as u32), ACK, data[s..e].to_vec())));
        let got = feed(&mut r, f, &input);
        prop_assert_eq!(got, data);
        prop_assert_eq!(r.stats().gaps, 0);
    }
}
