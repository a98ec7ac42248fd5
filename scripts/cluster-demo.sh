#!/usr/bin/env bash
# The README's cluster demo: builds Wardline, starts a three-node aggregator cluster and two
# sensors on loopback, ships two generated ward captures, kills the Raft leader (kill -9)
# while they stream, and prints each node's inventory count and flow totals — the same on
# every node, and equal to the captures' ground truth.
#   bash scripts/cluster-demo.sh
# Folder: $WARDLINE_DEMO_DIR (default cluster-demo-out). Ports: 18xx1-3 (API), 17xx1-3
# (Raft), 14xx1-3 (QUIC) from $WARDLINE_DEMO_PORT_BASE (default 18000 → 18081, 17081, 14081).
set -euo pipefail
cd "$(dirname "$0")/.."

WARDLINE_SETUP=minimal bash scripts/setup.sh
profile="${WARDLINE_PROFILE:-dev}"
echo "cluster-demo: building (cargo --profile $profile) ..." >&2
cargo build --profile "$profile" --bins -q
bindir="target/$([[ $profile == dev ]] && echo debug || echo "$profile")"
agg="$bindir/wardline-aggregator"
sensor="$bindir/wardline-sensor"
sim="$bindir/wardline-sim"

if ! "$agg" cluster --help >/dev/null 2>&1; then
  echo "cluster-demo: this build has no 'wardline-aggregator cluster' command (cluster lifecycle not built in)" >&2
  exit 1
fi

out="${WARDLINE_DEMO_DIR:-cluster-demo-out}"
rm -rf "$out"
mkdir -p "$out"
base="${WARDLINE_DEMO_PORT_BASE:-18000}"
api_port() { echo $((base + 80 + $1)); }
raft_port() { echo $((base - 1000 + 80 + $1)); }
quic_port() { echo $((base - 4000 + 80 + $1)); }
api() { echo "https://127.0.0.1:$(api_port "$1")"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$agg" admin ca-init --dir "$out/ca" >/dev/null
for n in 1 2 3; do
  "$agg" admin issue-node --ca-dir "$out/ca" --node-id "$n" --out-dir "$out/node$n" >/dev/null
done
# The API is HTTPS with operator authentication: the demo acts as an admin operator.
"$agg" admin issue-operator --ca-dir "$out/ca" --name demo-admin --role admin --out-dir "$out/operator" >/dev/null
export WARDLINE_CERT_DIR="$out/operator"
curl_api() { curl -sf --cacert "$out/ca/ca.pem" --cert "$out/operator/operator.pem" --key "$out/operator/operator.key" "$@"; }
for s in 1 2; do
  "$agg" admin issue-sensor --ca-dir "$out/ca" --sensor-id "ward-$s" --site "site-$s" --out-dir "$out/sensor$s" >/dev/null
  "$sim" --scenario ward --seed "$s" --scale 3 --out "$out/ward$s.pcap" >/dev/null
done

declare -A node_pid
start_node() { # start_node N [--init]
  local n=$1
  shift
  "$agg" run --node-id "$n" --data-dir "$out/node$n/data" --tls-dir "$out/node$n" \
    --listen-api "127.0.0.1:$(api_port "$n")" --listen-raft "127.0.0.1:$(raft_port "$n")" \
    --listen-quic "127.0.0.1:$(quic_port "$n")" "$@" >>"$out/node$n.log" 2>&1 &
  node_pid[$n]=$!
  pids+=($!)
}
wait_api() { # wait_api N: until the node answers /healthz
  for _ in $(seq 1 150); do
    curl_api "$(api "$1")/healthz" >/dev/null 2>&1 && return 0
    kill -0 "${node_pid[$1]}" 2>/dev/null || { cat "$out/node$1.log" >&2; echo "cluster-demo: node $1 exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "cluster-demo: node $1 did not answer" >&2
  exit 1
}

echo "== starting node 1 (initialises the cluster), nodes 2 and 3 (join it)"
start_node 1 --init
start_node 2
start_node 3
for n in 1 2 3; do wait_api "$n"; done
"$agg" inventory --api "$(api 1)" --wait-leader >/dev/null 2>&1 || sleep 2
for n in 2 3; do
  "$agg" cluster join --api "$(api 1)" --node-id "$n" --raft-addr "127.0.0.1:$(raft_port "$n")" \
    --api-addr "127.0.0.1:$(api_port "$n")" --ingest-addr "127.0.0.1:$(quic_port "$n")" >/dev/null
done
"$agg" cluster status --api "$(api 1)"

servers="127.0.0.1:$(quic_port 1),127.0.0.1:$(quic_port 2),127.0.0.1:$(quic_port 3)"
echo "== two sensors ship their captures; each knows all three nodes ($servers)"
spids=()
for s in 1 2; do
  # Small batches (4 flows) so the capture makes many of them and the kill lands mid-stream.
  cat >"$out/sensor$s.toml" <<TOML
sensor_id = "ward-$s"
site = "site-$s"
spool_dir = "$out/sensor$s/spool"
[uplink]
server = "127.0.0.1:$(quic_port 1)"
fallback_servers = ["127.0.0.1:$(quic_port 2)", "127.0.0.1:$(quic_port 3)"]
server_name = "localhost"
[tls]
cert = "$out/sensor$s/sensor.pem"
key = "$out/sensor$s/sensor.key"
ca = "$out/sensor$s/ca.pem"
[capture]
files = ["$out/ward$s.pcap"]
[batch]
max_events = 4
interval_secs = 5
TOML
  "$sensor" run --config "$out/sensor$s.toml" --exit-when-drained >"$out/sensor$s.log" 2>&1 &
  spids+=($!)
  pids+=($!)
done

# Midway: once the cluster has applied some batches, kill -9 the leader.
applied() { curl_api "$(api "$1")/api/v1/sensors" | python3 -c 'import json,sys; print(sum(r["batches_applied"] for r in json.load(sys.stdin)["sensors"].values()))' 2>/dev/null || echo 0; }
leader() { curl_api "$(api "$1")/api/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["current_leader"] or "")' 2>/dev/null || true; }
for _ in $(seq 1 300); do
  (($(applied 1) >= 20)) && break
  sleep 0.05
done
victim=$(leader 1)
[[ -z "$victim" ]] && victim=1
at=$(applied "$victim")
kill -9 "${node_pid[$victim]}"
wait "${node_pid[$victim]}" 2>/dev/null || true
echo "== kill -9 of the leader, node $victim, after $at batches"
t0=$(date +%s.%N)
survivor=$((victim % 3 + 1))
for _ in $(seq 1 200); do
  l=$(leader "$survivor")
  [[ -n "$l" && "$l" != "$victim" ]] && break
  sleep 0.1
done
echo "   node $l leads now ($(python3 -c "print(f'{$(date +%s.%N)-$t0:.1f}')") s later)"

for p in "${spids[@]}"; do wait "$p" || { echo "cluster-demo: a sensor failed; see $out/sensor*.log" >&2; exit 1; }; done
echo "== sensors drained: every batch acknowledged"
echo "== restarting node $victim over its data; it catches up"
start_node "$victim"
wait_api "$victim"
sleep 3

echo
printf '%-6s %-9s %-8s %-10s %-12s %-14s\n' node devices batches flows packets bytes
for n in 1 2 3; do
  inv=$(curl_api "$(api "$n")/api/v1/inventory" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  tot=$(curl_api "$(api "$n")/api/v1/flows/totals" | python3 -c 'import json,sys; r=json.load(sys.stdin)["replicated"]; print(r["flows"], r["packets"], r["bytes"])')
  read -r flows packets bytes <<<"$tot"
  printf '%-6s %-9s %-8s %-10s %-12s %-14s\n' "$n" "$inv" "$(applied "$n")" "$flows" "$packets" "$bytes"
done
python3 - "$out/ward1.pcap.truth.json" "$out/ward2.pcap.truth.json" <<'PY'
import json, sys
macs = set()
packets = bytes_ = 0
for p in sys.argv[1:]:
    t = json.load(open(p))
    # The generator reuses its MAC plan, so both wards' devices share MACs: one device each.
    macs.update(d["mac"] for d in t["devices"])
    for f in t["flows"]:
        packets += f["packets_ab"] + f["packets_ba"]
        bytes_ += f["bytes_ab"] + f["bytes_ba"]
devices = len(macs)
print(f"{'truth':<6} {devices:<9} {'':<8} {'':<10} {packets:<12} {bytes_:<14}")
PY
echo
echo "Logs and data: $out/ (node*.log, sensor*.log). Cluster: $agg cluster status --api $(api 1) --cert-dir $out/operator"
