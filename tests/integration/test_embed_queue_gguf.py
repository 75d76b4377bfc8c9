"""A GGUF embedder through Redis (a tiny random-weight qwen3 Q8_0 GGUF with last-token pooling,
regenerated from tests/reference/gguf_embed_make_fixtures.py): documents and instruction queries
give llama.cpp's recorded vectors (tests/fixtures/gguf_embed/tiny.json), a too-long text with
truncate false is an error result, the cohort pin records the file's hash and pooling `last`,
`pin verify` passes, and the same file with another pooling is refused by the pin."""
import hashlib
import json
import os
import sys

import numpy as np
import pytest

from conftest import SOURCE_DIR, run_cli, wait_for, write_config, xadd_jobs

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "reference"))
from gguf_embed_make_fixtures import INSTRUCTION, embed_model  # noqa: E402
from reference_bert import cosine  # noqa: E402

NAME = "tiny_embed_qwen3_q8_0"
QUERY = "where do cats sleep"
EXIT_PIN_MISMATCH = 65


@pytest.fixture(scope="module")
def fixture():
    with open(os.path.join(SOURCE_DIR, "tests", "fixtures", "gguf_embed", "tiny.json"), encoding="utf-8") as f:
        m = next(m for m in json.load(f)["models"] if m["name"] == NAME)
    return m["cases"][0]["texts"]


@pytest.fixture
def model(workdir):
    path = os.path.join(workdir, NAME + ".gguf")
    embed_model(NAME, path)
    return path


def gguf_engine(engine_factory, model, name="gguf.conf", **embedder):
    return engine_factory(name=name, embedder={"backend": "native", "snapshot": model, "threads": 1,
                                               "query_instruction": INSTRUCTION, **embedder},
                          decoder={"enabled": False})


def test_documents_and_queries_through_the_queue_match_llama_cpp(redis_server, engine_factory, model, fixture):
    r = redis_server.client()
    eng = gguf_engine(engine_factory, model).start(timeout=60)
    docs = [t for t in fixture if not t["text"].startswith("Instruct: ")]
    query = next(t for t in fixture if t["text"].startswith("Instruct: "))
    xadd_jobs(r, "embed", [
        {"id": "docs", "texts": [t["text"] for t in docs], "reply_to": "done"},
        {"id": "q-default", "text": QUERY, "instruction": True, "reply_to": "done"},
        {"id": "q-own", "text": QUERY, "instruction": INSTRUCTION, "reply_to": "done"},
        {"id": "strict", "text": "the " * 600, "truncate": False, "reply_to": "done"},
    ])
    wait_for(lambda: r.llen("done") == 4, timeout=60, what="four results")
    res = r.hgetall("it:result:docs")
    assert res[b"status"] == b"ok" and res[b"model"] == NAME.encode() and res[b"dim"] == b"256", res
    vecs = json.loads(res[b"embeddings"])
    for t, v in zip(docs, vecs):
        assert cosine(v, t["embedding"]) >= 0.998, t["text"][:40]
        assert abs(np.linalg.norm(v) - 1.0) < 1e-5  # GGUF embedders normalise by default
    assert json.loads(res[b"usage"])["tokens"] == sum(len(t["tokens"]) for t in docs)
    for job in ("q-default", "q-own"):
        q = r.hgetall("it:result:" + job)
        assert q[b"status"] == b"ok", q
        assert cosine(json.loads(q[b"embeddings"])[0], query["embedding"]) >= 0.998
        assert json.loads(q[b"usage"])["tokens"] == len(query["tokens"])
    strict = r.hgetall("it:result:strict")
    assert strict[b"status"] == b"error" and b"over the model's maximum of 512" in strict[b"error"], strict
    assert eng.stop() == 0


def test_a_configured_query_format_renders_the_query_as_written(redis_server, engine_factory, model):
    """embedder.query_format (Qwen3-Embedding's card: no space after "Query:"): a query job must embed
    exactly as the document that Python's own rendering of the format gives."""
    r = redis_server.client()
    fmt = "Instruct: {instruction}\nQuery:{text}"
    eng = gguf_engine(engine_factory, model, query_format=fmt).start(timeout=60)
    rendered = f"Instruct: {INSTRUCTION}\nQuery:{QUERY}"
    xadd_jobs(r, "embed", [{"id": "q", "text": QUERY, "instruction": True, "reply_to": "done"},
                           {"id": "d", "text": rendered, "reply_to": "done"},
                           {"id": "spaced", "text": f"Instruct: {INSTRUCTION}\nQuery: {QUERY}", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 3, timeout=60, what="three results")
    q, d, spaced = (r.hgetall("it:result:" + j) for j in ("q", "d", "spaced"))
    assert q[b"status"] == d[b"status"] == spaced[b"status"] == b"ok", (q, d, spaced)
    assert json.loads(q[b"embeddings"]) == json.loads(d[b"embeddings"])
    assert json.loads(q[b"usage"]) == json.loads(d[b"usage"])
    assert json.loads(q[b"embeddings"]) != json.loads(spaced[b"embeddings"])  # the space is a token
    assert eng.stop() == 0


def test_instruction_true_without_a_configured_default_is_a_malformed_job(redis_server, engine_factory, model):
    r = redis_server.client()
    eng = gguf_engine(engine_factory, model, query_instruction="").start(timeout=60)
    xadd_jobs(r, "embed", [{"id": "q", "text": QUERY, "instruction": True, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=30, what="result")
    res = r.hgetall("it:result:q")
    assert res[b"status"] == b"error" and b"embedder.query_instruction" in res[b"error"], res
    assert eng.stop() == 0


def test_the_pin_records_the_files_hash_and_last_pooling_and_refuses_another_pooling(
        redis_server, engine_factory, model, workdir):
    r = redis_server.client()
    gguf_engine(engine_factory, model).start(timeout=60).stop()
    pin = {k.decode(): v for k, v in r.hgetall("it:pin:default").items()}
    data = open(model, "rb").read()
    line = "%s\t%d\t%s\n" % (os.path.basename(model), len(data), hashlib.sha256(data).hexdigest())
    assert pin["snapshot_hash"].decode() == hashlib.sha256(line.encode()).hexdigest()
    assert pin["pooling"] == b"last" and pin["dim"] == b"256" and pin["max_seq_len"] == b"512"
    assert pin["model_id"] == NAME.encode()
    cfg = write_config(os.path.join(workdir, "verify.conf"), redis_server.port,
                       embedder={"backend": "native", "snapshot": model, "threads": 1})
    out = run_cli("pin", "verify", config=cfg, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rc, log = gguf_engine(engine_factory, model, name="mean.conf", pooling="mean").run_to_exit(60)
    assert rc == EXIT_PIN_MISMATCH and "pooling: pinned last, found mean" in log, log
