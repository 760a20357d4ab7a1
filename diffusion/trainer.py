"""The training loop shared by every trainer script: batches, loss, AdamW, warmup + cosine decay, progress.

Resumable by construction: the batch and the noise of step s depend only on (seed, s), the learning rate
only on s, and the remaining state (weights, Adam moments, the engine's dropout generator) is saved in the
checkpoint. So a run stopped at step s and resumed repeats the uninterrupted run bit for bit.

Early stopping (optional, cfg.eval_every > 0 and a `validate` function): every eval_every steps the model is
scored on held-out rows; the best weights so far are kept in memory, training stops after `patience`
evaluations without improvement (0: never stops early), and the model ends with the best weights. The best
weights are not in mid-run checkpoints, so a resumed run tracks the best again from the resume step.
"""
import signal
import time
from dataclasses import dataclass

import numpy as np

from tinygrad_lite import optim
from tinygrad_lite.nn import eval_mode



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
    eval_every: int = 0          # validate every N steps (0: never); needs train(..., validate=...)
    patience: int = 0            # stop after this many validations without improvement (0: never stop early)


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


class _BestWeights:
    """Validation bookkeeping: the curve [(step, value)], the best value, its step and a copy of its weights."""

    def __init__(self, patience):
        self.curve, self.best, self.best_step, self.weights, self.patience, self.bad = [], np.inf, 0, None, patience, 0

    def update(self, step, value, model):
        """Record a validation figure; returns True when training should stop (patience exhausted)."""
        self.curve.append((step, float(value)))
        if value < self.best:
            self.best, self.best_step, self.weights, self.bad = float(value), step, model.state_dict(), 0
        else:
            self.bad += 1
        return bool(self.patience) and self.bad >= self.patience

    def validate(self, step, model, validate, cfg, metric, log):
        """Score the model (in eval mode), record and log it; returns True when training should stop early."""
        with eval_mode(model):
            value = validate(model)
        stop = self.update(step, value, model)
        log(f"step {step:6d}/{cfg.steps}  validation {metric} {value:.4f} nats/char  "
            f"(best {self.best:.4f} at step {self.best_step})")
        if stop and step < cfg.steps:
            log(f"early stop at step {step}: no improvement in {cfg.patience} validations")
            return True
        return False


def optimizer_step(model, params, opt, loss_fn, x0, rng, grad_clip, step):
    """One step on batch x0: loss, backward, clip the gradient norm, AdamW. Returns the step's figure.
    A non-finite loss or gradient raises TrainingStopped before the weights change."""
    loss, figure = loss_fn(model, x0, rng)
    opt.zero_grad()
    loss.backward()
    grad_norm = optim.clip_grad_norm_(params, grad_clip)
    if not (np.isfinite(loss.item()) and np.isfinite(grad_norm)):
        raise TrainingStopped(f"step {step}: the loss ({loss.item()}) or gradient norm ({grad_norm}) is "
                              f"not finite; stopped without saving this step", step, False)
    opt.step()
    return figure


def train(model, x_train, cfg, loss_fn, log=print, start_step=0, optimizer_state=None, save=None,
          save_every=0, metric="nelbo", validate=None):
    """Train `model` on rows x_train (N, L) from step start_step + 1 to cfg.steps.

    loss_fn(model, x0, rng) -> (loss Tensor, figure to log in nats/char, named `metric` in the log), e.g. the
    diffusion loss (cli.objective builds it from cfg.objective and cfg.schedule) or the AR model's next-token NLL.
    save(step, optimizer) is called every save_every steps, at the end, and before stopping on Ctrl-C.
    validate(model) -> held-out figure in nats/char (lower is better), called every cfg.eval_every steps (in
    eval mode) when both are set: keeps the best weights, stops early after cfg.patience bad validations, and
    leaves the model with the best weights.
    Returns dict(history, seconds, optimizer, validation, best_step, best_validation, stopped_early,
    last_step); history holds (step, mean training figure nats/char since the previous log line), validation
    (step, figure). Raises TrainingStopped on Ctrl-C (after saving) or on a non-finite loss/gradient
    (without saving: the last good checkpoint stays)."""
    if cfg.batch_size > len(x_train):
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {len(x_train)} training names")
    params = model.parameters()                    # walked once: the module tree does not change while training
    opt = optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    model.train()
    history, window, start = [], [], time.perf_counter()
    tracker = _BestWeights(cfg.patience) if validate is not None and cfg.eval_every else None
    stopped_early, step = False, start_step
    with _CtrlC() as ctrl_c:
        for step in range(start_step + 1, cfg.steps + 1):
            rng = np.random.default_rng([cfg.seed, step, 1])          # this step's noise: t and the masks
            opt.lr = cfg.lr * optim.warmup_decay(step - 1, cfg.steps, cfg.warmup, "cosine", cfg.min_lr_ratio)
            x0 = x_train[batch_indices(len(x_train), cfg.batch_size, cfg.seed, step)]
            window.append(optimizer_step(model, params, opt, loss_fn, x0, rng, cfg.grad_clip, step))
            if step % cfg.log_every == 0 or step == cfg.steps:
                done = step - start_step
                elapsed = time.perf_counter() - start
                history.append((step, float(np.mean(window))))
                log(f"step {step:6d}/{cfg.steps}  train {metric} {np.mean(window):.4f} nats/char  lr {opt.lr:.2e}  "
                    f"{done / elapsed:5.1f} steps/s  ETA {elapsed / done * (cfg.steps - step):5.0f}s")
                window = []
            if tracker and (step % cfg.eval_every == 0 or step == cfg.steps):
                stopped_early = tracker.validate(step, model, validate, cfg, metric, log)
            if save and ((save_every and step % save_every == 0) or step == cfg.steps or ctrl_c.pressed):
                save(step, opt)
            if ctrl_c.pressed and step < cfg.steps:
                raise TrainingStopped(f"interrupted at step {step}", step, True)
            if stopped_early:
                break
    model.eval()
    result = dict(history=history, seconds=time.perf_counter() - start, optimizer=opt, validation=[],
                  best_step=None, best_validation=None, stopped_early=stopped_early,
                  last_step=step)
    if tracker and tracker.weights is not None:
        model.load_state_dict(tracker.weights)
        result.update(validation=tracker.curve, best_step=tracker.best_step, best_validation=tracker.best)
    return result

