#!/usr/bin/env python3
"""gguf_embed_make_fixtures.py: records llama.cpp reference embeddings for the GGUF embedder.

Run once, outside CI (needs llama-cpp-python, which builds llama.cpp from source):
    /work/llamacpp-venv/bin/python tests/reference/gguf_embed_make_fixtures.py
It writes tests/fixtures/gguf_embed/tiny.json and (with models/all-MiniLM-L6-v2 present)
minilm.json: the snapshot converted to a `bert` GGUF by bert_to_gguf.py (F16 and Q8_0, also
regenerated at test time, sha256 stored), llama.cpp's tokens and pooled vectors for BERT_TEXTS
with the file's mean pooling and, for F16, cls and last given to the context. The tiny random-weight GGUF embedding models are not
stored: `embed_model(name, path)` regenerates them bit-identically (seeded, through
decode_make_fixtures.tiny_model) at test time, and the fixture stores their sha256.

Recorded from llama.cpp's embedding mode (flash attention off, one text per llama_decode, the
memory cleared before each): the tokens (special tokens parsed, BOS/EOS as the file says) and
the pooled embedding, not normalised, with the file's pooling_type and, for the `override`
cases, with another pooling given to the context (what embedder.pooling does on our side).
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures", "gguf_embed")

import decode_make_fixtures as dmf  # noqa: E402

POOL_IDS = {"mean": 1, "cls": 2, "last": 3}

# name: (arch, tensor type of the big matrices, the file's pooling_type, add_eos_token)
EMBED_MODELS = {
    "tiny_embed_qwen3_q8_0": ("qwen3", "Q8_0", "last", True),
    "tiny_embed_qwen2_f16": ("qwen2", "F16", "mean", True),
    "tiny_embed_llama_f32": ("llama", "F32", "last", True),
    "tiny_embed_llama_q4_k": ("llama", "Q4_K", "mean", False),
    "tiny_embed_qwen3_q4_0": ("qwen3", "Q4_0", "last", True),
}
# (model, pooling given to the context instead of the file's)
OVERRIDES = [("tiny_embed_qwen3_q8_0", "mean"), ("tiny_embed_qwen2_f16", "last")]

TEXTS = [
    "the cat sat on the mat",
    "hello",
    "",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: where do cats sleep",
    "Ünïcödé: naïve café, Straße, 東京, Здравствуй мир 👍🏽",
    "  leading spaces, tabs\tand\nnewlines  ",
    "the " * 120 + "end",
    " ".join(f"word{i} is {i * 7 % 13}" for i in range(40)),
]
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def embed_model(name, path):
    """Writes the tiny embedding model `name` to path, deterministically. Returns its sha256."""
    arch, qt, pool, add_eos = EMBED_MODELS[name]

    def kv(w):
        w.add_uint32(f"{arch}.pooling_type", POOL_IDS[pool])
        w.add_add_eos_token(add_eos)
    return dmf.tiny_model(name, path, spec=(arch, qt), extra_kv=kv)


def record(path, pooling=None):
    import llama_cpp
    import numpy as np
    kw = {"pooling_type": POOL_IDS[pooling]} if pooling else {}
    llm = llama_cpp.Llama(path, embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2, verbose=False,
                          flash_attn=False, **kw)
    out = []
    for text in TEXTS:
        toks = llm.tokenize(text.encode(), add_bos=True, special=True)
        if not toks:  # an empty text and no BOS/EOS: llama_decode refuses an empty batch
            out.append({"text": text, "tokens": toks, "embedding": None})
            continue
        llm._batch.reset()
        llm._batch.add_sequence(toks, 0, True)
        llm._ctx.kv_cache_clear()
        llm._ctx.decode(llm._batch)
        ptr = llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)
        v = np.array(ptr[: llm.n_embd()], dtype=np.float32)
        out.append({"text": text, "tokens": toks, "embedding": [float(f"{x:.7g}") for x in v]})
    llm._ctx.kv_cache_clear()
    return out


MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
BERT_TYPES = ["F16", "Q8_0"]
BERT_TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "Hello, World! It's 3.14159 -- don't panic.",
    "",
    "Café naïve résumé, Straße, ÅNGSTRÖM",
    "東京は日本の首都です。 北京 and 서울",
    "emoji 🚀 and 👍🏽 and ✨ in text",
    "Здравствуй мир, γειά σου κόσμε, مرحبا بالعالم, नमस्ते दुनिया, สวัสดีชาวโลก",
    "a" * 120 + " word longer than the WordPiece limit",
    "tabs\tand\nnewlines\r\nand   spaces",
    "[CLS] literal special tokens [SEP] and [MASK] in text",
    " ".join(f"sentence {i} about topic {i * 3 % 17}" for i in range(60)),
]


def bert_model(qtype, path):
    """Converts models/all-MiniLM-L6-v2 to a bert GGUF of qtype at path. Returns its sha256."""
    import hashlib
    import bert_to_gguf
    bert_to_gguf.convert(MINILM, path, qtype)
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def record_bert():
    import tempfile
    import llama_cpp
    global TEXTS
    fx = {"llama_cpp_version": getattr(llama_cpp, "__version__", "?"), "models": []}
    saved, TEXTS = TEXTS, BERT_TEXTS
    try:
        with tempfile.TemporaryDirectory() as d:
            for qt in BERT_TYPES:
                path = os.path.join(d, f"minilm-{qt}.gguf")
                sha = bert_model(qt, path)
                cases = [{"pooling": "mean", "override": False, "texts": record(path)}]
                if qt == "F16":
                    for p in ("cls", "last"):
                        cases.append({"pooling": p, "override": True, "texts": record(path, p)})
                fx["models"].append({"name": f"minilm-{qt}", "type": qt, "sha256": sha, "cases": cases})
                print("recorded minilm", qt)
    finally:
        TEXTS = saved
    with open(os.path.join(FIX, "minilm.json"), "w") as f:
        json.dump(fx, f, indent=0, ensure_ascii=False)
    print("wrote", os.path.join(FIX, "minilm.json"))


def main():
    import tempfile
    import llama_cpp
    os.makedirs(FIX, exist_ok=True)
    if os.path.exists(os.path.join(MINILM, "model.safetensors")):
        record_bert()
    if "--bert-only" in sys.argv:
        return
    fx = {"llama_cpp_version": getattr(llama_cpp, "__version__", "?"), "instruction": INSTRUCTION, "models": []}
    with tempfile.TemporaryDirectory() as d:
        for name, (arch, qt, pool, add_eos) in EMBED_MODELS.items():
            path = os.path.join(d, name + ".gguf")
            sha = embed_model(name, path)
            cases = [{"pooling": pool, "override": False, "texts": record(path)}]
            for m, p in OVERRIDES:
                if m == name:
                    cases.append({"pooling": p, "override": True, "texts": record(path, p)})
            fx["models"].append({"name": name, "arch": arch, "type": qt, "sha256": sha, "cases": cases})
            print("recorded", name)
    with open(os.path.join(FIX, "tiny.json"), "w") as f:
        json.dump(fx, f, indent=0, ensure_ascii=False)
    print("wrote", os.path.join(FIX, "tiny.json"))


if __name__ == "__main__":
    main()
