#!/usr/bin/env bash
# The README's run command: builds Wardline, generates a hospital-ward capture, starts a
# one-node aggregator and a sensor on loopback (embedded flow store, no ClickHouse needed),
# ships the capture through QUIC and Raft, and prints the inventory the cluster learned.
#   bash scripts/demo.sh            run once, print the inventory, stop
#   bash scripts/demo.sh --serve    same, then keep the aggregator up to browse the API
set -euo pipefail
cd "$(dirname "$0")/.."
serve=0
[[ "${1:-}" == "--serve" ]] && serve=1

WARDLINE_SETUP=minimal bash scripts/setup.sh
profile="${WARDLINE_PROFILE:-dev}"
echo "demo: building (cargo --profile $profile) ..." >&2
cargo build --profile "$profile" --bins -q
bindir="target/$([[ $profile == dev ]] && echo debug || echo "$profile")"
agg="$bindir/wardline-aggregator"
sensor="$bindir/wardline-sensor"
sim="$bindir/wardline-sim"

out="${WARDLINE_DEMO_DIR:-demo-out}"
rm -rf "$out"
mkdir -p "$out"
api_port="${WARDLINE_DEMO_API_PORT:-8080}"
quic_port="${WARDLINE_DEMO_QUIC_PORT:-4433}"
raft_port="${WARDLINE_DEMO_RAFT_PORT:-7443}"

"$agg" admin ca-init --dir "$out/ca" >/dev/null
"$agg" admin issue-node --ca-dir "$out/ca" --node-id 1 --out-dir "$out/node1" >/dev/null
"$agg" admin issue-sensor --ca-dir "$out/ca" --sensor-id ward-a-1 --site north-campus --out-dir "$out/sensor" >/dev/null
"$sim" --scenario ward --seed 1 --out "$out/ward.pcap"

# --init: a new one-node cluster on first start (a restart resumes it).
"$agg" run --init --node-id 1 --data-dir "$out/node1/data" --tls-dir "$out/node1" \
  --listen-api "127.0.0.1:$api_port" --listen-quic "127.0.0.1:$quic_port" --listen-raft "127.0.0.1:$raft_port" \
  >"$out/aggregator.log" 2>&1 &
agg_pid=$!
trap 'kill $agg_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$agg" inventory --api "http://127.0.0.1:$api_port" --wait-leader >/dev/null 2>&1 && break
  kill -0 $agg_pid 2>/dev/null || { cat "$out/aggregator.log" >&2; echo "demo: the aggregator exited" >&2; exit 1; }
  sleep 0.2
done

"$sensor" run --sensor-id ward-a-1 --site north-campus --spool-dir "$out/sensor/spool" \
  --tls-dir "$out/sensor" --server "127.0.0.1:$quic_port" --pcap "$out/ward.pcap" --exit-when-drained

echo
"$agg" inventory --api "http://127.0.0.1:$api_port"
echo
if ((serve)); then
  echo "The aggregator is serving the API at http://127.0.0.1:$api_port — try:"
  echo "  curl http://127.0.0.1:$api_port/api/v1/inventory"
  echo "  curl 'http://127.0.0.1:$api_port/api/v1/flows?limit=20'"
  echo "Press Ctrl-C to stop."
  wait $agg_pid
else
  echo "To browse this over the HTTP API, run: bash scripts/demo.sh --serve"
  echo "  then: curl http://127.0.0.1:$api_port/api/v1/inventory   (devices, with evidence)"
  echo "        curl 'http://127.0.0.1:$api_port/api/v1/flows?limit=20'   (flows from the embedded store)"
fi
