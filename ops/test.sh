#!/usr/bin/env bash
# Sets everything up and runs every test: unit (cmocka), integration (real redis-server + the
# real binary) and reference checks, first in a normal build, then again under
# AddressSanitizer + UndefinedBehaviorSanitizer; then each libFuzzer target (tests/fuzz/, built
# with clang in build-fuzz/) for a fixed time on its seed corpus. A crash, leak or sanitizer
# report fails the run.
# Usage: ops/test.sh [--quick]   (--quick skips the sanitizer pass and the fuzz stage)
# WEAVER_FUZZ_SECONDS (default 20) is each fuzz target's budget.
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
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 1500)
}

# Builds everything with clang and without the test-only backends, as a user's build is (the
# README's `cmake --build`, ops/run-demo.sh): a test that needs a test backend must skip there,
# not break the build. The fuzz targets (each compiles the sources it exercises under ASan +
# UBSan) then run on a scratch corpus seeded from tests/fuzz/corpus_<name>/: new inputs go to
# build-fuzz/corpus/, never into the tree.
fuzz_stage() {
  local secs=${WEAVER_FUZZ_SECONDS:-20} dir=build-fuzz t0=$SECONDS
  cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DWEAVER_FUZZ=ON -DWEAVER_CUDA=OFF -DWEAVER_TEST_BACKENDS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$dir" -j"$jobs" > "$dir/build.log" 2>&1 || { cat "$dir/build.log"; return 1; }
  echo "fuzz stage: built every target without the test backends in $((SECONDS - t0)) s"
  local t
  for t in job safetensors gguf; do
    mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
    if ! "$dir/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix="$dir/artifacts/$t/" "$dir/corpus/$t" "tests/fuzz/corpus_$t" > "$dir/fuzz_$t.log" 2>&1; then
      tail -n 60 "$dir/fuzz_$t.log"
      echo "fuzz_$t FAILED; reproduce: $dir/tests/fuzz/fuzz_$t $dir/artifacts/$t/*" \
           "(once fixed, add the input to tests/fuzz/corpus_$t/)"
      return 1
    fi
    echo "fuzz_$t: $(grep -m1 -o 'Done [0-9]* runs in [0-9]* second(s)' "$dir/fuzz_$t.log"), no crash"
  done
  echo "fuzz stage: $((SECONDS - t0)) s"
}

# The numpy reference's embeddings of the embedder corpus are computed once per run (in the first
# pass) and reused by the sanitizer pass (tests/reference/reference_bert.py: embed_many); emptied
# first, so that every run computes them afresh.
export WEAVER_REF_CACHE="$root/build-test/reference-cache"
rm -rf "$WEAVER_REF_CACHE"
build_and_test build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${1:-}" != "--quick" ]; then
  # Sanitizers: leaks and UB abort the test that hit them. CUDA is off here (ASan and the CUDA
  # runtime do not mix; there are no .cu files yet anyway).
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    build_and_test build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEAVER_SANITIZE=ON -DWEAVER_CUDA=OFF
  fuzz_stage
fi
