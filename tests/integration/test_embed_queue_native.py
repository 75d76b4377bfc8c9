"""The product path: embed jobs through Redis on the native all-MiniLM-L6-v2 embedder, checked
against the independent numpy reference (tests/reference/reference_bert.py)."""
import json
import os
import struct
import sys

import numpy as np
import pytest

from conftest import SOURCE_DIR, wait_for, xadd_jobs

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "reference"))
from reference_bert import Reference, cosine  # noqa: E402

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")
TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
         "Café naïve résumé, 東京 and emoji 🚀", "", "word " * 400,
         "a NUL\x00inside: the job carries it as \\u0000 and the tokenizer drops it, as Hugging Face's does"]


@pytest.fixture(scope="module")
def reference():
    assert os.path.isfile(os.path.join(MODEL, "model.safetensors")), "run ops/setup.sh to install the model"
    return Reference(MODEL)


def test_embed_jobs_through_the_queue_match_the_reference(redis_server, engine_factory, reference):
    r = redis_server.client()
    eng = engine_factory(workers=2, embedder={"backend": "native", "snapshot": MODEL, "threads": 1},
                         decoder={"enabled": False}).start()
    xadd_jobs(r, "embed", [
        {"id": "all", "texts": TEXTS, "reply_to": "done"},
        {"id": "raw", "text": TEXTS[0], "normalize": False, "reply_to": "done"},
        {"id": "mrl", "text": TEXTS[1], "dimensions": 64, "encoding": "f32",
         "target": {"key": "doc:mrl", "field": "v"}, "reply_to": "done"},
        {"id": "strict", "text": TEXTS[5], "truncate": False, "reply_to": "done"},
    ])
    wait_for(lambda: r.llen("done") == 4, timeout=120, what="four results")
    res = r.hgetall("it:result:all")
    assert res[b"status"] == b"ok" and res[b"model"] == b"all-MiniLM-L6-v2" and res[b"dim"] == b"384"
    vecs = json.loads(res[b"embeddings"])
    for text, v in zip(TEXTS, vecs):
        ref = reference.embed(text)
        assert cosine(v, ref) >= 0.99999, text[:40]
        assert abs(np.linalg.norm(v) - 1.0) < 1e-5
    assert cosine(vecs[6], reference.embed("a NULinside: the job carries it as \\u0000 and the tokenizer "
                                           "drops it, as Hugging Face's does")) >= 0.99999
    # Token counts: the long text is truncated to 256 tokens by default.
    expected_tokens = sum(min(len(reference.ids(t)), 256) for t in TEXTS)
    assert json.loads(res[b"usage"])["tokens"] == expected_tokens

    raw = json.loads(r.hget("it:result:raw", "embeddings"))[0]
    assert cosine(raw, reference.embed(TEXTS[0], normalize=False)) >= 0.99999
    assert np.linalg.norm(raw) == pytest.approx(np.linalg.norm(reference.embed(TEXTS[0], normalize=False)),
                                                rel=1e-4)

    mrl = r.hgetall("it:result:mrl")
    v64 = np.array(struct.unpack("<64f", mrl[b"embeddings"]))
    ref64 = reference.embed(TEXTS[1], normalize=False)[:64]
    assert cosine(v64, ref64) >= 0.99999 and abs(np.linalg.norm(v64) - 1.0) < 1e-5
    assert r.hget("doc:mrl", "v") == mrl[b"embeddings"]

    strict = r.hgetall("it:result:strict")
    assert strict[b"status"] == b"error" and b"over the model's maximum of 256" in strict[b"error"]
    assert eng.stop() == 0


def test_similar_sentences_score_higher_through_the_queue(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory(embedder={"backend": "native", "snapshot": MODEL}, decoder={"enabled": False}).start()
    xadd_jobs(r, "embed", [{"id": "s", "texts": TEXTS[:3], "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="result")
    a, b, c = json.loads(r.hget("it:result:s", "embeddings"))
    assert cosine(a, b) > cosine(a, c) + 0.2
    assert eng.stop() == 0
