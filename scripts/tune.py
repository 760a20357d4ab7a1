"""Try training settings on the validation split, never on the test split: each variant trains with its own flags
(every setting it compares spelled out), is scored on the validation names every --eval-every steps, and the table ranks
the variants by their best validation figure (nats/char), beside their training time on this machine.

    python scripts/tune.py --json runs/tune/default.json             # every variant of the denoiser's run
    python scripts/tune.py --variants default,batch128 --json runs/tune/default.json
    python scripts/tune.py --trainer train_ar --variants default,dropout --json runs/tune/ar.json
    python scripts/tune.py --json runs/tune/default.json --show       # the table of a sweep, nothing run

Each variant is a run of scripts/<trainer>.py in a temporary folder (its checkpoint is thrown away; the trainer
still prints its test figure, which plays no part here). With --json, the rows are written after each variant and
variants already in that file are not run again, so an interrupted sweep continues where it stopped. Training
time depends on what else the machine is doing: compare the seconds of rows from one quiet sweep only.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.cli import OneLineParser, add_workers_flag, check_json, fail, save_json, script_main  # noqa: E402
from diffusion.evaluation import markdown_table  # noqa: E402
from diffusion.trainer import TrainConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (flags, what it tries). Every setting a sweep compares is spelled out, not left to the trainer's
# defaults, so a sweep continued after the defaults changed still compares what it says (and `default` stays the
# 3,000 x 64 run that was the default when the first sweep ran; the settings column of the table says so).
STEPS64 = ["--steps", "3000", "--batch-size", "64", "--lr", "2e-3"]
BASE = STEPS64 + ["--ema", "0"]


def batch128(steps, ema):
    """`steps` steps of 128 at lr 3e-3 with moving-average decay `ema` ("0": none). A smaller network than the
    default gets more steps: the ones it buys in the same time."""
    return ["--steps", str(steps), "--batch-size", "128", "--lr", "3e-3", "--ema", ema]


BATCH128, BATCH128_EMA = batch128(2000, "0"), batch128(2000, "0.999")
# Two settings came after the first sweeps, which left them to the trainers: how the denoiser draws the mask
# count k (uniformly then; the AR trainer has no such flag) and the blocks' feed-forward width (GPT-2's 4 x the
# width then). A variant that does not set them gets those values spelled out.
UNIFORM_K = ["--k-power", "0"]
GPT2_FEED_FORWARD = ["--mlp-ratio", "4"]
VARIANTS = {
    "default": (BASE, "3,000 steps of 64 at lr 2e-3, no average"),
    "lr3e-3": (BASE + ["--lr", "3e-3"], "a higher peak learning rate"),
    "min_lr0": (BASE + ["--min-lr-ratio", "0"], "cosine decay to 0 instead of to 0.1 of the peak"),
    "ema": (STEPS64 + ["--ema", "0.999"], "a moving average of the weights, decay 0.999 (warmed up)"),
    "batch128": (BATCH128, "twice the batch for two thirds of the steps (about the same time on 2 cores)"),
    "batch128_ema": (BATCH128_EMA, "batch128 with the moving average"),
    "k_power-0.25": (BATCH128_EMA + ["--k-power", "-0.25"], "batch128_ema, mask counts k drawn from q(k) ∝ k^-0.25"),
    "k_power-0.5": (BATCH128_EMA + ["--k-power", "-0.5"], "batch128_ema, q(k) ∝ k^-0.5: more rows with few masks"),
    "k_power-1": (BATCH128_EMA + ["--k-power", "-1"], "batch128_ema, q(k) ∝ 1/k: every row weighs the same"),
    "k_power+0.5": (BATCH128_EMA + ["--k-power", "0.5"], "batch128_ema, q(k) ∝ k^0.5: more rows with many masks"),
    "layers3": (batch128(2600, "0.999") + ["--k-power", "-0.5", "--layers", "3"],
                "k_power-0.5 with 3 blocks instead of 4 and 30% more steps (about the same time)"),
    "mlp2": (batch128(2400, "0.999") + ["--k-power", "-0.5", "--mlp-ratio", "2"],
             "k_power-0.5 with feed-forward width 2 x 64 instead of 4 x 64 and 20% more steps (about the same time)"),
    "mlp1": (batch128(2700, "0.999") + ["--k-power", "-0.5", "--mlp-ratio", "1"],
             "k_power-0.5 with feed-forward width 64 instead of 4 x 64 and 35% more steps (about the same time)"),
    "batch128_ema_mlp1": (batch128(2700, "0.999") + ["--mlp-ratio", "1"],
                          "batch128_ema with feed-forward width 64 and 35% more steps (mlp1 for the AR: uniform k)"),
    "batch256": (["--steps", "1000", "--batch-size", "256", "--lr", "4e-3", "--ema", "0"],
                 "four times the batch for a third of the steps"),
    "wide2": (BATCH128 + ["--dim", "128", "--layers", "2"], "width 128 and 2 blocks instead of 64 and 4, as batch128"),
    "dropout": (BASE + ["--dropout", "0.1"], "dropout 0.1 in the blocks"),
    "weight_decay": (BASE + ["--weight-decay", "0.1"], "AdamW weight decay 0.1"),
}


def run_variant(trainer, name, flags, eval_every, workers):
    """Train one variant; returns its row: best validation figure and step, the curve, training seconds."""
    with tempfile.TemporaryDirectory() as folder:
        figures = os.path.join(folder, "run.json")
        command = [sys.executable, os.path.join(ROOT, "scripts", f"{trainer}.py"), *flags, "--eval-every",
                   str(eval_every), "--num-samples", "0", "--out", os.path.join(folder, "run.npz"), "--json", figures]
        if workers:
            command += ["--workers", str(workers)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or ["(no message)"]
            fail(f"variant {name}: scripts/{trainer}.py {' '.join(flags)} failed: {lines[-1]}")
        with open(figures) as f:
            run = json.load(f)
    best_step, best = min(run["validation"], key=lambda point: point[1])
    return dict(variant=name, flags=flags, best_validation=best, best_step=best_step, validation=run["validation"],
                train_seconds=run["train_seconds"], train=run["train"], model=run["model"])


def settings(row):
    """What a row trained with, from its own record (the trainer's defaults may have changed since)."""
    train, model = row["train"], row["model"]
    parts = [f"{train['steps']} x {train['batch_size']}", f"lr {train['lr']:g}"]
    parts += [f"{label} {train[key]:g}" for key, label in (("min_lr_ratio", "final lr ratio"), ("ema", "ema"),
                                                           ("weight_decay", "weight decay"), ("k_power", "k-power"))
              if train.get(key, 0) != TrainConfig.__dataclass_fields__[key].default]
    parts += [f"width {model['dim']}, {model['layers']} blocks"] if (model.get("dim"), model.get("layers")) != (64, 4) \
        else []
    parts += [f"feed-forward {model['mlp_ratio']} x width"] if model.get("mlp_ratio", 4) != 4 else []
    parts += [f"dropout {model['dropout']:g}"] if model.get("dropout") else []
    return ", ".join(parts)


def table(rows, metric):
    ranked = sorted(rows, key=lambda r: r["best_validation"])
    return markdown_table(["variant", "settings", f"best validation {metric}", "at step", "train time"],
                          [[f"`{r['variant']}`", settings(r), f"{r['best_validation']:.4f}", r["best_step"],
                            f"{r['train_seconds']:.0f} s"] for r in ranked])


def main():
    p = OneLineParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainer", choices=["train", "train_ar"], default="train",
                   help="scripts/train.py (the default denoiser) or scripts/train_ar.py (the AR baseline)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--eval-every", type=int, default=500, help="validation every N steps (default 500)")
    p.add_argument("--json", default=None, help="write the rows here after each variant; rows already there are kept")
    p.add_argument("--show", action="store_true", help="only print the table of the rows in --json")
    p.add_argument("--also", default="", help="flags added after every variant's, e.g. \"--names FILE --steps 100\"")
    add_workers_flag(p, "processes per training step (default: the trainer's)")
    args = p.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        fail(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.eval_every < 1:
        fail(f"--eval-every must be at least 1, got {args.eval_every}")
    denoiser_only = [v for v in names if "--k-power" in VARIANTS[v][0]]
    if args.trainer == "train_ar" and denoiser_only:           # before any training, not halfway through a sweep
        fail(f"variant {denoiser_only[0]} sets the denoiser's --k-power; scripts/train_ar.py has no such flag "
             f"(pass --variants)")
    rows = []
    if args.show and not (args.json and os.path.exists(args.json)):
        fail("--show prints the table of an existing --json file")
    if args.json:
        check_json(args.json)
        if os.path.exists(args.json):
            with open(args.json) as f:
                saved = json.load(f)
            if args.show:
                args.trainer = saved.get("trainer")
            elif saved.get("trainer") != args.trainer:
                fail(f"{args.json} holds variants of scripts/{saved.get('trainer')}.py, not of {args.trainer}.py")
            elif saved.get("also", "") != args.also:
                fail(f"{args.json} was swept with --also {saved.get('also', '')!r}, not {args.also!r}: its rows would "
                     f"not compare; use another --json")
            rows = [r for r in saved["rows"] if r["variant"] in VARIANTS]
    metric = "NLL" if args.trainer == "train_ar" else "NELBO"
    for name in [] if args.show else names:
        if any(r["variant"] == name for r in rows):
            print(f"{name}: already in {args.json}")
            continue
        flags, what = VARIANTS[name]
        if args.trainer == "train" and "--k-power" not in flags:
            flags = UNIFORM_K + flags
        if "--mlp-ratio" not in flags:
            flags = GPT2_FEED_FORWARD + flags
        print(f"{name}: {what} ({' '.join(flags) or 'defaults'}) ...", flush=True)
        row = run_variant(args.trainer, name, flags + args.also.split(), args.eval_every, args.workers)
        rows.append(dict(row, about=what))
        print(f"  best validation {metric} {row['best_validation']:.4f} at step {row['best_step']}, "
              f"{row['train_seconds']:.0f} s", flush=True)
        if args.json:
            save_json(args.json, dict(trainer=args.trainer, also=args.also, rows=rows))
    print(f"\n## Variants of scripts/{args.trainer}.py on the validation split (nats/char)\n")
    print(table(rows, metric) + f"\n\n{len(rows)} variants of `scripts/{args.trainer}.py`, ranked.")


if __name__ == "__main__":
    script_main(main)
