#!/usr/bin/env bash
# The README's test command: installs what is missing, builds every binary, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WARDLINE_PCAPS="${WARDLINE_PCAPS:-$(cd .. && pwd)/shared/pcaps}"
# Multi-process tests start the real binaries; build them first so tests find them.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads="${WARDLINE_TEST_THREADS:-2}"
