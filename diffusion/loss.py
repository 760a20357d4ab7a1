"""Training objectives for a masked-diffusion denoiser, in nats per character (letters + 1 end token).

'nelbo' (default): the continuous-time negative ELBO of MDLM (Sahoo et al. 2024) / MD4 (Shi et al. 2024),
    NELBO(x0) = E_{t ~ U[0,1]} E_{xt ~ q(.|x0)} [ w(t) * sum_{i masked in xt} -log p(x0_i | xt) ],
    w(t) = -alpha'(t) / (1 - alpha(t)).
  Only masked positions count: under SUBS an unmasked position is copied, so it costs nothing.
'exact_k': the same NELBO through the exact identity for denoisers without time input (Ou et al. 2024):
    NELBO(x0) = L * E_{k ~ U{1..L}} E_{|M| = k} [ (1/k) sum_{i in M} -log p(x0_i | x0 with M masked) ],
  with k stratified across the batch: exactly k masks instead of a random count, so less noise per step.
'exact_k_length' (default of scripts/train.py): exact_k, but a share (length_share) of each batch's rows is
  given its length: the PADs stay visible and exactly k of the row's n letters are masked (k ~ U{1..n}),
  weight n/k, PAD ruled out at letter positions. Those rows are the same identity for the letters given the
  length, the conditionals the sampler and the length-first likelihood use once the length is drawn; plain
  exact_k rows rarely show them (all PADs visible while letters are masked). The figure logged is the
  NELBO of the plain rows, so it stays comparable with the other objectives. A share of 1/8 trained best
  on validation (two seeds; 1/16, 1/4, 3/8 and 1/2 tried); both the NELBO and the length-first bound
  improve, see the README's objectives table.
'simple': the classic script's objective, the mean cross-entropy over masked positions with no weight.
  Not a likelihood bound; offered so the two can be compared.
"""
import numpy as np

from tinygrad_lite import Tensor
from tinygrad_lite import functional as F

from .data import NUM_CLASSES, PAD, chars_per_name
from .process import mask_exactly, q_sample, sample_times

OBJECTIVES = ("nelbo", "exact_k", "exact_k_length", "simple")


def diffusion_loss(model, x0, schedule, rng, objective="nelbo", length_share=0.125):
    """One Monte-Carlo estimate on a batch x0 (B, L). Returns (loss Tensor to minimize, nelbo nats/char float).

    The second value is the batch's NELBO estimate whatever the objective, so runs can be compared."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
    B, L = x0.shape
    given = 0                                                                  # rows given their length
    if objective in ("exact_k", "exact_k_length"):
        if model.time_input:
            raise ValueError(f"objective {objective!r} needs a denoiser without time input")
        k = 1 + np.floor(sample_times(B, rng) * L).astype(np.int64)          # stratified over 1..L
        t, (xt, masked) = None, mask_exactly(x0, k, rng)
        row_weight = L / k
        if objective == "exact_k_length":
            given = min(int(round(length_share * B)), B - 1)                # keep a plain row for the figure
            letters = x0[:given] != PAD
            n = letters.sum(axis=1)
            k = 1 + np.floor(sample_times(given, rng) * n).astype(np.int64)  # stratified over 1..n
            xt[:given], masked[:given] = mask_exactly(x0[:given], k, rng, among=letters)
            row_weight[:given] = n / k
    else:
        t = sample_times(B, rng)
        xt, masked = q_sample(x0, t, schedule, rng)
        row_weight = schedule.weight(t)
    logits = model(xt, t if model.time_input else None)                       # (B, L, 27)
    if given:                                        # no PAD before the end of a row whose length is given
        rule_out = np.zeros((B, L, NUM_CLASSES), dtype=logits.dtype)
        rule_out[:given, :, PAD] = np.where(letters, -1e9, 0.0)               # finite: 0 * loss stays 0
        logits = logits + Tensor(rule_out)
    ce = F.cross_entropy(logits, np.where(masked, x0, -100), reduction="none")  # (B, L), 0 where unmasked
    weight = (row_weight[:, None] * masked).astype(ce.dtype)                   # the weight on masked positions
    chars = chars_per_name(x0)
    weighted = ce * Tensor(weight)
    nelbo = weighted.sum() * (1.0 / chars.sum())
    if objective in ("nelbo", "exact_k", "exact_k_length"):
        figure = nelbo.item() if not given else float((weighted.data[given:]).sum() / chars[given:].sum())
        return nelbo, figure
    simple = ce.sum() * (1.0 / max(int(masked.sum()), 1))
    return simple, nelbo.item()
