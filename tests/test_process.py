"""diffusion/process.py: the forward (masking) process, the stratified times and the exact-k masking."""
import numpy as np
from hypothesis import given, strategies as st

from diffusion.data import MASK, NUM_CLASSES
from diffusion.process import mask_exactly, q_sample, sample_times
from helpers import SCHEDULES


@given(t=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1), which=st.sampled_from([0, 1]))
def test_q_sample_mask_rate_matches_schedule(t, seed, which):
    schedule = SCHEDULES[which]
    x0 = np.random.default_rng(seed).integers(0, NUM_CLASSES, size=(400, 50))
    xt, masked = q_sample(x0, np.full(400, t), schedule, np.random.default_rng(seed))
    p, n = float(schedule.mask_rate(t)), x0.size
    # 20,000 independent Bernoulli(p) draws: the observed rate is within 5 standard deviations
    assert abs(masked.mean() - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12
    assert np.array_equal(xt == MASK, masked)
    assert np.array_equal(xt[~masked], x0[~masked])                    # unmasked tokens never change


@given(seed=st.integers(0, 2**32 - 1), B=st.integers(1, 64))
def test_sample_times_stratified(seed, B):
    t = sample_times(B, np.random.default_rng(seed))
    assert t.shape == (B,) and np.all((0 <= t) & (t < 1))
    assert np.array_equal(np.floor(np.sort(t) * B), np.arange(B))       # exactly one t in each [i/B, (i+1)/B)


@given(seed=st.integers(0, 2**32 - 1), L=st.integers(1, 16))
def test_mask_exactly_masks_k_positions(seed, L):
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, NUM_CLASSES, size=(30, L))
    k = rng.integers(0, L + 1, size=30)
    xt, masked = mask_exactly(x0, k, rng)
    assert np.array_equal(masked.sum(1), k) and np.array_equal(xt[~masked], x0[~masked])
