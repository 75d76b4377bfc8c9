"""The cohort pin as an operator sees it (test-hash backend, so only the gate is under test):
the first engine of a cohort writes the pin, later ones must match it, another embedder is
refused with exit 65 and every differing field printed, before anything else starts; `pin
show|verify|reset`; engines booting at once agree on one pin."""
import json
import os
import struct
import subprocess
import time

import pytest

from conftest import READY, BIN, Engine, hash_vector, run_cli, wait_for, write_config, xadd_jobs

PROBE_TEXT = "weaver-engine cohort probe: the quick brown fox jumps over the lazy dog 0123456789"
EXIT_PIN_MISMATCH = 65


@pytest.fixture(autouse=True, scope="module")
def pin_command_is_wired():
    out = subprocess.run([BIN, "pin"], capture_output=True, text=True)
    assert "unknown command" not in out.stderr, (
        "this weaver-engine has no `pin` command: engine/main.c must dispatch to cli_pin "
        "and engine/daemon.c call pin_gate (see engine/pin.h)")




def start(engine, timeout=30):
    return engine.start(timeout=timeout)


def boot(engine, timeout=20):
    return engine.run_to_exit(timeout)


def pin_of(r, cohort="default", prefix="it"):
    return {k.decode(): v for k, v in r.hgetall("%s:pin:%s" % (prefix, cohort)).items()}


def test_first_boot_writes_the_pin_with_identity_and_probe_vector(redis_server, engine_factory):
    r = redis_server.client()
    eng = start(engine_factory())
    assert "first engine of the cohort" in eng.read_log()
    pin = pin_of(r)
    assert pin["model_id"] == b"test-hash" and pin["dim"] == b"8"
    assert pin["pooling"] == b"mean" and pin["normalize"] == b"true" and pin["max_seq_len"] == b"512"
    assert pin["snapshot_hash"] == b"0" * 64
    assert pin["probe_text"].decode() == PROBE_TEXT
    # The probe is the backend's raw pooled vector of the probe text, as f32 little-endian.
    probe = struct.unpack("<8f", pin["probe"])
    assert list(probe) == pytest.approx(hash_vector(PROBE_TEXT, dim=8, normalize=False), abs=1e-7)
    assert int(pin["created_at"]) > 1.6e12 and pin["created_by"]
    assert eng.stop() == 0


def test_second_boot_verifies_and_serves(redis_server, engine_factory):
    r = redis_server.client()
    start(engine_factory()).stop()
    created = pin_of(r)["created_at"]
    eng = start(engine_factory(name="second.conf"))
    assert "matches the pin it:pin:default" in eng.read_log()
    assert pin_of(r)["created_at"] == created  # verified, not rewritten
    xadd_jobs(r, "embed", [{"id": "j", "text": "x", "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, what="result")
    assert r.hget("it:result:j", "status") == b"ok"
    assert eng.stop() == 0


def test_another_dimension_is_refused_with_exit_65_and_the_differing_fields(redis_server, engine_factory):
    r = redis_server.client()
    start(engine_factory()).stop()
    rc, log = boot(engine_factory(name="dim16.conf", embedder={"dim": 16}))
    assert rc == EXIT_PIN_MISMATCH, log
    assert "dim: pinned 8, found 16" in log
    assert "probe: pinned 8 floats, found 16 floats" in log
    assert "refusing to start" in log
    assert pin_of(r)["dim"] == b"8"  # the pin is never overwritten by a refused engine


def test_a_refused_engine_stops_before_workers_groups_and_readiness(redis_server, engine_factory):
    """Boot order: the pin is checked right after the embedder opens, before decoders, buffers,
    consumer groups, workers, heartbeats: a refused engine leaves no trace in Redis."""
    r = redis_server.client()
    r.hset("it:pin:default", mapping={"model_id": "other-model", "dim": "8", "pooling": "mean",
                                      "normalize": "true", "max_seq_len": "512",
                                      "probe": struct.pack("<8f", *([0.5] * 8))})
    rc, log = boot(engine_factory())
    assert rc == EXIT_PIN_MISMATCH, log
    assert "model_id: pinned other-model, found test-hash" in log
    assert log.index("opening embedder") < log.index("model_id: pinned")
    assert READY not in log
    assert not r.exists("it:jobs:embed") and not r.exists("it:jobs:generate")  # no MKSTREAM / group
    assert r.keys("it:consumer:*") == []  # no heartbeat: `status` never shows it ready


def test_cohorts_are_pinned_independently(redis_server, engine_factory):
    r = redis_server.client()
    start(engine_factory()).stop()
    eng = start(engine_factory(name="b.conf", embedder={"dim": 16}, pin={"cohort": "big"}))
    assert pin_of(r, "big")["dim"] == b"16" and pin_of(r)["dim"] == b"8"
    assert eng.stop() == 0


def test_pin_show_prints_the_pin_as_json(redis_server, engine_factory, workdir):
    start(engine_factory()).stop()
    cfg = write_config(os.path.join(workdir, "cli.conf"), redis_server.port)
    out = run_cli("pin", "show", "--cohort", "default", config=cfg)
    assert out.returncode == 0, out.stderr
    pin = json.loads(out.stdout)
    assert pin["cohort"] == "default" and pin["key"] == "it:pin:default"
    assert pin["model_id"] == "test-hash" and pin["dim"] == 8 and pin["normalize"] is True
    assert pin["probe"] == pytest.approx(hash_vector(PROBE_TEXT, dim=8, normalize=False), abs=1e-7)
    missing = run_cli("pin", "show", "--cohort", "nobody", config=cfg)
    assert missing.returncode == 1 and "has no pin" in missing.stderr


def test_pin_verify_compares_without_writing(redis_server, workdir):
    r = redis_server.client()
    cfg8 = write_config(os.path.join(workdir, "v8.conf"), redis_server.port)
    cfg16 = write_config(os.path.join(workdir, "v16.conf"), redis_server.port, embedder={"dim": 16})
    none = run_cli("pin", "verify", config=cfg8)
    assert none.returncode == 1 and "has no pin" in none.stderr
    assert not r.exists("it:pin:default")  # verify never creates a pin
    start(Engine(cfg8)).stop()  # pin dim 8 through a real boot
    ok = run_cli("pin", "verify", config=cfg8)
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(ok.stdout)
    assert rep["match"] is True and rep["differences"] == [] and rep["probe_cosine"] == pytest.approx(1.0)
    bad = run_cli("pin", "verify", config=cfg16)
    assert bad.returncode == EXIT_PIN_MISMATCH
    rep = json.loads(bad.stdout)
    assert rep["match"] is False
    assert {"field": "dim", "pinned": "8", "found": "16"} in rep["differences"]
    assert "dim: pinned 8, found 16" in bad.stderr


def test_pin_reset_needs_yes_then_lets_a_new_model_pin_the_cohort(redis_server, engine_factory, workdir):
    r = redis_server.client()
    start(engine_factory()).stop()
    cfg = write_config(os.path.join(workdir, "reset.conf"), redis_server.port)
    no = run_cli("pin", "reset", "--cohort", "default", config=cfg)
    assert no.returncode == 64 and "--yes" in no.stderr
    assert r.exists("it:pin:default")
    rc, log = boot(engine_factory(name="dim16.conf", embedder={"dim": 16}))
    assert rc == EXIT_PIN_MISMATCH
    yes = run_cli("pin", "reset", "--cohort", "default", "--yes", config=cfg)
    assert yes.returncode == 0 and "deleted" in yes.stderr
    assert not r.exists("it:pin:default")
    again = run_cli("pin", "reset", "--yes", config=cfg)
    assert again.returncode == 0 and "nothing deleted" in again.stderr
    eng = start(engine_factory(name="dim16b.conf", embedder={"dim": 16}))
    assert "first engine of the cohort" in eng.read_log()
    assert pin_of(r)["dim"] == b"16"
    assert eng.stop() == 0


def test_pin_cli_rejects_bad_usage(redis_server, workdir):
    cfg = write_config(os.path.join(workdir, "u.conf"), redis_server.port)
    assert run_cli("pin", config=cfg).returncode == 64
    assert run_cli("pin", "frobnicate", config=cfg).returncode == 64
    assert run_cli("pin", "show", "--cohort", "", config=cfg).returncode == 64
    assert run_cli("pin", "show", "--cohort", "two words", config=cfg).returncode == 64


def test_concurrent_first_boots_of_one_model_agree_on_one_pin(redis_server, engine_factory):
    r = redis_server.client()
    engines = [engine_factory(name="c%d.conf" % i) for i in range(6)]
    for e in engines:
        e.start(wait_ready=False)
    for e in engines:
        wait_for(lambda: READY in e.read_log() or e.proc.poll() is not None,
                 timeout=30, what="engine start")
    logs = [e.read_log() for e in engines]
    assert all(READY in log for log in logs), logs
    assert sum("first engine of the cohort" in log for log in logs) == 1
    assert sum("matches the pin" in log for log in logs) == 5
    for e in engines:
        assert e.stop() == 0


def test_concurrent_first_boots_of_two_models_let_exactly_one_win(redis_server, engine_factory):
    r = redis_server.client()
    engines = [engine_factory(name="m%d.conf" % i, embedder={"dim": 8 if i % 2 else 12}) for i in range(6)]
    for e in engines:
        e.start(wait_ready=False)
    for e in engines:
        wait_for(lambda: READY in e.read_log() or e.proc.poll() is not None,
                 timeout=30, what="engine start or refusal")
    time.sleep(0.3)
    winner_dim = int(pin_of(r)["dim"])
    for i, e in enumerate(engines):
        dim = 8 if i % 2 else 12
        if dim == winner_dim:
            assert READY in e.read_log(), e.read_log()
            assert e.stop() == 0
        else:
            assert e.proc.wait(timeout=20) == EXIT_PIN_MISMATCH, e.read_log()
            assert "dim: pinned %d, found %d" % (winner_dim, dim) in e.read_log()


def test_a_key_that_is_not_a_pin_refuses_start_and_names_it(redis_server, engine_factory):
    r = redis_server.client()
    r.hset("it:pin:default", mapping={"owner": "somebody else"})
    rc, log = boot(engine_factory())
    assert rc == EXIT_PIN_MISMATCH, log
    assert "it:pin:default is not a valid pin" in log
    assert READY not in log
