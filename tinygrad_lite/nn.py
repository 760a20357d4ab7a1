"""Layers (as torch.nn): a Module finds its Parameters by walking its attributes in definition order."""
import contextlib
import math

import numpy as np

from . import functional as F
from .random import generator
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module: requires_grad=True, found by parameters()."""

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Module:
    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _children(self):
        """(name, Parameter or Module) pairs in attribute order; lists and tuples of modules are walked."""
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Parameter, Module)):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix=""):
        for name, child in self._children():
            if isinstance(child, Parameter):
                yield prefix + name, child
            else:
                yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for _, child in self._children():
            if isinstance(child, Module):
                yield from child.modules()

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def train(self, mode=True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self):
        """name -> a copy of the weight as a plain NumPy array (round-trips exactly)."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise KeyError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: {name} has shape {value.shape} in the checkpoint, "
                                 f"{p.shape} in the model")
            p.data[...] = value

    def num_parameters(self):
        return sum(p.size for p in self.parameters())


def _uniform(shape, bound, dtype):
    return generator().uniform(-bound, bound, size=shape).astype(dtype)


class Linear(Module):
    """y = x W^T + b with W (out, in); PyTorch's init U(-1/sqrt(in), 1/sqrt(in)) for both."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        bound = 1 / math.sqrt(in_features)
        self.weight = Parameter(_uniform((out_features, in_features), bound, dtype))
        self.bias = Parameter(_uniform((out_features,), bound, dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class Embedding(Module):
    """A (num_embeddings, dim) table; forward(indices (...)) -> (..., dim). Init N(0, 1) as PyTorch."""

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32):
        self.weight = Parameter(generator().standard_normal((num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, indices):
        return F.embedding(indices, self.weight)


class LayerNorm(Module):
    def __init__(self, dim, eps=1e-5, dtype=np.float32):
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype))
        self.bias = Parameter(np.zeros(dim, dtype))

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(Module):
    def __init__(self, dim, eps=None, dtype=np.float32):
        self.eps = eps
        self.weight = Parameter(np.ones(dim, dtype))

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class Dropout(Module):
    def __init__(self, p=0.5):
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class MLP(Module):
    """Linear(dim -> hidden) -> GELU -> Linear(hidden -> out) -> dropout: the Transformer's feed-forward."""

    def __init__(self, dim, hidden, out=None, dropout=0.0, dtype=np.float32):
        self.fc = Linear(dim, hidden, dtype=dtype)
        self.proj = Linear(hidden, out or dim, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class MultiHeadSelfAttention(Module):
    """Self-attention with `num_heads` heads over x (B, L, D); bidirectional unless causal=True.

    forward(x, key_padding_mask=None): key_padding_mask (B, L) bool, True = padding to ignore (as
    torch.nn.MultiheadAttention). Heads are a reshape, not a loop.

    The key projection has no bias (PyTorch's module has one; Whisper's attention drops it too): a key bias b
    adds q.b to every score of query q, a shift that softmax ignores, so its gradient is zero except for
    rounding, and Adam, which divides a gradient by its own size, would turn that rounding into real steps
    (and make training depend on how a batch is split over worker processes).
    """

    def __init__(self, dim, num_heads, causal=False, dropout=0.0, dtype=np.float32):
        if dim % num_heads:
            raise ValueError(f"MultiHeadSelfAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.causal, self.p = num_heads, causal, dropout
        self.query = Linear(dim, dim, dtype=dtype)
        self.key = Linear(dim, dim, bias=False, dtype=dtype)     # no bias: see the docstring
        self.value = Linear(dim, dim, dtype=dtype)
        self.proj = Linear(dim, dim, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x, key_padding_mask=None):
        B, L, D = x.shape
        H = self.num_heads
        q, k, v = (lin(x).reshape(B, L, H, D // H).permute(0, 2, 1, 3) for lin in (self.query, self.key, self.value))
        mask = None if key_padding_mask is None else ~np.asarray(key_padding_mask, dtype=bool)[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal,
                                           dropout_p=self.p, training=self.training)
        return self.dropout(self.proj(y.permute(0, 2, 1, 3).reshape(B, L, D)))


class TransformerBlock(Module):
    """Pre-norm residual block (GPT-2 layout): x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, dim, num_heads, mlp_ratio=4, causal=False, dropout=0.0, dtype=np.float32):
        self.ln1 = LayerNorm(dim, dtype=dtype)
        self.attn = MultiHeadSelfAttention(dim, num_heads, causal, dropout, dtype=dtype)
        self.ln2 = LayerNorm(dim, dtype=dtype)
        self.mlp = MLP(dim, mlp_ratio * dim, dropout=dropout, dtype=dtype)

    def forward(self, x, key_padding_mask=None):
        x = x + self.attn(self.ln1(x), key_padding_mask)
        return x + self.mlp(self.ln2(x))


@contextlib.contextmanager
def eval_mode(module):
    """with eval_mode(model): run `model` in eval mode (dropout off) and put back the mode it had, even when the
    block raises. What model.eval() ... model.train(was_training) in a try/finally says, once."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
