"""test_decode_tokenizer_suite.py: llama.cpp's own tokenizer test suite against the GGUF
tokenizer, through `weaver-engine tokenize --model` ($WEAVER_BIN) on vocabulary-only GGUFs.

The suite (ggml-vocab-*.gguf with .inp inputs and .out ids, from llama.cpp's tree in the
llama-cpp-python 0.3.36 sdist) is fetched by ops/setup.sh into models/llama-vocab/. Its rules,
as llama.cpp's test-tokenizer-0 runs it: add_special false, parse_special false, identical ids.
Every vocabulary in it is listed in EXPECTED: the ones we tokenise must give llama.cpp's ids for
every case; the others must be refused with an error naming what is not supported, never
tokenised some other way. Vocabularies the suite ships without .inp/.out, and the other checks
(texts the suite's inputs do not cover; BOS with add_special on; control and user-defined token
text with parse_special on and off), use ids recorded from llama.cpp by
tokenizer_make_fixtures.py (tests/fixtures/tokenizer/llamacpp.json).
"""
import hashlib
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.environ.get("WEAVER_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.environ.get("WEAVER_BIN", os.path.join(ROOT, "build", "weaver-engine"))
VOCAB = os.path.join(ROOT, "models", "llama-vocab")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "llamacpp.json")
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
from tokenizer_make_fixtures import read_inputs  # noqa: E402

# vocabulary -> (tokenizer.ggml.model, tokenizer.ggml.pre or None, None when we tokenise it,
# else the words our refusal must contain)
EXPECTED = {
    "aquila": ("gpt2", None, None),  # no pre: llama.cpp's multi-regex default
    "baichuan": ("llama", None, None),
    "bert-bge": ("bert", "bert-bge", "tokenizer model 'bert'"),
    "command-r": ("gpt2", "command-r", None),
    "deepseek-coder": ("gpt2", "deepseek-coder", None),
    "deepseek-llm": ("gpt2", "deepseek-llm", None),
    "falcon": ("gpt2", "falcon", None),
    "gemma-4": ("gemma4", None, None),
    "gpt-2": ("gpt2", "gpt-2", None),
    "gpt-neox": ("gpt2", None, None),
    "llama-bpe": ("gpt2", "llama-bpe", None),
    "llama-spm": ("llama", "default", None),
    "mpt": ("gpt2", "mpt", None),
    "nomic-bert-moe": ("t5", "default", "tokenizer model 't5'"),
    "phi-3": ("llama", "default", None),
    "qwen2": ("gpt2", "qwen2", None),
    "qwen35": ("gpt2", "qwen35", None),
    "refact": ("gpt2", "refact", None),
    "starcoder": ("gpt2", "starcoder", None),
}
SUPPORTED = sorted(v for v, e in EXPECTED.items() if e[2] is None)
REFUSED = sorted(v for v, e in EXPECTED.items() if e[2] is not None)


def vocab_path(name):
    path = os.path.join(VOCAB, f"ggml-vocab-{name}.gguf")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run ops/setup.sh (it fetches llama.cpp's tokenizer suite)")
    return path


@pytest.fixture(scope="module")
def fixture():
    with open(FIXTURE, encoding="utf-8") as f:
        fx = json.load(f)
    inp = os.path.join(VOCAB, fx["inputs_file"])
    with open(inp, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == fx["inputs_sha256"], f"{inp} is not the one recorded from"
    return fx


def tokenize(name, texts, add_special=False, parse_special=False):
    """Ids per text from one `tokenize --jsonl --ids-only` run."""
    args = [BIN, "tokenize", "--model", vocab_path(name), "--jsonl", "--ids-only"]
    args += ["--add-special"] if add_special else []
    args += ["--parse-special"] if parse_special else []
    data = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    p = subprocess.run(args, input=data.encode(), capture_output=True, timeout=300)
    assert p.returncode == 0, f"{name}: exit {p.returncode}: {p.stderr.decode()}"
    lines = p.stdout.decode().split("\n")
    assert lines[-1] == "" and len(lines) == len(texts) + 1, f"{name}: {len(lines) - 1} output lines for {len(texts)} texts"
    return [[int(x) for x in line.split()] for line in lines[:-1]]


def suite_cases(name, fx):
    """(input, llama.cpp's ids) of the suite for one vocabulary."""
    path = vocab_path(name)
    if os.path.exists(path + ".out"):
        inputs = read_inputs(path + ".inp")
        with open(path + ".out", encoding="utf-8") as f:
            outs = [[int(x) for x in line.split()] for line in f.read().split("\n")]
        assert outs[-1] == [] and len(outs) == len(inputs) + 1, f"{name}: .inp and .out disagree in length"
        return list(zip(inputs, outs[:-1]))
    inputs = read_inputs(os.path.join(VOCAB, fx["inputs_file"]))
    return list(zip(inputs, fx["suite"][name]))


def gguf_meta(path, keys):
    """Values of keys in a GGUF file's metadata, None when absent (strings and bools as such,
    other scalars as raw bytes, arrays not read): a walk over the header only, as the gguf
    package's reader takes minutes on the 262k-token vocabularies."""
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    found = {}
    with open(path, "rb") as f:
        u32 = lambda: struct.unpack("<I", f.read(4))[0]  # noqa: E731
        u64 = lambda: struct.unpack("<Q", f.read(8))[0]  # noqa: E731
        string = lambda: f.read(u64())  # noqa: E731
        assert f.read(4) == b"GGUF" and u32() in (2, 3)
        u64()
        for _ in range(u64()):
            key, typ = string().decode(), u32()
            if typ == 8:
                found[key] = string().decode()
            elif typ == 9:
                et, n = u32(), u64()
                if et == 8:
                    for _ in range(n):
                        f.seek(u64(), 1)
                else:
                    f.seek(sizes[et] * n, 1)
            else:
                raw = f.read(sizes[typ])
                found[key] = bool(raw[0]) if typ == 7 else raw
    return [found.get(k) for k in keys]


def test_every_vocabulary_of_the_suite_is_listed():
    """A vocabulary added to the suite must be placed here, not skipped without a word."""
    found = sorted(f[len("ggml-vocab-"):-len(".gguf")] for f in os.listdir(VOCAB) if f.endswith(".gguf"))
    assert found == sorted(EXPECTED)
    for name in found:  # the table's model and pre are the files' own
        model, pre = gguf_meta(vocab_path(name), ["tokenizer.ggml.model", "tokenizer.ggml.pre"])
        assert (model, pre) == EXPECTED[name][:2], name


@pytest.mark.parametrize("name", SUPPORTED)
def test_suite_ids_equal_llama_cpp(name, fixture):
    cases = suite_cases(name, fixture)
    assert len(cases) >= 46
    got = tokenize(name, [c[0] for c in cases])
    bad = [(text, want, ids) for (text, want), ids in zip(cases, got) if ids != want]
    report = "\n".join(f"  {text[:60]!r}: llama.cpp {want[:16]} ours {ids[:16]}" for text, want, ids in bad[:8])
    assert not bad, f"{name}: {len(bad)} of {len(cases)} cases differ from llama.cpp:\n{report}"


@pytest.mark.parametrize("name", SUPPORTED)
def test_extra_texts_equal_llama_cpp(name, fixture):
    """Texts the suite's inputs leave out (combining marks, Indic and Thai vowel signs, other
    digits, symbol runs, non-ASCII spaces, fullwidth forms), same rules, recorded ids."""
    texts = fixture["extra_inputs"]
    got = tokenize(name, texts)
    bad = [(t, want, ids) for t, want, ids in zip(texts, fixture["extra"][name], got) if ids != want]
    report = "\n".join(f"  {t!r}: llama.cpp {want[:16]} ours {ids[:16]}" for t, want, ids in bad)
    assert not bad, f"{name}: {len(bad)} of {len(texts)} texts differ from llama.cpp:\n{report}"


@pytest.mark.parametrize("name", REFUSED)
def test_unsupported_tokenizer_is_refused(name):
    p = subprocess.run([BIN, "tokenize", "--model", vocab_path(name), "--ids-only"], input=b"Hello world",
                       capture_output=True, timeout=60)
    err = p.stderr.decode()
    assert p.returncode == 66 and p.stdout == b"", (p.returncode, p.stdout, err)
    assert EXPECTED[name][2] in err and "not supported" in err, err


@pytest.mark.parametrize("name", SUPPORTED)
def test_bos_follows_llama_cpp_rule(name, fixture):
    """With add_special, BOS comes first exactly when llama.cpp puts it there (the file's
    add_bos_token, else llama.cpp's default for the family: llama3 yes, other BPE no, SPM yes)."""
    rec = fixture["add_special"][name]
    assert tokenize(name, [rec["text"]], add_special=True) == [rec["ids"]]


def test_bos_rule_without_add_bos_token_key():
    """Files without tokenizer.ggml.add_bos_token: llama.cpp adds BOS for the llama3 family
    (llama-bpe) and SentencePiece (baichuan), not for other BPE (gpt-2, qwen2, aquila)."""
    for name, bos in (("llama-bpe", 128000), ("baichuan", 1), ("gpt-2", None), ("qwen2", None), ("aquila", None)):
        assert gguf_meta(vocab_path(name), ["tokenizer.ggml.add_bos_token"]) == [None], name
        plain, special = tokenize(name, ["Hello world"])[0], tokenize(name, ["Hello world"], add_special=True)[0]
        assert special == ([bos] if bos is not None else []) + plain, name


@pytest.mark.parametrize("name", SUPPORTED)
def test_special_token_text_equals_llama_cpp(name, fixture):
    for rec in fixture["special"][name]:
        got = tokenize(name, [rec["text"]], add_special=rec["add_special"], parse_special=rec["parse_special"])
        assert got == [rec["ids"]], (f"{name} parse_special={rec['parse_special']} add_special={rec['add_special']} "
                                     f"{rec['text']!r}")


def test_tokenize_bad_input_is_an_error_naming_the_line():
    args = [BIN, "tokenize", "--model", vocab_path("gpt-2"), "--jsonl", "--ids-only"]
    p = subprocess.run(args, input=b'"Hello"\n[1]\n" world"\n', capture_output=True, timeout=60)
    assert p.returncode == 65 and p.stdout == b"15496\n", (p.returncode, p.stdout)
    assert "line 2" in p.stderr.decode()
    p = subprocess.run(args, input=b'"a\\u0000b"\n', capture_output=True, timeout=60)
    assert p.returncode == 65 and p.stdout == b"" and "\\u0000" in p.stderr.decode()
    p = subprocess.run([BIN, "tokenize", "--model", os.path.join(VOCAB, "absent.gguf")], capture_output=True, timeout=60)
    assert p.returncode == 66 and "absent.gguf" in p.stderr.decode()
