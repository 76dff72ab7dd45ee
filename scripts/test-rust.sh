#!/usr/bin/env bash
# Rust core: format, lints, unit + integration + doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test -p creditgate --release
