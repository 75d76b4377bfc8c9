"""test_decode_llamacpp.py: the native decoder against fixtures recorded from llama.cpp
(tests/reference/decode_make_fixtures.py). Needs numpy and gguf only, never llama.cpp.

It drives `weaver-engine generate-local` ($WEAVER_BIN) or, until engine/main.c dispatches
that command, the same CLI inside the test_decode_cli unit-test binary.

Tolerances, and why (measured 2026-12-02 on this fixture):
- tokenisation: identical ids.
- logits: the fixture stores llama.cpp's float32 logits rounded to 5 decimals, so a
  bit-identical logit is within 5e-6 of the recorded value; ROUND = 5e-6 + 1e-9 (the 1e-9 for
  the decimal-to-binary conversion) is the bound for every tensor type we compute in llama.cpp's
  order. Measured max |diff|: SmolLM2 (Q4_1) 4.9963e-6 at the prompt positions and 5.0000e-6 at
  the 31 decode steps; tiny models Q4_0 4.9866e-6, Q8_0 5.0000e-6, BF16 4.9796e-6, Q4_K 4.9744e-6,
  Q5_K 4.9908e-6, Q6_K 4.9991e-6, qwen2 Q8_0 4.9960e-6, qwen3 Q4_1 4.9857e-6, SentencePiece
  Q8_0 4.9841e-6. (Why bit-identity is needed at all: SmolLM2 amplifies a one-ulp change in
  attention into ~0.5 logits within a few layers, since each matmul re-quantises its input to
  int8; see docs/decoder.md.)
- F16 is the exception: llama.cpp rounds the inputs of F16 matmuls to fp16, we keep float32.
  Measured max |diff| 0.0862. F16_TOL = 0.1: decode_numpy_ref.py (float64 forward of the same
  model) puts the effect of that rounding alone on these logits at 0.081, and
  test_f16_bound_is_the_size_of_llama_cpps_fp16_rounding keeps F16_TOL within 1x..1.5x of it.
- greedy: every one of the reference's tokens is compared (32 SmolLM2, 16 tiny), teacher-forced
  (our argmax after feeding llama.cpp's own previous tokens, one token per pass as its loop did)
  and free-running (--greedy-ids). A step may be excused only as a real near-tie: llama.cpp's own
  top-1/top-2 margin there at most 2 x the type's computation bound + ROUND (so ~5e-6 for all
  types but F16, 0.2 for F16), and at most one per case: N = 15 of 16 tiny tokens, 32 of 32
  SmolLM2 tokens (no SmolLM2 margin is that small). Our free-running output may end early only at
  an end-of-generation token that llama.cpp chose at the same step; the teacher-forced check
  still covers the steps after it.
- decode-step margins (tiny models): the fixture records llama.cpp's top-1/top-2 margin at each
  greedy step (its only record of the decode steps' logits); ours must be within 2 x the
  computation bound + ROUND + 2 float32 ulps of the top logit (one ulp per logit: tiny qwen3 step
  14 is 5.008e-6 off, so the decode steps are within an ulp of llama.cpp's, not proven
  bit-identical), except KNOWN_MARGIN_GAPS (see there).
"""
import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.environ.get("WEAVER_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("WEAVER_BUILD_DIR", os.path.join(ROOT, "build"))
FIX = os.path.join(ROOT, "tests", "fixtures", "decode")
SMOL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import decode_make_fixtures as mk  # noqa: E402

ROUND = 5e-6 + 1e-9  # half a unit of the fixture's fifth decimal, + decimal-to-binary conversion
F16_TOL = 0.1        # llama.cpp's fp16 activations for F16 weights (see the docstring)
# What our computation may differ by, per tensor type of the big matrices; the logit bound is
# this + ROUND. 0: computed in llama.cpp's order, bit-identical.
COMPUTE_TOL = {"Q4_0": 0.0, "Q4_1": 0.0, "Q8_0": 0.0, "BF16": 0.0, "Q4_K": 0.0, "Q5_K": 0.0, "Q6_K": 0.0,
               "F16": F16_TOL}
# Decode-step top-1/top-2 margins that differ from llama.cpp's beyond the bound although every
# recorded prompt logit (positions 0-5) agrees within ROUND and every greedy token is the same.
# Not explained yet; llama.cpp is needed to find which position or operation first differs (the
# fixture records logits only at the first 6 prompt positions). Measured 2026-12-02; the value
# is a fence just above the measurement. A gap that closes fails the test: remove its entry.
KNOWN_MARGIN_GAPS = {
    ("tiny_llama_bf16", 0): 0.08,   # 0.0732, every step from the last prompt position (12) on
    ("tiny_llama_bf16", 1): 0.14,   # 0.1356, every step but one
    ("tiny_llama_q4_0", 1): 0.27,   # 0.2610, every step from the last prompt position (22) on
    ("tiny_llama_q4_k", 0): 0.003,  # 0.0023, step 2 only
    ("tiny_llama_q6_k", 0): 0.045,  # 0.0421, steps 4 and 13 only
    ("tiny_llama_q6_k", 1): 0.14,   # 0.1303, step 5 only
}
EOG_PIECES = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>")


@functools.cache  # one probe per test process: each start of the binary costs ~0.2 s of library loading
def _cli():
    b = os.environ.get("WEAVER_BIN")
    if b and os.path.exists(b):
        r = subprocess.run([b, "generate-local", "--help"], capture_output=True)
        if r.returncode == 0:
            return [b, "generate-local"]
    t = os.path.join(BUILD, "tests", "test_decode_cli")
    if os.path.exists(t):
        return [t, "generate-local"]
    pytest.fail("no generate-local entry: neither $WEAVER_BIN generate-local nor tests/test_decode_cli exist")


THREADS = "2"  # the pool's threaded path (guided row chunks, split Q/KV work), as the daemon runs


def run(*args):
    if "--threads" not in args:
        args = args + ("--threads", THREADS)
    r = subprocess.run(_cli() + list(args), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def margs(model):
    """--model PATH, or for (path, n_ctx) also --ctx n_ctx: the context llama.cpp was recorded at."""
    return ["--model", model] if isinstance(model, str) else ["--model", model[0], "--ctx", str(model[1])]


def load(name):
    with open(os.path.join(FIX, name)) as f:
        return json.load(f)


def ours_logits(model, text, tmp_path):
    path = str(tmp_path / "logits.f32")
    out = run("--model", model, "--prompt", text, "--dump-logits", "1", "--logits-out", path)
    lg = np.fromfile(path, dtype=np.float32).reshape(len(out["tokens"]), -1)
    return out["tokens"], lg


def forced_logits(model, toks, ref, tmp_path):
    """Our logits for the prompt (one pass) then llama.cpp's greedy tokens one per pass: row
    len(toks) - 1 + k is what step k of its greedy loop chose from."""
    path = str(tmp_path / "forced.f32")
    seq = toks + ref[:-1]
    out = run(*margs(model), "--ids", ",".join(map(str, seq)), "--dump-logits", "1", "--logits-out", path,
              "--prefill", str(len(toks)))
    assert out["tokens"] == seq
    return np.fromfile(path, dtype=np.float32).reshape(len(seq), -1)


def compare_greedy(model, case, lg, comp):
    """Every reference token, teacher-forced and free-running; returns how many were compared."""
    toks, ref, margins = case["tokens"], case["greedy"], case["greedy_margins"]
    near = 2 * comp + ROUND
    excused = []
    for k in range(len(ref)):
        got = int(np.argmax(lg[len(toks) - 1 + k]))
        if got != ref[k]:
            assert margins[k] <= near, f"greedy step {k}: ours {got}, llama.cpp {ref[k]} (its margin {margins[k]} > {near:.3g})"
            excused.append(k)
    assert len(excused) <= 1, f"near-ties excused at steps {excused}: fewer than {len(ref) - 1} tokens compared"
    g = run(*margs(model), "--ids", ",".join(map(str, toks)), "--greedy-ids", "--max-tokens", str(len(ref)))["completion_ids"]
    assert 1 <= len(g) <= len(ref)
    for i, t in enumerate(g):
        if t != ref[i]:  # only after a real near-tie; from there the two continuations differ
            assert margins[i] <= near, f"free-running greedy differs at {i}: ours {g} llama.cpp {ref}"
            break
    else:
        if len(g) < len(ref):
            assert g[-1] in _eog_ids(model), f"ours stopped early at {g[-1]}, not an end-of-generation token: {g}"
    return len(ref) - len(excused)


def compare_case(model, case, tmp_path, qtype, margin_gap=None):
    """Tokens, logits at the recorded prompt positions, greedy tokens, decode-step margins."""
    comp = COMPUTE_TOL[qtype]
    toks = case["tokens"]
    assert run(*margs(model), "--prompt", case["text"], "--tokenize-only")["tokens"] == toks
    lg = forced_logits(model, toks, case["greedy"], tmp_path)
    for i, p in enumerate(case["positions"]):
        diff = np.abs(lg[i][p["top_ids"]].astype(np.float64) - np.array(p["top_logits"])).max()
        assert diff <= comp + ROUND, f"position {i}: max |logit diff| {diff:.4g} > {comp + ROUND:.4g} ({qtype})"
    assert compare_greedy(model, case, lg, comp) >= len(case["greedy"]) - 1
    srt = np.sort(lg[len(toks) - 1:], axis=1)
    mdiff = np.abs((srt[:, -1] - srt[:, -2]).astype(np.float64) - np.array(case["greedy_margins"]))
    # + one float32 ulp of each of the two logits: tiny_qwen3_q4_1 step 14 is 5.008e-6 off, so
    # somewhere in the decode steps a logit differs from llama.cpp's by an ulp.
    bound = 2 * comp + ROUND + 2 * float(np.spacing(np.abs(srt[:, -1])).max())
    if margin_gap is None:
        assert mdiff.max() <= bound, f"decode-step margins differ from llama.cpp's by up to {mdiff.max():.4g} > {bound:.3g} at steps {np.flatnonzero(mdiff > bound).tolist()}"
    else:
        assert mdiff.max() <= margin_gap, f"known margin gap grew: {mdiff.max():.4g} > {margin_gap}"
        assert mdiff.max() > bound, f"known margin gap closed ({mdiff.max():.3g}): remove it from KNOWN_MARGIN_GAPS and docs/decoder.md"


def _eog_ids(model):
    import gguf
    r = gguf.GGUFReader(margs(model)[1])
    f = r.fields["tokenizer.ggml.tokens"]
    return {i for i, idx in enumerate(f.data) if bytes(f.parts[idx]).decode("utf-8", "replace") in EOG_PIECES}


def compare_smol(case, tmp_path):
    """Every prompt position (one batch) and every decode step (one token per pass), then greedy."""
    toks, ref = case["tokens"], case["greedy"]
    path = str(tmp_path / "logits.f32")
    seq = toks + ref[:-1]
    out = run("--model", SMOL, "--ids", ",".join(map(str, seq)), "--dump-logits", "1", "--logits-out", path,
              "--prefill", str(len(toks)))
    assert out["tokens"] == seq
    lg = np.fromfile(path, dtype=np.float32).reshape(len(seq), -1)
    rows = [(f"prompt position {i}", i, p) for i, p in enumerate(case["positions"])]
    rows += [(f"decode step {k + 1}", len(toks) + k, st) for k, st in enumerate(case["steps"])]
    assert len(case["positions"]) == len(toks) and len(case["steps"]) == len(ref) - 1
    for what, r, p in rows:
        diff = np.abs(lg[r][p["top_ids"]].astype(np.float64) - np.array(p["top_logits"])).max()
        assert diff <= ROUND, f"{what}: max |logit diff| {diff:.3g} > {ROUND}"
    assert min(case["greedy_margins"]) > 2 * COMPUTE_TOL["Q4_1"] + ROUND  # no near-tie to excuse
    assert compare_greedy(SMOL, case, lg, COMPUTE_TOL["Q4_1"]) == len(ref) == 32


@pytest.mark.skipif(not os.path.exists(SMOL), reason="models/SmolLM2-135M-Instruct.Q4_1.gguf not downloaded (ops/setup.sh)")
class TestSmolLM2:
    fx = load("smollm2.json")

    @pytest.mark.parametrize("case", fx["tokenize"], ids=lambda c: repr(c["text"][:20]))
    def test_tokenization_matches_llama_cpp(self, case):
        assert run("--model", SMOL, "--prompt", case["text"], "--tokenize-only")["tokens"] == case["tokens"]

    @pytest.mark.parametrize("case", fx["generate"], ids=lambda c: repr(c["text"][:20]))
    def test_logits_at_every_position_and_step_and_all_32_greedy_tokens_match_llama_cpp(self, case, tmp_path):
        compare_smol(case, tmp_path)

    def test_logits_are_the_same_bits_with_1_2_and_3_threads(self, tmp_path):
        """How rows and heads are split over threads never changes a number: the prompt in one
        pass, then 24 decode steps, dumped whole (every vocabulary entry) at each thread count."""
        case = self.fx["generate"][0]
        seq = case["tokens"] + case["greedy"][:24]
        dumps = {}
        for t in ("1", "2", "3"):
            path = str(tmp_path / f"t{t}.f32")
            run("--model", SMOL, "--ids", ",".join(map(str, seq)), "--dump-logits", "1", "--logits-out", path,
                "--prefill", str(len(case["tokens"])), "--threads", t)
            dumps[t] = np.fromfile(path, dtype=np.float32)
        assert dumps["1"].size == len(seq) * 49152
        for t in ("2", "3"):
            assert dumps[t].tobytes() == dumps["1"].tobytes(), f"{t} threads: logits differ from 1 thread's"

    def test_fixture_covers_every_prompt_position_and_decode_step(self):
        for c in self.fx["generate"]:
            assert len(c["positions"]) == len(c["tokens"]) and len(c["greedy"]) == 32 and len(c["steps"]) == 31

    def test_chat_messages_render_like_the_template(self):
        out = run("--model", SMOL, "--chat", "What is 2+2?", "--tokenize-only")
        want = run("--model", SMOL, "--prompt",
                   "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                   "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "--tokenize-only")
        assert out["tokens"] == want["tokens"] and out["chat_template"] == "chatml"


TINY_FX = load("tiny_models.json") if os.path.exists(os.path.join(FIX, "tiny_models.json")) else {}


def compare_tiny(name, fx, qtype, tmp_path, n_ctx=None):
    path = str(tmp_path / (name + ".gguf"))
    assert mk.tiny_model(name, path) == fx["sha256"], "tiny model generator drifted from the recorded fixture"
    for case in fx["tokenize"]:
        assert run("--model", path, "--prompt", case["text"], "--tokenize-only")["tokens"] == case["tokens"]
    model = path if n_ctx is None else (path, n_ctx)
    for i, case in enumerate(fx["generate"]):
        assert len(case["greedy"]) == 16
        compare_case(model, case, tmp_path, qtype, KNOWN_MARGIN_GAPS.get((name, i)))


@pytest.mark.parametrize("name", sorted(TINY_FX))
def test_tiny_random_model_matches_llama_cpp(name, tmp_path):
    compare_tiny(name, TINY_FX[name], mk.TINY[name][1], tmp_path)


ARCH_FX = load("tiny_arch.json") if os.path.exists(os.path.join(FIX, "tiny_arch.json")) else {}


@pytest.mark.parametrize("name", sorted(ARCH_FX))
def test_tiny_phi3_gemma_model_matches_llama_cpp(name, tmp_path):
    """phi3 (fused QKV and gate-up), gemma2 (soft-capping, sliding window, GeGLU, embedding
    scale, post norms) and gemma3 (Q/K norms, 5:1 sliding-window layers with their own RoPE base):
    same checks and bounds as the llama-family tiny models."""
    compare_tiny(name, ARCH_FX[name], mk.TINY_ARCH[name][1], tmp_path)


def test_f16_bound_is_the_size_of_llama_cpps_fp16_rounding(tmp_path):
    """F16_TOL against a float64 model of its cause: the logits at the recorded entries with and
    without fp16-rounded inputs to the F16 matmuls (tests/reference/decode_numpy_ref.py)."""
    import decode_numpy_ref as nr
    path = str(tmp_path / "f16.gguf")
    assert mk.tiny_model("tiny_llama_f16", path) == TINY_FX["tiny_llama_f16"]["sha256"]
    model = nr.load(path)
    effect = 0.0
    for case in TINY_FX["tiny_llama_f16"]["generate"]:
        a, b = nr.logits(model, case["tokens"]), nr.logits(model, case["tokens"], fp16_activations=True)
        for i, p in enumerate(case["positions"]):
            effect = max(effect, float(np.abs(a[i][p["top_ids"]] - b[i][p["top_ids"]]).max()))
    assert effect <= F16_TOL <= 1.5 * effect, f"fp16 rounding moves these logits by {effect:.4f}; F16_TOL {F16_TOL}"


ROPE_FX = load("tiny_rope.json") if os.path.exists(os.path.join(FIX, "tiny_rope.json")) else {}


@pytest.mark.parametrize("case", sorted(ROPE_FX))
def test_tiny_rope_scaling_matches_llama_cpp_at_the_recorded_context(case, tmp_path):
    """Phi-3 LongRoPE (short factors at context 256, long at 300 and 512: llama.cpp rounds the
    context up to 256 before comparing it with original_context_length 300; the attn factor on
    cos and sin) and YaRN on llama and qwen2, each at the context llama.cpp was recorded with
    (--ctx): same checks and bounds as the other tiny models."""
    fx = ROPE_FX[case]
    assert mk.ROPE_CASES[case] == (fx["model"], fx["n_ctx"])
    compare_tiny(fx["model"], fx, mk.TINY_ROPE[fx["model"]][1], tmp_path, n_ctx=fx["n_ctx"])


@pytest.mark.parametrize("case", sorted(ROPE_FX))
def test_rope_cos_sin_are_ggmls_bit_for_bit(case, tmp_path):
    """The rotation table itself (model_rope_row, through tests/tools/rope_probe) against ggml's
    rope op at positions up to 30000: every float32 bit, so also what the logits cannot see
    through the fp16 K/Q rounding (YaRN's fused angle mix, the magnitude factors)."""
    fx = ROPE_FX[case]
    path = str(tmp_path / "m.gguf")
    assert mk.tiny_model(fx["model"], path) == fx["sha256"]
    probe = os.path.join(BUILD, "tests", "rope_probe")
    pos = fx["rope_table"]["positions"]
    r = subprocess.run([probe, path, str(fx["n_ctx"])] + [str(p) for p in pos], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = np.array([line.split() for line in r.stdout.splitlines()], dtype=np.int64)
    want = np.array([np.frombuffer(bytes.fromhex(h), dtype=">u4") for h in fx["rope_table"]["bits"]], dtype=np.int64)
    bad = np.argwhere(got != want)
    assert len(bad) == 0, (f"{len(bad)} of {want.size} cos/sin values differ from ggml's, up to "
                           f"{np.abs(got - want).max()} ulp (first at position {pos[bad[0][0]]}, value {bad[0][1]})")


def _engine_text(ids):
    """The text the generator returns for the tiny byte-level vocabulary's ids, by docs/decoder.md's
    rule: each invalid UTF-8 byte becomes U+FFFD, an incomplete sequence at the end is dropped."""
    toks, types, _ = mk._byte_vocab()
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    dec = {chr(b): b for b in keep}
    dec.update({chr(256 + n): b for n, b in enumerate(b for b in range(256) if b not in keep)})
    assert all(types[t] == 1 for t in ids), "a control token in the continuation: pick another case"
    b = b"".join(bytes(dec[ch] for ch in toks[t]) for t in ids)
    out, i = "", 0
    while i < len(b):
        n = 1 if b[i] < 0x80 else 2 if b[i] >> 5 == 6 else 3 if b[i] >> 4 == 14 else 4 if b[i] >> 3 == 30 else 0
        if n and i + n > len(b) and all(c >> 6 == 2 for c in b[i + 1:]):
            break  # incomplete at the end
        try:
            out += b[i:i + n].decode("utf-8") if n else "\ufffd"
            i += max(n, 1)
        except UnicodeDecodeError:
            out += "\ufffd"
            i += 1
    return out


@pytest.mark.parametrize("case", ["phi3_longrope_ctx256_short", "phi3_longrope_ctx300_long"])
def test_longrope_generator_chooses_the_factors_from_its_configured_context(case, tmp_path):
    """The generator (continuous batching) gives llama.cpp's greedy continuation at the recorded
    context too: its forward buffers are sized from ctx_len, the dump path's from the prompt, and
    both must take the factors from the configured context alone."""
    fx = ROPE_FX[case]
    path = str(tmp_path / "m.gguf")
    assert mk.tiny_model(fx["model"], path) == fx["sha256"]
    for c in fx["generate"]:
        out = run("--model", path, "--ctx", str(fx["n_ctx"]), "--prompt", c["text"], "--max-tokens",
                  str(len(c["greedy"])), "--temperature", "0")["results"][0]
        assert out["completion_tokens"] == len(c["greedy"]) and out["text"] == _engine_text(c["greedy"])


def _kv(**kv):
    def add(w):
        for k, v in kv.items():
            (w.add_string if isinstance(v, str) else w.add_float32)(k, v)
    return add


@pytest.mark.parametrize("base,arch,extra,want", [
    ("tiny_llama_q8_0", "gemma", None, "architecture 'gemma' is not supported"),  # gemma 1: no post norms, no caps
    ("tiny_llama_q8_0", "falcon", None, "architecture 'falcon' is not supported"),
    ("tiny_phi3_q8_0", None, {"phi3.rope.scaling.type": "yarn", "phi3.rope.scaling.factor": 4.0},
     "rope scaling 'yarn' is not supported for phi3"),
    ("tiny_llama_q8_0", None, {"llama.rope.scaling.type": "llama3"}, "rope scaling 'llama3' is not supported"),
    ("tiny_llama_q8_0", None, {"llama.rope.scaling.attn_factor": -1.0}, "attn_factor -1 are unusable"),
])
def test_unsupported_architecture_or_scaling_is_refused_by_name(base, arch, extra, want, tmp_path):
    path = str(tmp_path / "refused.gguf")
    mk.tiny_model(base, path, arch_override=arch, extra_kv=_kv(**extra) if extra else None)
    r = subprocess.run(_cli() + ["--model", path, "--prompt", "hi", "--max-tokens", "2"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and want in r.stderr, r.stderr
