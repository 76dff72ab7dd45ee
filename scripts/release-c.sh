#!/usr/bin/env bash
# The C library as a release archive (docs/deploying.md):
#   dist/creditgate-c-<version>-<target>.tar.gz
# holding creditgate-c-<version>-<target>/{lib/libcreditgate.so,
# lib/libcreditgate.a, lib/pkgconfig/creditgate.pc, include/creditgate.h,
# LICENSE-APACHE, LICENSE-MIT, README}, the libraries' debug info stripped.
# Builds the library with `cargo build -p creditgate-c --release` (nothing to
# do after scripts/test-c.sh), ships the checked-in header (test-c.sh fails
# when it is stale) and prints the archive's path on its last line. Usage:
#   bash scripts/release-c.sh [OUT_DIR]     (default: dist)
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir=$(realpath -m "${1:-dist}")
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' bindings/c/Cargo.toml | head -n 1)
target=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "$version" ] || [ -z "$target" ]; then
    echo "release-c.sh: cannot read the version (bindings/c/Cargo.toml) or the target (rustc -vV)" >&2
    exit 1
fi
name="creditgate-c-$version-$target"

cargo build -p creditgate-c --release >&2
for lib in libcreditgate.so libcreditgate.a; do
    [ -f "$target_dir/release/$lib" ] || { echo "release-c.sh: $target_dir/release/$lib was not built" >&2; exit 1; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/lib/pkgconfig" "$root/include"
cp "$target_dir/release/libcreditgate.so" "$target_dir/release/libcreditgate.a" "$root/lib/"
# The release profile keeps line tables for profiling (Cargo.toml `debug`);
# shipped copies drop them (about 190 MB down to 45 MB), keeping symbols.
strip --strip-debug "$root/lib/libcreditgate.so" "$root/lib/libcreditgate.a"
cp include/creditgate.h "$root/include/"
cp LICENSE-APACHE LICENSE-MIT "$root/"

# Relocatable: ${pcfiledir} is wherever the archive was unpacked. The static
# library needs the system libraries of Libs.private (rustc
# --print native-static-libs; tests/c/Makefile links the same).
cat >"$root/lib/pkgconfig/creditgate.pc" <<EOF
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: creditgate
Description: Embeddable prepaid-credit ledger for AI API gateways (C ABI)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lcreditgate
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl
EOF

cat >"$root/README" <<EOF
creditgate $version C library for $target (docs/c-api.md, docs/deploying.md)

include/creditgate.h        the header (the whole API, documented)
lib/libcreditgate.so        shared library
lib/libcreditgate.a         static library
lib/pkgconfig/creditgate.pc pkg-config file, relocatable

Build against it without a Rust toolchain (DIR = where this archive was unpacked):

  static: cc -std=c11 -IDIR/include app.c DIR/lib/libcreditgate.a \\
            -lgcc_s -lutil -lrt -lpthread -lm -ldl -o app
  shared: cc -std=c11 -IDIR/include app.c -LDIR/lib -lcreditgate -o app
          (run with LD_LIBRARY_PATH=DIR/lib, or install the .so where the loader looks)
  pkg-config: PKG_CONFIG_PATH=DIR/lib/pkgconfig pkg-config --cflags --libs creditgate
              (add --static for the static library)

Licensed under MIT or Apache-2.0, at your option (LICENSE-MIT, LICENSE-APACHE).
EOF

mkdir -p "$out_dir"
archive="$out_dir/$name.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$archive" "$name"
echo "$archive"
