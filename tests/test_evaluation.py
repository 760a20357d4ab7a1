"""The evaluation: ordered (fixed decoding order) likelihood of a denoiser against a step-by-step reference,
its normalization, the L = 1 toy, the standard error, and the sample metrics on hand-made lists."""
import itertools

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion.autoregressive import ARTransformer, name_nll
from diffusion.data import LETTERS, MASK, NUM_CLASSES, PAD, encode
from diffusion.evaluation import curves_table, likelihood_figures, likelihood_table, ordered_nll, ratio_figure
from diffusion.metrics import bigram_kl, generative_nll, length_tv, sample_report
from diffusion.models import TransformerDenoiser

NAMES = ["emma", "olivia", "ava", "mia", "noah", "liam", "zoe", "eva", "max", "leo", "ida", "bo"]


def tiny_denoiser(L, seed=0):
    tl.manual_seed(seed)
    return TransformerDenoiser(L=L, dim=16, layers=1, heads=2)


def log_probs(model, row):
    """log p(. | row) for one row: (L, 27) float64."""
    with tl.no_grad():
        z = model(row[None]).data[0].astype(np.float64)
    return z - np.logaddexp.reduce(z, axis=-1, keepdims=True)


def reference_ordered_nll(model, x, order):
    """One row at a time, one position at a time: pick the next position, add -log p(true token), reveal it."""
    out = []
    for row in x:
        xt, total = np.full(len(row), MASK), 0.0
        for j in range(len(row)):
            logp = log_probs(model, xt)
            if order == "left_to_right":
                i = j
            else:                           # the masked position with the highest top probability
                i = max((i for i in range(len(row)) if xt[i] == MASK), key=lambda i: logp[i].max())
            total -= logp[i, row[i]]
            xt[i] = row[i]
        out.append(total)
    return np.array(out)


def reference_length_first_nll(model, row):
    """The sampler's process on one row, by hand: length from the all-MASK PAD probabilities, then the last
    letter, then the most confident letters."""
    L = len(row)
    n = int((row != PAD).sum())
    p_pad = np.exp(log_probs(model, np.full(L, MASK))[:, PAD])
    cdf = [max(p_pad[:i + 1]) for i in range(L)] + [1.0]                # P(len <= i), made monotone
    p_len = np.array([cdf[k + 1] - cdf[k] for k in range(L)])           # P(len = 1..L)
    total = -np.log(p_len[n - 1] / p_len.sum())
    xt = np.array([MASK] * n + [PAD] * (L - n))
    for _ in range(n):
        with tl.no_grad():
            z = model(xt[None]).data[0].astype(np.float64)
        z[:n, PAD] = -np.inf                                            # no PAD among the first n
        logp = z - np.logaddexp.reduce(z, axis=-1, keepdims=True)
        i = n - 1 if xt[n - 1] == MASK else max((i for i in range(n) if xt[i] == MASK), key=lambda i: logp[i].max())
        total -= logp[i, row[i]]
        xt[i] = row[i]
    return total


class LengthAware(tl.nn.Module):
    """A tiny denoiser plus a PAD bias rising with the position, so P(PAD at i) grows with i as in a trained
    model and every length has probability > 0."""
    time_input = False

    def __init__(self, L, seed):
        self.inner, self.L = tiny_denoiser(L, seed), L
        self.bias = np.zeros((L, NUM_CLASSES), dtype=np.float32)
        self.bias[:, PAD] = np.linspace(-6, 6, L)

    def forward(self, xt, t=None):
        return self.inner(xt) + tl.Tensor(self.bias)


def test_length_first_nll_matches_step_by_step_reference():
    model = LengthAware(L=6, seed=1)
    x = encode(NAMES, 6)
    expected = [reference_length_first_nll(model, row) for row in x]
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(ordered_nll(model, x, "length_first", batch_size=5), expected, rtol=1e-5)
    bad = np.array([[0, PAD, 1, PAD, PAD, PAD], [PAD] * 6])            # a letter after PAD; no letter at all
    assert np.all(np.isinf(ordered_nll(model, bad, "length_first")))


def test_length_first_likelihood_is_normalized_over_names():
    """It is a model of names (letters then PAD, 1..L letters): p sums to 1 over the 26 + 26^2 names of L=2."""
    model = LengthAware(L=2, seed=2)
    x = encode(list(LETTERS) + ["".join(p) for p in itertools.product(LETTERS, repeat=2)], 2)
    np.testing.assert_allclose(np.exp(-ordered_nll(model, x, "length_first")).sum(), 1.0, rtol=1e-4)


@pytest.mark.parametrize("order", ["left_to_right", "confident"])
def test_ordered_nll_matches_step_by_step_reference(order):
    model = tiny_denoiser(L=6)
    x = encode(NAMES, 6)
    np.testing.assert_allclose(ordered_nll(model, x, order, batch_size=5), reference_ordered_nll(model, x, order),
                               rtol=1e-5)


@pytest.mark.parametrize("order", ["left_to_right", "confident"])
def test_ordered_likelihood_is_normalized(order):
    """Every fixed order makes the denoiser a proper model of rows: p sums to 1 over all 27^2 rows of L=2."""
    model = tiny_denoiser(L=2, seed=2)
    x = np.array(list(itertools.product(range(NUM_CLASSES), repeat=2)))
    np.testing.assert_allclose(np.exp(-ordered_nll(model, x, order)).sum(), 1.0, rtol=1e-4)


def test_length_one_toy_is_exact():
    """L = 1: every order, and the NELBO, equal -log softmax(model(MASK))[x] exactly; length first knows the
    length is 1, so it scores a letter c as -log p(c | MASK, letters only)."""
    model = tiny_denoiser(L=1)
    x = np.array([[3], [PAD], [0]])
    logp = log_probs(model, np.array([MASK]))[0]
    expected = -logp[x[:, 0]]
    for order in ("left_to_right", "confident"):
        np.testing.assert_allclose(ordered_nll(model, x, order), expected, rtol=1e-6)
    letters_only = -(logp[:26] - np.logaddexp.reduce(logp[:26]))
    np.testing.assert_allclose(ordered_nll(model, x[[0, 2]], "length_first"), letters_only[[3, 0]], rtol=1e-6)
    figures = likelihood_figures(model, x)
    chars = 2 + 1 + 2
    for key in ("nelbo", "left_to_right", "confident"):
        np.testing.assert_allclose(figures[key]["nll"], expected.sum() / chars, rtol=1e-5)


def test_ar_likelihood_figures_are_name_nll_per_char():
    tl.manual_seed(0)
    ar = ARTransformer(L=6, dim=16, layers=1, heads=2)
    figures = likelihood_figures(ar, encode(NAMES, 6))
    chars = sum(len(n) + 1 for n in NAMES)
    np.testing.assert_allclose(figures["nll"]["nll"], name_nll(ar, NAMES).sum() / chars, rtol=1e-9)
    np.testing.assert_allclose(generative_nll(ar, NAMES), name_nll(ar, NAMES).sum() / chars, rtol=1e-9)
    assert set(figures) == {"nll"}


def test_ratio_standard_error():
    # every name costs exactly r per char: no spread, se 0
    assert ratio_figure([2.0, 4.0, 6.0], [1, 2, 3]) == dict(nll=2.0, se=0.0)
    # equal lengths: the ordinary standard error of the mean, divided by the length
    nll = np.array([1.0, 2.0, 4.0, 9.0])
    f = ratio_figure(nll, [2, 2, 2, 2])
    np.testing.assert_allclose(f["nll"], nll.mean() / 2)
    np.testing.assert_allclose(f["se"], nll.std(ddof=1) / np.sqrt(4) / 2)


def test_sample_metrics_on_hand_made_lists():
    r = sample_report(["ann", "ann", "bob", "cy"], ["ann", "x"], ["ab", "abc", "abc", "d"])
    assert r["novel"] == 0.5 and r["unique"] == 0.75 and r["mean_length"] == 2.75
    # lengths: samples {3: 3/4, 2: 1/4}, test {2: 1/4, 3: 1/2, 1: 1/4} -> TV = (1/4 + 0 + 1/4) / 2
    assert r["length_tv"] == 0.25
    assert length_tv(["ab", "abc"], ["ab", "ab"]) == 0.5 and length_tv(["a"], ["b"]) == 0.0


def test_bigram_kl_exact_values():
    assert bigram_kl(["ab", "ba"], ["ba", "ab"], smoothing=0) == 0.0
    # samples '^a', 'a$' (1/2 each); train 'a' and 'b' give '^a', 'a$' 1/4 each: KL = log 2
    np.testing.assert_allclose(bigram_kl(["a"], ["a", "b"], smoothing=0), np.log(2))
    # add-one over 27 x 27 cells: Q(^a) = Q(ab) = Q(b$) = 2 / (3 + 729), P = 1/3 each: KL = log(732 / 6)
    np.testing.assert_allclose(bigram_kl(["ab"], ["ab"]), np.log(732 / 6))
    with pytest.raises(ValueError):
        bigram_kl([], ["ab"])


def test_curves_table_lines_up_steps():
    table = curves_table({"a": [(10, 2.0), (20, 1.5)], "b": [(20, 3.0)]})
    assert table.splitlines()[2:] == ["| 10 | 2.0000 |  |", "| 20 | 1.5000 | 3.0000 |"]
    table = curves_table({"a": [(10, 2.0), (20, 1.5)]}, steps_per_epoch=8)
    assert table.splitlines()[0] == "| step | epochs | a |" and table.splitlines()[3] == "| 20 | 2.5 | 1.5000 |"


def test_likelihood_table_gives_each_figure_relative_to_the_ar():
    both = likelihood_table({"AR": {"nll": dict(nll=2.0, se=0.01)},
                             "diffusion": {"nelbo": dict(nll=2.2, se=0.02), "confident": dict(nll=2.1, se=0.03)}})
    assert "| AR | NLL (exact) | 2.0000 | 0.0100 |  |" in both
    assert "| diffusion | NELBO | 2.2000 | 0.0200 | +10.0% |" in both
    assert "| diffusion | NLL bound, most-confident-first order | 2.1000 | 0.0300 | +5.0% |" in both
    alone = likelihood_table({"diffusion": {"nelbo": dict(nll=2.2, se=0.02)}})
    assert "vs AR" not in alone and alone.endswith("| diffusion | NELBO | 2.2000 | 0.0200 |")
