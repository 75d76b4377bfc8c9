"""A hostile producer against the real engine and a real redis-server: the keys a job names
(reply_to, target) stay inside the namespaces the config allows and never touch the engine's
own keys; a job id shared by both streams, a trimmed entry, control characters and NUL bytes
are handled exactly; finishing is bounded; leases hold while long work runs; signals behave as
docs/operations.md says."""
import json
import os
import signal
import struct
import subprocess
import time

import pytest
from conftest import Engine, hash_vector, wait_for, write_config, xadd_jobs

# The engine under attack allows no extra namespaces: only it:reply:* for replies, no targets.
STRICT = {"queue": {"reply_patterns": "", "target_patterns": ""}}


def strict_engine(engine_factory, name="weaver.conf", workers=1, **extra):
    groups = {g: dict(kv) for g, kv in STRICT.items()}
    for g, kv in extra.items():
        groups.setdefault(g, {}).update(kv)
    return engine_factory(name=name, workers=workers, **groups)


def result(r, job_id):
    return {k.decode(): v for k, v in r.hgetall("it:result:" + job_id).items()}


def dead_letters(r):
    return {f[b"job_id"].decode(): {k.decode(): v for k, v in f.items()} for _, f in r.xrange("it:dead")}


ENGINE_KEYS = ["it:pin:default", "it:result:victim", "it:dead", "it:jobs:embed", "it:jobs:generate",
               "it:consumer:whatever", "it:result:future-job"]


@pytest.mark.parametrize("key", ENGINE_KEYS)
def test_reply_to_an_engine_key_is_refused_and_the_key_is_untouched(redis_server, engine_factory, key):
    r = redis_server.client()
    eng = strict_engine(engine_factory).start()
    xadd_jobs(r, "embed", [{"id": "victim", "text": "mine", "reply_to": "it:reply:victim"}])
    wait_for(lambda: r.llen("it:reply:victim") == 1, what="the victim's result")
    before = {k: (r.type(k), r.dump(k), r.pttl(k)) for k in ENGINE_KEYS}
    xadd_jobs(r, "embed", [{"id": "attack", "text": "x", "reply_to": key}])
    wait_for(lambda: r.exists("it:result:attack"), what="the attack's error result")
    res = result(r, "attack")
    assert res["status"] == b"error"
    assert b"reply_to refused: keys under \"it:\" belong to the engine" in res["error"]
    assert "reply_to" not in res, "the refused list is not recorded as notified"
    after = {k: (r.type(k), r.dump(k), r.pttl(k)) for k in ENGINE_KEYS if k != "it:dead"}
    for k, v in after.items():
        if k in ("it:jobs:embed",):  # the attack's own entry was acknowledged and deleted
            assert v[0] == b"stream"
            continue
        assert v[:2] == before[k][:2], k + " was changed"
        assert (v[2] < 0) == (before[k][2] < 0), k + " got a TTL"
    assert r.type("it:dead") == b"stream"
    assert dead_letters(r)["attack"]["job"] == json.dumps({"id": "attack", "text": "x", "reply_to": key}).encode()
    # The engine keeps serving, and the next engine start passes the pin.
    xadd_jobs(r, "embed", [{"id": "after", "text": "y", "reply_to": "it:reply:after"}])
    wait_for(lambda: r.llen("it:reply:after") == 1, what="the next job")
    assert eng.stop() == 0
    assert strict_engine(engine_factory, name="again.conf").start().stop() == 0


def test_reply_lists_outside_the_allowed_namespaces_are_refused(redis_server, engine_factory):
    r = redis_server.client()
    r.rpush("app:queue", "their-item")
    eng = strict_engine(engine_factory).start()
    xadd_jobs(r, "embed", [{"id": "a", "text": "x", "reply_to": "app:queue"},
                           {"id": "b", "text": "x", "reply_to": "it:reply:"},
                           {"id": "c", "text": "x", "reply_to": "it:reply:mine"}])
    wait_for(lambda: r.llen("it:reply:mine") == 1, what="the allowed reply")
    wait_for(lambda: r.exists("it:result:a") and r.exists("it:result:b"), what="refusals")
    assert b"reply lists must be under \"it:reply:\" or match queue.reply_patterns" in result(r, "a")["error"]
    assert b"belong to the engine" in result(r, "b")["error"]
    assert r.lrange("app:queue", 0, -1) == [b"their-item"] and r.ttl("app:queue") == -1
    assert result(r, "c")["status"] == b"ok"
    assert 0 < r.ttl("it:reply:mine") <= 86400, "a reply list the engine created expires"
    assert eng.stop() == 0


def test_configured_patterns_open_namespaces_and_an_existing_list_keeps_its_ttl(redis_server, engine_factory):
    r = redis_server.client()
    r.rpush("app:replies:long-lived", "earlier")
    eng = strict_engine(engine_factory, queue={"reply_patterns": "app:replies:*",
                                               "target_patterns": "vec:*"}).start()
    xadd_jobs(r, "embed", [{"id": "p", "text": "hello", "reply_to": "app:replies:long-lived",
                            "target": {"key": "vec:1", "field": "v"}},
                           {"id": "q", "text": "hello", "target": {"key": "other:1", "field": "v"}}])
    wait_for(lambda: r.llen("app:replies:long-lived") == 2, what="the reply")
    wait_for(lambda: r.exists("it:result:q"), what="q")
    assert r.ttl("app:replies:long-lived") == -1, "the engine never sets a TTL on a key it did not create"
    assert r.ttl("vec:1") == -1 and len(r.hget("vec:1", "v")) == 8 * 4
    assert b"target key 1 refused: the key matches none of queue.target_patterns" in result(r, "q")["error"]
    assert not r.exists("other:1")
    assert eng.stop() == 0


def test_target_without_configured_patterns_names_the_config_key(redis_server, engine_factory):
    r = redis_server.client()
    eng = strict_engine(engine_factory).start()
    xadd_jobs(r, "embed", [{"id": "t", "text": "x", "target": {"key": "vec:1", "field": "v"},
                            "reply_to": "it:reply:t"}])
    wait_for(lambda: r.llen("it:reply:t") == 1, what="the error result")
    err = result(r, "t")["error"]
    assert b"target hashes are disabled" in err and b"queue.target_patterns" in err
    assert not r.exists("vec:1")
    assert eng.stop() == 0


def test_a_pair_of_jobs_naming_each_others_result_keys_cannot_jam_the_workers(redis_server, engine_factory):
    """The attack of issue 9: a reply_to naming another job's result key (a hash). It is refused
    before anything runs; both jobs get results, and the engine still stops promptly."""
    r = redis_server.client()
    eng = strict_engine(engine_factory, workers=2).start()
    xadd_jobs(r, "embed", [{"id": "one", "text": "a", "reply_to": "it:result:two"},
                           {"id": "two", "text": "b", "reply_to": "it:result:one"}])
    wait_for(lambda: r.exists("it:result:one") and r.exists("it:result:two"), what="both results")
    xadd_jobs(r, "embed", [{"id": "three", "text": "c", "reply_to": "it:reply:three"}])
    wait_for(lambda: r.llen("it:reply:three") == 1, what="the next job")
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 0
    t0 = time.time()
    assert eng.stop(timeout=10) == 0
    assert time.time() - t0 < 5


def test_a_job_id_used_by_both_streams_never_returns_the_other_kinds_result(redis_server, engine_factory):
    """Job ids are one namespace across kinds. The second job with a taken id is not run, its
    producer is not notified (the list would lead it to the other kind's result), and a dead
    letter with its original bytes and the reason records it."""
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [{"id": "shared", "text": "first", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="the embed job")
    gen = {"id": "shared", "prompt": "hello", "reply_to": "other"}
    xadd_jobs(r, "generate", [gen])
    wait_for(lambda: "shared" in dead_letters(r), what="the dead letter")
    d = dead_letters(r)["shared"]
    assert d["kind"] == b"generate" and json.loads(d["job"]) == gen
    assert b"already names the result of a embed job" in d["reason"]
    assert result(r, "shared")["kind"] == b"embed"
    assert r.llen("other") == 0
    assert r.xpending("it:jobs:generate", "weaver")["pending"] == 0
    assert eng.stop() == 0


def test_an_entry_trimmed_while_pending_is_counted_logged_and_dead_lettered(redis_server, engine_factory):
    r = redis_server.client()
    r.xgroup_create("it:jobs:embed", "weaver", id="0", mkstream=True)
    r.xgroup_create("it:jobs:generate", "weaver", id="0", mkstream=True)
    eid = r.xadd("it:jobs:embed", {"job": json.dumps({"id": "gone", "text": "x"})}).decode()
    r.xreadgroup("weaver", "dead-consumer", {"it:jobs:embed": ">"})
    r.xtrim("it:jobs:embed", maxlen=0)  # the producer trims it while it is pending
    time.sleep(1.6)
    eng = engine_factory().start()
    wait_for(lambda: "embed:" + eid in dead_letters(r), what="the dead letter")
    d = dead_letters(r)["embed:" + eid]
    assert d["entry"].decode() == eid and b"deleted (trimmed)" in d["reason"]
    assert "entry %s was deleted from the stream while pending" % eid in eng.read_log()
    assert eng.stop() == 0
    assert "1 stream entries found trimmed while pending" in eng.read_log()


def test_lease_holds_while_one_embed_batch_runs_longer_than_the_visibility_timeout(redis_server, engine_factory):
    r = redis_server.client()
    slow = {"WEAVER_TEST_HASH_DELAY_MS": "3500"}
    # Both engines are ready (each start probes the embedder once, 3.5 s) before the job arrives:
    # whichever takes it is busy in one batch while the other looks for stalled jobs.
    a = engine_factory(env=slow, queue={"visibility_timeout_ms": 1000}).start()
    b = engine_factory(env=slow, name="b.conf", queue={"visibility_timeout_ms": 1000}).start()
    xadd_jobs(r, "embed", [{"id": "long", "text": "x", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=30, what="the long batch")
    time.sleep(2)
    assert r.llen("done") == 1
    assert "reclaimed" not in a.read_log() + b.read_log()
    assert not dead_letters(r)
    assert a.stop() == 0 and b.stop() == 0


def test_leases_hold_for_more_than_256_generations_in_flight(redis_server, engine_factory):
    r = redis_server.client()
    slow = {"WEAVER_TEST_ECHO_STEP_MS": "5"}
    over = {"visibility_timeout_ms": 1000, "read_count": 400}
    a = engine_factory(env=slow, queue=over, decoder={"max_slots": 200}).start()
    jobs = [{"id": "g%d" % i, "prompt": "p" * 1600, "max_tokens": 1000, "reply_to": "done"} for i in range(300)]
    xadd_jobs(r, "generate", jobs)
    wait_for(lambda: r.xpending("it:jobs:generate", "weaver")["pending"] >= 280, what="jobs taken")
    b = engine_factory(env=slow, name="b.conf", queue=over).start()
    wait_for(lambda: r.llen("done") == 300, timeout=120, what="every generation")
    time.sleep(1.5)
    assert r.llen("done") == 300
    assert "reclaimed" not in b.read_log()
    assert not dead_letters(r)
    assert a.stop() == 0 and b.stop() == 0


def test_a_restart_under_a_fixed_consumer_takes_its_pending_generations_once(redis_server, engine_factory):
    r = redis_server.client()
    slow = {"WEAVER_TEST_ECHO_STEP_MS": "2"}
    fixed = {"consumer": "fixed", "visibility_timeout_ms": 60000}
    a = engine_factory(env=slow, queue=fixed).start()
    xadd_jobs(r, "generate", [{"id": "r%d" % i, "prompt": "q" * 800, "max_tokens": 400, "reply_to": "done"}
                              for i in range(6)])
    wait_for(lambda: r.xpending("it:jobs:generate", "weaver")["pending"] == 6, what="jobs taken")
    a.kill9()
    b = engine_factory(env=slow, name="b.conf", queue=fixed).start()
    wait_for(lambda: r.llen("done") == 6, timeout=60, what="every generation after the restart")
    assert not dead_letters(r), "a restart never dead-letters its own pending jobs"
    for i in range(6):
        assert result(r, "r%d" % i)["status"] == b"ok"
    assert b.stop() == 0


def test_sighup_is_ignored_and_sigpipe_does_not_kill(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    eng.proc.send_signal(signal.SIGHUP)
    eng.proc.send_signal(signal.SIGPIPE)
    time.sleep(0.5)
    assert eng.proc.poll() is None
    xadd_jobs(r, "embed", [{"id": "alive", "text": "x", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="a job after the signals")
    assert "SIGHUP: ignored" in eng.read_log()
    assert eng.stop() == 0


def test_grace_expiry_writes_nothing_after_saying_it_leaves_jobs_pending(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory(env={"WEAVER_TEST_HASH_DELAY_MS": "2500"}, queue={"shutdown_grace_ms": 300}).start()
    xadd_jobs(r, "embed", [{"id": "slow", "text": "x", "reply_to": "done"}])
    wait_for(lambda: r.xpending("it:jobs:embed", "weaver")["pending"] == 1, what="job taken")
    t0 = time.time()
    eng.proc.send_signal(signal.SIGTERM)
    assert eng.proc.wait(timeout=20) == 0
    # The 2.5 s batch is cut at its next 10 ms slice once the 0.3 s grace is over.
    assert time.time() - t0 < 1.5
    log = eng.read_log()
    assert "leaving unfinished jobs pending" in log and "leaving 1 jobs pending" in log
    assert not r.exists("it:result:slow"), "a job announced as left pending is not written"
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 1


def test_nul_characters_reach_the_embedder_and_nul_in_keys_is_refused(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", ['{"id":"nul","text":"a\\u0000b","encoding":"f32","reply_to":"done"}',
                           '{"id":"nulkey","text":"x","reply_to":"done\\u0000x"}',
                           '{"id":"nul\\u0000id","text":"x","reply_to":"done"}',
                           '{"id\\u0000x":"y","text":"x"}'])
    wait_for(lambda: r.exists("it:result:nul") and r.exists("it:result:nulkey"), what="results")
    got = struct.unpack("8f", result(r, "nul")["embeddings"])
    assert got == pytest.approx(hash_vector("a\x00b"), abs=1e-6)
    assert got != pytest.approx(hash_vector("a"), abs=1e-3)
    assert b"must not contain NUL" in result(r, "nulkey")["error"]
    wait_for(lambda: len(dead_letters(r)) == 3, what="dead letters")
    reasons = b" ".join(d["reason"] for d in dead_letters(r).values())
    assert b"field 'id' must be" in reasons and b"field names must not contain NUL" in reasons
    assert eng.stop() == 0


def test_field_names_with_newlines_cannot_forge_log_lines(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    forged = "x\n2099-01-01T00:00:00.000Z error forged line"
    xadd_jobs(r, "embed", [{"id": "forge", "text": "a", forged: 1, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="the error result")
    assert eng.stop() == 0
    lines = eng.read_log().splitlines()
    assert not any(line.startswith("2099-01-01") for line in lines)
    assert any("x\\n2099-01-01" in line for line in lines)


def test_generate_jobs_with_up_to_1024_messages_run(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": "m%d" % i} for i in range(1023)]
    xadd_jobs(r, "generate", [{"id": "many", "messages": msgs, "max_tokens": 4, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="the chat job")
    res = result(r, "many")
    assert res["status"] == b"ok", res.get("error")
    assert eng.stop() == 0



def rss_mb(pid):
    st = open("/proc/%d/status" % pid).read()
    return {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in st.splitlines() if ln.startswith(("VmRSS", "VmHWM"))}


def test_a_flood_of_maximal_jobs_keeps_peak_rss_within_64_mib_of_the_steady_state(redis_server, engine_factory):
    """64 jobs of 1024 one-letter texts at dim 384: 6 MiB of JSON result each. Results are written
    per embed chunk in calls of at most 8 MiB and the result arena shrinks back, so the engine
    holds about one chunk's results at a time, not the whole read (which took 3.7 GB for 256)."""
    r = redis_server.client()
    # Under AddressSanitizer (the suite's second pass) freed blocks sit in ASan's quarantine
    # instead of returning to the allocator; without one, the sanitized engine's RSS shows what
    # the engine itself holds. A build without ASan ignores the variable.
    asan = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=0").lstrip(":")
    eng = engine_factory(embedder={"backend": "test-hash", "dim": 384}, env={"ASAN_OPTIONS": asan}).start()
    job = lambda i: {"id": "f%d" % i, "texts": ["a"] * 1024, "reply_to": "done"}
    xadd_jobs(r, "embed", [job(i) for i in range(4)])
    wait_for(lambda: r.llen("done") == 4, what="warm-up")
    steady = rss_mb(eng.proc.pid)["VmRSS"]
    xadd_jobs(r, "embed", [job(i) for i in range(4, 68)])
    wait_for(lambda: r.llen("done") == 68, timeout=120, what="the flood")
    mem = rss_mb(eng.proc.pid)
    assert mem["VmHWM"] < steady + 64, (steady, mem)
    assert len(json.loads(r.hget("it:result:f67", "embeddings"))) == 1024
    assert eng.stop() == 0


def test_a_nul_inside_a_prompt_or_message_reaches_the_generator(redis_server, engine_factory):
    """The echo backend counts a token per 4 prompt bytes: a prompt cut at its NUL would count fewer."""
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "generate", ['{"id":"pn","prompt":"ab\\u0000cdefgh","max_tokens":1,"reply_to":"done"}',
                              '{"id":"mn","messages":[{"role":"user","content":"ab\\u0000cdefgh"}],'
                              '"max_tokens":1,"reply_to":"done"}'])
    wait_for(lambda: r.llen("done") == 2, what="both generations")
    for job_id in ("pn", "mn"):
        res = result(r, job_id)
        assert res["status"] == b"ok", res.get("error")
        assert json.loads(res["usage"])["prompt_tokens"] == 3  # ceil(9 bytes / 4)
    assert eng.stop() == 0
