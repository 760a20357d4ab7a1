"""The length step: draw each name's length from the model before any letter, then reveal its last letter first.

The PAD-first bias. Trailing PADs are the most predictable tokens, so plain most-confident-first decoding
commits PADs early and names come out too short (and repeat). The default `length="model"` decides the length
first, from the model itself: on an all-MASK row, the denoiser's probability of PAD at position i is its
estimate of P(length <= i), so P(length = n) = P(PAD at n) - P(PAD at n - 1) (made monotone, `length_probs`).
We draw the length from that (restricted to a range if one is given, `draw_lengths`), write the PADs, and then
unmask letters among the remaining positions; a letter can never follow a PAD. `length="joint"` is the plain
sampler, kept to measure the bias. `length=6` or `length=(5, 7)` fixes the length or restricts the draw to a
range (`length_range`).

The last letter first (`last_letter`). MASK tells the denoiser "unknown", and in training a masked position
could as well be a PAD, so a row laid out for length n (letters masked, PADs from n on) still looks to the
model like "any length <= n": its predictions mix in shorter names. So a row's first reveal, whatever the
order, is its last letter (position n - 1, PAD excluded): that draw is exactly P(letter | length n), and once
it is written the input itself says the length is n (a letter never follows a PAD), so every later prediction
is conditioned on the drawn length. Revealing one token a step in random order is then exact ancestral
sampling of the model's distribution (tests/test_sampler.py checks it with an exact denoiser of a known
distribution). A step that reveals several positions at once (few steps, or a threshold) draws the others
beside the last letter from predictions that do not know the length yet: one more error of parallel decoding.

Every function that runs the network takes `predict`: rows (n, L) -> (logits (n, L, 27), rows it ran on).
"""
import numpy as np

from .data import MASK, PAD
from .draw import draw, tempered_softmax
from .templates import Template, lay_out


def length_range(length, template, L):
    """(lo, hi) allowed name lengths, from `length` ("model"/"joint"/int/(lo, hi)) and the template."""
    lo, hi = max(1, template.min_length), (L if template.star else template.min_length)
    if length in ("model", "joint"):
        if length == "joint" and lo != hi and template.text != "*":
            raise ValueError(f"template {template.text!r} has '*', so its length must be drawn first; "
                             f"use length='model', a number or a range, not 'joint'")
        return lo, hi
    if isinstance(length, (int, np.integer)) and not isinstance(length, bool):
        want = (int(length), int(length))
    elif isinstance(length, (tuple, list)) and len(length) == 2 and all(isinstance(v, (int, np.integer))
                                                                        for v in length):
        want = (int(length[0]), int(length[1]))
    else:
        raise ValueError(f"sample: length must be 'model', 'joint', a number or a (min, max) pair, got {length!r}")
    if not 1 <= want[0] <= want[1] <= L:
        raise ValueError(f"sample: length {want[0]}..{want[1]} must be within 1..L={L} (min <= max)")
    if want[1] < lo or want[0] > hi:
        fits = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise ValueError(f"template {template.text!r} makes names of {fits} letters; length "
                         f"{want[0]}..{want[1]} does not fit it")
    return max(lo, want[0]), min(hi, want[1])


def length_probs(p_pad, floor=1e-12):
    """P(length = n) for n = 1..L (..., L), not renormalized, from an all-MASK row's P(PAD at position i)
    (..., L): P(length <= i) is their running max (made monotone), with P(length <= L) = 1, and P(length = n)
    its differences, plus `floor`: where the model's PAD probabilities dip, the running max would give a
    length probability 0, and a real name of that length an infinite NLL. Shared by the sampler's length
    draw and evaluation's length-first likelihood, so the likelihood is exactly that of the sampler's draw."""
    cdf = np.maximum.accumulate(p_pad, axis=-1)
    return np.clip(np.diff(cdf, axis=-1, append=np.ones(cdf.shape[:-1] + (1,))), 0, None) + floor


def draw_lengths(predict, template, num, temperature, rng, lo, hi, L):
    """Lengths n in lo..hi for `num` rows, the network calls it took and the rows they ran on. Every row starts
    alike, so the model runs on one row: MASK but for the template's leading letters. Its P(PAD at position i)
    is P(len <= i), so P(len = n | head) = P(PAD at n) - P(PAD at n - 1). A template with fixed trailing letters
    also weighs each n by their probability where length n puts them (`tail_probability`); without it "*ette"
    names come out too short. The temperature applies to the length too (0: the most likely length)."""
    head_only = lay_out(Template(template.text, template.head, (), True), np.array([L]), L)
    logits, ran = predict(head_only)
    p_pad = tempered_softmax(logits, 1.0)[0, :, PAD]
    p_pad[:len(template.head)] = 0.0                                       # a fixed letter is not a PAD
    allowed = (np.arange(1, L + 1) >= lo) & (np.arange(1, L + 1) <= hi)
    p_len, calls = np.where(allowed, length_probs(p_pad), 0.0), 1          # P(len = n | head), n = 1..L
    if any(tok is not None for tok in template.tail):
        candidates = np.arange(lo, hi + 1)
        p_tail, tail_ran = tail_probability(predict, template, candidates, L)
        p_len[candidates - 1] *= p_tail
        p_len, calls, ran = np.where(allowed, p_len + 1e-300, 0.0), calls + 1, ran + tail_ran
    p_len = p_len ** (1.0 / temperature) if temperature > 0 else (p_len == p_len.max()) * 1.0
    p_len = np.broadcast_to(p_len / p_len.sum(), (num, 1, L))
    return 1 + draw(p_len, 1.0, rng)[:, 0], calls, ran


def tail_probability(predict, template, candidates, L):
    """P(tail | head, n) for each candidate length n, and the rows the network ran on: the template's fixed
    trailing letters where length n puts them, by the chain rule P(tail | head, n) = prod_k p(tail_k | head, n,
    tail_<k) (PAD excluded before n). One call, on one row per candidate length and fixed tail letter."""
    fixed_tail = [(j, tok) for j, tok in enumerate(template.tail) if tok is not None]
    k, c = len(fixed_tail), len(candidates)
    rows = lay_out(Template(template.text, template.head, (None,) * len(template.tail), True),
                   np.repeat(candidates, k), L)
    cols = np.repeat(candidates, k) - len(template.tail) + np.tile([j for j, _ in fixed_tail], c)
    toks = np.tile([tok for _, tok in fixed_tail], c)
    for i in range(k):                                  # row (n, i) shows the first i fixed tail letters
        for prev in range(i):
            rows[i::k][np.arange(c), cols[prev::k]] = toks[prev::k]
    logits, ran = predict(rows)
    logits[..., PAD] = np.where(rows == PAD, logits[..., PAD], -np.inf)    # length n: letters before n
    logp = np.log(tempered_softmax(logits, 1.0)[np.arange(len(rows)), cols, toks])
    return np.exp(logp.reshape(c, k).sum(1)), ran


def last_letter(x, n):
    """(N, L) bool: each row's last letter, position n - 1, if it is still masked: the sampler reveals it
    first (see the module docstring), so that every later prediction knows the length."""
    return (x == MASK) & (np.arange(x.shape[1]) == n[:, None] - 1)
