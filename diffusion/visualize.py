"""Text pictures of the two processes on names: forward (noising) and reverse (unmasking)."""
import numpy as np

from .data import encode, show


def forward_view(name, schedule, L, times=(0.0, 0.25, 0.5, 0.75, 1.0), seed=0):
    """Lines 't=0.50  mask rate 0.50  ma_y_..._' : one name noised at a few times (one draw each).
    Uses the same coupling as q_sample: position i is masked at t when u_i < mask_rate(t), so the picture
    only ever gains MASKs as t grows."""
    x0 = encode([name], L)[0]
    u = np.random.default_rng(seed).random(L)
    lines = []
    for t in times:
        rate = float(schedule.mask_rate(t))
        xt = np.where(u < rate, 27, x0)
        lines.append(f"t={t:.2f}  mask rate {rate:.2f}  {show(xt)}")
    return lines


def reverse_view(samples, rows=3):
    """For the first `rows` samples (drawn with keep_trajectory=True): the row after each sampler step
    ('_' MASK, '.' PAD; step 0 writes the PADs when the length is drawn first), then the step at which each
    position was revealed."""
    lines = []
    for r in range(min(rows, len(samples.tokens))):
        lines += [f"  step {step:2d}: {show(x[r])}" for step, x in samples.trajectory]
        order = "".join(str(s) if s < 10 else chr(ord("A") + s - 10) for s in samples.reveal_step[r])
        lines += [f"  revealed at: {order}   (step of each position; A = 10, B = 11, ...)", ""]
    return lines
