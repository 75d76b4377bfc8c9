#!/usr/bin/env python3
"""bench/queue: end-to-end jobs/s through Redis, weaver-engine against RQ and Celery.

Starts its own redis-server on a free loopback port in a temporary folder (no persistence by
default; --aof for appendonly + appendfsync everysec), then measures, against that one server:

  weaver-engine (test-hash embedder, no model work), --workers 1 and 2:
    prefill  N single-text embed jobs are XADDed first (pipelined, not timed); the clock starts
             when the engine process is started and stops when the embed stream is empty (the
             engine XACKs and XDELs an entry in the same Lua call that writes its result, so
             XLEN == 0 means every job has a result). Engine start-up is inside the time.
    concurrent  the engine is started and ready first; the clock starts when a producer process
             begins its pipelined XADDs, and stops when the producer is done and XLEN == 0.
  RQ with a no-op task: its default Worker (forks per job) and SimpleWorker (no fork); jobs are
    enqueued first, the clock runs from starting `rq worker --burst` until the finished-job
    registry holds N jobs (ZCARD).
  Celery with a no-op task (redis broker on db 0, redis result backend on db 1): solo pool, and
    prefork with 2 processes; clock from starting `celery worker` until db 1 holds N results.

--metrics on|both runs weaver with metrics.listen set (and this script scraping /metrics once a
second during the run): `both` adds a "metrics" row after each weaver row and prints the ratio,
the cost of metrics.

Every measurement is repeated (default 3 times, interleaved across contenders) and the table
shows the median. Completion is detected by polling one O(1) command (XLEN, ZCARD or DBSIZE)
every 2 ms, so the poller adds no per-job work. The whole run is bounded by --budget seconds
and every process it started is stopped on the way out, also on errors and on Ctrl-C.

Exit status: 0 all targets met, 1 a target missed, 2 the benchmark could not run.
"""
import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import redis  # noqa: E402

TARGET_JOBS_PER_S = 50_000
TARGET_RATIO_RQ = 10.0
POLL_S = 0.002
PREFIX = "bench"
EMBED_STREAM = f"{PREFIX}:jobs:embed"

_children = []      # every Popen this script started (each leads its own process group)
_tmpdir = None
_clk = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------------

def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    _children.append(p)
    return p


def stop(p, sig=signal.SIGTERM, grace=10.0):
    """Stops a child and whatever it forked (its process group): sig, then SIGKILL."""
    if p is None:
        return
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    if group_pids(p.pid):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if p in _children:
        _children.remove(p)


def stop_all():
    for p in list(_children):
        stop(p, signal.SIGKILL, grace=2.0)


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def proc_stat(pid):
    """(pgrp, utime+stime, cutime+cstime) in clock ticks, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[2]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def group_pids(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[0] == pgid:
                pids.append(int(d))
    return pids


def cpu_s(pid, group=False):
    """CPU seconds of a process (with its reaped children), or of its whole process group."""
    if pid is None:
        return 0.0
    total = 0
    pids = group_pids(pid) if group else [pid]
    for q in pids:
        st = proc_stat(q)
        if st:
            total += st[1] + st[2]
    return total / _clk


def machine_busy_s():
    """CPU seconds all cores of this machine have spent busy since boot (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / _clk


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- redis-server --------------------------------------------------------------------------------

class RedisServer:
    def __init__(self, exe, workdir, aof):
        self.exe, self.workdir, self.aof = exe, workdir, aof
        self.proc = None
        self.port = None

    def start(self):
        for attempt in range(5):
            self.port = free_port()
            args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.workdir,
                    "--save", "", "--daemonize", "no", "--logfile", os.path.join(self.workdir, "redis.log"),
                    "--maxmemory", "0", "--protected-mode", "yes"]
            if self.aof:
                args += ["--appendonly", "yes", "--appendfsync", "everysec"]
            else:
                args += ["--appendonly", "no"]
            self.proc = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = redis.Redis(port=self.port)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if r.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            stop(self.proc)
            log(f"redis-server did not start on port {self.port} (attempt {attempt + 1})")
        raise RuntimeError("cannot start redis-server; see redis.log in " + self.workdir)

    def client(self, db=0):
        return redis.Redis(port=self.port, db=db)

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                self.client().shutdown(nosave=True)
            except redis.RedisError:
                pass
        stop(self.proc, grace=5.0)

    def cpu(self):
        return cpu_s(self.proc.pid)


# --- one measurement ---------------------------------------------------------------------------

class Measure:
    def __init__(self, name, n):
        self.name, self.n = name, n
        self.seconds = None     # start to every job done
        self.first_s = None     # start to the first result seen (start-up, roughly)
        self.redis_cpu = None   # % of one core during the timed window
        self.worker_cpu = None
        self.rest_cpu = None    # everything else on the machine (other users, the poller, a producer)
        self.done = 0
        self.error = None
        self.note = ""

    def cpu_window(self, redis_s, worker_s, busy_s):
        """Fills the CPU columns from CPU seconds spent in the timed window."""
        self.redis_cpu = 100 * redis_s / self.seconds
        self.worker_cpu = 100 * worker_s / self.seconds
        self.rest_cpu = max(0.0, 100 * (busy_s - redis_s - worker_s) / self.seconds)

    @property
    def rate(self):
        return self.n / self.seconds if self.seconds and not self.error else None


def poll_until(m, t0, count_done, alive, deadline, extra_done=lambda: True):
    """Polls count_done() every POLL_S until it reaches m.n; returns the finish time or None."""
    while True:
        now = time.perf_counter()
        done = count_done()
        if done > 0 and m.first_s is None:
            m.first_s = now - t0
        m.done = done
        if done >= m.n and extra_done():
            return now
        if not alive():
            m.error = f"worker exited early ({done}/{m.n} done)"
            return None
        if time.monotonic() > deadline:
            m.error = f"timed out ({done}/{m.n} done)"
            return None
        time.sleep(POLL_S)


def weaver_payloads(n, tag):
    return [json.dumps({"id": f"{tag}{i}", "text": f"benchmark text number {i}"}, separators=(",", ":"))
            for i in range(n)]


def xadd_all(r, payloads, batch=2000):
    pipe = r.pipeline(transaction=False)
    for i, p in enumerate(payloads, 1):
        pipe.xadd(EMBED_STREAM, {"job": p})
        if i % batch == 0:
            pipe.execute()
    pipe.execute()


def _producer(port, n, ready, go, elapsed):
    payloads = weaver_payloads(n, "c")
    r = redis.Redis(port=port)
    r.ping()
    ready.set()
    go.wait()
    t0 = time.perf_counter()
    xadd_all(r, payloads, batch=1000)
    elapsed.value = time.perf_counter() - t0


def wait_for_line(path, text, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, errors="replace") as f:
            if text in f.read():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


class Scraper:
    """GETs /metrics once a second while a metrics run lasts, as Prometheus would."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.ok = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=1) as resp:
                    resp.read()
                    self.ok += 1
            except OSError:
                pass

    def stop(self):
        self.done.set()
        self.thread.join(3)


def run_weaver(ctx, workers, n, concurrent, deadline, metrics=False, suffix="", baseline=False):
    name = f"{'before' if baseline else 'weaver'} --workers {workers}" + (" concurrent" if concurrent else "") + suffix
    m = Measure(name, n)
    srv = ctx.redis
    r = srv.client()
    r.flushall()
    logpath = os.path.join(ctx.tmp, f"engine-w{workers}{'-c' if concurrent else ''}{'-m' if metrics else ''}"
                                    f"{'-b' if baseline else ''}.log")
    cmd = [ctx.baseline if baseline else ctx.engine, "--config", ctx.metrics_conf if metrics else ctx.weaver_conf, "--workers", str(workers)]
    eng = prod = None
    scraper = Scraper(ctx.metrics_port) if metrics else None
    try:
        if not concurrent:
            xadd_all(r, weaver_payloads(n, "p"))
            if r.xlen(EMBED_STREAM) != n:
                m.error = "prefill incomplete"
                return m
            c0, b0 = srv.cpu(), machine_busy_s()
            t0 = time.perf_counter()
            with open(logpath, "w") as lf:
                eng = spawn(cmd, stdout=lf, stderr=lf)
            t1 = poll_until(m, t0, lambda: n - r.xlen(EMBED_STREAM), lambda: eng.poll() is None, deadline)
        else:
            with open(logpath, "w") as lf:
                eng = spawn(cmd, stdout=lf, stderr=lf)
            if not wait_for_line(logpath, "ready:", eng, 30):
                m.error = "engine never became ready (see " + logpath + ")"
                return m
            mpc = mp.get_context("fork")
            ready, go, elapsed = mpc.Event(), mpc.Event(), mpc.Value("d", 0.0)
            prod = mpc.Process(target=_producer, args=(srv.port, n, ready, go, elapsed), daemon=True)
            prod.start()
            if not ready.wait(60):
                m.error = "producer did not start"
                return m
            e0 = cpu_s(eng.pid)
            c0, b0 = srv.cpu(), machine_busy_s()
            t0 = time.perf_counter()
            go.set()
            # Done = the producer has added all n and the stream is empty again.
            t1 = poll_until(m, t0, lambda: 0 if prod.is_alive() else n - r.xlen(EMBED_STREAM),
                            lambda: eng.poll() is None, deadline)
            prod.join(5)
            if prod.exitcode not in (0, None) and not m.error:
                m.error = f"producer failed (exit {prod.exitcode})"
            m.note = f"producer alone {elapsed.value:.2f}s"
            m.first_s = None
        if t1 is None:
            return m
        m.seconds = t1 - t0
        m.cpu_window(srv.cpu() - c0, cpu_s(eng.pid) - (e0 if concurrent else 0.0), machine_busy_s() - b0)
        stop(eng)
        eng = None
        # Verify: n result hashes, no dead letters, a sample result is ok.
        results = sum(1 for _ in r.scan_iter(match=f"{PREFIX}:result:*", count=5000))
        dead = r.xlen(f"{PREFIX}:dead") if r.exists(f"{PREFIX}:dead") else 0
        tag = "c" if concurrent else "p"
        sample = r.hget(f"{PREFIX}:result:{tag}{n // 2}", "status")
        if results != n or dead or sample != b"ok":
            m.error = f"verification failed: {results} results, {dead} dead letters, sample status {sample!r}"
        return m
    finally:
        if scraper:
            scraper.stop()
            if m.rate and scraper.ok == 0 and m.seconds > 2:
                m.error = "metrics run: /metrics never answered"
        stop(eng)
        if prod is not None and prod.is_alive():
            prod.kill()
            prod.join(5)


def run_rq(ctx, worker_class, n, deadline):
    from rq import Queue
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    import bench_tasks

    short = worker_class.rsplit(".", 1)[-1]
    m = Measure(f"rq {short}", n)
    srv = ctx.redis
    r = srv.client()
    r.flushall()
    q = Queue("bench", connection=r)
    for start in range(0, n, 1000):
        pipe = r.pipeline()
        q.enqueue_many([Queue.prepare_data(bench_tasks.noop, result_ttl=3600)
                        for _ in range(start, min(n, start + 1000))], pipeline=pipe)
        pipe.execute()
    if q.count != n:
        m.error = f"enqueue incomplete ({q.count}/{n})"
        return m
    fin = FinishedJobRegistry("bench", connection=r).key
    failed = FailedJobRegistry("bench", connection=r).key
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--quiet", "--disable-job-desc-logging",
           "-w", worker_class, "-u", srv.url(0), "bench"]
    w = None
    try:
        c0, b0 = srv.cpu(), machine_busy_s()
        t0 = time.perf_counter()
        with open(os.path.join(ctx.tmp, f"rq-{short}.log"), "w") as lf:
            w = spawn(cmd, cwd=HERE, env=env, stdout=lf, stderr=lf)

        def alive():
            if r.zcard(failed):
                return False
            return w.poll() is None or r.zcard(fin) >= n

        t1 = poll_until(m, t0, lambda: r.zcard(fin), alive, deadline)
        if t1 is None:
            if r.zcard(failed):
                m.error = f"{r.zcard(failed)} jobs failed (see rq-{short}.log)"
            return m
        m.seconds = t1 - t0
        m.cpu_window(srv.cpu() - c0, cpu_s(w.pid, group=True), machine_busy_s() - b0)
        return m
    finally:
        stop(w)


def _celery_enqueue(n, url0, url1):
    os.environ["BENCH_CELERY_BROKER"] = url0
    os.environ["BENCH_CELERY_BACKEND"] = url1
    import bench_tasks

    app = bench_tasks.celery_app()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("bench.noop", producer=producer)


def run_celery(ctx, pool, conc, n, deadline):
    m = Measure(f"celery {pool} -c {conc}", n)
    srv = ctx.redis
    r = srv.client()
    r.flushall()
    r1 = srv.client(1)
    # Enqueue from a short-lived process: a client that keeps result subscriptions open would
    # add PUBLISH fan-out work to every result while the worker is timed.
    p = mp.get_context("fork").Process(target=_celery_enqueue, args=(n, srv.url(0), srv.url(1)))
    p.start()
    p.join(120)
    if p.exitcode != 0:
        if p.is_alive():
            p.kill()
            p.join(5)
        m.error = f"enqueue failed (exit {p.exitcode})"
        return m
    queued = r.llen("celery")
    if queued != n:
        m.error = f"enqueue incomplete ({queued}/{n})"
        return m
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""),
               BENCH_CELERY_BROKER=srv.url(0), BENCH_CELERY_BACKEND=srv.url(1))
    cmd = [sys.executable, "-m", "celery", "-A", "bench_tasks", "worker", "--pool", pool, "--concurrency",
           str(conc), "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat",
           "-Q", "celery", "-n", f"bench-{pool}@localhost"]
    w = None
    try:
        c0, b0 = srv.cpu(), machine_busy_s()
        t0 = time.perf_counter()
        with open(os.path.join(ctx.tmp, f"celery-{pool}.log"), "w") as lf:
            w = spawn(cmd, cwd=HERE, env=env, stdout=lf, stderr=lf)
        t1 = poll_until(m, t0, lambda: r1.dbsize(), lambda: w.poll() is None, deadline)
        if t1 is None:
            return m
        m.seconds = t1 - t0
        m.cpu_window(srv.cpu() - c0, cpu_s(w.pid, group=True), machine_busy_s() - b0)
        return m
    finally:
        stop(w, signal.SIGTERM, grace=10.0)


# --- the report --------------------------------------------------------------------------------

def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs):
    ok = [m for m in runs if m.rate]
    return {
        "n": runs[0].n,
        "runs": len(runs),
        "ok": len(ok),
        "seconds": median([m.seconds for m in ok]),
        "rate": median([m.rate for m in ok]),
        "min": min((m.rate for m in ok), default=None),
        "max": max((m.rate for m in ok), default=None),
        "first_s": median([m.first_s for m in ok]),
        "redis_cpu": median([m.redis_cpu for m in ok]),
        "worker_cpu": median([m.worker_cpu for m in ok]),
        "rest_cpu": median([m.rest_cpu for m in ok]),
        "errors": [m.error for m in runs if m.error],
        "notes": [m.note for m in ok if m.note],
    }


def fmt(x, spec):
    return format(x, spec) if x is not None else "-"


def report_twins(title, pairs, runs):
    """Each (a, b) row pair: the ratio b / a of the medians, and the median of the per-round
    ratios (the rounds are interleaved, so a pair shares the machine's state)."""
    if not pairs:
        return
    print(title)
    for off, on in pairs:
        a = [m.rate for m in runs.get(off, [])]
        b = [m.rate for m in runs.get(on, [])]
        if not a or not b or None in a or None in b:
            print(f"  {off[len('weaver '):]:<24} not measured")
            continue
        med = median(b) / median(a)
        rounds = [y / x for x, y in zip(a, b)]
        print(f"  {off[len('weaver '):]:<24} medians {median(a):>9,.0f} -> {median(b):>9,.0f} jobs/s = {med:.3f}; "
              f"per-round ratios {', '.join(f'{x:.3f}' for x in rounds)} (median {median(rounds):.3f})")
    print()


def report_metrics_cost(order, runs):
    report_twins("metrics cost (metrics on / off, jobs/s; target: within 3%):",
                 [(n, n + " metrics") for n in order if n.startswith("weaver ") and n + " metrics" in order], runs)
    report_twins("this build / the --baseline build (before -> weaver, jobs/s):",
                 [("before" + n[len("weaver"):], n) for n in order
                  if n.startswith("weaver ") and "before" + n[len("weaver"):] in order], runs)


def report(order, results, args, redis_mode, elapsed, runs=None):
    ref = results.get("weaver --workers 1", {}).get("rate")
    head = (f"{'contender':<38} {'N':>7} {'seconds':>8} {'jobs/s':>9} {'min..max jobs/s':>17} "
            f"{'weaver/x':>9} {'1st res s':>9} {'redis CPU':>9} {'worker CPU':>10} {'rest CPU':>8}")
    print()
    print(f"bench/queue: {redis_mode}; median of {args.repeats} runs each; machine has {os.cpu_count()} CPUs; "
          f"{elapsed:.0f} s in all; metrics {args.metrics}")
    print("jobs/s = N / seconds from starting the worker process (prefilled queue; 'concurrent': from the first")
    print("XADD of a producer running alongside an already-ready engine) until every job has its result.")
    print("weaver/x = weaver --workers 1 jobs/s divided by this row's jobs/s. 1st res s = seconds until the first")
    print("result (start-up). CPU = % of one core in the timed window: redis-server, the contender's processes, and")
    print("the rest of the machine (other users, this script's poller, the concurrent producer).")
    la = os.getloadavg()
    print(f"load average at the end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    print()
    print(head)
    print("-" * len(head))
    for name in order:
        s = results.get(name)
        if not s:
            continue
        ratio = ref / s["rate"] if ref and s["rate"] else None
        mm = f"{fmt(s['min'], ',.0f')}..{fmt(s['max'], ',.0f')}" if s["rate"] else "-"
        okn = "" if s["ok"] == s["runs"] else f"  ({s['ok']}/{s['runs']} runs ok)"
        print(f"{name:<38} {s['n']:>7,} {fmt(s['seconds'], '.3f'):>8} {fmt(s['rate'], ',.0f'):>9} {mm:>17} "
              f"{fmt(ratio, '.1f'):>9} {fmt(s['first_s'], '.3f'):>9} {fmt(s['redis_cpu'], '.0f'):>8}% "
              f"{fmt(s['worker_cpu'], '.0f'):>9}% {fmt(s['rest_cpu'], '.0f'):>7}%{okn}")
    for name in order:
        s = results.get(name)
        if s and s["errors"]:
            print(f"  {name}: {'; '.join(sorted(set(s['errors'])))}")
        if s and s["notes"]:
            print(f"  {name}: {s['notes'][len(s['notes']) // 2]} (middle run)")
    print()
    report_metrics_cost(order, runs or {})
    passed = True
    print("targets:")
    one_proc = [(n, results[n]["rate"]) for n in order
                if n.startswith("weaver --workers ") and "concurrent" not in n and n in results]
    if not one_proc or not any(r for _, r in one_proc):
        print(f"  one engine process >= {TARGET_JOBS_PER_S:,} jobs/s: FAIL (not measured)")
        passed = False
    else:
        best = max(r or 0 for _, r in one_proc)
        ok = best >= TARGET_JOBS_PER_S
        passed &= ok
        print(f"  one engine process >= {TARGET_JOBS_PER_S:,} jobs/s (prefilled queue): {'PASS' if ok else 'FAIL'}")
        for n, r in one_proc:
            print(f"    {n[len('weaver '):]:<14} {fmt(r, ',.0f'):>9} jobs/s  "
                  f"{'PASS' if r and r >= TARGET_JOBS_PER_S else 'FAIL'}")
    rq_rows = [(n, results[n]["rate"]) for n in order if n.startswith("rq ") and results.get(n, {}).get("rate")]
    if args.no_rq:
        print(f"  weaver >= {TARGET_RATIO_RQ:.0f}x RQ: skipped (--no-rq)")
    elif ref is None or not rq_rows:
        print(f"  weaver >= {TARGET_RATIO_RQ:.0f}x RQ: FAIL (not measured)")
        passed = False
    else:
        best_name, best = max(rq_rows, key=lambda x: x[1])
        ok = ref >= TARGET_RATIO_RQ * best
        passed &= ok
        others = ", ".join(f"{ref / r:.0f}x {n}" for n, r in rq_rows if n != best_name)
        print(f"  weaver --workers 1 >= {TARGET_RATIO_RQ:.0f}x RQ (against the faster RQ worker, {best_name}): "
              f"{ref / best:.1f}x  {'PASS' if ok else 'FAIL'}" + (f"  ({others})" if others else ""))
    return passed


# --- main --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default=os.environ.get("WEAVER_ENGINE", os.path.join(REPO, "build-bench", "weaver-engine")),
                    help="weaver-engine binary built with -DWEAVER_TEST_BACKENDS=ON (default: build-bench/weaver-engine)")
    ap.add_argument("--baseline", help="a second weaver-engine binary (an earlier build): each weaver row gets a "
                    "'before' twin run with it in the same rounds, and the ratio is printed")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    ap.add_argument("--aof", action="store_true", help="appendonly yes, appendfsync everysec (default: no persistence)")
    ap.add_argument("--n", type=int, default=200_000, help="jobs per weaver measurement (default 200000)")
    ap.add_argument("--n-rq", type=int, default=5_000, help="jobs per RQ SimpleWorker / Celery measurement")
    ap.add_argument("--n-rq-fork", type=int, default=1_000, help="jobs per RQ forking-Worker measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="weaver --workers values (default 1,2)")
    ap.add_argument("--no-concurrent", action="store_true", help="skip the concurrent-producer variant")
    ap.add_argument("--no-rq", action="store_true")
    ap.add_argument("--no-celery", action="store_true")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run (default 540)")
    ap.add_argument("--run-timeout", type=float, default=90, help="seconds one measurement may take")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp folder (logs, redis.log)")
    ap.add_argument("--json", help="also write every run's figures to this file")
    ap.add_argument("--metrics", choices=("off", "on", "both"), default="off",
                    help="weaver with metrics.listen set and /metrics scraped every second: on, off (default), "
                         "or both (a 'metrics' row after each weaver row, and their ratio)")
    args = ap.parse_args()

    t_start = time.monotonic()
    budget_end = t_start + args.budget
    if not (os.path.isfile(args.engine) and os.access(args.engine, os.X_OK)):
        log(f"no weaver-engine binary at {args.engine}; build it with\n"
            f"  cmake -S {REPO} -B {REPO}/build-bench -DWEAVER_TEST_BACKENDS=ON -DCMAKE_BUILD_TYPE=Release\n"
            f"  cmake --build {REPO}/build-bench --target weaver-engine -j2")
        return 2
    if not shutil.which(args.redis_server) and not os.path.isfile(args.redis_server):
        log(f"no redis-server at {args.redis_server}")
        return 2
    want_rq, want_celery = not args.no_rq, not args.no_celery
    if want_rq:
        try:
            import rq  # noqa: F401
        except ImportError:
            log("rq is not installed (pip install -r bench/queue/requirements.txt); skipping RQ")
            want_rq = False
    if want_celery:
        try:
            import celery  # noqa: F401
        except ImportError:
            log("celery is not installed (pip install -r bench/queue/requirements.txt); skipping Celery")
            want_celery = False

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.engine = os.path.abspath(args.engine)
    ctx.baseline = os.path.abspath(args.baseline) if args.baseline else None
    ctx.tmp = tempfile.mkdtemp(prefix="weaver-bench-queue-")
    ctx.redis = RedisServer(args.redis_server, ctx.tmp, args.aof)
    redis_mode = ("redis-server with AOF (appendfsync everysec)" if args.aof
                  else "redis-server without persistence")
    rc = 2
    try:
        ctx.redis.start()
        ctx.weaver_conf = os.path.join(ctx.tmp, "weaver.conf")
        with open(ctx.weaver_conf, "w") as f:
            f.write(f"""redis: {{ port = {ctx.redis.port}; }};
queue: {{ prefix = "{PREFIX}"; read_count = 512; }};
embedder: {{ backend = "test-hash"; dim = 8; }};
decoder: {{ enabled = false; }};
batch: {{ max_texts = 512; lookahead = 1024; }};
""")
        ctx.metrics_port = free_port()
        ctx.metrics_conf = os.path.join(ctx.tmp, "weaver-metrics.conf")
        with open(ctx.weaver_conf) as src, open(ctx.metrics_conf, "w") as f:
            f.write(src.read() + f'metrics: {{ listen = "127.0.0.1:{ctx.metrics_port}"; }};\n')
        chk = subprocess.run([ctx.engine, "check-config", "--config",
                              ctx.metrics_conf if args.metrics != "off" else ctx.weaver_conf],
                             capture_output=True, text=True)
        if chk.returncode != 0:
            log("the benchmark config is invalid for this engine build (built with -DWEAVER_TEST_BACKENDS=ON?):\n"
                + chk.stderr)
            return 2
        la = os.getloadavg()
        log(f"redis-server on 127.0.0.1:{ctx.redis.port} ({redis_mode}); temp folder {ctx.tmp}; "
            f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")

        plan = []   # (name, estimated seconds, thunk)
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
        variants = {"off": [(False, "")], "on": [(True, "")], "both": [(False, ""), (True, " metrics")]}[args.metrics]
        for conc in (False, True) if not args.no_concurrent else (False,):
            for w in workers:
                for met, suf in variants:
                    for base in (False, True) if ctx.baseline else (False,):
                        plan.append((f"{'before' if base else 'weaver'} --workers {w}{' concurrent' if conc else ''}{suf}",
                                     args.n / 20_000 + 2 + conc,
                                     lambda dl, w=w, met=met, suf=suf, conc=conc, base=base:
                                     run_weaver(ctx, w, args.n, conc, dl, met, suf, base)))
        if want_rq:
            plan.append(("rq SimpleWorker", args.n_rq / 500 + 2,
                         lambda dl: run_rq(ctx, "rq.worker.SimpleWorker", args.n_rq, dl)))
            plan.append(("rq Worker", args.n_rq_fork / 100 + 2,
                         lambda dl: run_rq(ctx, "rq.worker.Worker", args.n_rq_fork, dl)))
        if want_celery:
            plan.append(("celery solo -c 1", args.n_rq / 500 + 4,
                         lambda dl: run_celery(ctx, "solo", 1, args.n_rq, dl)))
            plan.append(("celery prefork -c 2", args.n_rq / 500 + 4,
                         lambda dl: run_celery(ctx, "prefork", 2, args.n_rq, dl)))

        runs = {name: [] for name, _, _ in plan}
        for rep in range(args.repeats):
            # A metrics or baseline twin runs after its row in even rounds and before it in odd
            # ones, so neither always inherits the other's after-effects.
            order = list(plan)
            if rep % 2 == 1:
                i = 0
                while i < len(order) - 1:
                    a, b = order[i][0], order[i + 1][0]
                    if b == a + " metrics" or (a.startswith("weaver ") and b == "before" + a[len("weaver"):]):
                        order[i], order[i + 1] = order[i + 1], order[i]
                        i += 1
                    i += 1
            for name, est, thunk in order:
                left = budget_end - time.monotonic()
                if left < min(est, args.run_timeout) + 5:
                    log(f"[{rep + 1}/{args.repeats}] {name}: skipped, {left:.0f} s of the budget left")
                    continue
                dl = time.monotonic() + min(args.run_timeout, left - 5)
                m = thunk(dl)
                runs[name].append(m)
                if m.rate:
                    log(f"[{rep + 1}/{args.repeats}] {name}: {m.n:,} jobs in {m.seconds:.3f} s = {m.rate:,.0f} jobs/s"
                        f" (CPU: redis {m.redis_cpu:.0f}%, worker {m.worker_cpu:.0f}%, rest {m.rest_cpu:.0f}%)"
                        f"{'; ' + m.note if m.note else ''}")
                else:
                    log(f"[{rep + 1}/{args.repeats}] {name}: FAILED: {m.error}")

        results = {name: summarize(rs) for name, rs in runs.items() if rs}
        passed = report([name for name, _, _ in plan], results, args, redis_mode, time.monotonic() - t_start, runs)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"redis": redis_mode, "repeats": args.repeats,
                           "summary": results,
                           "runs": {k: [vars(m) | {"rate": m.rate} for m in v] for k, v in runs.items()}},
                          f, indent=2)
        rc = 0 if passed else 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping everything")
        rc = 2
    except Exception as e:  # noqa: BLE001 - report, clean up, exit 2
        log(f"benchmark failed: {type(e).__name__}: {e}")
        rc = 2
    finally:
        try:
            ctx.redis.stop()
        finally:
            stop_all()
            if args.keep_tmp or rc == 2:
                log(f"logs kept in {ctx.tmp}")
            else:
                shutil.rmtree(ctx.tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
