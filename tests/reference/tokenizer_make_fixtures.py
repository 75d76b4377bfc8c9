#!/usr/bin/env python3
"""tokenizer_make_fixtures.py: records what llama.cpp's own tokenizer suite leaves out, for
tests/reference/test_decode_tokenizer_suite.py.

Run once, outside CI (needs llama-cpp-python 0.3.36, which builds llama.cpp from source, and the
vocabularies ops/setup.sh puts in models/llama-vocab/):
    /work/llamacpp-venv/bin/python tests/reference/tokenizer_make_fixtures.py
It writes tests/fixtures/tokenizer/llamacpp.json with, from llama.cpp (vocab_only):
- "suite": ids for the vocabularies the suite ships without .inp/.out (aquila, baichuan,
  gpt-neox), on the inputs of ggml-vocab-qwen35.gguf.inp (the longest input list), with the
  suite's rules: add_special false, parse_special false;
- "extra": ids of EXTRA (combining marks, Indic and Thai vowel signs, digit runs, punctuation
  and symbol runs, non-ASCII spaces, fullwidth forms) for every vocabulary we tokenise, with the
  suite's rules: what the suite's inputs do not tell apart (qwen35's \\p{M} from qwen2's, the
  Unicode tables behind \\s, \\p{P} and \\p{S});
- "add_special": "Hello world" with add_special true, for every vocabulary we tokenise: whether
  BOS comes first is llama.cpp's rule (tokenizer.ggml.add_bos_token, or its default per family
  when that key is absent);
- "special": a text made of the vocabulary's own control and user-defined token texts between
  ordinary text, with parse_special and add_special each on and off: where special-token text
  is cut out, which tokens count as control, and the spaces some of them swallow.
"""
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VOCAB = os.path.join(ROOT, "models", "llama-vocab")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "llamacpp.json")
SEP = "\n__ggml_vocab_test__\n"
INPUTS = "ggml-vocab-qwen35.gguf.inp"
# Vocabularies whose tokenizer we refuse (test_decode_tokenizer_suite.py checks the refusal).
REFUSED = {"bert-bge", "nomic-bert-moe"}
# Special-token texts tried in every vocabulary that has them (end-of-text, chat and BOS/EOS
# markers of the families in the suite).
KNOWN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>",
                 "<|eot_id|>", "<|end|>", "<|user|>", "<|assistant|>", "<start_of_turn>", "<end_of_turn>", "<eos>",
                 "<bos>", "<|fim_prefix|>", "<|START_OF_TURN_TOKEN|>"]

EXTRA = [
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301 a\u0300\u0300\u0300",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "1234567 12 3.14159 1,000,000 \u0661\u0662\u0663 \u00bd \u2167",
    "a...!!!?? $+<=>^~|` ~~x \u00ab\u00bb \u2014\u2026 \u20ac5 \u00a9",
    "x\u00a0y\u2003z\u3000w\u0085v \u200b u",
    "\u0301\u0301 lone marks",
    "  \t\n  \r\n end  ",
    "\uff46\uff55\uff4c\uff4c \uff21\uff22\uff23 \uff11\uff12\uff13\uff01",
    "emoji \U0001f44d\U0001f3fd \U0001f9d1\u200d\U0001f680",
    "\u4e2d\u6587 \u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4 \u30c6\u30b9\u30c8",
    "it's IT'S we'LL don't 'twas",
]


def read_inputs(path):
    """Test inputs as llama.cpp's test-tokenizer-0 splits them."""
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    parts, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            parts.append(raw[pos:])
            break
        parts.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    return parts


def special_text(path):
    """A text with this vocabulary's control and user-defined token texts between plain text."""
    import gguf
    r = gguf.GGUFReader(path)
    toks = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]).decode("utf-8", "replace")
            for i in r.fields["tokenizer.ggml.tokens"].data]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    have = set(toks)
    picked = [t for t in KNOWN_SPECIAL if t in have]
    ctl = [t for t, ty in zip(toks, types) if ty == 3 and t and t not in picked][:2]
    ud = [t for t, ty in zip(toks, types) if ty == 4 and t and t not in picked and t.strip()][:2]
    picked += ctl + ud
    fillers = [" Hello", "\n", "world ", "  x", "\n\n", "y"]
    text = "".join(p + fillers[i % len(fillers)] for i, p in enumerate(picked))
    return "a " + text + " end"


def compact_json(obj):
    """Indented JSON with each list of ids on one line."""
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    return re.sub(r"\[\s+([-0-9,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


def main():
    from llama_cpp import Llama, __version__
    fixture = {
        "recorded_with": f"llama-cpp-python {__version__} (llama.cpp 0c1e570), vocab_only",
        "inputs_file": INPUTS,
        "inputs_sha256": hashlib.sha256(open(os.path.join(VOCAB, INPUTS), "rb").read()).hexdigest(),
        "suite": {}, "extra_inputs": EXTRA, "extra": {}, "add_special": {}, "special": {},
    }
    inputs = read_inputs(os.path.join(VOCAB, INPUTS))
    names = sorted(f[len("ggml-vocab-"):-len(".gguf")] for f in os.listdir(VOCAB) if f.endswith(".gguf"))
    for name in names:
        if name in REFUSED:
            continue
        path = os.path.join(VOCAB, f"ggml-vocab-{name}.gguf")
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        tok = lambda s, add, special: llm.tokenize(s.encode("utf-8"), add_bos=add, special=special)  # noqa: E731
        if not os.path.exists(path + ".out"):
            fixture["suite"][name] = [tok(s, False, False) for s in inputs]
        fixture["extra"][name] = [tok(s, False, False) for s in EXTRA]
        fixture["add_special"][name] = {"text": "Hello world", "ids": tok("Hello world", True, False)}
        text = special_text(path)
        fixture["special"][name] = [{"text": text, "parse_special": ps, "add_special": add, "ids": tok(text, add, ps)}
                                    for ps in (False, True) for add in (False, True)]
        print(name, len(fixture["special"][name][0]["ids"]), file=sys.stderr)
        del llm
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(compact_json(fixture))
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
