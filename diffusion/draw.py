"""Drawing tokens from a network's logits: temperature, top-k / top-p filtering, and the categorical draw.

Shared by the diffusion sampler and the autoregressive baseline, so both draw the same way. Shapes: logits
and probabilities (..., C) over C classes; one token is drawn for every leading index.
"""
import numpy as np


def tempered_softmax(logits, temperature):
    """softmax(logits / T) over the last axis (stable: the row max is subtracted); T = 0 keeps the logits
    as they are (draw then takes the argmax)."""
    z = logits / temperature if temperature > 0 else logits
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def top_k_top_p(probs, top_k=None, top_p=1.0):
    """Keep the top_k most likely tokens and the nucleus of mass top_p (Holtzman et al. 2020); renormalize."""
    if top_k is None and top_p >= 1.0:
        return probs
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, -1)
    keep = np.ones_like(sorted_p, dtype=bool)
    if top_k is not None:
        keep[..., top_k:] = False
    if top_p < 1.0:
        keep &= (np.cumsum(sorted_p, -1) - sorted_p) < top_p     # mass before the token below p: the first stays
    mask = np.zeros_like(keep)
    np.put_along_axis(mask, order, keep, -1)
    out = np.where(mask, probs, 0.0)
    return out / out.sum(-1, keepdims=True)


def draw(probs, temperature, rng):
    """One token per leading index from probs (..., C), already tempered: inverse-CDF sampling with one
    uniform per token; temperature 0 means argmax (greedy)."""
    if temperature == 0:
        return probs.argmax(-1)
    cdf = probs.cumsum(-1)
    u = rng.random(probs.shape[:-1] + (1,)) * cdf[..., -1:]
    return np.minimum((cdf < u).sum(-1), probs.shape[-1] - 1)
