"""decode_numpy_ref.py: a float64 numpy forward pass of the tiny llama-architecture test models
(tests/reference/decode_make_fixtures.py tiny_model) with F16 or F32 weight matrices. Needs numpy
and gguf only. test_decode_llamacpp.py uses it to size the F16 tolerance: the logits with and
without llama.cpp's fp16 rounding of F16 activations, everything else equal.

What it computes, written from the llama architecture, not from our C code: token embedding
(Q8_0, dequantised), per layer RMSNorm, Q/K/V projections, RoPE on adjacent pairs, causal
grouped-query attention with K, V, Q and the probabilities rounded to fp16 (both our decoder and
llama.cpp keep the KV cache and the attention operands in fp16), output projection, RMSNorm,
SwiGLU feed-forward; then the final RMSNorm and the tied output head. The head's weights are Q8_0,
so its input is quantised to Q8_0 blocks first (32 values, scale max|x| / 127 stored as fp16,
float32 arithmetic and ties to even as ggml's x86 quantiser), as both implementations do.
Everything else is float64.

fp16_activations=True also rounds the input of every F16 weight matrix to fp16: what llama.cpp
does for F16 weights (its vec_dot type for F16 is F16) and our decoder does not.

It is not an exact reference: float64 cannot reproduce every fp16 / int8 rounding decision of a
float32 computation. Measured on tiny_llama_f16: within 2e-6 of our decoder at the fixture's
recorded logits, but up to 0.04 apart at other positions where such a decision flips.
"""
import numpy as np


def load(path):
    import gguf
    r = gguf.GGUFReader(path)
    t = {}
    for x in r.tensors:
        shape = [int(v) for v in reversed(x.shape)]
        if x.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            a = np.asarray(x.data, dtype=np.float64)
        else:
            a = np.asarray(gguf.quants.dequantize(x.data, x.tensor_type), dtype=np.float64)
        t[x.name] = a.reshape(shape)
    meta = {
        "layers": int(r.fields["llama.block_count"].parts[-1][0]),
        "heads": int(r.fields["llama.attention.head_count"].parts[-1][0]),
        "kv_heads": int(r.fields["llama.attention.head_count_kv"].parts[-1][0]),
        "eps": float(r.fields["llama.attention.layer_norm_rms_epsilon"].parts[-1][0]),
        "rope_base": float(r.fields["llama.rope.freq_base"].parts[-1][0]),
    }
    assert str(bytes(r.fields["general.architecture"].parts[-1]), "utf-8") == "llama"
    assert "output.weight" not in t, "tied output head only"
    return t, meta


def _f16(a):
    return a.astype(np.float16).astype(np.float64)


def _q8_0(x):
    """Q8_0 round trip of each float32 row, as ggml quantises an activation: blocks of 32,
    q = round-to-nearest-even(x * (127 / max|x|)) in float32, scale max|x| / 127 kept as fp16."""
    b = x.astype(np.float32).reshape(x.shape[0], -1, 32)
    amax = np.abs(b).max(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    d = _f16((amax / np.float32(127)).astype(np.float32))
    return (np.rint(b * inv).astype(np.float64) * d).reshape(x.shape)


def logits(model, tokens, fp16_activations=False):
    """All positions' logits, shape (len(tokens), n_vocab)."""
    t, m = model
    act = _f16 if fp16_activations else (lambda a: a)
    n, H, HKV = len(tokens), m["heads"], m["kv_heads"]
    D = t["token_embd.weight"].shape[1]
    HD = t["blk.0.attn_q.weight"].shape[0] // H
    ang = np.arange(n)[:, None] * m["rope_base"] ** (-np.arange(0, HD, 2) / HD)[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):
        out = np.empty_like(v)
        out[..., 0::2] = v[..., 0::2] * cos - v[..., 1::2] * sin
        out[..., 1::2] = v[..., 0::2] * sin + v[..., 1::2] * cos
        return out

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + m["eps"]) * w

    x = t["token_embd.weight"][tokens]
    causal = np.tri(n) > 0
    for i in range(m["layers"]):
        p = f"blk.{i}."
        h = act(rms(x, t[p + "attn_norm.weight"]))
        q = _f16(rope((h @ t[p + "attn_q.weight"].T).reshape(n, H, HD)))
        k = _f16(rope((h @ t[p + "attn_k.weight"].T).reshape(n, HKV, HD)))
        v = _f16((h @ t[p + "attn_v.weight"].T).reshape(n, HKV, HD))
        att = np.zeros((n, H, HD))
        for hh in range(H):
            kv = hh // (H // HKV)
            s = np.where(causal, q[:, hh] @ k[:, kv].T / np.sqrt(HD), -np.inf)
            pr = np.exp(s - s.max(-1, keepdims=True))
            att[:, hh] = _f16(pr / pr.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + act(att.reshape(n, H * HD)) @ t[p + "attn_output.weight"].T
        h = act(rms(x, t[p + "ffn_norm.weight"]))
        g, u = h @ t[p + "ffn_gate.weight"].T, h @ t[p + "ffn_up.weight"].T
        x = x + act(g / (1.0 + np.exp(-g)) * u) @ t[p + "ffn_down.weight"].T
    h = rms(x, t["output_norm.weight"]).astype(np.float32).astype(np.float64)
    assert D % 32 == 0
    return _q8_0(h) @ t["token_embd.weight"].T
