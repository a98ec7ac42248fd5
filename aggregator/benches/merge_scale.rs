//! Scale of the replicated merge: builds a state of 1M devices and 10M time-bounded IP
//! bindings (2.5M addresses, each leased to four MACs in turn) plus 100k routed hosts, and
//! measures the apply rate of each phase and the resident memory per device.
//!
//! Full size (release, about a minute and ~1.8 GB):
//!     cargo bench -p wardline-aggregator --bench merge_scale
//! Other sizes: WARDLINE_MERGE_DEVICES=200000 WARDLINE_MERGE_BINDINGS=2000000 cargo bench ...
//! Other churn: WARDLINE_MERGE_OWNERS (MACs each address is leased to in turn, default 4)
//! and WARDLINE_MERGE_RENEWALS (sightings of each lease, default 1); e.g. OWNERS=1
//! RENEWALS=10 is one address per device renewed ten times.
//! Run without `--bench` (as `cargo test --benches` does) it builds a small state only.
//!
//! Memory is the VmRSS growth from before the first batch (/proc/self/status), so it
//! counts everything the state holds plus allocator slack; the batches themselves are
//! generated in chunks and dropped after they are applied.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;
use ulid::Ulid;
#[path = "bench_support/mod.rs"]
mod bench_support;

use bench_support::{env_or, vm_rss_kib, HOUR_US, T0_US};
use wardline_aggregator::state::{BatchSummary, ClusterState, Command};
use wardline_common::wire::{AddressBinding, BindingSource, HostObservation};
use wardline_common::{DeviceObservation, Evidence, Field, MacAddr, Proto};

const SITES: u64 = 10;
const PER_BATCH: u64 = 1_000;
const BINDINGS_PER_BATCH: u64 = 10_000;

fn mac(i: u64) -> MacAddr {
    MacAddr([0x00, 0x1b, 0x63, (i >> 16) as u8, (i >> 8) as u8, i as u8])
}

/// Address number `a` of the binding range (100.64.0.0/10 holds 4M).
fn leased_ip(a: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x6440_0000u32 + a as u32))
}

/// Batches from one sensor each, with increasing sequence numbers.
struct Sensors {
    next_seq: std::collections::BTreeMap<String, u64>,
}

impl Sensors {
    fn batch(&mut self, sensor: String, site: String) -> BatchSummary {
        let seq = self.next_seq.entry(sensor.clone()).or_insert(0);
        *seq += 1;
        BatchSummary::empty(
            Ulid::from_parts(*seq, u128::from(*seq) | (u128::from(sensor.len() as u64) << 64)),
            sensor,
            site,
            *seq,
        )
    }
}

fn device(i: u64, ts: u64) -> DeviceObservation {
    DeviceObservation {
        mac: mac(i),
        ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32))],
        vlans: vec![(i % 200) as u16 + 1],
        first_seen_us: ts,
        last_seen_us: ts + 1_000,
        packets: 10,
        bytes: 1_500,
        evidence: vec![
            Evidence::new(Field::Hostname, format!("DEV-{i:07}"), Proto::Dhcp, ts),
            Evidence::new(Field::DhcpVendorClass, "MSFT 5.0", Proto::Dhcp, ts),
            Evidence::new(Field::ListeningPort, "tcp/443", Proto::Ip, ts),
        ],
    }
}

/// Apply `batches` and return (items applied, seconds).
fn run(state: &mut ClusterState, batches: impl Iterator<Item = (u64, BatchSummary)>) -> (u64, f64) {
    let mut items = 0;
    let mut busy = 0.0;
    for (n, batch) in batches {
        let cmd = Command::ApplyBatch(batch);
        let start = Instant::now();
        assert!(state.apply(&cmd).applied);
        busy += start.elapsed().as_secs_f64();
        items += n;
    }
    (items, busy)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let devices = env_or("WARDLINE_MERGE_DEVICES", if full { 1_000_000 } else { 20_000 });
    let bindings = env_or("WARDLINE_MERGE_BINDINGS", if full { 10_000_000 } else { 200_000 });
    let owners = env_or("WARDLINE_MERGE_OWNERS", 4).max(1);
    let renewals = env_or("WARDLINE_MERGE_RENEWALS", 1).max(1);
    let addresses = bindings / (owners * renewals);
    let routed_hosts = (addresses / 25).max(1);
    let mut sensors = Sensors { next_seq: Default::default() };
    let mut state = ClusterState::new();
    let rss0 = vm_rss_kib();

    // 1. Every device once, from 100 access sensors (10 per site), 1000 per batch.
    let device_batches = (0..devices.div_ceil(PER_BATCH)).map(|b| {
        let sensor = b % 100;
        let mut batch = sensors.batch(format!("access-{sensor}"), format!("site-{}", sensor % SITES));
        batch.devices = (b * PER_BATCH..((b + 1) * PER_BATCH).min(devices)).map(|i| device(i, T0_US)).collect();
        (batch.devices.len() as u64, batch)
    });
    let (n, secs) = run(&mut state, device_batches);
    let rss_devices = vm_rss_kib();
    println!("devices:  {n} applied in {secs:.2} s = {:.0} devices/s", n as f64 / secs);

    // 2. Routed hosts seen by core sensors before any binding names them.
    let host_batches = (0..routed_hosts.div_ceil(PER_BATCH)).map(|b| {
        let site = b % SITES;
        let mut batch = sensors.batch(format!("core-{site}"), format!("site-{site}"));
        batch.hosts = (0..PER_BATCH)
            .map(|k| (b / SITES * PER_BATCH + k) * SITES + site)
            .filter(|a| *a < routed_hosts)
            .map(|a| {
                let ts = T0_US + (a % owners) * 2 * HOUR_US + 600_000_000;
                HostObservation {
                    site: None,
                    ip: leased_ip(a),
                    vlan: Some(10),
                    via_mac: Some(MacAddr([0, 0, 0x5e, 0, 1, site as u8])),
                    first_seen_us: ts,
                    last_seen_us: ts + 1_000,
                    packets: 4,
                    bytes: 600,
                    evidence: vec![Evidence::new(Field::TlsSni, format!("h{a}.example"), Proto::Tls, ts)],
                }
            })
            .collect();
        (batch.hosts.len() as u64, batch)
    });
    let (n, secs) = run(&mut state, host_batches);
    println!("hosts:    {n} applied in {secs:.2} s = {:.0} hosts/s", n as f64 / secs);

    // 3. DHCP churn: each address leased to `owners` MACs in turn (1 h leases, 2 h apart),
    // each lease seen `renewals` times (5 min apart), from the access sensors of its site;
    // the hosts above move to their owners as it arrives.
    let mut binding_secs = 0.0;
    let mut binding_count = 0;
    for (round, renewal) in (0..owners).flat_map(|o| (0..renewals).map(move |r| (o, r))) {
        for site in 0..SITES {
            let site_addresses: Vec<u64> = (site..addresses).step_by(SITES as usize).collect();
            for chunk in site_addresses.chunks(BINDINGS_PER_BATCH as usize) {
                let mut batch = sensors.batch(format!("access-{site}"), format!("site-{site}"));
                batch.bindings = chunk
                    .iter()
                    .map(|a| {
                        let seen_us = T0_US + round * 2 * HOUR_US + renewal * 300_000_000;
                        AddressBinding {
                            mac: mac((a * owners + round) % devices),
                            ip: leased_ip(*a),
                            vlan: Some(10),
                            source: BindingSource::DhcpAck,
                            seen_us,
                            valid_until_us: Some(seen_us + HOUR_US),
                        }
                    })
                    .collect();
                let (n, secs) = run(&mut state, std::iter::once((batch.bindings.len() as u64, batch)));
                binding_count += n;
                binding_secs += secs;
            }
        }
    }
    let rss_all = vm_rss_kib();
    println!(
        "bindings: {binding_count} applied in {binding_secs:.2} s = {:.0} bindings/s",
        binding_count as f64 / binding_secs
    );

    // 4. Steady state at full size: every device reports again (new evidence time).
    let update_batches = (0..devices.div_ceil(PER_BATCH)).map(|b| {
        let sensor = b % 100;
        let mut batch = sensors.batch(format!("access-{sensor}"), format!("site-{}", sensor % SITES));
        batch.devices =
            (b * PER_BATCH..((b + 1) * PER_BATCH).min(devices)).map(|i| device(i, T0_US + 9 * HOUR_US)).collect();
        (batch.devices.len() as u64, batch)
    });
    let (n, secs) = run(&mut state, update_batches);
    println!("updates:  {n} device reports at full size in {secs:.2} s = {:.0} reports/s", n as f64 / secs);

    let (timelines, spans) = state.binding_counts();
    let unowned = state.hosts().values().filter(|h| h.has_unowned()).count();
    assert_eq!(spans as u64, addresses * owners, "every lease is one span, renewals extend it");
    assert_eq!(unowned, 0, "every routed host was attributed to its owner at its time");
    let per_device = |kib: u64| kib as f64 * 1024.0 / devices as f64;
    println!(
        "state: {} devices, {} routed hosts, {timelines} addresses with {spans} binding spans \
         ({binding_count} bindings: {owners} owners per address, {renewals} sightings per lease)",
        state.devices().len(),
        state.hosts().len()
    );
    println!(
        "memory: devices only {:.0} B/device; with bindings and hosts {:.0} B/device (VmRSS +{} MiB)",
        per_device(rss_devices - rss0),
        per_device(rss_all - rss0),
        (rss_all - rss0) / 1024
    );
}
