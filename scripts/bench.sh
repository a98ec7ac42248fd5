#!/usr/bin/env bash
# The one command behind docs/benchmarks.md: single-core packets/s and peak RSS of
# `wardline-sensor analyze` next to tshark, ndpiReader, p0f, softflowd and a read-only
# floor, all on the same multi-million-packet capture in the same run.
#
#   scripts/bench.sh            # install peers if missing, build, build the capture, measure
#   BENCH_CORE=1 scripts/bench.sh   # pin to another core
#   BENCH_ONLY="wardline floor" scripts/bench.sh   # a subset (names as in the table)
#   BENCH_REPS=5 BENCH_FAST_REPS=9 scripts/bench.sh   # rounds (defaults 3 and 7)
#
# The capture is built by scripts/build-bench-capture.sh into target/bench/ (never
# committed). Every tool reads the same file with its page cache warm, pinned to one core
# with taskset; its output goes through a pipe to tail, which keeps the last 32 MiB for
# the notes. packets/s = packets in the file / CPU time (user+sys from /usr/bin/time -v),
# which other jobs on a shared machine cannot inflate; wall time is shown too. The tools
# run in interleaved rounds, so a slow spell on the host hits all of them alike: the
# seconds-long ones (floor, wardline, p0f, softflowd) in BENCH_FAST_REPS rounds, tshark and
# ndpiReader (over a minute) in the first BENCH_REPS of them. The table shows each tool's
# median round and lists every round; the wardline/softflowd ratio is also given round by
# round, which cancels what a round's conditions did to both. The table is printed and
# written to target/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

CORE=${BENCH_CORE:-0}
FILE=${BENCH_FILE:-target/bench/bench.pcap}
ONLY=${BENCH_ONLY:-"wardline floor tshark ndpiReader p0f softflowd"}
REPS=${BENCH_REPS:-3}
FAST_REPS=${BENCH_FAST_REPS:-7}
(( FAST_REPS >= REPS )) || FAST_REPS=$REPS
OUT_DIR=$(dirname "$FILE")

# --- peers -------------------------------------------------------------------------
need=()
command -v tshark >/dev/null || need+=(tshark)
command -v ndpiReader >/dev/null || need+=(libndpi-bin)
command -v p0f >/dev/null || [[ -x /usr/sbin/p0f ]] || need+=(p0f)
command -v softflowd >/dev/null || [[ -x /usr/sbin/softflowd ]] || need+=(softflowd)
[[ -x /usr/bin/time ]] || need+=(time)
command -v taskset >/dev/null || need+=(util-linux)
command -v capinfos >/dev/null || need+=(tshark)
command -v bc >/dev/null || need+=(bc)
if ((${#need[@]})); then
  echo "bench: installing ${need[*]}" >&2
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections || true
  $sudo apt-get update -qq || true
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
export PATH="$PATH:/usr/sbin"

# --- build and capture ---------------------------------------------------------------
cargo build --release -p wardline-sensor --bins
scripts/build-bench-capture.sh "$FILE"
PACKETS=$(target/release/wardline-bench floor "$FILE" | sed -n 's/^packets=\([0-9]*\) .*/\1/p')
SIZE_MB=$(( $(stat -c %s "$FILE") / 1024 / 1024 ))
cat "$FILE" > /dev/null   # warm the page cache so every tool reads from memory

# --- measure --------------------------------------------------------------------------
declare -A CPU WALL RSS NOTE ROUNDS
# One round of one tool; appends "cpu wall rss user sys" to ROUNDS[name].
run() { # name, command...
  local name=$1; shift
  [[ " $ONLY " == *" $name "* ]] || return 0
  echo "bench: $name: $*" >&2
  local t="$OUT_DIR/time-$name.txt" o="$OUT_DIR/out-$name.txt"
  # Output goes through a pipe to tail (the notes come from its last lines), the same for
  # every tool: a tool pays for producing its report, not for the file system it lands on
  # (on this VM, writing analyze's 140 MB flow list to an ext4 file cost ~0.5 s of system time).
  /usr/bin/time -v -o "$t" taskset -c "$CORE" "$@" 2>&1 | tail -c 32M > "$o" \
    || echo "bench: $name exited non-zero (see $o)" >&2
  local user sys wall
  user=$(sed -n 's/^\s*User time (seconds): //p' "$t")
  sys=$(sed -n 's/^\s*System time (seconds): //p' "$t")
  wall=$(sed -n 's/^\s*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$t" | awk -F: '{ s=0; for (i=1;i<=NF;i++) s=s*60+$i; print s }')
  local cpu rss
  cpu=$(echo "$user + $sys" | bc -l)
  rss=$(sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$t")
  ROUNDS[$name]+="$cpu $wall $rss $user $sys"$'\n'
}

# The median round of a tool (by CPU time) fills CPU, WALL and RSS; CPUS lists every round.
declare -A CPUS USER SYS
pick_median() { # name
  local name=$1 rows
  [[ -n "${ROUNDS[$name]:-}" ]] || return 0
  rows=$(printf "%s" "${ROUNDS[$name]}" | sed '/^$/d' | sort -n -k1,1)
  local n mid row
  n=$(printf "%s\n" "$rows" | wc -l)
  mid=$(( (n + 1) / 2 ))
  row=$(printf "%s\n" "$rows" | sed -n "${mid}p")
  read -r CPU[$name] WALL[$name] RSS[$name] USER[$name] SYS[$name] <<< "$row"
  CPUS[$name]=$(printf "%s" "${ROUNDS[$name]}" | sed '/^$/d' | awk '{ printf "%s%.2f", (NR>1?" / ":""), $1 }')
}

# softflowd 1.1.0 hangs in accept() on its control socket when the -c path is longer than
# about 12 characters (seen with /tmp/tmp.XXXXXXXXXX/ctl and /tmp/sfbench.ctl; /tmp/sfw.ctl
# works), so keep these paths short.
SF_CTL=/tmp/sfw.ctl SF_PID=/tmp/sfw.pid
trap 'rm -f "$SF_CTL" "$SF_PID"' EXIT
for round in $(seq 1 "$FAST_REPS"); do
  echo "bench: round $round of $FAST_REPS" >&2
  run floor      target/release/wardline-bench floor "$FILE"
  run wardline   target/release/wardline-sensor analyze "$FILE"
  if (( round <= REPS )); then
    run tshark     tshark -r "$FILE" -q -z conv,tcp
    run ndpiReader ndpiReader -i "$FILE" -q
  fi
  run p0f        p0f -r "$FILE"
  # Offline, foreground, no collector (-n absent: nothing is exported), flow table as large
  # as Wardline's (1M) so neither side evicts more.
  rm -f "$SF_CTL"
  run softflowd  timeout 900 softflowd -r "$FILE" -d -m 1048576 -c "$SF_CTL" -p "$SF_PID"
done
for name in floor wardline tshark ndpiReader p0f softflowd; do pick_median "$name"; done

# Flow counts, as a sanity check that everyone saw the same traffic.
[[ -f "$OUT_DIR/out-wardline.txt" ]] && NOTE[wardline]=$(grep -o 'flows=[0-9]* flows_evicted=[0-9]* peak_active_flows=[0-9]*' "$OUT_DIR/out-wardline.txt" | head -1 || true)
[[ -f "$OUT_DIR/out-tshark.txt" ]] && NOTE[tshark]="$(grep -c '<->' "$OUT_DIR/out-tshark.txt" || true) TCP conversations"
[[ -f "$OUT_DIR/out-softflowd.txt" ]] && NOTE[softflowd]=$(grep -o 'Flows expired: [0-9]*' "$OUT_DIR/out-softflowd.txt" || true)
[[ -f "$OUT_DIR/out-p0f.txt" ]] && NOTE[p0f]="$(grep -o 'Processed [0-9]* packets' "$OUT_DIR/out-p0f.txt" || true) (TCP only)"
[[ -f "$OUT_DIR/out-ndpiReader.txt" ]] && NOTE[ndpiReader]=$(grep -o 'Unique flows: *[0-9]*' "$OUT_DIR/out-ndpiReader.txt" | head -1 || true)

pps() { [[ -n "${CPU[$1]:-}" ]] && echo "$PACKETS / ${CPU[$1]}" | bc -l || echo 0; }
fmt_int() { printf "%'.0f" "$1"; }

RES="$OUT_DIR/results.md"
{
  echo "Capture: \`$FILE\`, $(fmt_int "$PACKETS") packets, $SIZE_MB MiB; one core (taskset -c $CORE); $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d); median of $FAST_REPS rounds (tshark, ndpiReader: $REPS)."
  echo
  echo "| tool | command | CPU s (median) | user s | sys s | CPU s, every round | wall s | packets/s (CPU) | peak RSS MB | notes |"
  echo "|---|---|---:|---:|---:|---|---:|---:|---:|---|"
  for name in floor wardline tshark ndpiReader p0f softflowd; do
    [[ -n "${CPU[$name]:-}" ]] || continue
    case $name in
      floor) cmd="wardline-bench floor FILE" ;;
      wardline) cmd="wardline-sensor analyze FILE" ;;
      tshark) cmd="tshark -r FILE -q -z conv,tcp" ;;
      ndpiReader) cmd="ndpiReader -i FILE -q" ;;
      p0f) cmd="p0f -r FILE" ;;
      softflowd) cmd="softflowd -r FILE -d -m 1048576" ;;
    esac
    printf "| %s | \`%s\` | %.2f | %.2f | %.2f | %s | %.2f | %s | %s | %s |\n" "$name" "$cmd" "${CPU[$name]}" \
      "${USER[$name]}" "${SYS[$name]}" "${CPUS[$name]}" "${WALL[$name]}" \
      "$(fmt_int "$(pps "$name")")" "$(( ${RSS[$name]} / 1024 ))" "${NOTE[$name]:-}"
  done
  echo
  if [[ -n "${CPU[wardline]:-}" ]]; then
    w=$(pps wardline)
    check() { # label, ratio needed, peer
      local peer=$3
      [[ -n "${CPU[$peer]:-}" ]] || return 0
      local ratio; ratio=$(echo "$w / $(pps "$peer")" | bc -l)
      local ok; ok=$(echo "$ratio >= $2" | bc -l)
      printf -- "- %s: wardline/%s = %.2fx (need %sx) — %s\n" "$1" "$peer" "$ratio" "$2" "$([[ $ok == 1 ]] && echo MET || echo NOT MET)"
    }
    check "≥10x tshark" 10 tshark
    check "≥2x ndpiReader" 2 ndpiReader
    check "≥ softflowd" 1 softflowd
    if [[ -n "${ROUNDS[softflowd]:-}" ]]; then
      # Round by round: softflowd's CPU time over wardline's in the same round.
      paired=$(paste <(printf "%s" "${ROUNDS[wardline]}" | sed '/^$/d' | awk '{print $1}') \
                     <(printf "%s" "${ROUNDS[softflowd]}" | sed '/^$/d' | awk '{print $1}') \
               | awk '{ printf "%.2f\n", $2 / $1 }')
      n=$(printf "%s\n" "$paired" | wc -l)
      med=$(printf "%s\n" "$paired" | sort -n | sed -n "$(( (n + 1) / 2 ))p")
      printf -- "- ≥ softflowd, round by round: wardline/softflowd = %s (median %sx)\n" "$(printf "%s\n" "$paired" | paste -sd' ')" "$med"
    fi
    check "stretch: ≥⅓ of the read-only floor" 0.3333 floor
    rss_mb=$(( ${RSS[wardline]} / 1024 ))
    printf -- "- peak RSS < 256 MB (%s): %s MB — %s\n" "${NOTE[wardline]:-}" "$rss_mb" "$([[ $rss_mb -lt 256 ]] && echo MET || echo NOT MET)"
  fi
} | tee "$RES"
echo "bench: table written to $RES" >&2
