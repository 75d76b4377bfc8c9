"""embedder.precision in the daemon, with real weights and a real Redis: precision is not part of
the cohort pin's identity, so a bf16 engine joins a cohort pinned by an fp32 one (its probe is
within the pin's cosine 0.9999) while an int8 engine is refused with the pin's per-field report
(exit 65, only the probe differs) and the pin is left as it was; the precision that runs is in the
`ready:` line and in `status` (text and JSON); a bf16 engine serves jobs whose vectors are the
fp32 reference's within bf16's rounding; on a cpu forced below AVX-512 (WEAVER_CPU_ISA=avx2) a
bf16 config starts, warns and runs fp32."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import SOURCE_DIR, run_cli, wait_for, xadd_jobs

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "reference"))
from reference_bert import Reference, cosine  # noqa: E402

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")
EXIT_PIN_MISMATCH = 65


def cpu_has(flag):
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        return any(flag in line.split() for line in f if line.startswith("flags"))


@pytest.fixture(scope="module")
def model_dir():
    if not os.path.isfile(os.path.join(MODEL, "model.safetensors")):
        pytest.fail("models/all-MiniLM-L6-v2 is not unpacked (ops/setup.sh installs it)")
    return MODEL


def native(engine_factory, precision, name, env=None):
    return engine_factory(name=name, env=env, decoder={"enabled": False},
                          embedder={"backend": "native", "snapshot": MODEL, "precision": precision})


def test_bf16_joins_an_fp32_cohort_and_int8_is_refused_by_the_probe(redis_server, engine_factory, model_dir):
    if not (cpu_has("avx512_bf16") and cpu_has("avx512_vnni")):
        pytest.skip("this cpu runs bf16/int8 as fp32: nothing to tell apart")
    r = redis_server.client()
    native(engine_factory, "fp32", "fp32.conf").start(timeout=120).stop()
    pin = r.hgetall("it:pin:default")
    eng = native(engine_factory, "bf16", "bf16.conf").start(timeout=120)
    log = eng.read_log()
    assert "matches the pin" in log, log
    assert "embedder precision bf16" in log and "precision bf16, token budget" in log, log
    assert eng.stop() == 0
    rc, log = native(engine_factory, "int8", "int8.conf").run_to_exit(timeout=120)
    assert rc == EXIT_PIN_MISMATCH, log
    assert "probe: pinned (stored vector), found cosine 0.99" in log, log
    for field in ("model_id:", "snapshot_hash:", "dim:", "pooling:"):
        assert field not in log, log  # precision is not identity: only the probe differs
    assert r.hgetall("it:pin:default") == pin


def test_status_and_jobs_of_a_bf16_engine(redis_server, engine_factory, model_dir):
    if not cpu_has("avx512_bf16"):
        pytest.skip("this cpu runs bf16 as fp32")
    r = redis_server.client()
    eng = native(engine_factory, "bf16", "bf16.conf").start(timeout=120)
    # a consumer is listed once it has read from the stream
    wait_for(lambda: "ready, precision bf16" in run_cli("status", config=eng.config).stdout, timeout=30,
             what="status line")
    js = json.loads(run_cli("status", "--json", config=eng.config).stdout)
    assert [c.get("precision") for c in js["embed"]["consumers"]] == ["bf16"], js
    texts = ["A man is eating food.", "word " * 300, "", "Café naïve résumé, 東京"]
    xadd_jobs(r, "embed", [{"id": "b", "texts": texts, "reply_to": "done"}])
    wait_for(lambda: r.llen("done") == 1, timeout=60, what="result")
    got = json.loads(r.hget("it:result:b", "embeddings"))
    ref = Reference(MODEL)
    for t, v in zip(texts, got):
        c = cosine(np.array(v, dtype=np.float32), ref.embed(t))
        assert 0.9999 <= c < 0.9999999, (t[:30], c)  # within bf16's rounding, and really rounded
    assert eng.stop() == 0


def test_bf16_on_a_cpu_without_avx512_bf16_starts_warns_and_runs_fp32(redis_server, engine_factory, model_dir):
    eng = native(engine_factory, "bf16", "capped.conf", env={"WEAVER_CPU_ISA": "avx2"}).start(timeout=120)
    log = eng.read_log()
    assert "embedder.precision bf16: WEAVER_CPU_ISA caps the kernels below avx512; running fp32" in log, log
    assert "embedder precision fp32" in log, log
    wait_for(lambda: "ready, precision fp32" in run_cli("status", config=eng.config).stdout, timeout=30,
             what="status line")
    assert eng.stop() == 0
