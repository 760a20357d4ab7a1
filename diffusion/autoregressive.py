"""The autoregressive baseline: a causal character Transformer trained next-token on the same rows.

A name x of n <= L letters is the row (x_0 .. x_{L-1}) = (letters, PAD, PAD, ...), as for the denoisers. The
model reads the row shifted right behind a start token, (START, x_0 .. x_{L-2}), and at position i predicts
x_i from x_<i (causal attention). PAD is the end token, so

    log p(x) = sum_{i=0}^{min(n, L-1)} log p(x_i | x_<i),

the letters then one end token; positions after the first PAD are not scored (the name is over). A name of
exactly L letters has no room for PAD: its end is implied by the length limit (probability 1), as for the
denoisers, which also model rows of L tokens. Costs are in nats per character, letters + 1 end token
(data.chars_per_name), the same unit as the diffusion NELBO.

START reuses the MASK id (27): the AR model never sees MASK, and the input vocabulary stays the same 28 tokens.
"""
from dataclasses import dataclass

import numpy as np

from tinygrad_lite import functional as F, no_grad
from tinygrad_lite.nn import eval_mode

from .chunks import chunk_bounds, run
from .data import LETTERS, MASK, NUM_CLASSES, PAD, chars_per_name, encode
from .draw import draw, tempered_softmax
from .models import Transformer
from .predict import predict_logits

START = MASK


class ARTransformer(Transformer):
    """The project's Transformer (models.Transformer) with causal=True: next-token logits (B, T, 27), T <= L.
    Same blocks and size as the default TransformerDenoiser. `config` rebuilds it (checkpoint.build_model)."""

    autoregressive = True
    time_input = False

    def __init__(self, L=16, dim=64, layers=4, heads=4, dropout=0.0, mlp_ratio=4):
        super().__init__(L, dim, layers, heads, dropout, causal=True, mlp_ratio=mlp_ratio)
        self.config = dict(kind="ar_transformer", L=L, dim=dim, layers=layers, heads=heads, dropout=dropout,
                           mlp_ratio=mlp_ratio)

    def forward(self, inputs):
        """inputs (B, T) token ids, T <= L (START first) -> logits (B, T, 27); position i sees inputs[:, :i+1]."""
        inputs = np.asarray(inputs)
        if inputs.ndim != 2 or not 1 <= inputs.shape[1] <= self.L:
            raise ValueError(f"ARTransformer: expected input rows of shape (B, T) with 1 <= T <= {self.L}, "
                             f"got {inputs.shape}")
        return self.logits(inputs)


def is_autoregressive(model):
    return getattr(model, "autoregressive", False)


def inputs_of(x):
    """Rows x (N, L) -> the model's input (N, L): START, then x shifted right by one (x_{L-1} is never read)."""
    return np.concatenate([np.full((len(x), 1), START, dtype=x.dtype), x[:, :-1]], axis=1)


def targets_of(x):
    """Rows x (N, L) -> targets (N, L): x up to and including the first PAD, -100 (not scored) after it."""
    after_end = np.cumsum(x == PAD, axis=1) - (x == PAD) > 0
    return np.where(after_end, -100, x)


def ar_prepare(model, x0, rng=None):
    """The parent's half of a step on a batch x0 (B, L), as diffusion.loss.prepare: rows (inputs (B, L),
    targets (B, L)) and the batch's denominator `chars` (letters + end tokens). rng is unused: no noise."""
    return (inputs_of(x0), targets_of(x0)), dict(chars=int(chars_per_name(x0).sum()))


def next_token_loss(model, inputs, targets, chars):
    """The loss half: total next-token NLL of the rows / the batch's `chars`. Returns (loss Tensor, the same
    as a float). Module-level, so a worker process can run it on a shard."""
    loss = F.cross_entropy(model(inputs), targets, reduction="sum") * (1.0 / chars)
    return loss, loss.item()


def ar_loss(model, x0, rng=None):
    """Training loss on a batch x0 (B, L): total next-token NLL / (letters + end tokens). Returns (loss Tensor,
    the same in nats/char as a float): ar_prepare, then next_token_loss on the whole batch."""
    rows, shared = ar_prepare(model, x0, rng)
    return next_token_loss(model, *rows, **shared)


def row_nll(model, x, pool=None):
    """Per-row total NLL in nats, -log p(x) = sum of the scored next-token costs, for rows x (N, L): (N,).
    In chunks of rows (chunks.py); pool: a ModelPool to spread them over, or None (this process)."""
    with eval_mode(model):
        parts = run(model, _row_nll_job, [x[a:b] for a, b in chunk_bounds(len(x))], pool)
    return np.concatenate(parts) if parts else np.zeros(0)


@no_grad()
def _row_nll_job(model, x):
    ce = F.cross_entropy(model(inputs_of(x)), targets_of(x), reduction="none")
    return ce.data.astype(np.float64).sum(axis=1)


def name_nll(ar_model, names):
    """Per-name total NLL in nats (letters + end token) of a list of names under the AR model: (N,) float64.
    Every name must have at most ar_model.L letters (ValueError otherwise)."""
    return row_nll(ar_model, encode(list(names), ar_model.L))


@dataclass
class ARSamples:
    tokens: np.ndarray        # (N, L) rows: letters, then PAD
    network_calls: int        # forward passes: one per generated position, until every row has ended

    @classmethod
    def join(cls, parts):
        """The ARSamples of consecutive chunks of rows as one (network_calls: the most any chunk made)."""
        return cls(np.concatenate([p.tokens for p in parts]), max(p.network_calls for p in parts))


@no_grad()
def sample_ar(model, num=1000, temperature=1.0, seed=0, prefix=""):
    """Generate `num` rows left to right: x_i ~ softmax(logits_i / T) given x_<i, until PAD or L letters.
    `prefix` (letters a-z, at most L) starts every row: the model continues it, as a template "prefix*" asks.
    Step i runs the model on the first i + 1 inputs of the rows still going, each distinct prefix once (all
    rows start alike, and many share their first letters). Same seed -> same rows."""
    if temperature < 0:
        raise ValueError(f"sample_ar: temperature must be >= 0, got {temperature}")
    if len(prefix) > model.L or any(c not in LETTERS for c in prefix):
        raise ValueError(f"sample_ar: prefix {prefix!r} must be at most L={model.L} letters a-z")
    rng = np.random.default_rng(seed)
    x = np.full((num, model.L), PAD, dtype=np.int64)
    inputs = np.full((num, model.L), START, dtype=np.int64)
    x[:, :len(prefix)] = encode([prefix], model.L)[0, :len(prefix)]
    shown = min(len(prefix), model.L - 1)
    inputs[:, 1:shown + 1] = x[:, :shown]                     # the prefix, shifted right behind START
    ended = np.zeros(num, dtype=bool)
    calls = 0
    with eval_mode(model):
        for i in range(len(prefix), model.L):
            logits = np.zeros((num, NUM_CLASSES))                # ended rows draw too (same random stream), then PAD
            logits[~ended] = predict_logits(model, inputs[~ended, :i + 1])[:, i]   # each distinct prefix once
            calls += 1
            token = np.where(ended, PAD, draw(tempered_softmax(logits, temperature), temperature, rng))
            x[:, i] = token
            ended |= token == PAD
            if ended.all():
                break
            if i + 1 < model.L:
                inputs[:, i + 1] = token
    return ARSamples(x, calls)
