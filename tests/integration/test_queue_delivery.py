"""At-least-once delivery with exactly one result per job: volume, crashes, Redis restarts,
duplicates, max_attempts and graceful stop, all against a real redis-server and the real
binary."""
import json
import os
import signal
import threading
import time

import pytest

from conftest import hash_vector, run_cli, wait_for, xadd_jobs


def result_count(r, prefix="it"):
    return sum(1 for _ in r.scan_iter(match=prefix + ":result:*", count=5000))


def assert_exactly_once(r, ids, reply="done"):
    """Every id has one ok result, and the reply list names each id exactly once (a job that ran
    twice would have been notified twice)."""
    notified = [x.decode() for x in r.lrange(reply, 0, -1)]
    assert len(notified) == len(ids), "notified %d times for %d jobs" % (len(notified), len(ids))
    assert set(notified) == set(ids)
    p = r.pipeline(transaction=False)
    for i in ids:
        p.hget("it:result:" + i, "status")
    statuses = p.execute()
    missing = [i for i, s in zip(ids, statuses) if s != b"ok"]
    assert not missing, "jobs without an ok result: %s" % missing[:5]
    assert r.xlen("it:jobs:embed") == 0
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 0
    assert r.xlen("it:dead") == 0


@pytest.mark.parametrize("workers", [1, 4])
def test_ten_thousand_jobs_give_ten_thousand_results_exactly_once(redis_server, engine_factory, workers):
    r = redis_server.client()
    ids = ["j%05d" % i for i in range(10000)]
    xadd_jobs(r, "embed", [{"id": i, "text": "text number " + i, "reply_to": "done"} for i in ids])
    eng = engine_factory(workers=workers).start()
    wait_for(lambda: r.llen("done") >= 10000, timeout=120, what="10,000 results")
    time.sleep(0.3)
    assert_exactly_once(r, ids)
    # Spot-check vectors against an independent derivation of the test backend's output.
    for i in ids[::997]:
        got = json.loads(r.hget("it:result:" + i, "embeddings"))[0]
        assert got == pytest.approx(hash_vector("text number " + i), abs=1e-6)
    assert eng.stop() == 0


def test_kill9_mid_batch_then_restart_reclaims_and_finishes_every_job_once(redis_server, engine_factory):
    r = redis_server.client()
    ids = ["k%04d" % i for i in range(3000)]
    xadd_jobs(r, "embed", [{"id": i, "text": i, "reply_to": "done"} for i in ids])
    # 100 ms per batch of 32 on 2 workers: ~5 s for all, so the kill surely lands mid-run even on
    # a loaded machine.
    slow = {"WEAVER_TEST_HASH_DELAY_MS": "100"}
    first = engine_factory(workers=2, env=slow, queue={"read_count": 32}).start()
    wait_for(lambda: r.llen("done") >= 200, what="some progress")
    first.kill9()
    pending = r.xpending("it:jobs:embed", "weaver")["pending"]
    assert pending > 0, "the kill should leave delivered, unfinished jobs behind"
    assert r.llen("done") < len(ids)
    second = engine_factory(workers=2, name="second.conf").start()
    wait_for(lambda: r.llen("done") >= len(ids), timeout=120, what="all jobs after restart")
    time.sleep(2)  # any late duplicate would show up as an extra notification
    assert_exactly_once(r, ids)
    assert "reclaimed" in second.read_log()
    assert second.stop() == 0


def test_redis_restart_mid_run_loses_nothing(redis_server, engine_factory):
    r = redis_server.client()
    ids = ["r%04d" % i for i in range(4000)]
    jobs = [{"id": i, "text": i, "reply_to": "done"} for i in ids]
    xadd_jobs(r, "embed", jobs[:2000])
    eng = engine_factory(workers=2, env={"WEAVER_TEST_HASH_DELAY_MS": "5"}).start()
    wait_for(lambda: r.llen("done") >= 300, what="progress before the restart")
    redis_server.stop()
    time.sleep(1.0)
    redis_server.start()
    r = redis_server.client()
    xadd_jobs(r, "embed", jobs[2000:])
    wait_for(lambda: r.llen("done") >= len(ids), timeout=120, what="all jobs after the Redis restart")
    time.sleep(1)
    assert_exactly_once(r, ids)
    assert "reconnected" in eng.read_log()
    assert eng.stop() == 0


def test_duplicate_delivery_of_a_finished_job_is_not_run_or_written_twice(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory().start()
    xadd_jobs(r, "embed", [{"id": "dup", "text": "first", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="first result")
    first = r.hgetall("it:result:dup")
    # Same id again (a producer retry), same reply list: acknowledged, not rerun, not renotified.
    xadd_jobs(r, "embed", [{"id": "dup", "text": "second", "reply_to": "done"}])
    wait_for(lambda: r.xlen("it:jobs:embed") == 0, what="duplicate acknowledged")
    time.sleep(0.3)
    assert r.hgetall("it:result:dup") == first
    assert r.llen("done") == 1
    # A different reply list is told about the existing result.
    xadd_jobs(r, "embed", [{"id": "dup", "text": "third", "reply_to": "other"}])
    wait_for(lambda: r.llen("other") == 1, what="notification on the new list")
    assert r.hgetall("it:result:dup") == first
    assert eng.stop() == 0


def test_job_delivered_more_than_max_attempts_goes_to_dead_letters(redis_server, engine_factory):
    r = redis_server.client()
    r.xgroup_create("it:jobs:embed", "weaver", id="0", mkstream=True)
    r.xgroup_create("it:jobs:generate", "weaver", id="0", mkstream=True)
    xadd_jobs(r, "embed", [{"id": "poison", "text": "x", "reply_to": "done"}])
    # Two consumers that "died" after taking it: two deliveries already counted.
    r.xreadgroup("weaver", "ghost-1", {"it:jobs:embed": ">"})
    eid = r.xpending_range("it:jobs:embed", "weaver", "-", "+", 10)[0]["message_id"]
    r.xclaim("it:jobs:embed", "weaver", "ghost-2", 0, [eid])
    eng = engine_factory(queue={"max_attempts": 2, "visibility_timeout_ms": 500}).start()
    wait_for(lambda: r.llen("done") == 1, what="dead-lettered result")
    res = r.hgetall("it:result:poison")
    assert res[b"status"] == b"error"
    assert b"gave up after 3 deliveries" in res[b"error"]
    dead = r.xrange("it:dead")
    assert len(dead) == 1 and dead[0][1][b"job_id"] == b"poison"
    assert json.loads(dead[0][1][b"job"])["text"] == "x"
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 0
    assert eng.stop() == 0


def test_sigterm_finishes_in_flight_generation_and_exits_zero(redis_server, engine_factory):
    r = redis_server.client()
    # The echo backend emits 4 bytes a step: 1000 steps of 2 ms, about 2 s in flight.
    eng = engine_factory(env={"WEAVER_TEST_ECHO_STEP_MS": "2"}).start()
    long_prompt = "y" * 4000
    xadd_jobs(r, "generate", [{"id": "g", "prompt": long_prompt, "max_tokens": 4000, "reply_to": "done"}])
    wait_for(lambda: r.xpending("it:jobs:generate", "weaver")["pending"] == 1, what="generation started")
    eng.proc.send_signal(signal.SIGTERM)
    assert eng.proc.wait(timeout=20) == 0
    assert r.hget("it:result:g", "text") == long_prompt.encode()
    assert r.xpending("it:jobs:generate", "weaver")["pending"] == 0


def test_sigterm_grace_expiry_leaves_jobs_pending_not_lost(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory(env={"WEAVER_TEST_HASH_DELAY_MS": "3000"}, queue={"shutdown_grace_ms": 200}).start()
    xadd_jobs(r, "embed", [{"id": "slow", "text": "x", "reply_to": "done"}])
    wait_for(lambda: r.xpending("it:jobs:embed", "weaver")["pending"] == 1, what="job taken")
    eng.proc.send_signal(signal.SIGTERM)
    assert eng.proc.wait(timeout=20) == 0
    # Either it finished in time or it is still pending for another consumer: never lost.
    finished = r.exists("it:result:slow")
    pending = r.xpending("it:jobs:embed", "weaver")["pending"]
    assert finished or pending == 1


def test_lease_is_extended_while_a_long_generation_runs(redis_server, engine_factory):
    r = redis_server.client()
    # 1500 steps of 3 ms (4.5 s or more) with a 1 s visibility timeout: without lease extension
    # the other engine would reclaim and rerun the job.
    slow = {"WEAVER_TEST_ECHO_STEP_MS": "3"}
    a = engine_factory(env=slow, queue={"visibility_timeout_ms": 1000}).start()
    b = engine_factory(env=slow, name="b.conf", queue={"visibility_timeout_ms": 1000}).start()
    xadd_jobs(r, "generate", [{"id": "long", "prompt": "z" * 6000, "max_tokens": 4000, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="long generation")
    time.sleep(1.5)
    assert r.llen("done") == 1
    assert "reclaimed" not in a.read_log() + b.read_log()
    assert a.stop() == 0 and b.stop() == 0


def test_consumers_of_gone_engines_are_pruned_but_never_with_pending_jobs(redis_server, engine_factory):
    r = redis_server.client()
    r.xgroup_create("it:jobs:embed", "weaver", id="0", mkstream=True)
    r.xgroup_create("it:jobs:generate", "weaver", id="0", mkstream=True)
    r.xgroup_createconsumer("it:jobs:embed", "weaver", "gone-empty")
    xadd_jobs(r, "embed", [{"id": "held", "text": "x", "reply_to": "done"}])
    r.xreadgroup("weaver", "gone-holding", {"it:jobs:embed": ">"})  # it dies holding the job
    time.sleep(1.2)
    eng = engine_factory(queue={"prune_idle_ms": 1000, "visibility_timeout_ms": 60000}).start()
    names = lambda: {c["name"].decode() for c in r.xinfo_consumers("it:jobs:embed", "weaver")}
    wait_for(lambda: "gone-empty" not in names(), what="pruning")
    assert "gone-holding" in names(), "a consumer holding a pending job is kept"
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 1
    assert "removed 1 idle embed consumers" in eng.read_log()
    assert eng.stop() == 0
