#!/usr/bin/env bash
# build_llamacpp.sh: fetch llama.cpp's source as vendored in the llama-cpp-python sdist (the same
# distribution the decoder fixtures were recorded with) and build llama.cpp's own benchmark tools,
# llama-bench and llama-batched-bench, for bench_generate.py. Idempotent: a finished build of the
# same version is reused. Needs pip (PyPI), cmake and a C/C++ compiler.
#
#   bash bench/generate/build_llamacpp.sh [VERSION]      (default 0.3.36; env LLAMACPP_DIR)
#
# Result: $LLAMACPP_DIR/bin/llama-bench, $LLAMACPP_DIR/bin/llama-batched-bench and
# $LLAMACPP_DIR/VERSION (the sdist version, llama.cpp's build number and commit).
# Default LLAMACPP_DIR is build-llamacpp/ at the repository root (git-ignored via build*/).
set -euo pipefail
VERSION="${1:-${LLAMACPP_PY_VERSION:-0.3.36}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${LLAMACPP_DIR:-$ROOT/build-llamacpp}"
JOBS="${JOBS:-2}"
mkdir -p "$DIR"
if [[ -x "$DIR/bin/llama-bench" && -x "$DIR/bin/llama-batched-bench" ]] \
   && grep -qx "llama-cpp-python $VERSION" "$DIR/VERSION" 2>/dev/null; then
  echo "build_llamacpp: $DIR already has llama-cpp-python $VERSION's tools" >&2
  exit 0
fi
SDIST_DIR="$DIR/sdist"
mkdir -p "$SDIST_DIR"
TARBALL="$(ls "$SDIST_DIR"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)"
if [[ -z "$TARBALL" ]]; then
  # the sdist only (pip prepares its metadata in an isolated build environment; nothing is installed)
  python3 -m pip download --no-deps --no-binary :all: -d "$SDIST_DIR" "llama-cpp-python==$VERSION" >&2
  TARBALL="$(ls "$SDIST_DIR"/llama_cpp_python-"$VERSION".tar.gz)"
fi
SHA="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
# The default version's sdist as first fetched here (llama.cpp 0c1e570 inside); others are recorded only.
if [[ "$VERSION" == 0.3.36 && "$SHA" != 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e ]]; then
  echo "build_llamacpp: $TARBALL has sha256 $SHA, not the recorded one" >&2
  exit 1
fi
SRC="$DIR/src/llama_cpp_python-$VERSION"
if [[ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]]; then
  rm -rf "$SRC"
  mkdir -p "$DIR/src"
  tar -xzf "$TARBALL" -C "$DIR/src"
fi
LSRC="$SRC/vendor/llama.cpp"
cmake -S "$LSRC" -B "$DIR/cmake" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=ON \
  -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$DIR/cmake" --target llama-bench llama-batched-bench -j"$JOBS" >&2
mkdir -p "$DIR/bin"
for t in llama-bench llama-batched-bench; do
  cp -f "$(find "$DIR/cmake" -type f -name "$t" -perm -u+x | head -n1)" "$DIR/bin/$t"
done
# llama.cpp's build number and commit as cmake recorded them (build-info), for the report.
BINFO="$(grep -rhoE 'LLAMA_(BUILD_NUMBER|COMMIT) *= *[^;]+' "$DIR/cmake/common/build-info.cpp" 2>/dev/null | tr '\n' ' ' || true)"
{
  echo "llama-cpp-python $VERSION"
  echo "sha256 $SHA"
  echo "llama.cpp ${BINFO:-build info unknown}"
} > "$DIR/VERSION.tmp"
mv "$DIR/VERSION.tmp" "$DIR/VERSION"
cat "$DIR/VERSION" >&2
