"""What the trainer scripts share: argument parsing with range checks, and the run itself
(load data -> build model -> train -> held-out NELBO -> checkpoint -> samples and a temperature sweep).

Bad input ends with one line on stderr and exit code 2, never a traceback.
"""
import argparse
import sys
import time

import tinygrad_lite as tl

from . import checkpoint
from .data import NamesData, NamesFileError, decode, DEFAULT_NAMES
from .likelihood import nelbo, unigram_nll
from .loss import OBJECTIVES
from .metrics import format_report, sample_report
from .sampler import sample
from .schedule import SCHEDULES, get_schedule
from .trainer import TrainConfig, train

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
    """Print names at temperature 1.0 with their quality figures, then a temperature sweep."""
    steps = args.sample_steps or model.L
    if steps > model.L:
        fail(f"--sample-steps must be at most L={model.L}, got {steps}")
    for temperature in temperatures:
        t0 = time.perf_counter()
        out = sample(model, args.num_samples, steps=steps, temperature=temperature, seed=args.seed)
        names = [decode(row) for row in out.tokens]
        quality = format_report(sample_report(names, data.train_names, [decode(r) for r in data.test]))
        print(f"T={temperature:<4} {quality}  ({out.network_calls} network calls, "
              f"{time.perf_counter() - t0:.2f}s for {len(names)})  e.g. {' '.join(names[:8])}")
        if temperature == 1.0 and show:
            print("  samples at T=1.0:", " ".join(names[8:8 + show]))


def run(description, make_model, **defaults):
    """The whole main job for one denoiser. make_model(args) builds it. Returns (model, data, args)."""
    args = trainer_parser(description, **defaults).parse_args()
    data = load_data(args)
    if args.batch_size > len(data.train):
        fail(f"--batch-size {args.batch_size} is larger than the {len(data.train)} training names")
    tl.manual_seed(args.seed)
    model = make_model(args)
    print(f"model: {type(model).__name__} {model.config}, {model.num_parameters():,} parameters")
    cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if hasattr(args, k)})
    result = train(model, data.train, cfg)
    print(f"trained {cfg.steps} steps in {result['seconds']:.1f}s")
    schedule = get_schedule(args.schedule)
    t0 = time.perf_counter()
    ev = nelbo(model, data.test, schedule, seed=args.seed)
    print(f"test NELBO {ev['nelbo']:.4f} ± {ev['se']:.4f} nats/char ({ev['method']}, {ev['repeats']} repeats, "
          f"{time.perf_counter() - t0:.1f}s);  unigram baseline {unigram_nll(data.train, data.test):.4f}")
    checkpoint.save(args.out, model, result["optimizer"], cfg.steps,
                    extra=dict(test_nelbo=ev["nelbo"], test_se=ev["se"], train=cfg.__dict__))
    print(f"saved {args.out}")
    report_samples(model, data, args)
    return model, data, args
