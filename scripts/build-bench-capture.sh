#!/usr/bin/env bash
# Builds the benchmark capture (several million packets) into target/bench/ — never
# committed. Composition (see docs/benchmarks.md):
#   base   = every capture in $WARDLINE_PCAPS (real traffic, all link types converted to
#            Ethernet, silences over 100 ms shortened, each squeezed into 60 s)
#          + `wardline-sim --scenario hospital --scale $BENCH_SCALE` (same squeeze)
#   file   = $BENCH_COPIES time-shifted copies of the base (2 s apart), each with its own
#            MAC/IP addresses (per-copy bijection, checksums updated), merged in time order
#          + $BENCH_DNS_FLOWS short DNS lookups (one flow each) over 55 s, which together
#            with the copies keep about one million flows alive at once.
# Usage: scripts/build-bench-capture.sh [OUT]   (default target/bench/bench.pcap)
# Rebuilds only when the parameters or the binaries changed.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/bench/bench.pcap}
PCAPS=${WARDLINE_PCAPS:-$(pwd)/../shared/pcaps}
COPIES=${BENCH_COPIES:-12}
SCALE=${BENCH_SCALE:-2}
DNS_FLOWS=${BENCH_DNS_FLOWS:-900000}
SEED=${BENCH_SEED:-1}

[[ -d "$PCAPS" ]] || { echo "build-bench-capture: no captures at $PCAPS (set WARDLINE_PCAPS)" >&2; exit 1; }
if [[ ! -x target/release/wardline-sensor || ! -x target/release/wardline-bench || ! -x target/release/wardline-sim \
      || -n "${BENCH_REBUILD_BINARIES:-}" ]]; then
  cargo build --release -p wardline-sensor -p wardline-sim --bins
fi

dir=$(dirname "$OUT")
mkdir -p "$dir"
stamp="$OUT.params"
# The capture depends on the generator, the capture reader/writer and the merge tool, not on
# the rest of the sensor: stamp their sources, so a data-plane change does not rebuild 1.4 GB.
inputs=$(cat scripts/build-bench-capture.sh sensor/src/bin/wardline-bench.rs \
  $(find sim/src sensor/src/capture -name '*.rs' | sort) | sha1sum | cut -c1-12)
params="copies=$COPIES scale=$SCALE dns_flows=$DNS_FLOWS seed=$SEED pcaps=$PCAPS inputs=$inputs"
if [[ -f "$OUT" && -f "$stamp" && "$(cat "$stamp")" == "$params" ]]; then
  echo "build-bench-capture: $OUT is up to date ($params)" >&2
  exit 0
fi

hosp="$dir/hospital-s$SCALE-seed$SEED.pcap"
target/release/wardline-sim --scenario hospital --seed "$SEED" --scale "$SCALE" --out "$hosp" >&2
target/release/wardline-bench build-capture --out "$OUT" --copies "$COPIES" --shift-ms 2000 \
  --max-gap-ms 100 --span-s 60 --dns-flows "$DNS_FLOWS" --dns-span-s 55 "$PCAPS" "$hosp" 2>&1 \
  | grep -v ': [0-9]* packets$' >&2
echo "$params" > "$stamp"
