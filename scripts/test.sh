#!/usr/bin/env bash
# The README's test command: installs what is missing, builds every binary, runs every test.
set -euo pipefail
# Incremental caches only help edit-compile loops; in a one-shot run they cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WARDLINE_PCAPS="${WARDLINE_PCAPS:-$(cd .. && pwd)/shared/pcaps}"
# The chaos suite's short runs use one known seed here so a red run replays exactly;
# `just chaos` and `just chaos-long` draw random seeds (docs/chaos.md).
export WARDLINE_CHAOS_SEED="${WARDLINE_CHAOS_SEED:-7}"
# Style and lints first: they fail in seconds, the tests take minutes.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The rolling-upgrade test runs the previous version's aggregator too (decision 0029): built
# from a pinned commit into the same target dir (only the wardline crates compile).
bash scripts/build-previous.sh
# Multi-process tests start the real binaries; build them first so tests find them.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast -- --test-threads="${WARDLINE_TEST_THREADS:-2}"
# Debian packages: build them (release) and, as root, install, check and purge them.
if [[ $(id -u) -eq 0 ]]; then bash scripts/package.sh --verify; else bash scripts/package.sh; fi
