# Everyday tasks. `just` is optional: every recipe is a plain command you can copy.

# Build, generate a ward capture, run a one-node aggregator and a sensor, print the inventory.
demo:
    bash scripts/demo.sh

# Same, then keep the aggregator serving its API.
demo-serve:
    bash scripts/demo.sh --serve

# Install what is missing and run every test (what CI runs).
test:
    bash scripts/test.sh

# Multi-process fault tests only (kill -9 of sensor and aggregator, foreign certificates, short chaos runs).
chaos-tests:
    cargo build --workspace --bins && cargo test -p wardline-chaos-tests -- --test-threads=1

# Chaos suite: every nemesis with FAULT_SECS of fault, one result line each (docs/chaos.md).
chaos FAULT_SECS="60" SEED="":
    #!/usr/bin/env bash
    set -uo pipefail
    cargo build --workspace --bins || exit 1
    report="$PWD/target/chaos-report.txt"; rm -f "$report"
    [[ -n "{{SEED}}" ]] && export WARDLINE_CHAOS_SEED="{{SEED}}"
    WARDLINE_CHAOS_REPORT="$report" WARDLINE_CHAOS_FAULT_SECS="{{FAULT_SECS}}" \
      cargo test -q -p wardline-chaos-tests --test chaos full_suite -- --ignored --nocapture --test-threads=1 >target/chaos-run.log 2>&1
    st=$?; echo; cat "$report" 2>/dev/null; echo "(full log: target/chaos-run.log)"; exit $st

# One nemesis with one seed (replay a result line): just chaos-one flaky-links 1234
chaos-one NEMESIS SEED FAULT_SECS="60":
    cargo build --workspace --bins && WARDLINE_CHAOS_NEMESIS={{NEMESIS}} WARDLINE_CHAOS_SEED={{SEED}} WARDLINE_CHAOS_FAULT_SECS={{FAULT_SECS}} cargo test -p wardline-chaos-tests --test chaos full_suite -- --ignored --nocapture --test-threads=1

# Randomized mode: ROUNDS runs of random nemesis pairs, seeds SEED, SEED+1, ... (just chaos-long 1 20)
chaos-long SEED="1" ROUNDS="20" FAULT_SECS="30":
    cargo build --workspace --bins && WARDLINE_CHAOS_SEED={{SEED}} WARDLINE_CHAOS_ROUNDS={{ROUNDS}} WARDLINE_CHAOS_FAULT_SECS={{FAULT_SECS}} cargo test -p wardline-chaos-tests --test chaos full_suite -- --ignored --nocapture --test-threads=1

# 72-hour outage with a small spool: SLICES ten-minute hospital slices over 72 h of packet time, drained when the aggregator comes up (docs/chaos.md).
outage SLICES="24" SPOOL_BYTES="" SEED="":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -p wardline-aggregator -p wardline-sensor -p wardline-sim --bins
    if [[ -n "{{SPOOL_BYTES}}" ]]; then export WARDLINE_OUTAGE_SPOOL_BYTES="{{SPOOL_BYTES}}"; fi
    if [[ -n "{{SEED}}" ]]; then export WARDLINE_CHAOS_SEED="{{SEED}}"; fi
    WARDLINE_OUTAGE_SLICES="{{SLICES}}" cargo test -p wardline-chaos-tests --test chaos outage:: -- --nocapture --test-threads=1

# Link flapping for SECS seconds: the sensor's link cut every 2-5 s for 1-3 s, drawn from SEED (docs/chaos.md).
flapping SECS="600" SEED="":
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -p wardline-aggregator -p wardline-sensor -p wardline-sim --bins
    if [[ -n "{{SEED}}" ]]; then export WARDLINE_CHAOS_SEED="{{SEED}}"; fi
    WARDLINE_FLAP_SECS="{{SECS}}" cargo test -p wardline-chaos-tests --test chaos flapping:: -- --nocapture --test-threads=1

# Three nodes and two sensors on loopback; kills the leader midway; prints each node's inventory and flow totals.
cluster-demo:
    bash scripts/cluster-demo.sh

# Sensor throughput and memory against tshark, ndpiReader, p0f and softflowd (docs/benchmarks.md).
bench:
    bash scripts/bench.sh

# Policy replay over ROWS flows stored in a real ClickHouse 18.16, checked against the evaluator (docs/benchmarks.md).
bench-replay ROWS="100000000":
    bash scripts/bench-replay.sh {{ROWS}}

# Leader kill -9 to the next acked batch, median of ROUNDS kills on release binaries (docs/benchmarks.md).
bench-failover ROUNDS="20":
    cargo build --release -p wardline-aggregator -p wardline-sensor -p wardline-sim --bins && WARDLINE_FAILOVER_ROUNDS={{ROUNDS}} cargo test --release -p wardline-chaos-tests --test chaos bench_leader_kill_to_next_ack -- --ignored --nocapture --test-threads=1

# Run every fuzz target for SECONDS each (needs nightly or RUSTC_BOOTSTRAP and cargo-fuzz).
fuzz SECONDS="60":
    bash scripts/fuzz.sh {{SECONDS}}

# Regenerate the OUI vendor table from Debian's ieee-data.
oui:
    python3 scripts/gen-oui.py

# Write a synthetic capture and its ground truth (<OUT>.truth.json): ward or hospital.
sim SCENARIO="ward" SEED="1" OUT="ward.pcap":
    cargo run -q -p wardline-sim -- --scenario {{SCENARIO}} --seed {{SEED}} --out {{OUT}}

# Debian packages for sensor and aggregator into target/debian (add --verify as root to install, check and purge them).
package *ARGS:
    bash scripts/package.sh {{ARGS}}
