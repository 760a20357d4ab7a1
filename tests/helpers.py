"""Helpers shared by several test files (the Hypothesis strategies are in tests/strategies.py): seeded
generators and NumPy references for the engine's tests, the tiny models and the names of the diffusion tests,
and a names-file writer."""
import numpy as np

import tinygrad_lite as tl
from diffusion.autoregressive import ARTransformer
from diffusion.models import TransformerDenoiser
from diffusion.schedule import CosineSchedule, LinearSchedule

NAMES = ["emma", "olivia", "ava", "mia", "noah", "liam", "lucas", "zoe", "eva", "max", "leo", "ida"]
SCHEDULES = [CosineSchedule(), LinearSchedule()]


# ---------------------------------------------------------------------------------------------- engine
def rng():
    """A fresh seeded generator per use: each test's data does not depend on which tests ran before."""
    return np.random.default_rng(0)


def assert_forward(out, expected):
    """The op's value (and shape, and float64 dtype) must equal NumPy's."""
    expected = np.asarray(expected)
    assert out.shape == expected.shape
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------- models
def tiny_transformer(L=6, seed=0):
    tl.manual_seed(seed)
    return TransformerDenoiser(L=L, dim=16, layers=1, heads=2)


def tiny_ar(L=6, seed=0, **kw):
    tl.manual_seed(seed)
    return ARTransformer(L=L, dim=16, layers=2, heads=2, **kw)


def log_probs(model, row):
    """log p(. | row) of a denoiser for one row (L,): (L, 27) float64."""
    with tl.no_grad():
        z = model(row[None]).data[0].astype(np.float64)
    return z - np.logaddexp.reduce(z, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- files
def write(tmp_path, content, name="names.txt"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


# ---------------------------------------------------------------------------------------------- faults
_loss_calls = [0]


def loss_that_fails_on_call_25(model, *rows, **shared):
    """diffusion.loss.masked_loss, except that its 25th call in a process raises: a worker that fails mid-run
    (tests/test_trainer.py patches it into diffusion.cli; a worker imports it from here by name)."""
    from diffusion.loss import masked_loss
    _loss_calls[0] += 1
    if _loss_calls[0] == 25:
        raise ValueError("injected failure in the loss")
    return masked_loss(model, *rows, **shared)
