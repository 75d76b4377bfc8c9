"""A small embedding service for the remote-backend tests: stdlib http.server (threaded) serving
the independent numpy reference (tests/reference/reference_bert.py) over BOTH wire APIs the
engine speaks:

  TEI-compatible      GET /info, POST /embed {"inputs": [...], "truncate": bool, "normalize": bool}
  OpenAI-compatible   GET /v1/models, POST /v1/embeddings {"model": ..., "input": [...]}

It behaves like the real services where the engine depends on it: TEI answers 413 to a batch
over max_client_batch_size and to a text over max_input_length with truncate=false, normalises
unless told not to; the OpenAI API always returns unit vectors. Test hooks (not part of either
API): --token requires a bearer token; GET /_stats lists every request's batch size, status,
texts and fault; POST /_fail {"count": N, "status": 503} makes the next N embed requests fail
with that status; RemoteService.fault = NAME (one of FAULTS) breaks the protocol in the 200
answer to every embed request that holds a text containing FAULT_MARKER.

Run in-process (RemoteService(...).start()) or as a process that can be killed:
  python3 remote_service.py --snapshot models/all-MiniLM-L6-v2 --port 8080 [--model-id ID]
      [--max-batch 32] [--max-batch-tokens 16384] [--token-file F]
It prints "listening on PORT" once the model is loaded and the port is bound."""
import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# One BLAS thread: the tiny matrices of one text are ~10x slower with threads fighting over cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from reference_bert import Reference  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


FAULT_MARKER = "<fault>"
# How an answer can break the protocol. The vector broken is the first marked text's.
FAULTS = (
    "wrong_count",            # one vector fewer than texts (the last text's is left out)
    "duplicate_index",        # OpenAI: the marked item carries the next item's index
    "index_out_of_range",     # OpenAI: the marked item's index is n
    "missing_index",          # OpenAI: the marked item has no "index"
    "wrong_dimension",        # the marked vector lacks its last number
    "nan",                    # the marked vector starts with NaN (not JSON, Python writes it)
    "infinity",               # ... with Infinity (not JSON either)
    "1e999",                  # ... with 1e999: JSON, but beyond a double
    "float_overflow",         # ... with 1e39: a double, but beyond a float
    "string",                 # ... with its first number as a string
    "oversized",              # a valid answer padded to OVERSIZED_BYTES, Content-Length announced
    "oversized_unannounced",  # the same without Content-Length, ended by closing the connection
)
RAW_NUMBER = {"nan": "NaN", "infinity": "Infinity", "1e999": "1e999", "float_overflow": "1e39"}
OVERSIZED_BYTES = 8 << 20


class Model:
    """The reference, plus an untruncated tokenizer to check max_input_length like TEI does."""

    def __init__(self, snapshot, model_id=None):
        self.ref = Reference(snapshot)
        self.full_tok = Tokenizer.from_file(os.path.join(snapshot, "tokenizer.json"))
        self.full_tok.no_padding()
        self.full_tok.no_truncation()
        self.model_id = model_id or os.path.basename(os.path.normpath(snapshot))
        self.lock = threading.Lock()

    def n_tokens(self, text):
        return len(self.full_tok.encode(text).ids)

    def embed(self, text, normalize):
        with self.lock:
            return self.ref.embed(text, normalize=normalize)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "weaver-test-embedder/1"

    def log_message(self, *args):
        pass

    # --- plumbing ---
    def _send(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    def _authorized(self):
        token = self.server.svc.token
        if token and self.headers.get("Authorization") != "Bearer " + token:
            self._send(401, {"error": "unauthorized", "error_type": "Unauthorized"})
            return False
        return True

    def _record(self, path, n, status, texts=None, fault=None):
        with self.server.svc.lock:
            self.server.svc.requests.append({"path": path, "n": n, "status": status, "texts": texts, "fault": fault})

    def _answer(self, path, texts, vecs, openai, usage=None):
        """Sends vectors (TEI: a list of lists; OpenAI: "data" items in reverse order), broken
        the way the armed fault says when a text carries FAULT_MARKER."""
        svc = self.server.svc
        marked = [i for i, t in enumerate(texts) if FAULT_MARKER in t]
        fault = svc.fault if marked else None
        items = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)]
        p = marked[0] if marked else None
        if fault == "wrong_count":
            items.pop()
        elif fault == "duplicate_index":
            items[p]["index"] = (p + 1) % len(items)
        elif fault == "index_out_of_range":
            items[p]["index"] = len(items)
        elif fault == "missing_index":
            del items[p]["index"]
        elif fault == "wrong_dimension":
            items[p]["embedding"] = items[p]["embedding"][:-1]
        elif fault == "string":
            items[p]["embedding"][0] = repr(items[p]["embedding"][0])
        elif fault in RAW_NUMBER:
            items[p]["embedding"][0] = "@RAW@"
        if openai:
            items.reverse()  # clients must place vectors by "index", not by position
            obj = {"object": "list", "data": items, "model": svc.model.model_id, "usage": usage}
        else:
            obj = [it["embedding"] for it in items]
        body = json.dumps(obj).replace('"@RAW@"', RAW_NUMBER.get(fault, '"@RAW@"'))
        if fault in ("oversized", "oversized_unannounced"):
            body += " " * (OVERSIZED_BYTES - len(body))
        self._record(path, len(texts), 200, texts, fault)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if fault == "oversized_unannounced":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body.encode())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading: what it should do

    def _injected_failure(self, path, n):
        svc = self.server.svc
        with svc.lock:
            if svc.fail_count > 0:
                svc.fail_count -= 1
                status = svc.fail_status
            else:
                return False
            svc.requests.append({"path": path, "n": n, "status": status})
        self._send(status, {"error": "injected failure", "error_type": "Overloaded"})
        return True

    # --- routes ---
    def do_GET(self):
        svc = self.server.svc
        if self.path == "/_stats":
            with svc.lock:
                return self._send(200, {"requests": list(svc.requests)})
        if self.path == "/health":
            return self._send(200, {})
        if not self._authorized():
            return
        if self.path == "/info":
            return self._send(200, {
                "model_id": svc.model.model_id, "model_sha": None, "model_dtype": "float32",
                "model_type": {"embedding": {"pooling": svc.model.ref.pooling}},
                "max_concurrent_requests": 512, "max_input_length": svc.model.ref.max_len,
                "max_batch_tokens": svc.max_batch_tokens, "max_batch_requests": None,
                "max_client_batch_size": svc.max_batch, "tokenization_workers": 1,
                "version": "test", "sha": None, "docker_label": None})
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": svc.model.model_id, "object": "model", "owned_by": "weaver-tests",
                 "max_model_len": svc.model.ref.max_len}]})
        self._send(404, {"error": "not found"})

    def do_POST(self):
        svc = self.server.svc
        try:
            req = self._body()
        except (ValueError, UnicodeDecodeError):
            return self._send(422, {"error": "body is not JSON", "error_type": "Validation"})
        if self.path == "/_fail":
            with svc.lock:
                svc.fail_count, svc.fail_status = int(req["count"]), int(req.get("status", 503))
            return self._send(200, {})
        if not self._authorized():
            return
        if self.path == "/embed":
            return self._tei(req)
        if self.path == "/v1/embeddings":
            return self._openai(req)
        self._send(404, {"error": "not found"})

    def _tei(self, req):
        svc = self.server.svc
        texts = req.get("inputs")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._record("/embed", 0, 422)
            return self._send(422, {"error": "`inputs` must be a string or a list of strings", "error_type": "Validation"})
        if self._injected_failure("/embed", len(texts)):
            return
        if len(texts) > svc.max_batch:
            self._record("/embed", len(texts), 413)
            return self._send(413, {"error": "batch size %d > maximum allowed batch size %d" % (len(texts), svc.max_batch),
                                    "error_type": "Validation"})
        if not req.get("truncate", False):
            for t in texts:
                n = svc.model.n_tokens(t)
                if n > svc.model.ref.max_len:
                    self._record("/embed", len(texts), 413)
                    return self._send(413, {"error": "Input validation error: `inputs` must have less than %d tokens. "
                                                     "Given: %d" % (svc.model.ref.max_len, n), "error_type": "Validation"})
        normalize = req.get("normalize", True)
        vecs = [svc.model.embed(t, normalize).astype(np.float32).tolist() for t in texts]
        self._answer("/embed", texts, vecs, openai=False)

    def _openai(self, req):
        svc = self.server.svc
        texts = req.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if req.get("model") != svc.model.model_id:
            self._record("/v1/embeddings", 0, 404)
            return self._send(404, {"error": {"message": "model %r not found" % req.get("model"),
                                              "type": "invalid_request_error"}})
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._record("/v1/embeddings", 0, 400)
            return self._send(400, {"error": {"message": "'input' must be a string or a list of strings",
                                              "type": "invalid_request_error"}})
        if self._injected_failure("/v1/embeddings", len(texts)):
            return
        vecs = [svc.model.embed(t, True).astype(np.float32).tolist() for t in texts]
        ntok = sum(min(svc.model.n_tokens(t), svc.model.ref.max_len) for t in texts)
        self._answer("/v1/embeddings", texts, vecs, openai=True, usage={"prompt_tokens": ntok, "total_tokens": ntok})


class RemoteService:
    def __init__(self, snapshot, port=0, model_id=None, max_batch=32, max_batch_tokens=16384, token=None):
        self.model = Model(snapshot, model_id)
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        self.token = token
        self.lock = threading.Lock()
        self.requests = []
        self.fail_count, self.fail_status = 0, 503
        self.fault = None
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.svc = self
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, count, status=503):
        with self.lock:
            self.fail_count, self.fail_status = count, status

    def embed_requests(self):
        with self.lock:
            return [r for r in self.requests if r["path"] in ("/embed", "/v1/embeddings")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snapshot", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model-id")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--token-file")
    a = ap.parse_args()
    token = open(a.token_file).read().strip() if a.token_file else None
    svc = RemoteService(a.snapshot, a.port, a.model_id, a.max_batch, a.max_batch_tokens, token)
    print("listening on %d" % svc.port, flush=True)
    svc.httpd.serve_forever()


if __name__ == "__main__":
    main()
