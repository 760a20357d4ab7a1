"""The three denoisers. Each maps a partly masked row xt (B, L) of token ids (and optionally the time t (B,))
to logits (B, L, 27) over letters + PAD: the SUBS parameterization never predicts MASK, and the loss and the
sampler only read predictions at masked positions (unmasked tokens are carried over unchanged).
"""
import numpy as np

from tinygrad_lite import Tensor, nn

from .data import NUM_CLASSES, VOCAB_SIZE


class Denoiser(nn.Module):
    """Shared plumbing: `config` rebuilds the model (build_model(config)); `time_input` says whether it reads t."""

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

    def _one_hot(self, xt):
        """(B, L) ids -> (B, L * 28) float32 one-hot rows: the MLPs' input (a constant, so no graph)."""
        xt = np.asarray(xt)
        if xt.ndim != 2 or xt.shape[1] != self.L:
            raise ValueError(f"{type(self).__name__}: expected token rows of shape (B, {self.L}), got {xt.shape}")
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


class TransformerDenoiser(Denoiser):
    """Token + position (+ optional time) embeddings -> `layers` pre-norm bidirectional Transformer blocks
    (`heads` heads, width `dim`) -> LayerNorm -> Linear -> logits (B, L, 27). Every position attends to every
    other (no causal mask): the denoiser reads both sides of a gap."""

    def __init__(self, L=16, dim=64, layers=4, heads=4, dropout=0.0, time_input=False):
        super().__init__("transformer", L, time_input, dim=dim, layers=layers, heads=heads, dropout=dropout)
        self.tok = nn.Embedding(VOCAB_SIZE, dim)
        self.pos = nn.Embedding(L, dim)
        self.time = nn.Linear(1, dim) if time_input else None
        self.blocks = [nn.TransformerBlock(dim, heads, dropout=dropout) for _ in range(layers)]
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, xt, t=None):
        xt = np.asarray(xt)
        if xt.ndim != 2 or xt.shape[1] != self.L:
            raise ValueError(f"TransformerDenoiser: expected token rows of shape (B, {self.L}), got {xt.shape}")
        h = self.tok(xt) + self.pos(np.arange(self.L))
        tcol = self._time_column(t, xt.shape[0])
        if tcol is not None:
            h = h + self.time(tcol).reshape(xt.shape[0], 1, -1)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


from .autoregressive import ARTransformer  # noqa: E402  (the AR baseline, so checkpoint.load rebuilds it too)

MODELS = {"mlp": MLPDenoiser, "skip_mlp": SkipMLPDenoiser, "transformer": TransformerDenoiser,
          "ar_transformer": ARTransformer}


def build_model(config):
    """Rebuild a denoiser (or the AR baseline) from its `config` dict (as stored in a checkpoint)."""
    config = dict(config)
    kind = config.pop("kind")
    if kind not in MODELS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODELS)}")
    return MODELS[kind](**config)
