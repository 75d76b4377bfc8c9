#!/usr/bin/env python3
"""bench_generate.py: weaver-engine's native decoder vs llama.cpp (llama-cpp-python) on the same
GGUF file, same thread count, same prompts, in one run. Not a test.

  python3 bench/generate/bench_generate.py [--model F] [--threads 2] [--cli PATH] [--repeat 3]

Figures: prefill tokens/s (one ~200-token prompt), single-stream decode tokens/s (64 greedy
tokens), aggregate generated tokens/s with 16 and 64 concurrent jobs through the generator API
(continuous batching; the queue path is the lead's wiring). llama.cpp's aggregate figures use
its multi-sequence batch API (one llama_decode per step for all sequences).
Each figure is the median of --repeat runs, ours and llama.cpp alternating within a repeat so
both see the same load; the per-run values are printed too. The machine is shared and noisy:
compare ratios from one run, not figures across runs.
"""
import argparse
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
          "combined movable metal type, oil-based inks and a wooden screw press. ") * 6


def ours(cli, model, threads, jobs, max_tokens, prompt):
    cmd = cli + ["--model", model, "--prompt", prompt, "--max-tokens", str(max_tokens), "--jobs", str(jobs),
                 "--threads", str(threads), "--ctx", "512", "--temperature", "0.8", "--seed", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def llama(model, threads):
    import llama_cpp
    import numpy as np
    llm = llama_cpp.Llama(model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=512,
                          verbose=False, flash_attn=False)
    toks = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    out = {}
    best = 1e9
    for _ in range(3):
        llm.reset()
        t = time.perf_counter()
        llm.eval(toks)
        best = min(best, time.perf_counter() - t)
    out["prefill_tok_s"] = len(toks) / best
    out["prompt_tokens"] = len(toks)
    llm.reset()
    llm.eval(toks[:8])
    t = time.perf_counter()
    for _ in range(64):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    out["decode_tok_s"] = 64 / (time.perf_counter() - t)
    return out, len(toks)


def llama_aggregate(model, threads, n_seq, n_gen, prompt_len):
    """n_seq sequences: batched prefill, then one llama_decode per step for all of them."""
    import ctypes
    import llama_cpp as lc
    lc.llama_backend_init()
    mp = lc.llama_model_default_params()
    m = lc.llama_model_load_from_file(model.encode(), mp)
    cp = lc.llama_context_default_params()
    cp.n_ctx = n_seq * (prompt_len + n_gen + 8)
    cp.n_batch = max(512, n_seq)
    cp.n_ubatch = max(512, n_seq)
    cp.n_seq_max = n_seq
    cp.n_threads = threads
    cp.n_threads_batch = threads
    ctx = lc.llama_init_from_model(m, cp)
    vocab = lc.llama_model_get_vocab(m)
    buf = (lc.llama_token * 4096)()
    n = lc.llama_tokenize(vocab, PROMPT.encode(), len(PROMPT.encode()), buf, 4096, True, True)
    toks = list(buf[:n])[:prompt_len]
    nv = lc.llama_vocab_n_tokens(vocab)
    batch = lc.llama_batch_init(max(512, n_seq), 0, 1)
    t0 = time.perf_counter()
    for s in range(n_seq):  # prefill each sequence (chunks of the shared batch)
        batch.n_tokens = len(toks)
        for i, tk in enumerate(toks):
            batch.token[i] = tk
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = s
            batch.logits[i] = i == len(toks) - 1
        assert lc.llama_decode(ctx, batch) == 0
    last = [0] * n_seq
    import numpy as np
    lg = lc.llama_get_logits_ith(ctx, len(toks) - 1)
    first = int(np.argmax(np.ctypeslib.as_array(lg, shape=(nv,))))
    last = [first] * n_seq
    for step in range(n_gen):
        batch.n_tokens = n_seq
        for s in range(n_seq):
            batch.token[s] = last[s]
            batch.pos[s] = len(toks) + step
            batch.n_seq_id[s] = 1
            batch.seq_id[s][0] = s
            batch.logits[s] = True
        assert lc.llama_decode(ctx, batch) == 0
        for s in range(n_seq):
            row = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, s), shape=(nv,))
            last[s] = int(np.argmax(row))
    dt = time.perf_counter() - t0
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(m)
    return n_seq * n_gen / dt


def _default_cli():
    # The product binary's generate-local command (README build, or the test script's build).
    for b in ("build", "build-test"):
        t = os.path.join(ROOT, b, "weaver-engine")
        if os.path.exists(t):
            return [t, "generate-local"]
    return [os.path.join(ROOT, "build", "weaver-engine"), "generate-local"]


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else 0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cli", default=None, help="generate-local command (default: build/weaver-engine generate-local)")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; medians are reported")
    ap.add_argument("--no-llama", action="store_true")
    a = ap.parse_args()
    cli = a.cli.split() if a.cli else _default_cli()
    runs = {}

    def add(k, v):
        runs.setdefault(k, []).append(v)

    plen = len(subprocess.run(cli + ["--model", a.model, "--prompt", PROMPT[:200], "--tokenize-only"],
                              capture_output=True, text=True).stdout.split(","))
    # Ours and llama.cpp alternate inside each repeat, so both see the same machine load.
    for _ in range(a.repeat):
        p = ours(cli, a.model, a.threads, 1, 1, PROMPT)["results"][0]
        add("ours_prefill_tok_s", p["prompt_tokens"] / (p["prefill_ms"] / 1000))
        d = ours(cli, a.model, a.threads, 1, a.gen, PROMPT)["results"][0]
        add("ours_decode_tok_s", (d["completion_tokens"] - 1) / (d["decode_ms"] / 1000))
        for j in (16, 64):
            o = ours(cli, a.model, a.threads, j, a.gen, PROMPT[:200])
            add(f"ours_aggregate_{j}_tok_s", o["aggregate_tok_s"])
        if a.no_llama:
            continue
        try:
            l, _ = llama(a.model, a.threads)
        except ImportError:
            a.no_llama = True
            continue
        add("llama_prefill_tok_s", l["prefill_tok_s"])
        add("llama_decode_tok_s", l["decode_tok_s"])
        for j in (16, 64):
            add(f"llama_aggregate_{j}_tok_s", llama_aggregate(a.model, a.threads, j, a.gen, plen))
    res = {"threads": a.threads, "model": os.path.basename(a.model), "repeats": a.repeat, "statistic": "median"}
    for k, v in runs.items():
        res[k] = _median(v)
        res[k + "_runs"] = [round(x, 1) for x in v]
    res["ours_aggregate_16_over_single"] = _median([x / y for x, y in zip(runs["ours_aggregate_16_tok_s"],
                                                                          runs["ours_decode_tok_s"])])
    try:
        res["cpu_load_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
