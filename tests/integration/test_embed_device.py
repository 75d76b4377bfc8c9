"""The native embedder on `cuda:N` as an operator meets it, through the real binary and Redis.
On this CI machine there is no GPU: `cuda:N` is the real start-up error (exit 66, before any
Redis write). The rest runs the engine's device path on the test-only fake device
($WEAVER_TEST_FAKE_DEVICE, test builds): a token budget sized from a given free-memory figure,
out-of-memory splits that never fail a job, and a lost device (a sticky error) that stops the
engine with exit 75 and leaves its jobs pending. What only a real GPU proves is ops/gpu-check.sh's."""
import json
import os
import re
import sys

import pytest

from conftest import SOURCE_DIR, Engine, run_cli, wait_for, write_config, xadd_jobs

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "reference"))
from reference_bert import Reference, cosine  # noqa: E402

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")
TEXTS = ["A man is eating food.", "The girl is carrying a baby.", "word " * 300, "",
         "Café naïve résumé, 東京", "short", "a somewhat longer sentence about nothing in particular"]


def cuda_in_build(workdir):
    cfg = write_config(os.path.join(workdir, "probe.conf"), 1,
                       embedder={"backend": "native", "snapshot": MODEL, "device": "cuda:0"},
                       decoder={"enabled": False})
    out = run_cli("check-config", config=cfg)
    return out.returncode == 0


def no_fake_env():
    env = dict(os.environ)
    env.pop("WEAVER_TEST_FAKE_DEVICE", None)
    return env


def test_cuda_device_that_is_not_there_stops_start_up_before_redis(workdir, redis_server):
    r = redis_server.client()
    cfg = write_config(os.path.join(workdir, "w.conf"), redis_server.port,
                       embedder={"backend": "native", "snapshot": MODEL, "device": "cuda:99"},
                       decoder={"enabled": False})
    rc, log = Engine(cfg, env=no_fake_env()).run_to_exit()
    if not cuda_in_build(workdir):
        # a build without CUDA refuses the device as a config error, before anything
        assert rc == 78, log
        assert 'embedder.device: "cuda:99": this build has no CUDA support' in log
    else:
        assert rc == 66, log
        # what was found: the runtime's own error on a machine without a GPU or driver (here:
        # 35, insufficient driver), else how many devices it sees
        assert re.search(r'embedder.device "cuda:99": (no usable CUDA device: cudaGetDeviceCount: \w+ \(\d+: '
                         r'|the CUDA runtime sees \d+ device)', log), log
        assert "connecting to Redis" not in log
    assert r.dbsize() == 0


def test_offline_embed_on_a_missing_cuda_device_exits_66(workdir):
    inp = os.path.join(workdir, "c.jsonl")
    with open(inp, "w") as f:
        f.write('{"id": "a", "text": "hello"}\n')
    env = no_fake_env()
    import subprocess
    from conftest import BIN
    out = subprocess.run([BIN, "embed", "--snapshot", MODEL, "--input", inp, "--output",
                          os.path.join(workdir, "v.npy"), "--device", "cuda:99"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 66, out.stderr
    assert "cuda" in out.stderr and ("cudaGetDeviceCount" in out.stderr or "device" in out.stderr)


@pytest.fixture(scope="module")
def reference():
    assert os.path.isfile(os.path.join(MODEL, "model.safetensors")), "run ops/setup.sh to install the model"
    return Reference(MODEL)


def fake_engine(workdir, port, fake, workers=2, **batch):
    if not cuda_in_build(workdir):
        pytest.skip("a build without CUDA refuses cuda:N (tested above)")
    cfg = write_config(os.path.join(workdir, "w.conf"), port,
                       embedder={"backend": "native", "snapshot": MODEL, "device": "cuda:0",
                                 "precision": "fp32"},
                       decoder={"enabled": False}, batch=dict({"token_budget": 0}, **batch))
    return Engine(cfg, workers=workers, env=dict(os.environ, WEAVER_TEST_FAKE_DEVICE=fake))


def test_budget_from_device_memory_is_shown_and_jobs_match_the_reference(workdir, redis_server, reference):
    r = redis_server.client()
    eng = fake_engine(workdir, redis_server.port, "free_mib=300").start(timeout=60)
    log = eng.read_log()
    budget = int(re.search(r"ready: .*token budget (\d+)", log).group(1))
    # fp32 MiniLM: (300 MiB less the weights (~87 MiB) and two 41 MiB workspaces) * 0.9 / 2
    # workers / 15372 bytes a token = about 4050 tokens, far under the 65536 cap
    assert 3900 < budget < 4200, log
    assert re.search(r"embedder opened: .*token budget %d \(automatic\)" % budget, log)
    xadd_jobs(r, "embed", [{"id": "j", "texts": TEXTS, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=120, what="the result")
    res = r.hgetall("it:result:j")
    assert res[b"status"] == b"ok", res
    for text, v in zip(TEXTS, json.loads(res[b"embeddings"])):
        assert cosine(v, reference.embed(text)) >= 0.99999, text[:30]
    assert eng.stop() == 0


def test_budget_cap_from_config_wins(workdir, redis_server):
    eng = fake_engine(workdir, redis_server.port, "free_mib=300", token_budget_max=777).start(timeout=60)
    assert re.search(r"ready: .*token budget 777\b", eng.read_log())
    assert eng.stop() == 0


def test_too_little_device_memory_is_a_start_up_error(workdir, redis_server):
    rc, log = fake_engine(workdir, redis_server.port, "free_mib=120", workers=4).run_to_exit(timeout=60)
    assert rc == 66, log
    assert "not even 256 tokens fit" in log


def test_out_of_memory_splits_the_batch_and_fails_no_job(workdir, redis_server, reference):
    r = redis_server.client()
    # the 3rd and 4th arena allocations after start-up's probe fail: the pack splits, twice
    eng = fake_engine(workdir, redis_server.port, "free_mib=300,oom_at=11,oom_count=2", workers=1).start(timeout=60)
    xadd_jobs(r, "embed", [{"id": "j", "texts": TEXTS, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=120, what="the result")
    res = r.hgetall("it:result:j")
    assert res[b"status"] == b"ok", res
    for text, v in zip(TEXTS, json.loads(res[b"embeddings"])):
        assert cosine(v, reference.embed(text)) >= 0.99999, text[:30]
    assert r.xlen("it:dead") == 0
    assert eng.stop() == 0


def test_lost_device_stops_the_engine_and_acknowledges_nothing(workdir, redis_server):
    r = redis_server.client()
    # start-up's pin probe runs 56 operations; the 100th is in the first job's batch
    eng = fake_engine(workdir, redis_server.port, "free_mib=300,sticky_at=100", workers=1).start(timeout=60)
    xadd_jobs(r, "embed", [{"id": "j", "texts": TEXTS, "reply_to": "done"}])
    rc = eng.proc.wait(timeout=60)
    log = eng.read_log()
    assert rc == 75, log
    assert "illegal memory access" in log and "device is lost" in log
    assert r.xpending("it:jobs:embed", "weaver")["pending"] == 1  # left for another consumer
    assert not r.exists("it:result:j") and r.llen("done") == 0
