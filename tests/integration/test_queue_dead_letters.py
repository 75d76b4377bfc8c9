"""Dead letters in bulk: `dead requeue --all` sends every dead job of both kinds back to its own
stream and they run again, and queue.dead_letter_maxlen bounds the dead-letter stream
(approximately, as XADD MAXLEN ~ trims: whole stream nodes only)."""
import json

from conftest import run_cli, wait_for, xadd_jobs


def results(r, ids):
    return {i: {k.decode(): v for k, v in r.hgetall("it:result:" + i).items()} for i in ids}


def test_dead_requeue_all_runs_every_dead_job_of_both_kinds_again(redis_server, engine_factory):
    r = redis_server.client()
    # Limits that make these jobs dead; the engine started after the requeue has the defaults.
    strict = engine_factory(name="strict.conf", queue={"max_texts_per_job": 1, "max_tokens": 8}).start()
    embeds = [{"id": "e%d" % i, "texts": ["a%d" % i, "b%d" % i], "reply_to": "done"} for i in range(3)]
    gens = [{"id": "g%d" % i, "prompt": "echo %d" % i, "max_tokens": 16, "reply_to": "done"} for i in range(2)]
    xadd_jobs(r, "embed", embeds)
    xadd_jobs(r, "generate", gens)
    ids = [j["id"] for j in embeds + gens]
    wait_for(lambda: r.llen("done") == len(ids), what="error results")
    assert all(v["status"] == b"error" for v in results(r, ids).values())
    assert strict.stop() == 0
    assert r.xlen("it:dead") == len(ids)

    fixed = engine_factory(name="fixed.conf").start()
    out = run_cli("dead", "requeue", "--all", config=fixed.config)
    assert out.returncode == 0, out.stderr
    assert "requeued %d jobs" % len(ids) in out.stderr
    wait_for(lambda: r.llen("done") == 2 * len(ids), what="results after requeue")
    res = results(r, ids)
    for i in ids:
        assert res[i]["status"] == b"ok", (i, res[i])
    for g in gens:  # a generate job went back to the generate stream: test-echo answered it
        assert b"echo" in res[g["id"]]["text"]
    for e in embeds:
        assert len(json.loads(res[e["id"]]["embeddings"])) == 2
    assert r.xlen("it:dead") == 0
    again = run_cli("dead", "requeue", "--all", config=fixed.config)
    assert again.returncode == 0 and "requeued 0 jobs" in again.stderr
    assert fixed.stop() == 0


def test_dead_letter_stream_is_capped_near_dead_letter_maxlen_keeping_the_newest(redis_server, engine_factory):
    r = redis_server.client()
    # MAXLEN ~ N trims whole stream nodes only, so the stream keeps at least N entries and fewer
    # than N + (entries per node). A small node size makes that bound tight enough to assert.
    node = 10
    r.config_set("stream-node-max-entries", node)
    maxlen, n = 20, 150
    eng = engine_factory(queue={"max_texts_per_job": 1, "dead_letter_maxlen": maxlen}).start()
    ids = ["d%03d" % i for i in range(n)]
    xadd_jobs(r, "embed", [{"id": i, "texts": ["x", "y"]} for i in ids])
    wait_for(lambda: sum(r.exists("it:result:" + i) for i in ids) == n, timeout=120, what="every error result")
    length = r.xlen("it:dead")
    assert maxlen <= length < maxlen + node, length
    dead_ids = [f[b"job_id"].decode() for _, f in r.xrange("it:dead")]
    assert ids[-1] in dead_ids and ids[0] not in dead_ids  # the oldest were trimmed
    assert eng.stop() == 0
