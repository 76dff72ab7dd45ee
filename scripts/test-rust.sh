#!/usr/bin/env bash
# Rust core: format, lints, unit + integration + doc tests (SQLite), then the
# summaries of tests/crash.rs (kills survived, operations checked) and
# tests/disk_full.rs (the ledger's disk filled: writes acknowledged, refused,
# checked). tests/disk_full.rs mounts a tmpfs in a private mount namespace
# (`unshare -m` as root, `unshare -Urm` otherwise; util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
report=$(mktemp)
faults=$(mktemp)
trap 'rm -f "$report" "$faults"' EXIT
CREDITGATE_CRASH_REPORT="$report" CREDITGATE_FAULT_REPORT="$faults" cargo test -p creditgate --release
cat "$report" "$faults"
