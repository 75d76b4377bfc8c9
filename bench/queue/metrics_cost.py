#!/usr/bin/env python3
"""bench/queue/metrics_cost.py: what metrics cost the engine, in instructions, metrics off vs on.

Wall-clock jobs/s on a shared machine swings by +-30% from run to run (see run.py's rest CPU
column), far more than the few percent metrics may cost. This counts instead: the engine runs
under valgrind's callgrind (instructions executed, independent of other load) on the same
prefilled queue as run.py (N single-text embed jobs, test-hash embedder, --workers 1), once with
metrics off and once with metrics.listen set and /metrics scraped every second, and prints the
instructions of the worker thread and of the whole process for each, and their ratio.

Under callgrind the engine runs about 30x slower, so its HTTP and sampler threads get about 30x
more scrapes and samples per job than in real time: the whole-process ratio overstates their
share; the worker-thread ratio is the cost on the hot path.

  python3 bench/queue/metrics_cost.py [--engine build-bench/weaver-engine] [--n 50000]

Needs valgrind (callgrind_annotate) and redis-server. Not a test: prints figures, exits 0, or 2
when it could not run.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inclusive(annotated, pattern):
    m = re.search(r"^\s*([\d,]+) \([ \d.]+%\)\s+" + pattern, annotated, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def measure(engine, n, metrics, tmp):
    d = os.path.join(tmp, "on" if metrics else "off")
    os.makedirs(d)
    rport, mport = free_port(), free_port()
    red = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL)
    eng = None
    stop = threading.Event()
    scrapes = [0]
    try:
        r = redis.Redis(port=rport)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        conf = os.path.join(d, "weaver.conf")
        with open(conf, "w") as f:
            f.write(f'redis: {{ port = {rport}; }};\nqueue: {{ prefix = "bench"; read_count = 512; }};\n'
                    'embedder: { backend = "test-hash"; dim = 8; };\ndecoder: { enabled = false; };\n'
                    'batch: { max_texts = 512; lookahead = 1024; };\n')
            if metrics:
                f.write(f'metrics: {{ listen = "127.0.0.1:{mport}"; }};\n')
        p = r.pipeline(transaction=False)
        for i in range(n):
            p.xadd("bench:jobs:embed", {"job": json.dumps({"id": f"p{i}", "text": f"benchmark text number {i}"})})
            if i % 2000 == 1999:
                p.execute()
        p.execute()
        out = os.path.join(d, "callgrind.out")
        eng = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, engine,
                                "--config", conf], stdout=open(os.path.join(d, "engine.log"), "w"),
                               stderr=subprocess.STDOUT)

        def scrape():
            while not stop.wait(1.0):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=2) as resp:
                        resp.read()
                        scrapes[0] += 1
                except OSError:
                    pass

        if metrics:
            threading.Thread(target=scrape, daemon=True).start()
        deadline = time.time() + 900
        while r.xlen("bench:jobs:embed") > 0:
            if eng.poll() is not None or time.time() > deadline:
                raise RuntimeError("the engine stopped or timed out; see " + d)
            time.sleep(0.05)
        stop.set()
        eng.send_signal(signal.SIGTERM)
        eng.wait(300)
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", out], capture_output=True, text=True).stdout
        # worker_main's file shows as ??? in a build without -g (Release).
        return {"total": inclusive(ann, "PROGRAM TOTALS"), "worker": inclusive(ann, r"\S*:worker_main "),
                "scrapes": scrapes[0]}
    finally:
        stop.set()
        if eng and eng.poll() is None:
            eng.kill()
            eng.wait()
        red.terminate()
        red.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default=os.environ.get("WEAVER_ENGINE", os.path.join(REPO, "build-bench", "weaver-engine")))
    ap.add_argument("--n", type=int, default=50000, help="jobs (default 50000)")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_annotate", "redis-server"):
        if not shutil.which(tool):
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="weaver-metrics-cost-")
    try:
        off = measure(args.engine, args.n, False, tmp)
        on = measure(args.engine, args.n, True, tmp)
    except Exception as e:  # noqa: BLE001 - report and exit 2, keeping the logs
        print(f"metrics_cost: {e} (logs in {tmp})", file=sys.stderr)
        return 2
    print(f"instructions for {args.n:,} single-text embed jobs, --workers 1 (callgrind):")
    for name, key in (("worker thread", "worker"), ("whole process", "total")):
        a, b = off[key], on[key]
        print(f"  {name:<14} off {a:>15,} ({a / args.n:,.0f}/job)   on {b:>15,} ({b / args.n:,.0f}/job)   "
              f"on/off {b / a:.4f}")
    print(f"  (metrics on: /metrics scraped {on['scrapes']} times during the run)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
