#!/usr/bin/env bash
# Cluster ingest benchmark (docs/benchmarks.md, "Cluster ingest"): the hospital capture
# (seed 1, scale 10: ~980 devices, 6.4 M packets) through one aggregator node into a real
# ClickHouse, the same rows inserted directly with the clickhouse crate, one sensor's
# spooled backlog drained into the node, and the same backlog into a three-node cluster.
#   bash scripts/bench-ingest.sh            (needs clickhouse-server, see scripts/setup.sh)
# Settings (environment): WARDLINE_BENCH_PHASES=live,backlog,cluster (which drains; direct is
# measured with live), WARDLINE_BENCH_PERF=DIR (perf record of the node and sensor during each
# drain), WARDLINE_BENCH_IN_FLIGHT / WARDLINE_BENCH_FRAME_BATCHES (sensor uplink window).
set -euo pipefail
cd "$(dirname "$0")/.."
capture="${WARDLINE_BENCH_CAPTURE:-/tmp/wardline-hospital-s10-seed1.pcap}"
cargo build --release -q -p wardline-aggregator -p wardline-sensor -p wardline-sim --bins
[[ -f "$capture" ]] || target/release/wardline-sim --scenario hospital --seed 1 --scale 10 --out "$capture"
cargo run --release -q -p wardline-aggregator --example ingest_bench -- "$capture"
