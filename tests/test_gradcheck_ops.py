"""Every op's backward, checked against central finite differences with tinygrad_lite.gradcheck.

gradcheck runs in float64 with a random upstream gradient G and its default tolerances (rtol 1e-5,
atol 1e-7) — never loosened here. A finite difference is only meaningful where the function is smooth,
so the strategies (tests/strategies.py) keep inputs away from kinks and domain edges instead.
Each test also checks the forward value against NumPy, so a shape or value bug cannot hide behind a
self-consistent backward. The fused ops of functional.py are also checked against the composition of
primitives each one stands for (values and gradients), and the float32 paths against float64.
"""
import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_lite
from tinygrad_lite import Tensor, concatenate, gradcheck, stack, where
from tinygrad_lite import functional as F
from strategies import (AWAY_FROM_ZERO, FLOATS, NONSCALAR_SHAPES, POSITIVE, RELU_SAFE, SHAPES, arrays,
                        attention_inputs, axis_args, cross_entropy_cases, distinct_arrays, embedding_inputs,
                        linear_inputs, norm_inputs, rows_not_flat)

# ---------------------------------------------------------------------------------------------- helpers
def np_axis(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


def assert_forward(out, expected):
    """The op's value (and shape, and float64 dtype) must equal NumPy's."""
    expected = np.asarray(expected)
    assert out.shape == expected.shape
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- binary ops
# name -> (tinygrad op, NumPy reference, elements for a, elements for b)
BINARY = {
    "add": (lambda a, b: a + b, np.add, FLOATS, FLOATS),
    "sub": (lambda a, b: a - b, np.subtract, FLOATS, FLOATS),
    "mul": (lambda a, b: a * b, np.multiply, FLOATS, FLOATS),
    "div": (lambda a, b: a / b, np.divide, FLOATS, AWAY_FROM_ZERO),
    # exponent in [-2, 2]: with a base >= 0.1 the values stay <= 100, so rounding in the summed scalar
    # that gradcheck differentiates stays far below atol.
    "pow": (lambda a, b: a ** b, np.power, POSITIVE, st.floats(-2, 2)),
}


@pytest.mark.parametrize("name", BINARY)
@given(data=st.data())
def test_binary_op_broadcasting(name, data):
    op, ref, elements_a, elements_b = BINARY[name]
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4))
    a = data.draw(arrays(shapes.input_shapes[0], elements_a))
    b = data.draw(arrays(shapes.input_shapes[1], elements_b))
    out = op(Tensor(a), Tensor(b))
    assert out.shape == shapes.result_shape
    assert_forward(out, ref(a, b))
    gradcheck(op, [a, b])  # both inputs: the gradient of a broadcast input must be summed back to its shape


# A tensor with a Python number on either side, including the reflected forms (__rsub__, __rtruediv__, ...).
SCALAR_FORMS = {
    "x + 2": (lambda x: x + 2.0, lambda x: x + 2.0, FLOATS),
    "2 + x": (lambda x: 2.0 + x, lambda x: 2.0 + x, FLOATS),
    "x - 2": (lambda x: x - 2.0, lambda x: x - 2.0, FLOATS),
    "2 - x": (lambda x: 2.0 - x, lambda x: 2.0 - x, FLOATS),
    "x * 2.5": (lambda x: x * 2.5, lambda x: x * 2.5, FLOATS),
    "2.5 * x": (lambda x: 2.5 * x, lambda x: 2.5 * x, FLOATS),
    "x / 3": (lambda x: x / 3.0, lambda x: x / 3.0, FLOATS),
    "3 / x": (lambda x: 3.0 / x, lambda x: 3.0 / x, AWAY_FROM_ZERO),
    "x ** 2": (lambda x: x ** 2, lambda x: x ** 2, FLOATS),
    "x ** 3 (negative base)": (lambda x: x ** 3, lambda x: x ** 3, FLOATS),
    "x ** -1.5": (lambda x: x ** -1.5, lambda x: x ** -1.5, POSITIVE),
    "2 ** x": (lambda x: 2.0 ** x, lambda x: 2.0 ** x, FLOATS),
    "-x": (lambda x: -x, lambda x: -x, FLOATS),
    # a NumPy scalar on the left must defer to the Tensor (not build an object array of 0-d Tensors)
    "np.float64(0.5) * x": (lambda x: np.float64(0.5) * x, lambda x: 0.5 * x, FLOATS),
}


# ---------------------------------------------------------------------------------------------- matmul
@given(data=st.data())
def test_matmul(data):
    # NumPy's matmul signature: 2-D matrices, 1-D vectors on either side (incl. vector @ vector -> scalar),
    # and batch dimensions that broadcast against each other.
    shapes = data.draw(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=2, max_side=4))
    a = data.draw(arrays(shapes.input_shapes[0]))
    b = data.draw(arrays(shapes.input_shapes[1]))
    assert_forward(Tensor(a) @ Tensor(b), a @ b)
    gradcheck(lambda x, y: x @ y, [a, b])


@pytest.mark.parametrize("shape_a, shape_b", [
    ((3,), (3,)),              # vector . vector -> scalar
    ((3,), (3, 2)),            # vector @ matrix
    ((2, 3), (3,)),            # matrix @ vector
    ((4, 3), (2, 1, 3, 2)),    # matrix against a batch
    ((2, 1, 4, 3), (3, 2)),    # a batch against a matrix (folded into one 2-D product)
    ((2, 1, 2, 3), (3, 3, 2)), # batch dims (2, 1) and (3,) broadcast to (2, 3)
    ((3,), (2, 3, 4)),         # vector against a batch
])
def test_matmul_fixed_shapes(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-3, 3, shape_a), rng.uniform(-3, 3, shape_b)
    assert_forward(Tensor(a) @ Tensor(b), a @ b)
    gradcheck(lambda x, y: x @ y, [a, b])
    gradcheck(lambda y: a @ y, [b])  # a NumPy array on the left (__rmatmul__)


# ---------------------------------------------------------------------------------------------- unary ops
def _gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


UNARY = {
    "neg": (lambda x: -x, np.negative, FLOATS),
    "exp": (lambda x: x.exp(), np.exp, FLOATS),
    "log": (lambda x: x.log(), np.log, POSITIVE),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, POSITIVE),
    "tanh": (lambda x: x.tanh(), np.tanh, FLOATS),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), FLOATS),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0), RELU_SAFE),
    "gelu": (lambda x: x.gelu(), _gelu_ref, FLOATS),               # composed from primitives
    "gelu (fused)": (lambda x: F.gelu(x), _gelu_ref, FLOATS),      # functional.gelu
}


@pytest.mark.parametrize("name", {**UNARY, **SCALAR_FORMS})   # unary ops, and binary ops with a constant
@given(data=st.data())
def test_unary_op(name, data):
    op, ref, elements = {**UNARY, **SCALAR_FORMS}[name]
    x = data.draw(arrays(data.draw(SHAPES), elements))
    assert_forward(op(Tensor(x)), ref(x))
    gradcheck(op, [x])


# ---------------------------------------------------------------------------------------------- reductions
@pytest.mark.parametrize("name", ["sum", "mean"])
@given(data=st.data())
def test_sum_mean(name, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    axis, keepdims = data.draw(axis_args(x.ndim)), data.draw(st.booleans())
    op = lambda t: getattr(t, name)(axis=axis, keepdims=keepdims)
    assert_forward(op(Tensor(x)), getattr(np, name)(x, axis=np_axis(axis), keepdims=keepdims))
    gradcheck(op, [x])


@given(data=st.data())
def test_max(data):
    x = distinct_arrays(data, data.draw(NONSCALAR_SHAPES))  # no ties: max is differentiable there
    axis, keepdims = data.draw(axis_args(x.ndim)), data.draw(st.booleans())
    op = lambda t: t.max(axis=axis, keepdims=keepdims)
    assert_forward(op(Tensor(x)), np.max(x, axis=np_axis(axis), keepdims=keepdims))
    gradcheck(op, [x])


def test_max_ties_share_the_gradient():
    # At a tie max is not differentiable (no gradcheck); the documented choice is an equal split.
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]]), requires_grad=True)
    x.max(axis=1).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [10, 0, 0]])


@pytest.mark.parametrize("correction", [0, 1])
@given(data=st.data())
def test_var(correction, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    axis, keepdims = data.draw(axis_args(x.ndim)), data.draw(st.booleans())
    n = x.size if axis is None else math.prod(x.shape[a] for a in np.atleast_1d(axis))
    assume(n > correction)  # n == correction is undefined (NumPy and PyTorch give nan)
    op = lambda t: t.var(axis=axis, keepdims=keepdims, correction=correction)
    assert_forward(op(Tensor(x)), np.var(x, axis=np_axis(axis), keepdims=keepdims, ddof=correction))
    gradcheck(op, [x])


# ---------------------------------------------------------------------------------------------- movement
@given(data=st.data())
def test_reshape(data):
    x = data.draw(arrays(data.draw(SHAPES)))
    # a random factorization of x.size into up to 3 axes, one of them possibly given as -1
    sizes = [d for d in range(1, x.size + 1) if x.size % d == 0]
    first = data.draw(st.sampled_from(sizes))
    second = data.draw(st.sampled_from([d for d in sizes if (x.size // first) % d == 0]))
    new_shape = (first, second, x.size // (first * second))
    if data.draw(st.booleans()):
        new_shape = new_shape[:2] + (-1,)
    assert_forward(Tensor(x).reshape(new_shape), x.reshape(new_shape))
    gradcheck(lambda t: t.reshape(*new_shape), [x])


@given(data=st.data())
def test_permute(data):
    x = data.draw(arrays(data.draw(hnp.array_shapes(min_dims=0, max_dims=4, max_side=3))))
    dims = data.draw(st.permutations(range(x.ndim)))
    assert_forward(Tensor(x).permute(*dims), x.transpose(dims))
    gradcheck(lambda t: t.permute(*dims), [x])


@pytest.mark.parametrize("dims", [(1, 2, 0), (2, 0, 1), (-1, 0, 1), (1, 3, 0, 2)])
def test_permute_cycles(dims):
    # Swaps are their own inverse; only a cycle catches a backward that applies `dims` instead of its inverse.
    x = np.random.default_rng(0).uniform(-3, 3, (2, 3, 4, 5)[:len(dims)])
    assert_forward(Tensor(x).permute(*dims), x.transpose(dims))
    gradcheck(lambda t: t.permute(*dims), [x])


@given(data=st.data())
def test_transpose_and_T(data):
    x = data.draw(arrays(data.draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=3))))
    d0, d1 = data.draw(st.integers(-x.ndim, x.ndim - 1)), data.draw(st.integers(-x.ndim, x.ndim - 1))
    assert_forward(Tensor(x).transpose(d0, d1), np.swapaxes(x, d0, d1))
    gradcheck(lambda t: t.transpose(d0, d1), [x])
    assert_forward(Tensor(x).T, x.T)
    gradcheck(lambda t: t.T, [x])


@given(data=st.data())
def test_getitem_basic(data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    index = data.draw(hnp.basic_indices(x.shape, allow_newaxis=True, allow_ellipsis=True))
    assert_forward(Tensor(x)[index], x[index])
    gradcheck(lambda t: t[index], [x])


@given(data=st.data())
def test_getitem_integer_arrays(data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    index = data.draw(hnp.integer_array_indices(x.shape, result_shape=hnp.array_shapes(max_dims=2, max_side=5)))
    assert_forward(Tensor(x)[index], x[index])
    gradcheck(lambda t: t[index], [x])


@given(data=st.data())
def test_getitem_repeated_indices(data):
    # More indices than rows (pigeonhole): some row is picked at least twice, so its gradient must be the
    # SUM of the picked rows' gradients (np.add.at), not the last one written.
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    n = x.shape[0]
    idx = data.draw(hnp.arrays(np.intp, data.draw(st.integers(n + 1, n + 4)), elements=st.integers(-n, n - 1)))
    assert_forward(Tensor(x)[idx], x[idx])
    gradcheck(lambda t: t[idx], [x])
    if x.ndim > 1:  # mixed: a slice, then an integer array
        j = np.array([0, 0, x.shape[1] - 1])
        assert_forward(Tensor(x)[:, j], x[:, j])
        gradcheck(lambda t: t[:, j], [x])


# ---------------------------------------------------------------------------------------------- joins
@pytest.mark.parametrize("join", ["concatenate", "stack"])
@given(data=st.data())
def test_concatenate_stack(join, data):
    base = data.draw(NONSCALAR_SHAPES)
    count = data.draw(st.integers(1, 3))
    if join == "concatenate":  # sizes may differ along the joined axis
        axis = data.draw(st.integers(-len(base), len(base) - 1))
        shapes = []
        for _ in range(count):
            s = list(base)
            s[axis] = data.draw(st.integers(1, 3))
            shapes.append(tuple(s))
        op, ref = (lambda *ts: concatenate(ts, axis=axis)), (lambda *xs: np.concatenate(xs, axis=axis))
    else:                      # a new axis, anywhere in [-(ndim+1), ndim]
        axis = data.draw(st.integers(-len(base) - 1, len(base)))
        shapes = [base] * count
        op, ref = (lambda *ts: stack(ts, axis=axis)), (lambda *xs: np.stack(xs, axis=axis))
    xs = [data.draw(arrays(s)) for s in shapes]
    assert_forward(op(*map(Tensor, xs)), ref(*xs))
    gradcheck(op, xs)


# ---------------------------------------------------------------------------------------------- where
@given(data=st.data())
def test_where(data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4))
    cond = data.draw(hnp.arrays(bool, shapes.input_shapes[0]))
    a, b = data.draw(arrays(shapes.input_shapes[1])), data.draw(arrays(shapes.input_shapes[2]))
    assert_forward(where(cond, Tensor(a), Tensor(b)), np.where(cond, a, b))
    gradcheck(lambda s, t: where(cond, s, t), [a, b])
    gradcheck(lambda s: where(cond, s, 1.5), [a])   # a Python number on either side
    gradcheck(lambda t: where(cond, -2.0, t), [b])


@given(data=st.data())
def test_masked_fill(data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4))
    mask = data.draw(hnp.arrays(bool, shapes.input_shapes[0]))
    x = data.draw(arrays(shapes.input_shapes[1]))
    assert_forward(Tensor(x).masked_fill(mask, -7.0), np.where(mask, -7.0, x))
    gradcheck(lambda t: t.masked_fill(mask, -7.0), [x])


# ---------------------------------------------------------------------------------------------- softmax
def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_log_softmax(name, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    expected = _np_softmax(x, axis) if name == "softmax" else np.log(_np_softmax(x, axis))
    op = lambda t: getattr(F, name)(t, axis)
    assert_forward(op(Tensor(x)), expected)
    gradcheck(op, [x])


# ---------------------------------------------------------------------------------------------- functional
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
    return _np_softmax(scores, -1) @ v


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
