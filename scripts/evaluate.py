"""Evaluate a saved model (denoiser or AR baseline) on the test split: likelihood and sample quality.

    python scripts/evaluate.py --checkpoint ar.npz
    python scripts/evaluate.py --checkpoint transformer.npz --ar-checkpoint ar.npz --temperature 0.8

Likelihood in nats/char (letters + 1 end token): the exact NLL for the AR model; for a denoiser the NELBO and
the exact NLL of two fixed decoding orders (left to right, most confident first). Samples: % novel, % unique,
length TV to test, bigram KL to train, and their NLL under the AR model (--ar-checkpoint; an AR checkpoint
scores its own samples).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.autoregressive import is_autoregressive  # noqa: E402
from diffusion.cli import (fail, load_checkpoint, load_data, nonnegative_float, positive_float,  # noqa: E402
                           positive_int)
from diffusion.data import DEFAULT_NAMES  # noqa: E402
from diffusion.evaluate import evaluate_model, format_likelihood  # noqa: E402
from diffusion.metrics import format_report  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .npz written by one of the trainers")
    p.add_argument("--ar-checkpoint", default=None, help="AR model that scores the samples (generative NLL)")
    p.add_argument("--names", default=DEFAULT_NAMES, help="names file (the test split is every 20th name)")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--temperature", type=nonnegative_float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoiser unmasking steps, 1..L (default L)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-se", type=positive_float, default=0.01, help="Monte-Carlo se target of the NELBO")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    model = load_checkpoint(args.checkpoint)[0]
    ar_model = load_checkpoint(args.ar_checkpoint)[0] if args.ar_checkpoint else None
    if ar_model is not None and not is_autoregressive(ar_model):
        fail(f"{args.ar_checkpoint}: --ar-checkpoint must be an AR model (scripts/train_ar.py), "
             f"this is a {ar_model.config['kind']}")
    if args.steps and args.steps > model.L:
        fail(f"--steps must be between 1 and L={model.L}, got {args.steps}")
    args.L = model.L
    data = load_data(args)
    print(f"model: {type(model).__name__} {model.config}, {model.num_parameters():,} parameters")
    ev = evaluate_model(model, data, (args.temperature,), args.num_samples, args.steps, args.seed, ar_model,
                        args.target_se)
    print("\n".join(format_likelihood(ev["likelihood"])))
    for row in ev["samples"]:
        gen = "" if "generative_nll" in row else "  gen NLL n/a (pass --ar-checkpoint)"
        print(f"T={row['temperature']:g} {format_report(row)}{gen}  ({row['network_calls']} network calls, "
              f"{row['samples_per_second']:.0f} samples/s)\n  e.g. {' '.join(row['examples'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(checkpoint=args.checkpoint, model=model.config, **ev), f, indent=1)


if __name__ == "__main__":
    main()
