"""diffusion/likelihood.py: the exact NELBO identity against the continuous-time estimate, its stratified-k form,
the L = 1 case, and the unigram baseline."""
import numpy as np

import tinygrad_lite as tl
from diffusion.data import MASK, PAD, encode
from diffusion.likelihood import nelbo, unigram_nll
from diffusion.schedule import LinearSchedule
from helpers import NAMES, tiny_transformer


def test_identity_agrees_with_continuous_time_estimate():
    """The exact identity and the Monte-Carlo-over-t estimate are two estimators of one number.
    Linear schedule: alpha(0) = 1 exactly, so the continuous bound covers all mask rates, as the identity does."""
    model = tiny_transformer(L=6)
    x = encode(NAMES * 3, 6)
    exact = nelbo(model, x, seed=0, target_se=0.003)
    mc = nelbo(model, x, LinearSchedule(), seed=1, target_se=0.02, method="monte_carlo", max_repeats=4096)
    assert abs(exact["nelbo"] - mc["nelbo"]) < 4 * np.hypot(exact["se"], mc["se"])
    assert exact["se"] < 0.003 and mc["se"] < 0.02


def test_stratified_k_is_the_same_estimate():
    """Scoring each row at fewer k (stratified, reweighted) estimates the same NELBO as scoring every k; with
    one k per block of one, it is the full identity, draw for draw."""
    model = tiny_transformer(L=6)
    x = encode(NAMES * 3, 6)
    every = nelbo(model, x, seed=0, target_se=0.003, k_per_name=6)
    assert nelbo(model, x, seed=0, target_se=0.003, k_per_name=60) == every        # m is capped at L
    for m in (1, 2, 4):
        fewer = nelbo(model, x, seed=1, target_se=0.003, k_per_name=m, max_repeats=4096)
        assert abs(fewer["nelbo"] - every["nelbo"]) < 4 * np.hypot(fewer["se"], every["se"]), m
        assert fewer["se"] < 0.003


def test_identity_is_exact_for_one_position():
    """L = 1: NELBO(x) = -log p(x | MASK) exactly; the estimator has no noise at all."""
    model = tiny_transformer(L=1)
    x = np.array([[3], [PAD], [0]])
    with tl.no_grad():
        logits = model(np.full((3, 1), MASK)).data[:, 0].astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -logp[np.arange(3), x[:, 0]].sum() / (2 + 1 + 2)       # chars: 1 letter + end, end only, 1 + end
    result = nelbo(model, x, seed=0)
    np.testing.assert_allclose(result["nelbo"], expected, rtol=1e-5)
    assert result["se"] == 0


def test_unigram_baseline_uniform():
    x = encode(["ab", "cd"], 4)            # letters a, b, c, d and 2 end tokens; add-one smoothing over 27
    p = (np.array([1, 1, 1, 1] + [0] * 22 + [2]) + 1) / (6 + 27)
    expected = -(4 * np.log(p[0]) + 2 * np.log(p[26])) / 6
    np.testing.assert_allclose(unigram_nll(x, x), expected)
