"""Functional ops (as torch.nn.functional), most of them fused.

A fused op is one graph node with a hand-derived backward. It stands in for a composition of tensor.py's
primitives, which would record several nodes and pass over memory several times. Each docstring states the
composition it replaces, and tests/test_functional.py checks each fused op against it (values and
gradients, in float64, for a random upstream gradient) as well as against finite differences.

Convention: class / feature dimension last, e.g. logits (..., V) with targets (...). For 2-D input this is
exactly PyTorch's; for (B, L, V) PyTorch would want (B, V, L) — we keep the layout models actually produce.
"""
import math

import numpy as np

from .tensor import Tensor
from . import random as _random


def softmax(x, axis=-1):
    return x.softmax(axis)


def log_softmax(x, axis=-1):
    return x.log_softmax(axis)


def relu(x):
    return x.relu()


# Sums over short rows, as BLAS matrix-vector products. NumPy's own reductions pay a setup cost per row, which
# dominates on rows as short as ours (16 to 256 entries); one GEMV over a (rows, D) view does not.
def _rowdot(v, w):
    """v @ w along the last axis, kept as a size-1 axis: (..., D), (D,) -> (..., 1)."""
    if v.shape[-1] == 0:
        return np.zeros(v.shape[:-1] + (1,), v.dtype)
    return (v.reshape(-1, v.shape[-1]) @ w).reshape(v.shape[:-1] + (1,))


def _rowsum(v):
    """v.sum(axis=-1, keepdims=True), as a GEMV with a vector of ones."""
    return _rowdot(v, np.ones(v.shape[-1], v.dtype))


def _colsum(v):
    """v summed over every axis but the last, as one GEMV (ones @ v): the bias and norm-weight gradients."""
    v = v.reshape(-1, v.shape[-1])
    return np.ones(v.shape[0], v.dtype) @ v if v.shape[0] else v.sum(axis=0)


def _rowmax(v):
    """v.max(axis=-1, keepdims=True), reducing a transposed copy along its first axis: NumPy vectorizes that
    across rows, while a max along each short contiguous row is a loop of tiny reductions."""
    n = v.shape[-1]
    return np.ascontiguousarray(v.reshape(-1, n).T).max(axis=0).reshape(v.shape[:-1] + (1,))


def gelu(x):
    """GELU, tanh approximation (GPT-2), fused. Composed (Tensor.gelu: pow, mul, add, tanh, eight nodes):
        y = x (1 + tanh(u)) / 2,   u = c (x + 0.044715 x^3),   c = sqrt(2/pi).

    Since (1 + tanh(u)) / 2 = sigmoid(2u) = s, y = x s, and the derivative is
        dy/dx = s + x s (1 - s) 2 du/dx,   du/dx = c (1 + 3 * 0.044715 x^2).
    s is computed as 1 / (1 + exp(-2u)): one exp, cheaper than tanh. The op is memory-bound, so each line
    below is one pass, in place where it can be."""
    shape, c = x.shape, math.sqrt(2 / math.pi)
    a = x.data.reshape(shape or (1,))                    # at least 1-D: 0-d results would be NumPy scalars
    a2 = a * a
    s = a2 * (-2 * c * 0.044715)                         # s = -2u, then sigmoid(2u), in place
    s -= 2 * c
    s *= a
    with np.errstate(over="ignore"):                     # exp(+large) = inf gives s = 0: the right limit
        np.exp(s, out=s)
    s += 1.0
    np.divide(1.0, s, out=s)
    out = a * s

    def backward(g):                                     # g * (s + x s (1 - s) 2du/dx), x s = out
        du2 = a2 * (2 * c * 3 * 0.044715)
        du2 += 2 * c
        dx = out * s
        np.subtract(out, dx, out=dx)
        dx *= du2
        dx += s
        dx *= g
        return (dx.reshape(shape),)
    return Tensor._make(out.reshape(shape), (x,), "gelu", backward)


def linear(x, weight, bias=None):
    """y = x W^T + b (as torch.nn.functional.linear): x (..., in), weight (out, in), bias (out,) -> (..., out).

    Fused. Composed: x @ weight.T + bias (permute, matmul, add: three nodes). Here all leading positions go
    through one 2-D GEMM, the bias is added in place, and (g and x flattened to (positions, features))
        dx = g W,   dW = g^T x,   db = sum of g over positions."""
    if x.ndim == 0 or x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"linear: input {x.shape} needs a last dimension of {weight.shape[-1]} "
                         f"for a weight of shape {weight.shape}")
    a = x.data.reshape(-1, x.shape[-1])                  # (N, in)
    w = weight.data
    out = a @ w.T                                        # (N, out)
    if bias is not None:                                 # in place, unless the bias would promote the dtype
        out = np.add(out, bias.data, out=out) if bias.dtype == out.dtype else out + bias.data

    def backward(g):
        g = g.reshape(-1, w.shape[0])                    # (N, out)
        dx = (g @ w).reshape(x.shape) if x.requires_grad else None
        return dx, g.T @ a, (None if bias is None else _colsum(g))
    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(out.reshape(*x.shape[:-1], w.shape[0]), parents, "linear", backward)


def _class_targets(logits, targets, ignore_index, weight):
    """cross_entropy's targets, checked: (y (..., 1) class indices with ignored positions set to 0, w (...) each
    position's loss weight, 0 where ignored)."""
    targets = np.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {targets.dtype}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"cross_entropy: logits {logits.shape} need targets of shape {logits.shape[:-1]}, "
                         f"got {targets.shape}")
    V = logits.shape[-1]
    counted = targets != ignore_index
    if np.any(counted & ((targets < 0) | (targets >= V))):
        raise IndexError(f"cross_entropy: a target is outside [0, {V}) (ignore_index={ignore_index})")
    y = np.where(counted, targets, 0)[..., None]
    w = counted.astype(logits.dtype)
    if weight is not None:
        w = w * np.asarray(weight.data if isinstance(weight, Tensor) else weight, dtype=logits.dtype)[y[..., 0]]
    return y, w


def cross_entropy(logits, targets, reduction="mean", ignore_index=-100, weight=None):
    """Softmax cross-entropy, fused: loss_i = logsumexp(z_i) - z_i[y_i] = -log softmax(z_i)[y_i].

    logits (..., V) Tensor; targets (...) integer array; positions whose target == ignore_index get zero loss
    and zero gradient. weight (V,) rescales each class (as PyTorch); 'mean' divides by the summed weight of
    the counted targets (their number when weight is None). reduction: 'none' (...), 'sum' or 'mean' ().
    Composed: -(logits.log_softmax(-1) * onehot(y)).sum(-1) * w (log_softmax, mul, sum, mul). Fused, the
    backward of the per-position loss is one expression: dz = g w (softmax(z) - onehot(y)).
    """
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"cross_entropy: reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    y, w = _class_targets(logits, targets, ignore_index, weight)
    z = logits.data
    shifted = z - z.max(axis=-1, keepdims=True)
    lse = np.log(_rowsum(np.exp(shifted)))
    loss = (lse - np.take_along_axis(shifted, y, axis=-1))[..., 0] * w

    def backward(g):
        dz = np.exp(shifted - lse)                    # softmax(z)
        np.put_along_axis(dz, y, np.take_along_axis(dz, y, axis=-1) - 1, axis=-1)  # minus onehot(y)
        return (dz * (g * w)[..., None],)
    losses = Tensor._make(loss, (logits,), "cross_entropy", backward)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() * (1.0 / max(float(w.sum()), 1e-12))


def _check_last_dim(op, x, normalized_shape):
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if normalized_shape != x.shape[-1:]:
        raise ValueError(f"{op}: normalized_shape {normalized_shape} must be the last dimension of {x.shape}")


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, over the last axis (Ba et al. 2016), fused.

    Composed: d = x - x.mean(-1, keepdims=True);  d / ((d * d).mean(-1, keepdims=True) + eps).sqrt() * w + b
    (about ten nodes). With xhat = (x - mean) * r, r = 1/sqrt(var + eps), and gh = g * weight, the fused
    backward is
        dx = r * (gh - mean(gh) - xhat * mean(gh * xhat))
    (the two means remove the directions that shifting and rescaling x cannot change).
    """
    _check_last_dim("layer_norm", x, normalized_shape)
    a = x.data
    D = a.shape[-1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (D,):
            raise ValueError(f"layer_norm: {name} of shape {p.shape} must be ({D},), the normalized dimension")
    xhat = a - _rowsum(a) * (1.0 / D)
    r = 1.0 / np.sqrt(_rowsum(xhat * xhat) * (1.0 / D) + eps)
    xhat *= r
    wd = None if weight is None else weight.data

    def backward(g):
        # mean(gh) = g @ weight / D and mean(gh * xhat) = (g * xhat) @ weight / D: matrix-vector products,
        # and g * xhat is the weight's gradient before summing over positions, so it is computed once.
        w = np.ones(D, g.dtype) if wd is None else wd
        gx = g * xhat
        dx = g * w
        dx -= _rowdot(g, w) * (1.0 / D)
        dx -= xhat * (_rowdot(gx, w) * (1.0 / D))
        dx *= r
        return dx, (None if weight is None else _colsum(gx)), (None if bias is None else _colsum(g))
    out = xhat if wd is None else xhat * wd
    if bias is not None:
        out = np.add(out, bias.data, out=out) if out is not xhat and out.dtype == bias.dtype else out + bias.data
    parents = (x,) + tuple(p if p is not None else Tensor(0.0) for p in (weight, bias))
    return Tensor._make(out, parents, "layer_norm", backward)


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis (Zhang & Sennrich 2019), fused.

    Composed: x / ((x * x).mean(-1, keepdims=True) + eps).sqrt() * weight. With xhat = x * r,
    r = 1/sqrt(mean(x^2) + eps), and gh = g * weight, the fused backward is dx = r * (gh - xhat * mean(gh * xhat)).
    eps=None means the dtype's machine epsilon, as torch.nn.functional.rms_norm.
    """
    _check_last_dim("rms_norm", x, normalized_shape)
    a = x.data
    eps = np.finfo(a.dtype).eps if eps is None else eps
    r = 1.0 / np.sqrt(_rowsum(a * a) * (1.0 / a.shape[-1]) + float(eps))
    xhat = a * r
    wd = None if weight is None else weight.data

    def backward(g):
        gh = g if wd is None else g * wd
        return r * (gh - xhat * (_rowsum(gh * xhat) * (1.0 / a.shape[-1]))), (None if wd is None else g * xhat)
    parents = (x, weight if weight is not None else Tensor(0.0))
    return Tensor._make(xhat if wd is None else xhat * wd, parents, "rms_norm", backward)


def embedding(indices, weight):
    """Rows of weight (V, D) picked by integer indices (...): out (..., D) = weight[indices].

    Composed: weight[indices] (getitem, whose backward scatters with np.add.at); fused only in its backward."""
    indices = np.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"embedding: indices must be integers, got {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= weight.shape[0]):
        raise IndexError(f"embedding: index out of range for a table of {weight.shape[0]} rows")
    flat = indices.ravel()

    def backward(g):
        """Row v of the gradient is the sum of g over the positions that looked up v. Sorting the positions
        by index makes each row's positions contiguous, and np.add.reduceat sums each run in one pass:
        the same sums as np.add.at(grad, flat, g), which updates one element at a time."""
        grad = np.zeros_like(weight.data)
        if flat.size:
            order = np.argsort(flat, kind="stable")
            rows = flat[order]
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            grad[rows[starts]] = np.add.reduceat(g.reshape((flat.size,) + weight.shape[1:])[order], starts, axis=0)
        return (grad,)
    return Tensor._make(weight.data[indices], (weight,), "embedding", backward)


def _dropout_scale(shape, dtype, p):
    """Inverted dropout's multiplier: 0 with probability p, else 1/(1-p), from the engine's generator."""
    return (_random.generator().random(shape) >= p).astype(dtype) * (1.0 / (1 - p))


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout); identity in eval."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    return x * _dropout_scale(x.shape, x.dtype, p)


def _masked_scores(scores, attn_mask, is_causal):
    """(scores, keep): a float attn_mask is added to the scores; positions a boolean attn_mask or is_causal
    rules out (keep False) get the most negative finite number, so a fully masked row stays finite (uniform).
    keep is None when nothing is ruled out."""
    keep = np.tril(np.ones(scores.shape[-2:], dtype=bool)) if is_causal else None
    if attn_mask is not None:
        m = np.asarray(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
        if m.dtype == bool:
            keep = m if keep is None else keep & m
        else:
            scores = scores + m.astype(scores.dtype)
    if keep is not None:
        scores = np.where(keep, scores, np.finfo(scores.dtype).min)
    return scores, keep


def _softmax_rows(scores):
    """softmax over the last axis: one copy (scores - row max), then in place."""
    probs = scores - _rowmax(scores)
    np.exp(probs, out=probs)
    probs /= _rowsum(probs)
    return probs


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, training=True):
    """softmax(q k^T * scale + mask) v (Vaswani et al. 2017), as PyTorch's; fused into one graph node.

    query (..., Lq, E), key (..., Lk, E), value (..., Lk, Ev) -> (..., Lq, Ev). Bidirectional by default.
    attn_mask: boolean, True = may attend (PyTorch's meaning), broadcast to (..., Lq, Lk) — a key-padding
    mask is keep[:, None, None, :]; or a float mask added to the scores. is_causal: query i sees keys <= i.

    Composed: S = where(keep, (q @ k.transpose(-2, -1)) * scale, most negative float), P = S.softmax(-1),
    out = P @ v (six nodes and their arrays). Backward, with g = dLoss/dout (P is the dropped-out P when
    dropout is on):
        dv = P^T g,   dP = g v^T,   dS = P * (dP - rowsum(dP * P)),   dq = dS k * scale,   dk = dS^T q * scale
    and masked scores get no gradient.
    """
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: q {query.shape}, k {key.shape}, v {value.shape} "
                         "do not fit (need q[..., E], k[..., Lk, E], v[..., Lk, Ev])")
    if not 0 <= dropout_p < 1:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must be in [0, 1), got {dropout_p}")
    scale = float(1.0 / np.sqrt(query.shape[-1]) if scale is None else scale)
    q, k, v = query.data, key.data, value.data
    scores = q @ k.swapaxes(-1, -2)
    scores *= scale
    scores, keep = _masked_scores(scores, attn_mask, is_causal)
    probs = _softmax_rows(scores)
    # inverted dropout on the attention weights, drawn as F.dropout draws it
    drop = _dropout_scale(probs.shape, probs.dtype, dropout_p) if dropout_p and training else None
    used = probs if drop is None else probs * drop

    def backward(g):
        dv = used.swapaxes(-1, -2) @ g
        ds = g @ v.swapaxes(-1, -2)                      # dP
        if drop is not None:
            ds *= drop
        ds -= _rowsum(ds * probs)                        # the softmax vector-Jacobian product ...
        ds *= probs                                      # ... dS = P * (dP - rowsum(dP * P))
        if keep is not None:
            ds *= keep
        ds *= scale
        return ds @ k, ds.swapaxes(-1, -2) @ q, dv
    return Tensor._make(used @ v, (query, key, value), "attention", backward)


__all__ = ["softmax", "log_softmax", "relu", "gelu", "linear", "cross_entropy", "layer_norm", "rms_norm", "embedding",
           "dropout", "scaled_dot_product_attention"]
