"""The `remote` embedder backend against a real HTTP embedding service on loopback
(remote_service.py: the independent numpy reference behind the TEI and the OpenAI API):
vectors equal the reference, requests respect the service's batch limit, a bearer token is
sent, 429/5xx are retried, a service killed mid-run loses no job, a service that stays down
turns jobs into error results while the engine keeps running, and a service whose answer breaks
the protocol (indices, counts, dimensions, non-finite or non-numbers, an oversized body) fails
the texts concerned with a reason, never gives a text another's vector, never writes invalid
JSON, and is not retried."""
import json
import os
import signal
import subprocess
import sys
import time

from remote_service import FAULT_MARKER, RemoteService  # before numpy: it pins the BLAS thread count

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


# --- answers that break the protocol -------------------------------------------------------------

def strict_json(text):
    """json.loads that refuses NaN and Infinity, which Python accepts by default."""
    def refuse(name):
        raise ValueError("not JSON: " + name)
    return json.loads(text, parse_constant=refuse)


def all_results_are_valid_json(r):
    for key in r.scan_iter("it:result:*"):
        res = {k.decode(): v for k, v in r.hgetall(key).items()}
        for field in ("usage", "timings"):
            if field in res:
                strict_json(res[field])
        if res.get("encoding") == b"json":
            vecs = strict_json(res["embeddings"])
            assert len(vecs) == int(res["count"]) and all(len(v) == int(res["dim"]) for v in vecs), key


# (api, fault, what the error says, whether only the broken vector's texts fail)
PROTOCOL_FAULTS = [
    ("tei", "wrong_count", "vectors for", False),
    ("tei", "wrong_dimension", "383 numbers, not the 384", True),
    ("tei", "nan", 'not JSON (at byte', False),
    ("tei", "infinity", 'not JSON (at byte', False),
    ("tei", "1e999", "element 0 is inf, not a finite float", True),
    ("tei", "float_overflow", "element 0 is 1e+39, not a finite float", True),
    ("tei", "string", "element 0 is a string, not a number", True),
    ("tei", "oversized", "is larger than", False),
    ("tei", "oversized_unannounced", "is larger than", False),
    ("openai", "duplicate_index", "appears twice", False),
    ("openai", "index_out_of_range", "outside [0,", False),
    ("openai", "missing_index", 'no integer "index"', False),
    ("openai", "wrong_count", "vectors for", False),
    ("openai", "string", "element 0 is a string, not a number", True),
]


@pytest.mark.parametrize("api,fault,reason,per_text", PROTOCOL_FAULTS,
                         ids=["%s-%s" % (a, f) for a, f, _, _ in PROTOCOL_FAULTS])
def test_an_answer_that_breaks_the_protocol_fails_its_texts_and_no_other(redis_server, engine_factory, api, fault,
                                                                         reason, per_text):
    svc = RemoteService(MODEL, max_batch=8).start()
    try:
        svc.fault = fault
        r = redis_server.client()
        eng = start(remote_engine(engine_factory, svc.url, api=api))
        bystander = ["a bystander in the same batch", "x y z"]
        xadd_jobs(r, "embed", [{"id": "bad", "texts": ["an innocent text", FAULT_MARKER + " the broken one"],
                                "reply_to": "done"},
                               {"id": "good", "texts": bystander, "reply_to": "done"}])
        wait_for(lambda: r.llen("done") == 2, timeout=120, what="results")
        bad = result(r, "bad")
        assert bad["status"] == b"error" and reason.encode() in bad["error"], bad
        assert b"remote embedder" in bad["error"] and "embeddings" not in bad
        if fault in ("nan", "infinity"):  # the error shows where the answer stopped being JSON
            assert {"nan": b"NaN", "infinity": b"Infinity"}[fault] in bad["error"], bad

        # A bad answer is neither retried nor split: the service saw the marked text once.
        reqs = svc.embed_requests()
        broken = [q for q in reqs if q["fault"]]
        assert len(broken) == 1, reqs
        shared = any(t in broken[0]["texts"] for t in bystander)
        good = result(r, "good")
        if shared and not per_text:  # the answer could not be attributed text by text
            assert good["status"] == b"error" and reason.encode() in good["error"], good
        else:  # its own vectors, not the broken text's nor anyone else's
            assert good["status"] == b"ok", good
            for text, vec in zip(bystander, strict_json(good["embeddings"])):
                assert cos(vec, svc.model.ref.embed(text)) >= 0.99999, text

        svc.fault = None
        xadd_jobs(r, "embed", [{"id": "next", "text": FAULT_MARKER + " served normally now", "reply_to": "done"}])
        wait_for(lambda: r.llen("done") == 3, timeout=60, what="the next job's result")
        nxt = result(r, "next")
        assert nxt["status"] == b"ok", nxt
        assert cos(strict_json(nxt["embeddings"])[0], svc.model.ref.embed(FAULT_MARKER + " served normally now")) \
            >= 0.99999
        all_results_are_valid_json(r)
        assert eng.proc.poll() is None and eng.stop() == 0
    finally:
        svc.stop()
