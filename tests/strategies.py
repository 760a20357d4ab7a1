"""Hypothesis strategies shared by the tests: float64 arrays kept where finite differences are meaningful, and
the inputs of each functional op.

A finite difference is only meaningful where the function is smooth, so the strategies keep inputs away from
kinks and domain edges (relu not near 0, log/sqrt/pow bases >= 0.1, denominators away from 0, max inputs
without ties, norm rows not near-constant); values are bounded by 3, so nothing overflows and derivatives
stay modest.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st

FLOATS = st.floats(-3, 3)                                   # bounded: no overflow, modest derivatives
AWAY_FROM_ZERO = st.floats(0.1, 3) | st.floats(-3, -0.1)    # denominators
POSITIVE = st.floats(0.1, 3)                                # log / sqrt / pow bases
RELU_SAFE = st.floats(1e-3, 3) | st.floats(-3, -1e-3)       # relu's kink at 0 is 1000 eps away
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
NONSCALAR_SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)
LEADING_SHAPES = hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3)  # the (...) of (..., D)


def arrays(shape, elements=FLOATS):
    # fill=nothing: draw every element independently (no large blocks of one repeated value)
    return hnp.arrays(np.float64, shape, elements=elements, fill=st.nothing())


def distinct_arrays(data, shape):
    """Values in [-3, 3) with pairwise gaps >= 3/size: a strict maximum along any axis (no ties to split)."""
    n = math.prod(shape)
    order = np.array(data.draw(st.permutations(range(n))), dtype=np.float64)
    jitter = data.draw(arrays((n,), st.floats(0, 0.5)))
    return (-3 + 6 * (order + jitter) / n).reshape(shape)


def axis_args(ndim):
    """axis=None, one (possibly negative) int, or a tuple of distinct axes."""
    return st.one_of(st.none(), st.integers(-ndim, ndim - 1), hnp.valid_tuple_axes(ndim, min_size=1))


def rows_not_flat(x, min_std=0.1):
    """For assume(): a near-constant row makes 1/sqrt(var + eps) ~ 300 and layer norm very curved: a domain edge."""
    return x.shape[-1] == 1 or x.std(axis=-1).min() > min_std


@st.composite
def cross_entropy_cases(draw):
    """(logits, targets, reduction, ignore_index, weight): targets may hit ignore_index, which may be a class."""
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    V = draw(st.integers(1, 4))
    logits = draw(arrays(lead + (V,)))
    ignore_index = draw(st.sampled_from([-100, 1]))
    targets = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, V - 1) | st.just(ignore_index)))
    weight = draw(st.none() | arrays((V,), st.floats(0.1, 2)))
    reduction = draw(st.sampled_from(["none", "sum", "mean"]))
    return logits, targets, reduction, ignore_index, weight


@st.composite
def norm_inputs(draw, min_dim=1):
    """(x (..., D), weight (D,), bias (D,)) for layer_norm and rms_norm."""
    D = draw(st.integers(min_dim, 4))
    x = draw(arrays(draw(LEADING_SHAPES) + (D,)))
    weight, bias = draw(arrays((D,))), draw(arrays((D,)))
    return x, weight, bias


@st.composite
def linear_inputs(draw):
    """(x (..., in), weight (out, in), bias (out,))."""
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return draw(arrays(draw(LEADING_SHAPES) + (n_in,))), draw(arrays((n_out, n_in))), draw(arrays((n_out,)))


@st.composite
def embedding_inputs(draw):
    """(indices (...), table (V, D)); each row of indices is longer than the table, so some table row repeats."""
    V, D = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 2)), draw(st.integers(V + 1, V + 3)))
    return draw(hnp.arrays(np.int64, shape, elements=st.integers(0, V - 1))), draw(arrays((V, D)))


@st.composite
def attention_inputs(draw):
    """(q, k, v, mask) for 1-2 batch axes; mask is None, a boolean keep mask (causal or key padding; True = may
    attend) or a float mask added to the scores."""
    batch = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=2))
    Lq, Lk, E, Ev = (draw(st.integers(1, 3)) for _ in range(4))
    q, k, v = draw(arrays(batch + (Lq, E))), draw(arrays(batch + (Lk, E))), draw(arrays(batch + (Lk, Ev)))
    kind = draw(st.sampled_from(["none", "causal", "key_padding", "float"]))
    mask = {"none": lambda: None, "causal": lambda: np.tril(np.ones((Lq, Lk), dtype=bool)),
            "key_padding": lambda: draw(hnp.arrays(bool, batch[:1] + (1,) * len(batch[1:]) + (1, Lk))),
            "float": lambda: draw(arrays((Lq, Lk)))}[kind]()
    return q, k, v, mask
