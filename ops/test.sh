#!/usr/bin/env bash
# Sets everything up and runs every test: unit (cmocka), integration (real redis-server + the
# real binary) and reference checks, first in a normal build, then again under
# AddressSanitizer + UndefinedBehaviorSanitizer. CUDA code is compiled when nvcc exists.
# Usage: ops/test.sh [--quick]   (--quick skips the sanitizer pass)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ops/setup.sh
jobs=$(nproc)

build_and_test() { # build_and_test DIR EXTRA_CMAKE_ARGS...
  local dir=$1; shift
  cmake -S . -B "$dir" -DWEAVER_TEST_BACKENDS=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs" > "$dir/build.log" 2>&1 || { cat "$dir/build.log"; return 1; }
  grep -E "warning:" "$dir/build.log" || true
  (cd "$dir" && ctest --output-on-failure -j1 --timeout 1500)
}

build_and_test build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${1:-}" != "--quick" ]; then
  # Sanitizers: leaks and UB abort the test that hit them. CUDA is off here (ASan and the CUDA
  # runtime do not mix); the normal build above already compiles the .cu files.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    build_and_test build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEAVER_SANITIZE=ON -DWEAVER_CUDA=OFF
fi
