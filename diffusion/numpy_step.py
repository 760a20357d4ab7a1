"""The benchmark's reference: the Transformer denoiser's training step written out by hand in NumPy, with no
Tensor, no graph and no engine.

scripts/bench.py times it beside the engine's step, so the table can say what the engine itself costs over
the same arithmetic, and how close plain NumPy gets to the matmul floor and to PyTorch. Every kernel is the
engine's fused formula (see tinygrad_lite/functional.py: F.gelu, F.layer_norm, ...), written again here rather
than imported (the point is to time NumPy without the engine), with as few passes over memory as NumPy allows;
tests/test_numpy_step.py checks that its loss, every gradient and its update equal the engine's. Nothing in the
project trains with it.

    loss, grads = loss_and_grads(model.state_dict(), xt, targets, weight, heads=4)
"""
import math

import numpy as np

C = math.sqrt(2 / math.pi)


def rowsum(v):
    """Sum over the last axis as a matrix-vector product (BLAS), as the engine does."""
    return v.reshape(-1, v.shape[-1]) @ np.ones(v.shape[-1], v.dtype)


def colsum(v):
    """Sum over the rows of (N, D) as ones @ v: several times faster than v.sum(0) here (as the engine)."""
    return np.ones(len(v), v.dtype) @ v


def layer_norm(x, w, b, eps=1e-5):
    """x (N, D) -> (y, cache); y = xhat * w + b, xhat = (x - mean) / sqrt(var + eps)."""
    D = x.shape[1]
    xhat = x - (rowsum(x) * (1.0 / D))[:, None]
    r = 1.0 / np.sqrt(rowsum(xhat * xhat) * (1.0 / D) + eps)
    xhat *= r[:, None]
    y = xhat * w
    y += b
    return y, (xhat, r)


def layer_norm_backward(g, w, cache):
    """dx = r * (g w - mean(g w) - xhat * mean(g w xhat)); dw = sum g xhat; db = sum g."""
    xhat, r = cache
    D = xhat.shape[1]
    gx = g * xhat
    dx = g * w
    dx -= ((g @ w) * (1.0 / D))[:, None]
    dx -= xhat * ((gx @ w) * (1.0 / D))[:, None]
    dx *= r[:, None]
    return dx, colsum(gx), colsum(g)


def gelu(x):
    """x * sigmoid(2u), u = c (x + 0.044715 x^3): GELU's tanh form. Returns (y, cache)."""
    x2 = x * x
    s = x2 * (-2 * C * 0.044715)
    s -= 2 * C
    s *= x
    np.exp(s, out=s)
    s += 1.0
    np.divide(1.0, s, out=s)
    y = x * s
    return y, (x2, s, y)


def gelu_backward(g, cache):
    """dy/dx = s + x s (1 - s) 2 du/dx, with x s = y."""
    x2, s, y = cache
    du2 = x2 * (2 * C * 3 * 0.044715)
    du2 += 2 * C
    dx = y * s
    np.subtract(y, dx, out=dx)
    dx *= du2
    dx += s
    dx *= g
    return dx


def attention(q, k, v, scale):
    """softmax(q k^T * scale) v over (B, H, L, E) heads. Returns (out, probs)."""
    s = q @ k.swapaxes(-1, -2)
    s *= scale
    L = s.shape[-1]
    p = s - np.ascontiguousarray(s.reshape(-1, L).T).max(axis=0).reshape(s.shape[:-1] + (1,))
    np.exp(p, out=p)
    p /= rowsum(p).reshape(p.shape[:-1] + (1,))
    return p @ v, p


def attention_backward(g, q, k, v, p, scale):
    """dv = P^T g;  dS = P * (dP - rowsum(dP * P)) * scale with dP = g v^T;  dq = dS k;  dk = dS^T q."""
    dv = p.swapaxes(-1, -2) @ g
    ds = g @ v.swapaxes(-1, -2)
    ds -= rowsum(ds * p).reshape(p.shape[:-1] + (1,))
    ds *= p
    ds *= scale
    return ds @ k, ds.swapaxes(-1, -2) @ q, dv


def split_heads(t, B, L, heads):
    """(B * L, D) -> (B, H, L, D / H), a view."""
    return t.reshape(B, L, heads, -1).transpose(0, 2, 1, 3)


def merge_heads(t):
    """(B, H, L, E) -> (B * L, H * E), heads side by side (a copy)."""
    B, H, L, E = t.shape
    return np.ascontiguousarray(t.transpose(0, 2, 1, 3)).reshape(B * L, H * E)


def linear(x, weights, name):
    """x W^T + b (no b for a Linear without bias: attention's key)."""
    y = x @ weights[name + ".weight"].T
    if name + ".bias" in weights:
        y += weights[name + ".bias"]
    return y


def linear_backward(g, x, weights, name, grads):
    """Fills grads[name.weight] = g^T x and grads[name.bias] = sum g (if it has one); returns dx = g W."""
    grads[name + ".weight"] = g.T @ x
    if name + ".bias" in weights:
        grads[name + ".bias"] = colsum(g)
    return g @ weights[name + ".weight"]


def forward(weights, xt, heads):
    """TransformerDenoiser's forward: logits (B * L, V) for token rows xt (B, L), and what the backward needs.
    Only for the denoiser without time input (the default)."""
    if "time.weight" in weights:
        raise ValueError("numpy_step: a denoiser with time input is not written out here")
    B, L = xt.shape
    scale = 1.0 / math.sqrt(weights["tok.weight"].shape[1] // heads)
    layers = sum(1 for name in weights if name.endswith(".ln1.weight"))

    h = weights["tok.weight"][xt.ravel()]
    h += np.tile(weights["pos.weight"], (B, 1))
    saved = []
    for i in range(layers):
        pre = f"blocks.{i}."
        y1, ln1 = layer_norm(h, weights[pre + "ln1.weight"], weights[pre + "ln1.bias"])
        qkv = [split_heads(linear(y1, weights, pre + "attn." + n), B, L, heads) for n in ("query", "key", "value")]
        o, p = attention(*qkv, scale)
        o = merge_heads(o)
        h = h + linear(o, weights, pre + "attn.proj")
        y2, ln2 = layer_norm(h, weights[pre + "ln2.weight"], weights[pre + "ln2.bias"])
        z, act = gelu(linear(y2, weights, pre + "mlp.fc"))
        h = h + linear(z, weights, pre + "mlp.proj")
        saved.append((y1, ln1, qkv, p, o, y2, ln2, z, act))
    yf, lnf = layer_norm(h, weights["ln_f.weight"], weights["ln_f.bias"])
    return linear(yf, weights, "head"), (saved, yf, lnf, scale)


def loss_and_grads(weights, xt, targets, weight, heads):
    """The weighted cross-entropy sum_i weight_i * -log p(targets_i | xt) of TransformerDenoiser, and its gradient.

    weights: the model's state_dict (name -> array); xt (B, L) token ids; targets (B, L) class ids, -100 where a
    position does not count; weight (B, L) the loss weight of each position. Returns (loss, {name: gradient})."""
    B, L = xt.shape
    N, D = B * L, weights["tok.weight"].shape[1]
    logits, (saved, yf, lnf, scale) = forward(weights, xt, heads)

    counted = targets.ravel() != -100
    y = np.where(counted, targets.ravel(), 0)
    w = (weight.ravel() * counted).astype(logits.dtype)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = rowsum(e)
    loss = float(((np.log(total) - shifted[np.arange(N), y]) * w).sum())
    dz = e / total[:, None]                             # softmax - onehot, times each position's weight
    dz[np.arange(N), y] -= 1
    dz *= w[:, None]

    grads = {}
    dh, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(
        linear_backward(dz, yf, weights, "head", grads), weights["ln_f.weight"], lnf)
    for i in reversed(range(len(saved))):
        pre = f"blocks.{i}."
        y1, ln1, qkv, p, o, y2, ln2, z, act = saved[i]
        du = gelu_backward(linear_backward(dh, z, weights, pre + "mlp.proj", grads), act)
        dx, grads[pre + "ln2.weight"], grads[pre + "ln2.bias"] = layer_norm_backward(
            linear_backward(du, y2, weights, pre + "mlp.fc", grads), weights[pre + "ln2.weight"], ln2)
        dh = dh + dx
        do = split_heads(linear_backward(dh, o, weights, pre + "attn.proj", grads), B, L, heads)
        dy = None
        for name, g in zip(("query", "key", "value"), attention_backward(do, *qkv, p, scale)):
            d = linear_backward(merge_heads(g), y1, weights, pre + "attn." + name, grads)
            dy = d if dy is None else dy + d
        dx, grads[pre + "ln1.weight"], grads[pre + "ln1.bias"] = layer_norm_backward(
            dy, weights[pre + "ln1.weight"], ln1)
        dh = dh + dx
    grads["pos.weight"] = (np.ones(B, dh.dtype) @ dh.reshape(B, L * D)).reshape(L, D)
    onehot = np.eye(len(weights["tok.weight"]), dtype=dh.dtype)[xt.ravel()]          # (N, vocabulary)
    grads["tok.weight"] = onehot.T @ dh                 # each token's rows summed, as one small GEMM
    return loss, grads


class AdamW:
    """AdamW over one flat vector holding every weight (the entries of `weights` become views of it), with
    gradient clipping by global norm: the engine's clip + AdamW, in whole-vector NumPy calls (the engine updates
    one parameter at a time)."""

    def __init__(self, weights, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        self.names = list(weights)
        self.flat = np.concatenate([weights[n].ravel() for n in self.names])
        end = 0
        for n in self.names:
            size = weights[n].size
            weights[n] = self.flat[end:end + size].reshape(weights[n].shape)
            end += size
        self.m, self.v = np.zeros_like(self.flat), np.zeros_like(self.flat)
        self.tmp, self.update = np.empty_like(self.flat), np.empty_like(self.flat)   # scratch, as the engine's
        self.t, self.lr, self.betas, self.eps, self.weight_decay = 0, lr, betas, eps, weight_decay

    def step(self, grads, max_norm=1.0):
        g = np.concatenate([grads[n].ravel() for n in self.names])
        norm = math.sqrt(float(g @ g))
        if norm > max_norm:
            g *= max_norm / (norm + 1e-6)
        self.t += 1
        b1, b2 = self.betas
        tmp, update = self.tmp, self.update
        self.m *= b1
        self.m += np.multiply(g, 1 - b1, out=tmp)
        self.v *= b2
        np.multiply(g, 1 - b2, out=tmp)
        self.v += np.multiply(tmp, g, out=tmp)
        np.multiply(self.m, self.lr / (1 - b1 ** self.t), out=update)
        np.sqrt(np.divide(self.v, 1 - b2 ** self.t, out=tmp), out=tmp)
        tmp += self.eps
        update /= tmp
        self.flat *= 1 - self.lr * self.weight_decay
        self.flat -= update


def training_step(model, x0, objective="exact_k", seed=0):
    """A closure running one training step of the hand-written version on a copy of `model`'s weights: the
    masks and loss weights come from diffusion.loss.corrupt, as in the engine's step; the rest is this file."""
    from diffusion.data import chars_per_name
    from diffusion.loss import corrupt
    from diffusion.schedule import CosineSchedule
    weights = model.state_dict()                        # copies: the model's own weights are not trained
    opt, rng, schedule = AdamW(weights), np.random.default_rng(seed), CosineSchedule()
    per_char = 1.0 / chars_per_name(x0).sum()

    def step():
        xt, _, masked, row_weight = corrupt(model, x0, schedule, rng, objective)
        weight = (row_weight[:, None] * masked).astype(np.float32) * np.float32(per_char)
        _, grads = loss_and_grads(weights, xt, np.where(masked, x0, -100), weight, model.config["heads"])
        opt.step(grads)
    return step
