#!/usr/bin/env bash
# The Rust suite against PostgreSQL: starts a throwaway PostgreSQL server
# (installing it from Debian packages when absent, see scripts/pg.sh), runs the
# whole Rust test suite with CREDITGATE_TEST_BACKEND=postgres (every test on
# its own fresh database, plus tests/multihost.rs: 4 processes sharing one
# ledger, tests/crash.rs: a writer process killed 50 times,
# tests/pg_restart.rs: the server restarted mid-run, and tests/pg_terminate.rs:
# backends terminated while 8 threads write), and stops the server on
# exit, also when tests fail. Fails (never skips) when the server cannot start.
set -euo pipefail
cd "$(dirname "$0")/.."

env_lines=$(bash scripts/pg.sh start) || {
    echo "test-postgres.sh: FAILED: the PostgreSQL server did not start" >&2
    exit 1
}
eval "$env_lines"
trap 'bash scripts/pg.sh stop "$CREDITGATE_PG_DIR"' EXIT

export CREDITGATE_TEST_BACKEND=postgres
export CREDITGATE_MULTIHOST_REPORT="$CREDITGATE_PG_DIR/multihost.txt"
export CREDITGATE_CRASH_REPORT="$CREDITGATE_PG_DIR/crash.txt"
export CREDITGATE_FAULT_REPORT="$CREDITGATE_PG_DIR/faults.txt"
# tests/pg_restart.rs may restart this throwaway server (scripts/pg.sh restart).
export CREDITGATE_TEST_PG_RESTART=1
cargo test -p creditgate --release "$@"
for report in "$CREDITGATE_MULTIHOST_REPORT" "$CREDITGATE_CRASH_REPORT" "$CREDITGATE_FAULT_REPORT"; do
    if [ -s "$report" ]; then
        cat "$report"
    fi
done
