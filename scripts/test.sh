#!/usr/bin/env bash
# The one test command (README, .ci/run). Installs what it needs on a fresh
# machine (cbindgen, a Python venv with the wheel, PostgreSQL from Debian
# packages when absent), then runs every suite; fails when any suite fails.
# Python runs last, so the run ends with pytest's "N passed" line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-rust.sh
bash scripts/test-c.sh
bash scripts/test-postgres.sh
# Benchmark smoke runs (no timing claims): the full runs are in BENCHMARKS.md.
CREDITGATE_BENCH_QUICK=1 cargo bench --bench ledger
CREDITGATE_BENCH_QUICK=1 cargo bench --bench analytics
bash scripts/test-litellm.sh
bash scripts/test-python.sh
