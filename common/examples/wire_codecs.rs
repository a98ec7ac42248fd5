//! Compression candidates for uplink frames, measured on real batches (decision 0041; run by
//! `scripts/bench-wire.sh`, which writes the batches with `aggregator/examples/wire_bench.rs`).
//!
//! Input: a file of batch bodies (`wire::encode_batch_body`), each after its u32
//! little-endian length. Frames are cut as the sensor cuts them from a backlog (up to 64
//! batches and 1 MiB, `wire::assemble_batches_frame`) and also one batch per frame (live
//! traffic, when nothing is queued). For each codec: bytes, bytes per flow, and the CPU
//! time (this thread's) to compress and decompress, per MB of frame.
//!
//! Usage: cargo run --release -p wardline-common --example wire_codecs -- BATCHES.bin

use std::time::Duration;
use wardline_common::wire::{assemble_batches_frame, Batch};
use wardline_common::Event;

/// CPU time of this thread, from /proc (Linux): unaffected by other processes' load.
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}

type Codec = (String, Box<dyn Fn(&[u8]) -> Vec<u8>>, Box<dyn Fn(&[u8], usize) -> Vec<u8>>);

fn zstd_codec(level: i32, dict: Option<Vec<u8>>) -> Codec {
    let name = match &dict {
        Some(d) => format!("zstd {level} + {} KiB dictionary", d.len() / 1024),
        None => format!("zstd {level}"),
    };
    let d2 = dict.clone();
    (
        name,
        Box::new(move |f: &[u8]| match &dict {
            Some(d) => zstd::bulk::Compressor::with_dictionary(level, d).unwrap().compress(f).unwrap(),
            None => zstd::bulk::compress(f, level).unwrap(),
        }),
        Box::new(move |c: &[u8], n: usize| match &d2 {
            Some(d) => zstd::bulk::Decompressor::with_dictionary(d).unwrap().decompress(c, n).unwrap(),
            None => zstd::bulk::decompress(c, n).unwrap(),
        }),
    )
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: wire_codecs BATCHES.bin");
    let data = std::fs::read(&path).expect("read the batches file");
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut flows_in: Vec<usize> = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let n = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let body = data[at + 4..at + 4 + n].to_vec();
        let (batch, _): (Batch, usize) =
            bincode::serde::decode_from_slice(&body, bincode::config::standard()).expect("a batch body");
        flows_in.push(batch.flows().count());
        bodies.push(body);
        at += 4 + n;
    }
    let flows: usize = flows_in.iter().sum();
    // Where the bytes are: each event kind's count and encoded size, and the batch envelopes.
    let mut kinds: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for body in &bodies {
        let (batch, _): (Batch, usize) = bincode::serde::decode_from_slice(body, bincode::config::standard()).unwrap();
        let mut events = 0;
        for e in &batch.events {
            let kind = match e {
                Event::Device(_) => "device",
                Event::Flow(_) => "flow",
                Event::Stats(_) => "stats",
                Event::Host(_) => "host",
                Event::Binding(_) => "binding",
                Event::SpoolReport(_) => "spool report",
                #[allow(unreachable_patterns)]
                _ => "other",
            };
            let n = bincode::serde::encode_to_vec(e, bincode::config::standard()).unwrap().len();
            let k = kinds.entry(kind).or_default();
            (k.0, k.1) = (k.0 + 1, k.1 + n);
            events += n;
        }
        let k = kinds.entry("batch envelope (id, sensor, site, seq)").or_default();
        (k.0, k.1) = (k.0 + 1, k.1 + body.len() - events);
    }
    println!("| part | count | bytes | B each | share |");
    println!("|---|---|---|---|---|");
    let all: usize = bodies.iter().map(Vec::len).sum();
    for (kind, (n, bytes)) in &kinds {
        println!(
            "| {kind} | {n} | {bytes} | {:.1} | {:.1} % |",
            *bytes as f64 / *n as f64,
            100.0 * *bytes as f64 / all as f64
        );
    }
    // Backlog frames, cut as the uplink cuts them.
    let mut backlog: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < bodies.len() {
        let (mut j, mut size) = (i + 1, bodies[i].len());
        while j < bodies.len() && j - i < 64 && size + bodies[j].len() <= 1 << 20 {
            size += bodies[j].len();
            j += 1;
        }
        backlog.push(assemble_batches_frame(&bodies[i..j]).unwrap());
        i = j;
    }
    let single: Vec<Vec<u8>> =
        bodies.iter().map(|b| assemble_batches_frame(std::slice::from_ref(b)).unwrap()).collect();
    // A dictionary trained on the even batches, judged on the odd ones only (the spool hands
    // out inventory before flows, so halves would train and judge on different kinds).
    let evens: Vec<&[u8]> = bodies.iter().step_by(2).map(Vec::as_slice).collect();
    let dict = zstd::dict::from_samples(&evens, 64 * 1024).expect("train a dictionary");
    let odd_flows: usize = flows_in.iter().skip(1).step_by(2).sum();
    let odd_single: Vec<&Vec<u8>> = single.iter().skip(1).step_by(2).collect();
    // Backlog frames of flow batches only and of inventory batches only, to split the bytes.
    let cut = |pick: &dyn Fn(usize) -> bool| -> Vec<Vec<u8>> {
        let chosen: Vec<Vec<u8>> = (0..bodies.len()).filter(|&i| pick(i)).map(|i| bodies[i].clone()).collect();
        chosen.chunks(64).map(|c| assemble_batches_frame(c).unwrap()).collect()
    };
    let flow_frames = cut(&|i| flows_in[i] > 0);
    let inventory_frames = cut(&|i| flows_in[i] == 0);

    let mut codecs: Vec<Codec> =
        vec![("none".to_string(), Box::new(|f: &[u8]| f.to_vec()), Box::new(|c: &[u8], _n: usize| c.to_vec()))];
    codecs.push((
        "lz4_flex".to_string(),
        Box::new(|f: &[u8]| lz4_flex::block::compress(f)),
        Box::new(|c: &[u8], n: usize| lz4_flex::block::decompress(c, n).unwrap()),
    ));
    for level in [1, 3, 6, 9, 19] {
        codecs.push(zstd_codec(level, None));
    }
    codecs.push(zstd_codec(3, Some(dict.clone())));

    let mb = |frames: &[Vec<u8>]| frames.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "{} batches, {flows} flows; {} backlog frames ({:.1} B/flow uncompressed), {} single-batch frames \
         ({:.1} B/flow)",
        bodies.len(),
        backlog.len(),
        mb(&backlog) * 1e6 / flows as f64,
        single.len(),
        mb(&single) * 1e6 / flows as f64
    );
    println!(
        "| codec | backlog frames: B/flow | ratio | compress ms/MB | decompress ms/MB | single-batch frames: B/flow \
         | odd batches alone: B/flow | flow batches: B/flow | inventory batches: B/flow |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, compress, decompress) in &codecs {
        let t = thread_cpu();
        let packed: Vec<Vec<u8>> = backlog.iter().map(|f| compress(f)).collect();
        let c_time = thread_cpu() - t;
        let t = thread_cpu();
        for (p, f) in packed.iter().zip(&backlog) {
            let back = decompress(p, f.len());
            assert_eq!(back.len(), f.len());
        }
        let d_time = thread_cpu() - t;
        let packed_single: usize = single.iter().map(|f| compress(f).len()).sum();
        let packed_odd: usize = odd_single.iter().map(|f| compress(f).len()).sum();
        let packed_flows: usize = flow_frames.iter().map(|f| compress(f).len()).sum();
        let packed_inventory: usize = inventory_frames.iter().map(|f| compress(f).len()).sum();
        let total: usize = packed.iter().map(Vec::len).sum();
        println!(
            "| {name} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            total as f64 / flows as f64,
            mb(&backlog) * 1e6 / total as f64,
            c_time.as_secs_f64() * 1e3 / mb(&backlog),
            d_time.as_secs_f64() * 1e3 / mb(&backlog),
            packed_single as f64 / flows as f64,
            packed_odd as f64 / odd_flows as f64,
            packed_flows as f64 / flows as f64,
            packed_inventory as f64 / flows as f64
        );
    }
}
