"""Optimizers (as torch.optim): PyTorch's update rules and defaults, updating weights in place."""
import contextlib
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

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def _buffers(self, name):
        """State `name`: one array per parameter, zeros until the first step."""
        if name not in self.state:
            self.state[name] = [np.zeros_like(p.data) for p in self.params]
        return self.state[name]

    def state_dict(self):
        """Plain arrays and numbers only (an .npz can hold it): 'lr', 'step_count', '<buffer>.<i>'."""
        out = {"lr": np.array(self.lr), "step_count": np.array(self.step_count)}
        for name, bufs in self.state.items():
            out.update({f"{name}.{i}": b.copy() for i, b in enumerate(bufs)})
        return out

    def load_state_dict(self, state):
        self.lr, self.step_count = float(state["lr"]), int(state["step_count"])
        for name in {key.rsplit(".", 1)[0] for key in state if "." in key}:
            bufs = [np.array(state[f"{name}.{i}"], dtype=p.dtype) for i, p in enumerate(self.params)]
            for b, p in zip(bufs, self.params):
                if b.shape != p.shape:
                    raise ValueError(f"optimizer state {name}: shape {b.shape} for a parameter of shape {p.shape}")
            self.state[name] = bufs


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
    """Adam (Kingma & Ba 2015), per parameter, with bias correction at step t:
        m = b1 m + (1-b1) g,   v = b2 v + (1-b2) g^2,   p -= lr * mhat / (sqrt(vhat) + eps),
    where mhat = m / (1-b1^t) and vhat = v / (1-b2^t) undo the moments' start at zero.
    weight_decay adds weight_decay * p to g (L2, as torch.optim.Adam); AdamW decouples it instead.
    """
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def step(self):
        self.step_count += 1
        # Python floats, so the arithmetic stays in the weights' dtype (a NumPy float64 lr, as a schedule
        # computed with NumPy gives, would make a float64 update of every float32 weight)
        lr, eps, wd, (b1, b2) = float(self.lr), float(self.eps), float(self.weight_decay), map(float, self.betas)
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        for p, m, v in zip(self.params, self._buffers("exp_avg"), self._buffers("exp_avg_sq")):
            if p.grad is None:
                continue
            g = p.grad
            if wd and self.decoupled:
                p.data *= 1 - lr * wd                       # AdamW: shrink the weight, not the gradient
            elif wd:
                g = g + wd * p.data
            m[...] = b1 * m + (1 - b1) * g                      # running mean of g
            v[...] = b2 * v + (1 - b2) * g * g                  # running mean of g^2
            p.data -= (lr / c1) * m / (np.sqrt(v / c2) + eps)   # lr * mhat / (sqrt(vhat) + eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p *= 1 - lr * wd before the Adam step."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


class ExponentialMovingAverage:
    """A running average of the weights along training (Polyak averaging), the weights to evaluate and sample
    with; MDLM (Sahoo et al. 2024) keeps one at decay 0.9999, with this API (as the torch_ema package):
        shadow <- d * shadow + (1 - d) * p     after every optimizer step, d = min(decay, (1 + n) / (10 + n)),
    n = the updates so far: the short memory at first keeps the average from remembering the random start.
    Why it helps: late in training the weights jitter around a minimum with the step noise; their average sits
    nearer its middle. update() after opt.step(); `with ema.average_parameters():` evaluates with the averages
    and puts the trained weights back after (store / copy_to / restore do it by hand)."""

    def __init__(self, params, decay=0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ExponentialMovingAverage: decay must be in [0, 1), got {decay}")
        self.params, self.decay, self.num_updates = list(params), decay, 0
        self.shadow = [p.data.copy() for p in self.params]
        self.stored = None

    def update(self):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow, self.params):
            s *= d
            s += (1 - d) * p.data                          # in place: the shadow keeps its dtype and memory

    def copy_to(self):
        """Write the averages into the parameters (in place, so views such as shared memory stay views)."""
        for s, p in zip(self.shadow, self.params):
            p.data[...] = s

    def store(self):
        self.stored = [p.data.copy() for p in self.params]

    def restore(self):
        for s, p in zip(self.stored, self.params):
            p.data[...] = s
        self.stored = None

    @contextlib.contextmanager
    def average_parameters(self):
        """The averaged weights inside the block, the trained ones again after it (however it is left)."""
        self.store()
        self.copy_to()
        try:
            yield
        finally:
            self.restore()

    def state_dict(self):
        """Plain arrays (an .npz holds them): 'decay', 'num_updates', 'shadow.<i>'."""
        return {"decay": np.array(self.decay), "num_updates": np.array(self.num_updates),
                **{f"shadow.{i}": s.copy() for i, s in enumerate(self.shadow)}}

    def load_state_dict(self, state):
        shadow = [np.array(state[f"shadow.{i}"], dtype=p.dtype) for i, p in enumerate(self.params)]
        for s, p in zip(shadow, self.params):
            if s.shape != p.shape:
                raise ValueError(f"ExponentialMovingAverage: shape {s.shape} for a parameter of shape {p.shape}")
        self.decay, self.num_updates, self.shadow = float(state["decay"]), int(state["num_updates"]), shadow


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
