#!/usr/bin/env python3
"""Aggregate generation throughput THROUGH THE QUEUE: a private redis-server, one engine
(`--workers 1`, decoder.max_slots = N), N generate jobs XADDed at once, and the wall time until
every result is in. Reports completion tokens/s (sum of usage.completion_tokens / wall) for each
N, and single-stream (N = 1) for the ratio. Medians of --repeat runs.

    python3 bench/generate/bench_queue_generate.py [--bin build/weaver-engine] [--repeat 3]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import redis

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROMPTS = ["Once upon a time", "The meaning of life is", "def fibonacci(n):", "1, 2, 3, 4,",
           "In a distant galaxy", "The recipe for bread:", "Dear diary, today", "Q: Why is the sky blue?\nA:"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(binary, model, n, gen, threads, tmp):
    port = free_port()
    rs = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    eng = None
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        conf = os.path.join(tmp, "gen.conf")
        with open(conf, "w") as f:
            f.write('redis: { port = %d; };\nqueue: { prefix = "bg"; reply_patterns = "done"; };\n'
                    'embedder: { backend = "native"; snapshot = "%s"; threads = 1; };\n'
                    'decoder: { model = "%s"; max_slots = %d; threads = %d; kv_budget_tokens = %d; };\n'
                    % (port, os.path.join(ROOT, "models", "all-MiniLM-L6-v2"), model, max(n, 1), threads,
                       max(n, 1) * 512))
        log = open(os.path.join(tmp, "engine.log"), "wb")
        eng = subprocess.Popen([binary, "--config", conf, "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while b"info  ready: " not in open(os.path.join(tmp, "engine.log"), "rb").read():
            if eng.poll() is not None or time.time() > deadline:
                raise RuntimeError(open(os.path.join(tmp, "engine.log")).read())
            time.sleep(0.05)
        # Fixed-length completions: no stop, EOS still possible, so count the tokens actually made.
        p = r.pipeline(transaction=False)
        for i in range(n):
            job = {"id": "g%d" % i, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": gen,
                   "temperature": 0.8, "seed": i, "reply_to": "done"}
            p.xadd("bg:jobs:generate", {"job": json.dumps(job)})
        t0 = time.perf_counter()
        p.execute()
        got = 0
        while got < n:
            if r.blpop("done", timeout=120) is None:
                raise RuntimeError("timed out")
            got += 1
        wall = time.perf_counter() - t0
        tokens = 0
        for i in range(n):
            res = r.hgetall("bg:result:g%d" % i)
            assert res[b"status"] == b"ok", res
            tokens += json.loads(res[b"usage"])["completion_tokens"]
        return tokens / wall
    finally:
        if eng:
            eng.terminate()
            eng.wait(timeout=30)
        rs.terminate()
        rs.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "weaver-engine"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    levels = [int(x) for x in a.concurrency.split(",")]
    runs = {n: [] for n in levels}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            for n in levels:  # interleaved, so load changes hit every level alike
                tps = run_once(a.bin, a.model, n, a.gen, a.threads, tmp)
                runs[n].append(tps)
                print("round %d: %2d concurrent jobs: %.1f completion tok/s" % (rep + 1, n, tps), flush=True)
    med = {n: statistics.median(v) for n, v in runs.items()}
    print("\nthrough the queue, --workers 1, %d threads, %d tokens per job, medians of %d" % (a.threads, a.gen, a.repeat))
    for n in levels:
        ratio = " (%.2fx single-stream)" % (med[n] / med[1]) if 1 in med and n != 1 else ""
        print("  %2d concurrent: %7.1f tok/s%s   runs: %s" % (n, med[n], ratio, ", ".join("%.1f" % x for x in runs[n])))
    if 1 in med and 16 in med:
        print("target: 16 concurrent >= 4x single-stream: %s" % ("PASS" if med[16] >= 4 * med[1] else "FAIL"))


if __name__ == "__main__":
    sys.exit(main())
