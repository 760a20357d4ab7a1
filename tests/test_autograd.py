"""Invariants of the autograd engine itself (not of single ops): shapes and dtypes of gradients, no
mutation of caller arrays, accumulation, graph freeing, grad mode, dtype rules, numerically extreme
inputs, error messages — and negative controls proving that gradcheck can fail at all.
"""
import gc
import re
import weakref

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given

from tinygrad_lite import Tensor, concatenate, gradcheck, is_grad_enabled, no_grad, where
from tinygrad_lite import functional as F

def rng():
    """A fresh seeded generator per use: each test's data does not depend on which tests ran before."""
    return np.random.default_rng(0)


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


# ---------------------------------------------------------------------------------------------- negative controls
# A checker that never fails proves nothing: deliberately wrong backwards must make gradcheck raise.
def _wrong_scale_identity(x):
    return Tensor._make(x.data.copy(), (x,), "identity_2g", lambda g: (2 * g,))  # d(x)/dx is 1, not 2


def test_gradcheck_rejects_a_wrong_backward():
    x = rng().uniform(-1, 1, (3, 2))
    assert gradcheck(lambda t: t * 1.0, [x])                  # the correct op passes ...
    with pytest.raises(AssertionError, match="gradcheck: input 0"):
        gradcheck(_wrong_scale_identity, [x])                 # ... the wrong one does not


def test_gradcheck_rejects_tanh_with_the_wrong_sign(monkeypatch):
    def bad_tanh(self):
        out = np.tanh(self.data)
        return Tensor._make(out, (self,), "tanh", lambda g: (-g * (1 - out * out),))
    x = rng().uniform(-1, 1, 4)
    gradcheck(lambda t: t.tanh(), [x])
    monkeypatch.setattr(Tensor, "tanh", bad_tanh)
    with pytest.raises(AssertionError):
        gradcheck(lambda t: t.tanh(), [x])
    with pytest.raises(AssertionError):                        # sigmoid is built on tanh: caught there too
        gradcheck(lambda t: t.sigmoid(), [x])
    with pytest.raises(AssertionError):                        # and so is Tensor.gelu
        gradcheck(lambda t: t.gelu(), [x])


def _flipped_scale(x, c):
    """y = x * c, but the backward reverses g along axis 0 before scaling — a permutation bug."""
    return Tensor._make(x.data * c, (x,), "flipped", lambda g: (g[::-1] * c,))


def _sum_only_check(fn, x, eps=1e-6):
    """The weak check: backward of fn(x).sum(), i.e. upstream gradient G = 1 everywhere."""
    t = Tensor(x, requires_grad=True)
    fn(t).sum().backward()
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        numeric[i] = (fn(Tensor(plus)).data.sum() - fn(Tensor(minus)).data.sum()) / (2 * eps)
    np.testing.assert_allclose(t.grad, numeric, rtol=1e-5, atol=1e-7)


def test_random_upstream_gradient_catches_what_sum_misses():
    r = rng()
    x, c = r.uniform(-1, 1, (4, 3)), r.uniform(0.5, 2, (4, 3))
    fn = lambda t: _flipped_scale(t, c)
    _sum_only_check(fn, x)           # with G = 1, g[::-1] == g: the bug is invisible (this passes)
    with pytest.raises(AssertionError):
        gradcheck(fn, [x])           # with a random G, the reversed rows are caught
