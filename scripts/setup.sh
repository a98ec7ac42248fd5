#!/usr/bin/env bash
# Installs what Wardline's build and tests need on a Debian machine that has only the Rust
# toolchain: libpcap-dev (live capture), clickhouse-server (flow store tests), tshark
# (reference dissector for differential tests), ieee-data (OUI registry), faketime and
# iproute2 (chaos suite: clock jumps, network namespaces), nftables and iptables (policy
# exports proven on a real packet filter), rsyslog (SIEM forwarding tests), prometheus
# (promtool checks metrics and alert rules), zookeeper (coordinates the replicated ClickHouse
# tables of the cluster sink test), chromium (headless: PDF reports from the HTML ones).
# Idempotent.
# WARDLINE_SETUP=minimal installs only what building and the demo need.
set -euo pipefail

want=(libpcap-dev)
if [[ "${WARDLINE_SETUP:-full}" != minimal ]]; then
  want+=(clickhouse-server tshark ieee-data faketime iproute2 nftables iptables rsyslog prometheus zookeeper chromium)
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections || true
  $sudo apt-get update -qq || echo "setup: apt-get update failed; trying with the cached package lists" >&2
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Debian package starts a system ClickHouse service on install; tests start their own
# server on free ports, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet clickhouse-server 2>/dev/null; then
  echo "setup: note: a system clickhouse-server is running; tests use their own instance on free ports" >&2
fi

# chDB (ClickHouse embedded in Python) runs the Grafana panel SQL on a current ClickHouse
# release next to Debian's 18.16 (aggregator/tests/sink/grafana_panels.rs). Full setup only;
# without it that half of the test is skipped with a message.
if [[ "${WARDLINE_SETUP:-full}" != minimal ]] && command -v python3 >/dev/null 2>&1; then
  if ! python3 -c "import chdb" >/dev/null 2>&1; then
    echo "setup: installing chdb (pip)" >&2
    # Debian's own python3 may lack pip, and refuses user installs without the flag (PEP 668).
    if ! python3 -m pip --version >/dev/null 2>&1; then
      $([[ $(id -u) -ne 0 ]] && echo sudo) apt-get install -y -qq --no-install-recommends python3-pip >/dev/null || true
    fi
    python3 -m pip install --quiet chdb 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages chdb ||
      echo "setup: cannot install chdb; the current-ClickHouse half of the panel test will be skipped" >&2
  fi
fi

# The test command checks formatting and lints; both are rustup components that a minimal
# toolchain may lack.
for tool in rustfmt clippy; do
  sub=${tool/rustfmt/fmt}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    echo "setup: installing the $tool component" >&2
    rustup component add "$tool" || { echo "setup: cannot install $tool; install it with 'rustup component add $tool'" >&2; exit 1; }
  fi
done
