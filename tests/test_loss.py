"""diffusion/loss.py: the diffusion loss weights only masked positions and equals the NELBO written out by hand;
the mask counts of 'exact_k' follow q(k) ∝ k^k_power, and any such q estimates the same NELBO."""
import numpy as np
from hypothesis import given, settings, strategies as st

import tinygrad_lite as tl
from tinygrad_lite import Tensor
from diffusion.data import MASK, PAD, NUM_CLASSES, encode
from diffusion.loss import diffusion_loss, mask_counts
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


@given(B=st.integers(1, 300), L=st.integers(1, 20), k_power=st.floats(-4, 4), seed=st.integers(0, 2**32 - 1))
def test_mask_counts_follow_q_stratified(B, L, k_power, seed):
    k, weight = mask_counts(B, L, np.random.default_rng(seed), k_power)
    q = np.arange(1, L + 1, dtype=float) ** k_power
    q /= q.sum()
    assert k.shape == (B,) and k.min() >= 1 and k.max() <= L
    counts = np.bincount(k, minlength=L + 1)[1:]
    assert np.all(np.abs(counts - B * q) < 1 + 1e-9)             # stratified: each k within one draw of B q(k)
    np.testing.assert_allclose(weight, 1 / (k * q[k - 1]), rtol=1e-12)


class CountingLogits(FixedLogits):
    """A 'denoiser' whose predictions change with how many positions are masked (the same for every row), so the
    terms of the NELBO for different k differ and a weight that does not match q(k) would bias the estimate."""

    def __init__(self, L, seed):
        super().__init__(1, L, seed)
        self.delta = np.random.default_rng(seed + 1).standard_normal((L, NUM_CLASSES))

    def forward(self, xt, t=None):
        masks = (np.asarray(xt) == MASK).sum(1)[:, None, None]
        return self.logits + Tensor(masks * self.delta)

    def exact_nelbo(self, x0):
        """sum_k (1/k) E_{|M|=k} sum_{i in M} nll_i(k) = (1/L) sum_k sum_i nll_i(k): given |M| = k, each position is
        masked with probability k/L, and here nll_i depends on M only through k. Per character, as the loss."""
        B, L = x0.shape
        total = 0.0
        for k in range(1, L + 1):
            logits = np.broadcast_to(self.logits.data + k * self.delta, (B, L, NUM_CLASSES))
            logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
            total += -np.take_along_axis(logp, x0[..., None], -1).sum() / L
        return total / ((x0 != PAD).sum() + B)


@settings(max_examples=5, deadline=None)
@given(k_power=st.sampled_from([-2.0, -0.5, 0.0, 1.0]), seed=st.integers(0, 2**16))
def test_exact_k_estimates_the_nelbo_for_any_q(k_power, seed):
    x0 = encode(NAMES, 8)
    model = CountingLogits(8, seed)
    rng = np.random.default_rng(seed)
    # rows in a random order, as training draws its batches: the stratified counts go to rows by position
    figures = [diffusion_loss(model, x0[rng.permutation(len(x0))], CosineSchedule(), rng, "exact_k", k_power)[1]
               for _ in range(400)]
    se = np.std(figures) / np.sqrt(len(figures))
    assert abs(np.mean(figures) - model.exact_nelbo(x0)) < 4 * se, (np.mean(figures), model.exact_nelbo(x0), se)
