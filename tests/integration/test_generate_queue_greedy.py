"""Generate jobs through Redis on the real native decoder (SmolLM2-135M-Instruct Q4_1), greedy
(temperature 0, the protocol's defaults otherwise), end to end: XADD -> worker -> continuous
batching (8 jobs on 4 slots) -> result hash and reply list.

- `prompt` jobs: the six prompts of tests/fixtures/decode/smollm2.json, expected to produce
  llama.cpp's recorded 32-token greedy continuation, cut at its first end-of-generation token
  (finish_reason "eos") or all 32 ("length"), as text. The ids are turned into text here, from
  the GGUF vocabulary with the GPT-2 byte-level mapping, not by the engine's detokenizer.
- `messages` jobs: the fixture has no chat conversations (its chat prompts are raw text without
  SmolLM2's default system turn), so the reference is `generate-local --messages ... --greedy-ids`:
  the rendering checked against llama.cpp's template (test_decode_llamacpp.py) and the greedy path
  whose logits are checked bit-identical to llama.cpp's, again turned into text here.
"""
import json
import os

import pytest

from conftest import SOURCE_DIR, run_cli, wait_for

MODEL = os.path.join(SOURCE_DIR, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
FIXTURE = os.path.join(SOURCE_DIR, "tests", "fixtures", "decode", "smollm2.json")
EOG = ("<|im_end|>", "<|endoftext|>")
MAX_TOKENS = 32
MESSAGES = [
    [{"role": "user", "content": "Name three fruits."}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "What is the capital of France?"}],
]


def _byte_decoder():
    """GPT-2 byte-level BPE: printable bytes stand for themselves, the others for 256 + n."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    dec, n = {chr(b): b for b in keep}, 0
    for b in range(256):
        if b not in keep:
            dec[chr(256 + n)] = b
            n += 1
    return dec


def _vocab():
    import gguf
    r = gguf.GGUFReader(MODEL)
    f, ft = r.fields["tokenizer.ggml.tokens"], r.fields["tokenizer.ggml.token_type"]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data], [int(ft.parts[i][0]) for i in ft.data]


def expected(ids, vocab):
    """(text, finish_reason, completion_tokens) of a greedy id sequence: up to its first
    end-of-generation token, or all MAX_TOKENS of it."""
    pieces, types = vocab
    dec = _byte_decoder()
    out = b""
    for n, t in enumerate(ids):
        if pieces[t] in EOG:
            return out.decode("utf-8"), "eos", n
        assert types[t] == 1, f"token {t} {pieces[t]!r} is not a normal token: extend this test"
        out += bytes(dec[ch] for ch in pieces[t])
    assert len(ids) == MAX_TOKENS
    return out.decode("utf-8"), "length", len(ids)


@pytest.mark.skipif(not os.path.isfile(MODEL), reason="models/SmolLM2-135M-Instruct.Q4_1.gguf not installed (ops/setup.sh)")
def test_greedy_generate_jobs_through_redis_give_llama_cpp_continuations(redis_server, engine_factory):
    fx = json.load(open(FIXTURE))
    vocab = _vocab()
    jobs, want = [], {}
    for i, case in enumerate(fx["generate"]):
        assert len(case["greedy"]) == MAX_TOKENS
        jobs.append({"id": f"smol-prompt-{i}", "prompt": case["text"], "temperature": 0, "max_tokens": MAX_TOKENS,
                     "reply_to": "done"})
        want[jobs[-1]["id"]] = expected(case["greedy"], vocab) + (len(case["tokens"]),)
    for i, msgs in enumerate(MESSAGES):
        m = json.dumps(msgs)
        ref = run_cli("generate-local", "--model", MODEL, "--messages", m, "--greedy-ids", "--max-tokens",
                      str(MAX_TOKENS), "--threads", "2", timeout=300)
        assert ref.returncode == 0, ref.stderr
        ref = json.loads(ref.stdout)
        # no temperature: the protocol's default, 0, is greedy
        jobs.append({"id": f"smol-messages-{i}", "messages": msgs, "max_tokens": MAX_TOKENS, "reply_to": "done"})
        want[jobs[-1]["id"]] = expected(ref["completion_ids"], vocab) + (len(ref["tokens"]),)
    assert any(w[1] == "eos" for w in want.values()) and any(w[1] == "length" for w in want.values())

    r = redis_server.client()
    p = r.pipeline(transaction=False)
    for j in jobs:  # all at once: 8 jobs on 4 slots share forward passes
        p.xadd("it:jobs:generate", {"job": json.dumps(j)})
    p.execute()
    eng = engine_factory(decoder={"backend": "native", "model": MODEL, "threads": 2, "max_slots": 4}).start(timeout=60)
    wait_for(lambda: r.llen("done") == len(jobs), timeout=600, interval=0.2, what="8 generations")
    for jid, (text, finish, n, n_prompt) in want.items():
        h = {k.decode(): v.decode() for k, v in r.hgetall("it:result:" + jid).items()}
        assert h["status"] == "ok", h
        assert h["kind"] == "generate"
        assert (h["finish_reason"], h["text"]) == (finish, text), f"{jid}: got {h['text']!r} ({h['finish_reason']})"
        assert json.loads(h["usage"]) == {"prompt_tokens": n_prompt, "completion_tokens": n}, jid
    assert sorted(x.decode() for x in r.lrange("done", 0, -1)) == sorted(want)
    assert eng.stop() == 0
