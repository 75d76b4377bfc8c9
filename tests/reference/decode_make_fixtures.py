#!/usr/bin/env python3
"""decode_make_fixtures.py: records llama.cpp reference fixtures for the native decoder.

Run once, outside CI (needs llama-cpp-python, which builds llama.cpp from source):
    python3 tests/reference/decode_make_fixtures.py            # all fixtures
    python3 tests/reference/decode_make_fixtures.py --smol-only   # SmolLM2 only (or --tiny-only)
    python3 tests/reference/decode_make_fixtures.py --spm-only    # SentencePiece + chat templates
    python3 tests/reference/decode_make_fixtures.py --arch-only [NAME...]  # phi3, gemma2, gemma3 (tiny_arch.json)
    python3 tests/reference/decode_make_fixtures.py --rope-only   # LongRoPE and YaRN (tiny_rope.json)
It writes tests/fixtures/decode/*.json. The tiny random-weight GGUF files are not stored:
`tiny_model(name, path)` regenerates them bit-identically (seeded) at test time, and the
fixture stores their sha256 so a drift in the generator is caught.

Recorded from llama.cpp (flash attention off, its default CPU path), for each prompt:
tokenisation (special tokens parsed, BOS as the model asks), the top-K logits of the prompt
positions (the whole prompt as one batch), a 32-token greedy continuation decoded one token at
a time with the top-K logits of every step ("steps", SmolLM2 only) and the top-1/top-2 margin,
and, for information, the max |diff| between llama.cpp's own two attention paths (flash on vs
off) at each prompt position and the flash-attention greedy continuation.

tiny_spm.json: a tiny llama model with a SentencePiece vocabulary (tokenizer.ggml.model "llama":
scores with ties, <0xXX> byte fallback, control, unknown and user-defined tokens), tokenised by
llama.cpp on prompts with accents, CJK, emoji, leading spaces and digits, plus its logits and
greedy continuation. chat_templates.json: conversations rendered by llama.cpp's
llama_chat_apply_template for Llama 2 / Mistral family templates (and one it does not know).
"""
import hashlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures", "decode")
SMOL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

SMOL_TOKENIZE = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. 1234567890",
    "  leading spaces and trailing   ",
    "tabs\tand\nnewlines\n\n\nend",
    "Ünïcödé: naïve café, Straße, 東京, Здравствуй мир, مرحبا",
    "emoji 👍🏽 and 🧑‍🚀 and ✨",
    "code: def f(x):\n    return x**2  # comment\n",
    "it's don't we'll I'M they've",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "numbers 3.14159 -42 1e10 0x1F 100,000",
    "",
]

SMOL_GENERATE = [
    "Once upon a time",
    "1, 2, 3, 4,",
    "The meaning of life is",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nList three primary colors.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
]

N_LOGIT_POS = 64  # every prompt position of the SmolLM2 prompts
TOPK = 32
N_GREEDY = 32


# ---------------------------------------------------------------- tiny random GGUF models

def _byte_vocab():
    """GPT-2 byte-level alphabet + a few merges + control tokens."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_char = {b: chr(c) for b, c in zip(bs, cs)}
    toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [3, 3, 3]
    for b in range(256):
        toks.append(byte_char[b])
        types.append(1)
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s"),
                 ("r", "e"), ("a", "t"), ("Ġ", "w"), ("o", "r"), ("Ġ", "o"), ("e", "n"), ("l", "l")]:
        merges.append(f"{a} {b}")
        if a + b not in toks:
            toks.append(a + b)
            types.append(1)
    while len(toks) % 32:
        toks.append(f"<|unused{len(toks)}|>")
        types.append(5)
    return toks, types, merges


TINY = {
    # name: (arch, tensor type of the big matrices, extra)
    "tiny_llama_q4_0": ("llama", "Q4_0"),
    "tiny_llama_q8_0": ("llama", "Q8_0"),
    "tiny_llama_f16": ("llama", "F16"),
    "tiny_llama_bf16": ("llama", "BF16"),
    "tiny_llama_q4_k": ("llama", "Q4_K"),
    "tiny_llama_q5_k": ("llama", "Q5_K"),
    "tiny_llama_q6_k": ("llama", "Q6_K"),
    "tiny_qwen2_q8_0": ("qwen2", "Q8_0"),
    "tiny_qwen3_q4_1": ("qwen3", "Q4_1"),
}

# Architectures beyond the llama family's layout, recorded into tiny_arch.json (--arch-only).
# phi3: fused attn_qkv and gate-up ffn_up, Q scaled before attention. gemma2: embeddings scaled,
# post-attention/post-FFN norms, GeGLU, attention and final soft-capping small enough to bite
# and a sliding window shorter than the prompts on its even layers. gemma3: Q/K norms, no
# soft-capping, 6 layers so that llama.cpp's default pattern makes layers 0-4 sliding-window
# (rotated with base 10000, unscaled) and layer 5 global (base 1e6, linear scaling x2).
TINY_ARCH = {
    "tiny_phi3_q8_0": ("phi3", "Q8_0"),
    "tiny_gemma2_q8_0": ("gemma2", "Q8_0"),
    "tiny_gemma3_q8_0": ("gemma3", "Q8_0"),
}
GEMMA2_SWA, GEMMA2_ATTN_CAP, GEMMA2_FINAL_CAP = 5, 1.5, 3.0

# RoPE scaling, recorded into tiny_rope.json (--rope-only), each at a pinned context (llama.cpp's
# n_ctx, our --ctx). phi3 LongRoPE: long factors 1..8 and short ones near 1, attn_factor 1.19 (as
# Phi-3-mini-128k's sqrt(1 + ln 32 / ln 4096)), original_context_length 300, so that context 256
# takes the short factors, 512 the long ones, and 300 the long ones too: llama.cpp rounds n_ctx up
# to 256 (512 > 300). YaRN: factor 4, original context 4096, which puts the correction dims at
# pairs 10..23 of 32 (base 1e4, llama) and 6..16 (base 1e6, qwen2): both ends and the ramp bite.
TINY_ROPE = {
    "tiny_phi3_longrope_q8_0": ("phi3", "Q8_0"),
    "tiny_llama_yarn_q8_0": ("llama", "Q8_0"),
    "tiny_qwen2_yarn_q8_0": ("qwen2", "Q8_0"),
}
LONGROPE_ORIG_CTX, LONGROPE_ATTN, YARN_FACTOR, YARN_ORIG_CTX = 300, 1.19, 4.0, 4096
ROPE_CASES = {  # case -> (model, context)
    "phi3_longrope_ctx256_short": ("tiny_phi3_longrope_q8_0", 256),
    "phi3_longrope_ctx300_long": ("tiny_phi3_longrope_q8_0", 300),
    "phi3_longrope_ctx512_long": ("tiny_phi3_longrope_q8_0", 512),
    "llama_yarn": ("tiny_llama_yarn_q8_0", 512),
    "qwen2_yarn": ("tiny_qwen2_yarn_q8_0", 512),
}


def _random_kquant(rng, qtype, rows, cols):
    """Valid random K-quant blocks: random bits with small fp16 super-block scales."""
    import gguf
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    nb = rows * cols // bs
    raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    d = (rng.uniform(0.5, 1.0, size=nb) * (0.02 / 32)).astype(np.float16).view(np.uint8).reshape(nb, 2)
    dmin = (rng.uniform(0.5, 1.0, size=nb) * (0.02 / 64)).astype(np.float16).view(np.uint8).reshape(nb, 2)
    if qtype == gguf.GGMLQuantizationType.Q6_K:
        raw[:, 208:210] = d
        raw[:, 192:208] = rng.integers(-20, 20, size=(nb, 16)).astype(np.int8).view(np.uint8)
    else:
        raw[:, 0:2] = d
        raw[:, 2:4] = dmin
    return raw.reshape(rows, cols // bs * ts)


def tiny_model(name, path, chat_template=None, arch_override=None, spec=None, extra_kv=None):
    """Writes the tiny model `name` to path, deterministically. Returns its sha256.
    chat_template replaces the default tokenizer.chat_template. spec = (arch, tensor type) for a
    name outside TINY, TINY_ARCH and TINY_ROPE; extra_kv(writer) adds metadata (the embedding
    fixtures' pooling, EOS; refusal tests' scaling). For refusal tests only: arch_override writes
    another general.architecture."""
    import gguf
    spm = name == SPM_NAME
    arch, qt = ("llama", "Q8_0") if spm else (spec or {**TINY, **TINY_ARCH, **TINY_ROPE}[name])
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    if spm:
        toks, types, scores = _spm_vocab()
    else:
        toks, types, merges = _byte_vocab()
    V, D, F, L, H, HKV, HD = len(toks), 256, 512, 2, 4, 2, 64
    if arch == "gemma3":
        L = 6
    w = gguf.GGUFWriter(path, arch_override or arch)
    w.add_block_count(L)
    w.add_context_length(512)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(HKV)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    if arch == "qwen3":
        w.add_key_length(HD)
        w.add_value_length(HD)
    if arch == "gemma2":
        w.add_key_length(HD)
        w.add_value_length(HD)
        w.add_sliding_window(GEMMA2_SWA)
        w.add_attn_logit_softcapping(GEMMA2_ATTN_CAP)
        w.add_final_logit_softcapping(GEMMA2_FINAL_CAP)
    if arch == "gemma3":
        w.add_key_length(HD)
        w.add_value_length(HD)
        w.add_sliding_window(GEMMA2_SWA)
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(2.0)
    if spm:
        w.add_tokenizer_model("llama")
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_scores(scores)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
        w.add_chat_template(chat_template or CHAT_TEMPLATES["llama2-chat"])
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2" if arch != "llama" else "gpt-2")
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(0)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
        w.add_chat_template(chat_template or
                            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")
    if name in TINY_ROPE and arch == "phi3":
        w.add_rope_scaling_orig_ctx_len(LONGROPE_ORIG_CTX)
        w.add_rope_scaling_attn_factors(LONGROPE_ATTN)
    elif name in TINY_ROPE:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(YARN_FACTOR)
        w.add_rope_scaling_orig_ctx_len(YARN_ORIG_CTX)
    if extra_kv:
        extra_kv(w)
    qtype = getattr(gguf.GGMLQuantizationType, qt)

    def mat(tname, rows, cols, scale):
        x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if qt in ("Q4_K", "Q5_K", "Q6_K"):
            w.add_tensor(tname, _random_kquant(rng, qtype, rows, cols), raw_dtype=qtype)
        elif qt == "F16":
            w.add_tensor(tname, x.astype(np.float16))
        elif qt == "F32":
            w.add_tensor(tname, x)
        elif qt == "BF16":
            w.add_tensor(tname, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(tname, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    def vec(tname, n, base, scale):
        w.add_tensor(tname, (base + rng.standard_normal(n) * scale).astype(np.float32))

    emb = (rng.standard_normal((V, D)) * 0.5).astype(np.float32)
    w.add_tensor("token_embd.weight", gguf.quants.quantize(emb, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    vec("output_norm.weight", D, 1.0, 0.1)
    if arch not in ("llama", "gemma2", "gemma3"):  # gemma2's head is always the embedding matrix
        out = (rng.standard_normal((V, D)) * 0.1).astype(np.float32)
        w.add_tensor("output.weight", out)
    for i in range(L):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", D, 1.0, 0.1)
        vec(p + "ffn_norm.weight", D, 1.0, 0.1)
        if arch == "phi3":  # fused: rows Q, K, V and rows gate, up
            mat(p + "attn_qkv.weight", (H + 2 * HKV) * HD, D, 0.08)
        else:
            mat(p + "attn_q.weight", H * HD, D, 0.08)
            mat(p + "attn_k.weight", HKV * HD, D, 0.08)
            mat(p + "attn_v.weight", HKV * HD, D, 0.08)
        mat(p + "attn_output.weight", D, H * HD, 0.08)
        if arch == "phi3":
            mat(p + "ffn_up.weight", 2 * F, D, 0.08)
        else:
            mat(p + "ffn_gate.weight", F, D, 0.08)
            mat(p + "ffn_up.weight", F, D, 0.08)
        mat(p + "ffn_down.weight", D, F, 0.06)
        if arch in ("gemma2", "gemma3"):
            vec(p + "post_attention_norm.weight", D, 1.0, 0.1)
            vec(p + "post_ffw_norm.weight", D, 1.0, 0.1)
        if arch == "gemma3":
            vec(p + "attn_q_norm.weight", HD, 1.0, 0.1)
            vec(p + "attn_k_norm.weight", HD, 1.0, 0.1)
        if arch == "qwen2":
            vec(p + "attn_q.bias", H * HD, 0.0, 0.2)
            vec(p + "attn_k.bias", HKV * HD, 0.0, 0.2)
            vec(p + "attn_v.bias", HKV * HD, 0.0, 0.2)
        if arch == "qwen3":
            vec(p + "attn_q_norm.weight", HD, 1.0, 0.1)
            vec(p + "attn_k_norm.weight", HD, 1.0, 0.1)
    if name in TINY_ROPE and arch == "phi3":  # Phi-3-like: long factors grow with the dimension
        w.add_tensor("rope_factors_long.weight", np.sort(rng.uniform(1.0, 8.0, HD // 2)).astype(np.float32))
        w.add_tensor("rope_factors_short.weight", (1.0 + rng.uniform(0.0, 0.2, HD // 2)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ---------------------------------------------------------------- SentencePiece vocabulary

SPM_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Hello world, hello there! "
    "the cat sat on the mat and the dog sat on the log. [INST] <<SYS>> <</SYS>> [/INST] "
    "You are a helpful assistant. What is the meaning of life? Write a haiku about the sea. "
    "café naïve Straße déjà vu über résumé crème brûlée. 東京 東京都 京都 "
    "1234567890 3.14159 2024 100 42 "
)
SPM_SPECIAL = ["<unk>", "<s>", "</s>"]
SPM_USER = ["<|sep|>"]
N_SPM_PIECES = 360


def _spm_vocab():
    """llama-style vocab: <unk> <s> </s>, 256 <0xXX> byte tokens, one user-defined token, then
    the N_SPM_PIECES most frequent substrings (up to 6 characters) of SPM_CORPUS with spaces as
    U+2581, scored -(rank // 3) so that groups of three tie (the merge order must break ties by
    position, as llama.cpp does). Substrings of a frequent piece are at least as frequent, so
    long pieces are reachable by merges. Deterministic; no randomness."""
    text = "▁" + SPM_CORPUS.replace(" ", "▁")
    freq = {}
    for i in range(len(text)):
        for k in range(1, 7):
            if i + k <= len(text):
                sub = text[i:i + k]
                freq[sub] = freq.get(sub, 0) + 1
    chars = sorted({c for c in text})
    multi = sorted((p for p in freq if len(p) > 1), key=lambda p: (-freq[p], -len(p), p))[:N_SPM_PIECES]
    toks = SPM_SPECIAL + [f"<0x{b:02X}>" for b in range(256)] + SPM_USER
    types = [2, 3, 3] + [6] * 256 + [4]
    scores = [0.0] * len(toks)
    for rank, p in enumerate(multi):
        toks.append(p)
        types.append(1)
        scores.append(-float(rank // 3))
    for c in chars:  # single characters last, lowest scores, as SentencePiece does
        if c not in toks:
            toks.append(c)
            types.append(1)
            scores.append(-1000.0)
    while len(toks) % 32:
        toks.append(f"<unused{len(toks)}>")
        types.append(5)
        scores.append(-1e9)
    return toks, types, scores


SPM_TOKENIZE = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces",
    "trailing spaces   ",
    "   ",
    "café naïve Straße déjà vu",
    "Ünïcödé ÀÉÎÕÜ",
    "東京 日本語 한국어 中文",
    "emoji 👍🏽 and 🧑‍🚀 and ✨",
    "digits 1234567890 3.14159 -42 007",
    "tabs\tand\nnewlines\n\nend",
    "<s>[INST] hello [/INST] hi</s>",
    "<|sep|>after a user-defined token<|sep|>",
    "<unk> is special too",
    "literal <0x41> byte text",
    "the the the thethe",
    "",
]

SPM_NAME = "tiny_llama_spm"

# Chat templates in the families llama.cpp recognises by marker text (abridged from the
# published ones; detection only looks for markers). llama.cpp decides the rendering.
CHAT_TEMPLATES = {
    "llama2-chat": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
        "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
        "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
        "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"),
    "mistral-instruct-v0.2": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
        "{% endif %}{% endfor %}"),
    "llama2-sys-bos": (
        "{%- for idx in range(0, messages|length) -%}{%- if messages[idx]['role'] == 'user' -%}{%- if idx > 1 -%}"
        "{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}{%- else -%}"
        "{{- messages[idx]['content'] + ' [/INST]' -}}{%- endif -%}{% elif messages[idx]['role'] == 'system' %}"
        "{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}"
        "{%- elif messages[idx]['role'] == 'assistant' -%}{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}"
        "{% endif %}{% endfor %}"),
    "llama2-sys": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ '[INST] <<SYS>>\\n' + message['content'] + "
        "'\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' ' + message['content'] + ' </s><s>[INST] ' }}{% endif %}{% endfor %}"),
    "mistral-v1": (
        "{{ bos_token }}{% for message in loop_messages %}{% if message['role'] == 'user' %}"
        "{% if loop.first and system_message is defined %}{{ ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
        "{% else %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'] + eos_token}}{% endif %}{% endfor %}"),
    "mistral-v3": (
        "{{ bos_token }}{% for message in loop_messages %}{% if message['role'] == 'user' %}"
        "{% if tools is not none and (message == user_messages[-1]) %}{{ '[AVAILABLE_TOOLS] [' }}{% endif %}"
        "{% if loop.last and system_message is defined %}{{ '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
        "{% else %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% endif %}{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content']|trim + eos_token}}{% endif %}{% endfor %}"),
    "mistral-v3-tekken": (
        "{{ bos_token }}{% for message in loop_messages %}{% if message['role'] == 'user' %}"
        "{% if tools is not none and (message == user_messages[-1]) %}{{ \"[AVAILABLE_TOOLS][\" }}{% endif %}"
        "{{ \"[INST]\" + message['content'] + \"[/INST]\" }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"),
    "mistral-v7": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}"
        "{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"),
    "unrecognised": "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:",
}

CHAT_CONVERSATIONS = [
    [("system", "You are a helpful assistant."), ("user", "Hello there"), ("assistant", "Hi! How can I help?"),
     ("user", "What is the meaning of life?")],
    [("system", "  Be terse.\n"), ("user", " Write a haiku about the sea. "), ("assistant", "\nWaves fold into foam \n"),
     ("user", "Another, about café Straße 東京.")],
    [("user", "Hello world")],
    [("user", "hi"), ("assistant", "hello"), ("user", "the dog sat on the log")],
]


def render_chat(tmpl, msgs):
    """llama.cpp's rendering (llama_chat_apply_template, add_ass true), or None if it refuses."""
    import ctypes
    import llama_cpp
    arr = (llama_cpp.llama_chat_message * len(msgs))()
    keep = []
    for i, (r, c) in enumerate(msgs):
        rb, cb = r.encode(), c.encode()
        keep += [rb, cb]
        arr[i].role = rb
        arr[i].content = cb
    buf = ctypes.create_string_buffer(1 << 16)
    n = llama_cpp.llama_chat_apply_template(tmpl.encode(), arr, len(msgs), True, buf, len(buf))
    return None if n < 0 else buf.raw[:n].decode()


TINY_PROMPTS = ["the cat sat on the mat", "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"]


# ---------------------------------------------------------------- recording with llama.cpp

def _top(row):
    top = np.argsort(-row, kind="stable")[:TOPK]
    return [int(x) for x in top], [round(float(row[x]), 5) for x in top]


def record(model_path, tokenize_prompts, gen_prompts, n_pos, n_greedy, steps=False, n_ctx=512):
    import llama_cpp
    ref = llama_cpp.Llama(model_path, n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False, flash_attn=False)
    fa = llama_cpp.Llama(model_path, n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False, flash_attn=True)
    out = {"tokenize": [], "generate": []}
    for p in tokenize_prompts:
        out["tokenize"].append({"text": p, "tokens": ref.tokenize(p.encode(), add_bos=True, special=True)})
    for p in gen_prompts:
        t = ref.tokenize(p.encode(), add_bos=True, special=True)
        ref.reset()
        ref.eval(t)
        fa.reset()
        fa.eval(t)
        a = np.array(ref.scores[: len(t)])
        b = np.array(fa.scores[: len(t)])
        pos = []
        for i in range(min(n_pos, len(t))):
            ti, tl = _top(a[i])
            pos.append({"top_ids": ti, "top_logits": tl, "fa_spread": round(float(np.abs(a[i] - b[i]).max()), 5)})
        ids, margins, step_logits = [], [], []
        for _ in range(n_greedy):
            row = np.array(ref.scores[ref.n_tokens - 1])
            srt = np.sort(row)
            tok = int(np.argmax(row))
            ids.append(tok)
            margins.append(round(float(srt[-1] - srt[-2]), 5))
            if steps and len(ids) > 1:  # logits of a decode step (the first row is the prompt's last)
                ti, tl = _top(row)
                step_logits.append({"top_ids": ti, "top_logits": tl})
            ref.eval([tok])
        fa_ids = []
        for _ in range(n_greedy):
            tok = int(np.argmax(fa.scores[fa.n_tokens - 1]))
            fa_ids.append(tok)
            fa.eval([tok])
        case = {"text": p, "tokens": t, "positions": pos, "greedy": ids, "greedy_margins": margins,
                "greedy_flash_attn": fa_ids}
        if steps:
            case["steps"] = step_logits
        out["generate"].append(case)
    out["llama_cpp_version"] = getattr(llama_cpp, "__version__", "?")
    return out


def record_spm():
    """tiny_spm.json (tokenisation + logits + greedy) and chat_templates.json."""
    import tempfile
    import llama_cpp
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, SPM_NAME + ".gguf")
        sha = tiny_model(SPM_NAME, path)
        fx = record(path, SPM_TOKENIZE, TINY_PROMPTS[:1] + ["Hello world, the quick brown fox"], 6, 16)
        fx["sha256"] = sha
        fx["n_vocab"] = len(_spm_vocab()[0])
        voc = llama_cpp.Llama(path, vocab_only=True, verbose=False)
        chats = []
        for tname, tmpl in CHAT_TEMPLATES.items():
            convs = []
            for conv in CHAT_CONVERSATIONS:
                text = render_chat(tmpl, conv)
                c = {"messages": [{"role": r, "content": t} for r, t in conv], "rendered": text}
                if text is not None:
                    c["tokens"] = voc.tokenize(text.encode(), add_bos=True, special=True)
                convs.append(c)
            chats.append({"name": tname, "template": tmpl, "conversations": convs})
    with open(os.path.join(FIX, "tiny_spm.json"), "w") as f:
        json.dump(fx, f, indent=0, ensure_ascii=False)
    with open(os.path.join(FIX, "chat_templates.json"), "w") as f:
        json.dump({"llama_cpp_version": getattr(llama_cpp, "__version__", "?"), "templates": chats}, f, indent=1,
                  ensure_ascii=False)
    print("wrote tiny_spm.json, chat_templates.json")


def record_tiny(names, fxs):
    """Records the tiny models `names` into the dict fxs (name -> fixture)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            path = os.path.join(d, name + ".gguf")
            sha = tiny_model(name, path)
            fx = record(path, TINY_PROMPTS, TINY_PROMPTS, 6, 16)
            fx["sha256"] = sha
            fxs[name] = fx
            print("recorded", name)
    return fxs


def record_arch():
    """tiny_arch.json: the TINY_ARCH models (those named on the command line, if any, the others
    kept), recorded as the tiny llama-family ones."""
    out = os.path.join(FIX, "tiny_arch.json")
    names = [a for a in sys.argv[1:] if a in TINY_ARCH] or list(TINY_ARCH)
    fxs = {}
    if os.path.exists(out) and len(names) < len(TINY_ARCH):
        with open(out) as f:
            fxs = json.load(f)
    record_tiny(names, fxs)
    with open(out, "w") as f:
        json.dump({k: fxs[k] for k in TINY_ARCH if k in fxs}, f, indent=0, ensure_ascii=False)


ROPE_TABLE_POS = [1, 13, 100, 1000, 4095, 30000]


def _ggml_rope_table(path, n_ctx, positions):
    """cos/sin (float32 bits, big-endian hex) of the rotation llama.cpp would apply to this model at context
    n_ctx: ggml's own rope op (libggml of the installed llama-cpp-python, through ctypes) on
    (1, 0) pairs, with the parameters llama.cpp derives from the file (llama_context's YaRN
    attn_factor in float32 with the C library's logf; LongRoPE's long factors when n_ctx rounded up
    to 256 exceeds original_context_length)."""
    import ctypes
    import gguf
    import llama_cpp
    lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    base, cpu = ctypes.CDLL(os.path.join(lib, "libggml-base.so")), ctypes.CDLL(os.path.join(lib, "libggml-cpu.so"))
    libm = ctypes.CDLL("libm.so.6")
    libm.logf.restype, libm.logf.argtypes = ctypes.c_float, [ctypes.c_float]

    class Params(ctypes.Structure):
        _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]
    vp, f, i64 = ctypes.c_void_p, ctypes.c_float, ctypes.c_int64
    base.ggml_init.restype, base.ggml_init.argtypes = vp, [Params]
    base.ggml_new_tensor_1d.restype, base.ggml_new_tensor_1d.argtypes = vp, [vp, ctypes.c_int, i64]
    base.ggml_new_tensor_3d.restype, base.ggml_new_tensor_3d.argtypes = vp, [vp, ctypes.c_int, i64, i64, i64]
    base.ggml_rope_ext.restype = vp
    base.ggml_rope_ext.argtypes = [vp, vp, vp, vp, ctypes.c_int, ctypes.c_int, ctypes.c_int, f, f, f, f, f, f]
    base.ggml_new_graph.restype, base.ggml_new_graph.argtypes = vp, [vp]
    base.ggml_build_forward_expand.argtypes = [vp, vp]
    base.ggml_get_data.restype, base.ggml_get_data.argtypes = vp, [vp]
    base.ggml_free.argtypes = [vp]
    cpu.ggml_graph_compute_with_ctx.argtypes = [vp, vp, ctypes.c_int]

    def data(t, ctype, shape):
        return np.ctypeslib.as_array(ctypes.cast(base.ggml_get_data(t), ctypes.POINTER(ctype)), shape)

    r = gguf.GGUFReader(path)
    kv = {k: fl.contents() for k, fl in r.fields.items()}
    arch = kv["general.architecture"]
    n_dims = kv.get(f"{arch}.rope.dimension_count", kv[f"{arch}.embedding_length"] // kv[f"{arch}.attention.head_count"])
    n_orig = kv.get(f"{arch}.rope.scaling.original_context_length", 0) or kv[f"{arch}.context_length"]
    fac = np.float32(kv.get(f"{arch}.rope.scaling.factor", 0.0))
    freq_scale = np.float32(1) / fac if fac else np.float32(1)
    attn, ext = np.float32(1), 0.0
    if kv.get(f"{arch}.rope.scaling.type") == "yarn":  # llama_context: get_mscale / (1 + 0.1 ln factor)
        ext, fct = 1.0, np.float32(1) / freq_scale
        ms = np.float32(1) if fct <= 1 else np.float32(libm.logf(fct)) * np.float32(0.1) + np.float32(1)
        attn = ms * (np.float32(1) / (np.float32(1) + np.float32(0.1) * np.float32(libm.logf(fct))))
    attn = attn * np.float32(kv.get(f"{arch}.rope.scaling.attn_factor", 1.0))
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors if t.name.startswith("rope_factors")}
    factors = tensors.get("rope_factors_long.weight" if (n_ctx + 255) // 256 * 256 > n_orig else "rope_factors_short.weight")
    ctx = base.ggml_init(Params(16 << 20, None, False))
    n = len(positions)
    x = base.ggml_new_tensor_3d(ctx, 0, n_dims, 1, n)  # GGML_TYPE_F32, one head per position
    xa = data(x, ctypes.c_float, (n, n_dims))
    xa[:] = 0
    xa[:, 0::2] = 1  # (1, 0) pairs: the rotated pair is (cos, sin)
    p = base.ggml_new_tensor_1d(ctx, 26, n)  # GGML_TYPE_I32
    data(p, ctypes.c_int32, (n,))[:] = positions
    c = None
    if factors is not None:
        c = base.ggml_new_tensor_1d(ctx, 0, n_dims // 2)
        data(c, ctypes.c_float, (n_dims // 2,))[:] = factors
    y = base.ggml_rope_ext(ctx, x, p, c, n_dims, 0, n_orig, float(kv.get(f"{arch}.rope.freq_base", 10000.0)),
                           float(freq_scale), ext, float(attn), 32.0, 1.0)
    g = base.ggml_new_graph(ctx)
    base.ggml_build_forward_expand(g, y)
    cpu.ggml_graph_compute_with_ctx(ctx, g, 1)
    bits = data(y, ctypes.c_float, (n, n_dims)).copy().view(np.uint32)
    base.ggml_free(ctx)
    return [row.astype(">u4").tobytes().hex() for row in bits]  # one hex string per position


def record_rope():
    """tiny_rope.json: each of ROPE_CASES recorded as the tiny models, at its context, plus the
    bits of ggml's rotation at ROPE_TABLE_POS."""
    import tempfile
    fxs = {}
    with tempfile.TemporaryDirectory() as d:
        for case, (name, n_ctx) in ROPE_CASES.items():
            path = os.path.join(d, name + ".gguf")
            sha = tiny_model(name, path)
            fx = record(path, [], TINY_PROMPTS, 6, 16, n_ctx=n_ctx)
            fx.update(sha256=sha, model=name, n_ctx=n_ctx,
                      rope_table={"positions": ROPE_TABLE_POS, "bits": _ggml_rope_table(path, n_ctx, ROPE_TABLE_POS)})
            fxs[case] = fx
            print("recorded", case)
    with open(os.path.join(FIX, "tiny_rope.json"), "w") as f:
        json.dump(fxs, f, indent=0, ensure_ascii=False)


def main():
    os.makedirs(FIX, exist_ok=True)
    if "--rope-only" in sys.argv:
        record_rope()
        return
    if "--spm-only" in sys.argv:
        record_spm()
        return
    if "--arch-only" in sys.argv:
        record_arch()
        return
    if os.path.exists(SMOL) and "--tiny-only" not in sys.argv:
        fx = record(SMOL, SMOL_TOKENIZE, SMOL_GENERATE, N_LOGIT_POS, N_GREEDY, steps=True)
        fx["model"] = "SmolLM2-135M-Instruct.Q4_1.gguf"
        with open(os.path.join(FIX, "smollm2.json"), "w") as f:
            json.dump(fx, f, indent=0, ensure_ascii=False)
        print("wrote smollm2.json")
    else:
        print("skip smollm2: model missing", file=sys.stderr)
    if "--smol-only" in sys.argv:
        return
    tiny = record_tiny(TINY, {})
    with open(os.path.join(FIX, "tiny_models.json"), "w") as f:
        json.dump(tiny, f, indent=0, ensure_ascii=False)
    record_spm()


if __name__ == "__main__":
    main()
