"""The default seed of a generate job without `seed` (docs/protocol.md): derived from the whole
entry id and the job id, on the real SmolLM2 decoder at temperature 1. Jobs added in the same
millisecond (explicit entry ids 1000-0, 1000-1, 1000-2) must sample different text; the same
entries delivered again to a fresh engine must reproduce their text exactly."""
import json
import os

from conftest import SOURCE_DIR, wait_for

MODEL = os.path.join(SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
IDS = ["1000-0", "1000-1", "1000-2"]


def run_once(redis_server, engine_factory, name):
    r = redis_server.client()
    r.flushall()
    for eid in IDS:
        job = {"messages": [{"role": "user", "content": "Write one sentence about the sea."}],
               "temperature": 1.0, "max_tokens": 24, "reply_to": "done"}
        r.xadd("it:jobs:generate", {"job": json.dumps(job)}, id=eid)
    eng = engine_factory(name=name, decoder={"backend": "native", "model": MODEL, "threads": 2}).start()
    wait_for(lambda: r.llen("done") == len(IDS), timeout=120, what="three generations")
    texts = [r.hget("it:result:generate:" + eid, "text") for eid in IDS]
    assert eng.stop() == 0
    return texts


def test_same_millisecond_jobs_without_seed_differ_and_a_redelivery_reproduces(redis_server, engine_factory):
    assert os.path.isfile(MODEL), "run ops/setup.sh to install the model"
    first = run_once(redis_server, engine_factory, "first.conf")
    assert all(first) and len(set(first)) == len(IDS), first
    again = run_once(redis_server, engine_factory, "again.conf")
    assert again == first
