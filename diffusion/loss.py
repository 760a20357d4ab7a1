"""Training objectives for a masked-diffusion denoiser, in nats per character (letters + 1 end token).

'nelbo' (default): the continuous-time negative ELBO of MDLM (Sahoo et al. 2024) / MD4 (Shi et al. 2024),
    NELBO(x0) = E_{t ~ U[0,1]} E_{xt ~ q(.|x0)} [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t) = -alpha'(t) / (1 - alpha(t)).
  Only masked positions count: under SUBS an unmasked position is copied, so it costs nothing.
'exact_k': the same NELBO through the exact identity for denoisers without time input (Ou et al. 2024):
    NELBO(x0) = L * E_{k ~ U{1..L}} E_{|M| = k} [ (1/k) sum_{i in M} -log p(x0_i | x0 with M masked) ],
  with k stratified across the batch: exactly k masks instead of a random count, so less noise per step.
'simple': the classic script's objective, the mean cross-entropy over masked positions with no weight.
  Not a likelihood bound; offered so the two can be compared.
"""
import numpy as np

from tinygrad_lite import Tensor
from tinygrad_lite import functional as F

from .data import chars_per_name
from .process import mask_exactly, q_sample, sample_times

OBJECTIVES = ("nelbo", "exact_k", "simple")


def corrupt(model, x0, schedule, rng, objective="nelbo"):
    """The noising half of diffusion_loss: (xt, t, masked, row_weight) for a batch x0 (B, L).

    xt (B, L) the corrupted rows, t (B,) their times (None for 'exact_k'), masked (B, L) bool the positions
    that became MASK, row_weight (B,) each row's weight on its masked positions: w(t), or L / k for 'exact_k'."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
    B, L = x0.shape
    if objective == "exact_k":
        if model.time_input:
            raise ValueError("objective 'exact_k' needs a denoiser without time input")
        k = 1 + np.floor(sample_times(B, rng) * L).astype(np.int64)          # stratified over 1..L
        xt, masked = mask_exactly(x0, k, rng)
        return xt, None, masked, L / k
    t = sample_times(B, rng)
    xt, masked = q_sample(x0, t, schedule, rng)
    return xt, t, masked, schedule.weight(t)


def diffusion_loss(model, x0, schedule, rng, objective="nelbo"):
    """One Monte-Carlo estimate on a batch x0 (B, L). Returns (loss Tensor to minimize, nelbo nats/char float).

    The second value is the batch's NELBO estimate whatever the objective, so runs can be compared."""
    xt, t, masked, row_weight = corrupt(model, x0, schedule, rng, objective)
    logits = model(xt, t if model.time_input else None)                       # (B, L, 27)
    ce = F.cross_entropy(logits, np.where(masked, x0, -100), reduction="none")  # (B, L), 0 where unmasked
    weight = (row_weight[:, None] * masked).astype(ce.dtype)                   # the weight on masked positions
    nelbo = (ce * Tensor(weight)).sum() * (1.0 / chars_per_name(x0).sum())
    if objective in ("nelbo", "exact_k"):
        return nelbo, nelbo.item()
    simple = ce.sum() * (1.0 / max(int(masked.sum()), 1))
    return simple, nelbo.item()
