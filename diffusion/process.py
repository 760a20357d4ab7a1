"""The forward (noising) process: mask each token independently with probability mask_rate(t)."""
import numpy as np

from .data import MASK


def sample_times(batch_size, rng):
    """Per-example times t in [0, 1), stratified: t_i = (u + i) / B with one shared u ~ U[0, 1).

    t_i is uniform on its own stratum [i/B, (i+1)/B), not on [0, 1); but the batch mean of any f(t_i) has
    the expectation of f(t) for t ~ U[0, 1), so the batch loss stays unbiased, and the batch covers [0, 1)
    evenly instead of clumping, which lowers its variance (MDLM's low-discrepancy sampler; Kingma et al.
    2021, variational diffusion models)."""
    return (rng.random() + np.arange(batch_size)) / batch_size


def q_sample(x0, t, schedule, rng):
    """xt ~ q(xt | x0): every position (PAD included, so the model learns lengths) is replaced by MASK
    independently with probability mask_rate(t). x0 (B, L) ints, t (B,). Returns (xt, masked) where
    masked (B, L) bool marks the positions that became MASK; all other positions equal x0."""
    rate = schedule.mask_rate(np.asarray(t, dtype=np.float64))
    masked = rng.random(x0.shape) < np.reshape(rate, (-1,) + (1,) * (x0.ndim - 1))
    return np.where(masked, MASK, x0), masked


def mask_exactly(x0, k, rng):
    """Mask a uniformly random subset of exactly k[i] positions in row i (for the exact NELBO identity).
    Ranking i.i.d. uniform keys gives a uniform random permutation; its first k positions are a uniform k-subset."""
    ranks = rng.random(x0.shape).argsort(axis=1).argsort(axis=1)
    masked = ranks < np.reshape(k, (-1, 1))
    return np.where(masked, MASK, x0), masked
