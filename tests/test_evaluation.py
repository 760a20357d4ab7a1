"""diffusion/evaluation.py: ordered (fixed decoding order) likelihood of a denoiser against a step-by-step
reference, its normalization, the L = 1 toy, the AR figures, the standard error, and the tables (the sample
metrics are tested in test_metrics.py)."""
import itertools
import re

import numpy as np
import pytest

import tinygrad_lite as tl
from tinygrad_lite.parallel import ModelPool
from diffusion.autoregressive import ARTransformer, name_nll
from diffusion.checkpoint import build_model
from diffusion.chunks import CHUNK_ROWS
from diffusion.data import DEFAULT_NAMES, LETTERS, MASK, NUM_CLASSES, PAD, NamesData, encode
from diffusion.evaluation import (bound_by_orders, curves_table, evaluate_model, format_likelihood, iw_bound,
                                 likelihood_figures, likelihood_table, ordered_nll, random_orders_nll, ratio_figure,
                                 sample_chunked)
from diffusion.metrics import generative_nll
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
    """One row at a time, one position at a time: pick the next position, add -log p(true token), reveal it.
    order: 'left_to_right', 'confident', or the positions (N, L) each row reveals, in turn."""
    out = []
    for r, row in enumerate(x):
        xt, total = np.full(len(row), MASK), 0.0
        for j in range(len(row)):
            logp = log_probs(model, xt)
            if not isinstance(order, str):
                i = order[r][j]
            elif order == "left_to_right":
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
    np.testing.assert_allclose(ordered_nll(model, x, "length_first"), expected, rtol=1e-5)
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
    np.testing.assert_allclose(ordered_nll(model, x, order), reference_ordered_nll(model, x, order),
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


def sharp_denoiser(L, seed=1):
    """An untrained tiny denoiser with its output scaled up: orders then give names very different probabilities."""
    model = tiny_denoiser(L, seed)
    model.head.weight.data *= 6
    model.head.bias.data *= 6
    return model


def test_random_orders_nll_follows_the_drawn_orders():
    """Order k of every row is the argsort of uniform keys from the seed (seed, k), scored step by step."""
    model, x = tiny_denoiser(L=6), encode(NAMES, 6)
    got = random_orders_nll(model, x, orders=3, seed=7)
    for k in range(3):
        order = np.random.default_rng([7, k]).random(x.shape).argsort(axis=1)
        np.testing.assert_allclose(got[k], reference_ordered_nll(model, x, order), rtol=1e-5)
    assert random_orders_nll(model, x[:0], orders=3).shape == (3, 0)


def test_nelbo_is_the_mean_over_orders_and_the_bound_tends_to_the_mixture():
    """L = 3, all 6 orders listed: the NELBO identity (every k-subset, by hand) is the mean of -log p_sigma over
    the orders, and -log mean_sigma p_sigma is the random-order model's exact NLL. With K = 800 drawn orders:
    their mean NLL is the identity, the bound of groups of 4 lies between the mean (K = 1) and the exact NLL
    (summed over the names), and the bound of all 800 is the exact NLL, each to within 4 standard errors."""
    model, x = sharp_denoiser(L=3, seed=3), encode(["abc", "mo", "z", "eve", "ida"], 3)
    orders = [np.tile(p, (len(x), 1)) for p in itertools.permutations(range(3))]
    per_order = np.array([reference_ordered_nll(model, x, o) for o in orders])          # (6, N)
    identity = np.zeros(len(x))
    for r, row in enumerate(x):
        for k in range(1, 4):
            subsets = list(itertools.combinations(range(3), k))
            for m in subsets:
                xt = row.copy()
                xt[list(m)] = MASK
                logp = log_probs(model, xt)
                identity[r] -= sum(logp[i, row[i]] for i in m) / k / len(subsets)
    np.testing.assert_allclose(per_order.mean(axis=0), identity, rtol=1e-5)
    exact = -np.log(np.exp(-per_order).mean(axis=0))
    np.testing.assert_allclose(iw_bound(per_order), exact, rtol=1e-9)
    assert np.all(identity - exact > 0.05)                        # the orders disagree: Jensen's gap is visible

    nll = random_orders_nll(model, x, orders=800, seed=0)                               # (800, N)
    assert np.all(np.abs(nll.mean(axis=0) - identity) < 4 * nll.std(axis=0) / np.sqrt(800))
    groups_of_4 = iw_bound(nll.reshape(200, 4, -1).transpose(1, 0, 2))                   # (200, N)
    assert nll.mean(axis=0).sum() > groups_of_4.mean(axis=0).sum() > exact.sum()
    weights = np.exp(exact - nll)                                 # p_sigma / p: mean 1; B_K's se ~ their sd / sqrt(K)
    assert np.all(np.abs(iw_bound(nll) - exact) < 4 * weights.std(axis=0) / np.sqrt(800))


def test_bound_by_orders_averages_disjoint_groups():
    nll = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0], [4.0, 1.0]])                    # K = 4 orders, 2 rows
    chars = np.array([1, 1])
    curve = dict(bound_by_orders(nll, chars))
    assert list(curve) == [1, 2, 4]
    np.testing.assert_allclose(curve[1], nll.sum() / 4 / 2)
    np.testing.assert_allclose(curve[2], (iw_bound(nll[:2]).sum() + iw_bound(nll[2:]).sum()) / 2 / 2)
    np.testing.assert_allclose(curve[4], iw_bound(nll).sum() / 2)
    assert curve[4] < curve[2] < curve[1]


def test_likelihood_figures_add_the_bound_on_request():
    model, x = tiny_denoiser(L=6), encode(NAMES, 6)
    figures = likelihood_figures(model, x, orders=(), iw_orders=4)
    f = figures["random_orders"]
    assert f["orders"] == 4 and [k for k, _ in f["bound_by_orders"]] == [1, 2, 4]
    np.testing.assert_allclose(f["nll"], f["bound_by_orders"][-1][1], rtol=1e-9)
    assert f["nll"] < figures["nelbo"]["nll"] + 3 * figures["nelbo"]["se"]
    assert "bound over 4 random orders" in format_likelihood(figures)[1]
    assert "random_orders" not in likelihood_figures(model, x, orders=())


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
    assert "| diffusion | NLL of the most-confident-first sampler (exact) | 2.1000 | 0.0300 | +5.0% |" in both
    alone = likelihood_table({"diffusion": {"nelbo": dict(nll=2.2, se=0.02)}})
    assert "vs AR" not in alone and "| diffusion | NELBO | 2.2000 | 0.0200 |\n" in alone
    assert alone.endswith("which names happen to be in the test split.")          # what each ± is


def test_figures_are_described_in_plain_words():
    lines = format_likelihood(dict(nelbo=dict(nll=2.1, se=0.01, repeats=4, method="identity", seconds=1.0),
                                   nll=dict(nll=2.0, se=0.02, seconds=1.0)))
    assert "4 mask draws a name" in lines[0] and "which names happen to be in the test split" in lines[1]
    assert not any(re.search(r"Monte-Carlo|\bse:|identity,", line) for line in lines)


# ---------------------------------------------------------------------- the same figures on worker processes
def without_seconds(value):
    """A figures structure with the wall-clock entries (seconds, samples per second) taken out."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k not in ("seconds", "samples_per_second")}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


@pytest.mark.parametrize("kind", ["denoiser", "ar"])
def test_every_figure_is_the_same_on_one_and_two_worker_processes(kind):
    """evaluate_model on a ModelPool of 1 and of 2 workers: the same names, test likelihood (NELBO and the ordered
    bounds, or the AR NLL) and sample figures, to the bit (300 names and 300 test rows make 3 chunks). In this
    process (no pool) NumPy's BLAS may run several threads, which rounds products differently: the figures
    agree to float32 rounding."""
    data = NamesData.load(DEFAULT_NAMES, L=8)
    data.test = data.test[:300]
    tl.manual_seed(1)
    model = TransformerDenoiser(L=8, dim=16, layers=1, heads=2) if kind == "denoiser" else \
        ARTransformer(L=8, dim=16, layers=1, heads=2)
    figures = []
    for workers in (1, 2):
        with ModelPool(model, build_model, {"config": model.config}, workers) as pool:
            figures.append(evaluate_model(model, data, (1.0, 0.8), num=300, seed=4, target_se=0.05, pool=pool))
    assert without_seconds(figures[1]) == without_seconds(figures[0])
    assert len({name for row in figures[0]["samples"] for name in row["examples"]}) > 20      # real, varied names
    here = evaluate_model(model, data, (1.0, 0.8), num=300, seed=4, target_se=0.05)
    for name, f in here["likelihood"].items():
        assert f["nll"] == pytest.approx(figures[0]["likelihood"][name]["nll"], rel=1e-6)
    if kind == "denoiser":
        assert here["likelihood"]["nelbo"]["repeats"] >= 2 and set(here["likelihood"]) > {"nelbo", "confident"}


def test_chunks_make_the_names_independent_of_how_many_are_drawn_after_them():
    """Chunk c is seeded (seed, c): the first 128 of 300 names are the 128 names drawn alone."""
    model = tiny_denoiser(L=6)
    many = sample_chunked(model, 300, seed=2).tokens
    assert np.array_equal(sample_chunked(model, CHUNK_ROWS, seed=2).tokens, many[:CHUNK_ROWS])
    assert not np.array_equal(many[:CHUNK_ROWS], many[CHUNK_ROWS:2 * CHUNK_ROWS])


@pytest.mark.parametrize("options", [dict(steps=8), dict(steps=8, length="joint", threshold=0.5)])
def test_chunked_trajectories_line_up_by_step(options):
    """Chunks skip different steps (a row with nothing to reveal skips the call); the joined trajectory has
    every step any chunk ran, each row as it stood then, ending with the final rows; masks only ever go."""
    out = sample_chunked(tiny_denoiser(L=8), CHUNK_ROWS + 2, seed=3, keep_trajectory=True, **options)
    steps = [s for s, _ in out.trajectory]
    assert steps == sorted(set(steps)) and steps[-1] == 8
    assert all(rows.shape == out.tokens.shape for _, rows in out.trajectory)
    assert np.array_equal(out.trajectory[-1][1], out.tokens)
    masks = np.array([(rows == MASK).sum(1) for _, rows in out.trajectory])        # (steps, rows)
    assert np.all(np.diff(masks, axis=0) <= 0)


def test_no_rows_is_an_empty_sample():
    assert sample_chunked(tiny_denoiser(L=6), 0).tokens.shape == (0, 6)
