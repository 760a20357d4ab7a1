"""One evaluation for either kind of model: test likelihood with its standard error, and sample quality.

Likelihood, in nats per character (letters + 1 end token, data.chars_per_name):
* AR model: the exact test NLL, sum_names -log p(name) / sum_names chars.
* denoiser: the NELBO (likelihood.nelbo), and the exact log-likelihood of two fixed decoding orders. Any
  rule that picks the next position to reveal from what is already revealed makes the denoiser an
  autoregressive model in that order,
      -log p_order(x) = sum_{j=1..L} -log p(x_{s_j} | x at s_1..s_{j-1}, MASK elsewhere),
  scored by teacher forcing the true token at each chosen position s_j (one forward pass per position, the
  whole batch at once). Orders: 'left_to_right' (s_j = j) and 'confident' (s_j = the masked position whose
  top probability is highest, one token per step). Each order defines a model of its own, the sampler that
  follows it, and -log p_order(x) is that model's exact NLL (not a bound on the diffusion model's). The NELBO
  is the average of -log p_order over uniformly random orders, so a good fixed order can score below it.
  'length_first' is the default sampler's process with one token per step: the length n from the all-MASK
  PAD probabilities (P(len <= i) = cummax_i p(PAD at i), P(len = n) their differences for n = 1..L,
  renormalized), PAD written after it, then the last letter (which tells the model the length: to it a MASK
  could be a PAD), then the most confident masked position among the first n, with PAD excluded (letters
  renormalized). It puts no mass on rows with a letter after PAD, so
      -log p(x) = -log P(len = n) + sum_{j=1..n} -log p(x_{s_j} | revealed; letters only).
* denoiser, optionally: an importance-weighted bound over K uniformly random orders. Revealing one uniformly
  random position a step (MDLM's ancestral sampler with S = L) makes the denoiser a uniform mixture of the
  L! fixed-order models, p(x) = E_sigma[p_sigma(x)] (Hoogeboom et al. 2022, "Autoregressive diffusion
  models"); the NELBO is E_sigma[-log p_sigma(x)], its Jensen bound. With K orders drawn per name,
      B_K(x) = -log (1/K) sum_{k=1..K} p_{sigma_k}(x)
  is the importance-weighted bound (Burda et al. 2016, IWAE): B_1 is one draw of the NELBO, E[B_K] falls with K
  and tends to -log p(x), the exact NLL of the diffusion model itself. Each order costs L forward passes.
Standard errors: for exact figures (AR NLL, ordered NLL) and the bound B_K the test-set sampling error of the
ratio sum(nll) / sum(chars) over names (delta method); for the NELBO, likelihood.nelbo's Monte-Carlo error.

Samples: `generate` draws names from either model; `sample_quality` adds the figures of metrics.sample_report.

Everything here runs in fixed seeded chunks of rows (chunks.py): pass a ModelPool as `pool` to spread them
over worker processes; the names and every figure are the same bits for any number of workers (and agree to
float32 rounding with no pool: this process may run BLAS on several threads, a worker runs it on one).
"""
import time

import numpy as np

from tinygrad_lite import no_grad
from tinygrad_lite.nn import eval_mode

from .autoregressive import ARSamples, is_autoregressive, row_nll, sample_ar
from .chunks import chunk_bounds, run
from .data import MASK, PAD, chars_per_name, decode
from .likelihood import nelbo
from .metrics import generative_nll, sample_report
from .predict import predict_logits
from .sampler import Samples, length_probs, sample
from .schedule import CosineSchedule

DECODING_ORDERS = ("left_to_right", "confident", "length_first")


def ratio_figure(nll, chars):
    """Per-name NLL (N,) and chars (N,) -> dict(nll = sum nll / sum chars, se): the standard error of that
    ratio over names, se = sqrt(sum_i (nll_i - r c_i)^2 / (N (N - 1))) * N / sum c (delta method)."""
    nll, chars = np.asarray(nll, dtype=np.float64), np.asarray(chars, dtype=np.float64)
    if not np.all(np.isfinite(nll)):                     # a name the model cannot produce
        return dict(nll=float("inf"), se=float("nan"), impossible=int((~np.isfinite(nll)).sum()))
    r = nll.sum() / chars.sum()
    n = len(nll)
    se = np.sqrt(((nll - r * chars) ** 2).sum() / (n * (n - 1))) * n / chars.sum() if n > 1 else float("nan")
    return dict(nll=float(r), se=float(se))


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


def _log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


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
        t = schedule.time_at((xt == MASK).mean(axis=1)) if model.time_input else None
        logits = predict_logits(model, xt, t)                               # (N, L, 27)
        logp = _log_softmax(logits)
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
        t = schedule.time_at((xt == MASK).mean(axis=1)) if model.time_input else None
        logits = predict_logits(model, xt, t)                                   # (N, L, 27)
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


def likelihood_figures(model, x, seed=0, schedule=None, target_se=0.01, orders=DECODING_ORDERS, iw_orders=0,
                       pool=None):
    """Likelihood figures of `model` on rows x (N, L), nats/char, each dict(nll, se, seconds).
    AR: {'nll'}; denoiser: {'nelbo'} + one per decoding order in `orders` (default all: 'left_to_right',
    'confident', 'length_first'); nelbo also holds repeats and method. iw_orders = K > 0 adds 'random_orders',
    the importance-weighted bound over K random orders, with its `bound_by_orders`. pool: a ModelPool or None."""
    chars = chars_per_name(x)
    out = {}

    def timed(name, compute):
        t0 = time.perf_counter()
        out[name] = dict(compute(), seconds=time.perf_counter() - t0)
    if is_autoregressive(model):
        timed("nll", lambda: ratio_figure(row_nll(model, x, pool), chars))
        return out

    def run_nelbo():
        ev = nelbo(model, x, schedule, seed=seed, target_se=target_se, pool=pool)
        return dict(nll=ev["nelbo"], se=ev["se"], repeats=ev["repeats"], method=ev["method"])
    timed("nelbo", run_nelbo)
    for order in orders:
        timed(order, lambda: ratio_figure(ordered_nll(model, x, order, schedule, pool), chars))
    if iw_orders:
        def run_iw():
            nll = random_orders_nll(model, x, iw_orders, seed, schedule, pool)
            return dict(ratio_figure(iw_bound(nll), chars), orders=iw_orders,
                        bound_by_orders=bound_by_orders(nll, chars))
        timed("random_orders", run_iw)
    return out


def bound_by_orders(order_nll, chars):
    """[(k, B_k in nats/char)] for k = 1, 2, 4, ... <= K from (K, N) NLLs in K orders: each B_k the mean over the
    K // k disjoint groups of k orders, so the figures show how the bound tightens with the orders spent."""
    K, ks = len(order_nll), [2 ** i for i in range(len(order_nll).bit_length())]
    return [(k, float(np.mean([iw_bound(order_nll[i:i + k]).sum() for i in range(0, K - k + 1, k)]) / chars.sum()))
            for k in ks]


LIKELIHOOD_LABELS = dict(nll="test NLL (exact)", nelbo="test NELBO",
                         left_to_right="test NLL of the left-to-right sampler (exact)",
                         confident="test NLL of the most-confident-first sampler (exact)",
                         length_first="test NLL of the length-first sampler (exact)",
                         random_orders="test NLL bound over {orders} random orders (importance-weighted)")
SE_NOTE = ("± se: for the NELBO, the Monte-Carlo error from its random masks; for an exact NLL (and the bound over "
           "random orders), the error from which names happen to be in the test split.")


def label(name, figure):
    """The words for likelihood figure `name` (LIKELIHOOD_LABELS, with the figure's own numbers filled in)."""
    return LIKELIHOOD_LABELS[name].format(**figure)


NELBO_METHODS = dict(identity="each a mask size k and k masked positions (the exact identity)",
                     monte_carlo="each a time t and its masks")


def format_likelihood(figures):
    """Lines like 'test NLL (exact) 2.0012 ± 0.0110 nats/char (± from which names happen to be in the test split,
    0.4s)': the figure, its standard error, and where that error comes from, in plain words."""
    lines = []
    for name, f in figures.items():
        kind = (f"± from the random masks: {f['repeats']} mask draws a name, {NELBO_METHODS[f['method']]}"
                if name == "nelbo" else "± from which names happen to be in the test split")
        if "impossible" in f:
            kind = f"{f['impossible']} names have probability 0 under it"
        lines.append(f"{label(name, f)} {f['nll']:.4f} ± {f['se']:.4f} nats/char ({kind}, "
                     f"{f['seconds']:.1f}s)")
    return lines


def _sample_job(model, job):
    num, seed, options = job
    return sample(model, num, seed=seed, **options)


def _sample_ar_job(model, job):
    num, seed, options = job
    return sample_ar(model, num, seed=seed, **options)


def sample_chunked(model, num, seed=0, pool=None, **options):
    """sampler.sample (a denoiser) or autoregressive.sample_ar (the AR model) of `num` rows in chunks of
    chunks.CHUNK_ROWS, chunk c drawn with the seed (seed, c); `options` are the sampler's (steps, temperature,
    template, ...). Returns one Samples or ARSamples of all the rows, in chunk order (their .join)."""
    autoregressive = is_autoregressive(model)
    jobs = [(b - a, [seed, c], options) for c, (a, b) in enumerate(chunk_bounds(num))] or [(0, [seed, 0], options)]
    parts = run(model, _sample_ar_job if autoregressive else _sample_job, jobs, pool)
    return (ARSamples if autoregressive else Samples).join(parts)


def own_nll(model, tokens, pool=None):
    """nats/char of rows `tokens` (N, L) under the distribution the model's default sampler draws from at T = 1:
    the AR model's own likelihood, or a denoiser's 'length_first' ordered likelihood (its default sampler at
    S = L reveals one token a step and draws exactly that model: tests/test_sampler.py). For the model's own
    samples this estimates the entropy H(q) of what it draws, a floor under their expected NLL under any
    other model, an independent judge included (cross-entropy >= entropy, Gibbs' inequality)."""
    nll = row_nll(model, tokens, pool) if is_autoregressive(model) else \
        ordered_nll(model, tokens, "length_first", pool=pool)
    return float(nll.sum() / chars_per_name(tokens).sum())


def generate(model, num, temperature=1.0, steps=None, seed=0, pool=None):
    """Names from either model (sample_chunked). steps: the denoiser's unmasking steps (default L; ignored by
    the AR model). Returns dict(names, network_calls, seconds)."""
    t0 = time.perf_counter()
    options = dict(temperature=temperature) if is_autoregressive(model) else \
        dict(temperature=temperature, steps=steps or model.L)
    out = sample_chunked(model, num, seed, pool, **options)
    seconds = time.perf_counter() - t0
    return dict(names=[decode(row) for row in out.tokens], network_calls=out.network_calls, seconds=seconds)


def sample_quality(model, data, temperature=1.0, num=1000, steps=None, seed=0, ar_model=None, pool=None):
    """Generate `num` names and score them: metrics.sample_report (novel, unique, length TV to test, bigram KL
    to train, and the generative NLL under ar_model if given; `own_nll` instead, at T = 1 only, when ar_model
    is the model itself) + temperature, steps, network calls, samples/s
    and the first 20 names. pool: a ModelPool of `model` to sample on, or None."""
    gen = generate(model, num, temperature, steps, seed, pool)
    test_names = [decode(r) for r in data.test]
    own = ar_model is model                      # an AR model scoring its own samples is no judge of them:
    quality = sample_report(gen["names"], data.train_names, test_names, None if own else ar_model)
    if own and temperature == 1.0:               # at T = 1 their NLL under it estimates its entropy
        quality["own_nll"] = generative_nll(model, gen["names"])
    return dict(temperature=temperature, steps=None if is_autoregressive(model) else (steps or model.L),
                network_calls=gen["network_calls"], seconds=gen["seconds"],
                samples_per_second=num / gen["seconds"], examples=gen["names"][:20], **quality)


def evaluate_model(model, data, temperatures=(1.0,), num=1000, steps=None, seed=0, ar_model=None, target_se=0.01,
                   iw_orders=0, pool=None):
    """The full evaluation of one model on the test split: dict(likelihood (likelihood_figures, with the bound
    over iw_orders random orders if > 0), samples (one sample_quality dict per temperature)). ar_model scores the
    samples (default: the model itself if AR). pool: a ModelPool of `model`, or None."""
    if ar_model is None and is_autoregressive(model):
        ar_model = model
    return dict(likelihood=likelihood_figures(model, data.test, seed=seed, target_se=target_se, iw_orders=iw_orders,
                                              pool=pool),
                samples=[sample_quality(model, data, t, num, steps, seed, ar_model, pool) for t in temperatures])


def markdown_table(header, rows):
    """header: column names; rows: lists of cells (already formatted strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def likelihood_table(models):
    """models: {name: likelihood_figures dict} -> one row per figure; when exactly one model is AR, a column
    gives every other figure relative to its exact NLL (+7.0% = 7% more nats/char than the AR)."""
    exact = [f["nll"] for figures in models.values() for k, f in figures.items() if k == "nll"]
    rows = [[name, label(k, f).replace("test ", ""), f"{f['nll']:.4f}", f"{f['se']:.4f}"]
            + ([f"{100 * (f['nll'] / exact[0] - 1):+.1f}%" if k != "nll" else ""] if len(exact) == 1 else [])
            for name, figures in models.items() for k, f in figures.items()]
    return markdown_table(["model", "test likelihood", "nats/char", "± se"] + (["vs AR"] if len(exact) == 1 else []),
                          rows) + "\n\n" + SE_NOTE


def _gen_nll(row):
    return f"{row['generative_nll']:.3f}" if "generative_nll" in row else "n/a"


def samples_table(models, first="model"):
    """models: {label: [sample_quality dicts]} -> one row per (label, temperature/steps). No speed column: speed
    is bench.py's, measured in one run."""
    rows = [[label, f"{r['temperature']:g}", "-" if r["steps"] is None else r["steps"], r["network_calls"],
             f"{100 * r['novel']:.1f}%", f"{100 * r['unique']:.1f}%", f"{r['length_tv']:.3f}",
             f"{r['bigram_kl']:.4f}", _gen_nll(r)]
            for label, quality in models.items() for r in quality]
    return markdown_table([first, "T", "steps S", "network calls a name", "novel", "unique", "length TV",
                           "bigram KL", "gen NLL (AR)"], rows)


def curves_table(curves, steps_per_epoch=None):
    """curves: {label: [(step, validation nats/char)]} -> one row per step, one column per model; with
    steps_per_epoch (training names / batch size), an epochs column too."""
    steps = sorted({s for curve in curves.values() for s, _ in curve})
    lookup = {label: dict(curve) for label, curve in curves.items()}
    epochs = [[f"{s / steps_per_epoch:.1f}"] if steps_per_epoch else [] for s in steps]
    rows = [[s] + e + [f"{lookup[label][s]:.4f}" if s in lookup[label] else "" for label in curves]
            for s, e in zip(steps, epochs)]
    return markdown_table(["step"] + (["epochs"] if steps_per_epoch else []) + list(curves), rows)
