"""diffusion/orders.py: the denoiser's likelihood in a decoding order against a step-by-step reference (fixed
orders, the length-first sampler's and random orders), each order's normalization, and the importance-weighted
bound over random orders against the exact likelihood of the random-order model, all orders listed."""
import itertools

import numpy as np
import pytest

import tinygrad_lite as tl
from diffusion.data import LETTERS, MASK, NUM_CLASSES, PAD, encode
from diffusion.orders import bound_by_orders, iw_bound, ordered_nll, random_orders_nll
from helpers import NAMES, log_probs, tiny_transformer as tiny_denoiser


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
