"""Read-ahead (engine/worker.c process_read_ahead): on a deep queue a worker without a decoder
reads the next batch while it runs the current one, and writes a batch's results while it runs
the next. These tests check that this changes nothing about delivery: every job still gets
exactly one result through volume, a stop with a batch read ahead, and a Redis restart with
replies still owed; and that the read-ahead really happens (a consumer holds two reads)."""
import signal
import threading
import time

from conftest import wait_for, xadd_jobs
from test_queue_delivery import assert_exactly_once

NO_DECODER = {"enabled": False}  # an engine with a decoder does not read ahead


def consumer_pending(r, stream="it:jobs:embed"):
    return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]: c["pending"]
            for c in r.xinfo_consumers(stream, "weaver")}


class PendingWatch:
    """Samples the most entries any one consumer had pending, while jobs run."""

    def __init__(self, r):
        self.r, self.most, self.done = r, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            try:
                self.most = max([self.most] + list(consumer_pending(self.r).values()))
            except Exception:  # noqa: BLE001 - the group may not exist yet
                pass
            time.sleep(0.005)

    def stop(self):
        self.done.set()
        self.thread.join(2)
        return self.most


def test_read_ahead_holds_two_reads_and_every_job_gets_one_result(redis_server, engine_factory):
    r = redis_server.client()
    ids = ["a%05d" % i for i in range(4000)]
    xadd_jobs(r, "embed", [{"id": i, "text": "text " + i, "reply_to": "done"} for i in ids])
    watch = PendingWatch(r)
    # 30 ms per batch of 64: each read is held long enough for the sampler to see the next one.
    eng = engine_factory(workers=2, env={"WEAVER_TEST_HASH_DELAY_MS": "30"}, decoder=NO_DECODER,
                         queue={"read_count": 64}).start()
    wait_for(lambda: r.llen("done") >= len(ids), timeout=120, what="4,000 results")
    most = watch.stop()
    time.sleep(0.3)
    assert_exactly_once(r, ids)
    # Without read-ahead a consumer never holds more than one read (read_count entries).
    assert most > 64, "no consumer ever held more than one read: %d" % most
    assert eng.stop() == 0


def test_sigterm_with_a_batch_read_ahead_releases_it_and_loses_nothing(redis_server, engine_factory):
    r = redis_server.client()
    ids = ["s%04d" % i for i in range(300)]
    xadd_jobs(r, "embed", [{"id": i, "text": i, "reply_to": "done"} for i in ids])
    # A long visibility timeout: the second engine gets the read-ahead batch at once only if the
    # first released it; left merely pending it would wait 30 s.
    queue = {"read_count": 20, "visibility_timeout_ms": 30000, "consumer": "one"}
    first = engine_factory(env={"WEAVER_TEST_HASH_DELAY_MS": "400"}, decoder=NO_DECODER, queue=queue).start()
    wait_for(lambda: consumer_pending(r).get("one-0", 0) >= 40, timeout=30,
             what="a batch running and the next read ahead")
    t0 = time.time()
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=20) == 0
    assert time.time() - t0 < 5, "the stop took the whole shutdown grace"
    log = first.read_log()
    assert "grace period over" not in log
    assert "jobs read ahead are not run; 20 released to the group" in log, log[-2000:]
    # The released entries are still pending (nothing deleted or acknowledged unrun), idle as
    # long as the visibility timeout, so any consumer's next XAUTOCLAIM takes them.
    left = r.xpending_range("it:jobs:embed", "weaver", min="-", max="+", count=1000, consumername="one-0")
    assert len(left) == 20
    assert all(e["time_since_delivered"] >= 30000 for e in left), left[:3]
    done_before = r.llen("done")
    assert done_before + 20 <= len(ids)
    second = engine_factory(name="second.conf", decoder=NO_DECODER,
                            queue=dict(queue, consumer="two")).start()
    wait_for(lambda: r.llen("done") >= len(ids), timeout=20, what="every job after the stop")
    time.sleep(0.5)
    assert_exactly_once(r, ids)
    assert "reclaimed 20 embed jobs" in second.read_log()
    assert second.stop() == 0


def test_redis_restart_with_finish_and_read_in_flight_loses_and_doubles_nothing(redis_server, engine_factory):
    r = redis_server.client()
    ids = ["f%04d" % i for i in range(600)]
    xadd_jobs(r, "embed", [{"id": i, "text": i, "reply_to": "done"} for i in ids])
    # A long visibility timeout keeps heartbeats and reclaims (sync calls) out of the window.
    eng = engine_factory(env={"WEAVER_TEST_HASH_DELAY_MS": "150"}, decoder=NO_DECODER,
                         queue={"read_count": 32, "visibility_timeout_ms": 30000}).start()
    wait_for(lambda: r.llen("done") >= 96, timeout=60, what="read-ahead under way")
    # Writes pause: the worker's next finish and read-ahead wait inside Redis, unanswered, while
    # its reads of result keys still pass; then Redis dies with those replies owed (SIGKILL: a
    # graceful stop would run the paused commands first). What Redis wrote to its AOF before the
    # pause survives a killed process.
    r.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
    time.sleep(1.0)
    redis_server.proc.kill()
    redis_server.proc.wait()
    redis_server.proc = None
    time.sleep(0.5)
    redis_server.start()
    r = redis_server.client()
    wait_for(lambda: r.llen("done") >= len(ids), timeout=120, what="every job after the restart")
    time.sleep(1.0)
    assert_exactly_once(r, ids)
    log = eng.read_log()
    assert "reading jobs ahead failed" in log, log[-3000:]
    assert "reconnected" in log
    assert eng.stop() == 0


def test_refused_results_written_after_the_next_batch_ran_become_error_results(redis_server, engine_factory):
    """A batch's results are taken back from Redis only after the next batch ran: refusals must
    still be rewritten into error results with dead letters, from the right batch's buffers."""
    r = redis_server.client()
    r.set("not-a-hash", "x")
    r.set("not-a-list", "y")
    jobs, ok, bad_reply, bad_target = [], [], [], []
    for i in range(480):
        jid = "h%04d" % i
        if i % 10 == 3:
            jobs.append({"id": jid, "text": jid, "reply_to": "not-a-list"})
            bad_reply.append(jid)
        elif i % 10 == 7:
            jobs.append({"id": jid, "texts": [jid, "b"], "reply_to": "done",
                         "target": {"keys": ["doc:" + jid, "not-a-hash"], "field": "v"}})
            bad_target.append(jid)
        else:
            jobs.append({"id": jid, "text": jid, "reply_to": "done"})
            ok.append(jid)
    xadd_jobs(r, "embed", jobs)
    watch = PendingWatch(r)
    eng = engine_factory(env={"WEAVER_TEST_HASH_DELAY_MS": "20"}, decoder=NO_DECODER,
                         queue={"read_count": 16}).start()
    wait_for(lambda: r.xlen("it:jobs:embed") == 0, timeout=120, what="every job finished")
    most = watch.stop()
    assert most > 16, "the engine never read ahead: %d" % most
    statuses = {j["id"]: r.hget("it:result:" + j["id"], "status") for j in jobs}
    assert all(statuses[j] == b"ok" for j in ok)
    for j in bad_reply:
        res = r.hgetall("it:result:" + j)
        assert res[b"status"] == b"error" and b"reply_to names a key of the wrong type" in res[b"error"], j
    for j in bad_target:
        res = r.hgetall("it:result:" + j)
        assert res[b"status"] == b"error" and b"target key 2 names a key of the wrong type" in res[b"error"], j
        assert not r.exists("doc:" + j)
    notified = sorted(x.decode() for x in r.lrange("done", 0, -1))
    assert notified == sorted(ok + bad_target)
    dead = r.xrange("it:dead")
    assert sorted(f[b"job_id"].decode() for _, f in dead) == sorted(bad_reply + bad_target)
    # Rewritten from the batch's own results at once: not left pending and redelivered.
    assert all(f[b"deliveries"] == b"1" for _, f in dead)
    assert "reclaimed" not in eng.read_log()
    assert r.get("not-a-list") == b"y" and r.get("not-a-hash") == b"x"
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 0
    assert eng.stop() == 0
