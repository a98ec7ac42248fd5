//! Micro-benchmarks of the per-packet hot path: frame decode, flow table, dissector
//! dispatch, and the whole pipeline, on the frames of a real capture
//! ($WARDLINE_PCAPS/mixed/many-protocols.pcap, default ../shared/pcaps).
//! `cargo bench -p wardline-sensor --bench hot_path`. The end-to-end benchmark against
//! the peer tools is scripts/bench.sh (docs/benchmarks.md).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::net::IpAddr;
use std::path::PathBuf;
use wardline_sensor::capture::file::FileReader;
use wardline_sensor::capture::{LinkType, RawPacket};
use wardline_sensor::decode::{self, Net, L4};
use wardline_sensor::dissect::{self, PacketCtx, Transport};
use wardline_sensor::flow::{FlowConfig, FlowTable, PacketMeta};
use wardline_sensor::pipeline::{Pipeline, PipelineConfig};

struct Frame {
    ts_us: u64,
    linktype: LinkType,
    data: Vec<u8>,
    orig_len: u32,
}

fn pcaps_dir() -> PathBuf {
    std::env::var_os("WARDLINE_PCAPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps"))
}

fn load() -> Vec<Frame> {
    let path = pcaps_dir().join("mixed/many-protocols.pcap");
    let mut r = FileReader::open(&path).unwrap_or_else(|e| panic!("benchmark input missing ({e}); set WARDLINE_PCAPS"));
    let mut v = Vec::new();
    while let Ok(Some(p)) = r.next_packet() {
        v.push(Frame { ts_us: p.ts_us, linktype: p.linktype, data: p.data.to_vec(), orig_len: p.orig_len });
    }
    assert!(!v.is_empty(), "{} holds no packets", path.display());
    v
}

fn metas(frames: &[Frame]) -> Vec<PacketMeta> {
    frames
        .iter()
        .filter_map(|f| {
            let d = decode::decode(f.linktype, &f.data).ok()?;
            let Net::Ip(h) = d.net else { return None };
            Some(PacketMeta::from_decoded(&d, &h, f.ts_us, f.data.len() as u64))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let frames = load();
    let n = frames.len() as u64;

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(n));
    g.bench_function("all_frames", |b| {
        b.iter(|| {
            for f in &frames {
                let _ = black_box(decode::decode(f.linktype, black_box(&f.data)));
            }
        })
    });
    g.finish();

    let ms = metas(&frames);
    let mut g = c.benchmark_group("flow_table");
    g.throughput(Throughput::Elements(ms.len() as u64));
    g.bench_function("observe_existing", |b| {
        let mut t = FlowTable::new(FlowConfig::default());
        for m in &ms {
            t.observe(m);
        }
        b.iter(|| {
            for m in &ms {
                black_box(t.observe(black_box(m)));
            }
        })
    });
    // Every packet a new flow (distinct source address), against a full 1M-flow table:
    // the insert + evict path a scan or DNS storm drives.
    const NEW: u64 = 100_000;
    g.throughput(Throughput::Elements(NEW));
    g.bench_function("insert_evict_full_table", |b| {
        let mut t = FlowTable::new(FlowConfig { max_flows: 1_000_000, ..FlowConfig::default() });
        let base = ms[0];
        let mut i: u64 = 0;
        let mut next = |t: &mut FlowTable| {
            i += 1;
            let m = PacketMeta {
                ts_us: 1_000_000 + i,
                src_ip: IpAddr::from(((10u32 << 24) | (i as u32 & 0x00ff_ffff)).to_be_bytes()),
                src_port: (i >> 24) as u16 ^ 40000,
                ..base
            };
            t.observe(&m);
        };
        for _ in 0..1_000_000 {
            next(&mut t);
        }
        b.iter(|| {
            for _ in 0..NEW {
                next(&mut t);
            }
            black_box(t.drain(0).len());
        })
    });
    g.finish();

    let registry = dissect::registry();
    let ctxs: Vec<(PacketCtx, &[u8])> = frames
        .iter()
        .filter_map(|f| {
            let d = decode::decode(f.linktype, &f.data).ok()?;
            if d.payload.is_empty() {
                return None;
            }
            let (transport, src_ip, dst_ip) = match (d.net, d.l4) {
                (Net::Ip(h), L4::Tcp(_)) => (Transport::Tcp, Some(h.src), Some(h.dst)),
                (Net::Ip(h), L4::Udp { .. }) => (Transport::Udp, Some(h.src), Some(h.dst)),
                (Net::Other, _) => (Transport::L2 { ethertype: d.ethertype }, None, None),
                _ => return None,
            };
            let (sp, dp) = d.ports();
            let ctx = PacketCtx {
                ts_us: f.ts_us,
                src_mac: d.src_mac,
                dst_mac: d.dst_mac,
                vlan: d.vlan,
                src_ip,
                dst_ip,
                src_port: sp,
                dst_port: dp,
                transport,
            };
            Some((ctx, d.payload))
        })
        .collect();
    let mut g = c.benchmark_group("dissect");
    g.throughput(Throughput::Elements(ctxs.len() as u64));
    g.bench_function("dispatch_payloads", |b| {
        b.iter(|| {
            for (ctx, p) in &ctxs {
                let _ = black_box(dissect::dissect(&registry, ctx, black_box(p)));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(n));
    g.bench_function("process_capture", |b| {
        b.iter(|| {
            let mut p = Pipeline::new(PipelineConfig::default());
            for f in &frames {
                p.process(&RawPacket { ts_us: f.ts_us, linktype: f.linktype, data: &f.data, orig_len: f.orig_len });
            }
            black_box(p.finish().1.packets)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
