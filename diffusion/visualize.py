"""Text pictures of the two processes on names: forward (noising) and reverse (unmasking)."""
import numpy as np

from .data import LETTERS, MASK, encode, show


def forward_view(name, schedule, L, times=(0.0, 0.25, 0.5, 0.75, 1.0), seed=0):
    """Lines 't=0.50  mask rate 0.50  ma_y_..._' : one name noised at a few times (one draw each).
    Uses the same coupling as q_sample: position i is masked at t when u_i < mask_rate(t), so the picture
    only ever gains MASKs as t grows. Raises ValueError for a name that is not letters a-z or longer than L,
    or a time outside [0, 1]."""
    if not isinstance(name, str) or not name or any(c not in LETTERS for c in name):
        raise ValueError(f"forward view: {name!r} is not a name; names are letters a-z")
    if len(name) > L:
        raise ValueError(f"forward view: {name!r} has {len(name)} letters, more than L={L}")
    if any(not 0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"forward view: times must be in [0, 1], got {list(times)}")
    x0 = encode([name], L)[0]
    u = np.random.default_rng(seed).random(L)
    lines = []
    for t in times:
        rate = float(schedule.mask_rate(t))
        xt = np.where(u < rate, MASK, x0)
        lines.append(f"t={t:.2f}  mask rate {rate:.2f}  {show(xt)}")
    return lines


def _step_char(s):
    return str(s) if s < 10 else chr(ord("A") + s - 10) if s < 36 else "+"


def reverse_view(samples, rows=3):
    """For the first `rows` samples (drawn with keep_trajectory=True): the row after each sampler step
    ('_' MASK, '.' PAD; step 0 shows what was fixed before the first step: the PADs of the drawn length and
    the template's letters), then the step at which each position was (last) revealed, '=' for a fixed
    position. Works for every sampler variant: with remasking a row can regain a '_' and the reveal line
    shows the last reveal; with a threshold a finished row stays as it is."""
    lines = []
    fixed = samples.fixed if samples.fixed is not None else np.zeros_like(samples.tokens, dtype=bool)
    for r in range(min(rows, len(samples.tokens))):
        lines += [f"  step {step:2d}: {show(x[r])}" for step, x in samples.trajectory]
        order = "".join("=" if f else _step_char(s) for s, f in zip(samples.reveal_step[r], fixed[r]))
        calls = f"; {samples.row_calls[r]} network calls" if samples.row_calls is not None else ""
        lines += [f"  revealed at: {order}   (step of each position; A = 10, B = 11, ...; = fixed{calls})", ""]
    return lines
