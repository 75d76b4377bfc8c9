#!/usr/bin/env bash
# Makes .gpu/ (git-ignored): what travels with the working tree to the offline GPU machine that runs
# ops/gpu-check.sh, under the 64 MiB the machine receives:
#   .gpu/minilm-f16/   all-MiniLM-L6-v2 with its weights converted to F16 safetensors (~44 MiB;
#                      F16 keeps cosine >= 0.9999994 against F32, measured on the CPU) + tokenizer files
#   .gpu/corpus.jsonl  the reference corpus (tests/reference/gen_corpus.py, fixed seed)
#   .gpu/bin/          weaver-engine and weaver-gpu-check built here with CUDA and the test backends
#   .gpu/smollm2-header.gguf + .size: SmolLM2-135M Q4_1's GGUF header (~1.8 MiB: metadata,
#                      vocabulary, tensor infos) and its full size; weaver-gpu-decode rebuild grows it
#                      into a random-weight model of the real shapes and types on the GPU machine
#   .gpu/bin/weaver-gpu-decode  the decoder phase's device side (bench/generate/gpu_decode_check.c)
#   .gpu/lib.tar.xz    their shared libraries except glibc, libstdc++/libgcc and cuBLAS(Lt), which the
#                      GPU machine's CUDA 13 toolkit provides (ops/gpu-check.sh phase 0 unpacks them
#                      and checks that nothing is missing); xz because libcurl's dependencies alone
#                      are 18 MiB unpacked
# Needs: a CUDA test build (default build-test, or $WEAVER_GPU_BUILD), python3 with numpy and
# safetensors (ops/requirements-test.txt), the model in models/ (ops/setup.sh).
# Usage: ops/make-gpu-bundle.sh [--no-build]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${WEAVER_GPU_BUILD:-build-test}
model=models/all-MiniLM-L6-v2
out=.gpu
limit_mib=60

[ -f "$model/model.safetensors" ] || { echo "make-gpu-bundle: $model is missing (run ops/setup.sh)" >&2; exit 1; }
if [ "${1:-}" != "--no-build" ]; then
  cmake -S . -B "$build" -DWEAVER_TEST_BACKENDS=ON -DWEAVER_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$(nproc)" --target weaver-engine weaver-gpu-check weaver-gpu-decode >/dev/null
fi
for b in "$build/weaver-engine" "$build/bench/weaver-gpu-check" "$build/bench/weaver-gpu-decode"; do
  [ -x "$b" ] || { echo "make-gpu-bundle: $b is not built" >&2; exit 1; }
done

rm -rf "$out"
mkdir -p "$out/minilm-f16" "$out/bin" "$out/lib"
trap 'rm -rf "$out/lib"' EXIT

# The model: every small file as it is, the weights as F16.
(cd "$model" && find . -type f ! -name 'model.safetensors' ! -name '*.bin' ! -name '*.onnx' ! -name '*.h5' \
   ! -name '*.msgpack' ! -name 'README.md' -print0) | while IFS= read -r -d '' f; do
  mkdir -p "$out/minilm-f16/$(dirname "$f")"
  cp "$model/$f" "$out/minilm-f16/$f"
done
python3 - "$model/model.safetensors" "$out/minilm-f16/model.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
src, dst = sys.argv[1:3]
t = load_file(src)
save_file({k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in t.items()}, dst,
          metadata={"format": "pt", "converted_by": "weaver ops/make-gpu-bundle.sh (F32 -> F16)"})
PY

python3 tests/reference/gen_corpus.py "$out/corpus.jsonl" >/dev/null

# The decoder: SmolLM2's header only (its weights do not fit), and the size to grow it to.
smol=models/SmolLM2-135M-Instruct.Q4_1.gguf
python3 - "$smol" "$out/smollm2-header.gguf" <<'PY'
import os, sys
import gguf
src, dst = sys.argv[1:3]
off = gguf.GGUFReader(src).data_offset
with open(src, "rb") as f, open(dst, "wb") as o:
    o.write(f.read(off))
with open(dst + ".size", "w") as o:
    o.write("%d\n" % os.path.getsize(src))
PY

cp "$build/weaver-engine" "$build/bench/weaver-gpu-check" "$build/bench/weaver-gpu-decode" "$out/bin/"
strip --strip-debug "$out/bin/"* 2>/dev/null || true
# Shared libraries, by what the dynamic linker resolves here.
ldd "$build/weaver-engine" "$build/bench/weaver-gpu-check" "$build/bench/weaver-gpu-decode" | awk '/=> \//{print $1, $3}' | sort -u |
  while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) continue ;;
      libcublas*) continue ;;  # ~500 MiB: the GPU machine's CUDA toolkit has it
    esac
    cp -L "$path" "$out/lib/$name"
  done

tar -C "$out" -cJf "$out/lib.tar.xz" lib
rm -rf "$out/lib"

size_mib=$(du -sm "$out" | cut -f1)
echo "make-gpu-bundle: $out is ${size_mib} MiB:"
du -sh "$out"/* | sed 's/^/  /'
if [ "$size_mib" -gt "$limit_mib" ]; then
  echo "make-gpu-bundle: over ${limit_mib} MiB; the working tree travels too and the total must stay under 64 MiB" >&2
  exit 1
fi
