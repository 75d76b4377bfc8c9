"""test_decode_sampler.py: the decoder's sampler (engine/decode/sampler.c) against an independent
numpy reference of the documented chain (docs/decoder.md "Sampling", docs/protocol.md), on fixed
logits. Needs numpy only.

The engine is driven through tests/tools/sampler_probe ($WEAVER_BUILD_DIR/tests/sampler_probe),
which prints what sampler_candidates (the chain without the draw, the same code sampler_sample
runs) leaves: the logits after the penalties, the candidate ids and their weights, and counts of
draws made by sampler_sample itself.

The documented chain, as llama.cpp's default sampler chain does it:
1. penalties over the last repeat_last_n tokens of the history (prompt included; 0: none;
   negative: the whole history), once per distinct token: a positive logit is divided by
   repeat_penalty, a negative one multiplied; then presence_penalty is subtracted once and
   frequency_penalty once per occurrence;
2. top_k (0: off): the k largest logits;
3. top_p (1: off): softmax over what is left, keep the shortest prefix (by probability) whose sum
   reaches top_p (at least one token; 0 keeps the most probable);
4. min_p (0: off): keep tokens whose probability is at least min_p x the largest;
5. temperature: softmax(logit / T) over the survivors, then one uniform draw; T = 0 is greedy.
Steps 3 and 4 use temperature-1 probabilities: temperature comes last.

Bounds: penalised logits within 4 float32 ulps (of the largest operand: the logit, its
penalised value, count x frequency + presence) of the float64 reference computed from the same
float32 logits (float32 arithmetic rounds each of at most four operations once); probabilities within 1e-5 relative (float32 exp, double sums); every
case's filter thresholds are at least 1e-4 away from a boundary (checked), so float32 rounding
can never move a token across one. Sampled frequencies: see test_sampled_frequencies_match_the_reference.
"""
import json
import math
import os
import subprocess
from collections import Counter

import numpy as np
import pytest

ROOT = os.environ.get("WEAVER_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("WEAVER_BUILD_DIR", os.path.join(ROOT, "build"))
PROBE = os.path.join(BUILD, "tests", "sampler_probe")
SLACK = 1e-4  # the least distance of a case's cumulative / relative probabilities from a threshold

# ---------------------------------------------------------------- numpy reference


def penalties(logits, hist, repeat_penalty=1.0, repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0,
              magnitude=None):
    """The penalised logits; `magnitude`, if a list, gets per token the largest operand involved
    (what float32 rounding errors scale with)."""
    l = np.array(logits, dtype=np.float64)
    mag = np.abs(l)
    n = len(hist) if repeat_last_n < 0 else min(repeat_last_n, len(hist))
    for t, c in Counter(hist[len(hist) - n:]).items():
        if repeat_penalty != 1.0:
            l[t] = l[t] / repeat_penalty if l[t] > 0 else l[t] * repeat_penalty
        mag[t] = max(mag[t], abs(l[t]), c * abs(frequency_penalty) + abs(presence_penalty))
        l[t] -= c * frequency_penalty + presence_penalty
    if magnitude is not None:
        magnitude.append(mag)
    return l


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def top_k(l, cand, k, slack):
    if 0 < k < len(cand):
        assert l[cand[k - 1]] - l[cand[k]] > 0, "a tie at the top_k cut: not a well-posed case"
        cand = cand[:k]
    return cand


def top_p(l, cand, p, slack):
    if p >= 1.0:
        return cand
    cum = np.cumsum(_softmax(l[cand]))
    keep = int(np.argmax(cum >= p)) + 1 if cum[-1] >= p else len(cand)
    slack.append(abs(cum[keep - 1] - p))
    if keep > 1:
        slack.append(abs(cum[keep - 2] - p))
    return cand[:keep]


def min_p(l, cand, m, slack):
    if m <= 0.0:
        return cand
    rel = np.exp(l[cand] - l[cand].max())
    slack.extend(np.abs(rel[rel < 1.0] - m))  # the most probable token itself is always kept
    return cand[rel >= m]


STAGES = {"top_k": top_k, "top_p": top_p, "min_p": min_p}
DOC_ORDER = ("penalties", "top_k", "top_p", "min_p", "temperature")


def chain(logits, hist, order=DOC_ORDER, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, **pen):
    """The documented chain (or another order of its stages). Returns (candidate ids sorted by
    decreasing probability, their probabilities, penalised logits, the least threshold distance)."""
    l = np.array(logits, dtype=np.float64)
    cand = np.argsort(-l, kind="stable")
    slack, done_temp = [], False
    args = {"top_k": top_k, "top_p": top_p, "min_p": min_p}
    for st in order:
        if st == "penalties":
            l = penalties(l, hist, **pen)
            cand = cand[np.argsort(-l[cand], kind="stable")]
        elif st == "temperature":
            if temperature <= 0:
                return np.array([int(np.argmax(l))]), np.array([1.0]), l, 1.0
            l = l / temperature
            done_temp = True
        else:
            cand = STAGES[st](l, cand, args[st], slack)
    assert done_temp
    return cand, _softmax(l[cand]), l * temperature, min(slack, default=1.0)


# ---------------------------------------------------------------- the engine


def probe(logits, hist=(), **kw):
    if not os.path.exists(PROBE):
        pytest.fail(f"{PROBE} is not built (cmake --build; WEAVER_BUILD_DIR names the build folder)")
    req = dict(kw, logits=[float(x) for x in logits], hist=list(hist))
    r = subprocess.run([PROBE], input=json.dumps(req), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    w = np.array(out["weights"], dtype=np.float32).astype(np.float64)
    out["probs"] = w / out["z"]
    return out


PENALTY_KEYS = ("repeat_penalty", "repeat_last_n", "presence_penalty", "frequency_penalty")


def params(kw):
    return {k: v for k, v in kw.items() if k not in ("seeds", "stream")}


def check_case(logits, hist=(), **kw):
    """Engine vs reference: the penalised logits, the candidate set in order, the probabilities."""
    logits = np.asarray(logits, dtype=np.float32).astype(np.float64)  # what the engine holds
    ids, probs, pl, slack = chain(logits, list(hist), **params(kw))
    assert slack >= SLACK, f"case too close to a filter threshold ({slack:.2g}): not a well-posed test"
    out = probe(logits, hist, **kw)
    got = np.array(out["logits"], dtype=np.float32).astype(np.float64)  # printed with 9 digits: exact float32
    mag = []
    penalties(logits, list(hist), magnitude=mag, **{k: v for k, v in kw.items() if k in PENALTY_KEYS})
    ulp = np.spacing(mag[0].astype(np.float32)).astype(np.float64)
    bad = np.flatnonzero(np.abs(got - pl) > 4 * ulp)
    assert bad.size == 0, f"penalised logits differ at {bad.tolist()}: ours {got[bad]} reference {pl[bad]}"
    # The set, and each candidate's probability (the engine's order is its own: sorted when a
    # filter needed it, by id otherwise; the distribution does not depend on it).
    assert sorted(out["ids"]) == sorted(ids.tolist()), f"candidates: ours {sorted(out['ids'])} reference {sorted(ids.tolist())}"
    mine = dict(zip(out["ids"], out["probs"]))
    np.testing.assert_allclose([mine[i] for i in ids.tolist()], probs, rtol=1e-5, atol=1e-9)
    return ids, probs, out


# ---------------------------------------------------------------- cases

RNG = np.random.default_rng(20261202)
LOGITS = np.round(RNG.normal(0.0, 2.0, 40), 3).astype(np.float32).astype(np.float64)  # distinct, both signs
HIST = RNG.integers(0, 40, 60).tolist()          # 60 previous tokens, repeats included


def test_the_fixed_logits_are_distinct_and_of_both_signs():
    assert len(set(LOGITS.tolist())) == len(LOGITS) and (LOGITS > 0).sum() > 10 and (LOGITS < 0).sum() > 10


def test_penalties_follow_llama_cpp_arithmetic_worked_example():
    # Independent of both implementations: the convention written out by hand.
    # token 0: +2.0, three times in the window; token 1: -1.0, once; token 2: +0.5, only
    # before the window; token 3: 0.0, twice.  repeat 2, presence 0.5, frequency 0.25, last_n 6.
    hist = [2, 0, 1, 0, 3, 0, 3]
    out = probe([2.0, -1.0, 0.5, 0.0, 1.0], hist, repeat_penalty=2.0, repeat_last_n=6, presence_penalty=0.5,
                frequency_penalty=0.25, temperature=1.0)
    want = [2.0 / 2 - 0.5 - 3 * 0.25,   # divided once (not per occurrence), presence once, frequency x3
            -1.0 * 2 - 0.5 - 0.25,      # negative: multiplied
            0.5,                        # outside the last 6 tokens: untouched
            0.0 * 2 - 0.5 - 2 * 0.25,   # zero stays zero under repeat_penalty
            1.0]                        # never seen
    assert out["logits"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("pen", [
    dict(repeat_penalty=1.3),
    dict(repeat_penalty=0.7),  # below 1 boosts: still divides positive logits
    dict(presence_penalty=0.6),
    dict(frequency_penalty=0.35),
    dict(presence_penalty=-0.4, frequency_penalty=-0.2),  # negative values reward repeats
    dict(repeat_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.15, repeat_last_n=17),
    dict(repeat_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.15, repeat_last_n=0),   # off
    dict(repeat_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.15, repeat_last_n=-1),  # whole history
    dict(repeat_penalty=1.2, presence_penalty=0.3, frequency_penalty=0.15, repeat_last_n=1000),  # > history
], ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_penalties_match_the_reference(pen):
    check_case(LOGITS, HIST, temperature=1.0, **pen)


def test_repeat_last_n_limits_the_window():
    pl = penalties(LOGITS, HIST, repeat_penalty=1.5, repeat_last_n=10)
    inside, before = set(HIST[-10:]), set(HIST[:-10]) - set(HIST[-10:])
    assert before, "the case needs tokens seen only before the window"
    out = probe(LOGITS, HIST, repeat_penalty=1.5, repeat_last_n=10)
    got = np.array(out["logits"], dtype=np.float32)
    assert all(got[t] == np.float32(LOGITS[t]) for t in before)
    assert all(got[t] != np.float32(LOGITS[t]) for t in inside)
    np.testing.assert_allclose(got, pl, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 5, 17, 39, 40, 0])
def test_top_k_keeps_the_k_largest(k):
    ids, _, _ = check_case(LOGITS, temperature=1.0, top_k=k)
    assert len(ids) == (k if 0 < k < 40 else 40)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.62, 0.9, 0.99, 1.0])
def test_top_p_keeps_the_shortest_prefix_reaching_p(p):
    ids, _, _ = check_case(LOGITS, temperature=1.0, top_p=p)
    if p == 0.0:
        assert len(ids) == 1  # the smallest set whose probability reaches 0: the top token
    if 0.0 < p < 1.0:
        assert 1 < len(ids) < 40, "the case must cut inside the distribution"


@pytest.mark.parametrize("m", [0.03, 0.1, 0.5, 1.0])
def test_min_p_keeps_tokens_near_the_most_probable(m):
    ids, probs, _ = check_case(LOGITS, temperature=1.0, min_p=m)
    if m == 1.0:
        assert len(ids) == 1


@pytest.mark.parametrize("t", [0.25, 0.7, 1.0, 1.6, 10.0])
def test_temperature_divides_the_logits(t):
    check_case(LOGITS, temperature=t)


def test_temperature_zero_is_greedy_after_the_penalties():
    top = int(np.argmax(LOGITS))
    pen = dict(repeat_penalty=3.0, presence_penalty=1.0, repeat_last_n=1)
    ids, _, _ = check_case(LOGITS, [top], temperature=0.0, top_k=3, top_p=0.5, **pen)
    assert ids[0] != top, "the penalty must move the argmax for this case to mean anything"


# The stages' order: each case below is chosen so that swapping any two neighbouring stages (or
# moving temperature first) changes the reference's result; the engine must match the documented
# order. The assertion on the reference keeps the cases honest if someone edits them.
ORDER_CASES = [
    dict(temperature=0.6, top_k=14, top_p=0.8, min_p=0.12, repeat_penalty=1.4, presence_penalty=0.5,
         frequency_penalty=0.2, repeat_last_n=30),
    dict(temperature=1.7, top_k=20, top_p=0.9, min_p=0.08, repeat_penalty=1.25, presence_penalty=0.3,
         frequency_penalty=0.1, repeat_last_n=40),
    dict(temperature=0.8, top_k=8, top_p=0.95, min_p=0.05, repeat_penalty=2.0, repeat_last_n=30),
]


def _swaps():
    o = list(DOC_ORDER)
    for i in range(len(o) - 1):
        s = o[:]
        s[i], s[i + 1] = s[i + 1], s[i]
        yield f"{o[i]}<->{o[i + 1]}", tuple(s)
    yield "temperature first", ("temperature",) + tuple(x for x in o if x != "temperature")


def _same(a, b):
    return a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1], rtol=1e-4)


def _swaps_told_apart(kw):
    doc = chain(LOGITS, HIST, **kw)
    return {name for name, order in _swaps() if not _same(doc, chain(LOGITS, HIST, order=order, **kw))}


def test_every_neighbouring_swap_of_stages_changes_some_order_case():
    caught = set().union(*(_swaps_told_apart(kw) for kw in ORDER_CASES))
    missing = {name for name, _ in _swaps()} - caught
    assert not missing, f"no order case tells these orders from the documented one: {missing}"


@pytest.mark.parametrize("case", range(len(ORDER_CASES)))
def test_stages_run_in_the_documented_order(case):
    check_case(LOGITS, HIST, **ORDER_CASES[case])


# Sampled frequencies. N draws, each the first draw of a fresh stream seeded 0..N-1 (as each job
# starts), and N consecutive draws of one stream (as a job goes on). With p the reference
# probabilities of the candidates:
#  - no token outside the candidate set is ever drawn;
#  - Pearson's chi-square over the candidates is below its upper 1e-6 quantile for n-1 degrees
#    of freedom (Wilson-Hilferty: df (1 - 2/(9 df) + 4.753 sqrt(2/(9 df)))^3);
#  - every candidate's frequency is within 5.5 standard deviations, sqrt(p (1-p) / N), of p
#    (with N = 200000 that is at most 0.0061 in absolute terms).
# The seeds are fixed, so the outcome is deterministic: a pass is not luck at run time, and a
# correct sampler fails these with probability ~1e-6 per seed set.
N_DRAWS = 200_000
FREQ_CASES = [
    dict(temperature=1.0),
    dict(temperature=0.8, top_k=8),
    dict(temperature=1.3, top_p=0.85),
    dict(temperature=0.9, min_p=0.1),
    *ORDER_CASES,
]


def _chi2_crit(df, z=4.753):
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("case", range(len(FREQ_CASES)))
def test_sampled_frequencies_match_the_reference(case):
    kw = dict(FREQ_CASES[case], seeds=[0, N_DRAWS], stream=[12345, N_DRAWS])
    ids, probs, out = check_case(LOGITS, HIST, **kw)
    assert len(ids) >= 3
    for what in ("seed_counts", "stream_counts"):
        c = np.array(out[what], dtype=np.float64)
        assert c.sum() == N_DRAWS
        outside = np.setdiff1d(np.flatnonzero(c), ids)
        assert outside.size == 0, f"{what}: drew tokens outside the candidates: {outside.tolist()}"
        obs, exp = c[ids], N_DRAWS * probs
        chi2, crit = float(((obs - exp) ** 2 / exp).sum()), _chi2_crit(len(ids) - 1)
        assert chi2 < crit, f"{what}: chi-square {chi2:.1f} >= {crit:.1f} ({len(ids) - 1} df)"
        sd = np.sqrt(probs * (1 - probs) / N_DRAWS)
        dev = np.abs(obs / N_DRAWS - probs)
        assert (dev <= 5.5 * sd).all(), f"{what}: |freq - p| {dev.max():.4g} beyond 5.5 sd"
