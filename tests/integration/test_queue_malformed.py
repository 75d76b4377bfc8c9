"""Malformed jobs: each gets an error result saying what was wrong and a dead-letter entry with
the original job, and the engine keeps serving the rest."""
import json

import pytest

from conftest import wait_for, xadd_jobs

LIMITS = {"max_input_bytes": 4096, "max_texts_per_job": 4, "max_tokens": 64}

# (stream kind, raw job payload, expected fragment of the error)
CASES = [
    ("embed", b"{not json", "not valid JSON"),
    ("embed", b'{"id":"u1","text":"bad \xff\xfe utf8"}', "not valid UTF-8"),
    ("embed", b'{"id":"u2","text":"overlong \xc0\xaf"}', "not valid UTF-8"),
    ("embed", b'{"id":"u3","text":"surrogate \xed\xa0\x80"}', "not valid UTF-8"),
    ("embed", b'[1,2,3]', "must be a JSON object"),
    ("embed", b'{"id":"t1","text":"a"} trailing', "trailing bytes"),
    ("embed", b'{"id":"m1"}', "missing field 'texts'"),
    ("embed", b'{"id":"m2","text":"a","texts":["b"]}', "either 'text' or 'texts'"),
    ("embed", b'{"id":"w1","texts":"not a list"}', "must be an array"),
    ("embed", b'{"id":"w2","texts":["ok", 5]}', "texts[1] must be a string"),
    ("embed", b'{"id":"w3","texts":[]}', "is empty"),
    ("embed", b'{"id":"w4","text":"a","normalize":"yes"}', "'normalize' must be true or false"),
    ("embed", b'{"id":"w5","text":"a","dimensions":0}', "'dimensions' = 0 is out of range"),
    ("embed", b'{"id":"w6","text":"a","dimensions":2.5}', "'dimensions' must be an integer"),
    ("embed", b'{"id":"w7","text":"a","encoding":"base64"}', "'encoding' must be"),
    ("embed", b'{"id":"w8","text":"a","colour":"red"}', "unknown field 'colour'"),
    ("embed", b'{"id":"w9","text":"a","text":"b"}', "appears twice"),
    ("embed", b'{"id":"x1","texts":["a","b","c","d","e"]}', "5 texts exceed the limit of 4"),
    ("embed", json.dumps({"id": "x2", "text": "a" * 5000}).encode(), "over the limit of 4096"),
    ("embed", b'{"id":"x3","text":"' + b"a" * 2100 + b'","truncate":false}', "over the model's maximum"),
    ("embed", b'{"id":"y1","text":"a","target":{"key":"h"}}', "target: missing field 'field'"),
    ("embed", b'{"id":"y2","texts":["a","b"],"target":{"key":"h","field":"v"}}', "use target.keys"),
    ("embed", b'{"id":"y3","texts":["a","b"],"target":{"keys":["h"],"field":"v"}}', "one key per text"),
    ("embed", b'{"id":"bad id!","text":"a"}', "field 'id' must be"),
    ("generate", b'{"id":"g1"}', "missing field 'prompt'"),
    ("generate", b'{"id":"g2","prompt":"a","max_tokens":65}', "'max_tokens' = 65 is out of range"),
    ("generate", b'{"id":"g3","prompt":"a","temperature":-1}', "'temperature' = -1 is out of range"),
    ("generate", b'{"id":"g4","prompt":"a","top_p":1.5}', "'top_p' = 1.5 is out of range"),
    ("generate", b'{"id":"g5","messages":[{"role":"wizard","content":"x"}]}', "role must be"),
    ("generate", b'{"id":"g6","messages":[{"role":"user"}]}', "content must be a string"),
    ("generate", b'{"id":"g7","messages":[]}', "non-empty array"),
    ("generate", b'{"id":"g8","prompt":"a","stop":[""]}', "non-empty strings"),
    ("generate", b'{"id":"g9","prompt":"a","seed":-3}', "'seed' = -3 is out of range"),
    ("generate", b'{"id":"g10","prompt":"a","stream":true}', "unknown field 'stream'"),
]


def test_every_malformed_job_gets_an_error_result_and_a_dead_letter(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory(queue=LIMITS).start()
    entry_ids = []
    for kind, payload, _ in CASES:
        entry_ids.append(r.xadd("it:jobs:" + kind, {"job": payload}).decode())
    # A good job after all of them: the engine is still serving.
    xadd_jobs(r, "embed", [{"id": "good", "text": "fine", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="the good job")
    wait_for(lambda: r.xlen("it:dead") == len(CASES), what="one dead letter per malformed job")
    # Entry ids are per stream, so the two streams can hand out the same id.
    dead = {(f[b"kind"].decode(), f[b"entry"].decode()): f for _, f in r.xrange("it:dead")}
    for (kind, payload, expect), eid in zip(CASES, entry_ids):
        d = dead[(kind, eid)]
        assert expect in d[b"reason"].decode(), (payload, d[b"reason"])
        assert d[b"job"] == payload, "the dead letter keeps the original job bytes"
        assert d[b"kind"].decode() == kind
        job_id = d[b"job_id"].decode()
        res = r.hgetall("it:result:" + job_id)
        assert res[b"status"] == b"error" and expect in res[b"error"].decode()
    # Jobs without a usable id are addressed as "<kind>:<stream entry id>".
    assert r.hget("it:result:embed:" + entry_ids[0], "status") == b"error"
    assert r.hget("it:result:good", "status") == b"ok"
    for kind in ("embed", "generate"):
        assert r.xpending("it:jobs:" + kind, "weaver")["pending"] == 0
    assert eng.proc.poll() is None
    assert eng.stop() == 0
    assert b"bad \xff" not in open(eng.log_path, "rb").read(), "logs name job ids, never payloads"


def test_entry_without_a_job_field_is_dead_lettered(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    eid = r.xadd("it:jobs:embed", {"payload": "wrong field name"}).decode()
    wait_for(lambda: r.xlen("it:dead") == 1, what="dead letter")
    assert b"no 'job' field" in r.hget("it:result:embed:" + eid, "error")
    assert eng.stop() == 0


def test_error_result_reaches_the_reply_list(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [{"id": "e1", "texts": [1], "reply_to": "replies"}])
    wait_for(lambda: r.llen("replies") == 1, what="reply")
    assert r.lpop("replies") == b"e1"
    assert r.hget("it:result:e1", "status") == b"error"
    assert eng.stop() == 0


def test_producer_keys_of_the_wrong_type_turn_into_error_results_with_nothing_half_written(redis_server,
                                                                                        engine_factory):
    r = redis_server.client()
    r.set("not-a-hash", "x")
    r.set("not-a-list", "y")
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [
        {"id": "t1", "texts": ["a", "b"], "target": {"keys": ["fine-hash", "not-a-hash"], "field": "v"},
         "reply_to": "done"},
        {"id": "t2", "text": "a", "reply_to": "not-a-list"},
        {"id": "t3", "text": "still serving", "reply_to": "done"},
    ])
    wait_for(lambda: r.llen("done") == 2, what="two notifications")
    wait_for(lambda: r.exists("it:result:t2"), what="t2 result")
    t1 = r.hgetall("it:result:t1")
    assert t1[b"status"] == b"error" and b"target key 2 names a key of the wrong type (string, not hash)" in t1[b"error"]
    assert not r.exists("fine-hash"), "no target is written when another target is refused"
    t2 = r.hgetall("it:result:t2")
    assert t2[b"status"] == b"error" and b"reply_to names a key of the wrong type (string, not list)" in t2[b"error"]
    assert r.get("not-a-list") == b"y" and r.get("not-a-hash") == b"x"
    assert r.hget("it:result:t3", "status") == b"ok"
    assert r.xlen("it:dead") == 2
    # The dead letters of refused results keep the original job, so `dead requeue` can resend it.
    dead = {f[b"job_id"]: json.loads(f[b"job"]) for _, f in r.xrange("it:dead")}
    assert dead[b"t1"]["target"]["keys"] == ["fine-hash", "not-a-hash"]
    assert dead[b"t2"]["reply_to"] == "not-a-list"
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 0
    assert eng.stop() == 0
