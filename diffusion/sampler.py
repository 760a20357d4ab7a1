"""The reverse process of masked (absorbing) diffusion: generate names by revealing MASKs, a few per step.

The forward process turns each token into MASK with probability 1 - alpha(t) (process.py). The reverse process
goes back from t = 1 (all MASK) to t = 0 in S steps t -> s = t - 1/S. For absorbing diffusion its step
p_theta(x_s | x_t) treats every position on its own (MDLM, Sahoo et al. 2024): a revealed token stays as it
is; a MASK stays masked with probability (1 - alpha_s)/(1 - alpha_t), or else is revealed with a token drawn
from the denoiser's prediction p_theta(x_0 | x_t):

    p_theta(x_s^i | x_t) = [x_s^i = x_t^i]                                                  if x_t^i != MASK
    p_theta(x_s^i | x_t) = (1 - alpha_s)/(1 - alpha_t) [x_s^i = MASK]
                           + (alpha_s - alpha_t)/(1 - alpha_t) p_theta(x_0^i = x_s^i | x_t)  if x_t^i = MASK

That is the process whose NELBO the model is trained on (loss.py). `reverse_step` is one step of it, with the
schedule's exact count of reveals per row instead of an independent coin per position: the positions are
chosen uniformly at random (order="random"). `sample` runs S steps. Where each part and each option lives:

  * how many positions a step reveals: the noise schedule's count, `still_masked_schedule`.
  * which ones, `order`: "random" (the step above), or the most confident first, "max_prob" (the default,
    MaskGIT), "margin", "entropy" (unmasking.py). `choice_temperature`: MaskGIT's Gumbel noise on that
    choice (unmasking.gumbel_noise). `threshold`: also every position the model is sure of, parallel
    decoding as in Fast-dLLM (unmasking.above_threshold).
  * the tokens drawn: `temperature`, `top_k`, `top_p` (draw.py).
  * tokens taken back, `remask` (ReMDM): `remask_positions`.
  * before step 1: the length drawn first and its last letter revealed first, `length="model"`
    (length_first.py); letters given by a `template` such as "m__a" or "ma*" (templates.py).
"""
from dataclasses import dataclass, field

import numpy as np

from tinygrad_lite import no_grad
from tinygrad_lite.nn import eval_mode

from .data import MASK, NUM_CLASSES, PAD
from .draw import draw, tempered_softmax, top_k_top_p
from .length_first import draw_lengths, last_letter, length_probs, length_range  # noqa: F401
from .predict import predict_logits
from .schedule import CosineSchedule
from .templates import TEMPLATE_HELP, edit_template, lay_out, parse_template  # noqa: F401
from .unmasking import ORDERS, choose, ranks

# length_probs, TEMPLATE_HELP, edit_template are not used here: other modules and scripts import them from here

assert NUM_CLASSES == PAD + 1  # the denoiser's classes are letters then PAD: PAD is the last logit


def reverse_step(predict, x, keep, step, pos, opts, rng):
    """One reverse step x_t -> x_s on rows x (n, L), in place; returns (revealed, remasked, rows the network ran
    on). keep[i]: how many of row i's positions the schedule leaves masked after the step.

    With order="random" and the other options off it is the step of the module docstring: the denoiser
    predicts p_theta(x_0 | x_t) at every position, a token is drawn at each, and all but keep[i] of row i's
    masked positions, chosen uniformly at random, are revealed with their draws. Revealed tokens stay.
    The variants each change one line: PAD excluded before a drawn length (`pos.letters`); the draw's
    temperature (0: argmax) and top-k / top-p filter (positions are scored on the unfiltered probabilities);
    tokens taken back (`remask_positions`); which positions (`choose`; the last letter, `pos.first`, first)."""
    masked = x == MASK
    logits, ran = predict(x)                                                      # (n, L, 27)
    logits[..., PAD] = np.where(pos.letters, -np.inf, logits[..., PAD])           # length drawn: no PAD before it
    probs = tempered_softmax(logits, opts.temperature)                            # p_theta(x_0 | x_t)
    tokens = draw(top_k_top_p(probs, opts.top_k, opts.top_p), opts.temperature, rng)   # a draw per position
    again = remask_positions(~masked & ~pos.fixed & ~pos.first, keep, step, opts, rng)  # ReMDM; none if off
    count = np.maximum(masked.sum(1) + again.sum(1) - keep, 0)                    # reveal all but keep[i]
    tau = opts.choice_temperature * (1.0 - (step + 1) / opts.steps)               # MaskGIT: anneals to 0
    reveal = choose(probs, masked, count, opts.order, tau, opts.threshold, rng, first=pos.first & masked)
    x[reveal] = tokens[reveal]
    x[again] = MASK
    return reveal, again, ran


def still_masked_schedule(n, steps, schedule):
    """(rows, steps + 1): how many of row i's n[i] free positions are still masked after step s.

    round(n * mask_rate(1 - s/S)), so the counts follow the noise schedule; n at s = 0, 0 at s = S. A row with
    n[i] <= S reveals at most one position a step (one_at_a_time), as a sampler with S = L is meant to."""
    s = np.arange(steps + 1)
    still = np.rint(np.outer(n, schedule.mask_rate(1.0 - s / steps))).astype(np.int64)
    still[:, 0], still[:, -1] = n, 0
    still = np.minimum.accumulate(still, axis=1)   # never more masks later
    for i in np.flatnonzero(np.asarray(n) <= steps):
        still[i] = one_at_a_time(still[i])
    return still


def one_at_a_time(still):
    """A row's counts still (S + 1,) with n = still[0] <= S, changed so that no step reveals two positions.

    Rounding a steep schedule can drop the count by 2 in one step (the cosine at L = 16 does, for 11 of the
    16 lengths). Reveal k happens at the first step whose count is below n - k; a reveal that shares its step
    with the one before moves one step later, and one pushed past S moves back before its successor. The
    reveals stay in order and as close to the schedule's steps as one a step allows."""
    n, steps = still[0], len(still) - 1
    when = np.searchsorted(-still, -(n - 1 - np.arange(n)))    # step of reveal k: first s with still[s] <= n-1-k
    for k in range(1, n):
        when[k] = max(when[k], when[k - 1] + 1)
    for k in range(n - 1, -1, -1):
        when[k] = min(when[k], (when[k + 1] if k + 1 < n else steps + 1) - 1)
    return n - np.searchsorted(when, np.arange(steps + 1), side="right")


def reveal_schedule(n, steps, schedule):
    """(rows, steps) how many of each row's n[i] masked positions to reveal at each step; sums to n[i]."""
    still = still_masked_schedule(n, steps, schedule)
    return still[:, :-1] - still[:, 1:]


@no_grad()
def sample(model, num=1000, steps=None, temperature=1.0, seed=0, schedule=None, length="model",
           keep_trajectory=False, *, template=None, order="max_prob", choice_temperature=0.0, threshold=None,
           remask=0.0, top_k=None, top_p=1.0):
    """Generate `num` rows in at most `steps` S reverse steps, S in [1, L] (default L), one network call a step.

    The module docstring maps each option to its function. length: "model" (default: drawn first), "joint"
    (no length step), n or (min, max). template: "m__a", "ma*", "*a" (None = "*"). order: one of ORDERS.
    choice_temperature: MaskGIT's Gumbel noise on the order. threshold: also reveal every position with
    p1 >= threshold. remask: ReMDM's remasking probability. temperature / top_k / top_p: the token draw.
    Returns Samples (decode rows with data.decode); the same seed gives the same output. Raises ValueError
    for bad options."""
    L = model.L
    opts = Options(L, L if steps is None else steps, schedule or CosineSchedule(), temperature, order,
                   choice_temperature, threshold, remask, top_k, top_p)
    tpl = parse_template("*" if template is None else template, L)
    plain = length == "joint" and tpl.text == "*"        # no length step: PAD is drawn like a letter
    lengths = None if plain else length_range(length, tpl, L)
    rng, predict = np.random.default_rng(seed), denoiser(model, opts.schedule)
    with eval_mode(model):
        x, pos, out = start(predict, tpl, lengths, num, L, temperature, rng)
        if keep_trajectory and not plain:
            out.trajectory.append((0, x.copy()))
        still = still_masked_schedule((x == MASK).sum(axis=1), opts.steps, opts.schedule)
        for step in range(opts.steps):
            rows = rows_to_run(x, still, step, opts)
            if len(rows):
                xa = x[rows]
                reveal, again, ran = reverse_step(predict, xa, still[rows, step + 1], step, pos[rows], opts, rng)
                x[rows] = xa
                out.record(step, rows, reveal, again, ran)
                if keep_trajectory:
                    out.trajectory.append((step + 1, x.copy()))
    assert not (x == MASK).any(), "sampler left a MASK"
    out.letter_after_pad = int(((x != PAD) & (np.cumsum(x == PAD, axis=1) > 0)).any(axis=1).sum())
    return out


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

    @classmethod
    def join(cls, parts):
        """The Samples of consecutive chunks of rows as one: the rows in order, network_calls the most any
        chunk made (the calls each row went through), the other counts summed, the trajectories merged by
        step (a chunk that skipped a step, having nothing to reveal then, shows its rows as they were)."""
        def cat(name):
            return np.concatenate([getattr(p, name) for p in parts])

        def rows_at(part, step):          # a chunk's rows after `step`: a step it skipped left them as they were
            before = [rows for s, rows in part.trajectory if s <= step]
            return before[-1] if before else np.full_like(part.tokens, MASK)
        steps = sorted({s for p in parts for s, _ in p.trajectory})    # chunks skip different steps
        trajectory = [(s, np.concatenate([rows_at(p, s) for p in parts])) for s in steps]
        return cls(cat("tokens"), cat("reveal_step"), trajectory, max(p.network_calls for p in parts),
                   sum(p.letter_after_pad for p in parts), cat("row_calls"), sum(p.remasked for p in parts),
                   cat("fixed"), sum(p.network_rows for p in parts))

    def record(self, step, rows, revealed, remasked, ran):
        """Count a reverse step that ran on `rows` (revealed, remasked: their (n, L) bool masks)."""
        self.reveal_step[rows] = np.where(revealed, step + 1, self.reveal_step[rows])
        self.network_calls += 1
        self.row_calls[rows] += 1
        self.network_rows += ran                         # distinct rows: identical ones run once
        self.remasked += int(remasked.sum())


@dataclass
class Positions:
    """What holds for each position of each row ((N, L) bool each) through the whole reverse process."""
    fixed: np.ndarray     # set before step 1 (template letters; PADs after a drawn length): never change
    letters: np.ndarray   # before a drawn length n: must become a letter (PAD is excluded from the draw)
    first: np.ndarray     # revealed first: the last letter (length_first.last_letter)

    def __getitem__(self, rows):
        return Positions(self.fixed[rows], self.letters[rows], self.first[rows])


def start(predict, tpl, lengths, num, L, temperature, rng):
    """x_T, the (num, L) rows the reverse process starts from; their Positions; and Samples before step 1
    (with the network calls of the length draw). lengths None (length="joint", no template): all MASK,
    nothing fixed. Else (lo, hi): each row gets a length n (drawn first if lo < hi, length_first.py) and
    the template laid out for it."""
    if lengths is None:
        x, none = np.full((num, L), MASK, dtype=np.int64), np.zeros((num, L), dtype=bool)
        pos, calls, ran = Positions(none, none, none), 0, 0
    else:
        lo, hi = lengths
        n, calls, ran = ((np.full(num, lo, dtype=np.int64), 0, 0) if lo == hi
                         else draw_lengths(predict, tpl, num, temperature, rng, lo, hi, L))
        x = lay_out(tpl, n, L)
        pos = Positions(x != MASK, np.arange(L) < n[:, None], last_letter(x, n))
    out = Samples(x, np.zeros((num, L), dtype=np.int64), [], calls, 0, np.full(num, calls, dtype=np.int64),
                  fixed=pos.fixed, network_rows=ran)
    return x, pos, out


def denoiser(model, schedule):
    """predict: rows x (n, L) -> (logits (n, L, 27), rows the network ran on): the model on each distinct row
    once; a time-conditioned model also gets the t whose mask rate matches each row's fraction of MASK."""
    def predict(x):
        t = schedule.time_at((x == MASK).mean(axis=1)) if model.time_input else None
        return predict_logits(model, x, t, count=True)
    return predict


def rows_to_run(x, still, step, opts):
    """The rows a step runs on: those with a MASK left. On the plain schedule (no threshold, no remasking) a
    row the schedule reveals nothing of this step also skips the call."""
    pending = (x == MASK).any(axis=1)
    if opts.threshold is None and opts.remask == 0:
        pending &= still[:, step] > still[:, step + 1]
    return np.flatnonzero(pending)


def remask_positions(candidates, keep, step, opts, rng):
    """ReMDM (Wang et al. 2025, the "max-capped" schedule): (n, L) bool, the revealed free tokens sent back to
    MASK this step; none when opts.remask eta = 0. Each candidate (a revealed free token, but a row's last
    letter, which holds the length) goes back with probability sigma_s = min(eta, (1 - alpha(t_next)) /
    alpha(t)), then at most keep[i] of them in row i (a random subset), so the row's count of masks still
    follows the schedule. The network re-predicts them later, so the sampler can fix early mistakes. sigma is 0
    at the last step, so every row still ends without MASK. Not combined with `threshold`."""
    if opts.remask == 0:
        return np.zeros_like(candidates)
    steps, schedule = opts.steps, opts.schedule
    a_now, a_next = schedule.alpha(1.0 - step / steps), schedule.alpha(1.0 - (step + 1) / steps)
    sigma = min(opts.remask, (1.0 - a_next) / max(a_now, 1e-12))
    again = candidates & (rng.random(candidates.shape) < sigma)
    key = np.where(again, rng.random(candidates.shape), np.inf)
    return again & (ranks(key) < keep[:, None])


@dataclass(frozen=True)
class Options:
    """The options of `sample` that the reverse step reads, checked when made."""
    L: int
    steps: int
    schedule: object
    temperature: float
    order: str
    choice_temperature: float
    threshold: float
    remask: float
    top_k: int
    top_p: float

    def __post_init__(self):
        """Raise ValueError (one line, naming the option) for a bad value."""
        if not 1 <= self.steps <= self.L:
            raise ValueError(f"sample: steps must be between 1 and L={self.L}, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"sample: temperature must be >= 0, got {self.temperature}")
        if self.order not in ORDERS:
            raise ValueError(f"sample: order must be one of {ORDERS}, got {self.order!r}")
        if self.choice_temperature < 0:
            raise ValueError(f"sample: choice_temperature must be >= 0, got {self.choice_temperature}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"sample: threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.remask < 1:
            raise ValueError(f"sample: remask must be in [0, 1), got {self.remask}")
        if self.remask > 0 and self.threshold is not None:
            raise ValueError("sample: remask and threshold do not combine (remasking needs the fixed schedule)")
        if self.top_k is not None and not (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 1):
            raise ValueError(f"sample: top_k must be a whole number >= 1, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sample: top_p must be in (0, 1], got {self.top_p}")
