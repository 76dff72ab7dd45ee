#!/usr/bin/env bash
# Rust core: format, lints, unit + integration + doc tests (SQLite), then the
# summary of tests/crash.rs (kills survived, operations checked).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
report=$(mktemp)
trap 'rm -f "$report"' EXIT
CREDITGATE_CRASH_REPORT="$report" cargo test -p creditgate --release
cat "$report"
