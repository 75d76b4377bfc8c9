"""Benchmark: weaver-engine's GGUF embedder against llama.cpp's embedding mode (llama-cpp-python
built from source, `Llama(embedding=True).embed`) on the same GGUF file, same texts, same threads.

    python3 bench/embed/bench_gguf.py --bin build/weaver-engine [--model F.gguf] [--pooling last]
        [--threads 2] [--rounds 3] [--lengths short,medium,long,mixed] [--scale 1.0] [--python VENV/bin/python]
        [--json results.json]

Corpora (deterministic, words from a fixed list): short ~12 words, medium ~100, long ~350
(under the 512-token context both sides use), and mixed (4..350 words, uniformly). Both sides
run in their own process with the same thread count and a 512-token context and batch:
weaver-engine runs `weaver-engine embed` (tokenizing, packing, encoding, writing the .npy),
timed as the run's wall time less that of a one-text run (process start and model load); llama.cpp runs `Llama.embed(texts)` (tokenizing included: its batches of up
to n_batch tokens of consecutive texts, one llama_decode each), timed after loading and a
warm-up call. Rounds are interleaved (ours, then llama.cpp, then again), so a busy moment on a
shared machine hits both; the table gives the medians over rounds and the median of the
per-round ratios. The vectors of the first round are compared (normalised, cosine).
The default model is SmolLM2-135M-Instruct.Q4_1 (llama architecture) with last pooling given to
both sides, for want of a real embedding GGUF on this offline machine."""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
POOL_IDS = {"mean": 1, "cls": 2, "last": 3}
WORDS = ("the of and to in is was for on that with as by at from his it an were are which this be or has had "
         "not but first one their its new after who they have her she two been other when there all during "
         "into school time may years more most only over city some world would where later up such used many "
         "can state about national out known university united then made team year between both century "
         "against government under series well three including music people system part however second same "
         "water river during early house market history search query document passage answer embedding").split()
LENGTHS = {"short": (12, 12, 600), "medium": (100, 100, 160), "long": (350, 350, 48), "mixed": (4, 350, 200)}


def corpus(name, scale=1.0, seed=7):
    lo, hi, n = LENGTHS[name]
    n = max(4, int(n * scale))
    rng = random.Random(f"{name}-{seed}")
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def llama_worker(args):
    """Runs inside the llama-cpp-python interpreter: embeds the corpus, prints texts/s."""
    import llama_cpp
    import numpy as np
    texts = [json.loads(x)["text"] for x in open(args.corpus, encoding="utf-8")]
    llm = llama_cpp.Llama(args.model, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=args.threads,
                          n_threads_batch=args.threads, pooling_type=POOL_IDS[args.pooling], flash_attn=False,
                          verbose=False)
    llm.embed(texts[:8])  # warm-up
    t0 = time.perf_counter()
    out = llm.embed(texts)
    dt = time.perf_counter() - t0
    np.save(args.out, np.array(out, dtype=np.float32))
    print(json.dumps({"texts_per_s": len(texts) / dt, "seconds": dt}))


def run_ours(args, corpus_path, out, conf):
    """texts/s: the run's wall time less that of a one-text run (start-up and model load)."""
    def wall(inp):
        t0 = time.perf_counter()
        p = subprocess.run([args.bin, "embed", "--config", conf, "--input", inp, "--output", out,
                            "--no-progress", "--no-normalize", "--threads", str(args.threads)],
                           capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            sys.exit("weaver-engine embed failed: " + p.stderr[-2000:])
        return time.perf_counter() - t0
    one = corpus_path + ".one.jsonl"
    with open(corpus_path, encoding="utf-8") as f, open(one, "w", encoding="utf-8") as g:
        g.write(f.readline())
    base = wall(one)
    n = sum(1 for _ in open(corpus_path, encoding="utf-8"))
    return n / max(wall(corpus_path) - base, 1e-6)


def run_llama(args, corpus_path, out):
    p = subprocess.run([args.python, os.path.abspath(__file__), "--worker", "--model", args.model, "--pooling",
                        args.pooling, "--threads", str(args.threads), "--corpus", corpus_path, "--out", out],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        sys.exit("llama.cpp worker failed: " + p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])["texts_per_s"]


def cosines(a_path, b_path):
    import numpy as np
    a, b = np.load(a_path).astype(np.float64), np.load(b_path).astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    c = (a * b).sum(axis=1)
    return float(c.min()), float(np.median(c))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "weaver-engine"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--pooling", default="last", choices=sorted(POOL_IDS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lengths", default="short,medium,long,mixed")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the corpus sizes")
    ap.add_argument("--python", default="/work/llamacpp-venv/bin/python", help="interpreter with llama_cpp")
    ap.add_argument("--json")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--corpus")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        return llama_worker(args)
    tmp = tempfile.mkdtemp(prefix="bench-gguf-")
    conf = os.path.join(tmp, "weaver.conf")
    with open(conf, "w") as f:
        f.write('embedder: { backend = "native"; snapshot = %s; pooling = "%s"; max_seq_len = 512; };\n'
                % (json.dumps(os.path.abspath(args.model)), args.pooling))
    results = {}
    print(f"model {os.path.basename(args.model)}, pooling {args.pooling}, threads {args.threads}, "
          f"{args.rounds} rounds, load {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.lengths.split(","):
        texts = corpus(name, args.scale)
        cpath = os.path.join(tmp, name + ".jsonl")
        with open(cpath, "w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": i, "text": t}) + "\n")
        ours, theirs, ratios = [], [], []
        for r in range(args.rounds):
            o_out, l_out = os.path.join(tmp, f"o-{name}.npy"), os.path.join(tmp, f"l-{name}.npy")
            a = run_ours(args, cpath, o_out, conf)
            b = run_llama(args, cpath, l_out)
            ours.append(a)
            theirs.append(b)
            ratios.append(a / b)
            if r == 0:
                cmin, cmed = cosines(o_out, l_out)
            print(f"  {name} round {r + 1}: ours {a:.1f} texts/s, llama.cpp {b:.1f} texts/s, ratio {a / b:.2f} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        results[name] = {"texts": len(texts), "ours": ours, "llama_cpp": theirs, "ratios": ratios,
                         "cosine_min": cmin, "cosine_median": cmed}
    print("\n| corpus | texts | llama.cpp texts/s (median) | ours texts/s (median) | ours/llama (median of rounds) "
          "| per-round ratios | cosine min / median |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['texts']} | {statistics.median(r['llama_cpp']):.1f} | {statistics.median(r['ours']):.1f} "
              f"| {statistics.median(r['ratios']):.2f} | {', '.join(f'{x:.2f}' for x in r['ratios'])} "
              f"| {r['cosine_min']:.5f} / {r['cosine_median']:.5f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
