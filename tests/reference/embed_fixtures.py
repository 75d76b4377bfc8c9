"""Fixtures for the embedder reference checks (imported by test_embed_*.py; not a conftest so
other areas' tests in this directory are unaffected): the weaver-engine binary ($WEAVER_BIN), the
all-MiniLM-L6-v2 snapshot under models/ (skipped when absent), and a runner for its sub-commands."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
SOURCE = os.environ.get("WEAVER_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..")))


@pytest.fixture(scope="session")
def weaver_bin():
    b = os.environ.get("WEAVER_BIN")
    if not b or not os.path.exists(b):
        pytest.fail("WEAVER_BIN is not set to a built weaver-engine")
    return b


@pytest.fixture(scope="session")
def snapshot():
    d = os.path.join(SOURCE, "models", "all-MiniLM-L6-v2")
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        pytest.fail("models/all-MiniLM-L6-v2 is not installed (ops/setup.sh installs it)")
    return d


@pytest.fixture(scope="session")
def run(weaver_bin):
    def _run(*args, env=None, check=True):
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([weaver_bin, *args], capture_output=True, text=True, env=e, timeout=900)
        if check and p.returncode != 0:
            raise AssertionError(f"{args[0]} exited {p.returncode}: {p.stderr[-2000:]}")
        return p
    return _run


def write_texts(path, texts):
    """JSONL input for `embed`/`tokenize`: ids 0..n-1, texts as given (non-ASCII kept)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
    return str(path)
