"""Writes the seed corpora of the fuzz targets, deterministically, with the standard library only:

  corpus_safetensors/  fuzz_safetensors and test_embed_safetensors (which replays every file):
                       small valid files (F32, F16, BF16, I64, empty tensors) and hand-made lies
  corpus_gguf/         fuzz_gguf: tiny but complete llama / qwen2 / qwen3 models (the model and
                       tokenizer loaders accept them) and a few lying headers
  corpus_job/          fuzz_job: embed and generate jobs as producers write them, valid and not

ops/test.sh runs each target on its corpus for a fixed time on every CI run; findings worth
keeping go into the same directory. Run: python3 tests/fuzz/make_seeds.py"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def out_dir(name):
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    return d


# ---------------------------------------------------------------- safetensors

def safetensors_seeds():
    here = out_dir("corpus_safetensors")

    def write(name, header, data=b"", hlen=None):
        h = header if isinstance(header, bytes) else json.dumps(header).encode()
        with open(os.path.join(here, name), "wb") as f:
            f.write(struct.pack("<Q", len(h) if hlen is None else hlen) + h + data)

    ok = {"__metadata__": {"format": "pt"},
          "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
          "h": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
          "b": {"dtype": "BF16", "shape": [2], "data_offsets": [20, 24]},
          "i": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]},
          "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [32, 32]}}
    data = struct.pack("<4f", 1, 2, 3, 4) + bytes([0, 0x3c, 0, 0xc0, 0x80, 0x3f, 0x40, 0x40]) + struct.pack("<q", 7)
    write("valid_mixed", ok, data)
    write("valid_empty_header", {})
    write("truncated_data", ok, data[:20])
    write("header_len_lies", ok, data, hlen=1 << 40)
    write("header_len_short", ok, data, hlen=10)
    write("offsets_past_end", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 50]}}, b"\0" * 16)
    write("shape_mismatch", {"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, b"\0" * 16)
    write("shape_overflow", {"w": {"dtype": "F32", "shape": [1 << 31, 1 << 31, 1 << 31], "data_offsets": [0, 16]}},
          b"\0" * 16)
    write("negative_offset", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, b"\0" * 16)
    write("overlap", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16)
    write("not_json", b"{\"w\": {\"dtype\": \"F32\", ", b"\0" * 16)
    write("unknown_dtype", {"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
    with open(os.path.join(here, "tiny"), "wb") as f:
        f.write(b"\x02\0\0")  # shorter than the 8-byte length


# ---------------------------------------------------------------- GGUF
# The GGUF v3 layout, written out by hand: header, metadata, tensor infos, padding to
# general.alignment (32), tensor data (each tensor's offset a multiple of 32).

U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
T_F32, T_F16, T_Q4_1, T_Q8_0 = 0, 1, 3, 8


def g_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def g_value(vtype, v):
    if vtype == U32:
        return struct.pack("<I", v)
    if vtype == I32:
        return struct.pack("<i", v)
    if vtype == F32:
        return struct.pack("<f", v)
    if vtype == BOOL:
        return struct.pack("<B", 1 if v else 0)
    if vtype == STRING:
        return g_str(v)
    if vtype == U64:
        return struct.pack("<Q", v)
    raise ValueError(vtype)


def g_kv(key, vtype, v, elem=None):
    out = g_str(key) + struct.pack("<I", vtype)
    if vtype == ARRAY:
        out += struct.pack("<IQ", elem, len(v)) + b"".join(g_value(elem, x) for x in v)
    else:
        out += g_value(vtype, v)
    return out


def fp16(x):
    return struct.pack("<e", x)


def rows_bytes(ttype, rows, cols, seed):
    """Deterministic small weights: F32, F16, Q8_0 (fp16 d + 32 int8) or Q4_1 (fp16 d, m + 16 bytes)."""
    out = bytearray()
    s = seed
    for r in range(rows):
        for c0 in range(0, cols, 32):
            n = min(32, cols - c0)
            vals = []
            for _ in range(n):
                s = (s * 1103515245 + 12345) & 0x7FFFFFFF
                vals.append(((s >> 8) % 201 - 100) / 1000.0)
            if ttype == T_F32:
                out += struct.pack("<%df" % n, *vals)
            elif ttype == T_F16:
                out += b"".join(fp16(v) for v in vals)
            elif ttype == T_Q8_0:
                out += fp16(0.001) + bytes((round(v * 1000) & 0xFF) for v in vals)
            elif ttype == T_Q4_1:
                out += fp16(0.01) + fp16(-0.08) + bytes(((i * 7 + r) & 0xFF) for i in range(16))
    return bytes(out)


def gguf_file(kvs, tensors, version=3, lie=None):
    """kvs: [bytes from g_kv]; tensors: [(name, ne list, type, data bytes)]. lie: {field: value}
    overrides a header count or a tensor's stated offset to make a lying file."""
    lie = lie or {}
    infos, data = b"", b""
    for name, ne, ttype, blob in tensors:
        off = len(data)
        infos += g_str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        infos += struct.pack("<IQ", ttype, lie.get("offset:" + name, off))
        data += blob + b"\0" * (-len(blob) % 32)
    head = b"GGUF" + struct.pack("<IQQ", version, lie.get("n_tensors", len(tensors)), lie.get("n_kv", len(kvs)))
    meta = head + b"".join(kvs) + infos
    return meta + b"\0" * (-len(meta) % 32) + data


def spm_vocab():
    toks = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "\u2581", "\u2581the", "\u2581cat", "h", "e", "l", "o",
            "\u2581hello", "\u2581world", "1", "2"]
    types = [2, 3, 3, 6, 6] + [1] * (len(toks) - 5)
    scores = [0.0, 0.0, 0.0, 0.0, 0.0] + [-float(i) for i in range(len(toks) - 5)]
    return toks, types, scores


def bpe_vocab():
    """A byte-level BPE vocabulary: the 256 byte characters of GPT-2, a few merges, controls."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    char, extra = {}, 0
    for b in range(256):
        if b in keep:
            char[b] = chr(b)
        else:
            char[b] = chr(256 + extra)
            extra += 1
    toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [char[b] for b in range(256)]
    types = [3, 3, 3] + [1] * 256
    merges = ["\u0120 t", "h e", "\u0120t he", "i n", "\u0120 w"]
    for m in merges:
        toks.append(m.replace(" ", ""))
        types.append(1)
    return toks, types, merges


def tiny_model(arch, wtype, tokenizer, n_layer=1, lie=None, extra_kvs=()):
    """A complete model the loaders accept: D=32, FF=64, 2 heads of 16, 1 KV head."""
    D, F, H, HKV, HD = 32, 64, 2, 1, 16
    if tokenizer == "llama":
        toks, types, scores = spm_vocab()
    else:
        toks, types, merges = bpe_vocab()
    V = len(toks)
    kvs = [g_kv("general.architecture", STRING, arch),
           g_kv("general.alignment", U32, 32),
           g_kv(arch + ".block_count", U32, n_layer),
           g_kv(arch + ".context_length", U32, 128),
           g_kv(arch + ".embedding_length", U32, D),
           g_kv(arch + ".feed_forward_length", U32, F),
           g_kv(arch + ".attention.head_count", U32, H),
           g_kv(arch + ".attention.head_count_kv", U32, HKV),
           g_kv(arch + ".attention.layer_norm_rms_epsilon", F32, 1e-6),
           g_kv(arch + ".rope.freq_base", F32, 10000.0),
           g_kv("tokenizer.ggml.model", STRING, tokenizer),
           g_kv("tokenizer.ggml.tokens", ARRAY, toks, STRING),
           g_kv("tokenizer.ggml.token_type", ARRAY, types, I32),
           g_kv("tokenizer.ggml.bos_token_id", U32, 1 if tokenizer == "llama" else 0),
           g_kv("tokenizer.ggml.eos_token_id", U32, 2)]
    if tokenizer == "llama":
        kvs.append(g_kv("tokenizer.ggml.scores", ARRAY, scores, F32))
    else:
        kvs += [g_kv("tokenizer.ggml.merges", ARRAY, merges, STRING),
                g_kv("tokenizer.ggml.pre", STRING, "qwen2"),
                g_kv("tokenizer.ggml.add_bos_token", BOOL, False)]
    if arch == "qwen3":
        kvs.append(g_kv(arch + ".attention.key_length", U32, HD))
    kvs += list(extra_kvs)
    seed = [1]

    def mat(name, rows, cols, t=wtype):
        seed[0] += 1
        return (name, [cols, rows], t, rows_bytes(t, rows, cols, seed[0]))

    def vec(name, n):
        seed[0] += 1
        return (name, [n], T_F32, rows_bytes(T_F32, 1, n, seed[0]))

    tensors = [mat("token_embd.weight", V, D, T_Q8_0 if D % 32 == 0 else T_F32), vec("output_norm.weight", D)]
    for i in range(n_layer):
        p = "blk.%d." % i
        tensors += [vec(p + "attn_norm.weight", D), vec(p + "ffn_norm.weight", D),
                    mat(p + "attn_q.weight", H * HD, D), mat(p + "attn_k.weight", HKV * HD, D),
                    mat(p + "attn_v.weight", HKV * HD, D), mat(p + "attn_output.weight", D, H * HD),
                    mat(p + "ffn_gate.weight", F, D), mat(p + "ffn_up.weight", F, D),
                    mat(p + "ffn_down.weight", D, F)]
        if arch == "qwen2":
            tensors += [vec(p + "attn_q.bias", H * HD), vec(p + "attn_k.bias", HKV * HD), vec(p + "attn_v.bias", HKV * HD)]
        if arch == "qwen3":
            tensors += [vec(p + "attn_q_norm.weight", HD), vec(p + "attn_k_norm.weight", HD)]
    return gguf_file(kvs, tensors, lie=lie)


def gguf_seeds():
    here = out_dir("corpus_gguf")

    def write(name, blob):
        with open(os.path.join(here, name), "wb") as f:
            f.write(blob)

    write("llama_spm_q8_0", tiny_model("llama", T_Q8_0, "llama"))
    write("qwen2_bpe_q4_1", tiny_model("qwen2", T_Q4_1, "gpt2"))
    write("qwen3_bpe_f16", tiny_model("qwen3", T_F16, "gpt2"))
    write("llama_linear_rope", tiny_model("llama", T_Q8_0, "llama", extra_kvs=[
        g_kv("llama.rope.scaling.type", STRING, "linear"), g_kv("llama.rope.scaling.factor", F32, 2.0)]))
    # Lies the loaders must refuse with a message.
    write("layers_missing", tiny_model("llama", T_Q8_0, "llama", extra_kvs=[]).replace(
        g_kv("llama.block_count", U32, 1), g_kv("llama.block_count", U32, 3)))
    write("tensor_offset_past_end", tiny_model("llama", T_Q8_0, "llama", lie={"offset:output_norm.weight": 1 << 40}))
    write("tensor_count_lies", tiny_model("llama", T_Q8_0, "llama", lie={"n_tensors": 1 << 40}))
    write("kv_count_lies", tiny_model("llama", T_Q8_0, "llama", lie={"n_kv": 200}))
    write("version_1", gguf_file([g_kv("general.architecture", STRING, "llama")], [], version=1))
    write("header_only", b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    write("truncated", tiny_model("qwen2", T_Q4_1, "gpt2")[:700])


# ---------------------------------------------------------------- jobs

def job_seeds():
    here = out_dir("corpus_job")
    jobs = {
        "embed_text": {"id": "a1", "text": "hello world", "reply_to": "it:reply:x"},
        "embed_texts": {"texts": ["one", "two", "caf\u00e9 \u6771\u4eac"], "normalize": False, "dimensions": 4,
                        "truncate": False, "encoding": "f32"},
        "embed_target": {"id": "t", "text": "x", "target": {"keys": ["doc:1"], "field": "vec"}},
        "embed_instruction": {"id": "q", "texts": ["where do cats sleep"], "instruction": "Find passages"},
        "embed_instruction_default": {"id": "q2", "text": "query", "instruction": True},
        "generate_prompt": {"id": "g", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7,
                            "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.1, "repeat_last_n": 32,
                            "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 42, "stop": ["\n", "END"],
                            "truncate": True},
        "generate_messages": {"messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "hi"}], "stop": "."},
    }
    for name, job in jobs.items():
        with open(os.path.join(here, name), "w") as f:
            f.write(json.dumps(job))
    raw = {
        "duplicate_field": b'{"text": "a", "text": "b"}',
        "nul_escape": b'{"text": "a\\u0000b"}',
        "bad_utf8": b'{"text": "\xff\xfe"}',
        "surrogate_escape": b'{"text": "\\ud800"}',
        "deep_nesting": b'{"text": ' + b"[" * 64 + b"]" * 64 + b"}",
        "not_object": b'["text"]',
        "huge_number": b'{"prompt": "p", "max_tokens": 1e400, "seed": 9007199254740993}',
    }
    for name, blob in raw.items():
        with open(os.path.join(here, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    safetensors_seeds()
    gguf_seeds()
    job_seeds()
