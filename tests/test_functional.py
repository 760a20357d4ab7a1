"""tinygrad_lite/functional.py: every functional op's backward against central finite differences (float64, a
random upstream gradient, gradcheck's default tolerances; forward values against NumPy), each fused op against
the composition of primitives it stands for (values and gradients), and the float32 paths against float64.

The strategies (tests/strategies.py) keep inputs away from kinks and domain edges, where a finite difference is
meaningless. The softmax primitives of tensor.py, which have hand-derived backwards too, are compared with their
composed formulas here, beside the fused ops built on them.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_lite
import tinygrad_lite as tl
from tinygrad_lite import Tensor, gradcheck, where
from tinygrad_lite import functional as F
from helpers import assert_forward, np_softmax
from strategies import (AWAY_FROM_ZERO, NONSCALAR_SHAPES, SHAPES, arrays, attention_inputs, cross_entropy_cases,
                        embedding_inputs, linear_inputs, norm_inputs, rows_not_flat)


# ---------------------------------------------------------------------------------------------- gradchecks
def _np_cross_entropy(z, targets, reduction, ignore_index, weight):
    """Reference: loss_i = w[y_i] (logsumexp(z_i) - z_i[y_i]); 'mean' divides by the counted weight."""
    counted = targets != ignore_index
    y = np.where(counted, targets, 0)
    lse = np.log(np.exp(z).sum(-1))  # |z| <= 3: no overflow, the plain formula is exact enough
    w = counted * (1.0 if weight is None else weight[y])
    losses = (lse - np.take_along_axis(z, y[..., None], -1)[..., 0]) * w
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / max(w.sum(), 1e-12)


@given(case=cross_entropy_cases())
def test_cross_entropy(case):
    logits, targets, reduction, ignore_index, weight = case
    op = lambda z: F.cross_entropy(z, targets, reduction=reduction, ignore_index=ignore_index, weight=weight)
    assert_forward(op(Tensor(logits)), _np_cross_entropy(logits, targets, reduction, ignore_index, weight))
    gradcheck(op, [logits])


def test_cross_entropy_ignored_positions_get_zero_gradient():
    logits = Tensor(np.random.default_rng(0).normal(size=(3, 4)), requires_grad=True)
    F.cross_entropy(logits, np.array([2, -100, 0])).backward()
    np.testing.assert_array_equal(logits.grad[1], 0)
    assert np.abs(logits.grad[[0, 2]]).min() > 0


@pytest.mark.parametrize("affine", ["none", "weight", "bias", "both"])
@given(inputs=norm_inputs())
def test_layer_norm(affine, inputs):
    x, weight, bias = inputs
    assume(rows_not_flat(x))
    use_w, use_b = affine in ("weight", "both"), affine in ("bias", "both")
    D = x.shape[-1]

    def op(t, *params):
        params = list(params)
        w = params.pop(0) if use_w else None
        b = params.pop(0) if use_b else None
        return F.layer_norm(t, D, w, b)

    params = [p for p, used in ((weight, use_w), (bias, use_b)) if used]
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    expected = expected * (weight if use_w else 1) + (bias if use_b else 0)
    assert_forward(op(Tensor(x), *map(Tensor, params)), expected)
    gradcheck(op, [x] + params)


@pytest.mark.parametrize("use_weight", [False, True])
@given(inputs=norm_inputs())
def test_rms_norm(use_weight, inputs):
    x, weight, _ = inputs
    # eps is float64's machine epsilon: a row near zero is a singularity of x / rms(x), keep away from it
    assume(np.sqrt((x * x).mean(-1)).min() > 0.1)
    D = x.shape[-1]
    op = (lambda t, w: F.rms_norm(t, D, w)) if use_weight else (lambda t: F.rms_norm(t, D))
    params = [x, weight] if use_weight else [x]
    expected = x / np.sqrt((x * x).mean(-1, keepdims=True) + np.finfo(np.float64).eps) * (weight if use_weight else 1)
    assert_forward(op(*map(Tensor, params)), expected)
    gradcheck(op, params)


@given(inputs=embedding_inputs())
def test_embedding_gradient_wrt_table(inputs):
    # some table row is looked up more than once: its gradient must be the sum over those positions
    indices, table = inputs
    assert_forward(F.embedding(indices, Tensor(table)), table[indices])
    gradcheck(lambda w: F.embedding(indices, w), [table])


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
@given(data=st.data())
def test_dropout_gradient_is_the_mask_scaling(p, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES), AWAY_FROM_ZERO))  # nonzero: a zero output means "dropped"
    seed = data.draw(st.integers(0, 2 ** 16))
    G = np.random.default_rng(seed).normal(size=x.shape)

    tinygrad_lite.manual_seed(seed)
    t = Tensor(x, requires_grad=True)
    y = F.dropout(t, p)
    y.backward(G)
    keep = y.data != 0
    # forward: kept elements scaled by 1/(1-p), the rest zero; backward: the SAME mask and scaling
    np.testing.assert_allclose(y.data, np.where(keep, x / (1 - p), 0), rtol=1e-14)
    np.testing.assert_allclose(t.grad, np.where(keep, G / (1 - p), 0), rtol=1e-14)

    # the same seed gives the same mask
    tinygrad_lite.manual_seed(seed)
    np.testing.assert_array_equal(F.dropout(Tensor(x), p).data != 0, keep)

    # and finite differences agree when every evaluation reseeds (so all of them see one mask)
    def op(s):
        tinygrad_lite.manual_seed(seed)
        return F.dropout(s, p)
    gradcheck(op, [x])


def test_dropout_eval_is_identity():
    x = Tensor(np.arange(1.0, 7.0), requires_grad=True)
    y = F.dropout(x, 0.5, training=False)
    y.backward(np.arange(6.0))
    np.testing.assert_array_equal(y.data, x.data)
    np.testing.assert_array_equal(x.grad, np.arange(6.0))


def _np_attention(q, k, v, keep):
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    return np_softmax(scores, -1) @ v


@pytest.mark.parametrize("mask", ["none", "key_padding", "causal"])
@given(data=st.data())
def test_scaled_dot_product_attention(mask, data):
    batch = data.draw(hnp.array_shapes(min_dims=0, max_dims=1, min_side=1, max_side=2))
    Lq, Lk = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    E, Ev = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    q = data.draw(arrays(batch + (Lq, E)))
    k = data.draw(arrays(batch + (Lk, E)))
    v = data.draw(arrays(batch + (Lk, Ev)))
    keep, kwargs = None, {}
    if mask == "key_padding":
        # True = may attend; every query keeps at least one key (a fully masked row is undefined)
        pad_keep = data.draw(hnp.arrays(bool, batch + (Lk,)))
        assume(pad_keep.any(axis=-1).all())
        keep = pad_keep[..., None, :]  # broadcast over the query axis
        kwargs = {"attn_mask": keep}
    elif mask == "causal":
        keep = np.tril(np.ones((Lq, Lk), dtype=bool))
        kwargs = {"is_causal": True}
    op = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kwargs)
    assert_forward(op(Tensor(q), Tensor(k), Tensor(v)), _np_attention(q, k, v, keep))
    gradcheck(op, [q, k, v])


# ------------------------------------------------------------------------- fused ops vs. composed formulas
# Each fused op of functional.py has a hand-derived backward, and so do the softmax primitives. Here the same
# formula is built from primitives (whose backward is checked above: for gelu it is Tensor.gelu itself) and
# both values and gradients (for one random upstream G) must agree.
# Float64, so any difference beyond rounding means a wrong formula: rtol 1e-9 is ~1e6 ulps of headroom
# for rounding through ~20 ops with condition numbers up to ~300, and far below any real mistake.
def _const(a, like):
    return Tensor(np.asarray(a, dtype=like.dtype))


def composed_softmax(x, axis):
    e = (x - _const(x.data.max(axis=axis, keepdims=True), x)).exp()  # shift by a constant: value unchanged
    return e / e.sum(axis=axis, keepdims=True)


def composed_log_softmax(x, axis):
    s = x - _const(x.data.max(axis=axis, keepdims=True), x)
    return s - s.exp().sum(axis=axis, keepdims=True).log()


def composed_layer_norm(x, w, b, eps=1e-5):
    d = x - x.mean(-1, keepdims=True)
    return d / ((d * d).mean(-1, keepdims=True) + eps).sqrt() * w + b


def composed_rms_norm(x, w):
    eps = float(np.finfo(x.dtype).eps)
    return x / ((x * x).mean(-1, keepdims=True) + eps).sqrt() * w


def composed_cross_entropy(z, targets, reduction, ignore_index, weight):
    counted = targets != ignore_index
    y = np.where(counted, targets, 0)
    onehot = np.eye(z.shape[-1], dtype=z.dtype)[y]
    w = (counted * (1.0 if weight is None else weight[y])).astype(z.dtype)
    lse = composed_log_softmax(z, -1)
    losses = -(lse * onehot).sum(-1) * w
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / max(float(w.sum()), 1e-12)


def composed_linear(x, w, b):
    return x @ w.T + b


def composed_attention_weights(q, k, mask):
    """softmax(q k^T / sqrt(E) + mask) over the keys; a boolean mask (True = may attend) instead sets the
    scores it rules out to the most negative float."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None and mask.dtype == bool:
        scores = where(mask, scores, float(np.finfo(scores.dtype).min))
    elif mask is not None:
        scores = scores + _const(mask, scores)
    return composed_softmax(scores, -1)


def composed_embedding(indices, table):
    return table[indices]


def values_and_grads(fn, arrays_, dtype, G_seed=1):
    """fn's output and the gradient of sum(out * G) for each input, computed in `dtype`."""
    tensors = [Tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays_]
    out = fn(*tensors)
    G = np.random.default_rng(G_seed).standard_normal(out.shape).astype(dtype)
    out.backward(G)
    return out, [t.grad for t in tensors]


def assert_same(fn_a, fn_b, arrays_, rtol=1e-9, atol=1e-10):
    out_a, grads_a = values_and_grads(fn_a, arrays_, np.float64)
    out_b, grads_b = values_and_grads(fn_b, arrays_, np.float64)
    assert out_a.shape == out_b.shape
    np.testing.assert_allclose(out_a.data, out_b.data, rtol=rtol, atol=atol)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_fused_softmax_matches_composed(name, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    fused = lambda t: getattr(t, name)(axis)
    composed = (lambda t: composed_softmax(t, axis)) if name == "softmax" else (lambda t: composed_log_softmax(t, axis))
    assert_same(fused, composed, [x])


@given(data=st.data())
def test_fused_gelu_matches_composed(data):
    x = data.draw(arrays(data.draw(SHAPES)))
    assert_same(F.gelu, lambda t: t.gelu(), [x])


@given(inputs=embedding_inputs())
def test_fused_embedding_matches_composed(inputs):
    indices, table = inputs
    assert_same(lambda w: F.embedding(indices, w), lambda w: composed_embedding(indices, w), [table])


def _softmax_right_only_for_sum(x):
    """softmax with a backward that is right only for G = 1: d sum(softmax(x)) / dx is 0, so it returns 0."""
    return Tensor._make(x.softmax(-1).data, (x,), "softmax_sum_only", lambda g: (np.zeros_like(g),))


def test_fused_vs_composed_check_uses_a_random_upstream_gradient():
    # negative control: compared through .sum(), this wrong fused op would pass; assert_same must catch it
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    t = Tensor(x, requires_grad=True)
    _softmax_right_only_for_sum(t).sum().backward()
    u = Tensor(x, requires_grad=True)
    u.softmax(-1).sum().backward()
    np.testing.assert_allclose(t.grad, u.grad, atol=1e-15)
    with pytest.raises(AssertionError):
        assert_same(_softmax_right_only_for_sum, lambda s: composed_softmax(s, -1), [x])


@given(inputs=norm_inputs(min_dim=2))
def test_fused_layer_norm_matches_composed(inputs):
    x, w, b = inputs
    assume(rows_not_flat(x))
    assert_same(lambda t, w_, b_: F.layer_norm(t, t.shape[-1], w_, b_), composed_layer_norm, [x, w, b])


@given(inputs=norm_inputs())
def test_fused_rms_norm_matches_composed(inputs):
    x, w, _ = inputs
    assume(np.sqrt((x * x).mean(-1)).min() > 0.1)
    assert_same(lambda t, w_: F.rms_norm(t, t.shape[-1], w_), composed_rms_norm, [x, w])


@given(case=cross_entropy_cases())
def test_fused_cross_entropy_matches_composed(case):
    logits, targets, reduction, ignore_index, weight = case
    assert_same(lambda z: F.cross_entropy(z, targets, reduction, ignore_index, weight),
                lambda z: composed_cross_entropy(z, targets, reduction, ignore_index, weight), [logits])


@given(inputs=linear_inputs())
def test_linear(inputs):
    x, w, b = inputs
    assert_forward(F.linear(Tensor(x), Tensor(w), Tensor(b)), x @ w.T + b)
    gradcheck(F.linear, [x, w, b])
    gradcheck(lambda t, w_: F.linear(t, w_), [x, w])


@given(inputs=linear_inputs())
def test_fused_linear_matches_composed(inputs):
    assert_same(F.linear, composed_linear, list(inputs))


@given(inputs=attention_inputs())
def test_fused_attention_matches_composed(inputs):
    q, k, v, mask = inputs  # a fully masked query row is uniform over all keys in both, with no gradient to q, k
    assert_same(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask),
                lambda a, b, c: composed_attention_weights(a, b, mask) @ c, [q, k, v])


@pytest.mark.parametrize("p", [0.25, 0.5])
@given(inputs=attention_inputs(), seed=st.integers(0, 2 ** 16))
def test_attention_dropout_matches_composed(p, inputs, seed):
    q, k, v, mask = inputs

    def fused(a, b, c):
        tinygrad_lite.manual_seed(seed)
        return F.scaled_dot_product_attention(a, b, c, attn_mask=mask, dropout_p=p)

    def composed(a, b, c):  # the same draw: F.dropout on the attention weights, after the same seed
        weights = composed_attention_weights(a, b, mask)
        tinygrad_lite.manual_seed(seed)
        return F.dropout(weights, p) @ c
    assert_same(fused, composed, [q, k, v])


# ------------------------------------------------------------------------- float32 paths vs. float64
# The same fused op in float32 must stay float32 (values and gradients) and agree with float64 to float32
# accuracy. Norm-wise: max |f32 - f64| <= tol * max(1, max |f64|), tol = 1e-5 ~ 100 float32 ulps (2^-23
# = 1.2e-7), which covers a few dozen roundings; a formula bug in one path only gives O(1) differences.
FLOAT32_TOL = 1e-5


def assert_float32_close(fn, arrays_):
    out64, grads64 = values_and_grads(fn, arrays_, np.float64)
    out32, grads32 = values_and_grads(fn, arrays_, np.float32)
    assert out32.dtype == np.float32 and all(g.dtype == np.float32 for g in grads32)
    for a32, a64 in [(out32.data, out64.data)] + list(zip(grads32, grads64)):
        scale = max(1.0, float(np.abs(a64).max(initial=0)))
        assert np.abs(a32.astype(np.float64) - a64).max(initial=0) <= FLOAT32_TOL * scale


FLOAT32_ELEMENTWISE = {"softmax": lambda t: t.softmax(-1), "log_softmax": lambda t: t.log_softmax(-1),
                       "gelu": lambda t: t.gelu(), "gelu (fused)": F.gelu}


@pytest.mark.parametrize("name", FLOAT32_ELEMENTWISE)
@given(data=st.data())
def test_float32_elementwise_and_softmax(name, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    assert_float32_close(FLOAT32_ELEMENTWISE[name], [x])


@given(inputs=norm_inputs(min_dim=2))
def test_float32_layer_norm(inputs):
    x, w, b = inputs
    # float32 var of a row with |x| <= 3 loses ~x^2/var relative digits: rows must have a real spread
    assume(rows_not_flat(x, min_std=0.3))
    assert_float32_close(lambda t, w_, b_: F.layer_norm(t, t.shape[-1], w_, b_), [x, w, b])


@given(inputs=norm_inputs())
def test_float32_rms_norm(inputs):
    x, w, _ = inputs
    assume(np.sqrt((x * x).mean(-1)).min() > 0.3)
    assert_float32_close(lambda t, w_: F.rms_norm(t, t.shape[-1], w_), [x, w])


@given(case=cross_entropy_cases())
def test_float32_cross_entropy(case):
    logits, targets, reduction, ignore_index, weight = case
    assert_float32_close(lambda z: F.cross_entropy(z, targets, reduction, ignore_index, weight), [logits])


@given(inputs=linear_inputs())
def test_float32_linear(inputs):
    assert_float32_close(F.linear, list(inputs))


@given(inputs=attention_inputs())
def test_float32_attention(inputs):
    q, k, v, mask = inputs
    assert_float32_close(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, attn_mask=mask), [q, k, v])


# ---------------------------------------------------------------------------------------------- extreme logits
@given(scale=st.sampled_from([1e4, -1e4]), seed=st.integers(0, 100))
def test_extreme_logits_give_finite_loss_and_gradient(scale, seed):
    logits = Tensor(np.random.default_rng(seed).standard_normal((3, 5, 27)).astype(np.float32) * scale,
                    requires_grad=True)
    loss = tl.functional.cross_entropy(logits, np.random.default_rng(seed).integers(0, 27, (3, 5)))
    loss.backward()
    assert np.isfinite(loss.item()) and np.all(np.isfinite(logits.grad))
