"""The `remote` embedder backend against a real HTTP embedding service on loopback
(remote_service.py: the independent numpy reference behind the TEI and the OpenAI API):
vectors equal the reference, requests respect the service's batch limit, a bearer token is
sent, 429/5xx are retried, a service killed mid-run loses no job, a service that stays down
turns jobs into error results while the engine keeps running."""
import json
import os
import signal
import subprocess
import sys
import time

from remote_service import RemoteService  # before numpy: it pins the BLAS thread count

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import READY, SOURCE_DIR, free_port, wait_for, xadd_jobs  # noqa: E402

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")
SERVICE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "remote_service.py")

assert os.path.isfile(os.path.join(MODEL, "model.safetensors")), \
    "models/all-MiniLM-L6-v2 is not unpacked (ops/setup.sh installs it)"

TEXTS = ["The cat sat on the mat.", "Redis streams carry jobs.", "a", "Ünïcödé \"quoted\" \\ text\twith tabs",
         "Embeddings map text to vectors.", "weaver-engine", "Another sentence, somewhat longer than the others, "
         "so that batches hold texts of different lengths.", "x y z"]


@pytest.fixture
def service():
    svc = RemoteService(MODEL, max_batch=3).start()
    yield svc
    svc.stop()


def start(engine, timeout=60):
    return engine.start(timeout=timeout)


def remote_engine(engine_factory, url, api="tei", name="remote.conf", workers=1, **embedder):
    return engine_factory(name=name, workers=workers,
                          embedder=dict({"backend": "remote", "url": url, "api": api, "timeout_ms": 5000}, **embedder),
                          queue={"visibility_timeout_ms": 60000})


def result(r, job_id):
    return {k.decode(): v for k, v in r.hgetall("it:result:" + job_id).items()}


def cos(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_tei_vectors_equal_the_reference_within_the_service_batch_limit(redis_server, engine_factory, service):
    r = redis_server.client()
    eng = start(remote_engine(engine_factory, service.url))
    assert "model all-MiniLM-L6-v2, dim 384, max 256 tokens" in eng.read_log()
    xadd_jobs(r, "embed", [{"id": "norm", "texts": TEXTS, "reply_to": "done"},
                           {"id": "raw", "texts": TEXTS[:3], "normalize": False, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 2, timeout=120, what="results")
    norm, raw = result(r, "norm"), result(r, "raw")
    assert norm["status"] == b"ok" and norm["model"] == b"all-MiniLM-L6-v2" and norm["dim"] == b"384"
    ref = service.model.ref
    for text, vec in zip(TEXTS, json.loads(norm["embeddings"])):
        want = ref.embed(text, normalize=True)
        assert cos(vec, want) >= 0.99999, text
        assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    for text, vec in zip(TEXTS[:3], json.loads(raw["embeddings"])):
        want = ref.embed(text, normalize=False)  # the engine asked TEI for the raw pooled vector
        assert np.allclose(vec, want, rtol=1e-4, atol=1e-5), text
    sizes = [q["n"] for q in service.embed_requests()]
    assert max(sizes) <= 3 and sum(s for s in sizes) >= len(TEXTS) + 3
    assert eng.stop() == 0


def test_openai_api_serves_the_same_vectors(redis_server, engine_factory, service):
    r = redis_server.client()
    eng = start(remote_engine(engine_factory, service.url, api="openai"))
    xadd_jobs(r, "embed", [{"id": "o", "texts": TEXTS, "encoding": "f32", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=120, what="result")
    res = result(r, "o")
    assert res["status"] == b"ok", res
    vecs = np.frombuffer(res["embeddings"], dtype="<f4").reshape(len(TEXTS), 384)
    for text, vec in zip(TEXTS, vecs):  # the service answers out of order; "index" puts them back
        assert cos(vec, service.model.ref.embed(text)) >= 0.99999, text
    assert all(q["path"] == "/v1/embeddings" for q in service.embed_requests())
    assert eng.stop() == 0


def test_bearer_token_is_read_from_the_file_and_never_logged(redis_server, engine_factory, workdir):
    token_file = os.path.join(workdir, "token")
    with open(token_file, "w") as f:
        f.write("s3cret-token-value\n")
    svc = RemoteService(MODEL, token="s3cret-token-value").start()
    try:
        r = redis_server.client()
        eng = start(remote_engine(engine_factory, svc.url, token_file=token_file))
        xadd_jobs(r, "embed", [{"id": "t", "text": "hello", "reply_to": "done"}])
        wait_for(lambda: r.llen("done") == 1, timeout=60, what="result")
        assert result(r, "t")["status"] == b"ok"
        assert eng.stop() == 0
        with open(token_file, "w") as f:
            f.write("wrong-token\n")
        bad = remote_engine(engine_factory, svc.url, name="bad.conf", token_file=token_file)
        bad.start(wait_ready=False)
        assert bad.proc.wait(timeout=30) == 66
        log = bad.read_log()
        assert "HTTP 401" in log and "wrong-token" not in log and "s3cret" not in log
    finally:
        svc.stop()


def test_429_and_503_are_retried_until_the_job_succeeds(redis_server, engine_factory, service):
    r = redis_server.client()
    eng = start(remote_engine(engine_factory, service.url))
    service.fail_next(2, 503)
    xadd_jobs(r, "embed", [{"id": "a", "text": "retry me", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="result")
    service.fail_next(2, 429)
    xadd_jobs(r, "embed", [{"id": "b", "text": "and me", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 2, timeout=60, what="result")
    assert result(r, "a")["status"] == b"ok" and result(r, "b")["status"] == b"ok"
    statuses = [q["status"] for q in service.embed_requests()]
    assert statuses.count(503) == 2 and statuses.count(429) == 2
    assert eng.stop() == 0


def test_a_text_too_long_without_truncate_is_an_error_result_and_spares_the_others(redis_server, engine_factory,
                                                                                  service):
    r = redis_server.client()
    eng = start(remote_engine(engine_factory, service.url))
    long_text = "word " * 600
    xadd_jobs(r, "embed", [{"id": "long", "text": long_text, "truncate": False, "reply_to": "done"},
                           {"id": "short", "text": "short", "truncate": False, "reply_to": "done"},
                           {"id": "cut", "text": long_text, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 3, timeout=120, what="results")
    bad = result(r, "long")
    assert bad["status"] == b"error" and b"tokens" in bad["error"], bad
    assert result(r, "short")["status"] == b"ok"
    cut = result(r, "cut")  # truncate defaults to true: the service truncates to 256 tokens
    assert cut["status"] == b"ok"
    assert cos(json.loads(cut["embeddings"])[0], service.model.ref.embed(long_text)) >= 0.99999
    assert eng.stop() == 0


def test_unreachable_service_at_start_up_exits_66(redis_server, engine_factory):
    eng = remote_engine(engine_factory, "http://127.0.0.1:%d" % free_port())
    eng.start(wait_ready=False)
    assert eng.proc.wait(timeout=60) == 66
    log = eng.read_log()
    assert "GET http://127.0.0.1:" in log and "/info" in log and "gave up after" in log


class ServiceProcess:
    """The service as a process of its own, so a test can SIGKILL it and start it again."""

    def __init__(self, port, log):
        self.port, self.log, self.proc = port, log, None

    def start(self):
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, SERVICE, "--snapshot", MODEL, "--port", str(self.port),
                                      "--max-batch", "2"], stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: b"listening on" in open(self.log, "rb").read().split(b"KILLED")[-1], timeout=60,
                 what="service start")
        return self

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        with open(self.log, "ab") as f:
            f.write(b"KILLED\n")


def count_results(r, ids, status=None):
    n = 0
    for i in ids:
        s = r.hget("it:result:" + i, "status")
        n += s is not None and (status is None or s == status)
    return n


def test_service_killed_mid_run_and_restarted_loses_no_job(redis_server, engine_factory, workdir):
    r = redis_server.client()
    port = free_port()
    svc = ServiceProcess(port, os.path.join(workdir, "svc.log")).start()
    try:
        eng = start(remote_engine(engine_factory, "http://127.0.0.1:%d" % port, workers=2))
        ids = ["k%d" % i for i in range(60)]
        xadd_jobs(r, "embed", [{"id": i, "texts": ["text number %s" % i, "second %s" % i]} for i in ids])
        wait_for(lambda: count_results(r, ids) >= 6, timeout=120, what="first results")
        svc.kill()
        time.sleep(0.3)
        svc.start()  # back within the backend's retry window
        wait_for(lambda: count_results(r, ids) == len(ids), timeout=300, what="every result")
        assert count_results(r, ids, b"ok") == len(ids)  # retried, not failed
        assert r.xlen("it:dead") == 0
        assert eng.proc.poll() is None and eng.stop() == 0
    finally:
        svc.kill()


def test_service_that_stays_down_turns_jobs_into_error_results_then_recovers(redis_server, engine_factory, workdir):
    r = redis_server.client()
    port = free_port()
    svc = ServiceProcess(port, os.path.join(workdir, "svc.log")).start()
    try:
        eng = start(remote_engine(engine_factory, "http://127.0.0.1:%d" % port))
        svc.kill()
        ids = ["d%d" % i for i in range(5)]
        xadd_jobs(r, "embed", [{"id": i, "text": "while the service is down " + i} for i in ids])
        wait_for(lambda: count_results(r, ids) == len(ids), timeout=180, what="error results")
        for i in ids:
            res = result(r, i)
            assert res["status"] == b"error" and b"remote embedder" in res["error"], res
        assert eng.proc.poll() is None  # never a crash
        svc.start()
        xadd_jobs(r, "embed", [{"id": "after", "text": "the service is back", "reply_to": "done"}])
        wait_for(lambda: r.llen("done") == 1, timeout=120, what="result after recovery")
        assert result(r, "after")["status"] == b"ok"
        assert eng.stop() == 0
    finally:
        svc.kill()
