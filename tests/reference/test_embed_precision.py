"""embedder.precision on the cpu (bf16, int8) against the independent fp32 reference
(reference_bert.py: HF tokenizers + numpy BERT) on the reference corpus: the minimum cosine per
mode is at least the floor docs/embedding.md states, and retrieval order is preserved on the
similar-sentence checks (each sentence's three nearest neighbours, in order, as the reference has
them; similar pairs above unrelated ones). A cpu without the instructions (forced here with
WEAVER_CPU_ISA=avx2) runs fp32 bit for bit and says so."""
import json

import numpy as np
import pytest

from embed_fixtures import run, snapshot, weaver_bin  # noqa: F401 (fixtures)

from test_embed_reference import SIMILAR, corpus, ref  # noqa: F401 (the reference corpus and model)

# Minimum cosine to the fp32 reference over the corpus, as docs/embedding.md states them
# (measured: bf16 0.99995, int8 see the docs).
FLOOR = {"bf16": 0.9999, "int8": 0.99}


def cpu_has(flag):
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        return any(flag in line.split() for line in f if line.startswith("flags"))


NEEDS = {"bf16": "avx512_bf16", "int8": "avx512_vnni"}


@pytest.fixture(scope="module")
def ref_vectors(corpus, ref):
    texts, _ = corpus
    r = ref.embed_many(texts)
    return r / np.linalg.norm(r, axis=1, keepdims=True)


def embed(run, snapshot, path, out, precision, env=None):
    p = run("embed", "--snapshot", snapshot, "--input", str(path), "--output", str(out), "--no-progress",
            "--precision", precision, env=env)
    return np.load(out), p.stderr


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_minimum_cosine_to_the_fp32_reference_meets_the_documented_floor(run, snapshot, corpus, ref_vectors,
                                                                         tmp_path, mode):
    if not cpu_has(NEEDS[mode]):
        pytest.skip(f"this cpu has no {NEEDS[mode]}: {mode} runs fp32 (see the fallback test)")
    texts, path = corpus
    v, err = embed(run, snapshot, path, tmp_path / "v.npy", mode)
    assert f"precision {mode}" in err, err
    assert v.shape == (len(texts), 384)
    cos = (v * ref_vectors).sum(1) / np.linalg.norm(v, axis=1)
    worst = int(cos.argmin())
    print(f"{mode}: min cosine {cos.min():.6f} (text {worst}), mean {cos.mean():.6f}")
    assert cos.min() >= FLOOR[mode], f"text {worst} {texts[worst][:60]!r}: cosine {cos.min()}"
    assert cos.min() < 0.9999999, "no rounding at all: is the mode really running?"


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_retrieval_order_on_similar_sentences_is_the_references(run, snapshot, ref, tmp_path, mode):
    sents = [s for trio in SIMILAR for s in trio]
    inp = tmp_path / "s.txt"
    inp.write_text("\n".join(sents) + "\n", encoding="utf-8")
    v, _ = embed(run, snapshot, inp, tmp_path / "s.npy", mode)
    r = np.stack([ref.embed(s) for s in sents])
    for i in range(len(sents)):
        others = [j for j in range(len(sents)) if j != i]
        want = sorted(others, key=lambda j: -float(r[i] @ r[j]))[:3]
        got = sorted(others, key=lambda j: -float(v[i] @ v[j]))[:3]
        assert got == want, (sents[i], [sents[j] for j in want], [sents[j] for j in got])
    for k in range(len(SIMILAR)):
        va, vb, vc = v[3 * k], v[3 * k + 1], v[3 * k + 2]
        assert va @ vb > va @ vc + 0.3, (SIMILAR[k], float(va @ vb), float(va @ vc))


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_a_cpu_without_the_instructions_runs_fp32_and_says_so(run, snapshot, corpus, tmp_path, mode):
    texts, path = corpus
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts[:40])))
    env = {"WEAVER_CPU_ISA": "avx2"}
    v, err = embed(run, snapshot, few, tmp_path / "m.npy", mode, env=env)
    assert f"embedder.precision {mode}: WEAVER_CPU_ISA caps the kernels below avx512; running fp32" in err, err
    assert "precision fp32" in err, err
    f, _ = embed(run, snapshot, few, tmp_path / "f.npy", "fp32", env=env)
    assert np.array_equal(v, f)
