#!/usr/bin/env bash
# creditgate.litellm against a real LiteLLM proxy (tests/litellm): builds a
# venv of its own (.venv-litellm: LiteLLM pins its own web stack), installs
# LiteLLM's proxy and creditgate's wheel, and runs the proxy tests on a
# SQLite ledger (2 proxy workers sharing it). Fails when any test fails or
# none ran.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-litellm
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$PWD/$venv/bin/python"
"$py" -m pip install --quiet --upgrade-strategy only-if-needed -r tests/litellm/requirements.txt
"$py" -m pip install --quiet --no-deps --force-reinstall .
"$py" -m ruff check python/creditgate/litellm.py tests/litellm
"$py" -m ruff format --check python/creditgate/litellm.py tests/litellm
# From outside the tree, so the installed package is the one tested.
(cd /tmp && CREDITGATE_TEST_BACKEND=sqlite "$py" -m pytest -q -s -p no:cacheprovider "$OLDPWD/tests/litellm")
