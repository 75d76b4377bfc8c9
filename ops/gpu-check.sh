#!/usr/bin/env bash
# The prepared GPU check (issue 10; docs/embedding.md "GPU"): about 6 minutes on an H200, phases
# selectable so a partial rerun fits a 15-minute device budget. Runs from the tree plus .gpu/ (made
# by ops/make-gpu-bundle.sh on a machine with nvcc; nothing is downloaded here). Prints one table
# and writes $OUT/summary.json (OUT defaults to ./gpu-check-out).
#   0 environment: nvidia-smi, driver, the bundled binaries start (libraries unpacked from
#     .gpu/lib.tar.xz, nothing missing), else a CUDA build here is attempted
#   1 ceilings: device-to-device copy GB/s, cuBLASLt GEMM TFLOP/s per precision (weaver-gpu-check)
#   2 every device operation vs the reference math on fresh random inputs, outputs poisoned first
#   3 the corpus on the GPU vs the CPU path: min/mean cosine per precision; batch invariance
#   4 decoder (weaver-gpu-decode): a random-weight GGUF with SmolLM2-135M Q4_1's exact shapes and
#     types rebuilt from .gpu/smollm2-header.gguf and a fixed seed; every tensor type's activation
#     quantiser and matrix-vector product vs the CPU reference (bitwise expected); GPU vs CPU logits
#     and 16 greedy tokens; matrix-vector GB/s for 1..8 tokens as a share of the copy GB/s;
#     decode tokens/s at 1/16/64/256 concurrent sequences and prefill tokens/s
#   5 texts/s at sequence lengths 16/128/256 over batch sizes 64..4096, GPU memory used, beside
#     sentence-transformers fp16 on the same GPU and texts (the issue's phase 4)
#   6 out of memory: a forced small arena splits packs (same vectors), an oversized allocation is
#     refused and work still runs (the issue's phase 5); then summary.json and the table
# Usage: ops/gpu-check.sh [--phases 0,1,2,3,4,5,6] [--device cuda:0] [--quick] [--dry-run]
#   --quick    fewer lengths and batch sizes in phase 5
#   --dry-run  no GPU: runs everything against the test-only fake device on the CPU, with tiny
#              sizes, to check the script itself (what CI can do)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
phases="0,1,2,3,4,5,6"
device="cuda:0"
quick=0
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --phases) phases=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --dry-run) dry=1; shift ;;
    *) echo "usage: $0 [--phases 0,1,2,3,4,5,6] [--device cuda:N] [--quick] [--dry-run]" >&2; exit 64 ;;
  esac
done
OUT=${OUT:-$root/gpu-check-out}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"; [ -n "${smi_pid:-}" ] && kill "$smi_pid" 2>/dev/null' EXIT
results="$OUT/results.jsonl"
: > "$results"
model=.gpu/minilm-f16
corpus=.gpu/corpus.jsonl
bin=.gpu/bin
want() { [[ ",$phases," == *",$1,"* ]]; }
note() { printf '%s\n' "$*" >&2; }
record() { printf '%s\n' "$1" >> "$results"; } # one JSON object
gcheck_dev=$device
if [ "$dry" = 1 ]; then
  gcheck_dev=fake
  export WEAVER_TEST_FAKE_DEVICE="free_mib=4096"
  [ -x "$bin/weaver-engine" ] || bin=${WEAVER_GPU_BUILD:-build-test}
  [ -x "$bin/weaver-gpu-check" ] || { [ -x "$bin/bench/weaver-gpu-check" ] && ln -sf "$root/$bin/bench/weaver-gpu-check" "$work/weaver-gpu-check"; }
fi
engine=$bin/weaver-engine
gpucheck=$bin/weaver-gpu-check
[ -x "$gpucheck" ] || gpucheck=$work/weaver-gpu-check
[ -f "$model/model.safetensors" ] || { note "gpu-check: $model is missing: run ops/make-gpu-bundle.sh where nvcc is"; exit 66; }

# ---- phase 0: environment -------------------------------------------------------------------
if want 0 || [ ! -x "$engine" ]; then
  t0=$SECONDS
  smi=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)
  if [ -f .gpu/lib.tar.xz ] && [ "$bin" = .gpu/bin ]; then
    mkdir -p "$work/lib" && tar -C "$work" -xJf .gpu/lib.tar.xz
    export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  missing=$(ldd "$engine" "$gpucheck" 2>/dev/null | awk '/not found/{print $1}' | sort -u | tr '\n' ' ')
  version=$("$engine" --version 2>&1)
  if [ -n "$missing" ] || ! "$engine" --version >/dev/null 2>&1; then
    note "phase 0: the bundled binaries do not start (missing: ${missing:-?}); building the CUDA targets here"
    if cmake -S . -B build-gpu -DWEAVER_TEST_BACKENDS=ON -DWEAVER_CUDA=ON -DCMAKE_BUILD_TYPE=Release \
         > "$OUT/build-gpu.log" 2>&1 &&
       cmake --build build-gpu -j"$(nproc)" --target weaver-engine weaver-gpu-check >> "$OUT/build-gpu.log" 2>&1; then
      engine=build-gpu/weaver-engine gpucheck=build-gpu/bench/weaver-gpu-check
      version=$("$engine" --version 2>&1)
    else
      note "phase 0: the build failed too (see $OUT/build-gpu.log); nothing else can run"
      record "{\"phase\":0,\"ok\":false,\"nvidia_smi\":$(printf '%s' "$smi" | python3 -c 'import json,sys;print(json.dumps(sys.stdin.read()))'),\"missing_libraries\":\"$missing\"}"
      exit 1
    fi
  fi
  record "$(python3 -c 'import json,sys; print(json.dumps({"phase":0,"ok":True,"nvidia_smi":sys.argv[1],"binary":sys.argv[2],"version":sys.argv[3],"seconds":int(sys.argv[4])}))' "$smi" "$engine" "$version" "$((SECONDS - t0))")"
  note "phase 0: $smi; $version"
fi

# ---- phase 1: ceilings -----------------------------------------------------------------------
if want 1; then
  "$gpucheck" ceilings --device "$gcheck_dev" > "$work/p1.jsonl" 2> "$OUT/phase1.log"
  rc=$?
  sed 's/^{"phase":"ceilings"/{"phase":1/' "$work/p1.jsonl" >> "$results"
  record "{\"phase\":1,\"summary\":true,\"ok\":$([ $rc = 0 ] && echo true || echo false)}"
fi

# ---- phase 2: kernels vs the reference -------------------------------------------------------
if want 2; then
  "$gpucheck" kernels --device "$gcheck_dev" --seed "$RANDOM$RANDOM" > "$work/p2.jsonl" 2> "$OUT/phase2.log"
  sed 's/^{"phase":"kernels"/{"phase":2/' "$work/p2.jsonl" >> "$results"
fi

# ---- phase 3: corpus cosine per precision, batch invariance ----------------------------------
embed() { # embed OUT.npy DEVICE [args...]
  local out=$1 dev=$2; shift 2
  "$engine" embed --snapshot "$model" --input "$work/corpus.jsonl" --output "$out" --device "$dev" --no-progress "$@"
}
if want 3; then
  if [ "$dry" = 1 ]; then head -n 12 "$corpus" > "$work/corpus.jsonl"; else cp "$corpus" "$work/corpus.jsonl"; fi
  embed "$work/cpu.npy" cpu 2> "$OUT/phase3-cpu.log"
  for p in fp32 tf32 fp16 bf16; do
    s0=$(date +%s.%N)
    embed "$work/gpu-$p.npy" "$device" --precision "$p" 2> "$OUT/phase3-$p.log" || note "phase 3: $p failed (see $OUT/phase3-$p.log)"
    echo "$p $(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$s0" "$(date +%s.%N)")" >> "$work/p3-times"
  done
  embed "$work/gpu-fp16-small.npy" "$device" --precision fp16 --batch-tokens 1024 --max-texts 16 \
    2> "$OUT/phase3-fp16-small.log"
  python3 - "$work" >> "$results" <<'PY'
import json, os, sys
import numpy as np
w = sys.argv[1]
cpu = np.load(os.path.join(w, "cpu.npy")).astype(np.float64)
def cos(a, b):
    n = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    ok = n > 0
    return (a * b).sum(1)[ok] / n[ok]
times = dict(l.split() for l in open(os.path.join(w, "p3-times")))
for p in ["fp32", "tf32", "fp16", "bf16"]:
    f = os.path.join(w, "gpu-%s.npy" % p)
    if not os.path.exists(f):
        print(json.dumps({"phase": 3, "precision": p, "ok": False, "error": "no output"})); continue
    c = cos(cpu, np.load(f).astype(np.float64))
    print(json.dumps({"phase": 3, "precision": p, "texts": int(len(c)), "min_cosine": float(c.min()),
                      "mean_cosine": float(c.mean()), "seconds": float(times.get(p, 0)),
                      "ok": bool(c.min() >= (0.99999 if p == "fp32" else 0.999))}))
a, b = np.load(os.path.join(w, "gpu-fp16.npy")), np.load(os.path.join(w, "gpu-fp16-small.npy"))
c = cos(a.astype(np.float64), b.astype(np.float64))
print(json.dumps({"phase": 3, "what": "batch_invariance_fp16", "min_cosine": float(c.min()),
                  "rows_bitwise_equal": float((a == b).all(1).mean()), "ok": bool(c.min() >= 0.99999)}))
PY
fi

# ---- phase 4: decoder ------------------------------------------------------------------------
if want 4; then
  t0=$SECONDS
  gdec=$bin/weaver-gpu-decode
  [ -x "$gdec" ] || gdec=${engine%/weaver-engine}/bench/weaver-gpu-decode
  smol=$work/smollm2-random.gguf
  p4_ok=true
  if [ ! -x "$gdec" ] || [ ! -f .gpu/smollm2-header.gguf ]; then
    note "phase 4: weaver-gpu-decode or .gpu/smollm2-header.gguf is missing (ops/make-gpu-bundle.sh)"
    record '{"phase":4,"ok":false,"error":"weaver-gpu-decode or the SmolLM2 header is missing"}'
  else
    "$gdec" rebuild --header .gpu/smollm2-header.gguf --size "$(cat .gpu/smollm2-header.gguf.size)" \
      --out "$smol" --seed 135 > "$work/p4.jsonl" 2> "$OUT/phase4.log" || p4_ok=false
    "$gdec" kernels --device "$gcheck_dev" --seed "$RANDOM" >> "$work/p4.jsonl" 2>> "$OUT/phase4.log" || p4_ok=false
    steps=16; [ "$dry" = 1 ] && steps=2
    "$gdec" forward --device "$gcheck_dev" --model "$smol" --steps $steps >> "$work/p4.jsonl" 2>> "$OUT/phase4.log" || p4_ok=false
    "$gdec" bandwidth --device "$gcheck_dev" >> "$work/p4.jsonl" 2>> "$OUT/phase4.log" || p4_ok=false
    if [ "$dry" = 1 ]; then tp="--max 1 --steps 2"; else tp="--max 256 --steps 64"; fi
    # shellcheck disable=SC2086
    "$gdec" throughput --device "$gcheck_dev" --model "$smol" $tp >> "$work/p4.jsonl" 2>> "$OUT/phase4.log" || p4_ok=false
    python3 - "$work/p4.jsonl" "$p4_ok" $((SECONDS - t0)) >> "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
out = {"phase": 4, "ok": sys.argv[2] == "true", "seconds": int(sys.argv[3])}
mv = [r for r in rows if r.get("check") == "matvec"]
out["kernels_bitwise"] = {r["type"]: r["quantize_bitwise"] and r["matvec_bitwise"] for r in mv}
out["kernels_max_abs_diff"] = {r["type"]: r["max_abs_diff"] for r in mv}
fs = [r for r in rows if r.get("check") == "forward_summary"]
if fs:
    out["logits_max_abs_diff_Q4_1_model"] = fs[0]["max_abs_diff"]
    out["greedy_identical"] = fs[0]["greedy_identical"]
cp = [r for r in rows if r.get("check") == "copy"]
if cp:
    out["copy_gb_per_s"] = cp[0]["gb_per_s"]
out["matvec_share_of_copy"] = {r["tokens"]: r["share_of_copy"] for r in rows if r.get("check") == "matvec_bandwidth"}
out["throughput"] = [{k: r[k] for k in ("concurrent", "decode_tokens_per_s", "prefill_tokens_per_s", "step_us")}
                     for r in rows if r.get("check") == "throughput"]
out["graphs"] = next((r for r in rows if r.get("check") == "graphs"), None)
print(json.dumps(out))
PY
  fi
fi

# ---- phase 5: throughput beside sentence-transformers ----------------------------------------
if want 5; then
  if [ "$dry" = 1 ]; then lengths="16"; batches="64"; ntexts=64
  elif [ "$quick" = 1 ]; then lengths="128"; batches="256 1024 4096"; ntexts=8192
  else lengths="16 128 256"; batches="64 128 256 512 1024 2048 4096"; ntexts=8192; fi
  for L in $lengths; do
    python3 - "$L" "$ntexts" > "$work/len$L.jsonl" <<'PY'
import json, sys
L, n = int(sys.argv[1]), int(sys.argv[2])
words = "the of and to in is was for on that with as by at from his her are be this".split()
for i in range(n):  # L - 2 single-token words + [CLS] [SEP]; a number keeps texts distinct
    ws = [words[(i * 7 + j * 3) % len(words)] for j in range(max(L - 3, 0))] + [str(i % 10)]
    print(json.dumps({"id": str(i), "text": " ".join(ws)}))
PY
    for B in $batches; do
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$work/mem" 2>/dev/null &
      smi_pid=$!
      "$engine" embed --snapshot "$model" --input "$work/len$L.jsonl" --output "$work/t.npy" --device "$device" \
        --precision fp16 --max-texts "$B" --batch-tokens $((B * L)) --no-progress 2> "$work/t.log"
      kill "$smi_pid" 2>/dev/null; wait "$smi_pid" 2>/dev/null; smi_pid=
      rps=$(grep -o '[0-9]* rows/s' "$work/t.log" | tail -1 | cut -d' ' -f1)
      mem=$(sort -n "$work/mem" 2>/dev/null | tail -1)
      record "{\"phase\":5,\"engine\":\"weaver\",\"seq\":$L,\"batch\":$B,\"texts\":$ntexts,\"texts_per_s\":${rps:-null},\"gpu_mem_mib\":${mem:-null}}"
    done
  done
  python3 - "$work" "$model" "$lengths" "$batches" >> "$results" 2> "$OUT/phase5-st.log" <<'PY' || note "phase 5: sentence-transformers did not run (see $OUT/phase5-st.log)"
import json, os, sys, time
w, model, lengths, batches = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
import torch
from sentence_transformers import SentenceTransformer
m = SentenceTransformer(model, device="cuda").half()
for L in lengths:
    texts = [json.loads(l)["text"] for l in open(os.path.join(w, "len%s.jsonl" % L))]
    for B in batches:
        m.encode(texts[: int(B)], batch_size=int(B))  # warm-up
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        m.encode(texts, batch_size=int(B))
        torch.cuda.synchronize()
        dt = time.time() - t0
        print(json.dumps({"phase": 5, "engine": "sentence-transformers-fp16", "seq": int(L), "batch": int(B),
                          "texts": len(texts), "texts_per_s": len(texts) / dt,
                          "gpu_mem_mib": torch.cuda.max_memory_allocated() / 2**20}))
PY
fi

# ---- phase 6: out of memory, then the summary -------------------------------------------------
if want 6; then
  "$gpucheck" oom --device "$gcheck_dev" --snapshot "$model" > "$work/p6.jsonl" 2> "$OUT/phase6.log"
  sed 's/^{"phase":"oom"/{"phase":6/' "$work/p6.jsonl" >> "$results"
fi

python3 - "$results" "$OUT/summary.json" "$phases" "$dry" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ran = sorted({r["phase"] for r in rows})
phases = [int(p) for p in sys.argv[3].split(",")]
bad = [r for r in rows if r.get("ok") is False]
summary = {"dry_run": sys.argv[4] == "1", "phases_asked": phases, "phases_ran": ran,
           "failed": len(bad), "ok": not bad and bool(rows), "results": rows}
st = {(r["seq"], r["batch"]): r for r in rows if r.get("engine") == "sentence-transformers-fp16"}
lines = ["| phase | check | value | ok |", "|---|---|---|---|"]
for r in rows:
    p = r["phase"]
    ok = {True: "yes", False: "NO", None: "-"}[r.get("ok")] if "ok" in r else ""
    if p == 0: lines.append("| 0 | environment | %s | %s |" % (r.get("nvidia_smi", ""), ok))
    elif p == 1 and r.get("what") == "d2d_copy": lines.append("| 1 | d2d copy | %.0f GB/s | |" % r["gb_per_s"])
    elif p == 1 and r.get("what") == "gemm": lines.append("| 1 | GEMM %s %d^3 | %.1f TFLOP/s | |" % (r["precision"], r["m"], r["tflops"]))
    elif p == 2 and "kernel" in r: lines.append("| 2 | %s %s | max abs %.2g | %s |" % (r["kernel"], r["shape"], r.get("max_abs", 0), ok))
    elif p == 3 and "precision" in r: lines.append("| 3 | corpus %s vs cpu | min cos %.7f, mean %.7f | %s |" % (r["precision"], r.get("min_cosine", 0), r.get("mean_cosine", 0), ok))
    elif p == 3: lines.append("| 3 | batch invariance fp16 | min cos %.7f, %.0f%% rows bitwise | %s |" % (r["min_cosine"], 100 * r["rows_bitwise_equal"], ok))
    elif p == 4 and "error" in r: lines.append("| 4 | decoder | %s | NO |" % r["error"])
    elif p == 4:
        bits = r.get("kernels_bitwise", {})
        lines.append("| 4 | decoder kernels vs CPU reference | %s | %s |" % (", ".join("%s %s" % (t, "bitwise" if b else "max abs %.2g" % r["kernels_max_abs_diff"][t]) for t, b in bits.items()), ok))
        lines.append("| 4 | SmolLM2-shaped Q4_1/Q8_0 logits vs CPU, greedy 16 | max abs %s, tokens %s | |" % (r.get("logits_max_abs_diff_Q4_1_model"), "identical" if r.get("greedy_identical") else "DIFFER"))
        lines.append("| 4 | matvec share of copy (%s GB/s), 1..8 tokens | %s | |" % (r.get("copy_gb_per_s"), ", ".join("%s" % v for v in r.get("matvec_share_of_copy", {}).values())))
        for t in r.get("throughput", []):
            lines.append("| 4 | %d concurrent | %s decode tok/s (step %s us), prefill %s tok/s | |" % (t["concurrent"], t["decode_tokens_per_s"], t["step_us"], t["prefill_tokens_per_s"]))
    elif p == 5 and r.get("engine") == "weaver":
        s = st.get((r["seq"], r["batch"]))
        ratio = " (%.2fx sentence-transformers fp16)" % (r["texts_per_s"] / s["texts_per_s"]) if s and r["texts_per_s"] else ""
        lines.append("| 5 | seq %d batch %d | %s texts/s, %s MiB%s | |" % (r["seq"], r["batch"], r["texts_per_s"], r["gpu_mem_mib"], ratio))
    elif p == 6: lines.append("| 6 | forced small arena | %d splits, min cos %.8f, oversized alloc refused %s | %s |" % (r["splits"], r["min_cosine_split_vs_whole"], r["oversized_alloc_refused"], ok))
cands = [r for r in rows if r["phase"] == 3 and "precision" in r and r.get("min_cosine", 0) >= 0.9999]
if cands:
    best = min(cands, key=lambda r: r.get("seconds", 1e9))
    summary["fastest_precision_with_min_cosine_0.9999"] = best["precision"]
    lines.append("| 3 | default precision (fastest with min cos >= 0.9999) | %s | |" % best["precision"])
summary["table"] = "\n".join(lines)
json.dump(summary, open(sys.argv[2], "w"), indent=1)
print("\n".join(lines))
print("\nphases ran: %s; failed checks: %d; summary: %s" % (ran, len(bad), sys.argv[2]))
sys.exit(0 if summary["ok"] else 1)
PY
