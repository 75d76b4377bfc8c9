"""The native embedder agrees with an independent reference (reference_bert.py: HF tokenizers +
numpy BERT) on a generated corpus of >= 300 varied texts: identical token ids, cosine >= 0.99999
for every text; and similar sentences score higher than unrelated ones."""
import json
import os

import numpy as np
import pytest

from embed_fixtures import run, snapshot, weaver_bin  # noqa: F401 (fixtures)

import gen_corpus
from reference_bert import Reference


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    texts = gen_corpus.corpus(320)
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"t{i:04d}", "text": t}, ensure_ascii=False) + "\n")
    return texts, str(path)


@pytest.fixture(scope="module")
def ref(snapshot):
    return Reference(snapshot)


def test_corpus_is_varied_enough(corpus, ref):
    texts, _ = corpus
    assert len(texts) >= 300
    assert "" in texts
    lens = [len(ref.tok.encode(t).ids) for t in texts]  # untruncated would be longer still
    assert sum(n >= 256 for n in lens) >= 10, "needs texts beyond the 256-token limit"
    for probe in ("中", "😀", "é", "def ", "\t", "3.14"):
        assert any(probe in t for t in texts), probe


def test_token_ids_equal_hf_tokenizers_for_every_text(run, snapshot, corpus, ref):
    texts, path = corpus
    out = run("tokenize", "--snapshot", snapshot, "--input", path).stdout.splitlines()
    assert len(out) == len(texts)
    bad = []
    for i, (t, line) in enumerate(zip(texts, out)):
        want = ref.ids(t)
        got = json.loads(line)
        if got != want:
            bad.append((i, t[:60], ref.tok.encode(t).tokens[:20], got[:20]))
    assert not bad, f"{len(bad)} texts differ, first: {bad[:3]}"


def test_vectors_match_the_numpy_reference_for_every_text(run, snapshot, corpus, ref, tmp_path):
    texts, path = corpus
    out = tmp_path / "v.npy"
    run("embed", "--snapshot", snapshot, "--input", path, "--output", str(out), "--no-progress")
    v = np.load(out)
    assert v.shape == (len(texts), 384) and v.dtype == np.float32
    ids = open(tmp_path / "v.ids.txt", encoding="utf-8").read().splitlines()
    assert ids == [f"t{i:04d}" for i in range(len(texts))]
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)  # the model has a Normalize module
    worst = (1.0, -1)
    for i, r in enumerate(ref.embed_many(texts)):
        cos = float(v[i] @ r / (np.linalg.norm(v[i]) * np.linalg.norm(r)))
        worst = min(worst, (cos, i))
    assert worst[0] >= 0.99999, f"text {worst[1]} {texts[worst[1]][:60]!r}: cosine {worst[0]}"


def test_no_normalize_gives_the_pooled_vector(run, snapshot, ref, tmp_path):
    inp = tmp_path / "s.txt"
    inp.write_text("A man is eating food.\nThe cat sits outside.\n", encoding="utf-8")
    run("embed", "--snapshot", snapshot, "--input", str(inp), "--output", str(tmp_path / "s.npy"),
        "--no-normalize", "--no-progress")
    v = np.load(tmp_path / "s.npy")
    r = ref.embed("A man is eating food.", normalize=False)
    assert np.allclose(v[0], r, atol=2e-4 * np.abs(r).max())
    assert abs(np.linalg.norm(v[0]) - 1.0) > 1e-3  # really not normalised


SIMILAR = [
    ("A man is eating food.", "A man is eating a piece of bread.", "A monkey is playing drums."),
    ("A man is riding a horse.", "A man is riding a white horse on an enclosed ground.", "I love pasta."),
    ("The new movie is awesome.", "The new movie is so great.", "The girl is carrying a baby."),
    ("A monkey is playing drums.", "Someone in a gorilla costume is playing a set of drums.", "The cat sits outside."),
]


def test_similar_sentences_score_higher_than_unrelated_ones(run, snapshot, tmp_path):
    inp = tmp_path / "s.txt"
    inp.write_text("\n".join(s for trio in SIMILAR for s in trio) + "\n", encoding="utf-8")
    run("embed", "--snapshot", snapshot, "--input", str(inp), "--output", str(tmp_path / "s.npy"), "--no-progress")
    v = np.load(tmp_path / "s.npy")
    for k, (a, b, c) in enumerate(SIMILAR):
        va, vb, vc = v[3 * k], v[3 * k + 1], v[3 * k + 2]
        assert va @ vb > 0.5, (a, b, float(va @ vb))
        assert va @ vb > va @ vc + 0.3, (a, b, c, float(va @ vb), float(va @ vc))


def test_f16_output_is_the_f32_output_rounded(run, snapshot, corpus, tmp_path):
    texts, _ = corpus
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts[:60])))
    run("embed", "--snapshot", snapshot, "--input", path, "--output", str(tmp_path / "a.npy"), "--no-progress")
    run("embed", "--snapshot", snapshot, "--input", path, "--output", str(tmp_path / "h.npy"), "--dtype", "f16",
        "--no-progress")
    a, h = np.load(tmp_path / "a.npy"), np.load(tmp_path / "h.npy")
    assert h.dtype == np.float16 and h.shape == a.shape
    assert np.array_equal(a.astype(np.float16), h)
