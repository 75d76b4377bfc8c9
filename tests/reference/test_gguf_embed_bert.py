"""A `bert` GGUF embedder: all-MiniLM-L6-v2 converted by bert_to_gguf.py (F16 and Q8_0, regenerated
here bit-identically from models/) against llama.cpp's embedding mode on the same files
(fixtures/gguf_embed/minilm.json, from gguf_embed_make_fixtures.py): token ids equal Hugging Face
`tokenizers` on every text (the model's own tokenizer, as for snapshots), and where llama.cpp's
WordPiece gives the same ids the vectors agree: cosine >= 0.99999 for F16, >= 0.998 for Q8_0,
with the file's mean pooling and with cls and last given by embedder.pooling. The texts where
llama.cpp's ids differ from Hugging Face's are pinned (docs/embedding.md lists them); the F16
file's vectors also match the snapshot embedder's."""
import json
import os

import numpy as np
import pytest

from embed_fixtures import write_texts, run, snapshot, weaver_bin  # noqa: F401 (fixtures)
from reference_bert import cosine
from gguf_embed_make_fixtures import bert_model

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "gguf_embed", "minilm.json")
with open(FIX, encoding="utf-8") as _f:
    FX = json.load(_f)
MODELS = {m["name"]: m for m in FX["models"]}
BOUND = {"F16": 0.99999, "Q8_0": 0.998}
# Texts (by their start) where llama.cpp's WordPiece departs from Hugging Face's, as recorded.
LLAMA_DIFFERS = ("東京は", "Здравствуй", "aaaa")


@pytest.fixture(scope="module")
def files(tmp_path_factory, snapshot):  # noqa: F811
    d = tmp_path_factory.mktemp("bert")
    out = {}
    for name, m in MODELS.items():
        path = str(d / (name + ".gguf"))
        assert bert_model(m["type"], path) == m["sha256"], f"{name}: the converter drifted from the recorded file"
        out[name] = path
    return out


@pytest.fixture(scope="module")
def hf(snapshot):  # noqa: F811
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(snapshot, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def embed(run, tmp_path, src, texts, tag):  # noqa: F811
    inp = write_texts(tmp_path / f"{tag}.jsonl", texts)
    out = tmp_path / f"{tag}.npy"
    args = ["--config", src] if src.endswith(".conf") else ["--snapshot", src]
    run("embed", *args, "--input", inp, "--output", str(out), "--no-progress", "--no-normalize")
    return np.load(out)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_token_ids_follow_hugging_face_and_the_recorded_llama_cpp_differences(run, files, hf, tmp_path, name):  # noqa: F811
    texts = MODELS[name]["cases"][0]["texts"]
    inp = write_texts(tmp_path / "t.jsonl", [t["text"] for t in texts])
    ours = [json.loads(x) for x in run("tokenize", "--snapshot", files[name], "--input", inp).stdout.splitlines()]
    differs = []
    for t, ids in zip(texts, ours):
        assert ids == hf.encode(t["text"]).ids, t["text"][:40]
        if t["tokens"] != ids:
            differs.append(t["text"])
    assert sorted(d[:12] for d in differs) == sorted(d[:12] for d in (t["text"] for t in texts)
                                                     if d.startswith(LLAMA_DIFFERS)), differs


@pytest.mark.parametrize("name", sorted(MODELS))
def test_vectors_agree_with_llama_cpp_where_the_tokens_do(run, files, hf, tmp_path, name):  # noqa: F811
    m = MODELS[name]
    for case in m["cases"]:
        same = [t for t in case["texts"] if t["tokens"] == hf.encode(t["text"]).ids]
        assert len(same) >= 6
        src = files[name]
        if case["override"]:
            src = str(tmp_path / f"{case['pooling']}.conf")
            with open(src, "w") as f:
                f.write('embedder: { backend = "native"; snapshot = %s; pooling = "%s"; };\n'
                        'decoder: { enabled = false; };\n' % (json.dumps(files[name]), case["pooling"]))
        got = embed(run, tmp_path, src, [t["text"] for t in same], case["pooling"])
        cos = [cosine(g, t["embedding"]) for g, t in zip(got, same)]
        print(name, case["pooling"], "min cosine", min(cos))
        assert min(cos) >= BOUND[m["type"]], (case["pooling"], cos)
        assert cosine(got[0], got[2]) < 0.99


def test_the_f16_file_embeds_like_the_snapshot(run, files, snapshot, tmp_path):  # noqa: F811
    texts = [t["text"] for t in MODELS["minilm-F16"]["cases"][0]["texts"]][:4]
    a = embed(run, tmp_path, files["minilm-F16"], texts, "gguf")
    b = embed(run, tmp_path, snapshot, texts, "snap")
    for x, y in zip(a, b):
        assert cosine(x, y) >= 0.99999


def test_embedder_pooling_is_refused_for_a_snapshot(run, snapshot, tmp_path):  # noqa: F811
    conf = tmp_path / "snap.conf"
    conf.write_text('embedder: { backend = "native"; snapshot = %s; pooling = "cls"; };\n'
                    'decoder: { enabled = false; };\n' % json.dumps(snapshot))
    inp = write_texts(tmp_path / "x.jsonl", ["x"])
    p = run("embed", "--config", str(conf), "--input", inp, "--output", str(tmp_path / "x.npy"), check=False)
    assert p.returncode == 66 and "is for GGUF embedders" in p.stderr, p.stderr
