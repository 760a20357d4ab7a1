"""One evaluation for either kind of model: test likelihood with its standard error, and sample quality.

Likelihood, in nats per character (letters + 1 end token, data.chars_per_name):
* AR model: the exact test NLL, sum_names -log p(name) / sum_names chars.
* denoiser: the NELBO (likelihood.nelbo), the exact NLL of each decoding order in `orders` (orders.py: the
  denoiser read as an autoregressive model in that order) and, on request, the importance-weighted bound over
  K random orders (orders.iw_bound), a bound on the denoiser's own NLL.
Standard errors: for exact figures (AR NLL, ordered NLL) and the bound B_K the test-set sampling error of the
ratio sum(nll) / sum(chars) over names (delta method); for the NELBO, likelihood.nelbo's Monte-Carlo error.
Against another model scored on the same names (compare.py: the AR), each per-name figure also carries its gap,
the same ratio of the per-name differences (paired_gap), whose error is that of the difference.

Samples: `generate` draws names from either model; `sample_quality` adds the figures of metrics.sample_report.

Everything here runs in fixed seeded chunks of rows (chunks.py): pass a ModelPool as `pool` to spread them
over worker processes; the names and every figure are the same bits for any number of workers (and agree to
float32 rounding with no pool: this process may run BLAS on several threads, a worker runs it on one).
"""
import time

import numpy as np

from .autoregressive import ARSamples, is_autoregressive, row_nll, sample_ar
from .chunks import chunk_bounds, run
from .data import chars_per_name, decode
from .likelihood import nelbo
from .metrics import generative_nll, sample_report
from .orders import DECODING_ORDERS, bound_by_orders, iw_bound, ordered_nll, random_orders_nll
from .sampler import Samples, sample


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


def paired_gap(nll, reference, chars):
    """How far one model's NLL lies from another's on the same names, nats/char: ratio_figure of the per-name
    differences nll - reference (N,). Its se is the test-split error of that difference: which names happen to be
    in the split moves both models alike (a long, rare name is hard for either), and that part cancels, so the
    gap is measured far more tightly than either figure."""
    nll, reference = np.asarray(nll, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if nll.shape != reference.shape:
        raise ValueError(f"paired_gap: {reference.shape[0] if reference.ndim else 'a scalar'} reference NLLs for "
                         f"{len(nll)} names; pair them name by name")
    return ratio_figure(nll - reference, chars)


def likelihood_figures(model, x, seed=0, schedule=None, target_se=0.01, orders=DECODING_ORDERS, iw_orders=0,
                       pool=None, reference=None):
    """Likelihood figures of `model` on rows x (N, L), nats/char, each dict(nll, se, seconds).
    AR: {'nll'}; denoiser: {'nelbo'} + one per decoding order in `orders` (default all: 'left_to_right',
    'confident', 'length_first'); nelbo also holds repeats and method. iw_orders = K > 0 adds 'random_orders',
    the importance-weighted bound over K random orders, with its `bound_by_orders`. pool: a ModelPool or None.
    reference: per-name NLLs (N,) of another model on the same rows (compare.py passes the AR's); every figure
    but the NELBO then carries `gap`, its difference from them with the paired standard error (paired_gap)."""
    chars = chars_per_name(x)
    out = {}

    def per_name(nll):                   # a figure from per-name NLLs (N,), paired with the reference if any
        figure = ratio_figure(nll, chars)
        return figure if reference is None else dict(figure, gap=paired_gap(nll, reference, chars))

    def timed(name, compute):
        t0 = time.perf_counter()
        out[name] = dict(compute(), seconds=time.perf_counter() - t0)
    if is_autoregressive(model):
        timed("nll", lambda: per_name(row_nll(model, x, pool)))
        return out

    def run_nelbo():
        ev = nelbo(model, x, schedule, seed=seed, target_se=target_se, pool=pool)
        return dict(nll=ev["nelbo"], se=ev["se"], repeats=ev["repeats"], method=ev["method"])
    timed("nelbo", run_nelbo)
    for order in orders:
        timed(order, lambda: per_name(ordered_nll(model, x, order, schedule, pool)))
    if iw_orders:
        def run_iw():
            nll = random_orders_nll(model, x, iw_orders, seed, schedule, pool)
            return dict(per_name(iw_bound(nll)), orders=iw_orders,
                        bound_by_orders=bound_by_orders(nll, chars))
        timed("random_orders", run_iw)
    return out


LIKELIHOOD_LABELS = dict(nll="test NLL (exact)", nelbo="test NELBO",
                         left_to_right="test NLL of the left-to-right sampler (exact)",
                         confident="test NLL of the most-confident-first sampler (exact)",
                         length_first="test NLL of the length-first sampler (exact)",
                         random_orders="test NLL bound over {orders} random orders (importance-weighted)")
SE_NOTE = ("± se: for the NELBO, the Monte-Carlo error from its random masks; for an exact NLL (and the bound over "
           "random orders), the error from which names happen to be in the test split.")
GAP_NOTE = ("The gap is the difference from the AR's NLL name by name (nats/char); its paired se is the test-split "
            "error of that difference, in which what moves both models alike (names hard for either) cancels.")


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
    gives every other figure relative to its exact NLL (+7.0% = 7% more nats/char than the AR), and when the
    figures carry their paired `gap` to it, another gives that gap with its paired se."""
    exact = [f["nll"] for figures in models.values() for k, f in figures.items() if k == "nll"]
    relative = len(exact) == 1
    paired = any("gap" in f for figures in models.values() for f in figures.values())
    header = ["model", "test likelihood", "nats/char", "± se"] + ["vs AR"] * relative + \
        ["gap to AR ± paired se"] * paired
    rows = []
    for name, figures in models.items():
        for k, f in figures.items():
            row = [name, label(k, f).replace("test ", ""), f"{f['nll']:.4f}", f"{f['se']:.4f}"]
            if relative:
                row.append(f"{100 * (f['nll'] / exact[0] - 1):+.1f}%" if k != "nll" else "")
            if paired:
                row.append(f"{f['gap']['nll']:+.4f} ± {f['gap']['se']:.4f}" if "gap" in f else "")
            rows.append(row)
    return markdown_table(header, rows) + "\n\n" + SE_NOTE + (" " + GAP_NOTE if paired else "")


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
