"""tinygrad_lite/tensor.py: the Tensor, its primitives and the autograd engine.

The engine's invariants (not of single ops): shapes and dtypes of gradients, no mutation of caller arrays,
accumulation, graph freeing, grad mode, dtype rules, numerically extreme inputs, error messages that name the op
and the shapes.

Then every primitive's backward, checked against central finite differences with tinygrad_lite.gradcheck:
float64, a random upstream gradient G and its default tolerances (rtol 1e-5, atol 1e-7), never loosened here.
A finite difference is only meaningful where the function is smooth, so the strategies (tests/strategies.py)
keep inputs away from kinks and domain edges instead. Each test also checks the forward value against NumPy, so
a shape or value bug cannot hide behind a self-consistent backward. (The fused ops of functional.py are checked
in test_functional.py; the negative controls of gradcheck itself in test_gradcheck.py.)
"""
import gc
import math
import re
import weakref

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_lite as tl
from tinygrad_lite import Tensor, concatenate, gradcheck, is_grad_enabled, no_grad, stack, where
from tinygrad_lite import functional as F
from helpers import assert_forward, np_softmax, rng
from strategies import (AWAY_FROM_ZERO, FLOATS, NONSCALAR_SHAPES, POSITIVE, RELU_SAFE, SHAPES, arrays, axis_args,
                        distinct_arrays)


# ---------------------------------------------------------------------------------------------- grad shape/dtype
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=4))
def test_gradient_has_the_parameters_shape_and_dtype(dtype, shapes):
    # Three inputs broadcast against each other through several ops: each .grad must come back summed to
    # that input's own shape, in that input's dtype.
    arrays = [np.random.default_rng(1).uniform(-1, 1, s).astype(dtype) for s in shapes.input_shapes]
    a, b, c = [Tensor(x, requires_grad=True) for x in arrays]
    out = ((a * b).tanh() + c.exp() / (1 + b * b) - a.sigmoid() * c).relu()
    assert out.shape == shapes.result_shape and out.dtype == dtype
    out.backward(np.ones(out.shape, dtype))
    for t in (a, b, c):
        assert t.grad.shape == t.shape
        assert t.grad.dtype == dtype


def test_float32_parameter_gets_float32_grad_through_float64_ops():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    out = (w.double() * Tensor(np.arange(3.0))).sum()   # the graph below w runs in float64
    out.backward()
    assert out.dtype == np.float64
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad, [0, 1, 2])


def test_tensors_without_requires_grad_get_no_gradient():
    x, c = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2))
    (x * c).sum().backward()
    assert c.grad is None
    d = x.detach()  # detach() cuts the graph: nothing flows back through it
    assert not d.requires_grad and d.is_leaf


# ---------------------------------------------------------------------------------------------- no mutation
def test_inputs_and_upstream_gradient_are_not_mutated():
    r = rng()
    xa, wa = r.uniform(0.5, 2, (3, 4)), r.uniform(-1, 1, (4, 5))
    G = r.normal(size=(3, 5))
    originals = [a.copy() for a in (xa, wa, G)]
    x, w = Tensor(xa, requires_grad=True), Tensor(wa, requires_grad=True)
    # a mix of ops whose backward passes g straight through (add, reshape, getitem, concatenate, where)
    h = (x @ w).exp() + (x.log().sum(axis=1, keepdims=True) / x.max())
    h = concatenate([h[:, :2], h[:, 2:]], axis=1).reshape(3, 5)
    h = where(xa[:, :1] > 1, h, h * 2).softmax(-1) + F.layer_norm(h, 5) + h.log_softmax(0)
    h.backward(G)
    h2 = (x @ w) + 0.0          # the root's gradient IS G here: it reaches x and w untouched
    h2.backward(G)              # ... and accumulating into x.grad must not write through to G
    for a, orig in zip((xa, wa, G), originals):
        np.testing.assert_array_equal(a, orig)


def test_grad_is_a_copy_of_the_upstream_array():
    G = np.arange(3.0)
    x = Tensor(np.zeros(3), requires_grad=True)
    x.backward(G)               # a leaf: its .grad is the upstream array's value ...
    x.grad += 100               # ... but not that array
    np.testing.assert_array_equal(G, [0, 1, 2])
    y = x + 0.0
    y.backward(G)
    np.testing.assert_array_equal(G, [0, 1, 2])
    (x + x).backward(G)         # x receives G twice: summing the two must not be done inside G
    np.testing.assert_array_equal(G, [0, 1, 2])
    np.testing.assert_array_equal(x.grad, 100 + 4 * G)


# ---------------------------------------------------------------------------------------------- graph shapes
def test_diamond_graph_sums_both_paths():
    # (x + x) * x = 2x^2, d/dx = 4x: x reaches the output by three edges and all of them must be summed.
    # Dyadic values make every intermediate exact, so the check is exact equality.
    xs = np.array([-1.5, 0.25, 2.0, 3.0])
    x = Tensor(xs, requires_grad=True)
    ((x + x) * x).sum().backward()
    np.testing.assert_array_equal(x.grad, 4 * xs)


def test_ten_thousand_deep_chain():
    # A recursive topological sort would hit Python's recursion limit (1000) long before 10,000.
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1.0001 ** 10_000, rtol=1e-9)
    # a deep graph that is never backpropagated must also be freed without trouble
    z = x
    for _ in range(10_000):
        z = z + 1.0
    del z
    gc.collect()


# ---------------------------------------------------------------------------------------------- accumulation
def test_backward_twice_with_retain_graph_accumulates():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, [2, 4, 6])
    loss.backward(retain_graph=True)    # same graph again: gradients add up (as PyTorch), they are not reset
    np.testing.assert_array_equal(x.grad, [4, 8, 12])


def test_backward_twice_without_retain_graph_raises():
    # By default backward() frees the graph (memory stays flat over training); walking it again is an
    # error rather than a silent zero gradient.
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already freed"):
        loss.backward()
    np.testing.assert_array_equal(x.grad, [2, 4])  # the failed call added nothing


def test_rerunning_forward_and_backward_accumulates():
    x = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    for step in range(1, 4):
        (x.exp()).sum().backward()
        np.testing.assert_allclose(x.grad, step * np.exp(x.data), rtol=1e-15)
    x.grad = None                        # what zero_grad() does: the next backward starts afresh
    (x.exp()).sum().backward()
    np.testing.assert_allclose(x.grad, np.exp(x.data), rtol=1e-15)


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3.0).retain_grad()
    (h * h).sum().backward()
    np.testing.assert_array_equal(h.grad, 2 * h.data)
    np.testing.assert_array_equal(x.grad, 3 * 2 * h.data)


def test_graph_is_freed_after_backward():
    x = Tensor(rng().normal(size=3), requires_grad=True)
    h = x.exp()
    ref = weakref.ref(h)
    out = (h * 2.0).sum()
    del h
    gc.collect()
    assert ref() is not None             # before backward the graph holds the intermediate ...
    out.backward()
    gc.collect()
    assert ref() is None                 # ... afterwards nothing does
    assert out._parents == ()


# ---------------------------------------------------------------------------------------------- grad mode
def test_no_grad_context_manager_records_nothing():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2.0).exp().sum()
        with no_grad():                  # nesting: the inner exit must not re-enable grad
            pass
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert not y.requires_grad and y._parents == () and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_restores_grad_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_no_grad_decorator_records_nothing():
    @no_grad()
    def energy(t, depth=0):
        # recursion re-enters the same no_grad instance: its saved-state stack must unwind correctly
        return (t * t).sum() if depth == 2 else energy(t, depth + 1)

    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = energy(x)
    assert is_grad_enabled()
    assert not y.requires_grad and y._parents == ()
    assert y.item() == 5.0
    z = (x * x).sum()                    # and outside the function the graph is recorded again
    assert z.requires_grad


def test_grad_mode_is_per_thread():
    """As in PyTorch: a no_grad in one thread does not switch off recording in another, and two threads inside
    the same no_grad instance at once each restore their own mode: thread B enters it from grad-off (inside an
    outer no_grad), thread A from grad-on, and A leaves first."""
    import threading
    guard, results = no_grad(), {}
    a_in, b_in, a_out = (threading.Event() for _ in range(3))
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)

    def thread_a():
        with guard:
            a_in.set()
            b_in.wait(10)
            results["A inside"] = (x * x).requires_grad
        a_out.set()
        results["A after"] = is_grad_enabled()

    def thread_b():
        a_in.wait(10)
        results["B before"] = (x * x).requires_grad           # A's no_grad does not reach this thread
        with no_grad():
            with guard:
                b_in.set()
                a_out.wait(10)
            results["B after guard"] = is_grad_enabled()       # back to the outer no_grad's mode: off
        results["B after all"] = is_grad_enabled()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {"A inside": False, "A after": True, "B before": True, "B after guard": False,
                       "B after all": True}
    assert is_grad_enabled()


# ---------------------------------------------------------------------------------------------- dtype rules
def test_python_scalars_and_lists_become_float32():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor(3).dtype == np.float32
    assert Tensor([1, 2, 3]).dtype == np.float32
    assert Tensor([[0.5], [1.5]]).dtype == np.float32


def test_numpy_arrays_keep_their_dtype():
    assert Tensor(np.zeros(3)).dtype == np.float64
    assert Tensor(np.zeros(3, np.float32)).dtype == np.float32
    assert Tensor(np.arange(3)).dtype.kind == "i"   # integer indices stay integer


@pytest.mark.parametrize("op", [
    lambda x: 0.5 * x, lambda x: x * 0.5, lambda x: x + 1.0, lambda x: 1.0 - x, lambda x: x / 3.0,
    lambda x: 3.0 / x, lambda x: x ** 2, lambda x: 2.0 ** x, lambda x: -x, lambda x: x.sqrt(),
    lambda x: x.mean(), lambda x: x.var(), lambda x: x.sigmoid(), lambda x: x.gelu(), F.gelu,
    lambda x: x.softmax(-1), lambda x: x.masked_fill(np.array([True, False]), 1e30),
    lambda x: np.float64(0.5) * x, lambda x: np.array([1.0, 2.0]) + x,
])
def test_float32_tensor_with_python_or_numpy_numbers_stays_float32(op):
    # Numbers take the tensor's dtype (as in PyTorch): a float32 model must not drift to float64.
    x = Tensor(np.array([0.5, 2.0], np.float32), requires_grad=True)
    out = op(x)
    assert isinstance(out, Tensor) and out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32


# ---------------------------------------------------------------------------------------------- extreme logits
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_and_cross_entropy_are_finite_for_huge_logits(dtype):
    # exp(1e4) overflows in any float format: the max-shift must happen before exponentiating
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    logits = Tensor(z, requires_grad=True)
    ls = logits.log_softmax(-1)
    np.testing.assert_allclose(ls.data, [[0, -2e4, -1e4], [-np.log(3)] * 3], rtol=1e-6)
    ls.backward(np.ones_like(z))
    assert np.isfinite(logits.grad).all()

    logits = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(logits, np.array([1, 0]))
    np.testing.assert_allclose(loss.item(), (2e4 + np.log(3)) / 2, rtol=1e-6)
    loss.backward()
    # d loss / dz = (softmax(z) - onehot(y)) / batch
    expected = np.array([[1, -1, 0], [1 / 3 - 1, 1 / 3, 1 / 3]]) / 2
    np.testing.assert_allclose(logits.grad, expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------- errors
def test_matmul_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=re.escape("matmul: (3, 4) @ (5, 6)")):
        Tensor(np.ones((3, 4))) @ Tensor(np.ones((5, 6)))
    # 1-D operands: the message shows the caller's shapes, not internal reshapes
    with pytest.raises(ValueError, match=re.escape("matmul: (3,) @ (4, 2)")):
        Tensor(np.ones(3)) @ Tensor(np.ones((4, 2)))
    with pytest.raises(ValueError, match=re.escape("matmul (batch dimensions)")):
        Tensor(np.ones((2, 3, 4))) @ Tensor(np.ones((3, 4, 5)))


@pytest.mark.parametrize("name, op", [
    ("add", lambda a, b: a + b), ("mul", lambda a, b: a * b), ("pow", lambda a, b: a ** b),
    ("where", lambda a, b: where(np.ones((2, 3), bool), a, b)),
])
def test_broadcast_mismatch_names_the_op_and_shapes(name, op):
    # (where also lists the condition's shape first)
    with pytest.raises(ValueError, match=rf"^{name}: shapes .*{re.escape('(2, 3) and (4,)')} cannot be broadcast"):
        op(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))


def test_backward_errors():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element output"):
        (x * 2).backward()                              # non-scalar output: which G? must be given
    with pytest.raises(ValueError, match=re.escape("grad has shape (3,), output has shape (2, 2)")):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()
    with pytest.raises(TypeError, match="floating-point"):
        Tensor(np.arange(3), requires_grad=True)


def test_other_errors_are_clear():
    with pytest.raises(ValueError, match=re.escape("reshape: cannot reshape (2, 3) into (4,)")):
        Tensor(np.ones((2, 3))).reshape(4)
    with pytest.raises(IndexError, match=re.escape("tensor of shape (2, 3)")):
        Tensor(np.ones((2, 3)))[5]
    with pytest.raises(IndexError, match="outside"):
        F.cross_entropy(Tensor(np.ones((2, 3))), np.array([0, 3]))
    with pytest.raises(ValueError, match="targets of shape"):
        F.cross_entropy(Tensor(np.ones((2, 3))), np.array([0, 1, 2]))
    with pytest.raises(IndexError, match="out of range"):
        F.embedding(np.array([4]), Tensor(np.ones((4, 2))))


def test_engine_errors_name_op_and_shapes():
    a, b = Tensor(np.ones((3, 4))), Tensor(np.ones((5, 6)))
    with pytest.raises(ValueError, match=r"matmul: \(3, 4\) @ \(5, 6\)"):
        a @ b
    with pytest.raises(ValueError, match=r"add: shapes \(3, 4\) and \(5, 6\)"):
        a + b
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(3, 4\) into \(5,\)"):
        a.reshape(5)
    with pytest.raises(ValueError, match=r"layer_norm: weight of shape \(1, 4\) must be \(4,\)"):
        tl.functional.layer_norm(a, (4,), Tensor(np.ones((1, 4))))


# ------------------------------------------------------------------------------ gradchecks of the primitives
def np_axis(axis):
    return axis if axis is None or isinstance(axis, int) else tuple(axis)


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
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(data=st.data())
def test_softmax_log_softmax(name, data):
    x = data.draw(arrays(data.draw(NONSCALAR_SHAPES)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    expected = np_softmax(x, axis) if name == "softmax" else np.log(np_softmax(x, axis))
    op = lambda t: getattr(F, name)(t, axis)
    assert_forward(op(Tensor(x)), expected)
    gradcheck(op, [x])
