"""Training objectives for a masked-diffusion denoiser, in nats per character (letters + 1 end token).

'nelbo' (default): the continuous-time negative ELBO of MDLM (Sahoo et al. 2024) / MD4 (Shi et al. 2024),
    NELBO(x0) = E_{t ~ U[0,1]} E_{xt ~ q(.|x0)} [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t) = -alpha'(t) / (1 - alpha(t)).
  Only masked positions count: under SUBS an unmasked position is copied, so it costs nothing.
'exact_k': the same NELBO through the exact identity for denoisers without time input (Ou et al. 2024):
    NELBO(x0) = sum_{k=1..L} (1/k) E_{|M| = k} [ sum_{i in M} -log p(x0_i | x0 with M masked) ]
              = E_{k ~ q} [ 1 / (k q(k)) * E_{|M| = k} [ sum_{i in M} -log p(x0_i | x0 with M masked) ] ]
  for any distribution q(k) on 1..L: exactly k masks instead of a random count, k stratified across the batch.
  q only changes the variance of the estimate and its gradient (importance sampling), as the noise schedule does
  for 'nelbo'. Uniform q gives the weight L / k; the trainers draw q(k) ∝ k^k_power, and a negative power (more
  rows with few masks, each weighted less) measured to train faster (docs/results.md, "Tuning the default run").
'simple': the classic script's objective, the mean cross-entropy over masked positions with no weight.
  Not a likelihood bound; offered so the two can be compared.
"""
import numpy as np

from tinygrad_lite import Tensor
from tinygrad_lite import functional as F

from .data import chars_per_name
from .process import mask_exactly, q_sample, sample_times

OBJECTIVES = ("nelbo", "exact_k", "simple")


def mask_counts(B, L, rng, k_power=0.0):
    """k (B,) masks per row for 'exact_k', drawn from q(k) ∝ k^k_power on 1..L, and each row's weight 1 / (k q(k))
    (L / k for uniform q, k_power = 0). Stratified: the B rows take the quantiles of B evenly spaced points
    (process.sample_times), so each k is drawn B q(k) times give or take one; the first rows get the small k, so
    the rows must come in random order (trainer.batch_indices shuffles them) for each to see k ~ q."""
    ks = np.arange(1, L + 1)
    q = ks ** float(k_power)
    q /= q.sum()
    k = ks[np.minimum(np.searchsorted(np.cumsum(q), sample_times(B, rng), side="right"), L - 1)]
    return k, 1.0 / (k * q[k - 1])


def corrupt(model, x0, schedule, rng, objective="nelbo", k_power=0.0):
    """The noising half of diffusion_loss: (xt, t, masked, row_weight) for a batch x0 (B, L).

    xt (B, L) the corrupted rows, t (B,) their times (None for 'exact_k'), masked (B, L) bool the positions
    that became MASK, row_weight (B,) each row's weight on its masked positions: w(t), or 1 / (k q(k)) for
    'exact_k' (mask_counts, with k_power)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
    B, L = x0.shape
    if objective == "exact_k":
        if model.time_input:
            raise ValueError("objective 'exact_k' needs a denoiser without time input")
        k, row_weight = mask_counts(B, L, rng, k_power)
        xt, masked = mask_exactly(x0, k, rng)
        return xt, None, masked, row_weight
    t = sample_times(B, rng)
    xt, masked = q_sample(x0, t, schedule, rng)
    return xt, t, masked, schedule.weight(t)


def prepare(model, x0, schedule, rng, objective="nelbo", k_power=0.0):
    """The parent's half of a step: the noise, then what the loss needs, as (rows, shared).

    rows = (xt (B, L), t (B,) or None, targets (B, L): x0 where masked and -100 elsewhere, weight (B, L): the
    row's weight on its masked positions and 0 elsewhere), each with the batch on axis 0, so a shard of the
    batch is a slice of each. shared = the batch's denominators: `chars` (letters + end tokens in x0) and, for
    'simple', `masked` (masked positions in x0). A shard's loss divides by these, the whole batch's, so the
    shards' losses add up to the batch's (tinygrad_lite.parallel explains why)."""
    xt, t, masked, row_weight = corrupt(model, x0, schedule, rng, objective, k_power)
    rows = (xt, t if model.time_input else None, np.where(masked, x0, -100), row_weight[:, None] * masked)
    shared = dict(chars=int(chars_per_name(x0).sum()))
    if objective == "simple":
        shared["masked"] = max(int(masked.sum()), 1)
    return rows, shared


def masked_loss(model, xt, t, targets, weight, chars, masked=None):
    """The loss half: the weighted cross-entropy at the masked positions of rows xt (B, L), divided by the
    batch's `chars`. Returns (loss Tensor to minimize, the rows' share of the batch's NELBO, a float).

    The loss is that NELBO share, or, when `masked` (the batch's masked count) is given, objective 'simple':
    the unweighted cross-entropy divided by it. Module-level, so a worker process can run it on a shard."""
    logits = model(xt, t)                                                     # (B, L, 27)
    ce = F.cross_entropy(logits, targets, reduction="none")                   # (B, L), 0 where unmasked
    nelbo = (ce * Tensor(weight.astype(ce.dtype))).sum() * (1.0 / chars)
    if masked is None:
        return nelbo, nelbo.item()
    return ce.sum() * (1.0 / masked), nelbo.item()


def diffusion_loss(model, x0, schedule, rng, objective="nelbo", k_power=0.0):
    """One Monte-Carlo estimate on a batch x0 (B, L): prepare, then masked_loss on the whole batch. Returns
    (loss Tensor to minimize, nelbo nats/char float): the second value is the batch's NELBO estimate whatever
    the objective, so runs can be compared."""
    rows, shared = prepare(model, x0, schedule, rng, objective, k_power)
    return masked_loss(model, *rows, **shared)
