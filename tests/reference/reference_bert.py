"""Independent reference for the native embedder: token ids from Hugging Face `tokenizers`,
a BERT forward pass written in numpy (float64) from the `safetensors` weights, mean/cls/max
pooling per 1_Pooling/config.json, L2 normalisation when modules.json lists Normalize.
Uses only numpy, safetensors and tokenizers; shares no code with the C engine.

embed_many() keeps the vectors of a whole corpus in $WEAVER_REF_CACHE under a hash of everything
they depend on: the model files this class reads, the texts, this file and the numpy/safetensors/
tokenizers versions. ops/test.sh empties build-test/reference-cache and points it there, so each
run computes them once and its sanitizer pass reuses them; never committed."""
import fcntl
import hashlib
import json
import math
import os

import numpy as np
import safetensors
import tokenizers
from safetensors.numpy import load_file
from tokenizers import Tokenizer

# What Reference reads from a snapshot: the cache key covers exactly these.
MODEL_FILES = ("config.json", "sentence_bert_config.json", os.path.join("1_Pooling", "config.json"),
               "modules.json", "tokenizer.json", "model.safetensors")


def cosine(a, b):
    """Cosine similarity in float64, the measure the embedding checks assert on."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def erf(z):
    """erf in float64: Maclaurin series for |z| <= 3 (about 1e-13 absolute), math.erf elsewhere.
    Each magnitude band sums its series only until the band's largest term is below 1e-17 (terms
    shrink once n > z^2), so small z take fewer terms. Same bits as 80 terms for every z: checked
    on 500k values and on the reference corpus's vectors."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    a = np.abs(z)
    lo = -1.0
    for hi in (0.5, 1.0, 2.0, 3.0):
        band = (a > lo) & (a <= hi)
        lo = hi
        zs = z[band]
        z2 = zs * zs
        term = zs.copy()
        acc = zs.copy()
        n = 0
        while n <= hi * hi or hi ** (2 * n + 1) / (math.factorial(n) * (2 * n + 1)) >= 1e-17:
            n += 1
            term = term * (-z2) / n
            acc += term / (2 * n + 1)
        out[band] = acc * (2.0 / math.sqrt(math.pi))
    big = ~(a <= 3.0)
    out[big] = [math.erf(v) for v in z[big]]
    return out


class Reference:
    def __init__(self, snapshot):
        self.dir = snapshot
        cfg = json.load(open(os.path.join(snapshot, "config.json")))
        self.H = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        sb = json.load(open(os.path.join(snapshot, "sentence_bert_config.json")))
        self.max_len = sb.get("max_seq_length", cfg.get("max_position_embeddings", 512))
        pool = json.load(open(os.path.join(snapshot, "1_Pooling", "config.json")))
        self.pooling = ("cls" if pool.get("pooling_mode_cls_token") else
                        "max" if pool.get("pooling_mode_max_tokens") else "mean")
        mods = json.load(open(os.path.join(snapshot, "modules.json")))
        self.normalize = any(m["type"].endswith("Normalize") for m in mods)
        self.tok = Tokenizer.from_file(os.path.join(snapshot, "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(self.max_len)
        w = load_file(os.path.join(snapshot, "model.safetensors"))
        pfx = "" if "embeddings.word_embeddings.weight" in w else "bert."
        self.w = {k[len(pfx):]: v.astype(np.float64) for k, v in w.items() if k.startswith(pfx)}

    def ids(self, text):
        return self.tok.encode(text).ids

    @staticmethod
    def _ln(x, g, b, eps):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    def _lin(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def forward(self, ids):
        w, H, nh = self.w, self.H, self.heads
        d = H // nh
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        for l in range(self.layers):
            p = f"encoder.layer.{l}."
            q = self._lin(x, p + "attention.self.query").reshape(n, nh, d).transpose(1, 0, 2)
            k = self._lin(x, p + "attention.self.key").reshape(n, nh, d).transpose(1, 0, 2)
            v = self._lin(x, p + "attention.self.value").reshape(n, nh, d).transpose(1, 0, 2)
            s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(n, H)
            x = self._ln(x + self._lin(ctx, p + "attention.output.dense"),
                         w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps)
            h = self._lin(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            x = self._ln(x + self._lin(h, p + "output.dense"),
                         w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], self.eps)
        return x

    def embed(self, text, normalize=None):
        x = self.forward(self.ids(text))
        v = x[0] if self.pooling == "cls" else x.max(0) if self.pooling == "max" else x.mean(0)
        if self.normalize if normalize is None else normalize:
            v = v / np.linalg.norm(v)
        return v

    def cache_key(self, texts, normalize=None):
        h = hashlib.sha256()
        for name in MODEL_FILES:
            with open(os.path.join(self.dir, name), "rb") as f:
                h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
        with open(os.path.abspath(__file__), "rb") as f:
            h.update(f.read())
        h.update(json.dumps([np.__version__, safetensors.__version__, tokenizers.__version__, normalize,
                             list(texts)]).encode())
        return h.hexdigest()

    def embed_many(self, texts, normalize=None):
        """np.stack of embed(t) for each text, from $WEAVER_REF_CACHE when a run already computed
        them (see the module docstring); without it, computed here every time."""
        cache = os.environ.get("WEAVER_REF_CACHE")
        if not cache:
            return np.stack([self.embed(t, normalize) for t in texts])
        os.makedirs(cache, exist_ok=True)
        path = os.path.join(cache, self.cache_key(texts, normalize) + ".npy")
        # One computes, a test running in parallel waits for it instead of computing too.
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if os.path.exists(path):
                return np.load(path)
            v = np.stack([self.embed(t, normalize) for t in texts])
            np.save(path + ".tmp.npy", v)
            os.replace(path + ".tmp.npy", path)
            return v
