"""Benchmark: weaver-engine's native CPU embedder against sentence-transformers (PyTorch CPU) and
ONNX Runtime, on the same all-MiniLM-L6-v2 weights, same texts, same threads, fp32.

    python3 bench/embed/bench_embed.py --bin build/weaver-engine [--threads 2] [--snapshot DIR]
                                       [--scale 1.0] [--repeat 5] [--lengths short,medium,long]
                                       [--json results.json]

Three fixed corpora (short ~16 tokens, medium ~128, long 256), generated deterministically from
the model's vocabulary. Each engine runs in its own process (peak RSS from /usr/bin/time), all
with the same number of threads (torch.set_num_threads, ORT intra_op_num_threads, weaver
--threads). weaver-engine runs `weaver-engine embed` and is timed from its own final progress
line (tokens / tokens-per-second: reading the corpus, tokenizing, encoding and writing the .npy,
after the model is loaded); the peers are timed on encode() only (tokenizing included), after
loading and a warm-up batch. CPU seconds (all threads) are reported beside wall time: on a shared
machine they are the steadier measure of work per token (weaver's: the whole process minus a
one-line run's, so its load is excluded). Rounds are interleaved (weaver, sentence-transformers, onnxruntime,
then again), so a busy moment on a shared machine hits every engine; the table shows each
engine's median over the rounds, and the ratios are the medians of the per-round ratios.
Vectors from all three are checked to agree (cosine >= 0.9999).

Roofline: fma_peak.c (compiled here with cc) measures this machine's fp32 FMA peak with the same
thread count, and each engine's rate is also given in GFLOP/s of encoder work (the model's
linear-layer and attention multiply-adds for the tokens actually present) and as a share of that
peak; the last line says what share the 3x-sentence-transformers target would take."""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
LENGTHS = [("short", 16, 1200), ("medium", 128, 300), ("long", 256, 120)]
BATCH = 32


def make_corpus(snapshot, target, count, seed):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(snapshot, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    vocab = [w for w in open(os.path.join(snapshot, "vocab.txt"), encoding="utf-8").read().split()[2000:15000]
             if w.isalpha()]
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        words = []
        while True:
            words.append(rng.choice(vocab))
            if len(tok.encode(" ".join(words)).ids) >= target:
                break
        texts.append(" ".join(words))
    return texts


def fma_peak(threads, tmp):
    """This machine's fp32 FMA peak in GFLOP/s with `threads` threads, or None without a C compiler."""
    exe = os.path.join(tmp, "fma_peak")
    try:
        subprocess.run(["cc", "-O2", "-pthread", os.path.join(HERE, "fma_peak.c"), "-o", exe], check=True,
                       capture_output=True)
        return float(subprocess.run([exe, str(threads)], check=True, capture_output=True, text=True).stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def encoder_flops(snapshot, lengths):
    """Multiply-add flops of a BERT encoder pass over texts of the given token counts (no padding)."""
    cfg = json.load(open(os.path.join(snapshot, "config.json")))
    h, ff, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return sum(layers * (2 * n * (4 * h * h + 2 * h * ff) + 4 * n * n * h) for n in lengths)


def child_rss_cmd(cmd):
    # /usr/bin/time gives the peak RSS (KiB) and CPU seconds of exactly that child
    return ["/usr/bin/time", "-f", "MAXRSS_KB=%M CPU_S=%U+%S"] + cmd


def parse_rss(err):
    for line in err.splitlines():
        if line.startswith("MAXRSS_KB="):
            return int(line.split()[0].split("=")[1]) / 1024.0
    return float("nan")


def parse_cpu(err):
    for line in err.splitlines():
        if line.startswith("MAXRSS_KB="):
            u, s = line.split()[1].split("=")[1].split("+")
            return float(u) + float(s)
    return float("nan")


def worker(args):
    """Runs one peer engine on one corpus file; prints {"seconds": s, "load_seconds": l}."""
    import numpy as np
    import resource
    texts = [json.loads(l)["text"] for l in open(args.corpus, encoding="utf-8")]

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    t0 = time.perf_counter()
    if args.worker == "st":
        import torch
        torch.set_num_threads(args.threads)
        from sentence_transformers import SentenceTransformer
        m = SentenceTransformer(args.snapshot, device="cpu")
        load = time.perf_counter() - t0
        m.encode(texts[:BATCH], batch_size=BATCH)  # warm-up
        t1, c1 = time.perf_counter(), cpu()
        v = m.encode(texts, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
        secs, cpu_secs = time.perf_counter() - t1, cpu() - c1
    else:
        import onnxruntime as ort
        from tokenizers import Tokenizer
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(os.path.join(args.snapshot, "tokenizer.json"))
        tok.enable_truncation(256)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        load = time.perf_counter() - t0

        def run(batch):
            enc = tok.encode_batch(batch)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            h = sess.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            pooled = (h * m).sum(1) / m.sum(1)
            return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

        run(texts[:BATCH])
        t1, c1 = time.perf_counter(), cpu()
        v = np.concatenate([run(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)])
        secs, cpu_secs = time.perf_counter() - t1, cpu() - c1
    np.save(args.out, v.astype(np.float32))
    print(json.dumps({"seconds": secs, "cpu_seconds": cpu_secs, "load_seconds": load}))


def export_onnx(snapshot, path):
    import torch
    from transformers import AutoModel
    bert = AutoModel.from_pretrained(snapshot).eval()

    class Wrap(torch.nn.Module):  # keyword arguments: BertModel.forward's positional order varies
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(Wrap(bert), (ids, torch.ones_like(ids), torch.zeros_like(ids)), path,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "b", 1: "t"} for n in ["input_ids", "attention_mask", "token_type_ids",
                                                                      "last_hidden_state"]},
                          opset_version=17, dynamo=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "weaver-engine"))
    ap.add_argument("--snapshot", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the corpus sizes")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds per length; medians are "
                    "reported (the machine may be shared)")
    ap.add_argument("--lengths", default="short,medium,long", help="which corpora to run, comma-separated")
    ap.add_argument("--json")
    ap.add_argument("--worker", choices=["st", "ort"])
    ap.add_argument("--corpus")
    ap.add_argument("--out")
    ap.add_argument("--onnx")
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    import numpy as np
    tmp = tempfile.mkdtemp(prefix="weaver-bench-")
    onnx_path = os.path.join(tmp, "model.onnx")
    t0 = time.perf_counter()
    export_onnx(args.snapshot, onnx_path)
    print(f"exported ONNX graph from the same safetensors in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    model_mb = os.path.getsize(os.path.join(args.snapshot, "model.safetensors")) / 2**20

    # weaver start-up cost (load + snapshot hash), measured on a one-line corpus
    one = os.path.join(tmp, "one.txt")
    open(one, "w").write("hello\n")
    t = time.perf_counter()
    p = subprocess.run(child_rss_cmd([args.bin, "embed", "--snapshot", args.snapshot, "--input", one, "--output",
                                      os.path.join(tmp, "one.npy"), "--threads", str(args.threads), "--no-progress"]),
                       check=True, capture_output=True, text=True, env=env)
    startup = time.perf_counter() - t
    startup_cpu = parse_cpu(p.stderr)

    results = []
    wanted = set(args.lengths.split(","))
    if not wanted <= {n for n, _, _ in LENGTHS}:
        sys.exit(f"--lengths: choose from {','.join(n for n, _, _ in LENGTHS)}")
    for name, target, count in LENGTHS:
        if name not in wanted:
            continue
        count = max(BATCH, int(count * args.scale))
        texts = make_corpus(args.snapshot, target, count, seed=target)
        corpus = os.path.join(tmp, f"{name}.jsonl")
        with open(corpus, "w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": i, "text": t}) + "\n")
        from tokenizers import Tokenizer
        tk = Tokenizer.from_file(os.path.join(args.snapshot, "tokenizer.json"))
        tk.no_padding()
        tk.enable_truncation(256)
        lengths = [len(tk.encode(t).ids) for t in texts]
        ntokens = sum(lengths)
        row = {"length": name, "texts": count, "tokens": ntokens, "flops": encoder_flops(args.snapshot, lengths)}
        vecs = {}
        runs = {"weaver": [], "st": [], "ort": []}
        for rep in range(args.repeat):  # engines alternate, so a busy moment hits all of them
            out = os.path.join(tmp, f"w_{name}.npy")
            t = time.perf_counter()
            p = subprocess.run(child_rss_cmd([args.bin, "embed", "--snapshot", args.snapshot, "--input", corpus,
                                              "--output", out, "--threads", str(args.threads), "--no-progress"]),
                               capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t
            if p.returncode != 0:
                sys.exit(f"weaver-engine failed: {p.stderr}")
            # "embed: N rows (100.0%), R rows/s, T tokens/s, ETA 0s (done)": timed after the load
            m = re.search(r"rows \(100\.0%\), [0-9.]+ rows/s, ([0-9.]+) tokens/s.*\(done\)", p.stderr)
            secs = ntokens / float(m.group(1)) if m and float(m.group(1)) > 0 else wall - startup
            runs["weaver"].append({"seconds": secs, "seconds_with_load": wall, "rss_mb": parse_rss(p.stderr),
                                   "cpu_seconds": parse_cpu(p.stderr) - startup_cpu})
            vecs["weaver"] = np.load(out)
            for peer in ("st", "ort"):
                o = os.path.join(tmp, f"{peer}_{name}.npy")
                p = subprocess.run(child_rss_cmd([sys.executable, __file__, "--worker", peer, "--corpus", corpus,
                                                  "--out", o, "--snapshot", args.snapshot, "--onnx", onnx_path,
                                                  "--threads", str(args.threads)]),
                                   capture_output=True, text=True, env=env)
                if p.returncode != 0:
                    sys.exit(f"{peer} failed: {p.stderr[-3000:]}")
                r = json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])
                runs[peer].append({"seconds": r["seconds"], "rss_mb": parse_rss(p.stderr), "cpu_seconds": r["cpu_seconds"]})
                vecs[peer] = np.load(o)
            print(f"{name} round {rep + 1}: weaver {runs['weaver'][-1]['seconds']:.2f}s, "
                  f"st {runs['st'][-1]['seconds']:.2f}s, ort {runs['ort'][-1]['seconds']:.2f}s", file=sys.stderr)
        for k, rs in runs.items():
            row[k] = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
            row[k]["rss_mb"] = max(r["rss_mb"] for r in rs)
            row[k]["all_seconds"] = [r["seconds"] for r in rs]
        row["ratio_st"] = statistics.median(s["seconds"] / w["seconds"] for s, w in zip(runs["st"], runs["weaver"]))
        row["ratio_ort"] = statistics.median(o["seconds"] / w["seconds"] for o, w in zip(runs["ort"], runs["weaver"]))
        row["cpu_ratio_st"] = statistics.median(r["cpu_seconds"] for r in runs["st"]) / row["weaver"]["cpu_seconds"]
        row["cpu_ratio_ort"] = statistics.median(r["cpu_seconds"] for r in runs["ort"]) / row["weaver"]["cpu_seconds"]
        for a, b in (("weaver", "st"), ("weaver", "ort"), ("st", "ort")):
            cos = (vecs[a] * vecs[b]).sum(1) / (np.linalg.norm(vecs[a], axis=1) * np.linalg.norm(vecs[b], axis=1))
            row[f"min_cos_{a}_{b}"] = float(cos.min())
            assert cos.min() >= 0.9999, f"{a} and {b} disagree on {name}: min cosine {cos.min()}"
        results.append(row)
        print(f"{name}: done", file=sys.stderr)

    peak = fma_peak(args.threads, tmp)
    load = os.getloadavg()
    print(f"\nall-MiniLM-L6-v2, fp32, {args.threads} threads; model file {model_mb:.0f} MiB; "
          f"weaver start-up (load + snapshot hash) {startup:.2f}s, excluded below; medians of {args.repeat} "
          f"interleaved rounds; load average at the end {load[0]:.1f} on {os.cpu_count()} CPUs")
    if peak:
        print(f"machine fp32 FMA peak with {args.threads} threads (bench/embed/fma_peak.c): {peak:.0f} GFLOP/s")
    hdr = (f"{'length':8} {'engine':22} {'texts/s':>9} {'tokens/s':>10} {'peak RSS':>9} {'CPU s':>7} {'tok/CPU-s':>10}"
           f" {'GFLOP/s':>8} {'of peak':>8}")
    print(hdr)
    print("-" * len(hdr))
    names = {"weaver": "weaver-engine", "st": "sentence-transformers", "ort": "onnxruntime"}
    for r in results:
        for k in ("weaver", "st", "ort"):
            s = r[k]["seconds"]
            c = r[k]["cpu_seconds"]
            gf = r["flops"] / s / 1e9
            share = f"{100 * gf / peak:7.0f}%" if peak else f"{'-':>8}"
            print(f"{r['length']:8} {names[k]:22} {r['texts'] / s:9.1f} {r['tokens'] / s:10.0f} {r[k]['rss_mb']:7.0f}MB"
                  f" {c:7.2f} {r['tokens'] / c:10.0f} {gf:8.0f} {share}")
        print(f"{'':8} ratio (median per round): {r['ratio_st']:.2f}x sentence-transformers, {r['ratio_ort']:.2f}x "
              f"onnxruntime (with weaver load: {r['ort']['seconds'] / r['weaver']['seconds_with_load']:.2f}x); "
              f"min cosine w/st {r['min_cos_weaver_st']:.6f} w/ort {r['min_cos_weaver_ort']:.6f}")
        print(f"{'':8} CPU time ratio (medians): {r['cpu_ratio_st']:.2f}x sentence-transformers, "
              f"{r['cpu_ratio_ort']:.2f}x onnxruntime")
        if peak:
            need = 3 * r["flops"] / r["st"]["seconds"] / 1e9
            print(f"{'':8} 3x sentence-transformers would take {need:.0f} GFLOP/s, {100 * need / peak:.0f}% of the "
                  f"machine's FMA peak")
    if args.json:
        json.dump({"threads": args.threads, "startup_s": startup, "loadavg_end": load, "fma_peak_gflops": peak,
                   "results": results},
                  open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
