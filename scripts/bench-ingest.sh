#!/usr/bin/env bash
# Cluster ingest benchmark (docs/benchmarks.md, "Cluster ingest"): the hospital capture
# through one aggregator node into a real ClickHouse, the same rows inserted directly with
# the clickhouse crate, and one sensor's spooled backlog drained into the node.
#   bash scripts/bench-ingest.sh            (needs clickhouse-server, see scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
capture="${WARDLINE_BENCH_CAPTURE:-/tmp/wardline-hospital-1.pcap}"
cargo build --release -q -p wardline-aggregator -p wardline-sensor -p wardline-sim --bins
[[ -f "$capture" ]] || target/release/wardline-sim --scenario hospital --seed 1 --out "$capture"
cargo run --release -q -p wardline-aggregator --example ingest_bench -- "$capture"
