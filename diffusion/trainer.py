"""The training loop shared by every trainer script: batches, loss, AdamW, warmup + cosine decay, progress.

Resumable by construction: the batch and the noise of step s depend only on (seed, s), the learning rate
only on s, and the remaining state (weights, Adam moments, the engine's dropout generator) is saved in the
checkpoint. So a run stopped at step s and resumed repeats the uninterrupted run bit for bit.
"""
import signal
import time
from dataclasses import dataclass

import numpy as np

from tinygrad_lite import optim

from .loss import diffusion_loss
from .schedule import get_schedule


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    objective: str = "nelbo"
    schedule: str = "cosine"
    seed: int = 0
    log_every: int = 100


class TrainingStopped(Exception):
    """Training ended early: Ctrl-C (after finishing the step) or a non-finite loss or gradient."""

    def __init__(self, message, step, interrupted):
        super().__init__(message)
        self.step, self.interrupted = step, interrupted


def batch_indices(n, batch_size, seed, step):
    """Rows for step `step` (1-based): epoch e visits a permutation of the n rows seeded by (seed, e)."""
    per_epoch = n // batch_size
    epoch, k = divmod(step - 1, per_epoch)
    return np.random.default_rng([seed, epoch]).permutation(n)[k * batch_size:(k + 1) * batch_size]


class _CtrlC:
    """While active, the first Ctrl-C only sets a flag; the loop finishes its step, saves, and stops."""

    def __enter__(self):
        self.pressed = False
        self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.pressed:                     # a second Ctrl-C: the user insists
            raise KeyboardInterrupt
        self.pressed = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False


def train(model, x_train, cfg, loss_fn=None, log=print, start_step=0, optimizer_state=None, save=None,
          save_every=0, metric="nelbo"):
    """Train `model` on rows x_train (N, L) from step start_step + 1 to cfg.steps.

    loss_fn(model, x0, rng) -> (loss Tensor, figure to log in nats/char, named `metric` in the log);
    default: the diffusion loss with cfg.schedule and cfg.objective.
    save(step, optimizer) is called every save_every steps, at the end, and before stopping on Ctrl-C.
    Returns dict(history, seconds, optimizer); history holds (step, mean training NELBO nats/char since the
    previous log line). Raises TrainingStopped on Ctrl-C (after saving) or on a non-finite loss/gradient
    (without saving: the last good checkpoint stays)."""
    if cfg.batch_size > len(x_train):
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {len(x_train)} training names")
    if loss_fn is None:
        schedule = get_schedule(cfg.schedule)

        def loss_fn(model, x0, rng):
            return diffusion_loss(model, x0, schedule, rng, cfg.objective)
    opt = optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    model.train()
    history, window, start = [], [], time.perf_counter()
    with _CtrlC() as ctrl_c:
        for step in range(start_step + 1, cfg.steps + 1):
            rng = np.random.default_rng([cfg.seed, step, 1])          # this step's noise: t and the masks
            opt.lr = cfg.lr * optim.warmup_decay(step - 1, cfg.steps, cfg.warmup, "cosine", cfg.min_lr_ratio)
            x0 = x_train[batch_indices(len(x_train), cfg.batch_size, cfg.seed, step)]
            loss, figure = loss_fn(model, x0, rng)
            opt.zero_grad()
            loss.backward()
            grad_norm = optim.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if not (np.isfinite(loss.item()) and np.isfinite(grad_norm)):
                raise TrainingStopped(f"step {step}: the loss ({loss.item()}) or gradient norm ({grad_norm}) is "
                                      f"not finite; stopped without saving this step", step, False)
            opt.step()
            window.append(figure)
            if step % cfg.log_every == 0 or step == cfg.steps:
                done = step - start_step
                elapsed = time.perf_counter() - start
                history.append((step, float(np.mean(window))))
                log(f"step {step:6d}/{cfg.steps}  train {metric} {np.mean(window):.4f} nats/char  lr {opt.lr:.2e}  "
                    f"{done / elapsed:5.1f} steps/s  ETA {elapsed / done * (cfg.steps - step):5.0f}s")
                window = []
            if save and ((save_every and step % save_every == 0) or step == cfg.steps or ctrl_c.pressed):
                save(step, opt)
            if ctrl_c.pressed and step < cfg.steps:
                raise TrainingStopped(f"interrupted at step {step}", step, True)
    model.eval()
    return dict(history=history, seconds=time.perf_counter() - start, optimizer=opt)

