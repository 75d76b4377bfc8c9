"""What producers and operators see: result records, encodings, target hashes, Matryoshka
dimensions, generation results, and the enqueue / status / dead commands."""
import json
import struct

import pytest

from conftest import hash_vector, run_cli, wait_for, xadd_jobs


def test_json_result_record_has_status_vectors_usage_and_timings(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [{"id": "a", "texts": ["alpha", "beta"], "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="result")
    res = {k.decode(): v for k, v in r.hgetall("it:result:a").items()}
    assert res["status"] == b"ok" and res["kind"] == b"embed" and res["model"] == b"test-hash"
    assert res["dim"] == b"8" and res["count"] == b"2" and res["encoding"] == b"json"
    vecs = json.loads(res["embeddings"])
    assert vecs[0] == pytest.approx(hash_vector("alpha"), abs=1e-6)
    assert vecs[1] == pytest.approx(hash_vector("beta"), abs=1e-6)
    assert json.loads(res["usage"])["tokens"] == (2 + 2) + (1 + 2)  # ceil(bytes / 4) + 2 each
    timings = json.loads(res["timings"])
    assert timings["queued_ms"] >= 0 and timings["compute_ms"] >= 0
    assert 0 < r.ttl("it:result:a") <= 86400
    assert eng.stop() == 0


def test_f32_encoding_and_target_hashes_hold_little_endian_float32(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [{"id": "f", "texts": ["one", "two"], "encoding": "f32", "dimensions": 4,
                            "target": {"keys": ["doc:1", "doc:2"], "field": "vec"}, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="result")
    raw = r.hget("it:result:f", "embeddings")
    assert len(raw) == 2 * 4 * 4
    rows = [list(struct.unpack("<4f", raw[i * 16:(i + 1) * 16])) for i in range(2)]
    # Matryoshka: truncate to 4 dims first, then normalise.
    assert rows[0] == pytest.approx(hash_vector("one", out_dim=4), abs=1e-6)
    assert r.hget("doc:1", "vec") == raw[:16]
    assert r.hget("doc:2", "vec") == raw[16:]
    assert eng.stop() == 0


def test_normalize_false_returns_the_raw_pooled_vector(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [{"id": "n", "text": "raw", "normalize": False, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="result")
    got = json.loads(r.hget("it:result:n", "embeddings"))[0]
    assert got == pytest.approx(hash_vector("raw", normalize=False), abs=1e-6)
    assert abs(sum(x * x for x in got) - 1.0) > 1e-3
    assert eng.stop() == 0


def test_generate_results_carry_text_finish_reason_and_token_counts(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "generate", [
        {"id": "len", "prompt": "abcdefghijkl", "max_tokens": 2, "reply_to": "done"},
        {"id": "eos", "prompt": "abcdef", "reply_to": "done"},
        {"id": "stop", "messages": [{"role": "user", "content": "hello STOP world"}], "stop": ["STOP"],
         "reply_to": "done"},
    ])
    wait_for(lambda: r.llen("done") == 3, what="three results")
    get = lambda i: {k.decode(): v.decode() for k, v in r.hgetall("it:result:" + i).items()}
    assert get("len")["text"] == "abcdefgh" and get("len")["finish_reason"] == "length"
    assert json.loads(get("len")["usage"]) == {"prompt_tokens": 3, "completion_tokens": 2}
    assert get("eos")["text"] == "abcdef" and get("eos")["finish_reason"] == "eos"
    assert get("stop")["text"] == "hello " and get("stop")["finish_reason"] == "stop"
    assert eng.stop() == 0


def test_job_without_id_is_keyed_by_kind_and_entry_id(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    eid = r.xadd("it:jobs:embed", {"job": json.dumps({"text": "anon", "reply_to": "done"})}).decode()
    wait_for(lambda: r.llen("done") == 1, what="result")
    assert r.lpop("done").decode() == "embed:" + eid
    assert r.hget("it:result:embed:" + eid, "status") == b"ok"
    assert eng.stop() == 0


def test_enqueue_wait_prints_results_and_status_shows_ready_consumers(redis_server, engine_factory, workdir):
    eng = engine_factory(workers=2).start()
    jobs = workdir + "/jobs.jsonl"
    with open(jobs, "w") as f:
        for i in range(50):
            f.write(json.dumps({"id": "c%d" % i, "text": "line %d" % i}) + "\n")
    out = run_cli("enqueue", "embed", "--input", jobs, "--wait", "--timeout", "30", config=eng.config)
    assert out.returncode == 0, out.stderr
    results = [json.loads(l) for l in out.stdout.splitlines()]
    assert sorted(x["id"] for x in results) == sorted("c%d" % i for i in range(50))
    assert all(x["status"] == "ok" and len(x["embeddings"][0]) == 8 for x in results)
    one = run_cli("enqueue", "generate", "--text", "echo me", "--wait", config=eng.config)
    assert json.loads(one.stdout)["text"] == "echo me"
    st = run_cli("status", "--json", config=eng.config)
    status = json.loads(st.stdout)
    assert status["embed"]["length"] == 0 and status["dead_letters"] == 0
    assert len(status["embed"]["consumers"]) == 2
    assert all(c["ready"] for c in status["embed"]["consumers"])
    assert eng.stop() == 0


def test_enqueue_reports_the_line_of_a_bad_job_and_enqueues_none_of_that_chunk(redis_server, engine_factory,
                                                                              workdir):
    cfg = engine_factory().config
    jobs = workdir + "/bad.jsonl"
    with open(jobs, "w") as f:
        f.write('{"text": "fine"}\n{oops\n')
    out = run_cli("enqueue", "embed", "--input", jobs, config=cfg)
    assert out.returncode == 64
    assert "bad.jsonl:2: not a JSON object" in out.stderr
    assert redis_server.client().exists("it:jobs:embed") == 0


def test_dead_list_and_requeue_run_the_job_again(redis_server, engine_factory):
    r = redis_server.client()
    # max_texts_per_job = 1 makes this job dead; raising the limit and requeueing fixes it.
    eng = engine_factory(queue={"max_texts_per_job": 1}).start()
    xadd_jobs(r, "embed", [{"id": "two", "texts": ["a", "b"], "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="error result")
    assert eng.stop() == 0
    listed = run_cli("dead", "list", config=eng.config)
    entry = json.loads(listed.stdout.splitlines()[0])
    assert entry["job_id"] == "two" and "exceed the limit of 1" in entry["reason"]
    fixed = engine_factory(name="fixed.conf").start()
    out = run_cli("dead", "requeue", entry["dead_id"], config=fixed.config)
    assert out.returncode == 0 and "requeued 1" in out.stderr
    wait_for(lambda: r.llen("done") == 2, what="result after requeue")
    assert r.hget("it:result:two", "status") == b"ok"
    assert r.xlen("it:dead") == 0
    assert fixed.stop() == 0


def test_unreachable_redis_fails_start_up_with_exit_69(workdir):
    from conftest import Engine, free_port, write_config
    cfg = write_config(workdir + "/nored.conf", free_port(), redis={"startup_deadline_ms": 300})
    e = Engine(cfg).start(wait_ready=False)
    assert e.proc.wait(timeout=20) == 69
    assert "Redis is unreachable" in e.read_log()


def test_invalid_config_starts_nothing_and_exits_78(redis_server, workdir):
    from conftest import Engine, write_config
    cfg = write_config(workdir + "/bad.conf", redis_server.port, queue={"read_count": 0, "block_msx": 3})
    e = Engine(cfg).start(wait_ready=False)
    assert e.proc.wait(timeout=20) == 78
    log = e.read_log()
    assert "bad.conf:" in log and "queue.read_count" in log and "did you mean" in log
    assert "connecting to Redis" not in log
    assert redis_server.client().dbsize() == 0
    chk = run_cli("check-config", config=cfg)
    assert chk.returncode == 78 and "queue.read_count" in chk.stderr
