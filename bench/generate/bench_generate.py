#!/usr/bin/env python3
"""bench_generate.py: weaver-engine's native decoder vs llama.cpp on the same GGUF file, like for
like: llama.cpp measured by its own C++ tools (llama-bench, llama-batched-bench) built from the
llama-cpp-python sdist by build_llamacpp.sh, ours by `weaver-engine generate-local` with the same
prompt lengths, token counts and threads. Not a test.

  python3 bench/generate/bench_generate.py [--model F] [--threads 2] [--rounds 3] [--cli PATH] [--bandwidth PATH]
      [--llama-bench PATH --llama-batched-bench PATH] [--only pp128,tg64,...] [--json OUT]

Without tool paths it runs build_llamacpp.sh (idempotent) and uses build-llamacpp/bin/.

Settings (each side does the same forward-pass work; llama.cpp's tools feed random tokens and
sample nothing, ours feeds a text prompt of exactly that many tokens and samples greedily, an
argmax over the vocabulary per generated token):
  pp128, pp512   prefill tok/s. llama-bench -p N -n 0: one N-token prompt into an empty cache
                 (n_batch 2048, n_ubatch 512: one pass). Ours: an N-token prompt, --max-tokens 1;
                 N / prefill_ms (submit to the first token, its argmax included); our scheduler
                 cuts prompts into passes of at most 256 tokens (pp512 = two passes).
  tg64           decode tok/s after a short prompt. llama-bench -p 0 -n 64: 64 one-token passes at
                 positions 0..63, prefill excluded. Ours: a 1-token prompt, --max-tokens 65;
                 64 / decode_ms, where decode_ms runs from the first generated token (the prefill's)
                 to the last: 64 one-token passes at positions 1..64, prefill excluded.
  tg64@d512      the same after 512 tokens. llama-bench -p 0 -n 64 -d 512 (the 512-token prefill
                 is untimed). Ours: a 512-token prompt, --max-tokens 65, 64 / decode_ms.
  bN             N concurrent sequences, prompt 128, 64 decode passes each. llama-batched-bench
                 -npp 128 -ntg 64 -npl N: all N prompts prefilled (pp), then 64 steps of N
                 tokens (tg); S = N*(128+64) / (T_PP + T_TG). Ours: --jobs N (N slots), the same
                 prompt, --max-tokens 65 (the prefill's token + 64 decode passes), continuous
                 batching (prefill chunks and decode tokens share passes); S = N*(128+64) / wall_ms.
Both sides warm up untimed first (llama-bench: one run per test; batched-bench: 16 tokens;
ours: --warmup, one untimed job of the same request in the same process).

Decode against the memory limit: a single-stream decode step reads every weight once (the
matrices of every layer and the LM head; the embedding only as one row, unless tied as the head),
so tokens/s can be no more than read bandwidth / those bytes. Right before and right after each
round's tg64 and tg64@d512 group, weaver-read-bandwidth (bench/generate/read_bandwidth.c: the same
threads reading a 512 MiB buffer, 16x the L3, median of 5 passes) measures it; the report gives
each side's decode as a share of the limit from the mean of the two (median over rounds of the
per-round shares).

Rounds: every round runs each setting once on each side, llama.cpp and ours back to back, the
order alternating between rounds, so both see the same machine load. The table gives per-run
values, medians, and the median of the per-round ratios ours/llama (> 1: ours faster). The
machine is shared and noisy: compare ratios from one run, not figures across runs.
"""
import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
             "combined movable metal type, oil-based inks and a wooden screw press. Within fifty years "
             "printers in more than two hundred European cities had produced millions of books, and the "
             "price of a copy fell so far that merchants, students and craftsmen could own one. ")
SETTINGS = ["pp128", "pp512", "tg64", "tg64@d512", "b1", "b16", "b64"]


LAST_CPU_S = [0.0]  # CPU seconds (user + system) of the last command run(), for the per-run table


def run(cmd, **kw):
    u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU_S[0] = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r


# ---- prompts of an exact token count for our side ----

def n_tokens(cli, model, text):
    return len(json.loads(run(cli + ["--model", model, "--prompt", text, "--tokenize-only"]).stdout)["tokens"])


def prompt_of(cli, model, n, cache={}):
    """A text prompt that our tokenizer turns into exactly n tokens: the longest run of whole
    words of BASE_TEXT (repeated) with at most n tokens, padded with ' the' (one token each)."""
    if n in cache:
        return cache[n]
    words = (BASE_TEXT * (n // 40 + 2)).split(" ")
    lo, hi = 1, len(words)  # largest k with tokens(words[:k]) <= n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if n_tokens(cli, model, " ".join(words[:mid])) <= n:
            lo = mid
        else:
            hi = mid - 1
    text = " ".join(words[:lo])
    have = n_tokens(cli, model, text)
    text += " the" * (n - have)
    got = n_tokens(cli, model, text)
    if got != n:
        sys.exit(f"cannot make a {n}-token prompt (got {got})")
    cache[n] = text
    return text


# ---- our side ----

def ours(a, setting):
    cli, model, t = a.cli, a.model, str(a.threads)
    if setting in ("pp128", "pp512"):
        n = int(setting[2:])
        o = json.loads(run(cli + ["--model", model, "--prompt", prompt_of(cli, model, n), "--max-tokens", "1",
                                  "--threads", t, "--ctx", str(n + 16), "--temperature", "0", "--warmup"]).stdout)
        r = o["results"][0]
        assert r["prompt_tokens"] == n, r
        return {"tok_s": n / (r["prefill_ms"] / 1000), "ms": r["prefill_ms"], "cpu_s": LAST_CPU_S[0]}
    if setting.startswith("tg64"):
        n = 512 if setting.endswith("@d512") else 1
        o = json.loads(run(cli + ["--model", model, "--prompt", prompt_of(cli, model, n), "--max-tokens", "65",
                                  "--threads", t, "--ctx", str(n + 80), "--temperature", "0", "--warmup"]).stdout)
        r = o["results"][0]
        if r["prompt_tokens"] != n or r["completion_tokens"] != 65 or r["finish"] != "length":
            sys.exit(f"ours {setting}: expected {n} prompt tokens and 65 generated to length, got {r}")
        return {"tok_s": 64 / (r["decode_ms"] / 1000), "ms": r["decode_ms"], "cpu_s": LAST_CPU_S[0]}
    if setting.startswith("b"):
        j = int(setting[1:])
        o = json.loads(run(cli + ["--model", model, "--prompt", prompt_of(cli, model, 128), "--max-tokens", "65",
                                  "--jobs", str(j), "--threads", t, "--ctx", str(128 + 80), "--temperature", "0",
                                  "--warmup"]).stdout)
        rs = o["results"]
        bad = [r for r in rs if r["prompt_tokens"] != 128 or r["completion_tokens"] != 65]
        if len(rs) != j or bad:
            sys.exit(f"ours {setting}: expected {j} jobs of 128 + 65 tokens, got {bad[:2] or len(rs)}")
        wall = o["wall_ms"] / 1000
        return {"tok_s": j * (128 + 64) / wall, "ms": o["wall_ms"], "gen_tok_s": j * 64 / wall,
                "cpu_s": LAST_CPU_S[0]}
    raise ValueError(setting)


# ---- the memory limit ----

def weight_bytes_per_token(model):
    """Bytes one decode step reads: every tensor but the token embedding (one row of it is read),
    plus the embedding when it is also the LM head (no output.weight)."""
    from gguf import GGUFReader
    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(model).tensors}
    total = sum(n for name, n in tensors.items() if name != "token_embd.weight")
    return total + (tensors.get("token_embd.weight", 0) if "output.weight" not in tensors else 0)


def read_bandwidth(a):
    o = json.loads(run([a.bandwidth, "read", "--threads", str(a.threads), "--mib", "512", "--passes", "5"]).stdout)
    return o["gbps_median"]


# ---- llama.cpp's tools ----

def llama_bench(a, depth):
    """One llama-bench process: depth 0 gives pp128, pp512, tg64; depth 512 gives tg64@d512."""
    tests = {"pp128", "pp512", "tg64"} if depth == 0 else {"tg64@d512"}
    want = [s for s in a.only if s in tests]
    if not want:
        return {}
    if depth == 0:
        ps = [s[2:] for s in want if s.startswith("pp")] or ["0"]
        args = ["-p", ",".join(ps), "-n", "64" if "tg64" in want else "0"]
    else:
        args = ["-p", "0", "-n", "64", "-d", "512"]
    cmd = [a.llama_bench, "-m", a.model, "-t", str(a.threads), "-r", str(a.llama_reps), "-o", "json"] + args
    if a.llama_ubatch:
        cmd += ["-ub", str(a.llama_ubatch)]
    if a.llama_extra:
        cmd += shlex.split(a.llama_extra)
    out = json.loads(run(cmd).stdout)
    res = {}
    for e in out:
        key = f"pp{e['n_prompt']}" if e["n_prompt"] else f"tg{e['n_gen']}" + (f"@d{e['n_depth']}" if e["n_depth"] else "")
        res[key] = {"tok_s": statistics.median(e["samples_ts"]), "samples_ts": e["samples_ts"],
                    "cpu_s_process": LAST_CPU_S[0]}
        a.llama_info.update({k: e.get(k) for k in ("build_commit", "build_number", "n_batch", "n_ubatch",
                                                      "flash_attn", "type_k", "type_v", "cpu_info", "n_threads",
                                                      "model_type", "poll")})
    return res


def llama_batched(a):
    pls = [s[1:] for s in a.only if s.startswith("b")]
    if not pls:
        return {}
    cmd = [a.llama_batched_bench, "-m", a.model, "-t", str(a.threads), "-tb", str(a.threads),
           "-c", str(max(int(p) for p in pls) * (128 + 64)), "-npp", "128", "-ntg", "64", "-npl", ",".join(pls),
           "--output-format", "jsonl"]
    if a.llama_ubatch:
        cmd += ["-ub", str(a.llama_ubatch)]
    if a.llama_extra:
        cmd += shlex.split(a.llama_extra)
    r = run(cmd)
    res = {}
    for line in (r.stdout + "\n" + r.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            e = json.loads(line)
            res[f"b{e['pl']}"] = {"tok_s": e["speed"], "ms": e["t"] * 1000, "gen_tok_s": e["pl"] * e["tg"] / e["t"],
                                  "t_pp": e["t_pp"], "t_tg": e["t_tg"], "speed_pp": e["speed_pp"],
                                  "speed_tg": e["speed_tg"], "cpu_s_process": LAST_CPU_S[0]}
            a.llama_info["batched_n_ubatch"] = e["n_ubatch"]
            a.llama_info["batched_flash_attn"] = e["flash_attn"]
    missing = [f"b{p}" for p in pls if f"b{p}" not in res]
    if missing:
        sys.exit(f"llama-batched-bench gave no result for {missing}\n{r.stderr[-2000:]}")
    return res


# ---- main ----

def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each runs every setting once per side")
    ap.add_argument("--llama-reps", type=int, default=1, help="llama-bench -r per round (its per-run samples are kept)")
    ap.add_argument("--cli", default=None, help="our generate-local command (default: build-bench/, build/ or "
                                                "build-test/ weaver-engine generate-local)")
    ap.add_argument("--llama-bench", default=None)
    ap.add_argument("--llama-batched-bench", default=None)
    ap.add_argument("--llama-ubatch", type=int, default=None,
                    help="pass -ub N to both llama.cpp tools (default: theirs, 512); 256 matches our largest pass")
    ap.add_argument("--llama-extra", default="", help="more arguments for both llama.cpp tools, e.g. '--poll 0'")
    ap.add_argument("--only", default=",".join(SETTINGS), help="comma list of " + ",".join(SETTINGS))
    ap.add_argument("--bandwidth", default=None, help="weaver-read-bandwidth (default: next to the weaver-engine used)")
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    a = ap.parse_args()
    a.only = [s for s in a.only.split(",") if s]
    for s in a.only:
        if s not in SETTINGS:
            ap.error(f"unknown setting {s}")
    if a.cli:
        a.cli = a.cli.split()
    else:
        for b in ("build-bench", "build", "build-test"):
            if os.path.exists(os.path.join(ROOT, b, "weaver-engine")):
                a.cli = [os.path.join(ROOT, b, "weaver-engine"), "generate-local"]
                break
        else:
            sys.exit("no weaver-engine build found; pass --cli")
    if not a.bandwidth:
        a.bandwidth = os.path.join(os.path.dirname(a.cli[0]), "bench", "weaver-read-bandwidth")
    if not os.path.exists(a.bandwidth):
        sys.exit(f"{a.bandwidth} not found (cmake --build <dir> --target weaver-read-bandwidth); pass --bandwidth")
    a.bytes_per_token = weight_bytes_per_token(a.model)
    version = "given by path"
    if not (a.llama_bench and a.llama_batched_bench):
        run(["bash", os.path.join(ROOT, "bench", "generate", "build_llamacpp.sh")])  # idempotent
        d = os.environ.get("LLAMACPP_DIR", os.path.join(ROOT, "build-llamacpp"))
        a.llama_bench = a.llama_bench or os.path.join(d, "bin", "llama-bench")
        a.llama_batched_bench = a.llama_batched_bench or os.path.join(d, "bin", "llama-batched-bench")
        with open(os.path.join(d, "VERSION")) as f:
            version = "; ".join(f.read().split("\n")).strip("; ")
    a.llama_info = {}
    for n in (1, 128, 512):  # tokenise once, before any timing
        prompt_of(a.cli, a.model, n)

    runs = {s: {"llama": [], "ours": [], "ratio": [], "llama_extra": [], "ours_extra": []} for s in a.only}
    o = json.loads(run(a.cli + ["--model", a.model, "--prompt", "The", "--max-tokens", "1",
                                "--threads", str(a.threads), "--ctx", "32"]).stdout)
    ours_isa = f"{o['isa']} (matmul kernels {o.get('matmul_isa', o['isa'])})"
    for rnd in range(a.rounds):
        llama_first = rnd % 2 == 0
        # (llama.cpp call, our settings) groups, run back to back in alternating order
        groups = [(lambda: llama_bench(a, 0), [s for s in ("pp128", "pp512", "tg64") if s in a.only]),
                  (lambda: llama_bench(a, 512), [s for s in ("tg64@d512",) if s in a.only]),
                  (lambda: llama_batched(a), [s for s in ("b1", "b16", "b64") if s in a.only])]
        for lf, ss in groups:
            if not ss:
                continue
            tg = [s for s in ss if s.startswith("tg")]
            bw0 = read_bandwidth(a) if tg else None
            if llama_first:
                lr = lf()
                orr = {s: ours(a, s) for s in ss}
            else:
                orr = {s: ours(a, s) for s in ss}
                lr = lf()
            for s in ss:
                runs[s]["llama"].append(lr[s]["tok_s"])
                runs[s]["ours"].append(orr[s]["tok_s"])
                runs[s]["ratio"].append(orr[s]["tok_s"] / lr[s]["tok_s"])
                runs[s]["llama_extra"].append(lr[s])
                runs[s]["ours_extra"].append(orr[s])
            for s in ss:
                runs[s]["load_1min"] = runs[s].get("load_1min", []) + [os.getloadavg()[0]]
            if tg:  # the bandwidth right before and right after this group, averaged
                bw1 = read_bandwidth(a)
                for s in tg:
                    runs[s].setdefault("read_gbps", []).append((bw0 + bw1) / 2)
            if a.json:  # after every group, so an interrupted run keeps what it measured
                with open(a.json, "w") as f:
                    json.dump({"model": os.path.basename(a.model), "threads": a.threads, "rounds_done": rnd,
                               "llamacpp": version, "llama_info": a.llama_info, "runs": runs}, f, indent=1)
            print(f"round {rnd + 1}/{a.rounds}: " + ", ".join(
                f"{s} llama {lr[s]['tok_s']:.1f} ours {orr[s]['tok_s']:.1f}" for s in ss), file=sys.stderr, flush=True)
    try:
        load = os.getloadavg()
    except OSError:
        load = None

    what = {"pp128": "prefill 128 tok, tok/s", "pp512": "prefill 512 tok, tok/s",
            "tg64": "decode 64 after 1 tok, tok/s", "tg64@d512": "decode 64 after 512 tok, tok/s",
            "b1": "1 seq pp128+tg64, total tok/s", "b16": "16 seq pp128+tg64, total tok/s",
            "b64": "64 seq pp128+tg64, total tok/s"}
    print(f"model {os.path.basename(a.model)}, threads {a.threads}, rounds {a.rounds}, "
          f"llama.cpp: {version}; llama-bench n_ubatch {a.llama_info.get('n_ubatch')}, "
          f"flash_attn {a.llama_info.get('flash_attn')}, type_k {a.llama_info.get('type_k')}; "
          f"batched-bench n_ubatch {a.llama_info.get('batched_n_ubatch')}, flash_attn "
          f"{a.llama_info.get('batched_flash_attn')}; ours isa {ours_isa}"
          + (f"; load 1/5 min {load[0]:.1f}/{load[1]:.1f}" if load else ""))
    hdr = f"| {'setting':9} | {'what':31} | {'llama.cpp median':>16} | {'ours median':>11} | {'ours/llama':>10} | llama.cpp runs | ours runs | ratio runs |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for s in a.only:
        r = runs[s]
        print(f"| {s:9} | {what[s]:31} | {_median(r['llama']):16.1f} | {_median(r['ours']):11.1f} | "
              f"{_median(r['ratio']):10.2f} | {', '.join(f'{x:.1f}' for x in r['llama'])} | "
              f"{', '.join(f'{x:.1f}' for x in r['ours'])} | {', '.join(f'{x:.2f}' for x in r['ratio'])} |")
    tg = [s for s in a.only if s.startswith("tg")]
    if tg:
        mb = a.bytes_per_token / 1e6
        print(f"\ndecode against the memory limit: {mb:.1f} MB of weights per token; read bandwidth "
              f"({a.threads} threads, before and after each round's group, averaged) and the limit it gives:")
        for s in tg:
            bw = runs[s]["read_gbps"]
            share = {side: [t / (b * 1e9 / a.bytes_per_token) for t, b in zip(runs[s][side], bw)]
                     for side in ("ours", "llama")}
            runs[s]["share"] = share
            print(f"  {s}: " + ", ".join(f"{b:.1f} GB/s = {b * 1e3 / mb:.0f} tok/s" for b in bw))
            print(f"  {s}: ours {_median(share['ours']):.1%} of the limit (runs "
                  + ", ".join(f"{x:.1%}" for x in share["ours"]) + f"), llama.cpp {_median(share['llama']):.1%} (runs "
                  + ", ".join(f"{x:.1%}" for x in share["llama"]) + ")")
    bs = [s for s in a.only if s.startswith("b")]
    if bs:
        print("\nconcurrent runs, per run: wall s (llama.cpp T_PP + T_TG | ours wall), generated tok/s over "
              "the whole run (N*64 / wall); llama.cpp's own split S_PP / S_TG")
        for s in bs:
            le, oe = runs[s]["llama_extra"], runs[s]["ours_extra"]
            print(f"  {s}: llama T " + ", ".join(f"{e['t_pp']:.2f}+{e['t_tg']:.2f}" for e in le)
                  + " | gen tok/s " + ", ".join(f"{e['gen_tok_s']:.1f}" for e in le)
                  + " | S_PP " + ", ".join(f"{e['speed_pp']:.0f}" for e in le)
                  + " S_TG " + ", ".join(f"{e['speed_tg']:.1f}" for e in le))
            print(f"  {s}: ours  T " + ", ".join(f"{e['ms'] / 1000:.2f}" for e in oe)
                  + " | gen tok/s " + ", ".join(f"{e['gen_tok_s']:.1f}" for e in oe))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": os.path.basename(a.model), "threads": a.threads, "rounds": a.rounds,
                       "llamacpp": version, "llama_info": a.llama_info, "load": load, "runs": runs,
                       "weight_bytes_per_token": a.bytes_per_token}, f, indent=1)


if __name__ == "__main__":
    main()
