"""A bad start-up fails in validation, before Redis: a snapshot directory without the files the
native embedder loads, a decoder model that is not GGUF, a queue prefix too long for the keys,
or a CUDA device for a backend without CUDA code make `check-config` and the daemon exit 78
with `file:line: key: reason`, and the daemon writes nothing to Redis (no cohort pin). A secret
file that others can read is a warning, printed by `check-config` and at every start."""
import os
import re

from conftest import READY, run_cli, write_config

EX_CONFIG = 78


def line_of(path, text):
    """1-based line of the first line of `path` containing `text`."""
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if text in line:
                return n
    raise AssertionError("%s not in %s" % (text, path))


def empty_dir(workdir, name):
    d = os.path.join(workdir, name)
    os.mkdir(d)
    return d


def not_gguf(workdir):
    path = os.path.join(workdir, "model.safetensors")
    with open(path, "wb") as f:
        f.write(b'{"__metadata__": {}}' + b"\0" * 64)
    return path


def assert_refused_before_redis(redis_server, engine, expected):
    """The daemon exits 78 with the expected message and leaves Redis empty."""
    rc, log = engine.run_to_exit(timeout=30)
    assert rc == EX_CONFIG, log
    assert expected in log, log
    assert "nothing was started" in log
    assert "connecting to Redis" not in log
    assert redis_server.client().keys("*") == []  # no pin, no streams, no heartbeat


def test_empty_snapshot_directory_is_a_config_error(workdir, redis_server, engine_factory):
    snap = empty_dir(workdir, "all-MiniLM-L6-v2")
    eng = engine_factory(embedder={"backend": "native", "snapshot": snap})
    expected = '%s:%d: embedder.snapshot: "%s" is not a snapshot the native embedder can load: ' \
               'missing config.json, model.safetensors, tokenizer.json (or vocab.txt)' % (
                   eng.config, line_of(eng.config, "snapshot = "), snap)
    out = run_cli("check-config", config=eng.config)
    assert out.returncode == EX_CONFIG, out.stderr
    assert expected in out.stderr.splitlines()
    assert_refused_before_redis(redis_server, eng, expected)


def test_decoder_model_that_is_not_gguf_is_a_config_error_and_no_pin_is_written(workdir, redis_server,
                                                                                 engine_factory):
    model = not_gguf(workdir)
    # The test-hash embedder passes: before this rule, the engine wrote the cohort pin and only
    # then failed to open the decoder.
    eng = engine_factory(decoder={"backend": "native", "model": model})
    expected = '%s:%d: decoder.model: "%s" is not a GGUF file (it does not start with "GGUF")' % (
        eng.config, line_of(eng.config, "model = "), model)
    out = run_cli("check-config", config=eng.config)
    assert out.returncode == EX_CONFIG, out.stderr
    assert expected in out.stderr.splitlines()
    assert_refused_before_redis(redis_server, eng, expected)


def test_prefix_too_long_for_the_redis_keys_is_a_config_error(redis_server, engine_factory):
    eng = engine_factory(queue={"prefix": "p" * 119})
    expected = "%s:%d: queue.prefix: is 119 bytes long; at most 118 fit in the Redis keys the engine " \
               "builds" % (eng.config, line_of(eng.config, "prefix = "))
    out = run_cli("check-config", config=eng.config)
    assert out.returncode == EX_CONFIG and expected in out.stderr.splitlines(), out.stderr
    assert_refused_before_redis(redis_server, eng, expected)


def test_cuda_device_for_the_native_decoder_needs_a_cuda_build(workdir, redis_server, engine_factory):
    # Without CUDA built in, cuda:N is unknown to the build: a config error before Redis. With
    # it, the config is valid and start-up stops on the missing GPU, naming the device.
    gguf = os.path.join(workdir, "m.gguf")
    with open(gguf, "wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00")
    eng = engine_factory(decoder={"backend": "native", "model": gguf, "device": "cuda:0"})
    prefix = '%s:%d: decoder.device: "cuda:0": ' % (eng.config, line_of(eng.config, "device = "))
    out = run_cli("check-config", config=eng.config)
    if out.returncode == 0:
        rc, log = eng.run_to_exit()  # this header-only file is no model: start-up refuses it
        assert rc != 0, log
        return
    assert out.returncode == EX_CONFIG, out.stderr
    assert any(l.startswith(prefix) and "this build has no CUDA support" in l for l in out.stderr.splitlines()), out.stderr
    assert_refused_before_redis(redis_server, eng, prefix)


def test_secret_file_others_can_read_is_a_warning_at_check_and_at_start(workdir, engine_factory):
    token = os.path.join(workdir, "embed.token")
    with open(token, "w") as f:
        f.write("t0ken\n")
    os.chmod(token, 0o644)
    eng = engine_factory(embedder={"token_file": token})
    warning = '%s:%d: embedder.token_file: warning: "%s" is readable by group and others (mode 0644); ' \
              'chmod 600 it' % (eng.config, line_of(eng.config, "token_file = "), token)
    out = run_cli("check-config", config=eng.config)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines()[0] == warning
    assert "configuration is valid" in out.stderr
    eng.start()
    log = eng.read_log()
    assert warning in log.splitlines() and log.index(warning) < log.index(READY)
    assert eng.stop() == 0

    os.chmod(token, 0o600)
    out = run_cli("check-config", config=eng.config)
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
