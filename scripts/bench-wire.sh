#!/usr/bin/env bash
# Uplink wire efficiency (docs/benchmarks.md, "Uplink: bytes on the wire, batches per second,
# spool sizing"; decision 0041): the hospital capture spooled by the sensor's own capture
# path, drained over real QUIC + mutual TLS into one ingest server that acks every batch
# (uplink version 2, uncompressed, then version 3, zstd), and the compression candidates
# measured on the same batches.
#   bash scripts/bench-wire.sh            (release; hospital seed 1 scale 10: 6.4 M packets)
#   bash scripts/bench-wire.sh --quick    (debug binaries, scale 1: checks the harness in about a
#                                          minute once built; its timings mean nothing)
# WARDLINE_BENCH_CAPTURE=FILE uses another capture. Prints the figures; the spooled batches
# stay in target/bench-wire/batches.bin for further codec experiments.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release scale=10 flag=--release
if [[ ${1:-} == --quick ]]; then profile=debug scale=1 flag=; fi
capture="${WARDLINE_BENCH_CAPTURE:-/tmp/wardline-hospital-s${scale}-seed1.pcap}"
out=target/bench-wire
mkdir -p "$out"
cargo build $flag -q -p wardline-sim --bins
cargo build $flag -q -p wardline-aggregator --example wire_bench
# The codec comparison's CPU per MB is only meaningful in the release run.
cargo build $flag -q -p wardline-common --example wire_codecs
[[ -f "$capture" ]] || "target/$profile/wardline-sim" --scenario hospital --seed 1 --scale "$scale" --out "$capture"
"target/$profile/examples/wire_bench" "$capture" "$out"
"target/$profile/examples/wire_codecs" "$out/batches.bin"
