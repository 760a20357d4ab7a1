"""What the trainer scripts share: argument parsing with range checks, and the run itself
(load data -> build model -> train (optionally with validation and early stopping) -> test likelihood ->
checkpoint -> samples and a temperature sweep), for the denoisers and the AR baseline alike.

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""
import argparse
import json
import math
import os
import sys

import tinygrad_lite as tl

from . import checkpoint
from .autoregressive import ar_loss, is_autoregressive, row_nll
from .data import NamesData, NamesFileError, DEFAULT_NAMES, chars_per_name
from .evaluate import format_likelihood, likelihood_figures, sample_quality
from .likelihood import nelbo, unigram_nll
from .loss import OBJECTIVES, diffusion_loss
from .metrics import format_report
from .schedule import SCHEDULES, get_schedule
from .trainer import TrainConfig, TrainingStopped, train

SWEEP = (0.5, 0.8, 1.0, 1.5)


def _number(kind, low, inclusive=False, what="a number"):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {low}")
        return value
    return parse


def fraction(text):
    """A rate in [0, 1), e.g. --dropout."""
    value = _number(float, 0.0, inclusive=True)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text} must be < 1")
    return value


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
    p.add_argument("--eval-every", type=_number(int, 0, True, "a whole number"), default=d["eval_every"],
                   help="score the validation split every N steps, keep the best weights (0: off)")
    p.add_argument("--patience", type=_number(int, 0, True, "a whole number"), default=d["patience"],
                   help="with --eval-every: stop after N validations without improvement (0: never stop early)")
    if "dropout" in d:
        p.add_argument("--dropout", type=fraction, default=d["dropout"],
                       help="dropout rate in the Transformer blocks")
    if "time_input" in d:
        p.add_argument("--time-input", action="store_true", default=d["time_input"],
                       help="condition the denoiser on t (needs --objective nelbo or simple)")
    return p


def load_checkpoint(path):
    """checkpoint.load(path): (model, meta, optimizer_state), or one line on stderr and exit 2."""
    try:
        return checkpoint.load(path)
    except checkpoint.CheckpointError as e:
        fail(str(e))


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


def report_samples(model, data, args, temperatures=SWEEP, show=20, ar_model=None):
    """Print names and their quality figures at each temperature (either kind of model; the generative NLL
    too when an AR model is given); returns the figures as a list of dicts."""
    steps = args.sample_steps or model.L
    if steps > model.L:
        fail(f"--sample-steps must be at most L={model.L}, got {steps}")
    rows = []
    for temperature in temperatures:
        row = sample_quality(model, data, temperature, args.num_samples, steps, args.seed, ar_model)
        names = row["examples"]
        print(f"T={temperature:<4} {format_report(row)}  ({row['network_calls']} network calls, "
              f"{row['seconds']:.2f}s for {args.num_samples})  e.g. {' '.join(names[:8])}")
        if temperature == 1.0 and show:
            print("  samples at T=1.0:", " ".join(names[8:8 + show]))
        rows.append(row)
    return rows


def _resume(args):
    """Model, TrainConfig, start step and optimizer state from a checkpoint written by an interrupted run."""
    model, meta, optimizer_state = load_checkpoint(args.resume)
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
    if getattr(model, "time_input", False) and cfg.objective == "exact_k":
        fail("objective exact_k needs a denoiser without time input; use --objective nelbo with --time-input")
    print(f"model: {type(model).__name__} {model.config}, {model.num_parameters():,} parameters")
    return data, model, cfg, start_step, optimizer_state


def fit(args, model, cfg, data, loss_fn, start_step=0, optimizer_state=None, validate=None, metric="nelbo"):
    """Train with periodic/interrupt saves to args.out. Ctrl-C: save, print how to resume, exit 130; a
    non-finite loss: one line, exit 1. validate(model) -> validation nats/char enables early stopping when
    cfg.eval_every > 0 (the model ends with its best weights). Returns (train result, save) where
    save(step, optimizer, **figures) writes the checkpoint again with extra figures."""
    if cfg.eval_every and validate is not None and not len(data.val):
        fail("--eval-every needs a validation split, and this names file has none")
    def save(step, optimizer, **figures):
        checkpoint.save(args.out, model, optimizer, step,
                        extra=dict(train=cfg.__dict__, engine_rng=tl.random.get_state(), **figures))
    try:
        result = train(model, data.train, cfg, loss_fn, start_step=start_step, optimizer_state=optimizer_state,
                       save=save, save_every=args.save_every, metric=metric, validate=validate)
    except TrainingStopped as e:
        if not e.interrupted:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(1)
        script = os.path.relpath(sys.argv[0])
        print(f"\ninterrupted: saved step {e.step} to {args.out}\nresume with: python {script} --resume {args.out} "
              f"--out {args.out}", file=sys.stderr)
        sys.exit(130)
    print(f"trained {result['last_step'] - start_step} steps in {result['seconds']:.1f}s")
    if result["best_step"] is not None:
        print(f"best validation {metric} {result['best_validation']:.4f} nats/char at step {result['best_step']} "
              f"(kept those weights{'; stopped early' if result['stopped_early'] else ''})")
    return result, save


def objective(model, cfg, data):
    """(loss_fn, validate, metric) for training `model`: next-token NLL for the AR model, the diffusion loss
    (cfg.objective, cfg.schedule) for a denoiser. validate scores data.val in nats/char: the exact NLL (AR) or
    the NELBO from the same two mask draws every time (so successive figures compare fairly)."""
    if is_autoregressive(model):
        def validate(model):
            return float(row_nll(model, data.val).sum() / chars_per_name(data.val).sum())
        return ar_loss, validate, "nll"
    schedule = get_schedule(cfg.schedule)

    def loss_fn(model, x0, rng):
        return diffusion_loss(model, x0, schedule, rng, cfg.objective)

    def validate(model):
        return nelbo(model, data.val, schedule, seed=cfg.seed, min_repeats=2, max_repeats=2)["nelbo"]
    return loss_fn, validate, "nelbo"


def train_and_test(args, data, model, cfg, start_step=0, optimizer_state=None, orders=()):
    """Train either kind of model (fit), score the test split (evaluate.likelihood_figures: the AR NLL, or the
    NELBO and the fixed-`orders` likelihoods of a denoiser), save the checkpoint with the figures and the
    validation curve. Returns dict(result, likelihood, unigram, test)."""
    loss_fn, validate, metric = objective(model, cfg, data)
    result, save = fit(args, model, cfg, data, loss_fn, start_step, optimizer_state, validate, metric)
    figures = likelihood_figures(model, data.test, seed=cfg.seed, schedule=get_schedule(cfg.schedule),
                                 orders=orders)
    unigram = unigram_nll(data.train, data.test)
    print("\n".join(format_likelihood(figures)) + f"\nunigram baseline {unigram:.4f} nats/char")
    main = figures.get("nll") or figures["nelbo"]
    test = dict(nll=main["nll"], se=main["se"]) if "nll" in figures else \
        dict(nelbo=main["nll"], se=main["se"], repeats=main["repeats"], method=main["method"])
    save(result["last_step"], result["optimizer"], test=test, likelihood=figures,
         validation=result["validation"], best_step=result["best_step"])
    print(f"saved {args.out}")
    return dict(result=result, likelihood=figures, unigram=unigram, test=test)


def write_json(path, model, cfg, trained, **more):
    """The figures of a run as JSON (for the README tables)."""
    result = trained["result"]
    with open(path, "w") as f:
        json.dump(dict(model=model.config, parameters=model.num_parameters(), train=cfg.__dict__,
                       train_seconds=result["seconds"], history=result["history"],
                       validation=result["validation"], best_step=result["best_step"],
                       test=trained["test"], likelihood=trained["likelihood"], unigram=trained["unigram"],
                       **more), f, indent=1)


def run(description, make_model, **defaults):
    """The whole main job for one model (a denoiser or the AR baseline). make_model(args) builds it.
    Returns (model, data, args)."""
    args = trainer_parser(description, **defaults).parse_args()
    data, model, cfg, start_step, optimizer_state = prepare(args, make_model)
    trained = train_and_test(args, data, model, cfg, start_step, optimizer_state)
    sweep = report_samples(model, data, args, ar_model=model if is_autoregressive(model) else None)
    if args.json:
        write_json(args.json, model, cfg, trained, sweep=sweep)
    return model, data, args
