#!/usr/bin/env bash
# Python front door: builds the wheel the way `pip install .` does (`pip
# wheel .`, into dist/), installs that file into .venv and into a fresh venv
# without a Rust toolchain (scripts/check-wheel.sh), then lints, checks the
# stubs against the built module, type-checks the package, the tests and the
# examples (mypy --strict: [tool.mypy] in pyproject.toml), runs the Python
# suite against a throwaway
# PostgreSQL server (scripts/pg.sh; installed from Debian packages when absent,
# stopped on exit, also when tests fail; the run fails, never skips, when it
# cannot start), and runs pytest on SQLite last, so the run ends with pytest's
# "N passed" line. The dashboard's browser tests drive Debian's headless
# Chromium through chromedriver: both are installed from Debian packages when
# absent, as scripts/pg.sh installs PostgreSQL (the tests fail without them).
# Fails when any step fails or no test ran (pytest exits 5 when it collects
# nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Chromium, its driver and one font for the dashboard's browser tests
# (tests/python/test_dashboard_browser.py), when absent: apt-get as root, as
# scripts/pg.sh installs PostgreSQL; the package lists are refreshed only when
# the first install fails (a fresh CI image may have none).
install_browser() {
    if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "test-python.sh: chromium/chromedriver not found and not root: cannot install them" >&2
        return 1
    fi
    echo "test-python.sh: installing chromium and chromium-driver from Debian packages" >&2
    local pkgs=(chromium chromium-driver fonts-dejavu-core)
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}")
    "${install[@]}" >&2 || { apt-get update -q >&2 && "${install[@]}" >&2; }
}
install_browser

venv=.venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$PWD/$venv/bin/python"

"$py" -m pip install --quiet --upgrade-strategy only-if-needed -r tests/python/requirements.txt
# Build the abi3 wheel once, in release mode, into dist/ (the file
# docs/deploying.md copies to servers), install that file (reinstalled even
# when the version did not change), and install it again as a server would:
# in a fresh venv without a Rust toolchain (scripts/check-wheel.sh).
rm -f dist/creditgate-*.whl
"$py" -m pip wheel --quiet --no-deps --wheel-dir dist .
wheels=(dist/creditgate-*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "test-python.sh: expected one wheel in dist/, found: ${wheels[*]}" >&2
    exit 1
fi
"$py" -m pip install --quiet --no-deps --force-reinstall "${wheels[0]}"
bash scripts/check-wheel.sh "${wheels[0]}"

"$py" -m ruff check python tests/python examples scripts
"$py" -m ruff format --check python tests/python examples scripts
# Run from outside the source tree so the installed package is the one checked.
(cd /tmp && "$py" -m mypy.stubtest creditgate._creditgate)
# Strict typing of the whole package, the tests and the examples: the file
# list and the settings are [tool.mypy] in pyproject.toml.
"$py" -m mypy

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
