#!/usr/bin/env bash
# Builds the aggregator of the previous version ("version N") for the rolling-upgrade test
# (chaos-tests/tests/chaos/upgrade.rs, decision 0029): the source of the pinned commit below,
# extracted with `git archive` into target/previous/src-<commit>, built into this
# repository's own target dir so every third-party crate is reused and only the wardline
# crates compile. The binary is copied to target/previous/wardline-aggregator-<commit>.
#
# The old build uplifts its binary over target/debug/wardline-aggregator; the script puts
# the current one back. scripts/test.sh runs it before `cargo build --workspace --bins`
# anyway, so on a cold cache the third-party crates it compiles are the ones that build
# reuses.
#
# Bump PREVIOUS_COMMIT when a release ships: it names the version the current code must
# upgrade from. Cheap when the binary is already there (nothing is built).
set -euo pipefail

# Last main before state format 6 (vulnerability feeds): state format 5, the same
# cluster CLI (run --init, cluster join), wire version and Raft RPC.
PREVIOUS_COMMIT=8c4f5da1d50b3136b23b74abe91084e4fb989542

cd "$(dirname "$0")/.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
out="$target/previous/wardline-aggregator-$PREVIOUS_COMMIT"
if [[ -x "$out" ]]; then
  echo "build-previous: $out is there" >&2
  exit 0
fi
if ! git cat-file -e "$PREVIOUS_COMMIT^{commit}" 2>/dev/null; then
  echo "build-previous: commit $PREVIOUS_COMMIT is not in this clone; fetch the history" \
    "(git fetch --unshallow) so the upgrade test can build the previous version" >&2
  exit 1
fi
src="$target/previous/src-$PREVIOUS_COMMIT"
if [[ ! -f "$src/Cargo.toml" ]]; then
  rm -rf "$src.tmp"
  mkdir -p "$src.tmp"
  git archive "$PREVIOUS_COMMIT" | tar -x -C "$src.tmp"
  # Cargo names a workspace crate's build by its path relative to the workspace root, so
  # the old wardline crates would overwrite the current ones' builds in the shared target
  # dir (seen: the current sensor then linked the old wardline-common). A build-metadata
  # suffix on the workspace version makes them distinct units; version requirements
  # ignore it, and registry crates keep their locked versions.
  sed -i '0,/^version = "\(.*\)"$/s//version = "\1+previous"/' "$src.tmp/Cargo.toml"
  grep -q '^version = ".*+previous"$' "$src.tmp/Cargo.toml" || {
    echo "build-previous: no workspace version to mark in $src.tmp/Cargo.toml" >&2
    exit 1
  }
  mv "$src.tmp" "$src"
fi
start=$SECONDS
# The old Cargo.lock (only its wardline entries change) and the same profile settings, so
# registry crates match the ones the current build compiled. The build uplifts the old
# binary over target/debug/wardline-aggregator: keep the current one (a hard link) and put
# it back after. No incremental cache: it would only cost disk.
current="$target/debug/wardline-aggregator"
kept="$target/previous/current-wardline-aggregator"
rm -f "$kept"
[[ -e "$current" ]] && ln "$current" "$kept"
put_back() { if [[ -e "$kept" ]]; then mv -f "$kept" "$current"; else rm -f "$current"; fi; }
trap put_back EXIT
# --workspace: third-party features unified over the whole workspace, exactly as the
# current `cargo build --workspace --bins` does (with -p wardline-aggregator alone, crates
# such as hashbrown or reqwest get other features and compile a second time); --bin keeps
# the build to the aggregator.
(cd "$src" && CARGO_INCREMENTAL=0 cargo build --target-dir "$target" --workspace \
  --bin wardline-aggregator --message-format=json-render-diagnostics >"$target/previous/build.json")
# The artifact message names the binary cargo produced (its uplifted path).
built=$(grep '"executable":"' "$target/previous/build.json" | grep -o '"executable":"[^"]*wardline-aggregator"' |
  tail -1 | cut -d'"' -f4)
cp "$built" "$out.tmp"
mv "$out.tmp" "$out"
echo "build-previous: $out built from $PREVIOUS_COMMIT in $((SECONDS - start)) s" >&2
