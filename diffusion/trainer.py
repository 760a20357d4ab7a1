"""The training loop shared by every trainer script: batches, loss, AdamW, warmup + cosine decay, progress.

Resumable by construction: the batch and the noise of step s depend only on (seed, s), the learning rate
only on s, and the remaining state (weights, Adam moments, the engine's dropout generator) is saved in the
checkpoint. So a run stopped at step s and resumed repeats the uninterrupted run bit for bit.

Early stopping (optional, cfg.eval_every > 0 and a `validate` function): every eval_every steps the model is
scored on held-out rows; the best weights so far are kept in memory, training stops after `patience`
evaluations without improvement (0: never stops early), and the model ends with the best weights. Mid-run
checkpoints hold the run so far (the curves, the time, the tracker and its best weights: `progress`), so a
resumed run ends as the uninterrupted one, figures included.

Weight averaging (optional, cfg.ema > 0): tinygrad_lite.optim.ExponentialMovingAverage follows the weights
after every step; validation scores the average, and the model ends with it (or with the best validated
average). Mid-run checkpoints hold the trained weights and the average's state, so a resumed run continues both.

All cores (workers > 1): the step's gradient comes from tinygrad_lite.parallel.DistributedDataParallel, each
worker process taking a contiguous shard of the batch. The parent still draws the batch and the noise, so the
run follows the same stream for any number of workers; only the rounding of the gradient's sum differs (about
1e-7 relative), and with dropout the masks (drawn per worker). A checkpoint resumes with any N (its engine
generator's state differs with N: the data-parallel step draws the workers' dropout seed from it).
"""
import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinygrad_lite import optim
from tinygrad_lite.nn import eval_mode
from tinygrad_lite.parallel import DistributedDataParallel

from .checkpoint import build_model


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
    k_power: float = 0.0         # objective exact_k: mask counts drawn from q(k) ∝ k^k_power (loss.mask_counts)
    seed: int = 0
    log_every: int = 100
    eval_every: int = 0          # validate every N steps (0: never); needs train(..., validate=...)
    patience: int = 0            # stop after this many validations without improvement (0: never stop early)
    ema: float = 0.0             # decay of the weights' moving average (0: none), the weights validated and kept


@dataclass(frozen=True)
class Objective:
    """What train() minimizes, in the two halves a data-parallel step needs:

    prepare(model, x0, rng) -> (rows, shared) runs in the parent: the step's noise for the batch x0 (B, L), as
        arrays with the batch on axis 0 (`rows`) and the batch's denominators (`shared`).
    loss(model, *rows, **shared) -> (loss Tensor, figure in nats/char) on those rows or on any shard of them,
        dividing by the batch's denominators so the shards' losses add up to the batch's. A function defined at
        module level: a worker process imports it by name.
    objective(model, x0, rng) is both halves on the whole batch."""
    prepare: Callable
    loss: Callable

    def __call__(self, model, x0, rng):
        rows, shared = self.prepare(model, x0, rng)
        return self.loss(model, *rows, **shared)


class OneProcess:
    """The batch's gradient in this process, behind DistributedDataParallel's interface (backward(*rows,
    **shared) -> (loss, figure), filling every p.grad), so the training loop is one loop for any worker count."""

    def __init__(self, model, loss):
        self.model, self.loss = model, loss

    def backward(self, *rows, **shared):
        loss, figure = self.loss(self.model, *rows, **shared)
        loss.backward()
        return loss.item(), figure

    def close(self):
        """Nothing to stop (DistributedDataParallel's close stops its workers)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def gradients(model, objective, workers=1, worker_init=None):
    """Where the step's gradient is computed: OneProcess for workers=1, else `workers` processes that rebuild
    the model from model.config (checkpoint.build_model) and share its weights. worker_init() runs first in
    each worker (the program's process-wide settings, e.g. tinygrad_lite.malloc.keep_freed_memory)."""
    if workers == 1:
        return OneProcess(model, objective.loss)
    return DistributedDataParallel(model, build_model, {"config": model.config}, objective.loss, workers,
                                   initializer=worker_init)


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
    """Validation bookkeeping: the curve [(step, value)], the best value, its step and a copy of its weights. A
    resumed run's tracker goes on from the state() and weights its checkpoint saved."""

    def __init__(self, patience, state=None, weights=None):
        self.curve, self.best, self.best_step, self.weights, self.patience, self.bad = [], np.inf, 0, None, patience, 0
        if state:
            self._restore(state, weights)

    def state(self):
        """The JSON-able part of what a resumed run needs (the best weights are saved beside it; json writes an
        infinite best, before any validation, as Infinity and reads it back)."""
        return dict(validation=self.curve, best=self.best, best_step=self.best_step, bad=self.bad)

    def _restore(self, state, weights):
        self.curve = [(step, value) for step, value in state["validation"]]
        self.best, self.best_step, self.bad, self.weights = state["best"], state["best_step"], state["bad"], weights

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


def optimizer_step(model, params, opt, objective, grads, x0, rng, grad_clip, step):
    """One step on batch x0: the noise, loss and gradient (grads: OneProcess or DistributedDataParallel), clip
    the gradient norm, AdamW. Returns the step's figure. A non-finite loss or gradient raises TrainingStopped
    before the weights change."""
    rows, shared = objective.prepare(model, x0, rng)
    opt.zero_grad()
    loss, figure = grads.backward(*rows, **shared)
    grad_norm = optim.clip_grad_norm_(params, grad_clip)
    if not (np.isfinite(loss) and np.isfinite(grad_norm)):
        raise TrainingStopped(f"step {step}: the loss ({loss}) or gradient norm ({grad_norm}) is "
                              f"not finite; stopped without saving this step", step, False)
    opt.step()
    return figure


def train(model, x_train, cfg, objective, log=print, start_step=0, optimizer_state=None, save=None,
          save_every=0, metric="nelbo", validate=None, workers=1, worker_init=None, ema_state=None, progress=None):
    """Train `model` on rows x_train (N, L) from step start_step + 1 to cfg.steps.

    objective: an Objective whose figure (nats/char) is logged as `metric`, e.g. the diffusion loss (cli.objective
    builds it from cfg.objective and cfg.schedule) or the AR model's next-token NLL.
    workers: processes computing each step's gradient (1: this one; see `gradients`); worker_init as there.
    save(step, optimizer, ema, progress) is called every save_every steps, at the end, and before stopping on
    Ctrl-C (ema: the ExponentialMovingAverage with cfg.ema, else None; ema_state: its state_dict to resume from).
    progress: the run so far, what a resume passes back as `progress=` so that the curves, the training time and
    the best validated weights span the whole run: dict(history, window=the figures since the last log line,
    seconds, tracker=the validation state or None, best_weights=their copy or None).
    validate(model) -> held-out figure in nats/char (lower is better), called every cfg.eval_every steps (in
    eval mode) when both are set: keeps the best weights, stops early after cfg.patience bad validations, and
    leaves the model with the best weights.
    Returns dict(history, seconds, optimizer, ema, validation, best_step, best_validation, stopped_early,
    last_step); history holds (step, mean training figure nats/char since the previous log line), validation
    (step, figure). Raises TrainingStopped on Ctrl-C (after saving) or on a non-finite loss/gradient
    (without saving: the last good checkpoint stays); a worker that dies or raises raises
    tinygrad_lite.parallel.WorkerError (without saving)."""
    if cfg.batch_size > len(x_train):
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {len(x_train)} training names")
    if cfg.batch_size < workers:
        raise ValueError(f"batch size {cfg.batch_size} is smaller than the {workers} workers: one row each at least")
    params = model.parameters()                    # walked once: the module tree does not change while training
    opt = optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if optimizer_state:
        opt.load_state_dict(optimizer_state)
    ema = optim.ExponentialMovingAverage(params, cfg.ema) if cfg.ema else None
    if ema and ema_state:
        ema.load_state_dict(ema_state)
    model.train()
    progress = progress or {}                      # a resumed run's, from its checkpoint; a new run's is empty
    history = [(step, value) for step, value in progress.get("history", [])]
    window, start = list(progress.get("window", [])), time.perf_counter()      # window: figures since the last log
    tracker = _BestWeights(cfg.patience, progress.get("tracker"), progress.get("best_weights")) \
        if validate is not None and cfg.eval_every else None

    def so_far():
        """The run up to now, for save() and the result: what `progress=` takes back on a resume."""
        seconds = progress.get("seconds", 0.0) + time.perf_counter() - start
        return dict(history=history, window=window, seconds=seconds, tracker=tracker and tracker.state(),
                    best_weights=tracker and tracker.weights)
    stopped_early, step = False, start_step
    with _CtrlC() as ctrl_c, gradients(model, objective, workers, worker_init) as grads:
        for step in range(start_step + 1, cfg.steps + 1):
            rng = np.random.default_rng([cfg.seed, step, 1])          # this step's noise: t and the masks
            opt.lr = cfg.lr * optim.warmup_decay(step - 1, cfg.steps, cfg.warmup, "cosine", cfg.min_lr_ratio)
            x0 = x_train[batch_indices(len(x_train), cfg.batch_size, cfg.seed, step)]
            window.append(optimizer_step(model, params, opt, objective, grads, x0, rng, cfg.grad_clip, step))
            if ema:
                ema.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                done = step - start_step
                elapsed = time.perf_counter() - start
                history.append((step, float(np.mean(window))))
                log(f"step {step:6d}/{cfg.steps}  train {metric} {np.mean(window):.4f} nats/char  lr {opt.lr:.2e}  "
                    f"{done / elapsed:5.1f} steps/s  ETA {elapsed / done * (cfg.steps - step):5.0f}s")
                window = []
            if tracker and (step % cfg.eval_every == 0 or step == cfg.steps):
                with ema.average_parameters() if ema else contextlib.nullcontext():
                    stopped_early = tracker.validate(step, model, validate, cfg, metric, log)
            if save and ((save_every and step % save_every == 0) or step == cfg.steps or ctrl_c.pressed):
                save(step, opt, ema, so_far())
            if ctrl_c.pressed and step < cfg.steps and not stopped_early:   # a run that stopped early ends
                raise TrainingStopped(f"interrupted at step {step}", step, True)
            if stopped_early:
                break
    model.eval()
    if ema:
        ema.copy_to()                              # the average is the model (or, below, its best validated state)
    result = dict(history=history, seconds=so_far()["seconds"], optimizer=opt, ema=ema, validation=[],
                  best_step=None, best_validation=None, stopped_early=stopped_early,
                  last_step=step)
    if tracker and tracker.weights is not None:
        model.load_state_dict(tracker.weights)
        result.update(validation=tracker.curve, best_step=tracker.best_step, best_validation=tracker.best)
    return result

