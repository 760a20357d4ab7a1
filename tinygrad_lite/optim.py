"""Optimizers (as torch.optim): PyTorch's update rules and defaults, updating weights in place."""
import math

import numpy as np


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.lr = lr
        self.step_count = 0
        self.state = {}  # name -> list of arrays, one per parameter (momentum, Adam moments)
        self._flat = {}  # name -> one flat array whose slices are the arrays in state[name] (None: mixed dtypes)
        self._scratch = None  # (tmp, update, update's per-parameter views): reused by every flat step

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _buffers(self, name):
        """State `name`, one zero-initialized array per parameter. All are views into one flat array when the
        parameters share a dtype, so an update can also run over every parameter at once (see Adam.step)."""
        if name not in self.state:
            dtypes = {p.dtype for p in self.params}
            if len(dtypes) == 1:
                flat = np.zeros(sum(p.size for p in self.params), dtypes.pop())
                self._flat[name], self.state[name] = flat, self._split(flat)
            else:
                self._flat[name], self.state[name] = None, [np.zeros_like(p.data) for p in self.params]
        return self.state[name]

    def _split(self, flat):
        """Views of a flat array shaped like each parameter, in order."""
        ends = np.cumsum([p.size for p in self.params])
        return [flat[end - p.size:end].reshape(p.shape) for p, end in zip(self.params, ends)]

    def state_dict(self):
        """Plain arrays and numbers only (an .npz can hold it): 'lr', 'step_count', '<buffer>.<i>'."""
        out = {"lr": np.array(self.lr), "step_count": np.array(self.step_count)}
        for name, bufs in self.state.items():
            out.update({f"{name}.{i}": b.copy() for i, b in enumerate(bufs)})
        return out

    def load_state_dict(self, state):
        self.lr, self.step_count = float(state["lr"]), int(state["step_count"])
        names = {key.rsplit(".", 1)[0] for key in state if "." in key}
        for name in names:
            bufs = [np.array(state[f"{name}.{i}"]) for i in range(len(self.params))]
            for b, p in zip(bufs, self.params):
                if b.shape != p.shape:
                    raise ValueError(f"optimizer state {name}: shape {b.shape} for a parameter of shape {p.shape}")
            for mine, b in zip(self._buffers(name), bufs):         # in place: the flat array stays the state
                mine[...] = b


class SGD(Optimizer):
    """p -= lr * v,  v = momentum * v + (grad + weight_decay * p)  (PyTorch's form of momentum)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    def step(self):
        self.step_count += 1
        velocity = self._buffers("momentum") if self.momentum else [None] * len(self.params)
        for p, v in zip(self.params, velocity):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if v is not None:
                v *= self.momentum
                v += g
                g = v
            p.data -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction:
        m = b1 m + (1-b1) g,   v = b2 v + (1-b2) g^2,
        p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    weight_decay adds weight_decay * p to g (L2, as torch.optim.Adam); AdamW decouples it instead.
    """
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def step(self):
        self.step_count += 1
        # Python floats, so the arithmetic stays in the weights' dtype (a NumPy float64 lr would upcast a
        # float32 update) and both paths below round the same way
        lr, eps, wd, (b1, b2) = float(self.lr), float(self.eps), float(self.weight_decay), map(float, self.betas)
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        ms, vs = self._buffers("exp_avg"), self._buffers("exp_avg_sq")
        if self._flat["exp_avg"] is not None and all(p.grad is not None for p in self.params):
            return self._step_flat(lr, eps, wd, b1, b2, c1, c2)
        for p, m, v in zip(self.params, ms, vs):
            if p.grad is None:
                continue
            g = p.grad
            if wd and self.decoupled:
                p.data *= 1 - lr * wd                        # AdamW: shrink the weight, not the gradient
            elif wd:
                g = g + wd * p.data
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p.data -= (lr / c1) * m / (np.sqrt(v / c2) + eps)

    def _step_flat(self, lr, eps, wd, b1, b2, c1, c2):
        """The same update as the loop in step(), on all parameters at once (PyTorch's 'foreach' idea): the
        gradients are gathered into one vector, so the moments and the step take one NumPy call per line
        instead of one per parameter. A Transformer has ~70 small parameters, and per-call overhead dominates
        their updates. Every line after the gathering writes into arrays kept from step to step (out=), and
        only writing the step into each parameter loops (the weights stay the caller's arrays, as in
        PyTorch: an array taken from p.data keeps seeing the updates)."""
        g = np.concatenate([p.grad.ravel() for p in self.params]).astype(self._flat["exp_avg"].dtype, copy=False)
        if wd and not self.decoupled:
            g += wd * np.concatenate([p.data.ravel() for p in self.params])
        m, v = self._flat["exp_avg"], self._flat["exp_avg_sq"]
        if self._scratch is None:
            update = np.empty_like(m)
            self._scratch = np.empty_like(m), update, self._split(update)
        tmp, update, updates = self._scratch
        m *= b1
        m += np.multiply(g, 1 - b1, out=tmp)
        v *= b2
        np.multiply(g, 1 - b2, out=tmp)                      # (1 - b2) * g * g, in the loop's order
        v += np.multiply(tmp, g, out=tmp)
        np.multiply(m, lr / c1, out=update)                  # the loop's expression, in the same order,
        np.sqrt(np.divide(v, c2, out=tmp), out=tmp)          # so both give bit-identical weights
        tmp += eps
        update /= tmp
        decay = 1 - lr * wd if wd and self.decoupled else None
        for p, u in zip(self.params, updates):
            if decay is not None:
                p.data *= decay
            p.data -= u


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p *= 1 - lr * wd before the Adam step."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params, max_norm):
    """Scale all gradients in place so their joint L2 norm is at most max_norm; returns the norm before."""
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if total > max_norm:
        for g in grads:
            g *= max_norm / (total + 1e-6)
    return total


def warmup_decay(step, total_steps, warmup_steps=0, decay="cosine", min_ratio=0.0):
    """Learning-rate multiplier at `step`: linear warmup to 1, then cosine or linear decay to min_ratio."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if decay == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * shape
