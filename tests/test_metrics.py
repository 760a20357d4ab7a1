"""diffusion/metrics.py: the sample metrics (novel, unique, length TV, bigram KL, the judge NLL of all the samples
and of the novel ones) on hand-made lists."""
import numpy as np
import pytest

from diffusion.autoregressive import name_nll
from diffusion.metrics import bigram_kl, length_tv, sample_report

from helpers import tiny_ar


def test_sample_metrics_on_hand_made_lists():
    r = sample_report(["ann", "ann", "bob", "cy"], ["ann", "x"], ["ab", "abc", "abc", "d"])
    assert r["novel"] == 0.5 and r["unique"] == 0.75 and r["mean_length"] == 2.75
    # lengths: samples {3: 3/4, 2: 1/4}, test {2: 1/4, 3: 1/2, 1: 1/4} -> TV = (1/4 + 0 + 1/4) / 2
    assert r["length_tv"] == 0.25
    assert length_tv(["ab", "abc"], ["ab", "ab"]) == 0.5 and length_tv(["a"], ["b"]) == 0.0


def test_the_novel_judge_nll_scores_only_the_names_not_in_train():
    judge, samples, train = tiny_ar(), ["ann", "bo", "ann", "cyd", "bo"], ["ann", "x"]
    r = sample_report(samples, train, ["ab"], judge)
    per_name = dict(zip(samples, name_nll(judge, samples)))     # each repeat counts, as in generative_nll
    assert r["novel_generative_nll"] == pytest.approx((2 * per_name["bo"] + per_name["cyd"]) / (3 + 4 + 3))
    assert np.isnan(sample_report(["ann"], train, ["ab"], judge)["novel_generative_nll"])


def test_bigram_kl_exact_values():
    assert bigram_kl(["ab", "ba"], ["ba", "ab"], smoothing=0) == 0.0
    # samples '^a', 'a$' (1/2 each); train 'a' and 'b' give '^a', 'a$' 1/4 each: KL = log 2
    np.testing.assert_allclose(bigram_kl(["a"], ["a", "b"], smoothing=0), np.log(2))
    # add-one over 27 x 27 cells: Q(^a) = Q(ab) = Q(b$) = 2 / (3 + 729), P = 1/3 each: KL = log(732 / 6)
    np.testing.assert_allclose(bigram_kl(["ab"], ["ab"]), np.log(732 / 6))
    with pytest.raises(ValueError):
        bigram_kl([], ["ab"])
