"""diffusion/loss.py: the diffusion loss weights only masked positions and equals the NELBO written out by hand."""
import numpy as np
from hypothesis import given, strategies as st

import tinygrad_lite as tl
from tinygrad_lite import Tensor
from diffusion.data import MASK, PAD, NUM_CLASSES, encode
from diffusion.loss import diffusion_loss
from diffusion.process import q_sample, sample_times
from diffusion.schedule import CosineSchedule
from helpers import NAMES


class FixedLogits(tl.nn.Module):
    """A 'denoiser' whose logits are one leaf tensor, so the test can read dLoss/dlogits directly."""
    time_input = False

    def __init__(self, B, L, seed):
        self.logits = Tensor(np.random.default_rng(seed).standard_normal((B, L, NUM_CLASSES)), requires_grad=True)

    def forward(self, xt, t=None):
        self.seen = xt
        return self.logits


@given(seed=st.integers(0, 2**32 - 1), objective=st.sampled_from(["nelbo", "simple"]))
def test_loss_ignores_unmasked_positions(seed, objective):
    x0 = encode(NAMES[:8], 8)
    model = FixedLogits(8, 8, seed)
    loss, value = diffusion_loss(model, x0, CosineSchedule(), np.random.default_rng(seed), objective)
    loss.backward()
    masked = model.seen == MASK
    grad_norm = np.abs(model.logits.grad).sum(-1)
    assert np.all(grad_norm[~masked] == 0)                              # zero weight where unmasked
    assert np.all(grad_norm[masked] > 0)
    assert np.isfinite(value) and value >= 0


def test_nelbo_loss_matches_hand_formula():
    x0 = encode(NAMES[:8], 8)
    schedule = CosineSchedule()
    model = FixedLogits(8, 8, 1)
    loss, _ = diffusion_loss(model, x0, schedule, np.random.default_rng(5))
    rng = np.random.default_rng(5)                                     # replay the same draws
    t = sample_times(8, rng)
    _, masked = q_sample(x0, t, schedule, rng)
    logp = model.logits.data - np.log(np.exp(model.logits.data).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, x0[..., None], -1)[..., 0]
    expected = (schedule.weight(t)[:, None] * masked * nll).sum() / ((x0 != PAD).sum() + 8)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-9)
