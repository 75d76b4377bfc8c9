"""Timing behaviours of the daemon: a Redis that comes up within redis.startup_deadline_ms is
waited for (docs/operations.md, start-up step 2), and batch.max_wait_ms gathers jobs that arrive
shortly after one another into one batch (docs/config.md). The batch is observed through the
result's `timings.queued_ms` while the test-hash embedder takes a fixed time per call
(WEAVER_TEST_HASH_DELAY_MS): jobs of one batch all start when it starts; a job that missed the
batch waits for the whole previous call."""
import json
import os
import time

from conftest import READY, Engine, RedisServer, wait_for, write_config, xadd_jobs


def test_engine_started_before_redis_waits_for_it_within_the_deadline(workdir):
    srv = RedisServer(workdir)  # a free port, nothing listening yet
    cfg = write_config(os.path.join(workdir, "late.conf"), srv.port, redis={"startup_deadline_ms": 15000})
    eng = Engine(cfg).start(wait_ready=False)
    try:
        time.sleep(1.0)
        assert eng.proc.poll() is None, eng.read_log()  # still trying, not exited 69
        assert READY not in eng.read_log()
        srv.start()
        t0 = time.monotonic()
        wait_for(lambda: READY in eng.read_log() or eng.proc.poll() is not None, timeout=15, what="engine ready")
        assert eng.proc.poll() is None and READY in eng.read_log(), eng.read_log()
        # Redis appeared ~1 s into the deadline; the capped backoff (2 s) must notice within a few seconds.
        assert time.monotonic() - t0 < 5
        r = srv.client()
        xadd_jobs(r, "embed", [{"id": "late", "text": "redis came up late", "reply_to": "done"}])
        wait_for(lambda: r.llen("done") == 1, what="result")
        assert r.hget("it:result:late", "status") == b"ok"
        assert eng.stop() == 0
    finally:
        if eng.proc.poll() is None:
            eng.proc.kill()
            eng.proc.wait()
        srv.stop()


DELAY_MS = 1500    # every embed call of the test-hash backend takes this long
SPACING_S = 0.1    # between two XADDs
N_JOBS = 3


def enqueue_spaced_and_time(r):
    """Three one-text jobs SPACING_S apart; returns {id: (queued_ms, reply arrival in ms)}."""
    ids = ["j%d" % i for i in range(N_JOBS)]
    for i, job_id in enumerate(ids):
        if i:
            time.sleep(SPACING_S)
        xadd_jobs(r, "embed", [{"id": job_id, "text": "text %d" % i, "reply_to": "done"}])
    got = {}
    deadline = time.time() + 30
    while len(got) < N_JOBS and time.time() < deadline:
        item = r.blpop("done", timeout=1)
        if item:
            got[item[1].decode()] = time.monotonic() * 1000
    assert len(got) == N_JOBS, got
    out = {}
    for job_id in ids:
        res = r.hgetall("it:result:" + job_id)
        assert res[b"status"] == b"ok", res
        out[job_id] = (json.loads(res[b"timings"])["queued_ms"], got[job_id])
    return out


def test_jobs_arriving_within_max_wait_run_as_one_batch(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory(batch={"max_wait_ms": 400}, env={"WEAVER_TEST_HASH_DELAY_MS": str(DELAY_MS)}).start()
    t = enqueue_spaced_and_time(r)
    queued = [q for q, _ in t.values()]
    arrivals = [a for _, a in t.values()]
    # One batch: no job waited behind another's embed call (that would be ~DELAY_MS), and all
    # results were written together.
    assert max(queued) < DELAY_MS * 0.6, t
    assert max(arrivals) - min(arrivals) < DELAY_MS * 0.3, t
    assert eng.stop() == 0


def test_without_max_wait_a_job_arriving_a_moment_later_waits_for_the_next_batch(redis_server, engine_factory):
    """The control for the test above: the same arrivals with max_wait_ms = 0 do not share a batch."""
    r = redis_server.client()
    eng = engine_factory(batch={"max_wait_ms": 0}, env={"WEAVER_TEST_HASH_DELAY_MS": str(DELAY_MS)}).start()
    t = enqueue_spaced_and_time(r)
    assert t["j0"][0] < DELAY_MS * 0.3, t       # the first ran at once, alone
    assert t["j1"][0] > DELAY_MS * 0.6, t       # the second waited for the first call
    assert t["j1"][1] - t["j0"][1] > DELAY_MS * 0.6, t
    assert eng.stop() == 0
