"""The training loop shared by every trainer script: batches, loss, AdamW, warmup + cosine decay, progress."""
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


def batches(n, batch_size, rng):
    """Endless minibatch indices: a fresh permutation of the n training rows every epoch."""
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i:i + batch_size]


def train(model, x_train, cfg, log=print):
    """Train `model` on rows x_train (N, L) for cfg.steps steps. Returns dict(history, seconds, optimizer).

    history: (step, mean training NELBO nats/char over the last log_every steps) pairs."""
    if cfg.batch_size > len(x_train):
        raise ValueError(f"batch size {cfg.batch_size} is larger than the {len(x_train)} training names")
    rng = np.random.default_rng(cfg.seed)
    schedule = get_schedule(cfg.schedule)
    opt = optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    history, window, start = [], [], time.perf_counter()
    for step, idx in zip(range(1, cfg.steps + 1), batches(len(x_train), cfg.batch_size, rng)):
        opt.lr = cfg.lr * optim.warmup_decay(step - 1, cfg.steps, cfg.warmup, "cosine", cfg.min_lr_ratio)
        loss, nelbo = diffusion_loss(model, x_train[idx], schedule, rng, cfg.objective)
        opt.zero_grad()
        loss.backward()
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"step {step}: loss is {loss.item()}; stopping")
        optim.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        window.append(nelbo)
        if step % cfg.log_every == 0 or step == cfg.steps:
            elapsed = time.perf_counter() - start
            history.append((step, float(np.mean(window))))
            log(f"step {step:6d}/{cfg.steps}  train nelbo {np.mean(window):.4f} nats/char  lr {opt.lr:.2e}  "
                f"{step / elapsed:5.1f} steps/s  ETA {elapsed / step * (cfg.steps - step):5.0f}s")
            window = []
    model.eval()
    return dict(history=history, seconds=time.perf_counter() - start, optimizer=opt)

