#!/usr/bin/env bash
# Python front door: builds and installs the wheel into .venv the way a user
# does (`pip install .`), then lints, checks the stubs against the built
# module, type-checks the examples, runs the Python suite against a throwaway
# PostgreSQL server (scripts/pg.sh; installed from Debian packages when absent,
# stopped on exit, also when tests fail; the run fails, never skips, when it
# cannot start), and runs pytest on SQLite last, so the run ends with pytest's
# "N passed" line. Fails when any step fails or no test ran (pytest exits 5
# when it collects nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$PWD/$venv/bin/python"

"$py" -m pip install --quiet --upgrade-strategy only-if-needed -r tests/python/requirements.txt
# Build the abi3 wheel in release mode and install it (reinstalled even when
# the version did not change).
"$py" -m pip install --quiet --no-deps --force-reinstall .

"$py" -m ruff check python tests/python examples scripts
"$py" -m ruff format --check python tests/python examples scripts
# Run from outside the source tree so the installed package is the one checked.
(cd /tmp && "$py" -m mypy.stubtest creditgate._creditgate)
shopt -s nullglob
typed=(examples/*.py tests/python/conftest.py tests/python/test_api*.py tests/python/test_bad_input.py
       tests/python/test_secret_hygiene.py tests/python/test_gateway_hostile.py tests/python/test_aio.py
       tests/python/test_fastapi_glue.py tests/python/test_grants.py python/creditgate/aio.py
       python/creditgate/fastapi.py python/creditgate/prometheus.py tests/python/test_prometheus.py
       tests/python/test_docs.py tests/python/test_events.py tests/python/test_key_policy.py
       tests/python/test_rate_limits.py tests/python/test_holds.py tests/python/test_reference.py
       python/creditgate/stripe.py tests/python/test_stripe.py)
"$py" -m mypy --strict "${typed[@]}"

# Benchmark smoke runs (no timing claims; full numbers in BENCHMARKS.md):
# SQLite, then with the PostgreSQL rows once the server is up.
# The same suite on PostgreSQL: a fresh database per test (tests/python/conftest.py).
env_lines=$(bash scripts/pg.sh start) || {
    echo "test-python.sh: FAILED: the PostgreSQL server did not start" >&2
    exit 1
}
eval "$env_lines"
trap 'bash scripts/pg.sh stop "$CREDITGATE_PG_DIR"' EXIT
"$py" scripts/bench_python.py --quick --postgres "$CREDITGATE_TEST_POSTGRES_URL"
CREDITGATE_TEST_BACKEND=postgres "$py" -m pytest -q tests/python
bash scripts/pg.sh stop "$CREDITGATE_PG_DIR"
trap - EXIT

CREDITGATE_TEST_BACKEND=sqlite exec "$py" -m pytest -q tests/python
