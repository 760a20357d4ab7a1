"""Held-out likelihood of a denoiser, in nats per character (letters + 1 end token), with its standard error.

Two estimators of the same NELBO:

* exact identity (denoisers without time input). Writing the continuous-time NELBO as an integral over the
  number k of masked positions gives, for a sequence of length L,
      NELBO(x) = sum_{k=1..L} (1/k) E_{|M|=k} [ sum_{i in M} -log p(x_i | x with M masked) ]
  (MDLM, Sahoo et al. 2024, and Ou et al. 2024 "Your absorbing discrete diffusion secretly models the
  conditional distributions of clean data"). One random k-subset per k and name is an unbiased estimate
  whose only noise is the choice of subsets: far less noisy than sampling t. By default each name is scored
  at 8 of the 16 values of k, one from each pair of neighbours (stratified), weighted to stay unbiased:
  half the network rows, and still well under the target standard error with two repeats.
* Monte-Carlo over t (any denoiser, including time-conditioned ones): the training estimator
  w(t) * sum_{masked} -log p, with stratified t.

Both repeat with fresh randomness until the standard error (over repeats, per name, then pooled) falls below
`target_se`, so the printed figure is as precise as it claims. Repeat r of the rows in chunk c draws its
masks from the seed (seed, r, c) (chunks.py), so the figure is the same in one process or on a ModelPool.
"""
import numpy as np

from tinygrad_lite import Tensor, functional as F, no_grad
from tinygrad_lite.nn import eval_mode

from .chunks import chunk_bounds, run
from .data import LETTERS, PAD, chars_per_name
from .predict import predict_logits
from .process import mask_exactly, q_sample, sample_times


@no_grad()
def _masked_nll(model, xt, x0, masked, t=None, batch_size=2048):
    """sum over masked positions of -log p(x0_i | xt), per row: (N,). The network runs through
    predict.predict_logits (each distinct row once: every k = L row is all MASK); batch_size rows at a time
    bound the memory of the logits."""
    out = np.empty(len(x0))
    for i in range(0, len(x0), batch_size):
        sl = slice(i, i + batch_size)
        logits = Tensor(predict_logits(model, xt[sl], None if t is None else t[sl]))          # float64
        ce = F.cross_entropy(logits, np.where(masked[sl], x0[sl], -100), reduction="none")
        out[sl] = ce.data.astype(np.float64).sum(axis=1)
    return out


def _identity_repeat(model, x, rng, k_per_name):
    """One unbiased estimate of NELBO(x) per row via the exact identity: (N,).

    The identity sums (1/k) E_{|M|=k}[...] over k = 1..L. Stratified over k: 1..L is cut into m = k_per_name
    blocks of consecutive k; each row gets one k drawn uniformly from each block B (one random k-subset M for
    it) and weight |B|/k, so E = sum over blocks of sum_{k in B} (1/k) E[...], the identity itself. m = L is
    every k once (weight 1/k); smaller m costs m/L as many network rows for a noisier estimate."""
    N, L = x.shape
    blocks = np.array_split(np.arange(1, L + 1), min(k_per_name, L))
    m = len(blocks)
    k = np.stack([b[rng.integers(0, len(b), N)] for b in blocks], axis=1).ravel()   # (N * m,), row-major
    size = np.tile([len(b) for b in blocks], N)
    x0 = np.repeat(x, m, axis=0)
    xt, masked = mask_exactly(x0, k, rng)
    return (_masked_nll(model, xt, x0, masked) * size / k).reshape(N, m).sum(axis=1)


def _monte_carlo_repeat(model, x, rng, schedule):
    """One unbiased estimate of NELBO(x) per row from a stratified t per row: (N,)."""
    t = sample_times(len(x), rng)[rng.permutation(len(x))]
    xt, masked = q_sample(x, t, schedule, rng)
    return schedule.weight(t) * _masked_nll(model, xt, x, masked, t if model.time_input else None)


def _repeat_job(model, job):
    """One repeat's estimates (n,) for the rows x (n, L) of a chunk: job = (x, seed, method, schedule, k_per_name)."""
    x, seed, method, schedule, k_per_name = job
    rng = np.random.default_rng(seed)
    if method == "identity":
        return _identity_repeat(model, x, rng, k_per_name)
    return _monte_carlo_repeat(model, x, rng, schedule)


def nelbo(model, x, schedule=None, seed=0, target_se=0.01, min_repeats=2, max_repeats=256, method=None,
          k_per_name=8, pool=None):
    """Test NELBO of `model` on rows x (N, L) in nats/char. Returns dict(nelbo, se, repeats, method).

    method: 'identity' (default for models without time input) or 'monte_carlo' (needs schedule).
    k_per_name: for the identity, how many k (stratified over 1..L) each row is scored at per repeat; 8 of
    L = 16 halves the network rows of scoring every k, and two repeats still reach se < 0.01 on the test split.
    Repeats (doubling) until se < target_se or max_repeats. se is the Monte-Carlo standard error of the
    figure for this fixed set of names. pool: a ModelPool to spread the chunks over (None: this process)."""
    method = method or ("monte_carlo" if model.time_input else "identity")
    if method == "identity" and model.time_input:
        raise ValueError("nelbo: the exact identity needs a denoiser without time input; use method='monte_carlo'")
    if not (isinstance(k_per_name, (int, np.integer)) and k_per_name >= 1):
        raise ValueError(f"nelbo: k_per_name must be a whole number >= 1, got {k_per_name!r}")
    if method == "monte_carlo" and schedule is None:
        raise ValueError("nelbo: method='monte_carlo' needs the schedule")
    chunks, chars = chunk_bounds(len(x)), chars_per_name(x).sum()

    def repeats(first, last):
        """Repeats first..last-1 of every row: (last - first, N)."""
        jobs = [(x[a:b], [seed, r, c], method, schedule, k_per_name)
                for r in range(first, last) for c, (a, b) in enumerate(chunks)]
        parts = run(model, _repeat_job, jobs, pool)
        return np.array([np.concatenate(parts[i:i + len(chunks)]) for i in range(0, len(parts), len(chunks))])
    with eval_mode(model):
        est = repeats(0, min_repeats)                                        # (R, N)
        while True:
            se = np.sqrt(est.var(axis=0, ddof=1).sum() / len(est)) / chars
            if se < target_se or len(est) >= max_repeats:
                break
            est = np.concatenate([est, repeats(len(est), min(2 * len(est), max_repeats))])
    return dict(nelbo=float(est.mean(axis=0).sum() / chars), se=float(se), repeats=len(est), method=method)


def unigram_nll(train, test):
    """Baseline: nats/char of test names under letter + end-token frequencies of train (add-one smoothed).
    train, test: (N, L) token rows. What a model that ignores context entirely would score."""
    def counts(x):
        letters = np.bincount(x[x != PAD], minlength=len(LETTERS)).astype(np.float64)
        return np.append(letters, len(x))                                # + one end token per name
    p = (counts(train) + 1) / (counts(train) + 1).sum()
    return float(-(counts(test) * np.log(p)).sum() / chars_per_name(test).sum())
