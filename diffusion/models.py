"""The three denoisers, and the one Transformer they share with the AR baseline.

Each denoiser maps a partly masked row xt (B, L) of token ids (and optionally the time t (B,)) to logits
(B, L, 27) over letters + PAD: the SUBS parameterization never predicts MASK, and the loss and the sampler only
read predictions at masked positions (unmasked tokens are carried over unchanged). `Transformer` is the
network of both the default denoiser (bidirectional) and the AR baseline (causal=True, autoregressive.py).
"""
import numpy as np

from tinygrad_lite import Tensor, nn

from .data import NUM_CLASSES, VOCAB_SIZE


class Denoiser(nn.Module):
    """Shared plumbing: `config` rebuilds the model (checkpoint.build_model); `time_input` says whether it reads t."""

    def __init__(self, kind, L, time_input, **hyper):
        self.config = dict(kind=kind, L=L, time_input=time_input, **hyper)
        self.L, self.time_input = L, time_input

    def _time_column(self, t, B):
        """t as a (B, 1) float32 input column, or None for a model without time input."""
        if not self.time_input:
            return None
        if t is None:
            raise ValueError(f"{type(self).__name__} reads the time t: pass t (B,) to forward")
        return Tensor(np.asarray(t, dtype=np.float32).reshape(B, 1))

    def _rows(self, xt):
        """xt as a (B, L) array of token ids, or a ValueError naming the model and the shape."""
        xt = np.asarray(xt)
        if xt.ndim != 2 or xt.shape[1] != self.L:
            raise ValueError(f"{type(self).__name__}: expected token rows of shape (B, {self.L}), got {xt.shape}")
        return xt

    def _one_hot(self, xt):
        """(B, L) ids -> (B, L * 28) float32 one-hot rows: the MLPs' input (a constant, so no graph)."""
        xt = self._rows(xt)
        B = xt.shape[0]
        onehot = np.zeros((B, self.L * VOCAB_SIZE), dtype=np.float32)
        onehot[np.arange(B)[:, None], np.arange(self.L) * VOCAB_SIZE + xt] = 1.0
        return onehot


class MLPDenoiser(Denoiser):
    """2 layers: [one-hot(xt) flattened, t] -> Linear -> ReLU -> Linear -> logits (B, L, 27)."""

    def __init__(self, L=16, hidden=512, time_input=True):
        super().__init__("mlp", L, time_input, hidden=hidden)
        self.fc1 = nn.Linear(L * VOCAB_SIZE + time_input, hidden)
        self.fc2 = nn.Linear(hidden, L * NUM_CLASSES)

    def _input(self, xt, t):
        x = self._one_hot(xt)
        tcol = self._time_column(t, x.shape[0])
        return Tensor(np.concatenate([x, tcol.data], axis=1) if tcol is not None else x)

    def forward(self, xt, t=None):
        h = self.fc1(self._input(xt, t)).relu()
        return self.fc2(h).reshape(-1, self.L, NUM_CLASSES)


class SkipMLPDenoiser(MLPDenoiser):
    """3 layers with a residual skip: h1 = relu(W1 x), h2 = relu(W2 h1) + h1, logits = W3 h2."""

    def __init__(self, L=16, hidden=512, time_input=True):
        super().__init__(L, hidden, time_input)
        self.config["kind"] = "skip_mlp"
        self.fc_mid = nn.Linear(hidden, hidden)

    def forward(self, xt, t=None):
        h1 = self.fc1(self._input(xt, t)).relu()
        h2 = self.fc_mid(h1).relu() + h1
        return self.fc2(h2).reshape(-1, self.L, NUM_CLASSES)


class Transformer(nn.Module):
    """The project's one Transformer: token + position (+ optional time) embeddings -> `layers` pre-norm blocks
    (width `dim`, `heads` heads, feed-forward width `mlp_ratio * dim`) -> LayerNorm -> Linear -> logits (B, T, 27)
    over letters + PAD.

    causal=False: every position attends to every other, so a denoiser reads both sides of a gap
    (TransformerDenoiser). causal=True: position i attends to positions <= i, the autoregressive baseline
    (autoregressive.ARTransformer). Everything else is shared."""

    def __init__(self, L, dim, layers, heads, dropout, causal, time_input=False, mlp_ratio=4):
        self.L, self.causal = L, causal
        self.tok = nn.Embedding(VOCAB_SIZE, dim)
        self.pos = nn.Embedding(L, dim)
        self.time = nn.Linear(1, dim) if time_input else None
        self.blocks = [nn.TransformerBlock(dim, heads, mlp_ratio=mlp_ratio, causal=causal, dropout=dropout)
                       for _ in range(layers)]
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def logits(self, tokens, tcol=None):
        """tokens (B, T) ids, T <= L -> logits (B, T, 27). tcol: the (B, 1) time column, or None."""
        h = self.tok(tokens) + self.pos(np.arange(tokens.shape[1]))
        if tcol is not None:
            h = h + self.time(tcol).reshape(len(tokens), 1, -1)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


class TransformerDenoiser(Denoiser, Transformer):
    """The default denoiser: the bidirectional Transformer (causal=False) on xt (B, L), with the time t as one
    more embedding when time_input."""

    def __init__(self, L=16, dim=64, layers=4, heads=4, dropout=0.0, time_input=False, mlp_ratio=4):
        Denoiser.__init__(self, "transformer", L, time_input, dim=dim, layers=layers, heads=heads, dropout=dropout,
                          mlp_ratio=mlp_ratio)
        Transformer.__init__(self, L, dim, layers, heads, dropout, causal=False, time_input=time_input,
                             mlp_ratio=mlp_ratio)

    def forward(self, xt, t=None):
        xt = self._rows(xt)
        return self.logits(xt, self._time_column(t, xt.shape[0]))
