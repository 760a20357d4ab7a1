"""tinygrad_lite/gradcheck.py: negative controls. A checker that never fails proves nothing: deliberately
wrong backwards must make gradcheck raise, including a bug that a check through out.sum() (G = 1) cannot see."""
import numpy as np
import pytest

from tinygrad_lite import Tensor, gradcheck
from helpers import rng


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
