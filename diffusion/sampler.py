"""Generation by iterative unmasking: start from all MASK, reveal a few positions per step until none is left.

Each step runs the denoiser once on the whole batch, draws a token for every masked position from
softmax(logits / temperature), and keeps only the draws at the most confident masked positions (MaskGIT,
Chang et al. 2022; the confidence is the position's top probability). Revealed tokens never change, so the
output never contains MASK. How many positions a step reveals follows the schedule: after step s of S,
round(n * mask_rate(1 - s/S)) of a row's n positions are still masked.

The PAD-first bias. Trailing PADs are the most predictable tokens, so plain most-confident-first decoding
commits PADs early and names come out too short (and repeat). The default `length="model"` decides the
length first, from the model itself: on an all-MASK row, the denoiser's probability of PAD at position i is
its estimate of P(length <= i), so P(length = n) = P(PAD at n) - P(PAD at n - 1) (made monotone). We draw the
length from that, write the PADs, and then unmask letters by confidence among the remaining positions; a
letter can never follow a PAD. `length="joint"` is the plain sampler, kept to measure the bias.
"""
from dataclasses import dataclass

import numpy as np

from tinygrad_lite import no_grad

from .data import MASK, NUM_CLASSES, PAD
from .schedule import CosineSchedule


@dataclass
class Samples:
    tokens: np.ndarray        # (N, L) final rows, no MASK
    reveal_step: np.ndarray   # (N, L) step at which each position was revealed (0 = the length step)
    trajectory: list          # (step, (N, L) rows after that step) pairs, if asked for; step 0 = length
    network_calls: int
    letter_after_pad: int     # rows whose letters continue after a PAD (impossible with length="model")


def reveal_schedule(n, steps, schedule):
    """(rows, steps) how many of each row's n[i] masked positions to reveal at each step; sums to n[i].

    After step s, round(n * mask_rate(1 - s/S)) stay masked, so the counts follow the noise schedule."""
    s = np.arange(steps + 1)
    still_masked = np.rint(np.outer(n, schedule.mask_rate(1.0 - s / steps))).astype(np.int64)
    still_masked[:, 0], still_masked[:, -1] = n, 0
    still_masked = np.minimum.accumulate(still_masked, axis=1)   # never re-mask
    return still_masked[:, :-1] - still_masked[:, 1:]


def _draw(probs, temperature, rng):
    """Tokens from probs (N, L, C) already tempered; temperature 0 means argmax (greedy)."""
    if temperature == 0:
        return probs.argmax(-1)
    cdf = probs.cumsum(-1)
    u = rng.random(probs.shape[:-1] + (1,)) * cdf[..., -1:]
    return np.minimum((cdf < u).sum(-1), probs.shape[-1] - 1)


def _tempered_softmax(logits, temperature):
    z = logits / temperature if temperature > 0 else logits
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _time_input(model, x, schedule):
    """For time-conditioned denoisers: the t whose mask rate matches the rows' current fraction of MASK."""
    return schedule.time_at((x == MASK).mean(axis=1)) if model.time_input else None


def _draw_lengths(model, x, temperature, rng, schedule):
    """Length of each row from the model's all-MASK predictions: P(len = n) from P(PAD at position i)."""
    N, L = x.shape
    logits = model(x, _time_input(model, x, schedule)).data.astype(np.float64)
    p_pad = np.maximum.accumulate(_tempered_softmax(logits, 1.0)[..., PAD], axis=1)  # P(len <= i), monotone
    cdf = np.concatenate([p_pad, np.ones((N, 1))], axis=1)                         # P(len <= L) = 1
    p_len = np.clip(np.diff(cdf, axis=1), 0, None)                                 # P(len = n), n = 1..L
    p_len = p_len ** (1.0 / temperature) if temperature > 0 else (p_len == p_len.max(1, keepdims=True)) * 1.0
    p_len = p_len / p_len.sum(axis=1, keepdims=True)
    return 1 + _draw(p_len[:, None, :], 1.0, rng)[:, 0]


@no_grad()
def sample(model, num=1000, steps=None, temperature=1.0, seed=0, schedule=None, length="model",
           keep_trajectory=False):
    """Generate `num` rows. steps S in [1, L] (default L); several positions are revealed per step when S < L.

    length: "model" (default: draw the length first, see above) or "joint" (plain confidence order).
    Returns Samples; decode rows with data.decode. Same seed -> same output."""
    L = model.L
    steps = L if steps is None else steps
    if not 1 <= steps <= L:
        raise ValueError(f"sample: steps must be between 1 and L={L}, got {steps}")
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
    if length not in ("model", "joint"):
        raise ValueError(f"sample: length must be 'model' or 'joint', got {length!r}")
    schedule = schedule or CosineSchedule()
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    x = np.full((num, L), MASK, dtype=np.int64)
    reveal_step = np.zeros((num, L), dtype=np.int64)
    trajectory, calls = [], 0
    letters_only = np.zeros((num, L), dtype=bool)   # positions where PAD is no longer allowed
    if length == "model":
        n = _draw_lengths(model, x, temperature, rng, schedule)
        calls += 1
        positions = np.arange(L)
        x[positions >= n[:, None]] = PAD
        letters_only = positions < n[:, None]
        if keep_trajectory:
            trajectory.append((0, x.copy()))
    counts = reveal_schedule((x == MASK).sum(axis=1), steps, schedule)
    for step in range(steps):
        masked = x == MASK
        if not masked.any():
            break
        logits = model(x, _time_input(model, x, schedule)).data.astype(np.float64)   # (N, L, 27)
        calls += 1
        logits[..., PAD] = np.where(letters_only, -np.inf, logits[..., PAD])
        probs = _tempered_softmax(logits, temperature)
        tokens = _draw(probs, temperature, rng)
        confidence = np.where(masked, probs.max(-1), -np.inf)
        rank = (-confidence).argsort(axis=1, kind="stable").argsort(axis=1, kind="stable")
        reveal = masked & (rank < counts[:, step:step + 1])
        x[reveal] = tokens[reveal]
        reveal_step[reveal] = step + 1
        if keep_trajectory:
            trajectory.append((step + 1, x.copy()))
    model.train(was_training)
    assert not (x == MASK).any(), "sampler left a MASK"
    after_pad = ((x != PAD) & (np.cumsum(x == PAD, axis=1) > 0)).any(axis=1)
    return Samples(x, reveal_step, trajectory, calls, int(after_pad.sum()))


assert NUM_CLASSES == PAD + 1  # the denoiser's classes are letters then PAD: PAD is the last logit
