"""Check an op's backward against central finite differences, in float64 (as torch.autograd.gradcheck).

Why float64: a central difference (f(x+e) - f(x-e)) / 2e has truncation error ~e^2 and rounding error
~u/e (u = unit roundoff). With u = 1e-16 and e = 1e-6 both are ~1e-10, far below the 1e-5 tolerance, so a
mismatch means a wrong backward. In float32 (u = 6e-8) the rounding error alone would be ~0.06.
Why a random upstream gradient G: with out.sum() (G = 1) a backward that swaps or mixes output positions
can still produce the right answer; with a random G it cannot.
"""
import numpy as np

from .tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """fn(*tensors) -> Tensor; inputs: float64 arrays. Raises AssertionError naming the worst mismatch.

    Compares d/dx sum(fn(x) * G) from backward() with central differences, for every element of every input.
    """
    inputs = [np.array(x, dtype=np.float64) for x in inputs]
    tensors = [Tensor(x.copy(), requires_grad=True) for x in inputs]
    out = fn(*tensors)
    G = np.random.default_rng(seed).standard_normal(out.shape)
    (out * Tensor(G)).sum().backward()

    def scalar(values):
        return float((fn(*[Tensor(v) for v in values]).data * G).sum())

    for k, (x, t) in enumerate(zip(inputs, tensors)):
        analytic = np.zeros_like(x) if t.grad is None else t.grad
        assert analytic.shape == x.shape and analytic.dtype == x.dtype, \
            f"input {k}: gradient {analytic.shape} {analytic.dtype} for input {x.shape} {x.dtype}"
        numeric = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            plus, minus = [v.copy() for v in inputs], [v.copy() for v in inputs]
            plus[k][i] += eps
            minus[k][i] -= eps
            numeric[i] = (scalar(plus) - scalar(minus)) / (2 * eps)
        bad = ~np.isclose(analytic, numeric, rtol=rtol, atol=atol)
        if bad.any():
            i = tuple(int(j) for j in np.argwhere(bad)[0])
            raise AssertionError(f"gradcheck: input {k} at {i}: backward gives {analytic[i]:.8g}, finite "
                                 f"differences {numeric[i]:.8g} ({int(bad.sum())} of {x.size} elements differ)")
    return True
