"""Which masked positions a reverse step reveals: the order rules, MaskGIT's choice temperature, a threshold.

A step reveals `count[i]` of row i's masked positions (the schedule's count, sampler.still_masked_schedule):
the ones with the highest keys (`reveal_best`). The keys come from the order rule (`order_keys`):

  * "random": i.i.d. uniform keys, so the revealed positions are a uniformly random subset: MDLM's ancestral
    sampler (Sahoo et al. 2024), with the schedule's exact count per step instead of an independent coin
    per position. This is the step the NELBO describes.
  * "max_prob" (the sampler's default): the top probability p1 of the position's token distribution
    softmax(logits / temperature) (MaskGIT, Chang et al. 2022).
  * "margin": p1 - p2, the gap between the two most likely tokens (Kim et al. 2025, "Train for the worst, plan
    for the best": top-probability margin).
  * "entropy": -H(p), low-entropy positions first (as in Dream, Ye et al. 2025; Ben-Hamu et al. 2025).

`choice_temperature` and `threshold` change the choice (`gumbel_noise`, `above_threshold`).
"""
import numpy as np

ORDERS = ("max_prob", "margin", "entropy", "random")


def max_prob(probs):
    """log p1, the top probability (MaskGIT). Keys are in log space for the Gumbel perturbation."""
    return np.log(np.maximum(probs.max(-1), 1e-30))


def margin(probs):
    """log(p1 - p2), the margin between the two most likely tokens."""
    top2 = -np.partition(-probs, 1, axis=-1)[..., :2]
    return np.log(np.maximum(top2[..., 0] - top2[..., 1], 1e-30))


def neg_entropy(probs):
    """-H(p) = sum_c p_c log p_c: the most certain positions first."""
    return (probs * np.log(np.maximum(probs, 1e-30))).sum(-1)


CONFIDENCE = {"max_prob": max_prob, "margin": margin, "entropy": neg_entropy}


def order_keys(probs, order, tau, rng):
    """(n, L) keys for the positions of rows with token probabilities probs (n, L, C): higher = revealed sooner."""
    if order == "random":
        return rng.random(probs.shape[:-1])           # a uniformly random order
    return gumbel_noise(CONFIDENCE[order](probs), tau, rng)


def gumbel_noise(key, tau, rng):
    """MaskGIT's choice temperature (Chang et al. 2022): rank by log(score) + tau * Gumbel noise, so the choice
    is random early and greedy at the end; the sampler anneals tau = choice_temperature * (1 - (s + 1)/S)
    linearly to 0 over the steps s = 0..S-1. tau = 0: the keys as they are."""
    return key + tau * rng.gumbel(size=key.shape) if tau > 0 else key


def ranks(key):
    """Each entry's rank within its row, 0 for the smallest key (ties keep the position order)."""
    return key.argsort(axis=1, kind="stable").argsort(axis=1, kind="stable")


def reveal_best(key, masked, count, first):
    """(n, L) bool: the count[i] masked positions of row i with the highest keys, those in `first` (the last
    letter, see length_first.py) before all others."""
    key = np.where(masked, np.where(first, np.inf, key), -np.inf)
    return masked & (ranks(-key) < count[:, None])


def above_threshold(probs, masked, threshold):
    """Parallel decoding (Fast-dLLM, Wu et al. 2025): every masked position whose top probability
    p1 >= threshold, revealed in addition to the schedule's count (and at least one position per step). Easy
    rows finish in a few steps; a row is no longer sent to the network once it has no MASK, and the loop stops
    when no row has one, so the number of network calls adapts to the names (`Samples.row_calls`).
    Terminates in at most S <= L steps."""
    return masked & (probs.max(-1) >= threshold)


def choose(probs, masked, count, order, tau, threshold, rng, first):
    """(n, L) bool: the positions to reveal this step, of rows with token probabilities probs (n, L, C) and
    MASK at `masked`: the count[i] best of row i by the order's keys (`first` before all others); with a
    threshold, at least one, and also every masked position whose top probability reaches it."""
    key = order_keys(probs, order, tau, rng)
    if threshold is None:
        return reveal_best(key, masked, count, first)
    return reveal_best(key, masked, np.maximum(count, 1), first) | above_threshold(probs, masked, threshold)
