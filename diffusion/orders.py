"""The denoiser read as an autoregressive model in an order: exact likelihoods, and a bound over random orders.

Any rule that picks the next position to reveal from what is already revealed makes the denoiser an
autoregressive model in that order,
    -log p_order(x) = sum_{j=1..L} -log p(x_{s_j} | x at s_1..s_{j-1}, MASK elsewhere),
scored by teacher forcing the true token at each chosen position s_j (one forward pass per position, the
whole batch at once). Each order defines a model of its own, the sampler that follows it, and -log p_order(x)
is that model's exact NLL (not a bound on the diffusion model's). `ordered_nll` knows three orders:
* 'left_to_right': s_j = j.
* 'confident': s_j = the masked position whose top probability is highest, one token per step.
* 'length_first': the default sampler's process with one token per step. The length n from the all-MASK PAD
  probabilities (P(len <= i) = cummax_i p(PAD at i), P(len = n) their differences for n = 1..L,
  renormalized), PAD written after it, then the last letter (which tells the model the length: to it a MASK
  could be a PAD), then the most confident masked position among the first n, with PAD excluded (letters
  renormalized). It puts no mass on rows with a letter after PAD, so
      -log p(x) = -log P(len = n) + sum_{j=1..n} -log p(x_{s_j} | revealed; letters only).

Random orders. Revealing one uniformly random position a step (MDLM's ancestral sampler with S = L) makes the
denoiser a uniform mixture of the L! fixed-order models, p(x) = E_sigma[p_sigma(x)] (Hoogeboom et al. 2022,
"Autoregressive diffusion models"), and the NELBO is E_sigma[-log p_sigma(x)], its Jensen bound: a good fixed
order can score below the NELBO. With K orders drawn per name (`random_orders_nll`),
    B_K(x) = -log (1/K) sum_{k=1..K} p_{sigma_k}(x)                                            (`iw_bound`)
is the importance-weighted bound (Burda et al. 2016, IWAE): B_1 is one draw of the NELBO, E[B_K] falls with K
and tends to -log p(x), the exact NLL of the diffusion model itself. Each order costs L forward passes.

Everything runs in fixed chunks of rows (chunks.py): pass a ModelPool as `pool` to spread them over worker
processes, with the same figures for any number of workers.
"""
import numpy as np

from tinygrad_lite import no_grad
from tinygrad_lite.nn import eval_mode

from .chunks import chunk_bounds, run
from .data import MASK, PAD
from .predict import predict_logits
from .sampler import length_probs
from .schedule import CosineSchedule

DECODING_ORDERS = ("left_to_right", "confident", "length_first")


@no_grad()
def ordered_nll(model, x, order="left_to_right", schedule=None, pool=None):
    """Exact -log p(x) (nats, per row: (N,)) of rows x (N, L) under the denoiser decoding one position at a
    time in `order`, teacher forcing the true token (see the module docstring). L forward passes per chunk of
    rows (chunks.py; pool: a ModelPool to spread them over, None: this process).
    schedule: for time-conditioned denoisers, t is the time whose mask rate equals the row's MASK fraction."""
    if order not in DECODING_ORDERS:
        raise ValueError(f"ordered_nll: order must be one of {DECODING_ORDERS}, got {order!r}")
    if order == "left_to_right":                     # the same fixed order for every row: positions 0..L-1
        order = np.broadcast_to(np.arange(x.shape[1]), x.shape)
    jobs = [(x[a:b], order if isinstance(order, str) else order[a:b], schedule or CosineSchedule())
            for a, b in chunk_bounds(len(x))]
    with eval_mode(model):
        return np.concatenate(run(model, _ordered_job, jobs, pool)) if jobs else np.zeros(0)


@no_grad()
def random_orders_nll(model, x, orders=16, seed=0, schedule=None, pool=None):
    """-log p_sigma(x) (K, N) of rows x (N, L) in K = `orders` uniformly random orders sigma, drawn per row
    (the K orders of every row from the seeds (seed, 0..K-1)): the terms of `iw_bound`. K L forward passes
    per chunk of rows, all K orders' chunks spread over the pool at once."""
    jobs = []
    for k in range(orders):
        order = np.random.default_rng([seed, k]).random(x.shape).argsort(axis=1)        # (N, L) permutations
        jobs += [(x[a:b], order[a:b], schedule or CosineSchedule()) for a, b in chunk_bounds(len(x))]
    with eval_mode(model):
        parts = run(model, _ordered_job, jobs, pool)
    return np.concatenate(parts).reshape(orders, len(x)) if parts else np.zeros((orders, 0))


def iw_bound(order_nll):
    """B_K = -log (1/K) sum_k exp(-nll_k) per row (module docstring): (K, N) NLLs in K orders -> (N,)."""
    return -(np.logaddexp.reduce(-order_nll, axis=0) - np.log(len(order_nll)))


def bound_by_orders(order_nll, chars):
    """[(k, B_k in nats/char)] for k = 1, 2, 4, ... <= K from (K, N) NLLs in K orders: each B_k the mean over the
    K // k disjoint groups of k orders, so the figures show how the bound tightens with the orders spent."""
    K, ks = len(order_nll), [2 ** i for i in range(len(order_nll).bit_length())]
    return [(k, float(np.mean([iw_bound(order_nll[i:i + k]).sum() for i in range(0, K - k + 1, k)]) / chars.sum()))
            for k in ks]


def _log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def _logits(model, xt, schedule):
    """The denoiser's logits (N, L, 27) at rows xt (N, L); a time-conditioned one gets the time whose mask rate is
    each row's MASK fraction."""
    t = schedule.time_at((xt == MASK).mean(axis=1)) if model.time_input else None
    return predict_logits(model, xt, t)


@no_grad()
def _ordered_job(model, job):
    """ordered_nll of one chunk: job = (x (n, L), order, schedule) -> (n,). order: 'confident', 'length_first',
    or the positions (n, L) to reveal, row i revealing order[i, j] at step j."""
    x, order, schedule = job
    if isinstance(order, str) and order == "length_first":
        return _length_first_chunk(model, x, schedule)
    N, L = x.shape
    rows = np.arange(N)
    xt = np.full_like(x, MASK)
    nll = np.zeros(N)
    for j in range(L):
        logp = _log_softmax(_logits(model, xt, schedule))                   # (N, L, 27)
        if isinstance(order, str):                                          # 'confident'
            pos = np.where(xt == MASK, logp.max(-1), -np.inf).argmax(axis=1)
        else:
            pos = order[:, j]
        nll -= logp[rows, pos, x[rows, pos]]
        xt[rows, pos] = x[rows, pos]
    return nll


def _length_first_chunk(model, x, schedule):
    """-log p(x) under 'length first, then one most-confident letter per step' (module docstring): (N,).
    Rows with a letter after a PAD, or no letter, have probability 0 (inf)."""
    N, L = x.shape
    rows, positions = np.arange(N), np.arange(L)
    n = (x != PAD).sum(axis=1)
    valid = (n >= 1) & np.all((x != PAD) == (positions < n[:, None]), axis=1)
    xt = np.full_like(x, MASK)

    def log_probs(xt, letters_only):
        logits = _logits(model, xt, schedule)
        logits[..., PAD] = np.where(letters_only, -np.inf, logits[..., PAD])
        return _log_softmax(logits)
    p_len = length_probs(np.exp(log_probs(xt, False)[..., PAD]))
    p_len = p_len / p_len.sum(axis=1, keepdims=True)                             # P(len = 1..L)
    with np.errstate(divide="ignore"):
        nll = -np.log(p_len[rows, np.clip(n - 1, 0, L - 1)])
    letters = positions < n[:, None]
    xt = np.where(letters, MASK, PAD)
    last = positions == (n - 1)[:, None]
    for _ in range(n.max()):
        masked = xt == MASK
        active = masked.any(axis=1)
        logp = log_probs(xt, letters)
        pos = np.where(masked, np.where(last, np.inf, logp.max(-1)), -np.inf).argmax(axis=1)  # last letter first
        target = np.where(valid, x[rows, pos], 0)
        nll -= np.where(active, logp[rows, pos, target], 0.0)
        xt[rows[active], pos[active]] = x[rows[active], pos[active]]
    return np.where(valid, nll, np.inf)
