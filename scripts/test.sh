#!/usr/bin/env bash
# The one test command (README, .ci/run). Installs what it needs on a fresh
# machine, then runs every suite; fails when any suite fails or runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-rust.sh
