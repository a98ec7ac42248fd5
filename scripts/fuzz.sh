#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/fuzz_targets for SECONDS each, one after another,
# one process (libFuzzer in-process, the equivalent of -jobs=1) pinned to one core.
#
#   scripts/fuzz.sh [SECONDS]            # default 60
#   FUZZ_TARGETS="dns tls" scripts/fuzz.sh 30
#   FUZZ_CORE=1 scripts/fuzz.sh 30       # which core taskset pins the fuzzer to
#
# The machine only has stable Rust: cargo-fuzz needs nightly flags (-Zsanitizer=address,
# sancov passes), so we set RUSTC_BOOTSTRAP=1, which lets stable rustc accept them. If the
# ASan build still fails, the targets are built and run with `--sanitizer none` (coverage
# guided, panics still caught; only memory-error detection in unsafe code is lost).
#
# Corpora live in fuzz/corpus/<target> (git-ignored), plus the small hand-made seeds in
# fuzz/seeds/<target> (committed; GRE/ERSPAN frames for decode). They are seeded at run time from the
# real captures in $WARDLINE_PCAPS: whole small capture files for capture_file, and for each
# dissector the transport payloads tshark finds for that protocol. Crashes land in
# fuzz/artifacts/<target>/; logs and a summary table in target/fuzz-logs/.
set -uo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-60}
CORE=${FUZZ_CORE:-1}
PCAPS=${WARDLINE_PCAPS:-$(pwd)/../shared/pcaps}
LOGS=target/fuzz-logs
mkdir -p "$LOGS"
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
SANITIZER=address
if ! (cd fuzz && cargo fuzz build -O >"../$LOGS/build.log" 2>&1); then
  echo "fuzz: ASan build failed (see $LOGS/build.log); falling back to --sanitizer none" >&2
  SANITIZER=none
  (cd fuzz && cargo fuzz build -O --sanitizer none >>"../$LOGS/build.log" 2>&1) \
    || { echo "fuzz: build failed, see $LOGS/build.log" >&2; exit 2; }
fi
echo "fuzz: targets built (sanitizer: $SANITIZER)" >&2

# tshark display filter whose payloads seed each dissector's corpus.
declare -A SEED_FILTER=(
  [dhcp]="dhcp" [dns]="dns || mdns || llmnr" [ssdp]="ssdp" [netbios]="nbns"
  [snmp]="snmp" [http]="http.request || http.response" [tls]="tls.handshake" [ssh]="ssh.protocol"
  [smb]="smb || smb2" [telnet]="telnet" [ftp]="ftp" [rdp]="tcp.port==3389" [vnc]="vnc"
  [dicom]="dicom" [hl7]="tcp.port==2575 || tcp.port==6661" [vendor]="udp.port==24105 || tcp.port==3613 || udp.port==2000"
)
seed() { # target
  local t=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  # Hand-made seeds the corpus lacks (GRE/ERSPAN frames for decode) are always added.
  [[ -d fuzz/seeds/$t ]] && cp -n fuzz/seeds/"$t"/* "$dir/"
  # Real CISA advisories seed the CSAF parser (read at run time, never copied into the repo).
  if [[ $t == csaf_advisory ]]; then
    local feeds=${WARDLINE_VULNFEEDS:-$(cd .. && pwd)/shared/vulnfeeds}
    [[ -d $feeds/icsma ]] && cp -n "$feeds"/icsma/*.json "$dir/" 2>/dev/null
    return 0
  fi
  [[ -d "$PCAPS" ]] || return 0
  [[ -n "$(ls -A "$dir" | grep -v -x -F -f <(ls fuzz/seeds/"$t" 2>/dev/null) 2>/dev/null)" ]] && return 0
  if [[ $t == capture_file ]]; then
    find "$PCAPS" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -64k -exec cp {} "$dir/" \;
    return 0
  fi
  local filter=${SEED_FILTER[$t]:-}
  [[ -n $filter ]] && command -v tshark >/dev/null || return 0
  local all=$LOGS/all-pcaps.pcapng n=0
  if [[ ! -f $all ]]; then
    find "$PCAPS" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -print0 | xargs -0 mergecap -a -w "$all" 2>/dev/null
  fi
  while IFS=$'\t' read -r up tp; do
    local hex=${up:-$tp}
    [[ -n $hex ]] || continue
    echo -n "${hex//:/}" | xxd -r -p > "$dir/seed-$n"
    n=$((n + 1))
  done < <(tshark -r "$all" -Y "$filter" -T fields -e udp.payload -e tcp.payload 2>/dev/null | awk '!seen[$0]++' | head -300)
}

targets=${FUZZ_TARGETS:-$(ls fuzz/fuzz_targets/*.rs | xargs -n1 basename | sed 's/\.rs$//')}
SUMMARY=$LOGS/summary.md
{
  echo "| target | seconds | execs | execs/s | corpus | result |"
  echo "|---|---:|---:|---:|---:|---|"
} > "$SUMMARY"
failed=0
for t in $targets; do
  seed "$t"
  log=$LOGS/$t.log
  echo "fuzz: $t for ${SECS}s" >&2
  # Run the binary built above rather than `cargo fuzz run`, which would rebuild (and
  # fail or drift) whenever the workspace changes under a long run.
  mkdir -p "fuzz/artifacts/$t"
  (cd fuzz && ASAN_OPTIONS="detect_odr_violation=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" taskset -c "$CORE" \
      "target/x86_64-unknown-linux-gnu/release/$t" -artifact_prefix="artifacts/$t/" \
      -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "corpus/$t") >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  if [[ $rc -eq 0 ]]; then
    result="no crash"
  else
    failed=1
    art=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
    result="CRASH (exit $rc) ${art:-see $log}"
  fi
  echo "| $t | $SECS | ${execs:-?} | ${rate:-?} | $corpus | $result |" | tee -a "$SUMMARY"
  [[ $rc -eq 0 ]] || sed -n '/panicked at\|ERROR: AddressSanitizer\|ERROR: libFuzzer/,+6p' "$log" | head -12 >&2
done
echo "fuzz: summary in $SUMMARY" >&2
exit $failed
