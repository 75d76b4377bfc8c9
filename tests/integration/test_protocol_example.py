"""The redis-py producer example in docs/protocol.md, run verbatim against a running engine."""
import os
import re
import subprocess
import sys

from conftest import SOURCE_DIR


def test_protocol_doc_python_example_runs_against_the_engine(redis_server, engine_factory):
    doc = open(os.path.join(SOURCE_DIR, "docs", "protocol.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 1, "docs/protocol.md should hold exactly one python example"
    eng = engine_factory().start()
    env = dict(os.environ, REDIS_PORT=str(redis_server.port), WEAVER_PREFIX="it")
    out = subprocess.run([sys.executable, "-c", blocks[0]], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok 2 vectors of dim 8"
    assert eng.stop() == 0
