"""Generation by iterative unmasking: start from all MASK (or a template), reveal positions step by step.

One sampler, `sample`, with options. Each step runs the denoiser once on the rows that still hold a MASK, draws
a token for every masked position, and keeps the draws at the positions chosen by the order rule. The parts:

Length first (the PAD-first bias). Trailing PADs are the most predictable tokens, so plain most-confident-first
decoding commits PADs early and names come out too short (and repeat). The default `length="model"` decides the
length first, from the model itself: on an all-MASK row, the denoiser's probability of PAD at position i is its
estimate of P(length <= i), so P(length = n) = P(PAD at n) - P(PAD at n - 1) (made monotone). We draw the
length from that (restricted to a range if one is given), write the PADs, and then unmask letters among the
remaining positions; a letter can never follow a PAD. `length="joint"` is the plain sampler, kept to measure the
bias. `length=6` or `length=(5, 7)` fixes the length or restricts the draw to a range.

The last letter first. MASK tells the denoiser "unknown", and in training a masked position could as well be
a PAD, so a row laid out for length n (letters masked, PADs from n on) still looks to the model like "any
length <= n": its predictions mix in shorter names. So a row's first reveal, whatever the order, is its last
letter (position n - 1, PAD excluded): that draw is exactly P(letter | length n), and once it is written the
input itself says the length is n (a letter never follows a PAD), so every later prediction is conditioned
on the drawn length. Revealing one token a step in random order is then exact ancestral sampling of the
model's distribution (tests/test_sampler.py checks it with an exact denoiser of a known distribution). A step
that reveals several positions at once (few steps, or a threshold) draws the others beside the last letter
from predictions that do not know the length yet: one more error of parallel decoding.

Templates. `template="m__a"`: letters are fixed, `_` is one generated letter, and one `*` stands for any number
(0 or more) of generated letters: "ma*" (prefix), "*ette" (suffix), "a*a", "m_*". A template without `*` fixes
the length. With `*`, the length is drawn as above from the model's prediction given the leading fixed letters,
restricted to lengths the template fits (and to `length` if that is a number or a range), and weighted by
the model's probability of the trailing fixed letters at each length (`_draw_lengths`). Fixed positions
(template letters, and the PADs written by the length step) are never changed.

How many positions a step reveals follows the noise schedule: after step s of S, round(n * mask_rate(1 - s/S))
of a row's n free positions are still masked (`reveal_schedule`).

Which positions (`order`), scored on the token distribution softmax(logits / temperature):
  * "max_prob" (default): the top probability p1 (MaskGIT, Chang et al. 2022).
  * "margin": p1 - p2, the gap between the two most likely tokens (Kim et al. 2025, "Train for the worst,
    plan for the best": top-probability margin).
  * "entropy": -H(p), low-entropy positions first (as in Dream, Ye et al. 2025; Ben-Hamu et al. 2025).
  * "random": a uniformly random order, the baseline: MDLM's ancestral sampler (Sahoo et al. 2024), with the
    schedule's exact count per step instead of an independent coin per position.
`choice_temperature` tau > 0 (MaskGIT, Chang et al. 2022): rank by log(score) + tau * (1 - (s + 1)/S) * Gumbel
noise instead, so the choice is random early and greedy at the end (tau anneals linearly to 0).

`threshold` p (parallel decoding, Fast-dLLM, Wu et al. 2025): in addition to the schedule's count (and at least
one position per step), reveal every masked position whose top probability p1 >= p. Easy rows finish in a few
steps; a row is no longer sent to the network once it has no MASK, and the loop stops when no row has one, so
the number of network calls adapts to the names (`Samples.row_calls`). Terminates in at most S <= L steps.

`remask` eta (ReMDM, Wang et al. 2025, the "max-capped" schedule): at each step, every already revealed free
token of a row (but its last letter, which holds the length) goes back to MASK with probability
sigma_s = min(eta, (1 - alpha(t_next)) / alpha(t)), capped so the row's count of masks still follows the
schedule (at most the positions the schedule leaves masked after the step); the network then re-predicts it
later, so the sampler can fix early mistakes. sigma is 0 at the last step, so every row still ends without
MASK. Off by default; not combined with `threshold`.

`temperature` divides the token logits (0 = greedy argmax); `top_k` keeps the k most likely tokens and `top_p`
the smallest set of most likely tokens whose mass reaches p (nucleus sampling, Holtzman et al. 2020), both
applied to the tokens drawn, not to the scores used to choose positions. `choice_temperature` is separate.
"""
from dataclasses import dataclass, field

import numpy as np

from tinygrad_lite import no_grad

from .data import LETTERS, MASK, NUM_CLASSES, PAD
from .draw import draw, tempered_softmax, top_k_top_p
from .predict import predict_logits
from .schedule import CosineSchedule

ORDERS = ("max_prob", "margin", "entropy", "random")
TEMPLATE_HELP = "use letters a-z, '_' for one generated letter and one '*' for any number of generated letters"


@dataclass
class Samples:
    tokens: np.ndarray        # (N, L) final rows, no MASK
    reveal_step: np.ndarray   # (N, L) step at which each position was (last) revealed; 0 = fixed before step 1
    trajectory: list          # (step, (N, L) rows after that step) pairs, if asked for; step 0 = length/template
    network_calls: int        # batched denoiser calls (the length draw included)
    letter_after_pad: int     # rows whose letters continue after a PAD (impossible with a drawn length)
    row_calls: np.ndarray = None                  # (N,) denoiser calls each row took (threshold: adapts)
    remasked: int = 0                             # tokens sent back to MASK by `remask`, over all rows
    fixed: np.ndarray = field(default=None)       # (N, L) positions fixed before sampling (template, PADs)
    network_rows: int = 0                         # distinct rows the denoiser ran on, summed over calls: the compute


@dataclass(frozen=True)
class Template:
    """A parsed template: `head` and `tail` (a letter id, or None for a generated letter, per position) on
    either side of an optional `*`."""
    text: str
    head: tuple
    tail: tuple
    star: bool

    @property
    def min_length(self):
        return len(self.head) + len(self.tail)


def parse_template(text, L):
    """'m__a' / 'ma*' / '*a' -> Template. Raises ValueError (one line) for anything else."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"template {text!r} is empty; {TEMPLATE_HELP}")
    bad = next((c for c in text if c not in LETTERS + "_*"), None)
    if bad is not None:
        raise ValueError(f"template {text!r}: {bad!r} is not allowed; {TEMPLATE_HELP}")
    if text.count("*") > 1:
        raise ValueError(f"template {text!r} has {text.count('*')} '*'; at most one is allowed")
    head, star, tail = text.partition("*")
    if len(head) + len(tail) > L:
        raise ValueError(f"template {text!r} needs {len(head) + len(tail)} positions, more than L={L}")
    if not star and not head:
        raise ValueError(f"template {text!r} is empty; {TEMPLATE_HELP}")
    ids = lambda part: tuple(None if c == "_" else LETTERS.index(c) for c in part)  # noqa: E731
    return Template(text, ids(head), ids(tail), bool(star))


def edit_template(name, positions):
    """The template that re-masks `positions` (0-based) of `name`: edit_template('emma', [1, 2]) == 'e__a'."""
    if not isinstance(name, str) or not name or any(c not in LETTERS for c in name):
        raise ValueError(f"edit: {name!r} is not a name; names are letters a-z")
    positions = sorted(set(int(p) for p in positions))
    if not positions or positions[0] < 0 or positions[-1] >= len(name):
        raise ValueError(f"edit: positions must be between 0 and {len(name) - 1} for {name!r}, got {positions}")
    return "".join("_" if i in positions else c for i, c in enumerate(name))


def _length_range(length, template, L):
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


def reveal_schedule(n, steps, schedule):
    """(rows, steps) how many of each row's n[i] masked positions to reveal at each step; sums to n[i]."""
    still = still_masked_schedule(n, steps, schedule)
    return still[:, :-1] - still[:, 1:]


def still_masked_schedule(n, steps, schedule):
    """(rows, steps + 1): how many of row i's n[i] free positions are still masked after step s.

    round(n * mask_rate(1 - s/S)), so the counts follow the noise schedule; n at s = 0, 0 at s = S."""
    s = np.arange(steps + 1)
    still = np.rint(np.outer(n, schedule.mask_rate(1.0 - s / steps))).astype(np.int64)
    still[:, 0], still[:, -1] = n, 0
    return np.minimum.accumulate(still, axis=1)   # never more masks later


def _scores(probs, order, rng):
    """Per-position confidence keys (higher = reveal sooner), in log space for the Gumbel perturbation."""
    if order == "random":
        return rng.random(probs.shape[:-1])
    if order == "entropy":
        return (probs * np.log(np.maximum(probs, 1e-30))).sum(-1)         # -H(p)
    top2 = -np.partition(-probs, 1, axis=-1)[..., :2]
    score = top2[..., 0] if order == "max_prob" else top2[..., 0] - top2[..., 1]
    return np.log(np.maximum(score, 1e-30))


def _time_input(model, x, schedule):
    """For time-conditioned denoisers: the t whose mask rate matches the rows' current fraction of MASK."""
    return schedule.time_at((x == MASK).mean(axis=1)) if model.time_input else None


def length_probs(p_pad, floor=1e-12):
    """P(length = n) for n = 1..L (..., L), not renormalized, from an all-MASK row's P(PAD at position i)
    (..., L): P(length <= i) is their running max (made monotone), with P(length <= L) = 1, and P(length = n)
    its differences, plus `floor`: where the model's PAD probabilities dip, the running max would give a
    length probability 0, and a real name of that length an infinite NLL. Shared by the sampler's length
    draw and evaluate's length-first likelihood, so the likelihood is exactly that of the sampler's draw."""
    cdf = np.maximum.accumulate(p_pad, axis=-1)
    return np.clip(np.diff(cdf, axis=-1, append=np.ones(cdf.shape[:-1] + (1,))), 0, None) + floor


def _draw_lengths(model, template, num, temperature, rng, schedule, lo, hi):
    """Lengths n in lo..hi for `num` rows, the network calls it took and the rows they ran on. Every row starts
    alike, so the model runs on one row: MASK but for the template's leading letters. Its P(PAD at position i) is
    P(len <= i), so P(len = n | head) = P(PAD at n) - P(PAD at n - 1). A template with fixed trailing letters
    (its tail) also weighs each n by the model's probability of those letters where length n puts them, by
    the chain rule P(tail | head, n) = prod_k p(tail_k | head, n, tail_<k) (PAD excluded before n; one more
    call, on one row per candidate length and tail letter). Without it "*ette" names come out too short."""
    L = model.L
    x = _lay_out(Template(template.text, template.head, (), True), np.array([L]), L)
    logits = predict_logits(model, x, _time_input(model, x, schedule))
    p_pad = tempered_softmax(logits, 1.0)[0, :, PAD]
    p_pad[:len(template.head)] = 0.0                                       # a fixed letter is not a PAD
    p_len = length_probs(p_pad)                                            # P(len = n), n = 1..L
    allowed = (np.arange(1, L + 1) >= lo) & (np.arange(1, L + 1) <= hi)
    p_len = np.where(allowed, p_len, 0.0)
    calls, network_rows = 1, 1
    fixed_tail = [(j, tok) for j, tok in enumerate(template.tail) if tok is not None]
    if fixed_tail:
        candidates = np.arange(lo, hi + 1)                  # chain rule: P(tail | head, n) = prod_k p(tail_k |
        k = len(fixed_tail)                                 #   head, n, tail_<k): one row per (n, k), one call
        rows = _lay_out(Template(template.text, template.head, (None,) * len(template.tail), True),
                        np.repeat(candidates, k), L)
        cols = np.repeat(candidates, k) - len(template.tail) + np.tile([j for j, _ in fixed_tail], len(candidates))
        toks = np.tile([tok for _, tok in fixed_tail], len(candidates))
        for i in range(k):                                  # row (n, i) shows the first i fixed tail letters
            for prev in range(i):
                rows[i::k][np.arange(len(candidates)), cols[prev::k]] = toks[prev::k]
        logits, ran = predict_logits(model, rows, _time_input(model, rows, schedule), count=True)
        logits[..., PAD] = np.where(rows == PAD, logits[..., PAD], -np.inf)    # length n: letters before n
        logp = np.log(tempered_softmax(logits, 1.0)[np.arange(len(rows)), cols, toks])
        calls, network_rows = calls + 1, network_rows + ran
        p_len[candidates - 1] *= np.exp(logp.reshape(len(candidates), k).sum(1))
        p_len = np.where(allowed, p_len + 1e-300, 0.0)
    p_len = p_len ** (1.0 / temperature) if temperature > 0 else (p_len == p_len.max()) * 1.0
    p_len = np.broadcast_to(p_len / p_len.sum(), (num, 1, L))
    return 1 + draw(p_len, 1.0, rng)[:, 0], calls, network_rows


def _lay_out(template, n, L):
    """(N, L) rows for lengths n: the template's letters at the head and, ending at n - 1, the tail; PAD from
    n on; MASK elsewhere."""
    N = len(n)
    x = np.full((N, L), MASK, dtype=np.int64)
    x[np.arange(L) >= n[:, None]] = PAD
    for j, tok in enumerate(template.head):
        if tok is not None:
            x[:, j] = tok
    for j, tok in enumerate(template.tail):
        if tok is not None:
            x[np.arange(N), n - len(template.tail) + j] = tok
    return x


def _choose(probs, masked, count, order, tau, threshold, rng, first):
    """(n, L) bool: the positions to reveal this step. The `count[i]` best masked positions of row i by the
    order's score (plus tau * Gumbel noise, MaskGIT's choice temperature), positions in `first` before all
    others; with a threshold, at least one, and also every masked position whose top probability reaches it."""
    key = _scores(probs, order, rng)
    if tau > 0 and order != "random":
        key = key + tau * rng.gumbel(size=key.shape)
    key = np.where(masked, np.where(first, np.inf, key), -np.inf)
    rank = (-key).argsort(axis=1, kind="stable").argsort(axis=1, kind="stable")
    if threshold is None:
        return masked & (rank < count[:, None])
    return masked & ((rank < np.maximum(count, 1)[:, None]) | (probs.max(-1) >= threshold))


def _remask_draw(candidates, cap, eta, step, steps, schedule, rng):
    """(n, L) bool: revealed free positions sent back to MASK (ReMDM max-capped): each with probability
    sigma = min(eta, (1 - alpha(t_next)) / alpha(t)), then at most cap[i] of them in row i (a random subset)."""
    a_now, a_next = schedule.alpha(1.0 - step / steps), schedule.alpha(1.0 - (step + 1) / steps)
    sigma = min(eta, (1.0 - a_next) / max(a_now, 1e-12))
    again = candidates & (rng.random(candidates.shape) < sigma)
    key = np.where(again, rng.random(candidates.shape), np.inf)
    return again & (key.argsort(1, kind="stable").argsort(1, kind="stable") < cap[:, None])


def _check(model, steps, temperature, order, choice_temperature, threshold, remask, top_k, top_p):
    L = model.L
    if not 1 <= steps <= L:
        raise ValueError(f"sample: steps must be between 1 and L={L}, got {steps}")
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
    if order not in ORDERS:
        raise ValueError(f"sample: order must be one of {ORDERS}, got {order!r}")
    if choice_temperature < 0:
        raise ValueError(f"sample: choice_temperature must be >= 0, got {choice_temperature}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ValueError(f"sample: threshold must be in (0, 1], got {threshold}")
    if not 0 <= remask < 1:
        raise ValueError(f"sample: remask must be in [0, 1), got {remask}")
    if remask > 0 and threshold is not None:
        raise ValueError("sample: remask and threshold do not combine (remasking needs the fixed schedule)")
    if top_k is not None and not (isinstance(top_k, (int, np.integer)) and top_k >= 1):
        raise ValueError(f"sample: top_k must be a whole number >= 1, got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"sample: top_p must be in (0, 1], got {top_p}")


@no_grad()
def sample(model, num=1000, steps=None, temperature=1.0, seed=0, schedule=None, length="model",
           keep_trajectory=False, *, template=None, order="max_prob", choice_temperature=0.0, threshold=None,
           remask=0.0, top_k=None, top_p=1.0):
    """Generate `num` rows with at most `steps` S in [1, L] unmasking steps (default L). See the module
    docstring for each option and its source. Vectorized: the whole batch is one loop of S network calls.

    length: "model" (default, the length is drawn first), "joint" (plain, no length step), a number, or a
    (min, max) pair. template: e.g. "m__a", "ma*", "*a" (None = "*"). order: "max_prob", "margin", "entropy",
    "random". choice_temperature: MaskGIT Gumbel noise on the order. threshold: also reveal every position with
    p1 >= threshold. remask: ReMDM re-masking probability. temperature / top_k / top_p: the token distribution.
    Returns Samples; decode rows with data.decode. Same seed -> same output. Raises ValueError for bad options."""
    L = model.L
    steps = L if steps is None else steps
    _check(model, steps, temperature, order, choice_temperature, threshold, remask, top_k, top_p)
    tpl = parse_template("*" if template is None else template, L)
    lo, hi = _length_range(length, tpl, L)
    schedule = schedule or CosineSchedule()
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    calls, network_rows, trajectory = 0, 0, []
    row_calls = np.zeros(num, dtype=np.int64)
    positions = np.arange(L)
    plain = length == "joint" and tpl.text == "*"
    if plain:                                            # the plain sampler: PADs are drawn like letters
        x = np.full((num, L), MASK, dtype=np.int64)
        letters_only = last = np.zeros((num, L), dtype=bool)
    else:
        if lo == hi:
            n = np.full(num, lo, dtype=np.int64)
        else:
            n, calls, network_rows = _draw_lengths(model, tpl, num, temperature, rng, schedule, lo, hi)
            row_calls += calls
        x = _lay_out(tpl, n, L)
        letters_only = positions < n[:, None]
        # the last letter first (see the docstring): once it is revealed, the input itself says "length n"
        last = (x == MASK) & (positions == n[:, None] - 1)
    fixed = x != MASK
    reveal_step = np.zeros((num, L), dtype=np.int64)
    if keep_trajectory and not plain:
        trajectory.append((0, x.copy()))
    still = still_masked_schedule((x == MASK).sum(axis=1), steps, schedule)
    remasked = 0
    for step in range(steps):
        pending = (x == MASK).any(axis=1)
        if not pending.any():
            break
        if threshold is None and remask == 0:   # a row the schedule reveals nothing of this step skips the call
            pending &= still[:, step] > still[:, step + 1]
        rows = np.flatnonzero(pending)
        if len(rows) == 0:
            continue
        xa, masked = x[rows], x[rows] == MASK
        logits, ran = predict_logits(model, xa, _time_input(model, xa, schedule), count=True)  # (n, L, 27)
        calls += 1
        row_calls[rows] += 1
        network_rows += ran                              # distinct rows: identical ones run once
        logits[..., PAD] = np.where(letters_only[rows], -np.inf, logits[..., PAD])
        probs = tempered_softmax(logits, temperature)
        tokens = draw(top_k_top_p(probs, top_k, top_p), temperature, rng)
        target = still[rows, step + 1]                   # masks the schedule leaves after this step
        free = ~masked & ~fixed[rows] & ~last[rows]       # revealed tokens remasking may take back
        again = (_remask_draw(free, target, remask, step, steps, schedule, rng) if remask > 0
                 else np.zeros_like(masked))
        count = np.maximum(masked.sum(1) + again.sum(1) - target, 0)
        reveal = _choose(probs, masked, count, order, choice_temperature * (1.0 - (step + 1) / steps),
                         threshold, rng, first=last[rows] & masked)
        xa[reveal] = tokens[reveal]
        xa[again] = MASK
        x[rows] = xa
        rs = reveal_step[rows]
        rs[reveal] = step + 1
        reveal_step[rows] = rs
        remasked += int(again.sum())
        if keep_trajectory:
            trajectory.append((step + 1, x.copy()))
    model.train(was_training)
    assert not (x == MASK).any(), "sampler left a MASK"
    after_pad = ((x != PAD) & (np.cumsum(x == PAD, axis=1) > 0)).any(axis=1)
    return Samples(x, reveal_step, trajectory, calls, int(after_pad.sum()), row_calls, remasked, fixed,
                   network_rows=network_rows)


assert NUM_CLASSES == PAD + 1  # the denoiser's classes are letters then PAD: PAD is the last logit
