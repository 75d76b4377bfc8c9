"""The `remote` embedder's documented retry and batching limits (docs/operations.md, Remote
embedder backend), against the test service of remote_service.py wrapped so a test can script
failures with a Retry-After header and see when each request arrived and what it held:

- Retry-After is honoured, but never beyond 2 s;
- a service that keeps failing gets at most 8 attempts, then the job is an error result;
- a worker batch is split into requests of about max_batch_tokens (TEI /info) tokens, counted
  as the engine counts them (bytes / 4 rounded up, + 2); a text over the limit goes alone.

remote_service.py itself is not changed: ScriptedHandler wraps its request handler."""
import io
import json
import os
import threading
import time

from remote_service import Handler, RemoteService  # before numpy: it pins the BLAS thread count

import pytest  # noqa: E402

from conftest import SOURCE_DIR, wait_for, xadd_jobs  # noqa: E402

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")
EMBED_PATHS = ("/embed", "/v1/embeddings")

assert os.path.isfile(os.path.join(MODEL, "model.safetensors")), \
    "models/all-MiniLM-L6-v2 is not unpacked (ops/setup.sh installs it)"


def approx_tokens(text):
    """The remote backend's token estimate (engine/embedder_remote.c): ceil(bytes / 4) + 2."""
    return (len(text.encode()) + 3) // 4 + 2


class ScriptedHandler(Handler):
    """Logs every embed request (arrival time, texts, status) and answers it from the service's
    failure script first: each entry (status, retry_after or None) fails one request."""

    def do_POST(self):
        svc = self.server.svc
        if self.path not in EMBED_PATHS:
            return super().do_POST()
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        try:
            req = json.loads(body or b"null")
            texts = req.get("inputs", req.get("input"))
        except (ValueError, AttributeError):
            texts = None
        texts = [texts] if isinstance(texts, str) else texts
        with svc.lock:
            fail = svc.script.pop(0) if svc.script else None
            svc.calls.append({"t": time.monotonic(), "texts": texts, "status": fail[0] if fail else 200})
        if fail:
            status, retry_after = fail
            payload = json.dumps({"error": "scripted failure", "error_type": "Overloaded"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.end_headers()
            self.wfile.write(payload)
            return
        orig, self.rfile = self.rfile, io.BytesIO(body)  # let the real handler read the body again
        try:
            super().do_POST()
        finally:
            self.rfile = orig


class ScriptedService(RemoteService):
    def __init__(self, **kw):
        super().__init__(MODEL, **kw)
        self.httpd.RequestHandlerClass = ScriptedHandler
        self.script, self.calls = [], []

    def reset(self, script=()):
        with self.lock:
            self.script, self.calls = list(script), []

    def embed_calls(self, text=None):
        with self.lock:
            return [c for c in self.calls if text is None or (c["texts"] and text in c["texts"])]


@pytest.fixture(scope="module")
def service():
    svc = ScriptedService(max_batch=32).start()  # the reference model loads once per module
    yield svc
    svc.stop()


def remote_engine(engine_factory, svc, name="remote.conf"):
    return engine_factory(name=name, embedder={"backend": "remote", "url": svc.url, "api": "tei", "timeout_ms": 5000},
                          queue={"visibility_timeout_ms": 60000})


def result(r, job_id):
    return {k.decode(): v for k, v in r.hgetall("it:result:" + job_id).items()}


def test_retry_after_is_honoured_up_to_two_seconds(redis_server, engine_factory, service):
    r = redis_server.client()
    service.max_batch_tokens = 16384
    eng = remote_engine(engine_factory, service).start(timeout=60)
    # 30 s asked: capped at 2 s; then 1 s asked: waited (the backoff alone would be ~0.2 s).
    service.reset([(503, "30"), (429, "1")])
    text = "wait as the service says, within reason"
    xadd_jobs(r, "embed", [{"id": "ra", "text": text, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="result")
    assert result(r, "ra")["status"] == b"ok"
    calls = service.embed_calls(text)
    assert [c["status"] for c in calls] == [503, 429, 200]
    gap1, gap2 = calls[1]["t"] - calls[0]["t"], calls[2]["t"] - calls[1]["t"]
    assert 1.9 <= gap1 < 2.6, gap1  # Retry-After: 30 capped to 2 s
    assert 0.95 <= gap2 < 1.6, gap2  # Retry-After: 1 honoured
    assert eng.stop() == 0


def test_a_service_that_keeps_failing_gets_8_attempts_then_the_job_is_an_error(redis_server, engine_factory,
                                                                             service):
    r = redis_server.client()
    service.max_batch_tokens = 16384
    eng = remote_engine(engine_factory, service).start(timeout=60)
    service.reset([(503, None)] * 50)
    text = "the service never answers this one"
    t0 = time.monotonic()
    xadd_jobs(r, "embed", [{"id": "gone", "text": text, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="error result")
    took = time.monotonic() - t0
    res = result(r, "gone")
    assert res["status"] == b"error", res
    assert b"HTTP 503" in res["error"] and b"gave up after 8 attempts" in res["error"], res["error"]
    assert len(service.embed_calls(text)) == 8
    assert took < 15, took  # within the 10 s retry window (+ the job's own overhead)
    assert r.xlen("it:dead") == 1
    # The next job, with the service healthy again, is not affected.
    service.reset()
    xadd_jobs(r, "embed", [{"id": "back", "text": "fine again", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 2, timeout=60, what="result")
    assert result(r, "back")["status"] == b"ok"
    assert eng.proc.poll() is None and eng.stop() == 0


SHORT = ["short text number %02d, 37 bytes long.." % i for i in range(6)]  # 37 bytes: 12 tokens each
LONG = "a long text " * 34  # 408 bytes: 104 tokens, over the limit by itself


def test_requests_are_split_by_the_services_max_batch_tokens(redis_server, engine_factory, service):
    assert all(approx_tokens(t) == 12 for t in SHORT) and approx_tokens(LONG) == 104
    r = redis_server.client()
    service.max_batch_tokens = 30  # /info: two short texts (24) fit, three (36) do not
    eng = remote_engine(engine_factory, service).start(timeout=60)
    service.reset()
    xadd_jobs(r, "embed", [{"id": "split", "texts": SHORT + [LONG], "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="result")
    res = result(r, "split")
    assert res["status"] == b"ok", res
    assert len(json.loads(res["embeddings"])) == 7
    calls = service.embed_calls()
    sizes = sorted(len(c["texts"]) for c in calls)
    assert sizes == [1, 2, 2, 2], sizes
    for c in calls:
        assert len(c["texts"]) == 1 or sum(approx_tokens(t) for t in c["texts"]) <= 30, c["texts"]
    assert [c["texts"] for c in calls if LONG in c["texts"]] == [[LONG]]
    assert eng.stop() == 0
    # Control: a service with room for all of them gets them in one request.
    service.max_batch_tokens = 16384
    eng = remote_engine(engine_factory, service, name="roomy.conf").start(timeout=60)
    service.reset()
    xadd_jobs(r, "embed", [{"id": "whole", "texts": SHORT + [LONG], "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 2, timeout=60, what="result")
    assert result(r, "whole")["status"] == b"ok"
    assert [len(c["texts"]) for c in service.embed_calls()] == [7]
    assert eng.stop() == 0
