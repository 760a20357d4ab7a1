"""What the trainer scripts share: argument parsing with range checks, and the run itself
(load data -> build model -> train -> held-out NELBO -> checkpoint -> samples and a temperature sweep).

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""
import argparse
import json
import os
import sys
import time

import tinygrad_lite as tl

from . import checkpoint
from .data import NamesData, NamesFileError, decode, DEFAULT_NAMES
from .likelihood import nelbo, unigram_nll
from .loss import OBJECTIVES, diffusion_loss
from .metrics import format_report, sample_report
from .sampler import sample
from .schedule import SCHEDULES, get_schedule
from .trainer import TrainConfig, TrainingStopped, train

SWEEP = (0.5, 0.8, 1.0, 1.5)


def _number(kind, low, inclusive=False, what="a number"):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {low}")
        return value
    return parse


positive_int = _number(int, 0, what="a whole number")
positive_float = _number(float, 0.0)
nonnegative_float = _number(float, 0.0, inclusive=True)


def fail(message):
    """One clear line on stderr, exit code 2 (as argparse does for bad flags)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def trainer_parser(description, **defaults):
    """argparse for a trainer; `defaults` overrides TrainConfig's defaults and adds model flags' defaults."""
    d = {**TrainConfig().__dict__, "L": 16, "out": "model.npz", "num_samples": 1000, "sample_steps": None,
         **defaults}
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=positive_int, default=d["steps"], help="training steps")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"], help="names per step")
    p.add_argument("--lr", type=positive_float, default=d["lr"], help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=d["weight_decay"])
    p.add_argument("--warmup", type=_number(int, 0, True, "a whole number"), default=d["warmup"],
                   help="linear warmup steps, then cosine decay")
    p.add_argument("--grad-clip", type=positive_float, default=d["grad_clip"], help="max global gradient norm")
    p.add_argument("--min-lr-ratio", type=nonnegative_float, default=d["min_lr_ratio"],
                   help="final learning rate as a fraction of --lr")
    p.add_argument("--seed", type=int, default=d["seed"], help="seeds init, batches, noise and sampling")
    p.add_argument("--objective", choices=OBJECTIVES, default=d["objective"],
                   help="'nelbo': the ELBO-weighted loss; 'simple': plain masked cross-entropy")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default=d["schedule"], help="noise schedule")
    p.add_argument("--names", default=DEFAULT_NAMES, help="names file, one per line")
    p.add_argument("--L", type=positive_int, default=d["L"], help="sequence length (longer names are dropped)")
    p.add_argument("--out", default=d["out"], help="checkpoint path (.npz)")
    p.add_argument("--num-samples", type=positive_int, default=d["num_samples"])
    p.add_argument("--sample-steps", type=positive_int, default=d["sample_steps"], help="sampler steps (default L)")
    p.add_argument("--log-every", type=positive_int, default=d["log_every"])
    p.add_argument("--json", default=None, help="also write the figures printed at the end to this JSON file")
    p.add_argument("--save-every", type=_number(int, 0, True, "a whole number"), default=0,
                   help="also save the checkpoint every N steps (0: only at the end or on Ctrl-C)")
    p.add_argument("--resume", default=None, metavar="CHECKPOINT",
                   help="continue a run from its checkpoint (its saved settings win over the flags)")
    return p


def load_data(args):
    try:
        data = NamesData.load(args.names, L=args.L)
    except NamesFileError as e:
        fail(str(e))
    r = data.report
    print(f"names: {len(r.names)} from {args.names}" + (f" ({r.summary()})" if r.summary() else ""))
    dropped = sum(data.dropped.values())
    print(f"split: train {len(data.train)}, validation {len(data.val)}, test {len(data.test)}; "
          f"L={data.L}" + (f", {dropped} names longer than {data.L} letters dropped" if dropped else
                           f", no name dropped"))
    return data


def report_samples(model, data, args, temperatures=SWEEP, show=20):
    """Print names and their quality figures at each temperature; returns the figures as a list of dicts."""
    steps = args.sample_steps or model.L
    if steps > model.L:
        fail(f"--sample-steps must be at most L={model.L}, got {steps}")
    test_names = [decode(r) for r in data.test]
    rows = []
    for temperature in temperatures:
        t0 = time.perf_counter()
        out = sample(model, args.num_samples, steps=steps, temperature=temperature, seed=args.seed)
        seconds = time.perf_counter() - t0
        names = [decode(row) for row in out.tokens]
        quality = sample_report(names, data.train_names, test_names)
        print(f"T={temperature:<4} {format_report(quality)}  ({out.network_calls} network calls, "
              f"{seconds:.2f}s for {len(names)})  e.g. {' '.join(names[:8])}")
        if temperature == 1.0 and show:
            print("  samples at T=1.0:", " ".join(names[8:8 + show]))
        rows.append(dict(temperature=temperature, seconds=seconds, network_calls=out.network_calls,
                         examples=names[:8 + show], **quality))
    return rows


def _resume(args):
    """Model, TrainConfig, start step and optimizer state from a checkpoint written by an interrupted run."""
    try:
        model, meta, optimizer_state = checkpoint.load(args.resume)
    except checkpoint.CheckpointError as e:
        fail(str(e))
    saved = meta["extra"].get("train")
    if saved is None or "engine_rng" not in meta["extra"]:
        fail(f"{args.resume}: this checkpoint has no training state to resume from")
    tl.random.set_state(meta["extra"]["engine_rng"])
    print(f"resuming {args.resume} at step {meta['step']} of {saved['steps']}")
    return model, TrainConfig(**saved), meta["step"], optimizer_state


def prepare(args, make_model):
    """Data, then the model and its TrainConfig: fresh (seeded) or resumed from --resume.
    Returns (data, model, cfg, start_step, optimizer_state)."""
    data = load_data(args)
    if args.resume:
        model, cfg, start_step, optimizer_state = _resume(args)
    else:
        tl.manual_seed(args.seed)
        model = make_model(args)
        cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)})
        start_step, optimizer_state = 0, None
    if cfg.batch_size > len(data.train):
        fail(f"--batch-size {cfg.batch_size} is larger than the {len(data.train)} training names")
    if model.L != data.L:
        fail(f"the checkpoint's model has L={model.L}, but --L is {data.L}")
    print(f"model: {type(model).__name__} {model.config}, {model.num_parameters():,} parameters")
    return data, model, cfg, start_step, optimizer_state


def fit(args, model, cfg, data, loss_fn, start_step=0, optimizer_state=None):
    """Train with periodic/interrupt saves to args.out. Ctrl-C: save, print how to resume, exit 130; a
    non-finite loss: one line, exit 1. Returns (train result, save) where save(step, optimizer, **figures)
    writes the checkpoint again with extra figures."""
    def save(step, optimizer, **figures):
        checkpoint.save(args.out, model, optimizer, step,
                        extra=dict(train=cfg.__dict__, engine_rng=tl.random.get_state(), **figures))
    try:
        result = train(model, data.train, cfg, loss_fn, start_step=start_step, optimizer_state=optimizer_state,
                       save=save, save_every=args.save_every)
    except TrainingStopped as e:
        if not e.interrupted:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        script = os.path.relpath(sys.argv[0])
        print(f"\ninterrupted: saved step {e.step} to {args.out}\nresume with: python {script} --resume {args.out} "
              f"--out {args.out}", file=sys.stderr)
        sys.exit(130)
    print(f"trained {cfg.steps - start_step} steps in {result['seconds']:.1f}s")
    return result, save


def run(description, make_model, **defaults):
    """The whole main job for one denoiser. make_model(args) builds it. Returns (model, data, args)."""
    args = trainer_parser(description, **defaults).parse_args()
    data, model, cfg, start_step, optimizer_state = prepare(args, make_model)
    schedule = get_schedule(cfg.schedule)

    def loss_fn(model, x0, rng):
        return diffusion_loss(model, x0, schedule, rng, cfg.objective)
    result, save = fit(args, model, cfg, data, loss_fn, start_step, optimizer_state)
    t0 = time.perf_counter()
    ev = nelbo(model, data.test, schedule, seed=cfg.seed)
    unigram = unigram_nll(data.train, data.test)
    print(f"test NELBO {ev['nelbo']:.4f} ± {ev['se']:.4f} nats/char ({ev['method']}, {ev['repeats']} repeats, "
          f"{time.perf_counter() - t0:.1f}s);  unigram baseline {unigram:.4f}")
    save(cfg.steps, result["optimizer"], test_nelbo=ev["nelbo"], test_se=ev["se"])
    print(f"saved {args.out}")
    sweep = report_samples(model, data, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(model=model.config, parameters=model.num_parameters(), train=cfg.__dict__,
                           train_seconds=result["seconds"], history=result["history"], test=ev,
                           unigram=unigram, sweep=sweep), f, indent=1)
    return model, data, args
