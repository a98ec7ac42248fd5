#!/usr/bin/env bash
# Debian packages for the sensor and the aggregator (cargo-deb), with man pages and shell
# completions generated from the binaries' clap definitions.
#   bash scripts/package.sh            build target/debian/wardline-{sensor,aggregator}_*.deb
#   bash scripts/package.sh --verify   also install both on this machine (root), check users,
#                                      files and units (systemd-analyze verify and security),
#                                      then purge them again
# Installs cargo-deb (cargo install) when missing. docs/operations.md, "Install from packages".
set -euo pipefail
cd "$(dirname "$0")/.."
verify=false
[[ "${1:-}" == --verify ]] && verify=true

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb (cargo install, a few minutes once)" >&2
  cargo install cargo-deb --locked --version '^3' >&2
fi

cargo build --release -q -p wardline-sensor -p wardline-aggregator --bins
rm -rf target/assets
for b in sensor aggregator; do
  target/release/wardline-$b generate-docs --out-dir "target/assets/$b" >/dev/null
done
debs=()
for b in sensor aggregator; do
  debs+=("$(cargo deb --no-build -q -p wardline-$b --output target/debian/ | tail -1)")
done
printf 'package: built %s\n' "${debs[@]}"
$verify || exit 0

fail() { echo "package: FAILED: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || fail "--verify installs the packages and needs root"
for d in "${debs[@]}"; do
  dpkg-deb --info "$d" >/dev/null || fail "$d is not a valid package"
done
# Start from a clean slate, install both, and always purge on the way out.
cleanup() { dpkg --purge wardline-sensor wardline-aggregator >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
DEBIAN_FRONTEND=noninteractive dpkg -i "${debs[@]}" >/dev/null || fail "dpkg -i ${debs[*]}"
for u in wardline wardline-sensor; do
  getent passwd "$u" >/dev/null || fail "postinst did not create user $u"
done
for f in /usr/bin/wardline-sensor /usr/bin/wardline-aggregator /etc/wardline/sensor.toml \
         /etc/wardline/aggregator.toml /lib/systemd/system/wardline-sensor.service \
         /lib/systemd/system/wardline-aggregator.service /usr/share/man/man1/wardline-sensor.1.gz \
         /usr/share/man/man1/wardline-aggregator-cluster-join.1.gz \
         /usr/share/bash-completion/completions/wardline-aggregator \
         /usr/share/wardline-aggregator/kb/classes.toml /usr/share/wardline-sensor/kb/profiles-medical.toml; do
  [[ -e $f ]] || fail "$f is not installed"
done
[[ $(stat -c %a /etc/wardline/tls) == 750 ]] || fail "/etc/wardline/tls is not 0750"
/usr/bin/wardline-aggregator --version >/dev/null || fail "the installed aggregator does not run"
for unit in wardline-sensor wardline-aggregator; do
  systemd-analyze verify "/lib/systemd/system/$unit.service" || fail "systemd-analyze verify $unit.service"
  exposure=$(systemd-analyze security --offline=yes "/lib/systemd/system/$unit.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.5) }' ||
    fail "$unit.service exposure level ${exposure:-unknown} is above 2.5 (systemd-analyze security)"
  echo "package: $unit.service verified, exposure $exposure"
done
cleanup
trap - EXIT
getent passwd wardline-sensor >/dev/null && fail "purge left user wardline-sensor"
[[ -e /usr/bin/wardline-sensor ]] && fail "purge left /usr/bin/wardline-sensor"
echo "package: installed, verified and purged ${debs[*]}"
