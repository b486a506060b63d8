#!/usr/bin/env bash
# Builds benchmark programs in the normal build tree (build/, or $XDREC_BUILD_DIR: the same Release flags as
# scripts/test, so a tree that scripts/test made is reused as it is) and prints the build directory.
#   bench/build.sh TARGET...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bdir="${XDREC_BUILD_DIR:-$root/build}"
case "$bdir" in /*) ;; *) bdir="$root/$bdir" ;; esac
if [ ! -f "$bdir/build.ninja" ] && [ ! -f "$bdir/Makefile" ]; then
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S "$root" -B "$bdir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release ${XDREC_CMAKE_ARGS:-} >&2
fi
log="$bdir/bench_build.log"
if ! cmake --build "$bdir" --target "$@" -j"$(nproc)" >"$log" 2>&1; then
  cat "$log" >&2
  echo "bench: building $* failed (log: $log)" >&2
  exit 1
fi
echo "$bdir"
