"""Harness for integration tests: a real redis-server on a free loopback port (AOF on) and the
real weaver-engine binary, started and stopped per test. Nothing here fakes Redis or the
engine; the test-only backends (test-hash embedder, test-echo generator) are compiled into the
test build only and isolate the queue from model work."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest
import redis

# The daemon's readiness line: logged after the cohort pin passed and every worker runs.
READY = "info  ready: "
SOURCE_DIR = os.environ.get("WEAVER_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.environ.get("WEAVER_BIN", os.path.join(SOURCE_DIR, "build", "weaver-engine"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server in its own directory; restart() keeps the data (AOF)."""

    def __init__(self, workdir):
        self.dir = workdir
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--hz", "50"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if redis.Redis(port=self.port).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: flushes the AOF
            self.proc.wait(timeout=20)
        self.proc = None

    def client(self):
        return redis.Redis(port=self.port)


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="weaver-it-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def redis_server(workdir):
    srv = RedisServer(workdir)
    srv.start()
    yield srv
    srv.stop()


def write_config(path, port, **overrides):
    """A test config: test-hash embedder (dim 8), test-echo decoder, short timeouts.
    overrides: {"queue": {"max_attempts": 2}, ...} merged per group."""
    groups = {
        "redis": {"port": port, "startup_deadline_ms": 10000},
        # The producer-named keys the tests use, allowed as an operator would allow them.
        "queue": {"prefix": "it", "visibility_timeout_ms": 1500, "shutdown_grace_ms": 5000,
                  "reply_patterns": "done other replies not-a-list",
                  "target_patterns": "doc:* fine-hash not-a-hash"},
        "embedder": {"backend": "test-hash", "dim": 8},
        "decoder": {"backend": "test-echo", "max_slots": 4},
    }
    for g, kv in overrides.items():
        groups.setdefault(g, {}).update(kv)

    def lit(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return str(v)

    with open(path, "w") as f:
        for g, kv in groups.items():
            f.write("%s: {\n%s};\n" % (g, "".join("  %s = %s;\n" % (k, lit(v)) for k, v in kv.items())))
    return path


class Engine:
    def __init__(self, config, workers=1, env=None, log=None):
        self.config = config
        self.workers = workers
        self.env = dict(os.environ, **(env or {}))
        self.log_path = log or config + ".log"
        self.proc = None

    def start(self, wait_ready=True, timeout=20):
        """Starts the engine; with wait_ready, waits for the daemon's READY line (logged only after
        the pin passed and the workers run) and raises with the log if it exits first."""
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "--config", self.config, "--workers", str(self.workers)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        if wait_ready:
            deadline = time.time() + timeout
            while time.time() < deadline:
                if READY in self.read_log():
                    return self
                if self.proc.poll() is not None:
                    raise RuntimeError("engine exited early:\n" + self.read_log())
                time.sleep(0.02)
            raise RuntimeError("engine not ready:\n" + self.read_log())
        return self

    def run_to_exit(self, timeout=20):
        """Starts an engine that is expected to stop by itself (refused); returns (exit code, log)."""
        self.start(wait_ready=False)
        rc = self.proc.wait(timeout=timeout)
        return rc, self.read_log()

    def read_log(self):
        return open(self.log_path, "rb").read().decode(errors="replace")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None


@pytest.fixture
def engine_factory(workdir, redis_server):
    engines = []

    def make(workers=1, env=None, name="weaver.conf", **overrides):
        cfg = write_config(os.path.join(workdir, name), redis_server.port, **overrides)
        e = Engine(cfg, workers=workers, env=env)
        engines.append(e)
        return e

    yield make
    for e in engines:
        if e.proc and e.proc.poll() is None:
            e.proc.kill()
            e.proc.wait()


def run_cli(*args, config=None, input=None, timeout=60):
    cmd = [BIN] + list(args) + (["--config", config] if config else [])
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)


# --- the test-hash backend's vectors, re-derived independently ---------------------------------
M64 = (1 << 64) - 1


def _splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def hash_vector(text, dim=8, out_dim=None, normalize=True):
    data = text.encode("utf-8")
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & M64
    v = []
    for _ in range(dim):
        h, z = _splitmix(h)
        v.append(struct.unpack("f", struct.pack("f", (z >> 11) / 9007199254740992.0 * 2.0 - 1.0))[0])
    v = v[: out_dim or dim]
    if normalize:
        n = sum(x * x for x in v) ** 0.5
        v = [x / n for x in v]
    return v


def xadd_jobs(r, kind, jobs, prefix="it", chunk=1000):
    stream = "%s:jobs:%s" % (prefix, kind)
    for i in range(0, len(jobs), chunk):
        p = r.pipeline(transaction=False)
        for j in jobs[i:i + chunk]:
            p.xadd(stream, {"job": j if isinstance(j, (bytes, str)) else json.dumps(j)})
        p.execute()


def wait_for(pred, timeout=60, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out waiting for " + what)
