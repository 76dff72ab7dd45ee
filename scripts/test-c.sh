#!/usr/bin/env bash
# C ABI (docs/reference.md): builds libcreditgate (cargo build -p creditgate-c
# --release) and runs its Rust unit tests, regenerates include/creditgate.h
# with the pinned cbindgen and fails when the checked-in copy differs, builds
# and runs the C quickstart, then the C tests: plain (-Wall -Wextra
# -Werror), under AddressSanitizer (with LeakSanitizer) and under valgrind
# (leaks are errors); last, the release archive (scripts/release-c.sh):
# unpacked in a temporary directory, the C quickstart compiled against the
# unpacked files only (static and shared) and run.
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
export TARGET_DIR

step() { printf '\n== %s\n' "$*"; }

step "cargo build -p creditgate-c --release"
cargo build -p creditgate-c --release

step "cargo test -p creditgate-c --release (status table, panic boundary, pointer plumbing)"
cargo test -p creditgate-c --release

step "header: cbindgen $CBINDGEN_VERSION -> include/creditgate.h"
CBINDGEN="$TARGET_DIR/tools/cbindgen-$CBINDGEN_VERSION/bin/cbindgen"
if [ ! -x "$CBINDGEN" ]; then
  if command -v cbindgen >/dev/null && [ "$(cbindgen --version)" = "cbindgen $CBINDGEN_VERSION" ]; then
    CBINDGEN=$(command -v cbindgen)
  else
    cargo install cbindgen --locked --version "=$CBINDGEN_VERSION" \
      --root "$TARGET_DIR/tools/cbindgen-$CBINDGEN_VERSION"
  fi
fi
"$CBINDGEN" --quiet --config bindings/c/cbindgen.toml --crate creditgate-c \
  --output include/creditgate.h bindings/c
git ls-files --error-unmatch include/creditgate.h >/dev/null
if ! git diff --exit-code include/creditgate.h; then
  echo "include/creditgate.h is stale: commit the regenerated header (diff above)" >&2
  exit 1
fi
echo "include/creditgate.h is up to date"

step "example: examples/c/quickstart"
make -C examples/c --no-print-directory TARGET_DIR="$TARGET_DIR" clean run

step "C tests (plain)"
make -C tests/c --no-print-directory TARGET_DIR="$TARGET_DIR" clean
plain_log=$(mktemp)
trap 'rm -f "$plain_log"' EXIT
make -C tests/c --no-print-directory TARGET_DIR="$TARGET_DIR" test | tee "$plain_log"

step "C tests (AddressSanitizer + LeakSanitizer)"
make -C tests/c --no-print-directory TARGET_DIR="$TARGET_DIR" test-asan
echo "AddressSanitizer summary: test_api, test_threads, test_bad_input, test_orgs, test_analytics, test_webhooks, test_topups: 0 errors, 0 leaks (detect_leaks=1; any report fails the run)"

step "C tests (valgrind memcheck)"
if command -v valgrind >/dev/null; then
  make -C tests/c --no-print-directory TARGET_DIR="$TARGET_DIR" test-valgrind
else
  echo "valgrind not installed: skipped (AddressSanitizer ran above)"
fi

step "release archive: scripts/release-c.sh, the quickstart built against the unpacked files only"
archive=$(bash scripts/release-c.sh | tail -n 1)
unpacked=$(mktemp -d)
trap 'rm -f "$plain_log"; rm -rf "$unpacked"' EXIT
tar -C "$unpacked" -xzf "$archive"
dir="$unpacked/$(basename "$archive" .tar.gz)"
for f in include/creditgate.h lib/libcreditgate.so lib/libcreditgate.a lib/pkgconfig/creditgate.pc \
         LICENSE-APACHE LICENSE-MIT README; do
  [ -f "$dir/$f" ] || { echo "release archive $archive lacks $f" >&2; exit 1; }
done
cc -std=c11 -Wall -Wextra -Werror -I"$dir/include" examples/c/quickstart.c "$dir/lib/libcreditgate.a" \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -o "$unpacked/quickstart-static"
cc -std=c11 -Wall -Wextra -Werror -I"$dir/include" examples/c/quickstart.c -L"$dir/lib" -lcreditgate \
  -o "$unpacked/quickstart-shared"
"$unpacked/quickstart-static" >/dev/null
LD_LIBRARY_PATH="$dir/lib" "$unpacked/quickstart-shared" >/dev/null
# The shared build loaded the archive's library, not one from the build tree.
LD_LIBRARY_PATH="$dir/lib" ldd "$unpacked/quickstart-shared" | grep -F "$dir/lib/libcreditgate.so" >/dev/null
if command -v pkg-config >/dev/null; then
  read -r cflags <<<"$(PKG_CONFIG_PATH="$dir/lib/pkgconfig" pkg-config --cflags creditgate)"
  [ "$(realpath -m "${cflags#-I}")" = "$(realpath "$dir/include")" ] || {
    echo "creditgate.pc: wrong Cflags: $cflags" >&2; exit 1; }
fi
echo "release archive ok: $(basename "$archive") (quickstart static and shared, from the unpacked files only)"

# One closing line for the C suites: the quickstart, the release archive and
# each test function of the plain run (the sanitizer and valgrind runs repeat
# the same tests).
passed=$(awk '/^[0-9]+ passed, [0-9]+ failed$/ { n += $1 } END { print n + 2 }' "$plain_log")
echo "c: $passed passed, 0 failed"
