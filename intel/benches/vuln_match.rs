//! Matching a large inventory against every advisory: 1,000,000 devices drawn from the
//! simulator's profiles and real advisory product names, with and without firmware.
//! Reads the real feeds from $WARDLINE_VULNFEEDS (default ../shared/vulnfeeds).
//!
//! cargo bench -p wardline-intel --bench vuln_match

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wardline_intel::vuln::{load_advisory_dir, KevCatalog, VulnIndex};
use wardline_intel::DeviceQuery;

const DEVICES: usize = 1_000_000;

fn feeds_dir() -> PathBuf {
    match std::env::var_os("WARDLINE_VULNFEEDS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vulnfeeds"),
    }
}

/// (vendor, model, os) triples: every simulator profile, plus every advisory product name
/// so a good share of the inventory does match.
fn device_kinds(idx: &VulnIndex) -> Vec<(String, String, String)> {
    let mut kinds: Vec<(String, String, String)> = wardline_sim::profiles::PROFILES
        .iter()
        .map(|p| (p.manufacturer.to_string(), p.model.to_string(), p.os.to_string()))
        .collect();
    for a in idx.advisories() {
        for p in &a.products {
            kinds.push((p.vendor.clone(), p.product_name.clone(), String::new()));
        }
    }
    kinds
}

fn bench(c: &mut Criterion) {
    let dir = feeds_dir();
    let t = Instant::now();
    let (adv, errors) = load_advisory_dir(&dir.join("icsma"))
        .unwrap_or_else(|e| panic!("benchmark input missing ({e}); set WARDLINE_VULNFEEDS"));
    assert!(errors.is_empty(), "{errors:?}");
    let kev = KevCatalog::load(&dir.join("known_exploited_vulnerabilities.json")).unwrap();
    let idx = VulnIndex::build(adv, kev);
    eprintln!("load + index of {} advisories: {:?}", idx.advisories().len(), t.elapsed());

    let kinds = device_kinds(&idx);
    let firmware = [None, Some("9.19"), Some("2.3.1b"), Some("8.1.1 build 11"), Some("12.2.1.5")];
    let inventory: Vec<DeviceQuery> = (0..DEVICES)
        .map(|i| {
            let (v, m, o) = &kinds[i.wrapping_mul(2654435761) % kinds.len()];
            DeviceQuery {
                vendor: Some(v.as_str()),
                model: Some(m.as_str()),
                firmware: firmware[i % firmware.len()],
                os: (!o.is_empty()).then_some(o.as_str()),
            }
        })
        .collect();

    // One plain pass first, split by phase, so the printed numbers show where time goes.
    let t = Instant::now();
    let keys: usize = inventory.iter().map(|d| wardline_intel::vuln::names::vendor_keys(d.vendor.unwrap()).len()).sum();
    eprintln!("vendor names of {DEVICES} devices: {:?} ({keys} keys)", t.elapsed());
    let t = Instant::now();
    let matches: usize = inventory.iter().map(|d| idx.match_device(d).len()).sum();
    eprintln!("one pass over {DEVICES} devices: {:?}, {matches} matches", t.elapsed());
    let t = Instant::now();
    let bulk: usize = idx.match_inventory(&inventory).iter().map(Vec::len).sum();
    assert_eq!(bulk, matches);
    eprintln!("match_inventory of {DEVICES} devices: {:?}", t.elapsed());

    let mut g = c.benchmark_group("vuln_match");
    g.sample_size(10);
    g.throughput(Throughput::Elements(DEVICES as u64));
    g.bench_function("1M devices x all advisories", |b| {
        b.iter(|| {
            let mut matches = 0usize;
            for d in &inventory {
                matches += idx.match_device(black_box(d)).len();
            }
            black_box(matches)
        })
    });
    g.bench_function("1M devices, identical ones matched once", |b| {
        b.iter(|| black_box(idx.match_inventory(black_box(&inventory)).len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
