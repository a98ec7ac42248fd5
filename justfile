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

# Multi-process fault tests only (kill -9 of sensor and aggregator, foreign certificates).
chaos:
    cargo build --workspace --bins && cargo test -p wardline-chaos-tests -- --test-threads=1

# Sensor throughput and memory against tshark, ndpiReader, p0f and softflowd (docs/benchmarks.md).
bench:
    bash scripts/bench.sh

# Run every fuzz target for SECONDS each (needs nightly or RUSTC_BOOTSTRAP and cargo-fuzz).
fuzz SECONDS="60":
    bash scripts/fuzz.sh {{SECONDS}}

# Regenerate the OUI vendor table from Debian's ieee-data.
oui:
    python3 scripts/gen-oui.py

# Write a synthetic capture and its ground truth (<OUT>.truth.json): ward or hospital.
sim SCENARIO="ward" SEED="1" OUT="ward.pcap":
    cargo run -q -p wardline-sim -- --scenario {{SCENARIO}} --seed {{SEED}} --out {{OUT}}
