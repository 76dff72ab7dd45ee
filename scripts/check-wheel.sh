#!/usr/bin/env bash
# The deploy recipe of docs/deploying.md, on this machine: installs the built
# wheel WHEEL into a fresh virtual environment, as on a server without a Rust
# toolchain (cargo and rustc are off PATH or shadowed by failing stubs, and
# there is no package index: pip cannot fall back to building from source),
# then runs `creditgate --version` and a small
# ledger (migrate, grant, balance, migrate --status) outside the source tree.
# Run by scripts/test-python.sh with the wheel it built and installed.
# Usage: bash scripts/check-wheel.sh WHEEL
set -euo pipefail

wheel=$(realpath "${1:?usage: check-wheel.sh WHEEL}")
[ -f "$wheel" ] || { echo "check-wheel.sh: no wheel at $wheel" >&2; exit 1; }
# The interpreter itself, not a version manager's shim that needs its environment.
python=$(python3 -c 'import sys; print(sys.executable)')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
# No Rust toolchain: the directories holding cargo or rustc (~/.cargo/bin)
# are left out of PATH, and stubs that fail loudly come first, also for a
# toolchain in /usr/bin that cannot be left out.
mkdir "$tmp/no-rust"
for tool in cargo rustc rustup maturin; do
    printf '#!/bin/sh\necho "check-wheel.sh: %s was called: the install tried to build from source" >&2\nexit 97\n' \
        "$tool" >"$tmp/no-rust/$tool"
    chmod +x "$tmp/no-rust/$tool"
done
clean_path="$tmp/no-rust"
IFS=: read -r -a dirs <<<"$PATH:/usr/bin:/bin"
for d in "${dirs[@]}"; do
    if [ -n "$d" ] && { [ "$d" = /usr/bin ] || [ "$d" = /bin ] || { [ ! -e "$d/cargo" ] && [ ! -e "$d/rustc" ]; }; }; then
        clean_path="$clean_path:$d"
    fi
done
run() { env -i HOME="$tmp" PATH="$clean_path" LANG=C.UTF-8 "$@"; }
if [ "$(run bash -c 'command -v cargo')" != "$tmp/no-rust/cargo" ]; then
    echo "check-wheel.sh: cargo is not the failing stub on PATH: $clean_path" >&2
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
