"""`weaver-engine embed` as a data engineer uses it: streaming .npy + ids file, a resumed run is
byte-identical to an uninterrupted one, bad lines stop the run with their line number unless
--skip-bad records them (zero row, empty id, an entry in .errors.jsonl), plain .txt input."""
import json
import os

import numpy as np
import pytest

from embed_fixtures import run, snapshot, weaver_bin  # noqa: F401 (fixtures)

LINES = [json.dumps({"id": i, "text": f"sentence number {i} " + "word " * (i % 37)}) for i in range(90)]


@pytest.fixture()
def corpus(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return p


def embed(run, snapshot, inp, out, *extra, env=None, check=True):
    return run("embed", "--snapshot", snapshot, "--input", str(inp), "--output", str(out), "--no-progress",
               "--max-texts", "8", *extra, env=env, check=check)


def test_a_resumed_run_is_byte_identical_to_an_uninterrupted_one(run, snapshot, corpus, tmp_path):
    embed(run, snapshot, corpus, tmp_path / "full.npy")
    p = embed(run, snapshot, corpus, tmp_path / "part.npy", env={"WEAVER_EMBED_STOP_AFTER_ROWS": "20"}, check=False)
    assert p.returncode == 75, p.stderr
    assert os.path.exists(tmp_path / "part.npy.ckpt")
    with open(tmp_path / "part.npy", "ab") as f:  # a crash can leave a torn tail: resume must drop it
        f.write(b"\x01" * 999)
    p = embed(run, snapshot, corpus, tmp_path / "part.npy", "--resume")
    assert "resuming after 24 rows" in p.stderr
    assert (tmp_path / "full.npy").read_bytes() == (tmp_path / "part.npy").read_bytes()
    assert (tmp_path / "full.ids.txt").read_bytes() == (tmp_path / "part.ids.txt").read_bytes()
    assert not os.path.exists(tmp_path / "part.npy.ckpt")
    v = np.load(tmp_path / "full.npy")
    assert v.shape == (90, 384)
    assert open(tmp_path / "full.ids.txt").read().split() == [str(i) for i in range(90)]


def test_resume_refuses_a_checkpoint_made_with_other_settings(run, snapshot, corpus, tmp_path):
    p = embed(run, snapshot, corpus, tmp_path / "p.npy", env={"WEAVER_EMBED_STOP_AFTER_ROWS": "8"}, check=False)
    assert p.returncode == 75
    p = embed(run, snapshot, corpus, tmp_path / "p.npy", "--resume", "--dtype", "f16", check=False)
    assert p.returncode != 0 and "other settings" in p.stderr


def test_a_bad_line_stops_the_run_and_names_its_line(run, snapshot, tmp_path):
    inp = tmp_path / "bad.jsonl"
    inp.write_bytes(b'{"id": 1, "text": "fine"}\n{"id": 2, "text": "also fine"}\n{"id": 3, "txt": "oops"}\n')
    p = embed(run, snapshot, inp, tmp_path / "o.npy", check=False)
    assert p.returncode == 65
    assert "bad.jsonl:3:" in p.stderr and "text" in p.stderr


def test_skip_bad_records_bad_lines_and_keeps_row_numbers(run, snapshot, tmp_path):
    inp = tmp_path / "bad.jsonl"
    inp.write_bytes(b'{"id": "a", "text": "fine"}\n'
                    b'not json at all\n'
                    b'{"id": "c", "text": "bad utf8 \xff\xfe here"}\n'
                    b'{"id": "d", "text": "fine again"}\n'
                    b'{"text": "no id"}\n')
    embed(run, snapshot, inp, tmp_path / "o.npy", "--skip-bad")
    v = np.load(tmp_path / "o.npy")
    assert v.shape == (5, 384)
    assert not v[1].any() and not v[2].any() and not v[4].any()
    assert v[0].any() and v[3].any()
    assert open(tmp_path / "o.ids.txt").read().split("\n")[:5] == ["a", "", "", "d", ""]
    errs = [json.loads(l) for l in open(tmp_path / "o.errors.jsonl")]
    assert [e["line"] for e in errs] == [2, 3, 5]
    assert "UTF-8" in errs[1]["error"]


def test_plain_text_input_uses_line_numbers_as_ids(run, snapshot, tmp_path):
    inp = tmp_path / "t.txt"
    inp.write_text("first line\n\nthird line\r\n", encoding="utf-8")
    embed(run, snapshot, inp, tmp_path / "o.npy")
    v = np.load(tmp_path / "o.npy")
    assert v.shape == (3, 384) and v[1].any()  # an empty line is the empty text, not a skipped row
    assert open(tmp_path / "o.ids.txt").read().split() == ["1", "2", "3"]


def test_usage_errors_exit_64(run, tmp_path):
    p = run("embed", "--input", "x.jsonl", check=False)
    assert p.returncode == 64
    p = run("embed", "--snapshot", str(tmp_path), "--input", "x", "--output", "y.npy", check=False)
    assert p.returncode == 66 and "config.json" in p.stderr
