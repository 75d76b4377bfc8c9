"""Observability as an operator sees it: a real Prometheus server scraping the engine's /metrics
while jobs run, the exposition checked with prometheus_client's parser, /healthz and /readyz
through start-up, a Redis outage and a stop, a slow scraper that must not slow the workers, and
JSON logs that never carry a payload."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import SOURCE_DIR, free_port, wait_for, xadd_jobs

MARKER = "PAYLOAD-MARKER-7f3a"


def get(port, path, timeout=5):
    """(status, body, headers) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def scrape(port):
    status, body, headers = get(port, "/metrics")
    assert status == 200
    return body, headers


def families(port):
    return {f.name: f for f in text_string_to_metric_families(scrape(port)[0])}


def value(fams, family, **labels):
    """Sum of the samples of `family` (prometheus_client's family name) matching labels."""
    total = 0.0
    for s in fams[family].samples:
        if s.name.endswith(("_created",)):
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def metrics_engine(engine_factory, workers=1, env=None, **overrides):
    port = free_port()
    overrides.setdefault("metrics", {})["listen"] = "127.0.0.1:%d" % port
    overrides["metrics"].setdefault("sample_interval_ms", 200)
    eng = engine_factory(workers=workers, env=env, **overrides)
    eng.metrics_port = port
    return eng


def results_by_kind_status(r):
    counts = {}
    for key in r.scan_iter(match="it:result:*", count=1000):
        kind, status = r.hmget(key, "kind", "status")
        k = (kind.decode(), status.decode())
        counts[k] = counts.get(k, 0) + 1
    return counts


# --- Prometheus itself ---------------------------------------------------------------------------

class Prometheus:
    """A real prometheus server (Debian package `prometheus`) scraping one target every second."""

    def __init__(self, workdir, target_port):
        self.dir = tempfile.mkdtemp(prefix="prom-", dir=workdir)
        self.port = free_port()
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: weaver\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % target_port)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", "--config.file=" + self.config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, timeout=60, interval=0.2, what="prometheus ready")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("prometheus exited:\n" + open(self.log.name, errors="replace").read())
        try:
            return get(self.port, "/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def query(self, expr):
        status, body, _ = get(self.port, "/api/v1/query?query=" + urllib.parse.quote(expr))
        assert status == 200, body
        out = json.loads(body)
        assert out["status"] == "success", out
        return out["data"]["result"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_factory(workdir):
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed: run ops/setup.sh (Debian package prometheus)")
    started = []

    def make(target_port):
        p = Prometheus(workdir, target_port)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def test_prometheus_scraping_the_engine_counts_exactly_the_results_written(redis_server, engine_factory,
                                                                           prometheus_factory):
    r = redis_server.client()
    eng = metrics_engine(engine_factory, workers=2).start()
    prom = prometheus_factory(eng.metrics_port)
    wait_for(lambda: [s for s in prom.query('up{job="weaver"}') if s["value"][1] == "1"], timeout=30,
             interval=0.25, what="Prometheus' first scrape of the engine")
    n_ok, n_bad, n_gen = 3000, 40, 60
    jobs = [{"id": "e%d" % i, "texts": ["text %d" % i, "more %d" % i]} for i in range(n_ok)]
    jobs += ['{"id": "bad%d", "text": ' % i for i in range(n_bad)]           # not JSON: error results
    gens = [{"id": "g%d" % i, "prompt": "prompt number %d" % i, "max_tokens": 3} for i in range(n_gen)]
    # Enqueued in waves so Prometheus scrapes while jobs run.
    for wave in range(4):
        xadd_jobs(r, "embed", jobs[wave::4])
        xadd_jobs(r, "generate", gens[wave::4])
        time.sleep(1.2)
    total = n_ok + n_bad + n_gen
    wait_for(lambda: sum(results_by_kind_status(r).values()) == total, timeout=60, what="every result")
    written = results_by_kind_status(r)
    assert written == {("embed", "ok"): n_ok, ("embed", "error"): n_bad, ("generate", "ok"): n_gen}
    done_at = time.time()
    # Wait for a scrape taken after the last result was written.
    wait_for(lambda: [s for s in prom.query("timestamp(weaver_ready)") if float(s["value"][1]) > done_at + 0.2],
             timeout=30, interval=0.25, what="a scrape after the last result")
    # Samples that kept rising during the run prove the scrapes happened while jobs ran.
    rising = prom.query("changes(weaver_jobs_finished_total{kind=\"embed\",status=\"ok\"}[5m])")
    assert rising and float(rising[0]["value"][1]) >= 2, rising

    got = {}
    for s in prom.query("weaver_jobs_finished_total"):
        v = int(float(s["value"][1]))
        if v:
            got[(s["metric"]["kind"], s["metric"]["status"])] = v
    assert got == written
    dead = prom.query("sum(weaver_dead_letters_total)")
    assert int(float(dead[0]["value"][1])) == r.xlen("it:dead") == n_bad
    texts = prom.query("weaver_embedded_texts_total")
    assert int(float(texts[0]["value"][1])) == 2 * n_ok
    e2e = prom.query("weaver_job_end_to_end_seconds_count")
    assert {s["metric"]["kind"]: int(float(s["value"][1])) for s in e2e} == {"embed": n_ok + n_bad,
                                                                             "generate": n_gen}
    gen_tokens = prom.query("weaver_generated_tokens_total")
    assert int(float(gen_tokens[0]["value"][1])) == n_gen * 3
    depth = prom.query("weaver_queue_length")
    assert {s["metric"]["kind"]: float(s["value"][1]) for s in depth} == {"embed": 0.0, "generate": 0.0}
    assert float(prom.query("weaver_queue_dead_letters")[0]["value"][1]) == n_bad

    # Every query of the shipped Grafana dashboard is valid PromQL and finds its series.
    dash = json.load(open(os.path.join(SOURCE_DIR, "ops", "grafana", "weaver-engine.json")))
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    for e in exprs:
        got = prom.query(e.replace("$instance", ".*").replace("$__rate_interval", "1m"))
        assert got, "dashboard query finds nothing: " + e
    assert eng.stop() == 0


# --- the exposition ------------------------------------------------------------------------------

ALLOWED_LABELS = {
    "kind": {"embed", "generate"},
    "status": {"ok", "error", "dead_letter"},
    "worker": None,  # checked against --workers below
    "le": None,
}
INFO_LABELS = {"version", "backends", "devices", "embedder_backend", "embedder_model", "decoder_backend",
               "decoder_model", "cohort"}


def series_of(text):
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_exposition_parses_and_follows_prometheus_conventions(redis_server, engine_factory):
    r = redis_server.client()
    eng = metrics_engine(engine_factory, workers=3).start()
    # Payload text and ids that must never become a label.
    xadd_jobs(r, "embed", [{"id": "%s-e%d" % (MARKER, i), "texts": [MARKER + " one", "two"]} for i in range(10)])
    xadd_jobs(r, "generate", [{"id": "%s-g%d" % (MARKER, i), "prompt": MARKER} for i in range(5)])
    wait_for(lambda: len(list(r.scan_iter(match="it:result:*"))) == 15, what="results")
    text, headers = scrape(eng.metrics_port)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert MARKER not in text
    before = series_of(text)

    # The raw text: every sample belongs to a declared family; counters and only counters end in
    # _total (prometheus_client's parser would add a missing _total, so this is checked here).
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    assert set(types) == helps
    for name, typ in types.items():
        assert re.fullmatch(r"weaver_[a-z][a-z0-9_]*", name), name
        assert name.endswith("_total") == (typ == "counter"), (name, typ)
    for sample in before:
        name = sample.split("{")[0]
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert types.get(name) in ("counter", "gauge") or types.get(base) == "histogram", sample

    fams = list(text_string_to_metric_families(text))
    names = {f.name for f in fams}
    for f in fams:
        assert f.name.startswith("weaver_"), f.name
        assert f.documentation, "%s has no HELP" % f.name
        assert f.type in ("counter", "gauge", "histogram"), (f.name, f.type)
        # Base units only: seconds, never milli- or microseconds.
        assert not re.search(r"_(ms|msec|milliseconds|us|microseconds|minutes|hours)(_|$)", f.name), f.name
        for s in f.samples:
            if f.type == "counter":
                assert s.name == f.name + "_total", s.name
            for k, v in s.labels.items():
                if f.name == "weaver_build_info":
                    assert k in INFO_LABELS, k
                    continue
                assert k in ALLOWED_LABELS, (f.name, k)
                if k == "worker":
                    assert v in {"0", "1", "2"}, v
                elif ALLOWED_LABELS[k] is not None:
                    assert v in ALLOWED_LABELS[k], (f.name, k, v)
        if f.type == "histogram":
            assert "seconds" in f.name or f.name.startswith("weaver_embed_batch_"), f.name
            by_series = {}
            for s in f.samples:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                by_series.setdefault(key, {"buckets": []})
                if s.name.endswith("_bucket"):
                    by_series[key]["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    by_series[key]["count"] = s.value
                elif s.name.endswith("_sum"):
                    by_series[key]["sum"] = s.value
            for key, h in by_series.items():
                les = [le for le, _ in h["buckets"]]
                counts = [c for _, c in h["buckets"]]
                assert les == sorted(les) and les[-1] == float("inf"), (f.name, key)
                assert counts == sorted(counts), (f.name, key, "buckets must be cumulative")
                assert counts[-1] == h["count"], (f.name, key)
                assert h["sum"] >= 0
        if "_seconds" in f.name and f.type != "histogram":
            assert f.name.endswith(("_seconds", "_seconds_total")), f.name
    for required in ("weaver_jobs_finished", "weaver_job_queue_wait_seconds", "weaver_job_compute_seconds",
                     "weaver_job_end_to_end_seconds", "weaver_embed_batch_texts", "weaver_embed_batch_padded_tokens",
                     "weaver_embed_batch_fill_ratio", "weaver_embedded_tokens", "weaver_prompt_tokens",
                     "weaver_generated_tokens", "weaver_decoder_running_sequences",
                     "weaver_decoder_waiting_sequences", "weaver_decoder_kv_pages_used", "weaver_queue_length",
                     "weaver_queue_pending", "weaver_queue_dead_letters", "weaver_reclaimed",
                     "weaver_redeliveries", "weaver_duplicates_acknowledged", "weaver_redis_reconnects",
                     "weaver_remote_embedder_retries", "weaver_remote_embedder_failures",
                     "weaver_worker_busy_seconds", "weaver_build_info"):
        assert required in names, required
    info = [s for f in fams if f.name == "weaver_build_info" for s in f.samples][0]
    assert info.value == 1
    assert info.labels["embedder_model"] == "test-hash" and info.labels["decoder_model"] == "test-echo"
    assert info.labels["cohort"] == "default" and info.labels["version"]
    assert "cpu" in info.labels["devices"].split(",")

    # Bounded: five hundred more jobs (new ids, new texts, errors, duplicates) add no series.
    xadd_jobs(r, "embed", [{"id": "x%d" % i, "text": "t%d" % i} for i in range(500)] + ["oops"] * 5)
    wait_for(lambda: r.xlen("it:jobs:embed") == 0, what="drained")
    xadd_jobs(r, "embed", [{"id": "x1", "text": "again"}])  # a duplicate of a finished job
    wait_for(lambda: value(families(eng.metrics_port), "weaver_duplicates_acknowledged", kind="embed") == 1,
             what="the duplicate counted")
    after_text = scrape(eng.metrics_port)[0]
    assert series_of(after_text) == before
    fams2 = families(eng.metrics_port)
    assert value(fams2, "weaver_jobs_finished", kind="embed", status="ok") == 510
    assert value(fams2, "weaver_jobs_finished", kind="embed", status="error") == 5
    assert eng.stop() == 0


# --- health and readiness ------------------------------------------------------------------------

def test_readyz_follows_the_pin_gate_a_redis_outage_and_the_stop(redis_server, engine_factory):
    r = redis_server.client()
    # Every embed call (the start-up probe included) takes 1.5 s: the pin gate is slow.
    eng = metrics_engine(engine_factory, env={"WEAVER_TEST_HASH_DELAY_MS": "1500"},
                         queue={"shutdown_grace_ms": 10000})
    eng.start(wait_ready=False)
    port = eng.metrics_port
    wait_for(lambda: _status(port, "/healthz") == 200, timeout=10, what="/healthz")
    status, body, _ = get(port, "/readyz")
    assert "ready: " not in eng.read_log(), "the probe should still be running"
    assert status == 503 and "pin" in body, body
    wait_for(lambda: "ready: " in eng.read_log(), timeout=20, what="ready line")
    wait_for(lambda: _status(port, "/readyz") == 200, timeout=5, what="/readyz 200")

    redis_server.stop()
    wait_for(lambda: _status(port, "/readyz") == 503, timeout=10, what="/readyz 503 with Redis down")
    assert "Redis" in get(port, "/readyz")[1]
    assert _status(port, "/healthz") == 200  # alive all the same
    assert _status(port, "/metrics") == 200
    time.sleep(1.0)
    assert _status(port, "/readyz") == 503
    redis_server.start()
    wait_for(lambda: _status(port, "/readyz") == 200, timeout=20, what="/readyz 200 after Redis is back")
    fams = families(port)
    assert value(fams, "weaver_redis_reconnects") >= 1
    assert value(fams, "weaver_redis_up") == 1

    # Stopping: a job in hand takes 1.5 s; during the drain the engine is alive but not ready.
    xadd_jobs(r, "embed", [{"id": "slow", "text": "slow job"}])
    wait_for(lambda: value(families(port), "weaver_queue_pending", kind="embed") == 1, timeout=10,
             what="the job in hand")
    eng.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in eng.read_log(), timeout=5, what="stop line")
    status, body, _ = get(port, "/readyz")
    assert status == 503 and "stopping" in body, body
    assert _status(port, "/healthz") == 200
    assert eng.proc.wait(timeout=20) == 0
    assert r.hget("it:result:slow", "status") == b"ok"


def _status(port, path):
    try:
        return get(port, path, timeout=2)[0]
    except OSError:
        return None


def test_a_bad_listen_address_is_a_config_error_and_a_busy_port_exits_71(redis_server, engine_factory, workdir):
    eng = engine_factory(metrics={"listen": "localhost:9464"})
    rc, log = eng.run_to_exit()
    assert rc == 78 and "metrics.listen" in log, log
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        busy = s.getsockname()[1]
        eng = engine_factory(name="busy.conf", metrics={"listen": "127.0.0.1:%d" % busy})
        rc, log = eng.run_to_exit()
    assert rc == 71 and "cannot serve metrics" in log, log


# --- a slow scraper ------------------------------------------------------------------------------

def _drain_rate(r, n, tag):
    """Jobs/s for n single-text embed jobs added at once to a ready engine."""
    jobs = [{"id": "%s%d" % (tag, i), "text": "text %d" % i} for i in range(n)]
    t0 = time.perf_counter()
    xadd_jobs(r, "embed", jobs, chunk=2000)
    wait_for(lambda: r.xlen("it:jobs:embed") == 0, timeout=120, interval=0.005, what="drained")
    return n / (time.perf_counter() - t0)


class SlowScrapers:
    """Holds many connections to the metrics port: half send an unfinished request and wait, half
    ask for /metrics and read the answer one byte every 50 ms."""

    def __init__(self, port, n=80):
        self.port, self.n = port, n
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        self.bytes_read = 0

    def _run(self, i):
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                    if i % 2:
                        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
                        self.stop.wait(30)
                    else:
                        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                        while not self.stop.is_set():
                            b = s.recv(1)
                            if not b:
                                break
                            self.bytes_read += 1
                            self.stop.wait(0.05)
            except OSError:
                self.stop.wait(0.1)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)


def test_a_slow_scraper_does_not_slow_the_workers(redis_server, engine_factory):
    """Stated bound: with 80 connections held open by slow or stuck scrapers, the engine drains
    jobs at no less than half its rate without them (the median of two runs each, interleaved;
    a 2-core machine shared with other work is noisy). A worker that waited on the HTTP thread
    would stall outright, far below that."""
    r = redis_server.client()
    eng = metrics_engine(engine_factory, workers=2).start()
    n = 20000
    _drain_rate(r, 2000, "warm")
    plain, slow, got = [], [], []
    for rnd in range(2):
        plain.append(_drain_rate(r, n, "p%d-" % rnd))
        with SlowScrapers(eng.metrics_port) as sc:
            time.sleep(0.5)  # every connection open and stuck
            slow.append(_drain_rate(r, n, "s%d-" % rnd))
        got.append(sc.bytes_read)
    plain_rate, slow_rate = sorted(plain)[-1], sorted(slow)[-1]
    print("drain rate without scrapers %s, with slow scrapers %s jobs/s" % (
        [round(x) for x in plain], [round(x) for x in slow]))
    assert slow_rate >= 0.5 * plain_rate, (plain, slow)
    assert all(got), "the slow readers got nothing: was /metrics served at all? %s" % got
    # The endpoint is still usable once the slow clients are gone.
    assert _status(eng.metrics_port, "/metrics") == 200
    assert eng.stop() == 0


# --- JSON logs -----------------------------------------------------------------------------------

def test_json_logs_are_one_valid_object_per_line_and_never_hold_payload_text(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory(workers=2, log={"format": "json", "level": "debug"},
                         queue={"max_attempts": 1})
    eng.start(wait_ready=False)
    wait_for(lambda: '"msg":"ready: ' in eng.read_log(), timeout=20, what="ready line")
    m = MARKER
    xadd_jobs(r, "embed", [
        {"id": "ok1", "texts": [m + " first", m + "\nsecond"]},
        {"id": "long", "text": m * 400, "truncate": False},            # error: too long
        {"id": "badkey", "text": m, "reply_to": "it:result:" + m},     # error: refused reply_to
        {"id": "badtype", "text": m, "normalize": m},                  # error: wrong type
        '{"id": "broken", "text": "%s"' % m,                           # error: not JSON
        {"id": "weird", "text": m, "we\u0001ird\"f\u00e9\n": 1},        # a field name needing escapes
    ])
    xadd_jobs(r, "generate", [
        {"id": "g1", "prompt": m, "max_tokens": 4},
        {"id": "g2", "messages": [{"role": "user", "content": m}], "max_tokens": 4},
        {"id": "g3", "prompt": m, "max_tokens": -1},                   # error: out of range
    ])
    wait_for(lambda: r.xlen("it:jobs:embed") == 0 and r.xlen("it:jobs:generate") == 0 and
             len(list(r.scan_iter(match="it:result:*"))) >= 9, what="every job finished")
    xadd_jobs(r, "embed", [{"id": "ok1", "texts": [m]}])                  # a duplicate (a debug line)
    wait_for(lambda: r.xlen("it:jobs:embed") == 0, what="the duplicate acknowledged")
    assert eng.stop() == 0
    raw = open(eng.log_path, "rb").read()
    assert m.encode() not in raw
    lines = raw.decode("utf-8").splitlines()
    assert len(lines) > 8
    objs = [json.loads(line) for line in lines]  # every line is one JSON object
    for o in objs:
        assert isinstance(o, dict)
        assert {"ts", "level", "msg"} <= set(o), o
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["ts"]), o["ts"]
        assert o["level"] in ("debug", "info", "warn", "error")
    errors = [o for o in objs if o.get("job_id") in ("long", "badkey", "badtype", "weird", "g3")]
    assert len(errors) == 5, errors
    for o in errors:
        assert o["level"] == "warn" and o["worker"] in (0, 1) and o["kind"] in ("embed", "generate"), o
    weird = [o for o in errors if o["job_id"] == "weird"][0]
    assert "unknown field 'we\u0001ird\"f\u00e9\n'" in weird["msg"], weird  # escaped, then decoded intact
    assert any(o.get("job_id") == "ok1" and o["level"] == "debug" for o in objs), "duplicate line"
    assert any(o["msg"].startswith("stopped after") for o in objs)


# --- the remote embedder's counters --------------------------------------------------------------

def test_remote_embedder_retries_and_failures_are_counted(redis_server, engine_factory):
    from remote_service import RemoteService
    svc = RemoteService(os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")).start()
    try:
        r = redis_server.client()
        eng = metrics_engine(engine_factory, embedder={"backend": "remote", "url": svc.url, "timeout_ms": 5000},
                             queue={"visibility_timeout_ms": 60000})
        eng.start(timeout=60)
        port = eng.metrics_port
        svc.fail_next(2, 503)
        xadd_jobs(r, "embed", [{"id": "a", "text": "retry me"}])
        wait_for(lambda: r.exists("it:result:a"), timeout=60, what="result a")
        assert r.hget("it:result:a", "status") == b"ok"
        fams = families(port)
        assert value(fams, "weaver_remote_embedder_retries") == 2
        assert value(fams, "weaver_remote_embedder_failures") == 0
        svc.fail_next(100, 503)  # more than the retries allow: the request gives up
        xadd_jobs(r, "embed", [{"id": "b", "text": "give up"}])
        wait_for(lambda: r.exists("it:result:b"), timeout=60, what="result b")
        assert r.hget("it:result:b", "status") == b"error"
        fams = families(port)
        assert value(fams, "weaver_remote_embedder_failures") == 1
        assert value(fams, "weaver_remote_embedder_retries") >= 2 + 5
        assert eng.stop() == 0
    finally:
        svc.stop()


def test_two_entries_of_one_job_id_in_one_read_count_one_job_and_one_duplicate(redis_server, engine_factory):
    """The finish script writes the first and only acknowledges the second (it finds the result the
    first just wrote); the counters must say so, not count the job finished twice."""
    r = redis_server.client()
    xadd_jobs(r, "embed", [{"id": "twin", "text": "a"}, {"id": "twin", "text": "a"}])  # before the engine reads
    eng = metrics_engine(engine_factory).start()
    wait_for(lambda: r.xlen("it:jobs:embed") == 0, what="both entries acknowledged")
    wait_for(lambda: value(families(eng.metrics_port), "weaver_duplicates_acknowledged", kind="embed") == 1,
             what="the duplicate counted")
    assert value(families(eng.metrics_port), "weaver_jobs_finished", kind="embed", status="ok") == 1
    assert eng.stop() == 0
