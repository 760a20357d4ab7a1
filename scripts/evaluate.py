"""Evaluate a saved model (denoiser or AR baseline) on the test split: likelihood and sample quality.

    python scripts/evaluate.py                            # runs/transformer.npz, on the names it was trained on
    python scripts/evaluate.py --checkpoint runs/ar.npz
    python scripts/train_ar.py --seed 1 --num-samples 0 --out runs/judge.npz   # a judge for the samples (once)
    python scripts/evaluate.py --checkpoint runs/transformer.npz --ar-checkpoint runs/judge.npz --temperature 0.8

Likelihood in nats/char (letters + 1 end token): the exact NLL for the AR model; for a denoiser the NELBO, the
exact NLL of three decoding orders (left to right, most confident first, length first) and with --iw-orders K
the importance-weighted bound over K random orders (K x L network passes a name). Samples: % novel, % unique,
length TV to test, bigram KL to train, and their NLL under a judge (--ar-checkpoint: an AR model trained with
another seed, scripts/judge.py says why; without one, an AR checkpoint gives its samples' own NLL, their
entropy estimate). The test split is the one of the names file the checkpoint records; --names scores
another file (said in one line).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from diffusion.autoregressive import is_autoregressive  # noqa: E402
from diffusion import checkpoint  # noqa: E402
from diffusion.cli import (DEFAULT_CHECKPOINT, OneLineParser, add_workers_flag, check_json, check_judge,  # noqa: E402
                           fail, load_checkpoint, load_data, model_pool, nonnegative_float, positive_float,
                           positive_int, recorded_names, save_json, script_main, whole_number, worker_errors,
                           workers)
from diffusion.evaluation import evaluate_model, format_likelihood  # noqa: E402
from diffusion.metrics import format_report  # noqa: E402


def main():
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="a .npz written by one of the trainers")
    p.add_argument("--ar-checkpoint", default=None,
                   help="a judge: an AR model trained with another seed, scoring the samples (generative NLL)")
    p.add_argument("--names", default=None, help="names file (default: the one the checkpoint records)")
    p.add_argument("--num-samples", type=positive_int, default=1000)
    p.add_argument("--temperature", type=nonnegative_float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoiser unmasking steps, 1..L (default L)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-se", type=positive_float, default=0.01,
                   help="how precise the NELBO must be: its standard error from the random masks")
    p.add_argument("--iw-orders", type=whole_number, default=0, metavar="K",
                   help="a denoiser: also bound its NLL by importance weighting over K random orders (0: skip)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    add_workers_flag(p)
    args = p.parse_args()
    if args.json:
        check_json(args.json)
    model, meta, _ = load_checkpoint(args.checkpoint)
    ar_model = None
    if args.ar_checkpoint:
        ar_model, ar_meta, _ = load_checkpoint(args.ar_checkpoint, checkpoint.AR, "--ar-checkpoint")
        check_judge(args.ar_checkpoint, ar_meta, args.checkpoint, meta)
    if args.steps and is_autoregressive(model):
        fail(f"--steps is an option of the masked sampler; {args.checkpoint} holds an AR model")
    if args.iw_orders and is_autoregressive(model):
        fail(f"--iw-orders bounds a denoiser's NLL; {args.checkpoint} holds an AR model, whose NLL is exact")
    if args.steps and args.steps > model.L:
        fail(f"--steps must be between 1 and L={model.L}, got {args.steps}")
    args.names = recorded_names(args.checkpoint, meta, args.names)
    data = load_data(args, L=model.L)
    print(f"model: {type(model).__name__} {model.config}, {model.num_parameters():,} parameters")
    with worker_errors(), model_pool(model, workers(args.workers)) as pool:
        ev = evaluate_model(model, data, (args.temperature,), args.num_samples, args.steps, args.seed, ar_model,
                            args.target_se, args.iw_orders, pool)
    print("\n".join(format_likelihood(ev["likelihood"])))
    for row in ev["samples"]:
        gen = "" if "generative_nll" in row else "  gen NLL n/a (pass --ar-checkpoint)"
        print(f"T={row['temperature']:g} {format_report(row)}{gen}  ({row['network_calls']} network calls, "
              f"{row['samples_per_second']:.0f} samples/s)\n  e.g. {' '.join(row['examples'])}")
    if args.json:
        save_json(args.json, dict(checkpoint=args.checkpoint, model=model.config, names=args.names, **ev))


if __name__ == "__main__":
    script_main(main)
