"""The cohort pin with real weights: the native backend pins all-MiniLM-L6-v2 with its snapshot
hash; a copy of the snapshot with one weight tensor changed is refused (the snapshot hash always
sees it, the probe vector sees any change that matters); the remote backend serving the same
snapshot (TEI and OpenAI APIs, the numpy reference behind them) passes the native pin and the
other way round, and a remote service serving the changed copy is refused by its probe.

Needs the native backend in the build (embedder_native_ops linked into weaver-engine) and the
model unpacked under models/; otherwise every test here is SKIPPED with the reason."""
import json
import os
import shutil
import struct

from remote_service import RemoteService  # before numpy: it pins the BLAS thread count

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import READY, SOURCE_DIR, run_cli, wait_for, write_config  # noqa: E402

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")
EXIT_PIN_MISMATCH = 65
TENSOR = "encoder.layer.0.attention.output.dense.weight"


@pytest.fixture(scope="module")
def model_dir():
    if not os.path.isfile(os.path.join(MODEL, "model.safetensors")):
        pytest.fail("models/all-MiniLM-L6-v2 is not unpacked (ops/setup.sh installs it)")
    return MODEL


@pytest.fixture
def native_ok(redis_server, workdir, model_dir):
    cfg = write_config(os.path.join(workdir, "probe-native.conf"), redis_server.port,
                       embedder={"backend": "native", "snapshot": model_dir}, pin={"cohort": "probe-native"})
    out = run_cli("pin", "verify", config=cfg, timeout=120)
    assert out.returncode == 1, out.stderr  # no pin yet: the backend opened and embedded the probe


def start(engine, timeout=120):
    return engine.start(timeout=timeout)


def refused(engine, timeout=120):
    return engine.run_to_exit(timeout)


def copy_with_one_tensor_changed(src, workdir, noise):
    """A copy of the snapshot (same directory name, so the same model_id) whose TENSOR got
    Gaussian noise of `noise` times its standard deviation (noise 0: one element +1e-3)."""
    dst = os.path.join(workdir, "changed-%g" % noise, os.path.basename(src))
    shutil.copytree(src, dst)
    path = os.path.join(dst, "model.safetensors")
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        name = next(k for k in header if k.endswith(TENSOR))
        a, b = header[name]["data_offsets"]
        f.seek(8 + n + a)
        w = np.frombuffer(f.read(b - a), dtype="<f4").copy()
        if noise:
            w += (np.random.default_rng(0).standard_normal(w.shape) * w.std() * noise).astype("<f4")
        else:
            w[0] += 1e-3
        f.seek(8 + n + a)
        f.write(w.tobytes())
    return dst


def native(engine_factory, snapshot, name="native.conf"):
    return engine_factory(name=name, embedder={"backend": "native", "snapshot": snapshot})


def remote(engine_factory, url, api, name):
    return engine_factory(name=name, embedder={"backend": "remote", "url": url, "api": api,
                                               "model_id": "all-MiniLM-L6-v2"})


def test_native_first_boot_pins_the_snapshot_hash_and_second_boot_matches(redis_server, engine_factory, native_ok,
                                                                           model_dir):
    r = redis_server.client()
    start(native(engine_factory, model_dir)).stop()
    pin = {k.decode(): v for k, v in r.hgetall("it:pin:default").items()}
    assert pin["model_id"] == b"all-MiniLM-L6-v2" and pin["dim"] == b"384"
    assert pin["pooling"] == b"mean" and pin["normalize"] == b"true" and pin["max_seq_len"] == b"256"
    assert len(pin["snapshot_hash"]) == 64 and int(pin["snapshot_hash"], 16) >= 0
    eng = start(native(engine_factory, model_dir, name="again.conf"))
    log = eng.read_log()
    assert "matches the pin" in log and "not compared" not in log
    assert eng.stop() == 0


@pytest.mark.parametrize("noise", [0, 0.5])
def test_a_copy_with_one_tensor_changed_is_refused(redis_server, engine_factory, native_ok, model_dir, workdir,
                                                   noise):
    start(native(engine_factory, model_dir)).stop()
    changed = copy_with_one_tensor_changed(model_dir, workdir, noise)
    rc, log = refused(native(engine_factory, changed, name="changed.conf"))
    assert rc == EXIT_PIN_MISMATCH, log
    assert "snapshot_hash: pinned " in log
    assert "model_id:" not in log and "dim:" not in log  # same name, same shape: only the weights differ
    if noise:
        assert "probe: pinned (stored vector), found cosine 0.99" in log  # the probe sees a real change
    else:
        assert "probe:" not in log  # 1e-3 in one weight: the snapshot hash still catches it


@pytest.mark.parametrize("api", ["tei", "openai"])
def test_remote_service_on_the_same_snapshot_passes_the_native_pin(redis_server, engine_factory, native_ok,
                                                                    model_dir, api):
    start(native(engine_factory, model_dir)).stop()
    svc = RemoteService(model_dir).start()
    try:
        eng = start(remote(engine_factory, svc.url, api, "remote-%s.conf" % api))
        log = eng.read_log()
        assert "matches the pin" in log and "not compared: snapshot_hash" in log
        assert eng.stop() == 0
    finally:
        svc.stop()


def test_native_passes_a_pin_written_by_the_remote_backend(redis_server, engine_factory, native_ok, model_dir):
    svc = RemoteService(model_dir).start()
    try:
        start(remote(engine_factory, svc.url, "tei", "remote-first.conf")).stop()
    finally:
        svc.stop()
    eng = start(native(engine_factory, model_dir))
    assert "matches the pin" in eng.read_log()
    assert eng.stop() == 0


def test_remote_service_serving_a_changed_tensor_is_refused_by_the_probe(redis_server, engine_factory, native_ok,
                                                                          model_dir, workdir):
    start(native(engine_factory, model_dir)).stop()
    changed = copy_with_one_tensor_changed(model_dir, workdir, 0.5)
    svc = RemoteService(changed).start()
    try:
        rc, log = refused(remote(engine_factory, svc.url, "tei", "remote-changed.conf"))
        assert rc == EXIT_PIN_MISMATCH, log
        assert "probe: pinned (stored vector), found cosine 0.99" in log
    finally:
        svc.stop()
