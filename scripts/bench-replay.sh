#!/usr/bin/env bash
# Policy replay over ROWS stored flows in a real ClickHouse 18.16 (docs/benchmarks.md,
# "Replay over stored flows"): fills a throwaway server with ROWS flows of the generated
# hospital's mix inside ClickHouse, times blocked_by_workflow and compare, and checks both
# against the in-memory evaluator. Usage: bash scripts/bench-replay.sh [ROWS] (default 100M).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-100000000}"
ROWS="${ROWS//_/}"
if ! [[ $ROWS =~ ^[0-9]+$ ]] || (( ROWS == 0 )); then
    echo "ROWS must be a positive number of flows, not '$1'" >&2
    exit 2
fi
if ! command -v clickhouse-server >/dev/null && [[ -z ${WARDLINE_CLICKHOUSE_SERVER:-} ]]; then
    echo "clickhouse-server is not installed: apt-get install -y clickhouse-server (scripts/setup.sh does)" >&2
    exit 1
fi
# The server's data goes to a temporary folder; about 25 bytes per row compressed (2.5 GB at
# 100M), plus room for merges.
tmp="${TMPDIR:-/tmp}"
need_kb=$(( ROWS * 60 / 1024 ))
free_kb=$(df -Pk "$tmp" | awk 'NR == 2 { print $4 }')
if (( free_kb < need_kb )); then
    echo "$tmp has $((free_kb / 1024 / 1024)) GB free; $ROWS rows need about $((need_kb / 1024 / 1024)) GB (set TMPDIR elsewhere or pass fewer ROWS)" >&2
    exit 1
fi
# The work is ClickHouse's: the client only sends SQL and checks the answers, so the debug
# build (warm in the test cache) measures the same as a release one.
cargo build -q -p wardline-aggregator --example replay_bench
echo "$(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo run -q -p wardline-aggregator --example replay_bench -- "$ROWS"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
