#!/usr/bin/env bash
# The deploy recipe of docs/deploying.md, on this machine: installs the built
# wheel WHEEL into a fresh virtual environment, as on a server without a Rust
# toolchain (no cargo nor rustc on PATH, no package index: pip cannot fall
# back to building from source), then runs `creditgate --version` and a small
# ledger (migrate, grant, balance, migrate --status) outside the source tree.
# Run by scripts/test-python.sh with the wheel it built and installed.
# Usage: bash scripts/check-wheel.sh WHEEL
set -euo pipefail

wheel=$(realpath "${1:?usage: check-wheel.sh WHEEL}")
[ -f "$wheel" ] || { echo "check-wheel.sh: no wheel at $wheel" >&2; exit 1; }
python=$(command -v python3)

# PATH without the directories that hold cargo or rustc (~/.cargo/bin, ...).
clean_path=""
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
    if [ -n "$d" ] && [ ! -e "$d/cargo" ] && [ ! -e "$d/rustc" ]; then
        clean_path="${clean_path:+$clean_path:}$d"
    fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
run() { env -i HOME="$tmp" PATH="$clean_path" LANG=C.UTF-8 "$@"; }
if run bash -c 'command -v cargo || command -v rustc' >/dev/null; then
    echo "check-wheel.sh: a Rust toolchain is still on PATH: $clean_path" >&2
    exit 1
fi

run "$python" -m venv "$tmp/server"
run "$tmp/server/bin/pip" install --quiet --no-index "$wheel"
cg=("$tmp/server/bin/creditgate" --database-url "sqlite:///$tmp/ledger.db")
version=$(run "${cg[@]}" --version)
run "${cg[@]}" migrate >/dev/null
run "${cg[@]}" grant --user alice --amount 5 >/dev/null
balance=$(run "${cg[@]}" balance --user alice --json)
grep -q '"balance": 5,' <<<"$balance" || { echo "check-wheel.sh: unexpected balance: $balance" >&2; exit 1; }
run "${cg[@]}" migrate --status | grep -q "none: up to date"
echo "wheel ok: $(basename "$wheel") installed without a Rust toolchain or index; $version ran a ledger"
