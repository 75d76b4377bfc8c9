"""Documented exit codes of the command-line tools that no other test reaches: `enqueue --wait`
giving up (75, docs/operations.md), `pin verify` with an embedder that cannot be opened (66),
and the offline `embed` command's 66 / 74 / 78 (docs/embedding.md; 64, 65 and 75 are in
tests/reference/test_embed_cli.py)."""
import json
import os
import time

import pytest

from conftest import SOURCE_DIR, run_cli, write_config

MODEL = os.path.join(SOURCE_DIR, "models", "all-MiniLM-L6-v2")


def test_enqueue_wait_with_no_engine_times_out_with_exit_75_and_leaves_the_job_queued(redis_server, engine_factory):
    r = redis_server.client()
    eng = engine_factory()  # its config; the engine itself is not started
    t0 = time.monotonic()
    out = run_cli("enqueue", "embed", "--text", "nobody is listening", "--wait", "--timeout", "2", config=eng.config)
    took = time.monotonic() - t0
    assert out.returncode == 75, out.stderr
    assert "timed out with 0 of 1 results" in out.stderr
    assert out.stdout == ""
    assert 1.8 <= took < 15, took  # it waited for --timeout, not less
    assert r.xlen("it:jobs:embed") == 1  # the job stays for an engine to run later
    # The same command with an engine running gets the result and exits 0.
    eng.start()
    out = run_cli("enqueue", "embed", "--text", "somebody is", "--wait", "--timeout", "30", config=eng.config)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["status"] == "ok"
    assert eng.stop() == 0


def test_pin_verify_exits_66_when_the_embedder_cannot_be_opened_and_writes_nothing(redis_server, workdir):
    r = redis_server.client()
    broken = os.path.join(workdir, "broken-snapshot")
    os.mkdir(broken)  # every file the config check looks for is there, but none holds a model
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        with open(os.path.join(broken, name), "w") as f:
            f.write("not a model\n")
    cfg = write_config(os.path.join(workdir, "broken.conf"), redis_server.port,
                       embedder={"backend": "native", "snapshot": broken})
    out = run_cli("pin", "verify", config=cfg)
    assert out.returncode == 66, (out.returncode, out.stderr)
    assert "pin verify:" in out.stderr and "config.json" in out.stderr
    assert out.stdout == ""  # no report: nothing was compared
    assert r.keys("*") == []  # verify writes nothing, also when it fails


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    assert os.path.isfile(os.path.join(MODEL, "model.safetensors")), \
        "models/all-MiniLM-L6-v2 is not installed (ops/setup.sh installs it)"
    p = tmp_path_factory.mktemp("embed") / "c.jsonl"
    p.write_text("".join(json.dumps({"id": i, "text": "line %d" % i}) + "\n" for i in range(3)))
    return str(p)


def embed(*args):
    return run_cli("embed", "--no-progress", *args, timeout=300)


def test_offline_embed_exits_0_on_a_good_run(corpus, tmp_path):
    out = embed("--snapshot", MODEL, "--input", corpus, "--output", str(tmp_path / "v.npy"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "v.npy").stat().st_size == 128 + 3 * 384 * 4


def test_offline_embed_exits_66_when_the_input_cannot_be_opened(tmp_path):
    out = embed("--snapshot", MODEL, "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "v.npy"))
    assert out.returncode == 66, out.stderr
    assert "missing.jsonl: cannot open" in out.stderr
    assert not (tmp_path / "v.npy").exists()


def test_offline_embed_exits_74_when_the_output_cannot_be_written(corpus, tmp_path):
    out = embed("--snapshot", MODEL, "--input", corpus, "--output", str(tmp_path / "no-such-dir" / "v.npy"))
    assert out.returncode == 74, out.stderr
    assert "for writing" in out.stderr
    # A device that accepts the open but fails every write (a full disk) is an I/O error too.
    if os.path.exists("/dev/full"):
        out = embed("--snapshot", MODEL, "--input", corpus, "--output", "/dev/full")
        assert out.returncode == 74, (out.returncode, out.stderr)


def test_offline_embed_exits_78_on_a_bad_config(corpus, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("embedder: { threads = -1; };\n")
    out = embed("--config", str(bad), "--input", corpus, "--output", str(tmp_path / "v.npy"))
    assert out.returncode == 78, out.stderr
    assert "embedder.threads" in out.stderr
    # A valid config whose embedder is not the native backend is refused the same way.
    other = write_config(str(tmp_path / "hash.conf"), 6379)  # test-hash embedder
    out = embed("--config", other, "--input", corpus, "--output", str(tmp_path / "v.npy"))
    assert out.returncode == 78, out.stderr
    assert "offline runs use the native backend only" in out.stderr
