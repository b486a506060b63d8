#!/usr/bin/env bash
# Builds the benchmark programs (Release, native) into build-bench/ if needed; prints the build directory.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bdir="${XDREC_BENCH_BUILD:-$root/build-bench}"
if [ ! -f "$bdir/build.ninja" ]; then
  cmake -S "$root" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DXDREC_BUILD_TESTS=OFF >&2
fi
cmake --build "$bdir" --target "$@" -j"$(nproc)" >&2
echo "$bdir"
